"""Run pipecat-sip instances as processes (tests/helpers/instance_bot.py) and talk to them.

:class:`Instance` starts one ``python tests/helpers/instance_bot.py`` on
127.0.0.1 with its own SIP port, RTP range and (optionally) operations API
port, collects its log, and ends it by its PID: SIGTERM (draining), SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.peers import free_udp_port
from tests.helpers.process_log import FollowedLog

REPO = Path(__file__).resolve().parents[2]
BOT = REPO / "tests" / "helpers" / "instance_bot.py"
READY_TIMEOUT_S = 30.0


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (bound and released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def instance_env(**extra: str) -> dict[str, str]:
    """The environment for an instance: no SIP_* settings or AI keys of the caller's, no .env."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SIP_") and not k.endswith("_API_KEY")
    }
    env["PYTHON_DOTENV_DISABLED"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Instance(FollowedLog):
    """One instance process.

    Attributes:
        port: Its SIP UDP port.
        rtp: Its RTP port range (first, last).
        api_port: Its operations API port, or None.
        lines: Its log so far, one entry per line.
    """

    what = "the instance"

    def __init__(
        self,
        *,
        api: bool = True,
        drain_timeout: float | None = None,
        rtp_size: int = 200,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_udp_port()
        base = random.randrange(30000, 32700 - rtp_size, 2)
        self.rtp = (base, base + rtp_size - 1)
        self.api_port = free_tcp_port() if api else None
        self.drain_timeout = drain_timeout
        self.args = list(args)
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self._init_log()

    def again(self) -> Instance:
        """A new (not started) instance on the same SIP port, RTP range and API port."""
        twin = Instance(
            api=self.api_port is not None, drain_timeout=self.drain_timeout, args=self.args
        )
        twin.port, twin.rtp, twin.api_port, twin.env = self.port, self.rtp, self.api_port, self.env
        return twin

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        args = [
            sys.executable, str(BOT),
            "--sip-host", "127.0.0.1", "--sip-port", str(self.port),
            "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}",
            "--rate-limit", "0", "--event-loop", "asyncio",
        ]  # fmt: skip
        if self.api_port is not None:
            args += ["--api-port", str(self.api_port)]
        if self.drain_timeout is not None:
            args += ["--drain-timeout", str(self.drain_timeout)]
        self.proc = await asyncio.create_subprocess_exec(
            *args, *self.args,
            cwd=REPO, env=instance_env(**self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self.follow()
        await self.wait_line("Ready: call", READY_TIMEOUT_S)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the instance, by its PID."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self.log_ended()
        return code

    async def close(self) -> None:
        """Stop it if it still runs: SIGTERM, then SIGKILL; idempotent."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGTERM)  # the second one: hang up at once
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), 5.0)
        await self.log_ended()

    async def __aenter__(self) -> Instance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
