"""RTCP (RFC 3550 section 6): sender/receiver reports, SDES CNAME, BYE; reception statistics.

Pure functions and one small state object, no I/O:

- :class:`ReceptionStats` keeps what a report block says about one source:
  sequence numbers with wrap-around, loss and interarrival jitter
  (RFC 3550 appendix A.1, A.3, A.8), and the last SR heard from it (LSR/DLSR).
- :func:`compound` builds a compound packet: SR (or RR when we sent nothing
  since the last report), SDES with our CNAME, and BYE when leaving
  (section 6.1: every compound packet starts with a report and carries CNAME).
- :func:`parse_compound` reads the packets of a compound datagram far enough
  to find a peer's sender report.

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
    "ReceptionStats",
    "RtcpPacket",
    "SenderInfo",
    "compound",
    "ntp_timestamp",
    "parse_compound",
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


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (RFC 5905 format, as in SR) of a Unix time in seconds."""
    seconds = int(unix_time) + _NTP_EPOCH_OFFSET
    fraction = int((unix_time % 1.0) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


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
        ssrc: The first SSRC of the packet (the sender's for SR/RR).
        ntp: For an SR, its 64-bit NTP timestamp; else None.
    """

    packet_type: int
    ssrc: int
    ntp: int | None = None


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

    def update(self, seq: int, rtp_timestamp: int, arrival: float) -> None:
        """Count one received RTP packet (RFC 3550 A.1 and A.8).

        Args:
            seq: Its sequence number.
            rtp_timestamp: Its RTP timestamp.
            arrival: When it arrived, seconds of a monotonic clock.
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
    """Read the packets of a compound RTCP datagram.

    Args:
        data: The datagram.

    Returns:
        Its packets, in order.

    Raises:
        ValueError: Not RTCP version 2, or a length that runs past the datagram.
    """
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8:
            raise ValueError(f"RTCP packet cut short at byte {offset}")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise ValueError(f"RTCP version {first >> 6} at byte {offset}, expected 2")
        size = 4 * (words + 1)
        if offset + size > len(data):
            raise ValueError(f"RTCP packet at byte {offset} claims {size} bytes")
        (ssrc,) = struct.unpack_from("!I", data, offset + 4)
        ntp = None
        if packet_type == RTCP_SR and size >= 28:
            (ntp,) = struct.unpack_from("!Q", data, offset + 8)
        packets.append(RtcpPacket(packet_type, ssrc, ntp))
        offset += size
    return packets
