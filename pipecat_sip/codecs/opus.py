"""Opus (RFC 6716) in RTP (RFC 7587) over the system libopus.

Installed with the ``opus`` extra (``pip install 'pipecat-sip[opus]'``) and
Debian's ``libopus0``. The binding is ``opuslib-next``: the maintained fork of
``opuslib`` (unchanged since 2018), pure ``ctypes`` over the system library, so
no compiled wheel to build and libopus security fixes come with the OS. It
exposes the encoder CTLs we need (FEC, loss percentage, bandwidth, bitrate,
complexity) and, through its low-level ``api.decoder.decode``, a NULL packet
for libopus's own loss concealment. PyAV would bring a whole FFmpeg for one
codec; ``pyogg`` and ``opuspy`` are unmaintained.

RTP facts (RFC 7587): the RTP clock is always 48000 Hz and the rtpmap is
``opus/48000/2`` whatever is sent (s.4.1, s.7); the audio we encode and decode
is mono at :attr:`OpusCodec.sample_rate`, which libopus handles natively (no
resampling step). ``a=fmtp`` carries what a receiver can take:
``maxplaybackrate``, ``stereo``, ``useinbandfec``, ``maxaveragebitrate``,
``cbr`` (s.6.1); ``sprop-*`` describe what the sender sends.

Default rate 16000 Hz: what STT services take and Pipecat's default input
rate, the same as G.722 so a wideband call looks alike whichever codec won,
and enough for telephone speech (wideband, 8 kHz of audio); a larger rate
costs CPU in every call for bandwidth that only TTS output could use. Pass
``sample_rate=24000`` (super-wideband) to :class:`OpusCodec` and register it to
change that.
"""

from __future__ import annotations

import opuslib_next
from opuslib_next.api import decoder as _opus_decoder

from pipecat_sip.codecs.base import Codec
from pipecat_sip.sdp import parse_fmtp

__all__ = ["OPUS_SAMPLE_RATES", "OpusCodec", "opus_version"]

#: PCM rates libopus encodes and decodes natively, Hz.
OPUS_SAMPLE_RATES: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)

# Frame durations libopus 1.3 encodes, in units of 0.5 ms (2.5 ms ... 60 ms).
_FRAME_HALF_MS = (5, 10, 20, 40, 80, 120)
_MAX_PACKET_MS = 120  # the longest an Opus packet can hold (RFC 6716 s.3.2.5)
_MAX_PACKET_BYTES = 1275  # RFC 6716 s.3.4 R5: the longest one frame can be coded in

# RFC 7587 s.6.1 maxplaybackrate -> the widest audio band worth sending.
_BANDWIDTHS = (
    (8000, opuslib_next.BANDWIDTH_NARROWBAND),
    (12000, opuslib_next.BANDWIDTH_MEDIUMBAND),
    (16000, opuslib_next.BANDWIDTH_WIDEBAND),
    (24000, opuslib_next.BANDWIDTH_SUPERWIDEBAND),
)


def opus_version() -> str:
    """The version string of the libopus in use, e.g. ``"libopus 1.3.1"``."""
    version = opuslib_next.api.info.get_version_string()
    return version.decode("ascii", "replace") if isinstance(version, bytes) else str(version)


def _int_param(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    value = params.get(name, "")
    if not (0 < len(value) <= 7 and value.isascii() and value.isdigit()):
        return None
    return min(max(int(value), low), high)


class OpusCodec(Codec):
    """Opus, mono PCM at ``sample_rate``; RTP clock 48000 Hz, rtpmap ``opus/48000/2``.

    The registry's object describes the codec (and works alone for tools and
    tests); :meth:`for_stream` makes the per-call object, with its encoder
    set up for what the peer's ``a=fmtp`` says it can receive.

    Args:
        sample_rate: PCM rate, Hz: one of :data:`OPUS_SAMPLE_RATES`.
        payload_type: The dynamic payload type we would like (SDP picks).
        bitrate: Encoder target, bit/s (the peer's ``maxaveragebitrate`` caps it).
        complexity: Encoder complexity 0-10 (CPU against quality).
        fec_loss_percent: Expected loss, %, the encoder protects against with
            in-band FEC when the peer says ``useinbandfec=1``.
        peer_fmtp: The peer's ``a=fmtp`` parameters (set by :meth:`for_stream`).

    Raises:
        ValueError: An argument is out of range.
    """

    encoding_name = "opus"
    clock_rate = 48000
    channels = 2
    stateful = True
    constant_bitrate = False

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        payload_type: int = 96,
        bitrate: int = 32000,
        complexity: int = 5,
        fec_loss_percent: int = 10,
        peer_fmtp: str | None = None,
    ) -> None:
        if sample_rate not in OPUS_SAMPLE_RATES:
            raise ValueError(
                f"Opus sample rate must be one of {OPUS_SAMPLE_RATES}, got {sample_rate}"
            )
        if not 96 <= payload_type <= 127:
            raise ValueError(f"payload_type {payload_type} is not dynamic (96-127)")
        if not 6000 <= bitrate <= 510000:
            raise ValueError(f"Opus bitrate must be 6000-510000 bit/s, got {bitrate}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity must be 0-10, got {complexity}")
        if not 0 <= fec_loss_percent <= 100:
            raise ValueError(f"fec_loss_percent must be 0-100, got {fec_loss_percent}")
        self.sample_rate = sample_rate
        self.payload_type = payload_type
        self.bitrate = bitrate
        self.complexity = complexity
        self.fec_loss_percent = fec_loss_percent
        self.peer_fmtp = peer_fmtp
        # RFC 7587 s.6.1: what we can receive (our decoder's rate, mono, FEC welcome)
        # and what we send (sprop-*: captured at our rate, mono).
        self.fmtp = (
            f"maxplaybackrate={sample_rate};sprop-maxcapturerate={sample_rate};"
            "stereo=0;sprop-stereo=0;useinbandfec=1"
        )
        self.invalid_payloads = 0
        self._max_samples = sample_rate * _MAX_PACKET_MS // 1000
        self._frame_sizes = frozenset(sample_rate * half // 2000 for half in _FRAME_HALF_MS)
        self._last_samples = sample_rate // 50  # 20 ms until a packet says otherwise
        self._encoder: opuslib_next.Encoder | None = None
        self._decoder: opuslib_next.Decoder | None = None

    # --- per-stream objects ----------------------------------------------------------

    def for_stream(self, fmtp: str | None = None) -> OpusCodec:
        """Return a new Opus object for one RTP stream, its encoder set up for ``fmtp``.

        Args:
            fmtp: The peer's ``a=fmtp`` for the negotiated payload type (RFC 7587
                s.6.1), or None: ``useinbandfec=1`` turns on in-band FEC,
                ``maxplaybackrate`` limits the coded band, ``maxaveragebitrate``
                caps the bitrate, ``cbr=1`` turns VBR off. Other parameters
                (``usedtx``, ``stereo``: we always send mono) are ignored.
        """
        return OpusCodec(
            self.sample_rate,
            payload_type=self.payload_type,
            bitrate=self.bitrate,
            complexity=self.complexity,
            fec_loss_percent=self.fec_loss_percent,
            peer_fmtp=fmtp,
        )

    def _new_encoder(self) -> opuslib_next.Encoder:
        encoder = opuslib_next.Encoder(self.sample_rate, 1, opuslib_next.APPLICATION_VOIP)
        params = parse_fmtp(self.peer_fmtp)
        bitrate = self.bitrate
        peer_max = _int_param(params, "maxaveragebitrate", 6000, 510000)
        if peer_max is not None:
            bitrate = min(bitrate, peer_max)
        encoder.bitrate = bitrate
        encoder.complexity = self.complexity
        encoder.signal = opuslib_next.SIGNAL_VOICE
        playback = _int_param(params, "maxplaybackrate", 8000, 48000)
        if playback is not None:
            band = next((bw for rate, bw in _BANDWIDTHS if playback <= rate), None)
            if band is not None:
                encoder.max_bandwidth = band
        if params.get("cbr") == "1":
            encoder.vbr = 0
        if params.get("useinbandfec") == "1" and self.fec_loss_percent:
            encoder.inband_fec = 1
            encoder.packet_loss_perc = self.fec_loss_percent
        return encoder

    def _dec(self) -> opuslib_next.Decoder:
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = opuslib_next.Decoder(self.sample_rate, 1)
        return decoder

    @property
    def inband_fec(self) -> bool:
        """Whether this object's encoder adds in-band FEC (the peer asked for it)."""
        if self._encoder is None:
            self._encoder = self._new_encoder()
        return bool(self._encoder.inband_fec)

    # --- encoding --------------------------------------------------------------------

    def encode(self, pcm: bytes) -> bytes:
        """Encode one Opus frame of PCM16 little-endian mono at ``sample_rate``.

        Raises:
            ValueError: ``pcm`` is not 2.5, 5, 10, 20, 40 or 60 ms of whole samples.
        """
        samples, odd = divmod(len(pcm), 2)
        if odd or samples not in self._frame_sizes:
            raise ValueError(
                f"an Opus frame is 2.5, 5, 10, 20, 40 or 60 ms of PCM16 at {self.sample_rate} Hz; "
                f"got {len(pcm)} bytes"
            )
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = self._new_encoder()
        try:
            return opuslib_next.api.encoder.encode(
                encoder.encoder_state, bytes(pcm), samples, _MAX_PACKET_BYTES
            )
        except opuslib_next.OpusError as exc:  # not reached with valid sizes
            raise ValueError(f"Opus encoder failed: {exc}") from None

    def silence(self, samples: int) -> bytes:
        """Encode one frame of ``samples`` samples of silence through this stream's encoder.

        libopus codes digital silence in a few bytes; going through the
        stream's encoder keeps its prediction in step with the far decoder.

        Raises:
            ValueError: ``samples`` is not an Opus frame size at ``sample_rate``.
        """
        return self.encode(bytes(2 * samples))

    # --- decoding --------------------------------------------------------------------

    def decode(self, payload: bytes) -> bytes:
        """Decode one Opus packet (up to 120 ms) into PCM16 mono at ``sample_rate``.

        A payload libopus rejects (or an empty one) counts in
        :attr:`invalid_payloads` and gives libopus's concealment for the
        duration of the last good packet instead.
        """
        if payload:
            try:
                pcm = _opus_decoder.decode(
                    self._dec().decoder_state,
                    bytes(payload),
                    len(payload),
                    self._max_samples,
                    False,
                    channels=1,
                )
            except opuslib_next.OpusError:
                pass
            else:
                if pcm:
                    self._last_samples = len(pcm) // 2
                    return pcm
        self.invalid_payloads += 1
        return self.conceal(self._last_samples)

    def _check_samples(self, samples: int) -> None:
        if not 0 < samples <= self._max_samples or (samples * 400) % self.sample_rate:
            raise ValueError(
                f"Opus conceals multiples of 2.5 ms up to {_MAX_PACKET_MS} ms; "
                f"got {samples} samples at {self.sample_rate} Hz"
            )

    def conceal(self, samples: int) -> bytes:
        """Return libopus's packet loss concealment for ``samples`` lost samples.

        Args:
            samples: Samples at ``sample_rate``: a multiple of 2.5 ms, at most 120 ms.

        Raises:
            ValueError: ``samples`` is not such a length.
        """
        self._check_samples(samples)
        return _opus_decoder.decode(self._dec().decoder_state, None, 0, samples, False, channels=1)

    @staticmethod
    def packet_seconds(payload: bytes) -> float | None:
        """The audio time one Opus packet holds, from its TOC byte (RFC 6716 s.3.1, s.3.2).

        Frame size by configuration (SILK 10-60 ms, hybrid 10/20 ms, CELT
        2.5-20 ms) times the frame count (code 0: one, 1 and 2: two, 3: the
        count byte's M). Nothing is decoded.

        Args:
            payload: An Opus packet.

        Returns:
            Seconds, or None for a packet too short to say (empty, or code 3
            without its count byte).
        """
        if not payload:
            return None
        toc = payload[0]
        config = toc >> 3
        if config < 12:
            frame_ms = (10.0, 20.0, 40.0, 60.0)[config & 0x03]
        elif config < 16:
            frame_ms = (10.0, 20.0)[config & 0x01]
        else:
            frame_ms = (2.5, 5.0, 10.0, 20.0)[config & 0x03]
        code = toc & 0x03
        if code == 0:
            frames = 1
        elif code < 3:
            frames = 2
        elif len(payload) < 2:
            return None
        else:
            frames = payload[1] & 0x3F
        return frame_ms * frames / 1000.0

    @staticmethod
    def has_fec(payload: bytes) -> bool:
        """Whether an Opus packet carries in-band FEC (SILK LBRR) for the frame before it.

        Read from the packet's first bits, without decoding: the TOC byte
        (RFC 6716 s.3.1) says SILK or hybrid mode (CELT-only packets carry
        no FEC), mono, and the frame count; the first SILK frame then starts
        with one VAD flag per 20 ms SILK frame and the LBRR flag (RFC 6716
        s.4.2.3, s.4.2.4), each one bit of equal probability, which the
        range coder (s.4.1) puts as the leading bits of the frame's first
        byte. Stereo packets (mid and side flags) are not read: False.

        Args:
            payload: An Opus packet.

        Returns:
            True when the LBRR flag of the packet's first frame is set.
        """
        size = len(payload)
        if size < 2:
            return False
        toc = payload[0]
        config = toc >> 3
        if config >= 16 or toc & 0x04:  # CELT-only, or stereo
            return False
        code = toc & 0x03
        offset = 1
        if code == 2:  # two frames, the first one's length coded (s.3.2.1)
            offset += 1 if payload[1] < 252 else 2
        elif code == 3:  # frame count byte, optional padding and lengths (s.3.2.5)
            return False  # rare in RTP; not worth the parse for a statistics hint
        if offset >= size:
            return False
        if config >= 12:  # hybrid: 10 or 20 ms, one SILK frame
            vad_flags = 1
        else:  # SILK: 10, 20, 40, 60 ms -> 1, 1, 2, 3 SILK frames
            vad_flags = (1, 1, 2, 3)[config & 0x03]
        return bool(payload[offset] & (0x80 >> vad_flags))

    def decode_fec(self, payload: bytes, samples: int) -> bytes:
        """Recover the packet lost just before ``payload`` from its in-band FEC.

        libopus conceals instead when ``payload`` carries no FEC (the peer
        sends none, or the packet is CELT-only). Decode ``payload`` itself with
        :meth:`decode` afterwards.

        Args:
            payload: The packet received after the loss.
            samples: Samples at ``sample_rate`` the lost packet held: a multiple
                of 2.5 ms, at most 120 ms.

        Raises:
            ValueError: ``samples`` is not such a length.
        """
        self._check_samples(samples)
        if payload:
            try:
                return _opus_decoder.decode(
                    self._dec().decoder_state, bytes(payload), len(payload), samples, True,
                    channels=1,
                )  # fmt: skip
            except opuslib_next.OpusError:
                pass
        self.invalid_payloads += 1
        return self.conceal(samples)
