"""A paced two-sided audio pipeline through a CallRecorder; also runnable as a child process.

``run_pipeline(recorder, seconds)`` runs ``[Feeder, recorder.processor, Sink]``
in a real Pipecat pipeline: every 20 ms the feeder pushes one caller frame
(``InputAudioRawFrame``, a 440 Hz tone) and one bot frame
(``OutputAudioRawFrame``, 1 kHz), as a transport pair would. It reports how
many frames reached the sink and the longest gap between them, so a test
can tell whether the recorder ever held the pipeline up.

As a child (``python -m tests.helpers.recording_child DIR SECONDS``), it
records into DIR and prints one JSON line of results: the tests run it in a
mount namespace whose DIR is a tiny or read-only tmpfs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

RATE = 8000
SAMPLES = RATE // 50


def tone(hz: float, k: int) -> bytes:
    t = (np.arange(SAMPLES) + k * SAMPLES) / RATE
    return (6000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


class Sink(FrameProcessor):
    """Counts the audio frames that got through, and the longest gap between two."""

    def __init__(self):
        super().__init__()
        self.frames = 0
        self.max_gap = 0.0
        self._last: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            now = time.monotonic()
            if self._last is not None:
                self.max_gap = max(self.max_gap, now - self._last)
            self._last = now
            self.frames += 1
        await self.push_frame(frame, direction)


async def run_pipeline(recorder, seconds: float) -> dict:
    """Feed ``seconds`` of paced audio through the recorder; close it; report."""
    sink = Sink()
    worker = PipelineWorker(
        Pipeline([recorder.processor, sink]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
        enable_turn_tracking=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    loop = asyncio.get_running_loop()
    ticks = int(seconds * 50)
    start = loop.time() + 0.2
    for k in range(ticks):
        await asyncio.sleep(max(0.0, start + k * 0.02 - loop.time()))
        await worker.queue_frames(
            [
                InputAudioRawFrame(audio=tone(440, k), sample_rate=RATE, num_channels=1),
                OutputAudioRawFrame(audio=tone(1000, k), sample_rate=RATE, num_channels=1),
            ]
        )
    await worker.queue_frames([EndFrame()])
    await asyncio.wait_for(task, 10)
    await recorder.close()
    return {
        "ticks": ticks,
        "frames": sink.frames,
        "max_gap": sink.max_gap,
        "written_s": recorder.written_s,
        "dropped_s": recorder.dropped_s,
        "error": None if recorder.error is None else repr(recorder.error),
        "errno": getattr(recorder.error, "errno", None),
        "path": str(recorder.path),
    }


async def _main(directory: str, seconds: float) -> None:
    from pipecat_sip.recording import CallRecorder

    recorder = CallRecorder(directory, "child-call@127.0.0.1", sample_rate=RATE, chunk_s=0.5)
    print(json.dumps(await run_pipeline(recorder, seconds)), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], float(sys.argv[2])))
