"""Echo server for the load benchmark (a script, not a test).

Answers every call on 127.0.0.1 and echoes the caller, in one of two modes:

- ``pipeline``: a real Pipecat pipeline per call, like bot.py's keyless echo
  bot without the greeting: ``Pipeline([transport.input(), EchoProcessor(),
  transport.output()])`` at the codec rate (8 kHz, 16 kHz for G.722:
  nothing resampled).
- ``media``: no pipeline; the RTP session echoes at the codec level
  (``media.on_audio = media.send_audio``: decode, queue, encode, paced send).

Prints one JSON line ``{"ready": true, "port": ..., "pid": ...}`` once it
listens, and on SIGTERM/SIGINT a JSON line with the shared media clock's
counters, then exits. Logging is at WARNING so that per-call INFO lines do not
weigh on the figures (``--log-level INFO`` to see them).

Usage: .venv/bin/python bench/echo_server.py --mode pipeline [--port 0] [--uvloop]
"""

import argparse
import asyncio
import dataclasses
import inspect
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402

from pipecat_sip.call import SIPCall  # noqa: E402
from pipecat_sip.host import freeze_startup_objects  # noqa: E402
from pipecat_sip.media import MediaClock  # noqa: E402
from pipecat_sip.server import SIPServer  # noqa: E402

SIP_SERVER_ARGS = inspect.signature(SIPServer).parameters


def build_handler(mode: str, counters: dict, lean: bool = False, jitter_buffer: str = "default"):
    if mode == "pipeline":
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.workers.runner import WorkerRunner

        from pipecat_sip.echo import EchoProcessor
        from pipecat_sip.transport import SIPParams, SIPTransport

        async def on_call(call: SIPCall) -> None:
            await call.answer()
            counters["answered"] += 1
            try:
                params = SIPParams()
                if jitter_buffer != "default":
                    params = SIPParams(jitter_buffer=jitter_buffer == "on")
                transport = SIPTransport(call, params)
                rate = call.info.sample_rate  # the codec rate: nothing resampled
                pipeline = Pipeline([transport.input(), EchoProcessor(), transport.output()])
                # As bot.py runs a phone call at the codec rate; --lean is its keyless
                # echo bot (no metrics, RTVI or turn tracking), the default is the AI bot's set.
                extra = {"enable_rtvi": False, "enable_turn_tracking": False} if lean else {}
                worker = PipelineWorker(
                    pipeline,
                    params=PipelineParams(
                        audio_in_sample_rate=rate,
                        audio_out_sample_rate=rate,
                        enable_metrics=not lean,
                    ),
                    idle_timeout_secs=None,
                    **extra,
                )
                runner = WorkerRunner(handle_sigint=False)
                await runner.add_workers(worker)
                await runner.run()
            except Exception:
                counters["errors"] += 1
                logger.exception(f"{call}: pipeline failed")
            finally:
                await call.hangup()

        return on_call

    async def on_call_media(call: SIPCall) -> None:
        await call.answer()
        counters["answered"] += 1
        media = call.media
        assert media is not None
        if jitter_buffer == "on":
            media.enable_jitter_buffer()
        media.on_audio = media.send_audio
        await call.wait_ended()
        buffer = media.jitter_buffer
        if buffer is not None:  # what the buffer did, summed over the calls
            jb = counters.setdefault("jitter_buffer", {})
            for name, value in dataclasses.asdict(buffer.stats).items():
                jb[name] = jb.get(name, 0) + value

    return on_call_media


async def serve(args: argparse.Namespace) -> None:
    counters = {"answered": 0, "errors": 0}
    # One SIPp source stands for many callers (as a trunk would): no per-source limit.
    limits = {"rate_limit": args.rate_limit} if "rate_limit" in SIP_SERVER_ARGS else {}
    if "max_unconfirmed_per_source" in SIP_SERVER_ARGS:
        limits["max_unconfirmed_per_source"] = args.max_calls
    server = SIPServer(
        build_handler(args.mode, counters, args.lean, args.jitter_buffer),
        host="127.0.0.1",
        port=args.port,
        public_address="127.0.0.1",
        rtp_port_range=(args.rtp_first, args.rtp_last),
        max_calls=args.max_calls,
        rtp_timeout_s=args.rtp_timeout,
        **limits,
        **({"codecs": tuple(args.codecs.split(","))} if args.codecs else {}),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    freeze_startup_objects()  # as the runner does once started
    clock = MediaClock.for_loop(loop, 20)
    print(json.dumps({"ready": True, "port": server.port, "pid": os.getpid()}), flush=True)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except TimeoutError:
        pass
    report = {
        "server_stats": True,
        "mode": args.mode,
        "uvloop": args.uvloop,
        "lean": args.lean,
        "answered": counters["answered"],
        "jitter_buffer": counters.get("jitter_buffer"),
        "errors": counters["errors"],
        "live_calls": len(server.calls),
        "dropped_rate_limited": getattr(server, "dropped_rate_limited", 0),
        "clock_ticks": clock.ticks,
        "clock_late_ticks": clock.late_ticks,
        "clock_skipped_deadlines": clock.skipped_deadlines,
        "time": time.time(),
    }
    print(json.dumps(report), flush=True)
    await server.stop(timeout=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("pipeline", "media"), default="pipeline")
    parser.add_argument("--port", type=int, default=0, help="SIP UDP port (0: a free one)")
    parser.add_argument("--rtp-first", type=int, default=20000)
    parser.add_argument("--rtp-last", type=int, default=29999)
    parser.add_argument("--max-calls", type=int, default=2000)
    parser.add_argument("--rtp-timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument(
        "--rate-limit", type=float, default=0, help="SIP requests/s per source (0: off)"
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--jitter-buffer",
        choices=("default", "on", "off"),
        default="default",
        help="default: SIPParams' (on) in pipeline mode, none in media mode",
    )
    parser.add_argument("--codecs", help="codecs accepted, preferred first (default: the server's)")
    parser.add_argument(
        "--lean", action="store_true", help="pipeline without metrics, RTVI and turn tracking"
    )
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
