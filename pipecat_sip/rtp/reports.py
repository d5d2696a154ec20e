"""RTCP for one RTP session (RFC 3550 s.6): when to report, what to say, what was heard.

Sans-IO: :class:`RtcpReporter` builds our compound reports with
:func:`~pipecat_sip.rtp.rtcp.compound`, keeps the reception statistics of
the source we receive (:class:`~pipecat_sip.rtp.rtcp.ReceptionStats`),
takes the peer's sender reports (for LSR/DLSR) from received compound
packets, and schedules the next report at a randomized interval
(RFC 3550 s.6.2: 0.5-1.5 times the mean, the first after a quarter to
three quarters of it). Times are seconds of a monotonic clock (``now``)
and, for NTP timestamps, of the wall clock (``wall``), both passed in.
"""

import secrets
from collections import deque
from typing import Any

from pipecat_sip.rtp.rtcp import (
    RTCP_SR,
    ReceptionStats,
    RtcpPacket,
    SenderInfo,
    compound,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
)
from pipecat_sip.rtp.sender import RtpSender

__all__ = [
    "MAX_RTCP_PACKETS",
    "MIN_INTERVAL_S",
    "SENT_SR_MEMORY",
    "RtcpReporter",
    "compound_prefix",
]

MIN_INTERVAL_S = 0.05
"""Shortest mean report interval taken, seconds (tests use short ones)."""

SENT_SR_MEMORY = 8
"""Our last SRs remembered (their LSR values), for round-trip times from the peer's blocks."""

MAX_RTCP_PACKETS = 16
"""Most packets read from one compound RTCP datagram; the rest is ignored.
(A real compound holds 2-4: SR/RR, SDES, maybe BYE or XR.)"""


def compound_prefix(data: bytes, max_packets: int = MAX_RTCP_PACKETS) -> tuple[bytes, bool]:
    """The first ``max_packets`` packets of a compound RTCP datagram, found from the headers.

    Only the 4-byte common headers are read (RFC 3550 s.6.4.1: the length
    field counts 32-bit words minus one), so the work is bounded by
    ``max_packets`` whatever the datagram's size.

    Returns:
        ``(prefix, truncated)``: the bytes of at most ``max_packets`` packets
        (all of ``data`` when it holds no more, or when a length runs past
        its end, for the parser to reject), and whether packets were left
        out.
    """
    size = len(data)
    offset = 0
    for _ in range(max_packets):
        if offset + 4 > size:
            return data, False
        offset += 4 * (((data[offset + 2] << 8) | data[offset + 3]) + 1)
    if offset >= size:
        return data, False
    return data[:offset], True


class RtcpReporter:
    """Our RTCP reports and what we learn from the peer's.

    Args:
        rtp: Our outgoing stream (SSRC, packet and octet counts, timestamp).
        cname: Our SDES CNAME (RFC 7022: random per session).
        clock_rate: RTP clock of the received stream, Hz (jitter units).
        ts_step: RTP timestamp units per packet of our stream.
        interval_s: Mean seconds between reports (RFC 3550 s.6.2 suggests 5).
        rng: ``random.Random``-like source of the interval's jitter.

    Attributes:
        reception: Statistics about the source we receive (the latest SSRC
            accepted), or None before the first packet.
        next_report: When the next report is due, seconds (monotonic);
            infinity before :meth:`start`.
        reports: Compound packets built.
    """

    __slots__ = (
        "rtp",
        "cname",
        "clock_rate",
        "ts_step",
        "interval_s",
        "reception",
        "next_report",
        "reports",
        "truncated",
        "packets",
        "sent_lsr",
        "_rng",
        "_packets_at_report",
        "_packets_before",
        "_candidate",
    )

    def __init__(
        self,
        rtp: RtpSender,
        cname: str,
        *,
        clock_rate: int,
        ts_step: int,
        interval_s: float = 5.0,
        rng: Any = None,
    ):
        self.rtp = rtp
        self.cname = cname
        self.clock_rate = clock_rate
        self.ts_step = ts_step
        self.interval_s = max(MIN_INTERVAL_S, float(interval_s))
        self.reception: ReceptionStats | None = None
        self.next_report = float("inf")
        self.reports = 0
        self.truncated = 0
        """Compound datagrams of which only the first :data:`MAX_RTCP_PACKETS` were read."""
        self.packets: list[RtcpPacket] = []
        """The packets of the last compound datagram :meth:`read` accepted (for
        :class:`~pipecat_sip.rtp.quality.QualityMonitor`: the peer's report blocks)."""
        self.sent_lsr: deque[int] = deque(maxlen=SENT_SR_MEMORY)
        """The LSR values (middle 32 bits of the NTP timestamp) of our last SRs:
        what a peer's report block may echo (RFC 3550 s.6.4.1)."""
        self._rng = rng or secrets.SystemRandom()
        self._packets_at_report = 0  # RTP packets sent when the last report went out
        self._packets_before = 0  # ... and when the one before it did
        self._candidate: tuple[int, int] | None = None  # another SSRC, its next sequence number

    def start(self, now: float) -> None:
        """Schedule the first report, a quarter to three quarters of an interval from ``now``."""
        self.next_report = now + self.interval_s * self._rng.uniform(0.25, 0.75)

    def track(self, ssrc: int) -> ReceptionStats:
        """Start statistics about a new source (a new SSRC was accepted) and return them."""
        self.reception = ReceptionStats(ssrc, self.clock_rate)
        self._candidate = None
        return self.reception

    def switch(self, ssrc: int, seq: int) -> ReceptionStats | None:
        """A packet of another SSRC than the tracked one: follow it once confirmed.

        The statistics move to the new source only when its next packet
        follows in sequence (RFC 3550 A.1's probation, as the jitter buffer
        does), so one stray or forged packet cannot reset the loss and
        jitter figures our reports carry.

        Args:
            ssrc: The packet's SSRC.
            seq: Its sequence number.

        Returns:
            The new source's statistics once confirmed (the confirming
            packet is counted by the caller), else None.
        """
        if self._candidate == (ssrc, seq):
            return self.track(ssrc)
        self._candidate = (ssrc, (seq + 1) & 0xFFFF)
        return None

    def sender_report(self, ssrc: int, ntp: int, now: float) -> None:
        """Note an SR from ``ssrc`` (its NTP timestamp, arrival ``now``) if it is our source."""
        reception = self.reception
        if reception is not None and reception.ssrc == ssrc:
            reception.sender_report(ntp, now)

    def read(self, data: bytes, now: float) -> bool:
        """Read a received compound RTCP datagram: take the sender reports of our source.

        At most :data:`MAX_RTCP_PACKETS` packets are read (see
        :func:`compound_prefix`).

        Returns:
            False when the datagram is not RTCP (``parse_compound`` refused it).
        """
        prefix, truncated = compound_prefix(data)
        if truncated:
            self.truncated += 1
        try:
            packets = parse_compound(prefix)
        except ValueError:
            return False
        self.packets = packets
        for packet in packets:
            if packet.packet_type == RTCP_SR and packet.ntp is not None:
                self.sender_report(packet.ssrc, packet.ntp, now)
        return True

    def report(self, now: float, wall: float, *, bye: bool = False) -> bytes:
        """Build our compound report and schedule the next one.

        An SR when RTP went out since the report before the last one (RFC
        3550 s.6.4 and A.7's ``we_sent``; its RTP timestamp is that of the
        packet sent at this tick), else an RR; a report block on
        our source when we have one; SDES CNAME; a BYE when ``bye``
        (leaving the session, RFC 3550 s.6.6).

        Args:
            now: Seconds of the monotonic clock.
            wall: The same instant on the wall clock, seconds since 1970
                (for the NTP timestamp).
            bye: Append a BYE.
        """
        rtp = self.rtp
        sender = None
        sent = rtp.packets_sent
        if sent != self._packets_before:  # RFC 3550 A.7 we_sent: since the 2nd previous report
            # The packet just sent started at this instant: its timestamp is the
            # stream's current one minus one packet.
            sender = SenderInfo(
                ntp=ntp_timestamp(wall),
                rtp_timestamp=(rtp.timestamp - self.ts_step) & 0xFFFFFFFF,
                packets=sent,
                octets=rtp.octets_sent,
            )
            self.sent_lsr.append(ntp_middle(sender.ntp))
        self._packets_before, self._packets_at_report = self._packets_at_report, sent
        reception = self.reception
        blocks = [reception.report_block(now)] if reception is not None else []
        self.next_report = now + self.interval_s * self._rng.uniform(0.5, 1.5)
        self.reports += 1
        return compound(rtp.ssrc, self.cname, sender, blocks, bye)
