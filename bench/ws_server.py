"""Echo server on Pipecat's own telephony WebSocket path (a script, not a test).

The comparison point for bench/load.py: a FastAPI app served by uvicorn on
127.0.0.1 whose ``/ws`` endpoint does what a Twilio user of Pipecat does
today. Per connection it reads Twilio's ``connected`` and ``start`` messages
(for the streamSid), then runs
``Pipeline([transport.input(), EchoProcessor(), transport.output()])`` with a
``FastAPIWebsocketTransport`` and a ``TwilioFrameSerializer`` (no auto hang-up:
there is no Twilio account). The worker is lean like bot.py's keyless echo bot
(no metrics, RTVI or turn tracking); the pipeline rates are ``--rate-in`` /
``--rate-out`` Hz (Pipecat's ``PipelineParams`` defaults are 16000 / 24000).

Prints ``{"ready": true, "port": P, "pid": PID}`` once it listens, and on
SIGTERM/SIGINT (or after ``--max-seconds``) one JSON line with its counters
(``server_stats``), then exits.

Usage: .venv/bin/python bench/ws_server.py [--rate-in 16000 --rate-out 24000] [--uvloop]
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402
from fastapi import FastAPI, WebSocket  # noqa: E402
from loguru import logger  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.serializers.twilio import TwilioFrameSerializer  # noqa: E402
from pipecat.transports.websocket.fastapi import (  # noqa: E402
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from pipecat_sip.echo import EchoProcessor  # noqa: E402

START_TIMEOUT_S = 10.0  # for Twilio's "connected" + "start" messages


def build_app(args: argparse.Namespace, counters: dict) -> FastAPI:
    """The FastAPI app: one echo pipeline per websocket on ``/ws``."""
    app = FastAPI()

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        counters["accepted"] += 1
        stream_sid = None
        try:
            # Twilio sends "connected", then "start" (with the streamSid), then media.
            async with asyncio.timeout(START_TIMEOUT_S):
                for _ in range(2):
                    message = json.loads(await websocket.receive_text())
                    if message.get("event") == "start":
                        stream_sid = message["start"]["streamSid"]
                        break
        except (TimeoutError, ValueError, KeyError) as exc:
            counters["bad_start"] += 1
            logger.warning(f"no start message: {exc!r}")
            await websocket.close()
            return
        if stream_sid is None:
            counters["bad_start"] += 1
            await websocket.close()
            return
        counters["started"] += 1
        counters["live"] += 1
        try:
            serializer = TwilioFrameSerializer(
                stream_sid,
                call_sid=None,
                account_sid=None,
                auth_token=None,
                params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
            )
            transport = FastAPIWebsocketTransport(
                websocket,
                FastAPIWebsocketParams(
                    audio_in_enabled=True,
                    audio_out_enabled=True,
                    add_wav_header=False,
                    serializer=serializer,
                ),
            )
            pipeline = Pipeline([transport.input(), EchoProcessor(), transport.output()])
            worker = PipelineWorker(
                pipeline,
                params=PipelineParams(
                    audio_in_sample_rate=args.rate_in,
                    audio_out_sample_rate=args.rate_out,
                    enable_metrics=False,
                ),
                idle_timeout_secs=None,
                enable_rtvi=False,
                enable_turn_tracking=False,
            )

            @transport.event_handler("on_client_disconnected")
            async def on_client_disconnected(transport, client):
                await worker.cancel()

            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
            counters["ended"] += 1
        except Exception:
            counters["errors"] += 1
            logger.exception(f"{stream_sid}: pipeline failed")
        finally:
            counters["live"] -= 1

    return app


async def serve(args: argparse.Namespace) -> None:
    """Listen on a free loopback port, serve until SIGTERM or ``--max-seconds``."""
    counters = {"accepted": 0, "bad_start": 0, "started": 0, "ended": 0, "errors": 0, "live": 0}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        build_app(args, counters),
        loop="none",  # the running loop (asyncio or uvloop, chosen in main)
        ws="auto",  # what a user gets: websockets-sansio
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_ping_interval=None,
        timeout_graceful_shutdown=2,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    stop = asyncio.Event()

    async def watchdog() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        server.should_exit = True

    # uvicorn captures SIGINT/SIGTERM while serving and re-raises them afterwards:
    # a Python handler (not the default action) lets us print the report after.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    guard = asyncio.ensure_future(watchdog())
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    port = sock.getsockname()[1]
    print(json.dumps({"ready": True, "port": port, "pid": os.getpid()}), flush=True)
    await serving
    guard.cancel()
    report = {
        "server_stats": True,
        "rate_in": args.rate_in,
        "rate_out": args.rate_out,
        "uvloop": args.uvloop,
        "time": time.time(),
    } | counters
    print(json.dumps(report), flush=True)


def main() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--rate-in", type=int, default=16000, help="pipeline input rate, Hz")
    parser.add_argument("--rate-out", type=int, default=24000, help="pipeline output rate, Hz")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--log-level", default="WARNING")
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
