"""Tests for pipecat_sip.sdp: parsing, serializing, RFC 3264 offer/answer."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_sip.sdp import (
    OPUS_FMTP,
    MediaDescription,
    MediaFormat,
    NegotiatedMedia,
    NoCommonCodec,
    Origin,
    SDPParseError,
    SessionDescription,
    apply_answer,
    create_offer,
    negotiate,
    parse_fmtp,
)

DATA = Path(__file__).parent / "data" / "sdp"
ALL_FILES = sorted(p.name for p in DATA.glob("*.sdp"))
# Files whose lines are already in RFC 8866 order (and the order we write):
# they come back byte for byte. asterisk-offer.sdp puts a=maxptime before a=sendrecv;
# the baresip-*-only/wideband captures put a=ptime last.
NOT_CANONICAL = {
    "asterisk-offer.sdp",
    "baresip-g722-only-offer.sdp",
    "baresip-opus-only-offer.sdp",
    "baresip-wideband-offer.sdp",
}
CANONICAL_FILES = [name for name in ALL_FILES if name not in NOT_CANONICAL]

LOCAL = {"local_address": "192.0.2.1", "local_port": 40000}


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def parse(name: str) -> SessionDescription:
    return SessionDescription.parse(load(name))


def answer_for(name: str, **kwargs) -> tuple[SessionDescription, NegotiatedMedia]:
    return negotiate(parse(name), **{**LOCAL, "session_id": 1234, **kwargs})


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# ----------------------------------------------------------------------------- parsing


def test_data_files_use_crlf():
    for name in ALL_FILES:
        data = load(name)
        assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b""), name


@pytest.mark.parametrize("name", ALL_FILES)
def test_round_trip_value(name):
    sdp = parse(name)
    assert SessionDescription.parse(sdp.serialize()) == sdp
    assert SessionDescription.parse(sdp.serialize()).serialize() == sdp.serialize()


@pytest.mark.parametrize("name", CANONICAL_FILES)
def test_round_trip_bytes(name):
    assert parse(name).serialize() == load(name)


def test_parse_rfc3264_basic_offer_fields():
    sdp = parse("rfc3264-10.1-offer.sdp")
    assert sdp.version == 0
    assert sdp.origin == Origin("alice", 2890844526, 2890844526, "IN", "IP4", "host.anywhere.com")
    assert sdp.session_name == ""
    assert sdp.connection_address == "host.anywhere.com"
    assert sdp.connection_addrtype == "IP4"
    assert sdp.timing == [(0, 0)]
    assert sdp.direction is None
    assert [(m.media, m.port, m.proto) for m in sdp.media] == [
        ("audio", 49170, "RTP/AVP"),
        ("video", 51372, "RTP/AVP"),
        ("video", 53000, "RTP/AVP"),
    ]
    assert sdp.media[0].formats == [MediaFormat(0, "PCMU", 8000)]
    assert sdp.media[1].formats == [MediaFormat(31, "H261", 90000)]
    assert sdp.media[2].formats == [MediaFormat(32, "MPV", 90000)]
    assert all(m.connection_address is None and m.attributes == [] for m in sdp.media)


def test_parse_static_payload_type_without_rtpmap():
    sdp = parse("sipp-offer.sdp")
    (audio,) = sdp.media
    assert audio.formats == [MediaFormat(0, "PCMU", 8000, has_rtpmap=False)]
    answer = parse("rfc3264-10.1-answer.sdp")
    assert answer.media[1].formats == [MediaFormat(31, "H261", 90000, has_rtpmap=False)]


def test_parse_linphone_offer_fields():
    sdp = parse("linphone-offer.sdp")
    assert sdp.session_name == "Talk"
    assert sdp.attributes == [
        ("rtcp-xr", "rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics"),
        ("record", "off"),
    ]
    (audio,) = sdp.media
    assert [f.payload_type for f in audio.formats] == [98, 97, 99, 0, 8, 18, 101, 96]
    assert audio.get_format(98) == MediaFormat(98, "opus", 48000, 2, "useinbandfec=1")
    assert audio.get_format(18) == MediaFormat(18, "G729", 8000, 1, "annexb=yes", False)
    assert audio.get_format(96) == MediaFormat(96, "telephone-event", 48000)
    assert audio.get_format(5) is None
    assert audio.direction is None
    assert audio.attributes == [("rtcp-fb", "* trr-int 1000"), ("rtcp-fb", "* ccm tmmbr")]


def test_parse_media_attributes_split_out():
    sdp = parse("asterisk-offer.sdp")
    (audio,) = sdp.media
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert audio.attributes == [("maxptime", "150")]
    assert audio.get_attribute("maxptime") == "150"
    assert audio.get_format(101) == MediaFormat(101, "telephone-event", 8000, fmtp="0-16")


def test_parse_baresip_offer_fields():
    sdp = parse("baresip-offer.sdp")
    assert sdp.attributes == [("tool", "baresip 1.0.0")]
    (audio,) = sdp.media
    assert audio.bandwidths == [("AS", 96)]
    assert audio.attributes == [
        ("label", "1"),
        ("rtcp-rsize", None),
        ("ssrc", "2716282351 cname:5a3b0e61-2c7d-4f0a-9b1e-0d4c8a6f1e22"),
    ]


def test_parse_ipv6_and_media_level_connection():
    sdp = parse("ipv6-offer.sdp")
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection_address == "2001:db8::10"
    assert sdp.connection_addrtype == "IP6"
    assert sdp.media[0].connection_address == "2001:db8::20"
    assert sdp.media[0].connection_addrtype == "IP6"
    assert sdp.media[0].ptime == 30


def test_parse_tolerates_lf_trailing_whitespace_and_blank_lines():
    text = load("baresip-offer.sdp").decode()
    messy = "\n".join(line + " \t" for line in text.split("\r\n")) + "\n\n"
    assert SessionDescription.parse(messy) == parse("baresip-offer.sdp")
    cr_only = text.replace("\r\n", "\r")
    assert SessionDescription.parse(cr_only.encode()) == parse("baresip-offer.sdp")
    with_bom = "\ufeff" + text
    assert SessionDescription.parse(with_bom) == parse("baresip-offer.sdp")


def test_parse_keeps_unknown_lines_and_repeats():
    sdp = SessionDescription.parse(
        "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=x\nx=session extension\nr=7d 1h 0 25h\n"
        "s=second name\nt=0 0\n"
        "m=audio 5004 RTP/AVP 0\nc=IN IP4 10.0.0.2\nc=IN IP4 10.0.0.3\ny=media extension\n"
        "a=ptime:20\na=ptime:30\na=sendrecv\na=recvonly\na=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:0 PCMA/8000\na=rtpmap:96 opus/48000/2\na=fmtp:0 x\na=fmtp:0 y\n"
    )
    assert sdp.session_name == "x"
    assert sdp.other_lines == [
        ("x", "session extension"),
        ("r", "7d 1h 0 25h"),
        ("s", "second name"),
    ]
    (audio,) = sdp.media
    assert audio.connection_address == "10.0.0.2"
    assert audio.other_lines == [("c", "IN IP4 10.0.0.3"), ("y", "media extension")]
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert audio.formats == [MediaFormat(0, "PCMU", 8000, fmtp="x")]
    assert audio.attributes == [
        ("ptime", "30"),
        ("recvonly", None),
        ("rtpmap", "0 PCMA/8000"),
        ("rtpmap", "96 opus/48000/2"),  # payload type not on the m= line
        ("fmtp", "0 y"),
    ]
    assert SessionDescription.parse(sdp.serialize()) == sdp


def test_parse_malformed_attribute_values_are_kept_not_fatal():
    sdp = SessionDescription.parse(
        "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 5004 RTP/AVP 0 97\na=rtpmap:97 iLBC\na=rtpmap:97 iLBC/x\n"
        "a=ptime:twenty\na=fmtp:abc 1\n"
    )
    (audio,) = sdp.media
    assert audio.get_format(97) == MediaFormat(97, "", 0, has_rtpmap=False)
    assert audio.ptime is None
    assert audio.attributes == [
        ("rtpmap", "97 iLBC"),
        ("rtpmap", "97 iLBC/x"),
        ("ptime", "twenty"),
        ("fmtp", "abc 1"),
    ]
    assert SessionDescription.parse(sdp.serialize()) == sdp


def test_parse_details():
    sdp = SessionDescription.parse(
        "v=0\no=Cisco SIP GW 5 6 IN IP4 10.0.0.1\ns=-\ni=info\nu=http://example.com\n"
        "e=a@example.com\np=+1 555 0100\nb=CT:128\nt=3034423619 3042462419\nk=prompt\n"
        "a=recvonly\na=cat:x\n"
        "m=audio 49170/2 RTP/AVP 0 0 8\ni=audio\nb=AS:64\nk=clear:key\na=ptime:20.4\n"
        "m=image 0 udptl t38\na=T38FaxVersion:0\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n"
    )
    assert sdp.origin.username == "Cisco SIP GW"
    assert (sdp.information, sdp.uri, sdp.encryption_key) == (
        "info",
        "http://example.com",
        "prompt",
    )
    assert (sdp.emails, sdp.phones) == (["a@example.com"], ["+1 555 0100"])
    assert sdp.bandwidths == [("CT", 128)]
    assert sdp.timing == [(3034423619, 3042462419)]
    assert sdp.direction == "recvonly"
    assert sdp.attributes == [("cat", "x")]
    audio, image, app = sdp.media
    assert (audio.port, audio.port_count) == (49170, 2)
    assert [f.payload_type for f in audio.formats] == [0, 8]  # duplicate 0 listed once
    assert (audio.information, audio.bandwidths, audio.encryption_key) == (
        "audio",
        [("AS", 64)],
        "clear:key",
    )
    assert audio.ptime == 20
    assert (image.formats, image.raw_formats) == ([], ["t38"])
    assert image.attributes == [("T38FaxVersion", "0")]
    assert app.raw_formats == ["webrtc-datachannel"]
    assert SessionDescription.parse(sdp.serialize()) == sdp


def test_parse_missing_s_and_t_lines_is_tolerated():
    sdp = SessionDescription.parse("v=0\no=- 1 1 IN IP4 10.0.0.1\nm=audio 1 RTP/AVP 0\n")
    assert (sdp.session_name, sdp.timing) == ("", [])
    assert SessionDescription.parse(sdp.serialize()) == sdp


def test_parse_undecodable_bytes_round_trip():
    data = crlf("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=caf\xe9\nt=0 0\n").replace(b"\xc3\xa9", b"\xe9")
    sdp = SessionDescription.parse(data)
    assert sdp.serialize() == data


BASE = "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "SDP body is empty"),
        ("\r\n \r\n", "SDP body is empty"),
        ("v=0\no=- 1 2 IN IP4 10.0.0.1\nhello\n", "SDP line 3 has no '='"),
        ("hello", "SDP line 1 has no '='"),
        ("o=- 1 2 IN IP4 10.0.0.1\n", "SDP line 1 must be v=, got 'o=- 1 2 IN IP4 10.0.0.1'"),
        ("v=1\n", "v= line has unsupported version '1'"),
        ("v=0\nab=c\n", "SDP line 2 has invalid type 'ab'"),
        ("v=0\n=c\n", "SDP line 2 has invalid type ''"),
        ("v=0\n1=c\n", "SDP line 2 has invalid type '1'"),
        ("v=0\ns=-\n", "SDP has no o= line"),
        ("v=0\no=- 1 2 IN IP4\n", "o= line needs 6 fields, got 5: '- 1 2 IN IP4'"),
        ("v=0\no=- x 2 IN IP4 10.0.0.1\n", "o= line has invalid sess-id 'x'"),
        ("v=0\no=- 1 -2 IN IP4 10.0.0.1\n", "o= line has invalid sess-version '-2'"),
        ("v=0\no=- 1 2 IN IP4 10.0.0.1\nc=IN IP4\n", "c= line needs 3 fields, got 2: 'IN IP4'"),
        (BASE.replace("c=IN", "c=ATM"), "c= line has unsupported nettype 'ATM'"),
        (BASE + "b=AS\n", "b= line has no ':' in 'AS'"),
        (BASE + "b=AS:lots\n", "b= line has invalid bandwidth 'lots'"),
        (BASE + "t=0\n", "t= line needs 2 fields, got 1: '0'"),
        (BASE + "t=now 0\n", "t= line has invalid start time 'now'"),
        (BASE + "t=0 -1\n", "t= line has invalid stop time '-1'"),
        (BASE + "m=audio 5004\n", "m= line needs at least 3 fields, got 2: 'audio 5004'"),
        (BASE + "m=audio x RTP/AVP 0\n", "m= line has invalid port 'x'"),
        (BASE + "m=audio 65536 RTP/AVP 0\n", "m= line has invalid port '65536'"),
        (BASE + "m=audio 5004/two RTP/AVP 0\n", "m= line has invalid port count 'two'"),
        (BASE + "m=audio 5004 RTP/AVP 0 PCMU\n", "m= line has invalid payload type 'PCMU'"),
        (BASE + "m=audio 5004 RTP/AVP 128\n", "m= line has invalid payload type '128'"),
        (BASE + "m=audio 5004 RTP/AVP 0\nc=IN\n", "c= line needs 3 fields, got 1: 'IN'"),
        (BASE + "m=audio 5004 RTP/AVP 0\nb=AS:\n", "b= line has invalid bandwidth ''"),
        (
            "v=0\no=- " + "9" * 70 + " 2 IN IP4 10.0.0.1\n",
            "o= line has invalid sess-id '" + "9" * 40 + "...'",
        ),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(SDPParseError) as info:
        SessionDescription.parse(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_parse_rejects_non_bytes():
    with pytest.raises(TypeError):
        SessionDescription.parse(5)  # type: ignore[arg-type]


def test_constructed_values_infer_addrtype_and_check_direction():
    md = MediaDescription("audio", 1, "RTP/AVP", connection_address="::1")
    assert md.connection_addrtype == "IP6"
    with pytest.raises(ValueError, match="invalid direction 'both'"):
        MediaDescription("audio", 1, "RTP/AVP", direction="both")
    with pytest.raises(ValueError, match="invalid direction"):
        SessionDescription(0, Origin("-", 1, 1, "IN", "IP4", "h"), "-", direction="x")


# ------------------------------------------------------------------- hypothesis fuzzing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_parse_or_raise_sdp_parse_error(data):
    try:
        SessionDescription.parse(data)
    except SDPParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_random_text_parse_or_raise_sdp_parse_error(text):
    try:
        SessionDescription.parse(text)
    except SDPParseError:
        pass


_FUZZ_LINES = [
    "o=- 1 2 IN IP4 10.0.0.1",
    "o=a b 1 2 IN IP6 ::1",
    "s=-",
    "s=",
    "c=IN IP4 10.0.0.1",
    "c=IN IP6 ::1",
    "c=IN IP4 224.2.1.1/127/3",
    "t=0 0",
    "r=7d 1h 0 25h",
    "z=2882844526 -1h",
    "b=AS:64",
    "i=x",
    "k=clear:x",
    "m=audio 5004 RTP/AVP 0 8 101",
    "m=audio 0 RTP/AVP 0 0",
    "m=video 5006/2 RTP/AVPF 96",
    "m=image 5008 udptl t38",
    "m=audio 5004 RTP/AVP",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000/1",
    "a=rtpmap:101 telephone-event/8000",
    "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:96 bad",
    "a=rtpmap:",
    "a=rtpmap",
    "a=fmtp:101 0-16",
    "a=fmtp:101",
    "a=fmtp:96  x  y",
    "a=fmtp:x",
    "a=ptime:20",
    "a=ptime:30.5",
    "a=ptime:x",
    "a=maxptime:40",
    "a=sendrecv",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=inactive:x",
    "a=",
    "a=:",
    "x=unknown",
    "v=0",
    "",
    "   ",
]


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.sampled_from(_FUZZ_LINES),
            st.builds(
                "{}={}".format,
                st.sampled_from("vosiuepcbtrzkamx"),
                st.text(alphabet=" \t:/0123456789abcIPN-.", max_size=20),
            ),
        ),
        max_size=25,
    ),
    newline=st.sampled_from(["\r\n", "\n", "\r"]),
)
def test_structured_fuzz_round_trips(lines, newline):
    body = newline.join(["v=0", "o=- 1 2 IN IP4 10.0.0.1", *lines]).encode()
    try:
        sdp = SessionDescription.parse(body)
    except SDPParseError:
        return
    wire = sdp.serialize()
    again = SessionDescription.parse(wire)
    assert again == sdp
    assert again.serialize() == wire


# ---------------------------------------------------------------- negotiation (UAS)


def test_answer_to_baresip_offer_matches_golden_file():
    answer, media = answer_for("baresip-offer.sdp")
    assert answer.serialize() == load("baresip-answer.sdp")
    assert media == NegotiatedMedia(
        remote_address=("127.0.0.1", 10002),
        payload_type=0,
        encoding_name="PCMU",
        clock_rate=8000,
        telephone_event_pt=101,
        ptime=20,
        direction="sendrecv",
        on_hold=False,
    )


@pytest.mark.parametrize("name", [n for n in ALL_FILES if "offer" in n and "g729" not in n])
def test_answer_round_trips_and_has_as_many_m_lines(name):
    offer = parse(name)
    try:
        answer, _ = negotiate(offer, ("opus", "G722", "PCMU", "PCMA"), **LOCAL)
    except NoCommonCodec:
        assert name == "rfc3264-10.2-reoffer.sdp"  # G723 only
        return
    assert SessionDescription.parse(answer.serialize()) == answer
    assert [m.media for m in answer.media] == [m.media for m in offer.media]
    assert [m.proto for m in answer.media] == [m.proto for m in offer.media]
    assert sum(m.port != 0 for m in answer.media) == 1


def test_rfc3264_basic_exchange_rejects_video():
    answer, media = answer_for("rfc3264-10.1-offer.sdp")
    assert answer.serialize() == crlf(
        "v=0\n"
        "o=- 1234 0 IN IP4 192.0.2.1\n"
        "s=-\n"
        "c=IN IP4 192.0.2.1\n"
        "t=0 0\n"
        "m=audio 40000 RTP/AVP 0\n"
        "a=rtpmap:0 PCMU/8000\n"
        "a=ptime:20\n"
        "a=sendrecv\n"
        "m=video 0 RTP/AVP 31\n"
        "m=video 0 RTP/AVP 32\n"
    )
    assert media.remote_address == ("host.anywhere.com", 49170)
    assert (media.payload_type, media.encoding_name, media.telephone_event_pt) == (0, "PCMU", None)


def test_rfc3264_reoffer_keeps_port_zero_and_rejects_event_only_stream():
    answer, media = answer_for("rfc3264-10.1-reoffer.sdp", session_version=1)
    assert [(m.media, m.port) for m in answer.media] == [
        ("audio", 40000),
        ("video", 0),
        ("video", 0),
        ("audio", 0),  # telephone-events only: no codec
    ]
    assert answer.origin.session_version == 1
    assert answer.media[3].formats == [MediaFormat(110, "", 0, has_rtpmap=False)]
    assert media.remote_address == ("host.example.com", 65422)


def test_rfc3264_one_of_n_inactive_offer():
    answer, media = answer_for("rfc3264-10.2-offer.sdp")
    (audio,) = answer.media
    assert [f.payload_type for f in audio.formats] == [0]
    assert audio.direction == "inactive"
    assert (media.direction, media.on_hold) == ("inactive", True)
    with pytest.raises(NoCommonCodec, match=r"G723/8000; we support PCMU, PCMA"):
        negotiate(parse("rfc3264-10.2-reoffer.sdp"), **LOCAL)
    _, media = negotiate(parse("rfc3264-10.2-reoffer.sdp"), ("PCMU", "G723"), **LOCAL)
    assert (media.payload_type, media.encoding_name, media.direction) == (4, "G723", "sendrecv")


def test_offerer_order_wins():
    _, media = answer_for("asterisk-offer.sdp")
    assert (media.payload_type, media.encoding_name) == (8, "PCMA")
    _, media = answer_for("asterisk-offer.sdp", supported=("PCMU",))
    assert (media.payload_type, media.encoding_name) == (0, "PCMU")
    _, media = answer_for("baresip-offer.sdp", supported=("PCMA", "PCMU"))
    assert media.encoding_name == "PCMU"


def test_asterisk_offer():
    answer, media = answer_for("asterisk-offer.sdp")
    assert media == NegotiatedMedia(
        ("192.0.2.10", 16886), 8, "PCMA", 8000, 101, 20, "sendrecv", False
    )
    assert [f.payload_type for f in answer.media[0].formats] == [8, 101]


def test_linphone_offer_picks_telephone_event_at_8000():
    answer, media = answer_for("linphone-offer.sdp")
    assert (media.payload_type, media.encoding_name, media.telephone_event_pt) == (0, "PCMU", 101)
    assert answer.media[0].formats == [
        MediaFormat(0, "PCMU", 8000),
        MediaFormat(101, "telephone-event", 8000, fmtp="0-16"),
    ]
    # the other way round: telephone-event/8000 on 96, /48000 on 101
    offer = parse("linphone-offer.sdp")
    audio = offer.media[0]
    audio.get_format(101).clock_rate = 48000
    audio.get_format(96).clock_rate = 8000
    answer, media = negotiate(offer, **LOCAL)
    assert media.telephone_event_pt == 96
    assert answer.serialize().count(b"a=rtpmap:96 telephone-event/8000\r\n") == 1
    assert b"a=fmtp:96 0-16\r\n" in answer.serialize()


def test_sipp_offer_without_rtpmap():
    answer, media = answer_for("sipp-offer.sdp")
    assert media == NegotiatedMedia(
        ("127.0.0.1", 6000), 0, "PCMU", 8000, None, 20, "sendrecv", False
    )
    # rtpmap written even for the static payload type
    assert answer.serialize().endswith(
        crlf("m=audio 40000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=ptime:20\na=sendrecv\n")
    )


def test_g729_only_offer_is_not_acceptable():
    with pytest.raises(NoCommonCodec) as info:
        negotiate(parse("g729-only-offer.sdp"), **LOCAL)
    assert str(info.value) == (
        "no usable audio stream in the offer: m= line 1 offers G729/8000, "
        "telephone-event/8000; we support PCMU, PCMA"
    )
    assert info.value.status_code == 488


def test_no_common_codec_reasons():
    cases = {
        "m=video 5004 RTP/AVP 31\n": "no usable audio stream in the offer: no audio m= line",
        "m=audio 0 RTP/AVP 0\n": "m= line 1 is disabled (port 0)",
        "m=audio 5004 RTP/SAVP 0\n": "m= line 1 uses RTP/SAVP, not RTP/AVP",
        "m=audio 5004 RTP/AVP 0\na=rtpmap:0 PCMU/16000\n": "m= line 1 offers PCMU/16000",
        "m=audio 5004 RTP/AVP 97\n": "m= line 1 offers PT 97",
    }
    for media, reason in cases.items():
        with pytest.raises(NoCommonCodec, match=re.escape(reason)):
            negotiate(SessionDescription.parse(BASE + media), **LOCAL)
    no_c = "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    with pytest.raises(NoCommonCodec, match="m= line 1 has no connection address"):
        negotiate(SessionDescription.parse(no_c), **LOCAL)
    with pytest.raises(NoCommonCodec):
        negotiate(parse("baresip-offer.sdp"), (), **LOCAL)


def test_first_audio_stream_with_supported_codec_is_used():
    offer = SessionDescription.parse(
        BASE
        + "m=audio 5000 RTP/AVP 18\n"
        + "m=audio 5002 RTP/AVP 8\nc=IN IP4 10.0.0.9\n"
        + "m=audio 5004 RTP/AVP 0\n"
    )
    answer, media = negotiate(offer, **LOCAL)
    assert [m.port for m in answer.media] == [0, 40000, 0]
    assert media.remote_address == ("10.0.0.9", 5002)
    assert media.encoding_name == "PCMA"


def test_rtpmap_names_are_case_insensitive():
    offer = SessionDescription.parse(
        BASE
        + "m=audio 5004 RTP/AVP 0 100\na=rtpmap:0 pcmu/8000\na=rtpmap:100 Telephone-Event/8000\n"
    )
    answer, media = negotiate(offer, ("pcmu",), **LOCAL)
    assert (media.encoding_name, media.telephone_event_pt) == ("PCMU", 100)
    assert b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:100 telephone-event/8000\r\n" in answer.serialize()


def test_dynamic_payload_type_for_static_codec():
    offer = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVP 112\na=rtpmap:112 PCMA/8000\n")
    _, media = negotiate(offer, **LOCAL)
    assert (media.payload_type, media.encoding_name) == (112, "PCMA")


@pytest.mark.parametrize(
    ("offered", "ours", "on_hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("sendonly", "recvonly", True),
        ("recvonly", "sendonly", False),
        ("inactive", "inactive", True),
    ],
)
def test_direction_is_mirrored(offered, ours, on_hold):
    offer = SessionDescription.parse(BASE + f"m=audio 5004 RTP/AVP 0\na={offered}\n")
    answer, media = negotiate(offer, **LOCAL)
    assert answer.media[0].direction == ours
    assert (media.direction, media.on_hold) == (ours, on_hold)
    assert f"a={ours}\r\n".encode() in answer.serialize()
    # the same at session level
    offer = SessionDescription.parse(BASE + f"a={offered}\nm=audio 5004 RTP/AVP 0\n")
    answer, media = negotiate(offer, **LOCAL)
    assert (answer.media[0].direction, media.on_hold) == (ours, on_hold)


def test_media_direction_overrides_session_direction():
    offer = SessionDescription.parse(BASE + "a=sendonly\nm=audio 5004 RTP/AVP 0\na=sendrecv\n")
    _, media = negotiate(offer, **LOCAL)
    assert (media.direction, media.on_hold) == ("sendrecv", False)


def test_hold_files():
    _, media = answer_for("hold-sendonly.sdp", session_version=1)
    assert (media.direction, media.on_hold, media.remote_address) == (
        "recvonly",
        True,
        ("127.0.0.1", 10002),
    )
    answer, media = answer_for("hold-zero-address.sdp", session_version=2)
    assert (media.direction, media.on_hold, media.remote_address) == (
        "sendrecv",
        True,
        ("0.0.0.0", 10002),
    )
    assert answer.connection_address == "192.0.2.1"


def test_ptime_is_honoured():
    _, media = answer_for("ipv6-offer.sdp")
    assert media.ptime == 30
    for line, expected in [
        ("a=ptime:40\n", 40),
        ("a=ptime:2000\n", 20),  # out of range
        ("a=maxptime:10\n", 10),  # no ptime: below 20 only if maxptime says so
        ("a=maxptime:150\n", 20),
        ("", 20),
    ]:
        offer = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVP 0\n" + line)
        answer, media = negotiate(offer, **LOCAL)
        assert media.ptime == expected
        assert answer.media[0].ptime == expected


def test_ipv6_offer_and_ipv6_answer():
    answer, media = answer_for("ipv6-offer.sdp", local_address="2001:db8::1")
    assert media.remote_address == ("2001:db8::20", 30000)
    assert (media.payload_type, media.telephone_event_pt) == (8, 101)
    wire = answer.serialize()
    assert b"o=- 1234 0 IN IP6 2001:db8::1\r\n" in wire
    assert b"c=IN IP6 2001:db8::1\r\n" in wire
    assert b"a=ptime:30\r\n" in wire


def test_session_id_and_version():
    answer, _ = negotiate(parse("baresip-offer.sdp"), **LOCAL)
    first = answer.origin.session_id
    assert 0 < first < 2**31
    assert answer.origin.session_version == 0
    again, _ = negotiate(
        parse("hold-sendonly.sdp"), **LOCAL, session_id=first, session_version=1, username="bot"
    )
    assert again.origin == Origin("bot", first, 1, "IN", "IP4", "192.0.2.1")


def test_multicast_ttl_is_stripped_from_remote_address():
    offer = SessionDescription.parse(
        BASE.replace("c=IN IP4 10.0.0.1", "c=IN IP4 224.2.1.1/127") + "m=audio 5004 RTP/AVP 0\n"
    )
    _, media = negotiate(offer, **LOCAL)
    assert media.remote_address == ("224.2.1.1", 5004)


def test_avpf_is_answered_as_avpf_and_non_rtp_lines_are_rejected():
    offer = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVPF 0\nm=image 6000 udptl t38\n")
    answer, _ = negotiate(offer, **LOCAL)
    assert answer.media[0].proto == "RTP/AVPF"
    assert b"m=image 0 udptl t38\r\n" in answer.serialize()


# ---------------------------------------------------------------- offer/answer (UAC)


def test_create_offer():
    offer = create_offer(local_address="192.0.2.1", local_port=40000, session_id=99)
    assert offer.serialize() == crlf(
        "v=0\n"
        "o=- 99 0 IN IP4 192.0.2.1\n"
        "s=-\n"
        "c=IN IP4 192.0.2.1\n"
        "t=0 0\n"
        "m=audio 40000 RTP/AVP 0 8 13 101\n"
        "a=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:8 PCMA/8000\n"
        "a=rtpmap:13 CN/8000\n"
        "a=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-16\n"
        "a=ptime:20\n"
        "a=sendrecv\n"
    )
    assert SessionDescription.parse(offer.serialize()) == offer


def test_create_offer_options_and_errors():
    offer = create_offer(
        local_address="::1",
        local_port=5000,
        codecs=("pcma", "G722", "PCMA"),
        telephone_event_pt=None,
        ptime=30,
    )
    (audio,) = offer.media
    assert audio.formats == [
        MediaFormat(8, "PCMA", 8000),
        MediaFormat(9, "G722", 8000),
        MediaFormat(13, "CN", 8000),
    ]
    assert (audio.ptime, offer.connection_addrtype, offer.origin.addrtype) == (30, "IP6", "IP6")
    offer = create_offer(local_address="h", local_port=1, comfort_noise=False)
    assert [f.payload_type for f in offer.media[0].formats] == [0, 8, 101]
    offer = create_offer(local_address="h", local_port=1, telephone_event_pt=13)
    assert [f.encoding_name for f in offer.media[0].formats] == ["PCMU", "PCMA", "telephone-event"]
    with pytest.raises(ValueError, match="'speex' has no static RTP payload type"):
        create_offer(local_address="h", local_port=1, codecs=("speex",))
    with pytest.raises(ValueError, match="'CN' is not an audio codec"):
        create_offer(local_address="h", local_port=1, codecs=("PCMU", "CN"))
    with pytest.raises(ValueError, match="at least one codec"):
        create_offer(local_address="h", local_port=1, codecs=())
    with pytest.raises(ValueError, match="used by a codec"):
        create_offer(local_address="h", local_port=1, telephone_event_pt=8)
    with pytest.raises(ValueError, match="outside 0-127"):
        create_offer(local_address="h", local_port=1, telephone_event_pt=200)
    with pytest.raises(ValueError, match="ptime"):
        create_offer(local_address="h", local_port=1, ptime=0)


def test_create_offer_negotiate_apply_answer_pair():
    offer = create_offer(local_address="10.0.0.1", local_port=4000, codecs=("PCMA", "PCMU"))
    wire_offer = SessionDescription.parse(offer.serialize())
    answer, uas_media = negotiate(wire_offer, local_address="10.0.0.2", local_port=5000)
    uac_media = apply_answer(offer, SessionDescription.parse(answer.serialize()))
    assert uas_media == NegotiatedMedia(
        ("10.0.0.1", 4000), 8, "PCMA", 8000, 101, 20, "sendrecv", False, cn_pt=13
    )
    assert uac_media == NegotiatedMedia(
        ("10.0.0.2", 5000), 8, "PCMA", 8000, 101, 20, "sendrecv", False, cn_pt=13
    )


def test_apply_answer_rfc3264_examples():
    media = apply_answer(parse("rfc3264-10.1-offer.sdp"), parse("rfc3264-10.1-answer.sdp"))
    assert media == NegotiatedMedia(
        ("host.example.com", 49920), 0, "PCMU", 8000, None, 20, "sendrecv", False
    )
    media = apply_answer(parse("rfc3264-10.1-reoffer.sdp"), parse("rfc3264-10.1-reanswer.sdp"))
    assert media.remote_address == ("host.anywhere.com", 49170)
    media = apply_answer(parse("rfc3264-10.2-offer.sdp"), parse("rfc3264-10.2-answer.sdp"))
    assert (media.payload_type, media.direction, media.on_hold) == (0, "inactive", True)
    media = apply_answer(parse("rfc3264-10.2-reoffer.sdp"), parse("rfc3264-10.2-reanswer.sdp"))
    assert (media.payload_type, media.encoding_name, media.direction) == (4, "G723", "sendrecv")


@pytest.mark.parametrize(
    ("answered", "ours", "on_hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("recvonly", "sendonly", False),
        ("sendonly", "recvonly", True),
        ("inactive", "inactive", True),
    ],
)
def test_apply_answer_direction(answered, ours, on_hold):
    offer = create_offer(local_address="10.0.0.1", local_port=4000)
    answer = SessionDescription.parse(
        BASE
        + "m=audio 5004 RTP/AVP 8 101\na=rtpmap:101 telephone-event/8000\na=ptime:30\n"
        + f"a={answered}\n"
    )
    media = apply_answer(offer, answer)
    assert (media.direction, media.on_hold) == (ours, on_hold)
    assert (media.payload_type, media.telephone_event_pt, media.ptime) == (8, 101, 30)
    assert media.remote_address == ("10.0.0.1", 5004)


def test_apply_answer_when_we_offer_sendonly():
    offer = create_offer(local_address="10.0.0.1", local_port=4000)
    offer.media[0].direction = "sendonly"
    answer = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVP 0\na=recvonly\n")
    assert apply_answer(offer, answer).direction == "sendonly"


def test_apply_answer_errors():
    offer = create_offer(local_address="10.0.0.1", local_port=4000)
    for media, reason in [
        ("m=audio 0 RTP/AVP 0\n", "m= line 1 was rejected (port 0)"),
        ("m=audio 5004 RTP/AVP 18\n", "m= line 1 answers G729/8000"),
        ("m=audio 5004 RTP/AVP 0\nm=video 0 RTP/AVP 31\n", None),
    ]:
        answer = SessionDescription.parse(BASE + media)
        if reason is None:
            assert apply_answer(offer, answer).payload_type == 0
            continue
        with pytest.raises(NoCommonCodec, match=re.escape(reason)):
            apply_answer(offer, answer)
    with pytest.raises(NoCommonCodec, match="the answer has 0 m= lines, the offer 1"):
        apply_answer(offer, SessionDescription.parse(BASE))


def test_negotiated_media_is_frozen():
    _, media = answer_for("baresip-offer.sdp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        media.ptime = 30  # type: ignore[misc]


# ------------------------------------------------ wideband and dynamic codecs, comfort noise

WIDE = ("G722", "PCMU", "PCMA")


def test_g722_only_offer_needs_g722_supported():
    with pytest.raises(NoCommonCodec, match=r"offers G722/8000, telephone-event/8000"):
        answer_for("baresip-g722-only-offer.sdp")  # the old default: G.711 only
    answer, media = answer_for("baresip-g722-only-offer.sdp", supported=WIDE)
    assert media == NegotiatedMedia(
        ("127.0.0.1", 34086), 9, "G722", 8000, 101, 20, "sendrecv", False
    )
    assert answer.media[0].formats == [
        MediaFormat(9, "G722", 8000),
        MediaFormat(101, "telephone-event", 8000, fmtp="0-16"),
    ]


def test_answer_to_baresip_wideband_offer_matches_golden_file():
    answer, media = answer_for("baresip-wideband-offer.sdp", supported=WIDE)
    assert answer.serialize() == load("baresip-wideband-answer.sdp")
    assert (media.payload_type, media.encoding_name, media.clock_rate) == (9, "G722", 8000)
    # the offerer's order still wins over ours
    _, media = answer_for("baresip-wideband-offer.sdp", supported=("PCMU", "G722"))
    assert media.encoding_name == "G722"
    _, media = answer_for("baresip-wideband-offer.sdp", supported=("opus", "PCMU"))
    assert (media.payload_type, media.encoding_name) == (96, "opus")


def test_opus_only_offer_is_answered_with_our_fmtp_and_the_offers_payload_type():
    answer, media = answer_for("baresip-opus-only-offer.sdp", supported=("opus", *WIDE))
    assert media == NegotiatedMedia(
        remote_address=("127.0.0.1", 50856),
        payload_type=96,
        encoding_name="opus",
        clock_rate=48000,
        telephone_event_pt=None,  # baresip offers telephone-event/8000 only (RFC 4733 s.2.1)
        ptime=20,
        direction="sendrecv",
        on_hold=False,
        channels=2,
        fmtp="stereo=1;sprop-stereo=1",
    )
    assert media.fmtp_parameters() == {"stereo": "1", "sprop-stereo": "1"}
    wire = answer.serialize()
    assert b"m=audio 40000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n" in wire
    assert f"a=fmtp:96 {OPUS_FMTP}\r\n".encode() in wire
    assert b"telephone-event" not in wire
    with pytest.raises(NoCommonCodec, match=r"offers opus/48000, telephone-event/8000"):
        answer_for("baresip-opus-only-offer.sdp", supported=WIDE)


def test_linphone_opus_offer_uses_telephone_event_at_48000():
    answer, media = answer_for("linphone-offer.sdp", supported=("opus", "PCMU"))
    assert (media.payload_type, media.encoding_name, media.channels) == (98, "opus", 2)
    assert (media.telephone_event_pt, media.fmtp) == (96, "useinbandfec=1")
    assert answer.media[0].formats == [
        MediaFormat(98, "opus", 48000, 2, fmtp=OPUS_FMTP),
        MediaFormat(96, "telephone-event", 48000, fmtp="0-16"),
    ]


@pytest.mark.parametrize(
    "rtpmap",
    ["opus/48000", "opus/48000/1", "opus/16000/2", "OPUS/8000/2"],
)
def test_opus_must_be_48000_with_two_channels(rtpmap):
    offer = SessionDescription.parse(BASE + f"m=audio 5004 RTP/AVP 111 0\na=rtpmap:111 {rtpmap}\n")
    _, media = negotiate(offer, ("opus", "PCMU"), **LOCAL)
    assert media.encoding_name == "PCMU"
    upper = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVP 111\na=rtpmap:111 OPUS/48000/2\n")
    _, media = negotiate(upper, ("opus",), **LOCAL)
    assert (media.payload_type, media.encoding_name) == (111, "opus")


@pytest.mark.parametrize(("ptime", "expected"), [(10, 10), (20, 20), (30, 20), (40, 40), (60, 60)])
def test_opus_ptime_must_be_an_opus_frame_duration(ptime, expected):
    offer = SessionDescription.parse(
        BASE + f"m=audio 5004 RTP/AVP 111\na=rtpmap:111 opus/48000/2\na=ptime:{ptime}\n"
    )
    answer, media = negotiate(offer, ("opus",), **LOCAL)
    assert media.ptime == answer.media[0].ptime == expected
    g722 = SessionDescription.parse(BASE + f"m=audio 5004 RTP/AVP 9\na=ptime:{ptime}\n")
    assert negotiate(g722, WIDE, **LOCAL)[1].ptime == ptime


class FakeCodec:
    """A CodecDescription as pipecat_sip.codecs.Codec objects are (duck-typed)."""

    def __init__(self, name, clock_rate, channels=1, payload_type=96, fmtp=None):
        self.encoding_name = name
        self.clock_rate = clock_rate
        self.channels = channels
        self.payload_type = payload_type
        self.fmtp = fmtp


def test_codec_objects_match_by_name_clock_and_channels():
    offer = SessionDescription.parse(
        BASE + "m=audio 5004 RTP/AVP 97 98 0\na=rtpmap:97 L16/8000\na=rtpmap:98 L16/16000\n"
    )
    answer, media = negotiate(offer, [FakeCodec("L16", 16000, fmtp="x=1"), "PCMU"], **LOCAL)
    assert (media.payload_type, media.clock_rate) == (98, 16000)
    assert answer.media[0].formats[0] == MediaFormat(98, "L16", 16000, fmtp="x=1")
    # a static codec given as an object keeps its static payload type in offers
    offer = create_offer(
        local_address="h", local_port=1, codecs=[FakeCodec("PCMA", 8000, payload_type=8)]
    )
    assert [f.payload_type for f in offer.media[0].formats] == [8, 13, 101]


def test_create_offer_with_opus_numbers_dynamic_types_and_events_per_clock_rate():
    offer = create_offer(
        local_address="192.0.2.1", local_port=40000, session_id=99, codecs=("opus", *WIDE)
    )
    assert offer.serialize() == crlf(
        "v=0\n"
        "o=- 99 0 IN IP4 192.0.2.1\n"
        "s=-\n"
        "c=IN IP4 192.0.2.1\n"
        "t=0 0\n"
        "m=audio 40000 RTP/AVP 96 9 0 8 13 101 97\n"
        "a=rtpmap:96 opus/48000/2\n"
        f"a=fmtp:96 {OPUS_FMTP}\n"
        "a=rtpmap:9 G722/8000\n"
        "a=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:8 PCMA/8000\n"
        "a=rtpmap:13 CN/8000\n"
        "a=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-16\n"
        "a=rtpmap:97 telephone-event/48000\n"
        "a=fmtp:97 0-16\n"
        "a=ptime:20\n"
        "a=sendrecv\n"
    )
    assert parse_fmtp(OPUS_FMTP) == {
        "maxplaybackrate": "16000",
        "sprop-maxcapturerate": "16000",
        "stereo": "0",
        "sprop-stereo": "0",
        "useinbandfec": "1",
    }


def test_create_offer_dynamic_types_skip_telephone_event():
    offer = create_offer(local_address="h", local_port=1, codecs=("opus",), telephone_event_pt=96)
    (audio,) = offer.media
    # no 8000 Hz codec: no CN, and telephone_event_pt goes to the first codec's rate
    assert audio.formats == [
        MediaFormat(97, "opus", 48000, 2, fmtp=OPUS_FMTP),
        MediaFormat(96, "telephone-event", 48000, fmtp="0-16"),
    ]
    offer = create_offer(
        local_address="h",
        local_port=1,
        codecs=("opus", FakeCodec("L16", 16000), "opus"),
        telephone_event_pt=None,
    )
    assert [(f.payload_type, f.encoding_name) for f in offer.media[0].formats] == [
        (96, "opus"),
        (97, "L16"),
    ]
    many = [FakeCodec(f"X{i}", 8000) for i in range(33)]
    with pytest.raises(ValueError, match="no dynamic RTP payload type"):
        create_offer(local_address="h", local_port=1, codecs=many)


def test_comfort_noise_is_accepted_when_offered_at_the_codec_rate():
    answer, media = answer_for("asterisk-g722-cn-offer.sdp", supported=WIDE)
    assert (media.encoding_name, media.telephone_event_pt, media.cn_pt) == ("G722", 101, 13)
    assert [f.payload_type for f in answer.media[0].formats] == [9, 101, 13]
    assert b"a=rtpmap:13 CN/8000\r\n" in answer.serialize()
    _, media = answer_for("asterisk-g722-cn-offer.sdp", supported=WIDE, comfort_noise=False)
    assert media.cn_pt is None
    # CN at another rate than the codec's is not for this stream
    offer = SessionDescription.parse(
        BASE + "m=audio 5004 RTP/AVP 111 13 100\na=rtpmap:111 opus/48000/2\na=rtpmap:100 CN/48000\n"
    )
    answer, media = negotiate(offer, ("opus",), **LOCAL)
    assert media.cn_pt == 100
    assert [f.payload_type for f in answer.media[0].formats] == [111, 100]
    # comfort noise alone is no codec
    cn_only = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVP 13 101\n")
    with pytest.raises(NoCommonCodec, match="offers CN/8000, PT 101"):
        negotiate(cn_only, **LOCAL)
    with pytest.raises(ValueError, match="not an audio codec"):
        negotiate(cn_only, ("CN",), **LOCAL)


def test_apply_answer_with_opus_takes_the_answers_payload_type_and_fmtp():
    offer = create_offer(local_address="10.0.0.1", local_port=4000, codecs=("opus", "PCMU"))
    answer = SessionDescription.parse(
        BASE
        + "m=audio 5004 RTP/AVP 111 110\na=rtpmap:111 opus/48000/2\n"
        + "a=fmtp:111 useinbandfec=1; maxplaybackrate=8000\n"
        + "a=rtpmap:110 telephone-event/48000\n"
    )
    media = apply_answer(offer, answer)
    assert (media.payload_type, media.encoding_name, media.clock_rate, media.channels) == (
        111,
        "opus",
        48000,
        2,
    )
    assert (media.telephone_event_pt, media.cn_pt) == (110, None)
    assert media.fmtp_parameters() == {"useinbandfec": "1", "maxplaybackrate": "8000"}
    # the same name at another clock rate or channel count is not what we offered
    for rtpmap in ("opus/48000", "opus/16000/2"):
        wrong = SessionDescription.parse(
            BASE + f"m=audio 5004 RTP/AVP 111\na=rtpmap:111 {rtpmap}\n"
        )
        with pytest.raises(NoCommonCodec, match="m= line 1 answers opus"):
            apply_answer(offer, wrong)


def test_apply_answer_comfort_noise_only_when_we_offered_it():
    answer = SessionDescription.parse(BASE + "m=audio 5004 RTP/AVP 9 13\n")
    offer = create_offer(local_address="10.0.0.1", local_port=4000, codecs=WIDE)
    media = apply_answer(offer, answer)
    assert (media.encoding_name, media.cn_pt, media.telephone_event_pt) == ("G722", 13, None)
    offer = create_offer(
        local_address="10.0.0.1", local_port=4000, codecs=WIDE, comfort_noise=False
    )
    assert apply_answer(offer, answer).cn_pt is None


@pytest.mark.parametrize(
    ("fmtp", "expected"),
    [
        (None, {}),
        ("", {}),
        ("0-16", {"0-16": ""}),
        ("useinbandfec=1", {"useinbandfec": "1"}),
        (
            "maxplaybackrate=16000; sprop-maxcapturerate=16000;USEDTX=1",
            {"maxplaybackrate": "16000", "sprop-maxcapturerate": "16000", "usedtx": "1"},
        ),
        ("a=1;a=2;;  ;b", {"a": "1", "b": ""}),
        ("mode=20 ; annexb = no", {"mode": "20", "annexb": "no"}),
    ],
)
def test_parse_fmtp(fmtp, expected):
    assert parse_fmtp(fmtp) == expected


def test_reoffer_keeps_opus_by_name():
    # server.py answers a re-INVITE with the call's codec name only
    _, media = answer_for("linphone-offer.sdp", supported=("opus",), session_version=1)
    assert (media.payload_type, media.encoding_name, media.telephone_event_pt) == (98, "opus", 96)
