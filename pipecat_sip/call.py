"""The per-call handle: what bot code sees of one SIP call.

A :class:`SIPCall` is made by the call manager (``pipecat_sip.calls``) for
each INVITE it accepts (inbound) or places (outbound). It carries the call
data (:class:`CallInfo`), answers, rejects and ends the call through a
:class:`CallControl` (the manager), gives access to the call's RTP session
once media flows, and tells handlers when the call is held or ends. Its
``state`` is the signalling state of the call's INVITE usage
(:class:`~pipecat_sip.sip.invite.CallState`), never a copy of it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from pipecat_sip.sip.info import DtmfMerger
from pipecat_sip.sip.invite import CallState

if TYPE_CHECKING:
    from pipecat_sip.media import RTPSession
    from pipecat_sip.rtp.quality import CallQualityStats
    from pipecat_sip.sdp import NegotiatedMedia, SessionDescription

__all__ = [
    "CallControl",
    "CallFailed",
    "CallInfo",
    "CallState",
    "SIPCall",
    "SignallingState",
    "TransferFailed",
    "TransferRequest",
]

#: Keys a call sends and receives as DTMF (RFC 4733 events 0-15).
DTMF_KEYS = frozenset("0123456789*#ABCD")
#: What a transfer reports to its handlers, in order (RFC 3515 s.2.4.4-2.4.5).
TRANSFER_STATES = ("accepted", "trying", "succeeded", "failed")


class CallFailed(Exception):
    """A call ended before it was established (outbound: rejected, not answered).

    Attributes:
        status_code: The final SIP status (486, 603, 408 for no answer, ...), or None.
        reason: Why, in words.
    """

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(f"{reason} ({status_code})" if status_code else reason)
        self.reason = reason
        self.status_code = status_code


class TransferFailed(Exception):
    """A transfer (REFER, RFC 3515) did not succeed; the call stays up.

    Attributes:
        status_code: The REFER's final status (403, 405, 603...), the status
            the transfer target answered (from the NOTIFY's sipfrag: 486,
            480, ...), or None (no answer in time, the call ended first).
        reason: Why, in words.
    """

    def __init__(self, status_code: int | None, reason: str) -> None:
        suffix = f" ({status_code})" if status_code else ""
        super().__init__(f"transfer failed: {reason}{suffix}")
        self.status_code = status_code
        self.reason = reason


@dataclass
class TransferRequest:
    """A REFER the far end sent us (RFC 3515): it asks us to call ``refer_to``.

    The call's refer handler gets it and returns True to accept (202, then
    the new call is placed and its progress reported back with NOTIFY) or
    False to refuse (603 Declined). Without a handler every REFER is refused.

    Attributes:
        transfer_id: The subscription's id (the REFER's CSeq number).
        refer_to: The Refer-To URI (the transfer target).
        referred_by: The Referred-By value (RFC 3892), or None.
        replaces: The Replaces header carried in Refer-To (attended
            transfer, RFC 3891), or None.
        new_call: Set once the call to ``refer_to`` is placed: await
            ``wait_new_call()`` for it (established) or its CallFailed.
    """

    transfer_id: str
    refer_to: str
    referred_by: str | None = None
    replaces: str | None = None
    _new_call: asyncio.Future | None = field(default=None, repr=False)

    async def wait_new_call(self) -> SIPCall:
        """The established call to ``refer_to`` once the transfer was accepted.

        Raises:
            CallFailed: The new call failed (or the transfer was refused).
        """
        if self._new_call is None:
            raise CallFailed("transfer not accepted")
        return await asyncio.shield(self._new_call)


@dataclass(frozen=True)
class CallInfo:
    """Call data for bot code (routing per dialled number, caller lookup).

    Attributes:
        call_id: The SIP Call-ID.
        direction: "inbound" or "outbound".
        from_uri: The From URI (`sip:+4930123@trunk.example`).
        from_display_name: The From display name, or None.
        to_uri: The To URI.
        to_display_name: The To display name, or None.
        request_uri: The INVITE's Request-URI (the dialled address).
        remote_address: (host, port) the INVITE came from / was sent to.
        codec: Negotiated codec name ("PCMU", "PCMA").
        sample_rate: The codec's audio sample rate, Hz (8000 for G.711).
        ptime: Packet time, ms.
        telephone_event: Whether the peer offered RFC 4733 telephone-event.
        headers: The INVITE's headers, canonical names to values (X- headers included).
        transport: The SIP transport the INVITE came or went on ("UDP", "TCP", "TLS").
        auth_user: The Digest user name an inbound INVITE authenticated as
            (``auth_users`` configured), else None.
        replaces: The Call-ID of our call this inbound INVITE replaces
            (attended transfer to us, RFC 3891; that call is ended with BYE
            once this one is up), else None.
    """

    call_id: str
    direction: str
    from_uri: str
    from_display_name: str | None
    to_uri: str
    to_display_name: str | None
    request_uri: str
    remote_address: tuple[str, int]
    codec: str
    sample_rate: int
    ptime: int = 20
    telephone_event: bool = False
    headers: dict[str, list[str]] = field(default_factory=dict)
    transport: str = "UDP"
    auth_user: str | None = None
    replaces: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of an INVITE header (case-insensitive name), or None."""
        lowered = name.lower()
        for key, values in self.headers.items():
            if key.lower() == lowered and values:
                return values[0]
        return None


class SignallingState(Protocol):
    """Where a call's signalling state is read from (the UA's INVITE session)."""

    @property
    def state(self) -> CallState:
        """The current state."""
        ...


class CallControl(Protocol):
    """What a :class:`SIPCall` asks of the call manager (the seam that tests fake).

    Every method acts on the call's SIP signalling and media at once; none
    of them raises for a call that already ended.
    """

    async def answer(self, call: SIPCall) -> None:
        """Start media and send 200 OK; with a delayed offer, return once the ACK answered.

        Raises:
            CallFailed: The call ended before it could be answered.
        """

    def reject(
        self,
        call: SIPCall,
        status_code: int,
        reason: str | None,
        retry_after: int | None,
        headers: Sequence[tuple[str, object]] = (),
    ) -> None:
        """Answer the INVITE with a final status (3xx-6xx), with extra ``headers``."""

    def hangup(self, call: SIPCall) -> None:
        """Send what ends the call from our side now: BYE, CANCEL or 480."""

    def release(self, call: SIPCall) -> None:
        """The call is over: give back what it held (RTP port, timers)."""

    def ring(self, call: SIPCall) -> None:
        """Send 180 Ringing for an incoming call (reliably when 100rel is used)."""

    async def progress(self, call: SIPCall, early_media: bool) -> None:
        """Send 183 Session Progress; with ``early_media`` its SDP answer, media started.

        Raises:
            CallFailed: The call ended first.
        """

    def transfer(self, call: SIPCall, target: str, replaces: SIPCall | None) -> str:
        """Send REFER (RFC 3515) for ``target``; return the transfer id for updates.

        Raises:
            TransferFailed: It cannot be sent (no dialog, a bad target).
        """
        ...

    def send_info(self, call: SIPCall, content_type: str, body: bytes) -> None:
        """Send INFO with ``body`` inside the call's dialog (RFC 6086)."""


class SIPCall:
    """One SIP call: answer, reject, hang up; its media and its data.

    ``state`` is the call's signalling state (RFC 5057 vocabulary, see
    :class:`~pipecat_sip.sip.invite.CallState`): "incoming" or "calling",
    "early", "accepted" (our 200 waits for its ACK), "confirmed", then
    "terminating" (our BYE is out) or "terminated".

    Attributes:
        info: The call data.
        media: The call's RTP session, once answered (None before).
        end_reason: Why the call ended ("remote_bye", "local_bye",
            "rtp_timeout", "cancelled", "rejected", "ack_timeout", "timeout",
            "shutdown", "error", ...), or None while it lasts.
        negotiated: The negotiated media (codec, payload types, remote
            address), set by the call manager once known.
        local_sdp: Our current session description (the answer we gave, or
            the offer we made), set by the call manager.
        local_rtp_port: Our RTP port while the call holds one.
        held: Whether the far end holds the call (we may not send it media).

    Example:
        ```python
        async def on_call(call: SIPCall):
            if call.info.to_uri.startswith("sip:sales@"):
                await call.answer()
            else:
                await call.reject(404)
        ```
    """

    def __init__(self, control: CallControl, info: CallInfo, signalling: SignallingState) -> None:
        """Create the handle (the call manager does this).

        Args:
            control: The call manager acting for this call.
            info: The call data.
            signalling: The call's INVITE session, whose ``state`` is the call's.
        """
        loop = asyncio.get_running_loop()
        self._control = control
        self._signalling = signalling
        self.info = info
        self.media: RTPSession | None = None
        self.negotiated: NegotiatedMedia | None = None
        self.local_sdp: SessionDescription | None = None
        self.local_rtp_port: int | None = None
        self.end_reason: str | None = None
        self.answered_at: float | None = None
        self.held = False
        self._finished = False
        self._up = False
        self._ended = loop.create_future()
        self._established = loop.create_future()
        self._ended_handlers: list[Callable[[str], Any]] = []
        self._hold_handlers: list[Callable[[bool], Any]] = []
        self._progress_handlers: list[Callable[[str, int], Any]] = []
        self._transfer_handlers: list[Callable[[str, int | None], Any]] = []
        self._dtmf_handlers: list[Callable[[str], Any]] = []
        self._refer_handler: Callable[[TransferRequest], Any] | None = None
        self._transfers: dict[str, asyncio.Future] = {}
        self._dtmf_merge = DtmfMerger()
        self.progress_events: list[tuple[str, int]] = []
        """The provisional responses reported so far, as ``(kind, status_code)``."""
        self._tasks: set[asyncio.Task] = set()

    @property
    def call_id(self) -> str:
        """The SIP Call-ID."""
        return self.info.call_id

    @property
    def state(self) -> CallState:
        """The signalling state (terminated at the latest once the call ended here)."""
        state = self._signalling.state
        if self._finished and not state.ended:
            return CallState.TERMINATED
        return state

    @property
    def ended(self) -> bool:
        """Whether the call is over (media closed, port given back)."""
        return self._finished

    @property
    def established(self) -> bool:
        """Whether the call is up: confirmed and not ended."""
        return self._up and not self._finished

    @property
    def quality(self) -> CallQualityStats | None:
        """The call's latest quality figures (MOS, loss, jitter, RTT), or None.

        Refreshed every ``quality_interval_s`` of its media and once when the
        media closes (then ``final``); None before answer or before the first.
        """
        media = self.media
        return getattr(media, "quality", None) if media is not None else None

    @property
    def duration(self) -> float:
        """Seconds since the call was answered (0 if never answered)."""
        if self.answered_at is None:
            return 0.0
        return time.monotonic() - self.answered_at

    def __str__(self) -> str:
        return f"SIPCall#{self.call_id}"

    # --- actions -------------------------------------------------------------
    async def answer(self) -> None:
        """Answer an incoming call: start media and send 200 OK with the SDP answer.

        An INVITE without SDP (delayed offer, RFC 3261 s.13.2.1) gets our offer
        in the 200 instead; the caller's answer comes in the ACK, and this
        returns once it has and the media is running, so ``media`` is set
        either way.

        Raises:
            CallFailed: The call ended before it could be answered (the
                caller cancelled, the answer timeout passed) or, with a
                delayed offer, before a usable answer came in the ACK.
            RuntimeError: The call is not ringing (already answered, or outbound).
        """
        if self._finished:
            raise CallFailed(f"call ended before answer ({self.end_reason})")
        if self.info.direction != "inbound" or self.state not in (
            CallState.INCOMING,
            CallState.EARLY,
        ):
            raise RuntimeError(f"{self}: cannot answer a call that is {self.state}")
        await self._control.answer(self)

    async def reject(
        self,
        status_code: int = 486,
        reason: str | None = None,
        retry_after: int | None = None,
        *,
        headers: Sequence[tuple[str, object]] = (),
    ) -> None:
        """Reject an incoming call with a final status (486 Busy Here by default).

        Args:
            status_code: 300-699 (3xx redirects: give the Contact in ``headers``).
            reason: Reason phrase; the standard one when None.
            retry_after: Seconds for a Retry-After header (with 503, 486, 480).
            headers: More headers for the response (e.g. ``("Contact", "<sip:x@y>")``).

        Raises:
            RuntimeError: The call is not ringing.
        """
        if self._finished or self.state not in (CallState.INCOMING, CallState.EARLY):
            raise RuntimeError(f"{self}: cannot reject a call that is {self.state}")
        done = self.finish("redirected" if status_code < 400 else "rejected")
        if headers:
            self._control.reject(self, status_code, reason, retry_after, headers)
        else:
            self._control.reject(self, status_code, reason, retry_after)
        await done

    async def ring(self) -> None:
        """Send 180 Ringing for an incoming call before answering it (RFC 3261 s.13.3.1.1).

        Reliable (100rel, RFC 3262) when the caller requires it, or supports
        it and the server is configured to use it.

        Raises:
            RuntimeError: The call is not ringing (answered, ended, or outbound).
        """
        self._check_ringing("ring")
        self._control.ring(self)

    async def progress(self, early_media: bool = True) -> None:
        """Send 183 Session Progress before answering; with ``early_media`` media starts now.

        With ``early_media`` the 183 carries our SDP answer and the call's
        RTP session starts, so the bot can play an announcement or ringback
        before (or instead of) answering (RFC 3960's gateway model). Media
        is sent once the caller's address is confirmed: at once when the SDP
        address is the caller's signalling address, else when RTP comes from
        it. ``answer()`` then sends 200 OK with the same answer.

        Raises:
            CallFailed: The call ended meanwhile.
            RuntimeError: The call is not ringing.
        """
        self._check_ringing("send progress for")
        await self._control.progress(self, early_media)

    def _check_ringing(self, what: str) -> None:
        if (
            self._finished
            or self.info.direction != "inbound"
            or self.state not in (CallState.INCOMING, CallState.EARLY)
        ):
            raise RuntimeError(f"{self}: cannot {what} a call that is {self.state}")

    async def transfer(
        self, target: str, *, replaces: SIPCall | None = None, timeout: float = 30.0
    ) -> None:
        """Transfer the far end to ``target`` (RFC 3515 REFER, RFC 3892 Referred-By).

        Blind transfer: the far end is asked to call ``target`` and reports
        how that goes (NOTIFY with message/sipfrag); once it reports a 2xx,
        this call ends with reason ``"transferred"`` (we send BYE) and this
        returns. Attended transfer: pass the call to the target as
        ``replaces`` (an established call of ours): the REFER's Refer-To then
        carries ``Replaces`` (RFC 3891) so the far end's INVITE takes that
        call's place at the target.

        Args:
            target: The SIP URI (``sip:agent@pbx.example``); a number or
                ``tel:`` URI is sent as given.
            replaces: Our established call to the target (attended transfer).
            timeout: Seconds to wait for the outcome.

        Raises:
            TransferFailed: The REFER was refused (403, 405, 603...), the
                target did not answer (the sipfrag status, e.g. 486), or no
                outcome came in ``timeout`` seconds (status None). The call
                stays up.
        """
        if not self.established:
            raise TransferFailed(None, f"the call is {self.state}, not established")
        if replaces is not None and not replaces.established:
            raise TransferFailed(None, "the call to replace is not established")
        transfer_id = self._control.transfer(self, target, replaces)
        future = self._transfers[transfer_id] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self.transfer_update(transfer_id, "failed", None, "no outcome in time")
            raise TransferFailed(None, f"no outcome in {timeout:g} s") from None
        finally:
            self._transfers.pop(transfer_id, None)

    def add_transfer_handler(self, handler: Callable[[str, int | None], Any]) -> None:
        """Call ``handler(state, status_code)`` as a transfer goes on (coroutines awaited).

        ``state`` is "accepted" (202 to our REFER), "trying" (the far end's
        call to the target is under way: a 1xx sipfrag), "succeeded" (2xx
        sipfrag) or "failed" (the REFER refused, a 3xx-6xx sipfrag, or no
        outcome); ``status_code`` is the status that said so, or None.
        """
        self._transfer_handlers.append(handler)

    def set_refer_handler(self, handler: Callable[[TransferRequest], Any] | None) -> None:
        """Decide on REFERs the far end sends (RFC 3515): ``handler(request) -> bool``.

        The handler (a coroutine function or a plain one) returns True to
        accept: 202, the call to ``request.refer_to`` is placed and its
        progress reported with NOTIFY; ``await request.wait_new_call()`` gives
        the new call. False (or no handler, or an error) refuses with 603.
        """
        self._refer_handler = handler

    @property
    def refer_handler(self) -> Callable[[TransferRequest], Any] | None:
        """The handler deciding on the far end's REFERs, or None (all refused 603)."""
        return self._refer_handler

    def send_info_dtmf(self, key: str, duration_ms: int = 100) -> None:
        """Send one key press as SIP INFO ``application/dtmf-relay`` (RFC 6086 carriage).

        Args:
            key: ``"0"``-``"9"``, ``"*"``, ``"#"`` or ``"A"``-``"D"``.
            duration_ms: The press's duration, ms (10-5000).

        Raises:
            ValueError: Unknown key or a duration out of range.
            RuntimeError: The call is not established.
        """
        from pipecat_sip.sip.info import dtmf_relay_body

        body = dtmf_relay_body(key, duration_ms)
        if not self.established:
            raise RuntimeError(f"{self}: cannot send DTMF on a call that is {self.state}")
        self._control.send_info(self, "application/dtmf-relay", body)

    def add_dtmf_handler(self, handler: Callable[[str], Any]) -> None:
        """Call ``handler(key)`` once per key press, whether it came as RFC 4733 or INFO.

        A press the far end sends both ways (RFC 4733 events and an INFO) is
        reported once. Handlers run synchronously in the packet's callback;
        a coroutine function's coroutine is run in a task.
        """
        self._dtmf_handlers.append(handler)

    def remove_dtmf_handler(self, handler: Callable[[str], Any]) -> None:
        """Stop calling ``handler`` for key presses (no error if it was not added)."""
        if handler in self._dtmf_handlers:
            self._dtmf_handlers.remove(handler)

    def add_progress_handler(self, handler: Callable[[str, int], Any]) -> None:
        """Call ``handler(kind, status_code)`` for each provisional response of an outbound call.

        ``kind`` is "ringing" (180-182 without SDP), "progress" (183 without
        SDP) or "early_media" (a 18x with SDP: the media session started, so
        the pipeline can hear announcements or ringback). Coroutines awaited.
        """
        self._progress_handlers.append(handler)

    async def hangup(self, reason: str = "local_bye") -> None:
        """End the call from our side; idempotent.

        Sends BYE when the call is up (CANCEL or an error response before),
        stops media and gives the RTP port back at once, without waiting for
        the peer's answer to the BYE.

        Args:
            reason: The end reason reported to ended handlers ("local_bye";
                the server uses "shutdown" when it stops).
        """
        if self._finished:
            return
        done = self.finish(reason)
        self._control.hangup(self)
        await done

    async def wait_answered(self, timeout: float | None = None) -> None:
        """Wait until the call is established (ACK received, or our INVITE answered).

        Raises:
            CallFailed: The call ended first (rejected, cancelled, timed out).
            asyncio.TimeoutError: `timeout` seconds passed.
        """
        await asyncio.wait_for(asyncio.shield(self._established), timeout)

    async def wait_ended(self) -> str:
        """Wait for the end of the call and return its reason."""
        return await asyncio.shield(self._ended)

    def add_ended_handler(self, handler: Callable[[str], Any]) -> None:
        """Call `handler(reason)` once when the call ends (coroutine functions are awaited).

        A handler added after the end is called at once.
        """
        if self._finished:
            self._run_handler(handler, self.end_reason or "error", "ended handler")
        else:
            self._ended_handlers.append(handler)

    def add_hold_handler(self, handler: Callable[[bool], Any]) -> None:
        """Call `handler(held)` each time the far end holds (True) or resumes (False) the call.

        Holding is a re-INVITE whose offer is sendonly or inactive, or has
        connection address 0.0.0.0 (RFC 3264 s.8.4); resuming, one that lets
        us send again. Coroutine functions are awaited.
        """
        self._hold_handlers.append(handler)

    # --- told by the call manager ---------------------------------------------------
    def mark_answered(self) -> None:
        """The 200 OK was sent (inbound) or received (outbound): the call's duration starts."""
        if self.answered_at is None:
            self.answered_at = time.monotonic()

    def mark_established(self) -> None:
        """The call is up (ACK in, or our ACK out and media running): wake `wait_answered`."""
        self.mark_answered()
        if not self._established.done() and not self._finished:
            self._up = True
            self._established.set_result(None)

    def notify_progress(self, kind: str, status_code: int) -> None:
        """A provisional response arrived (outbound): run the progress handlers."""
        self.progress_events.append((kind, status_code))
        for handler in list(self._progress_handlers):
            self._run_handler2(handler, kind, status_code, "progress handler")

    def transfer_update(
        self, transfer_id: str, state: str, status_code: int | None, reason: str = ""
    ) -> None:
        """A transfer moved on: run the handlers; end the call on success.

        Args:
            transfer_id: What :meth:`CallControl.transfer` returned.
            state: One of :data:`TRANSFER_STATES`.
            status_code: The status that said so, or None.
            reason: For a failure, why (for ``TransferFailed``).
        """
        future = self._transfers.get(transfer_id)
        if future is None or future.done():
            return  # not ours, or the outcome is known already (a late NOTIFY, a timeout)
        for handler in list(self._transfer_handlers):
            self._run_handler2(handler, state, status_code, "transfer handler")
        if state == "succeeded":
            future.set_result(status_code)
            if not self._finished:
                self.finish("transferred")
                self._control.hangup(self)
        elif state == "failed":
            future.set_exception(TransferFailed(status_code, reason or "refused"))
            future.exception()  # retrieved: no warning when nobody waits

    def receive_dtmf(self, key: str, source: str, now: float | None = None) -> bool:
        """A key press arrived by ``source`` ("rfc4733" or "info"): run the DTMF handlers once.

        Returns:
            False when it was the same press already reported by the other source.
        """
        if now is None:
            now = asyncio.get_running_loop().time()
        if not self._dtmf_merge.accept(key, source, now):
            logger.debug(f"{self}: DTMF {key!r} by {source} is a duplicate, dropped")
            return False
        for handler in list(self._dtmf_handlers):
            self._run_handler(handler, key, "DTMF handler")
        return True

    def set_held(self, held: bool) -> None:
        """The far end held (True) or resumed (False) the call: run the hold handlers."""
        if self.held == held:
            return
        self.held = held
        for handler in list(self._hold_handlers):
            self._run_handler(handler, held, "hold handler")

    def finish(self, reason: str, status_code: int | None = None) -> Awaitable[Any]:
        """End the call here once: mark it ended now, tear down in a task (idempotent).

        The mark is immediate, so the first reason given wins (a hang-up's
        "shutdown" over the "local_bye" the user agent reports for it); the
        teardown (media closed, resources released through
        :meth:`CallControl.release`, ended handlers called) runs in a task.

        Args:
            reason: The end reason.
            status_code: The SIP status that ended it, if any.

        Returns:
            What to await for the teardown to be done.
        """
        if self._finished:
            return asyncio.shield(self._ended)
        self._finished = True
        self.end_reason = reason
        if not self._established.done():
            self._established.set_exception(CallFailed(reason, status_code))
            self._established.exception()  # retrieved: no "never retrieved" warning
        self.spawn(self._teardown(reason))
        return asyncio.shield(self._ended)

    async def _teardown(self, reason: str) -> None:
        if self.media is not None:  # closed, but kept for its statistics
            try:
                await self.media.close()
            except Exception:
                logger.exception(f"{self}: error closing media")
        try:
            self._control.release(self)
        except Exception:
            logger.exception(f"{self}: error releasing the call")
        self.local_rtp_port = None
        for future in self._transfers.values():
            if not future.done():
                future.set_exception(TransferFailed(None, f"the call ended ({reason})"))
                future.exception()
        if not self._ended.done():
            self._ended.set_result(reason)
        handlers, self._ended_handlers = self._ended_handlers, []
        for handler in handlers:
            self._run_handler(handler, reason, "ended handler")

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in a task the call keeps a reference to."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run_handler2(self, handler: Callable[..., Any], a: Any, b: Any, what: str) -> None:
        try:
            result = handler(a, b)
            if inspect.isawaitable(result):
                self.spawn(result)
        except Exception:
            logger.exception(f"{self}: error in {what}")

    def _run_handler(self, handler: Callable[[Any], Any], arg: Any, what: str) -> None:
        try:
            result = handler(arg)
            if inspect.isawaitable(result):
                self.spawn(result)
        except Exception:
            logger.exception(f"{self}: error in {what}")
