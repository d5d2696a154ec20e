"""Concealer (G.711 Appendix I style PLC): joins, level over a loss, pitch, rates."""

import numpy as np
import pytest

from pipecat_sip.rtp.plc import Concealer


def voiced(rate, seconds, f0, glide=0.0):
    """A vowel-like signal: six harmonics of f0 (optionally gliding by `glide` Hz/s)."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + 0.5 * glide * t * t)
    x = sum((0.6**k) * np.sin((k + 1) * phase + k) for k in range(6))
    return (x * 8000).astype("<i2")


def frames_of(pcm, n):
    return [pcm[i : i + n].tobytes() for i in range(0, len(pcm) - n + 1, n)]


def as_array(data):
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


def dominant_period(x, lo, hi):
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1 :]
    return lo + int(np.argmax(ac[lo : hi + 1]))


def test_good_frames_pass_through_untouched():
    concealer = Concealer(8000, 160)
    frame = voiced(8000, 0.02, 150).tobytes()
    assert concealer.good(frame) is frame
    assert not concealer.concealing


def test_conceal_before_any_speech_is_silence():
    concealer = Concealer(8000, 160)
    assert concealer.conceal() == bytes(320)
    assert concealer.concealing


@pytest.mark.parametrize("f0", [110.0, 125.0, 180.0])
def test_pitch_is_preserved_on_a_voiced_signal(f0):
    pcm = voiced(8000, 1.0, f0)
    frames = frames_of(pcm, 160)
    concealer = Concealer(8000, 160)
    for frame in frames[:20]:
        concealer.good(frame)
    out = as_array(concealer.conceal())
    true = pcm[20 * 160 : 21 * 160].astype(np.float64)
    # The first 10 ms follow the true continuation (same period and phase).
    assert np.corrcoef(out[:80], true[:80])[0, 1] > 0.95
    period = 8000 / f0
    if period < 40:  # above 200 Hz it repeats two periods
        period *= 2
    assert abs(dominant_period(out, 30, 130) - period) <= 1.0


def kink(x, i):
    """Second difference at sample i: how much the slope changes there."""
    return abs(x[i + 1] - 2 * x[i] + x[i - 1])


@pytest.mark.parametrize("glide", [0.0, 40.0, 100.0])
def test_continuity_at_the_start_and_end_of_a_loss(glide):
    """No click at the joins: the slope changes no more than the signal's own do.

    A gliding pitch (vibrato) makes a plain period repeat jump at the join;
    the start join's kink must be smaller than a plain repeat's on average.
    """
    pcm = voiced(8000, 2.0, 120.0, glide=glide)
    frames = frames_of(pcm, 160)
    own = np.percentile(np.abs(np.diff(pcm.astype(np.float64), 2)), 99.5)
    ours, plain = [], []
    for at in range(10, 90, 2):
        for lost in (1, 3):
            concealer = Concealer(8000, 160)
            played = [as_array(concealer.good(f)) for f in frames[:at]]
            played += [as_array(concealer.conceal()) for _ in range(lost)]
            played.append(as_array(concealer.good(frames[at + lost])))
            signal = np.concatenate(played)
            start, end = at * 160 - 1, (at + lost) * 160 - 1
            assert kink(signal, start) <= own and kink(signal, end) <= own, (at, lost)
            if lost == 1:
                history = signal[: at * 160]
                repeat = np.concatenate([history, history[-concealer_pitch(frames[:at]) :]])
                ours.append(kink(signal, start))
                plain.append(kink(repeat, start))
    assert np.mean(ours) < 0.8 * np.mean(plain)


def concealer_pitch(frames):
    concealer = Concealer(8000, 160)
    for f in frames:
        concealer.good(f)
    concealer.conceal()
    return concealer._pitch


def test_level_decays_to_silence_after_60_ms():
    pcm = voiced(8000, 1.0, 125.0)
    frames = frames_of(pcm, 80)  # 10 ms frames, to see the steps
    concealer = Concealer(8000, 80)
    for f in frames[:40]:
        concealer.good(f)
    # Against the signal's own level in each 10 ms block (its period repeats).
    true = pcm[40 * 80 :].astype(np.float64)
    levels = [
        rms(as_array(concealer.conceal())) / rms(true[k * 80 : (k + 1) * 80]) for k in range(8)
    ]
    # 10 ms at full level, then -20% per 10 ms (linear), silence from 60 ms on.
    expected = [1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0, 0.0]
    assert levels == pytest.approx(expected, abs=0.05)
    assert all(a > b for a, b in zip(levels[:6], levels[1:6], strict=False))


def test_first_good_frame_after_a_long_loss_fades_in():
    pcm = voiced(8000, 1.0, 125.0)
    frames = frames_of(pcm, 160)
    concealer = Concealer(8000, 160)
    for f in frames[:10]:
        concealer.good(f)
    levels = [rms(as_array(concealer.conceal())) for _ in range(5)]
    assert levels[3:] == [0.0, 0.0]  # 100 ms: silent since 60 ms
    back = as_array(concealer.good(frames[15]))
    original = as_array(frames[15])
    overlap = 80  # 10 ms: 4 ms + 4 ms per further 10 ms lost, at most 10 ms
    ramp = (np.arange(overlap) + 1) / (overlap + 1)
    assert np.allclose(back[:overlap], np.rint(original[:overlap] * ramp), atol=1)
    assert np.array_equal(back[overlap:], original[overlap:])
    assert not concealer.concealing
    # The next frame passes untouched again.
    assert concealer.good(frames[16]) is frames[16]


def test_end_overlap_grows_with_the_loss():
    pcm = voiced(8000, 1.0, 125.0)
    frames = frames_of(pcm, 160)
    for lost, overlap in ((1, 64), (2, 80)):  # 20 ms lost: 4 + 4 ms; 40 ms: 10 ms (cap)
        concealer = Concealer(8000, 160)
        for f in frames[:10]:
            concealer.good(f)
        for _ in range(lost):
            concealer.conceal()
        back = as_array(concealer.good(frames[10 + lost]))
        original = as_array(frames[10 + lost])
        assert np.array_equal(back[overlap:], original[overlap:])
        assert not np.array_equal(back[overlap - 1 : overlap], original[overlap - 1 : overlap])


def test_wideband():
    pcm = voiced(16000, 1.0, 200.0)
    frames = frames_of(pcm, 320)
    concealer = Concealer(16000, 320)
    for f in frames[:20]:
        concealer.good(f)
    out = as_array(concealer.conceal())
    assert len(out) == 320
    true = pcm[20 * 320 : 21 * 320].astype(np.float64)
    assert np.corrcoef(out[:160], true[:160])[0, 1] > 0.95
    assert abs(dominant_period(out, 60, 250) - 80) <= 1


def test_bad_input():
    concealer = Concealer(8000, 160)
    with pytest.raises(ValueError, match="odd length"):
        concealer.good(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        Concealer(0, 160)
    # Frames of other lengths are fine (history keeps the last 48.75 ms).
    assert len(concealer.good(bytes(40))) == 40
    assert len(concealer.good(bytes(2000))) == 2000
    assert len(concealer.conceal()) == 320
