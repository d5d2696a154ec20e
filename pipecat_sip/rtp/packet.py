"""RTP packets (RFC 3550 section 5.1) and 16/32-bit wrap-around arithmetic.

Sans-IO: bytes in, :class:`RtpPacket` out, and back.

RFC 3550 section 5.1, the fixed header::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

followed by the header extension when X is set (section 5.3.1: 16-bit
profile-defined value, 16-bit length in 32-bit words, then the words), the
payload, and padding when P is set (its last octet counts the padding octets,
itself included).
"""

import struct
from dataclasses import dataclass

__all__ = [
    "RTP_HEADER",
    "RTP_HEADER_SIZE",
    "RtpHeaderExtension",
    "RtpPacket",
    "RtpParseError",
    "is_rtcp",
    "seq_add",
    "seq_diff",
    "seq_gt",
    "ts_add",
    "ts_diff",
]

RTP_HEADER_SIZE = 12
"""Size of the fixed RTP header in bytes."""

RTP_HEADER = struct.Struct("!BBHII")
"""The fixed header: first octet (V, P, X, CC), second (M, PT), sequence
number, timestamp, SSRC. The one definition of it, shared by the sender."""
_EXT_HEADER = struct.Struct("!HH")


class RtpParseError(ValueError):
    """The bytes are not a well-formed RTP packet (the text says why)."""


@dataclass(frozen=True, slots=True)
class RtpHeaderExtension:
    """An RTP header extension (RFC 3550 section 5.3.1).

    Attributes:
        profile: The 16-bit profile-defined value (0xBEDE for RFC 8285
            one-byte headers).
        data: The extension words, a multiple of 4 bytes.
    """

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet.

    Attributes:
        payload_type: 7-bit payload type (0-127).
        sequence_number: 16-bit sequence number.
        timestamp: 32-bit RTP timestamp, in units of the payload's clock rate.
        ssrc: 32-bit synchronization source.
        payload: Payload bytes (padding removed).
        marker: The M bit (start of a talkspurt for audio, RFC 3551 section 4.1).
        csrc: Contributing sources, at most 15.
        extension: The header extension, if the X bit is set.
        padding: Number of padding octets after the payload, the count octet
            included (0: no padding, P bit clear).
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpHeaderExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> "RtpPacket":
        """Parse one RTP packet.

        Args:
            data: One UDP datagram.

        Returns:
            The packet.

        Raises:
            RtpParseError: Too short for its header, CSRC list or extension,
                version other than 2, or invalid padding.
        """
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpParseError(f"RTP packet length is less than {RTP_HEADER_SIZE} bytes")
        first, second, sequence_number, timestamp, ssrc = RTP_HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise RtpParseError(f"RTP packet has invalid version {first >> 6}")
        offset = RTP_HEADER_SIZE
        csrc: tuple[int, ...] = ()
        cc = first & 0x0F
        if cc:
            offset += 4 * cc
            if offset > size:
                raise RtpParseError("RTP packet has truncated CSRC")
            csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)
        extension = None
        if first & 0x10:
            if offset + 4 > size:
                raise RtpParseError("RTP packet has truncated extension profile / length")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > size:
                raise RtpParseError("RTP packet has truncated extension value")
            extension = RtpHeaderExtension(profile, bytes(data[offset:end]))
            offset = end
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > size:
                raise RtpParseError(f"RTP packet has invalid padding length {padding}")
            size -= padding
        return cls(
            second & 0x7F,
            sequence_number,
            timestamp,
            ssrc,
            bytes(data[offset:size]),
            bool(second & 0x80),
            csrc,
            extension,
            padding,
        )

    def serialize(self) -> bytes:
        """Return the packet as bytes, padding octets zero but the last.

        Raises:
            ValueError: A field is out of range, more than 15 CSRCs, or an
                extension that is not whole 32-bit words.
        """
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type {self.payload_type} is out of range 0-127")
        if len(self.csrc) > 15:
            raise ValueError(f"RTP packet cannot carry {len(self.csrc)} CSRCs (at most 15)")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"RTP padding length {self.padding} is out of range 0-255")
        first = 0x80 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        try:
            parts = [
                RTP_HEADER.pack(
                    first,
                    (0x80 if self.marker else 0) | self.payload_type,
                    self.sequence_number,
                    self.timestamp,
                    self.ssrc,
                )
            ]
            if self.csrc:
                parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
            if self.extension is not None:
                data = self.extension.data
                if len(data) % 4:
                    raise ValueError(
                        f"RTP header extension is {len(data)} bytes, not whole 32-bit words"
                    )
                parts.append(_EXT_HEADER.pack(self.extension.profile, len(data) // 4))
                parts.append(data)
        except struct.error as exc:
            raise ValueError(f"RTP header field out of range: {exc}") from None
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a shared port (RFC 5761 section 4).

    RTCP packet types 192-223 sit where an RTP packet has the marker bit set
    and payload type 64-95, which RTP must not use when multiplexed; the
    types in use (SR, RR, SDES, BYE, APP = 200-204) look like payload types
    72-76. Only the second octet is read: no parsing, no allocation.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_add(a: int, b: int) -> int:
    """Return ``a + b`` modulo 2**16 (sequence numbers)."""
    return (a + b) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Return the signed distance ``a - b`` between sequence numbers, -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_gt(a: int, b: int) -> bool:
    """Return True if sequence number ``a`` is newer than ``b`` (RFC 1982 style)."""
    return seq_diff(a, b) > 0


def ts_add(a: int, b: int) -> int:
    """Return ``a + b`` modulo 2**32 (RTP timestamps)."""
    return (a + b) & 0xFFFFFFFF


def ts_diff(a: int, b: int) -> int:
    """Return the signed distance ``a - b`` between RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000
