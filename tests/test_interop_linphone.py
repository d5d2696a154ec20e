"""Interop: linphonec (Debian package linphone-cli) calls the real SIPServer in a namespace.

linphonec writes its interfaces' address into SDP, so each test creates a
network namespace with only ``lo`` (tests/helpers/netns.py) and runs both
ends there: the test's thread enters the namespace, so the in-process
`SIPServer` and its RTP sockets are bound on the namespace's 127.0.0.1,
and linphonec is started inside it. linphonec plays a 1 kHz tone and
records what it hears; our server echoes it through a real pipeline. The
tests check the echo, the RFC 4733 digits our pipeline saw, hold and resume
by re-INVITE, BYE, and (SIP INFO mode) that INFO is answered 200.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.audio import (
    dominant_frequency,
    read_wav,
    rms,
    tone,
    tone_energy_ratio,
    write_wav,
)
from tests.helpers.echo import EchoBot
from tests.helpers.linphone import Linphone
from tests.helpers.netns import NetLab, require_netns
from tests.helpers.peers import require_binary
from tests.helpers.server import start_server, wait_for

pytestmark = pytest.mark.interop

TONE_HZ = 1000


@pytest.fixture
def linphone_and_netns():
    require_binary("linphonec")
    require_netns()


def tone_wav(path: Path, seconds: float = 10.0) -> Path:
    """8 kHz WAV: 0.3 s of silence, then the tone."""
    lead = np.zeros(int(0.3 * 8000), dtype=np.int16)
    return write_wav(path, np.concatenate([lead, tone(TONE_HZ, seconds)]), 8000)


@pytest.mark.slow
async def test_linphone_calls_echo_dtmf_hold_and_bye(linphone_and_netns, tmp_path: Path):
    wav = tone_wav(tmp_path / "tone.wav")
    heard = tmp_path / "heard.wav"
    with NetLab() as lab:
        ns = lab.namespace("phone")
        with ns.entered():  # our sockets (SIP and RTP) live on the namespace's lo
            bot = EchoBot()
            server = await start_server(bot)
            try:
                async with Linphone(tmp_path / "lin", netns=ns.name, codecs=["PCMU"]) as phone:
                    call = await phone.call(f"sip:bot@127.0.0.1:{server.port}")
                    await phone.wait_media(call)
                    await phone.play(wav)
                    await phone.record(heard)
                    await asyncio.sleep(2.0)
                    await phone.send_dtmf("12#")
                    await phone.pause(call)
                    await phone.resume(call)
                    await asyncio.sleep(0.3)
                    await phone.terminate()
                    reason = await phone.wait_ended(call)
                    tail = phone.log_tail()
                assert reason == "No error", tail

                assert await wait_for(lambda: len(bot.ended) == 1 and bot.finished == 1)
                sip_call = bot.calls[0]
                assert sip_call.info.codec == "PCMU", sip_call.info
                assert bot.ended[sip_call.call_id] == "remote_bye"
                assert not bot.errors, bot.errors
                assert bot.digits(0) == ["1", "2", "#"], tail
                assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
            finally:
                await server.stop()

    samples, rate = read_wav(heard)
    echo = samples[int(0.5 * rate) : int(1.8 * rate)]  # recording starts after `record`
    ratio = tone_energy_ratio(echo, rate, TONE_HZ)
    assert ratio > 0.8 and rms(echo) > 1000, (
        f"1 kHz share {ratio:.3f}, rms {rms(echo):.0f}, "
        f"dominant {dominant_frequency(echo, rate):.0f} Hz, {samples.size / rate:.1f} s recorded"
    )


async def test_linphone_info_dtmf_is_answered(linphone_and_netns, tmp_path: Path):
    # With use_info=1 linphonec sends each key as SIP INFO (application/dtmf-relay);
    # today's server answers INFO 200 in the dialog.
    with NetLab() as lab:
        ns = lab.namespace("phone")
        with ns.entered():
            bot = EchoBot()
            server = await start_server(bot)
            try:
                async with Linphone(
                    tmp_path / "lin", netns=ns.name, use_info=True, log_level=6
                ) as phone:
                    call = await phone.call(f"sip:bot@127.0.0.1:{server.port}")
                    await phone.wait_media(call)
                    await phone.send_dtmf("7")
                    await asyncio.sleep(0.5)
                    await phone.terminate()
                    await phone.wait_ended(call)
                    log = phone.log_path.read_text(errors="replace")
            finally:
                await server.stop()
    assert re.search(r"INFO sip:\S+ SIP/2\.0", log), "linphonec sent no INFO"
    assert "application/dtmf-relay" in log and "Signal=7" in log, log[-3000:]
    assert re.search(r"SIP/2\.0 200 OK\n(?:[^\n]+\n)*?CSeq: \d+ INFO\n", log), log[-3000:]
