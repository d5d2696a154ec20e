"""Run Kamailio (Debian packages kamailio, kamailio-utils-modules) in the foreground for a test.

:class:`Kamailio` renders a config template, starts ``kamailio -f cfg -DD -E
-Y RUNDIR`` listening on loopback ports the test chooses (``-l``), talks to
it with ``kamcmd -s unix:SOCK ...`` and stops it by its PID (SIGTERM, then
SIGKILL). Its stderr log is kept; the test configs log each request and
reply as ``KAM-REQ``/``KAM-RPL`` lines, parsed by :meth:`requests` and
:meth:`replies`.

Configs: ``tests/kamailio/proxy.cfg`` (stateful proxy, record_route /
loose_route), ``tests/kamailio/registrar.cfg`` (registrar + proxy with
Digest auth and nathelper), ``deploy/kamailio/dispatcher.cfg`` (dispatcher
in front of N pipecat-sip instances; shipped to users). A template takes
preprocessor defines (``kamailio -A NAME=VALUE``, :attr:`defines`) and, for
test templates, ``%%NAME%%`` placeholders replaced before it is written
(:attr:`substitutions`).

Example::

    async with Kamailio(PROXY_CFG, tmp_path / "kam", defines={"BACKEND": server_uri}) as kam:
        ...  # send SIP to 127.0.0.1:kam.port
        assert kam.requests("BYE")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.helpers.peers import free_udp_port, require_binary

REPO = Path(__file__).resolve().parents[2]
PROXY_CFG = REPO / "tests" / "kamailio" / "proxy.cfg"
REGISTRAR_CFG = REPO / "tests" / "kamailio" / "registrar.cfg"
DISPATCHER_CFG = REPO / "deploy" / "kamailio" / "dispatcher.cfg"

_STOP_GRACE_S = 5.0
_LOG_LINE = re.compile(r"KAM-(REQ|RPL) (\S+) (\S+)(.*)")
_FIELD = re.compile(r"(\w+)=(\S*)")


class KamailioError(RuntimeError):
    """Kamailio's config was refused, it did not start, or kamcmd failed."""


def require_kamailio() -> None:
    """Skip the calling test when kamailio or kamcmd (both in package kamailio) is missing."""
    require_binary("kamailio")
    if shutil.which("kamcmd") is None:
        pytest.skip("kamcmd not installed (apt-get install kamailio)")


def quote(text: str) -> str:
    """A string define's value as Kamailio wants it on the command line: ``"text"``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Kamailio:
    """One Kamailio process in the foreground.

    Attributes:
        template: The config template.
        directory: Working directory: ``kamailio.cfg`` (rendered), runtime dir, log.
        host: Listen address.
        port: UDP SIP port it listens on.
        ctl: Path of the binrpc control socket (for kamcmd).
        defines: Preprocessor defines passed with ``-A`` (None: a flag without value).
        pid: Process id while running.
    """

    def __init__(
        self,
        template: str | Path,
        directory: str | Path,
        *,
        defines: Mapping[str, str | int | None] | None = None,
        substitutions: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        listen: Sequence[str] = (),
        netns: str | None = None,
        children: int = 2,
        start_timeout: float = 10.0,
    ) -> None:
        """Prepare (not start) a Kamailio instance.

        Args:
            template: Config template path.
            directory: Working directory (created).
            defines: ``-A`` defines, e.g. ``{"BACKEND": quote("sip:127.0.0.1:6060")}``;
                ``CTL_SOCKET`` is added.
            substitutions: ``%%NAME%%`` placeholders to replace in the template.
            host: Address to listen on (UDP).
            port: UDP port; default a free one (probed in the caller's namespace).
            listen: More ``-l`` listen specs (``tcp:127.0.0.1:5061``).
            netns: Run inside this network namespace (``ip netns exec``).
            children: Worker processes per listen socket.
            start_timeout: Seconds to wait until it answers kamcmd.
        """
        self.template = Path(template)
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_udp_port(host if netns is None else "127.0.0.1")
        self.listen = list(listen)
        self.netns = netns
        self.children = children
        self.start_timeout = start_timeout
        self.ctl = self.directory / "kamailio_ctl"
        self.defines: dict[str, str | int | None] = {
            "CTL_SOCKET": quote(f"unix:{self.ctl}"),
            **(defines or {}),
        }
        self.substitutions = dict(substitutions or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None
        self._log = bytearray()

    @property
    def pid(self) -> int | None:
        """Process id of the main Kamailio process (None before start)."""
        return self._proc.pid if self._proc else None

    @property
    def uri(self) -> str:
        """``sip:<host>:<port>``: this Kamailio as a next hop."""
        return f"sip:{self.host}:{self.port}"

    @property
    def log(self) -> str:
        """Kamailio's stderr so far."""
        return self._log.decode("utf-8", errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of :attr:`log`, for assertion messages."""
        return self.log[-chars:]

    def render(self) -> Path:
        """Write ``kamailio.cfg`` from the template with the substitutions applied.

        Raises:
            KamailioError: A ``%%NAME%%`` placeholder was left without a value.
        """
        text = self.template.read_text()
        for name, value in self.substitutions.items():
            text = text.replace(f"%%{name}%%", value)
        left = re.findall(r"%%(\w+)%%", text)
        if left:
            raise KamailioError(f"{self.template.name}: no value for {sorted(set(left))}")
        path = self.directory / "kamailio.cfg"
        path.write_text(text)
        return path

    def _args(self, cfg: Path) -> list[str]:
        binary = require_binary("kamailio")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        args = [*prefix, binary, "-f", str(cfg), "-l", f"udp:{self.host}:{self.port}"]
        for spec in self.listen:
            args += ["-l", spec]
        for name, value in self.defines.items():
            args += ["-A", name if value is None else f"{name}={value}"]
        return args

    async def check(self) -> None:
        """Run ``kamailio -c`` on the rendered config.

        Raises:
            KamailioError: The config is refused (the message holds kamailio's errors).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            *self._args(self.render()), "-c",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        if proc.returncode != 0:
            raise KamailioError(f"{self.template.name} refused:\n{out.decode(errors='replace')}")

    async def start(self) -> None:
        """Check the config, start Kamailio and wait until kamcmd gets an answer.

        Raises:
            KamailioError: Refused config, early exit or no answer in time.
            pytest.skip.Exception: kamailio or kamcmd is not installed.
        """
        require_kamailio()
        await self.check()
        rundir = self.directory / "run"
        rundir.mkdir(parents=True, exist_ok=True)
        args = self._args(self.directory / "kamailio.cfg")
        args += ["-DD", "-E", "-Y", str(rundir), "-n", str(self.children), "-m", "32", "-M", "4"]
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=self.directory,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._log_task = asyncio.ensure_future(self._pump())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        try:
            while True:
                if self._proc.returncode is not None:
                    raise KamailioError(f"kamailio exited ({self._proc.returncode}):\n{self.log}")
                if self.ctl.exists():
                    with contextlib.suppress(KamailioError):
                        await self.kamcmd("core.uptime", timeout=2)
                        return
                if loop.time() > deadline:
                    raise KamailioError(
                        f"kamailio not ready in {self.start_timeout} s:\n{self.log}"
                    )
                await asyncio.sleep(0.05)
        except BaseException:
            await self.stop()
            raise

    async def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while chunk := await self._proc.stdout.read(65536):
            if len(self._log) < (8 << 20):
                self._log += chunk

    async def stop(self) -> None:
        """SIGTERM the main process by PID (it ends its children), SIGKILL if it lingers."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
        if self._log_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._log_task, 2.0)
            self._log_task.cancel()
            self._log_task = None

    async def __aenter__(self) -> Kamailio:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- inspection ----------------------------------------------------------------
    async def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        """Run ``kamcmd -s unix:<ctl> args...`` and return its output.

        Raises:
            KamailioError: kamcmd failed or timed out.
        """
        kamcmd = shutil.which("kamcmd")
        if kamcmd is None:
            raise KamailioError("kamcmd not installed (apt-get install kamailio)")
        proc = await asyncio.create_subprocess_exec(
            kamcmd, "-s", f"unix:{self.ctl}", *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise KamailioError(f"kamcmd {' '.join(args)}: no answer in {timeout} s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise KamailioError(f"kamcmd {' '.join(args)} failed: {text.strip()}")
        return text

    async def dispatcher_destinations(self) -> dict[str, str]:
        """``kamcmd dispatcher.list`` as destination URI -> flags ("AP" active, "IP" inactive)."""
        text = await self.kamcmd("dispatcher.list")
        out: dict[str, str] = {}
        for uri, flags in re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", text):
            out[uri] = flags
        return out

    async def wait_dispatcher(
        self, wanted: Mapping[str, str], timeout: float = 10.0
    ) -> dict[str, str]:
        """Wait until each destination's flags start with the wanted letter ("A" or "I").

        Returns:
            The last :meth:`dispatcher_destinations`.

        Raises:
            KamailioError: Not reached within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            dests = await self.dispatcher_destinations()
            if all(dests.get(uri, "").startswith(flag) for uri, flag in wanted.items()):
                return dests
            if loop.time() > deadline:
                raise KamailioError(f"dispatcher states {dests}, wanted {dict(wanted)}")
            await asyncio.sleep(0.1)

    def _entries(self, kind: str) -> list[dict[str, str]]:
        out = []
        for line in self.log.splitlines():
            m = _LOG_LINE.search(line)
            if m and m.group(1) == kind:
                entry = {"first": m.group(2), "second": m.group(3)}
                entry.update(dict(_FIELD.findall(m.group(4))))
                out.append(entry)
        return out

    def requests(self, method: str | None = None) -> list[dict[str, str]]:
        """Requests this Kamailio received, from its ``KAM-REQ`` log lines.

        Returns:
            Dicts with ``method``, ``ruri``, ``src`` (``ip:port``), ``cseq``,
            ``callid``, ``route``; only ``method`` ones when given.
        """
        out = []
        for e in self._entries("REQ"):
            e["method"], e["ruri"] = e.pop("first"), e.pop("second")
            if method is None or e["method"] == method:
                out.append(e)
        return out

    def replies(self, method: str | None = None) -> list[dict[str, str]]:
        """Replies this Kamailio received, from its ``KAM-RPL`` lines (``status``, ``method``)."""
        out = []
        for e in self._entries("RPL"):
            e["status"], e["method"] = e.pop("first"), e.pop("second")
            if method is None or e["method"] == method:
                out.append(e)
        return out
