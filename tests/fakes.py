"""Fakes of SIPCall and RTPSession for transport tests.

They implement the interfaces the transport uses:
``FakeMedia`` paces queued audio out one packet per ptime from absolute
deadlines on the event loop (optionally sped up), and records what it
"sent"; ``FakeCall`` counts hang-ups and can simulate the far end's BYE.
"""

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat_sip.sip.invite import CallState


@dataclass(frozen=True)
class FakeCallInfo:
    call_id: str
    from_uri: str = "sip:alice@127.0.0.1"
    from_display_name: str | None = "Alice"
    to_uri: str = "sip:bot@127.0.0.1"
    to_display_name: str | None = None
    request_uri: str = "sip:bot@127.0.0.1:6060"
    remote_address: tuple[str, int] = ("127.0.0.1", 5062)
    codec: str = "PCMU"
    sample_rate: int = 8000
    headers: dict[str, list[str]] = field(default_factory=dict)


class FakeMedia:
    """RTPSession stand-in: queue, pacing, clear, DTMF, backlog waits.

    Args:
        sample_rate: Codec rate, Hz.
        ptime_ms: Packet duration, ms.
        speed: Ticks run this many times faster than real time.
    """

    def __init__(self, *, sample_rate: int = 8000, ptime_ms: int = 20, speed: float = 1.0):
        self.sample_rate = sample_rate
        self.ptime_ms = ptime_ms
        self.samples_per_packet = sample_rate * ptime_ms // 1000
        self.send_silence = True
        self.rtp_timeout_s = 30.0
        self.on_audio: Callable[[bytes], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_timeout: Callable[[], None] | None = None
        # ("audio", payload) per packet of queued audio sent, ("clear", bytes dropped),
        # ("dtmf", key, duration_ms), in order.
        self.events: list[tuple] = []
        self.idle_ticks = 0
        self.closed = False
        self._period = ptime_ms / 1000 / speed
        self._queue = bytearray()
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    @property
    def packet_bytes(self) -> int:
        return self.samples_per_packet * 2

    @property
    def sent_packets(self) -> list[bytes]:
        return [e[1] for e in self.events if e[0] == "audio"]

    @property
    def backlog_bytes(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._period
        self._timer = loop.call_at(self._deadline, self._tick)

    async def close(self) -> None:
        self.closed = True
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._notify()

    def send_audio(self, pcm: bytes) -> None:
        if not self.closed:
            self._queue.extend(pcm)

    async def wait_for_backlog(self, max_bytes: int) -> None:
        if self.closed or len(self._queue) <= max_bytes:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((max_bytes, future))
        await future

    def clear_audio(self) -> None:
        self.events.append(("clear", len(self._queue)))
        self._queue.clear()
        self._notify()

    def send_dtmf(self, key: str, duration_ms: int = 100) -> None:
        self.events.append(("dtmf", key, duration_ms))

    # Test helpers: the far end sends us something.

    def receive_audio(self, pcm: bytes) -> None:
        if self.on_audio:
            self.on_audio(pcm)

    def receive_dtmf(self, key: str) -> None:
        if self.on_dtmf:
            self.on_dtmf(key)

    def _tick(self) -> None:
        n = self.packet_bytes
        if self._queue:
            payload = bytes(self._queue[:n]).ljust(n, b"\x00")
            del self._queue[:n]
            self.events.append(("audio", payload))
        else:
            self.idle_ticks += 1
        self._notify()
        if not self.closed:
            self._deadline += self._period
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._tick)

    def _notify(self) -> None:
        waiting = []
        for max_bytes, future in self._waiters:
            if future.done():
                continue
            if self.closed or len(self._queue) <= max_bytes:
                future.set_result(None)
            else:
                waiting.append((max_bytes, future))
        self._waiters = waiting


class FakeCallFailed(Exception):
    pass


class FakeCall:
    """SIPCall stand-in: "accepted" (200 sent) or "confirmed", with a FakeMedia.

    Like SIPCall, ended handlers may be sync or async, and one added after
    the end is called at once; `state` uses the same CallState values.
    """

    def __init__(
        self,
        *,
        call_id: str = "a84b4c76e66710@127.0.0.1",
        media: FakeMedia | None = None,
        state: CallState = CallState.CONFIRMED,
    ):
        self.call_id = call_id
        self.media = media or FakeMedia()
        self.info = FakeCallInfo(call_id=call_id, sample_rate=self.media.sample_rate)
        self.state = CallState(state)
        self.end_reason: str | None = None
        self.hangup_calls = 0
        self.byes_sent = 0
        self._handlers: list[Callable[[str], Any]] = []
        self._hold_handlers: list[Callable[[bool], Any]] = []
        self.held = False
        self._ended: asyncio.Event | None = None
        self._established: asyncio.Event | None = None

    @property
    def ended(self) -> bool:
        return self.state.ended

    @property
    def established(self) -> bool:
        return self.state is CallState.CONFIRMED

    def add_ended_handler(self, handler: Callable[[str], Any]) -> None:
        if self.ended:
            self._run_handler(handler, self.end_reason or "error")
        else:
            self._handlers.append(handler)

    def add_hold_handler(self, handler: Callable[[bool], Any]) -> None:
        self._hold_handlers.append(handler)

    async def set_held(self, held: bool) -> None:
        """The far end held or resumed the call (a re-INVITE)."""
        self.held = held
        for handler in self._hold_handlers:
            result = handler(held)
            if inspect.isawaitable(result):
                await result

    async def hangup(self) -> None:
        self.hangup_calls += 1
        if self.state in (CallState.ACCEPTED, CallState.CONFIRMED):
            self.byes_sent += 1
            await self._end("local_bye")
        elif self.state is CallState.INCOMING:
            await self._end("cancelled")

    def establish(self) -> None:
        """The ACK arrived."""
        if self.state is CallState.ACCEPTED:
            self.state = CallState.CONFIRMED
            if self._established:
                self._established.set()

    async def wait_answered(self, timeout: float | None = None) -> None:
        if self.state is CallState.ACCEPTED:
            self._established = self._established or asyncio.Event()
            await asyncio.wait_for(self._established.wait(), timeout)
        if self.state is not CallState.CONFIRMED:
            raise FakeCallFailed(self.end_reason)

    async def remote_hangup(self, reason: str = "remote_bye") -> None:
        """The far end sent BYE (or RTP timed out)."""
        await self._end(reason)

    async def wait_ended(self) -> str:
        if not self.ended:
            self._ended = self._ended or asyncio.Event()
            await self._ended.wait()
        assert self.end_reason is not None
        return self.end_reason

    async def _end(self, reason: str) -> None:
        if self.ended:
            return
        self.state = CallState.TERMINATED
        self.end_reason = reason
        await self.media.close()
        for event in (self._ended, self._established):
            if event:
                event.set()
        handlers, self._handlers = self._handlers, []
        for handler in handlers:
            self._run_handler(handler, reason)

    def _run_handler(self, handler: Callable[[str], Any], reason: str) -> None:
        result = handler(reason)
        if inspect.isawaitable(result):
            asyncio.ensure_future(result)
