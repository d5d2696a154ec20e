"""Fuzzing (issue 6): every parser that takes bytes from the network, property-based.

Inputs are mutations (byte flips, inserts, deletes, duplicated and spliced
ranges, truncation, hostile tokens) of a seed corpus: the RFC 4475 torture
messages, the RFC 3261 call flow messages, captured peer SDP (Asterisk,
baresip, linphone, SIPp) and RTP/RFC 4733 packets, plus plain random bytes.
The only outcomes allowed are a parsed value or our own parse error
(`SIPParseError`, `SDPParseError`, `RtpParseError`,
`TelephoneEventParseError`); the user agent and the RTP receive path must
never raise at all.

The CI run is bounded (about a minute in all). A long run:
`FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/test_fuzz.py -q`
(each test then draws that many examples). A crash found becomes a
regression test at the end of this file.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipecat_sip.codecs import get_codec
from pipecat_sip.media import RTPSession
from pipecat_sip.rtp.dtmf import DtmfReceiver, DtmfSender, TelephoneEvent, TelephoneEventParseError
from pipecat_sip.rtp.packet import RtpPacket, RtpParseError
from pipecat_sip.rtp.sender import RtpSender
from pipecat_sip.sdp import NoCommonCodec, SDPParseError, SessionDescription, negotiate
from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.message import SIPRequest, SIPResponse, parse_message
from pipecat_sip.sip.transaction import TimerValues
from pipecat_sip.sip.useragent import IncomingCall, UserAgent

DATA = Path(__file__).resolve().parent / "data"
SIP_SEEDS = [p.read_bytes() for p in sorted((DATA / "rfc4475").glob("*.dat"))] + [
    p.read_bytes() for p in sorted((DATA / "rfc3261").glob("*.dat"))
]
SDP_SEEDS = [p.read_bytes() for p in sorted((DATA / "sdp").glob("*.sdp"))]

_LONG = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0)


def fuzz(default: int):
    """Hypothesis settings: `default` examples in CI, FUZZ_EXAMPLES for a long run."""
    return settings(
        max_examples=_LONG or default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _rtp_seeds() -> list[bytes]:
    pcmu = get_codec("PCMU")
    seeds = [
        RtpPacket(0, 1, 160, 0x1234, pcmu.silence(160)).serialize(),
        RtpPacket(8, 65535, 2**32 - 160, 0xFFFFFFFF, b"\xd5" * 160, marker=True).serialize(),
        RtpPacket(0, 7, 0, 1, b"\x00" * 80, csrc=[1, 2, 3]).serialize(),
        RtpPacket(0, 8, 160, 1, b"\x7f" * 10, padding=4).serialize(),
        b"\x80\xc8\x00\x06" + b"\x00" * 24,  # RTCP SR
    ]
    seeds += list(DtmfSender(RtpSender(0, 8000), 101, "5", duration_ms=60))
    return seeds


RTP_SEEDS = _rtp_seeds()
TE_SEEDS = [bytes.fromhex(h) for h in ("0a0a00a0", "0b8a0320", "ff3fffff", "00000000")]

TOKENS = [
    b"\x00", b"\r\n", b"\r\n\r\n", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b"\"",
    b"%", b"%00", b"%zz", b"@", b"[", b"]", b"=", b"/", b"\\", b"\xff", b"\xc3\xa9",
    b"SIP/2.0", b"SIP/2.0/UDP", b"INVITE", b"ACK", b"BYE", b"CANCEL", b"sip:", b"sips:",
    b"tel:", b";branch=", b";tag=", b";rport", b";received=", b";maddr=", b"Content-Length: ",
    b"Content-Length: 999999999999999999999", b"CSeq: 4294967296 INVITE", b"Max-Forwards: -1",
    b"Via: ", b"Call-ID: ", b"From: ", b"To: ", b"Contact: *", b"Route: ", b"Expires: ",
    b"99999999999999999999999", b"-1", b"0", b"65536", b"[::1]", b"[::ffff:1.2.3.4]",
    b"m=audio ", b"c=IN IP4 ", b"c=IN IP6 ", b"a=rtpmap:", b"a=fmtp:101 ", b"a=ptime:0",
    b"RTP/AVP", b"telephone-event/8000", b"/0", b"/4294967296", b"o=- ", b"v=0",
    b"x" * 300, b"a" * 5000,
]  # fmt: skip


@st.composite
def mutated(draw, seeds: list[bytes], max_size: int = 70000) -> bytes:
    """A seed (or two spliced) with a few random mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 8))
        n = len(data)
        pos = draw(st.integers(0, n))
        if kind == 0 and n:  # flip a byte
            data[min(pos, n - 1)] = draw(st.integers(0, 255))
        elif kind == 1:  # insert random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 2:  # insert a hostile token
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif kind == 3 and n:  # delete a range
            data[pos : pos + draw(st.integers(1, 64))] = b""
        elif kind == 4 and n:  # duplicate a range
            end = min(n, pos + draw(st.integers(1, 200)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 4))
        elif kind == 5:  # truncate
            del data[pos:]
        elif kind == 6:  # splice with another seed
            other = draw(st.sampled_from(seeds))
            data[pos:] = other[draw(st.integers(0, len(other))) :]
        elif kind == 7 and n:  # swap line ends
            data = bytearray(bytes(data).replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r"]))))
        elif kind == 8 and n:  # replace a digit run (numbers at their limits)
            text = bytes(data)
            digits = [i for i, c in enumerate(text) if 48 <= c <= 57]
            if digits:
                i = draw(st.sampled_from(digits))
                data[i : i + 1] = draw(st.sampled_from([b"0", b"99999999999999999999", b"-1"]))
    return bytes(data[:max_size])


def network_bytes(seeds: list[bytes], max_random: int = 2000) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(seeds), st.binary(max_size=max_random))


# --- SIP messages --------------------------------------------------------------------------


def _touch_sip(msg: SIPRequest | SIPResponse) -> None:
    """Read every lazily parsed header and serialize, as the user agent would."""
    for prop in ("vias", "top_via", "from_", "to", "call_id", "cseq", "contacts", "route",
                 "record_route", "max_forwards", "content_type"):  # fmt: skip
        getattr(msg, prop)
    msg.option_tags("Require")
    msg.headers.as_dict()
    bytes(msg)


@fuzz(4000)
@given(network_bytes(SIP_SEEDS))
@example(b"")
@example(b"\r\n\r\n")
def test_parse_message_gives_message_or_sip_parse_error(data):
    try:
        msg = parse_message(data)
    except SIPParseError as exc:
        assert 400 <= exc.status_code < 600
        assert exc.partial is None or isinstance(exc.partial, SIPRequest | SIPResponse)
        return
    assert isinstance(msg, SIPRequest | SIPResponse)
    try:
        _touch_sip(msg)
    except SIPParseError:
        pass


# --- SDP -----------------------------------------------------------------------------------


@fuzz(3000)
@given(network_bytes(SDP_SEEDS))
def test_sdp_parse_gives_description_or_sdp_parse_error(data):
    try:
        sdp = SessionDescription.parse(data)
    except SDPParseError:
        return
    sdp.serialize()
    try:  # what the server does with an offer
        negotiate(sdp, ("PCMU", "PCMA"), local_address="127.0.0.1", local_port=10000)
    except (SDPParseError, NoCommonCodec):
        pass


# --- RTP and RFC 4733 ------------------------------------------------------------------------


@fuzz(4000)
@given(network_bytes(RTP_SEEDS, max_random=300))
def test_rtp_parse_gives_packet_or_rtp_parse_error(data):
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert 0 <= packet.payload_type < 128 and 0 <= packet.sequence_number < 65536
    again = RtpPacket.parse(packet.serialize())
    assert again.payload == packet.payload and again.ssrc == packet.ssrc


@fuzz(1500)
@given(network_bytes(TE_SEEDS, max_random=12))
def test_telephone_event_parse_gives_event_or_parse_error(data):
    try:
        event = TelephoneEvent.parse(data)
    except TelephoneEventParseError:
        return
    assert TelephoneEvent.parse(event.serialize()) == event


@fuzz(1500)
@given(st.lists(network_bytes(RTP_SEEDS, max_random=200), max_size=20))
def test_rtp_receive_path_never_raises(datagrams):
    """An RTP session's receive path (parse, PT filter, latch, decode, DTMF) on junk."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        session = RTPSession(
            sock=sock,
            remote_addr=("127.0.0.1", 9),
            codec=get_codec("PCMU"),
            telephone_event_pt=101,
        )
        heard: list[bytes] = []
        session.on_audio = heard.append
        session.on_dtmf = lambda key: None
        for i, data in enumerate(datagrams):
            session._on_datagram(data, ("127.0.0.1", 4000 + (i % 2)))
        assert session.stats.errors == 0
        receiver = DtmfReceiver()
        for data in datagrams:
            try:
                receiver.feed(RtpPacket.parse(data))
            except RtpParseError:
                pass
    finally:
        sock.close()


# --- the user agent ---------------------------------------------------------------------------


_SDP_ANSWER = (DATA / "sdp" / "baresip-answer.sdp").read_bytes()


@fuzz(2000)
@given(st.lists(network_bytes(SIP_SEEDS), min_size=1, max_size=6), st.randoms())
def test_user_agent_receive_datagram_never_raises(datagrams, rng: random.Random):
    ua = UserAgent("127.0.0.1", 5060, timer_values=TimerValues(t1=0.01, t2=0.04, t4=0.05))
    now = 0.0
    for data in datagrams:
        now += rng.random()
        ua.receive_datagram(data, ("127.0.0.1", 5070), now)
        ua.datagrams_to_send()
        while (event := ua.next_event()) is not None:
            if isinstance(event, IncomingCall):
                action = rng.randrange(3)
                if action == 0:
                    ua.answer(event.call_id, _SDP_ANSWER, now)
                elif action == 1:
                    ua.reject(event.call_id, 486, now)
                else:
                    ua.hangup(event.call_id, now)
        timer = ua.get_timer()
        if timer is not None:
            ua.handle_timer(max(timer, now))
    for _ in range(200):  # run every timer out: all transactions end
        timer = ua.get_timer()
        if timer is None:
            break
        now = max(now, timer)
        ua.handle_timer(now)
        ua.datagrams_to_send()
        while ua.next_event() is not None:
            pass
    assert ua.get_timer() is None
