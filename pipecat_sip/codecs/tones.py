"""In-band DTMF (ITU-T Q.23 tone pairs) for peers without telephone-event.

:func:`dtmf_tone` synthesizes the two-frequency tone of one key as PCM16;
:func:`detect_dtmf` finds the key in a block of PCM16 (a DFT at the eight
Q.23 frequencies), for tests and recordings. Pure numpy, no I/O.
"""

import numpy as np

__all__ = ["DTMF_FREQUENCIES", "DTMF_KEYS", "detect_dtmf", "dtmf_tone"]

_LOW_HZ = (697, 770, 852, 941)
_HIGH_HZ = (1209, 1336, 1477, 1633)
_KEYPAD = ("123A", "456B", "789C", "*0#D")

DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (_LOW_HZ[row], _HIGH_HZ[col])
    for row, keys in enumerate(_KEYPAD)
    for col, key in enumerate(keys)
}
"""Key -> (low group Hz, high group Hz), ITU-T Q.23."""

DTMF_KEYS = "".join(sorted(DTMF_FREQUENCIES))
"""Every key with a Q.23 tone pair: digits, ``*``, ``#`` and ``A``-``D``."""

# Peak amplitudes in 16-bit PCM: G.711 puts 0 dBm0 at a sine peak of about
# 22786, so these are about -9 dBm0 (low group) and -7 dBm0 (high group, the
# customary positive twist). Both together peak near -5 dBFS: no clipping.
_LOW_AMPLITUDE = 8080.0
_HIGH_AMPLITUDE = 10170.0
_RAMP_MS = 2.0  # raised-cosine fade in and out, against clicks


def dtmf_tone(key: str, duration_ms: int, sample_rate: int = 8000) -> bytes:
    """Return the Q.23 tone of one key as PCM16 little-endian mono.

    Args:
        key: ``"0"``-``"9"``, ``"*"``, ``"#"`` or ``"A"``-``"D"``
            (case-insensitive).
        duration_ms: Tone length in ms (Q.24 receivers want at least 40 ms).
        sample_rate: PCM rate in Hz.

    Returns:
        ``duration_ms * sample_rate // 1000`` samples (two bytes each).

    Raises:
        ValueError: Unknown key, negative duration or a sample rate too low
            for the 1633 Hz tone.
    """
    freqs = DTMF_FREQUENCIES.get(key.upper())
    if freqs is None:
        raise ValueError(f"no DTMF tone for key {key!r}")
    if duration_ms < 0:
        raise ValueError(f"DTMF tone duration must not be negative, got {duration_ms} ms")
    if sample_rate < 4000:
        raise ValueError(f"sample rate {sample_rate} Hz is too low for DTMF tones")
    n = duration_ms * sample_rate // 1000
    t = np.arange(n) / sample_rate
    low, high = freqs
    signal = _LOW_AMPLITUDE * np.sin(2 * np.pi * low * t) + _HIGH_AMPLITUDE * np.sin(
        2 * np.pi * high * t
    )
    ramp = min(int(_RAMP_MS * sample_rate / 1000), n // 2)
    if ramp:
        fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        signal[:ramp] *= fade
        signal[n - ramp :] *= fade[::-1]
    return np.round(signal).astype("<i2").tobytes()


def detect_dtmf(pcm: bytes, sample_rate: int = 8000, *, min_level: float = 500.0) -> str | None:
    """Return the DTMF key whose tone pair dominates ``pcm``, if any.

    The block is analysed as a whole, so pass one tone's worth of audio
    (40-200 ms); it is a check for tests and recordings, not a streaming
    Q.24 receiver.

    Args:
        pcm: PCM16 little-endian mono.
        sample_rate: PCM rate in Hz.
        min_level: Smallest peak amplitude (16-bit PCM units) either tone
            must reach.

    Returns:
        The key, or None when no single pair carries most of the energy.
    """
    x = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2").astype(np.float64)
    if len(x) < sample_rate // 100:
        return None
    n = np.arange(len(x))
    freqs = np.array(_LOW_HZ + _HIGH_HZ, dtype=np.float64)
    basis = np.exp(-2j * np.pi * np.outer(freqs, n) / sample_rate)
    amplitude = 2.0 * np.abs(basis @ x) / len(x)  # peak amplitude at each frequency
    low, high = amplitude[:4], amplitude[4:]
    row, col = int(np.argmax(low)), int(np.argmax(high))
    if min(low[row], high[col]) < min_level:
        return None
    # The pair must carry most of the signal's power: a sine of peak A has power A**2 / 2.
    pair_power = (low[row] ** 2 + high[col] ** 2) / 2.0
    if pair_power < 0.5 * float(np.mean(x * x)):
        return None
    # And stand well clear (6 dB) of the other frequencies of its group.
    if np.sort(low)[-2] * 2 > low[row] or np.sort(high)[-2] * 2 > high[col]:
        return None
    return _KEYPAD[row][col]
