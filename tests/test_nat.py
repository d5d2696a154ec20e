"""Public address from received/rport (RFC 3581): the pure reader and the UA's use of it."""

from __future__ import annotations

import pytest

from pipecat_sip.sip.message import SIPResponse, make_response, parse_message
from pipecat_sip.sip.nat import Mapping, PublicAddress, mapping_from_response
from pipecat_sip.sip.useragent import Notice, Registered, UserAgent

REGISTRAR = ("192.0.2.10", 5060)
PUBLIC = ("203.0.113.7", 40123)


def response_with_via(via: str) -> SIPResponse:
    return parse_message(
        (
            "SIP/2.0 200 OK\r\n"
            f"Via: {via}\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\n"
            "Call-ID: c1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        (
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.7;rport=40123",
            Mapping("UDP", "203.0.113.7", 40123),
        ),
        # received without rport: the address changed, the port is unknown
        (
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.7",
            Mapping("UDP", "203.0.113.7", None),
        ),
        # rport only: the server saw our sent-by host, another port
        (
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport=6000",
            Mapping("UDP", "10.0.0.5", 6000),
        ),
        (
            "SIP/2.0/TCP [2001:db8::5]:5070;branch=z9hG4bK1;received=2001:db8::9;rport=7000",
            Mapping("TCP", "2001:db8::9", 7000),
        ),
        # nothing learned: rport asked but not filled, received garbage, bad ports
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport", None),
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=evil.example;rport=5", None),
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport=70000", None),
        ("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport=0", None),
        ("SIP/2.0/UDP host.example:5070;branch=z9hG4bK1;rport=6000", None),
    ],
)
def test_mapping_from_the_top_via(via, expected):
    assert mapping_from_response(response_with_via(via)) == expected


def test_public_address_reports_changes_only():
    public = PublicAddress()
    local = ("10.0.0.5", 5070)
    nat = "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.7;rport=40123"
    assert public.observe(response_with_via(nat), local) == Mapping("UDP", *PUBLIC)
    assert public.observe(response_with_via(nat), local) is None  # same again
    moved = nat.replace("40123", "40999")
    assert public.observe(response_with_via(moved), local) == Mapping("UDP", PUBLIC[0], 40999)
    assert public.changes == 2
    # received without rport keeps our port
    public = PublicAddress()
    only_received = "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=203.0.113.7"
    assert public.observe(response_with_via(only_received), local) == Mapping(
        "UDP", PUBLIC[0], 5070
    )
    # no NAT on the path: recorded, not a change
    public = PublicAddress()
    direct = "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;rport=5070"
    assert public.observe(response_with_via(direct), local) is None
    assert public.for_transport("udp") == Mapping("UDP", "10.0.0.5", 5070)
    assert PublicAddress(enabled=False).observe(response_with_via(nat), local) is None


def sent(ua: UserAgent):
    return [parse_message(data) for data, _ in ua.datagrams_to_send()]


def answer_from_nat(ua: UserAgent, request, code: int, now: float, headers=()) -> None:
    """The registrar's answer, with the Via stamped as a server behind the NAT sees us."""
    response = make_response(request, code, to_tag="reg1", headers=headers)
    via = response.top_via
    via.params["received"] = PUBLIC[0]
    via.params["rport"] = str(PUBLIC[1])
    response.headers.set("Via", via)
    ua.receive_datagram(bytes(response), REGISTRAR, now)


def test_registration_behind_nat_rebinds_with_the_public_contact():
    ua = UserAgent("10.0.0.5", 5070, user="bot")
    ua.register("sip:pbx.example.com", REGISTRAR, 0.0, expires=600, password="pw")
    [first] = sent(ua)
    assert str(first.contacts[0].uri) == "sip:bot@10.0.0.5:5070"
    challenge = 'Digest realm="pbx", nonce="n1", qop="auth", algorithm=MD5'
    answer_from_nat(ua, first, 401, 0.1, [("WWW-Authenticate", challenge)])
    # The challenge taught us the mapping: the answer to it already carries it.
    [second] = sent(ua)
    assert second.headers.get("Authorization")
    assert str(second.contacts[0].uri) == f"sip:bot@{PUBLIC[0]}:{PUBLIC[1]}"
    # Via keeps our own sent-by (RFC 3581 changes nothing there).
    assert second.top_via.host == "10.0.0.5" and second.top_via.port == 5070
    notices = [e for e in iter(ua.next_event, None) if isinstance(e, Notice)]
    assert any(n.kind == "nat" and "203.0.113.7:40123" in n.message for n in notices)
    answer_from_nat(
        ua, second, 200, 0.2, [("Contact", f"<sip:bot@{PUBLIC[0]}:{PUBLIC[1]}>;expires=120")]
    )
    assert [e.expires for e in iter(ua.next_event, None) if isinstance(e, Registered)] == [120]
    assert sent(ua) == []  # nothing changed: no extra REGISTER
    # Calls answered later carry the public Contact too.
    assert str(ua.contact.uri) == f"sip:bot@{PUBLIC[0]}:{PUBLIC[1]}"


def test_a_mapping_learned_on_a_final_answer_registers_the_new_contact_at_once():
    ua = UserAgent("10.0.0.5", 5070, user="bot")
    ua.register("sip:pbx.example.com", REGISTRAR, 0.0, expires=600)
    [first] = sent(ua)
    answer_from_nat(ua, first, 200, 0.1, [("Expires", "600")])
    [again] = sent(ua)  # re-REGISTER right away with the public Contact
    assert again.method == "REGISTER" and again.cseq.seq == first.cseq.seq + 1
    assert str(again.contacts[0].uri) == f"sip:bot@{PUBLIC[0]}:{PUBLIC[1]}"
    answer_from_nat(ua, again, 200, 0.2, [("Expires", "600")])
    assert sent(ua) == []
