"""Quickstart parity: `python bot.py` is Pipecat's runner with every transport enabled.

Each test starts bot.py in a child process on 127.0.0.1 and a free port,
talks HTTP to it, and stops it by its PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BotProcess:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_tcp_port()
        self.log = tmp_path / "bot.log"
        env = {
            k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "SIP_ROUTES"
        }
        env["HOME"] = str(tmp_path)
        self.proc = subprocess.Popen(
            [sys.executable, "bot.py", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, timeout: float = 60.0, method: str = "GET") -> tuple[int, str, str]:
        """Wait for the server, then fetch ``path``: (status, content type, body)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{path}"
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"bot.py exited {self.proc.returncode}:\n{self.output()}")
            try:
                request = urllib.request.Request(
                    url, method=method, data=b"" if method == "POST" else None
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = response.read().decode(errors="replace")
                    return response.status, response.headers.get("content-type", ""), body
            except urllib.error.HTTPError as error:
                return error.code, error.headers.get("content-type", ""), error.read().decode()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no HTTP on {url}:\n{self.output()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def bot_process(tmp_path):
    started: list[BotProcess] = []

    def start(*args: str) -> BotProcess:
        process = BotProcess(tmp_path, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.mark.slow
def test_python_bot_py_serves_the_webrtc_client_page(bot_process):
    bot = bot_process()
    status, content_type, body = bot.get("/client/")
    assert status == 200 and "text/html" in content_type, (status, content_type)
    assert "<html" in body.lower() and "<script" in body.lower()
    # The page's WebRTC signalling endpoint is mounted (a GET is not how it is used).
    status, _, _ = bot.get("/api/offer")
    assert status == 405
    banner = bot.output()
    assert "WebRTC disabled" not in banner and "Daily disabled" not in banner
    enabled = next(line for line in banner.splitlines() if "Enabled transports" in line)
    for transport in ("daily", "webrtc", "telephony"):
        assert transport in enabled, banner
    disabled = [line for line in banner.splitlines() if "Disabled transports" in line]
    assert not any(t in line for line in disabled for t in ("daily", "webrtc", "telephony"))


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["twilio", "telnyx", "plivo", "exotel"])
def test_telephony_transports_reach_pipecats_runner(bot_process, transport):
    bot = bot_process("-t", transport, "--proxy", "bot.example.com")
    status, content_type, body = bot.get("/", method="POST")
    assert status == 200, (status, body)
    assert "wss://bot.example.com/ws" in body, body
    # Exotel's applet is configured with the WebSocket URL; the others get XML.
    assert ("json" if transport == "exotel" else "xml") in content_type, content_type
    assert "disabled" not in bot.output().lower()


@pytest.mark.slow
def test_daily_transport_is_enabled(bot_process):
    bot = bot_process("-t", "daily")
    # Without DAILY_API_KEY no room can be made, but the transport is there:
    # the runner answers its routes instead of saying "Daily disabled".
    bot.get("/", timeout=60)
    assert "Daily disabled" not in bot.output(), bot.output()


def test_transport_params_cover_every_transport_of_pipecats_runner(monkeypatch):
    from pipecat.runner import run

    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("bot", None)
    import bot

    choices = set(run.TELEPHONY_TRANSPORTS) | {"daily", "webrtc", "websocket", "livekit", "moq"}
    missing = choices - set(bot.transport_params)
    assert not missing, missing
    for name in ("twilio", "telnyx", "plivo", "exotel", "webrtc", "daily", "sip"):
        assert bot.transport_params[name]() is not None
    sys.modules.pop("bot", None)
