"""SRTP in the sans-IO media session: two MediaSessions talking SRTP/SRTCP on a fake clock.

Each side protects with its own master key and checks the other's, as SDES
sets them up (RFC 4568). The tests check what goes on the wire (never plain
RTP or RTCP), that both sides hear each other (audio, DTMF, RTCP reports),
and that forged, replayed and plain packets are counted and dropped before
they can latch, keep the call alive or reach the decoder.
"""

import random
import struct

import numpy as np
import pytest

from pipecat_sip.codecs import PCMU
from pipecat_sip.rtp import DtmfReceived, MediaSession, Notice, RtpPacket, RtpSender
from pipecat_sip.rtp.rtcp import RTCP_BYE, parse_compound
from pipecat_sip.rtp.srtp import SrtpContext

KEY_A = bytes(range(30))  # A's master key || salt
KEY_B = bytes(range(100, 130))
A_ADDR = ("192.0.2.10", 4000)
B_ADDR = ("192.0.2.20", 5000)
STRANGER = ("198.51.100.66", 5000)
SUITE = "AES_CM_128_HMAC_SHA1_80"
TAG = 10  # bytes of the _80 suite's SRTP tag


def pair(suite: str = SUITE, **kwargs) -> tuple[MediaSession, MediaSession]:
    """A sends to B's SDP address and B to A's; each with its SRTP context."""
    kwargs.setdefault("codec", PCMU)
    kwargs.setdefault("rtcp", False)
    kwargs.setdefault("telephone_event_pt", 101)
    a = MediaSession(
        remote_addr=B_ADDR,
        rng=random.Random(1),
        srtp=SrtpContext(suite, local_key=KEY_A, remote_key=KEY_B),
        **kwargs,
    )
    b = MediaSession(
        remote_addr=A_ADDR,
        rng=random.Random(2),
        srtp=SrtpContext(suite, local_key=KEY_B, remote_key=KEY_A),
        **kwargs,
    )
    a.start(0.0)
    b.start(0.0)
    return a, b


def tone(ms: int, hz: float = 1000.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(8 * ms) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def run(a: MediaSession, b: MediaSession, first: int, count: int, wire: list | None = None):
    """Ticks first..first+count-1 on both; every datagram delivered to the other side.

    Returns the PCM each side decoded: (heard by a, heard by b).
    """
    heard_a, heard_b = [], []
    for k in range(first, first + count):
        now = k / 50
        for sender, receiver, own, heard in ((a, b, A_ADDR, heard_b), (b, a, B_ADDR, heard_a)):
            for data, _, is_rtcp in sender.on_tick(now):
                if wire is not None:
                    wire.append((sender, data, is_rtcp))
                if is_rtcp:
                    receiver.receive_rtcp(data, (own[0], own[1] + 1), now)
                else:
                    pcm = receiver.receive_rtp(data, own, now)
                    if pcm is not None:
                        heard.append(pcm)
    return heard_a, heard_b


def events(session: MediaSession) -> list:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def test_audio_both_ways_and_every_datagram_is_srtp():
    a, b = pair()
    a.queue_audio(tone(400))
    b.queue_audio(tone(400, 500))
    wire: list = []
    heard_a, heard_b = run(a, b, 0, 20, wire)
    assert len(heard_a) == 20 and len(heard_b) == 20
    assert b"".join(heard_b)[:3200] == PCMU.decode(PCMU.encode(tone(400)))[:3200]
    # On the wire: header in clear, payload encrypted, a 10-byte tag.
    plain_payload = PCMU.encode(tone(20))
    stranger = SrtpContext(SUITE, local_key=bytes(30), remote_key=bytes(range(1, 31)))
    for _sender, data, is_rtcp in wire:
        assert not is_rtcp
        assert len(data) == 12 + 160 + TAG
        assert data[12:172] != plain_payload
        assert stranger.unprotect_rtp(data) is None  # only the right key opens it
    assert stranger.stats.auth_failures == len(wire)
    assert a.srtp_stats.rtp_protected == 20 and b.srtp_stats.rtp_unprotected == 20
    assert a.stats.packets_sent == 20 and b.stats.packets_received == 20
    assert a.stats.octets_sent == 20 * 160  # RTP payload octets, not SRTP's
    assert a.srtp_stats.auth_failures == b.srtp_stats.auth_failures == 0
    assert b.latched and a.latched


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])
def test_both_suites_carry_dtmf(suite):
    a, b = pair(suite)
    a.queue_dtmf("5", 100)
    wire: list = []
    run(a, b, 0, 15, wire)
    tag = 10 if suite.endswith("_80") else 4
    sizes = {len(data) for sender, data, _ in wire if sender is a}
    assert 12 + 4 + tag in sizes  # the RFC 4733 event packets, protected
    assert [e.key for e in events(b) if isinstance(e, DtmfReceived)] == ["5"]


def test_rtcp_is_srtcp_both_ways_and_the_bye_too():
    a, b = pair(rtcp=True, rtcp_interval_s=1.0)
    a.queue_audio(tone(3000))
    wire: list = []
    run(a, b, 0, 150, wire)
    reports = [data for sender, data, is_rtcp in wire if is_rtcp and sender is a]
    assert reports, "no RTCP sent in 3 s"
    check = SrtpContext(SUITE, local_key=bytes(30), remote_key=KEY_A)
    for data in reports:
        assert data[-TAG - 4] & 0x80  # the E flag: encrypted (RFC 3711 s.3.4)
        plain = check.unprotect_rtcp(data)
        assert plain is not None and len(data) == len(plain) + 4 + TAG
        assert data[8 : len(plain)] != plain[8:]  # all but the first 8 bytes encrypted
        assert parse_compound(plain)[0].ssrc == a.ssrc
    assert b.stats.packets_rtcp == len(reports) == b.srtp_stats.rtcp_unprotected
    assert b.stats.packets_invalid == 0
    bye = a.close(3.0)
    assert len(bye) == 1 and bye[0][2]
    data = bye[0][0]
    plain = check.unprotect_rtcp(data)
    assert plain is not None
    assert RTCP_BYE in [p.packet_type for p in parse_compound(plain)]


def test_nothing_is_protected_while_held():
    a, b = pair()
    run(a, b, 0, 5)
    protected = a.srtp_stats.rtp_protected
    a.set_direction(send=False, receive=True, now=0.1)
    run(a, b, 5, 10)
    assert a.srtp_stats.rtp_protected == protected
    a.set_direction(send=True, receive=True, now=0.3)
    run(a, b, 15, 5)
    assert a.srtp_stats.rtp_protected == protected + 5
    assert b.srtp_stats.rtp_unprotected == protected + 5  # no index reused, none lost


def forged(seq: int, ssrc: int = 0xBAD, size: int = 160) -> bytes:
    """A packet with an RTP header and a random 'tag': what an attacker without the key sends."""
    rng = random.Random(seq)
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + rng.randbytes(size + TAG)


def test_forged_packets_are_counted_and_never_latch_or_keep_the_call_alive():
    a, b = pair(rtp_timeout_s=2.0)
    # Before B heard anything: forgeries from A's host on another port (a NAT-like
    # source latching would otherwise consider), and from the SDP address itself.
    for seq in range(50):
        assert b.receive_rtp(forged(seq), (A_ADDR[0], 31000), 0.01 * seq) is None
        assert b.receive_rtp(forged(seq + 100), A_ADDR, 0.01 * seq) is None
    assert not b.latched
    assert b.srtp_stats.auth_failures == 100
    assert b.stats.packets_received == 0 and b.stats.packets_on_probation == 0
    notices = [e for e in events(b) if isinstance(e, Notice)]
    assert [n.code for n in notices] == ["srtp_drop"] * 3  # at the 1st, 10th and 100th
    assert "100 failed authentication" in notices[-1].text
    # The flood does not keep the call alive: the RTP timeout still fires.
    for k in range(0, 120):
        b.receive_rtp(forged(200 + k), A_ADDR, k / 50)
        b.on_tick(k / 50)
    assert any(type(e).__name__ == "RtpTimeout" for e in events(b))


def test_a_stranger_costs_no_crypto():
    a, b = pair()
    run(a, b, 0, 5)  # latched to A
    for seq in range(1000):
        b.receive_rtp(forged(seq), STRANGER, 0.1)
        b.receive_rtcp(forged(seq)[:40], STRANGER, 0.1)
    stats = b.srtp_stats
    assert stats.auth_failures == stats.replays == stats.other == 0
    assert b.stats.packets_wrong_source == 2000


def test_replays_and_plain_rtp_are_dropped_and_counted():
    a, b = pair()
    wire: list = []
    run(a, b, 0, 5, wire)
    received = b.stats.packets_received
    for _sender, data, _ in [w for w in wire if w[0] is a]:
        assert b.receive_rtp(data, A_ADDR, 0.2) is None  # the same packets again
    assert b.srtp_stats.replays == 5
    plain = RtpSender(0, 8000, ssrc=0xCAFE, rng=random.Random(3))
    for _ in range(5):
        assert b.receive_rtp(plain.packet(PCMU.encode(tone(20)), 160), A_ADDR, 0.2) is None
    assert b.srtp_stats.auth_failures == 5
    assert b.stats.packets_received == received
    # Tampering with one byte of a real packet: authentication fails.
    a.queue_audio(tone(20))
    data = a.on_tick(0.2)[0][0]
    bad = bytearray(data)
    bad[20] ^= 1
    assert b.receive_rtp(bytes(bad), A_ADDR, 0.2) is None
    assert b.srtp_stats.auth_failures == 6
    assert b.receive_rtp(data, A_ADDR, 0.2) is not None  # the genuine one still passes


def test_latching_to_a_nat_source_needs_authenticated_packets():
    a = MediaSession(
        codec=PCMU,
        remote_addr=B_ADDR,
        rng=random.Random(1),
        rtcp=False,
        srtp=SrtpContext(SUITE, local_key=KEY_A, remote_key=KEY_B),
    )
    b = MediaSession(
        codec=PCMU,
        remote_addr=A_ADDR,
        rng=random.Random(2),
        rtcp=False,
        signaling_address="203.0.113.5",
        srtp=SrtpContext(SUITE, local_key=KEY_B, remote_key=KEY_A),
    )
    a.start(0.0)
    b.start(0.0)
    nat = ("203.0.113.5", 31000)  # A behind NAT: its packets come from here
    for seq in range(10):
        b.receive_rtp(forged(seq), nat, 0.01 * seq)
    assert not b.latched and b.stats.packets_on_probation == 0
    for k in range(5):
        for data, _, _ in a.on_tick(k / 50):
            b.receive_rtp(data, nat, k / 50)
    assert b.latched and b.remote_addr == nat
    assert b.stats.packets_on_probation == 2  # probation counts authenticated packets only


def test_rekey_keeps_outbound_state_and_a_new_context_replaces_it():
    a, b = pair()
    run(a, b, 0, 3)
    new_a = bytes(range(50, 80))
    # A re-keys (new context, its own new key); B learns A's new key by re-offer.
    a.set_srtp(SrtpContext(SUITE, local_key=new_a, remote_key=KEY_B))
    b.srtp.update_remote_key(new_a)
    heard_a, heard_b = run(a, b, 3, 5)
    assert len(heard_a) == 5 and len(heard_b) == 5
    assert b.srtp_stats.auth_failures == 0 and a.srtp_stats.rtp_protected == 5


def test_plain_session_has_no_srtp_stats():
    session = MediaSession(codec=PCMU, remote_addr=B_ADDR, rng=random.Random(1))
    session.start(0.0)
    assert session.srtp is None and session.srtp_stats is None
    [(data, _, _)] = session.on_tick(0.0)
    assert len(RtpPacket.parse(data).payload) == 160
