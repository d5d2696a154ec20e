"""REFER (RFC 3515), Referred-By (RFC 3892), NOTIFY/sipfrag and Replaces (RFC 3891) on a fake clock.

Two user agents in memory: a (transferor) and b (transferee). Every outcome
of a transfer (accepted, trying, succeeded, failed: refused, undecided,
a failing sipfrag, a NOTIFY that overtakes the 202) and the inbound INVITE
with Replaces (matched, unmatched).
"""

from __future__ import annotations

import pytest

from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.events import CallAnswered, IncomingCall, ReferReceived, TransferProgress
from pipecat_sip.sip.message import parse_message
from pipecat_sip.sip.refer import (
    TRANSFER_TRANSITIONS,
    Replaces,
    TransferEvent,
    TransferState,
    next_transfer_state,
    parse_sipfrag,
    refer_to_uri,
    sipfrag,
    split_refer_to,
)
from tests.sip_pair import SDP_OFFER, Link, SIPPair, auto_answer, drop_first

TARGET = "sip:carol@127.0.0.1:5090"


def msgs(pair: SIPPair, side: str, prefix: str) -> list:
    return [parse_message(c.data) for c in pair.sent(side, prefix)]


def progress(pair: SIPPair) -> list[tuple[str, int | None]]:
    return [(e.state, e.status_code) for e in pair.of_type("a", TransferProgress)]


def established(**kwargs) -> tuple[SIPPair, str, str]:
    pair = SIPPair(**kwargs)
    pair.on_event("b", auto_answer())
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)
    pair.run_for(1)
    assert pair.of_type("a", CallAnswered)
    [b_call] = pair.b.invites.sessions
    return pair, call_id, b_call


def test_sipfrag_and_replaces_grammar():
    assert parse_sipfrag(b"SIP/2.0 100 Trying\r\n") == (100, "Trying")
    assert parse_sipfrag(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n") == (486, "Busy Here")
    assert parse_sipfrag(b"SIP/2.0 200") == (200, "")
    for bad in (b"", b"INVITE sip:x SIP/2.0", b"SIP/2.0 99 Low", b"\xff\xfe"):
        assert parse_sipfrag(bad) is None
    assert sipfrag(200, "OK") == b"SIP/2.0 200 OK\r\n"
    rep = Replaces("abc@host", to_tag="t1", from_tag="f1")
    assert str(rep) == "abc@host;to-tag=t1;from-tag=f1"
    assert Replaces.parse("abc@host; from-tag=f1 ;to-tag=t1;early-only") == Replaces(
        "abc@host", "t1", "f1", True
    )
    with pytest.raises(ValueError):
        Replaces.parse("abc@host;to-tag=t1")
    value = refer_to_uri(TARGET, rep)
    assert value == "<sip:carol@127.0.0.1:5090?Replaces=abc%40host%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>"
    assert split_refer_to(value) == (TARGET, rep, [])
    assert refer_to_uri("tel:+4930123") == "<tel:+4930123>"
    with pytest.raises(ValueError):
        split_refer_to("<not a uri>")


def test_transfer_table():
    assert (
        next_transfer_state(TransferState.PENDING, TransferEvent.ACCEPTED) is TransferState.ACCEPTED
    )
    assert (TransferState.SUCCEEDED, TransferEvent.FAILURE) not in TRANSFER_TRANSITIONS
    with pytest.raises(LocalProtocolError):
        next_transfer_state(TransferState.SUCCEEDED, TransferEvent.FAILURE)


def test_blind_transfer_accepted_tried_and_succeeded():
    pair, call_id, b_call = established()
    tid = pair.a.refer(call_id, TARGET, pair.now)
    pair.flush()
    [refer] = msgs(pair, "a", "REFER")
    assert refer.headers.get("Refer-To") == f"<{TARGET}>"
    assert refer.headers.get("Referred-By") == "<sip:alice@127.0.0.1>"
    [received] = pair.of_type("b", ReferReceived)
    assert (received.refer_to, received.referred_by, received.replaces) == (
        TARGET,
        "<sip:alice@127.0.0.1>",
        None,
    )
    assert received.transfer_id == str(refer.cseq.seq)
    assert progress(pair) == []  # undecided: no answer yet
    pair.act("b", "accept_refer", b_call, received.transfer_id)
    [accepted] = msgs(pair, "b", "SIP/2.0 202")
    assert accepted.cseq.method == "REFER"
    [trying] = msgs(pair, "b", "NOTIFY")
    assert trying.headers.get("Event") == f"refer;id={refer.cseq.seq}"
    assert trying.headers.get("Subscription-State") == "active;expires=60"
    assert trying.headers.get("Content-Type") == "message/sipfrag;version=2.0"
    assert trying.body == b"SIP/2.0 100 Trying\r\n"
    pair.b.notify_refer(b_call, received.transfer_id, 180, "Ringing", pair.now)
    pair.b.notify_refer(b_call, received.transfer_id, 200, "OK", pair.now)
    pair.flush()
    final = msgs(pair, "b", "NOTIFY")[-1]
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert progress(pair) == [
        ("accepted", 202),
        ("trying", 100),
        ("trying", 180),
        ("succeeded", 200),
    ]
    assert all(e.transfer_id == tid for e in pair.of_type("a", TransferProgress))
    with pytest.raises(LocalProtocolError, match="no live subscription"):
        pair.b.notify_refer(b_call, received.transfer_id, 200, "OK", pair.now)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_refused_undecided_and_failed_transfers():
    pair, call_id, b_call = established()
    pair.a.refer(call_id, TARGET, pair.now)
    pair.flush()
    first = pair.of_type("b", ReferReceived)[-1]
    pair.act("b", "reject_refer", b_call, first.transfer_id)
    assert progress(pair) == [("failed", 603)]
    # Undecided: the UA itself refuses after 8 s.
    pair.a.refer(call_id, TARGET, pair.now)
    pair.flush()
    started = pair.now
    pair.run_for(10)
    declined = [c for c in pair.sent("b", "SIP/2.0 603")]
    assert declined[-1].time == started + 8.0
    assert progress(pair)[-1] == ("failed", 603)
    # Accepted, but the target is busy.
    pair.a.refer(call_id, TARGET, pair.now)
    pair.flush()
    third = pair.of_type("b", ReferReceived)[-1]
    pair.b.accept_refer(b_call, third.transfer_id, pair.now)
    pair.b.notify_refer(b_call, third.transfer_id, 486, "Busy Here", pair.now)
    pair.flush()
    assert progress(pair)[-3:] == [("accepted", 202), ("trying", 100), ("failed", 486)]
    assert pair.a.active_calls == 1  # a failed transfer leaves the call up
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_notify_overtaking_the_202():
    pair, call_id, b_call = established(b_to_a=Link(drop=drop_first(b"SIP/2.0 202")))
    pair.a.refer(call_id, TARGET, pair.now)
    pair.flush()
    received = pair.of_type("b", ReferReceived)[-1]
    pair.act("b", "accept_refer", b_call, received.transfer_id)  # 202 lost, NOTIFY arrives
    assert progress(pair) == [("trying", 100)]
    pair.run_for(1)  # the REFER is retransmitted (Timer E) and the 202 re-sent
    assert progress(pair) == [("trying", 100)]  # a late 202 tells nothing new
    pair.b.notify_refer(b_call, received.transfer_id, 200, "OK", pair.now)
    pair.flush()
    assert progress(pair)[-1] == ("succeeded", 200)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_bad_notifies_and_refers():
    pair, call_id, b_call = established()
    session = pair.b.session(b_call)
    invites = pair.b.invites
    invites.send_in_dialog(session, "NOTIFY", pair.now, headers=[("Event", "presence")])
    invites.send_in_dialog(session, "NOTIFY", pair.now, headers=[("Event", "refer;id=9")])
    invites.send_in_dialog(session, "REFER", pair.now)  # no Refer-To
    pair.flush()
    codes = sorted(
        (m.cseq.method, m.status_code)
        for m in msgs(pair, "a", "SIP/2.0")
        if m.cseq.method in ("NOTIFY", "REFER")
    )
    assert codes == [("NOTIFY", 481), ("NOTIFY", 489), ("REFER", 400)]
    with pytest.raises(LocalProtocolError):
        pair.a.refer("no-such-call", TARGET, pair.now)
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_invite_with_replaces_names_the_call_it_replaces():
    pair, call_id, b_call = established()
    dialog = pair.b.session(b_call).dialog
    replaces = Replaces(dialog.call_id, to_tag=dialog.local_tag, from_tag=dialog.remote_tag)
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Replaces", str(replaces))])
    pair.run_for(1)
    new = pair.of_type("b", IncomingCall)[-1]
    assert new.replaces == b_call and new.call_id != b_call
    wrong = Replaces(dialog.call_id, to_tag="nope", from_tag=dialog.remote_tag)
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, headers=[("Replaces", str(wrong))])
    pair.run_for(1)
    assert pair.ended("a")[-1].status_code == 481
    assert len(pair.of_type("b", IncomingCall)) == 2
    for cid in list(pair.a.invites.sessions):
        pair.act("a", "hangup", cid)
    pair.run()
    pair.assert_no_leaks()
