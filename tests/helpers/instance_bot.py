"""A pipecat-sip instance for tests and benchmarks: the real runner, an RTP-level echo bot.

``python tests/helpers/instance_bot.py --sip-port P --rtp-ports A-B
--drain-timeout S --api-port Q`` runs :func:`pipecat_sip.runner.main` (its
flags, environment, SIGTERM draining, operations API, JSON logs), with a bot
that echoes each call's RTP audio back at the media level instead of a
Pipecat pipeline, so that tens of calls fit on a small machine. A dial-out's
settings may ask for ``{"hangup_after": seconds}``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipecat_sip.runner import SIPRunnerArguments, main  # noqa: E402


async def bot(runner_args: SIPRunnerArguments) -> None:
    """Echo the caller's audio until the call ends (or ``body["hangup_after"]`` seconds)."""
    call = runner_args.call
    assert call is not None and call.media is not None
    media = call.media
    media.on_audio = media.send_audio
    settings = runner_args.body if isinstance(runner_args.body, dict) else {}
    hangup_after = settings.get("hangup_after")
    if hangup_after is None:
        await call.wait_ended()
        return
    try:
        await asyncio.wait_for(call.wait_ended(), float(hangup_after))
    except TimeoutError:
        await call.hangup()


if __name__ == "__main__":
    main(["--transport", "sip", *sys.argv[1:]])
