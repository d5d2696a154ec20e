"""Stream framing (RFC 3261 s.18.3) and CRLF keep-alives (RFC 5626 s.3.5.1) on a byte stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_sip.sip.framing import (
    PING,
    PONG,
    Message,
    Oversized,
    Ping,
    Pong,
    StreamError,
    StreamFramer,
)
from pipecat_sip.sip.message import SIPRequest, parse_message


def invite(body: bytes = b"v=0\r\n", call_id: str = "a84b4c76e66710", extra: str = "") -> bytes:
    head = (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def messages(events) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Message)]


def test_one_message_in_one_read_is_one_message_event() -> None:
    framer = StreamFramer()
    data = invite()
    events = framer.receive(data, 0.0)
    assert events == [Message(data)]
    parsed = parse_message(events[0].data)
    assert isinstance(parsed, SIPRequest) and parsed.body == b"v=0\r\n"
    assert framer.buffered == 0 and framer.deadline() is None


def test_a_message_split_at_every_byte_is_framed_once_and_whole() -> None:
    data = invite(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n")
    for cut in range(1, len(data)):
        framer = StreamFramer()
        first = framer.receive(data[:cut], 0.0)
        assert first == []
        assert framer.deadline() == pytest.approx(framer.message_timeout)
        assert framer.receive(data[cut:], 1.0) == [Message(data)]


def test_coalesced_messages_with_keepalives_between_come_out_in_order() -> None:
    one, two, three = invite(call_id="1"), invite(b"", call_id="2"), invite(b"xyz", call_id="3")
    framer = StreamFramer()
    events = framer.receive(one + PING + two + PONG + three, 0.0)
    assert events == [Message(one), Ping(), Message(two), Pong(), Message(three)]
    assert (framer.messages, framer.pings, framer.pongs) == (3, 1, 1)


def test_ping_and_pong_alone_on_an_idle_stream() -> None:
    framer = StreamFramer()
    assert framer.receive(PING, 0.0) == [Ping()]
    assert framer.receive(PONG, 1.0) == [Pong()]
    assert framer.receive(PING + PING, 2.0) == [Ping(), Ping()]
    assert framer.deadline() is None  # a keep-alive starts no message timer


def test_a_body_that_looks_like_a_keepalive_is_body_not_ping() -> None:
    body = b"\r\n\r\n\r\n"
    data = invite(body)
    framer = StreamFramer()
    assert framer.receive(data, 0.0) == [Message(data)]
    assert framer.pings == 0


def test_compact_and_folded_content_length_are_read() -> None:
    compact = invite().replace(b"Content-Length: 5", b"l:5")
    folded = invite().replace(b"Content-Length: 5", b"Content-Length:\r\n   5")
    for data in (compact, folded):
        assert StreamFramer().receive(data, 0.0) == [Message(data)]


def test_bare_lf_line_ends_are_tolerated_as_the_datagram_parser_tolerates_them() -> None:
    data = invite(b"abcde").replace(b"\r\n", b"\n")
    assert StreamFramer().receive(data + b"\n", 0.0) == [Message(data)]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.replace(b"Content-Length: 5\r\n", b""), "no Content-Length"),
        (lambda d: d.replace(b"Content-Length: 5", b"Content-Length: five"), "invalid"),
        (lambda d: d.replace(b"Content-Length: 5", b"Content-Length: -5"), "invalid"),
        (
            lambda d: d.replace(b"Content-Length: 5", b"Content-Length: 99999999999999"),
            "invalid",
        ),
        (
            lambda d: d.replace(b"Content-Length: 5", b"Content-Length: 5\r\nl: 6"),
            "different values",
        ),
    ],
)
def test_missing_or_bad_content_length_closes_with_the_head_for_a_400(edit, reason) -> None:
    framer = StreamFramer()
    events = framer.receive(edit(invite()) + invite(), 0.0)
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, StreamError) and error.kind == "bad_content_length"
    assert reason in error.reason and error.status_code == 400
    assert error.head is not None and error.head.startswith(b"INVITE sip:bob")
    assert framer.closed and framer.receive(invite(), 1.0) == []  # nothing after an error


def test_the_same_content_length_twice_is_accepted() -> None:
    data = invite().replace(b"Content-Length: 5", b"Content-Length: 5\r\nl: 5")
    assert StreamFramer().receive(data, 0.0) == [Message(data)]


def test_headers_over_the_limit_close_without_waiting_for_their_end() -> None:
    framer = StreamFramer(max_header_bytes=1024, max_message_size=4096)
    head = b"INVITE sip:x@y SIP/2.0\r\n" + b"X-Pad: " + b"a" * 2000
    events = framer.receive(head, 0.0)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].kind == "headers_too_long" and events[0].head is None
    assert framer.buffered == 0


def test_headers_at_the_limit_are_accepted() -> None:
    data = invite(b"")
    framer = StreamFramer(max_header_bytes=len(data), max_message_size=len(data))
    assert framer.receive(data, 0.0) == [Message(data)]


def test_an_oversized_message_is_reported_skipped_and_the_stream_goes_on() -> None:
    big = invite(b"x" * 5000)
    after = invite(call_id="after")
    framer = StreamFramer(max_message_size=2048, max_header_bytes=1024)
    events = framer.receive(big[:3000], 0.0)
    assert len(events) == 1 and isinstance(events[0], Oversized)
    assert events[0].size == len(big) and events[0].head.startswith(b"INVITE")
    assert framer.buffered == 0  # the body is discarded, not held
    assert framer.receive(big[3000:] + PING + after, 1.0) == [Ping(), Message(after)]


def test_an_oversized_message_whole_in_one_read_then_the_next() -> None:
    big, after = invite(b"y" * 3000), invite(call_id="after")
    framer = StreamFramer(max_message_size=2048, max_header_bytes=1024)
    events = framer.receive(big + after, 0.0)
    assert [type(e) for e in events] == [Oversized, Message]
    assert events[1] == Message(after)


def test_a_body_too_large_to_skip_closes_with_413() -> None:
    framer = StreamFramer(max_message_size=2048, max_header_bytes=1024, max_skip_bytes=10000)
    events = framer.receive(invite(b"z" * 20000)[:4000], 0.0)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].kind == "too_large" and events[0].status_code == 413


def test_slowloris_headers_a_byte_at_a_time_are_closed_at_the_timeout() -> None:
    framer = StreamFramer(message_timeout=5.0)
    data = invite()
    now = 0.0
    for byte in data[:200]:
        assert framer.receive(bytes([byte]), now) == []
        now += 0.02
        assert framer.check_timeout(now) is None
    assert framer.deadline() == pytest.approx(5.0)
    error = framer.check_timeout(5.0)
    assert isinstance(error, StreamError) and error.kind == "timeout"
    assert framer.closed and framer.buffered == 0
    assert framer.receive(data[200:], 5.1) == []


def test_slowloris_body_is_timed_from_the_first_byte_of_the_message() -> None:
    framer = StreamFramer(message_timeout=5.0)
    data = invite(b"b" * 100)
    head_end = data.index(b"\r\n\r\n") + 4
    assert framer.receive(data[:head_end], 0.0) == []
    assert framer.receive(data[head_end : head_end + 10], 4.0) == []
    events = framer.receive(data[head_end + 10 :], 5.0)  # complete, but too late
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].kind == "timeout"


def test_slow_skipping_of_an_oversized_body_is_timed_too() -> None:
    framer = StreamFramer(max_message_size=2048, max_header_bytes=1024, message_timeout=5.0)
    big = invite(b"x" * 5000)
    assert isinstance(framer.receive(big[:1500], 0.0)[0], Oversized)
    assert framer.deadline() == pytest.approx(5.0)
    assert isinstance(framer.check_timeout(6.0), StreamError)


def test_each_message_gets_its_own_timeout() -> None:
    framer = StreamFramer(message_timeout=5.0)
    one, two = invite(call_id="1"), invite(call_id="2")
    assert framer.receive(one, 0.0) == [Message(one)]
    assert framer.receive(two[:10], 100.0) == []
    assert framer.deadline() == pytest.approx(105.0)
    assert framer.receive(two[10:], 104.0) == [Message(two)]


def test_a_crlf_flood_in_one_read_closes() -> None:
    framer = StreamFramer(max_blank_bytes=64)
    events = framer.receive(b"\r\n" * 10000, 0.0)
    assert isinstance(events[-1], StreamError) and events[-1].kind == "blank_flood"
    assert len(events) <= 40  # bounded work and output for one read
    assert framer.closed


def test_keepalives_spread_over_time_never_trip_the_flood_limit() -> None:
    framer = StreamFramer(max_blank_bytes=64)
    for i in range(1000):
        assert framer.receive(PING, float(i)) == [Ping()]
    assert not framer.closed and framer.pings == 1000


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        StreamFramer(max_message_size=0)
    with pytest.raises(ValueError):
        StreamFramer(max_message_size=1000, max_header_bytes=2000)
    with pytest.raises(ValueError):
        StreamFramer(message_timeout=0)


_STREAM_PARTS = st.lists(
    st.sampled_from(["msg", "empty", "ping", "pong", "lf"]), min_size=1, max_size=8
)


@settings(max_examples=200, deadline=None)
@given(parts=_STREAM_PARTS, cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=30))
def test_any_split_of_a_stream_gives_the_same_events(parts, cuts) -> None:
    pieces: list[bytes] = []
    expected: list = []
    for i, part in enumerate(parts):
        event = None
        if part == "msg":
            data = invite(b"v=0\r\n" * (i + 1), call_id=str(i))
            event = Message(data)
        elif part == "empty":
            data = invite(b"", call_id=str(i))
            event = Message(data)
        elif part == "ping":
            data, event = PING, Ping()
        elif part == "pong":
            data, event = PONG, Pong()
        else:
            data = b"\n"  # a stray LF between messages: no event
        if part in ("ping", "pong", "lf") and pieces and pieces[-1] in (PING, PONG, b"\n"):
            # Adjacent keep-alives are ambiguous (a ping or two pongs): real peers
            # send messages between them; so does this stream.
            separator = invite(b"", call_id=f"sep{i}")
            pieces.append(separator)
            expected.append(Message(separator))
        pieces.append(data)
        if event is not None:
            expected.append(event)
    stream = b"".join(pieces)
    # Cut the stream, but never inside a keep-alive (peers write each in one go).
    keepalive_bytes = set()
    offset = 0
    for piece in pieces:
        if piece in (PING, PONG):
            keepalive_bytes.update(range(offset + 1, offset + len(piece)))
        offset += len(piece)
    positions = sorted({c % len(stream) for c in cuts} - keepalive_bytes - {0})
    framer = StreamFramer()
    got: list = []
    start = 0
    for position in [*positions, len(stream)]:
        got += framer.receive(stream[start:position], 0.0)
        start = position
    assert got == expected
    assert framer.buffered == 0


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from([b"\r\n", b"\r\n\r\n", b"Content-Length: 3\r\n", b"l: 99999\r\n"]),
            st.just(invite()),
        ),
        max_size=40,
    )
)
def test_arbitrary_bytes_never_raise_and_memory_stays_bounded(chunks) -> None:
    framer = StreamFramer(max_message_size=2048, max_header_bytes=1024, max_skip_bytes=4096)
    now = 0.0
    for chunk in chunks:
        events = framer.receive(chunk, now)
        now += 0.01
        assert all(isinstance(e, (Message, Ping, Pong, Oversized, StreamError)) for e in events)
        assert framer.buffered <= 2048 + len(chunk)
        for event in events:
            if isinstance(event, Message):
                assert len(event.data) <= 2048
        if any(isinstance(e, StreamError) for e in events):
            assert isinstance(events[-1], StreamError) and framer.closed
            assert framer.buffered == 0
