"""Drive a PJSIP softphone (the pjsua2-python wheel) from asyncio tests.

:class:`Pjsua` starts ``tests/helpers/pjsua_child.py`` in a child Python
process (optionally inside a network namespace) and talks to it in JSON
lines: commands go to its stdin, replies and events come back on its stdout.
pjsua2's threads and event loop stay in that process, away from the test's
asyncio loop. PJSIP runs on the null sound device; each call plays a WAV as
its microphone and records what it heard to a WAV (the conference bridge's
rate, 16 kHz by default; read the rate from the file).

Events (dicts with ``"event"``): ``incoming_call``, ``call_state`` (``state``
is CALLING/EARLY/CONNECTING/CONFIRMED/DISCONNECTED, ``code``, ``reason``),
``media_state`` (``status`` active/local_hold/remote_hold, ``codec``),
``dtmf`` (``digit``, ``method`` rfc4733/info), ``tsx`` (a non-INVITE
transaction's final status: ``method``, ``role``, ``code``),
``transfer_status``, ``transfer_request``, ``reg_state`` (``code``,
``expires``), ``recording_closed`` (the WAV is complete), ``error``.

Example::

    async with Pjsua(tmp_path / "pj") as pj:
        await pj.listen()
        call = await pj.call(f"sip:bot@127.0.0.1:{port}", play=wav, record=out)
        await pj.wait_call_state(call, "CONFIRMED")
        await pj.send_dtmf(call, "123")
        await pj.hangup(call)
        await pj.wait_event("recording_closed", call=call)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).with_name("pjsua_child.py")
_QUIT_GRACE_S = 3.0
_MAX_LINE = 1 << 20


class PjsuaError(RuntimeError):
    """The PJSIP child failed to start, refused a command, or an awaited event did not come."""


def require_pjsua2() -> None:
    """Skip the calling test when the pjsua2 module (PyPI ``pjsua2-python``) is missing."""
    if importlib.util.find_spec("pjsua2") is None:
        pytest.skip("pjsua2 not installed (uv sync --extra test: pjsua2-python)")


class Pjsua:
    """One PJSIP endpoint in a child process.

    Attributes:
        name: SIP user part of the default listener account and label in errors.
        directory: Working directory (PJSIP log ``pjsip.log``, child's ``stderr.log``).
        bind: Address the SIP and RTP sockets bind to.
        ports: SIP port per transport, e.g. ``{"udp": 40123}``, once started.
        events: Every event received so far, in order.
        codecs: The codecs left enabled (PJSIP ids such as ``"PCMU/8000"``).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        name: str = "pjsua",
        bind: str = "127.0.0.1",
        public: str | None = None,
        transports: Sequence[str] = ("udp",),
        sip_port: int = 0,
        codecs: Sequence[str] | None = None,
        clock_rate: int = 16000,
        log_level: int = 5,
        report_messages: bool = False,
        tls: dict[str, Any] | None = None,
        netns: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        """Prepare (not start) a PJSIP endpoint.

        Args:
            directory: Directory for logs (created).
            name: User part of the listener account and label.
            bind: Local address for SIP and RTP (127.0.0.1; inside a namespace,
                one of its addresses).
            public: Address written into Contact and SDP; default ``bind``.
            transports: SIP transports to open: any of "udp", "tcp", "tls".
            sip_port: SIP port for every transport; 0: free ones.
            codecs: PJSIP codec ids to enable, in preference order (e.g.
                ``["PCMU/8000", "telephone-event/8000"]`` is not needed:
                telephone-event is always offered); None: PJSIP's defaults.
            clock_rate: Conference bridge (and recording) rate, Hz.
            log_level: PJSIP log level written to ``pjsip.log`` (5 shows every
                SIP message).
            report_messages: Include received SIP messages (``msg``) in
                ``call_state`` and ``tsx`` events.
            tls: For a "tls" transport: ``cert``, ``key``, ``ca`` file paths,
                ``verify_server``.
            netns: Run the child inside this network namespace (``ip netns exec``).
            start_timeout: Seconds allowed for start-up.
        """
        self.name = name
        self.directory = Path(directory)
        self.bind = bind
        self.public = public or bind
        self.transports = list(transports)
        self.sip_port = sip_port
        self.codecs = list(codecs) if codecs else None
        self.clock_rate = clock_rate
        self.log_level = log_level
        self.report_messages = report_messages
        self.tls = tls
        self.netns = netns
        self.start_timeout = start_timeout
        self.ports: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self.enabled_codecs: list[str] = []
        self._consumed: set[int] = set()
        self._cond: asyncio.Condition | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: Any = None
        self.listener: int | None = None

    # -- lifecycle -----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id of the child (None before start)."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        """PJSIP's log file."""
        return self.directory / "pjsip.log"

    @property
    def log(self) -> str:
        """PJSIP's log so far (SIP messages at log level 5) plus the child's stderr."""
        parts = []
        for path in (self.log_path, self.directory / "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of :attr:`log`, for assertion messages."""
        return self.log[-chars:]

    @property
    def uri(self) -> str:
        """``sip:<name>@<public>:<udp port>``: where the listener account is reached."""
        kind = self.transports[0]
        suffix = "" if kind == "udp" else f";transport={kind}"
        return f"sip:{self.name}@{self.public}:{self.ports[kind]}{suffix}"

    async def start(self) -> None:
        """Start the child and initialise PJSIP (transports bound, codecs set).

        Raises:
            PjsuaError: The child exited or did not initialise in time.
            pytest.skip.Exception: pjsua2 is not installed.
        """
        require_pjsua2()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cond = asyncio.Condition()
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self._stderr = open(self.directory / "stderr.log", "wb")  # noqa: SIM115
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *prefix, sys.executable, str(CHILD),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=self._stderr,
                cwd=self.directory,
                limit=_MAX_LINE,
            )  # fmt: skip
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.ensure_future(self._read())
        init: dict[str, Any] = {
            "bind": self.bind,
            "public": self.public,
            "transports": self.transports,
            "sip_port": self.sip_port,
            "clock_rate": self.clock_rate,
            "log_file": str(self.log_path.resolve()),
            "log_level": self.log_level,
            "report_messages": self.report_messages,
        }
        if self.codecs:
            init["codecs"] = self.codecs
        if self.tls:
            init["tls"] = self.tls
        try:
            result = await self.command("init", timeout=self.start_timeout, **init)
        except BaseException:
            await self.close()
            raise
        self.ports = {k: int(v) for k, v in result["ports"].items()}
        self.enabled_codecs = result["codecs"]

    async def close(self) -> None:
        """Quit the child (hangs up its calls), kill it by PID if it lingers; idempotent."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("quit", timeout=_QUIT_GRACE_S)
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), _QUIT_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), _QUIT_GRACE_S)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2.0)
            self._reader.cancel()
            self._reader = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def __aenter__(self) -> Pjsua:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "event" in msg:
                    assert self._cond is not None
                    async with self._cond:
                        self.events.append(msg)
                        self._cond.notify_all()
                else:
                    fut = self._pending.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (ValueError, ConnectionError):  # a line over the limit, a closed pipe
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(PjsuaError(f"{self.name}: child exited\n{self.log_tail()}"))
            if self._cond is not None:
                async with self._cond:
                    self._cond.notify_all()

    # -- commands ------------------------------------------------------------------
    async def command(self, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
        """Send one command to the child and return its result.

        Args:
            cmd: Command name (see pjsua_child.py's ``_cmd_*`` methods).
            timeout: Seconds to wait for the reply.
            **args: The command's arguments (JSON-serializable).

        Returns:
            The ``result`` of the reply.

        Raises:
            PjsuaError: The child is gone, did not reply in time, or failed.
        """
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise PjsuaError(f"{self.name}: not running\n{self.log_tail()}")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        proc.stdin.write((json.dumps({"id": rid, "cmd": cmd, **args}) + "\n").encode())
        try:
            await proc.stdin.drain()
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise PjsuaError(f"{self.name}: no reply to {cmd} in {timeout} s") from None
        except ConnectionError as exc:
            raise PjsuaError(f"{self.name}: child gone ({exc})\n{self.log_tail()}") from None
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise PjsuaError(f"{self.name}: {cmd} failed: {reply.get('error')}")
        return reply.get("result")

    async def add_account(self, id_uri: str, **opts: Any) -> int:
        """Add an account (see ``_cmd_account`` in pjsua_child.py for ``opts``); return its id."""
        result = await self.command("account", id_uri=id_uri, **opts)
        return int(result["acc"])

    async def listen(
        self,
        *,
        auto_answer: int = 200,
        answer_delay_s: float = 0.0,
        play: str | Path | None = None,
        record: str | Path | None = None,
        **opts: Any,
    ) -> int:
        """Add a plain listener account (no registration) that answers incoming calls.

        Args:
            auto_answer: Final status sent after 180 Ringing (0: ring only; answer
                with :meth:`answer`).
            answer_delay_s: Seconds between 180 and the final answer.
            play: WAV played to each incoming call.
            record: WAV path for what each incoming call heard; ``{n}`` is
                replaced by a counter (1, 2, ...).
            **opts: More account options (``prack``, ``timer``, ``srtp``, ...).

        Returns:
            The account id (the listener is also :attr:`listener`).
        """
        kind = self.transports[0]
        acc = await self.add_account(
            f"sip:{self.name}@{self.public}:{self.ports[kind]}",
            auto_answer=auto_answer,
            answer_delay_s=answer_delay_s,
            play=str(play) if play else None,
            record=str(record) if record else None,
            **opts,
        )
        self.listener = acc
        return acc

    async def register(
        self,
        registrar: str,
        username: str,
        password: str,
        *,
        domain: str | None = None,
        timeout: float = 5.0,
        **opts: Any,
    ) -> int:
        """Add an account that REGISTERs with Digest credentials; wait for the 2xx.

        Args:
            registrar: Registrar URI (``sip:127.0.0.1:5060``).
            username: User part of the address-of-record and the Digest user.
            password: Digest password.
            domain: Host part of the address-of-record; default the registrar's host.
            timeout: Seconds to wait for the registration to succeed.
            **opts: More account options (``auto_answer``, ``play``, ``record``, ...).

        Returns:
            The account id.

        Raises:
            PjsuaError: No successful registration within ``timeout``.
        """
        host = domain or registrar.split(":", 1)[1].split(";", 1)[0].rsplit(":", 1)[0]
        acc = await self.add_account(
            f"sip:{username}@{host}",
            registrar=registrar,
            username=username,
            password=password,
            **opts,
        )
        ev = await self.wait_event("reg_state", timeout=timeout, acc=acc)
        if ev["code"] // 100 != 2:
            raise PjsuaError(f"{self.name}: REGISTER got {ev['code']} {ev['reason']}")
        return acc

    async def remove_account(self, acc: int) -> None:
        """Delete an account (PJSIP unregisters it first if it is registered)."""
        await self.command("remove_account", acc=acc)
        if self.listener == acc:
            self.listener = None

    async def call(
        self,
        uri: str,
        *,
        acc: int | None = None,
        play: str | Path | None = None,
        record: str | Path | None = None,
        loop_play: bool = False,
        headers: Sequence[tuple[str, str]] = (),
    ) -> int:
        """Place a call to ``uri``; return the call's number (used by the other methods)."""
        if acc is None:
            acc = self.listener
            if acc is None:
                acc = await self.listen(auto_answer=0)
        result = await self.command(
            "call",
            uri=uri,
            acc=acc,
            play=str(play) if play else None,
            record=str(record) if record else None,
            loop_play=loop_play,
            headers=[list(h) for h in headers],
        )
        return int(result["call"])

    async def answer(self, call: int, code: int = 200) -> None:
        """Answer an incoming call with ``code``."""
        await self.command("answer", call=call, code=code)

    async def hangup(self, call: int, code: int = 603) -> None:
        """End a call: CANCEL/reject (``code``) before answer, BYE after."""
        await self.command("hangup", call=call, code=code)

    async def send_dtmf(
        self, call: int, digits: str, *, method: str = "rfc4733", duration_ms: int = 160
    ) -> None:
        """Send DTMF: ``method`` "rfc4733" (RTP events) or "info" (SIP INFO dtmf-relay)."""
        await self.command("dtmf", call=call, digits=digits, method=method, duration_ms=duration_ms)

    async def hold(self, call: int) -> None:
        """Put the call on hold (re-INVITE, a=sendonly)."""
        await self.command("hold", call=call)

    async def resume(self, call: int) -> None:
        """Take the call off hold (re-INVITE, a=sendrecv)."""
        await self.command("resume", call=call)

    async def transfer(self, call: int, dest: str) -> None:
        """Send REFER asking the far end to call ``dest`` (RFC 3515)."""
        await self.command("transfer", call=call, dest=dest)

    async def call_info(self, call: int) -> dict[str, Any]:
        """The call's state, last code, remote contact and media status."""
        return await self.command("info", call=call)

    # -- events --------------------------------------------------------------------
    async def wait_event(
        self,
        kind: str,
        timeout: float = 10.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        **match: Any,
    ) -> dict[str, Any]:
        """Return the first event of ``kind`` matching ``match`` not returned before.

        Events already received count, so waiting after the fact works.

        Args:
            kind: Event name (``call_state``, ``dtmf``, ...).
            timeout: Seconds to wait.
            predicate: Extra filter on the event dict.
            **match: Fields that must be equal (``call=1, state="CONFIRMED"``).

        Returns:
            The event dict.

        Raises:
            PjsuaError: No such event in time, or the child exited.
        """
        assert self._cond is not None

        def find() -> dict[str, Any] | None:
            for i, ev in enumerate(self.events):
                if i in self._consumed or ev.get("event") != kind:
                    continue
                if any(ev.get(k) != v for k, v in match.items()):
                    continue
                if predicate is None or predicate(ev):
                    self._consumed.add(i)
                    return ev
            return None

        async def waiter() -> dict[str, Any]:
            assert self._cond is not None
            async with self._cond:
                while (ev := find()) is None:
                    if self._reader is None or self._reader.done():
                        raise PjsuaError(f"{self.name}: child exited waiting for {kind}")
                    await self._cond.wait()
                return ev

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            seen = [(e.get("event"), e.get("state") or e.get("status")) for e in self.events]
            raise PjsuaError(
                f"{self.name}: no {kind} {match} within {timeout} s; events: {seen}\n"
                f"{self.log_tail()}"
            ) from None

    async def wait_call_state(self, call: int, state: str, timeout: float = 10.0) -> dict:
        """Wait for ``call`` to reach ``state``; fail early if it is DISCONNECTED instead.

        Raises:
            PjsuaError: The call ended first, or the state did not come in time.
        """
        ev = await self.wait_event(
            "call_state",
            timeout,
            predicate=lambda e: e["state"] in (state, "DISCONNECTED"),
            call=call,
        )
        if ev["state"] != state:
            raise PjsuaError(
                f"{self.name}: call {call} ended ({ev['code']} {ev['reason']}) "
                f"before {state}\n{self.log_tail()}"
            )
        return ev

    def digits_received(self, call: int | None = None) -> str:
        """The DTMF digits received so far (on ``call``, or on any call), in order."""
        return "".join(
            e["digit"]
            for e in self.events
            if e.get("event") == "dtmf" and (call is None or e.get("call") == call)
        )
