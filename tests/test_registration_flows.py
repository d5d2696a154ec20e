"""Registration failover (RFC 3263 s.4.3) and flow recovery (RFC 5626 s.4.4.1), sans-IO.

The user agent runs on a fake clock; the tests answer its REGISTERs by hand
and tell it of transport errors and failed flows as the I/O layer would.
"""

from __future__ import annotations

import pytest

from pipecat_sip.sip.events import CallEnded, Notice, Registered, RegistrationFailed
from pipecat_sip.sip.message import SIPRequest, make_response, parse_message
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.useragent import UserAgent

A = Flow("TCP", ("192.0.2.1", 5060))
B = Flow("TCP", ("192.0.2.2", 5060))
C = Flow("UDP", ("192.0.2.3", 5060))


class Harness:
    def __init__(self) -> None:
        self.ua = UserAgent(
            "127.0.0.1", 5070, user="1000", transport_ports={"TCP": 5070, "TLS": 5071}
        )
        self.now = 0.0

    def sent(self) -> list[tuple[SIPRequest, Flow]]:
        return [(parse_message(data), flow) for data, flow in self.ua.datagrams_to_send()]

    def last(self) -> tuple[SIPRequest, Flow]:
        sent = self.sent()
        assert sent, "nothing sent"
        return sent[-1]

    def answer(self, request: SIPRequest, flow: Flow, code: int, headers=()) -> None:
        self.now += 0.1
        response = make_response(request, code, to_tag="r", headers=headers)
        self.ua.receive(bytes(response), flow, self.now)

    def events(self) -> list:
        out = []
        while (event := self.ua.next_event()) is not None:
            out.append(event)
        return out

    def run_timers_until_sent(self, limit: float = 3600.0) -> tuple[SIPRequest, Flow]:
        while (deadline := self.ua.get_timer()) is not None and deadline <= limit:
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            if self.ua.layer.outbox:
                return self.last()
        raise AssertionError("nothing sent")


def test_timeout_then_503_then_success_walks_the_destinations_in_order() -> None:
    h = Harness()
    rid = h.ua.register("sip:pbx.example.com", A, 0.0, expires=300, targets=[A, B, C])
    first, flow = h.last()
    assert flow == A and first.top_via.transport == "TCP"
    second, flow = h.run_timers_until_sent()  # Timer F on A (64*T1): move on to B at once
    assert flow == B and h.now == pytest.approx(32.0)
    assert second.call_id == rid and second.cseq.seq == first.cseq.seq + 1
    assert second.top_via.branch != first.top_via.branch
    h.answer(second, B, 503)
    third, flow = h.last()
    assert flow == C and third.top_via.transport == "UDP"  # the Via follows the new flow
    assert third.contacts[0].uri.get_param("transport") is None
    h.answer(third, C, 200, [("Expires", "300")])
    events = h.events()
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.kind for n in notices] == ["registration_failover"] * 2
    assert "503" in notices[1].message
    assert [e.expires for e in events if isinstance(e, Registered)] == [300]
    refresh, flow = h.run_timers_until_sent()  # the refresh stays where it succeeded
    assert flow == C


def test_when_every_destination_fails_the_retry_starts_from_the_first() -> None:
    h = Harness()
    h.ua.register("sip:pbx.example.com", A, 0.0, expires=300, targets=[A, B])
    request, flow = h.last()
    h.answer(request, A, 503)
    request, flow = h.last()
    assert flow == B
    h.answer(request, B, 503)
    failed = [e for e in h.events() if isinstance(e, RegistrationFailed)]
    assert len(failed) == 1 and "all 2 destinations failed" in failed[0].reason
    assert failed[0].status_code == 503 and failed[0].retry_in == 30
    assert h.ua.datagrams_to_send() == []
    retry, flow = h.run_timers_until_sent()
    assert flow == A


def test_other_failures_do_not_fail_over() -> None:
    h = Harness()
    h.ua.register("sip:pbx.example.com", A, 0.0, expires=300, targets=[A, B])
    request, _ = h.last()
    h.answer(request, A, 403)
    assert h.ua.datagrams_to_send() == []
    failed = [e for e in h.events() if isinstance(e, RegistrationFailed)]
    assert failed[0].status_code == 403


def test_a_transport_error_fails_over_at_once() -> None:
    h = Harness()
    h.ua.register("sip:pbx.example.com", A, 0.0, expires=300, targets=[A, B])
    h.last()
    h.ua.registrations.transport_failed(A, "connection refused", 0.01)
    h.ua.layer.transport_failed(A, 0.01)  # what the server does next: nothing more happens
    request, flow = h.last()
    assert flow == B
    assert h.ua.datagrams_to_send() == []
    notices = [e for e in h.events() if isinstance(e, Notice)]
    assert "connection refused" in notices[0].message
    h.answer(request, B, 200, [("Expires", "300")])
    assert any(isinstance(e, Registered) for e in h.events())
    assert h.ua.tracked <= 2  # the failed transaction is gone from the tables


def test_a_failed_flow_re_registers_at_once_then_not_more_than_once_per_retry() -> None:
    h = Harness()
    on_connection = Flow("TCP", A.remote, 7)
    h.ua.register("sip:pbx.example.com", A, 0.0, expires=300)
    request, _ = h.last()
    h.answer(request, on_connection, 200, [("Expires", "300")])
    h.events()
    h.now = 10.0
    h.ua.registrations.flow_failed(on_connection, "keep-alive: no pong", h.now)
    again, flow = h.last()
    assert flow == A and flow.connection is None  # over a new flow
    assert again.call_id == request.call_id and again.headers.get("Expires") == "300"
    notices = [e for e in h.events() if isinstance(e, Notice)]
    assert notices and notices[0].kind == "registration_flow"
    h.answer(again, Flow("TCP", A.remote, 8), 200, [("Expires", "300")])
    h.events()
    h.now = 12.0  # the new flow dies too, soon after: wait retry_s since the last recovery
    h.ua.registrations.flow_failed(Flow("TCP", A.remote, 8), "closed by the peer", h.now)
    assert h.ua.datagrams_to_send() == []
    later, flow = h.run_timers_until_sent()
    assert h.now == pytest.approx(40.0) and later.call_id == request.call_id


def test_a_flow_failure_elsewhere_changes_nothing() -> None:
    h = Harness()
    h.ua.register("sip:pbx.example.com", A, 0.0, expires=300)
    request, _ = h.last()
    h.answer(request, A, 200, [("Expires", "300")])
    h.ua.registrations.flow_failed(B, "closed", 1.0)
    assert h.ua.datagrams_to_send() == []


def test_set_targets_takes_effect_at_the_next_attempt() -> None:
    h = Harness()
    rid = h.ua.register("sip:pbx.example.com", A, 0.0, expires=300)
    request, _ = h.last()
    h.answer(request, A, 503)
    h.events()
    h.ua.registrations.set_targets(rid, [B, C])
    retry, flow = h.run_timers_until_sent()
    assert flow == B


def test_tls_registration_sends_a_sips_contact_at_our_tls_port() -> None:
    h = Harness()
    tls = Flow("TLS", ("192.0.2.9", 5061), server_name="pbx.example.com")
    h.ua.register("sips:pbx.example.com", tls, 0.0, expires=300)
    request, flow = h.last()
    assert flow.server_name == "pbx.example.com"
    assert request.top_via.transport == "TLS" and request.top_via.port == 5071
    assert request.top_via.has_param("alias")  # RFC 5923
    contact = request.contacts[0].uri
    assert (
        contact.scheme == "sips" and contact.port == 5071 and contact.get_param("transport") is None
    )


def test_transport_failed_ends_an_unanswered_invite_at_once() -> None:
    h = Harness()
    flow = Flow("TLS", ("192.0.2.9", 5061))
    call_id = h.ua.invite("sips:bot@192.0.2.9", b"v=0\r\n", 0.0, destination=flow)
    h.sent()
    assert h.ua.layer.transport_failed(Flow("TLS", ("192.0.2.9", 5061), 3), 0.05) == 1
    ended = [e for e in h.events() if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].call_id == call_id
    assert h.ua.layer.transport_failed(flow, 0.06) == 0  # nothing left to fail


def test_transport_failed_spares_transactions_that_had_an_answer_and_other_flows() -> None:
    h = Harness()
    flow = Flow("TCP", ("192.0.2.9", 5060))
    h.ua.invite("sip:bot@192.0.2.9;transport=tcp", b"v=0\r\n", 0.0, destination=flow)
    ((invite, _),) = h.sent()
    h.answer(invite, flow, 180)
    assert h.ua.layer.transport_failed(flow, 0.5) == 0  # Proceeding: a final may still come
    assert h.ua.layer.transport_failed(Flow("TCP", ("192.0.2.8", 5060)), 0.5) == 0


def test_contact_is_sips_only_for_sips_requests() -> None:
    h = Harness()
    tls = Flow("TLS", ("192.0.2.9", 5061))
    h.ua.invite("sips:bot@192.0.2.9", b"v=0\r\n", 0.0, destination=tls)
    h.ua.invite("sip:bot@192.0.2.9;transport=tls", b"v=0\r\n", 0.0, destination=tls)
    (secure, _), (plain, _) = h.sent()
    assert str(secure.contacts[0].uri) == "sips:1000@127.0.0.1:5071"
    assert str(plain.contacts[0].uri) == "sip:1000@127.0.0.1:5071;transport=tls"
    assert secure.top_via.transport == plain.top_via.transport == "TLS"


def test_rport_of_a_tcp_connection_does_not_become_our_contact_port() -> None:
    """The source port of our outgoing connection is no port to call us at."""
    h = Harness()
    rid = h.ua.register("sip:pbx.example.com;transport=tcp", A, 0.0, expires=300)
    request, _ = h.last()
    via = request.headers.get_list("Via")[0]
    request.headers.set("Via", via.replace(";rport", ";rport=40123;received=127.0.0.1"))
    h.answer(request, Flow("TCP", A.remote, 3), 200, [("Expires", "300")])
    refresh, _ = h.run_timers_until_sent()
    assert refresh.call_id == rid
    assert refresh.contacts[0].uri.port == 5070  # our TCP listening port, not 40123
