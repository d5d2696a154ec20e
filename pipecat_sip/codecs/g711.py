"""G.711 mu-law and A-law (ITU-T G.711) with numpy lookup tables.

Encoding maps each 16-bit linear sample through a 65536-entry table indexed by
the sample's bit pattern (the int16 viewed as uint16); decoding maps each
8-bit code through a 256-entry table. The tables are computed once at import
from the segment rules of G.711 (the same rules as the classic Sun reference
code that CPython's ``audioop`` implements), so results match ``audioop``
bit for bit.

All functions take and return ``bytes``: PCM is 16-bit signed little-endian
mono, payloads are one byte per sample.
"""

import numpy as np

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

_PCM16 = np.dtype("<i2")

# G.711 segment end points, in the magnitude domain each law quantizes.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])

_ULAW_BIAS = 0x84  # 132: the mu-law bias in the 16-bit domain
_ULAW_CLIP = 8159  # largest 14-bit magnitude mu-law represents


def _all_int16() -> np.ndarray:
    """Every int16 value, ordered by its uint16 bit pattern (index == pattern)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> np.ndarray:
    x = _all_int16() >> 2  # 14-bit linear
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag)  # first segment whose end >= mag
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(_PCM16)


def _alaw_encode_table() -> np.ndarray:
    x = _all_int16() >> 3  # 13-bit linear
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag)
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(_PCM16)


ULAW_ENCODE = _ulaw_encode_table()
"""uint8[65536]: mu-law code of each int16 sample, indexed by its uint16 pattern."""
ULAW_DECODE = _ulaw_decode_table()
"""int16[256]: linear value of each mu-law code."""
ALAW_ENCODE = _alaw_encode_table()
"""uint8[65536]: A-law code of each int16 sample, indexed by its uint16 pattern."""
ALAW_DECODE = _alaw_decode_table()
"""int16[256]: linear value of each A-law code."""

ULAW_SILENCE = 0xFF
"""The mu-law code for linear 0."""
ALAW_SILENCE = 0xD5
"""The A-law code for linear 0 (decodes to +8, the smallest A-law magnitude)."""

for _table in (ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE):
    _table.flags.writeable = False


def _samples(pcm: bytes) -> np.ndarray:
    if len(pcm) & 1:
        raise ValueError(f"PCM16 data has an odd length ({len(pcm)} bytes)")
    return np.frombuffer(pcm, dtype="<u2")


def ulaw_encode(pcm: bytes) -> bytes:
    """Encode PCM16 little-endian mono to mu-law, one byte per sample.

    Raises:
        ValueError: ``pcm`` has an odd number of bytes.
    """
    return ULAW_ENCODE.take(_samples(pcm)).tobytes()


def ulaw_decode(payload: bytes) -> bytes:
    """Decode mu-law bytes to PCM16 little-endian mono (two bytes per code)."""
    return ULAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8)).tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """Encode PCM16 little-endian mono to A-law, one byte per sample.

    Raises:
        ValueError: ``pcm`` has an odd number of bytes.
    """
    return ALAW_ENCODE.take(_samples(pcm)).tobytes()


def alaw_decode(payload: bytes) -> bytes:
    """Decode A-law bytes to PCM16 little-endian mono (two bytes per code)."""
    return ALAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8)).tobytes()
