"""The sending half of an RTP audio stream: queued PCM to one packet per packet time.

Sans-IO: :class:`Packetizer` is driven once per packet time (ptime) by its
owner (the media session, paced by a clock it does not read) and returns
the next datagram or None. It keeps:

- the PCM queue (PCM16 little-endian mono at the codec's ``sample_rate``),
  cut into packets of ``ptime`` and padded with silence at the end of speech;
- talkspurts (RFC 3551 s.4.1): the first audio packet after an idle spell
  carries the marker bit; when idle it sends encoded silence, or nothing
  while the RTP timestamp runs on (``send_silence=False``);
- key presses: RFC 4733 events through :class:`~pipecat_sip.rtp.dtmf.DtmfSender`
  when a telephone-event payload type was negotiated (audio waits
  meanwhile), else ITU-T Q.23 tones (:mod:`pipecat_sip.codecs.tones`)
  queued behind the audio;
- hold play-out (RFC 3264 s.5.1, recvonly/inactive): :meth:`hold_tick`
  drains one packet's audio with nothing on the wire; the timestamp runs
  on, the sequence number does not (no packet was sent, RFC 3550 s.5.1).

Timestamps count the codec's RTP ``clock_rate``, PCM sizes its
``sample_rate`` (G.722: 16000 Hz audio on an 8000 Hz RTP clock).
"""

from collections import deque

from pipecat_sip.codecs import Codec
from pipecat_sip.codecs.tones import dtmf_tone
from pipecat_sip.rtp.dtmf import DtmfSender, event_for_key
from pipecat_sip.rtp.sender import RtpSender

__all__ = ["INBAND_GAP_MS", "Packetizer"]

INBAND_GAP_MS = 60
"""Silence after an in-band DTMF tone, ms, so repeated keys stay apart."""


class Packetizer:
    """Queued PCM and key presses of one stream, one RTP packet per packet time.

    Args:
        rtp: The stream's sequence number, timestamp and SSRC.
        codec: The codec object that encodes for this stream (one per stream
            for a stateful codec: ``codec.for_stream()``).
        ptime_ms: Packet time, ms.
        telephone_event_pt: The negotiated telephone-event payload type, or
            None (key presses as in-band tones).
        send_silence: Send encoded silence when nothing is queued (else
            nothing, and the timestamp runs on).
        stateless: The codec keeps no state between packets, so one encoded
            silence payload can be sent again and again (G.711); False
            encodes silence afresh for every packet. A codec that says it is
            ``stateful`` (G.722, Opus) always gets the latter, whatever this
            says: its encoder and the far decoder adapt together, and one
            cached silence payload repeated drifts the far G.722 decoder to a
            DC offset.

    Raises:
        ValueError: ``ptime_ms`` is not a whole number of samples at the
            codec's sample and clock rates.

    Example:
        >>> from pipecat_sip.codecs import PCMU
        >>> p = Packetizer(RtpSender(0, 8000), PCMU)
        >>> p.queue_audio(bytes(480))  # 30 ms: two packets, the second padded
        >>> [len(p.next_packet()) for _ in range(2)], p.backlog_bytes
        ([172, 172], 0)
    """

    __slots__ = (
        "rtp",
        "telephone_event_pt",
        "send_silence",
        "ptime_ms",
        "samples_per_packet",
        "ts_step",
        "bytes_per_packet",
        "dtmf_sent",
        "dtmf_dropped",
        "_codec",
        "_encode",
        "_clock_rate",
        "_sample_rate",
        "_silence_pcm",
        "_silence_payload",
        "_audio",
        "_dtmf",
        "_idle",
    )

    def __init__(
        self,
        rtp: RtpSender,
        codec: Codec,
        *,
        ptime_ms: int = 20,
        telephone_event_pt: int | None = None,
        send_silence: bool = True,
        stateless: bool = True,
    ):
        samples = codec.sample_rate * ptime_ms // 1000
        step = codec.clock_rate * ptime_ms // 1000
        if (
            ptime_ms <= 0
            or samples * 1000 != codec.sample_rate * ptime_ms
            or step * 1000 != codec.clock_rate * ptime_ms
        ):
            raise ValueError(f"ptime {ptime_ms} ms is not a whole number of samples")
        self.rtp = rtp
        self.telephone_event_pt = telephone_event_pt
        self.send_silence = send_silence
        self.ptime_ms = ptime_ms
        self.samples_per_packet = samples
        """PCM samples per packet (at the codec's ``sample_rate``)."""
        self.ts_step = step
        """RTP timestamp units per packet (at the codec's ``clock_rate``)."""
        self.bytes_per_packet = 2 * samples
        """PCM16 bytes per packet."""
        self.dtmf_sent = 0
        """Key presses queued for sending (RFC 4733 or in-band)."""
        self.dtmf_dropped = 0
        """RFC 4733 key presses dropped unsent (hold, or cleared)."""
        self._codec = codec
        self._encode = codec.encode
        self._clock_rate = codec.clock_rate
        self._sample_rate = codec.sample_rate
        self._silence_pcm = bytes(self.bytes_per_packet)
        cacheable = stateless and not getattr(codec, "stateful", False)
        self._silence_payload = codec.silence(samples) if cacheable else None
        self._audio = bytearray()
        self._dtmf: deque[DtmfSender] = deque()
        self._idle = True  # nothing was queued at the last packet: next audio starts a talkspurt

    @property
    def backlog_bytes(self) -> int:
        """PCM bytes queued and not yet sent (in-band tones included)."""
        return len(self._audio)

    @property
    def dtmf_pending(self) -> int:
        """RFC 4733 key presses queued or being sent."""
        return len(self._dtmf)

    def queue_audio(self, pcm: bytes) -> None:
        """Queue PCM16 little-endian mono at the codec's sample rate.

        Raises:
            ValueError: ``pcm`` is not whole 16-bit samples.
        """
        if len(pcm) & 1:
            raise ValueError(f"PCM16 data has an odd length ({len(pcm)} bytes)")
        self._audio += pcm

    def clear_audio(self) -> None:
        """Drop all queued audio (barge-in); key presses being sent go on."""
        self._audio.clear()

    def clear(self) -> None:
        """Drop all queued audio and key presses (closing)."""
        self._audio.clear()
        self.dtmf_dropped += len(self._dtmf)
        self._dtmf.clear()

    def queue_dtmf(self, key: str, duration_ms: int = 100) -> None:
        """Queue one key press after those still being sent.

        RFC 4733 events (RFC 4733 s.2.5.1) when :attr:`telephone_event_pt` is
        set, audio held back meanwhile; otherwise a Q.23 tone and
        :data:`INBAND_GAP_MS` of silence queued behind the audio.

        Args:
            key: ``"0"``-``"9"``, ``"*"``, ``"#"`` or ``"A"``-``"D"``.
            duration_ms: Length of the press, ms (1-8000).

        Raises:
            ValueError: Unknown key or a duration out of range.
        """
        event_for_key(key)
        if not 1 <= duration_ms <= 8000:
            raise ValueError(f"DTMF duration must be 1-8000 ms, got {duration_ms}")
        if self.telephone_event_pt is not None:
            self._dtmf.append(
                DtmfSender(
                    self.rtp,
                    self.telephone_event_pt,
                    key,
                    duration_ms,
                    ptime_ms=self.ptime_ms,
                    clock_rate=self._clock_rate,
                )
            )
        else:
            rate = self._sample_rate
            self._audio += dtmf_tone(key, duration_ms, rate)
            self._audio += bytes(2 * (rate * INBAND_GAP_MS // 1000))
        self.dtmf_sent += 1

    def next_packet(self) -> bytes | None:
        """Build the datagram of this packet time, or None to send nothing.

        A telephone-event packet while a key press is being sent; else the
        next ``ptime`` of queued audio (the last piece padded with silence;
        the first after an idle spell with the marker bit); else encoded
        silence, or None with ``send_silence`` False (the timestamp still
        moves on by one packet).
        """
        dtmf = self._dtmf
        while dtmf:
            packet = next(dtmf[0], None)
            if packet is not None:
                return packet
            dtmf.popleft()
        audio = self._audio
        if audio:
            size = self.bytes_per_packet
            if len(audio) >= size:
                pcm = bytes(audio[:size])
                del audio[:size]
            else:  # the end of speech: pad the last packet with silence
                pcm = bytes(audio) + self._silence_pcm[len(audio) :]
                audio.clear()
            marker = self._idle
            self._idle = False
            return self.rtp.packet(self._encode(pcm), self.ts_step, marker=marker)
        self._idle = True
        if self.send_silence:
            payload = self._silence_payload
            if payload is None:  # a stateful codec: through the stream's encoder, every time
                payload = self._encode(self._silence_pcm)
            return self.rtp.packet(payload, self.ts_step)
        self.rtp.advance(self.ts_step)
        return None

    def hold_tick(self) -> None:
        """One packet time with nothing on the wire (hold, RFC 3264 s.5.1).

        Queued audio drains at the packet pace (whatever plays takes its
        real time) and pending key presses are dropped; the timestamp runs
        on, the sequence number does not, and the next audio starts a
        talkspurt (marker bit).
        """
        if self._dtmf:
            self.dtmf_dropped += len(self._dtmf)
            self._dtmf.clear()
        del self._audio[: self.bytes_per_packet]
        self._idle = True
        self.rtp.advance(self.ts_step)

    def skip(self, packets: int) -> None:
        """Let ``packets`` packet times pass unsent (the pacing loop ran late).

        The timestamp moves on over them, so it keeps step with real time;
        queued audio is not dropped (it is sent late, not lost).
        """
        if packets > 0:
            self.rtp.advance(packets * self.ts_step)
