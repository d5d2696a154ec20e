"""Our public SIP address as the network sees it, learned from responses (RFC 3581).

Behind a NAT (a laptop, a container, a Pipecat Cloud pod) the address we
bind to is not the one a registrar or proxy sees. RFC 3261 s.18.2.1 has
the server add ``received`` to the top Via when the source address
differs from the sent-by host, and RFC 3581 s.4 has it fill in ``rport``
with the source port when the request asked for it (we always do, see
``UserAgent.new_via``). Responses to our own requests carry that Via
back, so the pair (received, rport) is the NAT's public mapping of our
SIP socket: the address to put in Contact so that requests reach us
through the binding (RFC 3581 s.1; RFC 5626 s.4.2 calls it the flow's
public address).

:func:`mapping_from_response` reads one response; :class:`PublicAddress`
keeps the mapping per transport and says when it changed. Both are pure:
no sockets, no clocks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pipecat_sip.sip.message import SIPResponse

__all__ = ["Mapping", "PublicAddress", "mapping_from_response"]


@dataclass(frozen=True)
class Mapping:
    """A public (host, port) for one transport, as a server saw our request.

    Attributes:
        transport: "UDP", "TCP", "TLS".
        host: The address the server saw (``received``), an IP literal
            without brackets.
        port: The port the server saw (``rport``), or None when the
            server did not fill it in.
    """

    transport: str
    host: str
    port: int | None


def _ip(text: str | None) -> str | None:
    if not text:
        return None
    value = text.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def mapping_from_response(response: SIPResponse) -> Mapping | None:
    """The public mapping a response's top Via reports, or None.

    Only a response to our own request is meaningful here (the top Via is
    ours, RFC 3261 s.18.1.2). ``received`` must be an IP address; a value
    that is not (a host name, garbage from a broken server) is ignored, as
    is an ``rport`` outside 1-65535. Without ``received`` the server saw
    the sent-by host itself, so the mapping is that host with ``rport``
    (a NAT that keeps the address but changes the port).

    Args:
        response: A response to a request we sent.

    Returns:
        The mapping, or None when the Via carries neither a usable
        ``received`` nor a usable ``rport``.
    """
    try:
        via = response.top_via
    except Exception:  # no or unparsable Via: nothing to learn
        return None
    received = via.get_param("received") if via.has_param("received") else None
    rport_text = via.get_param("rport")
    port: int | None = None
    if rport_text and rport_text.strip().isdigit():
        value = int(rport_text.strip())
        if 0 < value < 65536:
            port = value
    host = _ip(received)
    if host is None:
        if received is not None:  # present but not an IP address: ignore it
            return None
        if port is None:
            return None
        host = _ip(via.host)
        if host is None:
            return None
    return Mapping(via.transport, host, port)


@dataclass
class PublicAddress:
    """The latest public mapping per transport (what Contact should carry).

    Attributes:
        enabled: Learn from responses (False keeps the configured address).
        mappings: Transport to its latest mapping.
        changes: How many times a mapping was learned or changed.
    """

    enabled: bool = True
    mappings: dict[str, Mapping] = field(default_factory=dict)
    changes: int = 0

    def observe(self, response: SIPResponse, local: tuple[str, int]) -> Mapping | None:
        """Learn from one response to our request; return the mapping if it changed.

        A mapping equal to our own ``local`` address (no NAT on the path)
        is recorded but not reported as a change the first time, so a host
        with a reachable address sends nothing new.

        Args:
            response: A response to a request we sent.
            local: (host, port) we wrote in Via (host without brackets).

        Returns:
            The new mapping when it differs from what was known (or, the
            first time, from ``local``), else None.
        """
        if not self.enabled:
            return None
        mapping = mapping_from_response(response)
        if mapping is None:
            return None
        if mapping.port is None or mapping.transport in ("TCP", "TLS"):
            # Over TCP/TLS rport is the source port of our outgoing connection, not a
            # port anyone can connect to: a registrar reaches us over that connection
            # (RFC 5923 alias, RFC 5626), and our Contact keeps our listening port.
            mapping = Mapping(mapping.transport, mapping.host, local[1])
        previous = self.mappings.get(mapping.transport)
        if previous == mapping:
            return None
        self.mappings[mapping.transport] = mapping
        if previous is None and (mapping.host, mapping.port) == (_ip(local[0]), local[1]):
            return None
        self.changes += 1
        return mapping

    def for_transport(self, transport: str) -> Mapping | None:
        """The mapping learned on ``transport``, or None."""
        return self.mappings.get(transport.upper())
