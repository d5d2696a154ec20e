"""CPU per echo-pipeline call: Pipecat's own floor against SIPTransport (a script, not a test).

Answers "how much of a pipeline call's CPU is the transport's?" without SIP
signalling or SIPp, in one process pinned to one core (``--cpu``, default
the last one), N concurrent calls, each ``Pipeline([input, EchoProcessor(),
output])`` at 8 kHz run as bot.py's keyless echo bot runs (no metrics, RTVI
or turn tracking):

- ``null``: Pipecat's ``BaseInputTransport`` / ``BaseOutputTransport`` with
  nothing under them. One task pushes a 20 ms ``InputAudioRawFrame`` into
  each call every 20 ms (calls spread over the period); the output's
  ``write_audio_frame`` only counts. This is what any transport costs at
  least: Pipecat's frame machinery for two frames per call per 20 ms.
- ``sip``: ``SIPTransport`` on a real ``RTPSession`` per call (loopback UDP,
  G.711 decode/encode, the shared media clock), fed 20 ms PCMU speech by
  ``rtp_peer.py`` on another core, which also reports the pacing of what
  comes back. Only SIP signalling is left out (``tests/fakes.FakeCall``).
- ``media``: the ``sip`` calls without a pipeline (the session echoes at
  the codec level), for the RTP/codec share of ``sip``.

CPU is this process's utime+stime over ``--seconds`` after a 3 s warm-up,
as % of one core; ``per_call`` = CPU / N. Prints one JSON line per mode and
N, then a table.

Usage: .venv/bin/python bench/pipeline_cpu.py [--modes null,sip,media] [--calls 40]
           [--seconds 8] [--uvloop]
       .venv/bin/python bench/pipeline_cpu.py --quick
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.transports.base_input import BaseInputTransport  # noqa: E402
from pipecat.transports.base_output import BaseOutputTransport  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from pipecat_sip.codecs import PCMU  # noqa: E402
from pipecat_sip.echo import EchoProcessor  # noqa: E402
from pipecat_sip.media import RTPSession  # noqa: E402
from pipecat_sip.transport import SIPParams, SIPTransport  # noqa: E402
from tests.fakes import FakeCall  # noqa: E402

BENCH = Path(__file__).resolve().parent
PTIME_S = 0.020
PACKET = bytes(320)  # 20 ms of PCM16 at 8 kHz
WARMUP_S = 3.0


class NullOutput(BaseOutputTransport):
    """Pipecat's output transport writing nowhere (counts chunks)."""

    def __init__(self, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self.written = 0

    async def start(self, frame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self.written += 1
        return True


class NullInput(BaseInputTransport):
    """Pipecat's input transport; audio is pushed into it from outside."""

    def __init__(self, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self.ready = asyncio.Event()

    async def start(self, frame):
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.ready.set()


def echo_worker(input_, output) -> PipelineWorker:
    return PipelineWorker(
        Pipeline([input_, EchoProcessor(), output]),
        params=PipelineParams(
            audio_in_sample_rate=8000, audio_out_sample_rate=8000, enable_metrics=False
        ),
        idle_timeout_secs=None,
        enable_rtvi=False,
        enable_turn_tracking=False,
    )


async def run_workers(workers: list[PipelineWorker]) -> list[asyncio.Task]:
    tasks = []
    for worker in workers:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        tasks.append(asyncio.create_task(runner.run()))
    return tasks


async def measure(seconds: float) -> float:
    """CPU of this process over `seconds`, % of one core."""
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100.0 * (time.process_time() - cpu0) / (time.monotonic() - t0)


async def run_null(calls: int, seconds: float) -> dict:
    # 20 ms output chunks, as SIPParams (Pipecat's default is 40 ms).
    params = TransportParams(audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=2)
    inputs = [NullInput(params) for _ in range(calls)]
    outputs = [NullOutput(params, name=f"NullOutput#{i}") for i in range(calls)]
    await run_workers([echo_worker(i, o) for i, o in zip(inputs, outputs, strict=True)])

    async def feed() -> None:
        for input_ in inputs:
            await input_.ready.wait()
        # Four phases per period, as the media clock spreads calls.
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0
        groups = [inputs[p::4] for p in range(4)]
        while True:
            for group in groups:
                k += 1
                await asyncio.sleep(max(0.0, start + k * PTIME_S / 4 - loop.time()))
                for input_ in group:
                    await input_.push_audio_frame(
                        InputAudioRawFrame(audio=PACKET, sample_rate=8000, num_channels=1)
                    )

    feeder = asyncio.create_task(feed())  # noqa: F841 (runs until the process exits)
    await asyncio.sleep(WARMUP_S)
    written0 = sum(o.written for o in outputs)
    t0 = time.monotonic()
    cpu = await measure(seconds)
    written = sum(o.written for o in outputs) - written0
    expected = calls * (time.monotonic() - t0) / PTIME_S
    return {"cpu_pct": cpu, "echo_pct": round(100.0 * written / expected, 1)}


async def run_rtp(calls: int, seconds: float, pipeline: bool, peer_cpu: int) -> dict:
    peer = subprocess.Popen(
        ["taskset", "-c", str(peer_cpu), sys.executable, str(BENCH / "rtp_peer.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = json.loads(peer.stdout.readline())["port"]
        workers = []
        for i in range(calls):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            media = RTPSession(
                sock=sock, remote_addr=("127.0.0.1", port), codec=PCMU, rtp_timeout_s=0
            )
            await media.start()
            if not pipeline:
                media.on_audio = media.send_audio
                continue
            transport = SIPTransport(FakeCall(call_id=f"bench-{i}", media=media), SIPParams())
            workers.append(echo_worker(transport.input(), transport.output()))
        await run_workers(workers)
        await asyncio.sleep(WARMUP_S)
        cpu = await measure(seconds)
    finally:
        peer.send_signal(signal.SIGTERM)
        out = peer.communicate(timeout=30)[0]
    stats = json.loads(out.strip().splitlines()[-1])
    return {
        "cpu_pct": cpu,
        "echo_pct": stats.get("echo_pct"),
        "seq_gaps": stats.get("seq_gaps"),
        "dev_p99_ms": stats.get("dev_p99_ms"),
    }


async def run_one(mode: str, calls: int, args: argparse.Namespace) -> dict:
    if mode == "null":
        result = await run_null(calls, args.seconds)
    else:
        result = await run_rtp(calls, args.seconds, mode == "sip", args.peer_cpu)
    cpu = result.pop("cpu_pct")
    return {
        "bench": "pipeline_cpu",
        "mode": mode,
        "calls": calls,
        "uvloop": args.uvloop,
        "cpu_pct": round(cpu, 1),
        "per_call_pct": round(cpu / calls, 3),
        **result,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def run_in_child(mode: str, calls: int, args: argparse.Namespace) -> dict:
    """One mode and N in a fresh process (no state carried between runs)."""
    argv = [sys.executable, __file__, "--child", mode, "--calls", str(calls)]
    argv += ["--seconds", str(args.seconds), "--cpu", str(args.cpu)]
    argv += ["--peer-cpu", str(args.peer_cpu)] + (["--uvloop"] if args.uvloop else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + 90)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        raise RuntimeError(f"{mode} N={calls} failed: {proc.stderr[-2000:]}")
    return rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="null,sip,media")
    parser.add_argument("--calls", default="40", help="comma-separated N")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1)
    parser.add_argument("--peer-cpu", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file")
    parser.add_argument("--quick", action="store_true", help="N=5 for 1 s per mode")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.quick:
        args.calls, args.seconds = "5", 1.0
    if args.child:
        os.sched_setaffinity(0, {args.cpu})

        async def child() -> None:
            print(json.dumps(await run_one(args.child, int(args.calls), args)), flush=True)
            os._exit(0)  # no orderly teardown of N pipelines: the figures are out

        if args.uvloop:
            import uvloop

            uvloop.run(child())
        else:
            asyncio.run(child())
    rows = []
    for calls in (int(n) for n in args.calls.split(",")):
        for mode in args.modes.split(","):
            row = run_in_child(mode, calls, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"{'mode':>6} {'N':>5} {'cpu%':>7} {'%/call':>7} {'echo%':>6} {'p99 ms':>7}")
    for r in rows:
        p99 = r.get("dev_p99_ms")
        print(
            f"{r['mode']:>6} {r['calls']:>5} {r['cpu_pct']:>7} {r['per_call_pct']:>7}"
            f" {r['echo_pct']!s:>6} {'-' if p99 is None else p99:>7}"
        )


if __name__ == "__main__":
    main()
