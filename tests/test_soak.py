"""Soak (issue 6): many SIPp calls through the real server, then nothing is left over.

Half the calls run concurrently (SIPp `uac_rtp`: RTP both ways, up to 50 at
once), half one after another (`uac_basic`, no hold). Afterwards the RTP port
pool is full again, the user agent holds no call, dialog or transaction, no
`SIPCall` or `RTPSession` object is alive, and the counts of asyncio tasks
and open file descriptors are what they were before the first call. RSS
before and after is printed (and bounded generously).

CI runs 500 calls; the long form is
`SOAK_CALLS=5000 .venv/bin/python -m pytest tests/test_soak.py -s -q`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
from collections import Counter

import pytest

from pipecat_sip.call import SIPCall
from pipecat_sip.media import RTPSession
from pipecat_sip.server import SIPServer
from pipecat_sip.sip.transaction import TimerValues
from tests.helpers.peers import require_binary
from tests.helpers.server import wait_for
from tests.helpers.sipp import run_sipp

pytestmark = pytest.mark.interop

SOAK_CALLS = int(os.environ.get("SOAK_CALLS", "500"))
CONCURRENCY = 50


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def live_objects(kind: type, before: list[object] = ()) -> int:
    """How many ``kind`` objects are alive, not counting those in ``before``
    (what earlier tests in the same process left, compared by identity)."""
    gc.collect()
    known = {id(o) for o in before}
    return sum(1 for o in gc.get_objects() if issubclass(type(o), kind) and id(o) not in known)


def existing(*kinds: type) -> list[object]:
    gc.collect()
    return [o for o in gc.get_objects() if issubclass(type(o), kinds)]


async def test_soak_calls_leave_nothing_behind():
    require_binary("sipp")
    reasons: Counter[str] = Counter()
    answered = 0

    async def on_call(call: SIPCall) -> None:
        nonlocal answered
        await call.answer()
        answered += 1
        reasons[await call.wait_ended()] += 1

    base = random.randrange(20000, 28000, 2)
    server = SIPServer(
        on_call,
        host="127.0.0.1",
        port=0,
        rtp_port_range=(base, base + 4 * CONCURRENCY + 99),
        max_calls=CONCURRENCY * 2,
        rate_limit=0,  # one SIPp source stands for a trunk: no per-source limits
        max_unconfirmed_per_source=CONCURRENCY * 2,
        rtp_timeout_s=10,
        timer_values=TimerValues(t1=0.05, t2=0.4, t4=0.5),  # Timer J/K end transactions soon
    )
    await server.start()
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(server.calls))
            await asyncio.sleep(0.05)

    try:
        await asyncio.sleep(0.2)  # the media clock and loggers settle
        pool_size = server.ports.available
        preexisting = existing(SIPCall, RTPSession)  # held strongly: no id is reused
        tasks_before = len(asyncio.all_tasks())
        fds_before = open_fds()
        rss_before = rss_mb()
        sampler = asyncio.ensure_future(sample())
        target = f"127.0.0.1:{server.port}"
        concurrent_calls = SOAK_CALLS // 2
        sequential_calls = SOAK_CALLS - concurrent_calls

        concurrent = await run_sipp(
            "uac_rtp.xml",
            target,
            calls=concurrent_calls,
            concurrent=CONCURRENCY,
            rate=100,
            keys={"hold_ms": "400"},
            timeout=60 + concurrent_calls * 0.05,
            trace_msg=False,
        )
        assert concurrent.ok, concurrent.summary()
        assert concurrent.successful_calls == concurrent_calls, concurrent.summary()
        sequential = await run_sipp(
            "uac_basic.xml",
            target,
            calls=sequential_calls,
            concurrent=1,
            rate=1000,
            keys={"hold_ms": "0"},
            timeout=60 + sequential_calls * 0.1,
            trace_msg=False,
        )
        assert sequential.ok, sequential.summary()
        assert sequential.successful_calls == sequential_calls, sequential.summary()
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

        ua = server.ua
        assert ua is not None
        assert await wait_for(lambda: reasons.total() == SOAK_CALLS, 10), reasons
        assert reasons == Counter({"remote_bye": SOAK_CALLS}), reasons
        assert answered == SOAK_CALLS and peak >= CONCURRENCY // 2, (answered, peak)
        # every transaction runs out (Timer J/K at 64*T1 = 3.2 s)
        assert await wait_for(lambda: not ua.layer.server and not ua.layer.client, 10), (
            len(ua.layer.server),
            len(ua.layer.client),
        )
        assert await wait_for(lambda: server.manager.tasks_running == 0, 5)
        await asyncio.sleep(0.3)

        assert server.ports.in_use == 0 and server.ports.available == pool_size
        assert not server.calls and ua.active_calls == 0 and ua.tracked == 0, ua.tracked
        assert live_objects(SIPCall, preexisting) == 0, "SIPCall objects left alive"
        assert live_objects(RTPSession, preexisting) == 0, "RTPSession objects left alive"
        del preexisting
        tasks_after = len(asyncio.all_tasks())
        fds_after = open_fds()
        rss_after = rss_mb()
        print(
            f"\nsoak: {SOAK_CALLS} calls (peak {peak} concurrent): "
            f"RSS {rss_before:.1f} MB -> {rss_after:.1f} MB, "
            f"tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}"
        )
        assert tasks_after == tasks_before, asyncio.all_tasks()
        assert fds_after == fds_before, sorted(os.listdir("/proc/self/fd"))
        assert rss_after - rss_before < 30 + SOAK_CALLS * 0.02, (rss_before, rss_after)
    finally:
        await server.stop()
