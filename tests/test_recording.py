"""Call recording: a stereo WAV per call, written off the event loop; failures are not fatal.

- the file: stereo, 16-bit, the caller (440 Hz) left and the bot (1 kHz)
  right, as long as the call, a valid WAV after every write;
- names: time and a sanitised Call-ID, never overwriting;
- the pipeline is never held up: a writer that takes 300 ms per write, a
  device that is full (``/dev/full``), a real full disk and a read-only one
  (tmpfs in a mount namespace of a child process): every frame still
  reaches the end of the pipeline on time, the error is logged once;
- bot.py with ``SIP_RECORD_DIR``: a real call from the project's test caller;
  the bot's recording holds the caller's tone left and its echo right, in
  step.
"""

import asyncio
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from loguru import logger

from pipecat_sip.recording import CallRecorder, recording_path
from tests.helpers.recording_child import RATE, run_pipeline

REPO = Path(__file__).resolve().parent.parent


def read_stereo(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        return frames.astype(float), w.getframerate()


def band_rms(x: np.ndarray, rate: int, hz: float, width: float = 50.0) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs > hz - width) & (freqs < hz + width)].sum())


def capture_logs(level: str = "WARNING") -> tuple[list[str], int]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level=level)
    return lines, sink


# --- names ---------------------------------------------------------------------------------


def test_file_name_is_time_and_a_safe_call_id(tmp_path):
    when = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    assert recording_path(tmp_path, "a84b4c76e66710@pc33.example.com", when) == (
        tmp_path / "20250304T050607Z_a84b4c76e66710_pc33.example.com.wav"
    )
    evil = recording_path(tmp_path, "../../etc/passwd\r\n" + "x" * 300, when)
    assert evil.parent == tmp_path and "/" not in evil.name[:-4]
    assert evil.name.startswith("20250304T050607Z_etc_passwd_") and len(evil.stem) <= 17 + 64
    assert recording_path(tmp_path, "...", when).name == "20250304T050607Z_call.wav"


async def test_stereo_wav_caller_left_bot_right_and_never_overwritten(tmp_path):
    recorder = CallRecorder(tmp_path, "call-1@host", sample_rate=RATE, chunk_s=0.5)
    taken = recorder.path
    taken.write_bytes(b"someone else's file")
    result = await run_pipeline(recorder, 2.0)
    assert result["error"] is None and result["frames"] == result["ticks"]
    assert taken.read_bytes() == b"someone else's file"  # not overwritten
    assert recorder.path == taken.with_name(taken.stem + "-1.wav")
    frames, rate = read_stereo(recorder.path)
    assert rate == RATE
    assert abs(len(frames) / RATE - 2.0) < 0.1 and recorder.written_s == pytest.approx(
        len(frames) / RATE
    )
    left, right = frames[:, 0], frames[:, 1]
    assert band_rms(left, RATE, 440) > 20 * band_rms(left, RATE, 1000)
    assert band_rms(right, RATE, 1000) > 20 * band_rms(right, RATE, 440)


async def test_every_write_leaves_a_valid_wav(tmp_path):
    recorder = CallRecorder(tmp_path, "partial@host", sample_rate=RATE, chunk_s=0.2)
    task = asyncio.create_task(run_pipeline(recorder, 1.5))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if recorder.written_s >= 0.6:
            break
    frames, _ = read_stereo(recorder.path)  # mid-call: the header already matches the data
    assert len(frames) / RATE >= 0.4
    await task


# --- never blocking, never fatal -----------------------------------------------------------


class SlowFile(io.BytesIO):
    """A file whose every write takes 300 ms (a slow or stalled disk)."""

    def write(self, data):
        time.sleep(0.3)
        return super().write(data)


async def test_a_slow_disk_never_holds_the_pipeline_up(tmp_path):
    slow = SlowFile()
    recorder = CallRecorder(
        tmp_path,
        "slow@host",
        sample_rate=RATE,
        chunk_s=0.2,
        max_pending_s=0.5,
        opener=lambda p: slow,
    )
    lines, sink = capture_logs()
    try:
        result = await run_pipeline(recorder, 2.0)
    finally:
        logger.remove(sink)
    assert result["frames"] == result["ticks"] and result["max_gap"] < 0.1
    assert recorder.dropped_s > 0 and recorder.written_s > 0  # kept what it could
    assert sum("not keeping up" in line for line in lines) == 1


async def test_a_full_device_is_logged_once_and_the_call_goes_on(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    recorder = CallRecorder(
        tmp_path,
        "full@host",
        sample_rate=RATE,
        chunk_s=0.2,
        opener=lambda p: open("/dev/full", "wb", buffering=0),  # noqa: SIM115
    )
    lines, sink = capture_logs("ERROR")
    try:
        result = await run_pipeline(recorder, 1.5)
    finally:
        logger.remove(sink)
    assert result["frames"] == result["ticks"] and result["max_gap"] < 0.1
    assert isinstance(recorder.error, OSError) and recorder.error.errno == 28  # ENOSPC
    assert recorder.written_s == 0 and recorder.dropped_s > 1.0
    assert len([line for line in lines if "recording to" in line]) == 1, lines


async def test_chunks_queued_before_a_write_error_do_not_open_the_file_again(tmp_path):
    # A slow disk that then fills up: the chunks queued behind the failing write used
    # to open the recording again, a new numbered file each (on the full disk), and
    # the error line named the last of them.
    opened = []

    class SlowFullFile(io.BytesIO):
        def write(self, data):
            time.sleep(0.2)
            if len(data) > 64:  # the header's small writes pass, audio does not
                raise OSError(28, "No space left on device")
            return super().write(data)

    def opener(path):
        opened.append(path)
        return SlowFullFile()

    recorder = CallRecorder(tmp_path, "full@host", sample_rate=RATE, chunk_s=0.2, opener=opener)
    chunk = bytes(2 * 2 * RATE // 5)  # 0.2 s, stereo
    for _ in range(3):
        await recorder._on_audio_data(recorder.processor, chunk, RATE, 2)
    await recorder.close()
    assert len(opened) == 1 and recorder.error is not None
    assert recorder.written_s == 0 and recorder.dropped_s == pytest.approx(0.6)


async def test_a_stalled_disk_holds_up_neither_close_nor_another_recording(tmp_path):
    # A write that never returns (a hung network disk): close() waited forever (the
    # bot's task never ended), and every recording shared its one writer thread.
    release = threading.Event()

    class StalledFile(io.BytesIO):
        def write(self, data):
            release.wait(30)
            return super().write(data)

    stalled = CallRecorder(
        tmp_path,
        "stalled@host",
        sample_rate=RATE,
        chunk_s=0.2,
        opener=lambda p: StalledFile(),
        close_timeout_s=0.5,
    )
    healthy = CallRecorder(tmp_path, "healthy@host", sample_rate=RATE, chunk_s=0.2)
    chunk = bytes(2 * 2 * RATE // 5)
    lines, sink = capture_logs("ERROR")
    try:
        await stalled._on_audio_data(stalled.processor, chunk, RATE, 2)
        await healthy._on_audio_data(healthy.processor, chunk, RATE, 2)
        started = time.monotonic()
        await asyncio.wait_for(healthy.close(), 5.0)
        await asyncio.wait_for(stalled.close(), 5.0)
        took = time.monotonic() - started
    finally:
        release.set()
        logger.remove(sink)
    assert healthy.written_s == pytest.approx(0.2) and healthy.error is None
    assert took < 2.0
    assert any("did not finish writing within 0.5 s" in line for line in lines), lines


async def test_a_missing_directory_is_logged_and_not_fatal(tmp_path):
    recorder = CallRecorder(tmp_path / "nope", "gone@host", sample_rate=RATE, chunk_s=0.2)
    lines, sink = capture_logs("ERROR")
    try:
        result = await run_pipeline(recorder, 1.0)
    finally:
        logger.remove(sink)
    assert result["frames"] == result["ticks"]
    assert isinstance(recorder.error, FileNotFoundError) and len(lines) == 1


def _in_mount_namespace(script: str) -> subprocess.CompletedProcess | None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return None
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        return None
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("mount_options", "errno"), [("size=48k", 28), ("ro,size=1m", 30)], ids=["full", "read-only"]
)
def test_a_real_full_or_read_only_disk(tmp_path, mount_options, errno):
    """A tmpfs of 48 KiB (about 1.5 s of the recording) or mounted read-only, in a private
    mount namespace (gone with the child): the child's pipeline runs 3 s regardless."""
    target = tmp_path / "disk"
    target.mkdir()
    script = (
        f"mount -t tmpfs -o {mount_options} pipecat-sip-test {target} && "
        f"exec {sys.executable} -m tests.helpers.recording_child {target} 3"
    )
    done = _in_mount_namespace(script)
    if done is None:
        pytest.skip("needs root and unshare(1) for a mount namespace")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["frames"] == result["ticks"] and result["max_gap"] < 0.1, result
    assert result["errno"] == errno, result  # ENOSPC, EROFS
    assert done.stderr.count("recording to") == 1, done.stderr[-3000:]
    if errno == 28:
        assert 0.5 < result["written_s"] < 2.0  # what fitted was kept
    assert not any(target.iterdir())  # the tmpfs was the child's: nothing here


# --- bot.py with SIP_RECORD_DIR: a real call ----------------------------------------------


def onset(x: np.ndarray, rate: int, after_s: float, level: float) -> float:
    """Seconds at which the 10 ms RMS of ``x`` first exceeds ``level`` after ``after_s``."""
    hop = rate // 100
    start = int(after_s * rate)
    for i in range(start, len(x) - hop, hop):
        if np.sqrt(np.mean(x[i : i + hop] ** 2)) > level:
            return i / rate
    raise AssertionError(f"no onset above {level} after {after_s} s")


@pytest.mark.slow
async def test_bot_py_records_the_call_with_sip_record_dir(tmp_path):
    from tests.helpers.baresip import make_wav_for_baresip
    from tests.test_e2e_bot import BotProcess, bot_env

    record_dir = tmp_path / "recordings"
    record_dir.mkdir()

    class RecordingBot(BotProcess):
        async def start(self) -> None:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "bot.py", "--transport", "sip",
                "--sip-host", "127.0.0.1", "--sip-port", str(self.port),
                "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}",
                cwd=REPO, env=bot_env(SIP_RECORD_DIR=str(record_dir)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            self.follow()
            await self.wait_line("Ready: call", 30)

    duration_s = 10.0
    tone_at = 7.5  # after the 6.7 s greeting, during which the echo is muted
    play = make_wav_for_baresip(
        tmp_path / "tone.wav",
        freq_hz=1000,
        lead_s=tone_at,
        tone_seconds=1.5,
        call_seconds=duration_s,
    )
    bot = RecordingBot()
    try:
        await bot.start()
        caller = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipecat_sip", "call", bot.uri,
            "--play", str(play), "--duration", f"{duration_s:g}",
            cwd=REPO, env=bot_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(caller.wait(), duration_s + 20) == 0
        line = await bot.wait_line("CallRecorder[", 10)
        assert "recorded" in line, bot.log[-3000:]
        ended = await bot.wait_line("ended (", 5)
        assert "MOS" in ended, ended
    finally:
        await bot.close()
    (path,) = record_dir.iterdir()
    call_id = re.search(r"SIPCall#(\S+): ended", ended).group(1)
    assert path.name.endswith(recording_path(record_dir, call_id).name[16:])  # time_CallID.wav
    frames, rate = read_stereo(path)
    assert rate == 16000  # G.722 end to end: the pipeline runs at the codec rate
    assert abs(len(frames) / rate - duration_s) < 1.0
    left, right = frames[:, 0], frames[:, 1]
    greeting = slice(int(0.5 * rate), int(6.0 * rate))
    assert np.sqrt(np.mean(right[greeting] ** 2)) > 300  # the bot's greeting, right
    assert np.sqrt(np.mean(left[greeting] ** 2)) < 50  # the caller is silent meanwhile
    heard = onset(left, rate, tone_at - 1.0, 2000)
    echoed = onset(right, rate, tone_at - 1.0, 2000)
    # In step: the tone is where the caller sent it (give or take the call set-up), and
    # its echo on the bot's side follows it by the pipeline and play-out delay only.
    assert abs(heard - tone_at) < 0.6, (heard, echoed)
    assert 0.0 <= echoed - heard < 0.15, (heard, echoed)
    tone = slice(int((heard + 0.2) * rate), int((heard + 1.2) * rate))
    assert band_rms(left[tone], rate, 1000) > 10 * band_rms(left[tone], rate, 440)
    assert band_rms(right[tone], rate, 1000) > 10 * band_rms(right[tone], rate, 440)
