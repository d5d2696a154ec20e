"""Digest authentication both ways (RFC 3261 s.22, RFC 7616, RFC 8760) on a fake clock.

The server side (:class:`DigestServer`) alone: challenges, SHA-256 and MD5
answers, nonce expiry at an exact time, stale handling, replayed nonce
counts, failures counted and refused per source. Then two user agents in
memory: an INVITE challenged 401 or 407 is sent again once with credentials
(new branch, CSeq + 1, same Call-ID and From tag), wrong credentials end the
call with the challenge's status, and RFC 3263 failover uses the same retry.
"""

from __future__ import annotations

import random

import pytest

from pipecat_sip.sip.auth import (
    Credentials,
    DigestChallenge,
    DigestClient,
    DigestServer,
    digest_authorization,
    parse_challenge,
    parse_credentials,
    users_from_text,
)
from pipecat_sip.sip.events import CallAnswered, IncomingCall
from pipecat_sip.sip.locate import Destination, TargetList
from pipecat_sip.sip.message import SIPRequest, SIPResponse, make_response, parse_message
from tests.sip_pair import SDP_OFFER, SIPPair, auto_answer

USERS = {"alice": "wonderland", "bob": "builder"}
URI = "sip:bot@127.0.0.1:5080"


def invite(uri: str = URI, authorization: str | None = None, header: str = "Authorization"):
    lines = [
        f"INVITE {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtest1",
        "Max-Forwards: 70",
        "From: <sip:alice@127.0.0.1>;tag=a1",
        f"To: <{uri}>",
        "Call-ID: digest-test@127.0.0.1",
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@127.0.0.1:5070>",
    ]
    if authorization:
        lines.append(f"{header}: {authorization}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, SIPRequest)
    return msg


def challenge_of(decision) -> DigestChallenge:
    return parse_challenge(decision.headers[0][1])


def answer(decision, user="alice", password="wonderland", nc=1, uri=URI, challenge=None):
    challenge = challenge or challenge_of(decision)
    return digest_authorization(challenge, "INVITE", uri, user, password, nc=nc, cnonce="c0ffee")


def server(**kwargs) -> DigestServer:
    kwargs.setdefault("rng", random.Random(7))
    return DigestServer("pipecat", USERS, **kwargs)


def test_challenge_offers_sha256_then_md5_with_qop_auth():
    auth = server()
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    assert not decision.ok and decision.status_code == 401 and decision.reason == "no credentials"
    assert not decision.failure  # a first request without credentials is normal
    names = [name for name, _ in decision.headers]
    assert names == ["WWW-Authenticate", "WWW-Authenticate"]
    first, second = (parse_challenge(value) for _, value in decision.headers)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce and first.qop == ("auth",) and first.opaque
    assert first.realm == "pipecat" and not first.stale


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_right_password_accepted_with_either_algorithm(algorithm):
    auth = server()
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    challenge = next(
        c for c in (parse_challenge(v) for _, v in decision.headers) if c.algorithm == algorithm
    )
    value = answer(decision, challenge=challenge)
    assert parse_credentials(value).algorithm == algorithm
    ok = auth.check(invite(authorization=value), "192.0.2.1", 1.0)
    assert ok.ok and ok.username == "alice"
    assert auth.stats["accepted"] == 1 and auth.stats["failed"] == 0


def test_nonce_expires_at_its_ttl_exactly_and_stale_asks_again():
    auth = server(nonce_ttl_s=30.0)
    decision = auth.check(invite(), "192.0.2.1", 100.0)
    first = answer(decision, nc=1)
    assert auth.check(invite(authorization=first), "192.0.2.1", 130.0).ok  # age 30 s: still good
    later = answer(decision, nc=2)
    stale = auth.check(invite(authorization=later), "192.0.2.1", 130.001)
    assert not stale.ok and stale.status_code == 401 and stale.reason == "stale nonce"
    assert not stale.failure and challenge_of(stale).stale
    assert challenge_of(stale).nonce != challenge_of(decision).nonce
    # The new nonce works at once.
    assert auth.check(invite(authorization=answer(stale)), "192.0.2.1", 130.002).ok
    # A stale nonce answered with a wrong password is a failure, not "stale".
    wrong = answer(decision, password="nope", nc=3)
    refused = auth.check(invite(authorization=wrong), "192.0.2.1", 131.0)
    assert refused.reason == "wrong password" and refused.failure
    assert not challenge_of(refused).stale


def test_replayed_or_lower_nonce_count_refused():
    auth = server()
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    assert auth.check(invite(authorization=answer(decision, nc=1)), "192.0.2.1", 1.0).ok
    assert auth.check(invite(authorization=answer(decision, nc=5)), "192.0.2.1", 2.0).ok
    for nc in (5, 3):
        again = auth.check(invite(authorization=answer(decision, nc=nc)), "192.0.2.1", 3.0)
        assert not again.ok and again.reason == f"replayed nonce count {nc}" and again.failure
    assert auth.stats["replayed"] == 2
    assert auth.check(invite(authorization=answer(decision, nc=6)), "192.0.2.1", 4.0).ok


def test_without_qop_a_nonce_is_good_once():
    auth = server()
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    plain = DigestChallenge(realm="pipecat", nonce=challenge_of(decision).nonce, algorithm="MD5")
    value = digest_authorization(plain, "INVITE", URI, "alice", "wonderland")
    assert "qop" not in value
    assert auth.check(invite(authorization=value), "192.0.2.1", 1.0).ok
    assert not auth.check(invite(authorization=value), "192.0.2.1", 2.0).ok


def test_forged_unknown_and_mismatched_answers_fail():
    auth = server()
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    other = server(rng=random.Random(8))  # another secret: its nonces are not ours
    foreign = other.check(invite(), "192.0.2.1", 0.0)
    cases = {
        "nonce not issued here": answer(foreign),
        "unknown user": answer(decision, user="mallory"),
        "wrong password": answer(decision, password="guess"),
        "digest-uri is not the Request-URI": answer(decision, uri="sip:other@127.0.0.1"),
    }
    for reason, value in cases.items():
        result = auth.check(invite(authorization=value), "192.0.2.9", 1.0)
        assert (result.ok, result.reason, result.failure) == (False, reason, True), reason
    assert auth.failures("192.0.2.9") == 4
    # Garbage is no credentials at all: challenged, not counted.
    junk = auth.check(invite(authorization="Digest nonsense"), "192.0.2.8", 1.0)
    assert junk.reason == "no credentials" and auth.failures("192.0.2.8") == 0


def test_failures_refused_per_source_until_the_window_passes():
    auth = server(max_failures=3, failure_window_s=60.0)
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    wrong = answer(decision, password="guess")
    for t in (1.0, 2.0, 3.0):
        assert auth.check(invite(authorization=wrong), "198.51.100.7", t).failure
    refused = auth.check(invite(authorization=answer(decision)), "198.51.100.7", 4.0)
    assert (refused.ok, refused.status_code, refused.headers) == (False, 403, ())
    # Another source is not affected, and the right password works for it.
    assert auth.check(invite(authorization=answer(decision, nc=1)), "192.0.2.1", 4.0).ok
    assert auth.refused("198.51.100.7", 60.999)
    assert not auth.refused("198.51.100.7", 61.0)  # the window began at the first failure
    again = auth.check(invite(authorization=answer(decision, nc=2)), "198.51.100.7", 61.0)
    assert again.ok


def test_tracked_nonces_and_sources_are_bounded():
    auth = server(max_nonces=4, max_sources=2, max_failures=1)
    first = auth.check(invite(), "192.0.2.1", 0.0)
    for _ in range(4):
        auth.check(invite(), "192.0.2.1", 0.0)
    evicted = auth.check(invite(authorization=answer(first)), "192.0.2.1", 1.0)
    assert evicted.reason == "stale nonce"  # forgotten: safe to ask again
    wrong = answer(auth.check(invite(), "192.0.2.1", 1.0), password="x")
    for source in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        auth.check(invite(authorization=wrong), source, 2.0)
    assert auth.failures("203.0.113.1") == 0 and auth.failures("203.0.113.3") == 1


def test_proxy_mode_uses_407_and_proxy_headers():
    auth = server(proxy=True)
    decision = auth.check(invite(), "192.0.2.1", 0.0)
    assert decision.status_code == 407 and decision.headers[0][0] == "Proxy-Authenticate"
    value = answer(decision)
    assert not auth.check(invite(authorization=value), "192.0.2.1", 1.0).ok
    assert auth.check(invite(authorization=value, header="Proxy-Authorization"), "x", 1.0).ok


def test_users_file_format():
    assert users_from_text("# accounts\nalice:wonder:land\n\n bob : builder\n") == {
        "alice": "wonder:land",
        "bob": " builder",
    }
    with pytest.raises(ValueError, match="line 2"):
        users_from_text("alice:x\nbroken\n")


def _challenge_response(code: int, nonce: str, *, stale: bool = False) -> SIPResponse:
    name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    value = f'Digest realm="r", nonce="{nonce}", qop="auth"' + (", stale=true" if stale else "")
    return make_response(invite(), code, headers=[(name, value)])


def test_client_keeps_proxy_and_uas_answers_and_refuses_a_repeated_challenge():
    client = DigestClient(Credentials("auth-id", "pw"), lambda: "cn")
    assert client.answer(_challenge_response(407, "n1"))
    assert client.answer(_challenge_response(401, "n2"))
    headers = dict(client.headers("INVITE", URI))
    assert set(headers) == {"Proxy-Authorization", "Authorization"}
    assert parse_credentials(headers["Authorization"]).username == "auth-id"
    assert parse_credentials(headers["Authorization"]).nc == 1
    retried = invite(authorization=headers["Authorization"])
    assert parse_credentials(client.headers("BYE", URI)[1][1]).nc == 2
    # The realm challenged again, without stale, for a request that carried our answer.
    assert not client.answer(_challenge_response(401, "n3"), retried)
    assert "credentials refused" in (client.refused_reason or "")
    # A later request that carried nothing is answered (a BYE challenged anew).
    assert client.answer(_challenge_response(401, "n4"), invite())


def test_client_retries_a_stale_nonce_and_respects_a_realm():
    client = DigestClient(Credentials("u", "p"), lambda: "cn")
    assert client.answer(_challenge_response(401, "n1"))
    sent = invite(authorization=client.headers("INVITE", URI)[0][1])
    assert client.answer(_challenge_response(401, "n2", stale=True), sent)
    again = invite(authorization=client.headers("INVITE", URI)[0][1])
    assert not client.answer(_challenge_response(401, "n2", stale=True), again)  # same nonce
    only = DigestClient(Credentials("u", "p", realm="other"), lambda: "cn")
    assert not only.answer(_challenge_response(401, "n1"))
    assert "not ours" in (only.refused_reason or "")


# --- two user agents --------------------------------------------------------------


def authenticated_pair(**server_options) -> SIPPair:
    server_options.setdefault("rng", random.Random(3))
    auth = DigestServer("pipecat", USERS, **server_options)
    return SIPPair(a_options={"rng": random.Random(1)}, b_options={"authenticator": auth})


def requests(pair: SIPPair, side: str, method: str) -> list[SIPRequest]:
    return [parse_message(c.data) for c in pair.sent(side, method + " ")]


def test_invite_challenged_401_is_sent_again_once_with_credentials():
    pair = authenticated_pair()
    pair.on_event("b", auto_answer())
    call_id = pair.a.invite(
        pair.uri_of("b"), SDP_OFFER, pair.now, credentials=Credentials("alice", "wonderland")
    )
    pair.run()
    first, second = requests(pair, "a", "INVITE")
    assert first.call_id == second.call_id == call_id
    assert first.from_.tag == second.from_.tag
    assert second.cseq.seq == first.cseq.seq + 1
    assert first.top_via.branch != second.top_via.branch
    assert "Authorization" not in first.headers
    creds = parse_credentials(second.headers.get("Authorization") or "")
    assert creds.username == "alice" and creds.algorithm == "SHA-256" and creds.nc == 1
    assert second.body == first.body
    statuses = [c.first_line for c in pair.sent("b", "SIP/2.0")]
    assert statuses[0] == "SIP/2.0 401 Unauthorized"  # no 100 Trying before a challenge
    assert "SIP/2.0 200 OK" in statuses
    incoming = pair.of_type("b", IncomingCall)
    assert len(incoming) == 1 and incoming[0].user == "alice"
    assert pair.of_type("a", CallAnswered)
    assert [c.first_line.split()[0] for c in pair.sent("a", "ACK")] == ["ACK", "ACK"]
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_wrong_password_ends_the_call_with_the_status_after_one_retry():
    pair = authenticated_pair()
    pair.on_event("b", auto_answer())
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, credentials=Credentials("alice", "x"))
    pair.run()
    assert len(requests(pair, "a", "INVITE")) == 2
    assert [(e.reason, e.status_code) for e in pair.ended("a")] == [("auth_failed", 401)]
    assert not pair.of_type("b", IncomingCall)
    assert pair.b.authenticator.failures("127.0.0.1") == 1
    pair.assert_no_leaks()


def test_no_credentials_is_rejected_401():
    pair = authenticated_pair()
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)
    pair.run()
    assert [(e.reason, e.status_code) for e in pair.ended("a")] == [("rejected", 401)]
    pair.assert_no_leaks()


def test_proxy_challenge_407_answered_with_proxy_authorization():
    pair = authenticated_pair(proxy=True)
    pair.on_event("b", auto_answer())
    call_id = pair.a.invite(
        pair.uri_of("b"), SDP_OFFER, pair.now, credentials=Credentials("bob", "builder")
    )
    pair.run()
    second = requests(pair, "a", "INVITE")[1]
    assert "Proxy-Authorization" in second.headers and "Authorization" not in second.headers
    assert pair.of_type("b", IncomingCall)[0].user == "bob"
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_source_refused_after_repeated_failures_gets_403():
    pair = authenticated_pair(max_failures=2, failure_window_s=600.0)
    for _ in range(3):
        pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, credentials=Credentials("alice", "x"))
        pair.run()
    codes = [e.status_code for e in pair.ended("a")]
    assert codes == [401, 401, 403]
    pair.assert_no_leaks()


def _dest(port: int) -> Destination:
    return Destination("udp", "127.0.0.1", port, "example.test")


def test_failover_after_timer_b_goes_to_the_next_destination():
    pair = SIPPair()
    pair.on_event("b", auto_answer())
    targets = TargetList([Destination("udp", "192.0.2.50", 5060, "a.example"), _dest(5080)])
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, targets=targets)
    pair.run()
    sent = pair.sent("a", "INVITE ")
    outside = [c for c in sent if c.dst == "outside"]
    inside = [c for c in sent if c.dst == "b"]
    # Timer A at 0.5, 1.5, 3.5, ... then Timer B at 64*T1 = 32 s moves on.
    assert [c.time for c in outside] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert inside[0].time == 32.0
    first, second = parse_message(outside[0].data), parse_message(inside[0].data)
    assert second.call_id == first.call_id == call_id and second.cseq.seq == first.cseq.seq + 1
    assert second.from_.tag == first.from_.tag and second.top_via.branch != first.top_via.branch
    assert pair.of_type("a", CallAnswered)
    assert targets.failures[0][1] == "timeout"
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_failover_on_503_but_not_after_a_provisional():
    pair = SIPPair()
    answered = []

    def b_side(p: SIPPair, event) -> None:
        if isinstance(event, IncomingCall):
            if not answered:
                answered.append(event.call_id)
                p.b.reject(event.call_id, 503, p.now)
            else:
                p.b.answer(event.call_id, SDP_OFFER, p.now)

    pair.on_event("b", b_side)
    targets = TargetList([_dest(5080), _dest(5080), _dest(5080)])
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, targets=targets)
    pair.run()
    assert len(requests(pair, "a", "INVITE")) == 2 and pair.of_type("a", CallAnswered)
    pair.act("a", "hangup", call_id)
    pair.run()
    # A 503 after 180 Ringing is the far end's answer: no failover.
    pair.off_event("b")

    def ring_then_503(p: SIPPair, event) -> None:
        if isinstance(event, IncomingCall):
            p.b.ringing(event.call_id, p.now)
            p.b.reject(event.call_id, 503, p.now)

    pair.on_event("b", ring_then_503)
    before = len(requests(pair, "a", "INVITE"))
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now, targets=TargetList([_dest(5080)] * 2))
    pair.run()
    assert len(requests(pair, "a", "INVITE")) == before + 1
    assert pair.ended("a")[-1].status_code == 503
    pair.assert_no_leaks()


def test_bye_challenged_inside_the_dialog_is_sent_again_with_credentials():
    pair = authenticated_pair()
    pair.on_event("b", auto_answer())
    call_id = pair.a.invite(
        pair.uri_of("b"), SDP_OFFER, pair.now, credentials=Credentials("alice", "wonderland")
    )
    pair.run()
    usage = pair.b.invites
    plain = usage.on_in_dialog
    challenged = []

    def challenge_first_bye(req, txn, flow, now):
        if req.method == "BYE" and not challenged:
            challenged.append(req)
            decision = pair.b.authenticator.check(req, flow.host, now)
            pair.b.respond(txn, 401, now, headers=decision.headers)
            return
        plain(req, txn, flow, now)

    usage.on_in_dialog = challenge_first_bye
    pair.act("a", "hangup", call_id)
    pair.run()
    byes = requests(pair, "a", "BYE")
    assert len(byes) == 2 and "Authorization" not in challenged[0].headers
    assert byes[1].cseq.seq == byes[0].cseq.seq + 1
    assert parse_credentials(byes[1].headers.get("Authorization") or "").username == "alice"
    assert [(e.reason, e.status_code) for e in pair.ended("a")] == [("local_bye", 200)]
    assert [e.reason for e in pair.ended("b")] == ["remote_bye"]
    pair.assert_no_leaks()
