"""Shared pieces for tests that run the real SIPServer in-process on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from pipecat_sip.call import SIPCall
from pipecat_sip.server import SIPServer


class Recorder:
    """A call handler that answers (optionally late, or never), and records what happened.

    Attributes:
        calls: Every call handed to the handler, in order.
        ended: Call-ID to end reason.
        audio: Call-ID to the decoded PCM16 packets received once answered.
    """

    def __init__(
        self,
        *,
        answer: bool = True,
        answer_delay: float = 0.0,
        hangup_after: float | None = None,
    ) -> None:
        self.answer = answer
        self.answer_delay = answer_delay
        self.hangup_after = hangup_after
        self.calls: list[SIPCall] = []
        self.ended: dict[str, str] = {}
        self.audio: dict[str, list[bytes]] = {}

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        self.audio[call.call_id] = chunks = []
        call.add_ended_handler(lambda reason: self.ended.__setitem__(call.call_id, reason))
        if self.answer_delay:
            try:
                await asyncio.wait_for(call.wait_ended(), self.answer_delay)
                return  # ended (cancelled) while ringing
            except TimeoutError:
                pass
        if not self.answer:
            await call.wait_ended()
            return
        await call.answer()
        assert call.media is not None
        call.media.on_audio = chunks.append
        if self.hangup_after is not None:
            await call.wait_answered(5)
            await asyncio.sleep(self.hangup_after)
            await call.hangup()
        await call.wait_ended()


async def start_server(handler, **kwargs) -> SIPServer:
    """Start a SIPServer on 127.0.0.1, a free SIP port and a random RTP range."""
    base = random.randrange(20000, 40000, 2)
    kwargs.setdefault("rtp_port_range", (base, base + 599))
    server = SIPServer(handler, host="127.0.0.1", port=0, **kwargs)
    await server.start()
    return server


async def wait_for(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02
) -> bool:
    """Poll `predicate` until true or `timeout` seconds; return whether it came true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(interval)
    return True
