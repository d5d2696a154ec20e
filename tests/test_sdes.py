"""SDES (RFC 4568): a=crypto grammar, RFC examples, malformed lines, offer/answer, SRTP policy."""

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_sip.sdes import (
    DEFAULT_MIN_LIFETIME,
    SUPPORTED_SUITES,
    CryptoAttribute,
    CryptoParseError,
    KeyParam,
    NoAcceptableCrypto,
    SdesKeys,
    accept_answer,
    add_crypto,
    answer_crypto,
    apply_srtp_answer,
    create_srtp_offer,
    crypto_attributes,
    generate_key,
    negotiate_srtp,
    offer_crypto,
    unsupported_reason,
)
from pipecat_sip.sdp import MediaDescription, NoCommonCodec, SessionDescription, create_offer

# RFC 4568 s.5.1: the example offer (two crypto lines, the second with two MKI keys) ...
RFC_OFFER = (
    b"v=0\r\n"
    b"o=sam 2890844526 2890842807 IN IP4 10.47.16.5\r\n"
    b"s=SRTP Discussion\r\n"
    b"i=A discussion of Secure RTP\r\n"
    b"u=http://www.example.com/seminars/srtp.pdf\r\n"
    b"e=marge@example.com (Marge Simpson)\r\n"
    b"c=IN IP4 168.2.17.12\r\n"
    b"t=2873397496 2873404696\r\n"
    b"m=audio 49170 RTP/SAVP 0\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP\r\n"
    b"a=crypto:2 F8_128_HMAC_SHA1_80 "
    b"inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;"
    b"inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP\r\n"
)
# ... and the answer, which accepts tag 1.
RFC_ANSWER_CRYPTO = (
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
)
# RFC 4568 s.4: the attribute as first shown (MKI 1, 32 bytes long).
RFC_S4_CRYPTO = (
    "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
)

B64_30 = base64.b64encode(bytes(range(30))).decode()
KEY = f"inline:{B64_30}"


def line(*rest, suite="AES_CM_128_HMAC_SHA1_80", tag="1", key=KEY):
    return " ".join([tag, suite, key, *rest])


# --- RFC examples: parse and byte-exact serialize -------------------------------------------


def test_rfc4568_offer_example_parses_and_serializes_byte_exact():
    offer = SessionDescription.parse(RFC_OFFER)
    assert offer.serialize() == RFC_OFFER
    md = offer.media[0]
    assert md.proto == "RTP/SAVP"
    cryptos, skipped = crypto_attributes(md)
    assert skipped == []
    first, second = cryptos
    assert (first.tag, first.suite, first.session_params) == (
        1,
        "AES_CM_128_HMAC_SHA1_80",
        ("FEC_ORDER=FEC_SRTP",),
    )
    (key,) = first.key_params
    assert len(key.key_salt) == 30
    assert key.key_salt == base64.b64decode("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz")
    assert key.lifetime == 2**20 and key.mki == (1, 4)
    assert second.tag == 2 and second.suite == "F8_128_HMAC_SHA1_80"
    assert [k.mki for k in second.key_params] == [(1, 4), (2, 4)]
    assert [k.lifetime for k in second.key_params] == [2**20, 2**20]
    raw = [value for name, value in md.attributes if name == "crypto"]
    assert [c.serialize() for c in cryptos] == raw


@pytest.mark.parametrize("value", [RFC_ANSWER_CRYPTO, RFC_S4_CRYPTO])
def test_rfc4568_single_key_examples_round_trip(value):
    crypto = CryptoAttribute.parse(value)
    assert crypto.serialize() == value
    assert crypto.key.lifetime == 1 << 20
    assert unsupported_reason(crypto) is None  # one key with an MKI: we can honour it


def test_rfc4568_answer_example_accepts_tag_1_of_the_offer():
    offered, _ = crypto_attributes(SessionDescription.parse(RFC_OFFER).media[0])
    keys = accept_answer(offered, [CryptoAttribute.parse(RFC_ANSWER_CRYPTO)])
    assert keys.tag == 1 and keys.suite == "AES_CM_128_HMAC_SHA1_80"
    assert keys.local_key == offered[0].key.key_salt
    assert keys.remote_key == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    assert keys.remote_mki == (1, 4) and keys.remote_lifetime == 1 << 20


def test_answering_the_rfc_offer_picks_tag_1_and_skips_f8():
    offered, _ = crypto_attributes(SessionDescription.parse(RFC_OFFER).media[0])
    answer, keys = answer_crypto(list(reversed(offered)), rng=random.Random(0))
    assert answer.tag == 1  # F8 (tag 2) came first but is not supported
    assert keys.remote_mki == (1, 4)


# --- grammar (RFC 4568 s.9.1, s.9.2) --------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        line(),
        line(suite="AES_CM_128_HMAC_SHA1_32", tag="999999999"),
        line(key=KEY + "|2^31"),
        line(key=KEY + "|1000000"),
        line(key=KEY + "|7:1"),  # MKI without lifetime
        line(key=KEY + "|2^20|255:1"),
        line("KDR=0"),
        line("KDR=24"),
        line("WSH=64"),
        line("WSH=4096"),
        line("FEC_ORDER=FEC_SRTP"),
        line("FEC_ORDER=SRTP_FEC"),
        line(f"FEC_KEY={KEY}|2^20|2:4"),
        line("UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTP", "UNAUTHENTICATED_SRTP"),
        line("-EXT=1", "SOMETHING_NEW"),
        line(suite="AEAD_AES_256_GCM", key="inline:" + base64.b64encode(bytes(44)).decode()),
        f"0 AES_CM_128_HMAC_SHA1_80 {KEY}|2^20|1:4;{KEY}|2^20|2:4",
    ],
)
def test_grammar_productions_round_trip(value):
    assert CryptoAttribute.parse(value).serialize() == value


def test_whitespace_runs_and_tabs_come_back_as_single_spaces():
    crypto = CryptoAttribute.parse(f"  7\t AES_CM_128_HMAC_SHA1_80  \t{KEY}   KDR=0 \t")
    assert crypto.serialize() == f"7 AES_CM_128_HMAC_SHA1_80 {KEY} KDR=0"


def test_canonical_forms_on_serialize():
    # A decimal power of two comes back as 2^n; missing base64 padding is added.
    crypto = CryptoAttribute.parse(line(key=KEY + "|1048576"))
    assert crypto.key.lifetime == 1 << 20
    assert CryptoAttribute.parse(crypto.serialize()) == crypto
    padded = base64.b64encode(bytes(46)).decode()
    assert padded.endswith("==")
    unpadded = CryptoAttribute.parse(
        line(suite="AES_256_CM_HMAC_SHA1_80", key=f"inline:{padded.rstrip('=')}")
    )
    assert unpadded.key.key_salt == bytes(46)
    assert unpadded.serialize().endswith(f"inline:{padded}")


def test_case_insensitive_literals():
    crypto = CryptoAttribute.parse(f"1 aes_cm_128_hmac_sha1_80 INLINE:{B64_30} kdr=0 wsh=128")
    assert crypto.suite_key == "AES_CM_128_HMAC_SHA1_80"
    assert crypto.session_param("WSH") == "128"
    assert unsupported_reason(crypto) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "needs a tag, a crypto-suite and key-params"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a crypto-suite and key-params"),
        (line(tag="x"), "tag is not 1-9 digits"),
        (line(tag="1234567890"), "tag is not 1-9 digits"),
        (line(tag="-1"), "tag is not 1-9 digits"),
        (line(suite="AES-CM"), "crypto-suite is not letters"),
        (line(key="inline"), "is not <key-method>:<key-info>"),
        (line(key="inline:"), "is not <key-method>:<key-info>"),
        (line(key="uri:sip:keys@example.com"), "key method 'uri' is not inline"),
        (line(key="inline:@@@@"), "key-salt is not base64"),
        (line(key="inline:QUJD=EFG"), "key-salt is not base64"),
        (line(key="inline:QUJDR"), "key-salt is not base64"),
        (line(key="inline:" + base64.b64encode(bytes(29)).decode()), "needs a 30-byte"),
        (line(key="inline:" + base64.b64encode(bytes(46)).decode()), "needs a 30-byte"),
        (line(key=KEY + "|2^20|2^20"), "malformed or misplaced lifetime"),
        (line(key=KEY + "|1:4|2^20"), "malformed or misplaced lifetime"),
        (line(key=KEY + "|2^x"), "malformed or misplaced lifetime"),
        (line(key=KEY + "|20^2"), "malformed or misplaced lifetime"),
        (line(key=KEY + "|0"), "lifetime is 0 packets"),
        (line(key=KEY + "|2^100"), "out of range"),
        (line(key=KEY + "|1:4|2:4"), "malformed MKI"),
        (line(key=KEY + "|1:"), "malformed MKI"),
        (line(key=KEY + "|:4"), "malformed MKI"),
        (line(key=KEY + "|1:0"), "MKI length 0 is outside 1-128"),
        (line(key=KEY + "|1:129"), "MKI length 129 is outside 1-128"),
        (line(key=KEY + "|256:1"), "MKI value does not fit in 1 bytes"),
        (line(key=KEY + "|2^20|1:4|x"), "more than key-salt|lifetime|mki"),
        (line(key=KEY + ";"), "is not <key-method>:<key-info>"),
        (line(key=f"{KEY}|1:4;{KEY}|2:2"), "MKIs of different lengths"),
        (line(key=f"{KEY};{KEY}"), "several keys needs an MKI on each"),
        (line(key=";".join([f"{KEY}|{n}:1" for n in range(17)])), "more than 16 keys"),
        (line("KDR=25"), "KDR=25 is not 0-24"),
        (line("KDR=x"), "KDR=x is not 0-24"),
        (line("WSH=63"), "WSH=63 is not a window of at least 64"),
        (line("WSH=1e3"), "WSH=1e3 is not a window"),
        (line("FEC_ORDER=BOTH"), "FEC_ORDER=BOTH is not FEC_SRTP or SRTP_FEC"),
        (line("FEC_KEY=inline:!!"), "FEC_KEY: inline key-salt is not base64"),
        (line(*["X"] * 33), "more than 32 session params"),
        (line("A" * 5000), "longer than 4096 characters"),
    ],
)
def test_malformed_lines_raise_a_precise_error(value, message):
    with pytest.raises(CryptoParseError, match=message.replace("|", r"\|").replace("^", r"\^")):
        CryptoAttribute.parse(value)


def test_parse_errors_never_carry_key_material():
    key = bytes(range(50, 79))  # 29 bytes: the wrong length
    encoded = base64.b64encode(key).decode()
    for value in (line(key=f"inline:{encoded}"), line(key=f"inline:{encoded}|2^x")):
        with pytest.raises(CryptoParseError) as info:
            CryptoAttribute.parse(value)
        assert encoded not in str(info.value) and key.hex() not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_raises_only_crypto_parse_error(text):
    try:
        crypto = CryptoAttribute.parse(text)
    except CryptoParseError:
        return
    assert CryptoAttribute.parse(crypto.serialize()) == crypto


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 999_999_999),
    st.sampled_from(list(SUPPORTED_SUITES)),
    st.binary(min_size=30, max_size=30),
    st.one_of(st.none(), st.integers(1, 1 << 48)),
    st.one_of(
        st.none(),
        st.integers(1, 4).flatmap(lambda n: st.tuples(st.integers(0, 256**n - 1), st.just(n))),
    ),
)
def test_serialize_parse_round_trip(tag, suite, key, lifetime, mki):
    crypto = CryptoAttribute(tag, suite, (KeyParam(key, lifetime, mki),), ("KDR=0",))
    assert CryptoAttribute.parse(crypto.serialize()) == crypto


# --- what we can honour ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (line(suite="F8_128_HMAC_SHA1_80"), "crypto-suite F8_128_HMAC_SHA1_80 is not supported"),
        (line(key=f"{KEY}|2^20|1:4;{KEY}|2^20|2:4"), "several master keys"),
        (line(key=KEY + "|2^10"), "key lifetime of 1024 packets is below"),
        (line(key=KEY + "|2^49"), "exceeds the SRTP maximum of 2^48"),
        (line("KDR=1"), "key derivation rate KDR='1' is not supported"),
        (line("UNENCRYPTED_SRTP"), "UNENCRYPTED_SRTP is not supported"),
        (line("UNENCRYPTED_SRTCP"), "UNENCRYPTED_SRTCP is not supported"),
        (line("UNAUTHENTICATED_SRTP"), "UNAUTHENTICATED_SRTP is not supported"),
        (line("NEW_THING=1"), "unknown session parameter 'NEW_THING=1'"),
    ],
)
def test_lines_we_cannot_honour(value, reason):
    assert reason in unsupported_reason(CryptoAttribute.parse(value))


@pytest.mark.parametrize(
    "value",
    [
        line(),
        line(key=KEY + "|2^20|1:4"),
        line(key=KEY + "|2^48"),
        line("KDR=0", "WSH=256", "FEC_ORDER=FEC_SRTP", f"FEC_KEY={KEY}"),
        line("-OPTIONAL_EXTENSION=yes"),  # optional extension: ignored
    ],
)
def test_lines_we_can_honour(value):
    assert unsupported_reason(CryptoAttribute.parse(value)) is None


def test_min_lifetime_is_configurable():
    crypto = CryptoAttribute.parse(line(key=KEY + "|2^10"))
    assert unsupported_reason(crypto, min_lifetime=1024) is None
    assert DEFAULT_MIN_LIFETIME == 1 << 20


# --- keys -----------------------------------------------------------------------------------


def test_generate_key_lengths_and_injectable_rng():
    for suite in SUPPORTED_SUITES:
        assert len(generate_key(suite)) == 30
    assert generate_key(rng=random.Random(5)) == generate_key(rng=random.Random(5))
    assert generate_key() != generate_key()
    with pytest.raises(ValueError, match="unsupported"):
        generate_key("F8_128_HMAC_SHA1_80")


def test_offer_has_both_suites_with_their_own_keys():
    cryptos = offer_crypto(random.Random(1))
    assert [(c.tag, c.suite) for c in cryptos] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert cryptos[0].key.key_salt != cryptos[1].key.key_salt
    assert all(c.key.lifetime is None and c.key.mki is None for c in cryptos)
    assert all(c.session_params == () for c in cryptos)
    with pytest.raises(ValueError):
        offer_crypto(suites=())


def test_reprs_hide_keys():
    key = bytes(range(30))
    crypto = CryptoAttribute(3, "AES_CM_128_HMAC_SHA1_80", (KeyParam(key, 1 << 20, (1, 4)),))
    keys = SdesKeys(3, "AES_CM_128_HMAC_SHA1_80", key, bytes(range(1, 31)))
    for text in (repr(crypto), str(crypto), repr(crypto.key), repr(keys), str(keys)):
        for k in (key, bytes(range(1, 31))):
            assert base64.b64encode(k).decode() not in text
            assert k.hex() not in text and repr(k) not in text
    assert "<30 bytes>" in repr(keys)
    assert B64_30 in CryptoAttribute.parse(line()).serialize()  # the wire form has it


# --- answerer -------------------------------------------------------------------------------


def test_answerer_takes_the_first_line_it_can_honour():
    offered = [
        CryptoAttribute.parse(line(tag="1", suite="AEAD_AES_128_GCM", key="inline:QUJD")),
        CryptoAttribute.parse(line(tag="2", key=KEY + "|2^10")),  # lifetime too short
        CryptoAttribute.parse(line(tag="3", suite="AES_CM_128_HMAC_SHA1_32")),
        CryptoAttribute.parse(line(tag="4")),
    ]
    answer, keys = answer_crypto(offered, rng=random.Random(2))
    assert (answer.tag, answer.suite) == (3, "AES_CM_128_HMAC_SHA1_32")
    assert len(answer.key.key_salt) == 30 and answer.key.key_salt != offered[2].key.key_salt
    assert answer.key.lifetime is None and answer.key.mki is None
    assert answer.session_params == ()
    assert keys.local_key == answer.key.key_salt
    assert keys.remote_key == offered[2].key.key_salt
    assert keys.tag == 3 and keys.suite == "AES_CM_128_HMAC_SHA1_32"


def test_answerer_with_nothing_acceptable_gives_488():
    offered = [
        CryptoAttribute.parse(line(tag="1", suite="F8_128_HMAC_SHA1_80")),
        CryptoAttribute.parse(line("UNENCRYPTED_SRTCP", tag="2")),
    ]
    with pytest.raises(NoAcceptableCrypto) as info:
        answer_crypto(offered)
    assert isinstance(info.value, NoCommonCodec) and info.value.status_code == 488
    text = str(info.value)
    assert "tag 1: crypto-suite F8_128_HMAC_SHA1_80 is not supported" in text
    assert "tag 2: session parameter UNENCRYPTED_SRTCP is not supported" in text
    assert B64_30 not in text
    with pytest.raises(NoAcceptableCrypto, match="the stream has none"):
        answer_crypto([])


def test_answerer_never_reuses_the_offered_key():
    class Echo(random.Random):
        """Returns the offered key first, then zeros."""

        calls = 0

        def getrandbits(self, k):
            self.calls += 1
            return int.from_bytes(bytes(range(30)), "big") if self.calls == 1 else 7

    rng = Echo()
    answer, _ = answer_crypto([CryptoAttribute.parse(line())], rng=rng)
    assert answer.key.key_salt != bytes(range(30)) and rng.calls == 2


def test_re_answer_keeps_our_key_for_the_same_suite():
    offered = [CryptoAttribute.parse(line(tag="2", suite="AES_CM_128_HMAC_SHA1_32"))]
    _, first = answer_crypto(offered)
    again, second = answer_crypto(offered, previous=first)
    assert again.key.key_salt == first.local_key and second == first
    other = [CryptoAttribute.parse(line(tag="1"))]  # another suite: a fresh key
    _, third = answer_crypto(other, previous=first)
    assert third.local_key != first.local_key
    sdp_answer, _, kept = negotiate_srtp(
        sdp_offer(savp(4000, line(tag="2", suite="AES_CM_128_HMAC_SHA1_32"))),
        "required",
        previous=first,
        **OURS,
    )
    assert kept.local_key == first.local_key


def test_fec_key_is_hidden_in_repr():
    fec_key = base64.b64encode(bytes(range(7, 37))).decode()
    crypto = CryptoAttribute.parse(line(f"FEC_KEY=inline:{fec_key}"))
    assert fec_key not in repr(crypto) and "FEC_KEY=<key>" in repr(crypto)
    assert fec_key in crypto.serialize()


def test_window_hint_from_wsh():
    _, keys = answer_crypto([CryptoAttribute.parse(line("WSH=1024"))])
    assert keys.remote_window == 1024
    _, keys = answer_crypto([CryptoAttribute.parse(line("WSH=99999"))])
    assert keys.remote_window == 0x7FFF


# --- offerer --------------------------------------------------------------------------------


def test_offerer_accepts_a_matching_answer():
    ours = offer_crypto(random.Random(3))
    theirs = CryptoAttribute(2, "AES_CM_128_HMAC_SHA1_32", (KeyParam(bytes(30)),))
    keys = accept_answer(ours, [theirs])
    assert keys.tag == 2 and keys.suite == "AES_CM_128_HMAC_SHA1_32"
    assert keys.local_key == ours[1].key.key_salt and keys.remote_key == bytes(30)


@pytest.mark.parametrize(
    ("answered", "message"),
    [
        ([], "0 a=crypto lines, not one"),
        ("two", "2 a=crypto lines, not one"),
        ([CryptoAttribute(9, "AES_CM_128_HMAC_SHA1_80", (KeyParam(bytes(30)),))], "tag 9"),
        ([CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_32", (KeyParam(bytes(30)),))], "has suite"),
        ([CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", (KeyParam(bytes(30), 16),))], "below"),
        ("echo", "our own master key back"),
    ],
)
def test_offerer_refuses_a_bad_answer(answered, message):
    ours = offer_crypto(random.Random(4))
    if answered == "two":
        answered = [ours[0], ours[1]]
    elif answered == "echo":
        answered = [ours[0]]
    with pytest.raises(NoAcceptableCrypto, match=message):
        accept_answer(ours, answered)


# --- SDP helpers and the SRTP policy --------------------------------------------------------


def sdp_offer(*media_lines):
    body = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    return SessionDescription.parse(body + "".join(media_lines))


def savp(port=4000, *cryptos, proto="RTP/SAVP"):
    lines = "".join(f"a=crypto:{c}\r\n" for c in cryptos)
    return f"m=audio {port} {proto} 0 8\r\n{lines}"


AVP = "m=audio 6000 RTP/AVP 0 8\r\n"
OURS = {"local_address": "192.0.2.1", "local_port": 40000}


def test_crypto_attributes_skips_malformed_lines_with_reasons():
    md = MediaDescription("audio", 4000, "RTP/SAVP")
    md.attributes += [("crypto", line()), ("crypto", "1 X"), ("rtcp-mux", None), ("crypto", None)]
    parsed, reasons = crypto_attributes(md)
    assert [c.tag for c in parsed] == [1]
    assert reasons[0].startswith("a=crypto line 2: a=crypto needs a tag")
    assert reasons[1].startswith("a=crypto line 3:")
    md.attributes[:] = [("crypto", line(tag=str(n))) for n in range(40)]
    parsed, reasons = crypto_attributes(md)
    assert len(parsed) == 32 and "past the first 32" in reasons[-1]


def test_add_crypto_appends_the_line():
    md = MediaDescription("audio", 4000, "RTP/SAVP")
    crypto = CryptoAttribute.parse(line())
    add_crypto(md, crypto)
    assert md.attributes == [("crypto", line())]


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_negotiate_answers_savp_with_our_crypto(mode):
    offer = sdp_offer(savp(4000, line(suite="F8_128_HMAC_SHA1_80"), line(tag="5")))
    answer, media, keys = negotiate_srtp(offer, mode, rng=random.Random(1), **OURS)
    (md,) = answer.media
    assert md.proto == "RTP/SAVP" and md.port == 40000
    (crypto,) = crypto_attributes(SessionDescription.parse(answer.serialize()).media[0])[0]
    assert crypto.tag == 5 and crypto.key.key_salt == keys.local_key
    assert keys.remote_key == bytes(range(30))
    assert media.remote_address == ("198.51.100.7", 4000) and media.encoding_name == "PCMU"


def test_negotiate_keeps_savpf():
    offer = sdp_offer(savp(4000, line(), proto="RTP/SAVPF"))
    answer, _, keys = negotiate_srtp(offer, "optional", **OURS)
    assert answer.media[0].proto == "RTP/SAVPF" and keys is not None


def test_optional_answers_plain_offer_with_plain_rtp():
    answer, _, keys = negotiate_srtp(sdp_offer(AVP), "optional", **OURS)
    assert keys is None and answer.media[0].proto == "RTP/AVP"
    assert answer.media[0].get_attribute("crypto") is None


def test_required_refuses_a_plain_offer_with_488():
    with pytest.raises(NoAcceptableCrypto, match="offers plain RTP/AVP and SRTP is required") as e:
        negotiate_srtp(sdp_offer(AVP), "required", **OURS)
    assert e.value.status_code == 488


def test_required_refuses_savp_without_acceptable_crypto():
    offer = sdp_offer(savp(4000, line(suite="F8_128_HMAC_SHA1_80"), "garbage"))
    with pytest.raises(NoAcceptableCrypto) as info:
        negotiate_srtp(offer, "required", **OURS)
    text = str(info.value)
    assert "a=crypto line 2: a=crypto needs a tag" in text
    assert "F8_128_HMAC_SHA1_80 is not supported" in text


def test_off_refuses_a_savp_only_offer():
    with pytest.raises(NoCommonCodec, match="uses RTP/SAVP, not RTP/AVP"):
        negotiate_srtp(sdp_offer(savp(4000, line())), "off", **OURS)
    answer, _, keys = negotiate_srtp(sdp_offer(savp(4000, line()), AVP), "off", **OURS)
    assert keys is None and [m.port for m in answer.media] == [0, 40000]


def test_optional_falls_through_a_bad_secure_stream_to_a_plain_one():
    offer = sdp_offer(savp(4000, line(suite="F8_128_HMAC_SHA1_80")), AVP)
    answer, media, keys = negotiate_srtp(offer, "optional", **OURS)
    assert keys is None and media.remote_address[1] == 6000
    assert [(m.port, m.proto) for m in answer.media] == [(0, "RTP/SAVP"), (40000, "RTP/AVP")]


def test_optional_takes_the_first_usable_stream_secure_or_not():
    answer, _, keys = negotiate_srtp(sdp_offer(savp(4000, line()), AVP), "optional", **OURS)
    assert keys is not None
    assert [(m.port, m.proto) for m in answer.media] == [(40000, "RTP/SAVP"), (0, "RTP/AVP")]
    assert answer.media[1].attributes == []
    answer, _, keys = negotiate_srtp(sdp_offer(AVP, savp(4000, line())), "optional", **OURS)
    assert keys is None and answer.media[0].port == 40000


def test_required_rejects_the_plain_stream_and_takes_the_secure_one():
    answer, _, keys = negotiate_srtp(sdp_offer(AVP, savp(4000, line())), "required", **OURS)
    assert keys is not None
    assert [(m.port, m.proto) for m in answer.media] == [(0, "RTP/AVP"), (40000, "RTP/SAVP")]


def test_secure_stream_without_a_common_codec_is_a_codec_problem():
    offer = sdp_offer(f"m=audio 4000 RTP/SAVP 18\r\na=crypto:{line()}\r\n")
    with pytest.raises(NoCommonCodec) as info:
        negotiate_srtp(offer, "required", **OURS)
    assert not isinstance(info.value, NoAcceptableCrypto)


def test_negotiate_does_not_touch_the_offer():
    offer = sdp_offer(savp(4000, line()))
    before = offer.serialize()
    negotiate_srtp(offer, "required", **OURS)
    assert offer.serialize() == before


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ValueError, match="off, optional, required"):
        negotiate_srtp(sdp_offer(AVP), "maybe", **OURS)
    with pytest.raises(ValueError, match="off, optional, required"):
        create_srtp_offer("on", **OURS)


def test_create_srtp_offer_modes():
    plain, cryptos = create_srtp_offer("off", **OURS)
    assert (
        cryptos == []
        and plain.serialize()
        == create_offer(session_id=plain.origin.session_id, **OURS).serialize()
    )
    offer, cryptos = create_srtp_offer("optional", rng=random.Random(8), **OURS)
    (md,) = SessionDescription.parse(offer.serialize()).media
    assert md.proto == "RTP/SAVP"
    parsed, _ = crypto_attributes(md)
    assert parsed == cryptos and [c.tag for c in parsed] == [1, 2]


def test_offer_answer_loop_through_the_wire():
    offer, ours = create_srtp_offer("required", rng=random.Random(9), **OURS)
    answer, _, peer = negotiate_srtp(
        SessionDescription.parse(offer.serialize()),
        "required",
        local_address="198.51.100.9",
        local_port=5000,
    )
    media, keys = apply_srtp_answer(offer, ours, SessionDescription.parse(answer.serialize()))
    assert keys.tag == 1 and keys.suite == "AES_CM_128_HMAC_SHA1_80"  # our first line
    assert (keys.local_key, keys.remote_key) == (peer.remote_key, peer.local_key)
    assert media.remote_address == ("198.51.100.9", 5000)


def test_apply_answer_plain_answer_to_a_secure_offer():
    offer, ours = create_srtp_offer("optional", rng=random.Random(10), **OURS)
    plain = sdp_offer("m=audio 5000 RTP/AVP 0\r\n")
    media, keys = apply_srtp_answer(offer, ours, plain, "optional")
    assert keys is None and media.remote_address[1] == 5000
    with pytest.raises(NoAcceptableCrypto, match="made our RTP/SAVP stream RTP/AVP"):
        apply_srtp_answer(offer, ours, plain, "required")


def test_apply_answer_with_a_broken_crypto_line():
    offer, ours = create_srtp_offer("required", rng=random.Random(11), **OURS)
    broken = sdp_offer("m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80\r\n")
    with pytest.raises(NoAcceptableCrypto, match="needs a tag"):
        apply_srtp_answer(offer, ours, broken, "required")
    missing = sdp_offer("m=audio 5000 RTP/SAVP 0\r\n")
    with pytest.raises(NoAcceptableCrypto, match="0 a=crypto lines"):
        apply_srtp_answer(offer, ours, missing, "required")


def test_plain_offer_plain_answer():
    offer, ours = create_srtp_offer("off", **OURS)
    media, keys = apply_srtp_answer(offer, ours, sdp_offer("m=audio 5000 RTP/AVP 0\r\n"), "off")
    assert keys is None and media.payload_type == 0
