"""RTCP (RFC 3550 s.6): packet layout, reception statistics, an RTPSession's reports."""

import asyncio
import random
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipecat_sip.codecs import PCMU
from pipecat_sip.media import RTPSession
from pipecat_sip.ports import PortPool
from pipecat_sip.rtp.rtcp import (
    MAX_COMPOUND_PACKETS,
    RTCP_BYE,
    RTCP_RR,
    RTCP_SDES,
    RTCP_SR,
    ReceptionStats,
    ReportBlock,
    SenderInfo,
    compound,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
)
from pipecat_sip.rtp.sender import RtpSender

HOST = "127.0.0.1"


# --- packets ---------------------------------------------------------------------------------


def test_sender_report_layout():
    block = bytes(range(24))
    sender = SenderInfo(ntp=0x0102030405060708, rtp_timestamp=0xAABBCCDD, packets=7, octets=1120)
    data = compound(0x11223344, "ab@c", sender, [block])
    # SR: V=2, RC=1, PT=200, length 12 words (52 bytes), SSRC, NTP, RTP ts, counts, block.
    assert data[:4] == bytes([0x81, 200, 0, 12])
    assert struct.unpack_from("!IQIII", data, 4) == (
        0x11223344,
        0x0102030405060708,
        0xAABBCCDD,
        7,
        1120,
    )
    assert data[28:52] == block
    # SDES: SC=1, PT=202, one chunk: SSRC, CNAME(1) len 4 "ab@c", END, padding to 4 bytes.
    assert data[52:56] == bytes([0x81, 202, 0, 3])
    assert data[56:68] == struct.pack("!I", 0x11223344) + b"\x01\x04ab@c\x00\x00"
    assert len(data) == 68


def test_receiver_report_and_bye():
    data = compound(5, "x", None, [], bye=True)
    kinds = [(p.packet_type, p.ssrc) for p in parse_compound(data)]
    assert kinds == [(RTCP_RR, 5), (RTCP_SDES, 5), (RTCP_BYE, 5)]
    assert data[:8] == bytes([0x80, 201, 0, 1]) + struct.pack("!I", 5)
    assert len(data) % 4 == 0


def test_parse_reads_the_senders_ntp_and_rejects_bad_datagrams():
    sender = SenderInfo(ntp=ntp_timestamp(0.5), rtp_timestamp=0, packets=0, octets=0)
    (sr, _sdes) = parse_compound(compound(9, "y", sender, []))
    assert sr.packet_type == RTCP_SR and sr.ssrc == 9
    assert sr.ntp == (2208988800 << 32) | (1 << 31)  # 1970 + 0.5 s in NTP's era
    with pytest.raises(ValueError, match="version"):
        parse_compound(b"\x40\xc8\x00\x01\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="claims"):
        parse_compound(b"\x80\xc8\x00\x09\x00\x00\x00\x01")
    with pytest.raises(ValueError):
        compound(1, "z", None, [bytes(24)] * 32)


# --- report blocks (RFC 3550 s.6.4) --------------------------------------------------------


def test_report_blocks_of_an_sr_round_trip_with_reception_stats():
    stats = ReceptionStats(0xBEEF, 8000)
    for i, seq in enumerate([65534, 65535, 1, 2]):  # seq 0 lost, across the wrap
        stats.update(seq, i * 160, i * 0.02 + (0.005 if i == 2 else 0.0))
    stats.sender_report(0x0102030405060708, arrival=10.0)
    block = stats.report_block(now=10.25)
    info = SenderInfo(ntp=0xAABBCCDD00112233, rtp_timestamp=7, packets=3, octets=480)
    sr, sdes = parse_compound(compound(0x11, "me", info, [block]))
    assert sr.sender == info and sr.ntp == info.ntp
    (parsed,) = sr.reports
    assert parsed == ReportBlock(
        ssrc=0xBEEF,
        fraction_lost=(1 << 8) // 5,
        cumulative_lost=1,
        highest_seq=(1 << 16) + 2,
        jitter=int(stats.jitter),
        lsr=0x03040506,
        dlsr=16384,  # 0.25 s
    )
    assert parsed.fraction == pytest.approx(51 / 256)
    assert sdes.reports == () and sdes.sender is None


def test_receiver_report_with_two_blocks_and_negative_cumulative_loss():
    blocks = [
        struct.pack("!IIIIII", 1, (255 << 24) | 0xFFFFFF, 70000, 12, 0, 0),  # lost -1
        struct.pack("!IIIIII", 2, (0 << 24) | 0x7FFFFF, 5, 0, 0xDEADBEEF, 1),
    ]
    rr, _ = parse_compound(compound(9, "x", None, blocks))
    assert rr.packet_type == RTCP_RR and rr.sender is None and rr.ntp is None
    first, second = rr.reports
    assert (first.ssrc, first.fraction_lost, first.cumulative_lost) == (1, 255, -1)
    assert (first.highest_seq, first.jitter) == (70000, 12)
    assert (second.cumulative_lost, second.lsr, second.dlsr) == (0x7FFFFF, 0xDEADBEEF, 1)


def test_report_counts_that_do_not_fit_are_rejected():
    block = bytes(24)
    # RR claiming two blocks with room for one.
    rr = bytes([0x82, 201, 0, 7]) + struct.pack("!I", 1) + block
    with pytest.raises(ValueError, match="claims 2 report blocks"):
        parse_compound(rr)
    # SR too short for its sender info but claiming a block.
    sr = bytes([0x81, 200, 0, 1]) + struct.pack("!I", 1)
    with pytest.raises(ValueError, match="claims 1 report blocks"):
        parse_compound(sr)
    # An SR shorter than its sender info and no blocks: read as before (no NTP).
    (short,) = parse_compound(bytes([0x80, 200, 0, 1]) + struct.pack("!I", 1))
    assert short.ntp is None and short.reports == ()
    # Bounded work: a datagram of many tiny packets is refused.
    bye = bytes([0x81, 203, 0, 1]) + struct.pack("!I", 1)
    assert len(parse_compound(bye * MAX_COMPOUND_PACKETS)) == MAX_COMPOUND_PACKETS
    with pytest.raises(ValueError, match="more than"):
        parse_compound(bye * (MAX_COMPOUND_PACKETS + 1))
    with pytest.raises(ValueError, match="cut short"):
        ReportBlock.parse(bytes(23))


def test_round_trip_time_rfc3550_example_and_edges():
    # RFC 3550 s.6.4.1: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000 -> 6.125 s.
    block = ReportBlock(1, 0, 0, 0, 0, lsr=0xB7052000, dlsr=0x00054000)
    assert round_trip_time(block, 0xB7108000 << 16) == 6.125
    assert ntp_middle(0xB7108000 << 16) == 0xB7108000
    # No SR received by the peer yet.
    assert round_trip_time(ReportBlock(1, 0, 0, 0, 0, 0, 0), 1 << 48) is None
    # The middle-32-bit clock wraps: still right modulo 2**32.
    wrapped = ReportBlock(1, 0, 0, 0, 0, lsr=0xFFFF8000, dlsr=0x4000)
    assert round_trip_time(wrapped, 0x00004000 << 16) == 0.5
    # A report "from the future" (clock step, bogus DLSR) gives no RTT, not a huge one.
    assert round_trip_time(ReportBlock(1, 0, 0, 0, 0, 0x10000, 0x20000), 0x10000 << 16) is None


@given(st.sampled_from([200, 201]), st.integers(0, 31), st.integers(1, 200), st.randoms())
def test_parse_compound_reads_blocks_only_within_their_packet(kind, count, words, rnd):
    body = bytes(rnd.getrandbits(8) for _ in range(4 * words))
    data = bytes([0x80 | count, kind]) + struct.pack("!H", words) + body
    try:
        (packet,) = parse_compound(data)
    except ValueError as exc:
        assert "report blocks" in str(exc)
        fixed = 28 if kind == RTCP_SR else 8
        assert fixed + 24 * count > len(data) or (kind == RTCP_SR and len(data) < 28)
        return
    assert len(packet.reports) == count
    assert (packet.sender is not None) == (kind == RTCP_SR and len(data) >= 28)


# --- reception statistics (RFC 3550 A.1, A.3, A.8) -----------------------------------------


def fields(block: bytes) -> dict:
    ssrc, loss, ext_max, jitter, lsr, dlsr = struct.unpack("!IIIIII", block)
    lost = loss & 0xFFFFFF
    if lost & 0x800000:
        lost -= 1 << 24
    return {
        "ssrc": ssrc,
        "fraction": loss >> 24,
        "lost": lost,
        "ext_max": ext_max,
        "jitter": jitter,
        "lsr": lsr,
        "dlsr": dlsr,
    }


def test_loss_fraction_and_extended_sequence_across_the_wrap():
    stats = ReceptionStats(0xBEEF, 8000)
    seqs = [65530 + i for i in range(6)] + [0, 1, 3, 4]  # 2 lost, after the wrap
    for i, seq in enumerate(seqs):
        stats.update(seq, i * 160, i * 0.02)
    block = fields(stats.report_block(now=1.0))
    assert block["ssrc"] == 0xBEEF
    assert block["ext_max"] == (1 << 16) + 4
    assert stats.expected == 11 and stats.received == 10 and block["lost"] == 1
    assert block["fraction"] == (1 << 8) // 11  # 1 of 11 since the last (first) report
    # The next interval: 10 more in order, none lost.
    for i in range(5, 15):
        stats.update(i, (10 + i) * 160, (10 + i) * 0.02)
    block = fields(stats.report_block(now=2.0))
    assert block["fraction"] == 0 and block["lost"] == 1 and block["ext_max"] == (1 << 16) + 14


def test_duplicates_and_reordering_do_not_move_the_highest_sequence():
    stats = ReceptionStats(1, 8000)
    for seq in (10, 12, 11, 12):
        stats.update(seq, seq * 160, seq * 0.02)
    assert stats.extended_max_seq == 12 and stats.received == 4 and stats.lost == -1


def test_jitter_zero_for_steady_arrival_and_grows_with_variation():
    steady = ReceptionStats(1, 8000)
    for i in range(50):
        steady.update(i, (i * 160 + 0xFFFFFF00) & 0xFFFFFFFF, 3.0 + i * 0.02)  # ts wraps
    assert steady.jitter < 1e-6
    jittery = ReceptionStats(1, 8000)
    for i in range(400):
        late = 0.005 if i % 2 else 0.0  # every other packet 5 ms (40 units) late
        jittery.update(i, i * 160, i * 0.02 + late)
    assert 39 < jittery.jitter < 41  # |D| is 40 every time, J converges to it


def test_lsr_and_dlsr_from_the_last_sender_report():
    stats = ReceptionStats(1, 8000)
    stats.update(1, 0, 0.0)
    stats.sender_report(0x0102030405060708, arrival=10.0)
    block = fields(stats.report_block(now=10.5))
    assert block["lsr"] == 0x03040506 and block["dlsr"] == 32768  # 0.5 s in 1/65536 s


# --- RTPSession on loopback ------------------------------------------------------------------


def port_pair() -> tuple[socket.socket, socket.socket]:
    """Two bound UDP sockets on an even port and the odd one above it (RTP, RTCP)."""
    base = random.randrange(20000, 60000, 2)
    lease = PortPool(base, base + 999, HOST).acquire()
    return lease.sock, lease.rtcp_sock


async def received(sock: socket.socket, timeout: float) -> list[tuple[bytes, tuple]]:
    """Datagrams waiting on `sock`, or the first that arrive within `timeout` s."""
    out: list[tuple[bytes, tuple]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out.append(sock.recvfrom(2048))
            continue
        except BlockingIOError:
            if out:
                break
        await asyncio.sleep(0.01)
    return out


async def first_report(sock: socket.socket, match, timeout: float = 3.0) -> tuple[bytes, tuple]:
    """The first compound packet with a report block for which `match(block fields)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for data, source in await received(sock, 0.5):
            if len(data) >= 52 and match(fields(data[28:52])):
                return data, source
    raise AssertionError("no such RTCP report")


async def test_session_reports_sends_sr_with_a_block_and_bye_on_close():
    peer_rtp, peer_rtcp = port_pair()
    own_rtp, own_rtcp = port_pair()
    session = RTPSession(
        sock=own_rtp,
        rtcp_sock=own_rtcp,
        remote_addr=peer_rtp.getsockname(),
        codec=PCMU,
        rtcp_interval_s=0.3,
        cname="bot@test",
    )
    await session.start()
    try:
        # The caller sends 10 packets, one of them lost.
        sender = RtpSender(0, 8000, ssrc=0xCAFE)
        for i in range(11):
            packet = sender.packet(PCMU.silence(160), 160)
            if i != 4:
                peer_rtp.sendto(packet, own_rtp.getsockname())
            await asyncio.sleep(0.02)
        last = (sender.sequence_number - 1) & 0xFFFF
        data, source = await first_report(
            peer_rtcp, lambda block: block["ssrc"] == 0xCAFE and block["ext_max"] == last
        )
        assert source[1] == own_rtcp.getsockname()[1]  # sent from our RTCP port
        sr, sdes = parse_compound(data)[:2]
        assert sr.packet_type == RTCP_SR and sr.ssrc == session.ssrc
        assert sdes.packet_type == RTCP_SDES and b"bot@test" in data
        assert abs((sr.ntp >> 32) - 2208988800 - time.time()) < 5
        block = fields(data[28:52])
        assert block["lost"] == 1
        assert session.stats.rtcp_sent >= 1
        # The caller's SR comes back in LSR; later reports answer its source (symmetric RTCP).
        ntp = ntp_timestamp(time.time())
        info = SenderInfo(ntp=ntp, rtp_timestamp=0, packets=10, octets=1600)
        peer_rtcp.sendto(compound(0xCAFE, "caller@test", info, []), own_rtcp.getsockname())
        lsr = (ntp >> 16) & 0xFFFFFFFF
        with_lsr, _ = await first_report(peer_rtcp, lambda block: block["lsr"] == lsr)
        assert fields(with_lsr[28:52])["dlsr"] > 0
    finally:
        await session.close()
    bye = [d for d, _ in await received(peer_rtcp, 1.0)]
    assert any(p.packet_type == RTCP_BYE for d in bye for p in parse_compound(d))
    for sock in (peer_rtp, peer_rtcp):
        sock.close()


async def test_session_without_rtcp_socket_sends_no_rtcp():
    peer_rtp, peer_rtcp = port_pair()
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind((HOST, 0))
    own.setblocking(False)
    session = RTPSession(
        sock=own, remote_addr=peer_rtp.getsockname(), codec=PCMU, rtcp_interval_s=0.1
    )
    await session.start()
    await asyncio.sleep(0.4)
    await session.close()
    assert await received(peer_rtcp, 0.2) == [] and session.stats.rtcp_sent == 0
    for sock in (peer_rtp, peer_rtcp):
        sock.close()


@given(st.binary(max_size=200))
def test_parse_compound_raises_only_value_error(data):
    try:
        packets = parse_compound(data)
    except ValueError:
        return
    assert all(0 <= p.packet_type <= 255 for p in packets)


def test_a_bye_or_sdes_with_a_count_of_0_is_a_4_byte_packet_of_the_compound():
    # RFC 3550 s.6.5, s.6.6: a count of 0 is valid, the packet then has no SSRC.
    # One at the end made the whole compound "cut short" (its RR lost); one in the
    # middle had the next packet's header read as its SSRC.
    rr = compound(0xBBBB0002, "peer@example", None, [])
    empty_bye = struct.pack("!BBH", 0x80, 203, 0)
    empty_sdes = struct.pack("!BBH", 0x80, 202, 0)
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0xBBBB0002)
    packets = parse_compound(rr + empty_bye)
    assert [(p.packet_type, p.ssrc) for p in packets][-1] == (203, 0)
    assert packets[0].packet_type == 201 and packets[0].ssrc == 0xBBBB0002
    packets = parse_compound(rr + empty_sdes + bye)
    assert [(p.packet_type, p.ssrc) for p in packets][-2:] == [(202, 0), (203, 0xBBBB0002)]
    with pytest.raises(ValueError):
        parse_compound(struct.pack("!BBH", 0x80, 201, 0))  # an RR without its SSRC


def test_an_sr_goes_out_for_one_more_report_after_we_stop_sending():
    # RFC 3550 s.6.4 and A.7 (we_sent): an SR while RTP went out during the interval
    # since the last report or the one before; then an RR. It switched a report early.
    from pipecat_sip.rtp.reports import RtcpReporter
    from pipecat_sip.rtp.rtcp import ntp_middle

    rtp = RtpSender(0, 8000, rng=random.Random(1))
    reporter = RtcpReporter(rtp, "me", clock_rate=8000, ts_step=160, rng=random.Random(1))
    for _ in range(10):
        rtp.packet(b"\xff" * 160, 160)
    kinds = [parse_compound(reporter.report(5.0 * k, 1.7e9 + 5 * k))[0] for k in (1, 2, 3)]
    assert [p.packet_type for p in kinds] == [200, 200, 201]
    # The SRs' LSR values are kept for the peer's blocks to echo.
    assert list(reporter.sent_lsr) == [ntp_middle(p.ntp) for p in kinds[:2]]
