"""Call quality: round-trip time from RTCP, our reception figures, an E-model MOS.

:class:`QualityMonitor` takes the peer's RTCP reports (:meth:`~QualityMonitor.on_rtcp`)
and, when asked (:meth:`~QualityMonitor.snapshot`), reads our own reception
figures (a :class:`~pipecat_sip.rtp.rtcp.ReceptionStats` and a
:class:`~pipecat_sip.rtp.jitterbuffer.JitterBuffer`) into a
:class:`CallQualityStats` value with an estimated MOS. Pure: no clock is
read; the arrival time of each report comes in as an NTP timestamp (for
RTT, RFC 3550 s.6.4.1) and ``now`` as monotonic seconds.

The MOS is the ITU-T G.107 E-model, simplified as is usual for VoIP
monitoring:

- ``R = (R0 - Is) - Id - Ie_eff + A`` with ``R0 - Is = 93.2`` (G.107
  defaults) and the advantage factor ``A`` 0 by default;
- ``Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`` from the one-way
  mouth-to-ear delay ``d`` in ms (the Cole-Rosenbluth fit of G.107's delay
  terms with echo well controlled), ``d`` = RTT/2 + jitter-buffer delay +
  packet time + codec delay;
- ``Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)`` (G.107 eq. 7-29),
  ``Ppl`` the percentage of packets not played (lost or late);
- MOS from R per G.107 Annex B: 1 below R = 0, 4.5 above 100, else
  ``1 + 0.035 R + R (R - 60)(100 - R) 7e-6``.

Codec figures (:data:`CODEC_IMPAIRMENTS`): G.711 is G.113 Appendix I
(Ie 0; Bpl 25.1 with the Appendix I concealment, 4.3 without). For G.722
and Opus, on this narrowband scale, Ie is 0 (lossless, both are at least
G.711's quality; their wideband gain is beyond a narrowband R) and Bpl is
taken as 25.1, the figure of a waveform codec with concealment: provisional
values, not ITU ones; pass a :class:`CodecImpairment` measured for your
setup to override them.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

from pipecat_sip.rtp.jitterbuffer import JitterBuffer
from pipecat_sip.rtp.rtcp import (
    RTCP_RR,
    RTCP_SR,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    round_trip_time,
)

__all__ = [
    "CODEC_IMPAIRMENTS",
    "G711_WITHOUT_PLC",
    "R_DEFAULT",
    "CallQualityStats",
    "CodecImpairment",
    "QualityMonitor",
    "delay_impairment",
    "effective_equipment_impairment",
    "mos_from_r",
    "r_factor",
]

R_DEFAULT = 93.2
"""``R0 - Is`` with G.107's default parameters: R for a perfect G.711 path."""


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """E-model figures of a codec (ITU-T G.113 style).

    Attributes:
        ie: Equipment impairment factor Ie, R-scale units (0: none).
        bpl: Packet-loss robustness factor Bpl (higher: loss hurts less).
        delay_ms: Algorithmic delay beyond the packet time (look-ahead), ms.
    """

    ie: float
    bpl: float
    delay_ms: float = 0.0


G711_WITHOUT_PLC = CodecImpairment(ie=0.0, bpl=4.3)
"""G.711 when lost packets are played as silence (G.113 Appendix I)."""

CODEC_IMPAIRMENTS: dict[str, CodecImpairment] = {
    "PCMU": CodecImpairment(ie=0.0, bpl=25.1),  # G.113 App. I: G.711 with App. I PLC
    "PCMA": CodecImpairment(ie=0.0, bpl=25.1),
    "G722": CodecImpairment(ie=0.0, bpl=25.1, delay_ms=1.5),  # provisional (module doc)
    "OPUS": CodecImpairment(ie=0.0, bpl=25.1, delay_ms=6.5),  # provisional; RFC 6716 look-ahead
}
"""E-model figures by SDP encoding name (upper case)."""


def delay_impairment(one_way_ms: float) -> float:
    """Id from the one-way mouth-to-ear delay in ms (simplified G.107, echo controlled)."""
    d = max(0.0, one_way_ms)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def effective_equipment_impairment(
    ie: float, bpl: float, loss_pct: float, burst_ratio: float = 1.0
) -> float:
    """Ie_eff (G.107 eq. 7-29) for ``loss_pct`` percent of packets lost (0-100).

    Args:
        ie: The codec's Ie.
        bpl: The codec's Bpl.
        loss_pct: Packets lost or discarded, percent.
        burst_ratio: BurstR (1: random loss; above 1: bursty).
    """
    ppl = min(100.0, max(0.0, loss_pct))
    if ppl == 0.0:
        return ie
    return ie + (95.0 - ie) * ppl / (ppl / burst_ratio + bpl)


def r_factor(
    one_way_ms: float,
    loss_pct: float,
    codec: CodecImpairment,
    *,
    advantage: float = 0.0,
    burst_ratio: float = 1.0,
) -> float:
    """The E-model transmission rating R (simplified G.107), not clipped.

    Args:
        one_way_ms: Mouth-to-ear delay, ms.
        loss_pct: Packets lost or late, percent.
        codec: The codec's figures.
        advantage: The advantage factor A (G.107: 0 wired, up to 10 mobile).
        burst_ratio: BurstR of the loss (1: random).
    """
    ie_eff = effective_equipment_impairment(codec.ie, codec.bpl, loss_pct, burst_ratio)
    return R_DEFAULT - delay_impairment(one_way_ms) - ie_eff + advantage


def mos_from_r(r: float) -> float:
    """Estimated MOS (conversational quality) from R, G.107 Annex B (1.0-4.5)."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    # The cubic dips just under 1 for 0 < R < 6.5 (0.989 at R ~ 3): keep the scale's floor.
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


@dataclass(frozen=True, slots=True)
class CallQualityStats:
    """Quality figures of one call at one moment.

    Attributes:
        rtt_ms: Round-trip time from the peer's last report with an LSR
            (RFC 3550 s.6.4.1), ms; None until one arrived.
        jitter_ms: Interarrival jitter of the stream we receive (RFC 3550
            A.8), ms.
        fraction_lost: Of the packets we expected since the previous
            snapshot, the fraction lost (0-1; RTCP's "fraction lost").
        cumulative_lost: Packets of the stream we receive lost since the
            start (negative with duplicates, as in RTCP).
        packets_received: Packets of the stream received.
        packets_lost: Packets that never arrived (max(0, cumulative_lost)).
        packets_late: Packets that arrived too late to be played.
        packets_concealed: Packet times concealed for lost or late packets.
        mos: Estimated MOS of what we hear, since the previous snapshot
            (G.107 Annex B, 1.0-4.5).
        r_factor: The E-model rating behind ``mos`` (clipped to 0-100).
        one_way_delay_ms: The mouth-to-ear delay the rating assumed, ms.
        remote_fraction_lost: What the peer reports of our stream: fraction
            lost in its last interval (0-1), or None before its first report.
        remote_cumulative_lost: The peer's cumulative lost count of our
            stream, or None.
        remote_jitter_ms: The peer's jitter of our stream, ms, or None.
        report_age_s: Seconds since the last report about our stream arrived
            (None: none yet, or its arrival time was not given).
        interval_s: Seconds since the previous snapshot (0 for the first).
        packets_recovered_fec: Lost packets rebuilt from the next packet's
            in-band FEC (Opus) instead of concealed, since the start.
        packets_duplicate: Duplicate packets the jitter buffer dropped.
        buffer_delay_ms: The jitter buffer's current delay of a median
            packet, ms (None: no jitter buffer).
        buffer_target_ms: The wait the jitter buffer aims at for the earliest
            packets, ms (None: no jitter buffer).
        call_mos: Estimated MOS of the whole call so far: the E-model on
            every packet expected since the start and the current delay.
        mos_min: The lowest interval ``mos`` so far (intervals in which
            packets were expected), or None before one.
        codec: The SDP encoding name of the codec received ("" unknown).
        final: True for the snapshot taken when the media session closed.
    """

    rtt_ms: float | None
    jitter_ms: float
    fraction_lost: float
    cumulative_lost: int
    packets_received: int
    packets_lost: int
    packets_late: int
    packets_concealed: int
    mos: float
    r_factor: float
    one_way_delay_ms: float
    remote_fraction_lost: float | None = None
    remote_cumulative_lost: int | None = None
    remote_jitter_ms: float | None = None
    report_age_s: float | None = None
    interval_s: float = 0.0
    packets_recovered_fec: int = 0
    packets_duplicate: int = 0
    buffer_delay_ms: float | None = None
    buffer_target_ms: float | None = None
    call_mos: float = 4.5
    mos_min: float | None = None
    codec: str = ""
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The figures as a plain dict (JSON-ready: numbers, strings, None, a bool)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def summary(self) -> str:
        """One short line for a log: MOS, loss, late, jitter, RTT."""
        expected = self.packets_received + self.packets_lost
        loss = 100.0 * self.packets_lost / expected if expected > 0 else 0.0
        rtt = "-" if self.rtt_ms is None else f"{self.rtt_ms:.0f} ms"
        low = "" if self.mos_min is None else f" (min {self.mos_min:.2f})"
        return (
            f"MOS {self.call_mos:.2f}{low}, lost {self.packets_lost} ({loss:.1f}%), "
            f"late {self.packets_late}, concealed {self.packets_concealed}, "
            f"jitter {self.jitter_ms:.1f} ms, RTT {rtt}"
        )


class QualityMonitor:
    """Collects the peer's RTCP reports and our own figures into :class:`CallQualityStats`.

    Args:
        codec: The SDP encoding name of the codec we receive (see
            :data:`CODEC_IMPAIRMENTS`; unknown names count as G.711), or its
            :class:`CodecImpairment`.
        clock_rate: The stream's RTP clock, Hz (jitter units).
        ptime_ms: Packet time, ms (part of the delay).
        ssrc: Our SSRC: only report blocks about it are read (None: any).
        plc: Whether lost packets are concealed (G.711's Bpl depends on it).
        advantage: E-model advantage factor A.
        burst_ratio: E-model BurstR (1: random loss).

    Example:
        ::

            monitor = QualityMonitor("PCMU", ssrc=session_ssrc)
            monitor.on_rtcp(parse_compound(datagram), ntp_timestamp(time.time()), now)
            stats = monitor.snapshot(now, reception=reception, buffer=jitter_buffer)
    """

    def __init__(
        self,
        codec: str | CodecImpairment = "PCMU",
        *,
        clock_rate: int = 8000,
        ptime_ms: float = 20.0,
        ssrc: int | None = None,
        plc: bool = True,
        advantage: float = 0.0,
        burst_ratio: float = 1.0,
    ):
        self.codec_name = "" if isinstance(codec, CodecImpairment) else codec
        """The SDP encoding name given ("" when figures were given)."""
        self._given = codec
        self.codec = self._figures(plc)
        """The codec's E-model figures in use."""
        self.clock_rate = clock_rate
        self.ptime_ms = float(ptime_ms)
        self.ssrc = ssrc
        self.advantage = advantage
        self.burst_ratio = burst_ratio
        self.rtt: float | None = None
        """Last round-trip time, s (None before a report with an LSR)."""
        self.remote: ReportBlock | None = None
        """The last report block about our stream, or None."""
        self.reports = 0
        """Report blocks about our stream read so far."""
        self._prior = (0, 0, 0, 0)  # expected, received, late, recovered at the previous snapshot
        self._report_at: float | None = None
        self._snapshot_at: float | None = None
        self._mos_min: float | None = None

    def _figures(self, plc: bool) -> CodecImpairment:
        codec = self._given
        if isinstance(codec, CodecImpairment):
            return codec
        name = codec.upper()
        if not plc and name in ("PCMU", "PCMA"):
            return G711_WITHOUT_PLC
        return CODEC_IMPAIRMENTS.get(name, CODEC_IMPAIRMENTS["PCMU"])

    def set_concealment(self, plc: bool) -> None:
        """Say whether lost packets are concealed from now on (a jitter buffer came or went).

        Only G.711's figures change (G.113 Appendix I: Bpl 25.1 with PLC, 4.3
        without); figures given as a :class:`CodecImpairment` stay.
        """
        self.codec = self._figures(plc)

    def on_rtcp(
        self,
        packets: Iterable[RtcpPacket],
        arrival_ntp: int,
        now: float | None = None,
        sent_lsr: Container[int] | None = None,
    ) -> None:
        """Read the report blocks about our stream from one received compound packet.

        Work is bounded by the packet's blocks (:func:`parse_compound` caps them).

        Args:
            packets: :func:`~pipecat_sip.rtp.rtcp.parse_compound`'s result.
            arrival_ntp: When the datagram arrived, 64-bit NTP timestamp of the
                wall clock (:func:`~pipecat_sip.rtp.rtcp.ntp_timestamp`).
            now: The same moment, monotonic seconds (for ``report_age_s``).
            sent_lsr: The LSR values of the SRs we sent lately
                (:attr:`~pipecat_sip.rtp.reports.RtcpReporter.sent_lsr`): a
                block's LSR echoes one of them (RFC 3550 s.6.4.1), so any
                other gives no round-trip time (None: every LSR is taken).
        """
        for packet in packets:
            if packet.packet_type not in (RTCP_SR, RTCP_RR):
                continue
            for block in packet.reports:
                if self.ssrc is not None and block.ssrc != self.ssrc:
                    continue
                self.remote = block
                self.reports += 1
                if now is not None:
                    self._report_at = now
                if sent_lsr is not None and block.lsr not in sent_lsr:
                    continue  # not an SR of ours (forged, or too old): no RTT from it
                rtt = round_trip_time(block, arrival_ntp)
                if rtt is not None:
                    self.rtt = rtt

    def snapshot(
        self,
        now: float,
        reception: ReceptionStats | None = None,
        buffer: JitterBuffer | None = None,
        *,
        recovered: int = 0,
        final: bool = False,
        advance: bool = True,
    ) -> CallQualityStats:
        """The call's figures now; starts the next interval for ``fraction_lost`` and ``mos``.

        Args:
            now: Monotonic seconds (the clock ``on_rtcp`` got).
            reception: Our RFC 3550 reception statistics of the stream (loss,
                jitter); without them the jitter buffer's figures are used.
            buffer: Our jitter buffer (late, concealed, delay).
            recovered: Lost packets rebuilt from in-band FEC since the start
                (they count as played, not as lost, in the rating).
            final: Mark the snapshot as the last of the call.
            advance: Start the next interval (False: a look at the figures
                that leaves the intervals of the regular snapshots alone).
        """
        interval = 0.0 if self._snapshot_at is None else max(0.0, now - self._snapshot_at)
        if advance:
            self._snapshot_at = now
        age = None if self._report_at is None else max(0.0, now - self._report_at)
        expected = reception.expected if reception is not None else 0
        received = reception.received if reception is not None else 0
        cumulative = reception.lost if reception is not None else 0
        late = concealed = duplicates = 0
        delay = 0.0
        buffer_delay = buffer_target = None
        if buffer is not None:
            stats = buffer.stats
            late = stats.late
            duplicates = stats.duplicates
            concealed = max(0, stats.concealed - stats.concealed_no_loss - recovered)
            delay = buffer_delay = buffer.delay_ms
            buffer_target = buffer.target_delay_ms
            if reception is None:
                received = stats.received - stats.duplicates
                cumulative = stats.lost
                expected = received + stats.lost
        if reception is not None:
            jitter_ms = reception.jitter * 1000.0 / self.clock_rate
        elif buffer is not None:
            jitter_ms = buffer.jitter_ms
        else:
            jitter_ms = 0.0
        prior_expected, prior_received, prior_late, prior_recovered = self._prior
        if expected < prior_expected or received < prior_received:  # the source restarted
            prior_expected = prior_received = 0
        if advance:
            self._prior = (expected, received, late, recovered)
        expected_interval = expected - prior_expected
        lost_interval = expected_interval - (received - prior_received)
        late_interval = max(0, late - prior_late)
        recovered_interval = max(0, recovered - prior_recovered)
        fraction = 0.0
        loss_pct = 0.0
        if expected_interval > 0:
            fraction = max(0.0, min(1.0, lost_interval / expected_interval))
            unplayed = max(0, max(0, lost_interval) + late_interval - recovered_interval)
            loss_pct = min(100.0, 100.0 * unplayed / expected_interval)
        rtt_ms = None if self.rtt is None else self.rtt * 1000.0
        one_way = (rtt_ms or 0.0) / 2.0 + delay + self.ptime_ms + self.codec.delay_ms
        r = self._rating(one_way, loss_pct)
        mos = mos_from_r(r)
        mos_min = self._mos_min
        if expected_interval > 0 and (mos_min is None or mos < mos_min):
            mos_min = mos
            if advance:
                self._mos_min = mos
        call_loss = 0.0
        if expected > 0:
            call_unplayed = max(0, max(0, cumulative) + late - recovered)
            call_loss = min(100.0, 100.0 * call_unplayed / expected)
        remote = self.remote
        return CallQualityStats(
            rtt_ms=rtt_ms,
            jitter_ms=jitter_ms,
            fraction_lost=fraction,
            cumulative_lost=cumulative,
            packets_received=received,
            packets_lost=max(0, cumulative),
            packets_late=late,
            packets_concealed=concealed,
            mos=mos,
            r_factor=max(0.0, min(100.0, r)),
            one_way_delay_ms=one_way,
            remote_fraction_lost=None if remote is None else remote.fraction,
            remote_cumulative_lost=None if remote is None else remote.cumulative_lost,
            remote_jitter_ms=(None if remote is None else remote.jitter * 1000.0 / self.clock_rate),
            report_age_s=age,
            interval_s=interval,
            packets_recovered_fec=recovered,
            packets_duplicate=duplicates,
            buffer_delay_ms=buffer_delay,
            buffer_target_ms=buffer_target,
            call_mos=mos_from_r(self._rating(one_way, call_loss)),
            mos_min=mos_min,
            codec=self.codec_name,
            final=final,
        )

    def _rating(self, one_way_ms: float, loss_pct: float) -> float:
        return r_factor(
            one_way_ms,
            loss_pct,
            self.codec,
            advantage=self.advantage,
            burst_ratio=self.burst_ratio,
        )
