"""G.711 codecs against ITU-T G.711 values and the stdlib audioop reference; DTMF tones."""

import warnings

import numpy as np
import pytest

from pipecat_sip.codecs import (
    PCMA,
    PCMU,
    SUPPORTED_CODECS,
    Codec,
    UnknownCodecError,
    g711,
    get_codec,
    register_codec,
)
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
    assert SUPPORTED_CODECS == ("PCMU", "PCMA")
    assert [get_codec(name).encoding_name for name in SUPPORTED_CODECS] == list(SUPPORTED_CODECS)


def test_unknown_codec():
    with pytest.raises(UnknownCodecError, match="unknown codec 'opus'") as info:
        get_codec("opus")
    assert isinstance(info.value, KeyError)
    assert "PCMU" in str(info.value)


def test_register_codec_plugs_in_a_new_codec():
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
