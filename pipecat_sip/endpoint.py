"""The SIP transport layer's asyncio side: the sockets and connections behind each `Flow`.

:class:`SIPEndpoint` owns every SIP socket of a server (today one UDP
socket; TCP and TLS listeners and connections plug in beside it) and knows
nothing of SIP beyond framing: it hands each received message to its
``on_message(data, flow)`` callback and sends what it is given on the flow
named. The sans-IO rules of RFC 3261 s.18 (which transports are reliable,
Via stamping, where responses go) are in :mod:`pipecat_sip.sip.transport`.

Addresses are normalised at this edge: a dual-stack IPv6 socket's
IPv4-mapped sources (``::ffff:192.0.2.1``) reach the user agent as plain
IPv4, and IPv4 destinations are mapped back when sent on such a socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from loguru import logger

from pipecat_sip.sip.transport import Flow

__all__ = ["SIPEndpoint", "normalize_address"]

MessageHandler = Callable[[bytes, Flow], None]

_LOG_EVERY = 1000  # after the first, log only every n-th repeated send error


def normalize_address(host: str) -> str:
    """An IPv4-mapped IPv6 address as IPv4 (``::ffff:192.0.2.1`` -> ``192.0.2.1``), else as is."""
    if host.startswith("::ffff:") or host.startswith("::FFFF:"):
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SIPEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self._endpoint.udp_received(data, addr)
        except Exception:  # never out of the socket callback
            logger.exception("SIP: error handling a datagram")

    def error_received(self, exc: Exception) -> None:
        logger.debug(f"SIP socket error: {exc}")


class SIPEndpoint:
    """The SIP sockets of one server.

    Args:
        on_message: Called with each received message and its flow.

    Attributes:
        send_errors: Messages that could not be sent (no socket for the
            address family, or the socket refused them).
    """

    def __init__(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_v6 = False
        self._udp_dual = False
        self.udp_port: int | None = None
        self.send_errors = 0

    async def open_udp(self, host: str, port: int) -> int:
        """Bind the UDP socket (``::`` binds dual-stack where the OS allows); returns its port.

        Raises:
            OSError: The address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host == "::":
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    self._udp_dual = True
                except OSError:
                    self._udp_dual = False
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=sock)
        self._udp_v6 = family == socket.AF_INET6
        self.udp_port = sock.getsockname()[1]
        return self.udp_port

    def udp_received(self, data: bytes, addr: tuple) -> None:
        """A datagram arrived on the UDP socket (called by its protocol)."""
        host = normalize_address(addr[0]) if self._udp_v6 else addr[0]
        self._on_message(data, Flow("UDP", (host, addr[1])))

    def send(self, data: bytes, flow: Flow) -> None:
        """Send ``data`` on ``flow``; failures are counted and logged at a bounded rate."""
        if flow.transport != "UDP":
            self._send_failed(flow, f"no {flow.transport} transport")
            return
        udp = self._udp
        if udp is None:
            return
        host, port = flow.remote
        destination: Any = (host, port)
        is_v6 = ":" in host
        if self._udp_v6 and not is_v6:
            if not self._udp_dual:
                self._send_failed(flow, "IPv4 destination on an IPv6-only socket")
                return
            destination = (f"::ffff:{host}", port)
        elif not self._udp_v6 and is_v6:
            self._send_failed(flow, "IPv6 destination on an IPv4 socket")
            return
        try:
            udp.sendto(data, destination)
        except (OSError, ValueError) as exc:
            self._send_failed(flow, str(exc))

    def close(self) -> None:
        """Close every socket."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def _send_failed(self, flow: Flow, why: str) -> None:
        self.send_errors += 1
        if self.send_errors % _LOG_EVERY == 1:
            logger.warning(f"SIP: cannot send to {flow}: {why} ({self.send_errors} so far)")
