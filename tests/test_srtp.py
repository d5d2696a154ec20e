"""SRTP/SRTCP per call (RFC 3711) over libsrtp: reference vectors, round trips, drops.

RFC 3711 Appendix B: B.1 (AES-f8) is a transform we do not offer. B.2 (the
AES-CM keystream) and B.3 (key derivation) happen inside libsrtp and are not
exposed by pylibsrtp, so they are checked on a small reference SRTP written
here from RFC 3711 s.4 (a plain AES-128 checked against FIPS-197, AES-CM,
the key derivation, HMAC-SHA1), which then must give libsrtp's published
validation packets (test/srtp_driver.c, ``srtp_validate``, made with the B.3
master key and salt) and agree with SrtpContext on random packets, across a
rollover, for both suites and for SRTCP.
"""

import base64
import hashlib
import hmac
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_sip import sdes
from pipecat_sip.rtp import srtp
from pipecat_sip.rtp.packet import RtpHeaderExtension, RtpPacket
from pipecat_sip.rtp.rtcp import SenderInfo, compound, parse_compound
from pipecat_sip.rtp.sender import RtpSender
from pipecat_sip.rtp.srtp import MAX_PACKET_SIZE, SUITES, SrtpContext

SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

# RFC 3711 B.3 master key || master salt, as libsrtp's srtp_validate uses them.
B3_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139") + bytes.fromhex(
    "0EC675AD498AFEEBB6960B3AABE6"
)
# libsrtp srtp_validate: an RTP packet (PT 15, seq 0x1234, ts 0xdecafbad, SSRC
# 0xcafebabe, 16 bytes of 0xab) and its SRTP form under the default policy
# (AES_CM_128_HMAC_SHA1_80).
REF_RTP = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
REF_SRTP = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
)
# ... and an SR header with 16 bytes of 0xab, and its SRTCP form (index 1, E set).
REF_RTCP = bytes.fromhex("81c8000bcafebabe" + "ab" * 16)
REF_SRTCP = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798"
)


@pytest.fixture(autouse=True, params=["direct", "public"])
def engine(request, monkeypatch):
    """Every test runs on both ways of calling libsrtp: the cffi fast path and
    pylibsrtp.Session's public methods (the fallback)."""
    monkeypatch.setattr(srtp, "_DIRECT", request.param == "direct")
    return request.param


def test_fast_path_is_in_use_with_this_pylibsrtp():
    # If this fails, pylibsrtp changed its binding: SRTP still works through its
    # public methods, about 1 us a packet slower (see bench/srtp.py).
    assert srtp._direct_works()


KEY_A = bytes(range(30))
KEY_B = bytes(range(100, 130))


def pair(suite=SHA1_80, **kwargs):
    """Two ends of one call: alice sends with KEY_A, bob with KEY_B."""
    alice = SrtpContext(suite, local_key=KEY_A, remote_key=KEY_B, **kwargs)
    bob = SrtpContext(suite, local_key=KEY_B, remote_key=KEY_A, **kwargs)
    return alice, bob


def g711_packets(count, *, ssrc=0x11223344, first_seq=1000, rng_seed=0):
    rng = random.Random(rng_seed)
    sender = RtpSender(0, 8000, ssrc=ssrc, rng=rng)
    sender.sequence_number = first_seq
    return [sender.packet(rng.randbytes(160), 160) for _ in range(count)]


# --- a reference SRTP from RFC 3711 s.4 (slow, for a few packets) -------------------------


def _rotl8(x, shift):
    return ((x << shift) | (x >> (8 - shift))) & 0xFF


def _xtime(a):
    return ((a << 1) ^ 0x1B) & 0xFF if a & 0x80 else a << 1


def _make_sbox():
    # FIPS-197 s.5.1.1: multiplicative inverse in GF(2^8), then the affine map.
    sbox = [0] * 256
    p = q = 1
    while True:
        p = p ^ ((p << 1) & 0xFF) ^ (0x1B if p & 0x80 else 0)  # p * 3
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09  # q / 3
        sbox[p] = q ^ _rotl8(q, 1) ^ _rotl8(q, 2) ^ _rotl8(q, 3) ^ _rotl8(q, 4) ^ 0x63
        if p == 1:
            break
    sbox[0] = 0x63
    return sbox


SBOX = _make_sbox()


def aes128_round_keys(key):
    words = [list(key[i : i + 4]) for i in range(0, 16, 4)]
    rcon = 1
    for i in range(4, 44):
        temp = list(words[i - 1])
        if i % 4 == 0:
            temp = [SBOX[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= rcon
            rcon = _xtime(rcon)
        words.append([a ^ b for a, b in zip(words[i - 4], temp, strict=True)])
    return [sum(words[4 * r : 4 * r + 4], []) for r in range(11)]


def aes128_encrypt(round_keys, block):
    state = [a ^ b for a, b in zip(block, round_keys[0], strict=True)]
    for rnd in range(1, 11):
        state = [SBOX[b] for b in state]
        state = [state[(i % 4) + 4 * (((i // 4) + (i % 4)) % 4)] for i in range(16)]
        if rnd != 10:
            mixed = []
            for c in range(4):
                a0, a1, a2, a3 = state[4 * c : 4 * c + 4]
                mixed += [
                    _xtime(a0) ^ _xtime(a1) ^ a1 ^ a2 ^ a3,
                    a0 ^ _xtime(a1) ^ _xtime(a2) ^ a2 ^ a3,
                    a0 ^ a1 ^ _xtime(a2) ^ _xtime(a3) ^ a3,
                    _xtime(a0) ^ a0 ^ a1 ^ a2 ^ _xtime(a3),
                ]
            state = mixed
        state = [a ^ b for a, b in zip(state, round_keys[rnd], strict=True)]
    return bytes(state)


def aes_cm(key, iv, length, first_block=0):
    """RFC 3711 s.4.1.1: AES of IV, IV+1, ... (the IV a 128-bit integer)."""
    round_keys = aes128_round_keys(key)
    out = b""
    block = first_block
    while len(out) < length:
        counter = (iv + block) % (1 << 128)
        out += aes128_encrypt(round_keys, counter.to_bytes(16, "big"))
        block += 1
    return out[:length]


def derive(master, label, length):
    """RFC 3711 s.4.3.1 with key_derivation_rate 0: x = (label << 48) XOR master_salt."""
    key, salt = master[:16], master[16:]
    x = (label << 48) ^ int.from_bytes(salt, "big")
    return aes_cm(key, x << 16, length)


def ref_protect_rtp(master, packet, roc, tag_length):
    """RFC 3711 s.3.3: encrypt the payload with AES-CM, tag = HMAC-SHA1(header|payload|ROC)."""
    k_e, k_a, k_s = derive(master, 0, 16), derive(master, 1, 20), derive(master, 2, 14)
    header = 12 + 4 * (packet[0] & 0x0F)
    seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
    index = (roc << 16) | seq
    iv = (int.from_bytes(k_s, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    payload = packet[header:]
    encrypted = packet[:header] + bytes(
        a ^ b for a, b in zip(payload, aes_cm(k_e, iv, len(payload)), strict=True)
    )
    tag = hmac.new(k_a, encrypted + roc.to_bytes(4, "big"), hashlib.sha1).digest()
    return encrypted + tag[:tag_length]


def ref_protect_rtcp(master, packet, srtcp_index):
    """RFC 3711 s.3.4: encrypt after the first 8 bytes, then E|index and a 10-byte tag."""
    k_e, k_a, k_s = derive(master, 3, 16), derive(master, 4, 20), derive(master, 5, 14)
    ssrc = struct.unpack_from("!I", packet, 4)[0]
    iv = (int.from_bytes(k_s, "big") << 16) ^ (ssrc << 64) ^ (srtcp_index << 16)
    body = packet[8:]
    encrypted = packet[:8] + bytes(
        a ^ b for a, b in zip(body, aes_cm(k_e, iv, len(body)), strict=True)
    )
    encrypted += struct.pack("!I", 0x80000000 | srtcp_index)
    return encrypted + hmac.new(k_a, encrypted, hashlib.sha1).digest()[:10]


def test_reference_aes_gives_the_fips197_example():
    key = bytes(range(16))
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert aes128_encrypt(aes128_round_keys(key), plain).hex() == (
        "69c4e0d86a7b0430d8cdb78070b4c55a"  # FIPS-197 Appendix C.1
    )


def test_rfc3711_b2_aes_cm_keystream():
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    iv = int("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000", 16)
    expected = {
        0x0000: "E03EAD0935C95E80E166B16DD92B4EB4",
        0x0001: "D23513162B02D0F72A43A2FE4A5F97AB",
        0x0002: "41E95B3BB0A2E8DD477901E4FCA894C0",
        0xFEFF: "EC8CDF7398607CB0F2D21675EA9EA1E4",
        0xFF00: "362B7C3C6773516318A077D7FC5073AE",
        0xFF01: "6A2CC3787889374FBEB4C81B17BA6C44",
    }
    for block, keystream in expected.items():
        assert aes_cm(key, iv, 16, first_block=block).hex().upper() == keystream


def test_rfc3711_b3_key_derivation():
    assert derive(B3_KEY, 0, 16).hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert derive(B3_KEY, 2, 14).hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert derive(B3_KEY, 1, 20).hex().upper() == "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"


def test_reference_gives_libsrtps_validation_packets():
    assert ref_protect_rtp(B3_KEY, REF_RTP, 0, 10) == REF_SRTP
    assert ref_protect_rtcp(B3_KEY, REF_RTCP, 1) == REF_SRTCP


@pytest.mark.parametrize("suite", [SHA1_80, SHA1_32])
def test_srtp_context_agrees_with_rfc3711_across_a_rollover(suite):
    rng = random.Random(suite)
    master = rng.randbytes(30)
    ctx = SrtpContext(suite, local_key=master, remote_key=KEY_B)
    tag_length = SUITES[suite].rtp_tag_length
    roc = 0
    for seq in (65533, 65534, 65535, 0, 1, 2):
        if seq == 0:
            roc += 1  # RFC 3711 s.3.3.1: the sender's ROC moves on at the wrap
        csrc = tuple(rng.getrandbits(32) for _ in range(rng.randrange(3)))
        packet = RtpPacket(0, seq, rng.getrandbits(32), 0xDEADBEEF, rng.randbytes(160), csrc=csrc)
        wire = packet.serialize()
        assert ctx.protect_rtp(wire) == ref_protect_rtp(master, wire, roc, tag_length), seq
    for index in (1, 2, 3):
        report = compound(0xDEADBEEF, f"n{index}@x", None, [rng.randbytes(24)])
        assert ctx.protect_rtcp(report) == ref_protect_rtcp(master, report, index)


# --- reference vectors ---------------------------------------------------------------------


def test_libsrtp_reference_packet_protect():
    ctx = SrtpContext(SHA1_80, local_key=B3_KEY, remote_key=KEY_A)
    assert ctx.protect_rtp(REF_RTP) == REF_SRTP
    assert ctx.stats.rtp_protected == 1


def test_libsrtp_reference_packet_unprotect():
    ctx = SrtpContext(SHA1_80, local_key=KEY_A, remote_key=B3_KEY)
    assert ctx.unprotect_rtp(REF_SRTP) == REF_RTP
    assert ctx.stats.rtp_unprotected == 1


def test_libsrtp_reference_srtcp_protect_and_unprotect():
    sender = SrtpContext(SHA1_80, local_key=B3_KEY, remote_key=KEY_A)
    assert sender.protect_rtcp(REF_RTCP) == REF_SRTCP
    receiver = SrtpContext(SHA1_80, local_key=KEY_A, remote_key=B3_KEY)
    assert receiver.unprotect_rtcp(REF_SRTCP) == REF_RTCP
    assert receiver.stats.rtcp_unprotected == 1


def test_sha1_32_is_the_same_transform_with_a_4_byte_tag():
    # RFC 3711 s.4.2: the tag is the leftmost n_tag bits of the same HMAC-SHA1,
    # so the 32-bit suite gives the same ciphertext and the first 4 tag bytes.
    ctx = SrtpContext(SHA1_32, local_key=B3_KEY, remote_key=KEY_A)
    protected = ctx.protect_rtp(REF_RTP)
    assert protected == REF_SRTP[: len(REF_RTP) + 4]
    back = SrtpContext(SHA1_32, local_key=KEY_A, remote_key=B3_KEY)
    assert back.unprotect_rtp(protected) == REF_RTP


def test_sha1_32_keeps_an_80_bit_srtcp_tag():
    # RFC 4568 s.6.2.2: AES_CM_128_HMAC_SHA1_32 protects SRTCP with an 80-bit tag.
    ctx = SrtpContext(SHA1_32, local_key=B3_KEY, remote_key=KEY_A)
    assert ctx.protect_rtcp(REF_RTCP) == REF_SRTCP
    assert SUITES[SHA1_32].rtcp_tag_length == 10


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", [SHA1_80, SHA1_32])
def test_rtp_round_trip_both_ways(suite):
    alice, bob = pair(suite)
    tag = SUITES[suite].rtp_tag_length
    for plain in g711_packets(50):
        wire = alice.protect_rtp(plain)
        assert len(wire) == len(plain) + tag
        assert wire[:12] == plain[:12]  # the header stays in clear
        assert wire[12 : len(plain)] != plain[12:]  # the payload does not
        assert bob.unprotect_rtp(wire) == plain
    for plain in g711_packets(50, ssrc=0x55667788, rng_seed=1):
        assert alice.unprotect_rtp(bob.protect_rtp(plain)) == plain
    assert bob.stats.rtp_unprotected == 50 and alice.stats.rtp_unprotected == 50
    assert (bob.stats.auth_failures, bob.stats.replays, bob.stats.other) == (0, 0, 0)


@pytest.mark.parametrize("suite", [SHA1_80, SHA1_32])
def test_rtp_round_trip_across_the_sequence_wrap(suite):
    # The rollover counter (RFC 3711 s.3.3.1) moves on at 65535 -> 0 on both ends.
    alice, bob = pair(suite)
    for plain in g711_packets(20, first_seq=65530):
        assert bob.unprotect_rtp(alice.protect_rtp(plain)) == plain
    assert bob.stats.rtp_unprotected == 20


def test_rtp_round_trip_of_headers_with_csrc_extension_and_padding():
    alice, bob = pair()
    packet = RtpPacket(
        payload_type=8,
        sequence_number=7,
        timestamp=1234,
        ssrc=42,
        payload=b"\x55" * 80,
        marker=True,
        csrc=(1, 2, 3),
        extension=RtpHeaderExtension(0xBEDE, b"\x10\xff\x00\x00"),
        padding=4,
    ).serialize()
    wire = alice.protect_rtp(packet)
    plain = bob.unprotect_rtp(wire)
    assert plain == packet
    assert RtpPacket.parse(plain).csrc == (1, 2, 3)


def test_rtp_out_of_order_within_the_window_is_accepted():
    alice, bob = pair()
    wires = [alice.protect_rtp(p) for p in g711_packets(10)]
    order = [0, 2, 1, 5, 3, 4, 9, 6, 8, 7]
    assert [bob.unprotect_rtp(wires[i]) is not None for i in order] == [True] * 10
    assert bob.stats.replays == 0


@pytest.mark.parametrize("suite", [SHA1_80, SHA1_32])
def test_srtcp_round_trip_of_our_compound_reports(suite):
    alice, bob = pair(suite)
    for n in range(5):
        sender = SenderInfo(ntp=n << 32, rtp_timestamp=160 * n, packets=n, octets=160 * n)
        report = compound(0x11223344, "bot@pipecat-sip", sender, [], bye=n == 4)
        wire = alice.protect_rtcp(report)
        # header in clear, then E flag + index (RFC 3711 s.3.4), then a 10-byte tag
        assert wire[:8] == report[:8]
        assert len(wire) == len(report) + 4 + 10
        assert struct.unpack("!I", wire[len(report) : len(report) + 4])[0] == 0x80000000 | (n + 1)
        plain = bob.unprotect_rtcp(wire)
        assert plain == report
        assert parse_compound(plain)[0].ssrc == 0x11223344
    assert bob.stats.rtcp_unprotected == 5 and alice.stats.rtcp_protected == 5


# --- drops: counted, never raised ----------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "payload", "tag"])
def test_tampering_is_an_auth_failure(where):
    alice, bob = pair()
    wire = bytearray(alice.protect_rtp(g711_packets(1)[0]))
    index = {"header": 1, "payload": 40, "tag": len(wire) - 1}[where]
    wire[index] ^= 0x01
    assert bob.unprotect_rtp(bytes(wire)) is None
    assert bob.stats.auth_failures == 1
    assert bob.stats.rtp_unprotected == 0


def test_srtcp_tampering_is_an_auth_failure():
    alice, bob = pair()
    wire = bytearray(alice.protect_rtcp(compound(5, "x@y", None, [])))
    wire[10] ^= 0x80
    assert bob.unprotect_rtcp(bytes(wire)) is None
    assert bob.stats.auth_failures == 1


def test_replay_is_counted_and_dropped():
    alice, bob = pair()
    wire = alice.protect_rtp(g711_packets(1)[0])
    assert bob.unprotect_rtp(wire) is not None
    assert bob.unprotect_rtp(wire) is None
    assert bob.unprotect_rtp(wire) is None
    assert bob.stats.replays == 2
    assert bob.stats.rtp_unprotected == 1


def test_packet_older_than_the_replay_window_is_counted():
    alice, bob = pair()
    wires = [alice.protect_rtp(p) for p in g711_packets(200)]
    assert bob.unprotect_rtp(wires[-1]) is not None
    assert bob.unprotect_rtp(wires[0]) is None  # 199 behind a 128-packet window
    assert bob.stats.replays == 1


def test_srtcp_replay_is_counted():
    alice, bob = pair()
    wire = alice.protect_rtcp(compound(5, "x@y", None, []))
    assert bob.unprotect_rtcp(wire) is not None
    assert bob.unprotect_rtcp(wire) is None
    assert bob.stats.replays == 1


def test_wrong_key_is_an_auth_failure():
    alice, _ = pair()
    stranger = SrtpContext(SHA1_80, local_key=KEY_B, remote_key=bytes(30))
    assert stranger.unprotect_rtp(alice.protect_rtp(g711_packets(1)[0])) is None
    assert stranger.unprotect_rtcp(alice.protect_rtcp(compound(5, "x@y", None, []))) is None
    assert stranger.stats.auth_failures == 2


def test_wrong_suite_is_an_auth_failure():
    alice = SrtpContext(SHA1_32, local_key=KEY_A, remote_key=KEY_B)
    bob = SrtpContext(SHA1_80, local_key=KEY_B, remote_key=KEY_A)
    assert bob.unprotect_rtp(alice.protect_rtp(g711_packets(1)[0])) is None
    assert bob.stats.auth_failures == 1


def test_plain_rtp_at_an_srtp_context_is_dropped():
    _, bob = pair()
    assert bob.unprotect_rtp(g711_packets(1)[0]) is None
    assert bob.stats.auth_failures == 1


@pytest.mark.parametrize(
    ("datagram", "what"),
    [
        (b"", "empty"),
        (b"\x80", "one byte"),
        (bytes.fromhex("800f1234decafbadcafebabe"), "header, no tag"),
        (bytes.fromhex("800f1234decafbadcafebabe") + bytes(9), "one byte short of a tag"),
        (b"\x00" + bytes(40), "version 0"),
        (b"\x8f" + bytes(40), "15 CSRCs in 41 bytes"),
        (b"\x90" + bytes(11) + b"\xbe\xde\xff\xff" + bytes(20), "extension past the end"),
        (b"\x80" + bytes(MAX_PACKET_SIZE), "one byte over the limit"),
    ],
)
def test_malformed_or_oversized_srtp_is_counted_as_other(datagram, what):
    _, bob = pair()
    assert bob.unprotect_rtp(datagram) is None, what
    assert bob.stats.other == 1, what
    assert bob.stats.auth_failures == 0, what


@pytest.mark.parametrize(
    "datagram",
    [b"", bytes(7), b"\x81\xc8\x00\x01" + bytes(17), b"\x01" + bytes(40), bytes(1501)],
)
def test_malformed_or_oversized_srtcp_is_counted_as_other(datagram):
    _, bob = pair()
    assert bob.unprotect_rtcp(datagram) is None
    assert bob.stats.other == 1


def test_protect_refuses_what_it_cannot_carry():
    alice, _ = pair()
    assert alice.protect_rtp(b"\x80\x00") is None  # shorter than a header
    assert alice.protect_rtp(b"\x80" + bytes(1400)) is None  # no room for the trailer
    assert alice.protect_rtp(b"\x8f" + bytes(20)) is None  # CSRCs past the end
    assert alice.protect_rtcp(bytes(4)) is None
    assert alice.stats.other == 4 and alice.stats.rtp_protected == 0


def test_protecting_the_same_sequence_number_twice_is_refused():
    # Two packets under one index would reuse keystream: libsrtp refuses the second.
    alice, _ = pair()
    packet = g711_packets(1)[0]
    assert alice.protect_rtp(packet) is not None
    assert alice.protect_rtp(packet) is None
    assert alice.stats.other == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600))
def test_random_datagrams_never_raise(data):
    _, bob = pair()
    assert bob.unprotect_rtp(data) is None
    assert bob.unprotect_rtcp(data) is None
    stats = bob.stats
    assert stats.auth_failures + stats.replays + stats.other == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(0, 0xFF), st.data())
def test_bit_flips_in_real_packets_never_pass(position, mask, data):
    alice, bob = pair()
    wire = bytearray(alice.protect_rtp(g711_packets(1)[0]))
    position %= len(wire)
    mask = mask or 1
    wire[position] ^= mask
    assert bob.unprotect_rtp(bytes(wire)) is None
    s = bob.stats
    assert s.auth_failures + s.other == 1


# --- MKI, lifetime, streams, re-keying ------------------------------------------------------


def with_mki(wire, mki, tag_length):
    return wire[:-tag_length] + mki + wire[-tag_length:]


def test_peer_mki_is_checked_and_stripped():
    alice, _ = pair()
    bob = SrtpContext(SHA1_80, local_key=KEY_B, remote_key=KEY_A, remote_mki=(1, 4))
    packets = g711_packets(3)
    good = with_mki(alice.protect_rtp(packets[0]), b"\x00\x00\x00\x01", 10)
    assert bob.unprotect_rtp(good) == packets[0]
    wrong = with_mki(alice.protect_rtp(packets[1]), b"\x00\x00\x00\x02", 10)
    assert bob.unprotect_rtp(wrong) is None
    missing = alice.protect_rtp(packets[2])  # 4 bytes of the payload taken as the MKI
    assert bob.unprotect_rtp(missing) is None
    rtcp = compound(5, "x@y", None, [])
    assert bob.unprotect_rtcp(with_mki(alice.protect_rtcp(rtcp), b"\0\0\0\1", 10)) == rtcp
    assert bob.stats.other == 2 and bob.stats.rtp_unprotected == 1


def test_peer_key_lifetime_is_enforced():
    alice, _ = pair()
    bob = SrtpContext(SHA1_80, local_key=KEY_B, remote_key=KEY_A, remote_lifetime=3)
    results = [bob.unprotect_rtp(alice.protect_rtp(p)) is not None for p in g711_packets(5)]
    assert results == [True, True, True, False, False]
    assert bob.stats.other == 2


def test_forged_packets_do_not_use_up_the_peer_key_lifetime():
    alice, _ = pair()
    bob = SrtpContext(SHA1_80, local_key=KEY_B, remote_key=KEY_A, remote_lifetime=2)
    packets = g711_packets(3)
    genuine = alice.protect_rtp(packets[0])
    for bit in range(5):
        forged = bytearray(genuine)
        forged[-1] ^= 1 << bit
        assert bob.unprotect_rtp(bytes(forged)) is None
    assert bob.stats.auth_failures == 5
    assert bob.unprotect_rtp(genuine) == packets[0]
    assert bob.unprotect_rtp(alice.protect_rtp(packets[1])) == packets[1]
    assert bob.unprotect_rtp(alice.protect_rtp(packets[2])) is None  # the third: past 2


def test_inbound_streams_are_capped():
    alice, _ = pair()
    bob = SrtpContext(SHA1_80, local_key=KEY_B, remote_key=KEY_A, max_streams=2)
    for ssrc in (1, 2, 3, 4, 5):
        assert bob.unprotect_rtp(alice.protect_rtp(g711_packets(1, ssrc=ssrc)[0])) is not None
    assert len(bob._streams) == 2
    assert list(bob._streams) == [4, 5]
    # The newest streams keep their replay state.
    again = g711_packets(2, ssrc=5)
    assert bob.unprotect_rtp(alice.protect_rtp(again[1])) is not None


def test_outbound_ssrcs_are_capped_and_never_forgotten():
    alice = SrtpContext(SHA1_80, local_key=KEY_A, remote_key=KEY_B, max_streams=2)
    first = [g711_packets(2, ssrc=ssrc) for ssrc in (1, 2, 3)]
    assert alice.protect_rtp(first[0][0]) is not None
    assert alice.protect_rtp(first[1][0]) is not None
    assert alice.protect_rtp(first[2][0]) is None  # a third SSRC: refused
    assert alice.protect_rtcp(compound(3, "x@y", None, [])) is None
    assert alice.stats.other == 2
    # The first two streams go on (their state kept, nothing protected twice).
    assert alice.protect_rtp(first[0][1]) is not None
    assert alice.protect_rtp(first[0][0]) is None  # the same index again: refused
    assert alice.protect_rtcp(compound(2, "x@y", None, [])) is not None


def test_update_remote_key_keeps_our_outbound_stream():
    alice, bob = pair()
    packets = g711_packets(4)
    assert bob.unprotect_rtp(alice.protect_rtp(packets[0])) is not None
    new_key = bytes(range(200, 230))
    alice2 = SrtpContext(SHA1_80, local_key=new_key, remote_key=KEY_B)
    bob.update_remote_key(new_key)
    assert bob.unprotect_rtp(alice2.protect_rtp(packets[1])) == packets[1]
    assert bob.unprotect_rtp(alice.protect_rtp(packets[2])) is None  # the old key is gone
    # Bob's own stream goes on under KEY_B with its state.
    for plain in g711_packets(3, ssrc=9):
        assert alice2.unprotect_rtp(bob.protect_rtp(plain)) == plain
    with pytest.raises(ValueError, match="same"):
        bob.update_remote_key(KEY_B)


# --- construction and keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suite": "F8_128_HMAC_SHA1_80"}, "unsupported SRTP crypto suite"),
        ({"local_key": bytes(29)}, "30-byte local master key"),
        ({"remote_key": bytes(31)}, "30-byte remote master key"),
        ({"remote_key": KEY_A}, "same"),
        ({"remote_mki": (256, 1)}, "MKI"),
        ({"remote_mki": (1, 0)}, "MKI"),
        ({"remote_lifetime": 0}, "lifetime"),
        ({"window_size": 32}, "replay window"),
        ({"max_streams": 0}, "max_streams"),
    ],
)
def test_bad_construction_raises_value_error_without_key_material(kwargs, message):
    args = {"suite": SHA1_80, "local_key": KEY_A, "remote_key": KEY_B, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        SrtpContext(args.pop("suite"), **args)
    assert_no_key_in(str(info.value), KEY_A, KEY_B, bytes(29), bytes(31))


def test_key_must_be_bytes():
    with pytest.raises(TypeError):
        SrtpContext(SHA1_80, local_key="x" * 30, remote_key=KEY_B)


def key_spellings(key):
    return [key.hex(), key.hex().upper(), repr(key), base64.b64encode(key).decode(), str(key)]


def assert_no_key_in(text, *keys):
    for key in keys:
        for spelling in key_spellings(key):
            assert spelling not in text


def test_keys_never_appear_in_repr_or_str():
    alice, bob = pair()
    bob.unprotect_rtp(alice.protect_rtp(g711_packets(1)[0]))
    bob.unprotect_rtp(b"junk")
    for ctx in (alice, bob):
        assert_no_key_in(repr(ctx) + str(ctx) + repr(ctx.stats) + repr(ctx.suite), KEY_A, KEY_B)
        assert "AES_CM_128_HMAC_SHA1_80" in repr(ctx)
        for name in SrtpContext.__slots__:
            value = getattr(ctx, name)
            assert value not in (KEY_A, KEY_B), name
            assert_no_key_in(repr(value), KEY_A, KEY_B)


def test_context_cannot_be_pickled_or_copied():
    import copy
    import pickle

    alice, _ = pair()
    with pytest.raises(TypeError):
        pickle.dumps(alice)
    with pytest.raises(TypeError):
        copy.copy(alice)


# --- SDES to SRTP, end to end --------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sdes_offer_answer_gives_working_contexts(seed):
    rng = random.Random(seed)
    offer, ours = sdes.create_srtp_offer(
        "required", rng=rng, local_address="192.0.2.1", local_port=40000
    )
    peer_offer = type(offer).parse(offer.serialize())
    answer, _, peer_keys = sdes.negotiate_srtp(
        peer_offer, "required", rng=rng, local_address="192.0.2.2", local_port=50000
    )
    _, our_keys = sdes.apply_srtp_answer(
        offer, ours, type(answer).parse(answer.serialize()), "required"
    )
    assert our_keys.local_key == peer_keys.remote_key
    assert our_keys.remote_key == peer_keys.local_key
    we = SrtpContext.from_sdes(our_keys)
    they = SrtpContext.from_sdes(peer_keys)
    for plain in g711_packets(5):
        assert they.unprotect_rtp(we.protect_rtp(plain)) == plain
        assert we.unprotect_rtp(they.protect_rtp(plain)) == plain
    report = compound(1, "a@b", None, [])
    assert they.unprotect_rtcp(we.protect_rtcp(report)) == report


def test_from_sdes_takes_the_peer_mki_lifetime_and_window():
    keys = sdes.SdesKeys(
        tag=1,
        suite=SHA1_32,
        local_key=KEY_A,
        remote_key=KEY_B,
        remote_mki=(7, 2),
        remote_lifetime=1 << 20,
        remote_window=1024,
    )
    ctx = SrtpContext.from_sdes(keys)
    assert ctx.suite.name == SHA1_32
    assert ctx._mki == b"\x00\x07" and ctx._lifetime == 1 << 20 and ctx._window == 1024
    assert SrtpContext.from_sdes(sdes.SdesKeys(1, SHA1_80, KEY_A, KEY_B))._window == 128
