"""Per-stream RTP sender state (RFC 3550 sections 5.1 and 8; RFC 3551 section 4.1).

:class:`RtpSender` owns one outgoing stream's SSRC, sequence number and
timestamp. It is pure: the caller says how many samples each packet covers
and when time passes without a packet (:meth:`RtpSender.advance`), so the
timestamp keeps pace with real time across silence and gaps.
"""

import random
import secrets

from pipecat_sip.rtp.packet import RTP_HEADER

__all__ = ["RtpSender"]

_pack_header = RTP_HEADER.pack


class RtpSender:
    """Sequence number, timestamp and SSRC of one outgoing RTP stream.

    The SSRC and the initial sequence number and timestamp are random
    (RFC 3550 section 5.1). Sequence numbers wrap modulo 2**16, timestamps
    modulo 2**32.

    Talkspurts (RFC 3551 section 4.1): the first packet of the stream, and
    the first packet after :meth:`advance` (time passing with nothing sent),
    carries the marker bit when it uses the stream's own payload type.
    Packets with another payload type (telephone-event) neither take nor
    clear that pending marker.

    Args:
        payload_type: Payload type of the stream's media packets (0-127).
        clock_rate: RTP clock in Hz (8000 for G.711); informational.
        ssrc: Fixed SSRC, or None for a random one.
        rng: Source of the random values (a ``random.Random``-like object);
            defaults to ``secrets.SystemRandom()``.

    Example:
        >>> sender = RtpSender(0, 8000, ssrc=1, rng=random.Random(0))
        >>> first = sender.packet(bytes(160), 160)
        >>> first[1] & 0x80  # marker: first packet of a talkspurt
        128
    """

    __slots__ = (
        "payload_type",
        "clock_rate",
        "ssrc",
        "sequence_number",
        "timestamp",
        "packets_sent",
        "octets_sent",
        "_talkspurt_pending",
    )

    def __init__(
        self,
        payload_type: int,
        clock_rate: int,
        ssrc: int | None = None,
        rng: random.Random | None = None,
    ):
        if not 0 <= payload_type <= 127:
            raise ValueError(f"RTP payload type {payload_type} is out of range 0-127")
        rng = rng or secrets.SystemRandom()
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ssrc: int = rng.getrandbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence_number: int = rng.getrandbits(16)
        """Sequence number of the next packet."""
        self.timestamp: int = rng.getrandbits(32)
        """RTP timestamp of the next packet (the stream's current time)."""
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as RTCP SR counts them
        self._talkspurt_pending = True

    def packet(
        self,
        payload: bytes,
        samples: int,
        *,
        marker: bool = False,
        payload_type: int | None = None,
        timestamp: int | None = None,
    ) -> bytes:
        """Build the next packet and move the stream on.

        Args:
            payload: Payload bytes.
            samples: RTP clock ticks the packet covers: the timestamp advances
                by this much after it.
            marker: Set the marker bit (it is also set automatically at the
                start of a talkspurt, see the class docs).
            payload_type: Another payload type for this one packet (e.g.
                telephone-event); None for the stream's own.
            timestamp: Timestamp to put in the header instead of the current
                one (RFC 4733 events keep their start timestamp); the stream's
                own timestamp still advances by ``samples``.

        Returns:
            The serialized packet (12-byte header + payload).
        """
        if payload_type is None:
            payload_type = self.payload_type
            if self._talkspurt_pending:
                marker = True
                self._talkspurt_pending = False
        header = _pack_header(
            0x80,
            payload_type | 0x80 if marker else payload_type,
            self.sequence_number,
            self.timestamp if timestamp is None else timestamp,
            self.ssrc,
        )
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload

    def advance(self, samples: int) -> None:
        """Let ``samples`` RTP clock ticks pass without sending (silence suppressed).

        The next media packet starts a new talkspurt and carries the marker bit.
        """
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._talkspurt_pending = True

    def start_talkspurt(self) -> None:
        """Mark the next media packet as the first of a talkspurt."""
        self._talkspurt_pending = True
