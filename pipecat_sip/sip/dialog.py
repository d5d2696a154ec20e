"""SIP dialogs (RFC 3261 s.12): identifiers, CSeq spaces, route set, remote target."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pipecat_sip.sip.errors import LocalProtocolError, RemoteProtocolError
from pipecat_sip.sip.headers import CSeq, Via
from pipecat_sip.sip.message import Headers, SIPRequest, SIPResponse
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.uri import SIPURI, URI, Address

DialogId = tuple[str, str, str]

#: CSeq numbers of requests we originate stay below 2**31 (RFC 3261 s.8.1.1.5).
MAX_CSEQ = 2**31 - 1


@dataclass
class Dialog:
    """One dialog's state (RFC 3261 s.12.1).

    Attributes:
        call_id: The Call-ID.
        local_tag: Our tag (To tag as UAS, From tag as UAC).
        remote_tag: The peer's tag.
        local_address: Our From/To address in requests we send (no tag).
        remote_address: The peer's address (no tag).
        remote_target: Where in-dialog requests go (the peer's Contact URI).
        route_set: Route header values for in-dialog requests, in order.
        local_seq: Last CSeq number we used, or None before our first request.
        remote_seq: Last CSeq number received from the peer, or None.
        source: The flow the dialog-creating message came on (the next hop
            when the remote target cannot be used as is: a host name, which
            this sans-IO layer does not resolve).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_address: Address
    remote_address: Address
    remote_target: URI
    route_set: list[Address] = field(default_factory=list)
    local_seq: int | None = None
    remote_seq: int | None = None
    source: Flow | None = None

    @property
    def id(self) -> DialogId:
        """(Call-ID, local tag, remote tag)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uas(cls, request: SIPRequest, local_tag: str, source: Flow) -> Dialog:
        """The dialog a UAS creates by answering `request` (RFC 3261 s.12.1.1).

        Raises:
            RemoteProtocolError: The request has no Contact to use as remote
                target (answer 400).
        """
        contacts = request.contacts
        if not contacts:
            raise RemoteProtocolError("request has no Contact", 400)
        from_ = request.from_
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag or "",
            local_address=_untagged(request.to),
            remote_address=_untagged(from_),
            remote_target=contacts[0].uri,
            route_set=request.record_route,
            remote_seq=request.cseq.seq,
            source=source,
        )

    @classmethod
    def from_uac(cls, request: SIPRequest, response: SIPResponse, source: Flow) -> Dialog:
        """The dialog a UAC creates from a 2xx (or tagged 1xx) response (RFC 3261 s.12.1.2).

        Raises:
            RemoteProtocolError: The response has no Contact.
        """
        contacts = response.contacts
        if not contacts:
            raise RemoteProtocolError("response has no Contact", 400)
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_address=_untagged(request.from_),
            remote_address=_untagged(response.to),
            remote_target=contacts[0].uri,
            route_set=list(reversed(response.record_route)),
            local_seq=request.cseq.seq,
            source=source,
        )

    def next_hop(self) -> Flow:
        """Where to send in-dialog requests: the first route, or the remote target.

        An IP-literal URI is used as is, with its ``transport`` parameter
        (``sips:`` means TLS) or else the transport the dialog was created
        over; the connection the dialog came on is reused when the hop is
        its source. A host name (which this sans-IO layer does not resolve)
        falls back to the dialog's source.

        Raises:
            LocalProtocolError: No usable hop and no source to fall back to.
        """
        uri = self.route_set[0].uri if self.route_set else self.remote_target
        source = self.source
        if isinstance(uri, SIPURI):
            host, port = uri.host_port
            try:
                ipaddress.ip_address(host)
            except ValueError:
                pass
            else:
                transport = _uri_transport(uri) or (source.transport if source else "UDP")
                if source is not None and source.remote == (host, port):
                    if transport == source.transport:
                        return source
                return Flow(transport, (host, port))
        if source is None:
            raise LocalProtocolError(f"no address to send to for {uri}")
        return source

    def create_request(
        self,
        method: str,
        via: Via,
        *,
        contact: Address | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        cseq: int | None = None,
        first_cseq: int = 1,
    ) -> SIPRequest:
        """A request inside this dialog (RFC 3261 s.12.2.1.1).

        Args:
            method: The method (BYE, INVITE, ACK, ...).
            via: Our Via for it, with a fresh branch.
            contact: Contact header for target-refresh requests.
            headers: Further headers.
            body: The body.
            cseq: CSeq number to use (ACK and CANCEL reuse the INVITE's);
                None takes the next one of our CSeq space.
            first_cseq: The number to start our CSeq space at when we have
                sent nothing yet in this dialog (a UAS's first BYE).

        Returns:
            The request.
        """
        if cseq is None:
            self.local_seq = first_cseq if self.local_seq is None else self.local_seq + 1
            cseq = self.local_seq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _is_loose(routes[0]):  # strict router (RFC 3261 s.12.2.1.1)
            uri = routes[0].uri
            routes = routes[1:] + [Address(self.remote_target)]
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        h.add("From", self.local_address.with_tag(self.local_tag))
        h.add("To", self.remote_address.with_tag(self.remote_tag))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", CSeq(cseq, method))
        for route in routes:
            h.add("Route", route)
        if contact is not None:
            h.add("Contact", contact)
        if headers is not None:
            for name, value in headers:
                h.add(name, value)
        return SIPRequest(method, uri, h, body)

    def accept_remote_cseq(self, request: SIPRequest) -> bool:
        """Check and record the CSeq of an in-dialog request (RFC 3261 s.12.2.2).

        Returns:
            False when the number is lower than the last one (answer 500).
        """
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True


def _untagged(address: Address) -> Address:
    params = {k: v for k, v in address.params.items() if k.lower() != "tag"}
    return Address(address.uri, address.display_name, params)


def _is_loose(route: Address) -> bool:
    return isinstance(route.uri, SIPURI) and route.uri.has_param("lr")


def _uri_transport(uri: SIPURI) -> str | None:
    """The transport a URI asks for: its transport parameter, TLS for sips:, else None."""
    if uri.scheme == "sips":
        return "TLS"
    value = uri.get_param("transport")
    if value and value.upper() in ("UDP", "TCP", "TLS"):
        return value.upper()
    return None
