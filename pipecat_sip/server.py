"""The SIP server: the user agent driven over asyncio, with calls handed to bot code.

This is the thin asyncio layer of DESIGN.md. :class:`SIPServer` wires four
pieces and owns one timer:

- the SIP transport layer (:class:`~pipecat_sip.endpoint.SIPEndpoint`),
  which owns the sockets and hands each message over with its flow;
- the protections of :mod:`pipecat_sip.security` (per-source rate limit,
  escaped and rate-limited log lines);
- the sans-IO :class:`~pipecat_sip.sip.useragent.UserAgent`, fed with
  ``loop.time()``; what it queues is sent, its events dispatched, and the
  one ``loop.call_at`` timer re-armed from its ``get_timer()``;
- the :class:`~pipecat_sip.calls.CallManager`, which turns call events into
  :class:`~pipecat_sip.call.SIPCall` objects with their RTP ports and media.

Transports (RFC 3261 s.18): UDP, TCP and TLS listeners on the server's
ports (``transports=("udp", "tcp", "tls")``); outbound requests reuse a
connection to their destination or open one (TLS verified against the
system's or a configured CA, RFC 5922). Host names in REGISTER and
:meth:`SIPServer.call` targets are located with RFC 3263 (NAPTR, SRV,
A/AAAA) by one shared :class:`~pipecat_sip.resolver.ServerLocator`, never
blocking the loop; a URI with an IP address or an explicit port skips SRV.

Registration is the user agent's (refreshes, retries and failover across the
located destinations run on its timer); the server looks the registrar up,
keeps the registration's flow alive (RFC 5626 CRLF keep-alives) and
registers again over a new flow when it fails, and logs the outcome.

Shutdown (issue 11 #14): from the first moment of :meth:`SIPServer.stop`
or :meth:`SIPServer.drain`, new INVITEs get 503 with Retry-After and
OPTIONS get 503, so a load balancer (Kamailio's dispatcher) sends no new
calls; :meth:`~SIPServer.drain` lets live calls finish for a while first.

Log lines about a call carry its Call-ID as ``extra["call_id"]`` (for JSON
logs, :mod:`pipecat_sip.logs`): the call manager's work on a call's events
runs in a log context with it, and so do the tasks it starts for the call
(the call handler, hence the bot's pipeline).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from pipecat_sip.call import CallFailed, SIPCall
from pipecat_sip.calls import CallHandler, CallManager
from pipecat_sip.codecs import SUPPORTED_CODECS
from pipecat_sip.endpoint import SIPEndpoint, StreamSettings
from pipecat_sip.host import default_public_address, ensure_fd_limit
from pipecat_sip.metrics import classify_sip
from pipecat_sip.ports import PortPool
from pipecat_sip.resolver import LocationError, ServerLocator
from pipecat_sip.sdes import SRTP_MODES
from pipecat_sip.security import (
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    Network,
    RateLimiter,
    RepeatFilter,
    escape,
    in_networks,
    parse_networks,
)
from pipecat_sip.sip.auth import DigestServer
from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.events import Event, Notice, Registered, RegistrationFailed
from pipecat_sip.sip.locate import Destination, TargetList, ip_version
from pipecat_sip.sip.message import is_keepalive
from pipecat_sip.sip.registrar import Binding, Registrar
from pipecat_sip.sip.session_timer import (
    DEFAULT_MIN_SE,
    DEFAULT_SESSION_EXPIRES,
    SessionTimerPolicy,
)
from pipecat_sip.sip.transaction import TimerValues
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.uri import SIPURI, Address
from pipecat_sip.sip.useragent import UserAgent
from pipecat_sip.tls import TLSConfig, TLSConfigError
from pipecat_sip.trunk import (
    Trunk,
    check_header,
    host_is_ip,
    is_phone_number,
    normalize_number,
    trunks_by_name,
)

__all__ = [
    "DEFAULT_KEEPALIVE_INTERVAL",
    "CallObserver",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RATE_BURST",
    "DEFAULT_RATE_LIMIT",
    "TRANSPORTS",
    "Registration",
    "SIPServer",
    "StreamSettings",
    "TLSConfig",
    "TLSConfigError",
    "default_public_address",
    "parse_networks",
    "parse_transports",
]

#: Transports a server can listen on, as written in configuration.
TRANSPORTS = ("udp", "tcp", "tls")
#: Seconds between keep-alives on a registration's flow (RFC 5626 s.4.4.1
#: suggests 95-120 s for TCP/TLS; NAT bindings for UDP often last 30 s).
DEFAULT_KEEPALIVE_INTERVAL = 30.0

#: Default largest SIP message accepted, bytes (RFC 3261 s.18.1.1 keeps UDP
#: requests under the path MTU; 16 KiB leaves room for big SDP offers).
DEFAULT_MAX_MESSAGE_SIZE = 16384
#: Default most header lines accepted in one message.
DEFAULT_MAX_HEADERS = 128
_DROP_LOG_INTERVAL_S = 10.0

# Seconds between attempts after a failed registration (or registrar lookup).
_REGISTER_RETRY_S = 30.0

# Per call: the RTP and RTCP sockets, and one to spare; plus the SIP socket,
# the event loop's own descriptors, log files...
_FDS_PER_CALL = 3
_FDS_SPARE = 64

#: ``observer(what, call)`` with what = "started" (admitted or placed) or "ended" (released).
CallObserver = Callable[[str, SIPCall], None]

_DRAIN_POLL_S = 0.1

_LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR"}


def parse_transports(value: str | Iterable[str]) -> tuple[str, ...]:
    """Parse a transport list such as ``SIP_TRANSPORTS`` (``"udp,tcp,tls"``).

    Returns:
        The transports in lower case, in the order given, without repeats.

    Raises:
        ValueError: Empty, or a name that is not udp, tcp or tls.
    """
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        name = item.strip().lower()
        if name not in TRANSPORTS:
            raise ValueError(f"{item!r} is not one of udp, tcp, tls")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no transport given (udp, tcp, tls)")
    return tuple(out)


@dataclass(frozen=True)
class Registration:
    """Where and as whom :class:`SIPServer` keeps itself registered (RFC 3261 s.10).

    Attributes:
        registrar: The registrar's URI, e.g. ``sip:pbx.example.com``,
            ``sips:pbx.example.com`` (TLS) or ``sip:192.0.2.10:5060;transport=tcp``.
            A host name is located with RFC 3263 (NAPTR, SRV, A/AAAA; an
            explicit port skips SRV); a 408, 503 or transport error moves to
            the next destination found.
        username: The address-of-record's user part and the Digest user name
            (e.g. the PBX extension); default the server's ``user``.
        password: The Digest password; None answers no challenge.
        expires: Seconds asked for each binding (the registrar may grant less).
    """

    registrar: str
    username: str | None = None
    password: str | None = None
    expires: int = 300


def _family(address: str) -> int:
    return 6 if ":" in address else 4


class SIPServer:
    """Answers (and places) SIP calls over UDP, TCP and TLS; hands each call to `call_handler`.

    For each acceptable INVITE the server sends 100 Trying and 180 Ringing,
    negotiates the SDP (488 when no codec is common), leases an RTP port
    (503 with Retry-After when the pool or `max_calls` is exhausted), and
    runs `call_handler(call)` in a task. The handler answers with
    `await call.answer()` (or rejects), then typically runs a Pipecat
    pipeline with a `SIPTransport(call)`.

    Args:
        call_handler: Coroutine function called with each new incoming `SIPCall`.
        host: Address to bind (SIP and RTP), e.g. "0.0.0.0" or "127.0.0.1".
        port: SIP UDP port; 0 picks a free one (see `port` after `start()`).
        public_address: Address written into Via, Contact and SDP; by
            default `default_public_address(host)`.
        rtp_port_range: (first, last) RTP ports, inclusive.
        max_calls: Concurrent calls before new INVITEs get 503.
        retry_after_s: Retry-After seconds sent with 503.
        codecs: Codec names we accept, in our preference order.
        rtp_timeout_s: Seconds without RTP before a call is ended (0 disables).
        answer_timeout_s: Seconds an incoming call may ring unanswered before
            it is rejected with 480 Temporarily Unavailable (0 disables).
        send_silence: Send silence packets when the bot is quiet (else nothing).
        server_name: Server/User-Agent header value; None sends none (a
            value without a version reveals less to scanners).
        user: User part of our Contact URI.
        timer_values: SIP timers T1/T2/T4 (RFC 3261 s.17).
        max_message_size: Largest SIP datagram accepted, bytes. A larger
            request is answered 413 (when its headers can be read), anything
            else larger is dropped.
        max_headers: Most header lines accepted in one message; a request
            with more is answered 400, anything else dropped.
        allowed_networks: Source networks (CIDR text or `ipaddress`
            networks) allowed to place calls; INVITEs from elsewhere get 403.
            Empty: calls from anywhere.
        rate_limit: Requests per second accepted from one source IP (token
            bucket); the excess is dropped with a rate-limited warning. 0
            disables the limit.
        rate_burst: Requests accepted at once from one source IP after a
            quiet period (the bucket size).
        registration: Keep our Contact registered at a registrar (a PBX
            extension, a trunk that wants registration): REGISTER on start,
            refreshed at half the granted time, retried every 30 s after a
            failure, removed (Expires: 0) on stop.
        trust_in_dialog_from: ``"peer"`` (default): in-dialog requests only
            from the dialog's peer (others get 403); ``"any"`` behind a proxy
            that does not Record-Route.
        transports: Transports to listen on and send over, in our order of
            preference for RFC 3263 selection: some of "udp", "tcp", "tls"
            (or their comma-separated text). TLS needs ``tls`` with a
            certificate.
        tcp_port: TCP port; None: the UDP port (a free one when that is 0
            and taken for TCP).
        tls_port: TLS port; None: the UDP port + 1 (a free one when `port` is 0).
        tls: Certificate, key, CA and verification for TLS (`TLSConfig`);
            needed with a certificate for the TLS listener, optional for
            outbound TLS only (then the system's trust store verifies peers).
        keepalive_interval: Seconds between keep-alives on the registration's
            flow: a CRLF ping answered by a pong on TCP/TLS (a flow that stops
            answering is closed and the registration made again over a new
            one), a double-CRLF datagram on UDP (RFC 5626 s.3.5.1, s.4.4.1).
            0 sends none.
        dns_servers: Name servers for RFC 3263 lookups (``"192.0.2.53,
            [2001:db8::53]:53"``, see `parse_nameservers`); None: the
            system's (``/etc/resolv.conf``, and ``/etc/hosts`` first).
        locator: A `ServerLocator` to use instead of one built from
            `dns_servers` (shared between servers, or a test's); it serves
            RFC 3263 location and host names in SDP alike.
        stream_settings: Connection limits of TCP and TLS (`StreamSettings`).
        rtp_latching: Where RTP may come from when it does not come from the
            SDP address (:mod:`pipecat_sip.rtp.latching`): "signaling"
            (default: the SDP host or the call's signalling source, after a
            short run of consecutive packets), "any", or "off" (the SDP
            address only).
        trunks: Trunks for outbound calls (:class:`~pipecat_sip.trunk.Trunk`),
            a list or a mapping by name; the first is the default for numbers.
        auth_users: Challenge incoming INVITEs (and REGISTERs) with Digest
            (RFC 3261 s.22.4): user name to password, or a function
            ``lookup(username) -> password | None``. None (default): no
            authentication.
        auth_realm: The realm of our challenges (default ``"pipecat-sip"``).
        auth_exempt_networks: Sources (CIDRs) whose requests are not
            challenged, e.g. a trunk's signalling addresses.
        auth_max_failures: Failed authentications of one source within a
            minute before its requests are refused (403) for the rest of it.
        session_expires: Session timer (RFC 4028) interval we ask for and
            grant at most, seconds; the refresher refreshes at half of it (by
            UPDATE, else re-INVITE) and a call nobody refreshes ends with BYE.
            0 asks for none (a peer's request is still honoured).
        min_se: The shortest session interval accepted (>= 90 s); shorter
            requests get 422 with it.
        reliable_provisionals: Send 180/183 reliably (RFC 3262 PRACK) to
            callers that support 100rel; callers that require it always get
            reliable ones.
        accept_registrations: Be a registrar for softphones (RFC 3261 s.10.3):
            REGISTER accepted (Digest-authenticated when ``auth_users`` is
            set: each user may register its own name only), bindings kept in
            memory; ``call("sip:alice@bot")`` then reaches alice's Contact
            through the flow she registered on. False answers REGISTER 405.
        public_address_v6: For a dual-stack server (``host="::"``), our IPv6
            address when ``public_address`` is the IPv4 one (or the other way
            round); detected like ``public_address`` when None. Each call is
            answered in its caller's family (SDP, Contact, Via).
        max_unconfirmed_per_source: Calls one source IP may have waiting for
            their ACK; more INVITEs from it get 503.
        hold_timeout_s: Seconds a call may stay held by the far end (0: no limit).
        max_call_duration_s: Seconds a call may last from its answer (0: no limit).
        srtp: SRTP with SDES keys (RFC 3711, RFC 4568): "off" (default),
            "optional" (answer ``RTP/SAVP`` offers with SRTP, plain ones with
            RTP; offer SRTP and call again with a plain offer after 488/606)
            or "required" (plain offers get 488). See :mod:`pipecat_sip.calls`.
        srtp_insecure_signaling: SDES keys travel in the SDP, so by default
            they are only sent and taken over TLS signalling (over UDP/TCP
            "optional" acts as "off" and "required" refuses the call). True
            sends them over any transport: for labs and tests only.
        srtp_rng: ``random.Random``-like source of the SRTP master keys;
            default ``secrets.SystemRandom()`` (a seeded one only in tests).

    Raises:
        ValueError: A bad argument (port, range, max_calls, network, limit,
            transport, srtp policy).
        TLSConfigError: TLS asked for with a certificate or key that is
            missing, unreadable or does not match (a ValueError; one line).

    Example:
        ```python
        async def on_call(call):
            await call.answer()
            await call.wait_ended()

        server = SIPServer(on_call, host="0.0.0.0", port=6060)
        await server.start()
        ```
    """

    def __init__(
        self,
        call_handler: CallHandler | None = None,
        *,
        host: str = "0.0.0.0",
        port: int = 6060,
        public_address: str | None = None,
        rtp_port_range: tuple[int, int] = (10000, 15000),
        max_calls: int = 100,
        retry_after_s: int = 5,
        codecs: Sequence[str] = SUPPORTED_CODECS,
        rtp_timeout_s: float = 30.0,
        answer_timeout_s: float = 60.0,
        send_silence: bool = True,
        server_name: str | None = "pipecat-sip",
        user: str = "pipecat",
        timer_values: TimerValues | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_headers: int = DEFAULT_MAX_HEADERS,
        allowed_networks: Iterable[str | Network] | str = (),
        rate_limit: float = DEFAULT_RATE_LIMIT,
        rate_burst: int = DEFAULT_RATE_BURST,
        registration: Registration | None = None,
        trust_in_dialog_from: str = "peer",
        transports: str | Iterable[str] = ("udp",),
        tcp_port: int | None = None,
        tls_port: int | None = None,
        tls: TLSConfig | None = None,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        dns_servers: str | Iterable[str | tuple[str, int]] | None = None,
        locator: ServerLocator | None = None,
        stream_settings: StreamSettings | None = None,
        rtp_latching: str = "signaling",
        trunks: Mapping[str, Trunk] | Sequence[Trunk] = (),
        auth_users: Mapping[str, str] | Callable[[str], str | None] | None = None,
        auth_realm: str = "pipecat-sip",
        auth_exempt_networks: Iterable[str | Network] | str = (),
        auth_max_failures: int = 10,
        session_expires: int = DEFAULT_SESSION_EXPIRES,
        min_se: int = DEFAULT_MIN_SE,
        reliable_provisionals: bool = False,
        accept_registrations: bool = False,
        public_address_v6: str | None = None,
        max_unconfirmed_per_source: int = 5,
        hold_timeout_s: float = 600.0,
        max_call_duration_s: float = 14400.0,
        srtp: str = "off",
        srtp_insecure_signaling: bool = False,
        srtp_rng: Any = None,
    ) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f"invalid SIP port {port}")
        self.transports = parse_transports(transports)
        for name, value in (("tcp_port", tcp_port), ("tls_port", tls_port)):
            if value is not None and not 0 <= value < 65536:
                raise ValueError(f"invalid SIP {name} {value}")
        if keepalive_interval < 0:
            raise ValueError(
                f"keepalive_interval must be 0 (off) or more, not {keepalive_interval}"
            )
        self.tls = tls
        self._server_ssl = None
        self._client_ssl = None
        if "tls" in self.transports and (tls is None or tls.cert_file is None):
            raise TLSConfigError("cert", "TLS listener asked for without a certificate")
        if tls is not None:
            self._server_ssl, self._client_ssl = tls.load()

        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, not {max_calls}")
        if max_message_size < 1024:
            raise ValueError(f"max_message_size must be at least 1024, not {max_message_size}")
        if max_headers < 8:
            raise ValueError(f"max_headers must be at least 8, not {max_headers}")
        if rate_limit < 0:
            raise ValueError(f"rate_limit must be 0 (off) or more, not {rate_limit}")
        if trust_in_dialog_from not in ("peer", "any"):
            raise ValueError(
                f"trust_in_dialog_from must be 'peer' or 'any', not {trust_in_dialog_from!r}"
            )
        self.call_handler = call_handler
        self.host = host
        self.port = port
        self.public_address = public_address or default_public_address(
            "0.0.0.0" if host == "::" else host
        )
        self.addresses: dict[int, str] = {_family(self.public_address): self.public_address}
        if public_address_v6 is not None:
            self.addresses[_family(public_address_v6)] = public_address_v6
        elif host == "::":  # dual-stack: the IPv6 address too
            self.addresses.setdefault(6, default_public_address("::"))
        if max_unconfirmed_per_source < 1:
            raise ValueError(
                f"max_unconfirmed_per_source must be at least 1, not {max_unconfirmed_per_source}"
            )
        if hold_timeout_s < 0 or max_call_duration_s < 0:
            raise ValueError("hold_timeout_s and max_call_duration_s must be 0 (off) or more")
        self.max_unconfirmed_per_source = max_unconfirmed_per_source
        self.hold_timeout_s = hold_timeout_s
        self.max_call_duration_s = max_call_duration_s
        self.locator = locator
        self.ports = PortPool(rtp_port_range[0], rtp_port_range[1], host)
        self.max_calls = max_calls
        self.retry_after_s = retry_after_s
        self.codecs = tuple(codecs)
        self.rtp_timeout_s = rtp_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.send_silence = send_silence
        self.server_name = server_name
        self.user = user
        self.timer_values = timer_values
        self.max_message_size = max_message_size
        self.max_headers = max_headers
        self.allowed_networks = parse_networks(allowed_networks)
        self.rate_limiter = RateLimiter(rate_limit, rate_burst) if rate_limit else None
        self.trust_in_dialog_from = trust_in_dialog_from
        if rtp_latching not in ("signaling", "any", "off"):
            raise ValueError(f"rtp_latching must be signaling, any or off, not {rtp_latching!r}")
        self.rtp_latching = rtp_latching
        self.trunks = trunks_by_name(trunks)
        self.auth_users = auth_users
        self.auth_realm = auth_realm
        self.auth_exempt_networks = parse_networks(auth_exempt_networks)
        self.auth_max_failures = auth_max_failures
        self.session_timers = SessionTimerPolicy(
            enabled=session_expires > 0,
            session_expires=max(session_expires, min_se),
            min_se=min_se,
        )
        self.reliable_provisionals = reliable_provisionals
        self.registrar: Registrar | None = Registrar() if accept_registrations else None
        """The softphones' bindings (``accept_registrations``), or None."""
        self.authenticator: DigestServer | None = None
        if srtp not in SRTP_MODES:
            raise ValueError(f"srtp must be one of {', '.join(SRTP_MODES)}, not {srtp!r}")
        self.srtp = srtp
        self.srtp_insecure_signaling = bool(srtp_insecure_signaling)
        self.srtp_rng = srtp_rng
        self.registration = registration
        self.registered = False
        """Whether the registrar holds our binding now."""
        self.dropped_rate_limited = 0
        self.sip_messages: Counter[tuple[str, str, str, str]] = Counter()
        """SIP messages by (direction "in"/"out", "request"/"response", method,
        status): method names outside a fixed set are "other", statuses
        outside the standard codes their class ("5xx"); keep-alives and
        rate-limited datagrams are not counted."""
        self.ua: UserAgent | None = None
        self.manager: CallManager | None = None
        self.endpoint: SIPEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._repeats = RepeatFilter(_DROP_LOG_INTERVAL_S)
        self._rate_drops_unlogged = 0
        self._registration_id: str | None = None
        self._unregistered: asyncio.Event | None = None
        self.tcp_port: int | None = tcp_port
        self.tls_port: int | None = tls_port
        self.keepalive_interval = keepalive_interval
        self.stream_settings = stream_settings or StreamSettings(
            max_message_size=max_message_size,
            max_header_bytes=min(8192, max_message_size),
        )
        self.dns_servers = dns_servers
        self.locator = locator
        self._own_locator = locator is None
        self._keepalive_flow: Flow | None = None
        self._relocating = False
        if dns_servers is not None and locator is None:
            from pipecat_sip.resolver import parse_nameservers

            parse_nameservers(dns_servers)  # a bad server fails here, not at the first lookup
        self._observers: list[CallObserver] = []
        self._accepting = True
        self._hangup_now: asyncio.Event | None = None
        # The UA's one timer serves every call: armed in a context of its own, it
        # never carries the log context of the call whose event armed it.
        self._timer_context = contextvars.Context()

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Bind the SIP socket and start serving.

        Raises:
            OSError: The SIP port cannot be bound.
        """
        self._loop = asyncio.get_running_loop()
        streams = [t for t in self.transports if t != "udp"]
        connections = self.stream_settings.max_connections if streams else 0
        ensure_fd_limit(_FDS_PER_CALL * self.max_calls + connections + _FDS_SPARE)
        self.endpoint = SIPEndpoint(
            self._on_message,
            on_refused=self._on_refused,
            on_connection_closed=self._on_connection_closed,
            on_transport_error=self._on_transport_error,
            settings=self.stream_settings,
            # Outbound TLS without configuration: the system's CAs, loaded when first used.
            client_ssl=self._client_ssl or (lambda: TLSConfig().load()[1]),
            bind_host=self.host,
        )
        try:
            await self._open_listeners()
        except BaseException:
            self.endpoint.close()
            self.endpoint = None
            raise
        if self.locator is None:
            self.locator = ServerLocator(
                self.dns_servers,
                transports=self.transports,
                families=self._families(),
            )
        ports: dict[str, int] = {}
        if self.tcp_port is not None:
            ports["TCP"] = self.tcp_port
        if self.tls_port is not None:
            ports["TLS"] = self.tls_port
        self.ua = UserAgent(
            self.public_address,
            self.port,
            transport_ports=ports,
            user=self.user,
            server_name=self.server_name,
            timer_values=self.timer_values,
            max_message_size=self.max_message_size,
            max_headers=self.max_headers,
            trust_in_dialog_from=self.trust_in_dialog_from,
            registration_retry_s=_REGISTER_RETRY_S,
            **self._ua_options(),
            other_host=next((a for a in self.addresses.values() if a != self.public_address), None),
        )
        self.manager = CallManager(
            self,
            self.ports,
            call_handler=self.call_handler,
            public_address=self.public_address,
            codecs=self.codecs,
            max_calls=self.max_calls,
            retry_after_s=self.retry_after_s,
            rtp_timeout_s=self.rtp_timeout_s,
            answer_timeout_s=self.answer_timeout_s,
            send_silence=self.send_silence,
            allowed_networks=self.allowed_networks,
            rtp_latching=self.rtp_latching,
            addresses=self.addresses,
            bind_host=self.host,
            sip_port=self.port,
            max_unconfirmed_per_source=self.max_unconfirmed_per_source,
            hold_timeout_s=self.hold_timeout_s,
            max_call_duration_s=self.max_call_duration_s,
            locator=self.locator,
            srtp=self.srtp,
            srtp_insecure_signaling=self.srtp_insecure_signaling,
            srtp_rng=self.srtp_rng,
        )
        self.manager.dial = self.call  # REFER targets go through trunks and DNS too
        self.manager.on_call_started = lambda call: self._notify("started", call)
        self.manager.on_call_ended = lambda call: self._notify("ended", call)
        self._accepting = True
        where = ", ".join(f"{t} {self.host}:{self.port_for(t)}" for t in self.transports)
        logger.info(f"SIP server listening on {where} ({self.uri})")
        if self.tls is not None and not self.tls.verify:
            logger.warning("SIP TLS: peer certificates are NOT verified (SIP_TLS_VERIFY=false)")
        if self.srtp != "off":
            if self.srtp_insecure_signaling:
                logger.warning(
                    f"SRTP {self.srtp} with SDES keys over unencrypted signalling too: "
                    "anyone who sees the SIP messages can decrypt the media (labs only)"
                )
            else:
                logger.info(
                    f"SRTP {self.srtp}: SDES keys only over TLS signalling; over UDP/TCP "
                    + ("calls are refused" if self.srtp == "required" else "media is plain RTP")
                )
        if self.registration is not None:
            await self._register()

    def _ua_options(self) -> dict[str, Any]:
        """The user agent's call-control options (authentication, registrar, timers)."""
        options: dict[str, Any] = {
            "session_timers": self.session_timers,
            "reliable_provisionals": self.reliable_provisionals,
            "registrar": self.registrar,
        }
        if self.registrar is not None and self.auth_users is None:
            logger.warning("registrar without auth_users: anyone may register any name")
        if self.auth_users is not None:
            self.authenticator = DigestServer(
                self.auth_realm, self.auth_users, max_failures=self.auth_max_failures
            )
            options["authenticator"] = self.authenticator
            if self.auth_exempt_networks:
                networks = self.auth_exempt_networks
                options["auth_exempt"] = lambda flow: in_networks(flow.host, networks)
        return options

    async def _open_listeners(self) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        udp = "udp" in self.transports
        if udp:
            self.port = await endpoint.open_udp(self.host, self.port)
        else:
            self.port = 0
        if "tcp" in self.transports:
            wanted = self.tcp_port if self.tcp_port is not None else self.port
            try:
                self.tcp_port = await endpoint.open_stream("TCP", self.host, wanted)
            except OSError:
                if self.tcp_port is not None or not udp:
                    raise
                self.tcp_port = await endpoint.open_stream("TCP", self.host, 0)
        else:
            self.tcp_port = None
        if "tls" in self.transports:
            wanted = self.tls_port
            if wanted is None:
                wanted = self.port + 1 if self.port else 0
            self.tls_port = await endpoint.open_stream("TLS", self.host, wanted, self._server_ssl)
        else:
            self.tls_port = None
        if not udp:  # the UA's own port: the first stream listener's
            self.port = self.tcp_port or self.tls_port or 0

    def _families(self) -> tuple[int, ...]:
        """IP versions we can send from, preferred first: our public address's first."""
        public = ip_version(self.public_address) or 4
        if self.host in ("::", "0.0.0.0"):
            both = (6, 4) if public == 6 else (4, 6)
            return both if self.host == "::" else (4,)
        return (ip_version(self.host) or public,)

    def port_for(self, transport: str) -> int | None:
        """Our port on ``transport`` ("udp", "tcp", "tls"), or None when not listening on it."""
        name = transport.lower()
        if name not in self.transports:
            return None
        if name == "udp":
            return self.port
        return self.tcp_port if name == "tcp" else self.tls_port

    def uri_for(self, transport: str) -> str | None:
        """The URI to call this server at over ``transport``, or None when not listening on it.

        ``sip:user@host:port`` (UDP), ``...;transport=tcp``, ``sips:user@host:tls_port``.
        """
        port = self.port_for(transport)
        if port is None:
            return None
        host = f"[{self.public_address}]" if ":" in self.public_address else self.public_address
        name = transport.lower()
        if name == "tls":
            return f"sips:{self.user}@{host}:{port}"
        suffix = ";transport=tcp" if name == "tcp" else ""
        return f"sip:{self.user}@{host}:{port}{suffix}"

    def stop_accepting(self) -> None:
        """Take no new calls from now on: INVITEs and OPTIONS get 503 with Retry-After.

        Live calls go on. A load balancer probing with OPTIONS (Kamailio's
        dispatcher) takes the server out of rotation, and one that sent an
        INVITE regardless fails it over to another instance on the 503.
        """
        self._accepting = False
        if self.manager is not None:
            self.manager.accepting = False
        if self.ua is not None:
            self.ua.unavailable_retry_after = self.retry_after_s

    @property
    def accepting(self) -> bool:
        """Whether new calls are taken (started, and neither draining nor stopping)."""
        return self._accepting and self.endpoint is not None

    def hangup_now(self) -> None:
        """End a :meth:`drain` at once: its remaining calls are hung up (a second SIGTERM)."""
        if self._hangup_now is None:
            self._hangup_now = asyncio.Event()
        self._hangup_now.set()

    async def drain(self, timeout: float, *, stop_timeout: float = 2.0) -> int:
        """Stop taking calls, let live calls finish for up to `timeout` s, then stop.

        New INVITEs and OPTIONS get 503 from the start (see
        :meth:`stop_accepting`); in-dialog requests of live calls (BYE,
        re-INVITE) are served as usual. When every call has ended, or
        `timeout` seconds passed, or :meth:`hangup_now` was called, the
        server stops as :meth:`stop` does, hanging up the calls still up.

        Args:
            timeout: Seconds live calls may take to end; 0 hangs up at once.
            stop_timeout: Seconds :meth:`stop` then waits for BYEs and the
                unregistration to be answered.

        Returns:
            How many calls were still up and were hung up.
        """
        self.stop_accepting()
        if self._hangup_now is None:
            self._hangup_now = asyncio.Event()
        hangup_now = self._hangup_now
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if self.calls:
            logger.info(
                f"draining: taking no new calls; {len(self.calls)} live call(s) may take "
                f"up to {timeout:g} s"
            )
        while self.calls and not hangup_now.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(hangup_now.wait(), min(_DRAIN_POLL_S, remaining))
            except TimeoutError:
                pass
        left = len(self.calls)
        if left:
            why = "at once" if hangup_now.is_set() else f"after {timeout:g} s"
            logger.info(f"draining: hanging up {left} call(s) still up {why}")
        await self.stop(timeout=stop_timeout)
        return left

    async def stop(self, timeout: float = 2.0) -> None:
        """Hang up every call (BYE), unregister, wait up to `timeout` s for both, close.

        From the start new INVITEs and OPTIONS get 503 (:meth:`stop_accepting`).
        """
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        ua = self.ua
        if ua is not None and self._registration_id is not None:
            if self.registered:
                self._unregistered = asyncio.Event()
                ua.unregister(self._registration_id, loop.time())
                self.flush()
            else:
                ua.registrations.forget(self._registration_id)
            self._registration_id = None
        if self.manager is not None:
            await self.manager.hangup_all("shutdown")
        deadline = loop.time() + timeout
        while ua is not None and ua.layer.client and loop.time() < deadline:
            if self._unregistered is not None and self._unregistered.is_set() and not self.calls:
                break
            await asyncio.sleep(0.05)
        self._unregistered = None
        for task in list(self._tasks):
            task.cancel()
        if self.manager is not None:
            self.manager.cancel_tasks()
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        self._keepalive_flow = None
        if self.locator is not None and self._own_locator:
            await self.locator.close()

    async def __aenter__(self) -> SIPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_call_observer(self, observer: CallObserver) -> None:
        """Tell ``observer`` of every call: admitted or placed, and released.

        ``observer("started", call)`` for each call admitted (inbound) or
        placed (outbound), ``observer("ended", call)`` once it is released;
        used by the metrics and the operations API.
        """
        self._observers.append(observer)

    def remove_call_observer(self, observer: CallObserver) -> None:
        """Stop calling ``observer`` (no error if it was not added)."""
        if observer in self._observers:
            self._observers.remove(observer)

    def _notify(self, what: str, call: SIPCall) -> None:
        for observer in list(self._observers):
            try:
                observer(what, call)
            except Exception:
                logger.exception(f"{call}: error in a call observer")

    @property
    def calls(self) -> dict[str, SIPCall]:
        """Live calls by Call-ID."""
        return self.manager.calls if self.manager is not None else {}

    @property
    def dropped_oversized(self) -> int:
        """Messages refused for their size or header count (413/400 or dropped)."""
        return self.ua.refused_oversized if self.ua is not None else 0

    @property
    def rejected_forbidden(self) -> int:
        """INVITEs refused 403 for their source network."""
        return self.manager.rejected_forbidden if self.manager is not None else 0

    @property
    def uri(self) -> str:
        """The SIP URI to call this server at (over its first transport)."""
        return self.uri_for(self.transports[0]) or ""

    # --- outbound calls ---------------------------------------------------------
    async def call(
        self,
        target: str,
        *,
        trunk: str | Trunk | None = None,
        caller_id: str | None = None,
        display_name: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = 60.0,
        destination: tuple[str, int] | None = None,
        from_user: str | None = None,
        progress_handler: Callable[[str, int], Any] | None = None,
        wait: bool = True,
    ) -> SIPCall:
        """Place a call and wait until it is answered; media is then running.

        Where the INVITE goes:

        - through a trunk: ``trunk`` given (a name or a :class:`Trunk`), or a
          bare number (``+4930123``) or ``tel:`` URI (the first trunk), or a
          SIP URI whose host is a trunk's name or proxy host
          (``sip:+4930123@carrier``): the Request-URI is the number at the
          trunk's proxy, 401/407 are answered with the trunk's credentials,
          and From / P-Asserted-Identity show its caller ID;
        - to a softphone registered with us (``accept_registrations``): a URI
          whose user has a binding and whose host is ours or a name reaches
          the binding's Contact, through the flow it registered on;
        - else to the URI itself: ``destination``, or the next hop located
          with RFC 3263 (NAPTR, SRV, A/AAAA; ``sips:`` for TLS,
          ``;transport=tcp``) and failed over on a timeout or 503.

        Args:
            target: A SIP URI (``sip:bot@127.0.0.1:6060``), a number or a tel: URI.
            trunk: The trunk to call through, by name or itself.
            caller_id: The number to present (instead of the trunk's).
            display_name: Our display name.
            headers: Extra headers for the INVITE.
            timeout: Seconds to wait for an answer; then the call is cancelled
                (``CallFailed("no answer", 408)``).
            destination: (host, port) to send the INVITE to (no trunk).
            from_user: User part of our From URI.
            progress_handler: ``handler(kind, status_code)`` for 180/183:
                "ringing", "progress", "early_media" (media started).
            wait: False returns the call as soon as the INVITE is out.

        Returns:
            The established call (or, with ``wait=False``, the call placed).

        Raises:
            CallFailed: Rejected, cancelled, not answered in time, the
                credentials were refused (``reason="auth_failed"``, 401/407),
                a number with no trunk configured, or the target could not be
                located (503).
            PortPoolExhausted: No RTP port is free.
            ValueError: An unknown trunk name, a bad target or header.
            LocationError: The host name could not be located.
            RuntimeError: The server is not started.
            SIPParseError: `target` is not a SIP URI.
        """
        if self.manager is None:
            raise RuntimeError("SIPServer.call() before start()")
        chosen = self._trunk_for(target, trunk)
        if chosen is not None:
            route = chosen.route(
                target,
                caller_id=caller_id,
                display_name=display_name,
                from_user=from_user,
                headers=headers,
            )
            flow, targets = await self._locate(route.proxy)
            return await self.manager.place_call(
                route.request_uri,
                destination=flow,
                from_user=route.from_user,
                from_host=route.from_host,
                display_name=route.display_name,
                to=route.to,
                headers=route.headers,
                credentials=route.credentials,
                targets=targets,
                timeout=timeout,
                progress_handler=progress_handler,
                wait=wait,
            )
        for name, value in headers:
            check_header(name, value)
        extra = list(headers)
        uri = SIPURI.parse(target)
        binding = self._registered(uri) if destination is None else None
        if binding is not None:  # a softphone registered with us: its Contact, its flow
            return await self.manager.place_call(
                binding.contact,
                destination=binding.flow,
                to=Address(uri),
                from_user=from_user or (normalize_number(caller_id) if caller_id else None),
                display_name=display_name,
                headers=extra,
                timeout=timeout,
                progress_handler=progress_handler,
                wait=wait,
            )
        targets = None
        dest: tuple[str, int] | Flow | None = destination
        if dest is None:
            dest, targets = await self._locate(uri)
        return await self.manager.place_call(
            uri,
            destination=dest,
            from_user=from_user or (normalize_number(caller_id) if caller_id else None),
            display_name=display_name,
            headers=extra,
            targets=targets,
            timeout=timeout,
            progress_handler=progress_handler,
            wait=wait,
        )

    def _registered(self, uri: SIPURI) -> Binding | None:
        """The newest binding of a registered user a URI names (its host ours or a name)."""
        if self.registrar is None or not uri.user:
            return None
        host = uri.host.strip("[]")
        ours = {self.public_address, self.host, *getattr(self, "addresses", {}).values()}
        if host_is_ip(host) and host not in ours:
            return None
        bindings = self.registrar.lookup(uri.user, self.now())
        return bindings[0] if bindings else None

    def _trunk_for(self, target: str, trunk: str | Trunk | None) -> Trunk | None:
        """The trunk a call goes through, or None for a direct call.

        Raises:
            ValueError: An unknown trunk name, or a number and no trunk.
        """
        if isinstance(trunk, Trunk):
            return trunk
        if trunk is not None:
            found = self.trunks.get(trunk)
            if found is None:
                known = ", ".join(self.trunks) or "none"
                raise ValueError(f"no trunk named {trunk!r} (known: {known})")
            return found
        text = target.strip()
        if is_phone_number(text) or text.lower().startswith("tel:"):
            if not self.trunks:
                raise CallFailed(
                    f"{target!r} is a number: configure a trunk to call numbers (SIP_TRUNK_PROXY)"
                )
            return next(iter(self.trunks.values()))
        try:
            uri = SIPURI.parse(text)
        except SIPParseError:
            raise ValueError(f"{target!r} is neither a SIP URI nor a number") from None
        for candidate in self.trunks.values():
            if candidate.matches(uri.host):
                return candidate
        return None

    async def _locate(self, uri: SIPURI) -> tuple[Flow, TargetList]:
        """Where requests for ``uri`` go (RFC 3263): the first flow and the targets to walk.

        Raises:
            CallFailed: Nothing could be located (503).
        """
        targets = await self.locate(uri)
        first = targets.current
        assert first is not None
        return self._flow_to(first, uri), targets

    async def locate(self, uri: str | SIPURI) -> TargetList:
        """Where requests to ``uri`` go (RFC 3263), as a `TargetList` to walk on failure.

        Raises:
            CallFailed: Nothing could be located (503, the reason says why).
            RuntimeError: The server is not started.
        """
        if self.locator is None:
            raise RuntimeError("SIPServer.locate() before start()")
        if not isinstance(uri, SIPURI):
            uri = SIPURI.parse(uri)
        transports: tuple[str, ...] = self.transports
        if uri.scheme == "sips" and "tls" not in transports:
            # Outbound TLS needs no listener of ours (replies come back on the
            # connection; RFC 5923 alias asks the peer to reuse it).
            transports = (*transports, "tls")
        try:
            return TargetList(await self.locator.locate(uri, transports=transports))
        except LocationError as exc:
            raise CallFailed(str(exc), 503) from None

    def _flow_to(self, destination: Destination, uri: SIPURI) -> Flow:
        """The flow to a located destination; TLS checks the URI's host (RFC 5922 s.7.2)."""
        transport = destination.transport.upper()
        name = None
        if transport == "TLS":
            host = uri.get_param("maddr") or uri.host
            host = host[1:-1] if host.startswith("[") else host
            name = host if ip_version(host) is None else None
        return Flow(transport, (destination.ip, destination.port), server_name=name)

    # --- Signalling (what the call manager uses) ------------------------------------
    def now(self) -> float:
        """The event loop's clock, seconds."""
        assert self._loop is not None
        return self._loop.time()

    def flush(self) -> None:
        """Send what the user agent queued, dispatch its events, re-arm the one timer."""
        ua = self.ua
        if ua is None:
            return
        while True:
            endpoint = self.endpoint
            for data, flow in ua.datagrams_to_send():
                if endpoint is not None:
                    self.sip_messages[("out", *classify_sip(data))] += 1
                    endpoint.send(data, flow)
            event = ua.next_event()
            if event is None:
                break
            try:
                self._dispatch(event)
            except Exception:
                logger.exception(f"SIP: error dispatching {type(event).__name__}")
        deadline = ua.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._timer_at = deadline
            if deadline is not None and self._loop is not None:
                self._timer = self._loop.call_at(
                    deadline, self._on_timer, context=self._timer_context
                )

    # --- incoming messages and the timer ---------------------------------------------
    def _on_refused(self, head: bytes, status: int, reason: str, flow: Flow) -> None:
        """A stream message refused by the framer (too large, unframeable): answer it."""
        ua = self.ua
        if ua is None or self._loop is None:
            return
        ua.refuse(head, status, reason, flow, self._loop.time())
        self.flush()

    def _on_connection_closed(self, flow: Flow, reason: str) -> None:
        """A connection closed: a registration over it registers again over a new flow."""
        ua = self.ua
        if ua is None or self._loop is None or not ua.registrations.registration_on(flow):
            return
        ua.registrations.flow_failed(flow, reason, self._loop.time())
        self.flush()

    def _on_transport_error(self, flow: Flow, reason: str) -> None:
        """A connection could not be opened: the requests waiting on it fail now."""
        ua = self.ua
        if ua is None or self._loop is None:
            return
        now = self._loop.time()
        ua.registrations.transport_failed(flow, reason, now)
        ua.layer.transport_failed(flow, now)
        self.flush()

    def _on_message(self, data: bytes, flow: Flow) -> None:
        ua = self.ua
        if ua is None or self._loop is None:
            return
        now = self._loop.time()
        if is_keepalive(data):
            return
        limiter = self.rate_limiter
        if limiter is not None and not limiter.allow(flow.host, now):
            self._note_rate_limited(flow, now)
            return
        self.sip_messages[("in", *classify_sip(data))] += 1
        ua.receive(data, flow, now)
        self.flush()

    def _note_rate_limited(self, flow: Flow, now: float) -> None:
        self.dropped_rate_limited += 1
        self._rate_drops_unlogged += 1
        log, _ = self._repeats.check("rate_limit", now)
        if log:
            logger.warning(
                f"SIP: rate limit ({self.rate_limiter.rate:g}/s per source): dropped "  # type: ignore[union-attr]
                f"{self._rate_drops_unlogged} datagram(s), the latest from {flow}"
            )
            self._rate_drops_unlogged = 0

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.ua is None or self._loop is None:
            return
        try:
            self.ua.handle_timer(self._loop.time())
        except Exception:
            logger.exception("SIP: error in timer handling")
        self.flush()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Notice):
            self._log_notice(event)
        elif isinstance(event, Registered | RegistrationFailed):
            self._on_registration(event)
        elif self.manager is not None:
            call_id = getattr(event, "call_id", None)
            if call_id is None:
                self.manager.dispatch(event)
            else:  # the call's log lines, and the tasks started for it, carry its Call-ID
                with logger.contextualize(call_id=call_id):
                    self.manager.dispatch(event)

    def _log_notice(self, notice: Notice) -> None:
        """Log what the user agent reported: peer text escaped, repeats counted."""
        level = _LOG_LEVELS.get(notice.level, "INFO")
        kind = notice.kind or notice.level
        suppressed = 0
        if level != "ERROR":
            log, suppressed = self._repeats.check(kind, self.now())
            if not log:
                return
        where = f"SIP {escape(notice.call_id, 80)}: " if notice.call_id else "SIP: "
        more = f" ({suppressed} more like it not logged)" if suppressed else ""
        text = f"{where}{escape(notice.message)}{more}"
        log = logger.bind(call_id=notice.call_id) if notice.call_id else logger
        if notice.error is not None:
            log.opt(exception=notice.error).log(level, text)
        else:
            log.log(level, text)

    # --- registration ------------------------------------------------------------
    async def _register(self) -> None:
        """Locate the registrar and start the registration (the UA refreshes and retries)."""
        assert self.registration is not None and self._loop is not None
        reg = self.registration
        try:
            uri = SIPURI.parse(reg.registrar)
            flows = await self._registrar_flows(uri)
        except (SIPParseError, CallFailed, RuntimeError) as exc:
            if self.ua is None:
                return
            logger.warning(f"registrar {reg.registrar}: {exc}; retrying in {_REGISTER_RETRY_S} s")
            self._loop.call_later(_REGISTER_RETRY_S, lambda: self._spawn(self._register()))
            return
        if self.ua is None:  # stopped meanwhile
            return
        self._registration_id = self.ua.register(
            uri,
            flows[0],
            self._loop.time(),
            expires=reg.expires,
            user=reg.username or self.user,
            username=reg.username,
            password=reg.password,
            targets=flows,
        )
        self.flush()

    async def _registrar_flows(self, uri: SIPURI) -> list[Flow]:
        targets = await self.locate(uri)
        return [self._flow_to(d, uri) for d in targets]

    async def _relocate_registrar(self) -> None:
        """After a failed attempt: look the registrar up again for the next retry (new SRV data)."""
        if self._relocating or self.registration is None:
            return
        self._relocating = True
        try:
            uri = SIPURI.parse(self.registration.registrar)
            if ip_version(uri.host) is not None:
                return
            flows = await self._registrar_flows(uri)
        except (SIPParseError, CallFailed, RuntimeError) as exc:
            logger.debug(f"registrar {self.registration.registrar}: {exc}")
            return
        finally:
            self._relocating = False
        if self.ua is not None and self._registration_id is not None:
            self.ua.registrations.set_targets(self._registration_id, flows)

    def _keep_registration_alive(self) -> None:
        """Keep-alives on the flow the registration now uses (RFC 5626 s.4.4.1)."""
        ua, endpoint = self.ua, self.endpoint
        if ua is None or endpoint is None or self._registration_id is None:
            return
        reg = ua.registrations.registrations.get(self._registration_id)
        flow = reg.flow if reg is not None else None
        if flow == self._keepalive_flow:
            return
        if self._keepalive_flow is not None:
            endpoint.stop_keep_alive(self._keepalive_flow)
        self._keepalive_flow = flow
        if flow is not None and self.keepalive_interval > 0:
            endpoint.keep_alive(flow, self.keepalive_interval)

    def _stop_keepalive(self) -> None:
        if self._keepalive_flow is not None and self.endpoint is not None:
            self.endpoint.stop_keep_alive(self._keepalive_flow)
        self._keepalive_flow = None

    def _on_registration(self, event: Registered | RegistrationFailed) -> None:
        assert self.registration is not None
        where = self.registration.registrar
        if isinstance(event, Registered):
            if event.expires == 0:
                self.registered = False
                self._stop_keepalive()
                logger.info(f"unregistered from {where}")
                if self._unregistered is not None:
                    self._unregistered.set()
                return
            self.registered = True
            self._keep_registration_alive()
            flow = self._keepalive_flow
            via = f" over {flow}" if flow is not None else ""
            logger.info(f"registered at {where}{via} as {self.uri} for {event.expires} s")
            return
        self.registered = False
        self._stop_keepalive()
        if event.retry_in is None:  # stopping: the unregister failed, move on
            if self._unregistered is not None:
                self._unregistered.set()
            return
        logger.warning(
            f"registration at {where} failed ({escape(event.reason, 200)}); "
            f"retrying in {event.retry_in:g} s"
        )
        self._spawn(self._relocate_registrar())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _accepts(function: Any, name: str) -> bool:
    """Whether ``function`` takes a keyword argument ``name``."""
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
