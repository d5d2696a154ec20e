"""Impaired media end to end: a real server and pipeline behind a relay adding jitter,
reordering, duplicates and loss (issue 15: the jitter buffer in the call path).

A raw caller sends numbered G.711 packets (each payload one repeated code, so each
decoded frame tells which packet it came from) through `tests/helpers/relay.py`
with 0-60 ms of jitter, 5% reordering, 2% duplicates and 3% loss. The echo
pipeline's input is recorded: it must get one frame per 20 ms, in sequence order,
without a duplicate; and with ``jitter_buffer=False`` (the direct path) the same
path visibly delivers duplicates and reordered frames, so the test measures the buffer.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.codecs import PCMU
from pipecat_sip.rtp.packet import RtpPacket
from pipecat_sip.transport import SIPParams, SIPTransport
from tests.helpers.relay import Impairment, UdpRelay
from tests.helpers.server import start_server, wait_for
from tests.test_robustness import RawPeer

BAD = Impairment(loss=0.03, delay_ms=30, jitter_ms=30, reorder=0.05, duplicate=0.02)
PACKETS = 250  # 5 s

# Codes whose decoded values differ: packet n carries code CODES[n % len(CODES)].
_DECODED = np.frombuffer(PCMU.decode(bytes(range(256))), "<i2")
CODES = [c for c in range(0x80, 0xFF) if _DECODED[c] > 200]
VALUE_TO_INDEX = {int(_DECODED[c]): i for i, c in enumerate(CODES)}


class FrameRecorder(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[float, bytes]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames.append((asyncio.get_running_loop().time(), frame.audio))
        await self.push_frame(frame, direction)


class RecordingBot:
    def __init__(self, params: SIPParams) -> None:
        self.params = params
        self.recorder = FrameRecorder()
        self.calls = []

    async def __call__(self, call) -> None:
        self.calls.append(call)
        await call.answer()
        transport = SIPTransport(call, self.params)
        worker = PipelineWorker(
            Pipeline([transport.input(), self.recorder, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        )

        @transport.event_handler("on_client_disconnected")
        async def gone(transport, client):
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()


def frame_indices(frames: list[tuple[float, bytes]]) -> list[int | None]:
    """Which packet each frame came from (by its last sample), None when concealed."""
    out = []
    for _, pcm in frames:
        last = int(np.frombuffer(pcm, "<i2")[-1]) if pcm else None
        out.append(VALUE_TO_INDEX.get(last))
    return out


async def run_call(params: SIPParams) -> tuple[list[tuple[float, bytes]], UdpRelay]:
    bot = RecordingBot(params)
    server = await start_server(bot, send_silence=False)
    peer = await RawPeer.open(server)
    relay: UdpRelay | None = None
    try:
        await peer.establish()
        assert await wait_for(lambda: bot.calls and bot.calls[0].local_rtp_port, 3)
        port = bot.calls[0].local_rtp_port
        relay = UdpRelay(target=("127.0.0.1", port), a_to_b=BAD, seed=7)
        await relay.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(PACKETS):
            code = CODES[n % len(CODES)]
            packet = RtpPacket(0, 1000 + n, 160 * n, 0x4242, bytes([code]) * 160)
            await asyncio.sleep(max(0.0, start + 0.02 * n - loop.time()))
            peer.rtp.send(packet.serialize(), relay.address)
        await asyncio.sleep(0.5)
        return list(bot.recorder.frames), relay
    finally:
        peer.close()
        if relay is not None:
            relay.close()
        await server.stop()


async def test_jitter_buffer_gives_the_pipeline_one_frame_per_20ms_in_order_without_duplicates():
    frames, relay = await run_call(SIPParams())
    stats = relay.stats.a_to_b
    assert stats.lost > 0 and stats.reordered > 0 and stats.duplicated > 0, stats
    # From the first frame to the last packet's play-out: one frame per 20 ms.
    times = [t for t, _ in frames]
    steady = [t for t in times if times[0] + 0.5 <= t <= times[0] + 4.5]
    assert len(steady) == pytest.approx(200, abs=4), len(steady)
    gaps = np.diff(steady)
    assert gaps.max() < 0.06, gaps.max()  # never a stall: a frame at least every 3 ticks
    indices = [i for i in frame_indices(frames) if i is not None]
    assert len(indices) > 0.8 * PACKETS  # the rest: lost, late, or blended after a loss
    runs = np.diff(indices)
    wraps = runs < -len(CODES) // 2
    assert np.all((runs > 0) | wraps), "frames out of order or duplicated"


async def test_direct_path_without_jitter_buffer_shows_the_impairments():
    frames, relay = await run_call(SIPParams(jitter_buffer=False))
    indices = [i for i in frame_indices(frames) if i is not None]
    runs = np.diff(indices)
    wraps = runs < -len(CODES) // 2
    assert np.any((runs <= 0) & ~wraps), "expected duplicates or reordering on the direct path"
