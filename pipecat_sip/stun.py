"""STUN Binding (RFC 8489) from an RTP socket: its public mapping, for the SDP we send.

Behind a NAT the address in our SDP must be the one the far end can send
RTP to: the NAT's public mapping of our RTP socket. When ``SIP_STUN_SERVER``
is set, the runner asks a STUN server from a socket of the RTP port range
and writes the public address it reports into SDP (and, until a SIP
response tells us better, Via and Contact; see :mod:`pipecat_sip.sip.nat`).

STUN messages are aioice's (``aioice.stun``: encoding, transaction ids,
XOR-MAPPED-ADDRESS); this module only sends them from the socket whose
mapping we want, with RFC 8489 s.6.2.1 retransmissions bounded in time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from aioice import stun
from loguru import logger

__all__ = ["StunError", "StunMapping", "learn_rtp_mapping", "parse_stun_server", "stun_binding"]

DEFAULT_STUN_PORT = 3478
_RTO_S = 0.5  # RFC 8489 s.6.2.1 initial RTO
_MAX_DATAGRAMS = 64  # stray datagrams read per attempt before giving up on it


class StunError(Exception):
    """No usable Binding answer (timeout, error response, no mapped address)."""


@dataclass(frozen=True)
class StunMapping:
    """The public (host, port) a STUN server saw for a local socket.

    Attributes:
        local: (host, port) the socket is bound to.
        public: (host, port) the server saw.
    """

    local: tuple[str, int]
    public: tuple[str, int]

    @property
    def port_preserved(self) -> bool:
        """Whether the NAT kept the local port (then SDP ports stay right for every call)."""
        return self.local[1] == self.public[1]


def parse_stun_server(value: str) -> tuple[str, int]:
    """Read ``SIP_STUN_SERVER``: ``host``, ``host:port``, ``[v6]:port`` or ``stun:host:port``.

    Raises:
        ValueError: Not of that form; the message names the variable.
    """
    text = value.strip()
    if text.lower().startswith("stun:"):
        text = text[5:]
    host, port = text, DEFAULT_STUN_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"SIP_STUN_SERVER: {value!r} is not host[:port]")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"SIP_STUN_SERVER: {value!r} is not host[:port]")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"SIP_STUN_SERVER: {value!r} is not host[:port]")
        port = int(port_text)
    if not host or not 0 < port < 65536 or any(c.isspace() for c in host):
        raise ValueError(f"SIP_STUN_SERVER: {value!r} is not host[:port]")
    return host, port


async def stun_binding(
    sock: socket.socket, server: tuple[str, int], *, timeout: float = 3.0
) -> tuple[str, int]:
    """Send a Binding request from ``sock`` to ``server``; return the mapped address.

    Retransmits at 0.5, 1, 2 s ... (RFC 8489 s.6.2.1) until ``timeout``.
    Datagrams that are not the answer (other sources, other transactions,
    not STUN) are ignored, at most 64 per attempt.

    Args:
        sock: A bound, non-blocking UDP socket (an RTP socket).
        server: The STUN server's (IP, port).
        timeout: Seconds to wait in all.

    Returns:
        (host, port) of XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS).

    Raises:
        StunError: No answer in time, an error response, or no address in it.
    """
    loop = asyncio.get_running_loop()
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    data = bytes(request)
    deadline = loop.time() + timeout
    rto = _RTO_S
    server_ip = str(ipaddress.ip_address(server[0]))
    while loop.time() < deadline:
        await loop.sock_sendto(sock, data, server)
        wait_until = min(deadline, loop.time() + rto)
        rto *= 2
        for _ in range(_MAX_DATAGRAMS):
            remaining = wait_until - loop.time()
            if remaining <= 0:
                break
            try:
                reply, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), remaining)
            except TimeoutError:
                break
            if addr[0] != server_ip or addr[1] != server[1]:
                continue
            try:
                message = stun.parse_message(reply)
            except ValueError:
                continue
            if message.transaction_id != request.transaction_id:
                continue
            if message.message_class == stun.Class.ERROR:
                raise StunError(f"STUN server {server[0]}:{server[1]} answered an error")
            mapped = message.attributes.get("XOR-MAPPED-ADDRESS") or message.attributes.get(
                "MAPPED-ADDRESS"
            )
            if not mapped:
                raise StunError(f"STUN server {server[0]}:{server[1]} sent no mapped address")
            return str(mapped[0]), int(mapped[1])
    raise StunError(f"STUN server {server[0]}:{server[1]} did not answer in {timeout:g} s")


async def learn_rtp_mapping(ports: Any, server: tuple[str, int], timeout: float = 3.0):
    """The public mapping of one RTP port of ``ports`` (a :class:`PortPool`).

    Leases a port, asks the STUN server from its RTP socket, and gives the
    port back. A NAT that keeps ports (Linux masquerade does when it can)
    maps every RTP port the same way, so one answer holds for the calls.

    Args:
        ports: The server's RTP port pool.
        server: The STUN server (host or IP, port); a host name is looked up.
        timeout: Seconds to wait for the answer.

    Returns:
        The :class:`StunMapping`.

    Raises:
        StunError: No usable answer.
        OSError: The server's name does not resolve.
    """
    loop = asyncio.get_running_loop()
    lease = ports.acquire()
    try:
        family = lease.sock.family
        infos = await loop.getaddrinfo(server[0], server[1], family=family, type=socket.SOCK_DGRAM)
        address = infos[0][4][:2]
        local = lease.sock.getsockname()[:2]
        public = await stun_binding(lease.sock, address, timeout=timeout)
    finally:
        lease.close()
        ports.release(lease.port)
    mapping = StunMapping((str(local[0]), int(local[1])), public)
    logger.info(
        f"STUN {server[0]}:{server[1]}: RTP {local[0]}:{local[1]} is {public[0]}:{public[1]} "
        + ("(port kept)" if mapping.port_preserved else "(port changed: the far end must latch)")
    )
    return mapping
