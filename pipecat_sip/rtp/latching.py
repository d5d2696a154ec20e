"""Symmetric RTP latching: which source a call accepts RTP from, and sends to.

Sans-IO: :class:`Latching` is told about each valid RTP packet whose source
differs from the current one and answers whether to accept it; it never
reads a clock or a socket (``now`` and the time the current source was last
heard are passed in).

The policy, against RTP hijacking before or after the peer speaks ("RTP
bleed"; compare Asterisk's ``strictrtp`` and CVE-2017-14099):

1. Packets from the address in the peer's SDP (IP *and* port) always win:
   the first one latches the session to it at once, whatever it was latched
   to before.
2. Latching to a different source (a peer behind NAT, whose SDP names an
   address it cannot receive on) happens only while nothing has come from
   the SDP address. Once it has, every other source is refused until the
   SDP address changes (:meth:`Latching.reset`, a re-INVITE).
3. The other source must come from a plausible host: with policy
   ``"signaling"`` (the default) the IP of the SDP ``c=`` line or the IP the
   call's SIP signalling came from; with ``"any"`` any IP; with ``"off"``
   none (only the SDP address is ever accepted).
4. It must first send :data:`PROBATION_PACKETS` packets in a row with one
   SSRC and consecutive sequence numbers (these are dropped); up to
   :data:`MAX_CANDIDATES` sources are on probation at once.
5. Once latched to such a source, another one is considered only after the
   latched source has been silent for :data:`RELATCH_SILENCE_S` (a NAT
   binding that changed its port), under the same rules 2-4.

Refused packets are counted in :attr:`Latching.rejected`, packets dropped on
probation in :attr:`Latching.on_probation`.
"""

import ipaddress
from typing import Any

__all__ = [
    "LATCHING_POLICIES",
    "MAX_CANDIDATES",
    "PROBATION_PACKETS",
    "RELATCH_SILENCE_S",
    "Latching",
]

Address = Any  # (host, port) or an IPv6 (host, port, flowinfo, scope_id)

PROBATION_PACKETS = 3
"""Packets in a row (one SSRC, consecutive sequence numbers) before a new source latches."""

RELATCH_SILENCE_S = 1.0
"""Seconds the latched source must be silent before another may take its place."""

MAX_CANDIDATES = 4
"""Sources on probation at once (the oldest is forgotten first)."""

LATCHING_POLICIES = ("signaling", "any", "off")
"""``"signaling"``: other sources only from the SDP or SIP signalling IP;
``"any"``: from any IP; ``"off"``: only the SDP address itself."""


def _normal_host(host: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); other text as is."""
    if ":" not in host:
        return host  # IPv4 (a socket's text is canonical) or a name: no parsing per packet
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class Latching:
    """The latching decision of one RTP session (see the module docs for the policy).

    Args:
        sdp_address: The peer's RTP address from its SDP, ``(host, port)``.
        policy: One of :data:`LATCHING_POLICIES`.
        signaling_host: The IP the call's SIP signalling came from (or went
            to), or None.

    Raises:
        ValueError: Unknown policy.

    Attributes:
        source: The latched source address, or None before the first accepted packet.
        sdp_heard: True once a packet came from the SDP address.
        rejected: Packets refused (not a plausible source, or too late to latch).
        on_probation: Packets of a new source dropped while it was on probation.

    Example:
        >>> latch = Latching(("192.0.2.7", 4000), signaling_host="203.0.113.5")
        >>> [latch.offer(("203.0.113.5", 31000), 1, seq, 0.0, 0.0) for seq in (7, 8, 9)]
        [False, False, True]
        >>> latch.offer(("198.51.100.66", 5000), 2, 1, 0.1, 0.0)
        False
    """

    __slots__ = (
        "policy",
        "sdp_address",
        "source",
        "sdp_heard",
        "rejected",
        "on_probation",
        "_sdp_host",
        "_sdp_port",
        "_hosts",
        "_signaling_host",
        "_candidates",
    )

    def __init__(
        self,
        sdp_address: tuple[str, int],
        *,
        policy: str = "signaling",
        signaling_host: str | None = None,
    ):
        if policy not in LATCHING_POLICIES:
            choices = ", ".join(LATCHING_POLICIES)
            raise ValueError(f"latching must be one of {choices}, not {policy!r}")
        self.policy = policy
        self._signaling_host = _normal_host(signaling_host) if signaling_host else None
        self.rejected = 0
        self.on_probation = 0
        self.reset(sdp_address)

    def reset(self, sdp_address: tuple[str, int]) -> None:
        """A new SDP address (re-INVITE): latch again on the next packets."""
        self.sdp_address = (sdp_address[0], sdp_address[1])
        self._sdp_host = _normal_host(sdp_address[0])
        self._sdp_port = sdp_address[1]
        hosts = {self._sdp_host}
        if self._signaling_host:
            hosts.add(self._signaling_host)
        self._hosts = frozenset(hosts)
        self.source: Address | None = None
        self.sdp_heard = False
        self._candidates: dict[Address, list[int]] = {}  # addr -> [ssrc, last seq, count]

    def is_sdp(self, addr: Address) -> bool:
        """Whether ``addr`` is the SDP address (IP and port)."""
        return addr[1] == self._sdp_port and _normal_host(addr[0]) == self._sdp_host

    def rtcp_allowed(self, host: str) -> bool:
        """Whether RTCP from ``host`` may be read (RFC 3550 s.6: from the RTP peer only).

        The host of the latched source once latched; before that the SDP
        host, and the signalling host (policy "signaling") or any host
        (policy "any").
        """
        source = self.source
        if source is not None:
            return host == source[0]
        if self.policy == "any":
            return True
        host = _normal_host(host)
        return host == self._sdp_host or (self.policy == "signaling" and host in self._hosts)

    def offer(self, addr: Address, ssrc: int, seq: int, now: float, source_heard: float) -> bool:
        """A valid RTP packet from ``addr``, which is not :attr:`source`.

        Args:
            addr: The packet's source address.
            ssrc: Its SSRC.
            seq: Its sequence number.
            now: Arrival time, seconds (monotonic).
            source_heard: When the latched source last sent an accepted packet, s.

        Returns:
            True to accept the packet (:attr:`source` is then ``addr``),
            False to drop it.
        """
        if self.is_sdp(addr):  # rule 1: the SDP address always wins
            self.source = addr
            self.sdp_heard = True
            self._candidates.clear()
            return True
        if (
            self.policy == "off"
            or self.sdp_heard  # rule 2
            or (self.source is not None and now - source_heard < RELATCH_SILENCE_S)  # rule 5
            or (self.policy == "signaling" and _normal_host(addr[0]) not in self._hosts)  # rule 3
        ):
            self.rejected += 1
            return False
        candidates = self._candidates  # rule 4: probation
        candidate = candidates.get(addr)
        if candidate is not None and candidate[0] == ssrc and seq == (candidate[1] + 1) & 0xFFFF:
            candidate[1] = seq
            candidate[2] += 1
            if candidate[2] >= PROBATION_PACKETS:
                self.source = addr
                candidates.clear()
                return True
        else:
            if candidate is None and len(candidates) >= MAX_CANDIDATES:
                del candidates[next(iter(candidates))]
            candidates[addr] = [ssrc, seq, 1]
        self.on_probation += 1
        return False
