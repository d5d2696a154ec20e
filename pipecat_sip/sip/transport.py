"""The SIP transport layer's rules, sans-IO (RFC 3261 s.18, RFC 3581).

A :class:`Flow` names where a message came from or goes to: the transport
(UDP, TCP, TLS), the remote address and, for the connection-oriented ones,
the connection it travels on (RFC 5626 s.3 calls such a path a flow). The
user agent receives every message with its flow and queues every message it
sends with one; the asyncio endpoints (``pipecat_sip.endpoint``) own the
sockets and connections behind the flows.

The rules that do not need a socket live here: which transports are
reliable (their transactions arm no retransmission timers, RFC 3261
s.17.1.1.2), stamping ``received``/``rport`` into the top Via of a received
request (s.18.2.1, RFC 3581 s.4), and where a response goes (s.18.2.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.headers import Via
from pipecat_sip.sip.message import SIPRequest

__all__ = [
    "DEFAULT_PORTS",
    "LARGE_REQUEST_BYTES",
    "TRANSPORTS",
    "Flow",
    "response_flow",
    "stamp_via",
    "via_alias",
]

Addr = tuple[str, int]

TRANSPORTS = ("UDP", "TCP", "TLS")
"""The transports, as written in Via (RFC 3261 s.20.42)."""

_RELIABLE = frozenset({"TCP", "TLS"})
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
"""Default port per transport (RFC 3261 s.19.1.2)."""
_DEFAULT_PORT = DEFAULT_PORTS

LARGE_REQUEST_BYTES = 1300
"""RFC 3261 s.18.1.1: a request larger than this, with the path MTU unknown, goes over TCP."""


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a SIP message came from or goes to.

    Attributes:
        transport: ``"UDP"``, ``"TCP"`` or ``"TLS"``.
        remote: The peer's ``(ip, port)``.
        connection: For TCP and TLS, the id of the connection a message came
            in on (a response goes back on it, RFC 3261 s.18.2.2); None asks
            the endpoint for any connection to ``remote`` (a new one if none is
            open). Always None for UDP.
        server_name: For TLS, the host name the peer's certificate is checked
            against and sent as SNI (RFC 5922 s.7.2: the SIP URI's host);
            None checks the IP address, or a name the endpoint verified
            earlier for that address. Not part of the flow's identity.
    """

    transport: str
    remote: Addr
    connection: int | None = None
    server_name: str | None = field(default=None, compare=False)

    @classmethod
    def udp(cls, remote: Addr) -> Flow:
        """A UDP flow to or from ``remote``."""
        return cls("UDP", (remote[0], remote[1]))

    @property
    def reliable(self) -> bool:
        """Whether the transport retransmits for us (TCP, TLS): no Timer A, E or G."""
        return self.transport in _RELIABLE

    @property
    def host(self) -> str:
        """The remote IP address."""
        return self.remote[0]

    @property
    def destination(self) -> tuple[str, Addr]:
        """``(transport, remote)``: the flow without its connection, as a lookup key."""
        return (self.transport, self.remote)

    def same_destination(self, other: Flow) -> bool:
        """Whether ``other`` goes over the same transport to the same address."""
        return self.transport == other.transport and self.remote == other.remote

    def __str__(self) -> str:
        host, port = self.remote
        shown = f"[{host}]" if ":" in host else host
        return f"{self.transport.lower()}:{shown}:{port}"


def stamp_via(request: SIPRequest, flow: Flow) -> None:
    """Add ``received`` and ``rport`` to the top Via of a received request.

    RFC 3261 s.18.2.1: ``received`` when the sent-by host differs from the
    source address; RFC 3581 s.4: with ``rport`` asked for, ``received`` is
    added even when equal and ``rport`` gets the source port.

    Raises:
        SIPParseError: The top Via is malformed.
    """
    values = request.headers.get_list("Via")
    top = Via.parse(values[0])
    host = top.host[1:-1] if top.host.startswith("[") else top.host
    changed = False
    if host != flow.remote[0] or top.has_param("rport"):
        top.params["received"] = flow.remote[0]
        changed = True
    if top.has_param("rport") and not top.get_param("rport"):
        top.params = {
            k: (str(flow.remote[1]) if k.lower() == "rport" else v) for k, v in top.params.items()
        }
        changed = True
    if changed:
        request.headers.set("Via", ", ".join([str(top), *values[1:]]))


def response_flow(request: SIPRequest, flow: Flow) -> Flow:
    """Where responses to ``request``, received on ``flow``, go (RFC 3261 s.18.2.2, RFC 3581).

    Over TCP and TLS: back on the connection the request came in on. Over
    UDP: to the source address, at the source port when ``rport`` was asked
    for, else at the Via's sent-by port (5060 when it has none).

    Raises:
        SIPParseError: The top Via is malformed.
    """
    if flow.reliable:
        return flow
    via = request.top_via
    if via.has_param("rport"):
        return flow
    return Flow(flow.transport, (flow.remote[0], via.port or _DEFAULT_PORT[flow.transport]))


# The top Via of a message head: "Via:" or compact "v:" at the start of a line.
_VIA_LINE_RE = re.compile(rb"^(?:via|v)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_MAX_VIA_SCAN = 8192


def via_alias(data: bytes, flow: Flow) -> Addr | None:
    """The address a received request's connection may be reused for (RFC 5923 s.5), or None.

    A request whose top Via carries the ``alias`` parameter asks that
    requests to its sent-by address go back over the connection it came on.
    To keep one peer from claiming another's address, the alias is taken only
    when the sent-by host is the connection's own source IP (RFC 5923 s.9:
    "the alias ... MUST be honoured only if ... the source of the
    connection"), so only the port may differ.

    Args:
        data: One framed message (only its head is read).
        flow: The connection-oriented flow it came on.

    Returns:
        ``(source ip, sent-by port)``, or None (no alias, a response, UDP,
        another host, or an unreadable Via).
    """
    if not flow.reliable or data[:4] == b"SIP/":
        return None
    head = data[:_MAX_VIA_SCAN]
    if b"alias" not in head.lower():
        return None
    match = _VIA_LINE_RE.search(head)
    if match is None:
        return None
    value = match.group(1).decode("utf-8", "replace").split(",", 1)[0]
    try:
        via = Via.parse(value.strip())
    except SIPParseError:
        return None
    if not via.has_param("alias") or via.port is None:
        return None
    host = via.host[1:-1] if via.host.startswith("[") else via.host
    if host.lower() != flow.remote[0].lower():
        return None
    return (flow.remote[0], via.port)
