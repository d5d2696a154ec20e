"""Drive SIPp (Debian package sip-tester) against a SIP server on loopback.

``run_sipp`` runs one scenario to completion and returns a :class:`SippResult`;
``start_sipp`` starts one in the background (a UAS waiting for our calls, or
load running while the test watches the server) and returns a
:class:`SippProcess` to ``wait()`` for or ``stop()``.

SIPp runs in a temporary working directory: ``rtp_stream`` file names in a
scenario are relative to it, so the needed media files are copied (or, for
``*.ulaw``, generated) there. Every port (SIP, media, SIPp's control socket) is
probed free first. The process is ours alone: on overrun it is stopped by its
own PID, nothing else is signalled.

Scenario keys: a scenario in ``tests/sipp`` lists its custom keywords and their
defaults in a comment line ``pipecat-sip-keys: name=value ...``; ``run_sipp``
passes each as ``-key name value``, with the caller's ``keys`` overriding
(SIPp refuses to start when a ``[keyword]`` has no value). A line
``pipecat-sip-args: ...`` lists SIPp options the scenario needs (e.g. ``-nr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.audio import write_pcmu_file
from tests.helpers.peers import free_udp_port, require_binary, wait_udp_bound

#: Directory holding the project's SIPp scenarios.
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "sipp"

#: Scenarios embedded in SIPp, run with ``-sn`` when passed by name.
BUILTIN_SCENARIOS = frozenset(
    {
        "uac",
        "uas",
        "regexp",
        "branchc",
        "branchs",
        "uac_pcap",
        "3pcc-C-A",
        "3pcc-C-B",
        "3pcc-A",
        "3pcc-B",
    }
)

_KEYS_RE = re.compile(r"pipecat-sip-keys:\s*(.*)")
_ARGS_RE = re.compile(r"pipecat-sip-args:\s*(.*)")
_RTP_STREAM_RE = re.compile(r'rtp_stream="([^",]+),')
_LOG_SEPARATOR = re.compile(r"^-{20,}.*$", re.MULTILINE)
_STOP_GRACE_S = 3.0
_READY_TIMEOUT_S = 5.0
_OVERRUN_GRACE_S = 5.0
_TAIL_CHARS = 3000


def scenario_path(scenario: str | Path) -> Path:
    """Resolve a scenario name (``"uac_basic"``, ``"uac_basic.xml"``) or path to a file.

    Args:
        scenario: A path, or a file name in ``tests/sipp`` with or without ``.xml``.

    Returns:
        The scenario file's absolute path.

    Raises:
        FileNotFoundError: No such scenario file.
    """
    path = Path(scenario)
    candidates = [path] if path.is_absolute() or path.parent != Path(".") else []
    candidates += [path, SCENARIO_DIR / path.name, SCENARIO_DIR / f"{path.name}.xml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"SIPp scenario not found: {scenario} (looked in {SCENARIO_DIR})")


def scenario_keys(path: str | Path) -> dict[str, str]:
    """Return the custom keywords a scenario declares, with their defaults.

    Args:
        path: Scenario file with a ``pipecat-sip-keys: a=1 b=2`` comment line.

    Returns:
        Mapping of keyword to default value (empty if none are declared).
    """
    keys: dict[str, str] = {}
    for match in _KEYS_RE.finditer(Path(path).read_text(encoding="latin-1")):
        for item in match.group(1).split():
            name, sep, value = item.partition("=")
            if sep:
                keys[name] = value
    return keys


def scenario_args(path: str | Path) -> list[str]:
    """Return the SIPp arguments a scenario needs (its ``pipecat-sip-args:`` comment line).

    Args:
        path: Scenario file.

    Returns:
        Arguments split on whitespace (empty if none are declared).
    """
    text = Path(path).read_text(encoding="latin-1")
    return [arg for match in _ARGS_RE.finditer(text) for arg in match.group(1).split()]


@dataclass
class SippResult:
    """Outcome of one SIPp run.

    Attributes:
        scenario: Scenario file name (or built-in name).
        args: Full command line.
        returncode: SIPp's exit code (0: all calls passed, 1: some failed,
            99: no call processed, negative: killed by that signal), None if unknown.
        successful_calls: ``SuccessfulCall(C)`` from the last stat row.
        failed_calls: ``FailedCall(C)`` from the last stat row.
        retransmissions: ``Retransmissions(C)`` (messages SIPp had to resend).
        stats: Last row of the ``-trace_stat`` CSV, column name to raw text.
        stdout: SIPp's stdout (its statistics screens).
        stderr: SIPp's stderr.
        error_log: ``-trace_err`` log text (unexpected messages, failures).
        message_log: ``-trace_msg`` log text (every SIP message sent and received).
        timed_out: True if our own timeout had to stop SIPp.
    """

    scenario: str
    args: list[str]
    returncode: int | None
    successful_calls: int = 0
    failed_calls: int = 0
    retransmissions: int = 0
    stats: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    error_log: str = ""
    message_log: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when SIPp exited 0 with no failed call and at least one successful one."""
        return (
            self.returncode == 0
            and not self.timed_out
            and self.failed_calls == 0
            and self.successful_calls > 0
        )

    def messages(self, direction: str = "sent") -> list[str]:
        """Return the SIP messages from ``message_log`` in order (needs ``trace_msg``).

        Args:
            direction: ``"sent"`` or ``"received"``.

        Returns:
            Each message's text as SIPp logged it (CRLF inside, trailing line ends
            stripped), SIPp's own retransmissions included.
        """
        wanted = "UDP message sent" if direction == "sent" else "UDP message received"
        out = []
        for block in _LOG_SEPARATOR.split(self.message_log):
            head, _, body = block.lstrip("\r\n").partition("\n")
            if head.startswith(wanted):
                text = body.strip("\r\n")
                if text:
                    out.append(text)
        return out

    def summary(self) -> str:
        """Return a multi-line digest for assertion messages (counters, errors, log tails)."""
        lines = [
            f"sipp {self.scenario}: rc={self.returncode} timed_out={self.timed_out} "
            f"successful={self.successful_calls} failed={self.failed_calls} "
            f"retransmissions={self.retransmissions}",
        ]
        failures = {
            k: v
            for k, v in self.stats.items()
            if k.startswith("Failed") and k.endswith("(C)") and v not in ("", "0")
        }
        if failures:
            lines.append(f"failure counters: {failures}")
        lines.append(f"command: {' '.join(self.args)}")
        if self.stderr.strip():
            lines.append("stderr:\n" + self.stderr.strip()[-_TAIL_CHARS:])
        if self.error_log.strip():
            lines.append("error log (tail):\n" + self.error_log.strip()[-_TAIL_CHARS:])
        if not self.ok and self.message_log.strip():
            lines.append("message log (tail):\n" + self.message_log.strip()[-_TAIL_CHARS:])
        return "\n".join(lines)


def _tcp_port_taken(host: str, port: int) -> bool:
    """Whether some process listens on TCP ``host:port`` (our bind fails), without connecting."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _to_int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _read_last_stat_row(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="latin-1") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def _read_text(path: Path) -> str:
    try:
        # newline="": keep SIP's CRLF line ends as they were on the wire.
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class SippProcess:
    """A running SIPp, started by :func:`start_sipp`.

    Attributes:
        scenario: Scenario file name or built-in name.
        local_ip: SIPp's SIP/media address (127.0.0.1).
        local_port: SIPp's SIP UDP port (send our INVITEs here when it is a UAS).
        media_port: SIPp's ``-mp`` RTP port (even; ``+2`` is also bound).
        control_port: SIPp's UDP control port (``-cp``).
        workdir: SIPp's working directory (logs, stat CSV, media files).
        args: Full command line.
        pid: Process id.

    Use as ``async with await start_sipp(...) as uas:`` to stop it on exit.
    """

    def __init__(
        self,
        *,
        scenario: str,
        args: list[str],
        workdir: Path,
        keep_workdir: bool,
        local_port: int,
        media_port: int,
        control_port: int,
        timeout: float,
    ) -> None:
        self.scenario = scenario
        self.args = args
        self.workdir = workdir
        self.local_ip = "127.0.0.1"
        self.local_port = local_port
        self.media_port = media_port
        self.control_port = control_port
        self._keep_workdir = keep_workdir
        self._timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._io_task: asyncio.Task[tuple[bytes, bytes]] | None = None
        self._result: SippResult | None = None
        self._timed_out = False

    async def _start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TERM": "dumb"},
        )
        self._io_task = asyncio.ensure_future(self._proc.communicate())

    @property
    def target(self) -> str:
        """``"127.0.0.1:<local_port>"``: where to send SIP to this SIPp."""
        return f"{self.local_ip}:{self.local_port}"

    async def _wait_listening(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stream = any(a in ("t1", "tn", "l1", "ln") for a in self.args)  # -t: TCP/TLS
        while self.running and loop.time() < deadline:
            if stream and _tcp_port_taken(self.local_ip, self.local_port):
                return
            if await wait_udp_bound(self.local_port, self.local_ip, timeout=0.05):
                return
        # Exited or never bound: leave it to wait() to report why.

    @property
    def pid(self) -> int | None:
        """Process id of this SIPp (None before start)."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the SIPp process has not exited."""
        return self._proc is not None and self._proc.returncode is None

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit on its own; stop it if it overruns.

        Args:
            timeout: Seconds to wait; default: the run's timeout plus a grace period
                (SIPp's own ``-timeout`` should normally end it first).

        Returns:
            The collected result (cached: later calls return the same object).
        """
        if self._result is not None:
            return self._result
        assert self._proc is not None and self._io_task is not None
        limit = self._timeout + _OVERRUN_GRACE_S if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._io_task), limit)
        except TimeoutError:
            self._timed_out = True
            await self._terminate()
        return await self._collect()

    async def stop(self) -> SippResult:
        """Stop SIPp now (SIGTERM, then SIGKILL after a grace period) and collect the result.

        Returns:
            The collected result.
        """
        if self._result is not None:
            return self._result
        await self._terminate()
        return await self._collect()

    async def _terminate(self) -> None:
        proc = self._proc
        assert proc is not None and self._io_task is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._io_task), _STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.wait_for(asyncio.shield(self._io_task), _STOP_GRACE_S)

    async def _collect(self) -> SippResult:
        assert self._proc is not None and self._io_task is not None
        out, err = await self._io_task
        stats = _read_last_stat_row(self.workdir / "stat.csv")
        self._result = SippResult(
            scenario=self.scenario,
            args=self.args,
            returncode=self._proc.returncode,
            successful_calls=_to_int(stats.get("SuccessfulCall(C)")),
            failed_calls=_to_int(stats.get("FailedCall(C)")),
            retransmissions=_to_int(stats.get("Retransmissions(C)")),
            stats=stats,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            error_log=_read_text(self.workdir / "errors.log"),
            message_log=_read_text(self.workdir / "messages.log"),
            timed_out=self._timed_out,
        )
        if not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self._result

    async def __aenter__(self) -> SippProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def start_sipp(
    scenario: str | Path,
    target: str,
    *,
    calls: int | None = 1,
    rate: float | None = None,
    concurrent: int | None = None,
    keys: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    service: str | None = None,
    local_port: int | None = None,
    media_files: Sequence[str | Path] = (),
    trace_msg: bool = True,
    workdir: str | Path | None = None,
) -> SippProcess:
    """Start SIPp in the background on 127.0.0.1 (see :func:`run_sipp` for the arguments).

    Returns once SIPp's SIP port is bound (or it exited, or 5 s passed), so a
    UAS started this way can be called at ``proc.target`` right away.
    ``calls=None`` runs until stopped (or ``timeout``).

    Returns:
        The running :class:`SippProcess`; ``await proc.wait()`` or ``await proc.stop()``.
    """
    sipp = require_binary("sipp")
    if isinstance(scenario, str) and scenario in BUILTIN_SCENARIOS:
        name, selector, declared, needed = scenario, ["-sn", scenario], {}, []
        text = ""
    else:
        path = scenario_path(scenario)
        name, selector = path.name, ["-sf", str(path)]
        declared, needed = scenario_keys(path), scenario_args(path)
        text = path.read_text(encoding="latin-1")

    keep = workdir is not None
    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="sipp-"))
    wd.mkdir(parents=True, exist_ok=True)
    try:
        for f in media_files:
            shutil.copy(f, wd / Path(f).name)
        for stream in _RTP_STREAM_RE.findall(text):
            if stream in ("pause", "resume", "apattern", "vpattern"):
                continue
            target_file = wd / stream
            if target_file.exists():
                continue
            if stream.endswith((".ulaw", ".ul")):
                write_pcmu_file(target_file)
            else:
                raise FileNotFoundError(
                    f"{name} streams {stream!r}: pass it in media_files (only *.ulaw is generated)"
                )

        port = local_port if local_port is not None else free_udp_port()
        media_port = free_udp_port(even=True, span=4)
        control_port = free_udp_port()
        args = [
            sipp,
            *selector,
            *([target] if target else []),
            "-i", "127.0.0.1",
            "-mi", "127.0.0.1",
            "-p", str(port),
            "-mp", str(media_port),
            "-cp", str(control_port),
            "-nostdin",
            "-trace_stat", "-stf", "stat.csv", "-fd", "1",
            "-trace_err", "-error_file", "errors.log",
            "-timeout", f"{max(1, round(timeout * 1000))}ms", "-timeout_error",
        ]  # fmt: skip
        if trace_msg:
            args += ["-trace_msg", "-message_file", "messages.log"]
        if calls is not None:
            args += ["-m", str(calls)]
        if rate is not None:
            args += ["-r", f"{rate:g}", "-rp", "1000"]
        if concurrent is not None:
            args += ["-l", str(concurrent)]
        if service is not None:
            args += ["-s", service]
        for key, value in {**declared, **(keys or {})}.items():
            args += ["-key", key, str(value)]
        args += needed + list(extra_args)

        proc = SippProcess(
            scenario=name,
            args=args,
            workdir=wd,
            keep_workdir=keep,
            local_port=port,
            media_port=media_port,
            control_port=control_port,
            timeout=timeout,
        )
        await proc._start()
    except BaseException:
        if not keep:
            shutil.rmtree(wd, ignore_errors=True)
        raise
    try:
        await proc._wait_listening(_READY_TIMEOUT_S)
    except BaseException:
        await proc.stop()
        raise
    return proc


async def run_sipp(
    scenario: str | Path,
    target: str,
    *,
    calls: int = 1,
    rate: float | None = None,
    concurrent: int | None = None,
    keys: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    service: str | None = None,
    local_port: int | None = None,
    media_files: Sequence[str | Path] = (),
    trace_msg: bool = True,
    workdir: str | Path | None = None,
) -> SippResult:
    """Run a SIPp scenario to completion against ``target``.

    Args:
        scenario: A scenario in ``tests/sipp`` (``"uac_basic"``, ``"uac_basic.xml"``),
            a path, or a SIPp built-in name (``"uas"``, ``"uac"``: run with ``-sn``).
        target: ``"host:port"`` of the server under test; ``""`` for a UAS scenario.
        calls: Stop after this many calls (``-m``).
        rate: Calls per second (``-r`` per ``-rp 1000`` ms); SIPp's default is 10.
        concurrent: Maximum simultaneous calls (``-l``).
        keys: Custom keywords (``-key name value``), over the scenario's declared defaults.
        extra_args: More SIPp arguments, appended last.
        timeout: Seconds for the whole run: SIPp's ``-timeout`` with
            ``-timeout_error`` (a run that hits it fails); we stop the process
            ourselves 5 s later if it is still running.
        service: Request-URI user part (``-s``, the ``[service]`` keyword).
        local_port: SIPp's SIP port; default: a free one.
        media_files: Files copied into SIPp's working directory (``rtp_stream``
            paths are relative to it). Missing ``*.ulaw`` streams are generated
            (1 kHz tone, 10 s, looped by the scenario).
        trace_msg: Log every SIP message (``SippResult.message_log``).
        workdir: Working directory to use and keep; default: a temporary one,
            deleted after the run.

    Returns:
        The :class:`SippResult`; check ``result.ok`` and show ``result.summary()``.

    Raises:
        FileNotFoundError: Unknown scenario, or a streamed media file is missing.
        pytest.skip.Exception: SIPp is not installed.
    """
    proc = await start_sipp(
        scenario,
        target,
        calls=calls,
        rate=rate,
        concurrent=concurrent,
        keys=keys,
        extra_args=extra_args,
        timeout=timeout,
        service=service,
        local_port=local_port,
        media_files=media_files,
        trace_msg=trace_msg,
        workdir=workdir,
    )
    try:
        return await proc.wait()
    finally:
        if proc.running:
            await proc.stop()
