"""Test audio: generate WAV/G.711 files for peers to play and analyse what they heard.

All WAV files are mono, 16-bit signed little-endian PCM. Sample arrays are
``numpy.int16`` of shape ``(n,)``; frequencies are in Hz, durations in seconds.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from tests.helpers.peers import require_binary

_TOOL_TIMEOUT_S = 30.0


def tone(freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> np.ndarray:
    """Return a sine tone as int16 samples.

    Args:
        freq_hz: Tone frequency, Hz.
        seconds: Duration, s.
        rate: Sample rate, Hz.
        amplitude: Peak amplitude as a fraction of full scale (0..1).

    Returns:
        int16 array of ``round(seconds * rate)`` samples.
    """
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    return np.round(amplitude * 32767.0 * np.sin(2.0 * np.pi * freq_hz * t)).astype(np.int16)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 8000) -> Path:
    """Write int16 mono samples as a WAV file.

    Args:
        path: Output file.
        samples: Samples, shape ``(n,)``; converted to int16.
        rate: Sample rate, Hz.

    Returns:
        The path written.
    """
    path = Path(path)
    data = np.asarray(samples).astype("<i2", copy=False)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def write_tone_wav(
    path: str | Path, freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5
) -> Path:
    """Write a sine tone WAV (8 kHz mono 16-bit by default, what baresip's aufile wants).

    Args:
        path: Output file.
        freq_hz: Tone frequency, Hz.
        seconds: Duration, s.
        rate: Sample rate, Hz.
        amplitude: Peak amplitude as a fraction of full scale.

    Returns:
        The path written.
    """
    return write_wav(path, tone(freq_hz, seconds, rate, amplitude), rate)


def write_silence_padded_wav(
    path: str | Path,
    source: np.ndarray | str | Path,
    *,
    rate: int = 8000,
    lead_s: float = 0.0,
    total_s: float | None = None,
) -> Path:
    """Write ``source`` with silence before it and after it up to ``total_s``.

    baresip hangs up when its aufile source ends, so a WAV meant to last a call
    is padded to the call's length.

    Args:
        path: Output file.
        source: int16 samples at ``rate``, or a mono 16-bit WAV file at ``rate``.
        rate: Sample rate, Hz.
        lead_s: Silence before the sound, s.
        total_s: Total length, s; silence is appended up to it (never truncated).

    Returns:
        The path written.

    Raises:
        ValueError: ``source`` is a WAV file with a different sample rate.
    """
    if isinstance(source, (str, Path)):
        samples, src_rate = read_wav(source)
        if src_rate != rate:
            raise ValueError(f"{source}: sample rate {src_rate} Hz, expected {rate} Hz")
    else:
        samples = np.asarray(source).astype(np.int16, copy=False)
    lead = np.zeros(int(round(lead_s * rate)), dtype=np.int16)
    out = np.concatenate([lead, samples])
    if total_s is not None:
        missing = int(round(total_s * rate)) - out.size
        if missing > 0:
            out = np.concatenate([out, np.zeros(missing, dtype=np.int16)])
    return write_wav(path, out, rate)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV file.

    Args:
        path: WAV file.

    Returns:
        ``(samples, rate)``: int16 array of shape ``(n,)`` (first channel if the
        file has more) and the sample rate in Hz.

    Raises:
        ValueError: The file is not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit")
        channels = w.getnchannels()
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels].reshape(-1, channels)[:, 0]
    return samples.copy(), rate


def rms(samples: np.ndarray) -> float:
    """Return the RMS level of the samples in int16 units (0 for an empty array)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(x * x)))


def _power_spectrum(samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(samples, dtype=np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, d=1.0 / rate)
    return freqs, spectrum


def tone_energy_ratio(
    samples: np.ndarray, rate: int, freq_hz: float, bandwidth_hz: float = 50.0
) -> float:
    """Return the share of the signal's energy within ``freq_hz +- bandwidth_hz``.

    Uses a Hann-windowed FFT over the whole array; DC is removed first.

    Args:
        samples: int16 (or float) samples, shape ``(n,)``.
        rate: Sample rate, Hz.
        freq_hz: Frequency of interest, Hz.
        bandwidth_hz: Half-width of the band counted as the tone, Hz.

    Returns:
        A ratio in 0..1; 0.0 for fewer than 2 samples or pure silence.
    """
    if np.asarray(samples).size < 2:
        return 0.0
    freqs, power = _power_spectrum(samples, rate)
    total = float(power.sum())
    if total <= 0.0:
        return 0.0
    band = np.abs(freqs - freq_hz) <= bandwidth_hz
    return float(power[band].sum()) / total


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Return the frequency (Hz) of the strongest FFT bin, DC excluded (0.0 if silent)."""
    if np.asarray(samples).size < 2:
        return 0.0
    freqs, power = _power_spectrum(samples, rate)
    power[0] = 0.0
    if float(power.max()) <= 0.0:
        return 0.0
    return float(freqs[int(np.argmax(power))])


def _run_tool(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


def speech_wav(path: str | Path, text: str, rate: int = 8000) -> Path:
    """Synthesize ``text`` with espeak-ng and convert it to mono 16-bit WAV at ``rate``.

    Skips the calling test when espeak-ng or sox is not installed.

    Args:
        path: Output file.
        text: Text to speak.
        rate: Output sample rate, Hz.

    Returns:
        The path written.

    Raises:
        RuntimeError: espeak-ng or sox failed.
    """
    espeak = require_binary("espeak-ng")
    sox = require_binary("sox")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        _run_tool([espeak, "-w", str(raw), text])
        _run_tool([sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)])
    return path


def write_pcmu_file(
    path: str | Path,
    *,
    source_wav: str | Path | None = None,
    freq_hz: float = 1000.0,
    seconds: float = 10.0,
    amplitude: float = 0.5,
) -> Path:
    """Write a headerless 8 kHz G.711 mu-law file (what SIPp's ``rtp_stream`` plays).

    Converts ``source_wav`` if given, otherwise synthesizes a sine tone, with sox.
    Skips the calling test when sox is not installed.

    Args:
        path: Output file (``.ulaw``).
        source_wav: A WAV file to convert (any rate; resampled to 8 kHz mono).
        freq_hz: Tone frequency when no source is given, Hz.
        seconds: Tone duration when no source is given, s.
        amplitude: Tone amplitude (fraction of full scale) when no source is given.

    Returns:
        The path written.

    Raises:
        RuntimeError: sox failed.
    """
    sox = require_binary("sox")
    path = Path(path)
    out = ["-r", "8000", "-c", "1", "-t", "ul", str(path)]
    if source_wav is not None:
        _run_tool([sox, str(source_wav), *out])
    else:
        synth = ["synth", f"{seconds:g}", "sine", f"{freq_hz:g}", "vol", f"{amplitude:g}"]
        _run_tool([sox, "-n", *out, *synth])
    return path
