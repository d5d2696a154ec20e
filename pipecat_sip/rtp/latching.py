"""Symmetric RTP latching: which source a call accepts RTP from, and sends to.

Sans-IO: :class:`Latching` is told about each valid RTP packet whose source
differs from the current one and answers whether to accept it; it never
reads a clock or a socket.

Policy: the session sends to the address in the peer's SDP until the first
valid RTP packet arrives, then latches to that packet's source (symmetric
RTP, for peers behind NAT) and drops packets from every other source,
counting them in :attr:`Latching.rejected`.
"""

from typing import Any

__all__ = ["Latching"]

Address = Any  # (host, port) or an IPv6 (host, port, flowinfo, scope_id)


class Latching:
    """The latching decision of one RTP session.

    Args:
        sdp_address: The peer's RTP address from its SDP, ``(host, port)``.

    Attributes:
        source: The latched source address, or None before the first packet.
        rejected: Packets refused because they came from another source.

    Example:
        >>> latch = Latching(("192.0.2.7", 4000))
        >>> latch.offer(("203.0.113.5", 31000), ssrc=1, seq=7, now=0.0)
        True
        >>> latch.offer(("198.51.100.66", 5000), ssrc=2, seq=9, now=0.1)
        False
    """

    __slots__ = ("sdp_address", "source", "rejected")

    def __init__(self, sdp_address: tuple[str, int]):
        self.sdp_address = tuple(sdp_address[:2])
        self.source: Address | None = None
        self.rejected = 0

    def offer(self, addr: Address, ssrc: int, seq: int, now: float) -> bool:
        """A valid RTP packet from ``addr``, which is not :attr:`source`.

        Args:
            addr: The packet's source address.
            ssrc: Its SSRC.
            seq: Its sequence number.
            now: Arrival time, seconds (monotonic).

        Returns:
            True to accept the packet (:attr:`source` is then ``addr``),
            False to drop it.
        """
        if self.source is None:
            self.source = addr
            return True
        self.rejected += 1
        return False

    def reset(self, sdp_address: tuple[str, int]) -> None:
        """A new SDP address (re-INVITE): latch again on the next packets."""
        self.sdp_address = tuple(sdp_address[:2])
        self.source = None
