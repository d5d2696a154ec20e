"""The SIP user agent core, sans-IO (RFC 3261 s.8, s.12-15).

`UserAgent` takes each received message with the `Flow` it came on
(`receive(data, flow, now)`; `receive_datagram(data, addr, now)` for UDP)
and the clock with `handle_timer(now)`; it queues messages to send with
their flows (`datagrams_to_send()`) and events for the application
(`next_event()`), and says when it next needs the clock (`get_timer()`,
covering the transaction timers and its own: 2xx retransmission, the ACK
wait, registration refreshes and retries). The application answers calls
with `ringing`, `answer`, `reject`, places them with `invite`, answers
re-offers with `answer_reoffer`, and ends calls with `hangup`.

The core routes; the usages behave: `InviteUsage` (sip/invite.py) owns
calls, `RegistrationClient` (sip/registration.py) owns registrations, and
the transport rules of RFC 3261 s.18 are in sip/transport.py. What the core
does on its own, as a telephony engineer expects: 100 Trying at once for
INVITE; 200 to OPTIONS with Allow/Accept/Supported; 481 for requests in
unknown dialogs; 200 + 487 for CANCEL; 420 for unsupported Require;
405/501 for methods it does not handle; 400 (or a reported drop) for
malformed messages, including a CSeq of 2**31 or more (RFC 3261
s.8.1.1.5). It never raises for bad input and never logs: what is worth a
log line becomes a `Notice` event.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from pipecat_sip.sip.auth import AuthDecision, Credentials, DigestServer
from pipecat_sip.sip.dialog import MAX_CSEQ
from pipecat_sip.sip.errors import LocalProtocolError, SIPParseError
from pipecat_sip.sip.events import (
    CallAnswered,
    CallEnded,
    CallEstablished,
    CallProgress,
    CallUpdated,
    Event,
    IncomingCall,
    InfoReceived,
    Notice,
    Registered,
    RegistrationFailed,
    ReofferReceived,
)
from pipecat_sip.sip.headers import Via
from pipecat_sip.sip.ids import Identifiers
from pipecat_sip.sip.invite import SUPPORTED, CallState, InviteSession, InviteUsage
from pipecat_sip.sip.locate import TargetList
from pipecat_sip.sip.message import (
    Headers,
    SIPRequest,
    SIPResponse,
    is_keepalive,
    make_response,
    parse_message,
)
from pipecat_sip.sip.nat import Mapping, PublicAddress
from pipecat_sip.sip.refer import ReferUsage, Replaces
from pipecat_sip.sip.registrar import Registrar
from pipecat_sip.sip.registration import DEFAULT_RETRY_S, RegistrationClient
from pipecat_sip.sip.session_timer import SessionTimerPolicy
from pipecat_sip.sip.timers import TimerQueue
from pipecat_sip.sip.transaction import (
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    TimerValues,
    Transaction,
    TransactionLayer,
    server_key,
)
from pipecat_sip.sip.transport import (
    LARGE_REQUEST_BYTES,
    TRANSPORTS,
    Flow,
    response_flow,
    stamp_via,
)
from pipecat_sip.sip.uri import SIPURI, Address

__all__ = [
    "ALLOWED_METHODS",
    "CallAnswered",
    "CallEnded",
    "CallEstablished",
    "CallProgress",
    "CallState",
    "CallUpdated",
    "Event",
    "IncomingCall",
    "InfoReceived",
    "Notice",
    "Registered",
    "RegistrationFailed",
    "ReofferReceived",
    "UserAgent",
]

Addr = tuple[str, int]

ALLOWED_METHODS = (
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "PRACK", "UPDATE", "REFER", "NOTIFY",
)  # fmt: skip
# Methods we know but do not handle (405 with Allow); anything else gets 501.
KNOWN_METHODS = frozenset(
    ALLOWED_METHODS
    + ("REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "UPDATE")
)
SUPPORTED_OPTIONS: tuple[str, ...] = SUPPORTED
# Requests outside a dialog that are challenged when an authenticator is set.
AUTH_METHODS = frozenset({"INVITE", "REGISTER"})
# Request-URI schemes we answer (sip and sips always); others get 416.
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SDP = "application/sdp"


class TransactionOwner(Protocol):
    """A usage that sends requests through the core and hears of their transactions."""

    def on_response(self, txn: Transaction, response: SIPResponse, now: float) -> None:
        """A response to one of its requests."""

    def on_transaction_timeout(self, txn: Transaction, now: float) -> None:
        """One of its transactions got no final response."""

    def on_transaction_terminated(self, txn: Transaction, now: float) -> None:
        """One of its transactions ended."""


class UserAgent:
    """A SIP user agent, sans-IO.

    Args:
        host: Our address as written in Via and Contact (the public address).
        port: Our SIP port as written in Via and Contact.
        user: User part of our Contact URI.
        server_name: Value of the Server/User-Agent headers, or None for none.
        timer_values: T1, T2, T4 (RFC 3261 s.17.1.1.1).
        max_message_size: Largest message accepted, bytes, or None for no
            limit; a larger request is answered 413 when its headers can be
            read, anything else is dropped.
        max_headers: Most header lines accepted, or None for no limit; a
            request with more is answered 400, anything else dropped.
        rng: Random source of branches, tags, Call-IDs and CSeq numbers
            (a ``random.Random``; default the OS's). Seed it for a
            reproducible run.
        trust_in_dialog_from: ``"peer"`` (default): in-dialog requests are
            accepted only from the dialog's peer (the INVITE's source, the
            remote target's host or the first route's host; others get 403);
            ``"any"`` for deployments behind a proxy or load balancer that
            does not Record-Route.
        registration_retry_s: Seconds between attempts after a failed
            registration.
        transport_ports: Our port per transport (``{"TCP": 5060}``), for Via
            and Contact of messages on that transport; ``port`` for UDP and
            any transport not listed.
        authenticator: Challenge new INVITEs and REGISTERs with Digest
            (RFC 3261 s.22.4); None accepts them unauthenticated.
        auth_exempt: ``exempt(flow) -> bool``: sources whose requests are not
            challenged (a trunk's addresses); None exempts none.
        session_timers: Session-timer policy (RFC 4028): what we ask for and
            grant; default enabled, 1800 s, Min-SE 90 s.
        registrar: Accept REGISTER from softphones and keep their bindings
            (authenticated when ``authenticator`` is set); None answers 405.
        reliable_provisionals: Send 18x reliably (RFC 3262) to callers that
            support 100rel (to callers that require it, always).
        other_host: Our address in the other IP family, for a dual-stack
            server: messages to IPv4 peers carry the IPv4 address in Via and
            Contact, messages to IPv6 peers the IPv6 one.
        large_requests_over_tcp: Send requests over
            :data:`~pipecat_sip.sip.transport.LARGE_REQUEST_BYTES` (1300)
            meant for UDP over TCP instead, when ``transport_ports`` has TCP
            (RFC 3261 s.18.1.1: the path MTU is unknown); UDP again if the
            connection fails.

    Attributes:
        refused_oversized: Messages refused for their size or header count.
        refused_bad_cseq: Requests answered 400 for a CSeq of 2**31 or more.

    Raises:
        ValueError: Bad host or port, or a bad ``trust_in_dialog_from``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        user: str = "pipecat",
        server_name: str | None = "pipecat-sip",
        timer_values: TimerValues | None = None,
        max_message_size: int | None = None,
        max_headers: int | None = None,
        rng: random.Random | None = None,
        trust_in_dialog_from: str = "peer",
        registration_retry_s: float = DEFAULT_RETRY_S,
        transport_ports: dict[str, int] | None = None,
        authenticator: DigestServer | None = None,
        auth_exempt: Callable[[Flow], bool] | None = None,
        session_timers: SessionTimerPolicy | None = None,
        reliable_provisionals: bool = False,
        other_host: str | None = None,
        registrar: Registrar | None = None,
        large_requests_over_tcp: bool = True,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"invalid SIP port {port}")
        self.max_message_size = max_message_size
        self.max_headers = max_headers
        self.refused_oversized = 0
        self.refused_bad_cseq = 0
        self.host = host
        self.port = port
        self.user = user
        self.server_name = server_name
        self.transport_ports = {"UDP": port, **(transport_ports or {})}
        self.large_requests_over_tcp = large_requests_over_tcp
        self.authenticator = authenticator
        self.auth_exempt = auth_exempt
        self.session_timers = session_timers or SessionTimerPolicy()
        self.registrar = registrar
        self.refers: ReferUsage | None = ReferUsage(self)
        self.refused_unauthenticated = 0
        self.ids = Identifiers(rng)
        self.timers = TimerQueue()
        self.layer = TransactionLayer(self, timer_values)
        self.invites = InviteUsage(
            self,
            trust_in_dialog_from=trust_in_dialog_from,
            reliable_provisionals=reliable_provisionals,
        )
        self.registrations = RegistrationClient(self, retry_s=registration_retry_s)
        self._events: deque[Event] = deque()
        self._owners: dict[Transaction, TransactionOwner] = {}
        self.via_host = _bracketed(host)
        """Our host as written in Via, Contact and From (IPv6 in brackets)."""
        self._hosts = {":" in host: self.via_host}
        if other_host is not None:
            self._hosts.setdefault(":" in other_host, _bracketed(other_host))
        self.public = PublicAddress()
        """Our public address per transport, from received/rport of responses (RFC 3581)."""
        self.contact = self.contact_for(Flow.udp((host, port)))
        """Our Contact for UDP."""
        self.unavailable_retry_after: int | None = None
        """While set (seconds), OPTIONS outside a dialog get 503 Service Unavailable
        with this Retry-After instead of 200 (RFC 3261 s.11.2, s.21.5.4): a
        draining server tells load balancers' probes to send no new calls. None
        (default): available."""

    # --- I/O side -------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Flow]]:
        """Take the messages queued for sending, each with the flow it goes on."""
        out = self.layer.outbox
        self.layer.outbox = []
        return out

    def next_event(self) -> Event | None:
        """Take the next event for the application, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called (same clock as `now`), or None."""
        ours = self.timers.deadline()
        theirs = self.layer.get_timer()
        if ours is None:
            return theirs
        return ours if theirs is None else min(ours, theirs)

    def handle_timer(self, now: float) -> None:
        """Run the transaction timers and our own timers due at `now`."""
        self.layer.handle_timer(now)
        self.timers.run_due(now)

    @property
    def active_calls(self) -> int:
        """Calls not yet over."""
        return len(self.invites.sessions)

    @property
    def tracked(self) -> int:
        """Entries in the lookup tables (calls, dialogs, transaction owners): 0 when idle."""
        refers = self.refers.tracked if self.refers is not None else 0
        return self.invites.tracked + self.registrations.tracked + len(self._owners) + refers

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Process one UDP datagram from ``addr`` (see :meth:`receive`)."""
        self.receive(data, Flow.udp(addr), now)

    def receive(self, data: bytes, flow: Flow, now: float) -> None:
        """Process one received message. Never raises for bad input.

        Args:
            data: One datagram, or one framed message of a stream.
            flow: Where it came from.
            now: The current time, seconds (monotonic).
        """
        if is_keepalive(data):
            return
        if self._over_limits(data, flow, now):
            return
        try:
            msg = parse_message(data)
        except SIPParseError as exc:
            self._reject_malformed(exc, flow, now)
            return
        try:
            if isinstance(msg, SIPRequest):
                self._on_request(msg, flow, now)
            else:
                self._on_response(msg, now)
        except SIPParseError as exc:  # a header read lazily turned out bad
            exc.partial = exc.partial or msg
            self._reject_malformed(exc, flow, now)
        except Exception as exc:
            self.notice("error", f"error handling {msg!r} from {flow}", kind="internal", error=exc)
            try:
                if isinstance(msg, SIPRequest) and msg.method != "ACK":
                    if not self._fail_transaction(msg, 500, None, now):
                        self.layer.send(bytes(make_response(msg, 500)), flow)
            except Exception as again:
                self.notice(
                    "error", f"could not answer 500 to {msg!r}", kind="internal", error=again
                )

    # --- calls (InviteUsage) ---------------------------------------------------
    def ringing(
        self,
        call_id: str,
        now: float,
        *,
        status_code: int = 180,
        sdp: bytes = b"",
        reliable: bool | None = None,
    ) -> None:
        """Send 180 Ringing (or another 1xx: 183 with ``sdp`` for early media).

        Reliably (RFC 3262) when the INVITE requires 100rel, or supports it
        and ``reliable`` (None: the ``reliable_provisionals`` setting) says so.

        Raises:
            LocalProtocolError: Unknown call, not ringing any more, or not a 1xx.
        """
        self.invites.ringing(call_id, now, status_code=status_code, sdp=sdp, reliable=reliable)

    def update(self, call_id: str, now: float, *, sdp: bytes | None = None) -> None:
        """Send UPDATE (RFC 3311), with an offer or (a session refresh) without.

        Raises:
            LocalProtocolError: No dialog, or an offer exchange in progress.
        """
        self.invites.update(call_id, now, sdp=sdp)

    def reinvite(self, call_id: str, now: float, *, sdp: bytes | None = None) -> None:
        """Send a re-INVITE with ``sdp`` (default our current description).

        Raises:
            LocalProtocolError: Not confirmed, or an offer exchange in progress.
        """
        self.invites.reinvite(call_id, now, sdp=sdp)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send 200 OK with our SDP; it is retransmitted until the ACK (RFC 3261 s.13.3.1.4).

        Raises:
            LocalProtocolError: Unknown call, or not in a state to be answered.
        """
        self.invites.answer(call_id, sdp, now)

    def reject(
        self,
        call_id: str,
        status_code: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        retransmit: bool = True,
    ) -> None:
        """Answer an incoming call with a final error status (3xx-6xx).

        ``retransmit=False`` sends it once (refusals under overload).

        Raises:
            LocalProtocolError: Unknown call, already answered, or status < 300.
        """
        self.invites.reject(
            call_id, status_code, now, reason=reason, headers=headers, retransmit=retransmit
        )

    def answer_reoffer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer a :class:`ReofferReceived` with 200 and our SDP answer (RFC 3264 s.8).

        Raises:
            LocalProtocolError: No re-offer waits for an answer in that call.
        """
        self.invites.answer_reoffer(call_id, sdp, now)

    def reject_reoffer(
        self, call_id: str, status_code: int, now: float, *, reason: str | None = None
    ) -> None:
        """Refuse a :class:`ReofferReceived` (488: the session stays as it was).

        Raises:
            LocalProtocolError: No re-offer waits, or status < 300.
        """
        self.invites.reject_reoffer(call_id, status_code, now, reason=reason)

    def update_local_sdp(self, call_id: str, sdp: bytes) -> None:
        """Set the session description used to answer later re-INVITEs without an offer."""
        self.invites.update_local_sdp(call_id, sdp)

    def call_state(self, call_id: str) -> CallState | None:
        """The signalling state of a live call, or None when the call is over."""
        session = self.invites.session(call_id)
        return session.state if session is not None else None

    def session(self, call_id: str) -> InviteSession | None:
        """The signalling state object of a live call (read it, change it through the UA)."""
        return self.invites.session(call_id)

    def invite(
        self,
        target: str | SIPURI,
        sdp: bytes,
        now: float,
        *,
        destination: Addr | Flow | None = None,
        from_user: str | None = None,
        from_host: str | None = None,
        display_name: str | None = None,
        to: str | SIPURI | Address | None = None,
        headers: Iterable[tuple[str, object]] = (),
        credentials: Credentials | None = None,
        targets: TargetList | None = None,
    ) -> str:
        """Place a call: send an INVITE with our SDP offer.

        Args:
            target: The Request-URI (`sip:bot@127.0.0.1:6060`).
            sdp: Our offer.
            now: The current time, seconds.
            destination: Where to send it, an ``(ip, port)`` (over the URI's
                transport, UDP by default) or a `Flow`; by default the first
                of ``targets``, else the URI's host and port, which must then
                be an IP address.
            from_user: User part of our From URI (defaults to our user).
            from_host: Host part of our From URI (defaults to our address).
            display_name: Display name in From.
            to: The To address (default: the Request-URI without parameters);
                differs for a call to a registered user's Contact.
            headers: Further headers (X- headers, P-Asserted-Identity, ...).
            credentials: Answer 401/407 challenges to the INVITE and to
                requests inside its dialog with these (RFC 3261 s.22.2).
            targets: RFC 3263 destinations: the INVITE goes to the first and
                to the next one after a timeout (Timer B) or a 503 that came
                before any provisional response (new branch, same Call-ID and
                From tag, CSeq + 1).

        Returns:
            The new call's Call-ID.

        Raises:
            LocalProtocolError: No destination and the URI's host is not an
                IP address, or ``targets`` is empty.
            SIPParseError: `target` or `to` is not a SIP URI.
        """
        uri = target if isinstance(target, SIPURI) else SIPURI.parse(target)
        if destination is None and targets is not None:
            first = targets.current
            if first is None:
                raise LocalProtocolError("no destination left to send the INVITE to")
            destination = Flow(first.transport.upper(), (first.ip, first.port))
        flow = _flow_for(uri, destination)
        to_address = Address.parse(to) if isinstance(to, str) else to
        return self.invites.invite(
            uri,
            sdp,
            now,
            flow=flow,
            from_user=from_user,
            from_host=from_host,
            display_name=display_name,
            to=to_address,
            headers=headers,
            credentials=credentials,
            targets=targets,
        )

    def hangup(self, call_id: str, now: float) -> None:
        """End a call from our side, whatever its state; idempotent (see InviteUsage.hangup)."""
        self.invites.hangup(call_id, now)

    # --- transfer (ReferUsage) ----------------------------------------------------
    def refer(
        self,
        call_id: str,
        target: str,
        now: float,
        *,
        replaces: Replaces | None = None,
        referred_by: bool = True,
    ) -> str:
        """Transfer a confirmed call's far end to ``target`` (REFER, RFC 3515).

        Progress arrives as :class:`TransferProgress` events with the
        returned id. With ``replaces`` (our dialog with the target), an
        attended transfer (RFC 3891).

        Raises:
            LocalProtocolError: Not a confirmed call, or too many transfers under way.
            SIPParseError: ``target`` is not a SIP or tel URI.
        """
        assert self.refers is not None
        return self.refers.refer(call_id, target, now, replaces=replaces, referred_by=referred_by)

    def accept_refer(self, call_id: str, transfer_id: str, now: float) -> None:
        """Accept a :class:`ReferReceived` (202 and NOTIFY 100 Trying).

        Raises:
            LocalProtocolError: No such REFER waiting.
        """
        assert self.refers is not None
        self.refers.accept(call_id, transfer_id, now)

    def reject_refer(
        self, call_id: str, transfer_id: str, now: float, *, status_code: int = 603
    ) -> None:
        """Refuse a :class:`ReferReceived` (603 Declined by default).

        Raises:
            LocalProtocolError: No such REFER waiting.
        """
        assert self.refers is not None
        self.refers.reject(call_id, transfer_id, status_code, now)

    def notify_refer(
        self, call_id: str, transfer_id: str, status_code: int, reason: str, now: float
    ) -> None:
        """Report the transferred call's status to the transferor (NOTIFY, sipfrag).

        Raises:
            LocalProtocolError: No live subscription for that REFER.
        """
        assert self.refers is not None
        self.refers.notify(call_id, transfer_id, status_code, reason, now)

    def send_info(self, call_id: str, content_type: str, body: bytes, now: float) -> None:
        """Send INFO inside a call's dialog (RFC 6086; DTMF as application/dtmf-relay).

        Raises:
            LocalProtocolError: No such call with a dialog.
        """
        session = self.invites.session(call_id)
        if session is None or session.current_dialog is None or session.state.ended:
            raise LocalProtocolError(f"no call {call_id} to send INFO in")
        self.invites.send_in_dialog(session, "INFO", now, body=body, content_type=content_type)

    # --- registration (RegistrationClient) ---------------------------------------
    def register(
        self,
        registrar: str | SIPURI,
        destination: Addr | Flow,
        now: float,
        *,
        expires: int = 3600,
        user: str | None = None,
        username: str | None = None,
        password: str | None = None,
        targets: Iterable[Flow] = (),
    ) -> str:
        """Keep our Contact bound at a registrar (RFC 3261 s.10.2).

        The outcome arrives as :class:`Registered` or
        :class:`RegistrationFailed` events; the binding is refreshed at half
        the granted time and retried after failures until :meth:`unregister`.

        Args:
            registrar: The registrar's URI (Request-URI of the REGISTER).
            destination: Its address ``(ip, port)`` or flow.
            now: The current time, seconds.
            expires: Seconds the binding should last.
            user: The address-of-record's user part (To/From), default ours.
            username: Digest user name, default ``user``.
            password: Digest password; None answers no challenge.
            targets: Further destinations to fail over to on 408, 503 or a
                transport error, in order (RFC 3263 s.4.3).

        Returns:
            The registration id.

        Raises:
            SIPParseError: ``registrar`` is not a SIP URI.
        """
        uri = registrar if isinstance(registrar, SIPURI) else SIPURI.parse(registrar)
        flow = destination if isinstance(destination, Flow) else _flow_for(uri, destination)
        return self.registrations.register(
            uri,
            flow,
            now,
            expires=expires,
            user=user or self.user,
            username=username,
            password=password,
            targets=targets,
        )

    def unregister(self, registration_id: str, now: float) -> None:
        """Remove the binding (REGISTER with Expires: 0); unknown ids do nothing."""
        self.registrations.unregister(registration_id, now)

    # --- services for the usages -------------------------------------------------
    def emit(self, event: Event) -> None:
        """Queue an event for the application."""
        self._events.append(event)

    def notice(
        self,
        level: str,
        message: str,
        call_id: str | None = None,
        kind: str = "",
        error: BaseException | None = None,
    ) -> None:
        """Queue a :class:`Notice` (something the I/O layer may log)."""
        self._events.append(Notice(level, message, call_id, kind, error))

    def send_request(
        self, request: SIPRequest, flow: Flow, now: float, owner: TransactionOwner
    ) -> ClientTransaction:
        """Start a client transaction for ``request``; ``owner`` hears of its responses.

        A request for UDP larger than :data:`LARGE_REQUEST_BYTES` goes over
        TCP when we listen on TCP (RFC 3261 s.18.1.1), its top Via changed to
        match; if that connection cannot be opened it is sent over UDP after
        all (same section). A CANCEL follows its INVITE's transport instead.
        """
        fallback = None
        if (
            flow.transport == "UDP"
            and self.large_requests_over_tcp
            and "TCP" in self.transport_ports
            and request.method != "CANCEL"
            and len(bytes(request)) > LARGE_REQUEST_BYTES
        ):
            fallback = (flow, self._move_to_tcp(request))
            flow = Flow("TCP", flow.remote)
        txn = self.layer.start_client(request, flow, now)
        if fallback is not None:
            txn.udp_fallback = fallback
        self._owners[txn] = owner
        return txn

    def _move_to_tcp(self, request: SIPRequest) -> str:
        """Rewrite the top Via of ``request`` for TCP (our TCP port, RFC 5923 alias).

        Returns:
            The top Via it had.
        """
        vias = request.headers.get_list("Via")
        top = Via.parse(vias[0])
        top.transport = "TCP"
        top.port = self.port_for("TCP")
        top.params["alias"] = None
        request.headers.set("Via", ", ".join([str(top), *vias[1:]]))
        return vias[0]

    def port_for(self, transport: str) -> int:
        """Our port on ``transport``."""
        return self.transport_ports.get(transport, self.port)

    def host_for(self, flow: Flow) -> str:
        """Our host for messages on ``flow``: the address of its IP family (IPv6 bracketed)."""
        return self._hosts.get(":" in flow.remote[0], self.via_host)

    def new_via(self, flow: Flow) -> Via:
        """A Via for a new request on ``flow``, with a fresh branch and rport (RFC 3581).

        On TCP and TLS it also carries ``alias`` (RFC 5923): the peer may send
        its requests for our sent-by address back over this connection.
        """
        params: dict[str, str | None] = {"branch": self.ids.branch(), "rport": None}
        if flow.reliable:
            params["alias"] = None
        return Via(flow.transport, self.host_for(flow), self.port_for(flow.transport), params)

    def contact_for(self, flow: Flow, *, secure: bool = False) -> Address:
        """Our Contact for messages on ``flow``.

        UDP: ``sip:user@host:port``; TCP and TLS: ``;transport=tcp``/``tls``
        at our port for it. ``secure`` (the request or dialog is SIPS):
        ``sips:user@host:tls_port``, as RFC 3261 s.8.1.1.8 and s.12.1.1 ask.
        Behind NAT, the address the peer saw (RFC 3581) replaces ours.
        """
        params: dict[str, str | None] = {}
        scheme = "sip"
        transport = flow.transport
        if secure:
            scheme, transport = "sips", "TLS"
        elif transport != "UDP":
            params["transport"] = transport.lower()
        port = self.port_for(transport)
        host = self.host_for(flow)
        mapping = self.public.for_transport(transport)
        if mapping is not None and mapping.port is not None:  # behind NAT (RFC 3581)
            host = f"[{mapping.host}]" if ":" in mapping.host else mapping.host
            port = mapping.port
        return Address(SIPURI(host, user=self.user, port=port, params=params, scheme=scheme))

    def ua_headers(self) -> Headers:
        """User-Agent, for requests inside a dialog."""
        h = Headers()
        if self.server_name:
            h.add("User-Agent", self.server_name)
        return h

    def allowed_methods(self) -> tuple[str, ...]:
        """The methods we accept (Allow): REGISTER too when we are a registrar."""
        if getattr(self, "registrar", None) is not None:
            return ALLOWED_METHODS + ("REGISTER",)
        return ALLOWED_METHODS

    def add_common_headers(self, h: Headers) -> None:
        """Allow and User-Agent, for requests that start something (INVITE, REGISTER)."""
        h.add("Allow", ", ".join(self.allowed_methods()))
        if self.server_name:
            h.add("User-Agent", self.server_name)

    def server_header(self) -> list[tuple[str, object]]:
        """The Server header for our responses (none when ``server_name`` is None)."""
        return [("Server", self.server_name)] if self.server_name else []

    def capabilities(self) -> list[tuple[str, object]]:
        """What we answer OPTIONS with (RFC 3261 s.11.2)."""
        return [
            ("Allow", ", ".join(self.allowed_methods())),
            ("Accept", SDP),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
        ]

    def answer_headers(self, req: SIPRequest, flow: Flow | None = None) -> list[tuple[str, object]]:
        """Record-Route (copied), Contact, Allow and Supported for 18x/2xx to ``req``."""
        headers: list[tuple[str, object]] = [
            ("Record-Route", v) for v in req.headers.get_all("Record-Route")
        ]
        secure = isinstance(req.uri, SIPURI) and req.uri.scheme == "sips"
        if flow is None:
            transport = req.top_via.transport.upper()
            flow = Flow(transport, ("", 0)) if transport in TRANSPORTS else None
        contact = self.contact_for(flow, secure=secure) if flow is not None else self.contact
        headers.append(("Contact", contact))
        headers.append(("Allow", ", ".join(self.allowed_methods())))
        headers.append(("Supported", ", ".join(SUPPORTED_OPTIONS)))
        return headers

    def respond(
        self,
        txn: ServerTransaction,
        code: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        to_tag: str | None = None,
    ) -> None:
        """Answer ``txn`` with ``code``, the Server header and a To tag where one is missing."""
        extra = list(headers) + self.server_header()
        if code > 100 and not txn.request.to.tag:
            to_tag = to_tag or self.ids.tag()
        else:
            to_tag = None
        self.layer.respond(
            txn, make_response(txn.request, code, reason, to_tag=to_tag, headers=extra), now
        )

    def refuse_method(self, txn: ServerTransaction, now: float) -> None:
        """405 with Allow for a method we know but do not handle, 501 for others."""
        if txn.request.method in KNOWN_METHODS:
            self.respond(txn, 405, now, headers=[("Allow", ", ".join(self.allowed_methods()))])
        else:
            self.respond(txn, 501, now)

    # --- TransactionUser ----------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: SIPResponse, now: float) -> None:
        """A response: to its transaction's owner."""
        owner = self._owners.get(txn)
        learned = self.public.observe(response, (self.host, self.port_for(txn.flow.transport)))
        if learned is not None:
            self._public_address_changed(learned, now)
        if owner is not None:
            owner.on_response(txn, response, now)
        if learned is not None:
            self.registrations.rebind(learned.transport, now)

    def _public_address_changed(self, mapping: Mapping, now: float) -> None:
        """A server saw us elsewhere than we think (NAT): Contact carries what it saw."""
        if mapping.transport == "UDP":
            self.contact = self.contact_for(Flow.udp((self.host, self.port)))
        self.notice(
            "info",
            f"public address on {mapping.transport} is {mapping.host}:{mapping.port} "
            "(received/rport of a response): used in Contact",
            kind="nat",
        )

    def on_transaction_timeout(self, txn: Transaction, now: float) -> None:
        """Timer B/F (ours), or Timer H for a non-2xx final response (theirs)."""
        owner = self._owners.get(txn)
        if owner is not None:
            owner.on_transaction_timeout(txn, now)

    def on_transaction_terminated(self, txn: Transaction, now: float) -> None:
        """Forget a finished transaction's owner."""
        owner = self._owners.pop(txn, None)
        if owner is not None:
            owner.on_transaction_terminated(txn, now)
        else:
            self.invites.on_transaction_terminated(txn, now)

    # --- request handling -----------------------------------------------------------
    def _on_request(self, req: SIPRequest, flow: Flow, now: float) -> None:
        stamp_via(req, flow)
        txn = self.layer.find_server(req)
        if txn is not None:
            self.layer.receive_request(txn, req, now)
            if req.method == "ACK":
                self.invites.on_ack(req, now)
            return
        if req.method == "ACK":
            self.invites.on_ack(req, now)
            return
        reply = response_flow(req, flow)
        if req.method == "CANCEL":
            self._on_cancel(req, reply, now)
            return
        txn = self.layer.create_server(req, reply)
        if req.cseq.seq > MAX_CSEQ:  # RFC 3261 s.8.1.1.5: less than 2**31
            self.refused_bad_cseq += 1
            self.respond(txn, 400, now, reason="Bad Request (CSeq out of range)")
            return
        if not isinstance(req.uri, SIPURI) and req.uri.scheme not in URI_SCHEMES:
            self.respond(txn, 416, now)  # RFC 3261 s.8.2.2.1
            return
        unsupported = [t for t in req.option_tags("Require") if t not in SUPPORTED_OPTIONS]
        if unsupported:
            self.respond(txn, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if req.to.tag:
            self.invites.on_in_dialog(req, txn, flow, now)
            return
        user = None
        if req.method == "REGISTER" and self.registrar is None:
            self.refuse_method(txn, now)
            return
        if req.method in AUTH_METHODS and self.authenticator is not None:
            if self.auth_exempt is None or not self.auth_exempt(flow):
                decision = self.authenticator.check(req, flow.host, now)
                if not decision.ok:
                    self._refuse_unauthenticated(txn, decision, flow, now)
                    return
                user = decision.username
        if req.method == "INVITE":
            assert isinstance(txn, ServerInviteTransaction)
            self.invites.on_invite(req, txn, flow, now, user=user)
        elif req.method == "OPTIONS" and self.unavailable_retry_after is not None:
            self.respond(txn, 503, now, headers=[("Retry-After", self.unavailable_retry_after)])
        elif req.method == "OPTIONS":
            self.respond(txn, 200, now, headers=self.capabilities())
        elif req.method == "REGISTER":
            self._on_register(req, txn, flow, now, user)
        elif req.method == "BYE":
            self.respond(txn, 481, now)
        else:
            self.refuse_method(txn, now)

    def _on_register(
        self, req: SIPRequest, txn: ServerTransaction, flow: Flow, now: float, user: str | None
    ) -> None:
        """A softphone's REGISTER (RFC 3261 s.10.3): the registrar's answer."""
        assert self.registrar is not None
        answer = self.registrar.register(req, flow, now, user=user)
        self.respond(txn, answer.status_code, now, reason=answer.reason, headers=answer.headers)
        if answer.status_code == 200 and answer.changed:
            contacts = len(answer.headers)
            self.notice(
                "info",
                f"registrar: {answer.aor} from {flow}: {contacts} binding(s)",
                kind="registrar",
            )
        elif answer.status_code >= 300:
            self.notice(
                "info",
                f"registrar: REGISTER from {flow}: {answer.status_code} {answer.reason or ''}",
                kind="registrar_refused",
            )

    def _refuse_unauthenticated(
        self, txn: ServerTransaction, decision: AuthDecision, flow: Flow, now: float
    ) -> None:
        """401/407 with a challenge, or 403 for a source refused for its failures."""
        self.refused_unauthenticated += 1
        method = txn.request.method
        if decision.status_code == 403:
            self.notice(
                "warning",
                f"{method} from {flow.host} refused: {decision.reason}",
                kind="auth_refused",
            )
            self.respond(txn, 403, now, reason="Forbidden (too many failed authentications)")
            return
        if decision.failure:
            self.notice(
                "warning",
                f"{method} from {flow} failed authentication: {decision.reason}",
                kind="auth_failed",
            )
        self.respond(txn, decision.status_code, now, headers=decision.headers)

    def _on_cancel(self, req: SIPRequest, reply: Flow, now: float) -> None:
        cancel_txn = self.layer.create_server(req, reply)
        key = server_key(req)
        invite_txn = self.layer.server.get((*key[:-1], "INVITE"))
        if not isinstance(invite_txn, ServerInviteTransaction):
            self.respond(cancel_txn, 481, now)
            return
        self.respond(cancel_txn, 200, now)
        self.invites.on_cancel(invite_txn, now)

    def _on_response(self, resp: SIPResponse, now: float) -> None:
        if not self.layer.receive_response(resp, now):
            self.invites.stray_2xx(resp)

    # --- bad input ---------------------------------------------------------------------
    def refuse(self, head: bytes, status: int, reason: str, flow: Flow, now: float) -> None:
        """Answer a message the transport layer refused, from its head alone.

        For streams (RFC 3261 s.18.3): a message over the size limit (413,
        its body skipped) or one that cannot be framed (400, then the
        connection closes). Answered when the head has what a response needs,
        otherwise reported as a dropped message. Never raises.

        Args:
            head: The message's start line and headers.
            status: The status to answer with (413, 400).
            reason: Why, for the reason phrase and the notice.
            flow: Where it came from.
            now: The current time, seconds.
        """
        if status == 413:
            self.refused_oversized += 1
        try:
            partial = parse_message(head + b"\r\n\r\n")
        except SIPParseError as exc:
            partial = exc.partial
        self._reject_malformed(SIPParseError(reason, status, partial), flow, now)

    def _over_limits(self, data: bytes, flow: Flow, now: float) -> bool:
        """Refuse a message over the size or header-count limit (answered when readable).

        The size is checked first, from the length alone; only the head (start
        line and headers) of a refused message is parsed, to answer 413 (too
        large) or 400 (too many headers).
        """
        too_large = self.max_message_size is not None and len(data) > self.max_message_size
        data = data.lstrip(b"\r\n")  # as the parser does (RFC 3261 s.7.5)
        limit = self.max_message_size or len(data)
        end = data.find(b"\r\n\r\n", 0, limit)
        if end < 0:
            end = data.find(b"\n\n", 0, limit)
        head = data[:limit] if end < 0 else data[:end]
        if too_large:
            status, why = 413, f"larger than {self.max_message_size} bytes"
        elif self.max_headers is not None and head.count(b"\n") > self.max_headers:
            status, why = 400, f"more than {self.max_headers} headers"
        else:
            return False
        self.refused_oversized += 1
        try:
            partial = parse_message(head + b"\r\n\r\n")
        except SIPParseError as exc:
            partial = exc.partial
        self._reject_malformed(SIPParseError(why, status, partial), flow, now)
        return True

    def _reject_malformed(self, exc: SIPParseError, flow: Flow, now: float) -> None:
        try:
            partial = exc.partial
            readable = isinstance(partial, SIPRequest) and all(
                partial.headers.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq")
            )
            if not readable or partial.method == "ACK":  # type: ignore[union-attr]
                self.notice(
                    "warning", f"dropped unreadable message from {flow}: {exc}", kind="unreadable"
                )
                return
            assert isinstance(partial, SIPRequest)
            detail = str(exc).replace("\r", " ").replace("\n", " ")[:120]
            reason = f"{make_response(partial, exc.status_code).reason} ({detail})"
            self.notice(
                "info",
                f"{exc.status_code} to malformed request from {flow}: {exc}",
                kind="malformed",
            )
            # Found bad after its transaction was made: answer through it, so that
            # retransmissions get the same answer and the transaction ends.
            if self._fail_transaction(partial, exc.status_code, reason, now):
                return
            response = make_response(partial, exc.status_code, reason, headers=self.server_header())
            try:
                reply = response_flow(partial, flow)
            except SIPParseError:
                reply = flow  # an unreadable Via: answer where it came from
            self.layer.send(bytes(response), reply)
        except Exception as error:  # never raise for bad input
            self.notice(
                "error",
                f"could not answer malformed message from {flow}",
                kind="internal",
                error=error,
            )

    def _fail_transaction(self, req: SIPRequest, code: int, reason: str | None, now: float) -> bool:
        """Answer `req` with an error through the server transaction created for it.

        Returns:
            False when no transaction was created for this very request, or it
            has already sent a final response.
        """
        try:
            txn = self.layer.find_server(req)
        except SIPParseError:
            return False
        if txn is None or txn.request is not req or txn.state not in ("trying", "proceeding"):
            return False
        if not self.invites.fail_request(txn, code, reason, now):
            self.respond(txn, code, now, reason=reason)
        return True


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _flow_for(uri: SIPURI, destination: Addr | Flow | None) -> Flow:
    """The flow a request to ``uri`` goes on: the destination given, else the URI's IP and port.

    Raises:
        LocalProtocolError: No destination and the URI's host is not an IP address.
    """
    if isinstance(destination, Flow):
        return destination
    transport = "TLS" if uri.scheme == "sips" else (uri.get_param("transport") or "UDP").upper()
    if transport not in ("UDP", "TCP", "TLS"):
        transport = "UDP"
    if destination is not None:
        return Flow(transport, (destination[0], destination[1]))
    host, port = uri.host_port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(f"{host} is not an IP address; give a destination") from None
    return Flow(transport, (host, port))
