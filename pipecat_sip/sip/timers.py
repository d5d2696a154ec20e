"""Deadlines of a sans-IO protocol object, kept in one heap.

The object arms timers with :meth:`TimerQueue.start` and cancels them with
the returned :class:`Timer`; the I/O layer asks :meth:`TimerQueue.deadline`
when to call back and then runs :meth:`TimerQueue.run_due` with the time.
Nothing here reads a clock: ``now`` (seconds of a monotonic clock) comes in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

__all__ = ["Timer", "TimerQueue"]


class Timer:
    """One armed deadline; :meth:`cancel` disarms it (idempotent).

    Attributes:
        name: What it is for, for debugging (``"2xx retransmit"``).
        deadline: When it fires, seconds.
    """

    __slots__ = ("name", "deadline", "_callback", "cancelled")

    def __init__(self, name: str, deadline: float, callback: Callable[[float], None]) -> None:
        self.name = name
        self.deadline = deadline
        self._callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Disarm the timer."""
        self.cancelled = True

    def fire(self, now: float) -> None:
        """Run the callback with the time it fired at."""
        self.cancelled = True
        self._callback(now)

    def __repr__(self) -> str:
        return f"<Timer {self.name} at {self.deadline:.3f}{' cancelled' if self.cancelled else ''}>"


class TimerQueue:
    """Armed timers in deadline order; cancelled ones are dropped lazily.

    Work is O(log n) per start and per fired timer; memory is bounded by the
    timers armed and not yet fired or skipped.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def start(self, name: str, deadline: float, callback: Callable[[float], None]) -> Timer:
        """Arm ``callback(now)`` for ``deadline`` (seconds) and return its handle."""
        timer = Timer(name, deadline, callback)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        return timer

    def deadline(self) -> float | None:
        """The earliest deadline of a live timer, or None."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> None:
        """Fire every live timer whose deadline is at or before ``now``, earliest first.

        A timer armed by a callback for a time at or before ``now`` fires in
        the same call.
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.fire(now)

    def __len__(self) -> int:
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)
