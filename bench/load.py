"""Load benchmark: concurrent echo calls per core (a script, not a test).

For each mode (``pipeline``: a Pipecat echo pipeline per call, ``media``:
RTP-level echo, see bench/echo_server.py) and each N of ``--calls``, a fresh
server is started pinned to one core (``taskset -c SERVER_CPU``) and SIPp
(bench/sipp/uac_load.xml) places N concurrent calls at ``--rate`` calls/s on
loopback, each held until all N run for ``--steady`` s. The calls' SDP points
at bench/rtp_peer.py, which streams 20 ms PCMU speech into every call and
timestamps the server's packets in the kernel (SO_TIMESTAMPNS). SIPp, the
peer and this script run on LOAD_CPU, away from the server's core.

Per N it reports, over the steady window (all N calls up):
- calls failed (SIPp's FailedCall counter, plus calls that never completed),
- server CPU % of one core (utime+stime from /proc/PID/stat),
- RSS per call (VmRSS growth over the idle server, /proc/PID/status),
- server RTP: packets per stream, sequence gaps, send-interval deviation
  |interval - 20 ms| p50/p99/max in ms, receiver socket drops, and the media
  clock's late ticks.

The headline "calls per core" of a mode is the largest N with p99 deviation
<= 5 ms, 0 gaps and 0 failed calls (and every stream has >= 99% of the
packets the window should hold: an overloaded media clock skips deadlines
without a sequence gap, see MediaClock). By default a mode's sweep stops at the
first N that misses the bound (``--full`` runs every N).

Prints one JSON line per (mode, N) and a headline line per mode, then a
table. ``--out FILE`` also appends the JSON lines to FILE (for bench/plot.py).

``--codec G722`` makes it a G.722 load (SIPp offers PT 9, the peer streams
G.722, the pipeline runs at 16 kHz). ``--jitter-buffer off,on`` runs every N
once per setting, one right after the other (same machine state), and prints
a ``load_jb_ratio`` line per N: server CPU with the jitter buffer over CPU
without, and each run's p99 (media mode has no jitter buffer unless ``on``;
pipeline mode's default is SIPParams', on).

Usage:
    .venv/bin/python bench/load.py --calls 10,50,100,200,300,400 --out bench/results/load.jsonl
    .venv/bin/python bench/load.py --quick
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.sipp import run_sipp  # noqa: E402

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
SCENARIO = BENCH / "sipp" / "uac_load.xml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
P99_BOUND_MS = 5.0


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def core_ticks(cpu: int) -> tuple[int, int, int]:
    """(busy, total, softirq) jiffies of one core from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle, iowait
                return sum(v) - idle, sum(v), v[6]
    return 0, 0, 0


def proc_sample(pid: int, cpu: int) -> tuple | None:
    """(wall s, CPU ticks utime+stime, RSS bytes, core busy, core total, core softirq) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
        return time.time(), ticks, rss, *core_ticks(cpu)
    except (OSError, IndexError, ValueError):
        return None


class ProcSampler:
    """Samples a process with `proc_sample` every 0.2 s in a task, until stopped.

    Attributes:
        samples: The samples so far.
        baseline_rss: RSS, bytes, at the first sample (0 if the process was gone).
    """

    def __init__(self, pid: int, cpu: int) -> None:
        self.pid = pid
        self.cpu = cpu
        self.samples: list = []
        first = proc_sample(pid, cpu)
        self.baseline_rss = first[2] if first else 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            sample = proc_sample(self.pid, self.cpu)
            if sample is None:
                return
            self.samples.append(sample)
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._task.cancel()


class Child:
    """A helper process speaking JSON lines on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str):
        self.proc = proc
        self.name = name

    @classmethod
    async def start(cls, name: str, *argv: str, cpu: int | None = None, nice: int = 0) -> "Child":
        prefix = ["taskset", "-c", str(cpu)] if cpu is not None else []
        if nice:
            prefix = ["nice", "-n", str(nice), *prefix]
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        return cls(proc, name)

    async def line(self, key: str, timeout: float) -> dict:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {key!r} line in {timeout} s")
            raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not raw:
                err = b""
                if self.proc.stderr is not None:
                    with contextlib.suppress(Exception):
                        err = await asyncio.wait_for(self.proc.stderr.read(), 1.0)
                raise RuntimeError(f"{self.name} exited: {err.decode(errors='replace')[-1500:]}")
            with contextlib.suppress(ValueError):
                data = json.loads(raw)
                if isinstance(data, dict) and data.get(key):
                    return data

    async def stop(self, key: str, timeout: float = 20.0) -> dict:
        """SIGTERM, then the JSON line carrying `key` (empty dict if none came)."""
        result: dict = {}
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError, RuntimeError):
                result = await self.line(key, timeout)
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        return result

    async def drain_stderr(self) -> None:
        # Keep the server's stderr pipe from filling up during a run.
        if self.proc.stderr is None:
            return
        self.tail = b""
        while True:
            chunk = await self.proc.stderr.read(65536)
            if not chunk:
                return
            self.tail = (self.tail + chunk)[-4000:]


def cpu_and_rss(samples: list, start: float, end: float, baseline_rss: int, n: int) -> dict:
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return {"cpu_pct": None, "rss_per_call_kb": None}
    t0, c0, _, b0, a0, q0 = inside[0]
    t1, c1, _, b1, a1, q1 = inside[-1]
    cpu = 100.0 * (c1 - c0) / CLK_TCK / (t1 - t0)
    core = 100.0 * (b1 - b0) / max(1, a1 - a0)
    rss = max(s[2] for s in inside)
    return {
        "cpu_pct": round(cpu, 1),
        # Busy % of the server's core, all processes: well above cpu_pct means the
        # core was shared (other jobs on the machine) and the figures are pessimistic.
        "core_busy_pct": round(core, 1),
        # Of it, softirq (the kernel's packet work, partly for our own loopback traffic).
        "core_softirq_pct": round(100.0 * (q1 - q0) / max(1, a1 - a0), 1),
        "rss_mb": round(rss / 2**20, 1),
        "rss_per_call_kb": round((rss - baseline_rss) / 1024 / max(1, n), 1),
    }


def echo_server_argv(
    mode: str, max_seconds: float, args: argparse.Namespace, jitter_buffer: str = "default"
) -> list[str]:
    """The echo_server.py command line for `mode`, with the run's --uvloop / --lean / codec."""
    argv = [PYTHON, str(BENCH / "echo_server.py"), "--mode", mode]
    argv += ["--max-seconds", str(max_seconds), "--jitter-buffer", jitter_buffer]
    argv += ["--codecs", getattr(args, "codec", "PCMU")]
    if args.uvloop:
        argv.append("--uvloop")
    if args.lean:
        argv.append("--lean")
    return argv


async def profile(pid: int, delay: float, seconds: float, folder: str, mode: str, n: int) -> None:
    """py-spy (folded stacks) of the server over the steady window; see bench/folded.py."""
    await asyncio.sleep(delay)
    out = Path(folder) / f"{mode}-{n}.folded"
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(PYTHON).parent / "py-spy"
    proc = await asyncio.create_subprocess_exec(
        str(py_spy) if py_spy.exists() else "py-spy",
        "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
        "--rate", "200", "--format", "raw", "--nonblocking", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.wait_for(proc.wait(), seconds + 20)


CODEC_KEYS = {
    "PCMU": {"audio_pt": "0", "audio_rtpmap": "PCMU/8000"},
    "G722": {"audio_pt": "9", "audio_rtpmap": "G722/8000"},
}


async def run_step(
    mode: str, n: int, args: argparse.Namespace, jitter_buffer: str = "default"
) -> dict:
    ramp_s = n / args.rate
    hold_s = ramp_s + args.settle + args.steady + 1.0
    budget = ramp_s * 2 + hold_s + 30
    peer = await Child.start(
        "rtp_peer",
        PYTHON,
        str(BENCH / "rtp_peer.py"),
        "--max-seconds",
        str(budget),
        "--settle",
        str(args.settle),
        "--codec",
        args.codec,
        cpu=args.load_cpu,
    )
    server_argv = echo_server_argv(mode, budget, args, jitter_buffer)
    server = await Child.start("echo_server", *server_argv, cpu=args.server_cpu, nice=args.nice)
    drain = None
    try:
        peer_port = (await peer.line("ready", 30))["port"]
        ready = await server.line("ready", 60)
        drain = asyncio.ensure_future(server.drain_stderr())
        pid = ready["pid"]
        await asyncio.sleep(0.5)
        sampler = ProcSampler(pid, args.server_cpu)
        profiler = None
        if args.profile:
            profiler = asyncio.ensure_future(
                profile(
                    pid,
                    ramp_s + args.settle + 0.5,
                    args.steady,
                    args.profile,
                    mode if jitter_buffer == "default" else f"{mode}-jb-{jitter_buffer}",
                    n,
                )
            )
        sipp = await run_sipp(
            SCENARIO,
            f"127.0.0.1:{ready['port']}",
            calls=n,
            rate=args.rate,
            concurrent=n,
            keys={"hold_ms": str(int(hold_s * 1000)), "peer_port": str(peer_port)}
            | CODEC_KEYS[args.codec],
            timeout=budget,
            trace_msg=False,
            extra_args=["-max_socket", "4096"],
        )
        sampler.stop()
        if profiler is not None:
            await profiler
        peer_stats = await peer.stop("peer_stats")
        server_stats = await server.stop("server_stats")
    finally:
        for child in (peer, server):
            if child.proc.returncode is None:
                await child.stop("none", timeout=2)
        if drain is not None:
            drain.cancel()
    failed = sipp.failed_calls + max(0, n - sipp.successful_calls - sipp.failed_calls)
    row = {
        "bench": "load",
        "mode": mode,
        "calls": n,
        "uvloop": args.uvloop,
        "lean": args.lean,
        "codec": args.codec,
        "jitter_buffer": jitter_buffer,
        "calls_ok": sipp.successful_calls,
        "calls_failed": failed,
        "sipp_rc": sipp.returncode,
    }
    if "window_start" in peer_stats:
        row |= cpu_and_rss(
            sampler.samples,
            peer_stats["window_start"],
            peer_stats["window_end"],
            sampler.baseline_rss,
            n,
        )
    for key in (
        "streams_full",
        "streams_short",
        "window_s",
        "packets_per_stream",
        "packets_per_stream_min",
        "packets_expected",
        "seq_gaps",
        "reordered",
        "dev_p50_ms",
        "dev_p99_ms",
        "dev_max_ms",
        "receiver_drops",
        "echo_pct",
        "error",
    ):
        if key in peer_stats:
            row[key] = peer_stats[key]
    for key in ("clock_late_ticks", "clock_skipped_deadlines", "errors", "jitter_buffer"):
        if key in server_stats:
            row[f"server_{key}"] = server_stats[key]
    row["within_bound"] = bool(
        row["calls_failed"] == 0
        and row.get("seq_gaps") == 0
        and row.get("dev_p99_ms") is not None
        and row["dev_p99_ms"] <= P99_BOUND_MS
        and row.get("streams_full") == n
        and row.get("packets_per_stream_min", 0) >= 0.99 * row.get("packets_expected", 0) - 1
    )
    if not sipp.ok:
        row["sipp_summary"] = sipp.summary()[-600:]
    return row


def table(rows: list[dict]) -> str:
    cols = [
        ("mode", "mode", "{}"),
        ("codec", "codec", "{}"),
        ("jitter_buffer", "jb", "{}"),
        ("calls", "N", "{}"),
        ("calls_failed", "fail", "{}"),
        ("cpu_pct", "cpu%", "{}"),
        ("core_busy_pct", "core%", "{}"),
        ("rss_per_call_kb", "kB/call", "{}"),
        ("packets_per_stream", "pkts/str", "{}"),
        ("seq_gaps", "gaps", "{}"),
        ("dev_p50_ms", "p50ms", "{}"),
        ("dev_p99_ms", "p99ms", "{}"),
        ("dev_max_ms", "maxms", "{}"),
        ("server_clock_late_ticks", "late", "{}"),
        ("within_bound", "ok", "{}"),
    ]
    lines = ["  ".join(f"{title:>8}" for _, title, _ in cols)]
    for row in rows:
        lines.append("  ".join(f"{fmt.format(row.get(key, '-')):>8}" for key, _, fmt in cols))
    return "\n".join(lines)


def start_run(args: argparse.Namespace) -> tuple[dict, Any]:
    """Pin this process (and the load it starts) to the load core, and describe the run.

    Returns:
        The run's description (machine, date, cores, rate, nice, uvloop) and
        the JSON-lines output file opened for appending, or None.
    """
    os.sched_setaffinity(0, {args.load_cpu})  # the load processes inherit it
    if args.nice < 0:
        os.nice(args.nice // 2)  # inherited; the server's nice is relative to it
    info = machine() | {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu,
        "rate": args.rate,
        "steady_s": args.steady,
        "nice": args.nice,
        "uvloop": args.uvloop,
        "codec": getattr(args, "codec", "PCMU"),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    return info, out


async def main_async(args: argparse.Namespace) -> None:
    info, out = start_run(args)
    header = {"bench": "load_run"} | info
    print(json.dumps(header), flush=True)
    if out:
        out.write(json.dumps(header) + "\n")
    rows = []
    headlines = []
    ratios = []
    settings = args.jitter_buffer.split(",")

    def emit(line: dict) -> None:
        print(json.dumps(line), flush=True)
        if out:
            out.write(json.dumps(line) + "\n")
            out.flush()

    for mode in args.modes.split(","):
        best = dict.fromkeys(settings, 0)
        going = set(settings)
        for n in [int(x) for x in args.calls.split(",")]:
            by_setting = {}
            for setting in settings:
                if setting not in going:
                    continue
                row = await run_step(mode, n, args, setting)
                row["date"] = info["date"]
                rows.append(row)
                by_setting[setting] = row
                emit(row)
                if row["within_bound"]:
                    best[setting] = max(best[setting], n)
                elif not args.full:
                    going.discard(setting)
            on, off = by_setting.get("on"), by_setting.get("off")
            if on and off and on.get("cpu_pct") and off.get("cpu_pct"):
                ratio = {
                    "bench": "load_jb_ratio",
                    "mode": mode,
                    "codec": args.codec,
                    "calls": n,
                    "cpu_on": on["cpu_pct"],
                    "cpu_off": off["cpu_pct"],
                    "cpu_ratio": round(on["cpu_pct"] / off["cpu_pct"], 3),
                    "p99_on_ms": on.get("dev_p99_ms"),
                    "p99_off_ms": off.get("dev_p99_ms"),
                    "within_bound": [on["within_bound"], off["within_bound"]],
                    "date": info["date"],
                }
                ratios.append(ratio)
                emit(ratio)
            if not going:
                break
        for setting in settings:
            headline = {
                "bench": "load_headline",
                "mode": mode,
                "codec": args.codec,
                "jitter_buffer": setting,
                "calls_per_core": best[setting],
            } | info
            headlines.append(headline)
            emit(headline)
    if out:
        out.close()
    print(table(rows))
    for r in ratios:
        print(
            f"jitter buffer on/off ({r['mode']}, {r['codec']}, N={r['calls']}): CPU "
            f"{r['cpu_on']}% / {r['cpu_off']}% = {r['cpu_ratio']:.3f}, "
            f"p99 {r['p99_on_ms']} / {r['p99_off_ms']} ms"
        )
    for h in headlines:
        print(
            f"calls per core ({h['mode']}, {h['codec']}, jitter buffer {h['jitter_buffer']}): "
            f"{h['calls_per_core']}  (p99 <= {P99_BOUND_MS} ms, "
            f"0 gaps, 0 failed; {info['cpu']}, nproc {info['nproc']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="pipeline,media")
    parser.add_argument("--calls", default="10,50,100,200,300,400")
    parser.add_argument("--rate", type=float, default=50.0, help="call setup rate, calls/s")
    parser.add_argument("--steady", type=float, default=8.0, help="s with all N calls up")
    parser.add_argument("--settle", type=float, default=1.0, help="s before the window opens")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="server on uvloop")
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="server niceness (default -10 as root: the core is the server's even when "
        "other jobs run on the machine)",
    )
    parser.add_argument("--lean", action="store_true", help="pipeline without metrics/RTVI")
    parser.add_argument("--full", action="store_true", help="do not stop a sweep at a miss")
    parser.add_argument("--out", help="append JSON lines to this file")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the server's steady window")
    parser.add_argument("--quick", action="store_true", help="a few seconds: N=5, both modes")
    parser.add_argument("--codec", choices=tuple(CODEC_KEYS), default="PCMU")
    parser.add_argument(
        "--jitter-buffer",
        default="default",
        help="default, on, off, or a list such as off,on (each N once per setting)",
    )
    args = parser.parse_args()
    if not set(args.jitter_buffer.split(",")) <= {"default", "on", "off"}:
        parser.error(f"--jitter-buffer takes default, on, off: got {args.jitter_buffer!r}")
    if args.quick:
        args.calls, args.steady, args.settle, args.rate, args.full = "5", 1.5, 0.5, 20.0, True
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = args.load_cpu = 0
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
