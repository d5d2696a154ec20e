"""The same echo load through Pipecat's own telephony path: FastAPI WebSocket + Twilio serializer.

The comparison for bench/load.py (a script, not a test). For each variant of
pipeline rates (``16000/24000``: Pipecat's ``PipelineParams`` defaults, what a
Twilio user of Pipecat runs today; ``8000/8000``: the codec rate) and each N
of ``--calls``, a fresh bench/ws_server.py (uvicorn + FastAPI, one lean echo
pipeline per websocket) is started pinned to one core (``taskset -c
SERVER_CPU``, the same nice as load.py), and bench/ws_peer.py, on LOAD_CPU,
opens N websockets speaking Twilio media-stream messages (20 ms of mu-law
speech per message, a tone burst per second) for a fixed time.

Per (variant, N), over the steady window (all N streams echoing):
- connections failed,
- server CPU % of one core (/proc/PID/stat) and RSS per call (/proc/PID/status),
- echo received (% of the audio bytes the window should hold),
- arrival-interval deviation p50/p99/max in ms of the server's media
  messages (|interval - the previous message's audio duration|), with the
  message size distribution (Pipecat sends 40 ms per message at 8 kHz; its
  soxr stream resamplers emit blocks of ~95-140 ms at 16/24 kHz),
- added delay of the echo (tone burst sent -> its onset back), p50/p95.

The same bound as load.py gives a "calls per core": p99 deviation <= 5 ms,
0 failed, and >= 99% of the echo (min over streams >= 95%). A ratio line
compares the server CPU per call with the latest SIP figures of the lean echo
pipeline (``load.py --modes pipeline --lean``) in bench/results/load.jsonl,
at the nearest N (within a factor 2) where both servers are below 95%
of the core.

Prints one JSON line per (variant, N) and a headline per variant, then a
table and the ratio lines; ``--out FILE`` appends the JSON lines to FILE.

Usage:
    .venv/bin/python bench/compare_ws.py --calls 10,25,50,75 --out bench/results/compare_ws.jsonl
    .venv/bin/python bench/compare_ws.py --quick
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from load import Child, ProcSampler, cpu_and_rss, start_run  # noqa: E402

PYTHON = sys.executable
P99_BOUND_MS = 5.0
SIP_RESULTS = BENCH / "results" / "load.jsonl"
SATURATED_PCT = 95.0


async def run_step(rates: str, n: int, args: argparse.Namespace) -> dict:
    """One server, one load of `n` websocket calls; the figures of that run."""
    rate_in, rate_out = (int(x) for x in rates.split("/"))
    ramp_s = n / args.rate
    budget = ramp_s + 1.0 + args.settle + args.steady + 0.5 + 15
    server_argv = [PYTHON, str(BENCH / "ws_server.py"), "--max-seconds", str(budget + 30)]
    server_argv += ["--rate-in", str(rate_in), "--rate-out", str(rate_out)]
    if args.uvloop:
        server_argv.append("--uvloop")
    server = await Child.start("ws_server", *server_argv, cpu=args.server_cpu, nice=args.nice)
    peer = None
    drain = None
    sampler = None
    try:
        ready = await server.line("ready", 60)
        drain = asyncio.ensure_future(server.drain_stderr())
        pid = ready["pid"]
        await asyncio.sleep(0.5)
        sampler = ProcSampler(pid, args.server_cpu)
        peer = await Child.start(
            "ws_peer",
            PYTHON,
            str(BENCH / "ws_peer.py"),
            "--url", f"ws://127.0.0.1:{ready['port']}/ws",
            "--calls", str(n),
            "--rate", str(args.rate),
            "--settle", str(args.settle),
            "--steady", str(args.steady),
            cpu=args.load_cpu,
        )  # fmt: skip
        # The load generator's own CPU (a saturated generator sends late).
        peer_sampler = ProcSampler(peer.proc.pid, args.load_cpu)
        peer_stats = await peer.line("peer_stats", budget + 30)
        peer_sampler.stop()
        sampler.stop()
        server_stats = await server.stop("server_stats")
    finally:
        if sampler is not None:
            sampler.stop()
        for child in (peer, server):
            if child is not None and child.proc.returncode is None:
                await child.stop("none", timeout=2)
        if drain is not None:
            drain.cancel()
    row = {
        "bench": "compare_ws",
        "path": "websocket",
        "rates": rates,
        "calls": n,
        "uvloop": args.uvloop,
        "calls_failed": peer_stats.get("connections_failed", n),
    }
    if "window_start" in peer_stats:
        row |= cpu_and_rss(
            sampler.samples,
            peer_stats["window_start"],
            peer_stats["window_end"],
            sampler.baseline_rss,
            n,
        )
    if "window_start" in peer_stats:
        peer_cpu = cpu_and_rss(
            peer_sampler.samples, peer_stats["window_start"], peer_stats["window_end"], 0, n
        )
        row["peer_cpu_pct"] = peer_cpu["cpu_pct"]
        row["load_core_busy_pct"] = peer_cpu.get("core_busy_pct")
    for key in (
        "window_s",
        "echo_pct",
        "echo_pct_min",
        "messages_per_stream",
        "msg_ms_p50",
        "msg_sizes",
        "interval_p50_ms",
        "dev_p50_ms",
        "dev_p99_ms",
        "dev_max_ms",
        "echo_delay_p50_ms",
        "echo_delay_p95_ms",
        "echo_delay_max_ms",
        "echo_delay_n",
        "bursts_in_window",
        "peer_send_late_p99_ms",
        "other_events",
        "errors",
        "error",
    ):
        if key in peer_stats:
            row[key] = peer_stats[key]
    for key in ("started", "ended", "errors"):
        if key in server_stats:
            row[f"server_{key}"] = server_stats[key]
    row["within_bound"] = bool(
        row["calls_failed"] == 0
        and row.get("dev_p99_ms") is not None
        and row["dev_p99_ms"] <= P99_BOUND_MS
        and row.get("echo_pct", 0) >= 99.0
        and row.get("echo_pct_min", 0) >= 95.0
    )
    return row


def latest_sip_rows(path: Path) -> list[dict]:
    """The newest run's lean echo-pipeline rows of load.py (empty if none)."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get("bench") == "load" and row.get("mode") == "pipeline" and row.get("lean"):
                    rows.append(row)
    except OSError:
        return []
    if not rows:
        return []
    newest = max(r.get("date", "") for r in rows)
    return [r for r in rows if r.get("date", "") == newest and r.get("cpu_pct")]


def ratios(ws_rows: list[dict], sip_rows: list[dict]) -> list[dict]:
    """CPU per call, WS over SIP, at the nearest N where neither server is saturated."""
    out = []
    sip_ok = [r for r in sip_rows if r["cpu_pct"] < SATURATED_PCT]
    for ws in ws_rows:
        if not ws.get("cpu_pct") or ws["cpu_pct"] >= SATURATED_PCT or not sip_ok:
            continue
        sip = min(sip_ok, key=lambda r: (abs(r["calls"] - ws["calls"]), r["calls"]))
        if not ws["calls"] / 2 <= sip["calls"] <= ws["calls"] * 2:
            continue  # not comparable: fixed costs weigh differently at small N
        ws_per_call = ws["cpu_pct"] / ws["calls"]
        sip_per_call = sip["cpu_pct"] / sip["calls"]
        out.append(
            {
                "bench": "compare_ws_ratio",
                "rates": ws["rates"],
                "ws_calls": ws["calls"],
                "ws_cpu_per_call_pct": round(ws_per_call, 2),
                "sip_calls": sip["calls"],
                "sip_cpu_per_call_pct": round(sip_per_call, 2),
                "sip_date": sip.get("date"),
                "ws_over_sip": round(ws_per_call / sip_per_call, 2),
            }
        )
    return out


def table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    cols = [
        ("rates", "rates"),
        ("calls", "N"),
        ("calls_failed", "fail"),
        ("cpu_pct", "cpu%"),
        ("core_busy_pct", "core%"),
        ("rss_per_call_kb", "kB/call"),
        ("echo_pct", "echo%"),
        ("peer_cpu_pct", "gen cpu%"),
        ("peer_send_late_p99_ms", "gen late99"),
        ("msg_ms_p50", "msg ms"),
        ("dev_p50_ms", "p50ms"),
        ("dev_p99_ms", "p99ms"),
        ("echo_delay_p50_ms", "delay50"),
        ("echo_delay_p95_ms", "delay95"),
        ("within_bound", "ok"),
    ]
    lines = ["  ".join(f"{title:>11}" for _, title in cols)]
    for row in rows:
        lines.append("  ".join(f"{row.get(key, '-')!s:>11}" for key, _ in cols))
    return "\n".join(lines)


def emit(row: dict, out) -> None:
    """Print a JSON line (and append it to --out)."""
    print(json.dumps(row), flush=True)
    if out:
        out.write(json.dumps(row) + "\n")
        out.flush()


async def run_sip_sweep(args: argparse.Namespace) -> Path:
    """``load.py --modes pipeline --lean`` at the same N (needs SIPp); its JSON lines file."""
    out = Path(tempfile.mkdtemp(prefix="compare_ws_")) / "load.jsonl"
    argv = [PYTHON, str(BENCH / "load.py"), "--modes", "pipeline", "--lean", "--full"]
    argv += ["--calls", args.calls, "--steady", str(args.steady), "--settle", str(args.settle)]
    argv += ["--nice", str(args.nice), "--out", str(out)]
    if args.uvloop:
        argv.append("--uvloop")
    n_steps = len(args.calls.split(","))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _stdout, stderr = await asyncio.wait_for(proc.communicate(), 120 * n_steps)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"load.py failed: {stderr.decode(errors='replace')[-1500:]}")
    return out


async def main_async(args: argparse.Namespace) -> None:
    """Run every (variant, N), then print the table and the ratio lines."""
    if args.with_sip:
        # First, before this process changes its own nice/affinity (load.py sets its own).
        args.sip_results = str(await run_sip_sweep(args))
    info, out = start_run(args)
    emit({"bench": "compare_ws_run"} | info, out)
    rows, headlines = [], []
    for rates in args.rates.split(","):
        best = 0
        for n in [int(x) for x in args.calls.split(",")]:
            row = await run_step(rates, n, args)
            row["date"] = info["date"]
            rows.append(row)
            emit(row, out)
            if row["within_bound"]:
                best = max(best, n)
            elif args.stop_at_miss:
                break
        headline = {"bench": "compare_ws_headline", "rates": rates, "calls_per_core": best}
        headlines.append(headline | info)
        emit(headline | info, out)
    sip_rows = latest_sip_rows(Path(args.sip_results))
    if args.with_sip:
        for sip in sip_rows:  # the same run's SIP figures, next to the websocket ones
            emit(sip | {"bench": "compare_ws_sip", "date": info["date"]}, out)
    ratio_rows = ratios(rows, sip_rows)
    for ratio in ratio_rows:
        emit(ratio | {"date": info["date"]}, out)
    if out:
        out.close()
    print(table(rows))
    for sip in sip_rows:
        print(
            f"SIP lean echo pipeline ({sip.get('date')}) N={sip['calls']}: cpu {sip['cpu_pct']}%, "
            f"p99 {sip.get('dev_p99_ms')} ms, echo {sip.get('echo_pct')}%, "
            f"{sip.get('rss_per_call_kb')} kB/call"
        )
    for h in headlines:
        print(
            f"calls per core (websocket, {h['rates']} Hz): {h['calls_per_core']}  "
            f"(p99 <= {P99_BOUND_MS} ms, >= 99% echo, 0 failed; "
            f"{info['cpu']}, nproc {info['nproc']})"
        )
    for r in ratio_rows:
        print(
            f"CPU per call, websocket {r['rates']} at N={r['ws_calls']}: "
            f"{r['ws_cpu_per_call_pct']}% "
            f"vs SIP lean pipeline at N={r['sip_calls']}: {r['sip_cpu_per_call_pct']}% "
            f"-> websocket / SIP = {r['ws_over_sip']}x"
        )
    if not ratio_rows:
        print(f"no ratio: no unsaturated lean pipeline rows in {args.sip_results}")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="16000/24000,8000/8000", help="in/out Hz variants")
    parser.add_argument("--calls", default="10,25,50,75")
    parser.add_argument("--rate", type=float, default=50.0, help="connections/s")
    parser.add_argument("--steady", type=float, default=8.0, help="s with all N calls up")
    parser.add_argument("--settle", type=float, default=1.0, help="s before the window opens")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="server on uvloop")
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="server niceness (default -10 as root, as load.py)",
    )
    parser.add_argument(
        "--stop-at-miss", action="store_true", help="stop a sweep at the first N over the bound"
    )
    parser.add_argument("--out", help="append JSON lines to this file")
    parser.add_argument("--sip-results", default=str(SIP_RESULTS), help="load.py's JSON lines")
    parser.add_argument(
        "--with-sip",
        action="store_true",
        help="first run load.py --modes pipeline --lean at the same N (SIPp) and compare with it",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds: N=5, default rates")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.steady, args.settle = "5", 1.5, 0.5
        if args.rates == parser.get_default("rates"):
            args.rates = "16000/24000"
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = args.load_cpu = 0
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
