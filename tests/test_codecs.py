"""Codecs: G.711 against ITU-T G.711 values and the stdlib audioop reference; DTMF tones;
G.722 against libspandsp bit for bit and by its frequency response; Opus (RFC 7587)
with its FEC and concealment; the registry and the configured codec list.
"""

import ast
import ctypes
import ctypes.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soxr

import pipecat_sip.codecs as codecs_module
from pipecat_sip.codecs import (
    G722,
    PCMA,
    PCMU,
    SUPPORTED_CODECS,
    Codec,
    G722Codec,
    UnknownCodecError,
    g711,
    get_codec,
    parse_codec_list,
    register_codec,
    unavailable_codecs,
)
from pipecat_sip.sdp import OPUS_FMTP, create_offer

try:
    from pipecat_sip.codecs.opus import OpusCodec
except Exception:  # the opus extra or libopus is missing: the Opus tests skip
    OpusCodec = None
from pipecat_sip.codecs.tones import DTMF_FREQUENCIES, DTMF_KEYS, detect_dtmf, dtmf_tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # Python 3.11 still ships it (removed in 3.13)

ALL_PCM16 = np.arange(65536, dtype=np.uint32).astype("<u2").tobytes()  # every int16 pattern
ALL_CODES = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples(data: bytes) -> list[int]:
    return np.frombuffer(data, dtype="<i2").tolist()


# --- ITU-T G.711 values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "linear"),
    [
        (0xFF, 0),
        (0x7F, 0),
        (0x00, -32124),
        (0x80, 32124),
        (0xFE, 8),
        (0x7E, -8),
        (0xF0, 120),
        (0xEF, 132),
    ],
)
def test_ulaw_decode_itu_values(code, linear):
    assert samples(PCMU.decode(bytes([code]))) == [linear]


@pytest.mark.parametrize(
    ("code", "linear"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_decode_itu_values(code, linear):
    assert samples(PCMA.decode(bytes([code]))) == [linear]


def test_ulaw_encode_values():
    assert PCMU.encode(pcm(0, 32767, -32768, 8, -8)) == bytes([0xFF, 0x80, 0x00, 0xFE, 0x7E])


def test_alaw_encode_values():
    assert PCMA.encode(pcm(0, -1, 32767, -32768, 8, -9)) == bytes(
        [0xD5, 0x55, 0xAA, 0x2A, 0xD5, 0x55]
    )


# --- bit-exact against audioop -----------------------------------------------------------


def test_ulaw_encode_matches_audioop_for_all_inputs():
    assert PCMU.encode(ALL_PCM16) == audioop.lin2ulaw(ALL_PCM16, 2)
    assert g711.ulaw_encode(ALL_PCM16) == audioop.lin2ulaw(ALL_PCM16, 2)


def test_alaw_encode_matches_audioop_for_all_inputs():
    assert PCMA.encode(ALL_PCM16) == audioop.lin2alaw(ALL_PCM16, 2)
    assert g711.alaw_encode(ALL_PCM16) == audioop.lin2alaw(ALL_PCM16, 2)


def test_ulaw_decode_matches_audioop_for_all_codes():
    assert PCMU.decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_matches_audioop_for_all_codes():
    assert PCMA.decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_tables_shape_dtype_and_read_only():
    for table in (g711.ULAW_ENCODE, g711.ALAW_ENCODE):
        assert table.shape == (65536,) and table.dtype == np.uint8
    for table in (g711.ULAW_DECODE, g711.ALAW_DECODE):
        assert table.shape == (256,) and table.dtype == np.dtype("<i2")
    with pytest.raises(ValueError):
        g711.ULAW_ENCODE[0] = 1


def test_codes_survive_decode_then_encode():
    assert PCMA.encode(PCMA.decode(ALL_CODES)) == ALL_CODES
    # mu-law has two zeros: 0x7F (-0) comes back as 0xFF (+0).
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert PCMU.encode(PCMU.decode(ALL_CODES)) == bytes(expected)


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_quantization_error_is_bounded(codec):
    x = np.frombuffer(ALL_PCM16, dtype="<i2").astype(np.int32)
    y = np.frombuffer(codec.decode(codec.encode(ALL_PCM16)), dtype="<i2").astype(np.int32)
    # G.711 step size is at most 1/16 of the segment (1024 at the top): error <= 1/32 + clip.
    error = np.abs(x - y)
    assert error.max() <= 1100
    assert error[np.abs(x) < 256].max() <= 16


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_accepts_bytearray_and_memoryview(codec):
    data = pcm(100, -100, 5000)
    assert codec.encode(bytearray(data)) == codec.encode(memoryview(data)) == codec.encode(data)


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_odd_length_pcm_is_rejected(codec):
    with pytest.raises(ValueError, match="odd length"):
        codec.encode(b"\x00\x00\x00")


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_empty_input(codec):
    assert codec.encode(b"") == b""
    assert codec.decode(b"") == b""


def test_silence():
    assert PCMU.silence(160) == b"\xff" * 160
    assert PCMA.silence(160) == b"\xd5" * 160
    assert set(samples(PCMU.decode(PCMU.silence(160)))) == {0}
    assert set(samples(PCMA.decode(PCMA.silence(160)))) == {8}  # A-law has no zero
    assert PCMU.encode(bytes(320)) == PCMU.silence(160)
    assert PCMA.encode(bytes(320)) == PCMA.silence(160)


# --- registry ----------------------------------------------------------------------------


def test_static_codec_attributes():
    assert (PCMU.encoding_name, PCMU.payload_type, PCMU.clock_rate, PCMU.sample_rate) == (
        "PCMU",
        0,
        8000,
        8000,
    )
    assert (PCMA.encoding_name, PCMA.payload_type, PCMA.clock_rate, PCMA.sample_rate) == (
        "PCMA",
        8,
        8000,
        8000,
    )


def test_get_codec_is_case_insensitive():
    assert get_codec("PCMU") is PCMU
    assert get_codec("pcmu") is PCMU
    assert get_codec("PcmA") is PCMA


def test_supported_codecs_resolve_in_preference_order():
    assert SUPPORTED_CODECS == ("G722", "PCMU", "PCMA")
    assert [get_codec(name).encoding_name for name in SUPPORTED_CODECS] == list(SUPPORTED_CODECS)


def test_unknown_codec():
    with pytest.raises(UnknownCodecError, match="unknown codec 'G729'") as info:
        get_codec("G729")
    assert isinstance(info.value, KeyError)
    assert "G722, opus, PCMA, PCMU" in str(info.value)


def test_register_codec_plugs_in_a_new_codec(registry):
    class L16(Codec):
        encoding_name = "L16-TEST"
        payload_type = 96
        clock_rate = 8000
        sample_rate = 8000

        def encode(self, pcm: bytes) -> bytes:
            return np.frombuffer(pcm, dtype="<i2").astype(">i2").tobytes()

        def decode(self, payload: bytes) -> bytes:
            return np.frombuffer(payload, dtype=">i2").astype("<i2").tobytes()

    codec = L16()
    register_codec(codec)
    assert get_codec("l16-test") is codec
    assert codec.silence(2) == bytes(4)
    assert codec.decode(codec.encode(pcm(1, -2))) == pcm(1, -2)
    assert "L16-TEST" not in SUPPORTED_CODECS


# --- in-band DTMF tones ------------------------------------------------------------------


def test_q23_frequency_pairs():
    assert DTMF_FREQUENCIES["1"] == (697, 1209)
    assert DTMF_FREQUENCIES["5"] == (770, 1336)
    assert DTMF_FREQUENCIES["9"] == (852, 1477)
    assert DTMF_FREQUENCIES["*"] == (941, 1209)
    assert DTMF_FREQUENCIES["0"] == (941, 1336)
    assert DTMF_FREQUENCIES["#"] == (941, 1477)
    assert DTMF_FREQUENCIES["D"] == (941, 1633)
    assert len(DTMF_KEYS) == 16


@pytest.mark.parametrize("key", list(DTMF_KEYS))
@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_tone_is_detected_through_g711(key, codec):
    tone = dtmf_tone(key, 100, 8000)
    assert len(tone) == 2 * 800
    assert detect_dtmf(codec.decode(codec.encode(tone))) == key


def test_tone_spectrum_peaks_at_its_pair():
    x = np.frombuffer(dtmf_tone("8", 500, 8000), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([852, 1336], abs=2)


def test_tone_level_and_ramps():
    x = np.frombuffer(dtmf_tone("D", 200, 8000), dtype="<i2").astype(int)
    assert 15000 < np.abs(x).max() < 32767  # loud enough, never clipped
    assert abs(x[0]) < 100 and abs(x[-1]) < 2000  # faded in and out


def test_tone_other_rates_and_lowercase():
    assert len(dtmf_tone("a", 40, 16000)) == 2 * 640
    assert detect_dtmf(dtmf_tone("a", 60, 16000), 16000) == "A"
    assert dtmf_tone("#", 0) == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("E", 100), "no DTMF tone"),
        (("1", -1), "must not be negative"),
        (("1", 100, 2000), "too low"),
    ],
)
def test_tone_errors(args, message):
    with pytest.raises(ValueError, match=message):
        dtmf_tone(*args)


def test_detect_rejects_silence_noise_and_single_tones():
    assert detect_dtmf(bytes(1600)) is None
    noise = np.random.default_rng(1).normal(0, 4000, 800).astype("<i2").tobytes()
    assert detect_dtmf(noise) is None
    t = np.arange(800) / 8000
    single = (10000 * np.sin(2 * np.pi * 697 * t)).astype("<i2").tobytes()
    assert detect_dtmf(single) is None
    assert detect_dtmf(b"\x01") is None


# --- stream objects -----------------------------------------------------------------------


def test_g711_is_stateless_and_has_no_plc_or_fec():
    for codec in (PCMU, PCMA):
        assert codec.for_stream() is codec
        assert codec.for_stream("anything=1") is codec
        assert codec.conceal(160) is None
        assert codec.decode_fec(bytes(160), 160) is None
        assert (codec.channels, codec.fmtp, codec.invalid_payloads) == (1, None, 0)


# --- G.722 ---------------------------------------------------------------------------------


def tone16(freq: float, seconds: float = 1.0, amplitude: float = 0.5, rate: int = 16000):
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")


def g722_round_trip(x: np.ndarray) -> np.ndarray:
    """Encode and decode in 20 ms packets through one stream, as a call does."""
    enc, dec = G722.for_stream(), G722.for_stream()
    out = [dec.decode(enc.encode(x[i : i + 320].tobytes())) for i in range(0, len(x), 320)]
    return np.frombuffer(b"".join(out), dtype="<i2")


def aligned_snr_db(x: np.ndarray, y: np.ndarray, max_delay: int = 64) -> tuple[float, int]:
    """SNR of y against x at the delay (samples) that fits best; first 0.1 s skipped."""
    x = x.astype(float)
    y = y.astype(float)
    start, n = len(x) // 10, len(x) - len(x) // 10 - max_delay
    best = max(
        range(max_delay),
        key=lambda d: -np.sum((y[start + d : start + d + n] - x[start : start + n]) ** 2),
    )
    err = y[start + best : start + best + n] - x[start : start + n]
    return 10 * np.log10(np.sum(x[start : start + n] ** 2) / np.sum(err**2)), best


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def band_share(x: np.ndarray, rate: int, freq: float, width: float = 100.0) -> float:
    """Share of the signal's energy within ``width`` Hz of ``freq``."""
    spectrum = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[np.abs(freqs - freq) <= width].sum() / max(spectrum.sum(), 1e-9))


def test_g722_attributes_rfc3551():
    assert (G722.encoding_name, G722.payload_type, G722.clock_rate, G722.sample_rate) == (
        "G722",
        9,
        8000,
        16000,
    )
    assert get_codec("g722") is G722
    assert (G722.channels, G722.fmtp) == (1, None)
    assert G722.conceal(320) is None and G722.decode_fec(bytes(160), 320) is None


def test_g722_20ms_is_160_bytes_and_320_samples():
    stream = G722.for_stream()
    payload = stream.encode(tone16(1000, 0.02).tobytes())
    assert len(payload) == 160  # 8000 Hz clock * 20 ms: one byte per RTP tick
    assert len(stream.decode(payload)) == 2 * 320
    assert stream.encode(b"") == b"" and stream.decode(b"") == b""
    assert len(stream.decode(bytearray(payload))) == len(stream.decode(memoryview(payload))) == 640


@pytest.mark.parametrize("size", [1, 2, 3, 6, 642])
def test_g722_needs_whole_sample_pairs(size):
    with pytest.raises(ValueError, match="multiple of 4"):
        G722.for_stream().encode(bytes(size))


def test_a_g722_stream_starts_without_searching_for_an_optional_module(monkeypatch):
    """Regression: the ``g722`` package's default looks for ``G722_numpy`` on
    every codec state it makes; that failed import searched the whole module
    path (~130 us) for each call's stream, twice per call on the setup path."""
    looked_for: list[str] = []

    class Recorder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            looked_for.append(name)
            return None

    monkeypatch.setattr(sys, "meta_path", [Recorder(), *sys.meta_path])
    stream = G722.for_stream()
    assert len(stream.decode(stream.encode(bytes(640)))) == 640
    assert looked_for == []


def test_g722_for_stream_gives_independent_state():
    x = tone16(440, 0.2).tobytes()
    a, b = G722.for_stream(), G722.for_stream()
    assert a is not b and a is not G722 and isinstance(a, G722Codec)
    first = a.encode(x[:640])
    assert b.encode(x[:640]) == first  # a fresh stream starts alike
    assert a.encode(x[:640]) != first  # the same input, later in a stream: ADPCM state
    # packets through one stream == the whole signal at once (state carried over)
    c, d = G722.for_stream(), G722.for_stream()
    assert b"".join(c.encode(x[i : i + 640]) for i in range(0, len(x), 640)) == d.encode(x)
    # two calls sharing one object would corrupt each other: interleaving differs
    shared, alone = G722.for_stream(), G722.for_stream()
    y = tone16(1500, 0.2).tobytes()
    mixed = [
        shared.encode(x[i : i + 640])
        for i in range(0, len(x), 640)
        if shared.encode(y[i : i + 640])
    ]
    assert b"".join(mixed) != alone.encode(x)


def _spandsp():
    path = ctypes.util.find_library("spandsp")
    if path is None:
        pytest.skip(
            "libspandsp not installed (apt-get install libspandsp2; baresip's g722 uses it)"
        )
    lib = ctypes.CDLL(path)
    lib.g722_encode_init.restype = ctypes.c_void_p
    lib.g722_encode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.g722_encode_free.argtypes = [ctypes.c_void_p]
    lib.g722_decode_init.restype = ctypes.c_void_p
    lib.g722_decode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.g722_decode_free.argtypes = [ctypes.c_void_p]
    return lib


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(16000) / 16000
    sweep = np.sin(2 * np.pi * (50 * t + 3500 * t**2))  # 50 Hz -> 7050 Hz
    return {
        "noise": np.clip(rng.normal(0, 8000, 16000), -32768, 32767).astype("<i2"),
        "full scale": np.where(np.arange(16000) % 40 < 20, 32767, -32768).astype("<i2"),
        "sweep": np.round(20000 * sweep).astype("<i2"),
        "quiet": np.round(30 * np.sin(2 * np.pi * 300 * t)).astype("<i2"),
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_g722_is_bit_exact_with_libspandsp(name):
    # Two implementations of ITU-T G.722 that both pass the ITU test sequences
    # (libspandsp is what baresip's g722 module uses) must agree bit for bit.
    lib = _spandsp()
    x = np.ascontiguousarray(_signals()[name], dtype=np.int16)
    enc = lib.g722_encode_init(None, 64000, 0)
    dec = lib.g722_decode_init(None, 64000, 0)
    try:
        theirs = ctypes.create_string_buffer(len(x) // 2)
        assert lib.g722_encode(enc, theirs, x.ctypes.data, len(x)) == len(x) // 2
        ours = G722.for_stream().encode(x.tobytes())
        assert ours == theirs.raw
        pcm = np.zeros(len(x), dtype=np.int16)
        assert lib.g722_decode(dec, pcm.ctypes.data, ours, len(ours)) == len(x)
        decoded = np.frombuffer(G722.for_stream().decode(ours), dtype="<i2")
        # Where the reconstructed signal exceeds 16 bits, libspandsp 0.0.6 wraps
        # around (+32767 comes out near -32768); libg722 saturates as the ITU
        # reference does. Everywhere else the two agree exactly.
        differ = decoded != pcm
        assert np.all(np.abs(decoded[differ].astype(int) - pcm[differ]) > 60000)
        assert np.all(np.isin(decoded[differ], (-32768, 32767)))
        assert differ.sum() == 0 or name == "full scale"
    finally:
        lib.g722_encode_free(enc)
        lib.g722_decode_free(dec)


def test_g722_tone_round_trip_snr():
    x = tone16(1000, 1.0, 0.5)
    snr, delay = aligned_snr_db(x, g722_round_trip(x))
    assert snr > 40, snr  # ADPCM at 64 kbit/s on a clean tone
    noise = _signals()["noise"]
    snr_noise, delay_noise = aligned_snr_db(noise, g722_round_trip(noise))
    assert delay_noise == 22  # the two 24-tap QMF banks (ITU-T G.722 s.2, s.4)
    assert snr_noise > 8, snr_noise  # white noise: half its energy in the 2-bit upper band


@pytest.mark.parametrize("freq", [100, 300, 1000, 2000, 3400, 4500, 5500, 6000, 6500, 7000])
def test_g722_frequency_response_is_flat_to_7khz(freq):
    x = tone16(freq, 0.5, 0.3)
    y = g722_round_trip(x)[1600:].astype(float)
    gain_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x[1600:].astype(float) ** 2)))
    assert abs(gain_db) < 1.0, f"{freq} Hz: {gain_db:.2f} dB"
    assert dominant_hz(y, 16000) == pytest.approx(freq, abs=4)


def test_6khz_tone_survives_g722_but_not_g711():
    x = tone16(6000, 1.0, 0.5)
    wide = g722_round_trip(x)
    assert dominant_hz(wide, 16000) == pytest.approx(6000, abs=4)
    assert band_share(wide, 16000, 6000) > 0.95
    # G.711 carries 8 kHz samples: the tone is above its 4 kHz Nyquist limit
    narrow_in = soxr.resample(x.astype(np.float32), 16000, 8000).astype("<i2")
    narrow = np.frombuffer(PCMU.decode(PCMU.encode(narrow_in.tobytes())), dtype="<i2")
    back = soxr.resample(narrow.astype(np.float32), 8000, 16000)
    assert band_share(back, 16000, 6000) < 0.01
    assert np.sqrt(np.mean(back.astype(float) ** 2)) < 0.01 * np.sqrt(np.mean(x.astype(float) ** 2))


def test_g722_silence_goes_through_the_streams_encoder():
    assert len(G722.silence(320)) == 160 and G722.silence(0) == b""
    stream, twin = G722.for_stream(), G722.for_stream()
    speech = tone16(1000, 0.1).tobytes()
    assert stream.encode(speech) == twin.encode(speech)
    packets = [stream.silence(320) for _ in range(10)]
    assert packets == [twin.encode(bytes(640)) for _ in range(10)]
    # the far decoder, in step with our encoder, settles at zero
    far = G722.for_stream()
    far.decode(G722.for_stream().encode(speech))
    decoded = np.frombuffer(far.decode(b"".join(packets)), dtype="<i2")
    assert np.abs(decoded[-1600:]).max() < 10
    # one packet of fresh-encoder silence sent over and over would not: ADPCM drifts to DC
    stale = np.frombuffer(G722.for_stream().decode(G722.for_stream().silence(320) * 10), "<i2")
    assert np.abs(stale[-320:]).mean() > 100
    with pytest.raises(ValueError):
        G722.silence(161)


def test_g722_decodes_any_bytes_within_range():
    rng = np.random.default_rng(5)
    garbage = rng.integers(0, 256, 1600, dtype=np.uint8).tobytes()
    stream = G722.for_stream()
    out = np.frombuffer(stream.decode(garbage), dtype="<i2")
    assert len(out) == 3200 and stream.invalid_payloads == 0


# --- Opus (RFC 7587) -------------------------------------------------------------------------


@pytest.fixture
def opus():
    reason = unavailable_codecs().get("opus")
    if reason is not None:
        pytest.skip(f"Opus unavailable: {reason}")
    return get_codec("opus")


def speechlike(seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    """A voiced signal: 20 harmonics of a gliding 110-170 Hz pitch, syllable-rate envelope."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 1.3 * t)) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 21)) * (
        0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    )
    return np.round(x / np.abs(x).max() * 12000).astype("<i2")


def opus_round_trip(codec, x: np.ndarray, fmtp: str | None = None, frame: int = 320):
    enc, dec = codec.for_stream(fmtp), codec.for_stream()
    packets = [enc.encode(x[i : i + frame].tobytes()) for i in range(0, len(x), frame)]
    pcm = np.frombuffer(b"".join(dec.decode(p) for p in packets), dtype="<i2")
    return packets, pcm


def test_opus_attributes_rfc7587(opus):
    assert (opus.encoding_name, opus.clock_rate, opus.channels, opus.sample_rate) == (
        "opus",
        48000,  # s.4.1: always 48 kHz
        2,  # s.7: opus/48000/2 whatever is sent
        16000,
    )
    assert 96 <= opus.payload_type <= 127 and opus.stateful
    assert opus.fmtp == OPUS_FMTP  # what create_offer writes for the name "opus"
    stream = opus.for_stream()
    assert stream is not opus and isinstance(stream, OpusCodec) and stream.fmtp == opus.fmtp


def test_opus_codec_objects_in_sdp_match_the_names(opus):
    by_name = create_offer(local_address="h", local_port=1, session_id=1, codecs=("opus", "G722"))
    by_object = create_offer(local_address="h", local_port=1, session_id=1, codecs=[opus, G722])
    assert by_object.serialize() == by_name.serialize()
    wide = create_offer(local_address="h", local_port=1, codecs=[OpusCodec(24000)])
    assert b"maxplaybackrate=24000;sprop-maxcapturerate=24000" in wide.serialize()


def test_opus_20ms_round_trip_keeps_a_tone(opus):
    x = tone16(1000, 1.0, 0.3)
    packets, y = opus_round_trip(opus, x)
    assert len(y) == len(x)  # 20 ms in, 20 ms (320 samples at 16 kHz) out per packet
    assert all(10 < len(p) < 200 for p in packets)
    tail = y[3200:]
    assert dominant_hz(tail, 16000) == pytest.approx(1000, abs=4)
    level_db = 20 * np.log10(np.sqrt(np.mean(tail.astype(float) ** 2)) / (0.3 * 32767 / np.sqrt(2)))
    assert abs(level_db) < 1.5


def test_opus_is_wideband_unless_the_peer_plays_back_narrowband(opus):
    x = tone16(6000, 1.0, 0.3)
    _, y = opus_round_trip(opus, x)
    assert band_share(y[3200:], 16000, 6000) > 0.9  # 16 kHz Opus carries 6 kHz
    _, y = opus_round_trip(opus, x, fmtp="maxplaybackrate=8000")
    assert band_share(y[3200:], 16000, 6000) < 0.01  # coded narrowband (4 kHz)


def test_opus_peer_fmtp_sets_up_the_encoder(opus):
    assert opus.for_stream("useinbandfec=1").inband_fec
    assert not opus.for_stream().inband_fec  # RFC 7587 s.6.1: useinbandfec defaults to 0
    assert not opus.for_stream("useinbandfec=0; stereo=1").inband_fec
    x = speechlike()
    normal, _ = opus_round_trip(opus, x)
    capped, _ = opus_round_trip(opus, x, fmtp="maxaveragebitrate=10000")
    assert sum(map(len, capped)) < 0.6 * sum(map(len, normal))
    cbr, _ = opus_round_trip(opus, x, fmtp="cbr=1")
    assert len({len(p) for p in cbr[5:]}) == 1
    # nonsense values are ignored, not fatal
    assert opus.for_stream("maxplaybackrate=x;maxaveragebitrate=99999999999").encode(bytes(640))


@pytest.mark.parametrize("ms", [10, 20, 40, 60])
def test_opus_frame_durations(opus, ms):
    frame = 16 * ms
    _, y = opus_round_trip(opus, tone16(440, 0.24), frame=frame)
    assert len(y) == 16 * 240


@pytest.mark.parametrize("size", [1, 638, 960, 642, 2 * 16 * 30])
def test_opus_rejects_lengths_that_are_no_opus_frame(opus, size):
    with pytest.raises(ValueError, match="an Opus frame is 2.5, 5, 10, 20, 40 or 60 ms"):
        opus.for_stream().encode(bytes(size))


def test_opus_invalid_payloads_are_concealed_and_counted(opus):
    stream = opus.for_stream()
    good = opus.for_stream().encode(tone16(440, 0.04).tobytes()[:1280])  # one 40 ms frame
    assert len(stream.decode(good)) == 2 * 640
    for bad in (b"", b"\xff\xff\xff", b"\x03"):  # empty, corrupt, code 3 without count
        assert len(stream.decode(bad)) == 2 * 640  # the last good packet's duration
    assert stream.invalid_payloads == 3
    rng = np.random.default_rng(9)
    for _ in range(200):  # random payloads: concealed or decoded, never an exception
        payload = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        assert len(stream.decode(payload)) <= 2 * 16 * 120


def test_opus_conceal_and_fec_lengths(opus):
    stream = opus.for_stream()
    assert len(stream.conceal(320)) == 640 and len(stream.conceal(40)) == 80
    assert len(stream.decode_fec(opus.for_stream().encode(bytes(640)), 320)) == 640
    for samples in (0, 30, 330, 16 * 121):
        with pytest.raises(ValueError, match="multiples of 2.5 ms"):
            stream.conceal(samples)
        with pytest.raises(ValueError, match="multiples of 2.5 ms"):
            stream.decode_fec(b"\x00", samples)
    assert len(stream.decode_fec(b"", 320)) == 640  # nothing to recover from: concealed
    assert stream.invalid_payloads == 1


def _loss_snr(opus, fmtp: str | None) -> tuple[float, float]:
    """Mean SNR (dB) of FEC and of PLC for single lost packets, against no loss."""
    x = speechlike()
    enc = opus.for_stream(fmtp)
    packets = [enc.encode(x[i : i + 320].tobytes()) for i in range(0, len(x), 320)]
    reference = opus.for_stream()
    clean = [np.frombuffer(reference.decode(p), "<i2").astype(float) for p in packets]
    fec_snr, plc_snr = [], []
    for lost in range(20, 95, 5):
        with_fec, with_plc = opus.for_stream(), opus.for_stream()
        for p in packets[:lost]:
            with_fec.decode(p)
            with_plc.decode(p)
        fec = np.frombuffer(with_fec.decode_fec(packets[lost + 1], 320), "<i2").astype(float)
        plc = np.frombuffer(with_plc.conceal(320), "<i2").astype(float)
        ref = clean[lost]
        fec_snr.append(10 * np.log10(np.sum(ref**2) / max(np.sum((fec - ref) ** 2), 1.0)))
        plc_snr.append(10 * np.log10(np.sum(ref**2) / max(np.sum((plc - ref) ** 2), 1.0)))
    return float(np.mean(fec_snr)), float(np.mean(plc_snr))


def test_opus_in_band_fec_recovers_a_lost_packet_better_than_concealment(opus):
    fec, plc = _loss_snr(opus, "useinbandfec=1")
    assert fec > plc + 5, (fec, plc)
    # without FEC in the stream, decode_fec can only conceal
    fec, plc = _loss_snr(opus, None)
    assert fec == pytest.approx(plc, abs=0.01)


def test_opus_silence_goes_through_the_stream(opus):
    stream = opus.for_stream()
    packets = [stream.silence(320) for _ in range(10)]
    assert all(len(p) < 10 for p in packets)
    pcm = np.frombuffer(b"".join(opus.for_stream().decode(p) for p in packets), "<i2")
    assert np.abs(pcm).max() < 10


def test_opus_arguments_are_checked():
    for kwargs, message in [
        ({"sample_rate": 44100}, "sample rate"),
        ({"payload_type": 8}, "not dynamic"),
        ({"bitrate": 10}, "bitrate"),
        ({"complexity": 11}, "complexity"),
        ({"fec_loss_percent": 101}, "fec_loss_percent"),
    ]:
        with pytest.raises(ValueError, match=message):
            OpusCodec(**kwargs)


def test_opus_24khz_decodes_natively(opus):
    wide = OpusCodec(24000)
    stream = wide.for_stream()
    assert len(stream.decode(wide.for_stream().encode(bytes(960)))) == 2 * 480
    assert wide.fmtp.startswith("maxplaybackrate=24000;")


# --- the configured codec list and optional codecs --------------------------------------------


@pytest.fixture
def registry():
    """Restore the registry (and what is known to be unavailable) after the test."""
    saved = (dict(codecs_module._REGISTRY), dict(codecs_module._UNAVAILABLE))
    yield codecs_module
    codecs_module._REGISTRY.clear()
    codecs_module._REGISTRY.update(saved[0])
    codecs_module._UNAVAILABLE.clear()
    codecs_module._UNAVAILABLE.update(saved[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("G722,PCMU,PCMA", ("G722", "PCMU", "PCMA")),
        (" g722 , pcmu", ("G722", "PCMU")),
        ("PCMA", ("PCMA",)),
        ("pcma,\tG722 ", ("PCMA", "G722")),
    ],
)
def test_parse_codec_list(text, expected):
    assert parse_codec_list(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("G722,G729,PCMU", "unknown codec 'G729' (known: G722, opus, PCMA, PCMU)"),
        ("", "the codec list is empty"),
        ("  ", "the codec list is empty"),
        ("PCMU,,PCMA", "the codec list 'PCMU,,PCMA' has an empty entry"),
        ("PCMU,", "has an empty entry"),
        ("PCMU, pcmu", "codec 'pcmu' is listed twice"),
        ("telephone-event", "unknown codec 'telephone-event'"),
    ],
)
def test_parse_codec_list_errors_name_the_entry_on_one_line(text, message):
    with pytest.raises(ValueError) as info:
        parse_codec_list(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_parse_codec_list_with_opus(opus):
    assert parse_codec_list("Opus, G722, PCMU") == ("opus", "G722", "PCMU")
    assert "opus" in codecs_module.available_codecs()


def test_missing_opus_library_makes_opus_unavailable_not_a_crash(registry):
    def missing():
        raise OSError("libopus.so.0: cannot open shared object file")

    registry._REGISTRY.pop("OPUS", None)
    registry._UNAVAILABLE.clear()
    original = registry._LAZY["OPUS"]
    registry._LAZY["OPUS"] = missing
    try:
        reason = unavailable_codecs()["opus"]
        assert reason.startswith("libopus.so.0: cannot open shared object file; install the opus")
        assert "apt-get install libopus0" in reason and "\n" not in reason
        with pytest.raises(UnknownCodecError, match="codec 'opus' is unavailable: libopus"):
            get_codec("opus")
        with pytest.raises(ValueError, match="codec 'OPUS' is unavailable"):
            parse_codec_list("OPUS,PCMU")
        assert codecs_module.available_codecs() == ("G722", "PCMA", "PCMU")
        assert parse_codec_list("G722,PCMU") == ("G722", "PCMU")  # the rest works
        # registering an Opus codec by hand makes it available again
        if OpusCodec is not None:
            register_codec(OpusCodec(24000))
            assert get_codec("opus").sample_rate == 24000 and "opus" not in unavailable_codecs()
    finally:
        registry._LAZY["OPUS"] = original


def _run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_without_the_binding_the_package_still_imports():
    out = _run_python(
        "import sys; sys.modules['opuslib_next'] = None\n"
        "from pipecat_sip.codecs import get_codec, unavailable_codecs, SUPPORTED_CODECS\n"
        "print(get_codec('G722').sample_rate, SUPPORTED_CODECS, unavailable_codecs())"
    )
    assert out.startswith("16000 ('G722', 'PCMU', 'PCMA') {'opus': \"import of opuslib_next")
    assert "pipecat-sip[opus]" in out


def test_without_libopus_the_package_still_imports():
    # the binding finds no library (as on a host without libopus0)
    out = _run_python(
        "import ctypes, ctypes.util, os.path\n"
        "real_exists = os.path.exists\n"
        "ctypes.util.find_library = lambda name: None\n"
        "os.path.exists = lambda p: 'opus' not in str(p) and real_exists(p)\n"
        "from pipecat_sip.codecs import unavailable_codecs, parse_codec_list\n"
        "print(unavailable_codecs()['opus'])\n"
        "try:\n    parse_codec_list('opus')\nexcept ValueError as e:\n    print(e)"
    )
    first, second = out.splitlines()
    assert first.startswith("Could not find Opus library") and "libopus0" in first
    assert second.startswith("codec 'opus' is unavailable: Could not find Opus library")


def test_codec_and_sdp_modules_are_pure():
    # STYLE: codecs/ and sdp.py do no I/O, read no clock and do not log.
    root = Path(codecs_module.__file__).parent
    allowed = {"__future__", "abc", "collections", "dataclasses", "typing", "re", "secrets"}
    allowed |= {"numpy", "G722", "opuslib_next", "pipecat_sip"}
    for path in [*root.glob("*.py"), root.parent / "sdp.py"]:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert imported <= allowed, f"{path.name} imports {imported - allowed}"


def test_opus_packets_are_charged_their_own_length_against_the_input_budget(opus):
    # RFC 7587 s.4.2: a packet may hold up to 120 ms whatever the ptime. Each Opus
    # packet was charged one packet time, so 60 ms packets every 20 ms (timestamps
    # lying at 960 a packet) let 3 s of audio a second into the call.
    import random
    import struct

    from pipecat_sip.rtp import MediaSession

    stream = opus.for_stream()
    long_packet = stream.encode(bytes(2 * 960))  # 60 ms at 16 kHz
    assert stream.packet_seconds(long_packet) == pytest.approx(0.06)
    assert stream.packet_seconds(stream.encode(bytes(2 * 320))) == pytest.approx(0.02)
    assert stream.packet_seconds(bytes([0xFB])) is None  # code 3 without its count byte
    assert stream.packet_seconds(bytes([0xFB, 0x06])) == pytest.approx(0.12)  # 6 x 20 ms CELT
    peer = ("192.0.2.10", 4000)
    session = MediaSession(
        codec=stream, remote_addr=peer, payload_type=96, rng=random.Random(1), rtcp=False
    )
    session.start(0.0)
    for k in range(250):  # 5 s
        header = struct.pack("!BBHII", 0x80, 96, k, 960 * k, 0x1111)
        session.receive_rtp(header + long_packet, peer, k * 0.02)
    accepted = session.stats.packets_received
    assert accepted * 0.06 <= 5.0 + 0.3 + 0.06  # real time plus the burst allowance
    assert session.stats.packets_over_rate == 250 - accepted
