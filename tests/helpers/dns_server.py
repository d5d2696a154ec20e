"""A small DNS server for tests: answers NAPTR, SRV, A and AAAA from a dict, on loopback.

It listens on 127.0.0.1 with UDP and TCP on one free port (a UDP answer too
big for the query's buffer is sent truncated, so the client retries over TCP,
as a real server makes it). Built with dnspython's message and rrset tools.

    records = {
        ("example.com", "NAPTR"): ['10 10 "s" "SIP+D2U" "" _sip._udp.example.com.'],
        ("_sip._udp.example.com", "SRV"): ["0 0 5060 pbx.example.com."],
        ("pbx.example.com", "A"): ["127.0.0.1"],
    }
    async with DNSServer(records) as server:
        ...  # nameserver ("127.0.0.1", server.port)

Names are matched case-insensitively, without the final dot. A name with no
entry at all gets NXDOMAIN; a known name without the asked type gets an
empty NOERROR (NODATA). ``delays`` holds seconds to wait before answering a
name; ``drop`` names (or ``silent=True``) are never answered, as a dead or
firewalled server; ``servfail`` names get SERVFAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DNSServer:
    """A loopback DNS server for one test (UDP and TCP on the same port).

    Attributes:
        port: The port it listens on (after `start`).
        queries: Every query received, as (name, rdtype, "udp"/"tcp").
    """

    def __init__(
        self,
        records: dict[tuple[str, str], list[str]] | None = None,
        *,
        ttl: int = 300,
        ttls: dict[tuple[str, str], int] | None = None,
        delays: dict[str, float] | None = None,
        drop: set[str] | None = None,
        servfail: set[str] | None = None,
        silent: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        for (name, rdtype), texts in (records or {}).items():
            self.records[(_key(name), rdtype.upper())] = list(texts)
        self.ttl = ttl
        self.ttls = {(_key(n), t.upper()): v for (n, t), v in (ttls or {}).items()}
        self.delays = {_key(n): v for n, v in (delays or {}).items()}
        self.drop = {_key(n) for n in drop or ()}
        self.servfail = {_key(n) for n in servfail or ()}
        self.silent = silent
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to configure as a nameserver."""
        return (self.host, self.port)

    def count(self, name: str, rdtype: str) -> int:
        """How many times (name, rdtype) was asked, over either transport."""
        return sum(1 for n, t, _ in self.queries if n == _key(name) and t == rdtype.upper())

    async def start(self) -> DNSServer:
        """Bind UDP on a free port, then TCP on the same port (retrying on a clash)."""
        loop = asyncio.get_running_loop()
        for _ in range(50):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(self.host, 0)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._on_tcp, self.host, port)
            except OSError:
                udp.close()
                continue
            self._udp, self.port = udp, port
            return self
        raise OSError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        """Close both sockets and cancel answers still waiting on a delay."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
            self._tcp = None

    async def __aenter__(self) -> DNSServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- answering ----------------------------------------------------------------
    def _answer(self, wire: bytes, transport: str) -> tuple[bytes | None, float]:
        """(response wire or None to stay silent, delay in seconds)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None, 0.0
        if not query.question:
            return None, 0.0
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype, transport))
        if self.silent or name in self.drop:
            return None, 0.0
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in self.records:
            ttl = self.ttls.get((name, rdtype), self.ttl)
            texts = self.records[(name, rdtype)]
            if texts:
                response.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", rdtype, *texts))
        elif not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        limit = 65535
        if transport == "udp":
            limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            out = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA | dns.flags.TC
            out = response.to_wire()
        return out, self.delays.get(name, 0.0)

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        out, delay = self._answer(data, "udp")
        if out is None:
            return
        if delay <= 0:
            if self._udp is not None:
                self._udp.sendto(out, addr)
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._udp is not None:
                self._udp.sendto(out, addr)

        self._spawn(later())

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                out, delay = self._answer(await reader.readexactly(length), "tcp")
                if out is None:
                    continue
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._on_datagram(data, addr)


class SilentServer:
    """A UDP socket on loopback that reads queries and never answers (a dead server)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.received = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> SilentServer:
        loop = asyncio.get_running_loop()
        outer = self

        class _Sink(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                outer.received += 1

        self._transport, _ = await loop.create_datagram_endpoint(_Sink, local_addr=(self.host, 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to configure as a nameserver."""
        return (self.host, self.port)
