"""RTP timeout: whether the far end of a call is still there.

Sans-IO: :class:`Liveness` keeps when the peer last showed a sign of life
(the owner writes :attr:`Liveness.last_heard` for each accepted packet; an
attribute, not a call, as it is on the per-packet path) and answers
:meth:`Liveness.check` once per media-clock tick.
"""

__all__ = ["Liveness"]


class Liveness:
    """One session's RTP timeout.

    The count starts at :meth:`start`; while paused (the peer is not
    expected to send, e.g. it holds the call with ``inactive``) it does not
    run, and :meth:`resume` counts afresh from then. :meth:`check` reports
    the timeout once.

    Args:
        timeout_s: Seconds without a sign of life before :meth:`check` is
            True; 0 disables the timeout.

    Example:
        >>> live = Liveness(2.0)
        >>> live.start(10.0)
        >>> live.check(11.0), live.check(12.5), live.check(13.0)
        (False, True, False)
    """

    __slots__ = ("timeout_s", "last_heard", "expired", "_running", "_paused")

    def __init__(self, timeout_s: float):
        self.timeout_s = max(0.0, float(timeout_s))
        self.last_heard = 0.0
        """When the peer last showed a sign of life (or the count (re)started), s."""
        self.expired = False
        """True once the timeout was reported."""
        self._running = False
        self._paused = False

    @property
    def running(self) -> bool:
        """Whether the count runs (started, not paused, not expired)."""
        return self._running and not self._paused and not self.expired

    def start(self, now: float) -> None:
        """Start counting from ``now`` (a second call restarts the count)."""
        self._running = True
        self.last_heard = now

    def pause(self) -> None:
        """Stop counting until :meth:`resume`."""
        self._paused = True

    def resume(self, now: float) -> None:
        """Count again, afresh from ``now`` (nothing if not paused)."""
        if self._paused:
            self._paused = False
            self.last_heard = now

    def check(self, now: float) -> bool:
        """True once, at the first call ``timeout_s`` or more after the last sign of life."""
        if (
            self.timeout_s
            and self._running
            and not self._paused
            and not self.expired
            and now - self.last_heard >= self.timeout_s
        ):
            self.expired = True
            return True
        return False
