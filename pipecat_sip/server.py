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

Registration is the user agent's (refreshes and retries run on its timer);
the server only looks the registrar up and logs the outcome.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from pipecat_sip.call import CallFailed, SIPCall
from pipecat_sip.calls import CallHandler, CallManager
from pipecat_sip.codecs import SUPPORTED_CODECS
from pipecat_sip.endpoint import SIPEndpoint
from pipecat_sip.host import default_public_address, ensure_fd_limit
from pipecat_sip.ports import PortPool
from pipecat_sip.resolver import ServerLocator
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
from pipecat_sip.sip.locate import LocationError, TargetList
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
from pipecat_sip.trunk import (
    Trunk,
    check_header,
    host_is_ip,
    is_phone_number,
    normalize_number,
    trunks_by_name,
)

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RATE_BURST",
    "DEFAULT_RATE_LIMIT",
    "Registration",
    "SIPServer",
    "default_public_address",
    "parse_networks",
]

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

_LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR"}


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


def _family(address: str) -> int:
    return 6 if ":" in address else 4


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
        trust_in_dialog_from: ``"peer"`` (default): in-dialog requests only
            from the dialog's peer (others get 403); ``"any"`` behind a proxy
            that does not Record-Route.
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
        locator: DNS (RFC 3263, host names in SDP); one made on first use when None.

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
        trust_in_dialog_from: str = "peer",
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
        locator: ServerLocator | None = None,
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
        self.registration = registration
        self.registered = False
        """Whether the registrar holds our binding now."""
        self.dropped_rate_limited = 0
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

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Bind the SIP socket and start serving.

        Raises:
            OSError: The SIP port cannot be bound.
        """
        self._loop = asyncio.get_running_loop()
        ensure_fd_limit(_FDS_PER_CALL * self.max_calls + _FDS_SPARE)
        self.endpoint = SIPEndpoint(self._on_message)
        self.port = await self.endpoint.open_udp(self.host, self.port)
        self.ua = UserAgent(
            self.public_address,
            self.port,
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
        )
        self.manager.dial = self.call  # REFER targets go through trunks and DNS too
        logger.info(f"SIP server listening on udp {self.host}:{self.port} ({self.uri})")
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

    async def stop(self, timeout: float = 2.0) -> None:
        """Hang up every call (BYE), unregister, wait up to `timeout` s for both, close."""
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

    async def __aenter__(self) -> SIPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
        """The SIP URI to call this server at."""
        host = f"[{self.public_address}]" if ":" in self.public_address else self.public_address
        return f"sip:{self.user}@{host}:{self.port}"

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
        - else to the URI itself: ``destination``, or the URI's host (an IP
          address, or a name located with RFC 3263 and failed over).

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
                or a number with no trunk configured.
            PortPoolExhausted: No RTP port is free.
            ValueError: An unknown trunk name, a bad target or header.
            LocationError: The host name could not be located.
            RuntimeError: The server is not started.
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
        if dest is None and not host_is_ip(uri.host):
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

    async def _locate(self, uri: SIPURI) -> tuple[Flow, TargetList | None]:
        """Where requests for ``uri`` go: its IP, or RFC 3263 destinations for a host name.

        Raises:
            LocationError: Nothing usable was found.
        """
        transport = uri.get_param("transport") or ("tls" if uri.scheme == "sips" else "udp")
        transport = transport.lower()
        host, port = uri.host_port
        if host_is_ip(host):
            return Flow(transport.upper(), (host, port)), None
        assert self.manager is not None
        wanted = (transport,) if uri.get_param("transport") or uri.scheme == "sips" else ("udp",)
        destinations = await self.manager.locator().locate(uri, transports=wanted)
        targets = TargetList(destinations)
        first = targets.current
        if first is None:  # pragma: no cover - locate raises instead
            raise LocationError(f"no destination for {uri}")
        return Flow(first.transport.upper(), (first.ip, first.port)), targets

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
                self._timer = self._loop.call_at(deadline, self._on_timer)

    # --- incoming messages and the timer ---------------------------------------------
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
        if notice.error is not None:
            logger.opt(exception=notice.error).log(level, text)
        else:
            logger.log(level, text)

    # --- registration ------------------------------------------------------------
    async def _register(self) -> None:
        """Look the registrar up and start the registration (the UA refreshes and retries)."""
        assert self.registration is not None and self._loop is not None
        reg = self.registration
        try:
            uri = SIPURI.parse(reg.registrar)
            host, port = uri.host_port
            family = socket.AF_INET6 if ":" in self.public_address else socket.AF_INET
            infos = await self._loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            destination = infos[0][4][:2]
        except (ValueError, OSError) as exc:
            logger.warning(f"registrar {reg.registrar}: {exc}; retrying in {_REGISTER_RETRY_S} s")
            self._loop.call_later(_REGISTER_RETRY_S, lambda: self._spawn(self._register()))
            return
        if self.ua is None:  # stopped meanwhile
            return
        self._registration_id = self.ua.register(
            uri,
            (destination[0], destination[1]),
            self._loop.time(),
            expires=reg.expires,
            user=reg.username or self.user,
            username=reg.username,
            password=reg.password,
        )
        self.flush()

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
            return
        self.registered = False
        if event.retry_in is None:  # stopping: the unregister failed, move on
            if self._unregistered is not None:
                self._unregistered.set()
            return
        logger.warning(
            f"registration at {where} failed ({escape(event.reason, 120)}); "
            f"retrying in {event.retry_in:g} s"
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
