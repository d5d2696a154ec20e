"""RFC 3261 s.17 / RFC 6026 transaction state machines on a fake clock.

Each test drives a `TransactionLayer` with a recording transaction user and
steps a fake clock from one `get_timer()` deadline to the next, recording
what went out and when.
"""

from __future__ import annotations

import pytest

from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.ids import Identifiers
from pipecat_sip.sip.message import SIPRequest, SIPResponse, make_response, parse_message
from pipecat_sip.sip.transaction import (
    BRANCH_MAGIC,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerValues,
    TransactionLayer,
    server_key,
)
from pipecat_sip.sip.transport import Flow

PEER = Flow.udp(("127.0.0.1", 5080))
TCP_PEER = Flow("TCP", ("127.0.0.1", 5080), connection=7)
_IDS = Identifiers()


def new_branch() -> str:
    return _IDS.branch()


T1 = 0.5
T2 = 4.0
T4 = 5.0


class RecordingTU:
    """A transaction user that records what it is told."""

    def __init__(self) -> None:
        self.responses: list[tuple[object, SIPResponse]] = []
        self.timeouts: list[object] = []
        self.terminated: list[tuple[object, float]] = []

    def on_response(self, txn, response, now):
        self.responses.append((txn, response))

    def on_transaction_timeout(self, txn, now):
        self.timeouts.append(txn)

    def on_transaction_terminated(self, txn, now):
        self.terminated.append((txn, now))


def request(
    method: str = "INVITE",
    *,
    branch: str | None = None,
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "abc@127.0.0.1",
    extra: str = "",
) -> SIPRequest:
    branch = branch or new_branch()
    to = "<sip:bot@127.0.0.1:5080>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bot@127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=1928301774\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SIPRequest)
    return msg


def response(req: SIPRequest, code: int, to_tag: str | None = "totag") -> SIPResponse:
    return make_response(req, code, to_tag=to_tag if code > 100 else None)


def ack_for(req: SIPRequest, resp: SIPResponse) -> SIPRequest:
    """The hop-by-hop ACK for a non-2xx final (same branch as the INVITE)."""
    text = (
        f"ACK {req.uri} SIP/2.0\r\n"
        f"Via: {req.headers.get_list('Via')[0]}\r\n"
        f"From: {req.headers.get('From')}\r\n"
        f"To: {resp.headers.get('To')}\r\n"
        f"Call-ID: {req.call_id}\r\n"
        f"CSeq: {req.cseq.seq} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SIPRequest)
    return msg


class Clock:
    """Runs a layer's timers deadline by deadline, recording what it sends."""

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.now = 0.0
        self.sent: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        lines = [d.split(b"\r\n", 1)[0].decode() for d, _ in self.layer.outbox]
        self.sent.extend((self.now, line) for line in lines)
        self.layer.outbox = []
        return lines

    def run(self, until: float, max_steps: int = 1000) -> None:
        """Fire every deadline up to `until` (inclusive), then stand at `until`."""
        self.drain()
        for _ in range(max_steps):
            deadline = self.layer.get_timer()
            if deadline is None or deadline > until:
                break
            assert deadline >= self.now, "timer in the past"
            self.now = deadline
            self.layer.handle_timer(self.now)
            self.drain()
        else:  # pragma: no cover
            raise AssertionError("timers did not settle")
        self.now = max(self.now, until)

    def times(self, prefix: str) -> list[float]:
        return [t for t, line in self.sent if line.startswith(prefix)]


def intervals(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]


@pytest.fixture
def tu() -> RecordingTU:
    return RecordingTU()


@pytest.fixture
def layer(tu: RecordingTU) -> TransactionLayer:
    return TransactionLayer(tu, TimerValues(T1, T2, T4))


# --- INVITE client transaction (RFC 3261 s.17.1.1) ----------------------------------


def test_invite_client_timer_a_doubles_and_timer_b_gives_up_at_64_t1(layer, tu):
    clock = Clock(layer)
    txn = layer.start_client(request(), PEER, 0.0)
    assert isinstance(txn, ClientInviteTransaction)
    assert txn.state == "calling"
    clock.run(until=100.0)
    sends = clock.times("INVITE")
    assert sends[0] == 0.0
    assert intervals(sends) == [0.5, 1, 2, 4, 8, 16]  # Timer A: T1 doubling
    assert txn.state == "terminated"
    assert tu.timeouts == [txn]  # Timer B at 64*T1
    assert layer.client == {}
    assert layer.get_timer() is None


def test_invite_client_timer_b_fires_at_32_s(layer, tu):
    clock = Clock(layer)
    txn = layer.start_client(request(), PEER, 0.0)
    clock.run(until=31.999)
    assert not tu.timeouts and txn.state == "calling"
    clock.run(until=32.0)
    assert tu.timeouts == [txn]


def test_invite_client_timers_scale_with_t1(tu):
    layer = TransactionLayer(tu, TimerValues(t1=0.1, t2=4.0, t4=5.0))
    clock = Clock(layer)
    layer.start_client(request(), PEER, 10.0)
    clock.now = 10.0
    clock.run(until=30.0)
    assert intervals(clock.times("INVITE")) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert len(tu.timeouts) == 1
    assert clock.now == 30.0


def test_invite_client_provisional_stops_a_and_b(layer, tu):
    clock = Clock(layer)
    req = request()
    txn = layer.start_client(req, PEER, 0.0)
    clock.run(until=0.7)  # one retransmission at 0.5
    assert layer.receive_response(response(req, 100), 0.7)
    assert txn.state == "proceeding"
    assert layer.get_timer() is None  # no timer in Proceeding
    clock.run(until=100.0)
    assert clock.times("INVITE") == [0.0, 0.5]
    assert not tu.timeouts
    assert [r.status_code for _, r in tu.responses] == [100]


def test_invite_client_non_2xx_generates_ack_with_invite_branch(layer, tu):
    clock = Clock(layer)
    req = request(extra="Route: <sip:proxy.example;lr>\r\n")
    txn = layer.start_client(req, PEER, 0.0)
    clock.drain()
    layer.receive_response(response(req, 180), 0.1)
    busy = response(req, 486)
    layer.receive_response(busy, 0.2)
    assert txn.state == "completed"
    [(data, addr)] = layer.outbox
    layer.outbox = []
    assert addr == PEER
    ack = parse_message(data)
    assert isinstance(ack, SIPRequest) and ack.method == "ACK"
    assert str(ack.uri) == str(req.uri)  # same Request-URI as the INVITE
    assert ack.top_via.branch == req.top_via.branch  # s.17.1.1.3
    assert ack.cseq.seq == req.cseq.seq and ack.cseq.method == "ACK"
    assert ack.to.tag == "totag"  # To from the response
    assert ack.from_.tag == req.from_.tag
    assert ack.call_id == req.call_id
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert [r.status_code for _, r in tu.responses] == [180, 486]

    # A retransmitted final: ACK again, the TU is not told twice (s.17.1.1.2).
    layer.receive_response(busy, 1.0)
    assert [d.split(b" ", 1)[0] for d, _ in layer.outbox] == [b"ACK"]
    assert len(tu.responses) == 2
    layer.outbox = []
    # Timer D (>= 32 s for UDP) then Terminated.
    clock.now = 1.0
    clock.run(until=32.1)
    assert txn.state == "completed"
    clock.run(until=32.3)
    assert txn.state == "terminated"
    assert not tu.timeouts
    assert layer.client == {}


def test_invite_client_2xx_goes_to_tu_and_timer_m_passes_retransmissions(layer, tu):
    clock = Clock(layer)
    req = request()
    txn = layer.start_client(req, PEER, 0.0)
    clock.drain()
    ok = response(req, 200)
    layer.receive_response(ok, 1.0)
    assert txn.state == "accepted"
    assert layer.outbox == []  # the TU, not the transaction, ACKs a 2xx
    layer.receive_response(ok, 2.0)  # retransmitted 2xx: to the TU again (RFC 6026)
    assert [r.status_code for _, r in tu.responses] == [200, 200]
    clock.now = 2.0
    clock.run(until=1.0 + 64 * T1 - 0.01)
    assert txn.state == "accepted"
    clock.run(until=1.0 + 64 * T1)
    assert txn.state == "terminated"  # Timer M
    assert layer.client == {}
    assert not layer.receive_response(ok, 40.0)  # now matches nothing


def test_invite_client_ignores_provisional_after_final(layer, tu):
    req = request()
    layer.start_client(req, PEER, 0.0)
    layer.receive_response(response(req, 200), 0.1)
    layer.receive_response(response(req, 180), 0.2)
    assert [r.status_code for _, r in tu.responses] == [200]


# --- non-INVITE client transaction (RFC 3261 s.17.1.2) ----------------------------------


def test_non_invite_client_timer_e_doubles_capped_at_t2_and_f_at_32(layer, tu):
    clock = Clock(layer)
    txn = layer.start_client(request("BYE", to_tag="x"), PEER, 0.0)
    assert isinstance(txn, ClientNonInviteTransaction)
    clock.run(until=31.99)
    sends = clock.times("BYE")
    assert intervals(sends) == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert not tu.timeouts
    clock.run(until=32.0)
    assert tu.timeouts == [txn]  # Timer F
    assert txn.state == "terminated"
    assert layer.client == {}


def test_non_invite_client_proceeding_retransmits_at_t2_then_timer_k(layer, tu):
    clock = Clock(layer)
    req = request("OPTIONS")
    txn = layer.start_client(req, PEER, 0.0)
    clock.run(until=0.7)  # E fired at 0.5; next at 1.5
    layer.receive_response(response(req, 100), 0.7)
    assert txn.state == "proceeding"
    clock.run(until=10.0)
    sends = clock.times("OPTIONS")
    assert sends == [0.0, 0.5, 1.5, 5.5, 9.5]  # after the 1xx, Timer E is T2
    ok = response(req, 200)
    layer.receive_response(ok, 10.0)
    assert txn.state == "completed"
    layer.receive_response(ok, 11.0)  # absorbed in Completed
    assert [r.status_code for _, r in tu.responses] == [100, 200]
    clock.run(until=14.99)
    assert txn.state == "completed"
    clock.run(until=15.0)  # Timer K = T4
    assert txn.state == "terminated"
    assert clock.times("OPTIONS") == sends
    assert layer.client == {} and layer.get_timer() is None


def test_non_invite_client_final_in_trying_goes_straight_to_completed(layer, tu):
    req = request("BYE", to_tag="x")
    txn = layer.start_client(req, PEER, 0.0)
    layer.receive_response(response(req, 481), 0.1)
    assert txn.state == "completed"
    assert txn.timers.keys() == {"K"}


# --- INVITE server transaction (RFC 3261 s.17.2.1, RFC 6026 s.7.1) ------------------------


def server_txn(layer: TransactionLayer, req: SIPRequest) -> ServerInviteTransaction:
    assert layer.find_server(req) is None
    txn = layer.create_server(req, PEER)
    assert isinstance(txn, ServerInviteTransaction)
    assert layer.find_server(req) is txn
    return txn


def test_invite_server_non_2xx_retransmitted_on_g_until_h(layer, tu):
    clock = Clock(layer)
    req = request()
    txn = server_txn(layer, req)
    layer.respond(txn, response(req, 100), 0.0)
    layer.respond(txn, response(req, 486), 0.0)
    assert txn.state == "completed"
    clock.run(until=100.0)
    sends = clock.times("SIP/2.0 486")
    assert intervals(sends) == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]  # Timer G: capped at T2
    assert sends[-1] < 32.0
    assert tu.timeouts == [txn]  # Timer H at 64*T1
    assert txn.state == "terminated"
    assert layer.server == {}


def test_invite_server_ack_confirms_and_timer_i_terminates(layer, tu):
    clock = Clock(layer)
    req = request()
    txn = server_txn(layer, req)
    busy = response(req, 486)
    layer.respond(txn, busy, 0.0)
    clock.run(until=2.0)  # G at 0.5, 1.5
    ack = ack_for(req, busy)
    assert layer.find_server(ack) is txn  # ACK matches the INVITE's transaction
    layer.receive_request(txn, ack, 2.0)
    assert txn.state == "confirmed"
    layer.receive_request(txn, ack, 2.5)  # absorbed
    layer.receive_request(txn, req, 2.6)  # so is a late INVITE
    clock.run(until=6.99)
    assert txn.state == "confirmed"
    clock.run(until=7.0)  # Timer I = T4 after the ACK
    assert txn.state == "terminated"
    assert clock.times("SIP/2.0 486") == [0.0, 0.5, 1.5]
    assert not tu.timeouts
    assert layer.server == {}


def test_invite_server_retransmitted_invite_resends_latest_provisional(layer):
    """Proceeding re-sends the latest provisional; Accepted absorbs (RFC 6026 s.7.1)."""
    clock = Clock(layer)
    req = request()
    txn = server_txn(layer, req)
    layer.receive_request(txn, req, 0.0)  # nothing sent yet: nothing to repeat
    assert clock.drain() == []
    seen = []
    for code in (100, 180, 200):
        layer.respond(txn, response(req, code), 0.0)
        clock.drain()
        layer.receive_request(layer.find_server(req), req, 0.0)
        seen += clock.drain()
    assert seen == ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing"]


def test_invite_server_accepted_leaves_2xx_retransmission_to_the_tu(layer, tu):
    """RFC 6026 s.7.1: no 2xx retransmission of its own, INVITEs absorbed, Timer L ends it."""
    clock = Clock(layer)
    req = request()
    txn = server_txn(layer, req)
    ok = response(req, 200)
    layer.respond(txn, ok, 0.0)
    assert txn.state == "accepted"
    clock.run(until=8.0)
    assert clock.times("SIP/2.0 200") == [0.0]  # the transaction retransmits nothing
    layer.respond(txn, ok, 8.0)  # the TU's retransmission passes through
    layer.receive_request(txn, req, 20.0)  # Accepted absorbs a late INVITE
    clock.run(until=31.9)
    assert clock.times("SIP/2.0 200") == [0.0, 8.0]
    assert txn.state == "accepted"
    clock.run(until=32.0)
    assert txn.state == "terminated"  # Timer L = 64*T1
    assert not tu.timeouts
    assert [t for t, _ in tu.terminated] == [txn]
    assert layer.server == {}


def test_invite_server_accepted_refuses_a_non_2xx(layer):
    req = request()
    txn = server_txn(layer, req)
    layer.respond(txn, response(req, 200), 0.0)
    with pytest.raises(LocalProtocolError):
        layer.respond(txn, response(req, 486), 0.0)


def test_reliable_transport_arms_no_retransmission_timer(tu):
    """RFC 3261 s.17.1.1.2, s.17.1.2.2, s.17.2.1: no Timer A, E or G over TCP."""
    layer = TransactionLayer(tu, TimerValues(T1, T2, T4))
    clock = Clock(layer)
    invite = layer.start_client(request(), TCP_PEER, 0.0)
    options = layer.start_client(request("OPTIONS"), TCP_PEER, 0.0)
    clock.run(until=31.9)
    assert clock.times("INVITE") == [0.0] and clock.times("OPTIONS") == [0.0]
    clock.run(until=32.0)  # Timers B and F still give up at 64*T1
    assert tu.timeouts == [invite, options]
    req = request(branch=new_branch())
    server = layer.create_server(req, TCP_PEER)
    layer.respond(server, response(req, 486), 40.0)
    clock.now = 40.0
    clock.run(until=70.0)
    assert clock.times("SIP/2.0 486") == [40.0]  # no Timer G


def test_reliable_transport_absorbing_timers_are_zero(tu):
    """Timers D, I, J and K are zero over a reliable transport."""
    layer = TransactionLayer(tu, TimerValues(T1, T2, T4))
    invite = layer.start_client(request(), TCP_PEER, 0.0)
    layer.receive_response(response(invite.request, 486), 0.1)  # Completed, Timer D
    bye = layer.start_client(request("BYE", to_tag="x"), TCP_PEER, 0.1)
    layer.receive_response(response(bye.request, 200), 0.2)  # Completed, Timer K
    req = request("OPTIONS", branch=new_branch())
    server = layer.create_server(req, TCP_PEER)
    layer.respond(server, response(req, 200), 0.3)  # Completed, Timer J
    inv = request(branch=new_branch())
    server_inv = layer.create_server(inv, TCP_PEER)
    final = response(inv, 486)
    layer.respond(server_inv, final, 0.3)
    layer.receive_request(server_inv, ack_for(inv, final), 0.4)  # Confirmed, Timer I
    assert layer.get_timer() == pytest.approx(0.1)  # Timer D fires at once: zero
    layer.handle_timer(0.4)
    assert all(t.state == "terminated" for t in (invite, bye, server, server_inv))
    assert layer.client == {} and layer.server == {}


def test_invite_server_second_final_response_is_a_local_error(layer):
    req = request()
    txn = server_txn(layer, req)
    layer.respond(txn, response(req, 486), 0.0)
    with pytest.raises(LocalProtocolError):
        layer.respond(txn, response(req, 200), 0.0)
    with pytest.raises(LocalProtocolError):
        layer.respond(txn, response(req, 180), 0.0)


def test_invite_server_response_after_2xx_is_a_local_error(layer):
    req = request()
    txn = server_txn(layer, req)
    layer.respond(txn, response(req, 200), 0.0)
    with pytest.raises(LocalProtocolError):
        layer.respond(txn, response(req, 486), 0.0)


@pytest.mark.parametrize(
    "cls, state, target",
    [
        (ServerInviteTransaction, "proceeding", "confirmed"),
        (ServerInviteTransaction, "accepted", "completed"),
        (ServerNonInviteTransaction, "completed", "proceeding"),
        (ClientInviteTransaction, "completed", "accepted"),
        (ClientNonInviteTransaction, "completed", "proceeding"),
    ],
)
def test_transitions_outside_the_table_raise(layer, cls, state, target):
    assert (state, target) not in cls.TRANSITIONS
    txn = cls(layer, ("k",), request("INVITE" if "Invite" in cls.__name__ else "BYE"), PEER)
    txn.state = state
    with pytest.raises(LocalProtocolError, match=f"{state} -> {target}"):
        txn._go(target)
    assert txn.state == state


# --- non-INVITE server transaction (RFC 3261 s.17.2.2) ------------------------------------


def test_non_invite_server_timer_j_absorbs_retransmissions(layer, tu):
    clock = Clock(layer)
    req = request("BYE", to_tag="x")
    txn = layer.create_server(req, PEER)
    assert isinstance(txn, ServerNonInviteTransaction)
    layer.receive_request(txn, req, 0.0)  # Trying: nothing to re-send
    assert clock.drain() == []
    layer.respond(txn, response(req, 200), 0.0)
    assert txn.state == "completed"
    for t in (0.5, 1.5, 3.5, 31.0):
        clock.run(until=t)
        layer.receive_request(layer.find_server(req), req, t)
    clock.drain()
    assert clock.times("SIP/2.0 200") == [0.0, 0.5, 1.5, 3.5, 31.0]
    clock.run(until=31.99)
    assert txn.state == "completed"
    clock.run(until=32.0)  # Timer J = 64*T1
    assert txn.state == "terminated"
    assert layer.find_server(req) is None
    assert not tu.timeouts
    with pytest.raises(LocalProtocolError):
        layer.respond(txn, response(req, 200), 33.0)


def test_non_invite_server_provisional_resent_on_retransmission(layer):
    clock = Clock(layer)
    req = request("OPTIONS")
    txn = layer.create_server(req, PEER)
    layer.respond(txn, response(req, 100), 0.0)
    assert txn.state == "proceeding"
    layer.receive_request(txn, req, 0.5)
    assert clock.drain() == ["SIP/2.0 100 Trying", "SIP/2.0 100 Trying"]
    layer.respond(txn, response(req, 200), 1.0)
    with pytest.raises(LocalProtocolError):
        layer.respond(txn, response(req, 500), 1.0)


# --- matching and the timer heap ---------------------------------------------------------


def test_server_key_ack_matches_invite_cancel_does_not():
    req = request()
    ack = ack_for(req, response(req, 486))
    cancel = request("CANCEL", branch=req.top_via.branch)
    assert server_key(ack) == server_key(req)
    assert server_key(cancel) != server_key(req)
    assert server_key(cancel)[:-1] == server_key(req)[:-1]
    assert server_key(request(branch=req.top_via.branch + "x")) != server_key(req)


def test_server_key_rfc2543_fallback_without_magic_cookie():
    a = request(branch="oldstyle1")
    b = request(branch="oldstyle2")  # same Call-ID, CSeq, From tag and sent-by
    assert not a.top_via.branch.startswith(BRANCH_MAGIC)
    assert server_key(a) == server_key(b)
    assert server_key(a) != server_key(request(branch="oldstyle1", cseq=2))


def test_response_matches_only_its_client_transaction(layer, tu):
    req = request()
    layer.start_client(req, PEER, 0.0)
    other = request(branch=new_branch())
    assert not layer.receive_response(response(other, 200), 0.1)
    bye_like = response(request("BYE", branch=req.top_via.branch, to_tag="x"), 200)
    assert not layer.receive_response(bye_like, 0.1)  # same branch, other method
    assert tu.responses == []


def test_get_timer_is_earliest_deadline_across_transactions(layer):
    clock = Clock(layer)
    invite = layer.start_client(request(), PEER, 0.0)
    clock.drain()
    bye_req = request("BYE", to_tag="x")
    clock.now = 0.2
    bye = layer.start_client(bye_req, PEER, 0.2)
    assert layer.get_timer() == 0.5
    clock.run(until=0.5)
    assert layer.get_timer() == 0.7
    layer.receive_response(response(bye_req, 200), 0.6)  # BYE -> Completed, Timer K
    layer.receive_response(response(invite.request, 180), 0.6)  # INVITE: no timers
    assert layer.get_timer() == pytest.approx(0.6 + T4)
    clock.run(until=10.0)
    assert bye.state == "terminated"
    assert invite.state == "proceeding"
    assert layer.get_timer() is None
    # Stale heap entries never fire a timer early.
    assert clock.times("BYE") == [0.2]
    assert clock.times("INVITE") == [0.0, 0.5]
