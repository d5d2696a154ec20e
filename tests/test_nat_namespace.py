"""Egress-only, as on Pipecat Cloud: the bot behind NAT, a provider and a caller outside.

inside (the bot, 198.51.100.2) -- router (nftables masquerade, no inbound
path) -- outside (Kamailio as registrar and proxy with Digest credentials
and nathelper, and PJSIP as the phones, 203.0.113.2). Both sessions are
started the way Pipecat Cloud starts them: ``create_transport`` with a
``RunnerArguments`` body.

1. A registration session registers through the NAT. Our Contact carries
   the router's public address learned from received/rport (RFC 3581).
   PJSIP calls the bot's AoR through Kamailio; the echo bot answers, audio
   goes both ways (PJSIP hears its own tone back), a key press arrives as
   ``on_dtmf_event``, PJSIP hangs up (BYE in), the session ends.
2. A dial-out session (``dialout_settings``, a phone number through the
   trunk ``SIP_TRUNK_PROXY`` = Kamailio) calls PJSIP's registered number;
   the echo again, then the bot ends the session (BYE out).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import EndFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.runner.types import RunnerArguments
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.echo import EchoProcessor
from pipecat_sip.runner import create_transport
from pipecat_sip.transport import SIPParams
from tests.helpers.audio import read_wav, rms, tone, tone_energy_ratio, write_wav
from tests.helpers.kamailio import REGISTRAR_CFG, Kamailio, quote, require_kamailio
from tests.helpers.netns import NetLab, require_netns
from tests.helpers.pjsua import Pjsua, require_pjsua2
from tests.helpers.server import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

NUMBER = "15550100"  # PJSIP's registered number (a digits-only user part)
USERS = {"bot": "b0t-pw", NUMBER: "ph0ne-pw", "carol": "c4rol-pw"}


def tone_wav(path: Path, freq_hz: float, seconds: float = 8.0) -> Path:
    lead = np.zeros(int(0.3 * 8000), dtype=np.int16)
    return write_wav(path, np.concatenate([lead, tone(freq_hz, seconds)]), 8000)


def heard_tone(path: Path, freq_hz: float, start_s: float, end_s: float) -> tuple[float, float]:
    samples, rate = read_wav(path)
    part = samples[int(start_s * rate) : int(end_s * rate)]
    return tone_energy_ratio(part, rate, freq_hz), rms(part)


async def run_session(body: dict, trace: list, *, end_after: float | None = None):
    """Start a session as Pipecat Cloud does; run an echo pipeline on it until it ends."""
    transport = await create_transport(
        RunnerArguments(body=body, session_id="pcc"), {"sip": lambda: SIPParams()}
    )
    worker = PipelineWorker(
        Pipeline([transport.input(), EchoProcessor(), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        enable_rtvi=False,
        enable_turn_tracking=False,
    )
    for event in ("on_dialin_ready", "on_dialin_connected", "on_dialin_stopped",
                  "on_dialout_answered", "on_dialout_stopped", "on_dtmf_event"):  # fmt: skip
        transport.add_event_handler(event, lambda t, data, event=event: trace.append((event, data)))

    if end_after is not None:

        @transport.event_handler("on_dialout_answered")
        async def end_later(transport, data):
            async def end():
                await asyncio.sleep(end_after)
                await worker.queue_frame(EndFrame())

            asyncio.ensure_future(end())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    return transport, asyncio.ensure_future(runner.run())


async def test_registration_and_dialout_sessions_behind_nat(tmp_path: Path, monkeypatch):
    require_kamailio()
    require_pjsua2()
    require_netns(nft=True)
    with NetLab() as lab:
        nat = lab.nat()
        users = "\n".join(f'\t$sht(users=>{u}) = "{p}";' for u, p in USERS.items())
        kam = Kamailio(
            REGISTRAR_CFG,
            tmp_path / "kam",
            defines={"REALM": quote("pipecat.test")},
            substitutions={"USERS": users},
            host=nat.outside_addr,
            netns=nat.outside.name,
        )
        provider = f"{nat.outside_addr}:{kam.port}"
        monkeypatch.setenv("SIP_SERVER_HOST", nat.inside_addr)
        monkeypatch.setenv("SIP_RTP_PORT_RANGE", "20000-20099")
        monkeypatch.setenv("SIP_REGISTRAR", f"sip:{provider}")
        monkeypatch.setenv("SIP_USERNAME", "bot")
        monkeypatch.setenv("SIP_PASSWORD", USERS["bot"])
        monkeypatch.setenv("SIP_TRUNK_PROXY", provider)
        for name in ("SIP_SERVER_PORT", "SIP_PUBLIC_ADDRESS", "SIP_STUN_SERVER", "SIP_SESSION"):
            monkeypatch.delenv(name, raising=False)
        async with kam:
            phone = Pjsua(tmp_path / "pj", bind=nat.outside_addr, netns=nat.outside.name)
            async with phone:
                # PJSIP's own number, auto-answering, for the dial-out later.
                answer_heard = tmp_path / "answer{n}.wav"
                phone_acc = await phone.register(
                    f"sip:{provider}",
                    NUMBER,
                    USERS[NUMBER],
                    auto_answer=200,
                    play=str(tone_wav(tmp_path / "t600.wav", 600)),
                    record=str(answer_heard),
                )
                with nat.inside.entered():
                    # --- 1. registration session: register, take one call -----
                    trace: list = []
                    transport, session = await run_session(
                        {"sip": {"register": True, "wait": 30}}, trace
                    )
                    server = transport.server
                    assert await wait_for(lambda: server.registered, 5), kam.log_tail()
                    dump = await kam.kamcmd("ul.dump")
                    # Contact from received/rport: the router's public address.
                    assert f"sip:bot@{nat.router_outside_addr}:" in dump, dump
                    assert f"sip:bot@{nat.inside_addr}" not in dump, dump
                    heard = tmp_path / "caller.wav"
                    call = await phone.call(
                        f"sip:bot@{provider}",
                        play=tone_wav(tmp_path / "t800.wav", 800),
                        record=heard,
                    )
                    await phone.wait_call_state(call, "CONFIRMED", timeout=10)
                    await asyncio.sleep(2.0)
                    await phone.send_dtmf(call, "5")
                    await asyncio.sleep(1.0)
                    await phone.hangup(call)  # BYE in
                    await phone.wait_call_state(call, "DISCONNECTED", timeout=5)
                    await phone.wait_event("recording_closed", call=call, timeout=5)
                    await asyncio.wait_for(session, 15)
                    events = [name for name, _ in trace]
                    assert events[:2] == ["on_dialin_ready", "on_dialin_connected"], trace
                    assert ("on_dtmf_event", "5") in [
                        (n, d.get("tone")) for n, d in trace if n == "on_dtmf_event"
                    ]
                    assert events[-1] == "on_dialin_stopped", trace
                    assert transport.end_reason == "remote_bye"
                    assert server.endpoint is None  # the session's server stopped
                    ratio, level = heard_tone(heard, 800, 1.0, 2.2)
                    assert ratio > 0.6 and level > 500, (ratio, level)

                    # --- 2. dial-out session: a number through the trunk -------
                    trace = []
                    transport, session = await run_session(
                        {"dialout_settings": {"phone_number": NUMBER}}, trace, end_after=3.0
                    )
                    incoming = await phone.wait_event("incoming_call", acc=phone_acc, timeout=10)
                    await phone.wait_call_state(incoming["call"], "CONFIRMED", timeout=10)
                    await phone.wait_call_state(incoming["call"], "DISCONNECTED", timeout=15)
                    closed = await phone.wait_event(
                        "recording_closed", call=incoming["call"], timeout=5
                    )
                    await asyncio.wait_for(session, 15)
                    assert [n for n, _ in trace][:1] == ["on_dialout_answered"], trace
                    assert transport.end_reason is None  # we hung up (BYE out)
                    assert transport.server.endpoint is None
                    ratio, level = heard_tone(Path(closed["path"]), 600, 1.0, 2.5)
                    assert ratio > 0.6 and level > 500, (ratio, level)
