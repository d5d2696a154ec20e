"""End to end (issue 4): `python bot.py --transport sip` as a real process, called by real callers.

The keyless echo bot (no AI keys in its environment, `.env` loading off)
runs on a free loopback SIP port with its own RTP range. baresip and the
project's test caller (`python -m pipecat_sip call`) dial it, play silence
then a 1 kHz tone and record what they hear: first the bundled greeting,
then their own tone echoed. SIGTERM with a call up must hang the call up
(BYE) and exit 0. `bot.py` without `--transport sip` must still reach
Pipecat's runner, and bad SIP settings must stop it with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soxr

from pipecat_sip.echo import load_greeting
from tests.helpers.audio import dominant_frequency, read_wav, rms, tone_energy_ratio
from tests.helpers.baresip import Baresip, make_wav_for_baresip
from tests.helpers.peers import free_udp_port, require_binary
from tests.helpers.process_log import FollowedLog

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
AI_KEYS = ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY")
TONE_HZ = 1000
RATE = 8000
READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 6.0


def bot_env(**extra: str) -> dict[str, str]:
    """The environment for bot.py: no AI keys, no SIP_* settings, no `.env` loading."""
    env = {k: v for k, v in os.environ.items() if k not in AI_KEYS and not k.startswith("SIP_")}
    env["PYTHON_DOTENV_DISABLED"] = "1"  # a developer's .env must not switch on the AI bot
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def rtp_range(size: int = 100) -> tuple[int, int]:
    """An even-based RTP range below Linux's ephemeral ports (32768+) and the test caller's."""
    base = random.randrange(30000, 32700 - size, 2)
    return base, base + size - 1


class BotProcess(FollowedLog):
    """`python bot.py --transport sip` on 127.0.0.1 as a subprocess, with its log collected."""

    what = "the bot"

    def __init__(self) -> None:
        self.port = free_udp_port()
        self.rtp = rtp_range()
        self.proc: asyncio.subprocess.Process | None = None
        self._init_log()

    @property
    def uri(self) -> str:
        return f"sip:bot@127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "bot.py", "--transport", "sip",
            "--sip-host", "127.0.0.1", "--sip-port", str(self.port),
            "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}",
            cwd=REPO, env=bot_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self.follow()
        ready = await self.wait_line("Ready: call", READY_TIMEOUT_S)
        assert f"127.0.0.1:{self.port}" in ready, ready

    def terminate(self) -> None:
        """Send SIGTERM to the bot (by its PID)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self.log_ended()
        return code

    async def close(self) -> None:
        """Stop the bot if it still runs: SIGTERM, then SIGKILL; idempotent."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), 5.0)
        await self.log_ended()


def greeting_match(heard: np.ndarray) -> float:
    """Peak normalized cross-correlation of the bundled greeting against `heard` (0..1)."""
    pcm, rate = load_greeting()
    assert rate == RATE
    ref = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    x = heard.astype(np.float64)
    if x.size < ref.size:
        x = np.concatenate([x, np.zeros(ref.size - x.size)])
    n = 1 << int(np.ceil(np.log2(x.size + ref.size)))
    spectrum = np.fft.rfft(x, n) * np.conj(np.fft.rfft(ref, n))
    corr = np.fft.irfft(spectrum, n)[: x.size - ref.size + 1]
    lag = int(np.argmax(np.abs(corr)))
    window = x[lag : lag + ref.size]
    denom = np.linalg.norm(window) * np.linalg.norm(ref)
    return float(abs(corr[lag]) / denom) if denom else 0.0


def check_greeting_then_echo(heard: np.ndarray, tone_from_s: float, tone_to_s: float) -> None:
    """Assert the greeting was heard first (while the caller was silent), then the echoed tone."""
    greeting = heard[int(0.2 * RATE) : int(6.0 * RATE)]
    assert rms(greeting) > 300, f"no greeting: rms {rms(greeting):.0f} in 0.2-6 s"
    assert tone_energy_ratio(greeting, RATE, TONE_HZ) < 0.3, "the greeting part holds the tone"
    match = greeting_match(heard[: int(8.0 * RATE)])
    assert match > 0.7, f"the first 8 s do not match greeting.wav (correlation {match:.2f})"
    echo = heard[int(tone_from_s * RATE) : int(tone_to_s * RATE)]
    assert echo.size >= RATE // 2, f"recording too short: {heard.size / RATE:.1f} s"
    ratio = tone_energy_ratio(echo, RATE, TONE_HZ)
    assert ratio > 0.8 and rms(echo) > 1000, (
        f"no 1 kHz echo in {tone_from_s}-{tone_to_s} s: share {ratio:.3f}, "
        f"rms {rms(echo):.0f}, dominant {dominant_frequency(echo, RATE):.0f} Hz"
    )


# -- a. baresip ------------------------------------------------------------------------


async def test_bot_with_baresip_greeting_echo_and_sigterm(tmp_path: Path):
    require_binary("baresip")
    call_s = 11.0
    wav = make_wav_for_baresip(
        tmp_path / "silence_then_tone.wav", freq_hz=TONE_HZ, lead_s=8.0, call_seconds=call_s + 4
    )
    bot = BotProcess()
    phone = Baresip(tmp_path / "phone", wav=wav, name="phone")
    try:
        await bot.start()
        async with phone:
            # Call 1: greeting, then the echo of our tone; we hang up.
            await phone.dial(bot.uri)
            await phone.wait_event("CALL_ESTABLISHED", timeout=5)
            await asyncio.sleep(call_s)
            await phone.hangup()
            await phone.wait_event("CALL_CLOSED", timeout=5)
            heard, rate = read_wav(await phone.wait_recording("dec", timeout=5))
            assert rate == RATE
            check_greeting_then_echo(heard, 9.0, call_s - 0.3)
            await bot.wait_line("ended (remote_bye)", 5)

            # Call 2: SIGTERM to the bot while the call is up: BYE, then exit 0.
            await phone.dial(bot.uri)
            await phone.wait_event("CALL_ESTABLISHED", timeout=5)
            await asyncio.sleep(1.0)
            bot.terminate()
            started = time.monotonic()
            closed = await phone.wait_event("CALL_CLOSED", timeout=5)
            code = await bot.wait_exit(EXIT_TIMEOUT_S)
            elapsed = time.monotonic() - started
        assert code == 0, bot.log[-3000:]
        assert elapsed < EXIT_TIMEOUT_S
        assert re.search(r"hanging up 1 call", bot.log), bot.log[-3000:]
        assert "SIP server stopped" in bot.log, bot.log[-3000:]
        # baresip reports a BYE from the far end as ECONNRESET ("Connection reset by peer").
        assert "reset by peer" in str(closed.get("param", "")), closed
    finally:
        with contextlib.suppress(Exception):
            await phone.close()
        await bot.close()


# -- b. the project's test caller --------------------------------------------------------


async def test_bot_with_test_caller_greeting_echo_and_dtmf(tmp_path: Path):
    duration_s = 10.0
    play = make_wav_for_baresip(
        tmp_path / "silence_then_tone.wav", freq_hz=TONE_HZ, lead_s=7.0, call_seconds=duration_s
    )
    record = tmp_path / "heard.wav"
    bot = BotProcess()
    caller: asyncio.subprocess.Process | None = None
    try:
        await bot.start()
        caller = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipecat_sip", "call", bot.uri,
            "--play", str(play), "--record", str(record),
            "--dtmf", "12#", "--duration", f"{duration_s:g}",
            cwd=REPO, env=bot_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(caller.communicate(), duration_s + 20)
        output = out.decode(errors="replace") + err.decode(errors="replace")
        assert caller.returncode == 0, output[-3000:]
        assert "sent DTMF 12#" in output, output[-3000:]

        heard, rate = read_wav(record)
        # both ends prefer G.722 (SUPPORTED_CODECS), so the caller records 16 kHz
        assert rate == 16000
        heard = soxr.resample(heard.astype(np.float32), rate, RATE).astype(np.int16)
        check_greeting_then_echo(heard, 8.0, duration_s - 0.3)

        await bot.wait_line("ended (", 5)
        keys = re.findall(r"key pressed: (\S+)", bot.log)
        assert keys == ["1", "2", "#"], bot.log[-3000:]
    finally:
        if caller is not None and caller.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                caller.send_signal(signal.SIGKILL)
            await asyncio.wait_for(caller.wait(), 5.0)
        await bot.close()
    assert bot.proc is not None and bot.proc.returncode == 0, bot.log[-3000:]


# -- c. bot.py's command line --------------------------------------------------------------


def run_bot_py(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "bot.py", *args],
        cwd=REPO,
        env=bot_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise AssertionError(f"bot.py {proc.args[2:]} still running after {timeout} s") from None
    return proc.returncode, out, err


def test_bot_cli_help_and_config_errors():
    # Started together: each one spends most of its time importing Pipecat.
    procs = {
        "help": run_bot_py("--help"),
        "flag": run_bot_py("--transport", "sip", "--sip-port", "notaport"),
        "env": run_bot_py("--transport", "sip", SIP_SERVER_PORT="abc"),
    }
    try:
        results = {name: finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    code, out, err = results["help"]
    assert code == 0, err[-3000:]
    assert "--transport" in out and "webrtc" in out, out  # Pipecat's runner answered

    for name, variable in (("flag", "--sip-port"), ("env", "SIP_SERVER_PORT")):
        code, out, err = results[name]
        assert code != 0, f"{name}: exit 0\n{out}{err}"
        assert "Traceback" not in err, err
        naming = [line for line in (out + err).splitlines() if variable in line]
        assert len(naming) == 1, f"{name}: lines naming {variable}: {naming}\n{err}"
        assert naming[0].startswith("error: ") and "not a port number" in naming[0], naming
        assert "Ready: call" not in err, err
