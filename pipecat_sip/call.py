"""The per-call handle: what bot code sees of one SIP call.

A `SIPCall` is made by `SIPServer` for each INVITE it accepts (inbound) or
places (outbound). It carries the call data (`CallInfo`), answers or rejects
the call, owns the call's RTP session once media flows, and ends the call.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from pipecat_sip.codecs import get_codec
from pipecat_sip.media import RTPSession
from pipecat_sip.ports import PortLease
from pipecat_sip.sdp import HOLD_ADDRESSES, NegotiatedMedia, SessionDescription

if TYPE_CHECKING:
    from pipecat_sip.server import SIPServer


class CallFailed(Exception):
    """An outbound call was not answered.

    Attributes:
        status_code: The final SIP status (486, 603, 408 for no answer, ...), or None.
        reason: Why, in words.
    """

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(f"{reason} ({status_code})" if status_code else reason)
        self.reason = reason
        self.status_code = status_code


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

    def header(self, name: str) -> str | None:
        """The first value of an INVITE header (case-insensitive name), or None."""
        lowered = name.lower()
        for key, values in self.headers.items():
            if key.lower() == lowered and values:
                return values[0]
        return None


class SIPCall:
    """One SIP call: answer, reject, hang up; its media and its data.

    States: "incoming" (INVITE received, ringing), "calling" (our INVITE
    sent), "answered" (200 sent, waiting for ACK), "established", "ended".

    Attributes:
        info: The call data.
        media: The call's RTP session, once answered (None before).
        state: The state, as above.
        end_reason: Why the call ended ("remote_bye", "local_bye",
            "rtp_timeout", "cancelled", "rejected", "ack_timeout", "timeout",
            "shutdown", "error"), or None while it lasts.

    Example:
        ```python
        async def on_call(call: SIPCall):
            if call.info.to_uri.startswith("sip:sales@"):
                await call.answer()
            else:
                await call.reject(404)
        ```
    """

    def __init__(
        self,
        server: SIPServer,
        info: CallInfo,
        negotiated: NegotiatedMedia | None,
        lease: PortLease,
        *,
        answer_sdp: SessionDescription | None = None,
        offer: SessionDescription | None = None,
        rtp_timeout_s: float = 30.0,
        send_silence: bool = True,
    ) -> None:
        self._server = server
        self.info = info
        self.negotiated = negotiated
        self._lease: PortLease | None = lease
        self._answer_sdp = answer_sdp
        self.offer = offer
        # Our current session description: the answer we gave (inbound) or the
        # offer we made (outbound); re-INVITE answers keep its o= session id.
        self.local_sdp = answer_sdp if info.direction == "inbound" else offer
        self._rtp_timeout_s = rtp_timeout_s
        self._send_silence = send_silence
        self.media: RTPSession | None = None
        self.state = "incoming" if info.direction == "inbound" else "calling"
        self.end_reason: str | None = None
        self.started_at = time.monotonic()
        self.answered_at: float | None = None
        self._ended = asyncio.get_running_loop().create_future()
        self._established = asyncio.get_running_loop().create_future()
        self._ended_handlers: list[Callable[[str], Any]] = []
        self._hold_handlers: list[Callable[[bool], Any]] = []
        self.held = False
        """Whether the far end holds the call (we may not send it media)."""
        self._tasks: set[asyncio.Task] = set()

    @property
    def call_id(self) -> str:
        """The SIP Call-ID."""
        return self.info.call_id

    @property
    def local_rtp_port(self) -> int | None:
        """Our RTP port while the call holds one."""
        return self._lease.port if self._lease else None

    @property
    def ended(self) -> bool:
        """Whether the call is over."""
        return self.state == "ended"

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
            RuntimeError: The call was already answered.
        """
        if self.state == "ended":
            raise CallFailed(f"call ended before answer ({self.end_reason})")
        if self.state != "incoming":
            raise RuntimeError(f"{self}: cannot answer a call that is {self.state}")
        if self.negotiated is None:  # delayed offer: media starts with the ACK's answer
            assert self.local_sdp is not None
            self.state = "answered"
            self.answered_at = time.monotonic()
            self._server._ua_answer(self, self.local_sdp.serialize())
            await self.wait_answered()
            return
        await self._start_media()
        if self.state != "incoming":  # cancelled while media was starting
            if self.media is not None:
                await self.media.close()
            raise CallFailed(f"call ended before answer ({self.end_reason})")
        assert self._answer_sdp is not None
        self.state = "answered"
        self.answered_at = time.monotonic()
        self._server._ua_answer(self, self._answer_sdp.serialize())

    async def reject(
        self, status_code: int = 486, reason: str | None = None, retry_after: int | None = None
    ) -> None:
        """Reject an incoming call with a final status (486 Busy Here by default).

        Args:
            status_code: 300-699.
            reason: Reason phrase; the standard one when None.
            retry_after: Seconds for a Retry-After header (with 503, 486, 480).

        Raises:
            RuntimeError: The call is not incoming.
        """
        if self.state != "incoming":
            raise RuntimeError(f"{self}: cannot reject a call that is {self.state}")
        self._server._ua_reject(self, status_code, reason, retry_after)
        await self._finish("rejected")

    async def hangup(self, reason: str = "local_bye") -> None:
        """End the call from our side; idempotent.

        Sends BYE when the call is up (CANCEL or an error response before),
        stops media and gives the RTP port back at once, without waiting for
        the peer's answer to the BYE.

        Args:
            reason: The end reason reported to ended handlers ("local_bye";
                the server uses "shutdown" when it stops).
        """
        if self.state == "ended":
            return
        self._server._ua_hangup(self)
        await self._finish(reason)

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
        if self.state == "ended":
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

    # --- called by the server -------------------------------------------------
    async def _start_media(self) -> None:
        neg = self.negotiated
        assert neg is not None
        codec = get_codec(neg.encoding_name)
        assert self._lease is not None
        self.media = RTPSession(
            sock=self._lease.sock,
            rtcp_sock=self._lease.rtcp_sock,
            remote_addr=neg.remote_address,
            codec=codec,
            payload_type=neg.payload_type,
            telephone_event_pt=neg.telephone_event_pt,
            extra_telephone_event_pts=self._offered_telephone_event_pts(),
            ptime_ms=neg.ptime,
            send_silence=self._send_silence,
            rtp_timeout_s=self._rtp_timeout_s,
            log_prefix=f"{self}",
        )
        self.media.on_timeout = self._on_rtp_timeout
        self._apply_direction(neg)
        await self.media.start()

    def _offered_telephone_event_pts(self) -> list[int]:
        """Every telephone-event payload type of the offer.

        Some peers (linphone) send DTMF on one of their own numbers rather than
        the one the answer kept.
        """
        if self.offer is None:
            return []
        return [
            fmt.payload_type
            for media in self.offer.media
            if media.media == "audio"
            for fmt in media.formats
            if fmt.encoding_name.lower() == "telephone-event"
        ]

    def _on_rtp_timeout(self) -> None:
        if self.state == "ended":
            return
        timeout = self.media.rtp_timeout_s if self.media else self._rtp_timeout_s
        logger.warning(f"{self}: no RTP for {timeout:g} s, hanging up")
        self._server._ua_hangup(self)
        self._spawn(self._finish("rtp_timeout"))

    def _set_established(self) -> None:
        if self.state in ("answered", "calling", "incoming"):
            self.state = "established"
            if self.answered_at is None:
                self.answered_at = time.monotonic()
        if not self._established.done():
            self._established.set_result(None)

    def _update_remote(self, negotiated: NegotiatedMedia) -> None:
        """Follow a re-INVITE's offer: new remote address, hold and resume."""
        self.negotiated = negotiated
        if self.media is None:
            return
        if negotiated.remote_address != self.media.sdp_address and negotiated.remote_address[1]:
            self.media.update_remote(negotiated.remote_address)
        if negotiated.telephone_event_pt != self.media.telephone_event_pt:
            self.media.set_telephone_event_pt(negotiated.telephone_event_pt)
        self._apply_direction(negotiated)

    def _apply_direction(self, negotiated: NegotiatedMedia) -> None:
        """Send and expect RTP as the negotiated direction says (RFC 3264 s.5.1, s.8.4).

        A peer that holds the call (its offer sendonly or inactive, or the
        RFC 2543 way with connection address 0.0.0.0) gets no RTP from us, and
        the RTP timeout waits while it sends none.
        """
        assert self.media is not None
        held_by_address = negotiated.remote_address[0] in HOLD_ADDRESSES
        send = negotiated.direction in ("sendrecv", "sendonly") and not held_by_address
        receive = negotiated.direction in ("sendrecv", "recvonly") and not held_by_address
        if (send, receive) != (self.media.sending, self.media.receiving):
            logger.info(
                f"{self}: media {negotiated.direction}"
                f"{' (held: c=0.0.0.0)' if held_by_address else ''}"
                f": we {'send' if send else 'do not send'}, "
                f"{'expect' if receive else 'do not expect'} RTP"
            )
        self.media.set_direction(send=send, receive=receive)
        if self.held != (not send):
            self.held = not send
            for handler in list(self._hold_handlers):
                self._run_handler(handler, self.held, "hold handler")

    async def _finish(self, reason: str, status_code: int | None = None) -> None:
        """Tear down once: media closed, port released, handlers called."""
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        if not self._established.done():
            self._established.set_exception(CallFailed(reason, status_code))
            self._established.exception()  # retrieved: no "never retrieved" warning
        if self.media is not None:
            try:
                await self.media.close()
            except Exception:
                logger.exception(f"{self}: error closing media")
        elif self._lease is not None:
            self._lease.close()
        if self._lease is not None:
            self._server._release(self, self._lease)
            self._lease = None
        if not self._ended.done():
            self._ended.set_result(reason)
        handlers, self._ended_handlers = self._ended_handlers, []
        for handler in handlers:
            self._run_handler(handler, reason, "ended handler")

    def _run_handler(self, handler: Callable[[Any], Any], arg: Any, what: str) -> None:
        try:
            result = handler(arg)
            if inspect.isawaitable(result):
                self._spawn(result)
        except Exception:
            logger.exception(f"{self}: error in {what}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
