"""The SIP server: a UDP endpoint that drives the sans-IO user agent and hands calls to bot code.

This is the thin asyncio layer of DESIGN.md: it owns the SIP socket and one
`loop.call_at` timer armed from `UserAgent.get_timer()`, feeds datagrams and
`loop.time()` to the protocol object, sends what comes out, and turns the
user agent's events into `SIPCall` objects with their RTP ports and media.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loguru import logger

from pipecat_sip.call import CallFailed, CallInfo, SIPCall
from pipecat_sip.codecs import SUPPORTED_CODECS, get_codec
from pipecat_sip.ports import PortLease, PortPool, PortPoolExhausted
from pipecat_sip.sdp import (
    NegotiatedMedia,
    NoCommonCodec,
    SDPParseError,
    SessionDescription,
    apply_answer,
    create_offer,
    negotiate,
)
from pipecat_sip.sip.message import SIPRequest, is_keepalive
from pipecat_sip.sip.transaction import TimerValues
from pipecat_sip.sip.uri import SIPURI
from pipecat_sip.sip.useragent import (
    CallAnswered,
    CallEnded,
    CallEstablished,
    CallProgress,
    CallUpdated,
    Event,
    IncomingCall,
    InfoReceived,
    Registered,
    RegistrationFailed,
    UserAgent,
)

CallHandler = Callable[[SIPCall], Awaitable[Any]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Default largest SIP datagram accepted, bytes (RFC 3261 s.18.1.1 keeps UDP
#: requests under the path MTU; 16 KiB leaves room for big SDP offers).
DEFAULT_MAX_MESSAGE_SIZE = 16384
#: Default most header lines accepted in one message.
DEFAULT_MAX_HEADERS = 128
#: Default per-source request rate (requests/s) and burst for the token bucket.
DEFAULT_RATE_LIMIT = 100.0
DEFAULT_RATE_BURST = 200
_DROP_LOG_INTERVAL_S = 10.0
_MAX_TRACKED_SOURCES = 10000


def parse_networks(networks: Iterable[str | Network] | str) -> tuple[Network, ...]:
    """Parse CIDR networks (`"10.0.0.0/8"`, `"192.0.2.7"`, `"2001:db8::/32"`).

    Args:
        networks: Networks as text or `ipaddress` networks; a string may hold
            several, separated by commas or spaces. Host bits are allowed
            (`10.1.2.3/8` means `10.0.0.0/8`).

    Returns:
        The networks.

    Raises:
        ValueError: One is not a network; the message names it.
    """
    if isinstance(networks, str):
        networks = networks.replace(",", " ").split()
    out: list[Network] = []
    for net in networks:
        if isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(net)
            continue
        try:
            out.append(ipaddress.ip_network(str(net).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{net!r} is not a network like 10.0.0.0/8") from None
    return tuple(out)


def _in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


class RateLimiter:
    """Token buckets per source IP: `rate` requests/s on average, `burst` at once.

    Pure: the caller passes the time. Buckets of sources idle long enough to be
    full again are forgotten when many sources are tracked, so a flood from
    spoofed addresses cannot grow memory without bound.

    Args:
        rate: Tokens added per second (requests/s); must be > 0.
        burst: Bucket size (requests accepted at once after a quiet period).

    Raises:
        ValueError: rate <= 0 or burst < 1.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst >= 1, not {rate}/{burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, last time)

    def allow(self, host: str, now: float) -> bool:
        """Take one token for `host` at time `now` (seconds); False when none is left."""
        tokens, last = self._buckets.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if host not in self._buckets and len(self._buckets) >= _MAX_TRACKED_SOURCES:
            self._prune(now)
        self._buckets[host] = (tokens, now)
        return allowed

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {h: v for h, v in self._buckets.items() if now - v[1] < full_after}

    def __len__(self) -> int:
        return len(self._buckets)


def default_public_address(host: str) -> str:
    """The address to write into SDP and Contact when none is configured.

    A specific bind address is used as is. For a wildcard bind (0.0.0.0, ::)
    it is the address of the interface that routes outwards: a UDP socket is
    *connected* (no packet is sent) to a TEST-NET-1 address (RFC 5737) and
    asked for its local address; 127.0.0.1 when the host has no route.
    """
    if host not in ("0.0.0.0", "::", ""):
        return host
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


class _SIPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SIPServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self._server._datagram_received(data, (addr[0], addr[1]))
        except Exception:  # never out of the socket callback
            logger.exception(f"SIP: error handling a datagram from {addr}")

    def error_received(self, exc: Exception) -> None:
        logger.debug(f"SIP socket error: {exc}")


# Seconds between attempts after a failed registration (or registrar lookup).
_REGISTER_RETRY_S = 30.0


@dataclass(frozen=True)
class Registration:
    """Where and as whom :class:`SIPServer` keeps itself registered (RFC 3261 s.10).

    Attributes:
        registrar: The registrar's URI, e.g. ``sip:pbx.example.com`` or
            ``sip:192.0.2.10:5060`` (a host name is looked up with the
            system resolver, A/AAAA only: no SRV).
        username: The address-of-record's user part and the Digest user name
            (e.g. the PBX extension); default the server's ``user``.
        password: The Digest password; None answers no challenge.
        expires: Seconds asked for each binding (the registrar may grant less).
    """

    registrar: str
    username: str | None = None
    password: str | None = None
    expires: int = 300


class SIPServer:
    """Answers (and places) SIP calls over UDP; hands each call to `call_handler`.

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

    Raises:
        ValueError: A bad argument (port, range, max_calls, network, limit).

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
    ) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f"invalid SIP port {port}")
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, not {max_calls}")
        if max_message_size < 1024:
            raise ValueError(f"max_message_size must be at least 1024, not {max_message_size}")
        if max_headers < 8:
            raise ValueError(f"max_headers must be at least 8, not {max_headers}")
        if rate_limit < 0:
            raise ValueError(f"rate_limit must be 0 (off) or more, not {rate_limit}")
        self.max_message_size = max_message_size
        self.max_headers = max_headers
        self.allowed_networks = parse_networks(allowed_networks)
        self.rate_limiter = RateLimiter(rate_limit, rate_burst) if rate_limit else None
        self.dropped_rate_limited = 0
        self.rejected_forbidden = 0
        self._drops_logged_at: float | None = None
        self._drops_unlogged = 0
        self.call_handler = call_handler
        self.host = host
        self.port = port
        self.public_address = public_address or default_public_address(host)
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
        self.calls: dict[str, SIPCall] = {}
        self.ua: UserAgent | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incoming_handlers: list[Callable[[SIPCall], Any]] = []
        self._answer_timers: dict[str, asyncio.TimerHandle] = {}
        self.registration = registration
        self.registered = False
        """Whether the registrar holds our binding now."""
        self._registration_id: str | None = None
        self._registration_timer: asyncio.TimerHandle | None = None
        self._unregistered: asyncio.Event | None = None

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Bind the SIP socket and start serving.

        Raises:
            OSError: The SIP port cannot be bound.
        """
        self._loop = asyncio.get_running_loop()
        _ensure_fd_limit(_FDS_PER_CALL * self.max_calls + _FDS_SPARE)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _SIPProtocol(self), local_addr=(self.host, self.port), family=family
        )
        self.port = self._transport.get_extra_info("sockname")[1]
        self.ua = UserAgent(
            self.public_address,
            self.port,
            user=self.user,
            server_name=self.server_name,
            timer_values=self.timer_values,
            max_message_size=self.max_message_size,
            max_headers=self.max_headers,
            answer_offer=self._answer_reoffer,
        )
        logger.info(f"SIP server listening on udp {self.host}:{self.port} ({self.uri})")
        if self.registration is not None:
            await self._register()

    async def stop(self, timeout: float = 2.0) -> None:
        """Hang up every call (BYE), unregister, wait up to `timeout` s for both, close."""
        if self._registration_timer is not None:
            self._registration_timer.cancel()
            self._registration_timer = None
        if self.registered and self.ua is not None and self._registration_id is not None:
            self._unregistered = asyncio.Event()
            self.ua.unregister(self._registration_id, asyncio.get_running_loop().time())
            self._flush()
        calls = list(self.calls.values())
        for call in calls:
            await call.hangup(reason="shutdown")
        deadline = asyncio.get_running_loop().time() + timeout
        while self.ua and self.ua.layer.client and asyncio.get_running_loop().time() < deadline:
            if self._unregistered is not None and self._unregistered.is_set() and not self.calls:
                break
            await asyncio.sleep(0.05)
        self._unregistered = None
        for task in list(self._tasks):
            task.cancel()
        if self._timer:
            self._timer.cancel()
        if self._transport:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> SIPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def dropped_oversized(self) -> int:
        """Datagrams refused for their size or header count (413/400 or dropped)."""
        return self.ua.refused_oversized if self.ua is not None else 0

    @property
    def uri(self) -> str:
        """The SIP URI to call this server at."""
        host = f"[{self.public_address}]" if ":" in self.public_address else self.public_address
        return f"sip:{self.user}@{host}:{self.port}"

    # --- outbound calls ---------------------------------------------------------
    async def call(
        self,
        target: str,
        *,
        destination: tuple[str, int] | None = None,
        from_user: str | None = None,
        display_name: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = 60.0,
    ) -> SIPCall:
        """Place a call and wait until it is answered; media is then running.

        Args:
            target: SIP URI to call (`sip:bot@127.0.0.1:6060`).
            destination: (host, port) to send the INVITE to; defaults to the URI's.
            from_user: User part of our From URI.
            display_name: Our display name.
            headers: Extra headers for the INVITE.
            timeout: Seconds to wait for an answer; then the call is cancelled.

        Returns:
            The established call.

        Raises:
            CallFailed: Rejected, cancelled or not answered in time.
            PortPoolExhausted: No RTP port is free.
        """
        assert self.ua is not None and self._loop is not None
        lease = self.ports.acquire()
        offer = create_offer(
            local_address=self.public_address, local_port=lease.port, codecs=self.codecs
        )
        try:
            call_id = self.ua.invite(
                target,
                offer.serialize(),
                self._loop.time(),
                destination=destination,
                from_user=from_user,
                display_name=display_name,
                headers=headers,
            )
        except Exception:
            lease.close()
            self.ports.release(lease.port)
            raise
        invite = self.ua._legs[call_id].invite
        info = _call_info(invite, "outbound", destination or SIPURI.parse(target).host_port)
        call = SIPCall(
            self,
            info,
            None,
            lease,
            offer=offer,
            rtp_timeout_s=self.rtp_timeout_s,
            send_silence=self.send_silence,
        )
        self.calls[call_id] = call
        self._flush()
        try:
            await call.wait_answered(timeout)
        except TimeoutError:
            await call.hangup()
            raise CallFailed("no answer", 408) from None
        return call

    # --- incoming datagrams and timers ---------------------------------------------
    def _datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.ua is not None and self._loop is not None
        now = self._loop.time()
        if is_keepalive(data):
            return
        limiter = self.rate_limiter
        if limiter is not None and not limiter.allow(addr[0], now):
            self._note_rate_limited(addr, now)
            return
        self.ua.receive_datagram(data, addr, now)
        self._flush()

    def _note_rate_limited(self, addr: tuple[str, int], now: float) -> None:
        self.dropped_rate_limited += 1
        self._drops_unlogged += 1
        last = self._drops_logged_at
        if last is None or now - last >= _DROP_LOG_INTERVAL_S:
            logger.warning(
                f"SIP: rate limit ({self.rate_limiter.rate:g}/s per source): dropped "  # type: ignore[union-attr]
                f"{self._drops_unlogged} datagram(s), the latest from {addr[0]}:{addr[1]}"
            )
            self._drops_logged_at = now
            self._drops_unlogged = 0

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.ua is None or self._loop is None:
            return
        try:
            self.ua.handle_timer(self._loop.time())
        except Exception:
            logger.exception("SIP: error in timer handling")
        self._flush()

    def _flush(self) -> None:
        """Send queued datagrams, dispatch events, re-arm the one timer."""
        ua = self.ua
        if ua is None:
            return
        while True:
            for data, addr in ua.datagrams_to_send():
                if self._transport is not None:
                    self._transport.sendto(data, addr)
            event = ua.next_event()
            if event is None:
                break
            try:
                self._dispatch(event)
            except Exception:
                logger.exception(f"SIP: error dispatching {event!r}")
        deadline = ua.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._timer_at = deadline
            if deadline is not None and self._loop is not None:
                self._timer = self._loop.call_at(deadline, self._on_timer)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, IncomingCall):
            self._on_incoming(event)
            return
        if isinstance(event, Registered | RegistrationFailed):
            self._on_registration(event)
            return
        call = self.calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, CallEstablished):
            if call.negotiated is None and call.info.direction == "inbound":
                self._on_delayed_answer(call, event.ack)
            else:
                call._set_established()
        elif isinstance(event, CallAnswered):
            self._on_answered(call, event)
        elif isinstance(event, CallUpdated):
            self._on_reinvite(call, event.request)
        elif isinstance(event, CallEnded):
            self._spawn(call._finish(event.reason, event.status_code))
        elif isinstance(event, CallProgress):
            logger.debug(f"{call}: {event.response.status_code} {event.response.reason}")
        elif isinstance(event, InfoReceived):
            logger.debug(f"{call}: INFO {event.request.content_type}")

    # --- registration ------------------------------------------------------------
    async def _register(self) -> None:
        """Send (or refresh) our REGISTER; on a lookup failure, try again later."""
        assert self.registration is not None and self.ua is not None and self._loop is not None
        reg = self.registration
        try:
            uri = SIPURI.parse(reg.registrar)
            host, port = uri.host_port
            family = socket.AF_INET6 if ":" in self.public_address else socket.AF_INET
            infos = await self._loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            destination = infos[0][4][:2]
        except (ValueError, OSError) as exc:
            logger.warning(f"registrar {reg.registrar}: {exc}; retrying in {_REGISTER_RETRY_S} s")
            self._schedule_registration(_REGISTER_RETRY_S)
            return
        if self.ua is None:  # stopped meanwhile
            return
        self._registration_id = self.ua.register(
            uri,
            destination,
            self._loop.time(),
            expires=reg.expires,
            user=reg.username or self.user,
            username=reg.username,
            password=reg.password,
            registration_id=self._registration_id,
        )
        self._flush()

    def _schedule_registration(self, delay: float) -> None:
        assert self._loop is not None
        if self._registration_timer is not None:
            self._registration_timer.cancel()
        self._registration_timer = self._loop.call_later(
            delay, lambda: self._spawn(self._register())
        )

    def _on_registration(self, event: Registered | RegistrationFailed) -> None:
        assert self.registration is not None
        where = self.registration.registrar
        if isinstance(event, Registered):
            if event.expires == 0:
                self.registered = False
                logger.info(f"unregistered from {where}")
                if self._unregistered is not None:
                    self._unregistered.set()
                return
            self.registered = True
            logger.info(f"registered at {where} as {self.uri} for {event.expires} s")
            self._schedule_registration(max(1.0, event.expires / 2))
            return
        self.registered = False
        if self._unregistered is not None:  # stopping: the unregister failed, move on
            self._unregistered.set()
            return
        logger.warning(
            f"registration at {where} failed ({event.reason}); retrying in {_REGISTER_RETRY_S} s"
        )
        self._schedule_registration(_REGISTER_RETRY_S)

    def _on_incoming(self, event: IncomingCall) -> None:
        assert self.ua is not None and self._loop is not None
        now = self._loop.time()
        req = event.request
        call_id = event.call_id
        if self.allowed_networks and not _in_networks(event.source[0], self.allowed_networks):
            self.rejected_forbidden += 1
            logger.warning(f"SIP {call_id}: INVITE from {event.source[0]}, not allowed, 403")
            self.ua.reject(call_id, 403, now)
            return
        if len(self.calls) >= self.max_calls:
            logger.warning(f"SIP {call_id}: at capacity ({self.max_calls} calls), 503")
            self.ua.reject(call_id, 503, now, headers=[("Retry-After", self.retry_after_s)])
            return
        if req.body and req.content_type != "application/sdp":
            logger.warning(f"SIP {call_id}: INVITE body is {req.content_type!r}, not SDP: 488")
            self.ua.reject(call_id, 488, now, reason="Not Acceptable Here (no SDP offer)")
            return
        offer: SessionDescription | None = None
        if req.body:
            try:
                offer = SessionDescription.parse(req.body)
            except SDPParseError as exc:
                self.ua.reject(call_id, 400, now, reason=f"Bad Request (SDP: {exc})"[:120])
                return
        try:
            lease = self.ports.acquire()
        except PortPoolExhausted:
            logger.warning(f"SIP {call_id}: no RTP port free, 503")
            self.ua.reject(call_id, 503, now, headers=[("Retry-After", self.retry_after_s)])
            return
        negotiated: NegotiatedMedia | None = None
        if offer is None:
            # Delayed offer (RFC 3261 s.13.2.1): our offer goes in the 200, the
            # answer comes in the ACK (see _on_delayed_answer).
            answer = create_offer(
                local_address=self.public_address, local_port=lease.port, codecs=self.codecs
            )
        else:
            try:
                answer, negotiated = negotiate(
                    offer, self.codecs, local_address=self.public_address, local_port=lease.port
                )
            except NoCommonCodec as exc:
                lease.close()
                self.ports.release(lease.port)
                logger.info(f"SIP {call_id}: no common codec ({exc}), 488")
                self.ua.reject(call_id, 488, now)
                return
        info = _call_info(req, "inbound", event.source, negotiated)
        call = SIPCall(
            self,
            info,
            negotiated,
            lease,
            answer_sdp=answer,
            offer=offer,
            rtp_timeout_s=self.rtp_timeout_s,
            send_silence=self.send_silence,
        )
        self.calls[call_id] = call
        self.ua.ringing(call_id, now)
        logger.info(
            f"{call}: incoming from {info.from_uri} to {info.request_uri} "
            f"({negotiated.encoding_name if negotiated else 'no SDP: delayed offer'}, "
            f"rtp {lease.port})"
        )
        if self.answer_timeout_s > 0:
            self._answer_timers[call_id] = self._loop.call_later(
                self.answer_timeout_s, self._answer_timeout, call
            )
        if self.call_handler is None:
            self._spawn(call.answer())
        else:
            self._spawn(self._run_handler(call))

    def _cancel_answer_timer(self, call: SIPCall) -> None:
        """Drop the ringing timer: a pending timer would keep the call object alive."""
        handle = self._answer_timers.pop(call.call_id, None)
        if handle is not None:
            handle.cancel()

    def _answer_timeout(self, call: SIPCall) -> None:
        self._answer_timers.pop(call.call_id, None)
        if call.state != "incoming":
            return
        logger.warning(f"{call}: not answered in {self.answer_timeout_s:g} s, 480")

        async def expire() -> None:
            await call._finish("timeout", 480)
            self._ua_reject(call, 480, None, None)

        self._spawn(expire())

    async def _run_handler(self, call: SIPCall) -> None:
        assert self.call_handler is not None
        try:
            await self.call_handler(call)
        except asyncio.CancelledError:
            raise
        except CallFailed as exc:  # e.g. the caller cancelled before the answer
            logger.info(f"{call}: {exc}")
        except Exception:
            logger.exception(f"{call}: call handler failed")
            if call.state == "incoming":
                self._ua_reject(call, 500, None, None)
                await call._finish("error")
            else:
                await call.hangup()

    def _on_answered(self, call: SIPCall, event: CallAnswered) -> None:
        try:
            answer = SessionDescription.parse(event.response.body)
            assert call.offer is not None
            negotiated = apply_answer(call.offer, answer)
        except (SDPParseError, NoCommonCodec) as exc:
            logger.warning(f"{call}: unusable SDP answer ({exc}), hanging up")
            self._spawn(call.hangup())
            return
        call.negotiated = negotiated
        resp = event.response
        call.info = _replace_codec(call.info, negotiated, resp.to.display_name)

        async def start() -> None:
            await call._start_media()
            call._set_established()

        self._spawn(start())

    def _on_delayed_answer(self, call: SIPCall, ack: SIPRequest | None) -> None:
        """The ACK of a delayed-offer call: its SDP answers the offer in our 200."""
        try:
            if ack is None or not ack.body or ack.content_type != "application/sdp":
                raise ValueError("the ACK carries no SDP answer")
            assert call.local_sdp is not None
            negotiated = apply_answer(call.local_sdp, SessionDescription.parse(ack.body))
        except (ValueError, SDPParseError, NoCommonCodec) as exc:
            # RFC 3261 s.13.2.1 leaves no other way out of an unusable answer.
            logger.warning(f"{call}: delayed offer not answered usably in the ACK ({exc}): BYE")
            self._spawn(call.hangup())
            return
        call.negotiated = negotiated
        call.info = _replace_codec(call.info, negotiated, None)
        logger.info(f"{call}: ACK answered our offer ({negotiated.encoding_name})")

        async def start() -> None:
            await call._start_media()
            call._set_established()

        self._spawn(start())

    def _on_reinvite(self, call: SIPCall, request: SIPRequest) -> None:
        logger.debug(f"{call}: re-INVITE answered (CSeq {request.cseq.seq})")

    def _answer_reoffer(self, call_id: str, body: bytes) -> bytes:
        """The UA's ``answer_offer``: answer a re-INVITE's offer (RFC 3264 s.8).

        The call keeps its codec and RTP port; the offer may move the remote
        address, hold (sendonly/inactive, or c=0.0.0.0) or resume. The answer
        keeps our o= session id and increments its version only when
        something changed.

        Raises:
            ValueError: Unparsable offer, or none of it usable with the call's
                codec: the UA answers 488 and the session stays as it was.
        """
        call = self.calls.get(call_id)
        if call is None or call.negotiated is None or call.local_rtp_port is None:
            raise ValueError("no media session to update")
        current = call.local_sdp
        session_id = current.origin.session_id if current is not None else None
        version = current.origin.session_version if current is not None else 0
        try:
            offer = SessionDescription.parse(body)
            answer, negotiated = negotiate(
                offer,
                (call.negotiated.encoding_name,),
                local_address=self.public_address,
                local_port=call.local_rtp_port,
                session_id=session_id,
                session_version=version,
            )
        except SDPParseError as exc:
            logger.warning(f"{call}: re-INVITE with unusable SDP ({exc}): 488")
            raise ValueError("SDP not understood") from exc
        except NoCommonCodec as exc:
            logger.warning(f"{call}: re-INVITE offer not usable ({exc}): 488")
            raise ValueError(f"{call.negotiated.encoding_name} not offered") from exc
        if current is None or answer.serialize() != current.serialize():
            answer.origin.session_version = version + 1
        call.local_sdp = answer
        logger.info(
            f"{call}: re-INVITE: remote media {negotiated.remote_address[0]}:"
            f"{negotiated.remote_address[1]}, {negotiated.direction}"
        )
        call._update_remote(negotiated)
        return answer.serialize()

    # --- used by SIPCall ------------------------------------------------------------
    def _ua_answer(self, call: SIPCall, sdp: bytes) -> None:
        assert self.ua is not None and self._loop is not None
        self._cancel_answer_timer(call)
        self.ua.answer(call.call_id, sdp, self._loop.time())
        self._flush()

    def _ua_reject(
        self, call: SIPCall, status: int, reason: str | None, retry_after: int | None
    ) -> None:
        assert self.ua is not None and self._loop is not None
        headers = [("Retry-After", retry_after)] if retry_after is not None else []
        if call.call_id in self.ua._legs:
            self.ua.reject(call.call_id, status, self._loop.time(), reason=reason, headers=headers)
        self._flush()

    def _ua_hangup(self, call: SIPCall) -> None:
        if self.ua is None or self._loop is None:
            return
        self.ua.hangup(call.call_id, self._loop.time())
        self._flush()

    def _release(self, call: SIPCall, lease: PortLease) -> None:
        self._cancel_answer_timer(call)
        self.ports.release(lease.port)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        info = call.info
        logger.info(
            f"{call}: ended ({call.end_reason}) from {info.from_uri} to {info.to_uri}, "
            f"{call.duration:.1f} s, {info.codec or 'no codec'}"
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# Per call: the RTP and RTCP sockets, and one to spare; plus the SIP socket,
# the event loop's own descriptors, log files...
_FDS_PER_CALL = 3
_FDS_SPARE = 64


def _ensure_fd_limit(needed: int) -> None:
    """Raise this process's soft open-file limit towards ``needed`` (up to the hard limit).

    The common soft default, 1024, would cap a server at ~340 calls with a
    "Too many open files" on the next RTP port.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning(f"cannot raise the open-file limit from {soft} to {target}: {exc}")
            return
    if target < needed:
        logger.warning(
            f"open-file limit {target} (hard) is below the {needed} that max_calls needs; "
            "calls beyond it will fail (raise `ulimit -n`)"
        )


def _call_info(
    req: SIPRequest, direction: str, remote: tuple[str, int], negotiated: Any = None
) -> CallInfo:
    from_ = req.from_
    to = req.to
    return CallInfo(
        call_id=req.call_id,
        direction=direction,
        from_uri=str(from_.uri),
        from_display_name=from_.display_name,
        to_uri=str(to.uri),
        to_display_name=to.display_name,
        request_uri=str(req.uri),
        remote_address=remote,
        codec=negotiated.encoding_name if negotiated else "",
        sample_rate=get_codec(negotiated.encoding_name).sample_rate if negotiated else 8000,
        ptime=negotiated.ptime if negotiated else 20,
        telephone_event=bool(negotiated and negotiated.telephone_event_pt is not None),
        headers=req.headers.as_dict(),
    )


def _replace_codec(info: CallInfo, negotiated: Any, to_display_name: str | None) -> CallInfo:
    return replace(
        info,
        codec=negotiated.encoding_name,
        sample_rate=get_codec(negotiated.encoding_name).sample_rate,
        ptime=negotiated.ptime,
        telephone_event=negotiated.telephone_event_pt is not None,
        to_display_name=to_display_name or info.to_display_name,
    )
