"""Pipecat transport for one SIP call.

:class:`SIPTransport` wraps an answered :class:`~pipecat_sip.call.SIPCall` and
its :class:`~pipecat_sip.media.RTPSession` as a Pipecat transport:

- input: one ``InputAudioRawFrame`` per received RTP packet (20 ms) at the
  pipeline's input rate, and one ``InputDTMFFrame`` per key press;
- output: ``OutputAudioRawFrame`` of any length, handed to the RTP session,
  which paces it out one packet per ptime; ``OutputDTMFFrame`` and
  ``OutputDTMFUrgentFrame`` as RFC 4733 events (or in-band tones);
- lifecycle: the bot's ``EndFrame`` or ``CancelFrame`` hangs up (BYE); the
  caller's BYE or an RTP timeout fires ``on_client_disconnected``;
- call quality: ``on_call_quality_stats`` every ``quality_stats_interval_s``
  and at call end, and a ``MetricsFrame`` of :class:`CallQualityMetricsData`
  when the pipeline has metrics enabled.

Audio is resampled only when the pipeline rate differs from the codec rate
(8000 Hz for G.711), with :class:`LowLatencyResampler`, which adds a fixed
4 ms of delay instead of the ~100 ms bursts of a streaming high-quality
resampler fed 20 ms packets.
"""

import asyncio
import inspect
import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
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
    MetricsFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    StartFrame,
)
from pipecat.metrics.metrics import MetricsData
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.utils.utils import obj_id
from pydantic import Field

from pipecat_sip.codecs.tones import dtmf_tone
from pipecat_sip.rtp.dtmf import event_for_key
from pipecat_sip.security import escape

if TYPE_CHECKING:
    from pipecat_sip.call import CallInfo, SIPCall
    from pipecat_sip.media import RTPSession
    from pipecat_sip.rtp.quality import CallQualityStats

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
    "DAILY_TELEPHONY_EVENTS",
    "DialoutRequest",
    "CallQualityMetricsData",
    "LowLatencyResampler",
    "SIPInputTransport",
    "SIPOutputTransport",
    "SIPParams",
    "SIPTransferFrame",
    "SIPTransport",
    "parse_dialout_settings",
    "place_dialout",
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
    "stop_dialout": "the dial-out was stopped (stop_dialout)",
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
            Opus in-band FEC can rebuild a lost packet only when the next one
            is already buffered: on a clean path that takes one packet time
            (20); with jitter the adaptive delay is usually that long anyway.
        jitter_buffer_max_ms: Most play-out delay it adapts up to, ms.
        quality_stats_interval_s: Seconds between ``on_call_quality_stats``
            events (and quality ``MetricsFrame``); 0 sends only the one at the
            end of the call. Default 5 (the RTCP report interval).
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
    quality_stats_interval_s: float = Field(default=5.0, ge=0, le=3600)


class CallQualityMetricsData(MetricsData):
    """Call quality of a SIP call, in a Pipecat ``MetricsFrame``.

    Pipecat has no metrics type for media quality (its types are TTFB,
    processing time, usage and turn figures), so this subclass of its
    ``MetricsData`` carries the call's figures; observers that do not know it
    log it generically (``MetricsLogObserver``) or skip it. See
    :class:`~pipecat_sip.rtp.quality.CallQualityStats` for the meaning of
    each field.

    Parameters:
        call_id: The SIP Call-ID.
        codec: The SDP encoding name of the codec received.
        mos: Estimated MOS of the last interval (ITU-T G.107 E-model, 1-4.5).
        call_mos: Estimated MOS of the whole call so far.
        r_factor: The E-model rating behind ``mos`` (0-100).
        jitter_ms: Interarrival jitter of the caller's stream, ms.
        rtt_ms: Round-trip time from RTCP, ms (None before the peer reported).
        fraction_lost: Fraction of the caller's packets lost in the interval (0-1).
        packets_lost: The caller's packets lost since the start.
        packets_late: Packets that arrived too late to play.
        packets_concealed: Packet times concealed.
        remote_fraction_lost: The peer's view of our stream (0-1), or None.
        final: True for the figures at the end of the call.
    """

    call_id: str
    codec: str = ""
    mos: float
    call_mos: float
    r_factor: float
    jitter_ms: float
    rtt_ms: float | None = None
    fraction_lost: float = 0.0
    packets_lost: int = 0
    packets_late: int = 0
    packets_concealed: int = 0
    remote_fraction_lost: float | None = None
    final: bool = False

    @classmethod
    def from_stats(
        cls, stats: "CallQualityStats", *, processor: str, call_id: str
    ) -> "CallQualityMetricsData":
        """Build it from a :class:`~pipecat_sip.rtp.quality.CallQualityStats`.

        Args:
            stats: The figures.
            processor: Name of the processor reporting them (the input transport).
            call_id: The SIP Call-ID.
        """
        return cls(
            processor=processor,
            call_id=call_id,
            codec=stats.codec,
            mos=stats.mos,
            call_mos=stats.call_mos,
            r_factor=stats.r_factor,
            jitter_ms=stats.jitter_ms,
            rtt_ms=stats.rtt_ms,
            fraction_lost=stats.fraction_lost,
            packets_lost=stats.packets_lost,
            packets_late=stats.packets_late,
            packets_concealed=stats.packets_concealed,
            remote_fraction_lost=stats.remote_fraction_lost,
            final=stats.final,
        )


class SIPInputTransport(BaseInputTransport):
    """Input side of :class:`SIPTransport`: caller audio and DTMF into the pipeline.

    The RTP session's datagram callback (synchronous) only queues the decoded
    packet; a receive task resamples it if needed and hands it to
    ``push_audio_frame``, so the socket callback never waits on the pipeline.
    """

    def __init__(
        self, transport: "SIPTransport", call: "SIPCall | None", params: SIPParams, **kwargs: Any
    ):
        """Create the input transport.

        Args:
            transport: The owning transport (events, call state).
            call: The answered call, or None until the transport gets one
                (dial-out, or an inbound call awaited).
            params: Transport parameters.
            **kwargs: Passed to ``BaseInputTransport`` (e.g. ``name``).
        """
        super().__init__(params, **kwargs)
        self._transport = transport
        self._params = params
        self._rx_queue: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=_RX_QUEUE_PACKETS)
        self._rx_task: asyncio.Task | None = None
        self._resampler: LowLatencyResampler | None = None
        self._media: RTPSession | None = None
        self._dropped = 0
        self._connect_task: asyncio.Task | None = None
        self._dtmf_call: SIPCall | None = None
        self.started = False

    async def setup(self, setup: FrameProcessorSetup):
        """Resolve the input rate and set up resampling.

        Args:
            setup: Pipeline setup (carries the pipeline's sample rates).
        """
        await super().setup(setup)
        if not self._sample_rate:
            self._sample_rate = self._transport.codec_sample_rate
        self._configure_resampler()

    def _configure_resampler(self) -> None:
        codec_rate = self._transport.codec_sample_rate
        self._resampler = None
        if self._sample_rate and self._sample_rate != codec_rate:
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
        await self._transport.pipeline_started(self)
        if self._transport.call is not None:
            await self._follow_call()
        await self.set_transport_ready(frame)

    async def call_attached(self) -> None:
        """The transport got its call (dial-out answered, awaited call arrived)."""
        self._configure_resampler()
        if not self.started:
            return  # start() follows the call
        await self._follow_call()
        if self._rx_task and not self._transport.far_end_gone:
            self._attach()

    async def _follow_call(self) -> None:
        call = self._transport.call
        assert call is not None
        if self._transport.far_end_gone:
            # The caller hung up before the pipeline started.
            self._transport.schedule_far_end_hangup(self)
        elif call.established:
            await self._client_connected()
        elif not self._connect_task:
            # Answered, ACK not in yet: connect when it arrives.
            self._connect_task = self.create_task(self._connect_when_established())

    async def set_transport_ready(self, frame: StartFrame):
        """Create Pipecat's audio queue, then take packets from the media.

        Args:
            frame: The pipeline's StartFrame.
        """
        await super().set_transport_ready(frame)
        if not self._rx_task:
            self._rx_task = self.create_task(self._receive_task_handler())
        if self._transport.call is not None and not self._transport.far_end_gone:
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
        call, self._dtmf_call = self._dtmf_call, None
        if call is not None:
            call.remove_dtmf_handler(self._on_media_dtmf)
        media, self._media = self._media, None
        if media is None:
            return
        if media.on_audio == self._on_media_audio:
            media.on_audio = None
        if media.on_dtmf == self._on_media_dtmf:
            media.on_dtmf = None

    def _attach(self) -> None:
        # Key presses come from the call: RFC 4733 and SIP INFO, merged (one per press).
        call = self._transport.call
        if call is not None and hasattr(call, "add_dtmf_handler") and self._dtmf_call is None:
            self._dtmf_call = call
            call.add_dtmf_handler(self._on_media_dtmf)
        media = self._transport.media
        if media is None:
            if call is not None and getattr(call, "info", None) is not None and not call.ended:
                if call.info.direction == "outbound":
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
        if self._dtmf_call is None:
            media.on_dtmf = self._on_media_dtmf

    async def _teardown(self) -> None:
        self.detach()
        for task in (self._connect_task, self._rx_task):
            if task:
                await self.cancel_task(task)
        self._connect_task = self._rx_task = None

    async def _client_connected(self) -> None:
        await self._transport.call_connected()
        logger.info(
            f"{self} call established ({self._transport.call_info.codec}, "
            f"codec {self._transport.codec_sample_rate} Hz, pipeline {self.sample_rate} Hz)"
        )
        await self._transport.client_connected()
        await self.push_frame(ClientConnectedFrame())

    async def _connect_when_established(self) -> None:
        call = self._transport.call
        assert call is not None
        try:
            await call.wait_answered()
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
        self, transport: "SIPTransport", call: "SIPCall | None", params: SIPParams, **kwargs: Any
    ):
        """Create the output transport.

        Args:
            transport: The owning transport (events, call state).
            call: The answered call, or None until the transport gets one.
            params: Transport parameters.
            **kwargs: Passed to ``BaseOutputTransport`` (e.g. ``name``).
        """
        super().__init__(params, **kwargs)
        self._transport = transport
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
        self.call_attached()

    def call_attached(self) -> None:
        """The transport got its call: size the backlog bound for its codec rate."""
        codec_rate = self._transport.codec_sample_rate
        self._max_backlog_bytes = codec_rate * self._params.max_backlog_ms // 1000 * 2
        self._resamplers.clear()

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
                call = self._transport.call
                if mode == "info" and hasattr(call, "send_info_dtmf"):
                    call.send_info_dtmf(key, duration)
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


# --- Daily's dial-out settings ------------------------------------------------------------

_PHONE_RE = re.compile(r"^\+?[0-9]{1,20}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]{1,64}$")
# Headers a dial-out may not set: they make the dialog or the message itself.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route",
        "Record-Route", "Content-Length", "Content-Type", "Authorization",
        "Proxy-Authorization", "Require", "Proxy-Require", "Supported", "Allow",
    )
)  # fmt: skip
_MAX_DIALOUT_HEADERS = 16


@dataclass(frozen=True)
class DialoutRequest:
    """One dial-out, read from Daily's ``start_dialout`` settings (or a session body).

    Attributes:
        target: A SIP URI (``sip:alice@pbx.example.com``) or a phone number
            (``+14155550100``), as given.
        is_phone_number: Whether ``target`` is a phone number (placed through
            the configured trunk) rather than a SIP URI.
        caller_id: The number or user to call from (Daily's ``callerId``), or None.
        display_name: Our display name in From (Daily's ``displayName``), or None.
        headers: Extra INVITE headers (a SIP-only addition: ``headers``).
        timeout_s: Seconds to ring before giving up (SIP-only: ``timeout``).
    """

    target: str
    is_phone_number: bool = False
    caller_id: str | None = None
    display_name: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 60.0


def _pick(settings: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = settings.get(name)
        if value is not None and value != "":
            return value
    return None


def parse_dialout_settings(settings: Mapping[str, Any]) -> DialoutRequest:
    """Read Daily's dial-out settings, in daily-python's or Pipecat's examples' spelling.

    Accepted keys: ``sipUri`` / ``sip_uri``, ``phoneNumber`` /
    ``phone_number`` (one of the two), ``callerId`` / ``caller_id``,
    ``displayName`` / ``display_name``, and SIP-only ``headers`` (a mapping
    or a list of ``[name, value]`` pairs; at most 16, no header that makes
    the dialog such as From or Contact) and ``timeout`` (seconds, 1-300).
    Daily's ``video``, ``codecs``, ``userId``, ``extension`` and
    ``permissions`` have no meaning here and are ignored.

    Args:
        settings: The settings mapping.

    Returns:
        The request.

    Raises:
        ValueError: Not a mapping, no target or two, or a value that is not
            what its key needs; the message names the key.
    """
    if not isinstance(settings, Mapping):
        raise ValueError(f"dial-out settings must be an object, not {type(settings).__name__}")
    uri = _pick(settings, "sipUri", "sip_uri")
    number = _pick(settings, "phoneNumber", "phone_number")
    if (uri is None) == (number is None):
        raise ValueError("dial-out settings need exactly one of 'sipUri' or 'phoneNumber'")
    if uri is not None:
        from pipecat_sip.sip.errors import SIPParseError
        from pipecat_sip.sip.uri import SIPURI

        text = str(uri).strip()
        try:
            SIPURI.parse(text)
        except SIPParseError:
            raise ValueError(f"sipUri: {text[:80]!r} is not a SIP URI") from None
        target, is_phone = text, False
    else:
        text = re.sub(r"[\s().-]", "", str(number))
        if not _PHONE_RE.match(text):
            raise ValueError(f"phoneNumber: {str(number)[:40]!r} is not a phone number (E.164)")
        target, is_phone = text, True
    caller_id = _pick(settings, "callerId", "caller_id")
    if caller_id is not None:
        caller_id = str(caller_id).strip()
        if not _TOKEN_RE.match(caller_id):
            raise ValueError(f"callerId: {caller_id[:40]!r} is not a number or SIP user")
    display_name = _pick(settings, "displayName", "display_name")
    if display_name is not None:
        display_name = str(display_name)
        if len(display_name) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in display_name):
            raise ValueError("displayName: at most 64 characters, no control characters")
    headers = _parse_headers(_pick(settings, "headers", "sipHeaders", "sip_headers"))
    timeout = _pick(settings, "timeout", "timeout_s")
    timeout_s = 60.0
    if timeout is not None:
        try:
            timeout_s = float(timeout)
        except (TypeError, ValueError):
            raise ValueError(f"timeout: {timeout!r} is not a number of seconds") from None
        if not 1 <= timeout_s <= 300:
            raise ValueError(f"timeout: {timeout!r} must be 1-300 seconds")
    return DialoutRequest(target, is_phone, caller_id, display_name, headers, timeout_s)


def _parse_headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = []
        for item in value:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise ValueError("headers: a list must hold [name, value] pairs")
            pairs.append((item[0], item[1]))
    else:
        raise ValueError("headers: must be an object or a list of [name, value] pairs")
    if len(pairs) > _MAX_DIALOUT_HEADERS:
        raise ValueError(f"headers: at most {_MAX_DIALOUT_HEADERS}")
    out = []
    for name, text in pairs:
        name, text = str(name).strip(), str(text)
        if not _TOKEN_RE.match(name) or name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"headers: {name[:40]!r} cannot be set on a dial-out")
        if len(text) > 512 or any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
            raise ValueError(f"headers: the value of {name!r} must be one line of <= 512 chars")
        out.append((name, text))
    return tuple(out)


def _trunk_from_env(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(host, port) of ``SIP_TRUNK_PROXY`` (``sip:host:port``, ``host:port`` or ``host``)."""
    value = (env.get("SIP_TRUNK_PROXY") or "").strip()
    if not value:
        return None
    from pipecat_sip.sip.errors import SIPParseError
    from pipecat_sip.sip.uri import SIPURI

    text = value if value.lower().startswith(("sip:", "sips:")) else f"sip:{value}"
    try:
        uri = SIPURI.parse(text)
    except SIPParseError:
        raise ValueError(f"SIP_TRUNK_PROXY: {value!r} is not host[:port] or a SIP URI") from None
    host, port = uri.host_port
    return host.strip("[]"), port


async def place_dialout(
    server: Any,
    request: DialoutRequest,
    progress_handler: Callable[[str, int], Any] | None = None,
) -> "SIPCall":
    """Place ``request`` through ``server`` and wait for the answer.

    A SIP URI is called directly. A phone number goes through the trunk:
    with a server that knows trunks (``SIPServer.call(..., caller_id=...)``)
    the server's configured trunk; otherwise ``sip:NUMBER@`` the host of
    ``SIP_TRUNK_PROXY``, sent there.

    Args:
        server: The SIPServer (or anything with its ``call``).
        request: What to dial.
        progress_handler: ``handler(kind, status_code)`` for each provisional
            response (see ``SIPCall.add_progress_handler``), when the
            server's ``call`` takes one.

    Raises:
        CallFailed: Rejected, not answered in time, or no trunk for a number.
    """
    from pipecat_sip.call import CallFailed

    kwargs: dict[str, Any] = {
        "display_name": request.display_name,
        "headers": request.headers,
        "timeout": request.timeout_s,
    }
    parameters = inspect.signature(server.call).parameters
    if progress_handler is not None and "progress_handler" in parameters:
        kwargs["progress_handler"] = progress_handler
    if "caller_id" in parameters:
        return await server.call(request.target, caller_id=request.caller_id, **kwargs)
    target, destination = request.target, None
    if request.is_phone_number:
        try:
            trunk = _trunk_from_env(os.environ)
        except ValueError as exc:
            raise CallFailed(str(exc)) from None
        if trunk is None:
            raise CallFailed("a phoneNumber dial-out needs a trunk: set SIP_TRUNK_PROXY")
        host, port = trunk
        shown = f"[{host}]" if ":" in host else host
        target = f"sip:{request.target}@{shown}:{port}"
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        destination = infos[0][4][:2]
    return await server.call(target, destination=destination, from_user=request.caller_id, **kwargs)


# --- the transport ---------------------------------------------------------------------------

# Daily's dial-in/dial-out events (pipecat/transports/daily/transport.py), same names
# and argument shapes: (transport, data: dict), on_dialin_ready (transport, sip_endpoint).
DAILY_TELEPHONY_EVENTS = (
    "on_connected",
    "on_joined",
    "on_dialin_ready",
    "on_dialin_connected",
    "on_dialin_stopped",
    "on_dialin_error",
    "on_dialin_warning",
    "on_dialout_connected",
    "on_dialout_answered",
    "on_dialout_stopped",
    "on_dialout_error",
    "on_dialout_warning",
    "on_dtmf_event",
)

_DTMF_TONES = frozenset("0123456789*#ABCDabcd")


class SIPTransport(BaseTransport):
    """Pipecat transport for one SIP call, with Daily's dial-in/dial-out surface.

    The pipeline talks to the far end through ``transport.input()`` and
    ``transport.output()``. The bot's ``EndFrame`` hangs up (BYE) after the
    queued audio has been played; ``CancelFrame`` hangs up at once. When the
    far end hangs up (BYE), RTP stops for ``rtp_timeout_s``, or the call ends
    any other way than through this transport (server shutdown, bot code
    calling ``call.hangup()``, ``stop_dialout``), the transport fires its
    stopped event and ``on_client_disconnected``, cancels the pipeline
    (unless ``cancel_on_disconnect`` is False) and sends no BYE of its own.

    A transport is made three ways:

    - ``SIPTransport(call)``: for a call already answered (the runner's
      ``-t sip``, or your own ``SIPServer`` handler);
    - ``SIPTransport(None, params, server=server)``: no call yet; the bot
      calls ``await transport.start_dialout({"sipUri": ...})`` (or
      ``{"phoneNumber": ...}`` through the trunk), as it would on
      ``DailyTransport``; ``dialout=`` dials by itself when the pipeline
      starts (a Pipecat Cloud session asking for a dial-out);
    - ``SIPTransport(None, params)`` then ``await transport.attach_call(call)``
      when an awaited inbound call arrives (the runner's registration session).

    Event handlers, ours:

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
    - on_call_quality_stats(transport, stats): the call's quality figures
      (:class:`~pipecat_sip.rtp.quality.CallQualityStats`: MOS, loss, jitter,
      RTT, jitter-buffer figures, the peer's view of our stream) every
      ``quality_stats_interval_s`` and once when the call's media closes
      (``stats.final``). With ``PipelineParams(enable_metrics=True)`` the
      periodic figures also go downstream as a ``MetricsFrame`` of
      :class:`CallQualityMetricsData`.

    Event handlers, Daily's (``DailyTransport``'s names and shapes; ``data``
    is a dict whose keys follow daily-js: every one carries ``sessionId``
    and ``sipCallId`` (the SIP Call-ID); dial-in adds ``sipFrom``,
    ``sipTo``, ``sipEndpoint`` (the Request-URI) and ``sipHeaders`` (the
    INVITE's ``X-`` headers); dial-out adds ``origin`` and ``destination``;
    errors carry ``errorMsg``; stopped events a ``reason``):

    - on_connected(transport, data) / on_joined(transport, data): the
      pipeline started; the transport can dial (``data``: ``{"sessionId"}``
      of the session, not Daily's room data).
    - on_dialin_ready(transport, sip_endpoint): registered at the registrar
      and waiting for a call (registration sessions only).
    - on_dialin_connected / on_dialin_stopped / on_dialin_error(transport, data).
    - on_dialout_connected / on_dialout_answered / on_dialout_stopped /
      on_dialout_error(transport, data): ``connected`` fires when the INVITE
      is answered, just before ``answered`` (early progress is not reported
      separately yet).
    - on_dtmf_event(transport, data): ``data["tone"]`` is the key.
    - on_dialin_warning, on_dialout_warning: registered, never fired.

    Methods as on ``DailyTransport``, returning an error text or None and
    never raising: ``start_dialout(settings) -> (session_id, error)``,
    ``stop_dialout(participant_id)``, ``send_dtmf(settings)``,
    ``sip_refer(settings)``.

    The ``call`` passed to our handlers is the :class:`~pipecat_sip.call.SIPCall`;
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
        call: "SIPCall | None" = None,
        params: SIPParams | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
        *,
        server: Any = None,
        dialout: Mapping[str, Any] | DialoutRequest | None = None,
        session_id: str | None = None,
        owns_server: bool = False,
    ):
        """Create the transport.

        Args:
            call: The call, answered (its ``media`` is the RTP session), or
                None to dial out or wait for one.
            params: Transport parameters; ``SIPParams()`` when None.
            input_name: Name of the input processor (default includes the Call-ID).
            output_name: Name of the output processor (default includes the Call-ID).
            server: The :class:`~pipecat_sip.server.SIPServer` that places
                ``start_dialout`` calls.
            dialout: Dial-out settings to dial when the pipeline starts.
            session_id: Our session's id (a Pipecat Cloud session id), for
                names and event data; default the Call-ID or a new one.
            owns_server: Stop ``server`` when the transport is cleaned up
                (the runner's Pipecat Cloud sessions).

        Raises:
            ValueError: ``dialout`` settings that cannot be read, or a
                ``dialout`` without a ``server``.
        """
        name = call.call_id if call is not None else (session_id or uuid.uuid4().hex[:12])
        super().__init__(
            name=f"SIPTransport[{name}]",
            input_name=input_name or f"SIPInputTransport[{name}]",
            output_name=output_name or f"SIPOutputTransport[{name}]",
        )
        if dialout is not None and not isinstance(dialout, DialoutRequest):
            dialout = parse_dialout_settings(dialout)
        if dialout is not None and server is None:
            raise ValueError("SIPTransport(dialout=...) needs server= to place the call")
        self._call: SIPCall | None = None
        self._params = params or SIPParams()
        self._server = server
        self._owns_server = owns_server
        self._auto_dialout: DialoutRequest | None = dialout
        self._session_id = session_id
        self._hangup_task: asyncio.Task | None = None
        self._far_end_task: asyncio.Task | None = None
        self._hangup_requested = False
        self._end_reason: str | None = None
        self._dial_task: asyncio.Task | None = None
        self._dialout_session_id: str | None = None
        self._dialout_request: DialoutRequest | None = None
        self._stop_requested = False
        self._announced = False
        self._started = False
        self._dialin_ready: str | None = None
        self._dialin_ready_fired = False
        self._cleaned_up = False
        self._tasks: set[asyncio.Task] = set()
        self.call_settings: dict[str, Any] = {}
        """Settings the routing hook accepted the call with (registration sessions)."""
        self._quality_tasks: set[asyncio.Task] = set()

        self._input = SIPInputTransport(self, call, self._params, name=self._input_name)
        self._output = SIPOutputTransport(self, call, self._params, name=self._output_name)

        for event in ("on_client_connected", "on_client_disconnected", "on_dtmf", "on_hold"):
            self._register_event_handler(event)
        self._register_event_handler("on_resume")
        self._register_event_handler("on_call_quality_stats")
        self._register_event_handler("on_ringing")
        self._register_event_handler("on_early_media")
        self._register_event_handler("on_transfer_accepted")
        self._register_event_handler("on_transfer_succeeded")
        self._register_event_handler("on_transfer_failed")
        for event in DAILY_TELEPHONY_EVENTS:
            self._register_event_handler(event)
        if call is not None:
            self._take_call(call)

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
    def call(self) -> "SIPCall | None":
        """The SIP call this transport carries (None before dial-out or the awaited call)."""
        return self._call

    @property
    def call_info(self) -> "CallInfo | None":
        """The call's INVITE details (From, To, headers, codec), or None before the call."""
        return self._call.info if self._call is not None else None

    @property
    def server(self) -> Any:
        """The server placing dial-outs, or None."""
        return self._server

    @property
    def session_id(self) -> str | None:
        """The current session's id as event data carries it (``sessionId``), or None."""
        if self._dialout_session_id is not None:
            return self._dialout_session_id
        if self._call is not None:
            return self._call.call_id
        return self._session_id

    @property
    def media(self) -> "RTPSession | None":
        """The call's RTP session, or None before answer."""
        return getattr(self._call, "media", None) if self._call is not None else None

    @property
    def codec_sample_rate(self) -> int:
        """Sample rate of the call's codec, Hz (8000 for G.711, and before the call)."""
        media = self.media
        if media is not None:
            return media.sample_rate
        if self._call is not None:
            return self._call.info.sample_rate
        return 8000

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
        """Whether the call is over, whoever ended it (False before there is one)."""
        return (
            self.far_end_gone
            or self._hangup_requested
            or (self._call is not None and self._call.ended)
        )

    def get_client_id(self, client: Any) -> str:
        """The Call-ID of the call passed to event handlers.

        Args:
            client: The call, as passed to ``on_client_connected``.

        Returns:
            Its Call-ID.
        """
        return client.call_id

    # --- the call ------------------------------------------------------------------
    async def attach_call(self, call: "SIPCall") -> None:
        """Carry ``call`` (answered) from now on: an awaited inbound call, or a dial-out.

        Args:
            call: The call, answered.

        Raises:
            RuntimeError: The transport already carries a call.
        """
        self._take_call(call)
        self._output.call_attached()
        await self._input.call_attached()

    def _take_call(self, call: "SIPCall") -> None:
        if self._call is not None:
            raise RuntimeError(f"{self} already carries {self._call}")
        self._call = call
        self._apply_media_params()
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

    def _direction(self) -> str:
        call = self._call
        if call is None:
            return "outbound" if self._dialout_request else "inbound"
        return getattr(call.info, "direction", "inbound")

    def dial_data(self, **extra: Any) -> dict[str, Any]:
        """The event data of the current call, in daily-js's keys.

        Args:
            **extra: More keys (``errorMsg``, ``reason``).

        Returns:
            ``sessionId``, ``sipCallId`` and the dial-in or dial-out keys.
        """
        data: dict[str, Any] = {"sessionId": self.session_id}
        call = self._call
        if call is not None:
            info = call.info
            data["sipCallId"] = info.call_id
            if self._direction() == "inbound":
                data["sipFrom"] = info.from_uri
                data["sipTo"] = info.to_uri
                data["sipEndpoint"] = info.request_uri
                data["sipHeaders"] = {
                    name: ", ".join(values)
                    for name, values in info.headers.items()
                    if name.lower().startswith("x-")
                }
            else:
                data["origin"] = info.from_uri
                data["destination"] = info.to_uri
        elif self._dialout_request is not None:
            data["destination"] = self._dialout_request.target
        data.update(extra)
        return data

    async def call_connected(self) -> None:
        """The call is up with the pipeline running: Daily's connected events, once."""
        if self._announced or self._call is None:
            return
        self._announced = True
        if self._direction() == "inbound":
            await self._call_event_handler("on_dialin_connected", self.dial_data())
        else:
            await self._call_event_handler("on_dialout_connected", self.dial_data())
            await self._call_event_handler("on_dialout_answered", self.dial_data())

    async def client_connected(self) -> None:
        """Fire ``on_client_connected`` (called by the input transport on start)."""
        await self._call_event_handler("on_client_connected", self._call)

    @property
    def quality(self) -> "CallQualityStats | None":
        """The call's latest quality figures (see ``on_call_quality_stats``), or None."""
        media = self.media
        return getattr(media, "quality", None) if media is not None else None

    def _on_quality(self, stats: "CallQualityStats") -> None:
        """RTP session callback (sync): fire ``on_call_quality_stats`` and push metrics."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._report_quality(stats))
        self._quality_tasks.add(task)
        task.add_done_callback(self._quality_tasks.discard)

    async def _report_quality(self, stats: "CallQualityStats") -> None:
        if stats.final:
            logger.debug(f"{self} call quality: {stats.summary()}")
        await self._call_event_handler("on_call_quality_stats", stats)
        source = self._input
        if stats.final or self.call_ended or not source.started or not source.metrics_enabled:
            return
        data = CallQualityMetricsData.from_stats(
            stats, processor=source.name, call_id=self._call.call_id
        )
        try:
            await source.push_frame(MetricsFrame(data=[data]))
        except Exception as error:  # the pipeline is going away
            logger.debug(f"{self} quality metrics not pushed: {error!r}")

    async def dtmf_received(self, key: str) -> None:
        """Fire ``on_dtmf`` and ``on_dtmf_event`` (called by the input transport per key).

        Args:
            key: The key, e.g. "5".
        """
        await self._call_event_handler("on_dtmf", key)
        await self._call_event_handler("on_dtmf_event", self.dial_data(tone=key))

    async def pipeline_started(self, processor: FrameProcessor) -> None:
        """The input transport started: ready events, and the session's own dial-out.

        Args:
            processor: The started input transport (runs the tasks).
        """
        if self._started:
            return
        self._started = True
        data = {"sessionId": self.session_id}
        await self._call_event_handler("on_connected", data)
        await self._call_event_handler("on_joined", data)
        if self._dialin_ready is not None:
            await self._fire_dialin_ready()
        if self._auto_dialout is not None and self._call is None:
            request, self._auto_dialout = self._auto_dialout, None
            _, error = await self._start_dialout(request, end_on_failure=True)
            if error:
                await self._call_event_handler("on_dialout_error", self.dial_data(errorMsg=error))
                self._end_session(processor, f"dial-out not started: {error}")

    async def dialin_ready(self, sip_endpoint: str) -> None:
        """We are registered and wait for a call at ``sip_endpoint``: ``on_dialin_ready``.

        Fired when the pipeline has started (at once if it has).

        Args:
            sip_endpoint: Our address-of-record (``sip:bot@pbx.example.com``).
        """
        self._dialin_ready = sip_endpoint
        if self._started:
            await self._fire_dialin_ready()

    async def _fire_dialin_ready(self) -> None:
        if self._dialin_ready_fired or self._dialin_ready is None:
            return
        self._dialin_ready_fired = True
        await self._call_event_handler("on_dialin_ready", self._dialin_ready)

    async def dialin_error(self, message: str) -> None:
        """The awaited inbound call failed (cancelled before answer, ...): ``on_dialin_error``.

        Args:
            message: What went wrong, for ``errorMsg``.
        """
        await self._call_event_handler("on_dialin_error", self.dial_data(errorMsg=message))

    # --- Daily's call control ---------------------------------------------------------
    async def start_dialout(self, settings: Mapping[str, Any] | None = None) -> tuple[str, Any]:
        """Call a SIP URI or a phone number; the pipeline runs on the call once answered.

        Returns at once, as Daily's does; the call rings in the background and
        ``on_dialout_connected`` / ``on_dialout_answered`` (then
        ``on_client_connected``) or ``on_dialout_error`` follow. A second call
        while the transport has one is refused, except the same target as the
        session's own dial-out, which answers with that session (a Daily-shaped
        bot calling ``start_dialout`` for the call its session already placed).

        Args:
            settings: Daily's settings: ``sipUri`` or ``phoneNumber``, optional
                ``callerId``, ``displayName``; SIP-only ``headers``, ``timeout``
                (see :func:`parse_dialout_settings`).

        Returns:
            ``(session_id, error)``; ``error`` is None on success.
        """
        try:
            request = parse_dialout_settings(settings or {})
        except ValueError as exc:
            logger.error(f"{self} unable to start dialout: {exc}")
            return "", str(exc)
        return await self._start_dialout(request, end_on_failure=False)

    async def _start_dialout(
        self, request: DialoutRequest, *, end_on_failure: bool
    ) -> tuple[str, str | None]:
        if self._dialout_request is not None or self._call is not None:
            same = self._dialout_request is not None and self._dialout_request.target == (
                request.target
            )
            if same and self._dialout_session_id and not self.call_ended:
                return self._dialout_session_id, None
            return "", "this transport already has a call (one call per transport)"
        if self._auto_dialout is not None and self._auto_dialout.target == request.target:
            self._auto_dialout = None  # the bot dials the session's call itself
        if self._server is None:
            return "", "start_dialout needs a SIPServer: SIPTransport(..., server=server)"
        session_id = uuid.uuid4().hex
        self._dialout_session_id = session_id
        self._dialout_request = request
        logger.info(f"{self} dialing {escape(request.target, 80)} (session {session_id})")
        self._dial_task = self._spawn(self._dial(request, end_on_failure))
        return session_id, None

    async def _dial(self, request: DialoutRequest, end_on_failure: bool) -> None:
        server = self._server
        before = set(getattr(server, "calls", {}) or {})
        connected: list[asyncio.Task] = []

        def progress(kind: str, status_code: int) -> None:
            # Daily's order: "connected" once the far end is reached (its first
            # provisional response, RFC 3261 s.13.2.2.1), "answered" at the 200.
            if not connected:
                connected.append(
                    self._spawn(self._call_event_handler("on_dialout_connected", self.dial_data()))
                )

        try:
            call = await place_dialout(server, request, progress_handler=progress)
        except asyncio.CancelledError:
            await self._cancel_ringing(before, request)
            raise
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            message = str(exc) or type(exc).__name__
            logger.warning(f"{self} dial-out to {escape(request.target, 80)} failed: {message}")
            await self._call_event_handler(
                "on_dialout_error", self.dial_data(errorMsg=message, statusCode=status)
            )
            if end_on_failure:
                self._end_session(self._input, f"dial-out failed: {message}")
            return
        if self._stop_requested or self._hangup_requested or self._cleaned_up:
            await call.hangup()
            return
        # Daily's order: connected, answered, then the pipeline's client.
        self._announced = True
        self._take_call(call)
        self._output.call_attached()
        if connected:
            await connected[0]
        else:  # answered without a provisional response
            await self._call_event_handler("on_dialout_connected", self.dial_data())
        await self._call_event_handler("on_dialout_answered", self.dial_data())
        await self._input.call_attached()

    async def _cancel_ringing(self, before: set[str], request: DialoutRequest) -> None:
        """The dial-out was stopped while ringing: CANCEL the INVITE it sent."""
        calls = getattr(self._server, "calls", {}) or {}
        for call_id in set(calls) - before:
            call = calls.get(call_id)
            if call is not None and getattr(call.info, "direction", "") == "outbound":
                await call.hangup()

    async def stop_dialout(self, participant_id: Any = None) -> str | None:
        """End the dial-out call (BYE, or CANCEL while it rings).

        Args:
            participant_id: The session id ``start_dialout`` returned (None: the current one).

        Returns:
            An error text, or None.
        """
        if self._dialout_session_id is None:
            return "no dial-out on this transport"
        if participant_id not in (None, "", self._dialout_session_id):
            return f"no such dial-out session {str(participant_id)[:40]!r}"
        self._stop_requested = True
        task = self._dial_task
        if self._call is None and task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self._params.hangup_timeout_s)
            await self._call_event_handler(
                "on_dialout_stopped", self.dial_data(reason="stop_dialout")
            )
            return None
        if self._call is not None and not self._call.ended:
            await self._call.hangup()
        return None

    async def send_dtmf(self, settings: Mapping[str, Any] | None = None) -> str | None:
        """Send DTMF on the call, as Daily's ``send_dtmf``.

        Args:
            settings: ``tones`` ("0"-"9", "*", "#", "A"-"D", up to 64),
                optional ``sessionId``, ``method`` (``"auto"``: RFC 4733
                when the peer offered telephone-event, else in-band tones;
                ``"telephone-event"``; ``"sip-info"``, needs SIP INFO DTMF
                support on the call) and ``digitDurationMs`` (40-5000).

        Returns:
            An error text, or None.
        """
        settings = settings or {}
        call = self._call
        if call is None or self.call_ended:
            return "no call to send DTMF on"
        session_id = settings.get("sessionId")
        if session_id not in (None, "", self.session_id, call.call_id):
            return f"no such session {str(session_id)[:40]!r}"
        tones = str(settings.get("tones") or "")
        if not tones:
            return "Can't send DTMF if 'tones' is not set"
        if len(tones) > 64 or not set(tones) <= _DTMF_TONES:
            return "tones: up to 64 of 0-9, *, #, A-D"
        method = settings.get("method") or "auto"
        if method not in ("auto", "telephone-event", "sip-info"):
            return f"method: {str(method)[:20]!r} is not auto, telephone-event or sip-info"
        try:
            duration = int(settings.get("digitDurationMs") or self._params.dtmf_duration_ms)
        except (TypeError, ValueError):
            return "digitDurationMs: not a whole number of ms"
        if not 40 <= duration <= 5000:
            return "digitDurationMs: 40-5000 ms"
        if method == "sip-info":
            send_info = getattr(call, "send_info_dtmf", None)
            if send_info is None:
                return "SIP INFO DTMF is not available on this call"
            for tone in tones:
                result = send_info(tone.upper(), duration)
                if inspect.isawaitable(result):
                    await result
            return None
        media = self.media
        if media is None:
            return "the call has no media"
        for tone in tones:
            try:
                media.send_dtmf(tone.upper(), duration)
            except ValueError as error:
                return f"DTMF {tone!r} not sent: {error}"
        return None

    async def sip_refer(self, settings: Mapping[str, Any] | None = None) -> str | None:
        """Blind transfer (REFER, RFC 3515) to ``settings["toEndPoint"]``, as Daily's ``sip_refer``.

        Waits for the transfer's outcome; on success the far end leaves us
        (BYE) and the session ends as for any hang-up.

        Args:
            settings: ``toEndPoint`` (a SIP URI or number), optional ``sessionId``.

        Returns:
            An error text (the transfer was refused or failed), or None.
        """
        settings = settings or {}
        call = self._call
        if call is None or self.call_ended:
            return "no call to transfer"
        session_id = settings.get("sessionId")
        if session_id not in (None, "", self.session_id, call.call_id):
            return f"no such session {str(session_id)[:40]!r}"
        target = str(settings.get("toEndPoint") or settings.get("to_end_point") or "").strip()
        if not target:
            return "Can't perform SIP REFER if 'toEndPoint' is not set"
        transfer = getattr(call, "transfer", None)
        if transfer is None:
            return "SIP REFER is not available in this build (SIPCall.transfer)"
        try:
            await transfer(target)
        except Exception as exc:  # TransferFailed(status_code, reason), ValueError
            status = getattr(exc, "status_code", None)
            return (
                f"transfer to {target[:80]} failed"
                + (f" ({status})" if status else "")
                + (f": {exc}" if str(exc) else "")
            )
        return None

    async def sip_call_transfer(self, settings: Mapping[str, Any] | None = None) -> str | None:
        """Daily's cloud-side transfer has no SIP equivalent here: use :meth:`sip_refer`.

        Returns:
            The error text.
        """
        return "sip_call_transfer re-anchors a call in Daily's cloud; use sip_refer (REFER)"

    # --- ending ------------------------------------------------------------------------
    async def end_call(self, why: str) -> None:
        """Hang up (BYE) unless the call already ended; idempotent.

        Waits up to ``hangup_timeout_s`` for the BYE transaction, which keeps
        running in the background if it takes longer. Before the call is up, a
        dial-out still ringing is cancelled.

        Args:
            why: For the log line.
        """
        self._input.detach()
        call = self._call
        if call is None:
            task = self._dial_task
            if task is not None and not task.done():
                self._hangup_requested = True
                logger.info(f"{self} cancelling the dial-out ({why})")
                task.cancel()
                await asyncio.wait({task}, timeout=self._params.hangup_timeout_s)
            return
        if self._hangup_task is None and not self.far_end_gone and not call.ended:
            self._hangup_requested = True
            logger.info(f"{self} hanging up ({why})")
            self._hangup_task = asyncio.create_task(call.hangup())
            self._hangup_task.add_done_callback(self._on_hangup_done)
        task = self._hangup_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._params.hangup_timeout_s)

    async def cleanup(self):
        """Release the transport; stop the server it owns (a Pipecat Cloud session's)."""
        await super().cleanup()
        if self._cleaned_up:
            return
        self._cleaned_up = True
        task = self._dial_task
        if task is not None and not task.done():
            task.cancel()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self._owns_server and self._server is not None:
            try:
                await self._server.stop(timeout=1.0)
            except Exception:
                logger.exception(f"{self} stopping the session's SIP server failed")

    def schedule_far_end_hangup(self, processor: FrameProcessor) -> None:
        """Handle the far end's hang-up from a running processor's task.

        Args:
            processor: A started processor of this transport, to run the task.
        """
        if self._far_end_task is None:
            self._far_end_task = processor.create_task(self._handle_far_end_hangup(processor))

    def end_session(self, reason: str) -> None:
        """End the pipeline now (a session whose call never came, or could not be made).

        Args:
            reason: Why, for the CancelWorkerFrame.
        """
        self._end_session(self._input, reason)

    def track_task(self, task: asyncio.Task) -> None:
        """Keep ``task`` (a session's helper) until done; cancel it at cleanup."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end_session(self, processor: FrameProcessor, reason: str) -> None:
        """End the pipeline (a session whose call could not be made)."""

        async def end() -> None:
            await processor.push_frame(CancelWorkerFrame(reason=reason), FrameDirection.UPSTREAM)

        self._spawn(end())

    def _spawn(self, coro: Any) -> asyncio.Task:
        if self._input.started:
            return self._input.create_task(coro)
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_call_ended(self, reason: str) -> None:
        """SIPCall ended handler (sync): the far side or the network ended the call."""
        # Anything but our own hang-up ends the pipeline: the caller's BYE, an
        # RTP timeout, the server shutting down, bot code calling call.hangup(),
        # stop_dialout().
        if (self._hangup_requested and not self._stop_requested) or self._end_reason is not None:
            return
        self._end_reason = "stop_dialout" if self._stop_requested else reason
        logger.info(f"{self} call ended: {describe_end(self._end_reason)} ({self._end_reason})")
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
        stopped = "on_dialin_stopped" if self._direction() == "inbound" else "on_dialout_stopped"
        await self._call_event_handler(stopped, self.dial_data(reason=self._end_reason))
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
        params = self._params
        if hasattr(media, "on_quality"):
            media.on_quality = self._on_quality
            if hasattr(media, "quality_interval_s"):
                media.quality_interval_s = params.quality_stats_interval_s
        enable = getattr(media, "enable_jitter_buffer", None)
        if params.jitter_buffer and enable is not None and media.jitter_buffer is None:
            enable(
                params.jitter_buffer_min_ms,
                max(params.jitter_buffer_max_ms, params.jitter_buffer_min_ms),
            )
        settings = (
            ("send_silence_when_idle", "send_silence"),
            ("rtp_timeout_s", "rtp_timeout_s"),
        )
        for field_name, attribute in settings:
            if field_name not in self._params.model_fields_set:
                continue  # keep what the server configured for the call
            value = getattr(self._params, field_name)
            if hasattr(media, attribute):
                setattr(media, attribute, value)
            else:
                logger.warning(
                    f"{self} {field_name}={value!r} not applied: this RTP session takes it only "
                    "when created (set it where the call is answered)"
                )
