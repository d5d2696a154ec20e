"""RFC 3261 s.18.1.1: a request larger than 1300 bytes meant for UDP goes over TCP.

Sans-IO on a fake clock: a UserAgent that listens on TCP sends a large
INVITE over TCP with a TCP top Via (our TCP port, ``alias``), a small one
over UDP; when the TCP connection cannot be opened the same transaction
sends the request over UDP after all (Via back to UDP, Timer A
retransmitting); a CANCEL follows its INVITE's transport; without a TCP
listener everything stays on UDP. Then two real servers on loopback: a
large INVITE arrives over TCP, and one to a peer without TCP still gets
through over UDP.
"""

from __future__ import annotations

import pytest

from pipecat_sip.call import SIPCall
from pipecat_sip.sip.message import SIPRequest, parse_message
from pipecat_sip.sip.transport import LARGE_REQUEST_BYTES, Flow
from pipecat_sip.sip.useragent import UserAgent
from tests.helpers.callctl import start_beside
from tests.helpers.server import start_server, wait_for
from tests.sip_pair import SDP_OFFER

PEER = ("127.0.0.1", 5090)
PADDING = [("X-Padding", "p" * 700)]  # SDP_OFFER + headers + this: well over 1300 bytes


def sent(ua: UserAgent) -> list[tuple[SIPRequest, Flow, int]]:
    out = []
    for data, flow in ua.datagrams_to_send():
        message = parse_message(data)
        assert isinstance(message, SIPRequest)
        out.append((message, flow, len(data)))
    return out


def new_ua(**kwargs) -> UserAgent:
    return UserAgent("127.0.0.1", 5080, transport_ports={"TCP": 5081}, **kwargs)


def test_a_large_invite_goes_over_tcp_with_a_tcp_via():
    ua = new_ua()
    ua.invite(f"sip:bob@{PEER[0]}:{PEER[1]}", SDP_OFFER, 0.0, headers=PADDING)
    [(invite, flow, size)] = sent(ua)
    assert size > LARGE_REQUEST_BYTES
    assert flow == Flow("TCP", PEER)
    via = invite.top_via
    assert (via.transport, via.port) == ("TCP", 5081) and via.has_param("alias")
    ua.handle_timer(0.6)  # no Timer A over TCP
    assert sent(ua) == []


def test_a_small_invite_stays_on_udp():
    ua = new_ua()
    ua.invite(f"sip:bob@{PEER[0]}:{PEER[1]}", SDP_OFFER, 0.0)
    [(invite, flow, size)] = sent(ua)
    assert size <= LARGE_REQUEST_BYTES
    assert flow == Flow.udp(PEER) and invite.top_via.transport == "UDP"


@pytest.mark.parametrize(
    "ua", [UserAgent("127.0.0.1", 5080), new_ua(large_requests_over_tcp=False)]
)
def test_without_tcp_or_when_switched_off_a_large_invite_stays_on_udp(ua):
    ua.invite(f"sip:bob@{PEER[0]}:{PEER[1]}", SDP_OFFER, 0.0, headers=PADDING)
    [(invite, flow, size)] = sent(ua)
    assert size > LARGE_REQUEST_BYTES
    assert flow == Flow.udp(PEER) and invite.top_via.transport == "UDP"


def test_a_failed_tcp_connection_sends_the_request_over_udp_after_all():
    ua = new_ua()
    ua.invite(f"sip:bob@{PEER[0]}:{PEER[1]}", SDP_OFFER, 0.0, headers=PADDING)
    [(over_tcp, _, _)] = sent(ua)
    assert ua.layer.transport_failed(Flow("TCP", PEER), 1.0) == 0  # nothing failed: fell back
    [(over_udp, flow, _)] = sent(ua)
    assert flow == Flow.udp(PEER)
    via = over_udp.top_via
    assert (via.transport, via.port) == ("UDP", 5080) and not via.has_param("alias")
    assert via.branch == over_tcp.top_via.branch  # the same transaction
    assert over_udp.call_id == over_tcp.call_id and over_udp.body == over_tcp.body
    ua.handle_timer(1.0 + 0.5)  # Timer A runs again, on UDP (T1 = 500 ms)
    [(again, flow, _)] = sent(ua)
    assert flow == Flow.udp(PEER) and again.top_via.branch == via.branch
    # A second failure is a real one: the call fails (treated as a 503, s.8.1.3.1).
    ua.layer.transport_failed(Flow.udp(PEER), 2.0)


def test_a_cancel_goes_where_its_invite_went():
    ua = new_ua()
    call_id = ua.invite(f"sip:bob@{PEER[0]}:{PEER[1]}", SDP_OFFER, 0.0, headers=PADDING)
    [(invite, _, _)] = sent(ua)
    tag = "callee1"
    ringing = (
        f"SIP/2.0 180 Ringing\r\nVia: {invite.headers.get('Via')}\r\n"
        f"From: {invite.headers.get('From')}\r\nTo: {invite.headers.get('To')};tag={tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {invite.cseq.seq} INVITE\r\n"
        f"Contact: <sip:bob@{PEER[0]}:{PEER[1]};transport=tcp>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    ua.receive(ringing, Flow("TCP", PEER, connection=1), 0.1)
    ua.hangup(call_id, 0.2)
    [(cancel, flow, _)] = sent(ua)
    assert cancel.method == "CANCEL" and flow.transport == "TCP" and flow.remote == PEER
    assert cancel.headers.get("Via") == invite.headers.get("Via")  # s.9.1: the same top Via


@pytest.mark.parametrize(
    ("callee_transports", "arrives_on"),
    [
        (("udp", "tcp"), "TCP"),  # moved to TCP for its size
        (("udp",), "UDP"),  # the TCP connection is refused: over UDP after all
    ],
)
async def test_a_large_invite_gets_through(callee_transports, arrives_on):
    arrived: list[str] = []

    async def callee(call: SIPCall) -> None:
        arrived.append(call.info.transport)
        await call.answer()
        await call.wait_ended()

    server = await start_server(callee, transports=callee_transports)
    caller = await start_beside(server, transports=("udp", "tcp"))
    try:
        call = await caller.call(f"sip:bot@127.0.0.1:{server.port}", headers=PADDING, timeout=5)
        assert arrived == [arrives_on]
        await call.hangup()
        assert await wait_for(lambda: not server.calls and not caller.calls)
    finally:
        await caller.stop()
        await server.stop()
