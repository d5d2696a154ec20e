"""PRACK/100rel (RFC 3262), UPDATE (RFC 3311) and session timers (RFC 4028) on a fake clock.

Two user agents in memory (`tests.sip_pair`): every timer is checked at its
exact time: reliable provisional retransmission (T1 doubling, 500 at 64*T1),
the PRACK's own retransmission (Timer E), the 2xx held until the PRACK of an
answer, session refreshes at half the interval for an hour, the BYE a
non-refresher sends min(32, interval/3) before expiry, 422 and Min-SE.
"""

from __future__ import annotations

import pytest

from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.events import (
    CallAnswered,
    CallProgress,
    CallUpdated,
    IncomingCall,
    ModificationAnswered,
    ReofferReceived,
)
from pipecat_sip.sip.invite import (
    MODIFICATION_TRANSITIONS,
    Modification,
    ModificationEvent,
)
from pipecat_sip.sip.message import SIPRequest, SIPResponse, parse_message
from pipecat_sip.sip.reliable import RAck, parse_rseq
from pipecat_sip.sip.session_timer import (
    SessionExpires,
    SessionTimerPolicy,
    parse_min_se,
    uas_answer,
)
from tests.sip_pair import SDP_ANSWER, SDP_OFFER, Link, SIPPair, auto_answer, drop_all, drop_first

SDP_2 = SDP_ANSWER.replace(b"o=b 2 2", b"o=b 2 3")


def msgs(pair: SIPPair, side: str, prefix: str) -> list:
    return [parse_message(c.data) for c in pair.sent(side, prefix)]


def times(pair: SIPPair, side: str, prefix: str, fate: str | None = None) -> list[float]:
    return [c.time for c in pair.sent(side, prefix, fate=fate)]


def incoming_ids(pair: SIPPair) -> list[str]:
    ids: list[str] = []
    pair.on_event("b", lambda p, e: ids.append(e.call_id) if isinstance(e, IncomingCall) else None)
    return ids


def answer_reoffers(side: str, sdp: bytes = SDP_2):
    def handler(pair: SIPPair, event) -> None:
        if isinstance(event, ReofferReceived):
            pair.ua[side].answer_reoffer(event.call_id, sdp, pair.now)

    return handler


# --- PRACK / 100rel ----------------------------------------------------------------


def test_rack_and_rseq_grammar():
    assert RAck.parse("776656 1 INVITE") == RAck(776656, 1, "INVITE")
    assert str(RAck(5, 7, "INVITE")) == "5 7 INVITE"
    for bad in ("1 INVITE", "a 1 INVITE", "1 2 3", "99999999999 1 INVITE"):
        with pytest.raises(ValueError):
            RAck.parse(bad)
    assert parse_rseq(" 42 ") == 42 and parse_rseq("0") is None and parse_rseq("x") is None


def test_required_100rel_gets_a_reliable_180_acknowledged_by_prack():
    pair = SIPPair()
    ids = incoming_ids(pair)
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Require", "100rel")])
    pair.run_for(0.01)
    pair.act("b", "ringing", ids[0])
    pair.run_for(5)
    [ringing] = msgs(pair, "b", "SIP/2.0 180")  # acknowledged at once: never retransmitted
    assert "100rel" in ringing.option_tags("Require")
    rseq = parse_rseq(ringing.headers.get("RSeq"))
    assert rseq is not None and 0 < rseq < 2**31
    [prack] = msgs(pair, "a", "PRACK")
    invite = msgs(pair, "a", "INVITE")[0]
    assert RAck.parse(prack.headers.get("RAck")) == RAck(rseq, invite.cseq.seq, "INVITE")
    assert prack.cseq.seq == invite.cseq.seq + 1 and prack.to.tag == ringing.to.tag
    assert any(r.cseq.method == "PRACK" for r in msgs(pair, "b", "SIP/2.0 200"))
    assert [e.response.status_code for e in pair.of_type("a", CallProgress)] == [100, 180]
    pair.act("b", "answer", ids[0], SDP_ANSWER)
    pair.run_for(1)
    [answered] = pair.of_type("a", CallAnswered)
    # The confirmed dialog goes on from the PRACK's CSeq.
    pair.act("a", "hangup", call_id)
    pair.run()
    [bye] = msgs(pair, "a", "BYE")
    assert bye.cseq.seq == prack.cseq.seq + 1
    pair.assert_no_leaks()
    assert answered


def test_unacknowledged_reliable_183_is_retransmitted_then_the_invite_gets_500():
    pair = SIPPair(a_to_b=Link(drop=drop_all(b"PRACK")))
    ids = incoming_ids(pair)
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Require", "100rel")])
    pair.flush()
    pair.b.ringing(ids[0], pair.now, status_code=183, sdp=SDP_ANSWER)
    pair.run()
    # T1 = 0.5 s, doubling (RFC 3262 s.3), until 64*T1 = 32 s: then 500.
    assert times(pair, "b", "SIP/2.0 183") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert times(pair, "b", "SIP/2.0 500") == [32.0]
    assert [(e.reason, e.status_code) for e in pair.ended("b")] == [("no_prack", 500)]
    assert [(e.reason, e.status_code) for e in pair.ended("a")] == [("rejected", 500)]
    # Retransmissions of the 183 are not acknowledged again (RFC 3262 s.4): one PRACK
    # transaction, retransmitted by Timer E (0.5, 1, 2, 4, 4, ... s) until Timer F.
    pracks = pair.sent("a", "PRACK")
    assert len({parse_message(c.data).top_via.branch for c in pracks}) == 1
    assert [c.time for c in pracks][:7] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert len([e for e in pair.of_type("a", CallProgress) if e.response.status_code == 183]) == 1
    pair.assert_no_leaks()


def test_2xx_waits_for_the_prack_of_a_reliable_answer():
    pair = SIPPair(a_to_b=Link(drop=drop_first(b"PRACK", 2)))
    ids = incoming_ids(pair)
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Require", "100rel")])
    pair.flush()
    pair.b.ringing(ids[0], pair.now, status_code=183, sdp=SDP_ANSWER)
    pair.b.answer(ids[0], SDP_ANSWER, pair.now)  # held: the 183's answer is not PRACKed yet
    pair.flush()
    assert not pair.sent("b", "SIP/2.0 200")
    pair.run_for(10)
    # PRACK lost at 0 and 0.5, delivered at 1.5 (Timer E): the 200 goes right then.
    assert times(pair, "a", "PRACK", fate="delivered")[0] == 1.5
    invite_oks = [
        c for c in pair.sent("b", "SIP/2.0 200") if b"INVITE" in c.data.split(b"CSeq:")[1][:40]
    ]
    assert invite_oks[0].time == 1.5
    # Stopped by the PRACK (the one at 1.5 s went out with the PRACK's arrival).
    assert times(pair, "b", "SIP/2.0 183") == [0.0, 0.5, 1.5]
    assert pair.of_type("a", CallAnswered)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_reliable_provisionals_go_one_at_a_time_and_a_stray_prack_gets_481():
    pair = SIPPair(a_to_b=Link(latency=0.1), b_options={"reliable_provisionals": True})
    ids = incoming_ids(pair)
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)  # Supported: 100rel
    pair.run_for(0.1)
    pair.b.ringing(ids[0], pair.now)  # reliable: a supports it and b is configured so
    pair.b.ringing(ids[0], pair.now, status_code=183)  # waits for the 180's PRACK
    pair.flush()
    assert [c.first_line for c in pair.sent("b", "SIP/2.0 18")] == ["SIP/2.0 180 Ringing"]
    pair.run_for(1)
    first, second = msgs(pair, "b", "SIP/2.0 18")
    assert second.status_code == 183 and pair.sent("b", "SIP/2.0 183")[0].time == 0.2
    rseqs = [parse_rseq(m.headers.get("RSeq")) for m in (first, second)]
    assert rseqs[1] == rseqs[0] + 1
    assert len(pair.sent("a", "PRACK")) == 2
    dialog = pair.a.session(call_id).early_dialog
    stray = dialog.create_request("PRACK", pair.a.new_via(dialog.next_hop()))
    stray.headers.add("RAck", f"{rseqs[1]} 1 INVITE")  # already acknowledged
    pair.b.receive_datagram(bytes(stray), pair.addr["a"], pair.now)
    out = pair.b.datagrams_to_send()
    assert parse_message(out[-1][0]).status_code == 481
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_unreliable_without_support_even_when_configured():
    pair = SIPPair(b_options={"reliable_provisionals": True})
    ids = incoming_ids(pair)
    invite = (
        "INVITE sip:bot@127.0.0.1:5080 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnorel\r\n"
        "From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:bot@127.0.0.1:5080>\r\n"
        "Call-ID: norel@127.0.0.1\r\nCSeq: 1 INVITE\r\nSupported: timer\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP_OFFER)}\r\n\r\n"
    ).encode() + SDP_OFFER
    pair.b.receive_datagram(invite, pair.addr["a"], pair.now)
    pair.b.datagrams_to_send()
    pair.flush()
    pair.b.ringing(ids[0], pair.now)
    [(data, _)] = pair.b.datagrams_to_send()
    ringing = parse_message(data)
    assert ringing.status_code == 180 and "RSeq" not in ringing.headers
    assert "100rel" not in ringing.option_tags("Require")


# --- UPDATE (RFC 3311) --------------------------------------------------------------


def test_modification_table():
    M, E = Modification, ModificationEvent
    assert MODIFICATION_TRANSITIONS[(M.IDLE, E.OFFER_SENT)] is M.OFFER_SENT
    assert (M.OFFER_SENT, E.OFFER_RECEIVED) not in MODIFICATION_TRANSITIONS


def establish(pair: SIPPair) -> str:
    pair.on_event("b", auto_answer())
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)
    pair.run_for(1)
    assert pair.of_type("a", CallAnswered)
    return call_id


def test_update_with_and_without_an_offer_in_a_confirmed_dialog():
    pair = SIPPair()
    call_id = establish(pair)
    pair.off_event("b")
    pair.on_event("b", answer_reoffers("b"))
    pair.a.update(call_id, pair.now)  # no offer: a session refresh, answered at once
    pair.run_for(1)
    pair.a.update(call_id, pair.now, sdp=SDP_OFFER)
    pair.run_for(1)
    plain, offer = msgs(pair, "a", "UPDATE")
    assert not plain.body and offer.body == SDP_OFFER and offer.contacts  # a target refresh
    oks = [m for m in msgs(pair, "b", "SIP/2.0 200") if m.cseq.method == "UPDATE"]
    assert [ok.body for ok in oks] == [b"", SDP_2]
    answered = pair.of_type("a", ModificationAnswered)
    assert [(e.method, e.status_code) for e in answered] == [("UPDATE", 200), ("UPDATE", 200)]
    assert [e.request.method for e in pair.of_type("b", CallUpdated)] == ["UPDATE", "UPDATE"]
    assert [type(e.request) for e in pair.of_type("b", ReofferReceived)] == [SIPRequest]
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_update_glare_gets_491_and_an_early_update_before_the_answer_gets_500():
    pair = SIPPair()
    call_id = establish(pair)
    pair.off_event("b")
    pair.a.update(call_id, pair.now, sdp=SDP_OFFER)  # b's app holds its answer
    pair.flush()
    with pytest.raises(LocalProtocolError, match="in progress"):
        pair.a.update(call_id, pair.now, sdp=SDP_OFFER)
    session = pair.a.session(call_id)
    pair.a.invites.send_in_dialog(
        session, "UPDATE", pair.now, body=SDP_OFFER, content_type="application/sdp"
    )
    pair.flush()
    assert [m.status_code for m in msgs(pair, "b", "SIP/2.0 491")] == [491]
    [b_call] = pair.b.invites.sessions
    pair.b.answer_reoffer(b_call, SDP_2, pair.now)
    pair.run_for(1)
    pair.act("a", "hangup", call_id)
    pair.run()
    # Early: an UPDATE with an offer before the INVITE's offer/answer is complete.
    pair2 = SIPPair()
    ids = incoming_ids(pair2)
    call2 = pair2.a.invite(pair2.uri_of("b"), SDP_OFFER, pair2.now)
    pair2.flush()
    pair2.act("b", "ringing", ids[0])
    with pytest.raises(LocalProtocolError, match="not done"):
        pair2.a.update(call2, pair2.now, sdp=SDP_OFFER)
    session = pair2.a.session(call2)
    pair2.a.invites.send_in_dialog(
        session, "UPDATE", pair2.now, body=SDP_OFFER, content_type="application/sdp"
    )
    pair2.flush()
    [refused] = [m for m in msgs(pair2, "b", "SIP/2.0 500")]
    assert refused.cseq.method == "UPDATE" and refused.headers.get("Retry-After")
    pair2.act("a", "hangup", call2)
    pair2.run()
    pair.assert_no_leaks()
    pair2.assert_no_leaks()


def test_update_in_an_early_dialog_after_a_reliable_answer():
    pair = SIPPair()
    ids = incoming_ids(pair)
    pair.on_event("b", answer_reoffers("b"))
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Require", "100rel")])
    pair.flush()
    pair.b.ringing(ids[0], pair.now, status_code=183, sdp=SDP_ANSWER)
    pair.run_for(1)  # PRACKed: the offer/answer is complete
    pair.a.update(call_id, pair.now, sdp=SDP_OFFER)
    pair.run_for(1)
    [answered] = pair.of_type("a", ModificationAnswered)
    assert answered.status_code == 200 and answered.response.body == SDP_2
    assert pair.a.session(call_id).dialog is None  # still early
    pair.act("b", "answer", ids[0], SDP_2)
    pair.run_for(1)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_our_reinvite_is_answered_and_acked_with_its_cseq():
    pair = SIPPair()
    call_id = establish(pair)
    pair.off_event("b")
    pair.on_event("b", answer_reoffers("b"))
    pair.a.reinvite(call_id, pair.now, sdp=SDP_OFFER)
    pair.run_for(1)
    reinvite = msgs(pair, "a", "INVITE")[1]
    [answered] = pair.of_type("a", ModificationAnswered)
    assert (answered.method, answered.status_code) == ("INVITE", 200)
    acks = msgs(pair, "a", "ACK")
    assert acks[-1].cseq.seq == reinvite.cseq.seq
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


# --- session timers (RFC 4028) ---------------------------------------------------------


def test_session_expires_grammar_and_uas_rules():
    assert SessionExpires.parse("1800;refresher=uas") == SessionExpires(1800, "uas")
    assert SessionExpires.parse("90") == SessionExpires(90)
    assert SessionExpires.parse("x;refresher=uac") is None
    assert str(SessionExpires(120, "uac")) == "120;refresher=uac"
    assert parse_min_se("90;x=1") == 90 and parse_min_se("") is None
    with pytest.raises(ValueError):
        SessionTimerPolicy(min_se=30)
    with pytest.raises(ValueError):
        SessionTimerPolicy(session_expires=100, min_se=120)

    def request(*headers: tuple[str, str]) -> SIPRequest:
        lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
        data = (
            "INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
            "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: x\r\n"
            f"CSeq: 1 INVITE\r\n{lines}\r\n"
        ).encode()
        return parse_message(data)

    policy = SessionTimerPolicy(session_expires=600, min_se=120)
    assert uas_answer(request(("Session-Expires", "100")), policy).min_se == 120
    both = uas_answer(request(("Session-Expires", "1800"), ("Supported", "timer")), policy)
    assert both.negotiation.interval == 600 and not both.negotiation.we_refresh
    assert dict(both.headers) == {"Session-Expires": "600;refresher=uac", "Require": "timer"}
    legacy = uas_answer(request(("Session-Expires", "300;refresher=uac")), policy)
    assert legacy.negotiation.we_refresh and "Require" not in dict(legacy.headers)
    ours = uas_answer(request(), policy)
    assert dict(ours.headers) == {"Session-Expires": "600;refresher=uas"}
    assert uas_answer(request(), SessionTimerPolicy(enabled=False)).negotiation is None
    floor = uas_answer(request(("Session-Expires", "700"), ("Min-SE", "650")), policy)
    assert floor.negotiation.interval == 650


def timed_pair(a_policy: SessionTimerPolicy, b_policy: SessionTimerPolicy, **links) -> SIPPair:
    return SIPPair(
        a_options={"session_timers": a_policy}, b_options={"session_timers": b_policy}, **links
    )


def test_a_call_with_timers_lasts_an_hour_refreshed_by_update_at_half_the_interval():
    pair = timed_pair(
        SessionTimerPolicy(session_expires=120), SessionTimerPolicy(session_expires=1800)
    )
    call_id = establish(pair)
    [ok] = [m for m in msgs(pair, "b", "SIP/2.0 200") if m.cseq.method == "INVITE"]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert "timer" in ok.option_tags("Require")
    answered_at = pair.sent("b", "SIP/2.0 200")[0].time
    pair.run_for(3600)
    refreshes = times(pair, "a", "UPDATE")
    assert refreshes[:3] == [answered_at + 60, answered_at + 120, answered_at + 180]
    assert len(refreshes) == 60  # every 60 s for an hour
    assert pair.a.active_calls == pair.b.active_calls == 1 and not pair.ended("a")
    update = msgs(pair, "a", "UPDATE")[0]
    assert update.headers.get("Session-Expires") == "120;refresher=uac" and not update.body
    assert pair.b.session(call_id).session_timer.refreshes == 60
    pair.act("a", "hangup", call_id)
    pair.run_for(40)
    pair.off_event("a")
    pair.off_event("b")
    assert [e.reason for e in pair.ended("a")] == ["local_bye"]


def test_refresh_by_reinvite_when_the_peer_allows_no_update():
    pair = timed_pair(SessionTimerPolicy(enabled=False), SessionTimerPolicy(session_expires=90))
    pair.on_event("a", auto_answer("a"))  # a answers b's refresh re-INVITE
    call_id = establish(pair)
    [b_call] = pair.b.invites.sessions
    session = pair.b.session(b_call)
    assert session.session_timer.we_refresh and session.session_timer.interval == 90
    session.peer_allow = frozenset({"INVITE", "ACK", "BYE", "CANCEL"})
    pair.run_for(100)
    [reinvite] = msgs(pair, "b", "INVITE")
    assert pair.sent("b", "INVITE")[0].time == 45.0  # half of 90 s
    assert reinvite.headers.get("Session-Expires") == "90;refresher=uac"
    assert reinvite.body == SDP_ANSWER  # our current description as the offer
    assert len(pair.sent("b", "ACK")) == 1
    # a's 200 listed UPDATE in its Allow: the next refresh, at 90 s, is an UPDATE.
    assert times(pair, "b", "UPDATE") == [90.0]
    assert pair.a.active_calls == 1
    pair.act("a", "hangup", call_id)
    pair.run_for(40)


def test_without_refreshes_the_non_refresher_sends_bye_before_expiry():
    pair = timed_pair(
        SessionTimerPolicy(session_expires=120),
        SessionTimerPolicy(session_expires=1800),
        a_to_b=Link(drop=drop_all(b"UPDATE")),
    )
    establish(pair)
    answered_at = pair.sent("b", "SIP/2.0 200")[0].time
    pair.run_for(200)
    # b expects a's refresh; none arrives: BYE at 120 - min(32, 120/3) = 88 s.
    assert times(pair, "b", "BYE")[0] == answered_at + 88
    assert [e.reason for e in pair.ended("b")][0] == "session_expired"
    pair.assert_no_leaks()


def test_interval_too_small_gets_422_and_the_invite_is_retried_with_min_se():
    pair = timed_pair(
        SessionTimerPolicy(session_expires=120),
        SessionTimerPolicy(min_se=300, session_expires=1800),
    )
    call_id = establish(pair)
    [too_small] = msgs(pair, "b", "SIP/2.0 422")
    assert too_small.headers.get("Min-SE") == "300"
    first, second = msgs(pair, "a", "INVITE")
    assert first.headers.get("Session-Expires") == "120"
    assert second.headers.get("Session-Expires") == "300" and second.headers.get("Min-SE") == "300"
    assert second.cseq.seq == first.cseq.seq + 1
    assert pair.a.session(call_id).session_timer.interval == 300
    pair.act("a", "hangup", call_id)
    pair.run_for(40)
    assert isinstance(first, SIPRequest) and isinstance(too_small, SIPResponse)


def test_a_prack_crossing_the_2xx_still_gets_200():
    # The 180 is reliable and carries no SDP, so the 2xx goes at once; the PRACK
    # for the 180 arrives after it (RFC 3262 s.3 stops retransmission, not PRACKs).
    pair = SIPPair(a_to_b=Link(latency=0.05))
    ids = incoming_ids(pair)
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Require", "100rel")])
    pair.run_for(0.05)
    pair.b.ringing(ids[0], pair.now)
    pair.b.answer(ids[0], SDP_ANSWER, pair.now)
    pair.run_for(1)
    prack_answers = [m for m in msgs(pair, "b", "SIP/2.0") if m.cseq.method == "PRACK"]
    assert [m.status_code for m in prack_answers] == [200]
    assert pair.of_type("a", CallAnswered)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()
