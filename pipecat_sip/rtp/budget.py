"""How much one call may receive: a token bucket in seconds of audio (sans-IO).

A caller sending faster than real time (a flood, or a stream replayed at
full speed) must not grow memory or make an echo play on for the length of
the flood. :class:`InputBudget` lets a call accept at most real time plus a
burst of ``ahead_s``: tokens are seconds, refilled at one per second of
``now``, up to ``ahead_s``; a packet costs the audio time it carries.
"""

__all__ = ["InputBudget"]


class InputBudget:
    """A token bucket measured in seconds of audio.

    Args:
        ahead_s: Most audio, seconds, accepted ahead of real time (the
            bucket's size; it starts full).

    Example:
        >>> budget = InputBudget(0.06)
        >>> [budget.take(0.02, 0.0) for _ in range(4)]
        [True, True, True, False]
        >>> budget.take(0.02, 0.02)  # 20 ms later: room for one more
        True
    """

    __slots__ = ("ahead_s", "_tokens", "_at")

    def __init__(self, ahead_s: float):
        self.ahead_s = float(ahead_s)
        self._tokens = self.ahead_s
        self._at: float | None = None

    def take(self, cost_s: float, now: float) -> bool:
        """Spend ``cost_s`` seconds of audio at ``now`` if the bucket holds them.

        Returns:
            False (nothing spent) when the packet would put the call more
            than ``ahead_s`` ahead of real time.
        """
        at = self._at
        tokens = self._tokens
        if at is not None and now > at:
            tokens += now - at
            if tokens > self.ahead_s:
                tokens = self.ahead_s
        self._at = now if at is None or now > at else at
        if tokens + 1e-9 < cost_s:  # (float sums of ptimes land a hair short)
            self._tokens = tokens
            return False
        self._tokens = tokens - cost_s
        return True
