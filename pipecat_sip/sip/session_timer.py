"""Session timers (RFC 4028): the negotiation rules, as pure functions.

A session timer makes a call that nobody refreshes end: the *refresher*
sends a session refresh request (re-INVITE or UPDATE) every half interval,
and the other side sends BYE shortly before the interval runs out without
one (s.10). The interval and the refresher are negotiated on each INVITE or
UPDATE transaction with ``Session-Expires: delta;refresher=uac|uas`` and
``Min-SE``; ``refresher`` names a side *of that transaction* (uac: the one
that sent the request). A request asking less than our ``Min-SE`` gets 422
with our Min-SE (s.8.1); a 422 to ours is retried with the larger value
(s.7.4).

The timers themselves run in the INVITE usage on the UA's timer queue.

Grammar (RFC 4028 s.4)::

    Session-Expires  =  ("Session-Expires" / "x") HCOLON delta-seconds
                        *(SEMI se-params)
    se-params        =  refresher-param / generic-param
    refresher-param  =  "refresher" EQUAL  ("uas" / "uac")
    Min-SE           =  "Min-SE" HCOLON delta-seconds *(SEMI generic-param)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat_sip.sip.message import SIPMessage

__all__ = [
    "DEFAULT_MIN_SE",
    "DEFAULT_SESSION_EXPIRES",
    "MIN_SE_FLOOR",
    "SessionExpires",
    "SessionTimerPolicy",
    "TimerNegotiation",
    "bye_margin",
    "parse_min_se",
    "supports_timer",
    "uac_offer",
    "uac_result",
    "uas_answer",
]

#: What we ask for and grant by default, seconds (RFC 4028 s.4 recommends 1800).
DEFAULT_SESSION_EXPIRES = 1800
#: Our Min-SE by default, seconds: the floor RFC 4028 s.4 sets.
DEFAULT_MIN_SE = 90
#: No Min-SE may be below this (RFC 4028 s.4).
MIN_SE_FLOOR = 90
_MAX_DELTA = 2**31 - 1


def _delta(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if 0 < value <= _MAX_DELTA else None


@dataclass(frozen=True)
class SessionExpires:
    """A Session-Expires value.

    Attributes:
        delta: The session interval, seconds.
        refresher: "uac", "uas" or None (not said).
    """

    delta: int
    refresher: str | None = None

    @classmethod
    def parse(cls, value: str | None) -> SessionExpires | None:
        """Parse a Session-Expires value; None when missing or malformed."""
        if value is None:
            return None
        head, *params = value.split(";")
        delta = _delta(head)
        if delta is None:
            return None
        refresher = None
        for param in params[:16]:
            name, _, text = param.partition("=")
            if name.strip().lower() == "refresher":
                text = text.strip().lower()
                refresher = text if text in ("uac", "uas") else None
        return cls(delta, refresher)

    @classmethod
    def of(cls, message: SIPMessage) -> SessionExpires | None:
        """The Session-Expires of a message (compact form ``x`` included), or None."""
        return cls.parse(message.headers.get("Session-Expires"))

    def __str__(self) -> str:
        return f"{self.delta};refresher={self.refresher}" if self.refresher else str(self.delta)


def parse_min_se(value: str | None) -> int | None:
    """The seconds of a Min-SE value, or None when missing or malformed."""
    if value is None:
        return None
    return _delta(value.split(";", 1)[0])


def supports_timer(message: SIPMessage) -> bool:
    """Whether ``Supported`` or ``Require`` lists ``timer``."""
    tags = message.option_tags("Supported") + message.option_tags("Require")
    return "timer" in (t.lower() for t in tags)


@dataclass(frozen=True)
class SessionTimerPolicy:
    """What we want of session timers.

    Attributes:
        enabled: Ask for (as UAC) and grant (as UAS) a session timer even
            when the peer did not ask; False only answers what the peer asks.
        session_expires: The interval we ask for and grant at most, seconds.
        min_se: The shortest interval we accept, seconds (>= 90).

    Raises:
        ValueError: ``min_se`` below 90, or ``session_expires`` below ``min_se``.
    """

    enabled: bool = True
    session_expires: int = DEFAULT_SESSION_EXPIRES
    min_se: int = DEFAULT_MIN_SE

    def __post_init__(self) -> None:
        if self.min_se < MIN_SE_FLOOR:
            raise ValueError(f"min_se must be at least {MIN_SE_FLOOR} s, not {self.min_se}")
        if self.session_expires < self.min_se:
            raise ValueError(
                f"session_expires ({self.session_expires} s) is below min_se ({self.min_se} s)"
            )


@dataclass(frozen=True)
class TimerNegotiation:
    """The outcome of one transaction's negotiation.

    Attributes:
        interval: The session interval, seconds.
        we_refresh: Whether we are the refresher.
    """

    interval: int
    we_refresh: bool


@dataclass(frozen=True)
class UASAnswer:
    """What a UAS answers a request (INVITE, re-INVITE, UPDATE) with.

    Attributes:
        min_se: Not None: the request's interval is too small; answer 422 with
            this Min-SE (RFC 4028 s.8.1).
        headers: Headers for the 2xx (Session-Expires, Require: timer).
        negotiation: The timer the 2xx sets up, or None for no timer.
    """

    min_se: int | None
    headers: tuple[tuple[str, str], ...] = ()
    negotiation: TimerNegotiation | None = None


def uas_answer(request: SIPMessage, policy: SessionTimerPolicy) -> UASAnswer:
    """Negotiate as the UAS of ``request`` (RFC 4028 s.8-9).

    The interval is the request's, lowered to ours when ours is smaller but
    never below either side's Min-SE; the refresher is the one the request
    named, else the UAC when it supports timers, else us. A request without
    Session-Expires gets ours (refresher us) when the policy is enabled.
    """
    asked = SessionExpires.of(request)
    their_min = parse_min_se(request.headers.get("Min-SE")) or MIN_SE_FLOOR
    uac_supports = supports_timer(request)
    if asked is not None and asked.delta < policy.min_se:
        return UASAnswer(min_se=policy.min_se)
    if asked is None:
        if not policy.enabled:
            return UASAnswer(None)
        interval = max(policy.session_expires, their_min, policy.min_se)
        refresher = "uas"
    else:
        interval = max(min(asked.delta, policy.session_expires), their_min, policy.min_se)
        interval = min(interval, asked.delta)  # never more than asked
        refresher = asked.refresher or ("uac" if uac_supports else "uas")
        if refresher == "uac" and not uac_supports:
            refresher = "uas"  # a UAC that cannot refresh (RFC 4028 s.9)
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if uac_supports:
        headers.append(("Require", "timer"))
    return UASAnswer(None, tuple(headers), TimerNegotiation(interval, refresher == "uas"))


def uac_offer(policy: SessionTimerPolicy, interval: int | None = None) -> list[tuple[str, str]]:
    """Session-Expires and Min-SE for a request we send (RFC 4028 s.7.1).

    Args:
        policy: Ours.
        interval: The interval to ask (a refresh keeps the current one, a
            retry after 422 the larger one); default the policy's.
    """
    delta = interval or policy.session_expires
    min_se = max(policy.min_se, min(delta, policy.min_se))
    return [("Session-Expires", str(delta)), ("Min-SE", str(min_se))]


def uac_offer_refresh(interval: int, policy: SessionTimerPolicy) -> list[tuple[str, str]]:
    """Session-Expires (refresher=uac: we stay the refresher) and Min-SE for a refresh."""
    return [("Session-Expires", f"{interval};refresher=uac"), ("Min-SE", str(policy.min_se))]


def uac_result(response: SIPMessage) -> TimerNegotiation | None:
    """Our timer after a 2xx to a request we sent (RFC 4028 s.7.2), or None for none.

    A 2xx without Session-Expires means no session timer. ``refresher=uac``
    (or none given) makes us the refresher.
    """
    se = SessionExpires.of(response)
    if se is None:
        return None
    return TimerNegotiation(se.delta, se.refresher != "uas")


def bye_margin(interval: int) -> float:
    """Seconds before expiry a non-refresher sends BYE: min(32, interval/3) (RFC 4028 s.10)."""
    return min(32.0, interval / 3)
