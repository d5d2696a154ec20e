"""Interop: wideband calls (G.722, Opus) between baresip and a real echo pipeline.

An in-process `SIPServer` answers and runs `Pipeline([transport.input(),
EchoProcessor(), transport.output()])` at the call's codec rate (16 kHz).
baresip, restricted to one wideband codec and fed a 16 kHz WAV, plays 1 s of
silence then a 6 kHz tone and hangs up; what it recorded of our echo must be
that tone. G.711 cannot carry 6 kHz (its audio stops at 4 kHz), so a 6 kHz
echo proves the whole path was wideband: SDP, the codec, the media layer and
the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import numpy as np
import pytest

from pipecat_sip.codecs import unavailable_codecs
from tests.helpers.audio import dominant_frequency, read_wav, rms, tone_energy_ratio, write_wav
from tests.helpers.audio import tone as make_tone
from tests.helpers.baresip import Baresip, make_wav_for_baresip, require_module
from tests.helpers.echo import EchoBot as EchoBotAtCodecRate
from tests.helpers.linphone import Linphone
from tests.helpers.netns import NetLab, require_netns
from tests.helpers.peers import require_binary
from tests.helpers.pjsua import Pjsua, require_pjsua2
from tests.helpers.server import start_server, wait_for
from tests.test_interop_baresip import EchoBot

pytestmark = pytest.mark.interop

TONE_HZ = 6000
RATE = 16000
LEAD_S = 1.0
CALL_S = 4.0  # baresip hangs up this long after CALL_ESTABLISHED


async def _echo_call(tmp_path: Path, *, module: str, account_codec: str, codecs: tuple[str, ...]):
    """One call from baresip to the echo bot; returns (bot, what baresip heard, its rate)."""
    wav = make_wav_for_baresip(
        tmp_path / "tone16k.wav",
        freq_hz=TONE_HZ,
        lead_s=LEAD_S,
        call_seconds=CALL_S + 4,
        amplitude=0.3,
        rate=RATE,
    )
    bot = EchoBot()
    server = await start_server(bot, codecs=codecs)
    phone = Baresip(
        tmp_path / "phone",
        wav=wav,
        name="phone",
        extra_modules=[module],
        audio_codecs=account_codec,
        extra_config={"ausrc_srate": str(RATE), "auplay_srate": str(RATE)},
    )
    try:
        async with phone:
            await phone.dial(f"sip:bot@127.0.0.1:{server.port}")
            await phone.wait_event("CALL_ESTABLISHED", timeout=5)
            await asyncio.sleep(CALL_S)
            await phone.hangup()
            await phone.wait_event("CALL_CLOSED", timeout=5)
            heard, rate = read_wav(await phone.wait_recording("dec", timeout=5))
        assert await wait_for(bot.finished.is_set, 5), "the pipeline did not stop after BYE"
        assert not bot.errors, bot.errors
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
        return bot, heard, rate, phone.log
    finally:
        with contextlib.suppress(Exception):
            await phone.close()
        await server.stop()


def _assert_heard_the_6khz_tone(heard, rate: int, log: str) -> None:
    assert rate >= 2 * TONE_HZ, f"baresip recorded at {rate} Hz"
    assert heard.size >= 2 * rate, f"{heard.size} samples heard\n{log[-1500:]}"
    tail = heard[heard.size // 2 :]  # the echo of the tone (after the 1 s lead)
    share = tone_energy_ratio(tail, rate, TONE_HZ)
    dominant = dominant_frequency(tail, rate)
    assert share > 0.8 and rms(tail) > 1000, (
        f"6 kHz share {share:.3f}, rms {rms(tail):.0f}, dominant {dominant:.0f} Hz"
    )
    assert dominant == pytest.approx(TONE_HZ, abs=20)
    lead = heard[: int(0.8 * rate)]  # the echo of baresip's leading silence
    assert rms(lead) < 0.05 * rms(tail), f"noise rms {rms(lead):.0f} before the tone"


async def test_g722_call_echoes_a_6khz_tone(tmp_path: Path):
    require_module("g722")
    bot, heard, rate, log = await _echo_call(
        tmp_path, module="g722", account_codec="g722/16000", codecs=("G722", "PCMU", "PCMA")
    )
    (call,) = bot.calls
    assert (call.info.codec, call.info.sample_rate) == ("G722", 16000)
    assert (call.negotiated.payload_type, call.negotiated.clock_rate) == (9, 8000)
    assert call.media.stats.packets_received > 100 and call.media.stats.packets_unknown_pt == 0
    _assert_heard_the_6khz_tone(heard, rate, log)


async def test_g711_call_does_not_carry_the_6khz_tone(tmp_path: Path):
    # The control: the same call on PCMU (baresip resamples its 16 kHz source to
    # 8 kHz) loses the tone, so the wideband tests above measure the codec.
    bot, heard, rate, log = await _echo_call(
        tmp_path, module="g722", account_codec="pcmu", codecs=("G722", "PCMU", "PCMA")
    )
    (call,) = bot.calls
    assert (call.info.codec, call.info.sample_rate) == ("PCMU", 8000)
    tail = heard[heard.size // 2 :]
    assert tone_energy_ratio(tail, rate, TONE_HZ) < 0.05, log[-1500:]
    assert rms(tail) < 300, f"rms {rms(tail):.0f}: something above 4 kHz came through"


async def test_opus_call_echoes_a_6khz_tone(tmp_path: Path):
    require_module("opus")
    reason = unavailable_codecs().get("opus")
    if reason is not None:
        pytest.skip(f"Opus unavailable: {reason}")
    bot, heard, rate, log = await _echo_call(
        tmp_path,
        module="opus",
        account_codec="opus/48000/2",
        codecs=("opus", "G722", "PCMU", "PCMA"),
    )
    (call,) = bot.calls
    assert (call.info.codec, call.info.sample_rate) == ("opus", 16000)
    neg = call.negotiated
    assert (neg.clock_rate, neg.channels, neg.fmtp) == (48000, 2, "stereo=1;sprop-stereo=1")
    assert call.media.stats.packets_received > 100 and call.media.codec.invalid_payloads == 0, (
        call.media.stats
    )
    _assert_heard_the_6khz_tone(heard, rate, log)


# --- PJSIP (the pjsua2-python wheel) ---------------------------------------------------------


def _tone16k_wav(path: Path, seconds: float, lead_s: float = LEAD_S) -> Path:
    """16 kHz WAV: ``lead_s`` of silence, then the 6 kHz tone to ``seconds``."""
    lead = np.zeros(int(lead_s * RATE), dtype=np.int16)
    body = make_tone(TONE_HZ, seconds - lead_s, rate=RATE, amplitude=0.3)
    return write_wav(path, np.concatenate([lead, body]), RATE)


async def _pjsua_echo_call(tmp_path: Path, pj_codec: str, codecs: tuple[str, ...]):
    """PJSIP calls the echo bot with one codec; returns (bot, heard, rate, PJSIP's media event)."""
    bot = EchoBotAtCodecRate()
    server = await start_server(bot, codecs=codecs)
    heard = tmp_path / "heard.wav"
    try:
        async with Pjsua(tmp_path / "pj", codecs=[pj_codec], clock_rate=RATE) as pj:
            call = await pj.call(
                f"sip:bot@127.0.0.1:{server.port}",
                play=_tone16k_wav(tmp_path / "tone16k.wav", CALL_S + 4),
                record=heard,
            )
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            media = await pj.wait_event("media_state", call=call, status="active")
            await asyncio.sleep(CALL_S)
            await pj.hangup(call)
            await pj.wait_call_state(call, "DISCONNECTED", timeout=5)
            closed = await pj.wait_event("recording_closed", call=call, timeout=5)
            assert closed["complete"], closed
            log = pj.log_tail()
        assert await wait_for(lambda: bot.finished == 1), "the pipeline did not stop after BYE"
        assert not bot.errors, bot.errors
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await server.stop()
    samples, rate = read_wav(heard)
    return bot, samples, rate, media, log


async def test_g722_call_with_pjsua_echoes_a_6khz_tone(tmp_path: Path):
    require_pjsua2()
    bot, heard, rate, media, log = await _pjsua_echo_call(
        tmp_path, "G722/16000", ("G722", "PCMU", "PCMA")
    )
    assert media["codec"] == "G722" and media["clock_rate"] == 16000, media
    (call,) = bot.calls
    assert (call.info.codec, call.info.sample_rate) == ("G722", 16000)
    assert call.media.stats.packets_received > 100 and call.media.stats.packets_unknown_pt == 0
    assert call.quality is not None and call.quality.final and call.quality.packets_lost == 0
    _assert_heard_the_6khz_tone(heard, rate, log)


# The pjsua2-python wheel (PJSIP 2.15) is built without Opus: its codecs are speex,
# iLBC, GSM, PCMU, PCMA and G722. The Opus interop calls are baresip's (above) and
# linphonec's (below).


# --- linphonec (linphone-cli), in a network namespace with only lo -----------------------


async def _linphone_echo_call(tmp_path: Path, lin_codec: str, codecs: tuple[str, ...]):
    """linphonec calls the echo bot with one codec; returns (bot, heard, rate, its log tail)."""
    require_binary("linphonec")
    require_netns()
    # `record` follows `play` at once: a 1.5 s lead leaves the first 0.8 s heard silent
    wav = _tone16k_wav(tmp_path / "tone16k.wav", CALL_S + 6, lead_s=1.5)
    heard = tmp_path / "heard.wav"
    with NetLab() as lab:
        ns = lab.namespace("phone")
        with ns.entered():  # our SIP and RTP sockets on the namespace's lo
            bot = EchoBotAtCodecRate()
            server = await start_server(bot, codecs=codecs)
            try:
                async with Linphone(tmp_path / "lin", netns=ns.name, codecs=[lin_codec]) as phone:
                    call = await phone.call(f"sip:bot@127.0.0.1:{server.port}")
                    await phone.wait_media(call)
                    await phone.play(wav)
                    await phone.record(heard)
                    await asyncio.sleep(CALL_S)
                    await phone.terminate()
                    await phone.wait_ended(call)
                    log = phone.log_tail()
                assert await wait_for(lambda: bot.finished == 1), "the pipeline did not stop"
                assert not bot.errors, bot.errors
                assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
            finally:
                await server.stop()
    samples, rate = read_wav(heard)
    return bot, samples, rate, log


@pytest.mark.slow
async def test_g722_call_with_linphone_echoes_a_6khz_tone(tmp_path: Path):
    bot, heard, rate, log = await _linphone_echo_call(tmp_path, "G722", ("G722", "PCMU", "PCMA"))
    (call,) = bot.calls
    assert (call.info.codec, call.info.sample_rate) == ("G722", 16000), log
    assert call.media.stats.packets_received > 100 and call.media.stats.packets_unknown_pt == 0
    _assert_heard_the_6khz_tone(heard, rate, log)


@pytest.mark.slow
async def test_opus_call_with_linphone_echoes_a_6khz_tone(tmp_path: Path):
    reason = unavailable_codecs().get("opus")
    if reason is not None:
        pytest.skip(f"Opus unavailable: {reason}")
    bot, heard, rate, log = await _linphone_echo_call(
        tmp_path, "opus", ("opus", "G722", "PCMU", "PCMA")
    )
    (call,) = bot.calls
    assert (call.info.codec, call.info.sample_rate) == ("opus", 16000), log
    assert call.media.stats.packets_received > 100 and call.media.codec.invalid_payloads == 0
    _assert_heard_the_6khz_tone(heard, rate, log)
