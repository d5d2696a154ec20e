"""Locating third-party peer programs and picking free loopback ports for them.

Interop tests start real SIP peers (SIPp, baresip) on 127.0.0.1. Every port is
probed free at test time by binding port 0; fixed ports are never used.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import socket

import pytest

#: Debian package that provides each binary the interop tests use.
DEBIAN_PACKAGES: dict[str, str] = {
    "sipp": "sip-tester",
    "baresip": "baresip-core",
    "linphonec": "linphone-cli",
    "sox": "sox",
    "espeak-ng": "espeak-ng",
    "tshark": "tshark",
}

# Ports handed out during this test session. The kernel may give the same port
# to two consecutive bind(0) probes once the first probe socket is closed, so
# two peers started by one test could otherwise be told the same port.
_handed_out: set[int] = set()

_MAX_PROBES = 200


def require_binary(name: str) -> str:
    """Return the path of an installed program, or skip the calling test.

    Args:
        name: Program name looked up on PATH, e.g. ``"sipp"``.

    Returns:
        The absolute path of the program.

    Raises:
        pytest.skip.Exception: The program is not installed; the reason names the
            Debian package to install (CI turns interop skips into failures).
    """
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGES.get(name, name)
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return path


def _udp_port_free(host: str, port: int) -> bool:
    """Return True if ``host:port`` can be bound as a UDP socket right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def free_udp_port(host: str = "127.0.0.1", even: bool = False, *, span: int = 2) -> int:
    """Pick a UDP port on ``host`` that is free now and not handed out before.

    The port is found by binding port 0 (the kernel's choice), then released. A
    small race remains (another process may take it before the peer binds it);
    tests on loopback accept that.

    Args:
        host: Local IPv4 address to probe, loopback by default.
        even: If True, return an even port ``p`` such that ``p .. p + span - 1``
            are all free (RTP on ``p``, RTCP on ``p + 1``; SIPp also binds
            ``p + 2`` for video, so pass ``span=4`` for its ``-mp``).
        span: Number of consecutive free ports required when ``even`` is True.

    Returns:
        The port number.

    Raises:
        RuntimeError: No suitable port was found within a bounded number of probes.
    """
    for _ in range(_MAX_PROBES):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if even:
            port &= ~1
            if port < 1024 or port + span - 1 > 65535:
                continue
            block = range(port, port + max(span, 1))
        else:
            block = range(port, port + 1)
        if any(p in _handed_out for p in block):
            continue
        if all(_udp_port_free(host, p) for p in block):
            _handed_out.update(block)
            return port
    raise RuntimeError(f"no free UDP port on {host} after {_MAX_PROBES} probes")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Pick a TCP port on ``host`` that is free now (for control sockets).

    Args:
        host: Local IPv4 address to probe.

    Returns:
        The port number.

    Raises:
        RuntimeError: No port was found within a bounded number of probes.
    """
    for _ in range(_MAX_PROBES):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port on {host} after {_MAX_PROBES} probes")


async def wait_udp_bound(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    """Wait until some process has bound UDP ``host:port`` (a peer is listening).

    Args:
        port: UDP port to watch.
        host: Local address.
        timeout: Seconds to wait.

    Returns:
        True once the port is taken, False if it is still free after ``timeout``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if not _udp_port_free(host, port):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
