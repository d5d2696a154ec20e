"""ServerLocator against a real DNS server on loopback (tests/helpers/dns_server.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from pipecat_sip.resolver import (
    HostResolutionError,
    RecordCache,
    ServerLocator,
    parse_hosts,
    parse_nameservers,
)
from pipecat_sip.sip.locate import (
    MAX_DESTINATIONS,
    Destination,
    LocationError,
    Query,
    TargetList,
)
from tests.helpers.dns_server import DNSServer, SilentServer

ZONE = {
    ("example.test", "NAPTR"): [
        '10 10 "s" "SIP+D2T" "" _sip._tcp.example.test.',
        '20 10 "s" "SIP+D2U" "" _sip._udp.example.test.',
    ],
    ("_sip._tcp.example.test", "SRV"): ["0 0 5070 primary.example.test."],
    ("_sip._udp.example.test", "SRV"): [
        "0 0 5060 primary.example.test.",
        "10 0 5060 backup.example.test.",
    ],
    ("primary.example.test", "A"): ["127.0.0.11"],
    ("primary.example.test", "AAAA"): ["::1"],
    ("backup.example.test", "A"): ["127.0.0.12", "127.0.0.13"],
    ("plain.example.test", "A"): ["127.0.0.20"],
    ("plain.example.test", "AAAA"): ["::1"],
}


def locator(*servers, **kw) -> ServerLocator:
    kw.setdefault("transports", ("udp", "tcp", "tls"))
    kw.setdefault("rng", random.Random(0))
    kw.setdefault("query_timeout", 1.0)
    return ServerLocator([s.address for s in servers], **kw)


async def test_naptr_srv_a_chain():
    async with DNSServer(ZONE) as server:
        loc = locator(server)
        out = await loc.locate("sip:alice@example.test")
    assert out[:2] == [
        Destination("tcp", "127.0.0.11", 5070, "primary.example.test"),
        Destination("udp", "127.0.0.11", 5060, "primary.example.test"),
    ]
    assert sorted(out[2:]) == [
        Destination("udp", "127.0.0.12", 5060, "backup.example.test"),
        Destination("udp", "127.0.0.13", 5060, "backup.example.test"),
    ]
    asked = [(n, t) for n, t, _ in server.queries]
    assert asked[0] == ("example.test", "NAPTR")
    assert set(asked[1:3]) == {("_sip._tcp.example.test", "SRV"), ("_sip._udp.example.test", "SRV")}
    assert ("primary.example.test", "AAAA") not in asked  # families=(4,)
    # Each name was asked once, although primary is the target of two SRV records.
    assert server.count("primary.example.test", "A") == 1
    assert loc.stats["queries"] == 5


async def test_families_prefer_one_allow_both():
    async with DNSServer(ZONE) as server:
        both = await locator(server, families=(6, 4)).locate("sip:bob@plain.example.test")
        v4 = await locator(server, families=(4,)).locate("sip:bob@plain.example.test")
        v6 = await locator(server, families=(6,)).locate("sip:bob@plain.example.test")
    assert both == [
        Destination("udp", "::1", 5060, "plain.example.test"),
        Destination("udp", "127.0.0.20", 5060, "plain.example.test"),
    ]
    assert v4 == [Destination("udp", "127.0.0.20", 5060, "plain.example.test")]
    assert v6 == [Destination("udp", "::1", 5060, "plain.example.test")]


async def test_numeric_ip_and_explicit_port_skip_naptr_and_srv():
    async with DNSServer(ZONE) as server:
        loc = locator(server)
        assert await loc.locate("sip:bob@127.0.0.9:5099") == [
            Destination("udp", "127.0.0.9", 5099, "127.0.0.9")
        ]
        assert server.queries == []
        assert await loc.locate("sip:bob@plain.example.test:5088;transport=tcp") == [
            Destination("tcp", "127.0.0.20", 5088, "plain.example.test")
        ]
    assert [(n, t) for n, t, _ in server.queries] == [("plain.example.test", "A")]


async def test_sips_uses_tls_only():
    zone = dict(ZONE)
    zone[("example.test", "NAPTR")] = ZONE[("example.test", "NAPTR")] + [
        '30 10 "s" "SIPS+D2T" "" _sips._tcp.example.test.'
    ]
    zone[("_sips._tcp.example.test", "SRV")] = ["0 0 5061 primary.example.test."]
    async with DNSServer(zone) as server:
        out = await locator(server).locate("sips:bob@example.test")
    assert out == [Destination("tls", "127.0.0.11", 5061, "primary.example.test")]
    assert ("_sip._udp.example.test", "SRV") not in [(n, t) for n, t, _ in server.queries]


async def test_cache_respects_ttl():
    zone = {("a.example.test", "A"): ["127.0.0.30"], ("b.example.test", "A"): ["127.0.0.31"]}
    ttls = {("b.example.test", "A"): 0}
    async with DNSServer(zone, ttls=ttls) as server:
        loc = locator(server)
        for _ in range(3):
            await loc.locate("sip:x@a.example.test:5060")
            await loc.locate("sip:x@b.example.test:5060")
    assert server.count("a.example.test", "A") == 1  # TTL 300: cached
    assert server.count("b.example.test", "A") == 3  # TTL 0: never cached
    assert loc.stats["cache_hits"] == 2


async def test_negative_answers_are_cached():
    async with DNSServer(ZONE) as server:
        loc = locator(server, transports=("udp",))
        first = await loc.locate("sip:x@plain.example.test")
        second = await loc.locate("sip:x@plain.example.test")
    assert first == second == [Destination("udp", "127.0.0.20", 5060, "plain.example.test")]
    # NODATA for NAPTR and NXDOMAIN for the SRV name: asked once each.
    assert server.count("plain.example.test", "NAPTR") == 1
    assert server.count("_sip._udp.plain.example.test", "SRV") == 1


def test_record_cache_expiry_and_bound():
    cache = RecordCache(3, max_ttl=100, negative_ttl=5)
    q = [Query(f"h{i}.test", "A") for i in range(5)]
    cache.put(q[0], ["127.0.0.1"], 10, now=0.0)
    assert cache.get(q[0], now=9.9) == ("127.0.0.1",)
    assert cache.get(q[0], now=10.0) is None  # expired, and dropped
    assert len(cache) == 0
    cache.put(q[1], ["127.0.0.1"], 10**9, now=0.0)
    assert cache.get(q[1], now=99.0) is not None and cache.get(q[1], now=100.0) is None
    cache.put(q[2], [], None, now=0.0)  # negative
    assert cache.get(q[2], now=4.0) == () and cache.get(q[2], now=5.0) is None
    for i in range(5):
        cache.put(q[i], ["127.0.0.1"], 60, now=0.0)
        cache.get(q[0], now=0.0)  # keep q[0] recently used
    assert len(cache) == 3
    assert cache.get(q[0], now=1.0) is not None  # survived: recently used
    assert cache.get(q[1], now=1.0) is None  # evicted first
    cache.put(q[4], ["127.0.0.1"], 0, now=2.0)  # TTL 0 replaces nothing, keeps nothing
    assert cache.get(q[4], now=2.0) is None
    with pytest.raises(ValueError):
        RecordCache(0)


async def test_server_that_never_answers_times_out():
    async with SilentServer() as silent:
        loc = locator(silent, query_timeout=0.2, lifetime=5.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(LocationError) as info:
            await loc.locate("sip:bob@example.test", transports=("udp",))
        elapsed = loop.time() - start
    # Three rounds (NAPTR; SRV; A), each bounded by the query timeout.
    assert 0.5 <= elapsed < 2.0, elapsed
    assert "no answer in 0.2 s" in str(info.value)
    assert silent.received >= 3
    assert loc.stats["timeouts"] == 3


async def test_lifetime_bounds_the_whole_location():
    async with SilentServer() as silent:
        loc = locator(silent, query_timeout=1.0, lifetime=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(LocationError, match="took longer than 0.3 s"):
            await loc.locate("sip:bob@example.test")
        assert loop.time() - start < 0.8


async def test_failover_to_the_next_name_server():
    async with SilentServer() as silent, DNSServer(ZONE) as server:
        loc = locator(silent, server, query_timeout=1.0)
        out = await loc.locate("sip:bob@plain.example.test:5060")
    assert out == [Destination("udp", "127.0.0.20", 5060, "plain.example.test")]
    assert silent.received >= 1


async def test_failover_past_a_target_whose_lookup_fails():
    zone = dict(ZONE)
    async with DNSServer(zone, drop={"primary.example.test"}) as server:
        loc = locator(server, query_timeout=0.3, transports=("udp",))
        out = await loc.locate("sip:alice@example.test")
    # DNS gives an address set in no fixed order: the host's addresses, in either order.
    assert sorted(out) == [
        Destination("udp", "127.0.0.12", 5060, "backup.example.test"),
        Destination("udp", "127.0.0.13", 5060, "backup.example.test"),
    ]
    targets = TargetList(out)
    assert targets.failed("503") == out[1]
    assert targets.failed("timeout") is None


async def test_servfail_is_noted_and_location_goes_on():
    async with DNSServer(ZONE, servfail={"example.test"}) as server:
        loc = locator(server, transports=("udp",))
        out = await loc.locate("sip:alice@example.test")
    # NAPTR got SERVFAIL: treated as no NAPTR, so the SRV fallback still found the servers.
    assert [d.hostname for d in out] == [
        "primary.example.test",
        "backup.example.test",
        "backup.example.test",
    ]
    assert loc.stats["failures"] == 1
    assert server.count("_sip._udp.example.test", "SRV") == 1


async def test_event_loop_keeps_running_during_a_slow_lookup():
    loop = asyncio.get_running_loop()
    ticks: list[float] = []
    stop = asyncio.Event()

    def tick() -> None:
        ticks.append(loop.time())
        if not stop.is_set():
            loop.call_later(0.01, tick)

    async with DNSServer(ZONE, delays={"plain.example.test": 0.5}) as server:
        loc = locator(server, query_timeout=2.0)
        tick()
        start = loop.time()
        out = await loc.locate("sip:bob@plain.example.test:5060")
        took = loop.time() - start
        stop.set()
    assert out == [Destination("udp", "127.0.0.20", 5060, "plain.example.test")]
    assert took >= 0.5
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) >= 25, len(ticks)  # ~50 expected in 0.5 s
    assert max(gaps) < 0.15, max(gaps)


async def test_identical_lookups_in_flight_share_one_query():
    async with DNSServer(ZONE, delays={"plain.example.test": 0.2}) as server:
        loc = locator(server)
        results = await asyncio.gather(
            *(loc.locate("sip:x@plain.example.test:5060") for _ in range(20))
        )
    assert all(r == results[0] for r in results)
    assert server.count("plain.example.test", "A") == 1
    assert loc.stats["coalesced"] == 19


async def test_oversized_answer_is_read_over_tcp_and_capped():
    srv = [f"0 1 5060 t{i}.big.test." for i in range(200)]
    zone = {("_sip._udp.big.test", "SRV"): srv}
    for i in range(200):
        zone[(f"t{i}.big.test", "A")] = [f"127.0.{i // 250}.{i % 250 + 1}"] * 1
    async with DNSServer(zone) as server:
        loc = locator(server, transports=("udp",))
        out = await loc.locate("sip:x@big.test;transport=udp")
    assert ("_sip._udp.big.test", "SRV", "tcp") in server.queries  # truncated over UDP
    assert 0 < len(out) <= MAX_DESTINATIONS
    # Only a bounded number of targets were looked up, not 200.
    assert sum(1 for n, t, _ in server.queries if t == "A") <= 12


async def test_garbage_answers_do_not_crash():
    loop = asyncio.get_running_loop()

    class Garbage(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data[:2] + bytes(range(256)) * 2, addr)  # same id, junk

    transport, _ = await loop.create_datagram_endpoint(Garbage, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        loc = ServerLocator([("127.0.0.1", port)], query_timeout=0.3, lifetime=3.0)
        with pytest.raises(LocationError):
            await loc.locate("sip:x@example.test")
        with pytest.raises(HostResolutionError):
            await loc.resolve_host("media.example.test", 4, timeout=0.3)
    finally:
        transport.close()


# --- resolve_host (SDP c= host names) -------------------------------------------------
async def test_resolve_host():
    async with DNSServer(ZONE, drop={"dead.example.test"}) as server:
        loc = locator(server)
        assert await loc.resolve_host("plain.example.test", 4) == "127.0.0.20"
        assert await loc.resolve_host("PLAIN.example.test.", 6) == "::1"
        assert await loc.resolve_host("127.0.0.7", 4) == "127.0.0.7"
        with pytest.raises(HostResolutionError, match="IPv6"):
            await loc.resolve_host("127.0.0.7", 6)
        with pytest.raises(HostResolutionError, match="no IPv6 address"):
            await loc.resolve_host("backup.example.test", 6)
        with pytest.raises(HostResolutionError, match="no IPv4 address"):
            await loc.resolve_host("nosuch.example.test", 4)
        with pytest.raises(HostResolutionError, match="not a host name"):
            await loc.resolve_host("bad name", 4)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(HostResolutionError, match="no answer"):
            await loc.resolve_host("dead.example.test", 4, timeout=0.2)
        assert loop.time() - start < 0.7
        with pytest.raises(ValueError):
            await loc.resolve_host("plain.example.test", 5)


async def test_cached_host_never_looks_up():
    async with DNSServer(ZONE) as server:
        loc = locator(server)
        assert loc.cached_host("127.0.0.8", 4) == "127.0.0.8"
        assert loc.cached_host("127.0.0.8", 6) is None
        assert loc.cached_host("plain.example.test", 4) is None  # not asked yet
        assert server.queries == []
        await loc.resolve_host("plain.example.test", 4)
        assert loc.cached_host("plain.example.test", 4) == "127.0.0.20"
        assert loc.cached_host("plain.example.test", 6) is None
        assert loc.cached_host("localhost", 4) == "127.0.0.1"
        assert loc.cached_host("bad name", 4) is None
    assert server.count("plain.example.test", "A") == 1


async def test_hosts_file_answers_first(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.5 media.test pbx.test # trailing\n::1 media.test\nbad\n")
    async with DNSServer(ZONE) as server:
        loc = locator(server, hosts_file=str(hosts))
        assert await loc.resolve_host("media.test", 4) == "127.0.0.5"
        assert await loc.resolve_host("media.test", 6) == "::1"
        assert await loc.locate("sip:x@pbx.test:5062") == [
            Destination("udp", "127.0.0.5", 5062, "pbx.test")
        ]
        # No port: NAPTR and SRV for a hosts-file name are empty without asking DNS.
        assert await loc.locate("sip:x@pbx.test", transports=("udp", "tcp")) == [
            Destination("udp", "127.0.0.5", 5060, "pbx.test")
        ]
        with pytest.raises(HostResolutionError, match="no IPv6"):
            await loc.resolve_host("pbx.test", 6)  # known name, no IPv6 line: not sent to DNS
        # localhost never goes to DNS (RFC 6761 s.6.3), hosts file or not.
        assert await loc.resolve_host("localhost", 4) == "127.0.0.1"
        assert await loc.resolve_host("db.localhost", 6) == "::1"
    assert server.queries == []


async def test_close_cancels_lookups_in_flight():
    async with SilentServer() as silent:
        loc = locator(silent, query_timeout=5.0, lifetime=5.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        task = asyncio.ensure_future(loc.resolve_host("media.example.test", 4))
        await asyncio.sleep(0.05)
        assert loc._inflight
        await loc.close()
        with pytest.raises(HostResolutionError, match="cancelled"):
            await task
        assert loop.time() - start < 1.0
        await asyncio.sleep(0)
        assert not loc._inflight


async def test_a_cancelled_caller_leaves_the_shared_lookup_to_the_others():
    async with DNSServer(ZONE, delays={"plain.example.test": 0.2}) as server:
        loc = locator(server)
        first = asyncio.ensure_future(loc.resolve_host("plain.example.test", 4))
        second = asyncio.ensure_future(loc.resolve_host("plain.example.test", 4))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == "127.0.0.20"
    assert server.count("plain.example.test", "A") == 1


def test_parse_hosts():
    assert parse_hosts("127.0.0.1 localhost Loop\n10.0.0.1\nfoo bar\n::1 localhost\n") == {
        "localhost": ["127.0.0.1", "::1"],
        "loop": ["127.0.0.1"],
    }


async def test_missing_resolver_configuration_is_a_clear_error(tmp_path):
    loc = ServerLocator(resolv_conf=str(tmp_path / "missing.conf"), hosts_file=None)
    with pytest.raises(LocationError, match="SIP_DNS_SERVERS"):
        await loc.locate("sip:x@example.test:5060")
    # Numeric URIs need no DNS at all.
    assert await loc.locate("sip:x@127.0.0.1") == [
        Destination("udp", "127.0.0.1", 5060, "127.0.0.1")
    ]


async def test_system_configuration_is_read_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver ::1\n")
    loc = ServerLocator(resolv_conf=str(conf), hosts_file=None)
    await loc._setup()  # reads the file in a worker thread; sends nothing
    assert loc._resolver is not None
    names = [getattr(ns, "address", ns) for ns in loc._resolver.nameservers]
    assert names == ["127.0.0.1", "::1"]


def test_parse_nameservers():
    assert parse_nameservers("127.0.0.1, 127.0.0.2:5353 [::1]:5300 ::1") == [
        ("127.0.0.1", 53),
        ("127.0.0.2", 5353),
        ("::1", 5300),
        ("::1", 53),
    ]
    assert parse_nameservers([("127.0.0.1", 5353)]) == [("127.0.0.1", 5353)]
    for bad in ("dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]:99999"):
        with pytest.raises(ValueError, match="name server"):
            parse_nameservers(bad)
    with pytest.raises(ValueError):
        ServerLocator("")
