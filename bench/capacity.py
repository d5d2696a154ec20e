"""Capacity planning: CPU per call of the AI bot's shape next to the echo bot, over SIP and WS.

For each N of ``--calls``, in one run, on one server core (as load.py and
compare_ws.py, whose steps this reuses):

- ``sip echo``: bot.py's keyless echo bot shape over SIP (load.py
  ``--modes pipeline --lean``);
- ``sip ai``: bot.py's AI agent shape over SIP: STT, user aggregator with
  Silero VAD, LLM, TTS and assistant aggregator, with the local stand-ins
  of bench/standins.py (no network, no keys), metrics, RTVI and turn
  tracking on (bench/ai_shape.py);
- ``ws ai``: the same AI shape on Pipecat's FastAPI WebSocket + Twilio
  serializer path (compare_ws.py's server and peer), at 8 kHz in and out;
- ``ws echo``: the lean echo pipeline on that path at 8 kHz.

The callers speak in turns (rtp_peer.py / ws_peer.py speech, then 4 s of
silence, looped: bench/ai_shape.py), so VAD runs on every packet, the bot
answers in the pauses and is interrupted when the caller speaks again. The
echo rows use the same callers. Reported per row:
server CPU % of one core, CPU per call, RSS per call, and for SIP the
pacing (p99) and the share of non-silent packets the bot sent ("voiced",
its TTS speech in the AI shape). Calls per core is estimated as 100 / CPU
per call (an upper bound: pacing and turn latency are not judged here).

Usage:
    .venv/bin/python bench/capacity.py --calls 5,10 --out bench/results/capacity.jsonl
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import compare_ws  # noqa: E402
import load  # noqa: E402

PLAIN_PYTHON = load.PYTHON


def wrapper() -> str:
    """An executable that runs a script through ai_shape.py (load.py and compare_ws.py exec it)."""
    path = Path(tempfile.mkdtemp(prefix="ai-shape-")) / "python-ai-shape"
    path.write_text(f'#!/bin/sh\nexec "{PLAIN_PYTHON}" "{BENCH / "ai_shape.py"}" "$@"\n')
    path.chmod(0o755)
    return str(path)


async def step(kind: str, n: int, args: argparse.Namespace, ai_python: str) -> dict:
    path, shape = kind.split()
    python = ai_python if shape == "ai" else PLAIN_PYTHON
    load.PYTHON = compare_ws.PYTHON = python
    try:
        if path == "sip":
            args.lean = shape == "echo"
            row = await load.run_step("pipeline", n, args)
        else:
            row = await compare_ws.run_step("8000/8000", n, args)
    finally:
        load.PYTHON = compare_ws.PYTHON = PLAIN_PYTHON
    cpu = row.get("cpu_pct")
    out = {
        "bench": "capacity",
        "setup": kind,
        "calls": n,
        "calls_failed": row.get("calls_failed"),
        "cpu_pct": cpu,
        "cpu_per_call_pct": round(cpu / n, 2) if cpu else None,
        "calls_per_core_est": int(100 * n / cpu) if cpu else None,
        "rss_per_call_kb": row.get("rss_per_call_kb"),
        "core_busy_pct": row.get("core_busy_pct"),
    }
    if path == "sip":
        out["dev_p99_ms"] = row.get("dev_p99_ms")
        out["voiced_pct"] = row.get("echo_pct")
    return out


async def main_async(args: argparse.Namespace) -> None:
    info, _ = load.start_run(args)
    print(json.dumps({"bench": "capacity_run"} | info), flush=True)
    ai_python = wrapper()
    rows = []
    for n in [int(x) for x in args.calls.split(",")]:
        for kind in args.setups.split(","):
            row = await step(kind, n, args, ai_python) | {"date": info["date"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(
        "| setup | N | failed | cpu% | cpu%/call | calls/core (est.) | kB/call | p99 ms | voiced% |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setup']} | {r['calls']} | {r['calls_failed']} | {r['cpu_pct']} | "
            f"{r['cpu_per_call_pct']} | {r['calls_per_core_est']} | {r['rss_per_call_kb']} | "
            f"{r.get('dev_p99_ms', '')} | {r.get('voiced_pct', '')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="5,10")
    parser.add_argument("--setups", default="sip echo,sip ai,ws ai,ws echo")
    parser.add_argument("--rate", type=float, default=10.0, help="call setup rate, calls/s")
    parser.add_argument("--steady", type=float, default=8.0, help="s with all N calls up")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="servers on uvloop (as the runners)")
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0)
    parser.add_argument("--out", help="append the JSON lines to this file")
    args = parser.parse_args()
    args.profile = None
    args.lean = False
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = args.load_cpu = 0
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
