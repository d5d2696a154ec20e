"""What the user agent tells the application: one dataclass per event.

The application takes them with :meth:`UserAgent.next_event` after each call
into the user agent (a received message, a timer, an action) and acts on
them with the user agent's methods. Nothing here calls back into the
application: the user agent never waits for an answer in the middle of
handling a message (a re-INVITE's offer is an event answered later by
:meth:`UserAgent.answer_reoffer`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat_sip.sip.message import SIPRequest, SIPResponse
from pipecat_sip.sip.transport import Flow

__all__ = [
    "CallAnswered",
    "CallEnded",
    "CallEstablished",
    "CallProgress",
    "CallUpdated",
    "Event",
    "IncomingCall",
    "InfoReceived",
    "ModificationAnswered",
    "Notice",
    "ReferReceived",
    "ReofferReceived",
    "Registered",
    "TransferProgress",
    "RegistrationFailed",
]


@dataclass
class IncomingCall:
    """A new INVITE arrived; 100 Trying is already sent. Answer, ring or reject it.

    Attributes:
        call_id: Its Call-ID.
        request: The INVITE.
        flow: Where it came from (transport, address, connection).
        user: The Digest user name it authenticated as, or None when no
            authentication was asked (RFC 3261 s.22.4).
        replaces: The Call-ID of our call this INVITE replaces (its Replaces
            header matched a dialog of ours, RFC 3891), or None.
    """

    call_id: str
    request: SIPRequest
    flow: Flow
    user: str | None = None
    replaces: str | None = None

    @property
    def source(self) -> tuple[str, int]:
        """The ``(ip, port)`` it came from."""
        return self.flow.remote


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
class ReofferReceived:
    """A re-INVITE with an SDP offer arrived (RFC 3264 s.8); the dialog's peer waits.

    Answer it with :meth:`UserAgent.answer_reoffer` (200 with the answer) or
    :meth:`UserAgent.reject_reoffer` (488 keeps the session as it was,
    RFC 3261 s.14.2).

    Attributes:
        offer: The SDP offer (the request's body).
    """

    call_id: str
    request: SIPRequest
    offer: bytes


@dataclass
class CallUpdated:
    """A re-INVITE was answered 200 (with the application's answer, or the current SDP)."""

    call_id: str
    request: SIPRequest


@dataclass
class ModificationAnswered:
    """Our re-INVITE or UPDATE (RFC 3311) got its final response (or none: 408).

    Attributes:
        method: "INVITE" or "UPDATE".
        status_code: The final status; 408 when none came.
        response: The response, or None.
    """

    call_id: str
    method: str
    status_code: int
    response: SIPResponse | None = None


@dataclass
class TransferProgress:
    """A transfer we asked for (REFER, RFC 3515) moved on.

    Attributes:
        transfer_id: What :meth:`UserAgent.refer` returned.
        state: "accepted" (202), "trying" (a 1xx sipfrag), "succeeded" (a 2xx
            sipfrag) or "failed" (the REFER refused or unanswered, a 3xx-6xx
            sipfrag, or the subscription ended without an outcome).
        status_code: The status that said so (the REFER's response or the
            sipfrag's), or None.
    """

    call_id: str
    transfer_id: str
    state: str
    status_code: int | None = None


@dataclass
class ReferReceived:
    """The far end sent REFER (RFC 3515): it asks us to call ``refer_to``.

    Accept it with :meth:`UserAgent.accept_refer` (202, NOTIFY 100) and
    report the new call with :meth:`UserAgent.notify_refer`, or refuse it
    with :meth:`UserAgent.reject_refer` (603). Undecided, it is refused 603
    after a few seconds.

    Attributes:
        transfer_id: Its id (the REFER's CSeq number).
        refer_to: The target URI (its URI headers removed).
        referred_by: The Referred-By value (RFC 3892), or None.
        replaces: The Replaces value carried in Refer-To (RFC 3891), or None.
        request: The REFER.
    """

    call_id: str
    transfer_id: str
    refer_to: str
    referred_by: str | None
    replaces: str | None
    request: SIPRequest


@dataclass
class InfoReceived:
    """An INFO request inside a dialog (answered 200)."""

    call_id: str
    request: SIPRequest


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


@dataclass
class Registered:
    """A REGISTER was accepted (2xx); the binding is refreshed before it expires.

    Attributes:
        registration_id: What :meth:`UserAgent.register` returned.
        expires: Seconds the registrar granted (0 after an unregister).
    """

    registration_id: str
    expires: int


@dataclass
class RegistrationFailed:
    """A REGISTER failed (after answering any challenge); it is retried later.

    Attributes:
        registration_id: What :meth:`UserAgent.register` returned.
        status_code: The final status (408 when no answer came).
        reason: Why, for the log.
        retry_in: Seconds until the next attempt, or None when none will be
            made (an unregister that failed).
    """

    registration_id: str
    status_code: int
    reason: str
    retry_in: float | None = None


@dataclass
class Notice:
    """Something the I/O layer may log: the sans-IO layers never log themselves.

    Attributes:
        level: "debug", "info", "warning" or "error".
        message: What happened; peer-supplied text in it is not yet escaped.
        call_id: The call it concerns, if any.
        kind: A short fixed key for counting repeats ("malformed", "no_ack",
            ...), so the logger can rate-limit one kind of notice.
        error: The exception, when the notice reports one of ours (a bug).
    """

    level: str
    message: str
    call_id: str | None = None
    kind: str = ""
    error: BaseException | None = None


Event = (
    IncomingCall
    | CallProgress
    | CallAnswered
    | CallEstablished
    | ReofferReceived
    | CallUpdated
    | InfoReceived
    | ModificationAnswered
    | TransferProgress
    | ReferReceived
    | CallEnded
    | Registered
    | RegistrationFailed
    | Notice
)
