"""Drive linphonec (Debian package linphone-cli) through a pseudo-terminal.

linphonec wants a terminal, so :class:`Linphone` runs it on a pty and reads
what it prints: commands are lines typed at its ``linphonec>`` prompt, and
states are recognised in its output (``Call 1 ... connected.``). What it
needs on this kind of machine (see shared PEERS.md):

- a private HOME with ``~/.local/share/linphone/`` (without it linphonec
  stays in ``LinphoneGlobalStartup`` with SIP port 0);
- a config file of its own, written fresh each run (linphonec rewrites it);
- ``[rtp] bind_address=127.0.0.1`` and, since it writes its interfaces'
  address into SDP, a network namespace with only ``lo`` (pass ``netns``,
  or start it from a thread inside one: see tests/helpers/netns.py);
- headless audio: ``soundcard use files``, then ``play in.wav`` (the
  microphone) and ``record out.wav`` (what it hears), once per call.

DTMF: a digit alone on a line; RFC 4733 by default, SIP INFO with
``use_info=True``.

Example::

    async with Linphone(tmp_path / "lin", netns=ns.name) as phone:
        call = await phone.call(server_uri)
        await phone.wait_media(call)
        await phone.play(wav)
        await phone.record(tmp_path / "heard.wav")
        await phone.send_dtmf("12#")
        await phone.terminate()
        await phone.wait_ended(call)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.helpers.peers import free_udp_port, require_binary

_PROMPT = "linphonec> "
_QUIT_GRACE_S = 3.0
_MAX_OUTPUT = 4 << 20
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LinphoneError(RuntimeError):
    """linphonec failed to start, or awaited output did not appear."""


class Linphone:
    """One linphonec process on a pty.

    Attributes:
        name: SIP user part (``sip:<name>@127.0.0.1:<sip_port>``) and label.
        directory: Working directory: HOME, ``linphonerc``, ``linphone.log``.
        sip_port: UDP port it listens on for SIP.
        rtp_port: Its audio RTP port.
        output: Everything it printed so far (ANSI codes and CR removed).
        pid: Process id while running.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        name: str = "linphone",
        netns: str | None = None,
        sip_port: int | None = None,
        rtp_port: int | None = None,
        use_info: bool = False,
        codecs: Sequence[str] | None = None,
        auto_answer: bool = False,
        log_level: int = 4,
        extra_config: Mapping[str, Mapping[str, str]] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        """Prepare (not start) a linphonec instance.

        Args:
            directory: Directory for HOME, config and log (created).
            name: SIP user part and label.
            netns: Run inside this network namespace (``ip netns exec``).
            sip_port: UDP SIP port; default a free one (probed in the test's
                namespace: inside a fresh namespace every port is free anyway).
            rtp_port: Audio RTP port; default a free even one.
            use_info: Send DTMF as SIP INFO instead of RFC 4733.
            codecs: Audio codec mime names to enable ("PCMU", "PCMA", "opus",
                ...), the rest disabled; None: linphone's defaults.
            auto_answer: Answer incoming calls (``-a``).
            log_level: linphonec ``-d`` level written to ``linphone.log`` (6: all,
                SIP messages included).
            extra_config: More config, section -> key -> value.
            start_timeout: Seconds to wait for its first prompt.
        """
        self.name = name
        self.directory = Path(directory)
        self.netns = netns
        self.sip_port = sip_port or free_udp_port()
        self.rtp_port = rtp_port or free_udp_port(even=True)
        self.use_info = use_info
        self.codecs = list(codecs) if codecs else None
        self.auto_answer = auto_answer
        self.log_level = log_level
        self.extra_config = {k: dict(v) for k, v in (extra_config or {}).items()}
        self.start_timeout = start_timeout
        self.output = ""
        self._cursor = 0
        self._raw = bytearray()
        self._master: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cond: asyncio.Condition | None = None
        self._eof = False

    @property
    def pid(self) -> int | None:
        """Process id (None before start)."""
        return self._proc.pid if self._proc else None

    @property
    def uri(self) -> str:
        """SIP URI to call this instance at."""
        return f"sip:{self.name}@127.0.0.1:{self.sip_port}"

    @property
    def log_path(self) -> Path:
        """linphonec's log file (``-l``)."""
        return self.directory / "linphone.log"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its terminal output and its log file, for assertion messages."""
        log = ""
        with contextlib.suppress(OSError):
            log = self.log_path.read_text(errors="replace")[-chars:]
        return f"--- output ---\n{self.output[-chars:]}\n--- log ---\n{log}"

    # -- configuration -------------------------------------------------------------
    def _write_config(self) -> Path:
        home = self.directory / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, str]] = {
            "sip": {
                "sip_port": str(self.sip_port),
                "sip_tcp_port": "0",
                "sip_tls_port": "0",
                "use_ipv6": "0",
                "use_info": "1" if self.use_info else "0",
                "contact": f"sip:{self.name}@127.0.0.1",
                "guess_hostname": "0",
                "inc_timeout": "60",
            },
            "rtp": {
                "audio_rtp_port": str(self.rtp_port),
                "bind_address": "127.0.0.1",
                "nortp_timeout": "30",
            },
            "sound": {"echocancellation": "0", "remote_ring": "", "local_ring": ""},
            "video": {"capture": "0", "display": "0", "automatically_initiate": "0"},
            "net": {"firewall_policy": "0", "mtu": "1300"},
        }
        if self.codecs is not None:
            for i, mime in enumerate(
                ["opus", "speex", "PCMU", "PCMA", "GSM", "G722", "G729", "iLBC", "L16"]
            ):
                sections[f"audio_codec_{i}"] = {
                    "mime": mime,
                    "rate": {"opus": "48000", "speex": "8000", "G722": "8000"}.get(mime, "8000"),
                    "channels": "2" if mime == "opus" else "1",
                    "enabled": "1" if mime in self.codecs else "0",
                }
        for section, values in self.extra_config.items():
            sections.setdefault(section, {}).update(values)
        text = "".join(
            f"[{section}]\n" + "".join(f"{k}={v}\n" for k, v in values.items()) + "\n"
            for section, values in sections.items()
        )
        path = self.directory / "linphonerc"
        path.write_text(text)
        return path

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Write a fresh config, start linphonec on a pty, switch audio to files.

        Raises:
            LinphoneError: It exited or printed no prompt within ``start_timeout``.
            pytest.skip.Exception: linphonec is not installed.
        """
        binary = require_binary("linphonec")
        self.directory.mkdir(parents=True, exist_ok=True)
        rc = self._write_config()
        self._cond = asyncio.Condition()
        master, slave = pty.openpty()
        self._master = master
        env = {
            **os.environ,
            "HOME": str((self.directory / "home").resolve()),
            "TERM": "dumb",
            "LANG": "C",
        }
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        args = [*prefix, binary, "-c", str(rc), "-d", str(self.log_level), "-l", str(self.log_path)]
        if self.auto_answer:
            args.append("-a")
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.directory,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        try:
            await self.expect(re.escape(_PROMPT), timeout=self.start_timeout, since=0)
            await self.command("soundcard use files", expect="Using wav files")
        except BaseException:
            await self.close()
            raise

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            self._eof = True
        else:
            self._raw += data
            text = _ANSI.sub("", data.decode("utf-8", errors="replace")).replace("\r", "")
            if len(self.output) < _MAX_OUTPUT:
                self.output += text
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()

    async def close(self) -> None:
        """``quit``, then SIGKILL its process group by PID if it lingers; idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None and self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"quit\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _QUIT_GRACE_S
            while proc.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: start_new_session
                await asyncio.to_thread(proc.wait, _QUIT_GRACE_S)
        if self._master is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None

    async def __aenter__(self) -> Linphone:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- output --------------------------------------------------------------------
    async def expect(
        self, pattern: str, timeout: float = 10.0, *, since: int | None = None
    ) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the output after the previous match.

        Events (states) are matched in order: each match moves a cursor past
        it, so waiting twice for the same text finds its next occurrence.

        Args:
            pattern: Regular expression searched in the output since the cursor.
            timeout: Seconds to wait.
            since: Search from this offset of :attr:`output` instead, and leave
                the cursor where it is (used for a command's own reply).

        Returns:
            The match.

        Raises:
            LinphoneError: No match in time, or linphonec exited first.
        """
        assert self._cond is not None
        regex = re.compile(pattern)

        async def waiter() -> re.Match[str]:
            assert self._cond is not None
            async with self._cond:
                while True:
                    m = regex.search(self.output, self._cursor if since is None else since)
                    if m:
                        if since is None:
                            self._cursor = m.end()
                        return m
                    if self._eof:
                        raise LinphoneError(f"{self.name}: exited waiting for {pattern!r}")
                    await self._cond.wait()

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise LinphoneError(
                f"{self.name}: no {pattern!r} within {timeout} s\n{self.log_tail()}"
            ) from None

    async def command(self, line: str, *, expect: str | None = None, timeout: float = 5.0) -> str:
        """Type one command line; wait for ``expect`` (a regex) or the next prompt.

        The reply is searched in the output that follows the command; the
        event cursor of :meth:`expect` does not move.

        Returns:
            The matched text.

        Raises:
            LinphoneError: Not running, or the expected output did not come.
        """
        if self._master is None or self._proc is None or self._proc.poll() is not None:
            raise LinphoneError(f"{self.name}: not running\n{self.log_tail()}")
        start = len(self.output)
        os.write(self._master, line.encode() + b"\n")
        m = await self.expect(expect or re.escape(_PROMPT), timeout, since=start)
        return m.group(0)

    # -- calls ---------------------------------------------------------------------
    async def call(self, uri: str, timeout: float = 5.0) -> int:
        """Dial ``uri``; return linphonec's call id once it says the call is in progress."""
        m = await self.command(f"call {uri}", expect=r"assigned id (\d+)", timeout=timeout)
        return int(re.search(r"\d+", m).group(0))

    async def wait_incoming(self, timeout: float = 10.0) -> int:
        """Wait for an incoming call; return its id."""
        m = await self.expect(r"Receiving new incoming call from \S+, assigned id (\d+)", timeout)
        return int(m.group(1))

    async def answer(self, call: int | None = None) -> None:
        """Answer an incoming call (the only one, or ``call``)."""
        await self.command("answer" if call is None else f"answer {call}")

    async def wait_media(self, call: int, timeout: float = 10.0) -> None:
        """Wait for "Media streams established ... for call N"."""
        await self.expect(rf"Media streams established with \S+ for call {call}\b", timeout)

    async def wait_ended(self, call: int, timeout: float = 10.0) -> str:
        """Wait for "Call N with ... ended (reason)."; return the reason."""
        m = await self.expect(rf"Call {call} with \S+ ended \(([^)]*)\)", timeout)
        return m.group(1)

    async def play(self, wav: str | Path) -> None:
        """Use ``wav`` (8 kHz mono 16-bit) as the microphone of the current call."""
        await self.command(f"play {Path(wav).resolve()}")

    async def record(self, wav: str | Path) -> None:
        """Record what the current call hears to ``wav`` (a new file: it appends otherwise)."""
        path = Path(wav).resolve()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await self.command(f"record {path}")

    async def send_dtmf(self, digits: str, gap_s: float = 0.4) -> None:
        """Send each digit (a line of its own) with ``gap_s`` between presses."""
        for digit in digits:
            await self.command(digit)
            await asyncio.sleep(gap_s)

    async def pause(self, call: int, timeout: float = 5.0) -> None:
        """Hold the call (re-INVITE) and wait until linphonec says it is paused."""
        await self.command("pause", expect=r"Pausing call")
        await self.expect(rf"Call {call} with \S+ is now paused", timeout)

    async def resume(self, call: int, timeout: float = 5.0) -> None:
        """Resume the held call and wait until its media is established again."""
        await self.command("resume", expect=rf"[Rr]esum\w* call {call}\b|resumed")
        await self.wait_media(call, timeout)

    async def terminate(self) -> None:
        """Hang up the current call."""
        await self.command("terminate")
