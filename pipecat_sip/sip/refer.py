"""Call transfer, sans-IO: REFER (RFC 3515), Referred-By (RFC 3892), Replaces (RFC 3891).

As *transferor* (:meth:`ReferUsage.refer`), we send REFER inside a call's
dialog; the implicit subscription it creates reports how the far end's call
to the target goes, in NOTIFY requests whose ``message/sipfrag`` body is
that call's status line. Each transfer's state moves only through
:data:`TRANSFER_TRANSITIONS`: pending (REFER sent) -> accepted (202) ->
trying (1xx sipfrag) -> succeeded (2xx sipfrag) or failed (the REFER
refused, a 3xx-6xx sipfrag, the subscription ended without an outcome, or
no answer). For an attended transfer the Refer-To URI carries a
``Replaces`` header naming our dialog with the target, so the far end's
INVITE takes its place there.

As *transferee*, a REFER inside a call is reported as
:class:`~pipecat_sip.sip.events.ReferReceived`; the application accepts it
(202, then NOTIFY "100 Trying") and reports the new call's progress with
:meth:`ReferUsage.notify` (the final one terminates the subscription), or
refuses it (603 Declined). A REFER nobody decides on within
``decision_timeout_s`` is refused 603 by the user agent itself.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from pipecat_sip.sip.errors import LocalProtocolError, SIPParseError
from pipecat_sip.sip.events import ReferReceived, TransferProgress
from pipecat_sip.sip.uri import SIPURI, Address

if TYPE_CHECKING:
    from pipecat_sip.sip.invite import InDialogRequest, InviteSession
    from pipecat_sip.sip.message import SIPRequest, SIPResponse
    from pipecat_sip.sip.timers import Timer
    from pipecat_sip.sip.transaction import ServerTransaction
    from pipecat_sip.sip.useragent import UserAgent

__all__ = [
    "TRANSFER_TRANSITIONS",
    "Replaces",
    "ReferUsage",
    "TransferEvent",
    "TransferState",
    "parse_sipfrag",
    "sipfrag",
]

SIPFRAG = "message/sipfrag"
#: Transfers one call may have under way at once (more REFERs get 503 / raise).
MAX_TRANSFERS_PER_CALL = 4
#: Seconds the application has to accept or refuse a REFER before we refuse it 603.
DEFAULT_DECISION_TIMEOUT_S = 8.0
#: Seconds our NOTIFY subscription is said to last (RFC 3515 s.2.4.4; refreshed by each NOTIFY).
SUBSCRIPTION_EXPIRES_S = 60
_SIPFRAG_RE = re.compile(r"SIP/2\.0 ([1-6][0-9]{2})(?: ([^\r\n]*))?")
_MAX_SIPFRAG = 2048


class TransferState(StrEnum):
    """Where one transfer we asked for stands (the transferor's view)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    TRYING = "trying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether the transfer's outcome is known."""
        return self in (TransferState.SUCCEEDED, TransferState.FAILED)


class TransferEvent(StrEnum):
    """What moves a transfer.

    Attributes:
        ACCEPTED: 2xx to the REFER (202 Accepted).
        REFUSED: A 3xx-6xx to the REFER, or no answer (Timer F).
        PROGRESS: A NOTIFY with a 1xx sipfrag.
        SUCCESS: A NOTIFY with a 2xx sipfrag.
        FAILURE: A NOTIFY with a 3xx-6xx sipfrag.
        TERMINATED: The subscription ended (Subscription-State: terminated)
            without a final sipfrag.
    """

    ACCEPTED = "accepted"
    REFUSED = "refused"
    PROGRESS = "progress"
    SUCCESS = "success"
    FAILURE = "failure"
    TERMINATED = "terminated"


T, TE = TransferState, TransferEvent
TRANSFER_TRANSITIONS: dict[tuple[TransferState, TransferEvent], TransferState] = {
    (T.PENDING, TE.ACCEPTED): T.ACCEPTED,
    (T.PENDING, TE.REFUSED): T.FAILED,
    # A NOTIFY may overtake the 202 (RFC 3515 s.2.4.4).
    (T.PENDING, TE.PROGRESS): T.TRYING,
    (T.PENDING, TE.SUCCESS): T.SUCCEEDED,
    (T.PENDING, TE.FAILURE): T.FAILED,
    (T.ACCEPTED, TE.PROGRESS): T.TRYING,
    (T.ACCEPTED, TE.SUCCESS): T.SUCCEEDED,
    (T.ACCEPTED, TE.FAILURE): T.FAILED,
    (T.ACCEPTED, TE.TERMINATED): T.FAILED,
    (T.TRYING, TE.ACCEPTED): T.TRYING,
    (T.TRYING, TE.PROGRESS): T.TRYING,
    (T.TRYING, TE.SUCCESS): T.SUCCEEDED,
    (T.TRYING, TE.FAILURE): T.FAILED,
    (T.TRYING, TE.TERMINATED): T.FAILED,
    (T.SUCCEEDED, TE.ACCEPTED): T.SUCCEEDED,
    (T.FAILED, TE.ACCEPTED): T.FAILED,
}


def next_transfer_state(state: TransferState, event: TransferEvent) -> TransferState:
    """The state ``event`` moves a transfer to.

    Raises:
        LocalProtocolError: The table has no such move.
    """
    try:
        return TRANSFER_TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"transfer: no transition from {state} on {event}") from None


def parse_sipfrag(body: bytes) -> tuple[int, str] | None:
    """The status line of a ``message/sipfrag`` body (RFC 3420), or None.

    Returns:
        ``(status_code, reason)`` of its first line, when it is a SIP/2.0
        status line.
    """
    if len(body) > _MAX_SIPFRAG:
        body = body[:_MAX_SIPFRAG]
    first = body.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        return None
    match = _SIPFRAG_RE.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)), (match.group(2) or "").strip()


def sipfrag(status_code: int, reason: str) -> bytes:
    """A ``message/sipfrag`` body: one status line."""
    reason = reason.replace("\r", " ").replace("\n", " ")[:80]
    return f"SIP/2.0 {status_code} {reason}\r\n".encode()


@dataclass(frozen=True)
class Replaces:
    """The Replaces header (RFC 3891 s.6.1): the dialog a new INVITE takes the place of.

    ``to_tag`` and ``from_tag`` are as the UA receiving the INVITE sees the
    dialog: ``to_tag`` is its own (local) tag, ``from_tag`` its peer's.

    Attributes:
        call_id: The dialog's Call-ID.
        to_tag: The receiver's tag.
        from_tag: The other party's tag.
        early_only: Replace only an early dialog.
    """

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    @classmethod
    def parse(cls, value: str) -> Replaces:
        """Parse a Replaces value.

        Raises:
            ValueError: No Call-ID, to-tag or from-tag.
        """
        call_id, *params = (p.strip() for p in value.strip().split(";"))
        to_tag = from_tag = None
        early = False
        for param in params[:16]:
            name, _, text = param.partition("=")
            name = name.strip().lower()
            if name == "to-tag":
                to_tag = text.strip()
            elif name == "from-tag":
                from_tag = text.strip()
            elif name == "early-only":
                early = True
        if not call_id or not to_tag or not from_tag:
            raise ValueError(f"Replaces {value[:60]!r} lacks a Call-ID, to-tag or from-tag")
        return cls(call_id, to_tag, from_tag, early)

    def __str__(self) -> str:
        text = f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}"
        return text + (";early-only" if self.early_only else "")


def refer_to_uri(target: str, replaces: Replaces | None = None) -> str:
    """The Refer-To value for ``target``, with ``?Replaces=`` (escaped) for attended transfer.

    Raises:
        SIPParseError: ``target`` is not a SIP URI (a tel: URI is sent as is).
    """
    text = target.strip()
    if text.lower().startswith("tel:"):
        if replaces is not None:
            raise SIPParseError("Replaces needs a SIP target URI, not tel:")
        return f"<{text}>"
    uri = SIPURI.parse(text)
    if replaces is not None:
        uri.headers = [
            *(h for h in uri.headers if h[0].lower() != "replaces"),
            ("Replaces", quote(str(replaces), safe="-_.!~*'()")),
        ]
    return f"<{uri}>"


def split_refer_to(value: str) -> tuple[str, Replaces | None, list[tuple[str, str]]]:
    """A Refer-To value as (target URI without headers, its Replaces, other URI headers).

    Raises:
        ValueError: Not a SIP/tel URI, or a malformed Replaces.
    """
    try:
        address = Address.parse(value)
    except SIPParseError as exc:
        raise ValueError(f"Refer-To not understood: {exc}") from None
    uri = address.uri
    if not isinstance(uri, SIPURI):
        return str(uri), None, []
    replaces = None
    others: list[tuple[str, str]] = []
    for name, raw in uri.headers[:16]:
        if name.lower() == "replaces":
            replaces = Replaces.parse(unquote(raw))
        else:
            others.append((name, unquote(raw)))
    bare = SIPURI(
        uri.host, user=uri.user, port=uri.port, scheme=uri.scheme, params=dict(uri.params)
    )
    return str(bare), replaces, others


@dataclass(eq=False)
class Transfer:
    """One transfer we asked for (the REFER's implicit subscription).

    Attributes:
        transfer_id: Our id for it (events carry it).
        target: The Refer-To value sent.
        state: Where it stands.
        record: The REFER request in flight (its CSeq is the NOTIFYs' Event id).
        status_code: The last status that moved it.
    """

    transfer_id: str
    target: str
    state: TransferState = TransferState.PENDING
    record: InDialogRequest | None = None
    status_code: int | None = None

    @property
    def event_id(self) -> str | None:
        """The ``id`` of its NOTIFYs' Event header: the REFER's CSeq (RFC 3515 s.2.4.6)."""
        if self.record is None or self.record.request is None:
            return None
        return str(self.record.request.cseq.seq)


@dataclass(eq=False)
class Notifier:
    """A REFER the far end sent us: the subscription we report the new call on.

    Attributes:
        transfer_id: The REFER's CSeq number (the NOTIFYs' Event id).
        txn: The REFER's transaction, until we answer it.
        accepted: Whether we answered 202.
        terminated: Whether the final NOTIFY went out.
        timer: The decision deadline.
    """

    transfer_id: str
    txn: ServerTransaction | None
    accepted: bool = False
    terminated: bool = False
    timer: Timer | None = None
    notified: list[int] = field(default_factory=list)


class ReferUsage:
    """REFER and its NOTIFYs inside the INVITE usage's dialogs (RFC 3515).

    Args:
        ua: The user agent.
        decision_timeout_s: Seconds the application has to accept or refuse
            an incoming REFER (then 603).
    """

    def __init__(
        self, ua: UserAgent, *, decision_timeout_s: float = DEFAULT_DECISION_TIMEOUT_S
    ) -> None:
        self.ua = ua
        self.decision_timeout_s = decision_timeout_s
        self._transfers: dict[str, dict[str, Transfer]] = {}  # call id -> transfer id -> it
        self._notifiers: dict[str, dict[str, Notifier]] = {}
        self._ids = itertools.count(1)

    @property
    def tracked(self) -> int:
        """Entries kept (transfers and notifiers of live calls)."""
        return sum(len(t) for t in self._transfers.values()) + sum(
            len(n) for n in self._notifiers.values()
        )

    def forget(self, call_id: str) -> None:
        """The call ended: drop its transfers and subscriptions."""
        self._transfers.pop(call_id, None)
        for notifier in self._notifiers.pop(call_id, {}).values():
            if notifier.timer is not None:
                notifier.timer.cancel()

    # --- transferor -----------------------------------------------------------------
    def refer(
        self,
        call_id: str,
        target: str,
        now: float,
        *,
        replaces: Replaces | None = None,
        referred_by: bool = True,
    ) -> str:
        """Ask the far end of a confirmed call to call ``target``; returns the transfer id.

        Blind transfer, or attended with ``replaces`` (our dialog with the
        target). The id is in the transfer's TransferProgress events.

        Raises:
            LocalProtocolError: No such confirmed call, or too many transfers under way.
            SIPParseError: ``target`` is not a SIP or tel URI.
        """
        from pipecat_sip.sip.invite import CallState

        invites = self.ua.invites
        session = invites.session(call_id)
        if session is None or session.state is not CallState.CONFIRMED or session.dialog is None:
            raise LocalProtocolError(f"call {call_id} is not established: no REFER")
        transfers = self._transfers.setdefault(call_id, {})
        live = [t for t in transfers.values() if not t.state.final]
        if len(live) >= MAX_TRANSFERS_PER_CALL:
            raise LocalProtocolError(f"call {call_id} has {len(live)} transfers under way")
        for tid in [tid for tid, t in transfers.items() if t.state.final]:
            del transfers[tid]
        refer_to = refer_to_uri(target, replaces)
        transfer = Transfer(f"t{next(self._ids)}", refer_to)
        transfers[transfer.transfer_id] = transfer
        headers: list[tuple[str, object]] = [("Refer-To", refer_to)]
        if referred_by:
            headers.append(("Referred-By", Address(session.dialog.local_address.uri)))
        transfer.record = invites.send_in_dialog(
            session,
            "REFER",
            now,
            headers=headers,
            on_final=lambda response, at: self._refer_answered(session, transfer, response),
            on_timeout=lambda at: self._refer_answered(session, transfer, None),
        )
        return transfer.transfer_id

    def _refer_answered(
        self, session: InviteSession, transfer: Transfer, response: SIPResponse | None
    ) -> None:
        code = response.status_code if response is not None else 408
        if 200 <= code < 300:
            self._move(session, transfer, TransferEvent.ACCEPTED, code)
        elif not transfer.state.final and transfer.state is TransferState.PENDING:
            self._move(session, transfer, TransferEvent.REFUSED, code)

    def _move(
        self, session: InviteSession, transfer: Transfer, event: TransferEvent, code: int | None
    ) -> None:
        before = transfer.state
        transfer.state = next_transfer_state(before, event)
        if transfer.state is before and event is not TransferEvent.PROGRESS:
            return  # a late 202: nothing new to tell
        transfer.status_code = code
        self.ua.emit(
            TransferProgress(session.call_id, transfer.transfer_id, str(transfer.state), code)
        )

    # --- requests inside a call (REFER, NOTIFY) -------------------------------------------
    def on_request(
        self, session: InviteSession, req: SIPRequest, txn: ServerTransaction, now: float
    ) -> None:
        """A REFER or NOTIFY inside one of our calls' dialogs (the CSeq is checked)."""
        if req.method == "NOTIFY":
            self._on_notify(session, req, txn, now)
        else:
            self._on_refer(session, req, txn, now)

    def _on_notify(
        self, session: InviteSession, req: SIPRequest, txn: ServerTransaction, now: float
    ) -> None:
        ua = self.ua
        event = (req.headers.get("Event") or "").strip()
        package, *params = (p.strip() for p in event.split(";"))
        if package.lower() != "refer":
            ua.respond(txn, 489, now)  # Bad Event (RFC 6665 s.8.3.1)
            return
        event_id = None
        for param in params[:8]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "id":
                event_id = value.strip()
        transfers = self._transfers.get(session.call_id, {})
        candidates = [t for t in transfers.values() if event_id in (None, t.event_id)]
        if event_id is None and len(candidates) > 1:
            candidates = [t for t in candidates if not t.state.final][-1:]
        if not candidates:
            ua.respond(txn, 481, now)
            return
        transfer = candidates[-1]
        state_text = (req.headers.get("Subscription-State") or "").split(";", 1)[0]
        terminated = state_text.strip().lower() == "terminated"
        status = parse_sipfrag(req.body) if req.content_type == SIPFRAG else None
        ua.respond(txn, 200, now)
        if transfer.state.final:
            return
        if status is not None:
            code = status[0]
            kind = (
                TransferEvent.PROGRESS
                if code < 200
                else TransferEvent.SUCCESS
                if code < 300
                else TransferEvent.FAILURE
            )
            self._move(session, transfer, kind, code)
        if terminated and not transfer.state.final:
            self._move(session, transfer, TransferEvent.TERMINATED, transfer.status_code)

    # --- transferee -------------------------------------------------------------------------
    def _on_refer(
        self, session: InviteSession, req: SIPRequest, txn: ServerTransaction, now: float
    ) -> None:
        from pipecat_sip.sip.invite import CallState

        ua = self.ua
        values = req.headers.get_all("Refer-To")
        if len(values) != 1:
            ua.respond(txn, 400, now, reason="Bad Request (one Refer-To needed)")
            return
        try:
            target, replaces, _ = split_refer_to(values[0])
        except ValueError as exc:
            ua.respond(txn, 400, now, reason=f"Bad Request ({exc})"[:100])
            return
        if session.state is not CallState.CONFIRMED:
            ua.respond(txn, 403, now, reason="Forbidden (call not established)")
            return
        notifiers = self._notifiers.setdefault(session.call_id, {})
        if sum(1 for n in notifiers.values() if not n.terminated) >= MAX_TRANSFERS_PER_CALL:
            ua.respond(txn, 503, now, headers=[("Retry-After", 10)])
            return
        transfer_id = str(req.cseq.seq)
        notifier = Notifier(transfer_id, txn)
        notifiers[transfer_id] = notifier
        notifier.timer = ua.timers.start(
            "REFER decision",
            now + self.decision_timeout_s,
            lambda at: self._undecided(session, notifier, at),
        )
        referred_by = req.headers.get("Referred-By")
        ua.emit(
            ReferReceived(
                session.call_id,
                transfer_id,
                target,
                referred_by,
                str(replaces) if replaces is not None else None,
                req,
            )
        )

    def _undecided(self, session: InviteSession, notifier: Notifier, now: float) -> None:
        notifier.timer = None
        if notifier.txn is not None:
            self.ua.notice(
                "info", "REFER not decided in time: 603", session.call_id, kind="refer_timeout"
            )
            self.reject(session.call_id, notifier.transfer_id, 603, now)

    def _notifier(self, call_id: str, transfer_id: str) -> tuple[InviteSession, Notifier]:
        session = self.ua.invites.session(call_id)
        notifier = self._notifiers.get(call_id, {}).get(transfer_id)
        if session is None or notifier is None:
            raise LocalProtocolError(f"no REFER {transfer_id} in call {call_id}")
        return session, notifier

    def accept(self, call_id: str, transfer_id: str, now: float) -> None:
        """Accept a REFER: 202, then NOTIFY "100 Trying" (RFC 3515 s.2.4.2, s.2.4.4).

        Raises:
            LocalProtocolError: No such REFER waiting for a decision.
        """
        session, notifier = self._notifier(call_id, transfer_id)
        if notifier.txn is None:
            raise LocalProtocolError(f"REFER {transfer_id} was answered already")
        self.ua.respond(notifier.txn, 202, now, to_tag=session.local_tag)
        notifier.txn = None
        notifier.accepted = True
        if notifier.timer is not None:
            notifier.timer.cancel()
            notifier.timer = None
        self.notify(call_id, transfer_id, 100, "Trying", now)

    def reject(self, call_id: str, transfer_id: str, status_code: int, now: float) -> None:
        """Refuse a REFER (603 Declined by default; RFC 3515 s.2.4.2).

        Raises:
            LocalProtocolError: No such REFER waiting, or status < 300.
        """
        if status_code < 300:
            raise LocalProtocolError(f"reject a REFER with >= 300, not {status_code}")
        session, notifier = self._notifier(call_id, transfer_id)
        if notifier.txn is None:
            raise LocalProtocolError(f"REFER {transfer_id} was answered already")
        self.ua.respond(notifier.txn, status_code, now, to_tag=session.local_tag)
        notifier.txn = None
        notifier.terminated = True
        if notifier.timer is not None:
            notifier.timer.cancel()
            notifier.timer = None

    def notify(
        self, call_id: str, transfer_id: str, status_code: int, reason: str, now: float
    ) -> None:
        """Report the new call's status (NOTIFY with message/sipfrag; a final one ends it).

        Raises:
            LocalProtocolError: No such accepted REFER, or its subscription ended.
        """
        session, notifier = self._notifier(call_id, transfer_id)
        if not notifier.accepted or notifier.terminated:
            raise LocalProtocolError(f"REFER {transfer_id} has no live subscription")
        final = status_code >= 200
        state = (
            "terminated;reason=noresource" if final else f"active;expires={SUBSCRIPTION_EXPIRES_S}"
        )
        notifier.terminated = final
        notifier.notified.append(status_code)
        self.ua.invites.send_in_dialog(
            session,
            "NOTIFY",
            now,
            headers=[("Event", f"refer;id={transfer_id}"), ("Subscription-State", state)],
            body=sipfrag(status_code, reason),
            content_type=f"{SIPFRAG};version=2.0",
        )
