"""RTCP (RFC 3550 section 6): sender/receiver reports, SDES CNAME, BYE; reception statistics.

Pure functions and one small state object, no I/O:

- :class:`ReceptionStats` keeps what a report block says about one source:
  sequence numbers with wrap-around, loss and interarrival jitter
  (RFC 3550 appendix A.1, A.3, A.8), and the last SR heard from it (LSR/DLSR).
- :func:`compound` builds a compound packet: SR (or RR when we sent nothing
  since the last report), SDES with our CNAME, and BYE when leaving
  (section 6.1: every compound packet starts with a report and carries CNAME).
- :func:`parse_compound` reads the packets of a compound datagram: the
  sender info of an SR and the report blocks of an SR or RR
  (:class:`ReportBlock`, s.6.4); :func:`round_trip_time` turns a block's
  LSR/DLSR into the round-trip time (s.6.4.1).

Times: ``now`` arguments are seconds of the wall clock (``time.time()``) for
NTP timestamps, and seconds of any monotonic clock for arrival and delay.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "MAX_COMPOUND_PACKETS",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "SenderInfo",
    "compound",
    "ntp_middle",
    "ntp_timestamp",
    "parse_compound",
    "round_trip_time",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203

_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
_SEQ_MOD = 1 << 16
_MAX_DROPOUT = 3000  # RFC 3550 A.1
_MAX_MISORDER = 100
_SDES_CNAME = 1
_BLOCK = struct.Struct("!IIIIII")

MAX_COMPOUND_PACKETS = 64
"""Most packets :func:`parse_compound` reads from one datagram (real ones carry 2-4)."""


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (RFC 5905 format, as in SR) of a Unix time in seconds."""
    seconds = int(unix_time) + _NTP_EPOCH_OFFSET
    fraction = int((unix_time % 1.0) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (units of 1/65536 s), as LSR uses."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block of an SR or RR (RFC 3550 s.6.4.1), as received.

    What the report's sender says about one source it receives (``ssrc``:
    us, when the block is about our stream).

    Attributes:
        ssrc: SSRC_n, the source the block is about.
        fraction_lost: Packets lost since the previous report over packets
            expected, in 1/256 (0-255).
        cumulative_lost: Packets lost since the start (signed 24-bit;
            negative with duplicates).
        highest_seq: Extended highest sequence number received (32 bits).
        jitter: Interarrival jitter, RTP timestamp units.
        lsr: Middle 32 bits of the NTP timestamp of the last SR received
            from ``ssrc`` (0: none yet).
        dlsr: Delay since that SR until this report was sent, 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    @property
    def fraction(self) -> float:
        """``fraction_lost`` as a fraction, 0-255/256."""
        return self.fraction_lost / 256.0

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        """Read the 24-byte block at ``offset``.

        Raises:
            ValueError: Fewer than 24 bytes there.
        """
        if len(data) - offset < _BLOCK.size:
            raise ValueError(f"RTCP report block at byte {offset} is cut short")
        ssrc, loss, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr)


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Round-trip time from a report block about us (RFC 3550 s.6.4.1).

    ``A - LSR - DLSR`` in the 1/65536 s units of the NTP timestamp's middle
    32 bits, taken modulo 2**32, where A is when the report arrived.

    Args:
        block: A report block whose ``ssrc`` is ours (its LSR echoes our SR).
        arrival_ntp: When the report arrived, a 64-bit NTP timestamp of our
            wall clock (:func:`ntp_timestamp` of ``time.time()``).

    Returns:
        Seconds, or None when the peer has not received an SR from us yet
        (LSR 0) or the result is negative (clock steps, a bogus block).
    """
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:
        return None
    return rtt / 65536.0


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """The sender info of our SR (RFC 3550 s.6.4.1).

    Attributes:
        ntp: 64-bit NTP timestamp of when the report is sent.
        rtp_timestamp: The RTP timestamp that corresponds to ``ntp``.
        packets: RTP data packets sent since the session started.
        octets: RTP payload octets sent since the session started.
    """

    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of a received compound RTCP datagram (what we read of it).

    Attributes:
        packet_type: 200 SR, 201 RR, 202 SDES, 203 BYE, or another type.
        ssrc: The first SSRC of the packet (the sender's for SR/RR; 0 for an
            SDES or BYE with a count of 0, a 4-byte packet).
        ntp: For an SR, its 64-bit NTP timestamp; else None.
        sender: For an SR, its sender info (NTP and RTP timestamps, packet
            and octet counts); else None.
        reports: For an SR or RR, its report blocks (RFC 3550 s.6.4), at
            most 31; else empty.
    """

    packet_type: int
    ssrc: int
    ntp: int | None = None
    sender: SenderInfo | None = None
    reports: tuple[ReportBlock, ...] = ()


class ReceptionStats:
    """What we received from one source, for the report block about it.

    Args:
        ssrc: The source's SSRC.
        clock_rate: Its RTP clock rate, Hz (for jitter in timestamp units).
    """

    def __init__(self, ssrc: int, clock_rate: int):
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.received = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = _SEQ_MOD + 1
        self._started = False
        self._expected_prior = 0
        self._received_prior = 0
        self._previous: tuple[float, int] | None = None  # (arrival, RTP timestamp)
        self._jitter = 0.0
        self._lsr = 0  # middle 32 bits of the NTP timestamp of the last SR from the source
        self._lsr_at: float | None = None  # when that SR arrived (monotonic s)

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, with the wrap-around count above it."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected from the first to the highest sequence number."""
        return self.extended_max_seq - self._base_seq + 1 if self._started else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (expected - received; negative with duplicates)."""
        return self.expected - self.received

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate, RTP timestamp units (RFC 3550 A.8)."""
        return self._jitter

    def update(self, seq: int, rtp_timestamp: int, arrival: float, timed: bool = True) -> None:
        """Count one received RTP packet (RFC 3550 A.1 and A.8).

        Args:
            seq: Its sequence number.
            rtp_timestamp: Its RTP timestamp.
            arrival: When it arrived, seconds of a monotonic clock.
            timed: False for a packet whose timestamp does not follow its
                sampling time, such as an RFC 4733 telephone-event (every
                packet of an event carries the event's start, s.2.5.1.2): it
                counts for loss, not for jitter.
        """
        if not self._started:
            self._started = True
            self._base_seq = self._max_seq = seq
            self._cycles = 0
        else:
            delta = (seq - self._max_seq) % _SEQ_MOD
            if delta < _MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += _SEQ_MOD  # wrapped
                self._max_seq = seq
            elif delta <= _SEQ_MOD - _MAX_MISORDER:
                # A big jump: restart the count once two packets agree on it.
                if seq == self._bad_seq:
                    self._base_seq = self._max_seq = seq
                    self._cycles = 0
                    self._bad_seq = _SEQ_MOD + 1
                    self.received = 0
                    self._expected_prior = self._received_prior = 0
                else:
                    self._bad_seq = (seq + 1) % _SEQ_MOD
                    return
            # else: a duplicate or reordered packet; counted, max unchanged
        self.received += 1
        if not timed:
            return
        if self._previous is not None:
            # D(i-1, i): difference of the relative transit times, timestamp units;
            # the RTP timestamp difference is taken modulo 2^32 (it wraps).
            last_arrival, last_timestamp = self._previous
            ts_delta = (rtp_timestamp - last_timestamp + (1 << 31)) % (1 << 32) - (1 << 31)
            d = abs((arrival - last_arrival) * self.clock_rate - ts_delta)
            self._jitter += (d - self._jitter) / 16.0
        self._previous = (arrival, rtp_timestamp)

    def sender_report(self, ntp: int, arrival: float) -> None:
        """Note an SR from the source: its NTP timestamp and when it arrived (monotonic s)."""
        self._lsr = (ntp >> 16) & 0xFFFFFFFF
        self._lsr_at = arrival

    def report_block(self, now: float) -> bytes:
        """The 24-byte report block about this source (RFC 3550 s.6.4.1), as of ``now``.

        Also starts the next "since the last report" interval for the fraction lost.

        Args:
            now: Seconds of the monotonic clock ``update`` was given.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-(1 << 23), min((1 << 23) - 1, self.lost)) & 0xFFFFFF
        dlsr = 0
        if self._lsr_at is not None:
            dlsr = int((now - self._lsr_at) * 65536) & 0xFFFFFFFF
        return struct.pack(
            "!IIIIII",
            self.ssrc,
            (fraction << 24) | lost,
            self.extended_max_seq & 0xFFFFFFFF,
            int(self._jitter) & 0xFFFFFFFF,
            self._lsr,
            dlsr,
        )


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    """Common header; ``body_len`` bytes follow it (a multiple of 4)."""
    return struct.pack("!BBH", 0x80 | count, packet_type, (4 + body_len) // 4 - 1)


def compound(
    ssrc: int,
    cname: str,
    sender: SenderInfo | None,
    blocks: list[bytes],
    bye: bool = False,
) -> bytes:
    """A compound RTCP packet: SR (``sender`` given) or RR, SDES CNAME, then BYE if leaving.

    Args:
        ssrc: Our SSRC.
        cname: Our canonical name (SDES CNAME, at most 255 bytes of UTF-8).
        sender: Our sender info when we sent RTP since the last report, else None.
        blocks: Report blocks (:meth:`ReceptionStats.report_block`), at most 31.
        bye: Append a BYE for ``ssrc`` (leaving the session, RFC 3550 s.6.6).

    Returns:
        The datagram.

    Raises:
        ValueError: More than 31 report blocks, or a CNAME over 255 bytes.
    """
    if len(blocks) > 31:
        raise ValueError(f"{len(blocks)} report blocks do not fit one report (31 at most)")
    name = cname.encode("utf-8")
    if len(name) > 255:
        raise ValueError("CNAME longer than 255 bytes")
    reports = b"".join(blocks)
    if sender is not None:
        body = struct.pack(
            "!IQIII",
            ssrc,
            sender.ntp,
            sender.rtp_timestamp & 0xFFFFFFFF,
            sender.packets & 0xFFFFFFFF,
            sender.octets & 0xFFFFFFFF,
        )
        first = _header(len(blocks), RTCP_SR, len(body) + len(reports)) + body + reports
    else:
        body = struct.pack("!I", ssrc)
        first = _header(len(blocks), RTCP_RR, len(body) + len(reports)) + body + reports
    # SDES: one chunk, CNAME item, END, padded with zeros to a 32-bit boundary.
    chunk = struct.pack("!IBB", ssrc, _SDES_CNAME, len(name)) + name + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = _header(1, RTCP_SDES, len(chunk)) + chunk
    out = first + sdes
    if bye:
        out += _header(1, RTCP_BYE, 4) + struct.pack("!I", ssrc)
    return out


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Read the packets of a compound RTCP datagram (RFC 3550 s.6.1, s.6.4).

    SR: sender info and report blocks; RR: report blocks; other types: the
    header and first SSRC only. Work is linear in the datagram's size, at
    most :data:`MAX_COMPOUND_PACKETS` packets and 31 blocks each.

    Args:
        data: The datagram.

    Returns:
        Its packets, in order.

    Raises:
        ValueError: Not RTCP version 2, a length that runs past the datagram,
            report blocks that do not fit their packet, or more than
            :data:`MAX_COMPOUND_PACKETS` packets.
    """
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(packets) >= MAX_COMPOUND_PACKETS:
            raise ValueError(f"RTCP compound has more than {MAX_COMPOUND_PACKETS} packets")
        if len(data) - offset < 4:
            raise ValueError(f"RTCP packet cut short at byte {offset}")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise ValueError(f"RTCP version {first >> 6} at byte {offset}, expected 2")
        size = 4 * (words + 1)
        if offset + size > len(data):
            raise ValueError(f"RTCP packet at byte {offset} claims {size} bytes")
        if size >= 8:
            (ssrc,) = struct.unpack_from("!I", data, offset + 4)
        elif packet_type in (RTCP_SR, RTCP_RR):
            raise ValueError(f"RTCP SR/RR at byte {offset} has no SSRC")
        else:  # an SDES or BYE with a count of 0: valid, 4 bytes (RFC 3550 s.6.5, s.6.6)
            ssrc = 0
        ntp = None
        sender = None
        reports: tuple[ReportBlock, ...] = ()
        if packet_type in (RTCP_SR, RTCP_RR):
            count = first & 0x1F
            start = offset + 8
            if packet_type == RTCP_SR and size >= 28:
                ntp, rtp_ts, sent, octets = struct.unpack_from("!QIII", data, offset + 8)
                sender = SenderInfo(ntp, rtp_ts, sent, octets)
                start = offset + 28
            if count:
                truncated = packet_type == RTCP_SR and sender is None
                if truncated or start + 24 * count > offset + size:
                    name = "SR" if packet_type == RTCP_SR else "RR"
                    raise ValueError(
                        f"RTCP {name} at byte {offset} claims {count} report blocks in {size} bytes"
                    )
                reports = tuple(ReportBlock.parse(data, start + 24 * i) for i in range(count))
        packets.append(RtcpPacket(packet_type, ssrc, ntp, sender, reports))
        offset += size
    return packets
