"""One Daily-shaped bot, two transports: DailyTransport's argument shapes and SIPTransport's.

The bot below is written against DailyTransport's telephony surface (its
event names, ``(transport, data)`` handlers reading daily-js keys,
``start_dialout`` / ``stop_dialout``). It runs unchanged:

- on a real ``DailyTransport`` (daily-python), whose callbacks are driven
  with Daily's documented payloads (no Daily room: nothing leaves the host);
- on ``SIPTransport`` from a Pipecat Cloud-style session body, dialing a
  real baresip on loopback that answers, hears the bot, and presses keys.

Both runs must leave the same trace.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from pipecat.frames.frames import OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.runner.types import RunnerArguments
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.runner import create_transport
from pipecat_sip.transport import SIPParams, SIPTransport
from tests.helpers.audio import read_wav, tone, tone_energy_ratio
from tests.helpers.baresip import Baresip
from tests.helpers.peers import require_binary

TONE_HZ = 700.0


def daily_shaped_bot(transport, worker, dialout_settings: dict, trace: list) -> None:
    """Handlers as a Daily dial-out bot writes them; ``trace`` records what they saw."""

    @transport.event_handler("on_joined")
    async def on_joined(transport, data):
        session_id, error = await transport.start_dialout(dialout_settings)
        trace.append(("dialing", bool(session_id), error))

    @transport.event_handler("on_dialout_connected")
    async def on_dialout_connected(transport, data):
        trace.append(("connected", bool(data["sessionId"])))

    @transport.event_handler("on_dialout_answered")
    async def on_dialout_answered(transport, data):
        trace.append(("answered", bool(data["sessionId"])))
        pcm = (tone(TONE_HZ, 1.5) * 1).astype("<i2").tobytes()
        await worker.queue_frames(
            [OutputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1)]
        )

    @transport.event_handler("on_dtmf_event")
    async def on_dtmf_event(transport, data):
        trace.append(("tone", data["tone"]))
        if data["tone"] == "#":
            error = await transport.stop_dialout(data["sessionId"])
            trace.append(("stop", error))

    @transport.event_handler("on_dialout_stopped")
    async def on_dialout_stopped(transport, data):
        trace.append(("stopped", bool(data["sessionId"])))
        await worker.cancel()

    @transport.event_handler("on_dialout_error")
    async def on_dialout_error(transport, data):
        trace.append(("error", data.get("errorMsg")))
        await worker.cancel()


EXPECTED = [
    ("dialing", True, None),
    ("connected", True),
    ("answered", True),
    ("tone", "1"),
    ("tone", "#"),
    ("stop", None),
    ("stopped", True),
]


class StubWorker:
    def __init__(self) -> None:
        self.queued: list = []
        self.cancelled = False

    async def queue_frames(self, frames) -> None:
        self.queued.extend(frames)

    async def cancel(self) -> None:
        self.cancelled = True


async def test_daily_shapes_on_daily_transport():
    pytest.importorskip("daily")
    from pipecat.transports.daily.transport import DailyParams, DailyTransport

    transport = DailyTransport("https://example.daily.co/room", None, "bot", DailyParams())
    worker, trace = StubWorker(), []
    calls = []

    async def start_dialout(settings=None):  # the room side of Daily is not here
        calls.append(("start", settings))
        return "7d208e2a-520b-4a8d-a2c9-3a36dfa0d342", None

    async def stop_dialout(participant_id):
        calls.append(("stop", participant_id))
        return None

    transport.start_dialout = start_dialout
    transport.stop_dialout = stop_dialout
    settings = {"phoneNumber": "+14155550100"}
    daily_shaped_bot(transport, worker, settings, trace)
    session = {"sessionId": "7d208e2a-520b-4a8d-a2c9-3a36dfa0d342"}
    # Daily's callbacks, with daily-js payload shapes.
    await transport._call_event_handler("on_joined", {"meetingSession": {"id": "m1"}})
    await transport._on_dialout_connected({**session, "userId": None})
    await transport._on_dialout_answered(dict(session))
    await transport._on_dtmf_event({"tone": "1", **session})
    await transport._on_dtmf_event({"tone": "#", **session})
    await transport._on_dialout_stopped(dict(session))
    await asyncio.sleep(0.05)
    assert trace == EXPECTED
    assert calls == [("start", settings), ("stop", session["sessionId"])]
    assert worker.cancelled and len(worker.queued) == 1


@pytest.mark.interop
async def test_same_bot_on_sip_transport_against_baresip(tmp_path: Path, monkeypatch):
    require_binary("baresip")
    base = random.randrange(30000, 40000, 2)
    monkeypatch.setenv("SIP_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("SIP_PUBLIC_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("SIP_RTP_PORT_RANGE", f"{base}-{base + 99}")
    monkeypatch.delenv("SIP_SERVER_PORT", raising=False)
    monkeypatch.delenv("SIP_REGISTRAR", raising=False)
    async with Baresip(tmp_path / "phone", answer=True, name="alice") as phone:
        settings = {"sipUri": phone.uri, "displayName": "Daily-shaped bot"}
        # Started as a Pipecat Cloud session would start it, with a body.
        args = RunnerArguments(body={"sip": {"dialout": settings}}, session_id="pcc-1")
        transport = await create_transport(args, {"sip": lambda: SIPParams()})
        assert isinstance(transport, SIPTransport)
        server = transport.server
        worker = PipelineWorker(
            Pipeline([transport.input(), transport.output()]),
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
            enable_rtvi=False,
        )
        trace: list = []
        daily_shaped_bot(transport, worker, settings, trace)

        async def press_keys():
            await phone.wait_event("CALL_ESTABLISHED", timeout=10)
            await asyncio.sleep(1.8)  # hear the tone first
            await phone.send_dtmf("1#")

        keys = asyncio.ensure_future(press_keys())
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(runner.run(), 30)
        await asyncio.wait_for(keys, 5)
        await phone.wait_event("CALL_CLOSED", timeout=5)
        heard = await phone.wait_recording(timeout=5)
    assert trace == EXPECTED, trace
    # One call only: the bot's start_dialout was the session's dial-out.
    established = [e for e in phone.events if e.get("type") == "CALL_ESTABLISHED"]
    assert len(established) == 1, phone.events
    assert transport.end_reason == "stop_dialout"
    # The session's server went down with the session.
    assert server.endpoint is None
    samples, rate = read_wav(heard)
    assert tone_energy_ratio(samples, rate, TONE_HZ) > 0.5
