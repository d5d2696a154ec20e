"""The REGISTER client (RFC 3261 s.10.2), sans-IO: bindings kept alive on the UA's timers.

A :class:`RegistrationClient` sends REGISTER through its user agent,
answers 401/407 challenges with Digest credentials once per nonce
(RFC 3261 s.22), retries a 423 with the registrar's Min-Expires, refreshes
each binding at half the time the registrar granted, and retries a failed
registration after ``retry_s``; all of it on the user agent's one timer
queue, so the I/O layer arms one timer for everything.

Failover (RFC 3263 s.4.3): a registration may have several destinations
(the registrar's SRV targets and addresses, in order). A timeout (Timer F,
reported as 408), a 503 or a transport error moves it to the next one at
once; when every one has failed, the registration fails and is retried after
``retry_s`` from the first again. A success stays on the destination that
answered.

Flows (RFC 5626 s.4.4.1, s.4.5): when the connection a registration was
made over closes or stops answering keep-alives, :meth:`RegistrationClient.flow_failed`
re-registers at once over a new flow (the next REGISTER opens one), and no
more often than once per ``retry_s`` when flows keep failing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipecat_sip.sip.auth import DigestChallenge, digest_authorization, parse_challenge
from pipecat_sip.sip.events import Registered, RegistrationFailed
from pipecat_sip.sip.headers import CSeq
from pipecat_sip.sip.message import Headers, SIPRequest, SIPResponse
from pipecat_sip.sip.timers import Timer
from pipecat_sip.sip.transaction import Transaction
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.uri import SIPURI, Address

if TYPE_CHECKING:
    from pipecat_sip.sip.useragent import UserAgent

__all__ = ["DEFAULT_RETRY_S", "Registration", "RegistrationClient"]

DEFAULT_RETRY_S = 30.0
"""Seconds between attempts after a failed registration."""

_MIN_REFRESH_S = 1.0

#: Final responses to REGISTER after which the next destination is tried (RFC 3263 s.4.3).
FAILOVER_CODES = frozenset({408, 503})


@dataclass(eq=False)
class Registration:
    """One binding we keep at a registrar (RFC 3261 s.10).

    Attributes:
        registration_id: Its Call-ID, kept for every refresh (s.10.2.4).
        registrar: The registrar's URI (the REGISTER's Request-URI).
        flow: Where REGISTERs go.
        user: The address-of-record's user part.
        username: Digest user name, or None for ``user``.
        password: Digest password, or None to answer no challenge.
        expires: Seconds asked for the binding (0 while unregistering).
        registered: Whether the registrar holds the binding now.
        targets: Every destination, in order (``flow`` is one of them).
        target_index: The index of ``flow`` in ``targets``.
        failures: Destinations given up on in the current attempt, with why.
    """

    registration_id: str
    registrar: SIPURI
    flow: Flow
    user: str
    username: str | None
    password: str | None
    expires: int
    from_tag: str
    cseq: int
    registered: bool = False
    challenge: DigestChallenge | None = None
    proxy_challenge: bool = False
    nonce_count: int = 0
    challenges_answered: int = 0
    timer: Timer | None = None
    in_flight: Transaction | None = None
    targets: list[Flow] = field(default_factory=list)
    target_index: int = 0
    failures: list[tuple[Flow, str]] = field(default_factory=list)
    last_flow_recovery: float | None = None


class RegistrationClient:
    """Registrations of one user agent.

    Args:
        ua: The user agent (transaction layer, timers, identifiers, events).
        retry_s: Seconds before a failed registration is tried again.
    """

    def __init__(self, ua: UserAgent, *, retry_s: float = DEFAULT_RETRY_S) -> None:
        self.ua = ua
        self.retry_s = retry_s
        self.registrations: dict[str, Registration] = {}
        self._by_txn: dict[Transaction, Registration] = {}

    def register(
        self,
        registrar: SIPURI,
        flow: Flow,
        now: float,
        *,
        expires: int = 3600,
        user: str,
        username: str | None = None,
        password: str | None = None,
        targets: Iterable[Flow] = (),
    ) -> str:
        """Start keeping our Contact bound at ``registrar``; returns the registration id.

        Args:
            registrar: The REGISTER's Request-URI.
            flow: Where to send it first.
            now: The current time, seconds.
            expires: Seconds asked for the binding.
            user: The address-of-record's user part.
            username: Digest user name, default ``user``.
            password: Digest password; None answers no challenge.
            targets: Every destination in order, for failover; ``flow`` is
                put first when it is not among them.
        """
        ua = self.ua
        all_targets = list(targets)
        if flow not in all_targets:
            all_targets.insert(0, flow)
        reg = Registration(
            registration_id=ua.ids.call_id(ua.host),
            registrar=registrar,
            flow=flow,
            user=user,
            username=username,
            password=password,
            expires=expires,
            from_tag=ua.ids.tag(),
            cseq=ua.ids.cseq(),
            targets=all_targets,
            target_index=all_targets.index(flow),
        )
        self.registrations[reg.registration_id] = reg
        self._start(reg, expires, now)
        return reg.registration_id

    def unregister(self, registration_id: str, now: float) -> None:
        """Remove the binding (REGISTER with Expires: 0); unknown ids do nothing."""
        reg = self.registrations.get(registration_id)
        if reg is not None:
            self._start(reg, 0, now)

    def forget(self, registration_id: str) -> None:
        """Stop refreshing and retrying a registration without sending anything."""
        reg = self.registrations.pop(registration_id, None)
        if reg is not None and reg.timer is not None:
            reg.timer.cancel()
            reg.timer = None

    def set_flow(self, registration_id: str, flow: Flow) -> None:
        """Send later REGISTERs of a registration elsewhere (the registrar was looked up again)."""
        reg = self.registrations.get(registration_id)
        if reg is not None:
            reg.flow = flow
            if flow not in reg.targets:
                reg.targets.insert(0, flow)
            reg.target_index = reg.targets.index(flow)

    def set_targets(self, registration_id: str, targets: Iterable[Flow]) -> None:
        """Replace the destinations (a new lookup); the next attempt starts at the first.

        A registration in place stays on its flow until it fails.
        """
        reg = self.registrations.get(registration_id)
        flows = list(targets)
        if reg is None or not flows:
            return
        reg.targets = flows
        if not reg.registered and reg.in_flight is None:
            reg.flow, reg.target_index = flows[0], 0
        elif reg.flow in flows:
            reg.target_index = flows.index(reg.flow)
        else:
            reg.targets.insert(0, reg.flow)
            reg.target_index = 0

    def registration_on(self, flow: Flow) -> list[Registration]:
        """The registrations whose REGISTERs go to ``flow``'s transport and address."""
        return [r for r in self.registrations.values() if r.flow.same_destination(flow)]

    def transport_failed(self, flow: Flow, reason: str, now: float) -> None:
        """REGISTERs to ``flow``'s destination could not be sent: fail over (RFC 3263 s.4.3).

        Args:
            flow: The flow that failed.
            reason: Why, for the events ("connection refused", ...).
            now: The current time, seconds.
        """
        for reg in self.registration_on(flow):
            txn = reg.in_flight
            if txn is None:
                continue
            self._by_txn.pop(txn, None)
            reg.in_flight = None
            self._fail_over(reg, 503, f"transport error: {reason}", now)

    def flow_failed(self, flow: Flow, reason: str, now: float) -> None:
        """The connection under registrations closed or stopped answering (RFC 5626 s.4.4.1).

        A REGISTER in flight on it fails over (as a transport error); a
        binding in place is registered again at once over a new flow (the
        next REGISTER opens one), or after ``retry_s`` when the last recovery
        was less than ``retry_s`` ago, so a registrar that drops every
        connection is not hammered.
        """
        for reg in self.registration_on(flow):
            if reg.in_flight is not None:
                if reg.in_flight.state in ("calling", "trying", "proceeding"):
                    self.transport_failed(flow, reason, now)
                continue
            if reg.expires == 0 or not reg.registered:
                continue
            last = reg.last_flow_recovery
            at = now if last is None or now - last >= self.retry_s else last + self.retry_s
            reg.last_flow_recovery = at
            reg.flow = Flow(reg.flow.transport, reg.flow.remote, server_name=reg.flow.server_name)
            self.ua.notice(
                "info",
                f"registration flow to {flow} failed ({reason}); registering again"
                + ("" if at == now else f" in {at - now:g} s"),
                kind="registration_flow",
            )
            if at == now:
                self._start(reg, reg.expires, now)
            else:
                self._schedule(reg, at, "REGISTER after flow failure")

    def rebind(self, transport: str, now: float) -> None:
        """Our Contact on ``transport`` changed (NAT mapping learned): REGISTER it now.

        Registrations with a REGISTER in flight send the new Contact with
        their next one anyway; removals (Expires: 0) are left alone.
        """
        for reg in list(self.registrations.values()):
            if reg.flow.transport == transport and reg.in_flight is None and reg.expires:
                reg.challenges_answered = 0
                self._send(reg, now)

    @property
    def tracked(self) -> int:
        """Entries in the lookup tables (registrations, transactions)."""
        return len(self.registrations) + len(self._by_txn)

    # --- transaction reports ---------------------------------------------------
    def owns(self, txn: Transaction) -> bool:
        """Whether ``txn`` is one of our REGISTERs."""
        return txn in self._by_txn

    def on_response(self, txn: Transaction, response: SIPResponse, now: float) -> None:
        """A response to one of our REGISTERs."""
        reg = self._by_txn.get(txn)
        if reg is None or response.status_code < 200:
            return
        del self._by_txn[txn]
        reg.in_flight = None
        code = response.status_code
        if code in (401, 407) and reg.password is not None:
            self._answer_challenge(reg, response, now)
            return
        if code == 423 and reg.expires:
            min_expires = (response.headers.get("Min-Expires") or "").strip()
            if min_expires.isdigit() and int(min_expires) > reg.expires:
                reg.expires = int(min_expires)
                self._send(reg, now)
                return
        if code in FAILOVER_CODES and reg.expires:
            self._fail_over(reg, code, f"{code} {response.reason}", now)
            return
        if 200 <= code < 300:
            reg.failures = []
            granted = self._granted_expires(reg, response)
            if reg.expires == 0:
                reg.registered = False
                self.registrations.pop(reg.registration_id, None)
                self.ua.emit(Registered(reg.registration_id, 0))
                return
            if granted <= 0:  # the registrar did not keep the binding: not registered
                self._failed(reg, code, f"registrar granted {granted} s", now)
                return
            reg.registered = True
            self.ua.emit(Registered(reg.registration_id, granted))
            self._schedule(reg, now + max(_MIN_REFRESH_S, granted / 2), "REGISTER refresh")
            return
        self._failed(reg, code, f"{code} {response.reason}", now)

    def on_transaction_timeout(self, txn: Transaction, now: float) -> None:
        """Timer F: the registrar did not answer."""
        reg = self._by_txn.pop(txn, None)
        if reg is not None:
            reg.in_flight = None
            if reg.expires:
                self._fail_over(reg, 408, "the registrar did not answer", now)
            else:
                self._failed(reg, 408, "the registrar did not answer", now)

    def on_transaction_terminated(self, txn: Transaction, now: float) -> None:
        """Forget a finished REGISTER transaction."""
        self._by_txn.pop(txn, None)

    # --- internals -----------------------------------------------------------------
    def _start(self, reg: Registration, expires: int, now: float) -> None:
        reg.expires = expires
        reg.challenges_answered = 0
        if reg.timer is not None:
            reg.timer.cancel()
            reg.timer = None
        self._send(reg, now)

    def _answer_challenge(self, reg: Registration, response: SIPResponse, now: float) -> None:
        code = response.status_code
        header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        try:
            challenge = parse_challenge(response.headers.get(header) or "")
        except ValueError as exc:
            self._failed(reg, code, f"challenge not understood: {exc}", now)
            return
        repeated = reg.challenge is not None and challenge.nonce == reg.challenge.nonce
        if reg.challenges_answered >= 2 or (repeated and not challenge.stale):
            self._failed(reg, code, "credentials refused", now)
            return
        if not repeated:
            reg.nonce_count = 0
        reg.challenge, reg.proxy_challenge = challenge, code == 407
        reg.challenges_answered += 1
        self._send(reg, now)

    def _send(self, reg: Registration, now: float) -> None:
        ua = self.ua
        reg.cseq += 1
        aor = Address(SIPURI(reg.registrar.host, user=reg.user, port=reg.registrar.port))
        h = Headers()
        h.add("Via", ua.new_via(reg.flow))
        h.add("Max-Forwards", "70")
        h.add("From", Address(aor.uri, None, {"tag": reg.from_tag}))
        h.add("To", aor)
        h.add("Call-ID", reg.registration_id)
        h.add("CSeq", CSeq(reg.cseq, "REGISTER"))
        h.add("Contact", ua.contact_for(reg.flow, secure=reg.registrar.scheme == "sips"))
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
                    cnonce=ua.ids.token(),
                ),
            )
        ua.add_common_headers(h)
        request = SIPRequest("REGISTER", reg.registrar, h, b"")
        txn = ua.send_request(request, reg.flow, now, self)
        reg.in_flight = txn
        self._by_txn[txn] = reg

    def _fail_over(self, reg: Registration, code: int, reason: str, now: float) -> None:
        """Try the next destination at once, or fail when every one was tried (RFC 3263 s.4.3)."""
        reg.failures.append((reg.flow, reason))
        tried = len(reg.failures)
        if tried < len(reg.targets):
            reg.target_index = (reg.target_index + 1) % len(reg.targets)
            failed, reg.flow = reg.flow, reg.targets[reg.target_index]
            reg.registered = False
            reg.challenge = None
            self.ua.notice(
                "warning",
                f"registrar at {failed} failed ({reason}); trying {reg.flow}",
                kind="registration_failover",
            )
            reg.challenges_answered = 0
            self._send(reg, now)
            return
        if len(reg.targets) > 1:
            reason = f"{reason} (all {len(reg.targets)} destinations failed)"
        self._failed(reg, code, reason, now)

    def _failed(self, reg: Registration, code: int, reason: str, now: float) -> None:
        reg.failures = []
        if reg.targets:  # the next attempt starts again from the first destination
            reg.target_index = 0
            reg.flow = reg.targets[0]
        reg.registered = False
        if reg.expires == 0:  # an unregister failed: nothing more to do
            self.registrations.pop(reg.registration_id, None)
            self.ua.emit(RegistrationFailed(reg.registration_id, code, reason, None))
            return
        self.ua.emit(RegistrationFailed(reg.registration_id, code, reason, self.retry_s))
        self._schedule(reg, now + self.retry_s, "REGISTER retry")

    def _schedule(self, reg: Registration, at: float, name: str) -> None:
        if reg.timer is not None:
            reg.timer.cancel()

        def fire(now: float) -> None:
            reg.timer = None
            if self.registrations.get(reg.registration_id) is reg and reg.in_flight is None:
                reg.challenges_answered = 0
                self._send(reg, now)

        reg.timer = self.ua.timers.start(name, at, fire)

    def _granted_expires(self, reg: Registration, response: SIPResponse) -> int:
        """The binding's lifetime from a 2xx: our Contact's expires, else Expires (s.10.2.4)."""
        if reg.expires == 0:
            return 0
        ours = self.ua.contact_for(reg.flow, secure=reg.registrar.scheme == "sips").uri
        assert isinstance(ours, SIPURI)
        for contact in response.contacts:
            uri = contact.uri
            if isinstance(uri, SIPURI) and uri.host == ours.host and uri.port == ours.port:
                value = contact.params.get("expires")
                if value and value.strip().isdigit():
                    return int(value)
        value = response.headers.get("Expires")
        if value and value.strip().isdigit():
            return int(value)
        return reg.expires
