"""UserAgent flows (RFC 3261 s.8, s.12-15, s.17, s.18; RFC 3581; RFC 6026) on an in-memory pair.

Two `UserAgent`s talk through `tests.sip_pair.SIPPair` on a fake clock with
per-direction loss/duplication; a third party is simulated by injecting raw
datagrams. Every flow ends with `assert_no_leaks()`: no call left, and after
64*T1 + slack no transaction, no timer and no index entry.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

from pipecat_sip.sip.errors import LocalProtocolError, SIPParseError
from pipecat_sip.sip.ids import Identifiers
from pipecat_sip.sip.message import SIPRequest, SIPResponse, make_response, parse_message
from pipecat_sip.sip.transport import Flow
from pipecat_sip.sip.useragent import (
    CallAnswered,
    CallEstablished,
    CallProgress,
    CallUpdated,
    IncomingCall,
    InfoReceived,
    Notice,
    RegistrationFailed,
    ReofferReceived,
    UserAgent,
)
from tests.sip_pair import (
    SDP_ANSWER,
    SDP_OFFER,
    Link,
    SIPPair,
    auto_answer,
    drop_all,
    drop_first,
    first_line,
)

OUTSIDE = ("10.0.0.9", 40000)
_IDS = Identifiers()


def new_branch() -> str:
    return _IDS.branch()


@pytest.fixture(autouse=True)
def quiet_logs():
    """The UA logs every malformed datagram; keep test output readable."""
    logger.disable("pipecat_sip")
    yield
    logger.enable("pipecat_sip")


def reasons(pair: SIPPair, side: str) -> list[tuple[str, int | None]]:
    return [(e.reason, e.status_code) for e in pair.ended(side)]


def app_events(pair: SIPPair, side: str) -> list:
    """The events of a side other than Notices (what an application acts on)."""
    return [e for e in pair.events[side] if not isinstance(e, Notice)]


def names(pair: SIPPair, side: str) -> list[str]:
    return [type(e).__name__ for e in pair.events[side]]


def parse(data: bytes) -> SIPRequest | SIPResponse:
    return parse_message(data)


def establish(pair: SIPPair, *, ring: bool = True) -> str:
    pair.on_event("b", auto_answer(ring=ring))
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=pair.now + 1.0)
    assert pair.of_type("a", CallAnswered), names(pair, "a")
    assert pair.of_type("b", CallEstablished), names(pair, "b")
    return call_id


def raw_request(
    method: str,
    *,
    via: str = "SIP/2.0/UDP 10.0.0.9:5062;branch={branch};rport",
    call_id: str = "raw-1@10.0.0.9",
    cseq: int = 1,
    to_tag: str | None = None,
    from_tag: str = "ft1",
    extra: str = "",
    body: bytes = b"",
    branch: str | None = None,
    uri: str = "sip:bot@127.0.0.1:5080",
) -> bytes:
    to = "<sip:bot@127.0.0.1:5080>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via.format(branch=branch or new_branch())}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:carol@10.0.0.9>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:carol@10.0.0.9:5062>\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def to(pair: SIPPair, side: str) -> Flow:
    """The UDP flow to a side of the pair."""
    return Flow.udp(pair.addr[side])


def responses(crossings) -> list[SIPResponse]:
    out = []
    for c in crossings:
        msg = parse(c.data)
        assert isinstance(msg, SIPResponse), c.first_line
        out.append(msg)
    return out


def single_response(pair: SIPPair, data: bytes, source=OUTSIDE) -> SIPResponse:
    [resp] = responses(pair.inject("b", data, source))
    return resp


# --- basic calls ---------------------------------------------------------------------------


def test_basic_call_bye_from_caller():
    pair = SIPPair()
    call_id = establish(pair)
    assert names(pair, "b") == ["IncomingCall", "CallEstablished"]
    assert names(pair, "a") == ["CallProgress", "CallProgress", "CallAnswered"]
    progress = [e.response.status_code for e in pair.of_type("a", CallProgress)]
    assert progress == [100, 180]
    [answered] = pair.of_type("a", CallAnswered)
    assert answered.response.body == SDP_ANSWER
    [incoming] = pair.of_type("b", IncomingCall)
    assert incoming.request.body == SDP_OFFER and incoming.source == pair.addr["a"]
    assert [c.first_line.split()[1] for c in pair.sent("b", "SIP/2.0")] == ["100", "180", "200"]
    assert pair.a.active_calls == pair.b.active_calls == 1

    pair.act("a", "hangup", call_id)
    pair.act("a", "hangup", call_id)  # idempotent
    pair.run()
    assert len(pair.sent("a", "BYE")) == 1
    [ok] = pair.sent("b", "SIP/2.0 200")[-1:]
    assert parse(ok.data).cseq.method == "BYE"
    assert reasons(pair, "a") == [("local_bye", 200)]
    assert reasons(pair, "b") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_basic_call_bye_from_callee():
    pair = SIPPair()
    call_id = establish(pair, ring=False)
    pair.act("b", "hangup", call_id)
    pair.run()
    [bye] = pair.sent("b", "BYE")
    req = parse(bye.data)
    assert str(req.uri) == "sip:alice@127.0.0.1:5070"  # the caller's Contact
    assert req.to.tag == pair.of_type("b", IncomingCall)[0].request.from_.tag
    assert pair.sent("a", "SIP/2.0 200")
    assert reasons(pair, "b") == [("local_bye", 200)]
    assert reasons(pair, "a") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_bye_crossing_bye_ends_both_sides():
    pair = SIPPair(Link(latency=0.05), Link(latency=0.05))
    call_id = establish(pair)
    pair.act("a", "hangup", call_id)
    pair.act("b", "hangup", call_id)
    pair.run()
    assert len(pair.ended("a")) == len(pair.ended("b")) == 1
    pair.assert_no_leaks()


# --- CANCEL --------------------------------------------------------------------------------


def ring_only(pair: SIPPair, event) -> None:
    if isinstance(event, IncomingCall):
        pair.b.ringing(event.call_id, pair.now)


def test_cancel_before_answer():
    pair = SIPPair()
    pair.on_event("b", ring_only)
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=1.0)
    pair.act("a", "hangup", call_id)
    pair.act("a", "hangup", call_id)  # idempotent: one CANCEL
    pair.run()
    [cancel] = pair.sent("a", "CANCEL")
    invite = parse(pair.sent("a", "INVITE")[0].data)
    c = parse(cancel.data)
    assert c.top_via.branch == invite.top_via.branch  # RFC 3261 s.9.1
    assert c.cseq.seq == invite.cseq.seq and c.cseq.method == "CANCEL"
    assert c.to.tag is None
    finals = {(r.cseq.method, r.status_code) for r in responses(pair.sent("b", "SIP/2.0"))}
    assert ("CANCEL", 200) in finals and ("INVITE", 487) in finals
    [ack] = pair.sent("a", "ACK")
    assert parse(ack.data).top_via.branch == invite.top_via.branch  # hop-by-hop ACK
    assert len(pair.sent("b", "SIP/2.0 487")) == 1  # the ACK stopped Timer G
    assert reasons(pair, "a") == [("cancelled", 487)]
    assert reasons(pair, "b") == [("cancelled", 487)]
    pair.assert_no_leaks()
    assert len(pair.sent("b", "SIP/2.0 487")) == 1


def test_caller_hangup_before_any_provisional_waits_for_one():
    # The 100 Trying is lost, so a sees no provisional until the INVITE is resent.
    pair = SIPPair(b_to_a=Link(drop=drop_first(b"SIP/2.0 100")))
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    assert pair.of_type("b", IncomingCall)
    pair.act("a", "hangup", call_id)
    assert not pair.sent("a", "CANCEL")  # RFC 3261 s.9.1: not before a provisional
    pair.run()
    [cancel] = pair.sent("a", "CANCEL")
    second_100 = pair.sent("b", "SIP/2.0 100", fate="delivered")[0]
    assert cancel.time >= second_100.time == 0.5
    assert reasons(pair, "a") == [("cancelled", 487)]
    assert reasons(pair, "b") == [("cancelled", 487)]
    pair.assert_no_leaks()


def test_hangup_while_calling_then_2xx_sends_ack_and_bye():
    """Hung up before any provisional (no CANCEL allowed yet); the 2xx comes: ACK, then BYE."""
    pair = SIPPair(Link(latency=0.05), Link(latency=0.05, drop=drop_all(b"SIP/2.0 1")))
    pair.on_event("b", auto_answer())
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=0.01)
    pair.act("a", "hangup", call_id)
    pair.run()
    assert not pair.sent("a", "CANCEL")
    [ack] = pair.sent("a", "ACK")
    [bye] = pair.sent("a", "BYE")
    assert ack.time == bye.time == 0.1
    assert names(pair, "a") == ["CallAnswered", "CallEnded"]
    assert reasons(pair, "a") == [("local_bye", 200)]
    assert reasons(pair, "b") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_cancel_crossing_2xx_is_followed_by_bye():
    """RFC 3261 s.9.1/15: a 2xx after our CANCEL is ACKed and the call ended with BYE."""
    pair = SIPPair(Link(latency=0.05), Link(latency=0.05))
    pair.on_event("b", ring_only)
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=1.0)
    pair.act("b", "answer", call_id, SDP_ANSWER)  # 200 in flight ...
    pair.act("a", "hangup", call_id)  # ... CANCEL in flight
    pair.run()
    assert pair.sent("a", "CANCEL") and pair.sent("a", "ACK") and pair.sent("a", "BYE")
    assert reasons(pair, "a") == [("local_bye", 200)]
    assert reasons(pair, "b") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_cancel_without_final_response_gives_up_after_64_t1():
    """RFC 3261 s.9.1: no final response 64*T1 after CANCEL -> transaction destroyed."""
    pair = SIPPair()
    pair.on_event("b", ring_only)
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=1.0)
    pair.links["b"].drop = lambda data: True  # b falls silent
    pair.act("a", "hangup", call_id)
    pair.run(until=40.0)
    assert [e.reason for e in pair.ended("a")] == ["cancelled"]
    assert reasons(pair, "b") == [("cancelled", 487)]
    pair.assert_no_leaks()


def test_cancel_for_unknown_transaction_gets_481():
    pair = SIPPair()
    resp = single_response(pair, raw_request("CANCEL"))
    assert resp.status_code == 481
    pair.assert_no_leaks()


# --- rejecting ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [486, 488, 503, 603])
def test_reject_with_status_and_headers(code):
    pair = SIPPair()

    def reject(pair, event):
        if isinstance(event, IncomingCall):
            headers = [("Retry-After", "30")] if code == 503 else []
            pair.b.reject(event.call_id, code, pair.now, headers=headers)

    pair.on_event("b", reject)
    pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run()
    [final] = responses(pair.sent("b", f"SIP/2.0 {code}"))
    assert final.to.tag
    if code == 503:
        assert final.headers.get("Retry-After") == "30"
    [ack] = pair.sent("a", "ACK")
    assert parse(ack.data).to.tag == final.to.tag
    assert reasons(pair, "a") == [("rejected", code)]
    assert reasons(pair, "b") == [("rejected", code)]
    pair.assert_no_leaks()
    assert len(pair.sent("b", f"SIP/2.0 {code}")) == 1


def test_reject_requires_an_error_status_and_a_pending_call():
    pair = SIPPair()
    call_id = establish(pair)
    with pytest.raises(LocalProtocolError):
        pair.b.reject(call_id, 200, pair.now)
    with pytest.raises(LocalProtocolError):
        pair.b.reject(call_id, 486, pair.now)
    with pytest.raises(LocalProtocolError):
        pair.b.answer("no-such-call", SDP_ANSWER, pair.now)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_callee_hangup_before_answer_sends_480():
    pair = SIPPair()
    pair.on_event("b", ring_only)
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.act("b", "hangup", call_id)
    pair.run()
    assert reasons(pair, "a") == [("rejected", 480)]
    assert [e.reason for e in pair.ended("b")] == ["local_bye"]
    pair.assert_no_leaks()


# --- out-of-dialog requests ----------------------------------------------------------------


def test_bye_for_unknown_dialog_gets_481():
    pair = SIPPair()
    resp = single_response(pair, raw_request("BYE", to_tag="nosuch"))
    assert resp.status_code == 481
    resp = single_response(pair, raw_request("BYE", call_id="x2@h"))  # no To tag at all
    assert resp.status_code == 481
    pair.assert_no_leaks()


def test_options_out_of_dialog_gets_capabilities():
    pair = SIPPair()
    resp = single_response(pair, raw_request("OPTIONS"))
    assert resp.status_code == 200
    assert "INVITE" in resp.headers.get("Allow") and "BYE" in resp.headers.get("Allow")
    assert resp.headers.get("Accept") == "application/sdp"
    assert "Supported" in resp.headers
    assert resp.to.tag
    pair.assert_no_leaks()


@pytest.mark.parametrize(
    "method, code", [("FOO", 501), ("SUBSCRIBE", 405), ("REGISTER", 405), ("MESSAGE", 405)]
)
def test_unhandled_methods(method, code):
    pair = SIPPair()
    resp = single_response(pair, raw_request(method))
    assert resp.status_code == code
    if code == 405:
        assert "INVITE" in resp.headers.get("Allow")
    pair.assert_no_leaks()


def test_unsupported_require_gets_420():
    pair = SIPPair()
    # 100rel, timer and replaces are supported (RFC 3262, 4028, 3891): only foo is refused.
    data = raw_request("INVITE", extra="Require: foo, 100rel, bar\r\n", body=SDP_OFFER)
    resp = single_response(pair, data)
    assert resp.status_code == 420
    assert resp.headers.get("Unsupported") == "foo, bar"
    assert not app_events(pair, "b")
    resp = single_response(pair, raw_request("OPTIONS", extra="Require: foo\r\n"))
    assert resp.status_code == 420
    pair.assert_no_leaks()


def test_invite_without_contact_gets_400():
    pair = SIPPair()
    data = raw_request("INVITE").replace(b"Contact: <sip:carol@10.0.0.9:5062>\r\n", b"")
    resp = single_response(pair, data)
    assert resp.status_code == 400
    assert not app_events(pair, "b")
    pair.assert_no_leaks()


# --- in-dialog requests ---------------------------------------------------------------------


def in_dialog_request(pair: SIPPair, method: str, *, cseq_delta: int = 1, body=b"", extra=()):
    """A request from a to b inside the established dialog (built with a's dialog state)."""
    session = next(iter(pair.a.invites.sessions.values()))
    dialog = session.dialog
    from pipecat_sip.sip.message import Headers

    headers = Headers(extra)
    if body:
        headers.add("Content-Type", "application/sdp")
    seq = (dialog.local_seq or 0) + cseq_delta
    via = pair.a.new_via(to(pair, "b"))
    req = dialog.create_request(
        method, via, contact=pair.a.contact, headers=headers, body=body, cseq=seq
    )
    if cseq_delta > 0:
        dialog.local_seq = seq
    return req


def ack_reinvite_then_hang_up(pair: SIPPair, side: str, reinvite, local_port: int) -> None:
    """`side`'s application ACKs the re-INVITE's 2xx (the UA has no re-INVITE API);
    the call must outlive Timer H, then a hangs up."""
    peer = "b" if side == "a" else "a"
    ua = getattr(pair, side)
    session = ua.session(reinvite.call_id)
    via = ua.new_via(to(pair, peer))
    ack = session.dialog.create_request("ACK", via, cseq=reinvite.cseq.seq)
    ua.layer.send(bytes(ack), to(pair, peer))
    pair.run(until=pair.now + 40)  # past Timer H of the re-INVITE's 2xx
    assert pair.a.active_calls == pair.b.active_calls == 1  # still up: no ack_timeout
    pair.act("a", "hangup", reinvite.call_id)
    pair.run()


def test_reinvite_answered_with_current_sdp_and_call_stays_up():
    pair = SIPPair()
    call_id = establish(pair)
    new_sdp = SDP_ANSWER.replace(b"o=b 2 2", b"o=b 2 3")
    pair.b.update_local_sdp(call_id, new_sdp)
    reinvite = in_dialog_request(pair, "INVITE", body=SDP_OFFER)
    txn = pair.a.layer.start_client(reinvite, to(pair, "b"), pair.now)
    pair.flush()
    [update] = pair.of_type("b", CallUpdated)
    assert update.call_id == call_id and update.request.body == SDP_OFFER
    ok = [r for r in responses(pair.sent("b", "SIP/2.0 200")) if r.cseq == reinvite.cseq]
    assert ok and ok[0].body == new_sdp
    assert ok[0].headers.get("Contact")
    assert txn.state == "accepted"
    ack_reinvite_then_hang_up(pair, "a", reinvite, 5070)
    assert reasons(pair, "b") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_reinvite_offer_answered_by_the_application_or_488():
    pair = SIPPair()
    call_id = establish(pair)
    offers = []

    def answer_offer(pair: SIPPair, event) -> None:
        """The application answers each ReofferReceived: 488 for G.729, else its answer."""
        if not isinstance(event, ReofferReceived):
            return
        offers.append((event.call_id, event.offer))
        if b"G729" in event.offer:
            pair.b.reject_reoffer(
                event.call_id, 488, pair.now, reason="Not Acceptable Here (PCMU not offered)"
            )
        else:
            answer = SDP_ANSWER.replace(b"o=b 2 2", b"o=b 2 3")
            pair.b.answer_reoffer(event.call_id, answer, pair.now)

    # The application fails unexpectedly: 500, nothing changes.
    def broken_handler(pair: SIPPair, event) -> None:
        if isinstance(event, ReofferReceived):
            pair.b.reject_reoffer(event.call_id, 500, pair.now)

    pair.off_event("b")
    pair.on_event("b", broken_handler)
    broken = in_dialog_request(pair, "INVITE", body=SDP_OFFER)
    pair.a.layer.start_client(broken, to(pair, "b"), pair.now)
    pair.run(until=pair.now + 1)
    assert [r for r in responses(pair.sent("b", "SIP/2.0 500")) if r.cseq == broken.cseq]
    pair.off_event("b", broken_handler)
    pair.on_event("b", answer_offer)
    # An offer the application cannot take: 488, nothing changes (RFC 3261 s.14.2).
    bad = in_dialog_request(pair, "INVITE", body=SDP_OFFER + b"a=rtpmap:18 G729/8000\r\n")
    pair.a.layer.start_client(bad, to(pair, "b"), pair.now)
    pair.run(until=pair.now + 1)  # the client transaction ACKs the 488 itself
    [rejected] = [r for r in responses(pair.sent("b", "SIP/2.0 488")) if r.cseq == bad.cseq]
    assert "PCMU not offered" in rejected.reason
    assert not pair.of_type("b", CallUpdated)
    assert pair.b.session(call_id).local_sdp == SDP_ANSWER
    # An acceptable one: the 200 carries the application's answer, which stays.
    good = in_dialog_request(pair, "INVITE", body=SDP_OFFER)
    pair.a.layer.start_client(good, to(pair, "b"), pair.now)
    pair.flush()
    [ok] = [r for r in responses(pair.sent("b", "SIP/2.0 200")) if r.cseq == good.cseq]
    assert b"o=b 2 3" in ok.body and pair.b.session(call_id).local_sdp == ok.body
    assert [e.call_id for e in pair.of_type("b", CallUpdated)] == [call_id]
    assert offers == [(call_id, bad.body), (call_id, SDP_OFFER)]
    ack_reinvite_then_hang_up(pair, "a", good, 5070)
    assert reasons(pair, "b") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_reinvite_from_callee_reaches_the_caller():
    pair = SIPPair()
    call_id = establish(pair)
    session = pair.b.session(call_id)
    reinvite = session.dialog.create_request(
        "INVITE", pair.b.new_via(to(pair, "a")), contact=pair.b.contact, body=SDP_ANSWER
    )
    pair.on_event("a", auto_answer("a"))  # a's application answers with its current SDP
    pair.b.layer.start_client(reinvite, to(pair, "a"), pair.now)
    pair.flush()
    assert [e.call_id for e in pair.of_type("a", CallUpdated)] == [call_id]
    [ok] = [r for r in responses(pair.sent("a", "SIP/2.0 200")) if r.cseq == reinvite.cseq]
    assert ok.body == SDP_OFFER
    ack_reinvite_then_hang_up(pair, "b", reinvite, 5080)
    assert reasons(pair, "a") == [("local_bye", 200)]
    pair.assert_no_leaks()


def test_info_in_dialog_is_answered_and_reported():
    pair = SIPPair()
    call_id = establish(pair)
    info = in_dialog_request(
        pair, "INFO", extra=[("Content-Type", "application/dtmf-relay")], body=b""
    )
    pair.a.layer.start_client(info, to(pair, "b"), pair.now)
    pair.run()
    [event] = pair.of_type("b", InfoReceived)
    assert event.call_id == call_id
    assert any(r.cseq.method == "INFO" for r in responses(pair.sent("b", "SIP/2.0 200")))
    pair.act("b", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_in_dialog_request_with_lower_cseq_gets_500():
    pair = SIPPair()
    call_id = establish(pair)
    first = in_dialog_request(pair, "INFO")
    pair.a.layer.start_client(first, to(pair, "b"), pair.now)
    pair.run()
    stale = in_dialog_request(pair, "INFO", cseq_delta=-1)
    pair.a.layer.start_client(stale, to(pair, "b"), pair.now)
    pair.run()
    codes = [(r.cseq.seq, r.status_code) for r in responses(pair.sent("b", "SIP/2.0"))]
    assert (first.cseq.seq, 200) in codes and (stale.cseq.seq, 500) in codes
    assert pair.b.active_calls == 1
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


# --- ACK and the 2xx (RFC 3261 s.13.3.1.4) -------------------------------------------------


def test_callee_hangup_before_ack_defers_bye_until_ack():
    pair = SIPPair(a_to_b=Link(drop=drop_first(b"ACK")))
    pair.on_event("b", auto_answer())
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    assert pair.of_type("a", CallAnswered) and not pair.of_type("b", CallEstablished)
    pair.act("b", "hangup", call_id)
    assert not pair.sent("b", "BYE")
    pair.run()
    acks = pair.sent("a", "ACK", fate="delivered")
    [bye] = pair.sent("b", "BYE")
    assert bye.time >= acks[0].time == 0.5
    assert names(pair, "b")[-2:] == ["CallEstablished", "CallEnded"]
    assert reasons(pair, "b") == [("local_bye", 200)]
    assert reasons(pair, "a") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_no_ack_retransmits_2xx_then_bye_at_timer_h():
    pair = SIPPair(a_to_b=Link(drop=drop_all(b"ACK")))
    pair.on_event("b", auto_answer(ring=False))
    pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=40.0)
    oks = [c.time for c in pair.sent("b", "SIP/2.0 200") if parse(c.data).cseq.method == "INVITE"]
    assert oks[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert oks[-1] < 32.0
    [bye] = pair.sent("b", "BYE")
    assert bye.time == 32.0  # Timer H = 64*T1
    assert [e.reason for e in pair.ended("b")] == ["ack_timeout"]
    assert reasons(pair, "a") == [("remote_bye", None)]
    pair.assert_no_leaks()


def test_ack_with_other_cseq_does_not_confirm_the_2xx():
    pair = SIPPair(a_to_b=Link(drop=drop_all(b"ACK")))
    pair.on_event("b", auto_answer(ring=False))
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    session = pair.a.session(call_id)
    wrong = session.dialog.create_request(
        "ACK", pair.a.new_via(to(pair, "b")), cseq=session.invite.cseq.seq + 7
    )
    pair.b.receive_datagram(bytes(wrong), pair.addr["a"], pair.now)
    pair.flush()
    assert not pair.of_type("b", CallEstablished)
    pair.links["a"].drop = None
    pair.run()
    assert pair.of_type("b", CallEstablished)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_retransmitted_invite_never_creates_a_second_incoming_call():
    # Everything b says is lost for a while: a retransmits the INVITE; b
    # answers each copy with its latest response.
    pair = SIPPair(b_to_a=Link(drop=lambda data: True))
    pair.on_event("b", ring_only)
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=2.0)  # INVITE at 0, 0.5, 1.5
    pair.act("b", "answer", call_id, SDP_ANSWER)
    pair.run(until=4.0)  # 3.5
    assert len(pair.sent("a", "INVITE")) == 4
    lines = [c.first_line for c in pair.sent("b", "SIP/2.0")]
    assert lines[:4] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 180 Ringing",  # INVITE at 0.5
        "SIP/2.0 180 Ringing",  # INVITE at 1.5
    ]
    assert "SIP/2.0 200 OK" in lines
    assert len(pair.of_type("b", IncomingCall)) == 1
    pair.links["b"].drop = None
    pair.run(until=10.0)
    assert pair.of_type("a", CallAnswered) and pair.of_type("b", CallEstablished)
    assert len(pair.of_type("b", IncomingCall)) == 1
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_2xx_without_contact_ends_the_call_with_error():
    pair = SIPPair()
    call_id = pair.act("a", "invite", "sip:bot@10.0.0.9:5062", SDP_OFFER)
    [out] = pair.outside
    invite = parse(out.data)
    ok = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {invite.headers.get('Via')}\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {invite.headers.get('To')};tag=xyz\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {invite.cseq}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    pair.a.receive_datagram(ok, ("10.0.0.9", 5062), pair.now)
    pair.flush()
    assert reasons(pair, "a") == [("error", 200)]
    pair.assert_no_leaks()


def test_invite_timeout_when_nobody_answers():
    pair = SIPPair(a_to_b=Link(drop=lambda data: True))
    pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run()
    assert len(pair.sent("a", "INVITE")) == 7
    assert reasons(pair, "a") == [("timeout", 408)]
    pair.assert_no_leaks()


def test_bye_without_response_ends_after_timer_f():
    pair = SIPPair()
    call_id = establish(pair)
    pair.links["b"].drop = lambda data: True
    pair.act("a", "hangup", call_id)
    pair.run()
    assert reasons(pair, "a") == [("local_bye", 408)]
    assert reasons(pair, "b") == [("remote_bye", None)]
    pair.assert_no_leaks()


# --- loss and duplication ----------------------------------------------------------------


ALLOWED_ENDINGS = {
    ("local_bye", "remote_bye"),
    ("remote_bye", "local_bye"),
    ("remote_bye", "ack_timeout"),
    ("ack_timeout", "remote_bye"),
    ("cancelled", "cancelled"),
    ("rejected", "rejected"),
    ("local_bye", "local_bye"),  # BYEs crossed
    ("remote_bye", "remote_bye"),
}


def lossy_pair(seed: int, loss: float = 0.3, duplicate: int = 0) -> SIPPair:
    return SIPPair(
        Link(loss=loss, duplicate=duplicate, latency=0.02, rng=random.Random(seed)),
        Link(loss=loss, duplicate=duplicate, latency=0.02, rng=random.Random(seed + 1000)),
    )


def check_consistent(pair: SIPPair, call_ids: list[str]) -> None:
    ended = {side: {e.call_id: e for e in pair.ended(side)} for side in ("a", "b")}
    for side in ("a", "b"):
        assert len(ended[side]) == len(pair.ended(side)), f"{side}: a call ended twice"
    for call_id in call_ids:
        a, b = ended["a"].get(call_id), ended["b"].get(call_id)
        assert a is not None and b is not None, (call_id, a, b)
        assert (a.reason, b.reason) in ALLOWED_ENDINGS, (call_id, a, b)
    incoming = [e.call_id for e in pair.of_type("b", IncomingCall)]
    assert len(incoming) == len(set(incoming)), "an INVITE made two IncomingCall events"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossy_calls_all_complete(seed):
    """30% loss both ways, many calls: retransmissions carry every call to a consistent end."""
    pair = lossy_pair(seed)
    pair.on_event("b", auto_answer())
    rng = random.Random(seed)
    call_ids = []
    for i in range(25):
        call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
        call_ids.append(call_id)
        pair.run(until=pair.now + rng.choice([0.0, 0.05, 0.3, 2.0, 40.0]))
        known = any(e.call_id == call_id for e in pair.of_type("b", IncomingCall))
        side = "b" if i % 2 and known else "a"  # b may not know it yet
        pair.act(side, "hangup", call_id)
        pair.run(until=pair.now + rng.choice([0.0, 1.0, 40.0]))
    pair.run()
    check_consistent(pair, call_ids)
    answered = {e.call_id for e in pair.of_type("a", CallAnswered)}
    cancelled = {e.call_id for e in pair.ended("a") if e.reason == "cancelled"}
    assert answered | cancelled == set(call_ids)
    pair.assert_no_leaks()


def test_lossy_concurrent_calls():
    pair = lossy_pair(7)
    pair.on_event("b", auto_answer())
    call_ids = [pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER) for _ in range(20)]
    pair.run(until=pair.now + 40.0)
    assert pair.a.active_calls == pair.b.active_calls == 20
    for i, call_id in enumerate(call_ids):
        pair.act("ab"[i % 2], "hangup", call_id)
    pair.run()
    check_consistent(pair, call_ids)
    pair.assert_no_leaks()


@pytest.mark.parametrize("flow", ["bye_a", "bye_b", "cancel", "reject"])
def test_duplicate_delivery_is_harmless(flow):
    pair = SIPPair(Link(duplicate=1), Link(duplicate=1))
    if flow == "reject":
        pair.on_event(
            "b",
            lambda p, e: isinstance(e, IncomingCall) and p.b.reject(e.call_id, 486, p.now),
        )
    elif flow == "cancel":
        pair.on_event("b", ring_only)
    else:
        pair.on_event("b", auto_answer())
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.run(until=1.0)
    if flow != "reject":
        pair.act("b" if flow == "bye_b" else "a", "hangup", call_id)
    pair.run()
    assert len(pair.of_type("b", IncomingCall)) == 1
    assert len(pair.ended("a")) == len(pair.ended("b")) == 1
    assert len(pair.of_type("a", CallAnswered)) == (1 if flow.startswith("bye") else 0)
    assert len(pair.of_type("b", CallEstablished)) == (1 if flow.startswith("bye") else 0)
    check_consistent(pair, [call_id])
    pair.assert_no_leaks()


def test_lossy_and_duplicated_cancel_and_reject_flows():
    pair = lossy_pair(11, loss=0.3, duplicate=1)
    outcomes = {}

    def app(p, e):
        if isinstance(e, IncomingCall):
            kind = outcomes[e.call_id] = len(outcomes) % 3
            p.b.ringing(e.call_id, p.now)
            if kind == 1:
                p.b.reject(e.call_id, 486, p.now)

    pair.on_event("b", app)
    call_ids = []
    for _ in range(15):
        call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
        call_ids.append(call_id)
        pair.run(until=pair.now + 3.0)
        pair.act("a", "hangup", call_id)  # CANCEL unless rejected already
        pair.run(until=pair.now + 40.0)
    pair.run()
    check_consistent(pair, call_ids)
    pair.assert_no_leaks()


# --- malformed input ---------------------------------------------------------------------


def test_malformed_request_gets_400_with_its_call_id():
    pair = SIPPair()
    data = raw_request("INVITE", call_id="bad-1@x").replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    [c] = pair.inject("b", data, OUTSIDE)
    # The bad CSeq is echoed as received, so the answer does not parse either.
    assert c.data.startswith(b"SIP/2.0 400 Bad Request")
    assert b"\r\nCall-ID: bad-1@x\r\n" in c.data
    assert b"\r\nCSeq: one INVITE\r\n" in c.data
    # The Via asks for rport: to the source address and port (RFC 3581 s.4).
    assert c.addr == OUTSIDE
    assert not app_events(pair, "b")
    pair.assert_no_leaks()


def test_malformed_contact_gets_400():
    pair = SIPPair()
    data = raw_request("INVITE", call_id="bad-2@x").replace(
        b"Contact: <sip:carol@10.0.0.9:5062>", b"Contact: <sip:carol@10.0.0.9:5062"
    )
    [c] = pair.inject("b", data, OUTSIDE)
    assert c.data.startswith(b"SIP/2.0 400")
    assert not app_events(pair, "b")
    pair.assert_no_leaks()


@pytest.mark.parametrize(
    "error, code", [(RuntimeError("bug"), 500), (SIPParseError("bad header found late"), 400)]
)
def test_error_while_handling_answers_through_the_transaction(monkeypatch, error, code):
    """A failure after the transaction exists: the answer goes through it (no leak)."""

    def broken(*args, **kwargs):
        raise error

    pair = SIPPair()
    pair.fail_on_errors = False  # the bug is the point: reported as a Notice
    monkeypatch.setattr(pair.b.invites, "on_invite", broken)
    data = raw_request("INVITE", call_id="bad-3@x", branch="z9hG4bKbroken")
    first = pair.inject("b", data, OUTSIDE)
    assert [first_line(c.data)[:11] for c in first] == [f"SIP/2.0 {code}"]
    assert first[0].addr == OUTSIDE  # rport: the source port
    again = pair.inject("b", data, OUTSIDE)  # a retransmission gets the same answer
    assert [c.data for c in again] == [first[0].data]
    if code == 500:
        [notice] = [e for e in pair.events["b"] if isinstance(e, Notice)]
        assert notice.level == "error" and notice.error is error
    pair.assert_no_leaks()


@pytest.mark.parametrize(
    "data",
    [
        b"hello",
        b"\x00\xff\xfe" * 50,
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 999 Nope\r\nVia: x\r\n\r\n",
        b"\r\n\r\n",  # keep-alive
    ],
)
def test_garbage_is_dropped(data):
    pair = SIPPair()
    assert pair.inject("b", data, OUTSIDE) == []
    assert not app_events(pair, "b")
    pair.assert_no_leaks()


def test_malformed_response_is_dropped():
    pair = SIPPair()
    pair.on_event("b", auto_answer())
    call_id = pair.act("a", "invite", pair.uri_of("b"), SDP_OFFER)
    pair.a.receive_datagram(b"SIP/2.0 200 OK\r\nVia: broken\r\n\r\n", pair.addr["b"], pair.now)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


GOOD_INVITE = raw_request(
    "INVITE",
    call_id="fuzz@10.0.0.9",
    branch="z9hG4bKfuzz",
    extra="Content-Type: application/sdp\r\n",
    body=SDP_OFFER,
)


@st.composite
def mutated_invites(draw):
    data = bytearray(GOOD_INVITE)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup_line"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] = draw(st.sampled_from(b':;<>@" \r\n,=\x00\xff0aZ'))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "truncate":
            del data[pos:]
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def request_call_id(data: bytes) -> str | None:
    """The Call-ID line of a request as parsed (for a malformed one: of what was readable)."""
    try:
        return parse_message(data).headers.get("Call-ID")
    except SIPParseError as exc:
        return exc.partial.headers.get("Call-ID") if exc.partial is not None else None


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated_invites())
def test_mutated_invites_never_raise_and_never_leak(data):
    pair = SIPPair()

    def reject(p, e):
        if isinstance(e, IncomingCall):
            p.b.reject(e.call_id, 486, p.now)

    pair.on_event("b", reject)
    sent = pair.inject("b", data, OUTSIDE)  # must not raise
    for crossing in sent:
        assert crossing.data.startswith(b"SIP/2.0 ")
        assert crossing.addr[0] == OUTSIDE[0]
        if crossing.data.startswith(b"SIP/2.0 400"):
            call_id = request_call_id(data)
            assert call_id  # a 400 only for a request whose Call-ID could be read
            assert f"\r\nCall-ID: {call_id}\r\n".encode("utf-8", "surrogateescape") in (
                crossing.data
            )
    pair.inject("b", data, OUTSIDE)  # and a retransmission of it neither
    pair.assert_no_leaks()


# --- where responses go (RFC 3261 s.18.2.2, RFC 3581) ------------------------------------


def test_response_goes_to_rport_source_port_with_received_and_rport_set():
    pair = SIPPair()
    [c] = pair.inject("b", raw_request("OPTIONS"), ("10.0.0.9", 40000))
    assert c.addr == ("10.0.0.9", 40000)  # rport: the source port
    via = parse(c.data).top_via
    assert via.get_param("rport") == "40000"
    # RFC 3581 s.4: received is added even when it equals the sent-by host.
    assert via.get_param("received") == "10.0.0.9"
    pair.assert_no_leaks()


def test_response_goes_to_via_port_without_rport():
    pair = SIPPair()
    data = raw_request("OPTIONS", via="SIP/2.0/UDP 10.0.0.9:5062;branch={branch}")
    [c] = pair.inject("b", data, ("10.0.0.9", 40000))
    assert c.addr == ("10.0.0.9", 5062)  # s.18.2.2: the sent-by port
    via = parse(c.data).top_via
    assert not via.has_param("rport") and not via.has_param("received")
    pair.assert_no_leaks()


def test_response_from_nat_gets_received_and_goes_to_source_ip():
    pair = SIPPair()
    data = raw_request("OPTIONS", via="SIP/2.0/UDP 192.168.1.20:5062;branch={branch}")
    [c] = pair.inject("b", data, ("10.0.0.9", 40000))
    assert c.addr == ("10.0.0.9", 5062)  # received address, sent-by port
    via = parse(c.data).top_via
    assert via.get_param("received") == "10.0.0.9"
    assert via.host == "192.168.1.20"
    pair.assert_no_leaks()


def test_response_defaults_to_5060_without_port_or_rport():
    pair = SIPPair()
    data = raw_request("OPTIONS", via="SIP/2.0/UDP 10.0.0.9;branch={branch}")
    [c] = pair.inject("b", data, ("10.0.0.9", 40000))
    assert c.addr == ("10.0.0.9", 5060)
    pair.assert_no_leaks()


def test_invite_flow_responses_follow_rport_and_keep_received():
    pair = SIPPair()
    pair.on_event("b", auto_answer())
    data = raw_request(
        "INVITE", via="SIP/2.0/UDP 192.168.1.20:5062;branch={branch};rport", body=SDP_OFFER
    )
    sent = pair.inject("b", data, ("10.0.0.9", 40000))
    assert [first_line(c.data) for c in sent] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
    ]
    for c in sent:
        assert c.addr == ("10.0.0.9", 40000)
        via = parse(c.data).top_via
        assert via.get_param("received") == "10.0.0.9" and via.get_param("rport") == "40000"
    # End it: the 200 is retransmitted until Timer H, then b sends BYE to the Contact.
    pair.run(until=40.0)
    assert [e.reason for e in pair.ended("b")] == ["ack_timeout"]
    assert any(c.first_line.startswith("BYE") for c in pair.outside)
    pair.assert_no_leaks()


def test_useragent_rejects_bad_port():
    with pytest.raises(ValueError):
        UserAgent("127.0.0.1", 0)


def test_unsupported_request_uri_scheme_gets_416():
    from pipecat_sip.sip.message import parse_message
    from pipecat_sip.sip.useragent import UserAgent

    ua = UserAgent("127.0.0.1", 5080)
    ua.receive_datagram(
        b"OPTIONS mailto:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-416\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
        b"Call-ID: 416@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ("127.0.0.1", 5070),
        0.0,
    )
    ((data, addr),) = ua.datagrams_to_send()
    response = parse_message(data)
    assert response.status_code == 416 and addr.remote == ("127.0.0.1", 5070)


def test_malformed_request_without_rport_answered_at_sent_by_port():
    pair = SIPPair()
    data = raw_request(
        "INVITE", call_id="bad-3@x", via="SIP/2.0/UDP 10.0.0.9:5062;branch={branch}"
    ).replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    [c] = pair.inject("b", data, OUTSIDE)
    assert c.data.startswith(b"SIP/2.0 400")
    assert c.addr == (OUTSIDE[0], 5062)  # RFC 3261 s.18.2.2
    pair.assert_no_leaks()


# --- registration (RFC 3261 s.10, s.22) ------------------------------------------------------

REGISTRAR = ("192.0.2.10", 5060)


class FakeRegistrar:
    """Answers the UA's REGISTERs by hand."""

    def __init__(self) -> None:
        self.ua = UserAgent("127.0.0.1", 5070, user="1000")
        self.now = 0.0

    def last_request(self):
        sent = self.ua.datagrams_to_send()
        assert sent and sent[-1][1].remote == REGISTRAR, sent
        request = parse_message(sent[-1][0])
        assert request.method == "REGISTER"
        return request

    def answer(self, request, code: int, headers=()) -> None:
        response = make_response(request, code, to_tag="reg1", headers=headers)
        self.now += 0.1
        self.ua.receive_datagram(bytes(response), REGISTRAR, self.now)

    def events(self) -> list:
        out = []
        while (event := self.ua.next_event()) is not None:
            out.append(event)
        return out

    def run_until_request(self, limit: float = 3600.0):
        """Fire the UA's timers until it sends a REGISTER (a refresh or a retry)."""
        while (deadline := self.ua.get_timer()) is not None and deadline <= limit:
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            if self.ua.layer.outbox:
                return self.last_request()
        raise AssertionError("no REGISTER sent")


def test_register_answers_the_challenge_and_reads_the_granted_expires():
    r = FakeRegistrar()
    rid = r.ua.register("sip:pbx.example.com", REGISTRAR, 0.0, expires=600, password="pw")
    first = r.last_request()
    assert first.call_id == rid and first.headers.get("Expires") == "600"
    assert first.headers.get("Authorization") is None
    challenge = 'Digest realm="pbx", nonce="n1", qop="auth", algorithm=MD5'
    r.answer(first, 401, [("WWW-Authenticate", challenge)])
    second = r.last_request()
    assert second.call_id == rid and second.cseq.seq == first.cseq.seq + 1
    auth = second.headers.get("Authorization")
    assert auth.startswith("Digest ") and 'username="1000"' in auth and "nc=00000001" in auth
    assert 'uri="sip:pbx.example.com"' in auth
    contact = "<sip:1000@127.0.0.1:5070>;expires=45"
    r.answer(second, 200, [("Contact", contact), ("Expires", "600")])
    assert [(type(e).__name__, e.expires) for e in r.events()] == [("Registered", 45)]
    # The UA refreshes at half the granted time, on its own timer; a refresh keeps
    # the Call-ID and moves CSeq on (s.10.2.4); the nonce is reused.
    granted_at = r.now
    refresh = r.run_until_request()
    assert r.now == pytest.approx(granted_at + 22.5)
    assert refresh.call_id == rid and refresh.cseq.seq == second.cseq.seq + 1
    assert "nc=00000002" in refresh.headers.get("Authorization")
    r.answer(refresh, 200, [("Expires", "300")])  # no Contact: the Expires header
    assert [e.expires for e in r.events()] == [300]
    r.ua.unregister(rid, r.now + 1)
    gone = r.last_request()
    assert gone.headers.get("Expires") == "0"
    r.answer(gone, 200)
    assert [e.expires for e in r.events()] == [0]
    r.ua.handle_timer(r.now + 600)  # no refresh after the unregister
    assert r.ua.datagrams_to_send() == [] and r.ua.get_timer() is None


def test_register_423_retries_with_min_expires_and_bad_credentials_fail():
    r = FakeRegistrar()
    rid = r.ua.register("sip:pbx.example.com", REGISTRAR, 0.0, expires=60, password="pw")
    first = r.last_request()
    r.answer(first, 423, [("Min-Expires", "120")])
    second = r.last_request()
    assert second.headers.get("Expires") == "120"
    challenge = 'Digest realm="pbx", nonce="n1"'
    r.answer(second, 401, [("WWW-Authenticate", challenge)])
    third = r.last_request()
    assert "qop" not in third.headers.get("Authorization")  # RFC 2069 style challenge
    r.answer(third, 401, [("WWW-Authenticate", challenge)])  # same nonce again: refused
    [failed] = r.events()
    assert isinstance(failed, RegistrationFailed) and failed.registration_id == rid
    assert failed.status_code == 401 and "refused" in failed.reason
    assert failed.retry_in == 30
    assert r.ua.datagrams_to_send() == []  # no third try now ...
    failed_at = r.now
    retry = r.run_until_request()  # ... but a fresh attempt after retry_s
    assert r.now == pytest.approx(failed_at + 30) and retry.call_id == rid


def test_registration_granted_0_s_is_a_failure_and_retried():
    """Issue 11 #16: a 2xx granting 0 s did not register us: retried, not 'unregistered'."""
    r = FakeRegistrar()
    rid = r.ua.register("sip:pbx.example.com", REGISTRAR, 0.0, expires=300)
    first = r.last_request()
    r.answer(first, 200, [("Contact", "<sip:1000@127.0.0.1:5070>;expires=0")])
    [failed] = r.events()
    assert isinstance(failed, RegistrationFailed) and failed.registration_id == rid
    assert "granted 0" in failed.reason and failed.retry_in == 30
    again = r.run_until_request()
    assert again.call_id == rid and again.headers.get("Expires") == "300"


# --- forking (RFC 3261 s.13.2.2.4) ---------------------------------------------------------


def _ok_from_fork(invite: SIPRequest, tag: str, contact_port: int) -> bytes:
    return (
        f"SIP/2.0 200 OK\r\nVia: {invite.headers.get('Via')}\r\n"
        f"From: {invite.headers.get('From')}\r\nTo: {invite.headers.get('To')};tag={tag}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: {invite.cseq.seq} INVITE\r\n"
        f"Contact: <sip:bob@127.0.0.1:{contact_port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP_ANSWER)}\r\n\r\n"
    ).encode() + SDP_ANSWER


def test_a_2xx_from_a_second_fork_is_acked_and_ended_with_bye():
    """Regression: a second fork's 200 was ACKed on the first fork's dialog
    (wrong To tag, wrong target), so that fork's UAS kept a call no one used."""
    proxy = ("127.0.0.1", 5090)
    ua = UserAgent("127.0.0.1", 5080)
    call_id = ua.invite("sip:bob@127.0.0.1:5090", SDP_OFFER, 0.0)
    [(data, _)] = ua.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, SIPRequest)
    ua.receive(_ok_from_fork(invite, "forkA", 5094), Flow.udp(proxy), 0.1)
    [(ack_a, hop_a)] = ua.datagrams_to_send()
    assert first_line(ack_a).startswith("ACK sip:bob@127.0.0.1:5094") and hop_a.remote[1] == 5094

    second = _ok_from_fork(invite, "forkB", 5096)
    ua.receive(second, Flow.udp(proxy), 0.2)
    out = [(parse(d), flow) for d, flow in ua.datagrams_to_send()]
    assert [(m.method, f.remote) for m, f in out] == [
        ("ACK", ("127.0.0.1", 5096)),
        ("BYE", ("127.0.0.1", 5096)),
    ]
    assert all(m.to.tag == "forkB" and m.call_id == call_id for m, _ in out)
    assert out[0][0].cseq.seq == invite.cseq.seq

    ua.receive(second, Flow.udp(proxy), 0.3)  # its retransmission: ACKed again, no second BYE
    again = [parse(d) for d, _ in ua.datagrams_to_send()]
    assert [m.method for m in again] == ["ACK"] and again[0].to.tag == "forkB"
    session = ua.session(call_id)
    assert session is not None and session.dialog is not None
    assert session.dialog.remote_tag == "forkA"  # the call is the first fork's
    answered = [e for e in iter(ua.next_event, None) if isinstance(e, CallAnswered)]
    assert len(answered) == 1
