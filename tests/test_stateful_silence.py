"""Silence packets of stateful codecs go through the stream's encoder, every one of them.

A G.722 (ADPCM) encoder and the far decoder adapt together: a cached silence
payload sent over and over walks the far decoder to a DC offset, so the
packetizer must encode each silent packet afresh for a ``stateful`` codec,
whatever its ``stateless`` argument says (G.711 may keep its cache).
"""

import random

import numpy as np
import pytest

from pipecat_sip.codecs import PCMU, get_codec
from pipecat_sip.rtp import MediaSession, RtpPacket, RtpSender
from pipecat_sip.rtp.packetizer import Packetizer

G722 = get_codec("G722")


def speech16(ms: int) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (8000 * np.sin(2 * np.pi * 300 * t) * np.hanning(len(t)) ** 0.1).astype("<i2").tobytes()


def far_end_tail(payloads: list[bytes]) -> np.ndarray:
    """What a far G.722 decoder plays for the payloads; its last 100 ms."""
    far = G722.for_stream()
    out = b"".join(far.decode(p) for p in payloads)
    return np.frombuffer(out, "<i2")[-1600:].astype(float)


@pytest.mark.parametrize("stateless", [True, False])
def test_packetizer_encodes_every_g722_silence_packet(stateless):
    stream = G722.for_stream()
    packetizer = Packetizer(RtpSender(9, 8000, rng=random.Random(1)), stream, stateless=stateless)
    packetizer.queue_audio(speech16(200))
    payloads = [RtpPacket.parse(packetizer.next_packet()).payload for _ in range(60)]
    # Our encoder's output for the same input, packet by packet: speech, then silence.
    twin = G722.for_stream()
    pcm = speech16(200)
    expected = [twin.encode(pcm[i * 640 : (i + 1) * 640]) for i in range(10)]
    expected += [twin.encode(bytes(640)) for _ in range(50)]
    assert payloads == expected
    assert len(set(payloads[10:])) > 1  # not one payload repeated
    tail = far_end_tail(payloads)
    assert abs(tail.mean()) < 2 and np.abs(tail).max() < 10


def test_a_cached_silence_payload_would_drift_the_far_decoder():
    """The failure the rule prevents, shown with the same speech and a repeated payload."""
    stream = G722.for_stream()
    pcm = speech16(200)
    speech = [stream.encode(pcm[i * 640 : (i + 1) * 640]) for i in range(10)]
    cached = stream.silence(320)
    tail = far_end_tail(speech + [cached] * 50)
    assert abs(tail.mean()) > 2 or np.abs(tail).max() > 50


def test_opus_silence_is_encoded_per_packet_too():
    pytest.importorskip("opuslib_next", reason="the opus extra (opuslib-next) is needed")
    opus = get_codec("opus")
    stream = opus.for_stream()
    packetizer = Packetizer(RtpSender(111, 48000, rng=random.Random(1)), stream)
    before = stream._encoder
    packets = [RtpPacket.parse(packetizer.next_packet()) for _ in range(5)]
    assert before is None and stream._encoder is not None  # the encoder ran (nothing cached)
    assert all(p.payload for p in packets)


def test_g711_keeps_its_cached_silence():
    packetizer = Packetizer(RtpSender(0, 8000, rng=random.Random(1)), PCMU)
    payloads = {RtpPacket.parse(packetizer.next_packet()).payload for _ in range(5)}
    assert payloads == {PCMU.silence(160)}


def test_media_session_sends_g722_silence_through_its_stream():
    session = MediaSession(codec=G722.for_stream(), remote_addr=("192.0.2.1", 4000), rtcp=False)
    session.start(0.0)
    session.queue_audio(speech16(100))
    payloads = [
        RtpPacket.parse(data).payload
        for k in range(1, 41)
        for data, _, _ in session.on_tick(k / 50)
    ]
    assert len(payloads) == 40 and len(set(payloads[5:])) > 1
    tail = far_end_tail(payloads)
    assert abs(tail.mean()) < 2 and np.abs(tail).max() < 10
