"""The SIP user agent core: UAS and UAC behaviour over UDP, sans-IO (RFC 3261 s.8, s.12-15).

`UserAgent` takes datagrams with `receive_datagram(data, addr, now)` and the
clock with `handle_timer(now)`; it queues datagrams (`datagrams_to_send()`)
and events for the application (`next_event()`), and says when it next needs
the clock (`get_timer()`). The application answers calls with `ringing`,
`answer`, `reject`, places them with `invite`, and ends them with `hangup`.

What it does on its own, as a telephony engineer expects: 100 Trying at once
for INVITE; 200 to OPTIONS with Allow/Accept/Supported; 481 for requests in
unknown dialogs; 200 + 487 for CANCEL; 420 for unsupported Require; 405/501
for methods it does not handle; 400 (or a logged drop) for malformed
messages; 2xx retransmission until ACK and BYE when the ACK never comes;
re-INVITEs answered with the current session description.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from loguru import logger

from pipecat_sip.sip.auth import DigestChallenge, digest_authorization, parse_challenge
from pipecat_sip.sip.dialog import Dialog, DialogId, new_call_id, new_tag
from pipecat_sip.sip.errors import LocalProtocolError, SIPParseError
from pipecat_sip.sip.headers import CSeq, Via
from pipecat_sip.sip.message import (
    Headers,
    SIPRequest,
    SIPResponse,
    is_keepalive,
    make_response,
    parse_message,
)
from pipecat_sip.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    TimerValues,
    Transaction,
    TransactionLayer,
    new_branch,
    server_key,
)
from pipecat_sip.sip.uri import SIPURI, Address

Addr = tuple[str, int]

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO")
# Methods we know but do not handle (405 with Allow); anything else gets 501.
KNOWN_METHODS = frozenset(
    ALLOWED_METHODS
    + ("REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "UPDATE")
)
SUPPORTED_OPTIONS: tuple[str, ...] = ()
# Request-URI schemes we answer (sip and sips always); others get 416.
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SDP = "application/sdp"


# --- events -------------------------------------------------------------------


@dataclass
class IncomingCall:
    """A new INVITE arrived; 100 Trying is already sent. Answer, ring or reject it."""

    call_id: str
    request: SIPRequest
    source: Addr


@dataclass
class CallProgress:
    """A provisional response to an INVITE we sent (UAC)."""

    call_id: str
    response: SIPResponse


@dataclass
class CallAnswered:
    """Our INVITE got a 2xx; the ACK is sent and the dialog is confirmed (UAC)."""

    call_id: str
    response: SIPResponse


@dataclass
class CallEstablished:
    """The ACK for our 2xx arrived (UAS).

    Attributes:
        ack: The ACK; its body is the SDP answer when our 2xx carried the
            offer (the INVITE had none: RFC 3261 s.13.2.1, RFC 3264 s.4).
    """

    call_id: str
    ack: SIPRequest | None = None


@dataclass
class CallUpdated:
    """A re-INVITE arrived and was answered 200 (with ``answer_offer``'s answer, if set)."""

    call_id: str
    request: SIPRequest


@dataclass
class InfoReceived:
    """An INFO request inside a dialog (answered 200)."""

    call_id: str
    request: SIPRequest


@dataclass
class Registered:
    """A REGISTER was accepted (2xx); refresh it before ``expires`` seconds pass.

    Attributes:
        registration_id: What :meth:`UserAgent.register` returned.
        expires: Seconds the registrar granted (0 after an unregister).
    """

    registration_id: str
    expires: int


@dataclass
class RegistrationFailed:
    """A REGISTER failed for good (after answering any challenge).

    Attributes:
        registration_id: What :meth:`UserAgent.register` returned.
        status_code: The final status (408 when no answer came).
        reason: Why, for the log.
    """

    registration_id: str
    status_code: int
    reason: str


@dataclass
class CallEnded:
    """A call is over.

    Attributes:
        reason: "remote_bye", "local_bye", "cancelled", "rejected",
            "ack_timeout", "timeout" or "error".
        status_code: The final status when the call ended by one, else None.
    """

    call_id: str
    reason: str
    status_code: int | None = None


Event = (
    IncomingCall
    | CallProgress
    | CallAnswered
    | CallEstablished
    | CallUpdated
    | InfoReceived
    | CallEnded
    | Registered
    | RegistrationFailed
)


@dataclass(eq=False)
class _Leg:
    """Per-call signaling state (one INVITE dialog)."""

    call_id: str
    role: str  # "uas" | "uac"
    state: str  # incoming, early, answered, established, terminating, ended
    local_tag: str
    invite: SIPRequest
    invite_txn: Transaction
    source: Addr
    dialog: Dialog | None = None
    local_sdp: bytes = b""
    pending_bye: bool = False
    pending_cancel: bool = False
    cancel_sent: bool = False
    ack_bytes: bytes | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class _Registration:
    """One binding we keep at a registrar (RFC 3261 s.10)."""

    registration_id: str  # its Call-ID, kept for every refresh (s.10.2.4)
    registrar: SIPURI
    destination: Addr
    user: str
    username: str | None
    password: str | None
    expires: int
    from_tag: str
    cseq: int = 0
    challenge: DigestChallenge | None = None
    proxy_challenge: bool = False
    nonce_count: int = 0
    challenges_answered: int = 0


class UserAgent:
    """A SIP user agent over UDP, sans-IO.

    Args:
        host: Our address as written in Via and Contact (the public address).
        port: Our SIP port as written in Via and Contact.
        user: User part of our Contact URI.
        server_name: Value of the Server/User-Agent headers, or None for none.
        timer_values: T1, T2, T4 (RFC 3261 s.17.1.1.1).
        max_message_size: Largest datagram accepted, bytes, or None for no
            limit; a larger request is answered 413 when its headers can be
            read, anything else is dropped.
        max_headers: Most header lines accepted, or None for no limit; a
            request with more is answered 400, anything else dropped.
        answer_offer: Called as ``answer_offer(call_id, offer_body)`` for a
            re-INVITE that carries an SDP offer; returns the answer body for
            the 200 (RFC 3264 s.8), or raises ``ValueError`` when the offer is
            not acceptable: the re-INVITE then gets 488 and the session stays
            as it was (RFC 3261 s.14.2). None: every re-INVITE is answered with
            the current session description.

    Attributes:
        refused_oversized: Datagrams refused for their size or header count.

    Raises:
        ValueError: Bad host or port.
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
        answer_offer: Callable[[str, bytes], bytes] | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"invalid SIP port {port}")
        self.max_message_size = max_message_size
        self.max_headers = max_headers
        self.answer_offer = answer_offer
        self.refused_oversized = 0
        self.host = host
        self.port = port
        self.user = user
        self.server_name = server_name
        self.layer = TransactionLayer(self, timer_values)
        self._events: deque[Event] = deque()
        self._legs: dict[str, _Leg] = {}
        self._by_dialog: dict[DialogId, _Leg] = {}
        # Transaction -> its call, for as long as the transaction lives.
        self._by_txn: dict[Transaction, _Leg] = {}
        self._registrations: dict[str, _Registration] = {}
        self._register_txns: dict[Transaction, _Registration] = {}
        host_literal = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.contact = Address(SIPURI(host_literal, user=user, port=port))
        self._via_host = host_literal

    # --- I/O side -------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Take the datagrams queued for sending."""
        out = self.layer.outbox
        self.layer.outbox = []
        return out

    def next_event(self) -> Event | None:
        """Take the next event for the application, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called (same clock as `now`), or None."""
        return self.layer.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run the transaction timers due at `now`."""
        self._now = now
        self.layer.handle_timer(now)

    @property
    def active_calls(self) -> int:
        """Calls not yet ended."""
        return len(self._legs)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Process one received datagram. Never raises for bad input.

        Args:
            data: The datagram.
            addr: (host, port) it came from.
            now: The current time, seconds (monotonic).
        """
        if is_keepalive(data):
            return
        if self._over_limits(data, addr, now):
            return
        try:
            msg = parse_message(data)
        except SIPParseError as exc:
            self._reject_malformed(exc, addr, now)
            return
        try:
            if isinstance(msg, SIPRequest):
                self._on_request(msg, addr, now)
            else:
                self._on_response(msg, addr, now)
        except SIPParseError as exc:  # a header read lazily turned out bad
            exc.partial = exc.partial or msg
            self._reject_malformed(exc, addr, now)
        except Exception:
            logger.exception(f"SIP: error handling {msg!r} from {addr}")
            try:
                if isinstance(msg, SIPRequest) and msg.method != "ACK":
                    if not self._fail_transaction(msg, 500, None, now):
                        self.layer.send(bytes(make_response(msg, 500)), addr)
            except Exception:
                logger.exception(f"SIP: could not answer 500 to {msg!r}")

    # --- UAS actions ------------------------------------------------------------
    def ringing(self, call_id: str, now: float) -> None:
        """Send 180 Ringing for an incoming call (creates no early dialog state here)."""
        leg = self._uas_leg(call_id, ("incoming", "early"))
        leg.state = "early"
        self._respond(leg, 180, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send 200 OK with our SDP answer; it is retransmitted until the ACK (Timer G/H).

        Raises:
            LocalProtocolError: Unknown call, or not in a state to be answered.
        """
        leg = self._uas_leg(call_id, ("incoming", "early"))
        leg.local_sdp = sdp
        dialog = Dialog.from_uas(leg.invite, leg.local_tag, leg.source)
        leg.dialog = dialog
        self._by_dialog[dialog.id] = leg
        leg.state = "answered"
        self._respond(leg, 200, now, body=sdp)

    def reject(
        self,
        call_id: str,
        status_code: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
    ) -> None:
        """Answer an incoming call with a final error status (4xx-6xx).

        Raises:
            LocalProtocolError: Unknown call, already answered, or status < 300.
        """
        if status_code < 300:
            raise LocalProtocolError(f"reject needs a status >= 300, not {status_code}")
        leg = self._uas_leg(call_id, ("incoming", "early"))
        self._respond(leg, status_code, now, reason=reason, headers=headers)
        self._end(leg, "rejected", status_code)

    def update_local_sdp(self, call_id: str, sdp: bytes) -> None:
        """Set the session description used to answer later re-INVITEs."""
        leg = self._legs.get(call_id)
        if leg is not None:
            leg.local_sdp = sdp

    # --- UAC actions ------------------------------------------------------------
    def invite(
        self,
        target: str | SIPURI,
        sdp: bytes,
        now: float,
        *,
        destination: Addr | None = None,
        from_user: str | None = None,
        display_name: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
    ) -> str:
        """Place a call: send an INVITE with our SDP offer.

        Args:
            target: The Request-URI (`sip:bot@127.0.0.1:6060`).
            sdp: Our offer.
            now: The current time, seconds.
            destination: Where to send it; by default the URI's host and port,
                which must then be an IP address.
            from_user: User part of our From URI (defaults to our user).
            display_name: Display name in From.
            headers: Further headers (X- headers, ...).

        Returns:
            The new call's Call-ID.

        Raises:
            LocalProtocolError: No destination and the URI's host is not an IP address.
            SIPParseError: `target` is not a SIP URI.
        """
        uri = target if isinstance(target, SIPURI) else SIPURI.parse(target)
        if destination is None:
            host, port = uri.host_port
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise LocalProtocolError(
                    f"{host} is not an IP address; give a destination"
                ) from None
            destination = (host, port)
        call_id = new_call_id(self.host)
        local_tag = new_tag()
        from_uri = SIPURI(self._via_host, user=from_user or self.user)
        h = Headers()
        h.add("Via", self._new_via())
        h.add("Max-Forwards", "70")
        h.add("From", Address(from_uri, display_name, {"tag": local_tag}))
        h.add("To", Address(SIPURI(uri.host, user=uri.user, port=uri.port)))
        h.add("Call-ID", call_id)
        h.add("CSeq", CSeq(secrets.randbelow(2**15) + 1, "INVITE"))
        h.add("Contact", self.contact)
        self._add_common(h)
        for name, value in headers:
            h.add(name, value)
        h.add("Content-Type", SDP)
        request = SIPRequest("INVITE", uri, h, sdp)
        txn = self.layer.start_client(request, destination, now)
        leg = _Leg(call_id, "uac", "calling", local_tag, request, txn, destination, local_sdp=sdp)
        self._track(leg, txn)
        return call_id

    # --- registration (RFC 3261 s.10) -------------------------------------------
    def register(
        self,
        registrar: str | SIPURI,
        destination: Addr,
        now: float,
        *,
        expires: int = 3600,
        user: str | None = None,
        username: str | None = None,
        password: str | None = None,
        registration_id: str | None = None,
    ) -> str:
        """Bind our Contact at a registrar (or refresh, or with ``expires=0`` remove, a binding).

        The outcome arrives as a :class:`Registered` or :class:`RegistrationFailed`
        event; a 401/407 challenge is answered with Digest credentials once per
        nonce (RFC 3261 s.22), a 423 is retried with the registrar's Min-Expires.

        Args:
            registrar: The registrar's URI (Request-URI of the REGISTER), e.g.
                ``sip:pbx.example.com``.
            destination: Its address, ``(ip, port)``.
            now: The current time, seconds.
            expires: Seconds the binding should last.
            user: The address-of-record's user part (To/From), default ours.
            username: Digest user name, default ``user``.
            password: Digest password; None answers no challenge.
            registration_id: A previous ``register`` result to refresh that
                binding (same Call-ID, next CSeq); None starts a new one.

        Returns:
            The registration id.
        """
        reg = self._registrations.get(registration_id or "")
        if reg is None:
            uri = registrar if isinstance(registrar, SIPURI) else SIPURI.parse(registrar)
            reg = _Registration(
                registration_id=new_call_id(self.host),
                registrar=uri,
                destination=destination,
                user=user or self.user,
                username=username,
                password=password,
                expires=expires,
                from_tag=new_tag(),
                cseq=secrets.randbelow(2**15),
            )
            self._registrations[reg.registration_id] = reg
        self._start_register(reg, expires, now)
        return reg.registration_id

    def unregister(self, registration_id: str, now: float) -> None:
        """Remove the binding (REGISTER with Expires: 0); unknown ids do nothing."""
        reg = self._registrations.get(registration_id)
        if reg is not None:
            self._start_register(reg, 0, now)

    def _start_register(self, reg: _Registration, expires: int, now: float) -> None:
        reg.expires = expires
        reg.challenges_answered = 0
        self._send_register(reg, now)

    def _send_register(self, reg: _Registration, now: float) -> None:
        reg.cseq += 1
        aor = Address(SIPURI(reg.registrar.host, user=reg.user, port=reg.registrar.port))
        h = Headers()
        h.add("Via", self._new_via())
        h.add("Max-Forwards", "70")
        h.add("From", Address(aor.uri, None, {"tag": reg.from_tag}))
        h.add("To", aor)
        h.add("Call-ID", reg.registration_id)
        h.add("CSeq", CSeq(reg.cseq, "REGISTER"))
        h.add("Contact", self.contact)
        h.add("Expires", reg.expires)
        if reg.challenge is not None and reg.password is not None:
            reg.nonce_count += 1
            h.add(
                "Proxy-Authorization" if reg.proxy_challenge else "Authorization",
                digest_authorization(
                    reg.challenge,
                    "REGISTER",
                    str(reg.registrar),
                    reg.username or reg.user,
                    reg.password,
                    nc=reg.nonce_count,
                ),
            )
        self._add_common(h)
        request = SIPRequest("REGISTER", reg.registrar, h, b"")
        txn = self.layer.start_client(request, reg.destination, now)
        self._register_txns[txn] = reg

    def _on_register_response(self, reg: _Registration, response: SIPResponse) -> None:
        code = response.status_code
        rid = reg.registration_id
        if code in (401, 407) and reg.password is not None:
            header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
            try:
                challenge = parse_challenge(response.headers.get(header) or "")
            except ValueError as exc:
                self._register_failed(reg, code, f"challenge not understood: {exc}")
                return
            repeated = reg.challenge is not None and challenge.nonce == reg.challenge.nonce
            if reg.challenges_answered >= 2 or (repeated and not challenge.stale):
                self._register_failed(reg, code, "credentials refused")
                return
            if not repeated:
                reg.nonce_count = 0
            reg.challenge, reg.proxy_challenge = challenge, code == 407
            reg.challenges_answered += 1
            self._send_register(reg, self._now)
            return
        if code == 423 and reg.expires:
            min_expires = response.headers.get("Min-Expires") or ""
            if min_expires.strip().isdigit() and int(min_expires) > reg.expires:
                reg.expires = int(min_expires)
                self._send_register(reg, self._now)
                return
        if 200 <= code < 300:
            self._events.append(Registered(rid, self._granted_expires(reg, response)))
            if reg.expires == 0:
                self._registrations.pop(rid, None)
            return
        self._register_failed(reg, code, f"{code} {response.reason}")

    def _granted_expires(self, reg: _Registration, response: SIPResponse) -> int:
        """The binding's lifetime from a 2xx: our Contact's expires, else Expires (s.10.2.4)."""
        if reg.expires == 0:
            return 0
        ours = self.contact.uri
        for contact in response.contacts:
            if contact.uri.host == ours.host and contact.uri.port == ours.port:
                value = contact.params.get("expires")
                if value and value.strip().isdigit():
                    return int(value)
        value = response.headers.get("Expires")
        if value and value.strip().isdigit():
            return int(value)
        return reg.expires

    def _register_failed(self, reg: _Registration, code: int, reason: str) -> None:
        self._events.append(RegistrationFailed(reg.registration_id, code, reason))

    # --- both -------------------------------------------------------------------
    def hangup(self, call_id: str, now: float) -> None:
        """End a call from our side, whatever its state; idempotent.

        UAS before answer: 480 Temporarily Unavailable. UAC before answer:
        CANCEL (once a provisional response arrived, RFC 3261 s.9.1).
        Answered, waiting for ACK: BYE as soon as the ACK (or Timer H) comes.
        Established: BYE. Ending: nothing.
        """
        leg = self._legs.get(call_id)
        if leg is None or leg.state in ("terminating", "ended"):
            return
        if leg.role == "uas":
            if leg.state in ("incoming", "early"):
                self._respond(leg, 480, now)
                self._end(leg, "local_bye", 480)
            elif leg.state == "answered":
                leg.pending_bye = True
            else:
                self._send_bye(leg, now)
        elif leg.state == "calling":
            leg.pending_cancel = True
        elif leg.state == "early":
            if not leg.cancel_sent:
                self._send_cancel(leg, now)
        else:
            self._send_bye(leg, now)

    # --- TransactionUser --------------------------------------------------------
    def on_response(self, txn: ClientTransaction, response: SIPResponse) -> None:
        """Responses to our INVITE, BYE, CANCEL and REGISTER."""
        if txn.method == "REGISTER":
            reg = self._register_txns.get(txn)
            if reg is not None and response.status_code >= 200:
                del self._register_txns[txn]
                self._on_register_response(reg, response)
            return
        leg = self._by_txn.get(txn)
        if leg is None:
            return
        code = response.status_code
        if txn.method == "BYE":
            if code >= 200:
                self._end(leg, "local_bye", code)
            return
        if txn.method != "INVITE":
            return
        if code < 200:
            if leg.state == "calling":
                leg.state = "early"
            self._events.append(CallProgress(leg.call_id, response))
            if leg.pending_cancel:
                leg.pending_cancel = False
                self._send_cancel(leg, self._now)
        elif code < 300:
            if leg.dialog is None:
                self._confirm_uac(leg, response)
            elif leg.ack_bytes is not None:  # 2xx retransmission: ACK again
                self.layer.send(leg.ack_bytes, leg.dialog.next_hop())
        else:
            reason = "cancelled" if code == 487 else "rejected"
            if leg.state != "ended":
                self._end(leg, reason, code)

    def on_transaction_timeout(self, txn: Transaction) -> None:
        """Timer B/F, or Timer H for a non-2xx final response."""
        reg = self._register_txns.pop(txn, None)
        if reg is not None:
            self._register_failed(reg, 408, "the registrar did not answer")
            return
        leg = self._by_txn.get(txn)
        if leg is None or leg.state == "ended":
            return
        if isinstance(txn, ClientInviteTransaction):
            if leg.cancel_sent:  # no final response 64*T1 after CANCEL (s.9.1)
                self._end(leg, "cancelled")
            else:
                self._end(leg, "timeout", 408)
        elif txn.method == "BYE":
            logger.warning(f"SIP {leg.call_id}: BYE got no response")
            self._end(leg, "local_bye", 408)

    def on_transaction_terminated(self, txn: Transaction) -> None:
        """Forget a finished transaction's link to its call."""
        self._by_txn.pop(txn, None)
        self._register_txns.pop(txn, None)

    def on_ack_timeout(self, txn: ServerInviteTransaction) -> None:
        """No ACK for our 2xx within 64*T1: end the call with BYE (RFC 3261 s.13.3.1.4)."""
        leg = self._by_txn.get(txn)
        if leg is None or leg.state == "ended" or txn is not leg.invite_txn:
            return
        logger.warning(f"SIP {leg.call_id}: no ACK for 200 OK, ending the call")
        self._send_bye(leg, self._now, reason="ack_timeout")

    # --- request handling -------------------------------------------------------
    _now: float = 0.0

    def _on_request(self, req: SIPRequest, addr: Addr, now: float) -> None:
        self._now = now
        self._stamp_via(req, addr)
        txn = self.layer.find_server(req)
        if txn is not None:
            self.layer.receive_request(txn, req, now)
            if req.method == "ACK":
                self._on_ack(req)
            return
        if req.method == "ACK":
            self._on_ack(req)
            return
        reply_to = self._response_address(req, addr)
        if req.method == "CANCEL":
            self._on_cancel(req, reply_to, now)
            return
        txn = self.layer.create_server(req, reply_to)
        if not isinstance(req.uri, SIPURI) and req.uri.scheme not in URI_SCHEMES:
            self._respond_txn(txn, 416, now)  # RFC 3261 s.8.2.2.1
            return
        unsupported = [t for t in req.option_tags("Require") if t not in SUPPORTED_OPTIONS]
        if unsupported:
            self._respond_txn(txn, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if req.to.tag:
            self._on_in_dialog(req, txn, now)
            return
        if req.method == "INVITE":
            self._on_invite(req, txn, addr, now)
        elif req.method == "OPTIONS":
            self._respond_txn(txn, 200, now, headers=self._capabilities())
        elif req.method == "BYE":
            self._respond_txn(txn, 481, now)
        elif req.method in KNOWN_METHODS:
            self._respond_txn(txn, 405, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])
        else:
            self._respond_txn(txn, 501, now)

    def _on_invite(self, req: SIPRequest, txn: ServerTransaction, addr: Addr, now: float) -> None:
        from_tag = req.from_.tag
        for leg in self._legs.values():  # merged request (RFC 3261 s.8.2.2.2)
            if (
                leg.role == "uas"
                and leg.call_id == req.call_id
                and leg.invite.from_.tag == from_tag
                and leg.invite.cseq == req.cseq
            ):
                self._respond_txn(txn, 482, now)
                return
        if not req.contacts:
            self._respond_txn(txn, 400, now, reason="Bad Request - missing Contact")
            return
        if req.call_id in self._legs:
            self._respond_txn(txn, 482, now)
            return
        leg = _Leg(req.call_id, "uas", "incoming", new_tag(), req, txn, addr)
        self._track(leg, txn)
        self._respond(leg, 100, now)
        self._events.append(IncomingCall(req.call_id, req, addr))

    def _on_in_dialog(self, req: SIPRequest, txn: ServerTransaction, now: float) -> None:
        leg = self._by_dialog.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if leg is None or leg.dialog is None or leg.state == "ended":
            self._respond_txn(txn, 481, now)
            return
        if not leg.dialog.accept_remote_cseq(req):
            self._respond_txn(txn, 500, now, reason="CSeq out of order")
            return
        method = req.method
        if method == "BYE":
            self._respond_txn(txn, 200, now)
            self._stop_2xx_retransmission(leg)
            if isinstance(leg.invite_txn, ServerInviteTransaction):
                if leg.invite_txn.state == "proceeding":
                    self.layer.respond(leg.invite_txn, self._response(leg, 487), now)
            self._end(leg, "remote_bye")
        elif method == "INVITE":
            self._on_reinvite(leg, req, txn, now)
        elif method in ("OPTIONS", "INFO"):
            self._respond_txn(
                txn, 200, now, headers=self._capabilities() if method == "OPTIONS" else ()
            )
            if method == "INFO":
                self._events.append(InfoReceived(leg.call_id, req))
        elif method in KNOWN_METHODS:
            self._respond_txn(txn, 405, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])
        else:
            self._respond_txn(txn, 501, now)

    def _on_reinvite(self, leg: _Leg, req: SIPRequest, txn: ServerTransaction, now: float) -> None:
        if isinstance(leg.invite_txn, ServerInviteTransaction) and leg.invite_txn.state in (
            "proceeding",
        ):
            self._respond_txn(txn, 491, now)  # Request Pending (RFC 3261 s.14.2)
            return
        if req.body and self.answer_offer is not None:
            try:
                leg.local_sdp = self.answer_offer(leg.call_id, req.body)
            except ValueError as exc:
                self._respond_txn(txn, 488, now, reason=f"Not Acceptable Here ({exc})"[:120])
                return
            except Exception:  # a bug in the hook: answer, never leave the peer hanging
                logger.exception(f"SIP {leg.call_id}: answering the re-INVITE's offer failed")
                self._respond_txn(txn, 500, now)
                return
        if req.contacts:
            leg.dialog.remote_target = req.contacts[0].uri
        response = make_response(
            req,
            200,
            to_tag=leg.local_tag,
            headers=self._answer_headers(req),
            body=leg.local_sdp,
            content_type=SDP,
        )
        if isinstance(txn, ServerInviteTransaction):
            leg.invite_txn = txn
            self._by_txn[txn] = leg
        self.layer.respond(txn, response, now)
        self._events.append(CallUpdated(leg.call_id, req))

    def _on_ack(self, req: SIPRequest) -> None:
        leg = self._by_dialog.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if leg is None:
            return
        txn = leg.invite_txn
        if isinstance(txn, ServerInviteTransaction) and req.cseq.seq != txn.request.cseq.seq:
            return  # not the ACK for our latest 2xx (RFC 3261 s.13.2.2.4, s.17.1.1.3)
        self._stop_2xx_retransmission(leg)
        if leg.state == "answered":
            leg.state = "established"
            self._events.append(CallEstablished(leg.call_id, req))
            if leg.pending_bye:
                self._send_bye(leg, self._now)

    def _on_cancel(self, req: SIPRequest, reply_to: Addr, now: float) -> None:
        cancel_txn = self.layer.create_server(req, reply_to)
        key = server_key(req)
        invite_txn = self.layer.server.get((*key[:-1], "INVITE"))
        if not isinstance(invite_txn, ServerInviteTransaction):
            self._respond_txn(cancel_txn, 481, now)
            return
        self._respond_txn(cancel_txn, 200, now)
        leg = self._by_txn.get(invite_txn)
        if invite_txn.state == "proceeding" and leg is not None:
            self.layer.respond(invite_txn, self._response(leg, 487), now)
            self._end(leg, "cancelled", 487)

    # --- responses to our requests ----------------------------------------------
    def _on_response(self, resp: SIPResponse, addr: Addr, now: float) -> None:
        self._now = now
        if not self.layer.receive_response(resp, now):
            leg = self._legs.get(resp.call_id)
            if (  # 2xx retransmission after the INVITE transaction ended
                leg is not None
                and leg.ack_bytes is not None
                and resp.cseq.method == "INVITE"
                and 200 <= resp.status_code < 300
                and leg.dialog is not None
            ):
                self.layer.send(leg.ack_bytes, leg.dialog.next_hop())

    def _confirm_uac(self, leg: _Leg, response: SIPResponse) -> None:
        try:
            dialog = Dialog.from_uac(leg.invite, response, leg.source)
        except LocalProtocolError as exc:  # 2xx without Contact: no dialog possible
            logger.warning(f"SIP {leg.call_id}: unusable 2xx: {exc}")
            self._end(leg, "error", response.status_code)
            return
        leg.dialog = dialog
        self._by_dialog[dialog.id] = leg
        ack = dialog.create_request(
            "ACK", self._via_host, self.port, cseq=leg.invite.cseq.seq, headers=self._ua_headers()
        )
        leg.ack_bytes = bytes(ack)
        self.layer.send(leg.ack_bytes, dialog.next_hop())
        leg.state = "established"
        self._events.append(CallAnswered(leg.call_id, response))
        if leg.pending_cancel or leg.cancel_sent:  # we hung up meanwhile (s.9.1, s.15)
            leg.pending_cancel = False
            self._send_bye(leg, self._now)

    # --- helpers ------------------------------------------------------------------
    def _uas_leg(self, call_id: str, states: tuple[str, ...]) -> _Leg:
        leg = self._legs.get(call_id)
        if leg is None or leg.role != "uas":
            raise LocalProtocolError(f"no incoming call {call_id}")
        if leg.state not in states:
            raise LocalProtocolError(f"call {call_id} is {leg.state}")
        return leg

    def _track(self, leg: _Leg, txn: Transaction) -> None:
        self._legs[leg.call_id] = leg
        self._by_txn[txn] = leg

    def _end(self, leg: _Leg, reason: str, status_code: int | None = None) -> None:
        if leg.state == "ended":
            return
        leg.state = "ended"
        self._legs.pop(leg.call_id, None)
        if leg.dialog is not None:
            self._by_dialog.pop(leg.dialog.id, None)
        self._events.append(CallEnded(leg.call_id, reason, status_code))

    def _stop_2xx_retransmission(self, leg: _Leg) -> None:
        txn = leg.invite_txn
        if isinstance(txn, ServerInviteTransaction) and txn.state == "accepted" and not txn.acked:
            txn.ack_received()

    def _send_bye(self, leg: _Leg, now: float, reason: str = "local_bye") -> None:
        if leg.dialog is None:
            self._end(leg, reason)
            return
        self._stop_2xx_retransmission(leg)
        bye = leg.dialog.create_request(
            "BYE", self._via_host, self.port, headers=self._ua_headers()
        )
        txn = self.layer.start_client(bye, leg.dialog.next_hop(), now)
        self._by_txn[txn] = leg
        leg.state = "terminating"
        if reason != "local_bye":
            self._end(leg, reason)

    def _send_cancel(self, leg: _Leg, now: float) -> None:
        """CANCEL for our INVITE (RFC 3261 s.9.1): same branch, Call-ID, From, To, CSeq number."""
        inv = leg.invite
        h = Headers()
        h.add("Via", inv.headers.get_list("Via")[0])
        for route in inv.headers.get_all("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.add(name, inv.headers.get(name))
        h.add("CSeq", CSeq(inv.cseq.seq, "CANCEL"))
        cancel = SIPRequest("CANCEL", inv.uri, h)
        txn = self.layer.start_client(cancel, leg.source, now)
        self._by_txn[txn] = leg
        leg.cancel_sent = True
        if isinstance(leg.invite_txn, ClientInviteTransaction):
            leg.invite_txn.cancel_sent(now)

    def _new_via(self) -> Via:
        return Via("UDP", self._via_host, self.port, {"branch": new_branch(), "rport": None})

    def _ua_headers(self) -> Headers:
        h = Headers()
        if self.server_name:
            h.add("User-Agent", self.server_name)
        return h

    def _add_common(self, h: Headers) -> None:
        h.add("Allow", ", ".join(ALLOWED_METHODS))
        if self.server_name:
            h.add("User-Agent", self.server_name)

    def _capabilities(self) -> list[tuple[str, object]]:
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Accept", SDP),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
        ]

    def _answer_headers(self, req: SIPRequest) -> list[tuple[str, object]]:
        headers: list[tuple[str, object]] = [
            (n, v) for n in ["Record-Route"] for v in req.headers.get_all(n)
        ]
        headers.append(("Contact", self.contact))
        headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
        headers.append(("Supported", ", ".join(SUPPORTED_OPTIONS)))
        return headers

    def _response(
        self,
        leg: _Leg,
        code: int,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> SIPResponse:
        extra = list(headers)
        if code == 200 or 100 < code < 200:
            extra = self._answer_headers(leg.invite) + extra
        if self.server_name:
            extra.append(("Server", self.server_name))
        return make_response(
            leg.invite,
            code,
            reason,
            to_tag=leg.local_tag if code > 100 else None,
            headers=extra,
            body=body,
            content_type=SDP if body else None,
        )

    def _respond(
        self,
        leg: _Leg,
        code: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> None:
        response = self._response(leg, code, reason=reason, headers=headers, body=body)
        assert isinstance(leg.invite_txn, ServerTransaction)
        self.layer.respond(leg.invite_txn, response, now)

    def _respond_txn(
        self,
        txn: ServerTransaction,
        code: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
    ) -> None:
        extra = list(headers)
        if self.server_name:
            extra.append(("Server", self.server_name))
        to_tag = new_tag() if code > 100 and not txn.request.to.tag else None
        self.layer.respond(
            txn, make_response(txn.request, code, reason, to_tag=to_tag, headers=extra), now
        )

    def _over_limits(self, data: bytes, addr: Addr, now: float) -> bool:
        """Refuse a datagram over the size or header-count limit (answered when readable).

        Only the head (start line and headers) of a refused datagram is
        parsed, to answer 413 (too large) or 400 (too many headers).
        """
        too_large = self.max_message_size is not None and len(data) > self.max_message_size
        data = data.lstrip(b"\r\n")  # as the parser does (RFC 3261 s.7.5)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            end = data.find(b"\n\n")
        head = data if end < 0 else data[:end]
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
        self._reject_malformed(SIPParseError(why, status, partial), addr, now)
        return True

    def _reject_malformed(self, exc: SIPParseError, addr: Addr, now: float) -> None:
        try:
            partial = exc.partial
            readable = isinstance(partial, SIPRequest) and all(
                partial.headers.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq")
            )
            if not readable or partial.method == "ACK":  # type: ignore[union-attr]
                logger.warning(f"SIP: dropped unreadable datagram from {addr}: {exc}")
                return
            detail = str(exc).replace("\r", " ").replace("\n", " ")[:120]
            reason = f"{make_response(partial, exc.status_code).reason} ({detail})"  # type: ignore[arg-type]
            logger.info(f"SIP: {exc.status_code} to malformed request from {addr}: {exc}")
            # Found bad after its transaction was made: answer through it, so that
            # retransmissions get the same answer and the transaction ends.
            if self._fail_transaction(partial, exc.status_code, reason, now):  # type: ignore[arg-type]
                return
            response = make_response(partial, exc.status_code, reason)  # type: ignore[arg-type]
            if self.server_name:
                response.headers.add("Server", self.server_name)
            try:
                addr = self._response_address(partial, addr)  # type: ignore[arg-type]
            except SIPParseError:
                pass  # an unreadable Via: answer where it came from
            self.layer.send(bytes(response), addr)
        except Exception:  # never raise for bad input
            logger.exception(f"SIP: could not answer malformed datagram from {addr}")

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
        extra: list[tuple[str, object]] = []
        if self.server_name:
            extra.append(("Server", self.server_name))
        leg = self._by_txn.get(txn)
        if leg is not None and (leg.invite_txn is not txn or leg.dialog is not None):
            leg = None  # a re-INVITE failed: the call itself goes on
        to_tag = leg.local_tag if leg is not None else new_tag()
        response = make_response(req, code, reason, to_tag=to_tag, headers=extra)
        self.layer.respond(txn, response, now)
        if leg is not None:
            self._end(leg, "error", code)
        return True

    @staticmethod
    def _stamp_via(req: SIPRequest, addr: Addr) -> None:
        """Add received/rport to the top Via (RFC 3261 s.18.2.1, RFC 3581 s.4)."""
        values = req.headers.get_list("Via")
        top = Via.parse(values[0])
        host = top.host[1:-1] if top.host.startswith("[") else top.host
        changed = False
        # RFC 3581 s.4: with rport, received is added even when equal to sent-by.
        if host != addr[0] or top.has_param("rport"):
            top.params["received"] = addr[0]
            changed = True
        if top.has_param("rport") and not top.get_param("rport"):
            top.params = {
                k: (str(addr[1]) if k.lower() == "rport" else v) for k, v in top.params.items()
            }
            changed = True
        if changed:
            req.headers.set("Via", ", ".join([str(top), *values[1:]]))

    @staticmethod
    def _response_address(req: SIPRequest, addr: Addr) -> Addr:
        """Where responses go (RFC 3261 s.18.2.2, RFC 3581 s.4).

        The source address; its port when rport was asked for, else the sent-by port.
        """
        via = req.top_via
        if via.has_param("rport"):
            return addr
        return addr[0], via.port or 5060
