"""Run a benchmark server with bot.py's AI shape instead of its echo pipeline.

``python bench/ai_shape.py bench/echo_server.py --mode pipeline ...`` (or
``bench/ws_server.py ...``) runs that script with two substitutions made
before it is imported: ``pipecat_sip.echo.EchoProcessor`` builds
:func:`standins.ai_processor` (STT, user aggregator with Silero VAD, LLM and
TTS stand-ins, assistant aggregator), and ``PipelineWorker`` runs with what
bot.py's AI agent runs with (metrics, RTVI and turn tracking on). Any other
The load peers (``rtp_peer.py``, ``ws_peer.py``) run with turns: their looped
speech is followed by ``PAUSE_S`` of silence, as a caller who waits for
the answer (without it, speech that never pauses interrupts every reply).
At exit a patched server writes the stand-ins' counts (transcriptions,
replies, seconds of speech) to stderr.
"""

import atexit
import json
import runpy
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PAUSE_S = 4.0
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def install() -> None:
    import pipecat.pipeline.worker as worker_module
    import standins

    import pipecat_sip.echo as echo

    class AIShapeWorker(worker_module.PipelineWorker):
        def __init__(self, *args, **kwargs):
            kwargs.pop("enable_rtvi", None)
            kwargs.pop("enable_turn_tracking", None)
            params = kwargs.get("params")
            if params is not None:
                params.enable_metrics = True
            super().__init__(*args, **kwargs)

    worker_module.PipelineWorker = AIShapeWorker
    echo.EchoProcessor = lambda *args, **kwargs: standins.ai_processor()
    atexit.register(lambda: print(json.dumps({"ai_counts": standins.COUNTS}), file=sys.stderr))


def with_turns() -> None:
    import rtp_peer

    speech = rtp_peer.speech_payloads
    pause = [rtp_peer.PCMU.silence(rtp_peer.SAMPLES)] * int(PAUSE_S / rtp_peer.PTIME_S)
    rtp_peer.speech_payloads = lambda seconds=6.0: speech(seconds) + pause


def main() -> None:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    name = Path(script).name
    if name in ("echo_server.py", "ws_server.py"):
        install()
    elif name in ("rtp_peer.py", "ws_peer.py"):
        with_turns()
        if name == "rtp_peer.py":  # its own speech_payloads is the patched module's
            import rtp_peer

            rtp_peer.main()
            return
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
