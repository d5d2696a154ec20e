"""Reliable provisional responses (RFC 3262, "100rel"): RSeq, RAck and the UAS's queue.

As UAS, a provisional response sent reliably carries ``Require: 100rel`` and
an ``RSeq`` (one higher for each, starting at a random value below 2**31,
s.3); it is retransmitted (T1, doubling) until a PRACK with the matching
``RAck`` arrives, and only one may be unacknowledged at a time: later ones
wait in :class:`ReliableProvisionals`'s queue. As UAC, each reliable
provisional response whose RSeq is the next one expected is acknowledged
with a PRACK; a retransmission or an out-of-order one is not processed
further (s.4).

The timers live in the INVITE usage (on the UA's timer queue); this module
is the bookkeeping and the header grammar::

    RAck          =  "RAck" HCOLON response-num LWS CSeq-num LWS Method
    response-num  =  1*DIGIT
    RSeq          =  "RSeq" HCOLON response-num
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat_sip.sip.message import SIPMessage, SIPResponse

__all__ = [
    "MAX_RSEQ",
    "RAck",
    "ReliableProvisionals",
    "UnacknowledgedResponse",
    "parse_rseq",
    "requires_100rel",
    "supports_100rel",
]

#: RSeq values stay below 2**31 at the start, leaving room to count up (RFC 3262 s.3).
MAX_RSEQ = 2**31 - 1
_MAX_NUMBER = 2**32 - 1
_RACK_RE = re.compile(r"\s*([0-9]{1,10})\s+([0-9]{1,10})\s+([A-Za-z]{1,32})\s*\Z")


@dataclass(frozen=True)
class RAck:
    """The RAck header of a PRACK (RFC 3262 s.7.2).

    Attributes:
        rseq: The RSeq of the response acknowledged.
        cseq: The CSeq number of the INVITE it answered.
        method: The INVITE's method ("INVITE").
    """

    rseq: int
    cseq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> RAck:
        """Parse an RAck value.

        Raises:
            ValueError: Not ``response-num CSeq-num Method`` with numbers below 2**32.
        """
        match = _RACK_RE.match(value)
        if match is None:
            raise ValueError(f"RAck {value[:40]!r} is not 'RSeq CSeq Method'")
        rseq, cseq = int(match.group(1)), int(match.group(2))
        if rseq > _MAX_NUMBER or cseq > _MAX_NUMBER:
            raise ValueError(f"RAck {value[:40]!r} has a number of 2**32 or more")
        return cls(rseq, cseq, match.group(3).upper())

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def parse_rseq(value: str | None) -> int | None:
    """The number of an RSeq header, or None when missing or malformed (1 .. 2**32-1)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 0 < number <= _MAX_NUMBER else None


def requires_100rel(message: SIPMessage) -> bool:
    """Whether ``Require`` lists 100rel."""
    return "100rel" in (t.lower() for t in message.option_tags("Require"))


def supports_100rel(message: SIPMessage) -> bool:
    """Whether ``Supported`` or ``Require`` lists 100rel."""
    tags = message.option_tags("Supported") + message.option_tags("Require")
    return "100rel" in (t.lower() for t in tags)


@dataclass(eq=False)
class UnacknowledgedResponse:
    """A reliable provisional response waiting for its PRACK.

    Attributes:
        rseq: Its RSeq.
        response: The response (retransmitted as is).
        first_sent: When it was first sent, seconds (64*T1 from here it gives up).
        interval: The current retransmission interval, seconds.
        has_sdp: It carries a session description (then no 2xx before its PRACK).
    """

    rseq: int
    response: SIPResponse
    first_sent: float = 0.0
    interval: float = 0.0
    has_sdp: bool = False


@dataclass(eq=False)
class ReliableProvisionals:
    """A UAS call's reliable provisional responses: the one in flight and those queued.

    Args:
        next_rseq: The RSeq of the first one (random, 1 .. 2**31-1).
    """

    next_rseq: int
    outstanding: UnacknowledgedResponse | None = None
    queue: deque[UnacknowledgedResponse] = field(default_factory=deque)
    acknowledged: int = 0
    late: set[int] = field(default_factory=set)
    """RSeqs sent but unacknowledged when the final response went out: their
    PRACKs may still arrive (crossing the 2xx) and get 200, not 481."""

    def prepare(self, response: SIPResponse) -> UnacknowledgedResponse:
        """Stamp ``Require: 100rel`` and the next RSeq on ``response`` (RFC 3262 s.3)."""
        rseq = self.next_rseq
        self.next_rseq = rseq + 1 if rseq < _MAX_NUMBER else 1
        response.headers.add("Require", "100rel")
        response.headers.add("RSeq", str(rseq))
        return UnacknowledgedResponse(rseq, response, has_sdp=bool(response.body))

    def matches(self, rack: RAck, invite_cseq: int) -> bool:
        """Whether ``rack`` acknowledges the response in flight."""
        out = self.outstanding
        return (
            out is not None
            and rack.rseq == out.rseq
            and rack.cseq == invite_cseq
            and rack.method == "INVITE"
        )

    @property
    def sdp_unacknowledged(self) -> bool:
        """Whether a session description waits for its PRACK (in flight or queued).

        A 2xx may not be sent then (RFC 3262 s.3).
        """
        if self.outstanding is not None and self.outstanding.has_sdp:
            return True
        return any(item.has_sdp for item in self.queue)

    def acknowledges_late(self, rack: RAck, invite_cseq: int) -> bool:
        """Whether ``rack`` acknowledges one sent before the final response (then forgets it)."""
        if rack.rseq in self.late and rack.cseq == invite_cseq and rack.method == "INVITE":
            self.late.discard(rack.rseq)
            return True
        return False

    def clear(self) -> None:
        """Stop: a final response was sent (the one in flight may still be PRACKed)."""
        if self.outstanding is not None:
            self.late.add(self.outstanding.rseq)
        self.outstanding = None
        self.queue.clear()
