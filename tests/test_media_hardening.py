"""Media hardening: one group of regression tests per security item, named after it.

- ``test_rtp_bleed_*``: RTP hijack before or after latching (Asterisk
  strictrtp, CVE-2017-14099); the random port choice is in test_ports.py.
- ``test_rtcp_bomb_*``: RTCP checked for its source before it is parsed,
  and bounded work per datagram.
- ``test_flood_*``: input bounded by audio time and payload size.
- ``test_liveness_*``: the timeout from RTP or RTCP, in every direction state.
- ``test_unconfirmed_*``: nothing sent before the peer has shown it owns
  its address.

Each fails on the code before the hardening. Pure tests run on a fake clock
with a seeded rng; a few check the RTPSession arguments over loopback.
"""

import asyncio
import random
import socket
import struct

import pytest

from pipecat_sip.codecs import PCMU
from pipecat_sip.media import RTPSession
from pipecat_sip.rtp import MediaSession, RtpPacket, RtpSender, RtpTimeout
from pipecat_sip.rtp import reports as rtcp_reader
from pipecat_sip.rtp.latching import PROBATION_PACKETS, RELATCH_SILENCE_S
from pipecat_sip.rtp.rtcp import SenderInfo, compound, parse_compound
from pipecat_sip.rtp.session import MAX_AHEAD_S

SDP = ("192.0.2.10", 4000)
SIGNALING = "192.0.2.99"  # where the INVITE came from (an SBC, or the peer's NAT)
NAT = (SIGNALING, 31000)
SDP_HOST_OTHER_PORT = (SDP[0], 31000)  # the peer's host, but not the port its SDP named
STRANGER = ("198.51.100.66", 5000)


def make(start: float = 0.0, **kwargs) -> MediaSession:
    kwargs.setdefault("codec", PCMU)
    kwargs.setdefault("remote_addr", SDP)
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("rtcp", False)
    session = MediaSession(**kwargs)
    session.start(start)
    return session


def stream(count: int, *, ssrc: int = 0xCAFE, payload: bytes | None = None) -> list[bytes]:
    sender = RtpSender(0, 8000, ssrc=ssrc, rng=random.Random(ssrc))
    payload = PCMU.silence(160) if payload is None else payload
    return [sender.packet(payload, 160) for _ in range(count)]


def destinations(session: MediaSession, first: int, count: int) -> set:
    return {addr for k in range(first, first + count) for _, addr, _ in session.on_tick(k / 50)}


def events(session: MediaSession) -> list:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


# --- 1. RTP bleed ----------------------------------------------------------------------------


def test_rtp_bleed_stranger_cannot_latch_before_the_peer_speaks():
    session = make()  # default policy "signaling"; here only the SDP host is plausible
    for i, data in enumerate(stream(20, ssrc=0xBAD)):  # a clean run, from an implausible host
        assert session.receive_rtp(data, STRANGER, i / 50) is None
    assert not session.latched and session.remote_addr == SDP
    assert session.stats.packets_wrong_source == 20 and session.stats.packets_received == 0
    assert destinations(session, 1, 5) == {SDP}


def test_rtp_bleed_sdp_address_always_wins():
    session = make()
    other = SDP_HOST_OTHER_PORT
    for i, data in enumerate(stream(PROBATION_PACKETS, ssrc=0xBAD)):
        session.receive_rtp(data, other, i / 50)
    assert session.remote_addr == other  # nothing from the SDP address yet: it may latch
    assert session.receive_rtp(stream(1)[0], SDP, 0.1) is not None  # the SDP address at once
    assert session.remote_addr == SDP
    later = stream(20, ssrc=0xBAD)[PROBATION_PACKETS:]
    for i, data in enumerate(later):  # long after the SDP address went silent: still refused
        assert session.receive_rtp(data, other, 10.0 + i / 50) is None
    assert session.remote_addr == SDP and destinations(session, 600, 2) == {SDP}


def test_rtp_bleed_new_source_needs_a_run_of_one_ssrc_and_consecutive_numbers():
    session = make()
    nat = SDP_HOST_OTHER_PORT

    def packet(seq: int, ssrc: int = 0xCAFE) -> bytes:
        return RtpPacket(0, seq, seq * 160, ssrc, PCMU.silence(160)).serialize()

    accepted = [
        session.receive_rtp(packet(seq, ssrc), nat, 0.0) is not None
        for seq, ssrc in ((1, 0xCAFE), (3, 0xCAFE), (4, 0xCAFE), (5, 0xBEEF), (6, 0xBEEF))
    ]
    assert accepted == [False] * 5 and not session.latched  # a gap, then a new SSRC
    assert session.receive_rtp(packet(7, 0xBEEF), nat, 0.0) is not None  # 5, 6, 7: latched
    assert session.remote_addr == nat and session.stats.packets_on_probation == 5


def test_rtp_bleed_relatch_only_after_the_latched_source_went_silent():
    session = make(signaling_address=SIGNALING)
    for data in stream(PROBATION_PACKETS):
        session.receive_rtp(data, NAT, 0.0)
    assert session.remote_addr == NAT  # the signalling host is plausible too
    moved = (SIGNALING, 32000)  # the NAT binding changed its port, or someone on that host
    other = stream(10, ssrc=0xD00D)
    for data in other[:5]:
        assert session.receive_rtp(data, moved, 0.5) is None  # NAT still live: refused
    assert session.remote_addr == NAT
    quiet_until = RELATCH_SILENCE_S + 0.01
    results = [session.receive_rtp(data, moved, quiet_until) for data in other[5:8]]
    assert [r is not None for r in results] == [False, False, True]
    assert session.remote_addr == moved


def test_rtp_bleed_latching_off_accepts_only_the_sdp_address():
    session = make(latching="off", signaling_address=SIGNALING)
    for data in stream(10):
        assert session.receive_rtp(data, NAT, 0.0) is None
    assert not session.latched and session.remote_addr == SDP
    assert session.receive_rtp(stream(1)[0], SDP, 0.0) is not None
    with pytest.raises(ValueError, match="latching must be one of"):
        make(latching="sometimes")


async def test_rtp_bleed_rtp_session_takes_the_signaling_address():
    def bound(host: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.setblocking(False)
        return sock

    peer, stranger, own = bound("127.0.0.1"), bound("127.0.0.2"), bound("127.0.0.1")
    session = RTPSession(
        sock=own,
        remote_addr=("127.0.0.1", 9),  # the peer's SDP names another port (NAT)
        codec=PCMU,
        signaling_address="127.0.0.1",
        rtp_timeout_s=0,
    )
    heard = []
    session.on_audio = heard.append
    await session.start()
    try:
        for data in stream(10, ssrc=0xBAD):
            stranger.sendto(data, own.getsockname())
        for data in stream(PROBATION_PACKETS):
            peer.sendto(data, own.getsockname())
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert len(heard) == 1 and session.remote_addr == peer.getsockname()
        assert session.stats.packets_wrong_source == 10
    finally:
        await session.close()
        peer.close()
        stranger.close()


# --- 2. RTCP bomb ----------------------------------------------------------------------------


def sr_bomb(ssrc: int = 0xCAFE, size: int = 65_000) -> bytes:
    """One compound datagram of ~64 KB: nothing but 28-byte sender reports."""
    info = SenderInfo(ntp=1 << 32, rtp_timestamp=0, packets=1, octets=160)
    sr = compound(ssrc, "x", info, [])[:28]
    return sr * (size // len(sr))


@pytest.fixture
def parsed_sizes(monkeypatch):
    """The size of every datagram (prefix) handed to the RTCP parser."""
    sizes = []
    real = rtcp_reader.parse_compound

    def counting(data):
        sizes.append(len(data))
        return real(data)

    monkeypatch.setattr(rtcp_reader, "parse_compound", counting)
    return sizes


def test_rtcp_bomb_from_a_stranger_is_dropped_before_parsing(parsed_sizes):
    session = make(rtcp=True, rtcp_interval_s=0.2)
    session.receive_rtcp(sr_bomb(), STRANGER, 0.01)
    assert parsed_sizes == []
    assert session.stats.packets_wrong_source == 1 and session.stats.packets_rtcp == 0
    reports = {addr for k in range(1, 30) for _, addr, rtcp in session.on_tick(k / 50) if rtcp}
    assert reports == {(SDP[0], SDP[1] + 1)}  # not reflected to the stranger


def test_rtcp_bomb_work_per_datagram_is_bounded(parsed_sizes):
    session = make(rtcp=True)
    session.receive_rtp(stream(1)[0], SDP, 0.0)
    session.receive_rtcp(sr_bomb(), (SDP[0], 4001), 0.01)  # even from the peer itself
    assert parsed_sizes == [rtcp_reader.MAX_RTCP_PACKETS * 28]
    assert session.stats.packets_rtcp == 1 and session.stats.rtcp_truncated == 1
    assert len(parse_compound(sr_bomb()[: parsed_sizes[0]])) == rtcp_reader.MAX_RTCP_PACKETS


def test_rtcp_bomb_muxed_on_the_rtp_port_from_a_stranger(parsed_sizes):
    session = make(rtcp=True)
    session.receive_rtp(stream(1)[0], SDP, 0.0)
    session.receive_rtp(sr_bomb(), STRANGER, 0.01)  # RTCP-looking, on the RTP port
    assert parsed_sizes == []
    assert session.stats.packets_wrong_source == 1 and session.stats.packets_rtcp == 0


# --- 3. flood --------------------------------------------------------------------------------


def test_flood_60000_packets_in_3_seconds_are_cut_to_real_time():
    session = make()
    pcm_bytes = 0
    for i, data in enumerate(stream(60_000)):
        pcm = session.receive_rtp(data, SDP, i * 3.0 / 60_000)
        if pcm is not None:
            pcm_bytes += len(pcm)
    accepted = session.stats.packets_received
    assert 3.0 / 0.02 <= accepted <= (3.0 + MAX_AHEAD_S) / 0.02 + 1
    assert pcm_bytes == accepted * 320  # at most real time plus the burst
    assert session.stats.packets_over_rate == 60_000 - accepted
    (notice,) = {e.code for e in events(session)}
    assert notice == "over_rate"


def test_flood_400_jumbo_datagrams_are_dropped_unread():
    session = make()
    jumbo = stream(400, payload=bytes(65_000))
    assert all(session.receive_rtp(data, SDP, 0.0) is None for data in jumbo)
    assert session.stats.packets_too_large == 400 and session.stats.packets_received == 0
    assert session.receive_rtp(stream(1)[0], SDP, 0.0) is not None  # the call goes on


def test_flood_echo_does_not_play_on_for_the_length_of_the_flood():
    session = make()
    for data in stream(1000):  # 20 s of audio at once; an echo bot sends back what it hears
        pcm = session.receive_rtp(data, SDP, 0.0)
        if pcm is not None:
            session.queue_audio(pcm)
    assert session.backlog_bytes <= (MAX_AHEAD_S / 0.02 + 1) * 320


def test_flood_bound_keeps_a_real_time_stream_with_bursts_whole():
    session = make(telephone_event_pt=101)
    audio = stream(500)
    events_sender = RtpSender(101, 8000, ssrc=0xCAFE)
    for i, data in enumerate(audio):  # 10 s, delivered in 200 ms bursts, with DTMF alongside
        now = (i // 10) * 0.2 + 0.2
        assert session.receive_rtp(data, SDP, now) is not None
        session.receive_rtp(events_sender.packet(bytes(4), 160), SDP, now)
    assert session.stats.packets_over_rate == 0


# --- 4. liveness -----------------------------------------------------------------------------


def test_liveness_held_call_times_out_without_rtp_or_rtcp():
    session = make(rtp_timeout_s=1.0)
    session.set_direction(send=False, receive=False, now=0.0)  # held: inactive
    for k in range(1, 50):
        session.on_tick(k / 50)
    assert events(session) == []
    session.on_tick(1.0)
    assert events(session) == [RtpTimeout(1.0)]


def test_liveness_rtcp_keeps_the_call_alive_held_or_not():
    for held in (True, False):
        session = make(rtcp=True, rtp_timeout_s=1.0)
        if held:
            session.set_direction(send=False, receive=False, now=0.0)
        report = compound(0xCAFE, "peer", None, [])
        for k in range(1, 251):  # 5 s of RTCP every 0.5 s, no RTP
            if k % 25 == 0:
                session.receive_rtcp(report, (SDP[0], SDP[1] + 1), k / 50)
            session.on_tick(k / 50)
        assert [e for e in events(session) if isinstance(e, RtpTimeout)] == []
        for k in range(251, 300):  # the last report at 5.0 s: due at 6.0 s
            session.on_tick(k / 50)
        assert [e for e in events(session) if isinstance(e, RtpTimeout)] == []
        session.on_tick(6.0)
        assert [e for e in events(session) if isinstance(e, RtpTimeout)] == [RtpTimeout(1.0)]


# --- 5. unconfirmed --------------------------------------------------------------------------


def test_unconfirmed_session_sends_nothing_until_confirmed():
    session = make(confirmed=False, rtcp=True, rtcp_interval_s=0.1, rtp_timeout_s=0.5)
    session.queue_audio(PCMU.decode(PCMU.encode(bytes(640))))  # 40 ms queued before the ACK
    assert not session.confirmed
    for k in range(1, 51):
        assert session.on_tick(k / 50) == ()
    assert session.backlog_bytes == 640 and events(session) == []  # no timeout either
    session.confirm(1.0)
    out = session.on_tick(1.02)
    (packet,) = [RtpPacket.parse(d) for d, addr, rtcp in out if not rtcp and addr == SDP]
    assert packet.marker and session.backlog_bytes == 320
    for k in range(52, 75):
        session.on_tick(k / 50)
    assert [e for e in events(session) if isinstance(e, RtpTimeout)] == []
    session.on_tick(1.5)  # the timeout counts from the confirmation
    assert [e for e in events(session) if isinstance(e, RtpTimeout)] == [RtpTimeout(0.5)]


def test_unconfirmed_session_is_confirmed_by_rtp_from_the_peer_not_a_stranger():
    session = make(confirmed=False, signaling_address=SIGNALING)
    for data in stream(5, ssrc=0xBAD):
        session.receive_rtp(data, STRANGER, 0.1)
    assert not session.confirmed and session.on_tick(0.12) == ()
    assert session.receive_rtp(stream(1)[0], SDP, 0.2) is not None
    assert session.confirmed and destinations(session, 11, 2) == {SDP}


def test_unconfirmed_session_closes_without_an_rtcp_bye():
    session = make(confirmed=False, rtcp=True)
    assert session.close(1.0) == ()


async def test_unconfirmed_rtp_session_waits_for_confirm():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind(("127.0.0.1", 0))
    session = RTPSession(sock=own, remote_addr=peer.getsockname(), codec=PCMU, confirmed=False)
    await session.start()
    try:
        await asyncio.sleep(0.15)
        with pytest.raises(BlockingIOError):
            peer.recvfrom(2048)
        assert not session.confirmed
        session.confirm()
        await asyncio.sleep(0.15)
        data, _ = peer.recvfrom(2048)
        assert struct.unpack_from("!I", data, 8)[0] == session.ssrc
    finally:
        await session.close()
        peer.close()
