"""The jitter buffer's lateness quantile from its tail: exactly the sorted window's.

The buffer keeps only the few largest lateness values of its window (the
quantile it needs is the k-th largest, k <= 6 of 250 at 2%) plus a count of
ties at the tail's edge. On arrival patterns full of equal values (a 1 ms
grid, a perfectly clean path), random ones, and a drifting sender clock
(where the values leaving the window are the largest), after every packet
the tail must equal the top of the sorted window and the target wait the
quantile of the sorted window.
"""

import math
import random

import pytest

from pipecat_sip.rtp.jitterbuffer import JitterBuffer
from pipecat_sip.rtp.packet import RtpPacket


def reference_wait(jb: JitterBuffer) -> float:
    values = sorted(jb._fifo)
    n = len(values)
    q = jb._q_full if n == jb._window else min(n - 1, math.ceil(jb._keep * n) - 1)
    return min(max(values[q] + jb._margin, jb._min_delay), jb._max_delay)


@pytest.mark.parametrize(
    ("pattern", "window", "late_fraction"),
    [
        ("grid", 250, 0.02),
        ("grid", 40, 0.1),
        ("clean", 250, 0.02),
        ("random", 250, 0.02),
        ("random", 7, 0.5),
        ("spikes", 100, 0.05),
        ("fast-sender", 250, 0.02),
        ("slow-sender", 250, 0.02),
    ],
)
def test_tail_matches_the_sorted_window(pattern, window, late_fraction):
    rng = random.Random(f"{pattern}-{window}")
    jb = JitterBuffer(8000, 20, window=window, late_fraction=late_fraction, base_window=30)
    for i in range(3000):
        if pattern == "grid":
            extra = rng.randrange(0, 6) / 1000  # many equal values
        elif pattern == "clean":
            extra = 0.0
        elif pattern == "random":
            extra = rng.uniform(0, 0.03)
        elif pattern == "fast-sender":  # arrivals drift earlier: the oldest are the latest
            extra = 1.0 - i * 0.0001 + rng.uniform(0, 0.002)
        elif pattern == "slow-sender":
            extra = i * 0.0001 + rng.uniform(0, 0.002)
        else:
            extra = 0.2 if rng.random() < 0.03 else rng.randrange(0, 3) / 1000
        jb.put(RtpPacket(0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 7, b"\x01" * 160), i * 0.02 + extra)
        jb.pop(i * 0.02 + 0.01)
        values = sorted(jb._fifo)
        k = len(jb._tail)
        assert k >= 1 and jb._tail == values[-k:], i
        inside = jb._tail.count(jb._tail[0])
        assert jb._ties == values.count(jb._tail[0]) - inside, i
        assert jb._wait == reference_wait(jb), i
