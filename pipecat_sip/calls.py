"""The call manager: everything between the user agent's events and a running call.

:class:`CallManager` is where calls are orchestrated, and the only place:
admission (source networks, capacity), the RTP port lease, SDP
negotiation (offer/answer, delayed offer, re-offers for hold and resume),
the answer timeout, media start and direction, and the release of all of
it when the call ends. It implements :class:`~pipecat_sip.call.CallControl`
for the :class:`~pipecat_sip.call.SIPCall` handles it makes, so a call
handle never touches the user agent, and reaches the user agent through a
small :class:`Signalling` interface (the server), so it never touches a
socket.

SRTP (RFC 3711) with SDES keys (RFC 4568), by the ``srtp`` policy:

- ``"off"``: plain RTP; an offer of only ``RTP/SAVP`` gets 488.
- ``"optional"``: inbound, an ``RTP/SAVP`` offer is answered with SRTP and a
  plain one with RTP; outbound, we offer ``RTP/SAVP`` and, when that offer
  is refused with 488 or 606, place the call again at once with a plain
  offer (a second INVITE, a new Call-ID; not RFC 5939 capability
  negotiation). A delayed-offer INVITE (no SDP) gets a plain offer: the
  caller cannot refuse it in the ACK.
- ``"required"``: only SRTP; plain offers get 488, our offers and
  delayed offers are ``RTP/SAVP``, a plain answer to them ends the call.

SDES puts the master keys in the SDP, readable by anyone who sees the SIP
message: the keys are only sent (and taken) when the call's signalling is
TLS. Over UDP or TCP, ``"optional"`` acts as ``"off"`` and ``"required"``
refuses the call (488 inbound, :class:`~pipecat_sip.call.CallFailed`
outbound), unless ``srtp_insecure_signaling`` is set (labs and tests).
Keys are fresh per call from ``srtp_rng``; a re-offer keeps our key (and
the peer's, unless it sends a new one), must stay SRTP in an SRTP call and
plain in a plain one (else 488). Keys are never logged.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from loguru import logger

from pipecat_sip.call import CallFailed, CallInfo, SIPCall, TransferFailed, TransferRequest
from pipecat_sip.codecs import get_codec
from pipecat_sip.media import RTPSession
from pipecat_sip.ports import PortLease, PortPool, PortPoolExhausted
from pipecat_sip.resolver import ServerLocator
from pipecat_sip.rtp.srtp import SrtpContext
from pipecat_sip.sdes import (
    SRTP_MODES,
    CryptoAttribute,
    NoAcceptableCrypto,
    SdesKeys,
    apply_srtp_answer,
    create_srtp_offer,
    negotiate_srtp,
)
from pipecat_sip.sdp import (
    HOLD_ADDRESSES,
    NegotiatedMedia,
    NoCommonCodec,
    SDPParseError,
    SessionDescription,
    apply_answer,
)
from pipecat_sip.security import Network, escape, in_networks
from pipecat_sip.sip.auth import Credentials
from pipecat_sip.sip.errors import LocalProtocolError, SIPParseError
from pipecat_sip.sip.events import (
    CallAnswered,
    CallEnded,
    CallEstablished,
    CallProgress,
    CallUpdated,
    Event,
    IncomingCall,
    InfoReceived,
    ModificationAnswered,
    ReferReceived,
    ReofferReceived,
    TransferProgress,
)
from pipecat_sip.sip.info import parse_dtmf_info
from pipecat_sip.sip.invite import CallState
from pipecat_sip.sip.locate import TargetList, ip_version
from pipecat_sip.sip.message import SIPRequest
from pipecat_sip.sip.refer import Replaces
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.uri import SIPURI, Address
from pipecat_sip.sip.useragent import UserAgent

__all__ = ["CallHandler", "CallManager", "Signalling"]

CallHandler = Callable[[SIPCall], Awaitable[Any]]
ProgressHandler = Callable[[str, int], Any]
#: Seconds a refer handler may take to decide (the UA refuses 603 a little later).
REFER_DECISION_S = 5.0
_RINGING = (CallState.INCOMING, CallState.EARLY)
_SECURE_TRANSPORTS = frozenset({"TLS", "WSS"})  # signalling SDES keys may travel on
_PLAIN_RETRY_STATUSES = (488, 606)  # a refused RTP/SAVP offer: retry with RTP/AVP


class Signalling(Protocol):
    """The user agent and its I/O loop, as the call manager uses them (the server)."""

    @property
    def ua(self) -> UserAgent:
        """The user agent."""
        ...

    def now(self) -> float:
        """The event loop's clock, seconds (the user agent's `now`)."""
        ...

    def flush(self) -> None:
        """Send what the user agent queued and dispatch its events."""
        ...


@dataclass(eq=False)
class _Record:
    """What the manager keeps per call beside the handle."""

    call: SIPCall
    lease: PortLease | None
    offer: SessionDescription | None = None  # the peer's (inbound) or ours (outbound)
    answer: SessionDescription | None = None  # our answer, or our offer in a delayed-offer 200
    ring_timer: asyncio.TimerHandle | None = None
    hold_timer: asyncio.TimerHandle | None = None
    duration_timer: asyncio.TimerHandle | None = None
    srtp_mode: str = "off"  # the SRTP policy this call's offer/answer was made under
    cryptos: list[CryptoAttribute] = field(default_factory=list, repr=False)  # our offered lines
    sdes: SdesKeys | None = field(default=None, repr=False)  # the SRTP keys in use, or None


class CallManager:
    """Orchestrates calls: admission, RTP ports, SDP, media, timeouts; the calls' CallControl.

    Args:
        signalling: The user agent and its I/O loop.
        ports: The RTP port pool.
        call_handler: Coroutine function run with each new incoming call;
            None answers every call and does nothing else.
        public_address: Our address for SDP.
        codecs: Codec names we accept, in our preference order.
        max_calls: Concurrent calls before new INVITEs get 503.
        retry_after_s: Retry-After seconds sent with 503.
        rtp_timeout_s: Seconds without RTP before a call is ended (0 disables).
        answer_timeout_s: Seconds an incoming call may ring unanswered before
            it is rejected with 480 (0 disables).
        send_silence: Send silence packets when the bot is quiet.
        allowed_networks: Source networks allowed to place calls (empty: all).
        rtp_latching: Which sources an RTP session may latch to when media
            comes from elsewhere than the SDP address (see
            :mod:`pipecat_sip.rtp.latching`): "signaling" (the SDP host or
            the call's signalling source), "any" or "off".
        addresses: Our address per IP family (``{4: ..., 6: ...}``) for a
            dual-stack server: SDP answers in the family of the offer.
        bind_host: The address the sockets are bound to.
        sip_port: Our SIP port (media pointed at it is refused).
        locator: DNS for host names in SDP ``c=`` (made on first use if None).
        max_unconfirmed_per_source: Calls from one source IP that may be
            answered and waiting for their ACK at once; more INVITEs from it
            get 503 (a half-open INVITE flood then holds few slots and earns
            little traffic back). Sources are not capped when
            ``allowed_networks`` is set (a trunk or PBX, trusted).
        hold_timeout_s: Seconds a call may stay held by the far end before it
            is hung up (0: never).
        max_call_duration_s: Seconds a call may last from its answer before it
            is hung up (0: no limit).
        srtp: The SRTP policy, "off", "optional" or "required" (see the
            module notes).
        srtp_insecure_signaling: Send and take SDES keys over UDP and TCP
            signalling too (labs, tests); by default only over TLS.
        srtp_rng: ``random.Random``-like source of the SRTP master keys
            (``getrandbits``); default ``secrets.SystemRandom()``.

    Raises:
        ValueError: Unknown ``srtp`` policy.

    Attributes:
        calls: Live calls by Call-ID.
        rejected_forbidden: INVITEs refused 403 for their source network.
        rejected_unconfirmed: INVITEs refused 503 because their source had
            ``max_unconfirmed_per_source`` calls waiting for an ACK.
        accepting: False while the server drains or stops: new INVITEs get
            503 with Retry-After (live calls go on).
        rejected_unavailable: INVITEs refused 503 because ``accepting`` was False.
        on_call_started: Called with each call once admitted (inbound, after
            180) or placed (outbound, INVITE sent); None: nothing.
        on_call_ended: Called with each call once released (it has left
            ``calls``; its media, closed, keeps its statistics); None: nothing.
    """

    def __init__(
        self,
        signalling: Signalling,
        ports: PortPool,
        *,
        call_handler: CallHandler | None,
        public_address: str,
        codecs: Sequence[str],
        max_calls: int,
        retry_after_s: int,
        rtp_timeout_s: float,
        answer_timeout_s: float,
        send_silence: bool,
        allowed_networks: tuple[Network, ...] = (),
        rtp_latching: str = "signaling",
        addresses: Mapping[int, str] | None = None,
        bind_host: str = "0.0.0.0",
        sip_port: int = 0,
        locator: ServerLocator | None = None,
        max_unconfirmed_per_source: int = 5,
        hold_timeout_s: float = 600.0,
        max_call_duration_s: float = 14400.0,
        srtp: str = "off",
        srtp_insecure_signaling: bool = False,
        srtp_rng: Any = None,
    ) -> None:
        if srtp not in SRTP_MODES:
            raise ValueError(f"srtp must be one of {', '.join(SRTP_MODES)}, not {srtp!r}")
        self.signalling = signalling
        self.ports = ports
        self.call_handler = call_handler
        self.public_address = public_address
        self.codecs = tuple(codecs)
        self.max_calls = max_calls
        self.retry_after_s = retry_after_s
        self.rtp_timeout_s = rtp_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.send_silence = send_silence
        self.allowed_networks = allowed_networks
        self.rtp_latching = rtp_latching
        self.addresses: dict[int, str] = dict(addresses or {})
        self.addresses.setdefault(ip_version(public_address) or 4, public_address)
        self.bind_host = bind_host
        self.sip_port = sip_port
        self._locator = locator
        self.max_unconfirmed_per_source = max_unconfirmed_per_source
        self.hold_timeout_s = hold_timeout_s
        self.max_call_duration_s = max_call_duration_s
        self.rejected_unconfirmed = 0
        self.srtp = srtp
        self.srtp_insecure_signaling = srtp_insecure_signaling
        self.srtp_rng = srtp_rng
        self.calls: dict[str, SIPCall] = {}
        self.dial: Callable[..., Awaitable[SIPCall]] | None = None
        """Places the call a REFER asks for (the server's routing: trunks, DNS); None:
        :meth:`place_call` to the URI itself."""
        self.rejected_forbidden = 0
        self.accepting = True
        self.rejected_unavailable = 0
        self.on_call_started: Callable[[SIPCall], None] | None = None
        self.on_call_ended: Callable[[SIPCall], None] | None = None
        self._records: dict[str, _Record] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- events from the user agent ------------------------------------------------
    def dispatch(self, event: Event) -> None:
        """Act on a call event of the user agent (other events are ignored)."""
        if isinstance(event, IncomingCall):
            self._on_incoming(event)
            return
        call_id = getattr(event, "call_id", None)
        record = self._records.get(call_id) if call_id is not None else None
        if record is None:
            return
        call = record.call
        if isinstance(event, CallEstablished):
            if call.negotiated is None:
                self._on_delayed_answer(record, event.ack)
            else:
                if call.media is not None:
                    call.media.confirm()  # the ACK: the caller owns its address, media may flow
                call.mark_established()
            self._end_replaced(call)
        elif isinstance(event, CallAnswered):
            self._on_answered(record, event)
        elif isinstance(event, ReofferReceived):
            self._on_reoffer(record, event)
        elif isinstance(event, CallEnded):
            call.finish(event.reason, event.status_code)
        elif isinstance(event, CallUpdated):
            logger.debug(f"{call}: re-INVITE answered (CSeq {event.request.cseq.seq})")
        elif isinstance(event, CallProgress):
            self._on_progress(record, event)
        elif isinstance(event, ModificationAnswered):
            self._on_modification_answered(record, event)
        elif isinstance(event, InfoReceived):
            self._on_info(call, event)
        elif isinstance(event, TransferProgress):
            reason = f"{event.state} ({event.status_code})" if event.status_code else event.state
            logger.info(f"{call}: transfer {event.transfer_id}: {reason}")
            call.transfer_update(event.transfer_id, event.state, event.status_code, reason)
        elif isinstance(event, ReferReceived):
            self._on_refer(call, event)

    def _on_info(self, call: SIPCall, event: InfoReceived) -> None:
        """INFO in a call: a key press (dtmf-relay, dtmf) goes to the call, merged with RFC 4733."""
        request = event.request
        pressed = parse_dtmf_info(request.content_type, request.body)
        if pressed is None:
            logger.debug(f"{call}: INFO {escape(request.content_type, 80)} (no DTMF)")
            return
        key, duration = pressed
        logger.debug(f"{call}: DTMF {key!r} by INFO ({duration} ms)")
        call.receive_dtmf(key, "info")

    def _end_replaced(self, call: SIPCall) -> None:
        """A call that replaced another (RFC 3891) is up: BYE the one it replaced."""
        old_id = call.info.replaces
        old = self.calls.get(old_id) if old_id else None
        if old is not None and not old.ended:
            logger.info(f"{call}: replaces {old}: BYE to it")
            old.finish("replaced")
            self.hangup(old)

    # --- transfer (RFC 3515) ------------------------------------------------------------
    def transfer(self, call: SIPCall, target: str, replaces: SIPCall | None) -> str:
        """Send REFER for ``target``; with ``replaces``, Refer-To carries its dialog (RFC 3891).

        Raises:
            TransferFailed: The call or the one to replace has no confirmed
                dialog, or ``target`` is not a SIP/tel URI.
        """
        ua = self.signalling.ua
        rep = None
        if replaces is not None:
            session = ua.session(replaces.call_id)
            dialog = session.dialog if session is not None else None
            if dialog is None:
                raise TransferFailed(None, "the call to replace has no dialog")
            # As the target sees its dialog with us: its tag is "to", ours "from".
            rep = Replaces(dialog.call_id, to_tag=dialog.remote_tag, from_tag=dialog.local_tag)
        try:
            transfer_id = ua.refer(call.call_id, target, self.signalling.now(), replaces=rep)
        except (LocalProtocolError, SIPParseError) as exc:
            raise TransferFailed(None, str(exc)) from None
        logger.info(
            f"{call}: transferring to {escape(target, 120)}"
            + (f" (replacing {replaces})" if replaces is not None else "")
        )
        self.signalling.flush()
        return transfer_id

    def send_info(self, call: SIPCall, content_type: str, body: bytes) -> None:
        """Send INFO in the call's dialog (DTMF by INFO)."""
        try:
            self.signalling.ua.send_info(call.call_id, content_type, body, self.signalling.now())
        except LocalProtocolError as exc:
            logger.warning(f"{call}: INFO not sent: {exc}")
            return
        self.signalling.flush()

    def _on_refer(self, call: SIPCall, event: ReferReceived) -> None:
        """The far end asks us to call someone (RFC 3515): the call's refer handler decides.

        Without a handler (or when it says no or fails) the REFER gets 603.
        """
        ua = self.signalling.ua
        handler = call.refer_handler
        logger.info(
            f"{call}: REFER to {escape(event.refer_to, 120)}"
            + (f" by {escape(event.referred_by, 120)}" if event.referred_by else "")
        )
        if handler is None:
            ua.reject_refer(call.call_id, event.transfer_id, self.signalling.now())
            logger.info(f"{call}: REFER refused (603): no refer handler")
            return
        request = TransferRequest(
            event.transfer_id, event.refer_to, event.referred_by, event.replaces
        )
        self._spawn(self._decide_refer(call, request, handler))

    async def _decide_refer(self, call: SIPCall, request: TransferRequest, handler) -> None:
        ua = self.signalling.ua
        try:
            accepted = handler(request)
            if inspect.isawaitable(accepted):
                accepted = await asyncio.wait_for(accepted, REFER_DECISION_S)
        except Exception:
            logger.exception(f"{call}: refer handler failed: 603")
            accepted = False
        now = self.signalling.now()
        try:
            if not accepted:
                ua.reject_refer(call.call_id, request.transfer_id, now)
                logger.info(f"{call}: REFER refused (603) by the refer handler")
                return
            ua.accept_refer(call.call_id, request.transfer_id, now)
        except LocalProtocolError as exc:  # the call ended, or the REFER timed out meanwhile
            logger.info(f"{call}: REFER not answered: {exc}")
            return
        finally:
            self.signalling.flush()
        request._new_call = asyncio.get_running_loop().create_future()
        self._spawn(self._follow_refer(call, request))

    async def _follow_refer(self, call: SIPCall, request: TransferRequest) -> None:
        """Place the call the REFER asked for and NOTIFY the transferor how it goes."""
        ua = self.signalling.ua
        tid = request.transfer_id
        assert request._new_call is not None

        def notify(code: int, reason: str) -> None:
            try:
                ua.notify_refer(call.call_id, tid, code, reason, self.signalling.now())
            except LocalProtocolError:
                return  # the call with the transferor ended
            self.signalling.flush()

        headers: list[tuple[str, str]] = []
        if request.referred_by:
            headers.append(("Referred-By", request.referred_by))
        if request.replaces:
            headers.append(("Replaces", request.replaces))
        dial = self.dial or self.place_call
        try:
            new_call = await dial(
                request.refer_to,
                headers=headers,
                progress_handler=lambda kind, code: (
                    notify(code, "Ringing") if kind == "ringing" else None
                ),
            )
        except CallFailed as exc:
            notify(exc.status_code or 503, exc.reason[:60] or "Service Unavailable")
            request._new_call.set_exception(exc)
            request._new_call.exception()
            return
        except Exception as exc:  # a bad URI, no port: the transfer failed here
            notify(503, "Service Unavailable")
            request._new_call.set_exception(CallFailed(f"transfer call failed: {exc}"))
            request._new_call.exception()
            return
        notify(200, "OK")
        request._new_call.set_result(new_call)

    # --- CallControl ---------------------------------------------------------------
    async def answer(self, call: SIPCall) -> None:
        """Start media and send 200 OK (with a delayed offer: our offer, then wait for the ACK).

        Raises:
            CallFailed: The call ended before it could be answered.
        """
        record = self._records.get(call.call_id)
        if record is None or call.ended:
            raise CallFailed(f"call ended before answer ({call.end_reason})")
        assert record.answer is not None
        if call.negotiated is None:  # delayed offer: media starts with the ACK's answer
            self._send_answer(record)
            await call.wait_answered()
            return
        if call.media is None:  # else started with early media
            await self._start_media(record, confirmed=False)
        if call.ended or call.state not in _RINGING:  # cancelled while media was starting
            raise CallFailed(f"call ended before answer ({call.end_reason})")
        self._send_answer(record)

    def reject(
        self,
        call: SIPCall,
        status_code: int,
        reason: str | None,
        retry_after: int | None,
        extra_headers: Sequence[tuple[str, object]] = (),
    ) -> None:
        """Answer the INVITE with a final status (if it still rings)."""
        signalling = self.signalling
        headers = [("Retry-After", retry_after)] if retry_after is not None else []
        headers.extend(extra_headers)
        if signalling.ua.call_state(call.call_id) in _RINGING:
            signalling.ua.reject(
                call.call_id, status_code, signalling.now(), reason=reason, headers=headers
            )
        signalling.flush()

    def hangup(self, call: SIPCall) -> None:
        """BYE, CANCEL or 480, as the call's state requires."""
        self.signalling.ua.hangup(call.call_id, self.signalling.now())
        self.signalling.flush()

    def ring(self, call: SIPCall) -> None:
        """Send 180 Ringing (if the call still rings)."""
        signalling = self.signalling
        if signalling.ua.call_state(call.call_id) in _RINGING:
            signalling.ua.ringing(call.call_id, signalling.now())
        signalling.flush()

    async def progress(self, call: SIPCall, early_media: bool) -> None:
        """Send 183 Session Progress; with ``early_media`` the SDP answer, media started.

        Early media is sent once the caller is confirmed to own its SDP
        address: at once when that is the INVITE's source host, else once RTP
        from it arrives (the RTP session's latching), never to an address
        only the SDP names.

        Raises:
            CallFailed: The call ended meanwhile.
        """
        record = self._records.get(call.call_id)
        if record is None or call.ended:
            raise CallFailed(f"call ended before progress ({call.end_reason})")
        signalling = self.signalling
        sdp = b""
        if early_media and call.negotiated is not None and record.answer is not None:
            if call.media is None:
                remote = call.negotiated.remote_address[0]
                await self._start_media(
                    record, confirmed=_same_ip(remote, call.info.remote_address[0])
                )
            sdp = record.answer.serialize()
        elif early_media:
            logger.info(f"{call}: no SDP offer in the INVITE: 183 without early media")
        if call.ended or signalling.ua.call_state(call.call_id) not in _RINGING:
            raise CallFailed(f"call ended before progress ({call.end_reason})")
        signalling.ua.ringing(call.call_id, signalling.now(), status_code=183, sdp=sdp)
        signalling.flush()

    def release(self, call: SIPCall) -> None:
        """Give back the call's RTP port, stop its timers, forget it; log the end."""
        record = self._records.pop(call.call_id, None)
        if record is None:
            return
        self._cancel_ring_timer(record)
        for timer in (record.hold_timer, record.duration_timer):
            if timer is not None:
                timer.cancel()
        record.hold_timer = record.duration_timer = None
        lease = record.lease
        if lease is not None:
            if call.media is None:
                lease.close()  # no RTP session took the sockets over
            self.ports.release(lease.port)
            record.lease = None
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self._notify(self.on_call_ended, call)
        info = call.info
        quality = getattr(call.media, "quality", None)  # the final figures: media closed first
        logger.info(
            f"{call}: ended ({call.end_reason}) from {escape(info.from_uri, 120)} to "
            f"{escape(info.to_uri, 120)}, {call.duration:.1f} s, {info.codec or 'no codec'}"
            + (f"; {quality.summary()}" if quality is not None else "")
        )

    # --- outbound ---------------------------------------------------------------------
    async def place_call(
        self,
        target: str | SIPURI,
        *,
        destination: tuple[str, int] | Flow | None = None,
        from_user: str | None = None,
        from_host: str | None = None,
        display_name: str | None = None,
        to: Address | None = None,
        headers: Sequence[tuple[str, str]] = (),
        credentials: Credentials | None = None,
        targets: TargetList | None = None,
        timeout: float | None = 60.0,
        progress_handler: ProgressHandler | None = None,
        wait: bool = True,
        _plain_retry: bool = False,
    ) -> SIPCall:
        """Send an INVITE with our offer; wait until it is answered and media runs.

        Args:
            target: The Request-URI.
            destination: Where to send it (default: the first of ``targets``,
                else the URI's host, which must be an IP address).
            from_user: From user part.
            from_host: From host part.
            display_name: From display name.
            to: The To address (default the Request-URI).
            headers: Extra headers.
            credentials: Answer 401/407 with these.
            targets: RFC 3263 destinations to fail over along.
            timeout: Seconds to wait for the answer; then CANCEL and
                ``CallFailed("no answer", 408)``. None waits forever.
            progress_handler: ``handler(kind, status_code)`` for provisional
                responses ("ringing", "progress", "early_media"), added before
                the INVITE goes out.
            wait: False returns the call at once (``await call.wait_answered()``
                later); the timeout still applies (and no plain-RTP retry of a
                refused SRTP offer is made).

        Under the ``"optional"`` SRTP policy an ``RTP/SAVP`` offer refused
        with 488 or 606 is followed at once by a second call with a plain
        offer (within the same ``timeout``); the call returned is that one.

        Raises:
            CallFailed: Rejected, cancelled, not answered in time, the
                credentials were refused (``reason="auth_failed"``, 401/407),
                or SRTP is required and the signalling is not TLS.
            PortPoolExhausted: No RTP port is free.
        """
        signalling = self.signalling
        ua = signalling.ua
        if isinstance(destination, Flow) or destination is not None:
            transport_of = destination
        elif targets is not None and targets.current is not None:
            first = targets.current
            transport_of = Flow(first.transport.upper(), (first.ip, first.port))
        else:
            transport_of = None
        mode = self._srtp_mode_for(_outbound_transport(str(target), transport_of))
        if mode is None:
            raise CallFailed(
                "SRTP is required but the signalling is not TLS: SDES keys would travel "
                "in the clear (srtp_insecure_signaling allows it in labs)"
            )
        if _plain_retry:
            mode = "off"
        started = asyncio.get_running_loop().time()
        lease = self.ports.acquire()
        offer, cryptos = create_srtp_offer(
            mode,
            rng=self.srtp_rng,
            local_address=self.public_address,
            local_port=lease.port,
            codecs=self.codecs,
        )
        try:
            call_id = ua.invite(
                target,
                offer.serialize(),
                signalling.now(),
                destination=destination,
                from_user=from_user,
                from_host=from_host,
                display_name=display_name,
                to=to,
                headers=headers,
                credentials=credentials,
                targets=targets,
            )
        except Exception:
            lease.close()
            self.ports.release(lease.port)
            raise
        session = ua.session(call_id)
        assert session is not None
        info = call_info(session.invite, "outbound", session.flow)
        call = SIPCall(self, info, session)
        call.local_sdp = offer
        call.local_rtp_port = lease.port
        if progress_handler is not None:
            call.add_progress_handler(progress_handler)
        record = _Record(call, lease, offer=offer, srtp_mode=mode, cryptos=cryptos)
        self._records[call_id] = record
        self.calls[call_id] = call
        self._notify(self.on_call_started, call)
        if timeout is not None:
            loop = asyncio.get_running_loop()
            record.ring_timer = loop.call_later(timeout, self._no_answer, call, timeout)
        signalling.flush()
        if not wait:
            return call
        try:
            await call.wait_answered()
        except CallFailed as exc:
            if exc.reason == "no_answer":
                raise CallFailed("no answer", 408) from None
            if mode != "optional" or exc.status_code not in _PLAIN_RETRY_STATUSES:
                raise
            if timeout is not None:
                timeout = max(0.0, timeout - (asyncio.get_running_loop().time() - started))
            logger.info(f"{call}: SRTP offer refused ({exc.status_code}), calling again with RTP")
            return await self.place_call(
                target,
                destination=destination,
                from_user=from_user,
                from_host=from_host,
                display_name=display_name,
                to=to,
                headers=headers,
                credentials=credentials,
                targets=targets,
                timeout=timeout,
                progress_handler=progress_handler,
                _plain_retry=True,
            )
        return call

    def _no_answer(self, call: SIPCall, timeout: float) -> None:
        """The outbound call was not answered in time: CANCEL (RFC 3261 s.9.1)."""
        record = self._records.get(call.call_id)
        if record is not None:
            record.ring_timer = None
        if call.ended or call.established:
            return
        logger.info(f"{call}: not answered in {timeout:g} s, cancelling")
        call.finish("no_answer", 408)
        self.hangup(call)

    async def hangup_all(self, reason: str) -> None:
        """Hang up every live call (server shutdown)."""
        for call in list(self.calls.values()):
            await call.hangup(reason=reason)

    @property
    def tasks_running(self) -> int:
        """Background tasks not yet done (call handlers, media starts)."""
        return len(self._tasks)

    def cancel_tasks(self) -> None:
        """Cancel the manager's background tasks (call handlers, media starts)."""
        for task in list(self._tasks):
            task.cancel()

    # --- inbound ------------------------------------------------------------------------
    def _on_incoming(self, event: IncomingCall) -> None:
        signalling = self.signalling
        ua = signalling.ua
        now = signalling.now()
        req = event.request
        call_id = event.call_id
        shown = escape(call_id, 80)
        if self.allowed_networks and not in_networks(event.flow.host, self.allowed_networks):
            self.rejected_forbidden += 1
            logger.warning(f"SIP {shown}: INVITE from {event.flow.host}, not allowed, 403")
            ua.reject(call_id, 403, now, retransmit=False)
            return
        if (
            not self.allowed_networks  # a trusted trunk or PBX is not capped
            and self._unconfirmed_from(event.flow.host) >= self.max_unconfirmed_per_source
        ):
            self.rejected_unconfirmed += 1
            why = f"{event.flow.host} has {self.max_unconfirmed_per_source} calls awaiting ACK"
            self._busy(call_id, why, now)
            return
        if not self.accepting:  # draining or stopping (issue 11 #14): a balancer retries elsewhere
            self.rejected_unavailable += 1
            logger.info(f"SIP {shown}: not taking calls (shutting down), 503")
            ua.reject(call_id, 503, now, headers=[("Retry-After", self.retry_after_s)])
            return
        if len(self.calls) >= self.max_calls:
            self._busy(call_id, f"at capacity ({self.max_calls} calls)", now)
            return
        if req.body and req.content_type != "application/sdp":
            logger.warning(f"SIP {shown}: INVITE body is {escape(req.content_type, 60)}, not SDP")
            ua.reject(call_id, 488, now, reason="Not Acceptable Here (no SDP offer)")
            return
        offer: SessionDescription | None = None
        if req.body:
            try:
                offer = SessionDescription.parse(req.body)
            except SDPParseError as exc:
                ua.reject(call_id, 400, now, reason=f"Bad Request (SDP: {exc})"[:120])
                return
        try:
            lease = self.ports.acquire()
        except PortPoolExhausted:
            self._busy(call_id, "no RTP port free", now)
            return
        try:
            self._admit(event, offer, lease, now)
        except Exception:
            # Anything failing once the port is leased answers 500 and gives the port back.
            logger.exception(f"SIP {shown}: setting up the call failed, 500")
            self._forget_failed(call_id, lease)

    def _forget_failed(self, call_id: str, lease: PortLease) -> None:
        """A call whose setup failed: port back, nothing kept, the INVITE answered 500."""
        if self.ports.is_leased(lease.port):
            lease.close()
            self.ports.release(lease.port)
        record = self._records.pop(call_id, None)
        if record is not None:
            self._cancel_ring_timer(record)
        self.calls.pop(call_id, None)
        ua = self.signalling.ua
        if ua.call_state(call_id) in _RINGING:
            ua.reject(call_id, 500, self.signalling.now())

    def _busy(self, call_id: str, why: str, now: float) -> None:
        """503 with Retry-After, sent once (an overload refusal earns a flood nothing)."""
        logger.warning(f"SIP {escape(call_id, 80)}: {why}, 503")
        self.signalling.ua.reject(
            call_id, 503, now, headers=[("Retry-After", self.retry_after_s)], retransmit=False
        )

    def _admit(
        self,
        event: IncomingCall,
        offer: SessionDescription | None,
        lease: PortLease,
        now: float,
    ) -> None:
        """Negotiate, check where media would go, then ring (the port is leased)."""
        call_id = event.call_id
        negotiated: NegotiatedMedia | None = None
        keys: SdesKeys | None = None
        cryptos: list[CryptoAttribute] = []
        mode = self._srtp_mode_for(event.flow.transport)
        if mode is None:
            why = f"SRTP needs TLS, the INVITE came over {event.flow.transport}"
            self._refuse(call_id, lease, 488, why, now)
            return
        if offer is None:
            # Delayed offer (RFC 3261 s.13.2.1): our offer goes in the 200, the
            # answer comes in the ACK (see _on_delayed_answer). Only "required"
            # offers SRTP: the caller could not refuse it but by BYE.
            if mode == "optional":
                mode = "off"
            answer, cryptos = create_srtp_offer(
                mode,
                rng=self.srtp_rng,
                local_address=self.address_for(event.flow.host),
                local_port=lease.port,
                codecs=self.codecs,
            )
        else:
            try:
                answer, negotiated, keys = self._negotiate(offer, lease.port, mode=mode)
            except NoAcceptableCrypto as exc:
                self._refuse(call_id, lease, 488, f"no acceptable SRTP ({exc})", now)
                return
            except NoCommonCodec as exc:
                self._refuse(call_id, lease, 488, f"no common codec ({exc})", now)
                return
            host = negotiated.remote_address[0]
            if ip_version(host) is None:
                # A host name: resolved once, off the event loop, before anything is sent.
                self._spawn(
                    self._admit_resolved(event, offer, lease, mode)
                )  # errors: see _admit_resolved
                return
            problem = self.media_address_problem(negotiated.remote_address)
            if problem:
                self._refuse(call_id, lease, 488, problem, now)
                return
        self._ring(event, offer, lease, answer, negotiated, now, (mode, cryptos, keys))

    async def _admit_resolved(
        self, event: IncomingCall, offer: SessionDescription, lease: PortLease, mode: str
    ) -> None:
        """An offer whose c= is a host name: resolve it once (bounded), then go on or 488."""
        call_id = event.call_id
        answer, negotiated, keys = self._negotiate(offer, lease.port, mode=mode)
        host, port = negotiated.remote_address
        try:
            ip = await self.locator().resolve_host(
                host, 6 if self.addresses.get(6) and not self.addresses.get(4) else 4, timeout=2.0
            )
        except Exception as exc:  # HostResolutionError, or the resolver failing
            self._refuse(call_id, lease, 488, f"c= host {host!r} not resolved ({exc})", None)
            self.signalling.flush()
            return
        ua = self.signalling.ua
        if ua.call_state(call_id) not in _RINGING:  # cancelled while we looked it up
            lease.close()
            self.ports.release(lease.port)
            return
        negotiated = replace(negotiated, remote_address=(ip, port))
        problem = self.media_address_problem(negotiated.remote_address)
        try:
            if problem:
                self._refuse(call_id, lease, 488, problem, None)
            else:
                srtp = (mode, [], keys)
                self._ring(event, offer, lease, answer, negotiated, self.signalling.now(), srtp)
        except Exception:
            logger.exception(f"SIP {escape(call_id, 80)}: setting up the call failed, 500")
            self._forget_failed(call_id, lease)
        self.signalling.flush()

    def _negotiate(
        self,
        offer: SessionDescription,
        port: int,
        *,
        mode: str = "off",
        previous: SdesKeys | None = None,
        **kwargs: Any,
    ) -> tuple[SessionDescription, NegotiatedMedia, SdesKeys | None]:
        """Answer an offer with our address of the offer's IP family (dual-stack servers).

        Args:
            offer: The parsed offer.
            port: Our RTP port.
            mode: The SRTP policy for this answer (see :func:`negotiate_srtp`).
            previous: The SDES keys in use when answering a re-offer.
            **kwargs: More :func:`~pipecat_sip.sdp.negotiate` arguments.

        Returns:
            (answer, negotiated media, SDES keys or None for plain RTP).

        Raises:
            NoCommonCodec: No usable stream, or the offer's media is in an IP
                family this server has no address in (an IPv6-only offer to an
                IPv4-only server); :class:`NoAcceptableCrypto` when SRTP is why.
        """
        supported = kwargs.pop("supported", self.codecs)

        def answer_with(local_address: str):
            return negotiate_srtp(
                offer,
                mode,
                rng=self.srtp_rng,
                previous=previous,
                supported=supported,
                local_address=local_address,
                local_port=port,
                **kwargs,
            )

        answer, negotiated, keys = answer_with(self.public_address)
        host = negotiated.remote_address[0]
        version = ip_version(host)
        if version is None or host in HOLD_ADDRESSES:
            return answer, negotiated, keys
        local = self.addresses.get(version)
        if local is None:
            raise NoCommonCodec(
                f"the offer's media is IPv{version}; we have no IPv{version} address"
            )
        if local != self.public_address:
            answer, negotiated, keys = answer_with(local)
        return answer, negotiated, keys

    def media_address_problem(self, address: tuple[str, int]) -> str | None:
        """Why media must not go to ``address`` (an SDP c=/m= pair), or None when it may.

        Refused: multicast and broadcast addresses (a call streaming to a
        group), unspecified addresses other than the hold addresses, and our
        own SIP or RTP ports (a call looping media into ourselves).
        """
        host, port = address
        if host in HOLD_ADDRESSES or not port:
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return f"media address {host!r} is not an IP address"
        if ip.is_multicast:
            return f"media address {host} is multicast"
        if ip.is_unspecified or (ip.version == 4 and host == "255.255.255.255"):
            return f"media address {host} is not a host"
        ours = ip.is_loopback or host in self.addresses.values() or host == self.bind_host
        # Our own sockets: the SIP port and the RTP/RTCP pairs leased now (a port we hold
        # cannot be another process's on this host, so a peer's is never mistaken for one).
        leased = self.ports.is_leased
        if ours and (port == self.sip_port or leased(port) or leased(port - 1)):
            return f"media address {host}:{port} is one of our own ports"
        return None

    def address_for(self, host: str) -> str:
        """Our address for media with a peer at ``host``: of its IP family when we have one."""
        version = ip_version(host)
        return self.addresses.get(version, self.public_address) if version else self.public_address

    def locator(self) -> ServerLocator:
        """The DNS locator for host names (SDP c=), made on first use."""
        if self._locator is None:
            self._locator = ServerLocator()
        return self._locator

    def _refuse(
        self, call_id: str, lease: PortLease, status: int, why: str, now: float | None
    ) -> None:
        """Give the port back and answer the INVITE ``status`` with ``why`` as the reason."""
        lease.close()
        self.ports.release(lease.port)
        logger.info(f"SIP {escape(call_id, 80)}: {escape(why)}, {status}")
        ua = self.signalling.ua
        if ua.call_state(call_id) in _RINGING:
            reason = f"Not Acceptable Here ({why})"[:120] if status == 488 else None
            ua.reject(call_id, status, self.signalling.now() if now is None else now, reason=reason)

    def _ring(
        self,
        event: IncomingCall,
        offer: SessionDescription | None,
        lease: PortLease,
        answer: SessionDescription,
        negotiated: NegotiatedMedia | None,
        now: float,
        srtp: tuple[str, list[CryptoAttribute], SdesKeys | None] = ("off", [], None),
    ) -> None:
        """Make the call handle, send 180, arm the answer timeout and run the handler.

        ``srtp`` is (the SRTP policy the answer was made under, our crypto
        lines of a delayed offer, the SDES keys or None).
        """
        ua = self.signalling.ua
        call_id = event.call_id
        session = ua.session(call_id)
        assert session is not None
        info = call_info(event.request, "inbound", event.flow, negotiated)
        if event.user is not None or event.replaces is not None:
            info = replace(info, auth_user=event.user, replaces=event.replaces)
        call = SIPCall(self, info, session)
        call.negotiated = negotiated
        call.local_sdp = answer
        call.local_rtp_port = lease.port
        mode, cryptos, keys = srtp
        record = _Record(
            call, lease, offer=offer, answer=answer, srtp_mode=mode, cryptos=cryptos, sdes=keys
        )
        self._records[call_id] = record
        self.calls[call_id] = call
        ua.ringing(call_id, now)
        self._notify(self.on_call_started, call)
        logger.info(
            f"{call}: incoming from {escape(info.from_uri, 120)} "
            f"to {escape(info.request_uri, 120)} "
            f"({negotiated.encoding_name if negotiated else 'no SDP: delayed offer'}, "
            f"{f'SRTP {keys.suite}, ' if keys is not None else ''}rtp {lease.port})"
        )
        if self.answer_timeout_s > 0:
            loop = asyncio.get_running_loop()
            record.ring_timer = loop.call_later(self.answer_timeout_s, self._answer_timeout, call)
        if self.call_handler is None:
            self._spawn(call.answer())
        else:
            self._spawn(self._run_handler(call))

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
            if call.state in _RINGING and not call.ended:
                done = call.finish("error")
                self.reject(call, 500, None, None)
                await done
            else:
                await call.hangup()

    def _answer_timeout(self, call: SIPCall) -> None:
        record = self._records.get(call.call_id)
        if record is not None:
            record.ring_timer = None
        if call.ended or call.state not in _RINGING:
            return
        logger.warning(f"{call}: not answered in {self.answer_timeout_s:g} s, 480")
        call.finish("timeout", 480)
        self.reject(call, 480, None, None)

    def _send_answer(self, record: _Record) -> None:
        call = record.call
        assert record.answer is not None
        self._cancel_ring_timer(record)
        signalling = self.signalling
        signalling.ua.answer(call.call_id, record.answer.serialize(), signalling.now())
        call.mark_answered()
        self._limit_duration(record)
        signalling.flush()

    def _on_delayed_answer(self, record: _Record, ack: SIPRequest | None) -> None:
        """The ACK of a delayed-offer call: its SDP answers the offer in our 200."""
        call = record.call
        try:
            if ack is None or not ack.body or ack.content_type != "application/sdp":
                raise ValueError("the ACK carries no SDP answer")
            assert record.answer is not None
            negotiated, record.sdes = apply_srtp_answer(
                record.answer, record.cryptos, SessionDescription.parse(ack.body), record.srtp_mode
            )
        except (ValueError, SDPParseError, NoCommonCodec) as exc:
            # RFC 3261 s.13.2.1 leaves no other way out of an unusable answer.
            logger.warning(f"{call}: delayed offer not answered usably in the ACK ({exc}): BYE")
            self._spawn(call.hangup())
            return
        call.negotiated = negotiated
        call.info = _with_codec(call.info, negotiated, None)
        logger.info(f"{call}: ACK answered our offer ({negotiated.encoding_name})")
        self._spawn(self._start_and_establish(record))

    def _on_progress(self, record: _Record, event: CallProgress) -> None:
        """A provisional response to our INVITE: ringing, progress, or early media (RFC 3960).

        A 18x with SDP is the answer to our offer for the early session: the
        media starts (so the pipeline hears announcements or ringback) and
        the 2xx's SDP, normally the same answer, updates it if it differs.
        """
        call = record.call
        response = event.response
        code = response.status_code
        logger.debug(f"{call}: {code} {escape(response.reason, 80)}")
        if code <= 100 or call.ended:
            return
        if response.body and response.content_type == "application/sdp":
            try:
                assert record.offer is not None
                answer = SessionDescription.parse(response.body)
                negotiated, sdes = apply_srtp_answer(
                    record.offer, record.cryptos, answer, record.srtp_mode
                )
            except (SDPParseError, NoCommonCodec) as exc:
                logger.warning(f"{call}: unusable SDP in {code} ({exc}): no early media")
            else:
                if call.media is None:
                    record.sdes = sdes
                self._start_early_media(record, negotiated, code)
                return
        call.notify_progress("progress" if code == 183 else "ringing", code)

    def _start_early_media(self, record: _Record, negotiated: NegotiatedMedia, code: int) -> None:
        call = record.call
        if call.media is not None:  # a second 18x with SDP (the same answer, or a new fork's)
            self._update_remote(call, negotiated)
            call.notify_progress("early_media", code)
            return
        call.negotiated = negotiated
        call.info = _with_codec(call.info, negotiated, None)
        logger.info(
            f"{call}: early media ({code}) from {negotiated.remote_address[0]}:"
            f"{negotiated.remote_address[1]}, {negotiated.encoding_name}"
        )
        media = self._create_media(record)  # now: a 2xx right behind finds it

        async def start() -> None:
            await media.start()
            if not call.ended:
                call.notify_progress("early_media", code)

        self._spawn(start())

    def _on_answered(self, record: _Record, event: CallAnswered) -> None:
        call = record.call
        self._cancel_ring_timer(record)
        try:
            answer = SessionDescription.parse(event.response.body)
            assert record.offer is not None
            negotiated, record.sdes = apply_srtp_answer(
                record.offer, record.cryptos, answer, record.srtp_mode
            )
        except (SDPParseError, NoCommonCodec) as exc:
            if call.media is not None and call.negotiated is not None:
                negotiated = call.negotiated  # no new answer: the early one stands
            else:
                logger.warning(f"{call}: unusable SDP answer ({exc}), hanging up")
                self._spawn(call.hangup())
                return
        call.info = _with_codec(call.info, negotiated, event.response.to.display_name)
        call.mark_answered()
        if call.media is not None:  # early media ran: keep the session, follow the answer
            if (
                call.negotiated is None
                or negotiated.remote_address != call.negotiated.remote_address
            ):
                self._update_remote(call, negotiated)
            else:
                call.negotiated = negotiated
            self._limit_duration(record)
            call.mark_established()
            return
        call.negotiated = negotiated
        self._limit_duration(record)
        self._spawn(self._start_and_establish(record))

    async def _start_and_establish(self, record: _Record) -> None:
        call = record.call
        neg = call.negotiated
        assert neg is not None
        host, port = neg.remote_address
        if ip_version(host) is None:  # an answer with a host name: look it up once
            try:
                ip = await self.locator().resolve_host(
                    host, 6 if ":" in self.address_for(host) else 4, timeout=2.0
                )
            except Exception as exc:
                logger.warning(
                    f"{call}: answer's c= host {escape(host, 80)!r} not resolved ({exc}): BYE"
                )
                await call.hangup()
                return
            call.negotiated = neg = replace(neg, remote_address=(ip, port))
        problem = self.media_address_problem(neg.remote_address)
        if problem:
            logger.warning(f"{call}: {problem}: BYE")
            await call.hangup()
            return
        if call.ended:
            return
        await self._start_media(record)
        call.mark_established()

    def _on_modification_answered(self, record: _Record, event: ModificationAnswered) -> None:
        """Our re-INVITE or UPDATE was answered: follow the answer's media (RFC 3264 s.8)."""
        call = record.call
        response = event.response
        if not 200 <= event.status_code < 300:
            logger.info(f"{call}: {event.method} answered {event.status_code}")
            return
        if response is None or not response.body or call.local_sdp is None:
            return
        if response.content_type != "application/sdp":
            return
        try:
            negotiated = apply_answer(call.local_sdp, SessionDescription.parse(response.body))
        except (SDPParseError, NoCommonCodec) as exc:
            logger.warning(f"{call}: unusable SDP answer to our {event.method} ({exc})")
            return
        self._update_remote(call, negotiated)

    def _on_reoffer(self, record: _Record, event: ReofferReceived) -> None:
        """Answer a re-INVITE's offer (RFC 3264 s.8): move, hold or resume the media.

        The call keeps its codec, RTP port and SRTP profile. The answer keeps
        our o= session id and increments its version only when something
        changed. An offer that is unparsable, lacks the call's codec, or
        would turn an SRTP call plain (or a plain one SRTP) gets 488 and
        changes nothing (RFC 3261 s.14.2). In an SRTP call our key stays;
        a new key of the peer's is taken (RFC 4568 s.7.1.4).
        """
        call = record.call
        ua = self.signalling.ua
        now = self.signalling.now()
        try:
            answer = self._answer_reoffer(call, event.offer)
        except ValueError as exc:
            ua.reject_reoffer(call.call_id, 488, now, reason=f"Not Acceptable Here ({exc})"[:120])
            return
        except Exception:  # a bug: answer, never leave the peer hanging
            logger.exception(f"{call}: answering the re-INVITE's offer failed")
            ua.reject_reoffer(call.call_id, 500, now)
            return
        ua.answer_reoffer(call.call_id, answer, now)

    def _answer_reoffer(self, call: SIPCall, body: bytes) -> bytes:
        if call.negotiated is None or call.local_rtp_port is None:
            raise ValueError("no media session to update")
        current = call.local_sdp
        session_id = current.origin.session_id if current is not None else None
        version = current.origin.session_version if current is not None else 0
        record = self._records.get(call.call_id)
        previous = record.sdes if record is not None else None
        try:
            offer = SessionDescription.parse(body)
            answer, negotiated, keys = self._negotiate(
                offer,
                call.local_rtp_port,
                mode="required" if previous is not None else "off",
                previous=previous,
                supported=(call.negotiated.encoding_name,),
                session_id=session_id,
                session_version=version,
            )
        except SDPParseError as exc:
            logger.warning(f"{call}: re-INVITE with unusable SDP ({exc}): 488")
            raise ValueError("SDP not understood") from exc
        except NoAcceptableCrypto as exc:
            logger.warning(f"{call}: re-INVITE offer without usable SRTP ({escape(exc)}): 488")
            raise ValueError("SRTP required in this call") from exc
        except NoCommonCodec as exc:
            logger.warning(f"{call}: re-INVITE offer not usable ({exc}): 488")
            raise ValueError(f"{call.negotiated.encoding_name} not offered") from exc
        host, port = negotiated.remote_address
        if ip_version(host) is None:  # no lookup while the peer waits: only what is known now
            ip = self.locator().cached_host(host, 6 if ":" in self.address_for(host) else 4)
            if ip is None:
                raise ValueError(f"c= host {host!r} is not an IP address")
            negotiated = replace(negotiated, remote_address=(ip, port))
        problem = self.media_address_problem(negotiated.remote_address)
        if problem:
            logger.warning(f"{call}: re-INVITE refused: {problem}: 488")
            raise ValueError(problem)
        if record is not None:
            self._rekey(call, record, keys)  # may raise ValueError (488): nothing changed yet
        if current is None or answer.serialize() != current.serialize():
            answer.origin.session_version = version + 1
        call.local_sdp = answer
        logger.info(
            f"{call}: re-INVITE: remote media {negotiated.remote_address[0]}:"
            f"{negotiated.remote_address[1]}, {negotiated.direction}"
        )
        self._update_remote(call, negotiated)
        return answer.serialize()

    # --- media ---------------------------------------------------------------------
    async def _start_media(self, record: _Record, *, confirmed: bool = True) -> None:
        """Create and start the call's RTP session (see :meth:`_create_media`)."""
        media = self._create_media(record, confirmed=confirmed)
        await media.start()

    def _create_media(self, record: _Record, *, confirmed: bool = True) -> RTPSession:
        """Create the call's RTP session (``call.media``) now; it starts with ``start()``.

        RFC 4733 key presses go to the call (``receive_dtmf``), which merges
        them with INFO ones and reports each press once.

        Args:
            record: The call.
            confirmed: Whether the peer has already shown it owns its address;
                False for an inbound call before its ACK: no RTP is sent and
                the RTP timeout waits until then (or until RTP from it is
                accepted).
        """
        call = record.call
        neg = call.negotiated
        lease = record.lease
        assert neg is not None and lease is not None
        srtp = SrtpContext.from_sdes(record.sdes) if record.sdes is not None else None
        media = RTPSession(
            sock=lease.sock,
            rtcp_sock=lease.rtcp_sock,
            remote_addr=neg.remote_address,
            codec=get_codec(neg.encoding_name).for_stream(neg.fmtp),  # one state per RTP stream
            payload_type=neg.payload_type,
            telephone_event_pt=neg.telephone_event_pt,
            extra_telephone_event_pts=_offered_telephone_event_pts(record.offer),
            ptime_ms=neg.ptime,
            send_silence=self.send_silence,
            rtp_timeout_s=self.rtp_timeout_s,
            log_prefix=f"{call}",
            signaling_address=call.info.remote_address[0],
            latching=self.rtp_latching,
            confirmed=confirmed,
            comfort_noise_pt=neg.cn_pt,
            srtp=srtp,
        )
        media.on_timeout = lambda: self._on_rtp_timeout(call)
        media.on_dtmf = lambda key: call.receive_dtmf(key, "rfc4733")
        call.media = media
        self._apply_direction(call, neg)
        return media

    def _rekey(self, call: SIPCall, record: _Record, keys: SdesKeys | None) -> None:
        """Follow a re-offer's SDES outcome: keep, update the peer's key, or a new context.

        Raises:
            ValueError: The new keys cannot make an SRTP context (nothing changed).
        """
        previous = record.sdes
        if keys is None or previous is None:
            return
        media = call.media
        if media is not None and media.srtp is not None:
            if keys.suite != previous.suite or keys.local_key != previous.local_key:
                media.set_srtp(SrtpContext.from_sdes(keys))
                logger.info(f"{call}: re-INVITE: SRTP now {keys.suite}, new keys")
            elif (keys.remote_key, keys.remote_mki, keys.remote_lifetime) != (
                previous.remote_key,
                previous.remote_mki,
                previous.remote_lifetime,
            ):
                media.srtp.update_remote_key(
                    keys.remote_key,
                    remote_mki=keys.remote_mki,
                    remote_lifetime=keys.remote_lifetime,
                )
                logger.info(f"{call}: re-INVITE: the peer's SRTP key changed")
        record.sdes = keys

    def _srtp_mode_for(self, transport: str) -> str | None:
        """The SRTP policy for a call over ``transport``; None: the policy refuses the call.

        SDES keys travel in the SDP: over UDP or TCP (without
        ``srtp_insecure_signaling``) "optional" becomes "off" and
        "required" refuses.
        """
        if self.srtp == "off":
            return "off"
        if transport.upper() in _SECURE_TRANSPORTS or self.srtp_insecure_signaling:
            return self.srtp
        return None if self.srtp == "required" else "off"

    def _on_rtp_timeout(self, call: SIPCall) -> None:
        if call.ended:
            return
        timeout = call.media.rtp_timeout_s if call.media else self.rtp_timeout_s
        logger.warning(f"{call}: no RTP for {timeout:g} s, hanging up")
        call.finish("rtp_timeout")
        self.hangup(call)

    def _update_remote(self, call: SIPCall, negotiated: NegotiatedMedia) -> None:
        """Follow a re-INVITE's offer: new remote address, hold and resume."""
        call.negotiated = negotiated
        media = call.media
        if media is None:
            return
        if negotiated.remote_address != media.sdp_address and negotiated.remote_address[1]:
            media.update_remote(negotiated.remote_address)
        if negotiated.telephone_event_pt != media.telephone_event_pt:
            media.set_telephone_event_pt(negotiated.telephone_event_pt)
        self._apply_direction(call, negotiated)

    def _apply_direction(self, call: SIPCall, negotiated: NegotiatedMedia) -> None:
        """Send and expect RTP as the negotiated direction says (RFC 3264 s.5.1, s.8.4).

        A peer that holds the call (its offer sendonly or inactive, or the
        RFC 2543 way with connection address 0.0.0.0) gets no RTP from us.
        """
        media = call.media
        assert media is not None
        held_by_address = negotiated.remote_address[0] in HOLD_ADDRESSES
        send = negotiated.direction in ("sendrecv", "sendonly") and not held_by_address
        receive = negotiated.direction in ("sendrecv", "recvonly") and not held_by_address
        if (send, receive) != (media.sending, media.receiving):
            logger.info(
                f"{call}: media {negotiated.direction}"
                f"{' (held: c=0.0.0.0)' if held_by_address else ''}"
                f": we {'send' if send else 'do not send'}, "
                f"{'expect' if receive else 'do not expect'} RTP"
            )
        media.set_direction(send=send, receive=receive)
        call.set_held(not send)
        record = self._records.get(call.call_id)
        if record is not None:
            if not send and self.hold_timeout_s > 0 and record.hold_timer is None:
                loop = asyncio.get_running_loop()
                record.hold_timer = loop.call_later(
                    self.hold_timeout_s, self._end_for, call, "hold_timeout"
                )
            elif send and record.hold_timer is not None:
                record.hold_timer.cancel()
                record.hold_timer = None

    # --- helpers ----------------------------------------------------------------------
    def _unconfirmed_from(self, host: str) -> int:
        """Inbound calls from ``host`` answered and waiting for their ACK (half-open)."""
        return sum(
            1
            for call in self.calls.values()
            if call.info.direction == "inbound"
            and call.info.remote_address[0] == host
            and call.state is CallState.ACCEPTED
        )

    def _limit_duration(self, record: _Record) -> None:
        """Hang the call up ``max_call_duration_s`` after its answer."""
        if self.max_call_duration_s > 0 and record.duration_timer is None:
            loop = asyncio.get_running_loop()
            record.duration_timer = loop.call_later(
                self.max_call_duration_s, self._end_for, record.call, "max_duration"
            )

    def _end_for(self, call: SIPCall, reason: str) -> None:
        """A limit ran out: BYE (or what the state needs), the call ends with ``reason``."""
        if call.ended:
            return
        limit = {"max_duration": self.max_call_duration_s, "hold_timeout": self.hold_timeout_s}
        logger.warning(
            f"{call}: {reason.replace('_', ' ')} ({limit.get(reason, 0):g} s), hanging up"
        )
        call.finish(reason)
        self.hangup(call)

    def _cancel_ring_timer(self, record: _Record) -> None:
        """Drop the ringing timer: a pending timer would keep the call object alive."""
        if record.ring_timer is not None:
            record.ring_timer.cancel()
            record.ring_timer = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _notify(hook: Callable[[SIPCall], None] | None, call: SIPCall) -> None:
        if hook is not None:
            try:
                hook(call)
            except Exception:
                logger.exception(f"{call}: error in a call observer")


def _same_ip(a: str, b: str) -> bool:
    """Whether two address texts name the same IP (IPv4-mapped IPv6 equal to IPv4)."""
    try:
        ip_a, ip_b = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    ip_a = getattr(ip_a, "ipv4_mapped", None) or ip_a
    ip_b = getattr(ip_b, "ipv4_mapped", None) or ip_b
    return ip_a == ip_b


def _offered_telephone_event_pts(offer: SessionDescription | None) -> list[int]:
    """Every telephone-event payload type of the offer.

    Some peers (linphone) send DTMF on one of their own numbers rather than
    the one the answer kept.
    """
    if offer is None:
        return []
    return [
        fmt.payload_type
        for media in offer.media
        if media.media == "audio"
        for fmt in media.formats
        if fmt.encoding_name.lower() == "telephone-event"
    ]


def _outbound_transport(target: str, destination: tuple[str, int] | Flow | None) -> str:
    """The transport an INVITE to ``target`` goes on (as the user agent picks it).

    The destination's when it is a :class:`Flow`; else TLS for a ``sips:``
    URI, else the URI's ``transport`` parameter, else UDP.
    """
    if isinstance(destination, Flow):
        return destination.transport
    try:
        uri = SIPURI.parse(target)
    except ValueError:
        return "UDP"  # the user agent will refuse the URI itself
    if uri.scheme == "sips":
        return "TLS"
    return (uri.get_param("transport") or "UDP").upper()


def call_info(
    req: SIPRequest, direction: str, flow: Flow, negotiated: NegotiatedMedia | None = None
) -> CallInfo:
    """The :class:`CallInfo` of a call from its INVITE."""
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
        remote_address=flow.remote,
        codec=negotiated.encoding_name if negotiated else "",
        sample_rate=get_codec(negotiated.encoding_name).sample_rate if negotiated else 8000,
        ptime=negotiated.ptime if negotiated else 20,
        telephone_event=bool(negotiated and negotiated.telephone_event_pt is not None),
        headers=req.headers.as_dict(),
        transport=flow.transport,
    )


def _with_codec(
    info: CallInfo, negotiated: NegotiatedMedia, to_display_name: str | None
) -> CallInfo:
    return replace(
        info,
        codec=negotiated.encoding_name,
        sample_rate=get_codec(negotiated.encoding_name).sample_rate,
        ptime=negotiated.ptime,
        telephone_event=negotiated.telephone_event_pt is not None,
        to_display_name=to_display_name or info.to_display_name,
    )
