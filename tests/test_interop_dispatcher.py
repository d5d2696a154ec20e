"""Interop: Kamailio's dispatcher (deploy/kamailio/dispatcher.cfg) in front of two instances.

Issue 16 item 1 and 2, with real processes: two pipecat-sip instances
(tests/helpers/instance_bot.py: the real runner with its SIGTERM draining and
operations API, an RTP-level echo bot), each with its own SIP port, RTP range
and API port, behind Kamailio probing them with OPTIONS every second; SIPp
places calls with RTP through Kamailio, and the media flows directly between
SIPp and the instance that took the call.

1. 40 calls with RTP: spread evenly (each instance's calls and RTP packets
   received, from its /metrics, within 20% of the mean), none failed.
2. A rolling restart: instance A gets SIGTERM during a run of 20 calls; no
   call fails (new INVITEs to A get 503 and fail over, the probe takes A
   out), A's live calls complete (ended by the caller's BYE, none hung up),
   A exits 0; restarted on the same ports, the probe takes it back in.
3. Instance B is killed (SIGKILL): once the probe marks it inactive, every
   new call goes to A.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.instance import Instance
from tests.helpers.kamailio import DISPATCHER_CFG, Kamailio, quote, require_kamailio
from tests.helpers.peers import require_binary
from tests.helpers.sipp import run_sipp, start_sipp

pytestmark = [pytest.mark.interop, pytest.mark.slow]


async def metrics(inst: Instance) -> dict[tuple[str, tuple], float]:
    async with httpx.AsyncClient(base_url=inst.api, timeout=5) as http:
        text = (await http.get("/metrics")).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def started(m) -> float:
    return m.get(("pipecat_sip_calls_started_total", (("direction", "inbound"),)), 0.0)


def rtp_in(m) -> float:
    return m.get(("pipecat_sip_rtp_packets_total", (("direction", "in"),)), 0.0)


def within(values: list[float], share: float) -> bool:
    mean = sum(values) / len(values)
    return all(abs(v - mean) <= share * mean for v in values)


async def test_dispatcher_spreads_40_rtp_calls_drains_one_and_survives_a_kill(tmp_path: Path):
    require_kamailio()
    require_binary("sipp")
    a, b = Instance(drain_timeout=30), Instance(drain_timeout=30)
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text(f"1 {a.uri} 0 0 duid=bot-a\n1 {b.uri} 0 0 duid=bot-b\n")
    kam = Kamailio(
        DISPATCHER_CFG,
        tmp_path / "kam",
        defines={
            "DISPATCHER_LIST": quote(str(ds_list)),
            "DS_PING_INTERVAL": 1,
            "FR_TIMER_MS": 1000,
        },
        # One worker: with two, a 180 and the 200 right behind it were sometimes
        # relayed out of order, and SIPp aborts a call on a 1xx after its 2xx.
        children=1,
    )
    a2: Instance | None = None
    try:
        await asyncio.gather(a.start(), b.start())
        async with kam:
            target = f"127.0.0.1:{kam.port}"
            await kam.wait_dispatcher({a.uri: "A", b.uri: "A"}, timeout=10)

            # 1. 40 calls with RTP, spread evenly.
            result = await run_sipp(
                "uac_rtp", target, calls=40, rate=10, concurrent=40,
                keys={"hold_ms": "2000"}, timeout=40, trace_msg=False,
            )  # fmt: skip
            assert result.ok and result.successful_calls == 40, result.summary()
            ma, mb = await metrics(a), await metrics(b)
            calls = [started(ma), started(mb)]
            packets = [rtp_in(ma), rtp_in(mb)]
            assert sum(calls) == 40 and within(calls, 0.2), calls
            assert min(packets) > 0 and within(packets, 0.2), packets

            # 2. Rolling restart: SIGTERM to A while it carries calls.
            before_a = started(ma)
            run = await start_sipp(
                "uac_rtp", target, calls=20, rate=10, concurrent=20,
                keys={"hold_ms": "3000"}, timeout=40, trace_msg=False,
            )  # fmt: skip
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while a.log.count(": incoming from") < before_a + 3 and loop.time() < deadline:
                await asyncio.sleep(0.05)
            live_on_a = a.log.count(": incoming from") - a.log.count(": ended (")
            assert live_on_a >= 3, a.log[-2000:]
            a.signal(signal.SIGTERM)
            async with httpx.AsyncClient(base_url=a.api, timeout=5) as http:
                await a.wait_line("Shutting down: taking no new calls", 5)
                ready = await http.get("/ready")
                assert ready.status_code == 503 and ready.json()["draining"], ready.text
            result = await run.wait(timeout=40)
            assert result.ok and result.successful_calls == 20, result.summary()
            assert result.failed_calls == 0
            assert await a.wait_exit(15) == 0, a.log[-3000:]
            incoming_a = a.log.count(": incoming from")
            assert incoming_a > before_a, "A took no call of the second run"
            assert a.log.count(": ended (remote_bye)") == incoming_a, a.log[-3000:]
            assert "ended (shutdown)" not in a.log
            refused = a.log.count("not taking calls (shutting down), 503")
            assert started(await metrics(b)) + incoming_a == 60, (incoming_a, refused)
            states = await kam.wait_dispatcher({a.uri: "I", b.uri: "A"}, timeout=5)
            assert states[a.uri].startswith("I")

            # ... restarted on the same ports, the probe takes it back in.
            a2 = a.again()
            await a2.start()
            await kam.wait_dispatcher({a.uri: "A", b.uri: "A"}, timeout=10)

            # 3. Kill B: after the probe marks it inactive, new calls go to A.
            b.signal(signal.SIGKILL)
            assert await b.wait_exit(5) == -signal.SIGKILL
            await kam.wait_dispatcher({a.uri: "A", b.uri: "I"}, timeout=10)
            result = await run_sipp(
                "uac_rtp", target, calls=10, rate=10, concurrent=10,
                keys={"hold_ms": "500"}, timeout=30, trace_msg=False,
            )  # fmt: skip
            assert result.ok and result.successful_calls == 10, result.summary()
            assert started(await metrics(a2)) == 10
    finally:
        for inst in (a, b, a2):
            if inst is not None:
                await inst.close()
