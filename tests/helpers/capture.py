"""Capture UDP on loopback with tshark (Debian package tshark) and read the datagrams back.

:class:`Capture` runs ``tshark -i lo -f FILTER -w FILE`` for the life of an
``async with`` block (started and stopped by its PID), then reads every UDP
datagram of the file as a :class:`Datagram` (time, ports, payload) with
``tshark -r FILE -T fields``. Capturing needs root or the capture
capability; without tshark, or when the capture cannot start, the test
skips with the reason.

Example::

    async with Capture(tmp_path / "call.pcapng", ports=[5060, (20000, 20599)]) as cap:
        ...  # the call
    for d in cap.datagrams():
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.peers import require_binary

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Datagram:
    """One captured UDP datagram.

    Attributes:
        time: Seconds since the first captured frame.
        src_port: UDP source port.
        dst_port: UDP destination port.
        payload: The UDP payload.
    """

    time: float
    src_port: int
    dst_port: int
    payload: bytes


def port_filter(ports: Sequence[int | tuple[int, int]]) -> str:
    """A capture filter for UDP on these ports or inclusive port ranges."""
    parts = [
        f"udp portrange {p[0]}-{p[1]}" if isinstance(p, tuple) else f"udp port {p}" for p in ports
    ]
    return " or ".join(parts)


class Capture:
    """tshark capturing UDP on ``lo`` for the given ports while the block runs.

    Args:
        path: The capture file (pcapng) to write.
        ports: UDP ports and ``(first, last)`` ranges to capture.
        interface: The interface, ``lo`` by default.
    """

    def __init__(
        self, path: str | Path, ports: Sequence[int | tuple[int, int]], interface: str = "lo"
    ) -> None:
        self.path = Path(path)
        self.filter = port_filter(ports)
        self.interface = interface
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr = b""

    async def start(self) -> None:
        """Start tshark and wait until it captures.

        Raises:
            pytest.skip.Exception: tshark is missing or cannot capture here.
        """
        binary = require_binary("tshark")
        self._proc = await asyncio.create_subprocess_exec(
            binary, "-i", self.interface, "-f", self.filter, "-w", str(self.path), "-q",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stderr is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while b"Capturing on" not in self._stderr:
            left = deadline - loop.time()
            try:
                line = await asyncio.wait_for(self._proc.stderr.readline(), max(left, 0.01))
            except TimeoutError:
                line = b""
            if not line and (self._proc.returncode is not None or loop.time() > deadline):
                await self.stop()
                pytest.skip(f"tshark cannot capture on {self.interface}: {self._stderr[-300:]!r}")
            self._stderr += line
        await asyncio.sleep(0.2)  # the filter is set once tshark says it captures

    async def stop(self) -> None:
        """Stop tshark by its PID (SIGINT: it writes out the file); idempotent."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        await asyncio.sleep(0.3)  # let the last datagrams reach the file
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def __aenter__(self) -> Capture:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def datagrams(self) -> list[Datagram]:
        """Every UDP datagram of the capture, in order."""
        out = subprocess.run(
            [
                require_binary("tshark"), "-r", str(self.path), "-T", "fields",
                "-E", "separator=,", "-e", "frame.time_relative", "-e", "udp.srcport",
                "-e", "udp.dstport", "-e", "udp.payload",
            ],
            capture_output=True, text=True, timeout=_READ_TIMEOUT_S, check=True,
        ).stdout  # fmt: skip
        result = []
        for line in out.splitlines():
            fields = line.split(",")
            if len(fields) != 4 or not fields[1]:
                continue
            result.append(
                Datagram(float(fields[0]), int(fields[1]), int(fields[2]), bytes.fromhex(fields[3]))
            )
        return result

    def rtp_frames_by_port(self) -> dict[int, int]:
        """How many frames tshark decodes as RTP, per UDP source port.

        RTP over the ports an SDP in the capture names, and any other that
        looks like RTP (``rtp.heuristic_rtp``). SRTP keeps the RTP header in
        the clear, so tshark counts SRTP packets here too.
        """
        out = subprocess.run(
            [
                require_binary("tshark"), "-r", str(self.path), "-o", "rtp.heuristic_rtp:TRUE",
                "-Y", "rtp", "-T", "fields", "-e", "udp.srcport",
            ],
            capture_output=True, text=True, timeout=_READ_TIMEOUT_S, check=True,
        ).stdout  # fmt: skip
        counts: dict[int, int] = {}
        for line in out.split():
            counts[int(line)] = counts.get(int(line), 0) + 1
        return counts
