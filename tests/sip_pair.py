"""Two sans-IO UserAgents wired together in memory, on a fake clock, over lossy links.

In the manner of h11's ConnectionPair and aioquic's client_and_server(): no
sockets, no real time. Datagrams each UA queues are carried to the other one
through a `Link` per direction that can drop (by probability from a seeded RNG
or by a predicate), duplicate and delay them. The clock only moves when
nothing is left to deliver "now": it jumps to the earliest of the next
delivery and the UAs' `get_timer()` deadlines. Everything that crossed is in
`log` with its time and fate.

    pair = SIPPair()
    pair.on_event("b", auto_answer)
    call_id = pair.a.invite(pair.uri_of("b"), SDP, pair.now)
    pair.run()                       # until both sides are quiet
    pair.assert_no_leaks()
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pipecat_sip.sip.session_timer import SessionTimerPolicy
from pipecat_sip.sip.transaction import TimerValues
from pipecat_sip.sip.useragent import (
    CallEnded,
    Event,
    IncomingCall,
    Notice,
    ReofferReceived,
    UserAgent,
)

Addr = tuple[str, int]

SDP_OFFER = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
SDP_ANSWER = b"v=0\r\no=b 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


@dataclass
class Link:
    """What happens to datagrams going one way.

    Attributes:
        loss: Probability (0..1) that a datagram is dropped, drawn from `rng`.
        drop: Predicate on the datagram; True drops it (deterministic loss).
        duplicate: Extra copies delivered of every datagram that is not dropped.
        latency: Seconds between sending and delivery.
        rng: The RNG for `loss` (seed it for reproducible runs).
    """

    loss: float = 0.0
    drop: Callable[[bytes], bool] | None = None
    duplicate: int = 0
    latency: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def fate(self, data: bytes) -> str:
        """The fate of one datagram: "dropped" or "delivered"."""
        if self.drop is not None and self.drop(data):
            return "dropped"
        if self.loss and self.rng.random() < self.loss:
            return "dropped"
        return "delivered"


@dataclass
class Crossing:
    """One datagram that was sent.

    Attributes:
        time: When it was sent (fake clock, seconds).
        src: "a", "b" or "outside".
        dst: "a", "b" or "outside".
        first_line: Its start line.
        fate: "delivered" or "dropped".
        data: The datagram.
        addr: The destination address it was sent to.
    """

    time: float
    src: str
    dst: str
    first_line: str
    fate: str
    data: bytes
    addr: Addr


def first_line(data: bytes) -> str:
    """The start line of a datagram as text."""
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def drop_first(prefix: bytes, count: int = 1) -> Callable[[bytes], bool]:
    """A `Link.drop` predicate dropping the first `count` datagrams starting with `prefix`."""
    left = [count]

    def drop(data: bytes) -> bool:
        if data.startswith(prefix) and left[0] > 0:
            left[0] -= 1
            return True
        return False

    return drop


def drop_all(prefix: bytes) -> Callable[[bytes], bool]:
    """A `Link.drop` predicate dropping every datagram starting with `prefix`."""
    return lambda data: data.startswith(prefix)


class SIPPair:
    """Two UserAgents "a" (127.0.0.1:5070, user alice) and "b" (127.0.0.1:5080, user bot).

    Args:
        a_to_b: The link from a to b.
        b_to_a: The link from b to a.
        timer_values: T1, T2, T4 of both UAs.
        max_steps: Bound on clock steps in one `run` call.
        a_options: Further `UserAgent` arguments for a (``authenticator=...``);
            session timers are off unless ``session_timers`` is given.
        b_options: Further `UserAgent` arguments for b.
    """

    HOST = "127.0.0.1"

    def __init__(
        self,
        a_to_b: Link | None = None,
        b_to_a: Link | None = None,
        *,
        timer_values: TimerValues | None = None,
        max_steps: int = 100_000,
        a_options: dict | None = None,
        b_options: dict | None = None,
    ) -> None:
        self.timer_values = timer_values or TimerValues()
        # No session timers unless a test asks: "run until quiet" must end.
        a_options = {"session_timers": SessionTimerPolicy(enabled=False), **(a_options or {})}
        b_options = {"session_timers": SessionTimerPolicy(enabled=False), **(b_options or {})}
        self.a = UserAgent(
            self.HOST, 5070, user="alice", timer_values=self.timer_values, **a_options
        )
        self.b = UserAgent(self.HOST, 5080, user="bot", timer_values=self.timer_values, **b_options)
        self.ua = {"a": self.a, "b": self.b}
        self.addr = {"a": (self.HOST, 5070), "b": (self.HOST, 5080)}
        self.links = {"a": a_to_b or Link(), "b": b_to_a or Link()}  # keyed by sender
        self.now = 0.0
        self.log: list[Crossing] = []
        self.events: dict[str, list[Event]] = {"a": [], "b": []}
        self.outside: list[Crossing] = []  # datagrams to addresses not in the pair
        self.max_steps = max_steps
        self.fail_on_errors = True
        """Raise when a UA reports an exception of its own (a bug), instead of a Notice."""
        self._handlers: dict[str, list[Callable[[SIPPair, Event], None]]] = {"a": [], "b": []}
        self._in_flight: list[tuple[float, int, str, bytes]] = []  # (due, n, dst, data)
        self._seq = itertools.count()

    # --- wiring -------------------------------------------------------------------
    def uri_of(self, side: str) -> str:
        """The SIP URI to call a side at."""
        host, port = self.addr[side]
        return f"sip:{self.ua[side].user}@{host}:{port}"

    def on_event(self, side: str, handler: Callable[[SIPPair, Event], None]) -> None:
        """Call `handler(pair, event)` for every event of `side` (it may act on the UA)."""
        self._handlers[side].append(handler)

    def off_event(self, side: str, handler: Callable[[SIPPair, Event], None] | None = None) -> None:
        """Stop calling `handler` for `side`'s events (every handler when None)."""
        if handler is None:
            self._handlers[side].clear()
        else:
            self._handlers[side].remove(handler)

    def _side_of(self, addr: Addr) -> str:
        for side, a in self.addr.items():
            if tuple(addr) == a:
                return side
        return "outside"

    # --- moving datagrams --------------------------------------------------------
    def flush(self) -> None:
        """Carry what the UAs queued, deliver what is due now, until nothing moves."""
        for _ in range(self.max_steps):
            moved = self._collect()
            while self._in_flight and self._in_flight[0][0] <= self.now:
                _, _, dst, data = heapq.heappop(self._in_flight)
                src = "b" if dst == "a" else "a"
                self.ua[dst].receive_datagram(data, self.addr[src], self.now)
                self._drain(dst)
                moved = True
            if not moved:
                return
        raise AssertionError("flush did not settle")

    def _collect(self) -> bool:
        moved = False
        for src in ("a", "b"):
            self._drain(src)
            for data, flow in self.ua[src].datagrams_to_send():
                addr = flow.remote
                moved = True
                dst = self._side_of(addr)
                if dst == "outside":
                    crossing = Crossing(
                        self.now, src, dst, first_line(data), "delivered", data, addr
                    )
                    self.log.append(crossing)
                    self.outside.append(crossing)
                    continue
                link = self.links[src]
                fate = link.fate(data)
                self.log.append(Crossing(self.now, src, dst, first_line(data), fate, data, addr))
                if fate == "dropped":
                    continue
                for _ in range(1 + link.duplicate):
                    due = self.now + link.latency
                    heapq.heappush(self._in_flight, (due, next(self._seq), dst, data))
        return moved

    def _drain(self, side: str) -> None:
        ua = self.ua[side]
        while (event := ua.next_event()) is not None:
            if isinstance(event, Notice) and event.error is not None and self.fail_on_errors:
                raise AssertionError(f"{side}: {event.message}") from event.error
            self.events[side].append(event)
            for handler in self._handlers[side]:
                handler(self, event)

    def inject(self, side: str, data: bytes, source: Addr) -> list[Crossing]:
        """Deliver `data` to `side` as if from `source`; return what that made it send.

        What `side` sends to addresses outside the pair is returned (and kept
        in `outside`); what it sends to the other side travels normally.
        """
        before = len(self.outside)
        self.ua[side].receive_datagram(data, source, self.now)
        self._drain(side)
        self.flush()
        return self.outside[before:]

    # --- the clock ----------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest timer deadline or delivery, or None when all is quiet."""
        candidates = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        if self._in_flight:
            candidates.append(self._in_flight[0][0])
        return min(candidates) if candidates else None

    def step(self) -> bool:
        """Jump to the next deadline and run it; False when there is none."""
        self.flush()
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self.now = max(self.now, deadline)
        for side in ("a", "b"):
            ua = self.ua[side]
            timer = ua.get_timer()
            if timer is not None and timer <= self.now:
                ua.handle_timer(self.now)
                self._drain(side)
        self.flush()
        return True

    def run(self, until: float | None = None) -> None:
        """Step until nothing is pending, or until the clock would pass `until`."""
        self.flush()
        for _ in range(self.max_steps):
            deadline = self.next_deadline()
            if deadline is None or (until is not None and deadline > until):
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.step()
        raise AssertionError(f"run did not finish in {self.max_steps} steps")

    def run_for(self, seconds: float) -> None:
        """Run the clock `seconds` forward."""
        self.run(until=self.now + seconds)

    def act(self, side: str, action: str, *args: object) -> object:
        """Call a UA action with the pair's clock (`pair.act("a", "hangup", cid)`), then flush."""
        result = getattr(self.ua[side], action)(*args, self.now)
        self._drain(side)
        self.flush()
        return result

    # --- looking at what happened ---------------------------------------------------
    def sent(self, src: str, prefix: str, *, fate: str | None = None) -> list[Crossing]:
        """Datagrams `src` sent whose start line begins with `prefix`."""
        return [
            c
            for c in self.log
            if c.src == src and c.first_line.startswith(prefix) and (fate is None or c.fate == fate)
        ]

    def ended(self, side: str) -> list[CallEnded]:
        """The CallEnded events of a side."""
        return [e for e in self.events[side] if isinstance(e, CallEnded)]

    def of_type(self, side: str, cls: type) -> list:
        """The events of a side of one type."""
        return [e for e in self.events[side] if isinstance(e, cls)]

    def assert_no_leaks(self, slack: float = 5.0) -> None:
        """No call left, and after 64*T1 + slack seconds no transaction and no index entry."""
        for side in ("a", "b"):
            ua = self.ua[side]
            assert ua.active_calls == 0, f"{side}: calls left {ua.invites.sessions}"
        self.run_for(64 * self.timer_values.t1 + slack)
        for side in ("a", "b"):
            ua = self.ua[side]
            assert not ua.layer.server, f"{side}: server transactions left {ua.layer.server}"
            assert not ua.layer.client, f"{side}: client transactions left {ua.layer.client}"
            assert ua.get_timer() is None, f"{side}: timer still armed"
            assert ua.tracked == 0, f"{side}: {ua.tracked} index entries left"
        assert not self._in_flight


# --- ready-made application behaviour -------------------------------------------------


def auto_answer(
    side: str = "b", *, ring: bool = True, sdp: bytes = SDP_ANSWER
) -> Callable[[SIPPair, Event], None]:
    """A handler for `side`: ring (optionally) and answer every IncomingCall at once.

    Re-offers are answered with the call's current session description.
    """

    def handler(pair: SIPPair, event: Event) -> None:
        ua = pair.ua[side]
        if isinstance(event, IncomingCall):
            if ring:
                ua.ringing(event.call_id, pair.now)
            ua.answer(event.call_id, sdp, pair.now)
        elif isinstance(event, ReofferReceived):
            session = ua.session(event.call_id)
            if session is not None:
                ua.answer_reoffer(event.call_id, session.local_sdp, pair.now)

    return handler
