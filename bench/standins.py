"""Local stand-ins for the AI bot's services (no network, no keys), for capacity planning.

bot.py's AI agent is Deepgram STT -> user aggregator with Silero VAD ->
OpenAI LLM -> Cartesia TTS -> output -> assistant aggregator. For a CPU
figure of that shape these stand-ins answer as the real services do, from
this process:

- :class:`StandInSTTService` (an ``STTService``): takes the audio as a
  streaming STT would and, ``latency_s`` after the user starts speaking
  (VAD), pushes a final ``TranscriptionFrame`` (a streaming service's
  finals arrive while the caller speaks; one arriving after the turn ended
  would start a new turn and interrupt the reply);
- :class:`StandInLLM` (a plain ``FrameProcessor``, not Pipecat's
  ``LLMService``: no function calling or usage metrics): on each
  ``LLMContextFrame``, after ``first_token_s``, streams a reply as
  ``LLMTextFrame`` tokens between ``LLMFullResponseStartFrame`` and
  ``LLMFullResponseEndFrame``;
- :class:`StandInTTSService` (a ``TTSService``): after ``first_byte_s``,
  returns speech-length audio (``chars_per_second``) in chunks, faster than
  real time as a streaming TTS does.

:func:`ai_processor` is the middle of bot.py's AI pipeline as one processor
(the assistant aggregator sits before the output here, not after it), so a
benchmark's echo pipeline ``[input, EchoProcessor(), output]`` becomes the AI
shape by putting it in the echo processor's place (bench/ai_shape.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

REPLY = (
    "Sure, I can help with that. Your appointment is booked for Tuesday at ten. "
    "Is there anything else I can do for you today?"
)

COUNTS = {"transcriptions": 0, "replies": 0, "tts_seconds": 0.0}


class StandInSTTService(STTService):
    """A streaming STT stand-in: a final transcript ``latency_s`` into each utterance."""

    def __init__(self, *, text: str = "I would like to book an appointment.", latency_s=0.4, **kw):
        """Make the stand-in (``kw`` as for ``STTService``)."""
        super().__init__(settings=STTSettings(model=None, language=None), **kw)
        self._text = text
        self._latency_s = latency_s
        self._bytes = 0

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Take the audio as a streaming service's socket would (counted, not sent)."""
        self._bytes += len(audio)
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass frames on; when the user starts speaking, transcribe after the latency."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self.create_task(self._final())

    async def _final(self) -> None:
        await asyncio.sleep(self._latency_s)
        COUNTS["transcriptions"] += 1
        await self.push_frame(
            TranscriptionFrame(self._text, "caller", time_now_iso8601(), finalized=True)
        )


class StandInLLM(FrameProcessor):
    """An LLM stand-in: streams a canned reply to each context, token by token."""

    def __init__(self, *, reply: str = REPLY, first_token_s=0.3, token_s=0.015, **kw) -> None:
        """Make the stand-in."""
        super().__init__(**kw)
        self._tokens = [w + " " for w in reply.split()]
        self._first_token_s = first_token_s
        self._token_s = token_s

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Answer ``LLMContextFrame``s; pass everything else on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            COUNTS["replies"] += 1
            await asyncio.sleep(self._first_token_s)
            await self.push_frame(LLMFullResponseStartFrame())
            for token in self._tokens:
                await self.push_frame(LLMTextFrame(token))
                await asyncio.sleep(self._token_s)
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class StandInTTSService(TTSService):
    """A TTS stand-in: speech-length audio (a quiet 220 Hz tone) per sentence, in chunks."""

    def __init__(self, *, chars_per_second=14.0, first_byte_s=0.15, **kw) -> None:
        """Make the stand-in (``kw`` as for ``TTSService``)."""
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kw,
        )
        self._cps = chars_per_second
        self._first_byte_s = first_byte_s

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Yield the sentence's audio in 40 ms chunks after the first-byte delay."""
        await asyncio.sleep(self._first_byte_s)
        rate = self.sample_rate
        seconds = max(0.2, len(text) / self._cps)
        COUNTS["tts_seconds"] += seconds
        t = np.arange(int(seconds * rate)) / rate
        pcm = (2000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
        step = int(0.04 * rate) * 2
        for start in range(0, len(pcm), step):
            yield TTSAudioRawFrame(pcm[start : start + step], rate, 1, context_id=context_id)
            await asyncio.sleep(0)


def ai_processor() -> Pipeline:
    """STT, user aggregator with Silero VAD, LLM, TTS and assistant aggregator, as one processor."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )

    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    return Pipeline(
        [
            StandInSTTService(),
            aggregators.user(),
            StandInLLM(),
            StandInTTSService(),
            aggregators.assistant(),
        ]
    )
