"""SIP over TCP (RFC 3261 s.18) with the real SIPServer on loopback: framing, limits, reuse.

A raw TCP client plays the peer where the wire matters (split and coalesced
writes, slowloris, oversized messages, keep-alives); two SIPServers play
both ends of a call where the dialog matters (connection reuse both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from pipecat_sip.endpoint import StreamSettings
from pipecat_sip.server import Registration
from pipecat_sip.sip.framing import PING, PONG, Message, Pong, StreamFramer
from pipecat_sip.sip.message import SIPRequest, SIPResponse, parse_message
from tests.helpers.server import Recorder, start_server, wait_for

_counter = iter(range(1, 1_000_000))


def options(
    port: int, *, body: bytes = b"", branch: str | None = None, via_port: int = 5999
) -> bytes:
    n = next(_counter)
    branch = branch or f"z9hG4bKtcp{n}"
    return (
        f"OPTIONS sip:pipecat@127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{via_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=t{n}\r\n"
        f"To: <sip:pipecat@127.0.0.1:{port}>\r\n"
        f"Call-ID: tcp-{n}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Peer:
    """A raw TCP peer: writes bytes, reads framed SIP messages and pongs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = StreamFramer(max_message_size=65536, max_header_bytes=16384)
        self.events: list = []

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Peer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self, timeout: float = 3.0):
        loop = asyncio.get_running_loop()
        while not self.events:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("closed by the server")
            self.events += self.framer.receive(data, loop.time())
        return self.events.pop(0)

    async def response(self, timeout: float = 3.0) -> SIPResponse:
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, Message):
                message = parse_message(event.data)
                assert isinstance(message, SIPResponse), message
                return message

    async def closed(self, timeout: float = 3.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (what it sent is read)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def tcp_server():
    servers = []

    async def make(handler=None, **kwargs):
        kwargs.setdefault("transports", ("udp", "tcp"))
        server = await start_server(handler or Recorder(), **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


async def test_options_over_tcp_is_answered_on_the_same_connection(tcp_server) -> None:
    server = await tcp_server()
    assert server.tcp_port == server.port  # TCP on the UDP port by default (RFC 3261 s.18)
    peer = await Peer.connect(server.tcp_port)
    try:
        await peer.send(options(server.tcp_port))
        response = await peer.response()
        assert response.status_code == 200
        via = response.top_via
        assert via.transport == "TCP" and via.get_param("received") == "127.0.0.1"
        assert via.get_param("rport") == str(peer.writer.get_extra_info("sockname")[1])
        assert server.endpoint.connection_count == 1
    finally:
        peer.close()


async def test_split_and_coalesced_writes_give_one_answer_per_request(tcp_server) -> None:
    server = await tcp_server()
    peer = await Peer.connect(server.tcp_port)
    try:
        one, two, three = (options(server.tcp_port) for _ in range(3))
        await peer.send(one + PING + two)  # two requests and a ping in one write
        for i in range(0, len(three), 7):  # one request in 7-byte pieces
            await peer.send(three[i : i + 7])
            await asyncio.sleep(0)
        got = [await peer.next_event() for _ in range(4)]
        kinds = [type(e).__name__ for e in got]
        assert sorted(kinds) == ["Message", "Message", "Message", "Pong"], kinds
        call_ids = [parse_message(e.data).call_id for e in got if isinstance(e, Message)]
        expected = [parse_message(m).call_id for m in (one, two, three)]
        assert call_ids == expected
    finally:
        peer.close()


async def test_a_ping_gets_a_pong_and_nothing_else(tcp_server) -> None:
    server = await tcp_server()
    peer = await Peer.connect(server.tcp_port)
    try:
        await peer.send(PING)
        assert isinstance(await peer.next_event(), Pong)
        assert server.endpoint.stats["pongs_sent"] == 1
        await peer.send(PONG)  # a stray pong from the peer: ignored
        await peer.send(options(server.tcp_port))
        assert (await peer.response()).status_code == 200
    finally:
        peer.close()


async def test_an_oversized_request_gets_413_and_the_connection_goes_on(tcp_server) -> None:
    server = await tcp_server(max_message_size=4096)
    peer = await Peer.connect(server.tcp_port)
    try:
        await peer.send(options(server.tcp_port, body=b"x" * 20000))
        response = await peer.response()
        assert response.status_code == 413
        assert server.dropped_oversized == 1
        await peer.send(options(server.tcp_port))
        assert (await peer.response()).status_code == 200
        assert server.endpoint.connection_count == 1
    finally:
        peer.close()


async def test_a_request_without_content_length_gets_400_and_the_connection_closes(
    tcp_server,
) -> None:
    server = await tcp_server()
    peer = await Peer.connect(server.tcp_port)
    try:
        request = options(server.tcp_port).replace(b"Content-Length: 0\r\n", b"")
        await peer.send(request)
        response = await peer.response()
        assert response.status_code == 400 and "Content-Length" in response.reason
        assert await peer.closed()
        assert server.endpoint.stats["closed_framing"] == 1
        assert await wait_for(lambda: server.endpoint.connection_count == 0)
    finally:
        peer.close()


async def test_slowloris_is_closed_at_the_message_timeout_and_holds_little(tcp_server) -> None:
    settings = StreamSettings(message_timeout=1.0)
    server = await tcp_server(stream_settings=settings)
    peers = [await Peer.connect(server.tcp_port) for _ in range(5)]
    try:
        request = options(server.tcp_port)
        for peer in peers:
            await peer.send(request[:40])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(8):  # a byte every 0.2 s: never idle, never complete
            for peer in peers:
                await peer.send(request[40 + i : 41 + i])
            await asyncio.sleep(0.2)
            if server.endpoint.connection_count == 0:
                break
        assert await wait_for(lambda: server.endpoint.connection_count == 0, timeout=3)
        assert loop.time() - start < 3.5
        assert server.endpoint.stats["closed_timeout"] == 5
        for peer in peers:
            assert await peer.closed(1.0)
    finally:
        for peer in peers:
            peer.close()


async def test_headers_that_never_end_are_closed_at_the_header_limit(tcp_server) -> None:
    server = await tcp_server()
    peer = await Peer.connect(server.tcp_port)
    try:
        await peer.send(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 20000)
        assert await peer.closed()
        assert server.endpoint.stats["closed_framing"] == 1
    finally:
        peer.close()


async def test_connections_per_ip_and_in_total_are_bounded(tcp_server) -> None:
    settings = StreamSettings(max_connections_per_ip=3, max_connections=5)
    server = await tcp_server(stream_settings=settings)
    peers = [await Peer.connect(server.tcp_port) for _ in range(3)]
    extra = await Peer.connect(server.tcp_port)
    try:
        assert await extra.closed()  # the 4th from 127.0.0.1: closed at once
        assert server.endpoint.stats["refused_limit"] == 1
        assert server.endpoint.connection_count == 3
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.tcp_port, local_addr=("127.0.0.2", 0)
        )
        other = Peer(reader, writer)
        await other.send(options(server.tcp_port))
        assert (await other.response()).status_code == 200  # another source still gets in
        other.close()
        for peer in peers:  # the ones admitted still work
            await peer.send(options(server.tcp_port))
            assert (await peer.response()).status_code == 200
    finally:
        extra.close()
        for peer in peers:
            peer.close()


async def test_idle_connections_are_closed(tcp_server) -> None:
    server = await tcp_server(stream_settings=StreamSettings(idle_timeout=1.0))
    peer = await Peer.connect(server.tcp_port)
    try:
        await peer.send(options(server.tcp_port))
        assert (await peer.response()).status_code == 200
        assert await peer.closed(4.0)
        assert server.endpoint.stats["closed_idle"] == 1
    finally:
        peer.close()


async def test_a_peer_that_does_not_read_is_closed(tcp_server) -> None:
    settings = StreamSettings(max_write_buffer=64 * 1024)
    server = await tcp_server(stream_settings=settings, rate_limit=0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.tcp_port))
    sock.setblocking(False)
    try:
        batch = b"".join(options(server.tcp_port) for _ in range(200))
        for _ in range(200):  # up to ~16 MB of 200 OKs asked for, none read
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sock.send(batch)
            if server.endpoint.stats["closed_slow_reader"]:
                break
            await asyncio.sleep(0.01)
        assert await wait_for(lambda: server.endpoint.stats["closed_slow_reader"] == 1, 5)
        assert await wait_for(lambda: server.endpoint.connection_count == 0, 5)
    finally:
        sock.close()


async def test_a_call_over_tcp_reuses_the_connection_both_ways(tcp_server) -> None:
    recorder = Recorder(hangup_after=0.3)  # the callee hangs up: its BYE goes back to us
    callee = await tcp_server(recorder)
    caller = await tcp_server()
    target = callee.uri_for("tcp").replace("pipecat@", "bot@")
    call = await caller.call(target, timeout=5)
    assert call.state.value == "confirmed"
    assert call.info.transport == "TCP"
    await asyncio.wait_for(call.wait_ended(), 5)
    assert list(recorder.ended.values()) == ["local_bye"]
    # One connection, opened by the caller; the callee's BYE went back over it
    # (RFC 5923 alias in our Via), not over a second connection.
    assert caller.endpoint.stats["connected"] == 1
    assert callee.endpoint.stats["accepted"] == 1
    assert callee.endpoint.stats["connected"] == 0
    assert recorder.calls[0].info.transport == "TCP"


async def test_contact_and_via_say_tcp_in_a_tcp_dialog(tcp_server) -> None:
    seen: list[SIPRequest] = []
    recorder = Recorder(hangup_after=0.2)
    callee = await tcp_server(recorder)
    original = callee.ua.receive

    def spy(data, flow, now):
        try:
            message = parse_message(data)
        except Exception:
            message = None
        if isinstance(message, SIPRequest):
            seen.append(message)
        original(data, flow, now)

    callee.ua.receive = spy  # type: ignore[method-assign]
    caller = await tcp_server()
    call = await caller.call(callee.uri_for("tcp").replace("pipecat@", "bot@"), timeout=5)
    await asyncio.wait_for(call.wait_ended(), 5)
    invite = next(r for r in seen if r.method == "INVITE")
    assert invite.top_via.transport == "TCP" and invite.top_via.has_param("alias")
    contact = invite.contacts[0].uri
    assert contact.get_param("transport") == "tcp" and contact.port == caller.tcp_port


async def test_ipv6_over_tcp(tcp_server) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 not available")
    recorder = Recorder(hangup_after=0.2)
    import random

    base = random.randrange(20000, 40000, 2)
    from pipecat_sip.server import SIPServer

    servers = []
    try:
        for handler, offset in ((recorder, 0), (None, 100)):
            server = SIPServer(
                handler,
                host="::1",
                port=0,
                transports=("udp", "tcp"),
                rtp_port_range=(base + offset, base + offset + 99),
            )
            await server.start()
            servers.append(server)
        callee6, caller6 = servers
        target = f"sip:bot@[::1]:{callee6.tcp_port};transport=tcp"
        call = await caller6.call(target, timeout=5)
        assert call.info.transport == "TCP"
        assert call.info.remote_address == ("::1", callee6.tcp_port)
        await asyncio.wait_for(call.wait_ended(), 5)
        assert callee6.endpoint.stats["connected"] == 0
    finally:
        for server in servers:
            await server.stop()


async def test_registration_over_tcp_is_kept_alive_and_recovers_when_the_flow_dies(
    tcp_server,
) -> None:
    """A registrar on TCP that answers pings, then stops: the flow is closed and replaced."""
    registers: list[SIPRequest] = []
    pings = 0
    answer_pings = True
    connections: list[asyncio.StreamWriter] = []

    async def registrar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        connections.append(writer)
        framer = StreamFramer()
        loop = asyncio.get_running_loop()
        while data := await reader.read(65536):
            for event in framer.receive(data, loop.time()):
                if isinstance(event, Message):
                    request = parse_message(event.data)
                    registers.append(request)
                    from pipecat_sip.sip.message import make_response

                    response = make_response(
                        request,
                        200,
                        to_tag="reg1",
                        headers=[("Contact", f"{request.headers.get('Contact')};expires=60")],
                    )
                    writer.write(bytes(response))
                elif type(event).__name__ == "Ping":
                    pings += 1
                    if answer_pings:
                        writer.write(PONG)
        writer.close()

    listener = await asyncio.start_server(registrar, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = StreamSettings(pong_timeout=1.0)
    try:
        server = await tcp_server(
            registration=Registration(f"sip:127.0.0.1:{port};transport=tcp", expires=60),
            keepalive_interval=0.5,
            stream_settings=settings,
        )
        assert await wait_for(lambda: server.registered, 5)
        first = registers[0]
        assert first.top_via.transport == "TCP"
        assert first.contacts[0].uri.get_param("transport") == "tcp"
        assert await wait_for(lambda: pings >= 2, 5)  # pinged, and the pongs keep it open
        assert server.endpoint.stats["pong_timeouts"] == 0
        answer_pings = False
        assert await wait_for(lambda: server.endpoint.stats["pong_timeouts"] == 1, 5)
        # The flow failed: a REGISTER goes at once over a new connection.
        assert await wait_for(lambda: len(connections) == 2 and len(registers) == 2, 5)
        assert registers[1].call_id == first.call_id  # the same registration, refreshed
        assert registers[1].cseq.seq > first.cseq.seq
        assert server.registered
    finally:
        listener.close()
        for writer in connections:
            writer.close()


async def test_registration_fails_over_when_the_first_destination_refuses(tcp_server) -> None:
    """Two SRV targets: the first refuses TCP connections, the second registers us."""
    from pipecat_sip.resolver import ServerLocator
    from tests.helpers.dns_server import DNSServer
    from tests.helpers.peers import free_tcp_port

    dead = free_tcp_port()
    registers: list[SIPRequest] = []

    async def registrar(reader, writer):
        framer = StreamFramer()
        loop = asyncio.get_running_loop()
        from pipecat_sip.sip.message import make_response

        while data := await reader.read(65536):
            for event in framer.receive(data, loop.time()):
                if isinstance(event, Message):
                    request = parse_message(event.data)
                    registers.append(request)
                    writer.write(bytes(make_response(request, 200, to_tag="r")))
        writer.close()

    listener = await asyncio.start_server(registrar, "127.0.0.1", 0)
    live = listener.sockets[0].getsockname()[1]
    records = {
        ("_sip._tcp.pbx.test", "SRV"): [f"10 0 {dead} a.pbx.test.", f"20 0 {live} b.pbx.test."],
        ("a.pbx.test", "A"): ["127.0.0.1"],
        ("b.pbx.test", "A"): ["127.0.0.1"],
    }
    async with DNSServer(records) as dns:
        locator = ServerLocator([dns.address], transports=("tcp",))
        try:
            server = await tcp_server(
                transports=("tcp",),
                registration=Registration("sip:pbx.test", expires=60),
                locator=locator,
            )
            assert await wait_for(lambda: server.registered, 5)
            assert len(registers) == 1 and registers[0].top_via.transport == "TCP"
            assert server.endpoint.stats["connect_failed"] == 1
        finally:
            listener.close()


async def test_nagle_is_off_on_accepted_and_opened_connections(tcp_server) -> None:
    """A 200 OK written right after a 180 must not wait ~40 ms for the peer's delayed ACK."""
    callee = await tcp_server(Recorder(hangup_after=0.5))
    caller = await tcp_server()
    call = await caller.call(callee.uri_for("tcp").replace("pipecat@", "bot@"), timeout=5)
    for server in (caller, callee):
        [conn] = server.endpoint._connections.values()
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    await asyncio.wait_for(call.wait_ended(), 5)


async def test_the_runner_starts_the_transports_it_is_given() -> None:
    import argparse
    import random

    from pipecat_sip.runner import parse_config, serve

    base = random.randrange(20000, 40000, 2)
    env = {
        "SIP_SERVER_HOST": "127.0.0.1",
        "SIP_SERVER_PORT": "0",
        "SIP_TRANSPORTS": "udp,tcp",
        "SIP_RTP_PORT_RANGE": f"{base}-{base + 99}",
        "SIP_KEEPALIVE_INTERVAL": "15",
        "SIP_DNS_SERVERS": "127.0.0.1:53",
    }
    config = parse_config(argparse.Namespace(), env)
    assert config.transports == ("udp", "tcp") and config.keepalive_interval == 15
    stop = asyncio.Event()
    started: list = []

    async def bot(runner_args) -> None:
        await runner_args.call.hangup()

    task = asyncio.ensure_future(serve(bot, config, stop_event=stop, started=started.append))
    try:
        assert await wait_for(lambda: started, 5)
        server = started[0]
        assert server.transports == ("udp", "tcp") and server.tcp_port == server.port
        assert server.keepalive_interval == 15
        assert server.locator.nameservers == [("127.0.0.1", 53)]
        peer = await Peer.connect(server.tcp_port)
        await peer.send(options(server.tcp_port))
        assert (await peer.response()).status_code == 200
        peer.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
