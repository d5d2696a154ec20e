"""E-model MOS (simplified G.107) and QualityMonitor, against hand-computed values."""

import struct

import pytest

from pipecat_sip.rtp.jitterbuffer import JitterBuffer
from pipecat_sip.rtp.packet import RtpPacket
from pipecat_sip.rtp.quality import (
    CODEC_IMPAIRMENTS,
    G711_WITHOUT_PLC,
    CodecImpairment,
    QualityMonitor,
    delay_impairment,
    effective_equipment_impairment,
    mos_from_r,
    r_factor,
)
from pipecat_sip.rtp.rtcp import (
    ReceptionStats,
    SenderInfo,
    compound,
    parse_compound,
)

PCMU = CODEC_IMPAIRMENTS["PCMU"]
OUR_SSRC = 0x5EED


def test_mos_from_r_per_g107_annex_b():
    # 1 + 0.035 R + R (R - 60)(100 - R) 7e-6
    assert mos_from_r(93.2) == pytest.approx(1 + 3.262 + 93.2 * 33.2 * 6.8 * 7e-6)
    assert mos_from_r(93.2) == pytest.approx(4.409285824)
    assert mos_from_r(50.0) == pytest.approx(1 + 1.75 - 50 * 10 * 50 * 7e-6)  # 2.575
    assert mos_from_r(0.0) == 1.0 and mos_from_r(-20.0) == 1.0
    assert mos_from_r(100.0) == 4.5 and mos_from_r(120.0) == 4.5


def test_mos_from_r_stays_on_the_scale_where_the_cubic_dips_under_1():
    # The Annex B cubic gives 0.989 at R ~ 3 (e.g. 400 ms one way with 35% loss).
    values = [mos_from_r(r / 10) for r in range(0, 1001)]
    assert min(values) == 1.0 and max(values) == 4.5


def test_delay_impairment():
    assert delay_impairment(0) == 0.0
    assert delay_impairment(100) == pytest.approx(2.4)  # 0.024 * 100
    assert delay_impairment(177.3) == pytest.approx(0.024 * 177.3)
    assert delay_impairment(200) == pytest.approx(4.8 + 0.11 * 22.7)  # 7.297
    assert delay_impairment(400) == pytest.approx(9.6 + 0.11 * 222.7)  # 34.097


def test_effective_equipment_impairment():
    assert effective_equipment_impairment(0.0, 25.1, 0.0) == 0.0
    assert effective_equipment_impairment(0.0, 25.1, 1.0) == pytest.approx(95 / 26.1)  # 3.6398
    assert effective_equipment_impairment(0.0, 25.1, 5.0) == pytest.approx(475 / 30.1)  # 15.78
    assert effective_equipment_impairment(0.0, 4.3, 1.0) == pytest.approx(95 / 5.3)  # no PLC
    # Ie = 11, Bpl = 19 (G.729A in G.113), 2% loss, BurstR 2: 11 + 84 * 2 / (1 + 19)
    assert effective_equipment_impairment(11.0, 19.0, 2.0, 2.0) == pytest.approx(11 + 8.4)
    assert effective_equipment_impairment(0.0, 25.1, 100.0) == pytest.approx(95 * 100 / 125.1)


def test_r_factor_and_mos_of_typical_calls():
    assert r_factor(0, 0, PCMU) == pytest.approx(93.2)
    # 200 ms one way, 1% loss, G.711 with PLC: 93.2 - 7.297 - 3.6398 = 82.263
    r = r_factor(200, 1.0, PCMU)
    assert r == pytest.approx(82.26315, abs=1e-4)
    assert mos_from_r(r) == pytest.approx(4.10660, abs=1e-4)
    # The same loss without PLC costs much more: 93.2 - 7.297 - 17.925 = 67.98.
    assert r_factor(200, 1.0, G711_WITHOUT_PLC) == pytest.approx(93.2 - 7.297 - 95 / 5.3)
    assert r_factor(0, 0, PCMU, advantage=5.0) == pytest.approx(98.2)


# --- the monitor ----------------------------------------------------------------------------


def reception_with_loss(count, missing, start=0):
    stats = ReceptionStats(0xCA11, 8000)
    for i in range(start, start + count):
        if i not in missing:
            stats.update(i, i * 160, i * 0.02)
    return stats


def peer_report(block: bytes, ntp: int = 1 << 40) -> list:
    """A compound SR from the peer carrying `block`."""
    info = SenderInfo(ntp=ntp, rtp_timestamp=0, packets=100, octets=16000)
    return parse_compound(compound(0xCA11, "peer@test", info, [block]))


def block_about(ssrc, *, fraction=0, lost=0, highest=0, jitter=0, lsr=0, dlsr=0) -> bytes:
    return struct.pack(
        "!IIIIII", ssrc, (fraction << 24) | (lost & 0xFFFFFF), highest, jitter, lsr, dlsr
    )


def test_rtt_from_the_peers_report_rfc3550_example():
    # RFC 3550 s.6.4.1: LSR 0xb705:2000, DLSR 0x0005:4000, A 0xb710:8000 -> 6.125 s.
    monitor = QualityMonitor("PCMU", ssrc=OUR_SSRC)
    packets = peer_report(block_about(OUR_SSRC, lsr=0xB7052000, dlsr=0x00054000))
    monitor.on_rtcp(packets, arrival_ntp=0xB7108000 << 16)
    assert monitor.rtt == pytest.approx(6.125)
    # A block about another source is not ours: ignored.
    other = peer_report(block_about(0x0BAD, lsr=0xB7052000, dlsr=0))
    monitor.on_rtcp(other, arrival_ntp=0xB7108000 << 16)
    assert monitor.rtt == pytest.approx(6.125) and monitor.reports == 1
    # No LSR yet (the peer had no SR from us): no RTT, the block still counts.
    fresh = QualityMonitor("PCMU", ssrc=OUR_SSRC)
    fresh.on_rtcp(peer_report(block_about(OUR_SSRC)), arrival_ntp=1 << 48)
    assert fresh.rtt is None and fresh.reports == 1


def test_no_rtt_from_an_lsr_that_is_none_of_our_srs():
    # RFC 3550 s.6.4.1: LSR echoes our SR. A forged or stale LSR gave RTTs of hours
    # (up to 9.1 h) and with them a MOS of 1 on a perfect path.
    ours = 0xB7052000
    monitor = QualityMonitor("PCMU", ssrc=OUR_SSRC)
    forged = peer_report(block_about(OUR_SSRC, lsr=0x00010000, dlsr=0))
    monitor.on_rtcp(forged, arrival_ntp=0xB7108000 << 16, sent_lsr=[ours])
    assert monitor.rtt is None and monitor.reports == 1  # the block still counts
    echoed = peer_report(block_about(OUR_SSRC, lsr=ours, dlsr=0x00054000))
    monitor.on_rtcp(echoed, arrival_ntp=0xB7108000 << 16, sent_lsr=[ours])
    assert monitor.rtt == pytest.approx(6.125)


def test_snapshot_hand_computed():
    """100 packets expected, 2 lost, RTT 125 ms, no jitter buffer delay.

    one way = 125 / 2 + 20 (ptime) = 82.5 ms -> Id = 1.98
    Ppl = 2%  -> Ie_eff = 95 * 2 / (2 + 25.1) = 7.0111
    R = 93.2 - 1.98 - 7.0111 = 84.2089 -> MOS 4.17266
    """
    monitor = QualityMonitor("PCMU", ssrc=OUR_SSRC, ptime_ms=20)
    lsr = 0x12340000
    packets = peer_report(
        block_about(OUR_SSRC, fraction=64, lost=3, jitter=80, lsr=lsr, dlsr=0x8000)
    )
    monitor.on_rtcp(packets, arrival_ntp=(lsr + 0x8000 + 0x2000) << 16, now=0.25)  # 0.125 s
    reception = reception_with_loss(100, {10, 20})
    stats = monitor.snapshot(1.0, reception=reception)
    assert stats.report_age_s == pytest.approx(0.75) and stats.interval_s == 0.0
    assert stats.rtt_ms == pytest.approx(125.0)
    assert stats.one_way_delay_ms == pytest.approx(82.5)
    assert stats.fraction_lost == pytest.approx(0.02)
    assert (stats.cumulative_lost, stats.packets_received, stats.packets_lost) == (2, 98, 2)
    assert stats.r_factor == pytest.approx(84.20893, abs=1e-4)
    assert stats.mos == pytest.approx(4.17266, abs=1e-4)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-9)
    # What the peer says about our stream.
    assert stats.remote_fraction_lost == pytest.approx(0.25)
    assert stats.remote_cumulative_lost == 3
    assert stats.remote_jitter_ms == pytest.approx(10.0)  # 80 units at 8 kHz
    # The next interval: 100 more, none lost -> R = 93.2 - 1.98 = 91.22 -> MOS 4.36773.
    for i in range(100, 200):
        reception.update(i, i * 160, i * 0.02)
    stats = monitor.snapshot(3.0, reception=reception)
    assert stats.fraction_lost == 0.0 and stats.cumulative_lost == 2
    assert stats.interval_s == 2.0 and stats.report_age_s == pytest.approx(2.75)
    assert stats.mos == pytest.approx(4.36773, abs=1e-4)


def test_snapshot_counts_late_packets_and_the_buffer_delay():
    buffer = JitterBuffer(min_delay_ms=40, max_delay_ms=40)
    reception = ReceptionStats(1, 8000)
    arrivals = [(0.001 + i * 0.02, i) for i in range(50) if i != 20]
    arrivals.append((0.001 + 24 * 0.02, 20))  # 80 ms late: beyond the 40 ms buffer
    arrivals.sort()
    at = 0
    for k in range(55):
        now = 0.01 + k * 0.02
        while at < len(arrivals) and arrivals[at][0] <= now:
            t, seq = arrivals[at]
            buffer.put(RtpPacket(0, seq, seq * 160, 1, bytes(range(1, 161))), t)
            reception.update(seq, seq * 160, t)
            at += 1
        buffer.pop(now)
    monitor = QualityMonitor("PCMA")
    stats = monitor.snapshot(1.0, reception=reception, buffer=buffer)
    assert stats.packets_late == 1 and stats.cumulative_lost == 0
    assert stats.packets_concealed >= 1
    assert 40.0 <= buffer.delay_ms <= 60.0
    # Ppl counts the late packet: 1 of 50 = 2%; delay = 0 + buffer + 20 ms.
    expected = r_factor(buffer.delay_ms + 20.0, 2.0, CODEC_IMPAIRMENTS["PCMA"])
    assert stats.r_factor == pytest.approx(expected)
    assert stats.one_way_delay_ms == pytest.approx(buffer.delay_ms + 20.0)


def test_monitor_from_the_jitter_buffer_alone_and_codec_choices():
    buffer = JitterBuffer()
    for i in range(10):
        buffer.put(RtpPacket(0, i, i * 160, 1, b"x" * 160), i * 0.02)
        buffer.pop(i * 0.02 + 0.01)
    stats = QualityMonitor().snapshot(1.0, buffer=buffer)
    assert stats.packets_received == 10 and stats.fraction_lost == 0.0
    assert stats.rtt_ms is None and stats.remote_fraction_lost is None
    assert stats.report_age_s is None
    assert QualityMonitor("pcmu", plc=False).codec is G711_WITHOUT_PLC
    assert QualityMonitor("G722").codec.delay_ms == 1.5
    assert QualityMonitor("opus").codec is CODEC_IMPAIRMENTS["OPUS"]
    custom = CodecImpairment(ie=10.0, bpl=20.0)
    assert QualityMonitor(custom).codec is custom
    assert QualityMonitor("L16").codec is PCMU  # unknown: counted as G.711
    # Nothing at all: a perfect path with only the packet time as delay.
    empty = QualityMonitor().snapshot(0.0)
    assert empty.mos == pytest.approx(mos_from_r(93.2 - 0.024 * 20))
