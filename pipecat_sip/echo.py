"""The keyless echo bot's processor: the caller hears themselves; key presses are logged.

Used by `bot.py` when no AI service keys are set, by the end-to-end tests and
by the load benchmarks (an echo pipeline is the cheapest real pipeline).
"""

from __future__ import annotations

import time
import wave
from importlib import resources

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


def load_greeting() -> tuple[bytes, int]:
    """The bundled spoken greeting: (mono PCM16, sample rate in Hz)."""
    path = resources.files("pipecat_sip") / "assets" / "greeting.wav"
    with resources.as_file(path) as file, wave.open(str(file), "rb") as w:
        return w.readframes(w.getnframes()), w.getframerate()


class EchoProcessor(FrameProcessor):
    """Turns each `InputAudioRawFrame` into an `OutputAudioRawFrame` with the same audio.

    While a greeting plays (see `mute_for`), the caller's audio is not echoed,
    so the echo does not queue up behind the greeting. `InputDTMFFrame`s are
    logged and passed on.

    Args:
        pass_input: Also pass each `InputAudioRawFrame` on after its echo, for
            a processor further down that needs the caller's audio (a
            recorder after `transport.output()`). Default False.
    """

    def __init__(self, *, pass_input: bool = False, **kwargs) -> None:
        # Echoing is a few attribute reads per frame: run it in the pushing
        # processor's task (Pipecat's direct mode) instead of two queues and
        # tasks of its own.
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)
        self._muted_until = 0.0
        self._pass_input = pass_input
        self.digits: list[str] = []

    def mute_for(self, seconds: float) -> None:
        """Do not echo for `seconds` from now."""
        self._muted_until = time.monotonic() + seconds

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Echo audio, log key presses, pass everything else."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if time.monotonic() >= self._muted_until:
                await self.push_frame(
                    OutputAudioRawFrame(
                        audio=frame.audio,
                        sample_rate=frame.sample_rate,
                        num_channels=frame.num_channels,
                    )
                )
            if self._pass_input:
                await self.push_frame(frame, direction)
            return
        if isinstance(frame, InputDTMFFrame):
            key = frame.button.value
            self.digits.append(key)
            logger.info(f"{self}: key pressed: {key}")
        await self.push_frame(frame, direction)
