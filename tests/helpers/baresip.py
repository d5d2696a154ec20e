"""Drive baresip (Debian package baresip-core) as a headless softphone on loopback.

:class:`Baresip` writes a config directory, starts ``baresip -f DIR`` and talks
to it over the ``ctrl_tcp`` module (netstring-framed JSON): commands go out as
``{"command": ..., "params": ..., "token": ...}``, responses (``"response":
true``) and events (``"event": true``, e.g. ``CALL_ESTABLISHED``) come back.

Audio: the ``aufile`` module plays a WAV as the microphone (8 kHz mono 16-bit;
baresip hangs up when it ends, so pad it to the call length with
:func:`make_wav_for_baresip`), and ``sndfile`` records, per call, what baresip
heard (``dump-<time>-dec.wav``) and what it sent (``-enc.wav``). No module that
needs a sound card is loaded.

Example::

    async with Baresip(tmp_path / "alice", wav=wav) as alice:
        await alice.dial(f"sip:bot@127.0.0.1:{server_port}")
        await alice.wait_event("CALL_ESTABLISHED", timeout=5)
        await alice.send_dtmf("12#")
        await alice.hangup()
        await alice.wait_event("CALL_CLOSED", timeout=5)
        heard = alice.recording_received()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.audio import read_wav, tone, write_silence_padded_wav
from tests.helpers.peers import free_tcp_port, free_udp_port, require_binary

MODULE_PATH = "/usr/lib/baresip/modules"
_MAX_NETSTRING = 1 << 20
_QUIT_GRACE_S = 3.0


def require_module(name: str) -> Path:
    """Return the path of a baresip module (``g722``, ``opus``...), or skip the test.

    Raises:
        pytest.skip.Exception: baresip or the module is not installed.
    """
    require_binary("baresip")
    path = Path(MODULE_PATH) / (name if name.endswith(".so") else f"{name}.so")
    if not path.exists():
        pytest.skip(f"baresip module {path.name} not installed in {MODULE_PATH}")
    return path


class BaresipError(RuntimeError):
    """baresip failed to start, refused a command, or an awaited event did not come."""


def make_wav_for_baresip(
    path: str | Path,
    *,
    freq_hz: float | None = None,
    source: np.ndarray | str | Path | None = None,
    call_seconds: float = 10.0,
    tone_seconds: float | None = None,
    lead_s: float = 0.0,
    amplitude: float = 0.5,
    rate: int = 8000,
) -> Path:
    """Write a WAV that baresip's ``aufile`` can play for a whole call.

    The file is 8 kHz mono 16-bit, holds a tone (``freq_hz``) or ``source``
    after ``lead_s`` of silence, and is padded with silence to ``call_seconds``
    so that baresip does not hang up early (it hangs up when the file ends).

    Args:
        path: Output file.
        freq_hz: Tone frequency, Hz (used when ``source`` is None).
        source: 8 kHz int16 samples or a WAV file at 8 kHz.
        call_seconds: Total length of the file, s.
        tone_seconds: Tone duration, s; default: the rest of the call.
        lead_s: Silence before the sound, s.
        amplitude: Tone amplitude as a fraction of full scale.
        rate: Sample rate, Hz (16000 for a wideband source: set baresip's
            ``ausrc_srate`` to match).

    Returns:
        The path written.

    Raises:
        ValueError: Neither ``freq_hz`` nor ``source`` was given.
    """
    if source is None:
        if freq_hz is None:
            raise ValueError("make_wav_for_baresip needs freq_hz or source")
        seconds = tone_seconds if tone_seconds is not None else max(call_seconds - lead_s, 0.0)
        source = tone(freq_hz, seconds, rate, amplitude)
    return write_silence_padded_wav(path, source, rate=rate, lead_s=lead_s, total_s=call_seconds)


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class Baresip:
    """One headless baresip process, controlled over ctrl_tcp.

    Attributes:
        name: Label used in errors and as the SIP user.
        directory: Working directory (config in ``config/``, recordings in ``sound/``).
        sip_port: UDP port baresip listens on for SIP (127.0.0.1).
        ctrl_port: TCP port of the ctrl_tcp module (127.0.0.1).
        rtp_ports: ``(first, last)`` RTP port range given to baresip.
        uri: SIP URI to call this instance at, ``sip:<name>@127.0.0.1:<sip_port>``.
        events: Every event received so far (decoded JSON dicts), in order.
        pid: Process id while running.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        wav: str | Path | None = None,
        answer: bool = False,
        name: str = "baresip",
        extra_config: Mapping[str, str] | None = None,
        start_timeout: float = 10.0,
        extra_modules: Sequence[str] = (),
        audio_codecs: str | None = None,
        media_encryption: str | None = None,
    ) -> None:
        """Prepare (not start) a baresip instance.

        Args:
            directory: Directory for config, logs and recordings (created).
            wav: WAV played as the microphone (8 kHz mono 16-bit); None: silence
                (baresip's ``ausine``-free null source is not available, so a
                60 s silent file is generated).
            answer: Answer incoming calls automatically (``answermode=auto``).
            name: SIP user part and label.
            extra_config: More ``config`` lines (name -> value), overriding ours.
            start_timeout: Seconds to wait for ctrl_tcp to accept a connection.
            extra_modules: More modules to load before ``g711`` (e.g. ``"g722"``,
                ``"opus"``: codecs are offered in load order); see
                :func:`require_module`.
            audio_codecs: Restrict the account's codecs, in order
                (``;audio_codecs=g722,pcmu``), or None for all loaded ones.
            media_encryption: The account's ``;mediaenc=`` (``"srtp"``: SDES
                best effort on RTP/AVP, ``"srtp-mand"``: RTP/SAVP only,
                ``"srtp-mandf"``: RTP/SAVPF); loads the ``srtp`` module (see
                :func:`require_module`). None: plain RTP.
        """
        self.name = name
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_dir = self.directory / "config"
        self.snd_path = self.directory / "sound"
        self._wav = Path(wav) if wav is not None else None
        self._answer = answer
        self._extra = dict(extra_config or {})
        self._start_timeout = start_timeout
        self._extra_modules = [m if m.endswith(".so") else f"{m}.so" for m in extra_modules]
        self._audio_codecs = audio_codecs
        self._media_encryption = media_encryption
        if media_encryption is not None and media_encryption.startswith("srtp"):
            self._extra_modules.append("srtp.so")
        self.sip_port = 0
        self.ctrl_port = 0
        self.rtp_ports = (0, 0)
        self.events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._event_cond: asyncio.Condition | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tokens = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ctrl_task: asyncio.Task[None] | None = None
        self._log_task: asyncio.Task[None] | None = None
        self._log = bytearray()

    # -- configuration -------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """SIP URI at which this instance can be called."""
        return f"sip:{self.name}@127.0.0.1:{self.sip_port}"

    @property
    def pid(self) -> int | None:
        """Process id (None when not started)."""
        return self._proc.pid if self._proc else None

    @property
    def log(self) -> str:
        """baresip's console output (stdout and stderr) so far."""
        return self._log.decode("utf-8", errors="replace")

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.snd_path.mkdir(parents=True, exist_ok=True)
        wav = self._wav
        if wav is None:
            wav = make_wav_for_baresip(
                self.directory / "silence.wav", source=np.zeros(0, np.int16), call_seconds=60.0
            )
        self.sip_port = free_udp_port()
        self.ctrl_port = free_tcp_port()
        first = free_udp_port(even=True, span=4)
        self.rtp_ports = (first, first + 3)
        config = {
            "poll_method": "epoll",
            "sip_listen": f"127.0.0.1:{self.sip_port}",
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_source": f"aufile,{wav.resolve()}",
            "audio_player": "aufile,/dev/null",
            "audio_alert": "aufile,/dev/null",
            "ausrc_srate": "8000",
            "auplay_srate": "8000",
            "ausrc_channels": "1",
            "auplay_channels": "1",
            "audio_level": "no",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "auenc_format": "s16",
            "audec_format": "s16",
            "audio_buffer": "20-160",
            "rtp_tos": "0",
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "1-10",
            "rtp_stats": "no",
            "net_interface": "127.0.0.1",
            "module_path": MODULE_PATH,
            "ctrl_tcp_listen": f"127.0.0.1:{self.ctrl_port}",
            "snd_path": str(self.snd_path.resolve()),
            "ringback_disabled": "yes",
            "menu_bell": "no",
            "statmode_default": "off",
        }
        config.update(self._extra)
        lines = [f"{k}\t{v}" for k, v in config.items()]
        modules = [*self._extra_modules, "g711.so", "aufile.so", "sndfile.so"]
        lines += [f"module\t{m}" for m in dict.fromkeys(modules)]
        lines += ["module_tmp\taccount.so"]
        lines += [f"module_app\t{m}" for m in ("menu.so", "ctrl_tcp.so")]
        (self.config_dir / "config").write_text("\n".join(lines) + "\n")
        params = ";regint=0" + (";answermode=auto" if self._answer else ";answermode=manual")
        if self._audio_codecs is not None:
            params += f";audio_codecs={self._audio_codecs}"
        if self._media_encryption is not None:
            params += f";mediaenc={self._media_encryption}"
        account = f"<sip:{self.name}@127.0.0.1:{self.sip_port}>{params}"
        (self.config_dir / "accounts").write_text(account + "\n")
        (self.config_dir / "contacts").write_text("")

    # -- process lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Write the config, start baresip and connect to ctrl_tcp.

        Raises:
            BaresipError: baresip exited or ctrl_tcp did not accept within ``start_timeout``.
            pytest.skip.Exception: baresip is not installed.
        """
        binary = require_binary("baresip")
        self._write_config()
        self._event_cond = asyncio.Condition()
        self._proc = await asyncio.create_subprocess_exec(
            binary, "-f", str(self.config_dir),
            cwd=self.directory,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._log_task = asyncio.ensure_future(self._pump_log())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            if self._proc.returncode is not None:
                raise BaresipError(
                    f"{self.name}: baresip exited ({self._proc.returncode}):\n{self.log}"
                )
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                break
            except OSError:
                if loop.time() > deadline:
                    await self.close()
                    raise BaresipError(
                        f"{self.name}: ctrl_tcp on port {self.ctrl_port} did not "
                        f"accept in {self._start_timeout} s:\n{self.log}"
                    ) from None
                await asyncio.sleep(0.05)
        self._ctrl_task = asyncio.ensure_future(self._read_ctrl())

    async def _pump_log(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while chunk := await self._proc.stdout.read(4096):
            self._log += chunk

    async def _read_ctrl(self) -> None:
        assert self._reader is not None
        try:
            while True:
                length = await self._reader.readuntil(b":")
                size = int(length[:-1])
                if size > _MAX_NETSTRING:
                    raise BaresipError(f"{self.name}: netstring of {size} bytes")
                payload = await self._reader.readexactly(size + 1)
                if payload[-1:] != b",":
                    raise BaresipError(f"{self.name}: netstring not ended by ','")
                await self._dispatch(json.loads(payload[:-1]))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(BaresipError(f"{self.name}: ctrl_tcp connection closed"))
            if self._event_cond is not None:
                async with self._event_cond:
                    self._event_cond.notify_all()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("response"):
            fut = self._pending.pop(str(msg.get("token", "")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif msg.get("event"):
            assert self._event_cond is not None
            async with self._event_cond:
                self.events.append(msg)
                self._event_cond.notify_all()

    async def close(self) -> None:
        """Quit baresip (``quit`` command), kill it by its PID if it lingers; idempotent."""
        proc = self._proc
        if proc is not None and proc.returncode is None and self._writer is not None:
            with contextlib.suppress(Exception):
                await self.command("quit", timeout=1.0)
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), _QUIT_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), _QUIT_GRACE_S)
            if proc.stdin is not None:
                proc.stdin.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None
        for task in (self._ctrl_task, self._log_task):
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 2.0)
                task.cancel()

    async def __aenter__(self) -> Baresip:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- commands ------------------------------------------------------------------------

    async def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        """Send one ctrl_tcp command and wait for its response.

        Args:
            command: Long command name (``dial``, ``hangup``, ``sndcode``, ``quit``, ...).
            params: Its parameter string.
            timeout: Seconds to wait for the response.

        Returns:
            The response dict (``ok``, ``data``, ``token``).

        Raises:
            BaresipError: Not connected, no response in time, or ``ok`` is false.
        """
        if self._writer is None:
            raise BaresipError(f"{self.name}: not connected")
        token = str(next(self._tokens))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        body = json.dumps({"command": command, "params": params, "token": token})
        self._writer.write(_netstring(body.encode()))
        await self._writer.drain()
        try:
            response = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BaresipError(f"{self.name}: no response to {command} {params!r}") from None
        finally:
            self._pending.pop(token, None)
        if not response.get("ok", False):
            raise BaresipError(f"{self.name}: {command} {params!r} failed: {response}")
        return response

    async def dial(self, uri: str) -> dict:
        """Place a call to ``uri`` (``sip:user@127.0.0.1:port``)."""
        return await self.command("dial", uri)

    async def send_dtmf(self, digits: str, pause_s: float = 0.3) -> None:
        """Send DTMF digits one at a time (``sndcode``; RFC 4733 when negotiated).

        Args:
            digits: Keys among ``0-9 * # A-D``.
            pause_s: Pause after each key, s (baresip sends ~180 ms per digit).
        """
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(pause_s)

    async def hangup(self) -> dict:
        """Hang up the current call."""
        return await self.command("hangup")

    async def quit(self) -> None:
        """Ask baresip to exit (the process is awaited by :meth:`close`)."""
        with contextlib.suppress(BaresipError):
            await self.command("quit", timeout=1.0)

    async def wait_event(
        self,
        event_type: str,
        timeout: float = 10.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Return the first event of ``event_type`` not returned by an earlier call.

        Events already received count, so waiting after the fact works.

        Args:
            event_type: e.g. ``CALL_INCOMING``, ``CALL_RINGING``, ``CALL_ESTABLISHED``,
                ``CALL_CLOSED``, ``CALL_DTMF_START``, ``CALL_DTMF_END``.
            timeout: Seconds to wait.
            predicate: Extra filter on the event dict.

        Returns:
            The event dict (``type``, ``class``, ``direction``, ``peeruri``, ``param``, ...).

        Raises:
            BaresipError: No such event within ``timeout`` (message lists the events seen).
        """
        assert self._event_cond is not None

        def find() -> dict[str, Any] | None:
            for i, ev in enumerate(self.events):
                if i in self._consumed or ev.get("type") != event_type:
                    continue
                if predicate is None or predicate(ev):
                    self._consumed.add(i)
                    return ev
            return None

        async def waiter() -> dict[str, Any]:
            assert self._event_cond is not None
            async with self._event_cond:
                while (ev := find()) is None:
                    if self._ctrl_task is not None and self._ctrl_task.done():
                        raise BaresipError(f"{self.name}: ctrl_tcp closed waiting for {event_type}")
                    await self._event_cond.wait()
                return ev

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            seen = [e.get("type") for e in self.events]
            raise BaresipError(
                f"{self.name}: no {event_type} within {timeout} s; events: {seen}"
            ) from None

    def event_params(self, event_type: str) -> list[str]:
        """Return the ``param`` of every event of ``event_type`` received so far."""
        return [str(e.get("param", "")) for e in self.events if e.get("type") == event_type]

    # -- recordings ----------------------------------------------------------------------

    def recordings(self, kind: str = "dec") -> list[Path]:
        """Return sndfile's recordings, oldest first.

        Args:
            kind: ``"dec"`` (what baresip heard) or ``"enc"`` (what it sent).
        """
        return sorted(self.snd_path.glob(f"*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def recording_received(self) -> Path:
        """Return the newest ``*-dec.wav`` (what baresip heard); read it after CALL_CLOSED.

        Raises:
            BaresipError: No recording exists (no call reached media, or sndfile missing).
        """
        files = self.recordings("dec")
        if not files:
            raise BaresipError(f"{self.name}: no *-dec.wav in {self.snd_path}")
        return files[-1]

    async def wait_recording(self, kind: str = "dec", timeout: float = 5.0) -> Path:
        """Wait until the newest recording is complete (sndfile writes the WAV header on close).

        Args:
            kind: ``"dec"`` (heard) or ``"enc"`` (sent).
            timeout: Seconds to wait.

        Returns:
            The recording's path, once it holds samples and its size is stable.

        Raises:
            BaresipError: No complete recording within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_size = -1
        while loop.time() < deadline:
            files = self.recordings(kind)
            if files:
                size = files[-1].stat().st_size
                if size == last_size:
                    with contextlib.suppress(Exception):
                        samples, _ = read_wav(files[-1])
                        if samples.size > 0:
                            return files[-1]
                last_size = size
            await asyncio.sleep(0.1)
        raise BaresipError(
            f"{self.name}: no complete *-{kind}.wav in {self.snd_path} after {timeout} s"
        )

    def read_received(self) -> tuple[np.ndarray, int]:
        """Return ``(samples, rate)`` of :meth:`recording_received`."""
        return read_wav(self.recording_received())
