"""RTP packet parse/serialize (RFC 3550 section 5), wrap-around helpers and the sender state."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipecat_sip.rtp import (
    RtpHeaderExtension,
    RtpPacket,
    RtpParseError,
    RtpSender,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_gt,
)
from pipecat_sip.rtp.packet import ts_add, ts_diff

# V=2, no P/X/CC, M=0, PT=0, seq=0x1234, ts=1000, SSRC=0xDEADBEEF, 4 bytes of mu-law.
SIMPLE = bytes.fromhex("80001234000003e8deadbeef") + b"\xff\xfe\xfd\xfc"
# V=2, CC=2, M=1, PT=101, seq=65535, ts=2**32-1, SSRC=1, CSRCs 2 and 3, event payload.
WITH_CSRC = bytes.fromhex("82e5ffffffffffff000000010000000200000003058a0320")
# V=2, X=1: profile 0xBEDE, one word of extension, then the payload.
WITH_EXTENSION = bytes.fromhex("9008000100000002000000aabede000110ff0000") + b"\xd5" * 3
# V=2, P=1: payload 2 bytes, then 4 octets of padding (last octet = 4).
WITH_PADDING = bytes.fromhex("a0000001000000000000000b") + b"\x01\x02" + b"\x00\x00\x00\x04"


def test_parse_simple_packet():
    packet = RtpPacket.parse(SIMPLE)
    assert packet == RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=1000,
        ssrc=0xDEADBEEF,
        payload=b"\xff\xfe\xfd\xfc",
    )
    assert packet.serialize() == SIMPLE


def test_parse_marker_csrc_and_extremes():
    packet = RtpPacket.parse(WITH_CSRC)
    assert packet.marker is True
    assert packet.payload_type == 101
    assert packet.sequence_number == 65535
    assert packet.timestamp == 0xFFFFFFFF
    assert packet.ssrc == 1
    assert packet.csrc == (2, 3)
    assert packet.payload == bytes.fromhex("058a0320")
    assert packet.serialize() == WITH_CSRC


def test_parse_extension():
    packet = RtpPacket.parse(WITH_EXTENSION)
    assert packet.payload_type == 8
    assert packet.extension == RtpHeaderExtension(0xBEDE, bytes.fromhex("10ff0000"))
    assert packet.payload == b"\xd5" * 3
    assert packet.serialize() == WITH_EXTENSION


def test_parse_padding():
    packet = RtpPacket.parse(WITH_PADDING)
    assert packet.payload == b"\x01\x02"
    assert packet.padding == 4
    assert packet.serialize() == WITH_PADDING


def test_payload_may_be_empty():
    packet = RtpPacket.parse(SIMPLE[:12])
    assert packet.payload == b""
    assert RtpPacket.parse(bytes.fromhex("a0000001000000000000000b01")).payload == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet length is less than 12 bytes"),
        (SIMPLE[:11], "RTP packet length is less than 12 bytes"),
        (b"\x40" + SIMPLE[1:], "RTP packet has invalid version 1"),
        (b"\x00" + SIMPLE[1:], "RTP packet has invalid version 0"),
        (WITH_CSRC[:19], "RTP packet has truncated CSRC"),
        (b"\x8f" + SIMPLE[1:], "RTP packet has truncated CSRC"),
        (WITH_EXTENSION[:14], "RTP packet has truncated extension profile / length"),
        (WITH_EXTENSION[:18], "RTP packet has truncated extension value"),
        (WITH_PADDING[:-1] + b"\x00", "RTP packet has invalid padding length 0"),
        (WITH_PADDING[:-1] + b"\x07", "RTP packet has invalid padding length 7"),
    ],
)
def test_parse_errors(data, message):
    with pytest.raises(RtpParseError, match=f"^{message}$"):
        RtpPacket.parse(data)


def test_parse_error_is_a_value_error():
    assert issubclass(RtpParseError, ValueError)


def test_parse_accepts_memoryview_and_bytearray():
    assert RtpPacket.parse(memoryview(WITH_CSRC)) == RtpPacket.parse(WITH_CSRC)
    assert RtpPacket.parse(bytearray(WITH_PADDING)).payload == b"\x01\x02"
    assert type(RtpPacket.parse(bytearray(SIMPLE)).payload) is bytes


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(128, 0, 0, 0), "payload type 128"),
        (RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))), "16 CSRCs"),
        (RtpPacket(0, 0, 0, 0, extension=RtpHeaderExtension(1, b"abc")), "whole 32-bit words"),
        (RtpPacket(0, 0, 0, 0, padding=256), "padding length 256"),
        (RtpPacket(0, 65536, 0, 0), "out of range"),
        (RtpPacket(0, 0, 2**32, 0), "out of range"),
    ],
)
def test_serialize_errors(packet, message):
    with pytest.raises(ValueError, match=message):
        packet.serialize()


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpHeaderExtension,
        st.integers(0, 0xFFFF),
        st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]),
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip(packet):
    data = packet.serialize()
    assert RtpPacket.parse(data) == packet
    assert RtpPacket.parse(data).serialize() == data


@given(st.binary(max_size=100))
def test_arbitrary_bytes_parse_or_raise_rtp_parse_error(data):
    try:
        RtpPacket.parse(data)
    except RtpParseError:
        pass


# --- RTCP demultiplexing (RFC 5761 section 4) --------------------------------------------


@pytest.mark.parametrize("packet_type", [200, 201, 202, 203, 204, 205, 206, 207])
def test_is_rtcp_for_rtcp_packet_types(packet_type):
    assert is_rtcp(bytes([0x81, packet_type, 0x00, 0x07]) + bytes(28))


@pytest.mark.parametrize("second_octet", [0x00, 0x08, 0x80, 0x88, 0x65, 0xE5, 0x60, 0xE0, 0x7F])
def test_is_rtcp_false_for_rtp(second_octet):
    assert not is_rtcp(bytes([0x80, second_octet]) + bytes(10))


def test_is_rtcp_short_data():
    assert not is_rtcp(b"")
    assert not is_rtcp(b"\x80")


def test_rtcp_marker_and_payload_type_view():
    # RTCP SR (200) .. APP (204) read as RTP: marker set, payload type 72..76.
    for packet_type, pt in zip(range(200, 205), range(72, 77), strict=True):
        assert packet_type & 0x80 and packet_type & 0x7F == pt


# --- wrap-around helpers -----------------------------------------------------------------


def test_seq_helpers():
    assert seq_add(65535, 1) == 0
    assert seq_add(65530, 10) == 4
    assert seq_add(5, -10) == 65531
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(10, 10) == 0
    assert seq_diff(100, 50) == 50
    assert seq_gt(0, 65535)
    assert seq_gt(1, 0)
    assert not seq_gt(65535, 0)
    assert not seq_gt(7, 7)
    assert seq_gt(32767, 0) and not seq_gt(32768, 0) and not seq_gt(0, 32768)


def test_ts_helpers():
    assert ts_add(0xFFFFFFFF, 161) == 160
    assert ts_diff(160, 0xFFFFFFFF) == 161
    assert ts_diff(0xFFFFFFFF, 160) == -161


@given(st.integers(0, 0xFFFF), st.integers(-32767, 32767))
def test_seq_diff_inverts_seq_add(a, delta):
    assert seq_diff(seq_add(a, delta), a) == delta
    assert seq_gt(seq_add(a, delta), a) == (delta > 0)


# --- RtpSender ---------------------------------------------------------------------------


def make_sender(**kwargs) -> RtpSender:
    return RtpSender(0, 8000, rng=random.Random(1234), **kwargs)


def test_sender_sequence_timestamp_and_ssrc():
    sender = make_sender()
    seq0, ts0, ssrc = sender.sequence_number, sender.timestamp, sender.ssrc
    parsed = [RtpPacket.parse(sender.packet(b"\xff" * 160, 160)) for _ in range(5)]
    assert [p.sequence_number for p in parsed] == [seq_add(seq0, i) for i in range(5)]
    assert [p.timestamp for p in parsed] == [ts_add(ts0, 160 * i) for i in range(5)]
    assert {p.ssrc for p in parsed} == {ssrc}
    assert {p.payload_type for p in parsed} == {0}
    assert sender.packets_sent == 5 and sender.octets_sent == 800


def test_sender_is_random_per_stream():
    a, b = RtpSender(0, 8000), RtpSender(0, 8000)
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)
    assert make_sender().ssrc == make_sender().ssrc  # reproducible with a seeded rng
    assert make_sender(ssrc=42).ssrc == 42


def test_sender_wraps_sequence_and_timestamp():
    sender = make_sender()
    sender.sequence_number = 65535
    sender.timestamp = 0xFFFFFFFF - 100
    first = RtpPacket.parse(sender.packet(b"", 160))
    second = RtpPacket.parse(sender.packet(b"", 160))
    assert (first.sequence_number, second.sequence_number) == (65535, 0)
    assert (first.timestamp, second.timestamp) == (0xFFFFFFFF - 100, 59)


def test_sender_marks_talkspurts():
    sender = make_sender()
    markers = [RtpPacket.parse(sender.packet(b"\x00", 160)).marker for _ in range(3)]
    assert markers == [True, False, False]
    ts_before = sender.timestamp
    sender.advance(480)  # 60 ms of suppressed silence
    resumed = RtpPacket.parse(sender.packet(b"\x00", 160))
    assert resumed.marker is True
    assert resumed.timestamp == ts_add(ts_before, 480)
    assert RtpPacket.parse(sender.packet(b"\x00", 160)).marker is False
    sender.start_talkspurt()
    assert RtpPacket.parse(sender.packet(b"\x00", 160)).marker is True
    assert RtpPacket.parse(sender.packet(b"\x00", 160, marker=True)).marker is True


def test_sender_other_payload_type_keeps_the_pending_marker():
    sender = make_sender()
    sender.packet(b"\x00", 160)
    sender.advance(160)
    event = RtpPacket.parse(sender.packet(b"\x00\x00\x00\x00", 160, payload_type=101))
    assert (event.payload_type, event.marker) == (101, False)
    audio = RtpPacket.parse(sender.packet(b"\x00", 160))
    assert (audio.payload_type, audio.marker) == (0, True)


def test_sender_timestamp_override_still_advances_time():
    sender = make_sender()
    start = sender.timestamp
    for _ in range(3):
        packet = RtpPacket.parse(sender.packet(b"", 160, payload_type=101, timestamp=start))
        assert packet.timestamp == start
    assert sender.timestamp == ts_add(start, 480)


def test_sender_rejects_bad_payload_type():
    with pytest.raises(ValueError, match="payload type 128"):
        RtpSender(128, 8000)
