"""Call-setup benchmark: INVITE-to-200 OK time and the sustained call rate (a script, not a test).

The server (bench/echo_server.py, pinned to one core, ``pipeline`` mode by
default: each call runs the echo pipeline) is called by SIPp with
bench/sipp/uac_load.xml (held ``--hold`` s, media from bench/rtp_peer.py).

1. At ``--rate`` calls/s (20) for ``--seconds`` s: INVITE-to-200 OK time
   p50/p95/max from SIPp's response-time trace (``-trace_rtt``, one
   value per call, ms resolution: the ``rtd`` on the 200 OK).
2. Ramp: the same at each rate of ``--ramp`` (a fresh server each time)
   until a step has a failed call (or SIPp had to retransmit an INVITE,
   i.e. a 200 came later than 500 ms); the last clean rate is the sustained
   call rate.

3. ``--digest``: Digest authentication on both sides (issue 13). A "carrier"
   SIPServer in a child process (pinned to ``--server-cpu``) challenges every
   INVITE with 401 (``auth_users``); the bot, a SIPServer in this process
   (pinned to CPU 0), calls it through a Trunk with credentials at
   ``--rate`` calls/s, so each call is INVITE, 401, ACK, INVITE with
   Authorization (checked: HMAC nonce, nonce count, SHA-256), 200, ACK. The
   Calls hold without RTP (``send_silence=False``), so signalling is
   what is measured. The time is from ``server.call`` (the first INVITE) to the 200 OK handled
   (``SIPCall.answered_at``: ACK sent), per call: p50/p95/max (target: p95
   <= 10 ms at 20/s).

Prints one JSON line per run, then a table.

Usage: .venv/bin/python bench/setup.py [--rate 20] [--ramp 20,40,60,80,100,150,200]
       .venv/bin/python bench/setup.py --quick
       .venv/bin/python bench/setup.py --digest [--rate 20 --seconds 10]
"""

import argparse
import asyncio
import contextlib
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from load import PYTHON, SCENARIO, Child, echo_server_argv, machine  # noqa: E402

from tests.helpers.sipp import run_sipp  # noqa: E402


def read_rtt(workdir: Path) -> list[float]:
    """Response times (ms) from SIPp's ``*_rtt.csv`` (``-trace_rtt``)."""
    values: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open(newline="", encoding="latin-1") as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 2:
                    try:
                        values.append(float(row[1]))
                    except ValueError:
                        continue  # the header
    return values


async def run_rate(rate: float, args: argparse.Namespace) -> dict:
    calls = max(1, int(rate * args.seconds))
    budget = args.seconds + args.hold + 40
    peer = await Child.start(
        "rtp_peer", PYTHON, str(BENCH / "rtp_peer.py"), "--max-seconds", str(budget), cpu=0
    )
    server_argv = echo_server_argv(args.mode, budget, args)
    server = await Child.start("echo_server", *server_argv, cpu=args.server_cpu, nice=args.nice)
    workdir = Path(tempfile.mkdtemp(prefix="bench-setup-"))
    drain = None
    server_stats: dict = {}
    try:
        peer_port = (await peer.line("ready", 30))["port"]
        ready = await server.line("ready", 60)
        drain = asyncio.ensure_future(server.drain_stderr())
        await asyncio.sleep(0.5)
        sipp = await run_sipp(
            SCENARIO,
            f"127.0.0.1:{ready['port']}",
            calls=calls,
            rate=rate,
            keys={"hold_ms": str(int(args.hold * 1000)), "peer_port": str(peer_port)},
            timeout=budget,
            trace_msg=False,
            workdir=workdir,
            extra_args=["-trace_rtt", "-rtt_freq", "1", "-max_socket", "4096"],
        )
        rtt = read_rtt(workdir)
    finally:
        await peer.stop("peer_stats", timeout=5)
        server_stats = await server.stop("server_stats", timeout=5)
        if drain is not None:
            drain.cancel()
        shutil.rmtree(workdir, ignore_errors=True)
    failed = sipp.failed_calls + max(0, calls - sipp.successful_calls - sipp.failed_calls)
    row = {
        "bench": "setup",
        "mode": args.mode,
        "uvloop": args.uvloop,
        "lean": args.lean,
        "rate": rate,
        "calls": calls,
        "calls_failed": failed,
        "retransmissions": sipp.retransmissions,
    }
    if rtt:
        a = np.array(rtt)
        row |= {
            "invite_200_n": int(a.size),
            "invite_200_p50_ms": round(float(np.percentile(a, 50)), 2),
            "invite_200_p95_ms": round(float(np.percentile(a, 95)), 2),
            "invite_200_max_ms": round(float(a.max()), 2),
        }
    row["server_dropped_rate_limited"] = server_stats.get("dropped_rate_limited", 0)
    row["clean"] = failed == 0 and sipp.retransmissions == 0
    return row


DIGEST_USER, DIGEST_PASSWORD = "bench-auth", "bench-secret"


async def carrier_child(args: argparse.Namespace) -> None:
    """The challenging side of ``--digest``: answer every authenticated call, hold it."""
    from loguru import logger

    from pipecat_sip.host import freeze_startup_objects
    from pipecat_sip.server import SIPServer

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    async def answer(call) -> None:
        await call.answer()
        await call.wait_ended()

    server = SIPServer(
        answer,
        host="127.0.0.1",
        port=0,
        rtp_port_range=(30000, 39999),
        max_calls=2000,
        rate_limit=0,
        rtp_timeout_s=0,
        send_silence=False,  # signalling is measured: no RTP while calls are held
        auth_users={DIGEST_USER: DIGEST_PASSWORD},
    )
    await server.start()
    freeze_startup_objects()  # as the runner does once started
    print(json.dumps({"ready": True, "port": server.port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.seconds + args.hold + 60)
    stats = server.authenticator.stats if server.authenticator else {}
    print(json.dumps({"carrier_stats": True, **stats}), flush=True)
    await server.stop(timeout=1.0)


async def run_digest(rate: float, args: argparse.Namespace) -> dict:
    """INVITE-to-200 with Digest both ways: our trunk client against our challenging server."""
    from loguru import logger

    from pipecat_sip.host import freeze_startup_objects
    from pipecat_sip.server import SIPServer
    from pipecat_sip.trunk import Trunk

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    calls = max(1, int(rate * args.seconds))
    carrier = await Child.start(
        "carrier",
        PYTHON,
        str(Path(__file__).resolve()),
        "--carrier-child",
        "--seconds",
        str(args.seconds),
        "--hold",
        str(args.hold),
        cpu=args.server_cpu,
        nice=args.nice,
    )
    ready = await carrier.line("ready", 60)
    drain = asyncio.ensure_future(carrier.drain_stderr())
    trunk = Trunk(
        name="carrier",
        proxy=f"sip:127.0.0.1:{ready['port']}",
        username="4930555000",
        auth_user=DIGEST_USER,
        password=DIGEST_PASSWORD,
    )
    bot = SIPServer(
        None,
        host="127.0.0.1",
        port=0,
        rtp_port_range=(20000, 29999),
        max_calls=2000,
        rate_limit=0,
        rtp_timeout_s=0,
        send_silence=False,
        trunks=[trunk],
    )
    await bot.start()
    freeze_startup_objects()  # as the runner does once started
    loop = asyncio.get_running_loop()
    times: list[float] = []
    failures: list[str] = []

    async def one(n: int) -> None:
        started = time.monotonic()  # SIPCall.answered_at's clock
        try:
            call = await bot.call(f"+4930{n:06d}", timeout=10)
        except Exception as exc:  # a failed call is counted, not raised
            failures.append(repr(exc))
            return
        # The 200 OK handled (ACK sent), before our side's media starts.
        times.append(1000 * ((call.answered_at or time.monotonic()) - started))
        await asyncio.sleep(args.hold)
        await call.hangup()

    tasks = []
    start = loop.time()
    try:
        for n in range(calls):  # absolute deadlines: rate calls per second
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            tasks.append(asyncio.ensure_future(one(n)))
        await asyncio.wait_for(asyncio.gather(*tasks), args.hold + 30)
    finally:
        await bot.stop(timeout=2.0)
        stats = await carrier.stop("carrier_stats", timeout=5)
        drain.cancel()
    row = {
        "bench": "setup_digest",
        "rate": rate,
        "calls": calls,
        "calls_failed": len(failures),
        "challenged": stats.get("challenged"),
        "accepted": stats.get("accepted"),
        "auth_failed": stats.get("failed"),
    }
    if times:
        a = np.array(times)
        row |= {
            "invite_200_n": int(a.size),
            "invite_200_p50_ms": round(float(np.percentile(a, 50)), 2),
            "invite_200_p95_ms": round(float(np.percentile(a, 95)), 2),
            "invite_200_max_ms": round(float(a.max()), 2),
        }
    row["clean"] = not failures and stats.get("accepted") == calls
    if failures:
        row["first_failure"] = failures[0][:200]
    return row


async def main_async(args: argparse.Namespace) -> None:
    if args.carrier_child:
        await carrier_child(args)
        return
    os.sched_setaffinity(0, {0})
    if args.digest:
        info = machine()
        row = await run_digest(args.rate, args)
        print(json.dumps(row | info), flush=True)
        print(
            f"Digest both ways at {row['rate']:g} calls/s: {row['calls']} calls, "
            f"{row['calls_failed']} failed; INVITE-to-200 p50 {row.get('invite_200_p50_ms')} ms, "
            f"p95 {row.get('invite_200_p95_ms')} ms, max {row.get('invite_200_max_ms')} ms "
            f"(target p95 <= 10 ms)"
            + (f"; first failure {row['first_failure']}" if row.get("first_failure") else "")
        )
        return
    if args.nice < 0:
        os.nice(args.nice // 2)
    info = machine()
    rows = [await run_rate(args.rate, args)]
    print(json.dumps(rows[0] | {"step": "fixed"} | info), flush=True)
    sustained = None
    for rate in [float(r) for r in args.ramp.split(",") if r]:
        row = await run_rate(rate, args)
        rows.append(row)
        print(json.dumps(row | {"step": "ramp"}), flush=True)
        if not row["clean"]:
            break
        sustained = rate
    if args.ramp:
        print(json.dumps({"bench": "setup_headline", "sustained_cps": sustained} | info))
    titles = ("rate/s", "calls", "fail", "retr", "p50 ms", "p95 ms", "max ms")
    print(" ".join(f"{t:>7}" for t in titles))
    for r in rows:
        print(
            f"{r['rate']:>7g} {r['calls']:>6} {r['calls_failed']:>5} {r['retransmissions']:>5} "
            f"{r.get('invite_200_p50_ms', '-'):>7} {r.get('invite_200_p95_ms', '-'):>7} "
            f"{r.get('invite_200_max_ms', '-'):>7}"
        )
    if args.ramp:
        print(f"sustained call rate without failure: {sustained} calls/s ({args.mode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("pipeline", "media"), default="pipeline")
    parser.add_argument("--rate", type=float, default=20.0, help="calls/s for the p50/p95")
    parser.add_argument("--seconds", type=float, default=10.0, help="s of new calls per run")
    parser.add_argument("--hold", type=float, default=2.0, help="s each call is held")
    parser.add_argument("--ramp", default="20,40,60,80,100,150,200", help="'' to skip")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument(
        "--lean", action="store_true", help="pipeline without metrics/RTVI (bot.py's echo bot)"
    )
    parser.add_argument(
        "--nice", type=int, default=-10 if os.geteuid() == 0 else 0, help="server niceness"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--digest", action="store_true", help="INVITE-to-200 with Digest on both sides"
    )
    parser.add_argument("--carrier-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.hold, args.ramp = 1.0, 0.5, ""
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = 0
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
