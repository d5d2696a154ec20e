"""Pipecat transport for one SIP call.

:class:`SIPTransport` wraps an answered :class:`~pipecat_sip.call.SIPCall` and
its :class:`~pipecat_sip.media.RTPSession` as a Pipecat transport:

- input: one ``InputAudioRawFrame`` per received RTP packet (20 ms) at the
  pipeline's input rate, and one ``InputDTMFFrame`` per key press;
- output: ``OutputAudioRawFrame`` of any length, handed to the RTP session,
  which paces it out one packet per ptime; ``OutputDTMFFrame`` and
  ``OutputDTMFUrgentFrame`` as RFC 4733 events (or in-band tones);
- lifecycle: the bot's ``EndFrame`` or ``CancelFrame`` hangs up (BYE); the
  caller's BYE or an RTP timeout fires ``on_client_disconnected``.

Audio is resampled only when the pipeline rate differs from the codec rate
(8000 Hz for G.711), with :class:`LowLatencyResampler`, which adds a fixed
4 ms of delay instead of the ~100 ms bursts of a streaming high-quality
resampler fed 20 ms packets.
"""

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import soxr
from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelFrame,
    CancelWorkerFrame,
    ClientConnectedFrame,
    DataFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.utils.utils import obj_id
from pydantic import Field

from pipecat_sip.codecs.tones import dtmf_tone
from pipecat_sip.rtp.dtmf import event_for_key

if TYPE_CHECKING:
    from pipecat_sip.call import CallInfo, SIPCall
    from pipecat_sip.media import RTPSession

# Silence after an in-band DTMF tone (dtmf_mode="inband"), ms, so repeated keys stay apart.
_INBAND_GAP_MS = 60


@dataclass
class SIPTransferFrame(DataFrame):
    """Transfer the call (REFER, RFC 3515) once the audio queued before it has played.

    Push it after the words that announce the transfer ("Let me put you
    through"): the output transport plays them, then sends REFER. On
    success the call ends (reason ``"transferred"``); on failure it goes on,
    and ``on_transfer_failed`` tells the bot.

    Parameters:
        target: The SIP URI to transfer to (``sip:agent@pbx.example``).
        timeout: Seconds to wait for the outcome.
    """

    target: str
    timeout: float = 30.0


__all__ = [
    "LowLatencyResampler",
    "SIPInputTransport",
    "SIPOutputTransport",
    "SIPParams",
    "SIPTransferFrame",
    "SIPTransport",
]

# Look-ahead (and history) of the window per soxr quality. LQ: the windowed
# output matches a whole-signal resample to rounding. MQ: the filter taps cut
# off beyond 4 ms leave an error ~54 dB under the signal, 17 dB under the
# quantization noise G.711 adds on the same call (~37 dB under the signal);
# 8 ms would match to rounding but add 4 ms more delay (measured, see tests).
_MARGIN_MS = {"LQ": 2.5, "MQ": 4.0}

# Received packets waiting for the receive task: 250 packets = 5 s of audio.
_RX_QUEUE_PACKETS = 250

# How long the end of the pipeline waits for the last queued audio to be sent.
_DRAIN_TIMEOUT_S = 1.0


# Why a call ended, in words for the log (the reasons of SIPCall.end_reason).
_END_REASONS = {
    "remote_bye": "the far end hung up",
    "cancelled": "the caller cancelled before the answer",
    "rtp_timeout": "no RTP or RTCP from the far end",
    "ack_timeout": "the far end never acknowledged our answer",
    "hold_timeout": "held longer than the hold timeout",
    "max_duration": "longer than the maximum call duration",
    "shutdown": "the server is shutting down",
    "local_bye": "hung up from this side (call.hangup())",
    "transferred": "transferred",
    "timeout": "not answered in time",
    "rejected": "rejected",
    "error": "an error",
}


def describe_end(reason: str) -> str:
    """Why a call ended, in words (for ``reason`` as in ``SIPCall.end_reason``)."""
    return _END_REASONS.get(reason, "ended")


class LowLatencyResampler:
    """Streaming PCM16 mono resampler whose added delay is a fixed few ms.

    ``soxr.ResampleStream`` processes in internal blocks: fed 20 ms packets it
    holds back 60-140 ms and then emits a burst (VHQ, HQ, MQ, LQ), and its
    only low-latency setting (QQ) has no anti-aliasing filter. This class
    instead runs soxr's one-shot resampler over a sliding window: each call
    resamples ``history + new input + look-ahead`` and keeps the part of the
    output that the window's look-ahead covers, so every call returns exactly
    ``len(input) * out_rate / in_rate`` samples once the rates' step
    (``in_rate / gcd``) divides the input.

    The stream is primed with look-ahead zeros, so the added delay is the
    look-ahead: 4.0 ms with ``quality="MQ"`` and 2.5 ms with ``"LQ"``, for
    8 kHz <-> 16 kHz and 24 kHz -> 8 kHz alike. MQ's filter is cut to the
    window: flat to 3.4 kHz at 8 kHz, aliases (4.5-6 kHz) 50 dB or more down
    (ITU-T G.712 asks 25 dB above 4.6 kHz), and the output differs from a
    whole-signal MQ resample by an error at least 15 dB under the
    quantization noise of the G.711 encoding the audio goes through anyway.
    LQ matches its whole-signal resample but is -8 dB at 3.4 kHz. (Measured
    in ``tests/test_transport.py``.) Cost: one soxr one-shot call per chunk,
    about 0.15 ms of CPU per 20 ms packet with MQ (0.1 ms with LQ), i.e.
    under 1% of a core per resampled direction of a call; a pipeline at the
    codec rate needs no resampling at all.

    Args:
        in_rate: Input sample rate, Hz.
        out_rate: Output sample rate, Hz.
        quality: soxr quality recipe, ``"MQ"`` (default) or ``"LQ"``.

    Raises:
        ValueError: A rate is not positive, or the quality is unknown.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "MQ"):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate} Hz")
        if quality not in _MARGIN_MS:
            raise ValueError(f"quality must be one of {sorted(_MARGIN_MS)}, got {quality!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        gcd = math.gcd(in_rate, out_rate)
        # Windows start on multiples of the step, so every soxr stage sees the
        # same phase as in a whole-signal resample.
        self._step_in = in_rate // gcd
        self._step_out = out_rate // gcd
        self._margin_steps = math.ceil(in_rate * _MARGIN_MS[quality] / 1000 / self._step_in)
        self._margin = self._margin_steps * self._step_in  # input samples
        self.reset()

    @property
    def delay_ms(self) -> float:
        """Delay the resampler adds, ms (its look-ahead)."""
        return 1000.0 * self._margin / self.in_rate

    def reset(self) -> None:
        """Drop held audio and start a new stream (e.g. after an interruption)."""
        # `margin` samples of history, then `margin` samples of primed look-ahead.
        self._buf = np.zeros(2 * self._margin, dtype=np.int16)
        self._carry = b""

    def resample(self, pcm: bytes) -> bytes:
        """Resample the next piece of the stream.

        Args:
            pcm: PCM16 little-endian mono at ``in_rate``; any length (an odd
                trailing byte is kept for the next call).

        Returns:
            PCM16 little-endian mono at ``out_rate``, delayed by ``delay_ms``.
        """
        data = self._carry + pcm
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        if cut:
            self._buf = np.concatenate((self._buf, np.frombuffer(data[:cut], dtype="<i2")))
        margin = self._margin
        steps = (len(self._buf) - 2 * margin) // self._step_in
        if steps <= 0:
            return b""
        end = margin + steps * self._step_in
        out = soxr.resample(self._buf[: end + margin], self.in_rate, self.out_rate, self.quality)
        first = self._margin_steps * self._step_out
        chunk = out[first : first + steps * self._step_out]
        self._buf = self._buf[end - margin :]
        return chunk.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """Return the audio held in the look-ahead and reset the stream.

        Returns:
            PCM16 at ``out_rate``: the tail of the stream.
        """
        tail = self.resample(bytes(2 * self._margin))
        self.reset()
        return tail


class SIPParams(TransportParams):
    """Configuration for :class:`SIPTransport`.

    Sample rates follow Pipecat's rule: ``audio_in_sample_rate`` /
    ``audio_out_sample_rate`` here, else the pipeline's
    (``PipelineParams``, 16000 / 24000 Hz by default), else the call's codec
    rate. Audio is resampled only where that rate differs from the codec
    rate; run the pipeline at 8000 Hz (``PipelineParams(audio_in_sample_rate=
    8000, audio_out_sample_rate=8000)``) to resample nothing. STT services
    assume input at the pipeline rate, so set rates on the pipeline rather
    than here.

    Parameters:
        audio_in_enabled: Receive the caller's audio. Default True.
        audio_out_enabled: Send the bot's audio. Default True.
        audio_out_10ms_chunks: Pipecat cuts output audio into chunks of this
            many 10 ms; 2 (one 20 ms RTP packet) keeps barge-in tight.
        audio_out_end_silence_secs: Seconds of silence sent after the last
            audio on ``EndFrame`` before BYE, so the far end's jitter buffer
            plays the last words. Default 1.
        send_silence_when_idle: Send silence packets when the bot has nothing
            to say (keeps NAT bindings and peers' RTP timers alive); False
            sends nothing. The RTP session is created when the call is
            answered, so this applies only to a session with a writable
            ``send_silence``; otherwise configure it where calls are answered.
        rtp_timeout_s: End the call when no RTP arrives for this many seconds;
            0 disables. As above, applies to a session with a writable
            ``rtp_timeout_s``; otherwise configure the server (the runner's
            ``SIP_RTP_TIMEOUT``). The call then ends with reason
            ``"rtp_timeout"`` and ``on_client_disconnected`` fires.
        max_backlog_ms: Audio, ms, the transport lets queue in the RTP session
            before ``write_audio_frame`` returns; the rest waits in Pipecat's
            queues, where an interruption drops it. Default 20 (one packet).
        dtmf_duration_ms: Duration of each sent DTMF key press, ms.
        dtmf_mode: How ``OutputDTMFFrame`` keys are sent: ``"rfc4733"``
            (telephone-events; in-band when the peer offered none),
            ``"info"`` (SIP INFO ``application/dtmf-relay``), ``"inband"``
            (Q.23 tones in the audio) or ``"auto"`` (default: RFC 4733 when
            negotiated, else in-band).
        hangup_timeout_s: How long pipeline shutdown waits for the BYE
            transaction before moving on (the BYE still completes).
        cancel_on_disconnect: When the far end ends the call (BYE, RTP
            timeout), cancel the pipeline after ``on_client_disconnected`` so
            it ends even without a handler doing so.
        audio_out_write_timeout_secs: Pipecat's limit on one
            ``write_audio_frame``, s; None (default) sets none. Pipecat uses it
            to spot a WebSocket peer that stopped reading; an RTP write waits
            only for this process's packet clock (a vanished caller is the RTP
            timeout's job), and on Python < 3.12 the timeout costs a task and
            a timer per 20 ms chunk.
        resampler_quality: soxr quality for rate conversion, ``"MQ"`` (4 ms
            delay) or ``"LQ"`` (2.5 ms, audible roll-off above 3 kHz).
        jitter_buffer: Play the caller's audio out through an adaptive jitter
            buffer (:mod:`pipecat_sip.rtp.jitterbuffer`): one frame per packet
            time, in sequence order, duplicates dropped, losses concealed
            (G.711 Appendix I style, or the codec's own PLC). False keeps the
            direct path: each received packet becomes one frame at once, in
            arrival order. Default True.
        jitter_buffer_min_ms: Least play-out delay the buffer keeps, ms.
        jitter_buffer_max_ms: Most play-out delay it adapts up to, ms.
    """

    audio_in_enabled: bool = True
    audio_out_enabled: bool = True
    audio_out_10ms_chunks: int = 2
    audio_out_end_silence_secs: int = 1
    send_silence_when_idle: bool = True
    rtp_timeout_s: float = Field(default=30.0, ge=0)
    max_backlog_ms: int = Field(default=20, ge=0)
    dtmf_duration_ms: int = Field(default=100, ge=10, le=5000)
    dtmf_mode: Literal["rfc4733", "info", "inband", "auto"] = "auto"
    hangup_timeout_s: float = Field(default=2.0, ge=0)
    cancel_on_disconnect: bool = True
    audio_out_write_timeout_secs: float | None = Field(default=None, gt=0)
    resampler_quality: Literal["MQ", "LQ"] = "MQ"
    jitter_buffer: bool = True
    jitter_buffer_min_ms: float = Field(default=0.0, ge=0, le=1000)
    jitter_buffer_max_ms: float = Field(default=200.0, ge=0, le=2000)


class SIPInputTransport(BaseInputTransport):
    """Input side of :class:`SIPTransport`: caller audio and DTMF into the pipeline.

    The RTP session's datagram callback (synchronous) only queues the decoded
    packet; a receive task resamples it if needed and hands it to
    ``push_audio_frame``, so the socket callback never waits on the pipeline.
    """

    def __init__(
        self, transport: "SIPTransport", call: "SIPCall", params: SIPParams, **kwargs: Any
    ):
        """Create the input transport.

        Args:
            transport: The owning transport (events, call state).
            call: The answered call.
            params: Transport parameters.
            **kwargs: Passed to ``BaseInputTransport`` (e.g. ``name``).
        """
        super().__init__(params, **kwargs)
        self._transport = transport
        self._call = call
        self._params = params
        self._rx_queue: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=_RX_QUEUE_PACKETS)
        self._rx_task: asyncio.Task | None = None
        self._resampler: LowLatencyResampler | None = None
        self._media: RTPSession | None = None
        self._dropped = 0
        self._connect_task: asyncio.Task | None = None
        self._dtmf_attached = False
        self.started = False

    async def setup(self, setup: FrameProcessorSetup):
        """Resolve the input rate and set up resampling.

        Args:
            setup: Pipeline setup (carries the pipeline's sample rates).
        """
        await super().setup(setup)
        codec_rate = self._transport.codec_sample_rate
        if not self._sample_rate:
            self._sample_rate = codec_rate
        if self._sample_rate != codec_rate:
            self._resampler = LowLatencyResampler(
                codec_rate, self._sample_rate, self._params.resampler_quality
            )

    async def start(self, frame: StartFrame):
        """Start receiving: fire ``on_client_connected`` and attach to the media.

        Args:
            frame: The pipeline's StartFrame.
        """
        await super().start(frame)
        self.started = True
        if self._transport.far_end_gone:
            # The caller hung up before the pipeline started.
            self._transport.schedule_far_end_hangup(self)
        elif self._call.established:
            await self._client_connected()
        elif not self._connect_task:
            # Answered, ACK not in yet: connect when it arrives.
            self._connect_task = self.create_task(self._connect_when_established())
        await self.set_transport_ready(frame)

    async def set_transport_ready(self, frame: StartFrame):
        """Create Pipecat's audio queue, then take packets from the media.

        Args:
            frame: The pipeline's StartFrame.
        """
        await super().set_transport_ready(frame)
        if not self._rx_task:
            self._rx_task = self.create_task(self._receive_task_handler())
        if not self._transport.far_end_gone:
            self._attach()

    async def stop(self, frame: EndFrame):
        """Stop receiving (the output side hangs up once its audio is played).

        Args:
            frame: The EndFrame.
        """
        await super().stop(frame)
        await self._teardown()

    async def cancel(self, frame: CancelFrame):
        """Stop receiving at once.

        Args:
            frame: The CancelFrame.
        """
        await super().cancel(frame)
        await self._teardown()

    async def cleanup(self):
        """Release resources; hang up if the pipeline ended some other way."""
        await super().cleanup()
        await self._teardown()
        await self._transport.end_call("pipeline cleanup")
        await self._transport.cleanup()

    def detach(self) -> None:
        """Stop taking callbacks from the RTP session and the call (idempotent)."""
        if self._dtmf_attached:
            self._dtmf_attached = False
            self._call.remove_dtmf_handler(self._on_media_dtmf)
        media, self._media = self._media, None
        if media is None:
            return
        if media.on_audio == self._on_media_audio:
            media.on_audio = None
        if media.on_dtmf == self._on_media_dtmf:
            media.on_dtmf = None

    def _attach(self) -> None:
        # Key presses come from the call: RFC 4733 and SIP INFO, merged (one per press).
        if hasattr(self._call, "add_dtmf_handler") and not self._dtmf_attached:
            self._dtmf_attached = True
            self._call.add_dtmf_handler(self._on_media_dtmf)
        media = self._transport.media
        if media is None:
            if getattr(self._call, "info", None) is not None and not self._call.ended:
                if self._call.info.direction == "outbound":
                    return  # early media or the answer attaches it (attach_media)
            logger.error(f"{self} the call has no RTP session; was it answered?")
            return
        self.attach_media()

    def attach_media(self) -> None:
        """Take audio from the call's RTP session once it exists (early media, answer)."""
        media = self._transport.media
        if media is None or self._media is media or self._transport.far_end_gone:
            return
        if not self._rx_task:
            return  # not started: set_transport_ready attaches
        self._media = media
        media.on_audio = self._on_media_audio
        if not self._dtmf_attached:
            media.on_dtmf = self._on_media_dtmf

    async def _teardown(self) -> None:
        self.detach()
        for task in (self._connect_task, self._rx_task):
            if task:
                await self.cancel_task(task)
        self._connect_task = self._rx_task = None

    async def _client_connected(self) -> None:
        logger.info(
            f"{self} call established ({self._transport.call_info.codec}, "
            f"codec {self._transport.codec_sample_rate} Hz, pipeline {self.sample_rate} Hz)"
        )
        await self._transport.client_connected()
        await self.push_frame(ClientConnectedFrame())

    async def _connect_when_established(self) -> None:
        try:
            await self._call.wait_answered()
        except Exception as error:  # CallFailed: the ended handler reports it
            logger.debug(f"{self} call ended before it was established: {error!r}")
            return
        if not self._transport.call_ended:
            self.attach_media()  # an outbound call's media starts with its answer
            await self._client_connected()

    def _on_media_audio(self, pcm: bytes) -> None:
        """RTP session callback (sync, from the datagram handler): queue one packet."""
        self._enqueue(pcm)

    def _on_media_dtmf(self, key: str) -> None:
        """RTP session callback (sync): queue one key press, in order with other keys.

        Audio then passes through Pipecat's audio task, keys do not: a key can
        reach the pipeline a packet ahead of audio received just before it.
        """
        self._enqueue(str(key))

    def _enqueue(self, item: bytes | str) -> None:
        try:
            self._rx_queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 500 == 0:
                logger.warning(
                    f"{self} pipeline is not keeping up: dropped {self._dropped} packets"
                )

    async def _receive_task_handler(self) -> None:
        while True:
            item = await self._rx_queue.get()
            if isinstance(item, bytes):
                await self._push_audio(item)
            else:
                await self._push_dtmf(item)

    async def _push_audio(self, pcm: bytes) -> None:
        if self._resampler:
            pcm = self._resampler.resample(pcm)
        if pcm:
            await self.push_audio_frame(
                InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1)
            )

    async def _push_dtmf(self, key: str) -> None:
        logger.debug(f"{self} DTMF {key!r} received")
        await self._transport.dtmf_received(key)
        try:
            button = KeypadEntry(key)
        except ValueError:
            logger.debug(f"{self} DTMF {key!r} has no keypad entry; not pushed as a frame")
            return
        await self.push_frame(InputDTMFFrame(button=button))


class SIPOutputTransport(BaseOutputTransport):
    """Output side of :class:`SIPTransport`: bot audio and DTMF to the caller.

    ``write_audio_frame`` resamples to the codec rate if needed, queues the
    audio in the RTP session and waits until at most ``max_backlog_ms`` of it
    is left, so Pipecat's queues (which an interruption drops) hold the rest.
    On ``InterruptionFrame`` it also drops the RTP session's queue, so the
    caller stops hearing the bot within a packet or two.
    """

    def __init__(
        self, transport: "SIPTransport", call: "SIPCall", params: SIPParams, **kwargs: Any
    ):
        """Create the output transport.

        Args:
            transport: The owning transport (events, call state).
            call: The answered call.
            params: Transport parameters.
            **kwargs: Passed to ``BaseOutputTransport`` (e.g. ``name``).
        """
        super().__init__(params, **kwargs)
        self._transport = transport
        self._call = call
        self._params = params
        self._resamplers: dict[int, LowLatencyResampler] = {}
        self._carry = b""
        self._max_backlog_bytes = 0
        # Interruptible frames with an id below this were created before the
        # last interruption: one may still be in the audio task's hands.
        self._interrupted_below = 0
        self._writing_uninterruptible = False
        self.started = False

    async def setup(self, setup: FrameProcessorSetup):
        """Resolve the output rate and the backlog bound.

        Args:
            setup: Pipeline setup (carries the pipeline's sample rates).
        """
        await super().setup(setup)
        codec_rate = self._transport.codec_sample_rate
        if not self._sample_rate:
            self._sample_rate = codec_rate
            self._audio_chunk_size = (
                codec_rate // 100 * self._params.audio_out_channels * 2
            ) * self._params.audio_out_10ms_chunks
        self._max_backlog_bytes = codec_rate * self._params.max_backlog_ms // 1000 * 2

    async def start(self, frame: StartFrame):
        """Start the output transport.

        Args:
            frame: The pipeline's StartFrame.
        """
        await super().start(frame)
        self.started = True
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame):
        """Play out everything queued (Pipecat's queue, then ours), then hang up.

        Args:
            frame: The EndFrame.
        """
        await super().stop(frame)
        await self._drain()
        await self._transport.end_call("pipeline ended")

    async def cancel(self, frame: CancelFrame):
        """Hang up at once.

        Args:
            frame: The CancelFrame.
        """
        await super().cancel(frame)
        await self._transport.end_call("pipeline cancelled")

    async def cleanup(self):
        """Release resources; hang up if the pipeline ended some other way."""
        await super().cleanup()
        await self._transport.end_call("pipeline cleanup")
        await self._transport.cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Let Pipecat handle the frame; on interruption also drop the media queue.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._interrupt()

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Queue one chunk of bot audio for sending.

        Args:
            frame: PCM16 audio at any rate; resampled to the codec rate if needed.

        Returns:
            False when the call has no media any more, or the chunk was queued
            before an interruption; True when it was handed to the RTP session.
        """
        media = self._transport.media
        if media is None or self._transport.call_ended:
            return False
        if frame.interruptible and frame.id < self._interrupted_below:
            return False
        self._writing_uninterruptible = not frame.interruptible
        pcm = self._to_codec_rate(frame)
        if pcm:
            media.send_audio(pcm)
        await media.wait_for_backlog(self._max_backlog_bytes)
        return True

    def _supports_native_dtmf(self) -> bool:
        return True

    async def _write_dtmf_native(self, frame: OutputDTMFFrame | OutputDTMFUrgentFrame):
        """Send each key of the frame, in order, as ``dtmf_mode`` says.

        Args:
            frame: The DTMF frame (``button`` or ``buttons``).
        """
        media = self._transport.media
        if media is None or self._transport.call_ended:
            return
        mode = self._params.dtmf_mode
        duration = self._params.dtmf_duration_ms
        buttons = frame.buttons or ([frame.button] if frame.button else [])
        for button in buttons:
            key = button.value if isinstance(button, KeypadEntry) else str(button)
            logger.debug(f"{self} sending DTMF {key!r} ({mode})")
            try:
                if mode == "info" and hasattr(self._call, "send_info_dtmf"):
                    self._call.send_info_dtmf(key, duration)
                elif mode == "inband":
                    event_for_key(key)  # refuse unknown keys as the other modes do
                    tone = dtmf_tone(key, duration, media.sample_rate)
                    gap = bytes(2 * (media.sample_rate * _INBAND_GAP_MS // 1000))
                    media.send_audio(tone + gap)
                else:
                    if mode == "rfc4733" and media.telephone_event_pt is None:
                        logger.warning(f"{self} no telephone-event negotiated: {key!r} in-band")
                    media.send_dtmf(key, duration)
            except (ValueError, RuntimeError) as error:
                logger.warning(f"{self} DTMF {key!r} not sent: {error}")

    async def write_transport_frame(self, frame: Frame):
        """Act on a frame queued behind the audio: a :class:`SIPTransferFrame` transfers.

        Args:
            frame: The frame, after the audio queued before it was sent.
        """
        if isinstance(frame, SIPTransferFrame):
            self.create_task(self._transport.transfer_result(frame.target, timeout=frame.timeout))
            return
        await super().write_transport_frame(frame)

    def _to_codec_rate(self, frame: OutputAudioRawFrame) -> bytes:
        pcm = self._carry + frame.audio
        cut = len(pcm) - len(pcm) % 2
        pcm, self._carry = pcm[:cut], pcm[cut:]
        if frame.num_channels > 1:
            samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * frame.num_channels)], "<i2")
            mono = samples.reshape(-1, frame.num_channels).mean(axis=1)
            pcm = mono.astype("<i2").tobytes()
        codec_rate = self._transport.codec_sample_rate
        if frame.sample_rate == codec_rate:
            return pcm
        resampler = self._resamplers.get(frame.sample_rate)
        if resampler is None:
            resampler = LowLatencyResampler(
                frame.sample_rate, codec_rate, self._params.resampler_quality
            )
            self._resamplers[frame.sample_rate] = resampler
        return resampler.resample(pcm)

    def _interrupt(self) -> None:
        self._interrupted_below = obj_id()
        self._carry = b""
        for resampler in self._resamplers.values():
            resampler.reset()
        media = self._transport.media
        if media is None or self._writing_uninterruptible:
            return
        dropped = media.backlog_bytes
        media.clear_audio()
        logger.debug(f"{self} interruption: dropped {dropped} bytes queued for the caller")

    async def _drain(self) -> None:
        """Send what the resamplers hold and wait until the RTP session sent it all."""
        media = self._transport.media
        if media is None or self._transport.call_ended:
            return
        for resampler in self._resamplers.values():
            tail = resampler.flush()
            if tail:
                media.send_audio(tail)
        try:
            await asyncio.wait_for(media.wait_for_backlog(0), timeout=_DRAIN_TIMEOUT_S)
        except TimeoutError:
            logger.warning(f"{self} audio still queued after {_DRAIN_TIMEOUT_S}s; hanging up")


class SIPTransport(BaseTransport):
    """Pipecat transport for one answered SIP call.

    The pipeline talks to the caller through ``transport.input()`` and
    ``transport.output()``. The bot's ``EndFrame`` hangs up (BYE) after the
    queued audio has been played; ``CancelFrame`` hangs up at once. When the
    caller hangs up (BYE), RTP stops for ``rtp_timeout_s``, or the call ends
    any other way than through this transport (server shutdown, bot code
    calling ``call.hangup()``), the transport fires ``on_client_disconnected``,
    cancels the pipeline (unless ``cancel_on_disconnect`` is False) and sends
    no BYE of its own.

    Event handlers available:

    - on_client_connected(transport, call): the pipeline started and the
      call is established (ACK received); a good moment to greet the caller.
    - on_client_disconnected(transport, call): the call ended other than by
      this transport (BYE, RTP timeout, shutdown, ...);
      ``transport.end_reason`` says why.
    - on_dtmf(transport, key): the caller pressed a key ("0"-"9", "*", "#";
      RFC 4733 A-D and flash are logged and ignored, as Pipecat's keypad has
      no such keys); also pushed downstream as ``InputDTMFFrame``.
    - on_ringing(transport, call) / on_early_media(transport, call): an
      outbound call placed with ``server.call(..., wait=False)`` rings
      (180) or got a 18x with SDP: its media runs before the answer, so the
      pipeline hears announcements or ringback (``on_client_connected``
      still waits for the answer).
    - on_transfer_accepted / on_transfer_succeeded / on_transfer_failed
      (transport, status_code): a transfer (``transport.transfer(...)`` or a
      :class:`SIPTransferFrame`) was accepted by the far end (202), reached
      the target (the call then ends: ``on_client_disconnected`` follows), or
      failed (the call goes on).
    - on_hold(transport, call) / on_resume(transport, call): the far end put
      the call on hold (re-INVITE sendonly, inactive or c=0.0.0.0) or took it
      off. While held nothing reaches the caller: the bot's audio plays out
      to nobody at real time, so a bot may want to pause.

    The ``call`` passed to handlers is the :class:`~pipecat_sip.call.SIPCall`;
    ``transport.get_client_id(call)`` is its Call-ID.

    Example::

        async def bot(runner_args):
            call = runner_args.call
            transport = SIPTransport(call, SIPParams())
            pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                                 transport.output(), assistant_agg])
            worker = PipelineWorker(pipeline, params=PipelineParams(
                audio_in_sample_rate=8000, audio_out_sample_rate=8000))

            @transport.event_handler("on_client_connected")
            async def on_connected(transport, call):
                logger.info(f"Call from {call.info.from_uri}")
                await worker.queue_frames([LLMRunFrame()])

            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
    """

    def __init__(
        self,
        call: "SIPCall",
        params: SIPParams | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ):
        """Create the transport for an answered call.

        Args:
            call: The call, answered (its ``media`` is the RTP session).
            params: Transport parameters; ``SIPParams()`` when None.
            input_name: Name of the input processor (default includes the Call-ID).
            output_name: Name of the output processor (default includes the Call-ID).
        """
        call_id = call.call_id
        super().__init__(
            name=f"SIPTransport[{call_id}]",
            input_name=input_name or f"SIPInputTransport[{call_id}]",
            output_name=output_name or f"SIPOutputTransport[{call_id}]",
        )
        self._call = call
        self._params = params or SIPParams()
        self._hangup_task: asyncio.Task | None = None
        self._far_end_task: asyncio.Task | None = None
        self._hangup_requested = False
        self._end_reason: str | None = None

        self._apply_media_params()
        self._input = SIPInputTransport(self, call, self._params, name=self._input_name)
        self._output = SIPOutputTransport(self, call, self._params, name=self._output_name)

        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")
        self._register_event_handler("on_dtmf")
        self._register_event_handler("on_hold")
        self._register_event_handler("on_resume")
        self._register_event_handler("on_ringing")
        self._register_event_handler("on_early_media")
        self._register_event_handler("on_transfer_accepted")
        self._register_event_handler("on_transfer_succeeded")
        self._register_event_handler("on_transfer_failed")

        call.add_ended_handler(self._on_call_ended)
        add_hold_handler = getattr(call, "add_hold_handler", None)
        if add_hold_handler is not None:
            add_hold_handler(self._on_call_hold)
        add_progress_handler = getattr(call, "add_progress_handler", None)
        if add_progress_handler is not None:
            add_progress_handler(self._on_call_progress)
        add_transfer_handler = getattr(call, "add_transfer_handler", None)
        if add_transfer_handler is not None:
            add_transfer_handler(self._on_call_transfer)
        if call.ended and self._end_reason is None:
            self._end_reason = getattr(call, "end_reason", None) or "ended"

    def input(self) -> SIPInputTransport:
        """The input processor: caller audio and DTMF.

        Returns:
            The input transport.
        """
        return self._input

    def output(self) -> SIPOutputTransport:
        """The output processor: bot audio and DTMF.

        Returns:
            The output transport.
        """
        return self._output

    @property
    def call(self) -> "SIPCall":
        """The SIP call this transport carries."""
        return self._call

    @property
    def call_info(self) -> "CallInfo":
        """The call's INVITE details (From, To, headers, codec)."""
        return self._call.info

    @property
    def media(self) -> "RTPSession | None":
        """The call's RTP session, or None before answer."""
        return getattr(self._call, "media", None)

    @property
    def codec_sample_rate(self) -> int:
        """Sample rate of the call's codec, Hz (8000 for G.711)."""
        media = self.media
        if media is not None:
            return media.sample_rate
        return self._call.info.sample_rate

    @property
    def end_reason(self) -> str | None:
        """Why the far end ended the call ("remote_bye", "rtp_timeout", ...), else None."""
        return self._end_reason

    @property
    def far_end_gone(self) -> bool:
        """Whether the call ended from the far side (or before the pipeline started)."""
        return self._end_reason is not None

    @property
    def call_ended(self) -> bool:
        """Whether the call is over, whoever ended it."""
        return self.far_end_gone or self._hangup_requested or self._call.ended

    def get_client_id(self, client: Any) -> str:
        """The Call-ID of the call passed to event handlers.

        Args:
            client: The call, as passed to ``on_client_connected``.

        Returns:
            Its Call-ID.
        """
        return client.call_id

    async def client_connected(self) -> None:
        """Fire ``on_client_connected`` (called by the input transport on start)."""
        await self._call_event_handler("on_client_connected", self._call)

    async def dtmf_received(self, key: str) -> None:
        """Fire ``on_dtmf`` (called by the input transport per key press).

        Args:
            key: The key, e.g. "5".
        """
        await self._call_event_handler("on_dtmf", key)

    async def end_call(self, why: str) -> None:
        """Hang up (BYE) unless the call already ended; idempotent.

        Waits up to ``hangup_timeout_s`` for the BYE transaction, which keeps
        running in the background if it takes longer.

        Args:
            why: For the log line.
        """
        self._input.detach()
        if self._hangup_task is None and not self.far_end_gone and not self._call.ended:
            self._hangup_requested = True
            logger.info(f"{self} hanging up ({why})")
            self._hangup_task = asyncio.create_task(self._call.hangup())
            self._hangup_task.add_done_callback(self._on_hangup_done)
        task = self._hangup_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._params.hangup_timeout_s)

    def schedule_far_end_hangup(self, processor: FrameProcessor) -> None:
        """Handle the far end's hang-up from a running processor's task.

        Args:
            processor: A started processor of this transport, to run the task.
        """
        if self._far_end_task is None:
            self._far_end_task = processor.create_task(self._handle_far_end_hangup(processor))

    def _on_call_ended(self, reason: str) -> None:
        """SIPCall ended handler (sync): the far side or the network ended the call."""
        # Anything but our own hang-up ends the pipeline: the caller's BYE, an
        # RTP timeout, the server shutting down, bot code calling call.hangup().
        if self._hangup_requested or self._end_reason is not None:
            return
        self._end_reason = reason
        logger.info(f"{self} call ended: {describe_end(reason)} ({reason})")
        self._input.detach()
        media = self.media
        if media is not None:
            media.clear_audio()  # releases a write waiting on the backlog
        for processor in (self._input, self._output):
            if processor.started:
                self.schedule_far_end_hangup(processor)
                break

    async def transfer(
        self, target: str, *, replaces: "SIPCall | None" = None, timeout: float = 30.0
    ) -> None:
        """Transfer the caller to ``target`` (REFER, RFC 3515); see :meth:`SIPCall.transfer`.

        Returns once the transfer succeeded: the call then ends (reason
        ``"transferred"``) and ``on_client_disconnected`` fires, which ends
        the pipeline.

        Args:
            target: The SIP URI to transfer to.
            replaces: Our established call to the target (attended transfer).
            timeout: Seconds to wait for the outcome.

        Raises:
            TransferFailed: Refused, not answered by the target, or no outcome
                in time; the call goes on.
        """
        await self._call.transfer(target, replaces=replaces, timeout=timeout)

    async def transfer_result(self, target: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """:meth:`transfer`, returning a result for an LLM function call instead of raising.

        Args:
            target: The SIP URI to transfer to.
            timeout: Seconds to wait for the outcome.

        Returns:
            ``{"transferred": True}``, or ``{"transferred": False, "status_code":
            ..., "reason": ...}`` (the call goes on: tell the caller).
        """
        from pipecat_sip.call import TransferFailed

        try:
            await self.transfer(target, timeout=timeout)
        except TransferFailed as exc:
            logger.info(f"{self} transfer to {target} failed: {exc}")
            return {"transferred": False, "status_code": exc.status_code, "reason": exc.reason}
        return {"transferred": True}

    async def _on_call_transfer(self, state: str, status_code: int | None) -> None:
        """SIPCall transfer handler: ``on_transfer_accepted/succeeded/failed``."""
        if state in ("accepted", "succeeded", "failed"):
            await self._call_event_handler(f"on_transfer_{state}", status_code)

    async def _on_call_progress(self, kind: str, status_code: int) -> None:
        """SIPCall progress handler (outbound): ``on_ringing``, ``on_early_media``."""
        if kind == "early_media":
            self._input.attach_media()  # the pipeline hears announcements or ringback
            await self._call_event_handler("on_early_media", self._call)
        elif kind == "ringing":
            await self._call_event_handler("on_ringing", self._call)

    async def _on_call_hold(self, held: bool) -> None:
        """SIPCall hold handler: fire ``on_hold`` / ``on_resume``."""
        logger.info(f"{self} call {'held' if held else 'resumed'} by the far end")
        await self._call_event_handler("on_hold" if held else "on_resume", self._call)

    async def _handle_far_end_hangup(self, processor: FrameProcessor) -> None:
        await self._call_event_handler("on_client_disconnected", self._call)
        if self._params.cancel_on_disconnect:
            await processor.push_frame(
                CancelWorkerFrame(reason=f"SIP call ended: {self._end_reason}"),
                FrameDirection.UPSTREAM,
            )

    def _on_hangup_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error(f"{self} hang-up failed: {error!r}")

    def _apply_media_params(self) -> None:
        """Hand the media settings to the RTP session when it takes them after creation."""
        media = self.media
        if media is None:
            return
        enable = getattr(media, "enable_jitter_buffer", None)
        params = self._params
        if params.jitter_buffer and enable is not None and media.jitter_buffer is None:
            enable(
                params.jitter_buffer_min_ms,
                max(params.jitter_buffer_max_ms, params.jitter_buffer_min_ms),
            )
        settings = (
            ("send_silence_when_idle", "send_silence"),
            ("rtp_timeout_s", "rtp_timeout_s"),
        )
        for field, attribute in settings:
            if field not in self._params.model_fields_set:
                continue  # keep what the server configured for the call
            value = getattr(self._params, field)
            if hasattr(media, attribute):
                setattr(media, attribute, value)
            else:
                logger.warning(
                    f"{self} {field}={value!r} not applied: this RTP session takes it only "
                    "when created (set it where the call is answered)"
                )
