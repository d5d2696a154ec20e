"""The SIP transport layer's asyncio side: the sockets and connections behind each `Flow`.

:class:`SIPEndpoint` owns every SIP socket of a server: one UDP socket, and
TCP and TLS listeners with the connections they accept or that we open
(RFC 3261 s.18). It knows nothing of SIP beyond framing: it hands each
received message to its ``on_message(data, flow)`` callback and sends what
it is given on the flow named. The sans-IO rules of RFC 3261 s.18 (which
transports are reliable, Via stamping, where responses go) are in
:mod:`pipecat_sip.sip.transport`, the stream framing in
:mod:`pipecat_sip.sip.framing`.

Connections:

- A received message's flow names its connection; a response sent on that
  flow goes back on it (RFC 3261 s.18.2.2). A flow without a connection
  reuses an open connection to the same transport and address (the one we
  opened, one the peer opened from that address, or one the peer asked us
  to reuse for its sent-by address with RFC 5923 ``alias``), else opens one;
  messages wait (bounded) while it connects.
- Limits: connections in total and per source IP (beyond them a new
  connection is closed at once), a connect timeout, a TLS handshake timeout,
  a message that does not complete in time (the framer's), a peer that does
  not read what we write, and idle connections closed after
  ``idle_timeout`` (except flows kept alive).
- Keep-alive (RFC 5626 s.3.5.1, s.4.4.1): :meth:`SIPEndpoint.keep_alive`
  pings a flow every interval (80-100 % of it, randomised): a double CRLF on
  TCP/TLS, answered by a single CRLF within ``pong_timeout`` or the
  connection is closed and reported through ``on_connection_closed``; a
  double CRLF datagram on UDP (NAT binding refresh, no answer expected).
  Pings from peers are answered with a pong.
- A connection that cannot be opened (refused, timeout, TLS failure such as
  a certificate that does not verify) is logged in one line and reported
  through ``on_transport_error(flow, reason)``, so that the transactions
  waiting on it fail at once (RFC 3261 s.17.1.1.2, s.17.1.2.2).

Addresses are normalised at this edge: a dual-stack IPv6 socket's
IPv4-mapped sources (``::ffff:192.0.2.1``) reach the user agent as plain
IPv4, and IPv4 destinations are mapped back when sent on such a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import secrets
import socket
import ssl
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from pipecat_sip.security import RepeatFilter, escape
from pipecat_sip.sip.framing import (
    PING,
    PONG,
    Message,
    Oversized,
    Ping,
    Pong,
    StreamError,
    StreamFramer,
)
from pipecat_sip.sip.transport import Flow, via_alias
from pipecat_sip.tls import verify_failure

__all__ = ["SIPEndpoint", "StreamSettings", "normalize_address"]

Addr = tuple[str, int]
MessageHandler = Callable[[bytes, Flow], None]
RefusedHandler = Callable[[bytes, int, str, Flow], None]
FlowHandler = Callable[[Flow, str], None]

_LOG_EVERY = 1000  # after the first, log only every n-th repeated send error
_SWEEP_INTERVAL_S = 1.0
_LOG_INTERVAL_S = 10.0
_MAX_KNOWN_NAMES = 1024
_LISTEN_BACKLOG = 512


def normalize_address(host: str) -> str:
    """An IPv4-mapped IPv6 address as IPv4 (``::ffff:192.0.2.1`` -> ``192.0.2.1``), else as is."""
    if host.startswith("::ffff:") or host.startswith("::FFFF:"):
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


#: Bytes of TLS read per call by asyncio's own SSL protocol once a connection is up
#: (it starts each connection with a 256 KiB buffer: ~250 kB of RSS per idle
#: connection; a TLS record is at most 16 KiB of plaintext anyway).
_TLS_READ_BUFFER = 16 * 1024


def _shrink_tls_buffer(transport: asyncio.BaseTransport) -> None:
    """Give asyncio's SSL protocol of one connection a 16 KiB read buffer instead of 256 KiB.

    Only for the standard library's ``asyncio.sslproto.SSLProtocol`` (uvloop's
    allocates lazily and needs nothing); anything else is left as it is.
    """
    protocol = getattr(transport, "_ssl_protocol", None)
    if protocol is None or type(protocol).__module__ != "asyncio.sslproto":
        return
    if not isinstance(getattr(protocol, "_ssl_buffer", None), bytearray):
        return
    if not hasattr(protocol, "_ssl_buffer_view") or protocol.max_size <= _TLS_READ_BUFFER:
        return
    protocol.max_size = _TLS_READ_BUFFER  # an instance attribute: this connection only
    protocol._ssl_buffer = bytearray(_TLS_READ_BUFFER)
    protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Nagle off: a 200 OK written right after a 180 must not wait for the peer's delayed ACK."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class StreamSettings:
    """Limits of the TCP and TLS connections (RFC 3261 s.18.3; security posture of DESIGN.md).

    Attributes:
        max_connections: Open connections at most, both directions.
        max_connections_per_ip: Open connections at most per remote IP.
        idle_timeout: Seconds without a byte either way before a connection
            is closed (flows kept alive are exempt).
        connect_timeout: Seconds to open a connection (TCP connect and TLS
            handshake together).
        handshake_timeout: Seconds an accepted TLS connection may take to
            finish its handshake.
        max_message_size: Largest message on a stream, bytes.
        max_header_bytes: Largest message head on a stream, bytes.
        message_timeout: Seconds from a message's first byte to its last.
        max_pending_bytes: Bytes queued for a connection still being opened.
        max_write_buffer: Bytes written but not yet taken by the peer before
            the connection is closed (a peer that does not read).
        pong_timeout: Seconds to wait for the pong to a keep-alive ping
            (RFC 5626 s.4.4.1: 10).
    """

    max_connections: int = 1024
    max_connections_per_ip: int = 64
    idle_timeout: float = 300.0
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    max_message_size: int = 16384
    max_header_bytes: int = 8192
    message_timeout: float = 10.0
    max_pending_bytes: int = 65536
    max_write_buffer: int = 1 << 20
    pong_timeout: float = 10.0


class _Connection:
    """One TCP or TLS connection and its framer."""

    __slots__ = (
        "aliases",
        "closed",
        "framer",
        "id",
        "kind",
        "last_activity",
        "outbound",
        "pending",
        "pending_bytes",
        "ping_sent_at",
        "remote",
        "server_name",
        "transport",
    )

    def __init__(
        self,
        conn_id: int,
        kind: str,
        remote: Addr,
        outbound: bool,
        framer: StreamFramer,
        now: float,
    ) -> None:
        self.id = conn_id
        self.kind = kind  # "TCP" or "TLS"
        self.remote = remote
        self.outbound = outbound
        self.framer = framer
        self.transport: asyncio.Transport | None = None  # None while connecting
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.last_activity = now
        self.ping_sent_at: float | None = None
        self.aliases: set[Addr] = set()
        self.closed = False
        self.server_name: str | None = None

    @property
    def flow(self) -> Flow:
        return Flow(self.kind, self.remote, self.id)

    def __repr__(self) -> str:
        way = "to" if self.outbound else "from"
        return f"<connection {self.id} {self.kind.lower()} {way} {self.remote[0]}:{self.remote[1]}>"


@dataclass
class _KeepAlive:
    interval: float
    next_at: float


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SIPEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self._endpoint.udp_received(data, addr)
        except Exception:  # never out of the socket callback
            logger.exception("SIP: error handling a datagram")

    def error_received(self, exc: Exception) -> None:
        logger.debug(f"SIP socket error: {exc}")


class _StreamProtocol(asyncio.Protocol):
    """asyncio's side of one connection: hands everything to the endpoint."""

    def __init__(self, endpoint: SIPEndpoint, kind: str, conn: _Connection | None = None) -> None:
        self._endpoint = endpoint
        self._kind = kind
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            if self.conn is None:
                self.conn = self._endpoint._accepted(self._kind, transport)  # type: ignore[arg-type]
        except Exception:
            logger.exception("SIP: error accepting a connection")
            transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            self._endpoint._stream_data(conn, data)
        except Exception:  # never out of the socket callback
            logger.exception(f"SIP: error handling data on {conn}")
            self._endpoint._close(conn, "internal error")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if conn is not None:
            try:
                self._endpoint._lost(conn, exc)
            except Exception:
                logger.exception(f"SIP: error closing {conn}")


class SIPEndpoint:
    """The SIP sockets and connections of one server.

    Args:
        on_message: Called with each received message and its flow.
        on_refused: Called with the head of a stream message refused for its
            size or framing (``head, status, reason, flow``), so that an
            answer (413, 400) can be sent before the stream goes on or closes.
        on_connection_closed: Called when a connection closes for any reason
            other than :meth:`close` (``flow, reason``).
        on_transport_error: Called when a connection could not be opened for
            messages queued on ``flow`` (``flow, reason``).
        settings: Connection limits.
        client_ssl: Context for the TLS connections we open (verification
            settings included), or a function making it when first needed;
            None: no outbound TLS.
        bind_host: Our address; outbound connections are made from it unless
            it is a wildcard.
        rng: Random source of the keep-alive jitter (``random.Random``-like).

    Attributes:
        send_errors: Messages that could not be sent (no socket for the
            address family, the socket refused them, no connection).
        stats: Counters: "accepted", "connected", "refused_limit",
            "connect_failed", "tls_verify_failed", "closed_idle",
            "closed_timeout", "closed_framing", "closed_slow_reader",
            "pings_sent", "pongs_sent", "pong_timeouts", "oversized".
        udp_port, tcp_port, tls_port: The bound ports (None when not open).
    """

    def __init__(
        self,
        on_message: MessageHandler,
        *,
        on_refused: RefusedHandler | None = None,
        on_connection_closed: FlowHandler | None = None,
        on_transport_error: FlowHandler | None = None,
        settings: StreamSettings | None = None,
        client_ssl: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        bind_host: str | None = None,
        rng: Any = None,
    ) -> None:
        self._on_message = on_message
        self._on_refused = on_refused
        self._on_connection_closed = on_connection_closed
        self._on_transport_error = on_transport_error
        self.settings = settings or StreamSettings()
        self.client_ssl = client_ssl
        self.bind_host = bind_host
        self._rng = rng or secrets.SystemRandom()
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_v6 = False
        self._udp_dual = False
        self.udp_port: int | None = None
        self.tcp_port: int | None = None
        self.tls_port: int | None = None
        self.send_errors = 0
        self.stats: Counter[str] = Counter()
        self._listeners: dict[str, asyncio.Server] = {}
        self._connections: dict[int, _Connection] = {}
        self._by_remote: dict[tuple[str, Addr], _Connection] = {}
        self._per_ip: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._keepalives: dict[tuple[str, Addr], _KeepAlive] = {}
        self._names: OrderedDict[tuple[str, int], str] = OrderedDict()  # verified TLS names
        self._tasks: set[asyncio.Task] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._repeats = RepeatFilter(_LOG_INTERVAL_S)
        self._closing = False

    # --- UDP ---------------------------------------------------------------------------
    async def open_udp(self, host: str, port: int) -> int:
        """Bind the UDP socket (``::`` binds dual-stack where the OS allows); returns its port.

        Raises:
            OSError: The address cannot be bound.
        """
        loop = self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host == "::":
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    self._udp_dual = True
                except OSError:
                    self._udp_dual = False
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=sock)
        self._udp_v6 = family == socket.AF_INET6
        self.udp_port = sock.getsockname()[1]
        return self.udp_port

    def udp_received(self, data: bytes, addr: tuple) -> None:
        """A datagram arrived on the UDP socket (called by its protocol)."""
        host = normalize_address(addr[0]) if self._udp_v6 else addr[0]
        self._on_message(data, Flow("UDP", (host, addr[1])))

    # --- TCP and TLS listeners -----------------------------------------------------------
    async def open_stream(
        self, transport: str, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Listen for TCP (or, with ``ssl_context``, TLS) connections; returns the port.

        Args:
            transport: "TCP" or "TLS".
            host: Address to bind (``::`` binds dual-stack where the OS allows).
            port: Port, 0 for a free one.
            ssl_context: The server context, required for TLS.

        Raises:
            OSError: The address cannot be bound.
            ValueError: TLS without a context, or an unknown transport.
        """
        if transport not in ("TCP", "TLS"):
            raise ValueError(f"not a stream transport: {transport}")
        if (transport == "TLS") != (ssl_context is not None):
            raise ValueError("a TLS listener needs a server context (and TCP none)")
        loop = self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP given: asyncio turns Nagle off only on sockets that say so.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host == "::":
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except OSError:
                    pass
            sock.bind((host, port))
            sock.listen(_LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        server = await loop.create_server(
            lambda: _StreamProtocol(self, transport),
            sock=sock,
            ssl=ssl_context,
            ssl_handshake_timeout=self.settings.handshake_timeout if ssl_context else None,
        )
        self._listeners[transport] = server
        bound = sock.getsockname()[1]
        if transport == "TCP":
            self.tcp_port = bound
        else:
            self.tls_port = bound
        return bound

    # --- sending -------------------------------------------------------------------------
    def send(self, data: bytes, flow: Flow) -> None:
        """Send ``data`` on ``flow``; failures are counted and logged at a bounded rate."""
        if flow.transport == "UDP":
            self._send_udp(data, flow)
        elif flow.transport in ("TCP", "TLS"):
            self._send_stream(data, flow)
        else:
            self._send_failed(flow, f"no {flow.transport} transport")

    def _send_udp(self, data: bytes, flow: Flow) -> None:
        udp = self._udp
        if udp is None:
            self._send_failed(flow, "no UDP socket")
            return
        host, port = flow.remote
        destination: Any = (host, port)
        is_v6 = ":" in host
        if self._udp_v6 and not is_v6:
            if not self._udp_dual:
                self._send_failed(flow, "IPv4 destination on an IPv6-only socket")
                return
            destination = (f"::ffff:{host}", port)
        elif not self._udp_v6 and is_v6:
            self._send_failed(flow, "IPv6 destination on an IPv4 socket")
            return
        try:
            udp.sendto(data, destination)
        except (OSError, ValueError) as exc:
            self._send_failed(flow, str(exc))

    def _send_stream(self, data: bytes, flow: Flow) -> None:
        conn = self._connections.get(flow.connection) if flow.connection is not None else None
        if conn is None or conn.closed:
            conn = self._by_remote.get(flow.destination)
        if conn is None or conn.closed:
            conn = self._connect(flow)
            if conn is None:
                return
        self._write(conn, data)

    def _write(self, conn: _Connection, data: bytes) -> None:
        if conn.transport is None:  # still connecting
            if conn.pending_bytes + len(data) > self.settings.max_pending_bytes:
                self._send_failed(conn.flow, "too much queued while connecting")
                return
            conn.pending.append(data)
            conn.pending_bytes += len(data)
            return
        try:
            conn.transport.write(data)
        except (OSError, RuntimeError) as exc:
            self._send_failed(conn.flow, str(exc))
            self._close(conn, f"write failed: {exc}")
            return
        conn.last_activity = self._now()
        if conn.transport.get_write_buffer_size() > self.settings.max_write_buffer:
            self.stats["closed_slow_reader"] += 1
            self._close(conn, "the peer does not read (write buffer full)")

    # --- keep-alive ----------------------------------------------------------------------
    def keep_alive(self, flow: Flow, interval: float) -> None:
        """Ping ``flow``'s destination every ``interval`` s until :meth:`stop_keep_alive`.

        TCP/TLS: a double CRLF, with a pong expected within ``pong_timeout``
        (else the connection is closed and reported); UDP: a double-CRLF
        datagram (RFC 5626 s.3.5.1, s.4.4.1). The first ping goes after one
        interval; each interval is drawn between 80 % and 100 % of it.

        Raises:
            ValueError: ``interval`` is not positive.
        """
        if interval <= 0:
            raise ValueError(f"keep-alive interval must be positive, not {interval}")
        now = self._now()
        self._keepalives[flow.destination] = _KeepAlive(interval, now + self._jitter(interval))
        self._arm_sweeper()

    def stop_keep_alive(self, flow: Flow) -> None:
        """Stop pinging ``flow``'s destination (unknown flows do nothing)."""
        self._keepalives.pop(flow.destination, None)

    def _jitter(self, interval: float) -> float:
        return interval * (0.8 + 0.2 * self._rng.random())

    # --- introspection -------------------------------------------------------------------
    @property
    def connection_count(self) -> int:
        """Open (or opening) TCP and TLS connections."""
        return len(self._connections)

    def connection_for(self, flow: Flow) -> int | None:
        """The id of the open connection ``flow`` would be sent on now, or None."""
        conn = self._connections.get(flow.connection) if flow.connection is not None else None
        if conn is None:
            conn = self._by_remote.get(flow.destination)
        return conn.id if conn is not None and not conn.closed else None

    def close_connection(self, connection: int, reason: str = "closed") -> None:
        """Close one connection (reported through ``on_connection_closed``)."""
        conn = self._connections.get(connection)
        if conn is not None:
            self._close(conn, reason)

    # --- shutting down -------------------------------------------------------------------
    def close(self) -> None:
        """Close every socket and connection (nothing is reported)."""
        self._closing = True
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in self._listeners.values():
            server.close()
        self._listeners.clear()
        for conn in list(self._connections.values()):
            self._close(conn, "shutdown", report=False)
        for task in list(self._tasks):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._keepalives.clear()

    # --- connections: opening ------------------------------------------------------------
    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _room_for(self, host: str) -> str | None:
        """Why a new connection with ``host`` is not allowed now, or None."""
        limits = self.settings
        if len(self._connections) >= limits.max_connections:
            return f"{limits.max_connections} connections open"
        if self._per_ip[host] >= limits.max_connections_per_ip:
            return f"{limits.max_connections_per_ip} connections open with {host}"
        return None

    def _new_framer(self) -> StreamFramer:
        s = self.settings
        return StreamFramer(
            max_message_size=s.max_message_size,
            max_header_bytes=min(s.max_header_bytes, s.max_message_size),
            message_timeout=s.message_timeout,
        )

    def _register(self, conn: _Connection) -> None:
        self._connections[conn.id] = conn
        self._per_ip[conn.remote[0]] += 1
        self._by_remote[(conn.kind, conn.remote)] = conn
        self._arm_sweeper()

    def _connect(self, flow: Flow) -> _Connection | None:
        if self._closing:
            return None
        host, port = flow.remote
        why = self._room_for(host)
        if why is not None:
            self.stats["refused_limit"] += 1
            self._send_failed(flow, f"no new connection: {why}")
            return None
        context = None
        if flow.transport == "TLS":
            if callable(self.client_ssl):
                self.client_ssl = self.client_ssl()
            context = self.client_ssl
            if context is None:
                self._send_failed(flow, "no TLS client context")
                return None
        conn = _Connection(
            next(self._ids), flow.transport, flow.remote, True, self._new_framer(), 0
        )
        conn.last_activity = self._now()
        if context is not None:
            conn.server_name = flow.server_name or self._names.get(flow.remote) or host
        self._register(conn)
        task = asyncio.ensure_future(self._open(conn, context, flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def _open(self, conn: _Connection, context: ssl.SSLContext | None, flow: Flow) -> None:
        loop = asyncio.get_running_loop()
        host, port = conn.remote
        local = None
        bind = self.bind_host
        if bind and bind not in ("0.0.0.0", "::") and (":" in bind) == (":" in host):
            local = (bind, 0)
        name = conn.server_name
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _StreamProtocol(self, conn.kind, conn),
                    host,
                    port,
                    ssl=context,
                    server_hostname=name if context is not None else None,
                    local_addr=local,
                    ssl_handshake_timeout=self.settings.connect_timeout if context else None,
                )
        except asyncio.CancelledError:
            self._forget(conn)
            raise
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
            self._connect_failed(conn, flow, exc)
            return
        if conn.closed:  # closed while connecting (shutdown)
            transport.close()
            return
        _no_delay(transport)
        if context is not None:
            _shrink_tls_buffer(transport)
        conn.transport = transport  # type: ignore[assignment]
        conn.last_activity = loop.time()
        self.stats["connected"] += 1
        if context is not None and name and context.check_hostname:
            self._remember_name(conn.remote, name)
        pending, conn.pending, conn.pending_bytes = conn.pending, [], 0
        for data in pending:
            self._write(conn, data)
            if conn.closed:
                break

    def _connect_failed(self, conn: _Connection, flow: Flow, exc: BaseException) -> None:
        verify = verify_failure(exc)
        if verify is not None:
            self.stats["tls_verify_failed"] += 1
            reason = f"TLS {verify}"
        elif isinstance(exc, TimeoutError):
            reason = f"no connection within {self.settings.connect_timeout:g} s"
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS handshake failed: {exc.reason or exc}"
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.stats["connect_failed"] += 1
        queued = len(conn.pending)
        self._forget(conn)
        name = f" (TLS name {conn.server_name})" if conn.kind == "TLS" else ""
        log, suppressed = self._repeats.check(f"connect:{conn.kind}:{conn.remote}", self._now())
        if log:
            more = f" ({suppressed} more like it not logged)" if suppressed else ""
            logger.warning(
                f"SIP: cannot connect to {Flow(conn.kind, conn.remote)}{name}: "
                f"{escape(reason, 200)}; {queued} message(s) not sent{more}"
            )
        if self._on_transport_error is not None:
            self._on_transport_error(
                Flow(conn.kind, conn.remote, server_name=flow.server_name), reason
            )

    def _remember_name(self, remote: Addr, name: str) -> None:
        try:
            ipaddress.ip_address(name)
            return  # an address is no name to remember
        except ValueError:
            pass
        self._names[remote] = name
        self._names.move_to_end(remote)
        while len(self._names) > _MAX_KNOWN_NAMES:
            self._names.popitem(last=False)

    # --- connections: accepting, reading, closing ------------------------------------------
    def _accepted(self, kind: str, transport: asyncio.Transport) -> _Connection | None:
        peer = transport.get_extra_info("peername")
        if not peer or self._closing:
            transport.abort()
            return None
        remote = (normalize_address(peer[0]), peer[1])
        why = self._room_for(remote[0])
        if why is not None:
            self.stats["refused_limit"] += 1
            self._log_limited(
                "accept_limit", f"SIP: refused a {kind.lower()} connection from {remote[0]}: {why}"
            )
            transport.abort()
            return None
        _no_delay(transport)
        if kind == "TLS":
            _shrink_tls_buffer(transport)
        conn = _Connection(next(self._ids), kind, remote, False, self._new_framer(), self._now())
        conn.transport = transport
        self._register(conn)
        self.stats["accepted"] += 1
        return conn

    def _stream_data(self, conn: _Connection, data: bytes) -> None:
        if conn.closed:
            return
        now = self._now()
        conn.last_activity = now
        for event in conn.framer.receive(data, now):
            if conn.closed:
                return
            if isinstance(event, Message):
                flow = conn.flow
                if not conn.outbound:
                    alias = via_alias(event.data, flow)
                    if alias is not None and alias != conn.remote:
                        self._add_alias(conn, alias)
                self._on_message(event.data, flow)
            elif isinstance(event, Ping):
                if conn.transport is not None:
                    conn.transport.write(PONG)
                    self.stats["pongs_sent"] += 1
            elif isinstance(event, Pong):
                conn.ping_sent_at = None
            elif isinstance(event, Oversized):
                self.stats["oversized"] += 1
                if self._on_refused is not None:
                    reason = f"larger than {conn.framer.max_message_size} bytes"
                    self._on_refused(event.head, 413, reason, conn.flow)
            elif isinstance(event, StreamError):
                self.stats["closed_timeout" if event.kind == "timeout" else "closed_framing"] += 1
                if event.head is not None and self._on_refused is not None:
                    self._on_refused(event.head, event.status_code, event.reason, conn.flow)
                self._log_limited(
                    f"framing:{event.kind}", f"SIP: closing {conn}: {escape(event.reason, 160)}"
                )
                self._close(conn, event.reason)

    def _add_alias(self, conn: _Connection, alias: Addr) -> None:
        key = (conn.kind, alias)
        current = self._by_remote.get(key)
        if current is conn:
            return
        if len(conn.aliases) >= 4:  # one peer, a few sent-by ports at most
            return
        conn.aliases.add(alias)
        self._by_remote[key] = conn

    def _close(self, conn: _Connection, reason: str, *, report: bool = True) -> None:
        if conn.closed:
            return
        transport = conn.transport
        self._forget(conn)
        if transport is not None:
            transport.close()  # what was written is still sent
        if report and self._on_connection_closed is not None and not self._closing:
            self._on_connection_closed(Flow(conn.kind, conn.remote, conn.id), reason)

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn.closed:
            return
        reason = f"connection lost ({exc})" if exc else "closed by the peer"
        self._close(conn, reason)

    def _forget(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.pending = []
        self._connections.pop(conn.id, None)
        for key in [(conn.kind, conn.remote), *((conn.kind, a) for a in conn.aliases)]:
            if self._by_remote.get(key) is conn:
                del self._by_remote[key]
        self._per_ip[conn.remote[0]] -= 1
        if self._per_ip[conn.remote[0]] <= 0:
            del self._per_ip[conn.remote[0]]

    # --- the sweeper: timeouts and keep-alives -------------------------------------------------
    def _arm_sweeper(self) -> None:
        if self._sweeper is None and not self._closing:
            loop = self._loop or asyncio.get_running_loop()
            self._sweeper = loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        try:
            self.sweep(self._now())
        except Exception:
            logger.exception("SIP: error in the connection sweep")
        if self._connections or self._keepalives:
            self._arm_sweeper()

    def sweep(self, now: float) -> None:
        """Close overdue connections and send due keep-alives (run every second)."""
        limits = self.settings
        kept = self._keepalives
        for conn in list(self._connections.values()):
            if conn.closed:
                continue
            if conn.framer.check_timeout(now) is not None:
                self.stats["closed_timeout"] += 1
                self._log_limited(
                    "message_timeout",
                    f"SIP: closing {conn}: a message not complete in {limits.message_timeout:g} s",
                )
                self._close(conn, "message not complete in time")
            elif conn.ping_sent_at is not None and now - conn.ping_sent_at > limits.pong_timeout:
                self.stats["pong_timeouts"] += 1
                logger.warning(
                    f"SIP: {conn}: no pong to the keep-alive in {limits.pong_timeout:g} s; "
                    "closing the flow"
                )
                self._close(conn, "keep-alive: no pong")
            elif (
                conn.transport is not None
                and now - conn.last_activity > limits.idle_timeout
                and (conn.kind, conn.remote) not in kept
            ):
                self.stats["closed_idle"] += 1
                self._close(conn, "idle")
        for key, keepalive in list(kept.items()):
            if now < keepalive.next_at:
                continue
            keepalive.next_at = now + self._jitter(keepalive.interval)
            transport, remote = key
            if transport == "UDP":
                self._send_udp(PING, Flow("UDP", remote))
                self.stats["pings_sent"] += 1
                continue
            conn = self._by_remote.get(key)
            if conn is None or conn.closed or conn.transport is None:
                continue  # no flow now: the next request opens one, and it is kept alive
            if conn.ping_sent_at is None:
                conn.ping_sent_at = now
                self._write(conn, PING)
                self.stats["pings_sent"] += 1

    # --- logging ---------------------------------------------------------------------------
    def _log_limited(self, kind: str, text: str) -> None:
        log, suppressed = self._repeats.check(kind, self._now())
        if log:
            more = f" ({suppressed} more like it not logged)" if suppressed else ""
            logger.info(text + more)

    def _send_failed(self, flow: Flow, why: str) -> None:
        self.send_errors += 1
        if self.send_errors % _LOG_EVERY == 1:
            logger.warning(f"SIP: cannot send to {flow}: {why} ({self.send_errors} so far)")
