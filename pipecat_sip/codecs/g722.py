"""G.722 wideband audio (ITU-T G.722, 64 kbit/s) over the ``g722`` package.

G.722 codes 16 kHz audio (50-7000 Hz) as sub-band ADPCM: one byte for every
two samples, so 20 ms is 320 samples and 160 bytes. Its RTP clock is 8000 Hz
although the audio is 16000 Hz, and its static payload type is 9 (RFC 3551
s.4.5.2; the clock was mis-stated in RFC 1890 and kept for compatibility).

ADPCM has state: the encoder and the far decoder adapt together, so each RTP
stream needs its own :class:`G722Codec` from :meth:`G722Codec.for_stream`.

The ``g722`` package (import name ``G722``, sippy/libg722) is Steve Underwood's
bit-exact implementation that passes the ITU test sequences; the tests check
it against libspandsp's G.722 (what baresip uses) bit for bit.
"""

from __future__ import annotations

import numpy as np
from G722 import G722 as _G722State

from pipecat_sip.codecs.base import Codec

__all__ = ["G722Codec"]

_BIT_RATE = 64000  # RFC 3551 s.4.5.2: the RTP payload format is the 64 kbit/s mode


class G722Codec(Codec):
    """G.722 at 64 kbit/s: 16 kHz PCM, 8000 Hz RTP clock, payload type 9.

    Each object holds one encoder and one decoder state. The registry's object
    works on its own (for tools and tests); calls use :meth:`for_stream`.

    Example:
        >>> stream = G722Codec().for_stream()
        >>> len(stream.encode(bytes(640)))  # 20 ms: 320 samples -> 160 bytes
        160
        >>> len(stream.decode(bytes(160)))  # 160 bytes -> 320 samples
        640
    """

    encoding_name = "G722"
    payload_type = 9
    clock_rate = 8000
    sample_rate = 16000

    stateful = True

    def __init__(self) -> None:
        self._state: _G722State | None = None

    def _codec(self) -> _G722State:
        state = self._state
        if state is None:
            # use_numpy=False: the default looks for the optional G722_numpy
            # module on every construction (a failed import: ~130 us of path
            # searches a stream); the output types are the same either way.
            state = self._state = _G722State(self.sample_rate, _BIT_RATE, use_numpy=False)
        return state

    def for_stream(self, fmtp: str | None = None) -> G722Codec:
        """Return a new G.722 object with fresh encoder and decoder state (``fmtp`` unused)."""
        return G722Codec()

    def encode(self, pcm: bytes) -> bytes:
        """Encode PCM16 little-endian mono at 16 kHz: two samples become one byte.

        Raises:
            ValueError: ``pcm`` is not a whole number of sample pairs (4 bytes).
        """
        if len(pcm) & 3:
            raise ValueError(
                f"G.722 codes sample pairs: PCM16 length must be a multiple of 4, got {len(pcm)}"
            )
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)
        return self._codec().encode(samples)

    def decode(self, payload: bytes) -> bytes:
        """Decode G.722 bytes into PCM16 little-endian mono at 16 kHz (two samples a byte)."""
        if not payload:
            return b""
        decoded = self._codec().decode(bytes(payload))
        return np.asarray(decoded, dtype=np.int16).astype("<i2", copy=False).tobytes()

    def silence(self, samples: int) -> bytes:
        """Encode ``samples`` samples of silence through this stream's encoder.

        Not cacheable: the codes depend on the ADPCM state, and one packet of
        silence sent over and over drifts the far decoder to a DC offset. Call
        it for every silent packet so our encoder and the far decoder stay in
        step.

        Raises:
            ValueError: ``samples`` is odd or negative.
        """
        if samples < 0:
            raise ValueError(f"samples must not be negative, got {samples}")
        return self.encode(bytes(2 * samples))
