"""RFC 4733 telephone-events: payload format, one key per press, and the sender's packets."""

import random

import pytest

from pipecat_sip.rtp import (
    DtmfReceiver,
    DtmfSender,
    RtpPacket,
    RtpSender,
    TelephoneEvent,
    TelephoneEventParseError,
)
from pipecat_sip.rtp.dtmf import describe_event, event_for_key, key_for_event
from pipecat_sip.rtp.packet import seq_add, ts_add

PT = 101


# --- payload format (RFC 4733 section 2.3) -----------------------------------------------


def test_parse_end_packet():
    # Digit 5, E=1, volume 10 (-10 dBm0), duration 800 (100 ms at 8 kHz).
    event = TelephoneEvent.parse(bytes.fromhex("058a0320"))
    assert event == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.serialize() == bytes.fromhex("058a0320")


def test_parse_start_packet_ignores_reserved_bit():
    event = TelephoneEvent.parse(bytes.fromhex("0b4700a0"))  # '#', R=1, volume 7, 160
    assert event == TelephoneEvent(event=11, end=False, volume=7, duration=160)
    assert event.serialize() == bytes.fromhex("0b0700a0")


def test_parse_extremes():
    assert TelephoneEvent.parse(bytes.fromhex("ffbfffff")) == TelephoneEvent(255, True, 63, 65535)
    assert TelephoneEvent.parse(bytes(4) + b"extra") == TelephoneEvent(0, False, 0, 0)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_parse_short_payload(size):
    with pytest.raises(TelephoneEventParseError, match=f"^telephone-event payload is {size} bytes"):
        TelephoneEvent.parse(bytes(size))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (TelephoneEvent(256), "code 256"),
        (TelephoneEvent(1, volume=64), "volume 64"),
        (TelephoneEvent(1, duration=65536), "duration 65536"),
    ],
)
def test_serialize_errors(event, message):
    with pytest.raises(ValueError, match=message):
        event.serialize()


def test_key_event_mapping():
    keys = "0123456789*#ABCD"
    assert [event_for_key(k) for k in keys] == list(range(16))
    assert event_for_key("b") == 13
    assert [key_for_event(e) for e in range(16)] == list(keys)
    assert key_for_event(16) is None and key_for_event(-1) is None
    for bad in ("E", "", "12", "+"):
        with pytest.raises(ValueError, match="no telephone-event"):
            event_for_key(bad)


# --- DtmfSender (RFC 4733 section 2.5.1) -------------------------------------------------


def make_rtp() -> RtpSender:
    return RtpSender(0, 8000, rng=random.Random(7))


def test_sender_packets_of_one_press():
    rtp = make_rtp()
    start_seq, start_ts = rtp.sequence_number, rtp.timestamp
    packets = [RtpPacket.parse(p) for p in DtmfSender(rtp, PT, "5", 100)]
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert len(packets) == 7  # 4 growing + 3 end packets
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {start_ts}
    assert {p.payload_type for p in packets} == {PT}
    assert [p.sequence_number for p in packets] == [seq_add(start_seq, i) for i in range(7)]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5} and {e.volume for e in events} == {10}
    # Time went on: the next audio packet is 7 packet times after the event start.
    assert rtp.timestamp == ts_add(start_ts, 7 * 160)


def test_sender_takes_the_timestamp_at_its_first_packet():
    rtp = make_rtp()
    sender = DtmfSender(rtp, PT, "#", 40)
    rtp.packet(b"\xff" * 160, 160)
    ts = rtp.timestamp
    first = RtpPacket.parse(next(sender))
    assert first.timestamp == ts
    assert not sender.done
    rest = [RtpPacket.parse(p) for p in sender]
    assert sender.done and len(sender) == 4
    assert {p.timestamp for p in rest} == {ts}
    assert next(sender, None) is None


def test_sender_short_press_is_all_end_packets():
    packets = [RtpPacket.parse(p) for p in DtmfSender(make_rtp(), PT, "1", 10)]
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True, False, False]
    assert [(e.end, e.duration) for e in events] == [(True, 160)] * 3


def test_sender_rounds_up_and_other_ptime():
    events = [
        TelephoneEvent.parse(RtpPacket.parse(p).payload)
        for p in DtmfSender(make_rtp(), 96, "A", 70, ptime_ms=30, volume=6, end_packets=2)
    ]
    assert [(e.event, e.end, e.duration, e.volume) for e in events] == [
        (12, False, 240, 6),
        (12, False, 480, 6),
        (12, True, 720, 6),
        (12, True, 720, 6),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "X"}, "no telephone-event"),
        ({"duration_ms": 0}, "1-8000 ms"),
        ({"duration_ms": 8001}, "1-8000 ms"),
        ({"volume": 64}, "volume 64"),
        ({"end_packets": 0}, "end packet"),
    ],
)
def test_sender_errors(kwargs, message):
    args = {"key": "1"} | kwargs
    with pytest.raises(ValueError, match=message):
        DtmfSender(make_rtp(), PT, **args)


# --- DtmfReceiver (RFC 4733 section 2.5.2) -----------------------------------------------


def press(key: str, rtp: RtpSender | None = None, duration_ms: int = 100) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in DtmfSender(rtp or make_rtp(), PT, key, duration_ms)]


def feed_all(receiver: DtmfReceiver, packets: list[RtpPacket]) -> list[str]:
    return [key for key in map(receiver.feed, packets) if key is not None]


def test_receiver_reports_a_press_once_at_its_first_packet():
    receiver = DtmfReceiver()
    packets = press("7")
    assert receiver.feed(packets[0]) == "7"
    assert feed_all(receiver, packets[1:]) == []
    assert receiver.keys_received == 1


def test_receiver_ignores_retransmissions_and_duplicates():
    packets = press("3")
    doubled = [p for p in packets for _ in range(2)] + packets
    assert feed_all(DtmfReceiver(), doubled) == ["3"]


def test_receiver_press_with_lost_start_packets():
    packets = press("9")
    assert feed_all(DtmfReceiver(), packets[4:]) == ["9"]  # only the 3 end packets
    assert feed_all(DtmfReceiver(), packets[-1:]) == ["9"]  # a single end packet
    assert feed_all(DtmfReceiver(), packets[2:3]) == ["9"]  # one continuation packet


def test_receiver_separates_presses_by_timestamp():
    rtp = make_rtp()
    first, second = press("4", rtp), press("4", rtp)
    third = press("*", rtp)
    assert feed_all(DtmfReceiver(), first + second + third) == ["4", "4", "*"]


def test_receiver_all_pipecat_keys_in_order():
    rtp = make_rtp()
    packets = [p for key in "0123456789*#" for p in press(key, rtp, 40)]
    assert "".join(feed_all(DtmfReceiver(), packets)) == "0123456789*#"


def test_receiver_ignores_stragglers_of_an_earlier_event():
    rtp = make_rtp()
    first, second = press("1", rtp), press("2", rtp)
    receiver = DtmfReceiver()
    assert feed_all(receiver, first[:5] + second[:2] + first[5:] + second[2:]) == ["1", "2"]


def test_receiver_timestamp_wrap_around():
    rtp = make_rtp()
    rtp.timestamp = 0xFFFFFFFF - 200
    first, second = press("5", rtp), press("6", rtp)
    assert first[0].timestamp > second[0].timestamp  # wrapped
    assert feed_all(DtmfReceiver(), first + second + first[-1:]) == ["5", "6"]


def test_receiver_same_timestamp_is_the_same_press_even_after_its_end():
    # A late duplicate of a start packet must not count twice. (So a capture replayed
    # with identical headers, as SIPp's play_pcap_audio does, also counts once.)
    packets = press("8")
    assert feed_all(DtmfReceiver(), packets + packets[:1] + packets) == ["8"]


def test_receiver_long_event_segments_are_one_press():
    ts = 1_000_000

    def packet(timestamp, duration, *, end=False, marker=False, seq=0):
        payload = TelephoneEvent(2, end, 10, duration).serialize()
        return RtpPacket(PT, seq, timestamp, 99, payload, marker)

    packets = [
        packet(ts, 160, marker=True),
        packet(ts, 65535),
        packet(ts + 65535, 160),
        packet(ts + 65535, 800, end=True),
    ]
    assert feed_all(DtmfReceiver(), packets) == ["2"]


def test_receiver_new_ssrc_starts_over():
    first = press("0")
    second = [
        RtpPacket(p.payload_type, p.sequence_number, p.timestamp, p.ssrc ^ 1, p.payload, p.marker)
        for p in first
    ]
    assert feed_all(DtmfReceiver(), first + second) == ["0", "0"]


@pytest.mark.parametrize(("key", "code"), [("A", 12), ("D", 15)])
def test_receiver_ignores_keys_pipecat_lacks(key, code):
    receiver = DtmfReceiver()
    assert feed_all(receiver, press(key)) == []
    assert receiver.ignored_events == 1  # one press, however many packets
    assert receiver.last_ignored_event == code
    assert describe_event(code) == key


def test_receiver_ignores_flash_and_other_events():
    receiver = DtmfReceiver()
    flash = RtpPacket(PT, 1, 500, 9, TelephoneEvent(16, duration=160).serialize(), True)
    other = RtpPacket(PT, 2, 900, 9, TelephoneEvent(40, duration=160).serialize(), True)
    assert receiver.feed(flash) is None and receiver.feed(flash) is None
    assert receiver.ignored_events == 1 and receiver.last_ignored_event == 16
    assert receiver.feed(other) is None
    assert receiver.ignored_events == 2 and receiver.last_ignored_event == 40
    assert describe_event(16) == "flash" and describe_event(40) == "non-DTMF"
    assert receiver.keys_received == 0


def test_receiver_counts_invalid_payloads():
    receiver = DtmfReceiver()
    assert receiver.feed(RtpPacket(PT, 1, 1, 1, b"\x05\x8a")) is None
    assert receiver.invalid_packets == 1
    assert feed_all(receiver, press("5")) == ["5"]
