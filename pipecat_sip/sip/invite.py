"""The INVITE dialog usage (RFC 3261 s.13-15, RFC 5057): calls as UAS and UAC.

A call's signalling state is one :class:`CallState`, moved only through the
:data:`TRANSITIONS` table: ``(role, state, event) -> state``, where the
states are RFC 5057's early, confirmed and terminated, refined where a
UA must behave differently (a UAS's 2xx waiting for its ACK is "accepted",
as RFC 6026 names the transaction state; our BYE or CANCEL waiting for its
answer is "terminating"). A move that is not in the table is a
:class:`~pipecat_sip.sip.errors.LocalProtocolError`: a bug, never a silent
fall-through.

What runs beside the main state lives in tables of its own, so later
features add rows, not rewrites: the session-modification state of
RFC 6337 (:class:`Modification`: a re-INVITE we answer or one we sent;
UPDATE and session refreshes join it), and flags on the session for
pending actions (a BYE waiting for the ACK, a CANCEL waiting for the first
provisional response). Early media is the EARLY state with an early session
description.

:class:`InviteUsage` implements the behaviour on top of a
:class:`~pipecat_sip.sip.useragent.UserAgent`'s transaction layer, timers
and event queue.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from pipecat_sip.sip.auth import Credentials, DigestClient
from pipecat_sip.sip.dialog import Dialog, DialogId
from pipecat_sip.sip.errors import LocalProtocolError, RemoteProtocolError
from pipecat_sip.sip.events import (
    CallAnswered,
    CallEnded,
    CallEstablished,
    CallProgress,
    CallUpdated,
    IncomingCall,
    InfoReceived,
    ModificationAnswered,
    ReofferReceived,
)
from pipecat_sip.sip.headers import CSeq
from pipecat_sip.sip.locate import TargetList
from pipecat_sip.sip.message import Headers, SIPRequest, SIPResponse, make_response
from pipecat_sip.sip.reliable import (
    MAX_RSEQ,
    RAck,
    ReliableProvisionals,
    parse_rseq,
    requires_100rel,
    supports_100rel,
)
from pipecat_sip.sip.session_timer import (
    SessionExpires,
    TimerNegotiation,
    UASAnswer,
    bye_margin,
    parse_min_se,
    uac_offer,
    uac_offer_refresh,
    uac_result,
    uas_answer,
)
from pipecat_sip.sip.timers import Timer
from pipecat_sip.sip.transaction import (
    ClientInviteTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    Transaction,
)
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.uri import SIPURI, Address

if TYPE_CHECKING:
    from pipecat_sip.sip.useragent import UserAgent

__all__ = [
    "TRANSITIONS",
    "CallState",
    "InviteEvent",
    "InviteSession",
    "InviteUsage",
    "MODIFICATION_TRANSITIONS",
    "Modification",
    "ModificationEvent",
    "Role",
    "SessionTimer",
    "next_state",
]

SDP = "application/sdp"
MAX_FORKS = 8
"""Most 2xx from other forks of one INVITE that are ACKed and ended (RFC 3261 s.13.2.2.4)."""
#: Option tags we put in Supported (RFC 3262, RFC 4028, RFC 3891).
SUPPORTED: tuple[str, ...] = ("100rel", "timer", "replaces")


class Role(StrEnum):
    """Which side of the INVITE we are."""

    UAS = "uas"
    UAC = "uac"


class CallState(StrEnum):
    """A call's signalling state (RFC 5057 s.4 vocabulary, refined).

    Attributes:
        INCOMING: UAS: the INVITE arrived, 100 Trying sent, nothing else yet.
        CALLING: UAC: our INVITE is out, nothing came back but 100.
        EARLY: A provisional response was sent (UAS: 18x) or received (UAC:
            any 1xx, so CANCEL may be sent, RFC 3261 s.9.1); with a To tag it
            makes an early dialog (s.12.1).
        ACCEPTED: UAS: our 2xx is out, retransmitted until its ACK
            (RFC 3261 s.13.3.1.4; RFC 6026's Accepted).
        CONFIRMED: The ACK arrived (UAS) or was sent (UAC): a confirmed dialog.
        TERMINATING: Our BYE (or, as UAC, CANCEL) waits for its final response.
        TERMINATED: Over.
    """

    INCOMING = "incoming"
    CALLING = "calling"
    EARLY = "early"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    TERMINATED = "terminated"

    @property
    def ended(self) -> bool:
        """Whether the call is over for the application (terminating or terminated)."""
        return self in (CallState.TERMINATING, CallState.TERMINATED)


class InviteEvent(StrEnum):
    """What moves a call between states (sent or received, as the role implies).

    Attributes:
        PROVISIONAL: UAS sends 18x; UAC receives 1xx.
        ACCEPT: UAS sends 2xx; UAC receives 2xx (and ACKs it).
        ACK: UAS receives the ACK for its 2xx.
        REJECT: A final 3xx-6xx: UAS sends it (reject, 480, 487); UAC receives it.
        CANCEL: UAS receives CANCEL; UAC sends CANCEL.
        BYE_SENT: We send BYE (also when the ACK never came: RFC 3261 s.13.3.1.4).
        BYE_RECEIVED: The peer's BYE.
        BYE_DONE: Our BYE got its final response or timed out.
        TIMEOUT: No final response (UAC Timer B, or 64*T1 after CANCEL).
        RETRY: UAC: the INVITE is sent again as a new transaction (CSeq + 1,
            new branch, same Call-ID and From tag) after a 401/407 challenge
            (RFC 3261 s.22.2), a 422 (RFC 4028 s.7.4) or, to the next
            destination, a timeout or 503 (RFC 3263 s.4.3).
        ERROR: The call cannot go on (a malformed 2xx, a failure answered 500).
    """

    PROVISIONAL = "provisional"
    ACCEPT = "accept"
    ACK = "ack"
    REJECT = "reject"
    CANCEL = "cancel"
    BYE_SENT = "bye_sent"
    BYE_RECEIVED = "bye_received"
    BYE_DONE = "bye_done"
    TIMEOUT = "timeout"
    RETRY = "retry"
    ERROR = "error"


S, E, UAS, UAC = CallState, InviteEvent, Role.UAS, Role.UAC

TRANSITIONS: dict[tuple[Role, CallState, InviteEvent], CallState] = {
    # UAS (RFC 3261 s.13.3)
    (UAS, S.INCOMING, E.PROVISIONAL): S.EARLY,
    (UAS, S.EARLY, E.PROVISIONAL): S.EARLY,
    (UAS, S.INCOMING, E.ACCEPT): S.ACCEPTED,
    (UAS, S.EARLY, E.ACCEPT): S.ACCEPTED,
    (UAS, S.INCOMING, E.REJECT): S.TERMINATED,
    (UAS, S.EARLY, E.REJECT): S.TERMINATED,
    (UAS, S.INCOMING, E.CANCEL): S.TERMINATED,
    (UAS, S.EARLY, E.CANCEL): S.TERMINATED,
    (UAS, S.EARLY, E.BYE_RECEIVED): S.TERMINATED,
    (UAS, S.ACCEPTED, E.ACK): S.CONFIRMED,
    (UAS, S.ACCEPTED, E.BYE_RECEIVED): S.TERMINATED,
    (UAS, S.ACCEPTED, E.BYE_SENT): S.TERMINATING,  # no ACK within 64*T1
    (UAS, S.CONFIRMED, E.BYE_SENT): S.TERMINATING,
    (UAS, S.CONFIRMED, E.BYE_RECEIVED): S.TERMINATED,
    (UAS, S.TERMINATING, E.BYE_DONE): S.TERMINATED,
    (UAS, S.TERMINATING, E.BYE_RECEIVED): S.TERMINATED,  # BYEs crossed
    # UAC (RFC 3261 s.13.2, s.9.1)
    (UAC, S.CALLING, E.PROVISIONAL): S.EARLY,
    (UAC, S.EARLY, E.PROVISIONAL): S.EARLY,
    (UAC, S.CALLING, E.ACCEPT): S.CONFIRMED,
    (UAC, S.EARLY, E.ACCEPT): S.CONFIRMED,
    (UAC, S.CALLING, E.REJECT): S.TERMINATED,
    (UAC, S.EARLY, E.REJECT): S.TERMINATED,
    (UAC, S.CALLING, E.TIMEOUT): S.TERMINATED,
    (UAC, S.CALLING, E.RETRY): S.CALLING,
    (UAC, S.EARLY, E.RETRY): S.CALLING,  # a proxy's 100 Trying, then its 407
    (UAC, S.EARLY, E.TIMEOUT): S.TERMINATED,
    (UAC, S.EARLY, E.CANCEL): S.TERMINATING,
    (UAC, S.TERMINATING, E.ACCEPT): S.TERMINATING,  # 2xx crossed our CANCEL: ACK, then BYE
    (UAC, S.TERMINATING, E.BYE_SENT): S.TERMINATING,
    (UAC, S.TERMINATING, E.REJECT): S.TERMINATED,  # 487 to the cancelled INVITE
    (UAC, S.TERMINATING, E.TIMEOUT): S.TERMINATED,
    (UAC, S.CONFIRMED, E.BYE_SENT): S.TERMINATING,
    (UAC, S.CONFIRMED, E.BYE_RECEIVED): S.TERMINATED,
    (UAC, S.TERMINATING, E.BYE_DONE): S.TERMINATED,
    (UAC, S.TERMINATING, E.BYE_RECEIVED): S.TERMINATED,
}
# Any live call can fail.
for _role in Role:
    for _state in CallState:
        if _state is not S.TERMINATED:
            TRANSITIONS[(_role, _state, E.ERROR)] = S.TERMINATED
del _role, _state


def next_state(role: Role, state: CallState, event: InviteEvent) -> CallState:
    """The state ``event`` moves a call to.

    Raises:
        LocalProtocolError: The table has no such move.
    """
    try:
        return TRANSITIONS[(role, state, event)]
    except KeyError:
        raise LocalProtocolError(f"{role} call: no transition from {state} on {event}") from None


class Modification(StrEnum):
    """The session-modification state beside the main one (RFC 6337 s.3.1, simplified).

    Attributes:
        IDLE: No offer/answer exchange in progress after the initial one.
        REOFFER_RECEIVED: A re-INVITE's or UPDATE's offer waits for our
            answer (:meth:`InviteUsage.answer_reoffer`).
        OFFER_SENT: Our re-INVITE or UPDATE with an offer waits for its answer.
    """

    IDLE = "idle"
    REOFFER_RECEIVED = "reoffer_received"
    OFFER_SENT = "offer_sent"


class ModificationEvent(StrEnum):
    """What moves the session-modification state.

    Attributes:
        OFFER_RECEIVED: A re-INVITE or UPDATE with an offer arrived.
        ANSWERED: We answered it (2xx with our answer).
        REFUSED: We refused it (488, 491, 500), or it was cancelled.
        OFFER_SENT: We sent a re-INVITE or UPDATE with an offer.
        ANSWER_RECEIVED: Its 2xx came (with the answer).
        FAILED: It failed (a 3xx-6xx, a timeout).
    """

    OFFER_RECEIVED = "offer_received"
    ANSWERED = "answered"
    REFUSED = "refused"
    OFFER_SENT = "offer_sent"
    ANSWER_RECEIVED = "answer_received"
    FAILED = "failed"


M, ME = Modification, ModificationEvent
MODIFICATION_TRANSITIONS: dict[tuple[Modification, ModificationEvent], Modification] = {
    (M.IDLE, ME.OFFER_RECEIVED): M.REOFFER_RECEIVED,
    (M.REOFFER_RECEIVED, ME.ANSWERED): M.IDLE,
    (M.REOFFER_RECEIVED, ME.REFUSED): M.IDLE,
    (M.IDLE, ME.OFFER_SENT): M.OFFER_SENT,
    (M.OFFER_SENT, ME.ANSWER_RECEIVED): M.IDLE,
    (M.OFFER_SENT, ME.FAILED): M.IDLE,
}


@dataclass(eq=False)
class SessionTimer:
    """A call's running session timer (RFC 4028 s.10).

    Attributes:
        interval: The session interval, seconds.
        we_refresh: Whether we send the refreshes (else we wait for them).
        refreshed_at: When the session was last refreshed, seconds.
        timer: The refresh (we refresh) or BYE (they refresh) deadline.
        refreshes: Refreshes sent (we refresh) or received.
    """

    interval: int
    we_refresh: bool
    refreshed_at: float
    timer: Timer | None = None
    refreshes: int = 0


@dataclass(eq=False)
class InviteSession:
    """One call's signalling state (an INVITE dialog usage).

    Attributes:
        call_id: The Call-ID.
        role: UAS or UAC.
        local_tag: Our tag.
        invite: The initial INVITE.
        invite_txn: The transaction of the latest INVITE (the initial one or
            a re-INVITE): its CSeq is what an ACK must carry.
        flow: Where the INVITE came from (UAS) or went (UAC).
        state: The main state; change it only with :meth:`apply`.
        dialog: The dialog once there is one.
        local_sdp: Our current session description (answer or offer).
        modification: The session-modification state.
        reoffer_txn: The re-INVITE transaction waiting for our answer.
        bye_pending: UAS: hang up as soon as the ACK (or its timeout) comes.
        cancel_pending: UAC: send CANCEL once a provisional response came.
        ack_bytes: UAC: the ACK of the 2xx, re-sent for 2xx retransmissions.
        ok_response: UAS: the 2xx being retransmitted until its ACK.
        ok_timer: UAS: the 2xx retransmission timer.
        ack_timer: UAS: the 64*T1 wait for the ACK.
        digest: UAC: answers the INVITE's 401/407 challenges (and those of
            requests inside the dialog), or None without credentials.
        targets: UAC: the destinations left to try (RFC 3263), or None.
        provisional_seen: UAC: the current INVITE transaction got a 101-199
            (then a 503 no longer fails over).
        early_dialog: An early dialog (UAC: from a tagged 1xx with Contact;
            UAS: from our first 18x), for PRACK and UPDATE before the answer.
        peer_allow: The methods the peer says it accepts (its Allow).
        reliable: UAS: the reliable provisional responses (RFC 3262) in
            flight and queued, once one was sent.
        reliable_timer: UAS: the retransmission of the one in flight.
        pending_answer: UAS: the 2xx body held until the PRACK of a reliable
            provisional response with SDP (RFC 3262 s.3).
        last_rseq: UAC: the RSeq of the last reliable provisional acknowledged.
        session_timer: The running session timer (RFC 4028), or None.
        timer_answer: UAS: the session-timer headers for the 2xx being prepared.
        modification_txn: The re-INVITE or UPDATE we sent, while it waits.
        fork_acks: UAC: the ACKs of 2xx responses from other forks and where
            they went (by the fork's To tag), re-sent for their
            retransmissions (RFC 3261 s.13.2.2.4).
    """

    call_id: str
    role: Role
    local_tag: str
    invite: SIPRequest
    invite_txn: Transaction
    flow: Flow
    state: CallState
    dialog: Dialog | None = None
    local_sdp: bytes = b""
    modification: Modification = Modification.IDLE
    reoffer_txn: ServerTransaction | None = None
    bye_pending: bool = False
    cancel_pending: bool = False
    ack_bytes: bytes | None = None
    ok_response: SIPResponse | None = None
    ok_timer: Timer | None = None
    ack_timer: Timer | None = None
    digest: DigestClient | None = None
    targets: TargetList | None = None
    provisional_seen: bool = False
    auth_retries: int = 0
    early_dialog: Dialog | None = None
    early_offer_answer: bool = False
    peer_allow: frozenset[str] = frozenset()
    reliable: ReliableProvisionals | None = None
    reliable_timer: Timer | None = None
    pending_answer: bytes | None = None
    last_rseq: int | None = None
    session_timer: SessionTimer | None = None
    timer_answer: UASAnswer | None = None
    modification_txn: Transaction | None = None
    timer_retried: bool = False
    fork_acks: dict[str, tuple[bytes, Flow]] = field(default_factory=dict)

    @property
    def current_dialog(self) -> Dialog | None:
        """The confirmed dialog, else the early one, else None."""
        return self.dialog if self.dialog is not None else self.early_dialog

    def apply(self, event: InviteEvent) -> CallState:
        """Move the state as the table says and return the new one.

        Raises:
            LocalProtocolError: The table has no such move.
        """
        self.state = next_state(self.role, self.state, event)
        return self.state

    def can(self, event: InviteEvent) -> bool:
        """Whether ``event`` is a legal move now."""
        return (self.role, self.state, event) in TRANSITIONS

    def modify(self, event: ModificationEvent) -> Modification:
        """Move the session-modification state as its table says.

        Raises:
            LocalProtocolError: The table has no such move.
        """
        try:
            self.modification = MODIFICATION_TRANSITIONS[(self.modification, event)]
        except KeyError:
            raise LocalProtocolError(
                f"call {self.call_id}: no session-modification move from "
                f"{self.modification} on {event}"
            ) from None
        return self.modification


@dataclass(eq=False)
class InDialogRequest:
    """A request we sent inside a call's dialog, followed to its final response.

    A 401/407 is answered with the call's credentials and the request sent
    again (new CSeq and branch) before ``on_final`` hears of anything.

    Attributes:
        session: The call.
        method: BYE, INFO, UPDATE, REFER, PRACK, NOTIFY, INVITE (re-INVITE).
        headers: Its extra headers (sent again on a retry).
        body: Its body.
        content_type: The body's Content-Type.
        on_final: ``on_final(response, now)`` for each final response (a
            re-INVITE's 2xx retransmissions too), None to ignore.
        on_timeout: ``on_timeout(now)`` when no final response came (Timer B/F).
        txn: The transaction now in flight.
        request: The request now in flight.
        early: Sent in the early dialog.
    """

    session: InviteSession
    method: str
    headers: list[tuple[str, object]]
    body: bytes
    content_type: str | None
    on_final: Callable[[SIPResponse, float], None] | None
    on_timeout: Callable[[float], None] | None
    txn: Transaction | None = None
    request: SIPRequest | None = None
    early: bool = False
    retries: int = 0
    route_uri: object = None


class InviteUsage:
    """Calls over a :class:`~pipecat_sip.sip.useragent.UserAgent`: the INVITE dialog usage.

    The user agent routes to it: new INVITEs, requests inside its dialogs,
    ACKs, CANCELs and the transaction reports of its transactions. The
    application acts through the user agent's methods, which delegate here.

    Args:
        ua: The user agent (transaction layer, timers, identifiers, events).
        trust_in_dialog_from: Where in-dialog requests may come from:
            ``"peer"`` (default: the INVITE's source address, the remote
            target's host or the first route's host; anything else gets 403)
            or ``"any"`` (a deployment behind a proxy that rewrites sources).
        reliable_provisionals: Send 18x reliably (RFC 3262) when the INVITE
            supports 100rel (when it requires it, always).
    """

    def __init__(
        self,
        ua: UserAgent,
        *,
        trust_in_dialog_from: str = "peer",
        reliable_provisionals: bool = False,
    ) -> None:
        if trust_in_dialog_from not in ("peer", "any"):
            raise ValueError(
                f"trust_in_dialog_from must be 'peer' or 'any', not {trust_in_dialog_from!r}"
            )
        self.ua = ua
        self.trust_in_dialog_from = trust_in_dialog_from
        self.reliable_provisionals = reliable_provisionals
        self.sessions: dict[str, InviteSession] = {}
        self._by_dialog: dict[DialogId, InviteSession] = {}
        self._by_txn: dict[Transaction, InviteSession] = {}
        self._requests: dict[Transaction, InDialogRequest] = {}

    # --- lookups ----------------------------------------------------------------
    def session(self, call_id: str) -> InviteSession | None:
        """The live call with this Call-ID, or None."""
        return self.sessions.get(call_id)

    def by_dialog(self, dialog_id: DialogId) -> InviteSession | None:
        """The live call of a dialog, or None."""
        return self._by_dialog.get(dialog_id)

    def owns(self, txn: Transaction) -> bool:
        """Whether ``txn`` belongs to a call."""
        return txn in self._by_txn

    @property
    def tracked(self) -> int:
        """Entries in the lookup tables (for leak checks: 0 when idle)."""
        return len(self.sessions) + len(self._by_dialog) + len(self._by_txn) + len(self._requests)

    # --- UAS --------------------------------------------------------------------
    def on_invite(
        self,
        req: SIPRequest,
        txn: ServerTransaction,
        flow: Flow,
        now: float,
        *,
        user: str | None = None,
    ) -> None:
        """A new INVITE outside any dialog (its server transaction is made).

        ``user`` is the Digest user name it was authenticated as, if any.
        """
        ua = self.ua
        from_tag = req.from_.tag
        for session in self.sessions.values():  # merged request (RFC 3261 s.8.2.2.2)
            if (
                session.role is Role.UAS
                and session.call_id == req.call_id
                and session.invite.from_.tag == from_tag
                and session.invite.cseq == req.cseq
            ):
                ua.respond(txn, 482, now)
                return
        if not req.contacts:
            ua.respond(txn, 400, now, reason="Bad Request - missing Contact")
            return
        if req.call_id in self.sessions:
            ua.respond(txn, 482, now)
            return
        timer = uas_answer(req, ua.session_timers)
        if timer.min_se is not None:  # Session Interval Too Small (RFC 4028 s.8.1)
            ua.respond(txn, 422, now, headers=[("Min-SE", timer.min_se)])
            return
        replaced = None
        replaces_values = req.headers.get_all("Replaces")
        if replaces_values:
            replaced = self._replaced_call(replaces_values)
            if replaced is None:  # RFC 3891 s.3: no such dialog, or not replaceable
                ua.respond(txn, 481 if len(replaces_values) == 1 else 400, now)
                return
        session = InviteSession(
            call_id=req.call_id,
            role=Role.UAS,
            local_tag=ua.ids.tag(),
            invite=req,
            invite_txn=txn,
            flow=flow,
            state=CallState.INCOMING,
            timer_answer=timer,
        )
        self._note_allow(session, req)
        self._track(session, txn)
        self._respond(session, 100, now)
        ua.emit(IncomingCall(req.call_id, req, flow, user, replaced))

    def _replaced_call(self, values: list[str]) -> str | None:
        """The Call-ID of the live call a Replaces header names (RFC 3891 s.3), or None."""
        from pipecat_sip.sip.refer import Replaces

        if len(values) != 1:
            return None
        try:
            replaces = Replaces.parse(values[0])
        except ValueError:
            return None
        session = self._by_dialog.get((replaces.call_id, replaces.to_tag, replaces.from_tag))
        if session is None or session.state.ended:
            return None
        if session.dialog is None:  # early: only a UAC's early dialog can be replaced
            return session.call_id if session.role is Role.UAC else None
        if replaces.early_only:
            return None
        return session.call_id

    def ringing(
        self,
        call_id: str,
        now: float,
        *,
        status_code: int = 180,
        sdp: bytes = b"",
        reliable: bool | None = None,
    ) -> None:
        """Send a provisional response (180 Ringing, 183 Session Progress) for an incoming call.

        The first one makes the early dialog (RFC 3261 s.12.1.1). With
        ``sdp`` the response carries our answer: early media (RFC 3960).

        Reliable (RFC 3262): always when the INVITE requires 100rel; when it
        only supports it, if ``reliable`` is True (None: the UA's
        ``reliable_provisionals`` setting). A reliable one is retransmitted
        (T1, doubling) until its PRACK; after 64*T1 without one the INVITE
        is rejected 500 (s.3). One at a time: later ones wait their turn.

        Raises:
            LocalProtocolError: Unknown call, not ringing any more, or a status
                outside 101-199.
        """
        if not 100 < status_code < 200:
            raise LocalProtocolError(f"a provisional response is 101-199, not {status_code}")
        session = self._uas(call_id, (CallState.INCOMING, CallState.EARLY))
        self._early_uas_dialog(session)
        session.apply(InviteEvent.PROVISIONAL)
        if sdp:
            session.local_sdp = sdp
        response = self._response(session, status_code, body=sdp)
        invite = session.invite
        want = self.reliable_provisionals if reliable is None else reliable
        if requires_100rel(invite) or (want and supports_100rel(invite)):
            self._send_reliable(session, response, now)
            return
        self._respond_with(session, response, now)

    # --- reliable provisional responses (UAS, RFC 3262 s.3) ---------------------------
    def _send_reliable(self, session: InviteSession, response: SIPResponse, now: float) -> None:
        rel = session.reliable
        if rel is None:
            rel = session.reliable = ReliableProvisionals(
                next_rseq=self.ua.ids.rng.randrange(1, MAX_RSEQ // 2)
            )
        item = rel.prepare(response)
        if rel.outstanding is None:
            self._transmit_reliable(session, item, now)
        else:
            rel.queue.append(item)

    def _transmit_reliable(self, session: InviteSession, item, now: float) -> None:
        ua = self.ua
        rel = session.reliable
        assert rel is not None
        rel.outstanding = item
        t1 = ua.layer.timer_values.t1
        item.first_sent, item.interval = now, t1
        self._respond_with(session, item.response, now)
        give_up = now + 64 * t1

        def retransmit(at: float) -> None:
            session.reliable_timer = None
            if rel.outstanding is not item or session.state not in (
                CallState.INCOMING,
                CallState.EARLY,
            ):
                return
            if at >= give_up:
                self._reliable_timeout(session, at)
                return
            self._respond_with(session, item.response, at)
            item.interval *= 2
            session.reliable_timer = ua.timers.start(
                "reliable 1xx retransmit", min(at + item.interval, give_up), retransmit
            )

        session.reliable_timer = ua.timers.start("reliable 1xx retransmit", now + t1, retransmit)

    def _reliable_timeout(self, session: InviteSession, now: float) -> None:
        """No PRACK in 64*T1: reject the INVITE with a 5xx (RFC 3262 s.3)."""
        self.ua.notice(
            "warning", "no PRACK for a reliable provisional response: 500", session.call_id,
            kind="no_prack",
        )  # fmt: skip
        self._stop_reliable(session)
        session.pending_answer = None
        self._respond(session, 500, now, reason="Reliable Provisional Response Not Acknowledged")
        session.apply(InviteEvent.REJECT)
        self._end(session, "no_prack", 500)

    def _stop_reliable(self, session: InviteSession) -> None:
        if session.reliable_timer is not None:
            session.reliable_timer.cancel()
            session.reliable_timer = None
        if session.reliable is not None:
            session.reliable.clear()

    def _on_prack(
        self, session: InviteSession, req: SIPRequest, txn: ServerTransaction, now: float
    ) -> None:
        """A PRACK (RFC 3262 s.3): 200 if it acknowledges the response in flight, else 481."""
        ua = self.ua
        try:
            rack = RAck.parse(req.headers.get("RAck") or "")
        except ValueError as exc:
            ua.respond(txn, 400, now, reason=f"Bad Request ({exc})"[:80])
            return
        rel = session.reliable
        if rel is not None and rel.acknowledges_late(rack, session.invite.cseq.seq):
            ua.respond(txn, 200, now)  # it crossed our final response: nothing more to do
            return
        if (
            rel is None
            or session.role is not Role.UAS
            or not rel.matches(rack, session.invite.cseq.seq)
        ):
            ua.respond(txn, 481, now)
            return
        ua.respond(txn, 200, now)
        item = rel.outstanding
        assert item is not None
        rel.outstanding = None
        rel.acknowledged += 1
        if session.reliable_timer is not None:
            session.reliable_timer.cancel()
            session.reliable_timer = None
        if item.has_sdp:
            session.early_offer_answer = True
        if session.state not in (CallState.INCOMING, CallState.EARLY):
            return
        if rel.queue:
            self._transmit_reliable(session, rel.queue.popleft(), now)
        if session.pending_answer is not None and not rel.sdp_unacknowledged:
            sdp, session.pending_answer = session.pending_answer, None
            self._send_answer(session, sdp, now)

    def _early_uas_dialog(self, session: InviteSession) -> Dialog:
        """The UAS's early dialog, made with the first 18x (its id is the confirmed one's)."""
        if session.early_dialog is None:
            try:
                dialog = Dialog.from_uas(session.invite, session.local_tag, session.flow)
            except RemoteProtocolError as exc:  # checked on arrival: not reached
                raise LocalProtocolError(str(exc)) from exc
            session.early_dialog = dialog
            self._by_dialog[dialog.id] = session
        return session.early_dialog

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send 200 OK with our SDP; it is retransmitted until the ACK (RFC 3261 s.13.3.1.4).

        Raises:
            LocalProtocolError: Unknown call, or not in a state to be answered.
        """
        session = self._uas(call_id, (CallState.INCOMING, CallState.EARLY))
        rel = session.reliable
        if rel is not None and rel.sdp_unacknowledged:
            session.pending_answer = sdp  # sent with the PRACK (RFC 3262 s.3)
            session.local_sdp = sdp
            return
        self._send_answer(session, sdp, now)

    def _send_answer(self, session: InviteSession, sdp: bytes, now: float) -> None:
        dialog = self._early_uas_dialog(session)
        self._stop_reliable(session)
        session.local_sdp = sdp
        session.dialog = dialog
        session.apply(InviteEvent.ACCEPT)
        timer = session.timer_answer
        session.timer_answer = None
        headers = list(timer.headers) if timer is not None else []
        response = self._response(session, 200, body=sdp, headers=headers)
        self._send_2xx(session, session.invite_txn, response, now)
        if timer is not None:
            self._start_session_timer(session, timer.negotiation, now)

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

        ``retransmit=False`` sends it once, without Timer G retransmissions
        (refusals under overload: see `ServerInviteTransaction.send_response`).

        Raises:
            LocalProtocolError: Unknown call, already answered, or status < 300.
        """
        if status_code < 300:
            raise LocalProtocolError(f"reject needs a status >= 300, not {status_code}")
        session = self._uas(call_id, (CallState.INCOMING, CallState.EARLY))
        self._respond(
            session, status_code, now, reason=reason, headers=headers, retransmit=retransmit
        )
        session.apply(InviteEvent.REJECT)
        self._end(session, "rejected", status_code)

    def answer_reoffer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the pending re-INVITE's offer with 200 and ``sdp`` (RFC 3264 s.8).

        Raises:
            LocalProtocolError: No re-offer is waiting for an answer.
        """
        session, txn = self._pending_reoffer(call_id)
        session.local_sdp = sdp
        self._accept_reinvite(session, txn, now)

    def reject_reoffer(
        self, call_id: str, status_code: int, now: float, *, reason: str | None = None
    ) -> None:
        """Refuse the pending re-INVITE (488: the session stays as it was, RFC 3261 s.14.2).

        Raises:
            LocalProtocolError: No re-offer is waiting, or status < 300.
        """
        if status_code < 300:
            raise LocalProtocolError(f"reject_reoffer needs a status >= 300, not {status_code}")
        session, txn = self._pending_reoffer(call_id)
        session.modify(ModificationEvent.REFUSED)
        session.reoffer_txn = None
        self.ua.respond(txn, status_code, now, reason=reason, to_tag=session.local_tag)

    def update_local_sdp(self, call_id: str, sdp: bytes) -> None:
        """Set the session description used to answer later re-INVITEs without an offer."""
        session = self.sessions.get(call_id)
        if session is not None:
            session.local_sdp = sdp

    # --- UAC --------------------------------------------------------------------
    def invite(
        self,
        uri: SIPURI,
        sdp: bytes,
        now: float,
        *,
        flow: Flow,
        from_user: str | None = None,
        from_host: str | None = None,
        display_name: str | None = None,
        to: SIPURI | Address | None = None,
        headers: Iterable[tuple[str, object]] = (),
        credentials: Credentials | None = None,
        targets: TargetList | None = None,
    ) -> str:
        """Place a call: send an INVITE with our SDP offer to ``flow``; returns its Call-ID.

        Args:
            uri: The Request-URI.
            sdp: Our offer (empty: a delayed offer is not supported as UAC).
            now: The current time, seconds.
            flow: Where to send it (the first of ``targets`` when given).
            from_user: User part of From (default our user).
            from_host: Host part of From (default our address).
            display_name: Display name in From.
            to: The To address (default the Request-URI without parameters).
            headers: Further headers (X-, P-Asserted-Identity, ...).
            credentials: Answer 401/407 challenges with these (RFC 3261 s.22.2).
            targets: Destinations to fail over to on a timeout or 503 before
                any provisional response (RFC 3263 s.4.3); ``flow`` is the
                first.
        """
        ua = self.ua
        call_id = ua.ids.call_id(ua.host)
        local_tag = ua.ids.tag()
        from_uri = SIPURI(from_host or ua.host_for(flow), user=from_user or ua.user)
        if to is None:
            to = Address(SIPURI(uri.host, user=uri.user, port=uri.port, scheme=uri.scheme))
        elif isinstance(to, SIPURI):
            to = Address(to)
        h = Headers()
        h.add("Via", ua.new_via(flow))
        h.add("Max-Forwards", "70")
        h.add("From", Address(from_uri, display_name, {"tag": local_tag}))
        h.add("To", to)
        h.add("Call-ID", call_id)
        h.add("CSeq", CSeq(ua.ids.cseq(), "INVITE"))
        h.add("Contact", ua.contact_for(flow, secure=uri.scheme == "sips"))
        ua.add_common_headers(h)
        if SUPPORTED:
            h.add("Supported", ", ".join(SUPPORTED))
        if ua.session_timers.enabled:
            for name, value in uac_offer(ua.session_timers):
                h.add(name, value)
        for name, value in headers:
            h.add(name, value)
        h.add("Content-Type", SDP)
        request = SIPRequest("INVITE", uri, h, sdp)
        txn = ua.send_request(request, flow, now, self)
        session = InviteSession(
            call_id=call_id,
            role=Role.UAC,
            local_tag=local_tag,
            invite=request,
            invite_txn=txn,
            flow=flow,
            state=CallState.CALLING,
            local_sdp=sdp,
            targets=targets,
        )
        if credentials is not None:
            session.digest = DigestClient(credentials, ua.ids.token)
        self._track(session, txn)
        return call_id

    def _resend_invite(
        self,
        session: InviteSession,
        now: float,
        *,
        flow: Flow | None = None,
        replace: Iterable[tuple[str, object]] = (),
    ) -> None:
        """Send the INVITE again as a new transaction (RFC 3261 s.22.2, RFC 3263 s.4.3).

        Same Call-ID, From tag, To, body and headers; a new branch, CSeq + 1,
        the Authorization headers of the session's Digest answers, and
        ``replace``'s headers in place of those of the same names.

        Args:
            session: The call (UAC, no dialog yet).
            now: The current time, seconds.
            flow: Send it there (the next destination) instead of the session's flow.
            replace: Headers to put in place of the INVITE's (Session-Expires, ...).
        """
        ua = self.ua
        old = session.invite
        if flow is not None:
            session.flow = flow
        flow = session.flow
        replaced = {name.lower(): (name, value) for name, value in replace}
        drop = {"via", "cseq", "contact", "authorization", "proxy-authorization"}
        h = Headers()
        h.add("Via", ua.new_via(flow))
        for name, value in old.headers:
            key = name.lower()
            if key == "cseq":
                h.add("CSeq", CSeq(old.cseq.seq + 1, "INVITE"))
                h.add("Contact", ua.contact_for(flow))
                if session.digest is not None:
                    for auth_name, auth_value in session.digest.headers("INVITE", str(old.uri)):
                        h.add(auth_name, auth_value)
                continue
            if key in drop:
                continue
            if key in replaced:
                h.add(*replaced.pop(key))
                continue
            h.add(name, value)
        for name, value in replaced.values():
            h.add(name, value)
        request = SIPRequest("INVITE", old.uri, h, old.body)
        txn = ua.send_request(request, flow, now, self)
        session.invite = request
        session.invite_txn = txn
        session.provisional_seen = False
        session.early_dialog = None
        session.apply(InviteEvent.RETRY)
        self._by_txn[txn] = session

    def _retry_failed_invite(
        self, session: InviteSession, response: SIPResponse, now: float
    ) -> bool:
        """Answer a challenge or fail over after a final error to our INVITE; False if neither."""
        code = response.status_code
        if session.state is not CallState.CALLING and session.state is not CallState.EARLY:
            return False
        if session.cancel_pending:
            return False
        if code in (401, 407) and session.digest is not None:
            if session.auth_retries < 2 and session.digest.answer(response, session.invite):
                session.auth_retries += 1
                self._resend_invite(session, now)
                return True
            self.ua.notice(
                "warning",
                f"INVITE {code}: {session.digest.refused_reason}",
                session.call_id,
                kind="auth_refused",
            )
            return False
        if code == 422 and not session.timer_retried:  # RFC 4028 s.7.4
            min_se = parse_min_se(response.headers.get("Min-SE"))
            asked = SessionExpires.of(session.invite)
            if min_se is not None and (asked is None or min_se > asked.delta):
                session.timer_retried = True
                self._resend_invite(
                    session,
                    now,
                    replace=[("Session-Expires", str(min_se)), ("Min-SE", str(min_se))],
                )
                return True
            return False
        if (
            session.targets is not None
            and TargetList.should_fail_over(code)
            and not session.provisional_seen
        ):
            return self._fail_over(session, f"{code}", now)
        return False

    def _fail_over(self, session: InviteSession, reason: str, now: float) -> bool:
        """Send the INVITE to the next destination (RFC 3263 s.4.3); False when none is left."""
        targets = session.targets
        assert targets is not None
        failed = targets.current
        nxt = targets.failed(reason)
        if nxt is None:
            return False
        self.ua.notice(
            "info",
            f"INVITE to {failed.ip if failed else '?'}:{failed.port if failed else '?'} "
            f"failed ({reason}); trying {nxt.ip}:{nxt.port} ({nxt.transport})",
            session.call_id,
            kind="failover",
        )
        self._resend_invite(session, now, flow=Flow(nxt.transport.upper(), (nxt.ip, nxt.port)))
        return True

    # --- session modification we start (re-INVITE, UPDATE) ---------------------------
    def update(
        self,
        call_id: str,
        now: float,
        *,
        sdp: bytes | None = None,
        headers: Iterable[tuple[str, object]] = (),
    ) -> None:
        """Send UPDATE (RFC 3311) in the early or confirmed dialog, with an offer or without.

        The outcome is a :class:`~pipecat_sip.sip.events.ModificationAnswered`
        (a 2xx with the answer, or the failure's status).

        Raises:
            LocalProtocolError: No such call, no dialog, or an offer exchange
                already in progress (RFC 3311 s.5.1).
        """
        session = self._modifiable(call_id, offer=sdp is not None, method="UPDATE")
        self._send_modification(session, "UPDATE", sdp, list(headers), now)

    def reinvite(
        self,
        call_id: str,
        now: float,
        *,
        sdp: bytes | None = None,
        headers: Iterable[tuple[str, object]] = (),
    ) -> None:
        """Send a re-INVITE (RFC 3261 s.14.1) with ``sdp`` (default: our current description).

        Raises:
            LocalProtocolError: No such confirmed call, or an offer exchange
                already in progress.
        """
        session = self._modifiable(call_id, offer=True, method="INVITE")
        self._send_modification(session, "INVITE", sdp or session.local_sdp, list(headers), now)

    def _modifiable(self, call_id: str, *, offer: bool, method: str) -> InviteSession:
        session = self.sessions.get(call_id)
        if session is None or session.state.ended:
            raise LocalProtocolError(f"no call {call_id}")
        if method == "INVITE" and session.state is not CallState.CONFIRMED:
            raise LocalProtocolError(f"call {call_id} is {session.state}: no re-INVITE")
        if session.current_dialog is None:
            raise LocalProtocolError(f"call {call_id} has no dialog yet")
        if session.modification_txn is not None or (
            offer and session.modification is not Modification.IDLE
        ):
            raise LocalProtocolError(f"call {call_id}: an offer/answer exchange is in progress")
        if offer and method == "UPDATE" and not self._offer_answer_done(session):
            raise LocalProtocolError(f"call {call_id}: the initial offer/answer is not done")
        return session

    def _send_modification(
        self,
        session: InviteSession,
        method: str,
        sdp: bytes | None,
        headers: list[tuple[str, object]],
        now: float,
        *,
        on_done: Callable[[SIPResponse | None, float], None] | None = None,
    ) -> None:
        """Send a re-INVITE or UPDATE; its final response (2xx ACKed) goes to ``on_done``."""
        ua = self.ua
        if sdp is not None:
            session.modify(ModificationEvent.OFFER_SENT)
            session.local_sdp = sdp
        extra: list[tuple[str, object]] = [("Supported", ", ".join(SUPPORTED))]
        if method == "INVITE":
            extra.append(("Allow", ", ".join(ua.allowed_methods())))
        extra += headers
        acked: list[bool] = []

        def final(response: SIPResponse | None, at: float) -> None:
            record_txn = record.txn
            if response is not None and 200 <= response.status_code < 300:
                if method == "INVITE":
                    self._ack_reinvite(session, record, response)
                if acked:
                    return  # a 2xx retransmission: ACKed again, nothing else
                acked.append(True)
            if session.modification_txn is record_txn:
                session.modification_txn = None
            if sdp is not None and session.modification is Modification.OFFER_SENT:
                ok = response is not None and 200 <= response.status_code < 300
                session.modify(
                    ModificationEvent.ANSWER_RECEIVED if ok else ModificationEvent.FAILED
                )
            if response is not None and 200 <= response.status_code < 300:
                self._note_allow(session, response)
                if response.contacts and session.current_dialog is not None:
                    session.current_dialog.remote_target = response.contacts[0].uri
            code = response.status_code if response is not None else 408
            ua.emit(ModificationAnswered(session.call_id, method, code, response))
            if on_done is not None:
                on_done(response, at)

        record = self.send_in_dialog(
            session,
            method,
            now,
            headers=extra,
            body=sdp or b"",
            content_type=SDP if sdp else None,
            on_final=final,
            on_timeout=lambda at: final(None, at),
        )
        session.modification_txn = record.txn

    def _ack_reinvite(
        self, session: InviteSession, record: InDialogRequest, response: SIPResponse
    ) -> None:
        """ACK our re-INVITE's 2xx (RFC 3261 s.13.2.2.4), again for each retransmission."""
        dialog = session.dialog
        request = record.request
        if dialog is None or request is None:
            return
        hop = dialog.next_hop()
        ack = dialog.create_request(
            "ACK", self.ua.new_via(hop), cseq=request.cseq.seq, headers=self.ua.ua_headers()
        )
        session.ack_bytes = bytes(ack)
        self.ua.layer.send(session.ack_bytes, hop)

    # --- session timers (RFC 4028 s.10) ------------------------------------------------
    def _start_session_timer(
        self,
        session: InviteSession,
        negotiation: TimerNegotiation | None,
        now: float,
        *,
        received: bool = False,
    ) -> None:
        """(Re)start the call's session timer after a refresh, or stop it (None)."""
        self._stop_session_timer(session)
        if negotiation is None:
            session.session_timer = None
            return
        previous = session.session_timer
        timer = SessionTimer(negotiation.interval, negotiation.we_refresh, now)
        if previous is not None:
            timer.refreshes = previous.refreshes + (1 if received else 0)
        session.session_timer = timer
        self._arm_session_timer(session, timer, now)

    def _arm_session_timer(self, session: InviteSession, timer: SessionTimer, now: float) -> None:
        ua = self.ua
        if timer.we_refresh:
            at = timer.refreshed_at + timer.interval / 2
            timer.timer = ua.timers.start(
                "session refresh", max(at, now), lambda t: self._refresh(session, t)
            )
        else:
            at = timer.refreshed_at + timer.interval - bye_margin(timer.interval)
            timer.timer = ua.timers.start(
                "session expiry", at, lambda t: self._session_expired(session, t)
            )

    def _stop_session_timer(self, session: InviteSession) -> None:
        timer = session.session_timer
        if timer is not None and timer.timer is not None:
            timer.timer.cancel()
            timer.timer = None

    def _refresh(self, session: InviteSession, now: float, *, interval: int | None = None) -> None:
        """Send the session refresh: UPDATE when the peer allows it, else re-INVITE (s.7.4)."""
        timer = session.session_timer
        if (
            timer is None
            or session.state.ended
            or self.sessions.get(session.call_id) is not session
        ):
            return
        timer.timer = None
        ua = self.ua
        busy = (
            session.state is not CallState.CONFIRMED
            or session.modification is not Modification.IDLE
            or session.modification_txn is not None
        )
        if busy:  # try again shortly (RFC 3261 s.14.1's glare wait)
            delay = 2.1 + 1.9 * ua.ids.rng.random()
            timer.timer = ua.timers.start(
                "session refresh", now + delay, lambda t: self._refresh(session, t)
            )
            return
        interval = interval or timer.interval
        headers = uac_offer_refresh(interval, ua.session_timers)
        if "UPDATE" in session.peer_allow:
            method, sdp = "UPDATE", None
        else:
            method, sdp = "INVITE", session.local_sdp
        timer.refreshes += 1
        self._send_modification(
            session,
            method,
            sdp,
            headers,  # type: ignore[arg-type]
            now,
            on_done=lambda response, at: self._refresh_done(session, interval, response, at),
        )

    def _refresh_done(
        self, session: InviteSession, interval: int, response: SIPResponse | None, now: float
    ) -> None:
        timer = session.session_timer
        if timer is None or session.state.ended:
            return
        code = response.status_code if response is not None else 408
        if 200 <= code < 300:
            assert response is not None
            self._start_session_timer(session, uac_result(response), now)
            return
        if code == 422 and response is not None:  # RFC 4028 s.7.4: ask the larger interval
            min_se = parse_min_se(response.headers.get("Min-SE"))
            if min_se is not None and min_se > interval:
                timer.interval = min_se
                self._refresh(session, now, interval=min_se)
                return
        if code == 491:  # glare: wait and try again (RFC 3261 s.14.1)
            delay = 2.1 + 1.9 * self.ua.ids.rng.random()
            timer.timer = self.ua.timers.start(
                "session refresh", now + delay, lambda t: self._refresh(session, t)
            )
            return
        self.ua.notice(
            "warning",
            f"session refresh failed ({code})",
            session.call_id,
            kind="refresh_failed",
        )
        if code in (408, 481):  # the dialog is gone (RFC 4028 s.10)
            self._send_bye(session, now, reason="session_expired")
            return
        # Another failure: the session ends when it expires, unless refreshed meanwhile.
        timer.we_refresh = False
        self._arm_session_timer(session, timer, now)

    def _session_expired(self, session: InviteSession, now: float) -> None:
        """No refresh came in time: BYE before the session expires (RFC 4028 s.10)."""
        timer = session.session_timer
        if timer is None or session.state.ended:
            return
        timer.timer = None
        self.ua.notice(
            "warning",
            f"no session refresh within {timer.interval} s: BYE",
            session.call_id,
            kind="session_expired",
        )
        self._send_bye(session, now, reason="session_expired")

    # --- both -------------------------------------------------------------------
    def hangup(self, call_id: str, now: float) -> None:
        """End a call from our side, whatever its state; idempotent.

        UAS before answer: 480 Temporarily Unavailable. UAC before answer:
        CANCEL (once a provisional response arrived, RFC 3261 s.9.1).
        Answered, waiting for ACK: BYE as soon as the ACK (or its timeout)
        comes. Confirmed: BYE. Ending: nothing.
        """
        session = self.sessions.get(call_id)
        if session is None or session.state.ended:
            return
        state = session.state
        if session.role is Role.UAS:
            if state in (CallState.INCOMING, CallState.EARLY):
                self._respond(session, 480, now)
                session.apply(InviteEvent.REJECT)
                self._end(session, "local_bye", 480)
            elif state is CallState.ACCEPTED:
                session.bye_pending = True
            else:
                self._send_bye(session, now)
        elif state is CallState.CALLING:
            session.cancel_pending = True
        elif state is CallState.EARLY:
            self._send_cancel(session, now)
        else:
            self._send_bye(session, now)

    def on_in_dialog(self, req: SIPRequest, txn: ServerTransaction, flow: Flow, now: float) -> None:
        """A request with a To tag (other than ACK and CANCEL)."""
        ua = self.ua
        session = self._by_dialog.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if (
            session is None
            or session.current_dialog is None
            or session.state is CallState.TERMINATED
        ):
            ua.respond(txn, 481, now)
            return
        if not self._from_peer(session, flow):
            ua.notice(
                "warning",
                f"{req.method} for the call from {flow.remote[0]}, not the dialog's peer: 403",
                session.call_id,
                kind="in_dialog_source",
            )
            ua.respond(txn, 403, now, reason="Forbidden (not the dialog's peer)")
            return
        dialog = session.current_dialog
        assert dialog is not None
        if not dialog.accept_remote_cseq(req):
            ua.respond(txn, 500, now, reason="CSeq out of order")
            return
        method = req.method
        if method == "BYE":
            ua.respond(txn, 200, now)
            self._stop_2xx(session)
            if session.state in (CallState.INCOMING, CallState.EARLY):
                self._respond(session, 487, now)
            session.apply(InviteEvent.BYE_RECEIVED)
            self._end(session, "remote_bye")
        elif method in ("INVITE", "UPDATE"):
            self._on_session_request(session, req, txn, now)
        elif method == "PRACK":
            self._on_prack(session, req, txn, now)
        elif method in ("REFER", "NOTIFY") and ua.refers is not None:
            ua.refers.on_request(session, req, txn, now)
        elif method in ("OPTIONS", "INFO"):
            ua.respond(txn, 200, now, headers=ua.capabilities() if method == "OPTIONS" else ())
            if method == "INFO":
                ua.emit(InfoReceived(session.call_id, req))
        else:
            ua.refuse_method(txn, now)

    def on_ack(self, req: SIPRequest, now: float) -> None:
        """An ACK that matched no INVITE server transaction: the ACK of one of our 2xx."""
        session = self._by_dialog.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if session is None:
            return
        if req.cseq.seq != session.invite_txn.request.cseq.seq:
            return  # not the ACK for our latest 2xx (RFC 3261 s.13.2.2.4, s.17.1.1.3)
        self._stop_2xx(session)
        if session.state is CallState.ACCEPTED:
            session.apply(InviteEvent.ACK)
            self.ua.emit(CallEstablished(session.call_id, req))
            if session.bye_pending:
                self._send_bye(session, now)

    def on_cancel(self, invite_txn: ServerInviteTransaction, now: float) -> None:
        """A CANCEL matched ``invite_txn`` (200 to the CANCEL is sent): answer the INVITE 487."""
        session = self._by_txn.get(invite_txn)
        if session is None or invite_txn.state != "proceeding" or session.state.ended:
            return
        if session.invite_txn is not invite_txn:  # a re-INVITE: RFC 3261 s.15 leaves the call up
            self.ua.respond(invite_txn, 487, now, to_tag=session.local_tag)
            if session.modification is Modification.REOFFER_RECEIVED:
                session.modify(ModificationEvent.REFUSED)
            session.reoffer_txn = None
            return
        self._respond(session, 487, now)
        session.apply(InviteEvent.CANCEL)
        self._end(session, "cancelled", 487)

    def stray_2xx(self, resp: SIPResponse) -> None:
        """A 2xx to INVITE that matched no transaction: re-send our ACK (RFC 3261 s.13.2.2.4)."""
        session = self.sessions.get(resp.call_id)
        if (
            session is not None
            and session.ack_bytes is not None
            and resp.cseq.method == "INVITE"
            and 200 <= resp.status_code < 300
            and session.dialog is not None
        ):
            self.ua.layer.send(session.ack_bytes, session.dialog.next_hop())

    def fail_request(
        self, txn: ServerTransaction, code: int, reason: str | None, now: float
    ) -> bool:
        """Answer a request of one of our calls that could not be handled with ``code``.

        The response carries the call's To tag. A failed initial INVITE ends
        the call ("error"); a failed in-dialog request leaves it up.

        Returns:
            False when ``txn`` is not a call's (the caller answers it).
        """
        session = self._by_txn.get(txn)
        if session is None:
            return False
        self.ua.respond(txn, code, now, reason=reason, to_tag=session.local_tag)
        if session.invite_txn is txn and session.dialog is None and not session.state.ended:
            session.apply(InviteEvent.ERROR)
            self._end(session, "error", code)
        return True

    # --- transaction reports -------------------------------------------------------
    def on_response(self, txn: Transaction, response: SIPResponse, now: float) -> None:
        """Responses to our INVITE, CANCEL and in-dialog requests."""
        record = self._requests.get(txn)
        if record is not None:
            self._on_in_dialog_response(record, response, now)
            return
        session = self._by_txn.get(txn)
        if session is None:
            return
        code = response.status_code
        if txn.method != "INVITE" or session.role is not Role.UAC:
            return
        if txn is not session.invite_txn:
            return  # an INVITE we sent again since (challenge, failover)
        if code < 200:
            if code > 100:  # 100 Trying is the next hop's, not the far end's (RFC 3261 s.16.7)
                session.provisional_seen = True
                self._early_uac_dialog(session, response)
                if requires_100rel(response) and not self._acknowledge(session, response, now):
                    return  # a retransmission or out of order: not processed (RFC 3262 s.4)
            if session.state in (CallState.CALLING, CallState.EARLY):
                session.apply(InviteEvent.PROVISIONAL)
            self.ua.emit(CallProgress(session.call_id, response))
            if session.cancel_pending and session.state is CallState.EARLY:
                self._send_cancel(session, now)
        elif code < 300:
            if session.dialog is None:
                self._confirm_uac(session, response, now)
            elif response.to.tag != session.dialog.remote_tag:
                self._release_fork(session, response, now)
            elif session.ack_bytes is not None:  # 2xx retransmission: ACK again
                self.ua.layer.send(session.ack_bytes, session.dialog.next_hop())
        elif session.dialog is None and session.state is not CallState.TERMINATED:
            if self._retry_failed_invite(session, response, now):
                return
            session.apply(InviteEvent.REJECT)
            if code in (401, 407) and session.digest is not None:
                reason = "auth_failed"
            else:
                reason = "cancelled" if code == 487 else "rejected"
            self._end(session, reason, code)

    def _early_uac_dialog(self, session: InviteSession, response: SIPResponse) -> None:
        """A tagged 1xx with Contact makes (or, from another fork, replaces) the early dialog."""
        tag = response.to.tag
        if not tag or session.state is CallState.TERMINATING:
            return
        early = session.early_dialog
        if early is not None and early.remote_tag == tag:
            return
        try:
            dialog = Dialog.from_uac(session.invite, response, session.flow)
        except RemoteProtocolError:
            return  # no Contact: no early dialog (PRACK and UPDATE impossible)
        if early is not None:
            self._by_dialog.pop(early.id, None)
        session.early_dialog = dialog
        session.last_rseq = None
        self._by_dialog[dialog.id] = session
        self._note_allow(session, response)

    def _acknowledge(self, session: InviteSession, response: SIPResponse, now: float) -> bool:
        """PRACK a reliable provisional response (RFC 3262 s.4); False: do not process it.

        Only the next RSeq of the early dialog is acknowledged; a lower one
        (a retransmission: its PRACK is already retransmitted by its own
        transaction) or a gap is dropped.
        """
        rseq = parse_rseq(response.headers.get("RSeq"))
        early = session.early_dialog
        if rseq is None or early is None or early.remote_tag != response.to.tag:
            self.ua.notice(
                "info",
                f"{response.status_code} requires 100rel without RSeq or early dialog: "
                "processed as unreliable",
                session.call_id,
                kind="bad_100rel",
            )
            return True
        if session.last_rseq is not None and rseq != session.last_rseq + 1:
            return False
        if session.state is CallState.TERMINATING:
            return False
        session.last_rseq = rseq
        if response.body:
            session.early_offer_answer = True
        rack = RAck(rseq, session.invite.cseq.seq, "INVITE")
        self.send_in_dialog(session, "PRACK", now, headers=[("RAck", str(rack))])
        return True

    def _note_allow(self, session: InviteSession, message: SIPRequest | SIPResponse) -> None:
        """Remember the methods the peer accepts (its Allow), for UPDATE or re-INVITE refreshes."""
        try:
            allow = message.headers.get_list("Allow")
        except Exception:
            return
        if allow:
            session.peer_allow = frozenset(m.strip().upper() for m in allow[:32])

    def on_transaction_timeout(self, txn: Transaction, now: float) -> None:
        """Timer B (no final to our INVITE), Timer F (no answer to an in-dialog request)."""
        record = self._requests.get(txn)
        if record is not None:
            if record.on_timeout is not None:
                record.on_timeout(now)
            return
        session = self._by_txn.get(txn)
        if session is None or session.state is CallState.TERMINATED:
            return
        if isinstance(txn, ClientInviteTransaction) and session.dialog is None:
            if txn is not session.invite_txn:
                return
            if (
                session.targets is not None
                and not session.provisional_seen
                and not session.cancel_pending
                and session.state is CallState.CALLING
                and self._fail_over(session, "timeout", now)
            ):
                return
            if session.state is CallState.TERMINATING:  # no final 64*T1 after CANCEL (s.9.1)
                session.apply(InviteEvent.TIMEOUT)
                self._end(session, "cancelled")
            elif session.can(InviteEvent.TIMEOUT):
                session.apply(InviteEvent.TIMEOUT)
                self._end(session, "timeout", 408)

    def on_transaction_terminated(self, txn: Transaction, now: float) -> None:
        """Forget a finished transaction's link to its call."""
        self._by_txn.pop(txn, None)
        self._requests.pop(txn, None)

    # --- internals --------------------------------------------------------------------
    def _from_peer(self, session: InviteSession, flow: Flow) -> bool:
        """Whether an in-dialog request from ``flow`` may be the dialog's peer's."""
        if self.trust_in_dialog_from == "any":
            return True
        source = flow.remote[0]
        if _same_host(source, session.flow.remote[0]):
            return True
        dialog = session.current_dialog
        assert dialog is not None
        hosts = [dialog.remote_target]
        if dialog.route_set:
            hosts.append(dialog.route_set[0].uri)
        for uri in hosts:
            if isinstance(uri, SIPURI) and _same_host(source, uri.host_port[0]):
                return True
        return False

    def _on_session_request(
        self, session: InviteSession, req: SIPRequest, txn: ServerTransaction, now: float
    ) -> None:
        """A re-INVITE (RFC 3261 s.14.2) or an UPDATE (RFC 3311 s.5.2) from the peer.

        Either may offer a new session description (answered by the
        application through :meth:`answer_reoffer`) and refresh the session
        timer (RFC 4028 s.8-9); without an offer it is answered at once.
        """
        ua = self.ua
        is_invite = req.method == "INVITE"
        has_offer = bool(req.body)
        if is_invite:
            initial = session.invite_txn
            if (
                isinstance(initial, ServerInviteTransaction) and initial.state == "proceeding"
            ) or session.dialog is None:  # no re-INVITE in an early dialog (RFC 3261 s.14)
                ua.respond(txn, 491, now, to_tag=session.local_tag)
                return
        if (is_invite or has_offer) and session.modification is not Modification.IDLE:
            ua.respond(txn, 491, now, to_tag=session.local_tag)  # Request Pending (s.14.2)
            return
        if not is_invite and has_offer and not self._offer_answer_done(session):
            # RFC 3311 s.5.2: the initial offer/answer is not complete yet.
            retry = 1 + int(ua.ids.rng.random() * 9)
            ua.respond(txn, 500, now, headers=[("Retry-After", retry)], to_tag=session.local_tag)
            return
        timer = uas_answer(req, ua.session_timers)
        if timer.min_se is not None:
            ua.respond(txn, 422, now, headers=[("Min-SE", timer.min_se)], to_tag=session.local_tag)
            return
        dialog = session.current_dialog
        if req.contacts and dialog is not None:
            dialog.remote_target = req.contacts[0].uri  # a target refresh
        self._note_allow(session, req)
        session.timer_answer = timer
        if is_invite and isinstance(txn, ServerInviteTransaction):
            self._by_txn[txn] = session
        if has_offer:
            session.modify(ModificationEvent.OFFER_RECEIVED)
            session.reoffer_txn = txn
            ua.emit(ReofferReceived(session.call_id, req, req.body))
            return
        self._accept_reinvite(session, txn, now)

    def _offer_answer_done(self, session: InviteSession) -> bool:
        """Whether the initial offer/answer exchange is complete (RFC 3311 s.5.1)."""
        if session.state in (CallState.ACCEPTED, CallState.CONFIRMED):
            return True
        return session.early_offer_answer

    def _pending_reoffer(self, call_id: str) -> tuple[InviteSession, ServerTransaction]:
        session = self.sessions.get(call_id)
        if (
            session is None
            or session.modification is not Modification.REOFFER_RECEIVED
            or session.reoffer_txn is None
        ):
            raise LocalProtocolError(f"no re-offer waits for an answer in call {call_id}")
        return session, session.reoffer_txn

    def _accept_reinvite(self, session: InviteSession, txn: ServerTransaction, now: float) -> None:
        """200 to the peer's re-INVITE or UPDATE; the session timer restarts.

        The 200 carries our answer (a re-INVITE without offer: our current
        description) and the session-timer headers.
        """
        offered = session.modification is Modification.REOFFER_RECEIVED
        if offered:
            session.modify(ModificationEvent.ANSWERED)
        session.reoffer_txn = None
        req = txn.request
        timer = session.timer_answer
        session.timer_answer = None
        headers = self.ua.answer_headers(req, session.flow) + self.ua.server_header()
        if timer is not None:
            headers += list(timer.headers)
        body = session.local_sdp if req.method == "INVITE" or offered else b""
        response = make_response(
            req,
            200,
            to_tag=session.local_tag,
            headers=headers,
            body=body,
            content_type=SDP if body else None,
        )
        if isinstance(txn, ServerInviteTransaction):
            self._stop_2xx(session)
            session.invite_txn = txn
            self._send_2xx(session, txn, response, now)
        else:  # UPDATE (RFC 3311 s.5.2)
            self.ua.layer.respond(txn, response, now)
        if timer is not None and session.dialog is not None:
            self._start_session_timer(session, timer.negotiation, now, received=True)
        self.ua.emit(CallUpdated(session.call_id, req))

    def _send_2xx(
        self, session: InviteSession, txn: Transaction, response: SIPResponse, now: float
    ) -> None:
        """Send a 2xx to INVITE and retransmit it until its ACK (RFC 3261 s.13.3.1.4).

        The interval starts at T1 and doubles up to T2; after 64*T1 without
        ACK the call is hung up with BYE.
        """
        assert isinstance(txn, ServerInviteTransaction)
        ua = self.ua
        ua.layer.respond(txn, response, now)
        session.ok_response = response
        t = ua.layer.timer_values

        def retransmit(at: float, interval: float = t.t1) -> None:
            if session.ok_response is not response or txn.terminated:
                return
            ua.layer.respond(txn, response, at)
            next_interval = min(2 * interval, t.t2)
            session.ok_timer = ua.timers.start(
                "2xx retransmit", at + next_interval, lambda t_: retransmit(t_, next_interval)
            )

        session.ok_timer = ua.timers.start("2xx retransmit", now + t.t1, retransmit)
        session.ack_timer = ua.timers.start(
            "ACK wait", now + 64 * t.t1, lambda at: self._ack_timeout(session, txn, at)
        )

    def _stop_2xx(self, session: InviteSession) -> None:
        session.ok_response = None
        for timer in (session.ok_timer, session.ack_timer):
            if timer is not None:
                timer.cancel()
        session.ok_timer = session.ack_timer = None

    def _ack_timeout(self, session: InviteSession, txn: Transaction, now: float) -> None:
        """No ACK for our 2xx within 64*T1: end the call with BYE (RFC 3261 s.13.3.1.4)."""
        self._stop_2xx(session)
        if session.state.ended or txn is not session.invite_txn:
            return
        self.ua.notice("warning", "no ACK for 200 OK, ending the call", session.call_id, "no_ack")
        self._send_bye(session, now, reason="ack_timeout")

    def _confirm_uac(self, session: InviteSession, response: SIPResponse, now: float) -> None:
        ua = self.ua
        try:
            dialog = Dialog.from_uac(session.invite, response, session.flow)
        except RemoteProtocolError as exc:  # 2xx without Contact: no dialog possible
            ua.notice("warning", f"unusable 2xx: {exc}", session.call_id, kind="bad_2xx")
            session.apply(InviteEvent.ERROR)
            self._end(session, "error", response.status_code)
            return
        early = session.early_dialog
        if early is not None:
            if early.id != dialog.id:
                self._by_dialog.pop(early.id, None)
            elif early.local_seq is not None and dialog.local_seq is not None:
                dialog.local_seq = max(dialog.local_seq, early.local_seq)
                dialog.remote_seq = early.remote_seq
        session.dialog = dialog
        self._by_dialog[dialog.id] = session
        self._note_allow(session, response)
        hop = dialog.next_hop()
        ack = dialog.create_request(
            "ACK", ua.new_via(hop), cseq=session.invite.cseq.seq, headers=ua.ua_headers()
        )
        session.ack_bytes = bytes(ack)
        ua.layer.send(session.ack_bytes, hop)
        cancelled = session.state is CallState.TERMINATING or session.cancel_pending
        session.apply(InviteEvent.ACCEPT)
        if not cancelled:
            self._start_session_timer(session, uac_result(response), now)
        ua.emit(CallAnswered(session.call_id, response))
        if cancelled:  # we hung up meanwhile (s.9.1, s.15)
            session.cancel_pending = False
            self._send_bye(session, now)

    def _release_fork(self, session: InviteSession, response: SIPResponse, now: float) -> None:
        """A 2xx from another fork than the call's (RFC 3261 s.13.2.2.4): ACK it, then BYE it.

        Each 2xx makes a dialog of its own; the call keeps the first. The
        others are acknowledged on their own dialog (their route set and
        remote target) and ended with BYE at once; a retransmission of one
        is ACKed again. At most :data:`MAX_FORKS` are answered per call.
        """
        tag = response.to.tag or ""
        ua = self.ua
        known = session.fork_acks.get(tag)
        if known is not None:
            ua.layer.send(*known)
            return
        if len(session.fork_acks) >= MAX_FORKS:
            return
        try:
            dialog = Dialog.from_uac(session.invite, response, session.flow)
            hop = dialog.next_hop()
        except (RemoteProtocolError, LocalProtocolError) as exc:
            ua.notice("info", f"2xx from another fork unusable: {exc}", session.call_id, "fork")
            return
        ack = dialog.create_request(
            "ACK", ua.new_via(hop), cseq=session.invite.cseq.seq, headers=ua.ua_headers()
        )
        session.fork_acks[tag] = (bytes(ack), hop)
        ua.layer.send(*session.fork_acks[tag])
        bye = dialog.create_request("BYE", ua.new_via(hop), headers=ua.ua_headers())
        ua.send_request(bye, hop, now, self)  # its response changes nothing
        ua.notice(
            "info",
            "200 OK from a second fork: acknowledged and ended with BYE (one call per INVITE)",
            session.call_id,
            kind="fork",
        )

    def _uas(self, call_id: str, states: tuple[CallState, ...]) -> InviteSession:
        session = self.sessions.get(call_id)
        if session is None or session.role is not Role.UAS:
            raise LocalProtocolError(f"no incoming call {call_id}")
        if session.state not in states:
            raise LocalProtocolError(f"call {call_id} is {session.state}")
        return session

    def _track(self, session: InviteSession, txn: Transaction) -> None:
        self.sessions[session.call_id] = session
        self._by_txn[txn] = session

    def _end(self, session: InviteSession, reason: str, status_code: int | None = None) -> None:
        if self.sessions.get(session.call_id) is not session:
            return
        self._stop_2xx(session)
        self._stop_reliable(session)
        self._stop_session_timer(session)
        del self.sessions[session.call_id]
        if self.ua.refers is not None:
            self.ua.refers.forget(session.call_id)
        for dialog in (session.dialog, session.early_dialog):
            if dialog is not None and self._by_dialog.get(dialog.id) is session:
                del self._by_dialog[dialog.id]
        self.ua.emit(CallEnded(session.call_id, reason, status_code))

    def send_in_dialog(
        self,
        session: InviteSession,
        method: str,
        now: float,
        *,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        on_final: Callable[[SIPResponse, float], None] | None = None,
        on_timeout: Callable[[float], None] | None = None,
    ) -> InDialogRequest:
        """Send a request inside the call's dialog (confirmed, else early; RFC 3261 s.12.2.1).

        Target-refresh requests (re-INVITE, UPDATE) carry our Contact. A
        401/407 is answered once per challenge with the call's credentials.

        Raises:
            LocalProtocolError: The call has no dialog yet.
        """
        dialog = session.current_dialog
        if dialog is None:
            raise LocalProtocolError(f"call {session.call_id} has no dialog for {method}")
        record = InDialogRequest(
            session,
            method,
            list(headers),
            body,
            content_type,
            on_final,
            on_timeout,
            early=session.dialog is None,
        )
        self._transmit(record, now)
        return record

    def _transmit(self, record: InDialogRequest, now: float) -> None:
        ua = self.ua
        session = record.session
        dialog = session.current_dialog
        assert dialog is not None
        hop = dialog.next_hop()
        h = ua.ua_headers()
        if record.retries and session.digest is not None:
            target = dialog.remote_target
            if record.route_uri is not None:
                target = record.route_uri
            for name, value in session.digest.headers(record.method, str(target)):
                h.add(name, value)
        for name, value in record.headers:
            h.add(name, value)
        if record.body and record.content_type:
            h.add("Content-Type", record.content_type)
        refresh = record.method in ("INVITE", "UPDATE")
        request = dialog.create_request(
            record.method,
            ua.new_via(hop),
            contact=ua.contact_for(hop) if refresh else None,
            headers=h,
            body=record.body,
            first_cseq=ua.ids.cseq(),
        )
        record.route_uri = request.uri
        txn = ua.send_request(request, hop, now, self)
        record.txn, record.request = txn, request
        self._requests[txn] = record

    def _on_in_dialog_response(
        self, record: InDialogRequest, response: SIPResponse, now: float
    ) -> None:
        code = response.status_code
        if code < 200:
            return
        session = record.session
        if (
            code in (401, 407)
            and session.digest is not None
            and record.retries < 2
            and session.current_dialog is not None
            and session.digest.answer(response, record.request)
        ):
            record.retries += 1
            self._transmit(record, now)
            return
        if record.on_final is not None:
            record.on_final(response, now)

    def _send_bye(self, session: InviteSession, now: float, reason: str = "local_bye") -> None:
        if session.dialog is None:  # pragma: no cover - every caller has a dialog
            session.apply(InviteEvent.ERROR)
            self._end(session, reason)
            return
        self._stop_2xx(session)

        def done(response: SIPResponse | None, at: float) -> None:
            if session.state is CallState.TERMINATING:
                if response is None:
                    self.ua.notice(
                        "warning", "BYE got no response", session.call_id, kind="bye_timeout"
                    )
                session.apply(InviteEvent.BYE_DONE)
                self._end(session, "local_bye", response.status_code if response else 408)

        self.send_in_dialog(
            session,
            "BYE",
            now,
            on_final=done,
            on_timeout=lambda at: done(None, at),
        )
        session.apply(InviteEvent.BYE_SENT)
        if reason != "local_bye":
            self._end(session, reason)

    def _send_cancel(self, session: InviteSession, now: float) -> None:
        """CANCEL for our INVITE (RFC 3261 s.9.1): same branch, Call-ID, From, To, CSeq number."""
        session.cancel_pending = False
        inv = session.invite
        h = Headers()
        h.add("Via", inv.headers.get_list("Via")[0])
        for route in inv.headers.get_all("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.add(name, inv.headers.get(name))
        h.add("CSeq", CSeq(inv.cseq.seq, "CANCEL"))
        cancel = SIPRequest("CANCEL", inv.uri, h)
        # Where the INVITE went: over TCP if it was moved there for its size (s.18.1.1).
        invite_txn = session.invite_txn
        flow = invite_txn.flow if isinstance(invite_txn, ClientInviteTransaction) else session.flow
        txn = self.ua.send_request(cancel, flow, now, self)
        self._by_txn[txn] = session
        session.apply(InviteEvent.CANCEL)
        if isinstance(session.invite_txn, ClientInviteTransaction):
            session.invite_txn.cancel_sent(now)

    def _response(
        self,
        session: InviteSession,
        code: int,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> SIPResponse:
        ua = self.ua
        extra = list(headers)
        if code == 200 or 100 < code < 200:
            extra = ua.answer_headers(session.invite, session.flow) + extra
        extra += ua.server_header()
        return make_response(
            session.invite,
            code,
            reason,
            to_tag=session.local_tag if code > 100 else None,
            headers=extra,
            body=body,
            content_type=SDP if body else None,
        )

    def _respond_with(self, session: InviteSession, response: SIPResponse, now: float) -> None:
        txn = session.invite_txn
        assert isinstance(txn, ServerTransaction)
        self.ua.layer.respond(txn, response, now)

    def _respond(
        self,
        session: InviteSession,
        code: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
        retransmit: bool = True,
    ) -> None:
        response = self._response(session, code, reason=reason, headers=headers, body=body)
        txn = session.invite_txn
        assert isinstance(txn, ServerTransaction)
        self.ua.layer.respond(txn, response, now, retransmit)


def _same_host(a: str, b: str) -> bool:
    """Whether two host strings name the same IP (IPv4-mapped IPv6 equal to IPv4)."""
    if a == b:
        return True
    try:
        ip_a, ip_b = ipaddress.ip_address(a.split("%", 1)[0]), ipaddress.ip_address(b)
    except ValueError:
        return False
    mapped_a = getattr(ip_a, "ipv4_mapped", None) or ip_a
    mapped_b = getattr(ip_b, "ipv4_mapped", None) or ip_b
    return mapped_a == mapped_b
