"""RFC 3263 server location, sans-IO: fake record sets in, ordered destinations out."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.locate import (
    MAX_ADDRESSES_PER_HOST,
    MAX_DESTINATIONS,
    MAX_NOTES,
    MAX_RECORDS,
    MAX_TARGETS,
    Destination,
    LocationError,
    NAPTRRecord,
    Query,
    ServerLocation,
    SRVRecord,
    TargetList,
    normalize_name,
    order_naptr,
    order_srv,
    uri_transport,
)
from pipecat_sip.sip.uri import SIPURI

ALL = ("udp", "tcp", "tls")


class FakeDNS:
    """Records by (name, rdtype); records every query asked; None answers mean a timeout."""

    def __init__(self, records: dict[tuple[str, str], list | None] | None = None) -> None:
        self.records = records or {}
        self.asked: list[Query] = []

    def __call__(self, query: Query):
        self.asked.append(query)
        return self.records.get((query.name, query.rdtype), [])

    def asked_types(self) -> list[tuple[str, str]]:
        return [(q.name, q.rdtype) for q in self.asked]


def locate(uri: str, dns: FakeDNS, **kw) -> list[Destination]:
    kw.setdefault("transports", ALL)
    kw.setdefault("rng", random.Random(1))
    return ServerLocation(SIPURI.parse(uri), **kw).run(dns)


def naptr(order, pref, service, replacement, flags="s", regexp=""):
    return NAPTRRecord(order, pref, flags, service, regexp, replacement)


# --- s.4.1/4.2: what the URI alone decides ------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:bob@192.0.2.1", Destination("udp", "192.0.2.1", 5060, "192.0.2.1")),
        ("sip:bob@192.0.2.1:5070", Destination("udp", "192.0.2.1", 5070, "192.0.2.1")),
        ("sips:bob@192.0.2.1", Destination("tls", "192.0.2.1", 5061, "192.0.2.1")),
        ("sip:bob@192.0.2.1;transport=tcp", Destination("tcp", "192.0.2.1", 5060, "192.0.2.1")),
        ("sip:bob@192.0.2.1;transport=TLS", Destination("tls", "192.0.2.1", 5061, "192.0.2.1")),
        ("sips:bob@192.0.2.1;transport=tcp", Destination("tls", "192.0.2.1", 5061, "192.0.2.1")),
        ("sip:bob@[2001:db8::1]:5062", Destination("udp", "2001:db8::1", 5062, "2001:db8::1")),
        ("sip:bob@[2001:DB8:0::1]", Destination("udp", "2001:db8::1", 5060, "2001:db8::1")),
    ],
)
def test_numeric_ip_needs_no_lookup(uri, expected):
    dns = FakeDNS()
    assert locate(uri, dns, families=(6, 4)) == [expected]
    assert dns.asked == []


def test_numeric_ip_of_a_family_we_cannot_use_is_an_error():
    with pytest.raises(LocationError, match="IPv6"):
        locate("sip:bob@[2001:db8::1]", FakeDNS(), families=(4,))


def test_explicit_port_skips_naptr_and_srv():
    dns = FakeDNS({("pbx.example.com", "A"): ["198.51.100.5"]})
    out = locate("sip:bob@pbx.example.com:5080", dns)
    assert out == [Destination("udp", "198.51.100.5", 5080, "pbx.example.com")]
    assert dns.asked_types() == [("pbx.example.com", "A")]


def test_explicit_port_with_sips_is_tls():
    dns = FakeDNS({("pbx.example.com", "A"): ["198.51.100.5"]})
    assert locate("sips:bob@pbx.example.com:5081", dns) == [
        Destination("tls", "198.51.100.5", 5081, "pbx.example.com")
    ]


def test_transport_param_skips_naptr_and_asks_its_srv():
    dns = FakeDNS(
        {
            ("_sip._tcp.example.com", "SRV"): [SRVRecord(10, 0, 5070, "edge.example.com.")],
            ("edge.example.com", "A"): ["198.51.100.7"],
        }
    )
    out = locate("sip:bob@Example.COM;transport=TCP", dns)
    assert out == [Destination("tcp", "198.51.100.7", 5070, "edge.example.com")]
    assert dns.asked_types() == [("_sip._tcp.example.com", "SRV"), ("edge.example.com", "A")]


def test_transport_param_without_srv_uses_the_default_port():
    dns = FakeDNS({("example.com", "A"): ["198.51.100.8"]})
    assert locate("sip:bob@example.com;transport=tcp", dns) == [
        Destination("tcp", "198.51.100.8", 5060, "example.com")
    ]


def test_transport_param_we_do_not_support_is_an_error():
    with pytest.raises(LocationError, match="transport=sctp"):
        locate("sip:bob@example.com;transport=sctp", FakeDNS())
    with pytest.raises(LocationError, match="transport=tcp"):
        locate("sip:bob@example.com;transport=tcp", FakeDNS(), transports=("udp",))


def test_sips_over_udp_is_an_error():
    with pytest.raises(LocationError, match="sips"):
        uri_transport(SIPURI.parse("sips:bob@example.com;transport=udp"), ALL)


def test_sips_without_tls_support_is_an_error():
    with pytest.raises(LocationError):
        locate("sips:bob@192.0.2.1", FakeDNS(), transports=("udp", "tcp"))


def test_maddr_is_the_target():
    dns = FakeDNS()
    out = locate("sip:bob@example.com;maddr=192.0.2.9", dns)
    assert out == [Destination("udp", "192.0.2.9", 5060, "192.0.2.9")]
    assert dns.asked == []


def test_no_udp_means_tcp_for_a_sip_uri():
    assert uri_transport(SIPURI.parse("sip:b@192.0.2.1"), ("tcp",)) == "tcp"


# --- s.4.1: NAPTR ------------------------------------------------------------------------
def test_naptr_then_srv_then_a_in_order_with_failover():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): [
                naptr(20, 10, "SIP+D2U", "_sip._udp.example.com."),
                naptr(10, 20, "SIP+D2T", "_sip._tcp.example.com."),
                naptr(10, 10, "SIPS+D2T", "_sips._tcp.example.com."),
            ],
            ("_sips._tcp.example.com", "SRV"): [
                SRVRecord(1, 0, 5061, "b.example.com."),
                SRVRecord(0, 0, 5061, "a.example.com."),
            ],
            ("_sip._tcp.example.com", "SRV"): [SRVRecord(0, 0, 5060, "a.example.com.")],
            ("_sip._udp.example.com", "SRV"): [SRVRecord(0, 0, 5060, "c.example.com.")],
            ("a.example.com", "A"): ["198.51.100.1"],
            ("b.example.com", "A"): ["198.51.100.2", "198.51.100.3"],
            ("c.example.com", "A"): ["198.51.100.4"],
        }
    )
    out = locate("sip:bob@example.com", dns)
    assert out == [
        Destination("tls", "198.51.100.1", 5061, "a.example.com"),
        Destination("tls", "198.51.100.2", 5061, "b.example.com"),
        Destination("tls", "198.51.100.3", 5061, "b.example.com"),
        Destination("tcp", "198.51.100.1", 5060, "a.example.com"),
        Destination("udp", "198.51.100.4", 5060, "c.example.com"),
    ]
    # The first query is NAPTR alone; no SRV for the domain itself is asked.
    assert dns.asked[0] == Query("example.com", "NAPTR")
    assert ("_sip._udp.example.com", "SRV") in dns.asked_types()
    assert all(not n.startswith("_sip._udp.example.com.") for n, _ in dns.asked_types())

    targets = TargetList(out)
    assert targets.current == out[0]
    assert targets.failed("timeout") == out[1]
    assert TargetList.should_fail_over(503)
    assert targets.failed("503") == out[2]
    assert targets.failed("transport error") == out[3]
    assert targets.failed("timeout") == out[4]
    assert targets.failed("timeout") is None
    assert targets.exhausted and targets.current is None
    assert [reason for _, reason in targets.failures] == [
        "timeout",
        "503",
        "transport error",
        "timeout",
        "timeout",
    ]
    assert targets.failed("again") is None  # nothing left: no error, nothing recorded
    assert len(targets.failures) == 5


def test_naptr_queries_of_a_round_are_pending_together():
    location = ServerLocation(SIPURI.parse("sip:b@example.com"), transports=ALL)
    assert location.state == "naptr"
    (first,) = location.queries()
    location.receive(first, [])
    assert location.state == "srv"
    assert sorted(q.name for q in location.queries()) == [
        "_sip._tcp.example.com",
        "_sip._udp.example.com",
        "_sips._tcp.example.com",
    ]


def test_sips_keeps_only_sips_naptr_records():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): [
                naptr(10, 10, "SIP+D2U", "_sip._udp.example.com"),
                naptr(20, 10, "SIPS+D2T", "_sips._tcp.example.com"),
            ],
            ("_sip._udp.example.com", "SRV"): [SRVRecord(0, 0, 5060, "u.example.com")],
            ("_sips._tcp.example.com", "SRV"): [SRVRecord(0, 0, 5061, "t.example.com")],
            ("u.example.com", "A"): ["198.51.100.1"],
            ("t.example.com", "A"): ["198.51.100.2"],
        }
    )
    assert locate("sips:bob@example.com", dns) == [
        Destination("tls", "198.51.100.2", 5061, "t.example.com")
    ]
    assert ("_sip._udp.example.com", "SRV") not in dns.asked_types()


def test_naptr_for_transports_we_lack_falls_back_to_srv():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): [
                naptr(10, 10, "SIP+D2T", "_sip._tcp.example.com"),
                naptr(10, 10, "SIP+D2S", "_sip._sctp.example.com"),
                naptr(10, 10, "http+N2L", "www.example.com"),
            ],
            ("_sip._udp.example.com", "SRV"): [SRVRecord(0, 0, 5060, "u.example.com")],
            ("u.example.com", "A"): ["198.51.100.1"],
        }
    )
    out = locate("sip:bob@example.com", dns, transports=("udp",))
    assert out == [Destination("udp", "198.51.100.1", 5060, "u.example.com")]
    assert ("_sip._tcp.example.com", "SRV") not in dns.asked_types()


def test_naptr_with_regexp_or_other_flags_is_ignored():
    records = [
        naptr(10, 10, "SIP+D2U", "_sip._udp.a.example", flags="a"),
        naptr(10, 10, "SIP+D2U", "", regexp="!^.*$!sip:x@y!"),
        naptr(10, 10, "SIP+D2U", "bad\\000name.example"),
        naptr(20, 10, "SIP+D2U", "_sip._udp.b.example"),
    ]
    assert order_naptr(records, secure=False) == [("udp", "_sip._udp.b.example")]


def test_naptr_whose_srv_is_empty_moves_to_the_next_one():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): [
                naptr(10, 10, "SIP+D2U", "_sip._udp.example.com"),
                naptr(20, 10, "SIP+D2T", "_sip._tcp.example.com"),
            ],
            ("_sip._tcp.example.com", "SRV"): [SRVRecord(0, 0, 5070, "t.example.com")],
            ("t.example.com", "A"): ["198.51.100.2"],
        }
    )
    assert locate("sip:bob@example.com", dns) == [
        Destination("tcp", "198.51.100.2", 5070, "t.example.com")
    ]


def test_naptr_with_no_srv_at_all_uses_its_transport_on_the_domain():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): [naptr(10, 10, "SIP+D2T", "_sip._tcp.example.com")],
            ("example.com", "A"): ["198.51.100.3"],
        }
    )
    assert locate("sip:bob@example.com", dns) == [
        Destination("tcp", "198.51.100.3", 5060, "example.com")
    ]


# --- s.4.1: SRV without NAPTR, then A/AAAA -------------------------------------------------
def test_no_naptr_asks_srv_per_transport_in_our_order():
    dns = FakeDNS(
        {
            ("_sip._udp.example.com", "SRV"): [SRVRecord(0, 0, 5060, "u.example.com")],
            ("_sip._tcp.example.com", "SRV"): [SRVRecord(0, 0, 5060, "t.example.com")],
            ("u.example.com", "A"): ["198.51.100.1"],
            ("t.example.com", "A"): ["198.51.100.2"],
        }
    )
    out = locate("sip:bob@example.com", dns, transports=("tcp", "udp"))
    assert out == [
        Destination("tcp", "198.51.100.2", 5060, "t.example.com"),
        Destination("udp", "198.51.100.1", 5060, "u.example.com"),
    ]
    assert ("_sips._tcp.example.com", "SRV") not in dns.asked_types()


def test_sips_without_naptr_asks_only_sips_srv():
    dns = FakeDNS({("example.com", "A"): ["198.51.100.9"]})
    out = locate("sips:bob@example.com", dns)
    assert out == [Destination("tls", "198.51.100.9", 5061, "example.com")]
    srv = [n for n, t in dns.asked_types() if t == "SRV"]
    assert srv == ["_sips._tcp.example.com"]


def test_no_naptr_no_srv_means_a_and_aaaa_on_the_default_port():
    dns = FakeDNS(
        {
            ("pbx.example.com", "A"): ["198.51.100.5"],
            ("pbx.example.com", "AAAA"): ["2001:db8::5"],
        }
    )
    assert locate("sip:bob@pbx.example.com", dns, families=(6, 4)) == [
        Destination("udp", "2001:db8::5", 5060, "pbx.example.com"),
        Destination("udp", "198.51.100.5", 5060, "pbx.example.com"),
    ]
    dns.asked.clear()
    assert locate("sip:bob@pbx.example.com", dns, families=(4,)) == [
        Destination("udp", "198.51.100.5", 5060, "pbx.example.com")
    ]
    assert ("pbx.example.com", "AAAA") not in dns.asked_types()


def test_srv_target_dot_means_no_service():
    dns = FakeDNS(
        {
            ("_sip._udp.example.com", "SRV"): [SRVRecord(0, 0, 0, ".")],
            ("example.com", "A"): ["198.51.100.5"],
        }
    )
    with pytest.raises(LocationError, match="not available"):
        locate("sip:bob@example.com", dns, transports=("udp",))


def test_timeouts_move_on_to_the_next_step():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): None,  # timed out
            ("_sip._udp.example.com", "SRV"): [
                SRVRecord(0, 0, 5060, "dead.example.com"),
                SRVRecord(1, 0, 5060, "live.example.com"),
            ],
            ("dead.example.com", "A"): None,
            ("live.example.com", "A"): ["198.51.100.6"],
        }
    )
    location = ServerLocation(SIPURI.parse("sip:b@example.com"), transports=("udp",))
    assert location.run(dns) == [Destination("udp", "198.51.100.6", 5060, "live.example.com")]
    assert any("NAPTR example.com" in note for note in location.notes)
    assert any("dead.example.com" in note for note in location.notes)


def test_nothing_found_explains_why():
    dns = FakeDNS({("example.com", "NAPTR"): None})
    with pytest.raises(LocationError) as info:
        locate("sip:bob@example.com", dns, transports=("udp",))
    assert "NAPTR example.com: no answer" in str(info.value)
    assert info.value.notes


def test_duplicate_destinations_are_tried_once():
    dns = FakeDNS(
        {
            ("_sip._udp.example.com", "SRV"): [
                SRVRecord(0, 0, 5060, "a.example.com"),
                SRVRecord(1, 0, 5060, "b.example.com"),
            ],
            ("a.example.com", "A"): ["198.51.100.1", "198.51.100.1"],
            ("b.example.com", "A"): ["198.51.100.1"],
        }
    )
    assert locate("sip:b@example.com", dns, transports=("udp",)) == [
        Destination("udp", "198.51.100.1", 5060, "a.example.com")
    ]


def test_receive_checks_the_query():
    location = ServerLocation(SIPURI.parse("sip:b@example.com"))
    with pytest.raises(LocalProtocolError):
        location.receive(Query("other.example", "A"), [])
    with pytest.raises(LocalProtocolError):
        location.destinations()
    (query,) = location.queries()
    location.receive(query, [])
    with pytest.raises(LocalProtocolError):
        location.receive(query, [])  # answered already


def test_bad_arguments():
    with pytest.raises(ValueError):
        ServerLocation(SIPURI.parse("sip:b@example.com"), transports=("sctp",))
    with pytest.raises(ValueError):
        ServerLocation(SIPURI.parse("sip:b@example.com"), families=(5,))


# --- RFC 2782 ordering -----------------------------------------------------------------
def test_srv_priority_orders_first():
    records = [
        SRVRecord(20, 100, 5060, "c.example"),
        SRVRecord(10, 1, 5060, "b.example"),
        SRVRecord(0, 0, 5060, "a.example"),
    ]
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert [r.target for r in ordered] == ["a.example", "b.example", "c.example"]


def test_srv_weights_are_proportional():
    records = [
        SRVRecord(0, 10, 5060, "a.example"),
        SRVRecord(0, 30, 5060, "b.example"),
        SRVRecord(0, 60, 5060, "c.example"),
    ]
    rng = random.Random(3263)
    n = 20000
    first = Counter(order_srv(records, rng)[0].target for _ in range(n))
    for target, share in (("a.example", 0.1), ("b.example", 0.3), ("c.example", 0.6)):
        assert abs(first[target] / n - share) < 0.015, first
    # Every draw is a permutation of all three.
    assert sorted(r.target for r in order_srv(records, rng)) == [
        "a.example",
        "b.example",
        "c.example",
    ]


def test_srv_weight_zero_is_rarely_first():
    records = [SRVRecord(0, 0, 5060, "zero.example"), SRVRecord(0, 100, 5060, "w.example")]
    rng = random.Random(7)
    n = 5000
    first = Counter(order_srv(records, rng)[0].target for _ in range(n))
    assert first["zero.example"] / n < 0.03  # 1/101 expected
    assert first["zero.example"] > 0
    # All weights zero: each record is still tried.
    zeros = [SRVRecord(0, 0, 5060, f"{c}.example") for c in "abc"]
    assert len(order_srv(zeros, rng)) == 3


def test_srv_drops_records_it_cannot_use():
    records = [
        SRVRecord(0, 0, 0, "zero-port.example"),
        SRVRecord(0, 0, 70000, "big-port.example"),
        SRVRecord(-1, 0, 5060, "negative.example"),
        SRVRecord(0, 0, 5060, "bad name.example"),
        SRVRecord(0, 0, 5060, "."),
        SRVRecord(0, 0, 5060, "ok.example."),
    ]
    assert [r.target for r in order_srv(records, random.Random(0))] == ["ok.example."]


# --- bounds on hostile answers --------------------------------------------------------
def test_oversized_answers_are_capped():
    asked: list[Query] = []

    def dns(query: Query):
        asked.append(query)
        if query.rdtype == "NAPTR":
            return [naptr(i, 0, "SIP+D2U", f"_sip._udp.n{i}.example") for i in range(5000)]
        if query.rdtype == "SRV":
            return [SRVRecord(0, 1, 5060, f"t{i}.example") for i in range(10000)]
        i = int(query.name[1:].split(".")[0])
        return [f"10.{i % 256}.{j // 256}.{j % 256}" for j in range(300)]

    location = ServerLocation(SIPURI.parse("sip:b@example.com"), transports=("udp",))
    out = location.run(dns)
    assert len(out) == MAX_DESTINATIONS
    # Work is bounded: 1 NAPTR + a few SRV + A for at most MAX_TARGETS hosts.
    assert len(asked) <= 1 + 6 + MAX_TARGETS
    assert len({q.name for q in asked if q.rdtype == "A"}) <= MAX_TARGETS
    per_host = Counter(d.hostname for d in out)
    assert max(per_host.values()) <= MAX_ADDRESSES_PER_HOST
    assert len(location.notes) <= MAX_NOTES
    assert any(f"used {MAX_RECORDS} of 5000" in note for note in location.notes)


def test_malformed_records_are_ignored():
    dns = FakeDNS(
        {
            ("example.com", "NAPTR"): ["not a record", SRVRecord(0, 0, 1, "x")],
            ("_sip._udp.example.com", "SRV"): [
                "junk",
                naptr(1, 1, "SIP+D2U", "x"),
                SRVRecord(0, 0, 5060, "h.example"),
            ],
            ("h.example", "A"): [
                "0.0.0.0",
                "224.0.0.1",
                "255.255.255.255",
                "2001:db8::1",
                "999.1.1.1",
                "",
                42,
                "198.51.100.1",
            ],
        }
    )
    assert locate("sip:b@example.com", dns, transports=("udp",)) == [
        Destination("udp", "198.51.100.1", 5060, "h.example")
    ]


def test_bad_host_names():
    assert normalize_name("Example.COM.") == "example.com"
    assert normalize_name(".") is None
    assert normalize_name("a" * 64 + ".example") is None
    assert normalize_name(("a." * 127) + "bc") is None  # 256 characters
    assert normalize_name("-bad.example") is None
    assert normalize_name("x\\000.example") is None
    assert normalize_name("_sip._udp.example.com") == "_sip._udp.example.com"


def test_target_list_is_bounded_and_iterable():
    dests = [Destination("udp", "192.0.2.1", p, "h") for p in range(1, 1000)]
    targets = TargetList(dests)
    assert len(targets) == MAX_DESTINATIONS
    assert list(targets)[:2] == dests[:2]
    assert targets.remaining == dests[:MAX_DESTINATIONS]
    assert not TargetList.should_fail_over(486)
    assert not TargetList.should_fail_over(200)
    empty = TargetList([])
    assert empty.current is None and empty.exhausted


_name = st.sampled_from(["example.com", "a.example.com", "b.example.com", ".", "", "x\\000y"])
_naptr = st.builds(
    NAPTRRecord,
    st.integers(-5, 70000),
    st.integers(-5, 70000),
    st.sampled_from(["s", "S", "a", ""]),
    st.sampled_from(["SIP+D2U", "SIP+D2T", "SIPS+D2T", "SIP+D2S", "x"]),
    st.sampled_from(["", "!x!y!"]),
    st.sampled_from(["_sip._udp.example.com", "_sip._tcp.example.com", ".", "bad name"]),
)
_srv = st.builds(
    SRVRecord, st.integers(-5, 70000), st.integers(-5, 70000), st.integers(-1, 70000), _name
)
_addr = st.sampled_from(["198.51.100.1", "2001:db8::1", "0.0.0.0", "junk", "::", "::ffff:1.2.3.4"])


@settings(max_examples=200, deadline=None)
@given(
    naptrs=st.lists(_naptr, max_size=8),
    srvs=st.lists(_srv, max_size=8),
    addrs=st.lists(_addr, max_size=8),
    uri=st.sampled_from(
        ["sip:b@example.com", "sips:b@example.com", "sip:b@example.com;transport=tcp"]
    ),
)
def test_any_answers_give_destinations_or_location_error(naptrs, srvs, addrs, uri):
    def lookup(query: Query):
        if query.rdtype == "NAPTR":
            return naptrs
        if query.rdtype == "SRV":
            return srvs
        return addrs

    location = ServerLocation(
        SIPURI.parse(uri), transports=ALL, families=(6, 4), rng=random.Random(0)
    )
    try:
        out = location.run(lookup)
    except LocationError:
        return
    assert 0 < len(out) <= MAX_DESTINATIONS
    for dest in out:
        assert dest.transport in ALL and 0 < dest.port < 65536


def test_locate_is_pure():
    """sip/locate.py imports the stdlib and pipecat_sip.sip only: no asyncio, socket or clock."""
    import ast
    import sys
    from pathlib import Path

    import pipecat_sip.sip.locate as module

    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    for name in names:
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or name.startswith("pipecat_sip.sip"), name
        assert top not in ("asyncio", "socket", "time", "selectors", "threading"), name
