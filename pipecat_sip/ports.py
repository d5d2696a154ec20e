"""A pool of RTP ports: even ports from a configured range, bound on demand (I/O: it binds sockets).

RFC 3550 section 11: RTP uses an even port and RTCP the odd port above it.
The pool hands out only even ports whose odd neighbour is also inside the
range, and binds both. A pair of which some other process on the host
already holds either port is skipped (the bind fails with EADDRINUSE).

Ports are chosen at random (from an injectable ``random.Random``-like
``rng``, default ``secrets.SystemRandom()``), not in order: a stranger who
saw one call's port cannot guess the next call's and send it RTP before
its peer does (the "RTP bleed" family of attacks, compare Asterisk's
strictrtp and CVE-2017-14099). The last :data:`COOLING_PORTS` released ports
are taken only when no other port is free, so late packets of an ended
call seldom land in a new one.
"""

import errno
import secrets
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any

from loguru import logger

__all__ = ["COOLING_PORTS", "PortLease", "PortPool", "PortPoolExhausted"]

COOLING_PORTS = 64
"""Most recently released ports handed out again only when nothing else is free
(at most half the range)."""


class PortPoolExhausted(RuntimeError):
    """No port of the range is free (all leased or busy on the host)."""


@dataclass(frozen=True)
class PortLease:
    """A leased RTP port and its bound, non-blocking UDP socket.

    The sockets belong to the caller (an RTPSession closes them, or
    :meth:`close`); give the port back with :meth:`PortPool.release` when the
    call ends.

    Attributes:
        port: The even RTP port.
        sock: UDP socket bound to ``(host, port)``.
        rtcp_sock: UDP socket bound to ``(host, port + 1)``, for RTCP.
    """

    port: int
    sock: socket.socket
    rtcp_sock: socket.socket | None = None

    def close(self) -> None:
        """Close both sockets (when no RTPSession took them over)."""
        self.sock.close()
        if self.rtcp_sock is not None:
            self.rtcp_sock.close()


class PortPool:
    """Even RTP ports from ``[start, end]``, bound one per call.

    Args:
        start: First port of the range (raised to the next even port if odd).
        end: Last port of the range, inclusive; the last RTP port handed out
            is the highest even port with ``port + 1 <= end``.
        host: Address to bind the sockets to.
        rng: ``random.Random``-like source of the port choice; default
            ``secrets.SystemRandom()``.

    Raises:
        ValueError: The range is not within 1-65535 or holds no RTP/RTCP
            port pair.

    Example:
        >>> pool = PortPool(10000, 10003, "127.0.0.1")
        >>> pool.capacity
        2
    """

    def __init__(self, start: int, end: int, host: str = "0.0.0.0", *, rng: Any = None):
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"RTP port range {start}-{end} is not a port range")
        if start % 2:
            start += 1
        if start >= end:
            raise ValueError(f"RTP port range {start}-{end} holds no even/odd port pair")
        self.start = start
        self.end = end
        self.host = host
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._ports = range(start, end, 2)  # p + 1 <= end for every p
        self._leased: set[int] = set()
        self._rng = rng or secrets.SystemRandom()
        self._cooling: deque[int] = deque(maxlen=min(COOLING_PORTS, len(self._ports) // 2))

    @property
    def capacity(self) -> int:
        """How many RTP ports the range holds."""
        return len(self._ports)

    @property
    def in_use(self) -> int:
        """How many ports are leased now."""
        return len(self._leased)

    @property
    def available(self) -> int:
        """How many ports are not leased (some may be busy on the host)."""
        return len(self._ports) - len(self._leased)

    def acquire(self) -> PortLease:
        """Lease a free even port chosen at random and its odd neighbour, both bound to ``host``.

        The search starts at a random port of the range and goes on in order
        from there (wrapping), skipping leased ports, ports busy on the host
        and, on a first pass, the recently released ones.

        Returns:
            The port and its non-blocking UDP sockets (RTP, RTCP).

        Raises:
            PortPoolExhausted: Every port is leased or busy on the host.
            OSError: Binding failed for another reason than the port being
                taken (e.g. ``host`` is not an address of this machine).
        """
        count = len(self._ports)
        first = self._rng.randrange(count)
        cooling = set(self._cooling)
        busy: set[int] = set()
        for allow_cooling in (False, True):
            for i in range(count):
                port = self._ports[(first + i) % count]
                if port in self._leased or port in busy:
                    continue
                if port in cooling and not allow_cooling:
                    continue
                sock = self._bind(port)
                rtcp_sock = self._bind(port + 1) if sock is not None else None
                if sock is None or rtcp_sock is None:
                    if sock is not None:
                        sock.close()
                    busy.add(port)
                    continue
                self._leased.add(port)
                return PortLease(port, sock, rtcp_sock)
            if not cooling:
                break
        raise PortPoolExhausted(
            f"no free RTP port in {self.start}-{self.end}: "
            f"{len(self._leased)} leased, {len(busy)} busy on the host"
        )

    def is_leased(self, port: int) -> bool:
        """Whether ``port`` is leased now."""
        return port in self._leased

    def release(self, port: int) -> None:
        """Give a port back. Releasing a port that is not leased does nothing."""
        if port in self._leased:
            self._leased.remove(port)
            if self._cooling.maxlen:
                self._cooling.append(port)
        elif port not in self._ports:
            logger.warning(f"port {port} released to a pool it is not part of")

    def _bind(self, port: int) -> socket.socket | None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            if self._family == socket.AF_INET6 and self.host == "::":
                # Dual-stack: IPv4 peers arrive as ::ffff:a.b.c.d (RTPSession maps them).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            raise
        sock.setblocking(False)
        return sock

    def __repr__(self) -> str:
        return f"<PortPool {self.host}:{self.start}-{self.end} {self.in_use}/{self.capacity} used>"
