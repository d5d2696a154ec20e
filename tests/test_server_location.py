"""RFC 3263 server location wired into the SIPServer, and UDP keep-alives (RFC 5626 s.3.5.1).

A loopback DNS server (tests/helpers/dns_server.py) answers NAPTR, SRV and
A queries; registrars are small UDP responders in the test; callees are
real SIPServers.
"""

from __future__ import annotations

import asyncio

import pytest

from pipecat_sip.call import CallFailed
from pipecat_sip.resolver import ServerLocator
from pipecat_sip.server import Registration
from pipecat_sip.sip.message import SIPRequest, make_response, parse_message
from tests.helpers.dns_server import DNSServer
from tests.helpers.server import Recorder, start_server, wait_for


class UDPRegistrar(asyncio.DatagramProtocol):
    """Answers REGISTER with a fixed status; records requests and keep-alive datagrams."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[SIPRequest] = []
        self.keepalives = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if not data.strip(b"\r\n"):
            self.keepalives += 1
            return
        request = parse_message(data)
        self.requests.append(request)
        headers = [("Contact", f"{request.headers.get('Contact')};expires=60")]
        if self.status == 503:
            headers = [("Retry-After", "30")]
        response = make_response(request, self.status, to_tag="reg", headers=headers)
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]


@pytest.fixture
async def registrars():
    made = []

    async def make(status: int) -> UDPRegistrar:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: UDPRegistrar(status), local_addr=("127.0.0.1", 0)
        )
        made.append(protocol)
        return protocol

    yield make
    for protocol in made:
        protocol.transport.close()


@pytest.fixture
async def servers():
    started = []

    async def make(handler=None, **kwargs):
        server = await start_server(handler, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


async def test_registration_fails_over_from_a_503_srv_target_to_the_next(
    registrars, servers
) -> None:
    busy, good = await registrars(503), await registrars(200)
    records = {
        ("_sip._udp.pbx.test", "SRV"): [
            f"10 0 {busy.port} a.pbx.test.",
            f"20 0 {good.port} b.pbx.test.",
        ],
        ("a.pbx.test", "A"): ["127.0.0.1"],
        ("b.pbx.test", "A"): ["127.0.0.1"],
    }
    async with DNSServer(records) as dns:
        server = await servers(
            registration=Registration("sip:pbx.test", expires=60),
            dns_servers=f"127.0.0.1:{dns.port}",
        )
        assert await wait_for(lambda: server.registered, 5)
        assert len(busy.requests) == 1 and len(good.requests) == 1
        first, second = busy.requests[0], good.requests[0]
        assert first.call_id == second.call_id and second.cseq.seq == first.cseq.seq + 1
        assert str(second.uri) == "sip:pbx.test"  # the Request-URI keeps the domain
        assert dns.count("pbx.test", "NAPTR") == 1  # NAPTR first (empty), then SRV


async def test_udp_registration_flow_gets_double_crlf_keepalives(registrars, servers) -> None:
    registrar = await registrars(200)
    server = await servers(
        registration=Registration(f"sip:127.0.0.1:{registrar.port}", expires=60),
        keepalive_interval=0.5,
    )
    assert await wait_for(lambda: server.registered, 5)
    assert await wait_for(lambda: registrar.keepalives >= 2, 5)
    assert len(registrar.requests) == 1  # keep-alives are not REGISTERs
    await server.stop()
    count = registrar.keepalives
    await asyncio.sleep(1.2)
    assert registrar.keepalives == count  # they stop with the registration


async def test_keepalives_can_be_turned_off(registrars, servers) -> None:
    registrar = await registrars(200)
    server = await servers(
        registration=Registration(f"sip:127.0.0.1:{registrar.port}", expires=60),
        keepalive_interval=0,
    )
    assert await wait_for(lambda: server.registered, 5)
    await asyncio.sleep(1.5)
    assert registrar.keepalives == 0


async def test_a_call_to_a_host_name_follows_naptr_and_srv_to_tcp(servers) -> None:
    recorder = Recorder(hangup_after=0.2)
    callee = await servers(recorder, transports=("udp", "tcp"))
    records = {
        ("trunk.test", "NAPTR"): ['10 10 "s" "SIP+D2T" "" _sip._tcp.trunk.test.'],
        ("_sip._tcp.trunk.test", "SRV"): [f"0 0 {callee.tcp_port} edge.trunk.test."],
        ("edge.trunk.test", "A"): ["127.0.0.1"],
    }
    async with DNSServer(records) as dns:
        caller = await servers(None, transports=("udp", "tcp"), dns_servers=[dns.address])
        call = await caller.call("sip:+4930123@trunk.test", timeout=5)
        assert call.info.transport == "TCP"
        assert call.info.remote_address == ("127.0.0.1", callee.tcp_port)
        await asyncio.wait_for(call.wait_ended(), 5)
        assert recorder.calls[0].info.request_uri == "sip:+4930123@trunk.test"
        # The server's one locator caches: a second call asks DNS nothing more.
        asked = len(dns.queries)
        call = await caller.call("sip:+4930124@trunk.test", timeout=5)
        await asyncio.wait_for(call.wait_ended(), 5)
        assert len(dns.queries) == asked


async def test_an_explicit_port_skips_naptr_and_srv(servers) -> None:
    callee = await servers(Recorder(hangup_after=0.2))
    records = {("bot.test", "A"): ["127.0.0.1"]}
    async with DNSServer(records) as dns:
        caller = await servers(None, dns_servers=[dns.address])
        call = await caller.call(f"sip:bot@bot.test:{callee.port}", timeout=5)
        await asyncio.wait_for(call.wait_ended(), 5)
        assert dns.count("bot.test", "A") == 1
        assert dns.count("bot.test", "NAPTR") == 0
        assert not any(rdtype == "SRV" for _, rdtype, _ in dns.queries)


async def test_a_name_that_does_not_resolve_fails_the_call_with_503(servers) -> None:
    async with DNSServer({}) as dns:
        caller = await servers(None, dns_servers=[dns.address])
        with pytest.raises(CallFailed) as info:
            await caller.call("sip:bot@nowhere.test", timeout=5)
        assert info.value.status_code == 503 and "nowhere.test" in info.value.reason
        assert caller.calls == {}


async def test_lookups_never_block_the_loop(servers) -> None:
    """A slow DNS server: other work goes on while a call's next hop is looked up."""
    records = {("slow.test", "A"): ["127.0.0.1"]}
    async with DNSServer(records, delays={"slow.test": 0.5}) as dns:
        locator = ServerLocator([dns.address])
        caller = await servers(None, locator=locator)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        with pytest.raises(CallFailed):  # nothing listens at 127.0.0.1:9 (discard)
            await caller.call("sip:bot@slow.test:9", timeout=1)
        task.cancel()
        assert ticks >= 15  # the loop kept running during the 0.5 s lookup
