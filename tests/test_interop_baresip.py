"""Interop (issue 3): baresip (Debian package baresip-core) calls a real echo pipeline.

An in-process `SIPServer` on a free loopback port answers each call and runs
`Pipeline([transport.input(), EchoProcessor(), transport.output()])` with a
`SIPTransport` at the call's codec rate. baresip, restricted to one G.711
codec per test, plays 1 s of silence then a 1 kHz tone, sends DTMF "12#" and
hangs up; the tests check what baresip heard (the echoed tone), the
negotiated codec, the keys the pipeline saw, the end reason and that every
RTP port went back to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import pytest
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.call import SIPCall
from pipecat_sip.echo import EchoProcessor
from pipecat_sip.transport import SIPParams, SIPTransport
from tests.helpers.audio import dominant_frequency, read_wav, rms, tone_energy_ratio
from tests.helpers.baresip import Baresip, make_wav_for_baresip
from tests.helpers.peers import require_binary
from tests.helpers.server import start_server, wait_for

pytestmark = pytest.mark.interop

TONE_HZ = 1000
LEAD_S = 1.0  # silence before the tone in baresip's WAV
HANGUP_AFTER_S = 5.0  # baresip hangs up this long after CALL_ESTABLISHED
DTMF_AFTER_S = 1.0


class CodecBaresip(Baresip):
    """A `Baresip` whose account offers only the given audio codecs.

    baresip 1.0 restricts codecs per account (`;audio_codecs=pcmu`), not in
    the global config, so the account line written by the helper gets that
    parameter appended.
    """

    def __init__(self, *args, audio_codecs: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.audio_codecs = audio_codecs

    def _write_config(self) -> None:
        super()._write_config()
        accounts = self.config_dir / "accounts"
        line = accounts.read_text().strip()
        accounts.write_text(f"{line};audio_codecs={self.audio_codecs}\n")


class EchoBot:
    """Call handler: answer, then run a real echo pipeline until the call ends."""

    def __init__(self) -> None:
        self.calls: list[SIPCall] = []
        self.echoes: list[EchoProcessor] = []
        self.ended: dict[str, str] = {}
        self.finished = asyncio.Event()
        self.errors: list[BaseException] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        call.add_ended_handler(lambda reason: self.ended.__setitem__(call.call_id, reason))
        try:
            await call.answer()
            transport = SIPTransport(call, SIPParams())
            echo = EchoProcessor()
            self.echoes.append(echo)
            pipeline = Pipeline([transport.input(), echo, transport.output()])
            rate = call.info.sample_rate
            worker = PipelineWorker(
                pipeline,
                params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
            )

            @transport.event_handler("on_client_disconnected")
            async def on_client_disconnected(transport, client):
                await worker.cancel()

            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.finished.set()


@pytest.fixture
def baresip_installed():
    require_binary("baresip")


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_baresip_echo_dtmf_and_hangup(baresip_installed, tmp_path: Path, codec: str):
    wav = make_wav_for_baresip(
        tmp_path / "tone.wav", freq_hz=TONE_HZ, lead_s=LEAD_S, call_seconds=HANGUP_AFTER_S + 4
    )
    bot = EchoBot()
    server = await start_server(bot)
    phone = CodecBaresip(
        tmp_path / "phone",
        wav=wav,
        name="phone",
        audio_codecs=codec.lower(),
        extra_config={"rtp_stats": "yes"},  # prints what our RTCP reports told it
    )
    try:
        async with phone:
            await phone.dial(f"sip:bot@127.0.0.1:{server.port}")
            await phone.wait_event("CALL_ESTABLISHED", timeout=5)
            loop = asyncio.get_running_loop()
            established = loop.time()
            await asyncio.sleep(DTMF_AFTER_S)
            await phone.send_dtmf("12#")
            await asyncio.sleep(max(0.0, HANGUP_AFTER_S - (loop.time() - established)))
            await phone.hangup()
            await phone.wait_event("CALL_CLOSED", timeout=5)
            heard, rate = read_wav(await phone.wait_recording("dec", timeout=5))
            assert await wait_for(lambda: "pkt.report:" in phone.log), phone.log[-2000:]

        assert len(bot.calls) == 1, phone.log[-2000:]
        call = bot.calls[0]
        assert call.info.codec == codec and call.info.sample_rate == 8000

        assert await wait_for(lambda: call.call_id in bot.ended)
        assert bot.ended[call.call_id] == "remote_bye"
        assert await wait_for(bot.finished.is_set, 5), "the pipeline did not stop after BYE"
        assert not bot.errors, bot.errors

        assert bot.echoes[0].digits == ["1", "2", "#"]

        # RTCP (RFC 3550 s.6): baresip read our SR (its "Receive" column: the
        # packet count we sent) and our report block on its stream ("Transmit").
        transmit, receive = map(int, re.search(r"pkt\.report:\s+(\d+)\s+(\d+)", phone.log).groups())
        assert transmit > 0 and receive > 0, phone.log[-1500:]
        assert call.media.stats.rtcp_sent >= 1

        assert rate == 8000 and heard.size >= 3 * rate, f"{heard.size} samples heard"
        second_half = heard[heard.size // 2 :]
        ratio = tone_energy_ratio(second_half, rate, TONE_HZ)
        assert ratio > 0.8 and rms(second_half) > 1000, (
            f"1 kHz share {ratio:.3f}, rms {rms(second_half):.0f}, "
            f"dominant {dominant_frequency(second_half, rate):.0f} Hz"
        )

        noise = rms(heard[: int(0.8 * rate)])  # the echo of baresip's leading silence
        assert noise < 0.05 * rms(second_half), f"noise rms {noise:.0f} before the tone"

        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        with contextlib.suppress(Exception):
            await phone.close()
        await server.stop()
