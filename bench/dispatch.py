"""Scale-out benchmark: N instances behind Kamailio's dispatcher against one instance directly.

The same load, in the same run: SIPp (bench/sipp/uac_load.xml) places
``--calls`` concurrent calls whose media is bench/rtp_peer.py (20 ms PCMU
speech in, kernel-timestamped RTP out), first straight to one echo server
(bench/echo_server.py), then through Kamailio (deploy/kamailio/dispatcher.cfg,
round-robin, OPTIONS probing) to ``--instances`` echo servers. Media never
passes Kamailio: each instance streams to the peer directly.

Per setup it reports the calls completed and failed, how the calls split
over the instances (each instance's "answered" count), the servers' CPU (sum
over the instances, % of one core, utime+stime over the steady window) and
CPU per call, and the pacing of what the peer received (p99 |interval - 20
ms|, sequence gaps): a setup is "within bound" with p99 <= 5 ms, 0 gaps and
0 failed calls, as in bench/load.py. The last line compares CPU per call
(dispatched / direct) and the split (largest deviation from an even share).

Cores: the servers run on ``--instance-cpus`` (default: every instance on
core 1, the direct server too), SIPp, the peer and Kamailio on
``--load-cpu``. On a host with a core per instance, give each its own
(``--instance-cpus 1,2,3,4``): one instance is one process on one core, so
capacity grows with the instances until the cores run out; on this 2-core
VM all instances share one core, which measures the dispatching overhead and
the split, not the added capacity.

Usage:
    .venv/bin/python bench/dispatch.py --calls 40 --instances 2
    .venv/bin/python bench/dispatch.py --mode pipeline --lean --calls 30
    .venv/bin/python bench/dispatch.py --quick     # 6 calls (in tests/test_bench_quick.py)
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from load import (  # noqa: E402
    CLK_TCK,
    P99_BOUND_MS,
    PYTHON,
    SCENARIO,
    Child,
    ProcSampler,
    cpu_and_rss,
    machine,
    proc_sample,
)

from tests.helpers.kamailio import DISPATCHER_CFG, Kamailio, quote  # noqa: E402
from tests.helpers.peers import free_udp_port  # noqa: E402
from tests.helpers.sipp import run_sipp  # noqa: E402

PEER_KEYS = (
    "streams_full",
    "packets_per_stream_min",
    "packets_expected",
    "seq_gaps",
    "dev_p50_ms",
    "dev_p99_ms",
    "dev_max_ms",
    "echo_pct",
)


async def start_server(args, index: int, cpu: int, budget: float) -> tuple[Child, dict]:
    first = 20000 + index * 2000
    argv = [PYTHON, str(BENCH / "echo_server.py"), "--mode", args.mode]
    argv += ["--port", str(free_udp_port()), "--rtp-first", str(first)]
    argv += ["--rtp-last", str(first + 1999), "--max-seconds", str(budget)]
    if args.lean:
        argv.append("--lean")
    if args.uvloop:
        argv.append("--uvloop")
    server = await Child.start(f"echo_server-{index}", *argv, cpu=cpu)
    ready = await server.line("ready", 60)
    return server, ready


async def idle_cpu(pids: list[int], seconds: float) -> float:
    """CPU % of one core the processes use together while idle, over ``seconds``."""
    first = [proc_sample(pid, 0) for pid in pids]
    await asyncio.sleep(seconds)
    last = [proc_sample(pid, 0) for pid in pids]
    total = 0.0
    for a, b in zip(first, last, strict=True):
        if a is not None and b is not None:
            total += 100.0 * (b[1] - a[1]) / CLK_TCK / (b[0] - a[0])
    return total


async def run_setup(args, setup: str) -> dict:
    n = args.calls
    count = 1 if setup == "direct" else args.instances
    cpus = [int(c) for c in args.instance_cpus.split(",")] if args.instance_cpus else [1]
    ramp_s = n / args.rate
    hold_s = ramp_s + args.settle + args.steady + 1.0
    budget = ramp_s * 2 + hold_s + 40
    peer = await Child.start(
        "rtp_peer", PYTHON, str(BENCH / "rtp_peer.py"),
        "--max-seconds", str(budget), "--settle", str(args.settle),
    )  # fmt: skip
    servers: list[tuple[Child, dict]] = []
    kam = None
    drains = []
    try:
        peer_port = (await peer.line("ready", 30))["port"]
        for i in range(count):
            servers.append(await start_server(args, i, cpus[i % len(cpus)], budget))
        drains = [asyncio.ensure_future(s.drain_stderr()) for s, _ in servers]
        target = f"127.0.0.1:{servers[0][1]['port']}"
        if setup == "dispatched":
            workdir = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
            ds = workdir / "dispatcher.list"
            ds.write_text(
                "".join(f"1 sip:127.0.0.1:{r['port']} 0 0 duid=bot-{i}\n" for i, (_, r) in
                        enumerate(servers))
            )  # fmt: skip
            kam = Kamailio(
                DISPATCHER_CFG,
                workdir / "kam",
                defines={"DISPATCHER_LIST": quote(str(ds)), "DS_PING_INTERVAL": 1},
                children=args.kamailio_children,
            )
            await kam.start()
            uris = {f"sip:127.0.0.1:{r['port']}": "A" for _, r in servers}
            await kam.wait_dispatcher(uris, timeout=10)
            target = f"127.0.0.1:{kam.port}"
        await asyncio.sleep(0.5)
        idle = await idle_cpu([r["pid"] for _, r in servers], args.idle)
        samplers = [ProcSampler(r["pid"], cpus[i % len(cpus)]) for i, (_, r) in enumerate(servers)]
        sipp = await run_sipp(
            SCENARIO, target, calls=n, rate=args.rate, concurrent=n,
            keys={"hold_ms": str(int(hold_s * 1000)), "peer_port": str(peer_port)},
            timeout=budget, trace_msg=False, extra_args=["-max_socket", "4096"],
        )  # fmt: skip
        for sampler in samplers:
            sampler.stop()
        peer_stats = await peer.stop("peer_stats")
        stats = [await s.stop("server_stats") for s, _ in servers]
    finally:
        for child in [peer, *(s for s, _ in servers)]:
            if child.proc.returncode is None:
                await child.stop("none", timeout=2)
        for drain in drains:
            drain.cancel()
        if kam is not None:
            await kam.stop()
    failed = sipp.failed_calls + max(0, n - sipp.successful_calls - sipp.failed_calls)
    row = {
        "bench": "dispatch",
        "setup": setup,
        "mode": args.mode,
        "lean": args.lean,
        "instances": count,
        "calls": n,
        "calls_ok": sipp.successful_calls,
        "calls_failed": failed,
        "split": [s.get("answered", 0) for s in stats],
    }
    cpu = 0.0
    if "window_start" in peer_stats:
        for sampler in samplers:
            figures = cpu_and_rss(
                sampler.samples, peer_stats["window_start"], peer_stats["window_end"],
                sampler.baseline_rss, n,
            )  # fmt: skip
            cpu += figures["cpu_pct"] or 0.0
    row["cpu_pct"] = round(cpu, 1)
    row["cpu_per_call_pct"] = round(cpu / max(1, n), 3)
    # Without what the instances burn idle (event loop, timers): the calls' own cost.
    row["idle_cpu_pct"] = round(idle, 1)
    row["cpu_per_call_net_pct"] = round(max(0.0, cpu - idle) / max(1, n), 3)
    for key in PEER_KEYS:
        if key in peer_stats:
            row[key] = peer_stats[key]
    row["within_bound"] = bool(
        failed == 0
        and row.get("seq_gaps") == 0
        and row.get("dev_p99_ms") is not None
        and row["dev_p99_ms"] <= P99_BOUND_MS
        and row.get("streams_full") == n
    )
    return row


async def main_async(args) -> None:
    os.sched_setaffinity(0, {args.load_cpu})  # SIPp, the peer and Kamailio inherit it
    info = machine() | {"instance_cpus": args.instance_cpus or "1", "load_cpu": args.load_cpu}
    print(json.dumps({"bench": "dispatch_run"} | info), flush=True)
    rows = []
    for setup in ("direct", "dispatched"):
        row = await run_setup(args, setup)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row | info) + "\n")
    direct, dispatched = rows
    ratio = dispatched["cpu_per_call_pct"] / max(1e-9, direct["cpu_per_call_pct"])
    net = dispatched["cpu_per_call_net_pct"] / max(1e-9, direct["cpu_per_call_net_pct"])
    share = args.calls / args.instances
    worst = max(abs(c - share) / share for c in dispatched["split"]) if share else 0.0
    print(
        f"{args.calls} {args.mode}{' lean' if args.lean else ''} calls: direct "
        f"{direct['cpu_per_call_pct']:.3f}% CPU/call, p99 {direct.get('dev_p99_ms')} ms, "
        f"failed {direct['calls_failed']}; {args.instances} instances behind Kamailio "
        f"{dispatched['cpu_per_call_pct']:.3f}% CPU/call, p99 {dispatched.get('dev_p99_ms')} ms, "
        f"failed {dispatched['calls_failed']}, split {dispatched['split']}; "
        f"CPU per call dispatched/direct {ratio:.2f} (without idle cost {net:.2f}), "
        f"split within {100 * worst:.0f}% of even"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--mode", choices=("media", "pipeline"), default="media")
    parser.add_argument("--lean", action="store_true", help="pipeline: bot.py's keyless echo set")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--rate", type=float, default=20.0, help="call setup rate, calls/s")
    parser.add_argument("--steady", type=float, default=4.0, help="s with all calls up")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--idle", type=float, default=2.0, help="s of idle CPU measured first")
    parser.add_argument("--instance-cpus", default="", help="cores for the servers, e.g. 1,2")
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--kamailio-children", type=int, default=2)
    parser.add_argument("--out", help="append the JSON lines to this file")
    parser.add_argument("--quick", action="store_true", help="6 calls, 1 s steady (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.steady, args.settle, args.idle = 6, 1.0, 0.5, 0.5
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
