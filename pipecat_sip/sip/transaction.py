"""SIP transactions (RFC 3261 s.17, RFC 6026).

Sans-IO: transactions never touch a socket or read a clock. `now` (seconds,
monotonic) goes in; messages to send come out through the
`TransactionLayer`'s outbox with the `Flow` they go on, and what the
transaction user (TU) must know is reported through the `TransactionUser`
methods, each with `now`. Timers are named as in RFC 3261 s.17 (A..K) and
RFC 6026 (L, M); `TransactionLayer.get_timer()` gives the one deadline the
I/O layer has to arm.

Over a reliable transport (TCP, TLS) no retransmission timer is armed
(A, E, G) and the timers that absorb retransmissions (D, I, J, K) are zero
(RFC 3261 s.17.1.1.2, s.17.1.2.2, s.17.2.1, s.17.2.2).

In the Accepted state of an INVITE server transaction (RFC 6026 s.7.1) the
transaction neither retransmits the 2xx nor reports INVITE retransmissions:
retransmitting the 2xx until the ACK is the UAS core's job (RFC 3261
s.13.3.1.4), a TU timer.

State machines are tables: a move not listed in a class's `TRANSITIONS` is a
`LocalProtocolError`.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Protocol

from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.headers import CSeq
from pipecat_sip.sip.ids import BRANCH_MAGIC
from pipecat_sip.sip.message import Headers, SIPRequest, SIPResponse
from pipecat_sip.sip.transport import Flow

#: Timer D over an unreliable transport, seconds (RFC 3261 s.17.1.1.2: at least 32 s).
TIMER_D_UNRELIABLE = 32.0


@dataclass(frozen=True)
class TimerValues:
    """RFC 3261 s.17.1.1.1 base timer values, seconds.

    Attributes:
        t1: RTT estimate (500 ms).
        t2: Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
        t4: Maximum duration a message remains in the network (5 s).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class TransactionUser(Protocol):
    """What a transaction reports to its user (the UA core); `now` is the time of the report."""

    def on_response(self, txn: ClientTransaction, response: SIPResponse, now: float) -> None:
        """A response for a client transaction (retransmitted 2xx to INVITE included)."""

    def on_transaction_timeout(self, txn: Transaction, now: float) -> None:
        """Timer B/F fired (client), or Timer H fired without ACK to a non-2xx (server)."""

    def on_transaction_terminated(self, txn: Transaction, now: float) -> None:
        """The transaction reached Terminated and left the layer.

        Called after the report that caused it (`on_response`,
        `on_transaction_timeout`), so the TU can drop what it keeps per
        transaction.
        """


class Transaction:
    """Common machinery: state, named timers and sending through the layer.

    Attributes:
        flow: Where the transaction's messages go (the request's destination
            for a client transaction, the response destination for a server one).
    """

    TRANSITIONS: frozenset[tuple[str, str]] = frozenset()
    initial_state = ""

    def __init__(self, layer: TransactionLayer, key: tuple, request: SIPRequest, flow: Flow):
        self.layer = layer
        self.key = key
        self.request = request
        self.flow = flow
        self.state = self.initial_state
        self.timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}

    @property
    def method(self) -> str:
        """The method of the request that created the transaction."""
        return self.request.method

    @property
    def terminated(self) -> bool:
        """Whether the transaction has ended."""
        return self.state == "terminated"

    def next_deadline(self) -> float | None:
        """The earliest armed timer's deadline, or None."""
        return min(self.timers.values()) if self.timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is at or before `now`, earliest first."""
        while self.timers and not self.terminated:
            name, deadline = min(self.timers.items(), key=lambda kv: kv[1])
            if deadline > now:
                break
            del self.timers[name]
            getattr(self, f"_timer_{name}")(now)

    def _start_timer(self, name: str, now: float, interval: float) -> None:
        self._intervals[name] = interval
        self.timers[name] = now + interval

    def _start_retransmit_timer(self, name: str, now: float, interval: float) -> None:
        """Arm a retransmission timer (A, E, G): only over an unreliable transport."""
        if not self.flow.reliable:
            self._start_timer(name, now, interval)

    def _absorb_interval(self, interval: float) -> float:
        """Timer D, I, J, K: ``interval`` over UDP, zero over a reliable transport."""
        return 0.0 if self.flow.reliable else interval

    def _go(self, state: str) -> None:
        if (self.state, state) not in self.TRANSITIONS:
            raise LocalProtocolError(
                f"{type(self).__name__}: no transition {self.state} -> {state}"
            )
        self.state = state
        if state == "terminated":
            self.timers.clear()
            self.layer.transaction_ended(self)

    def _send(self, data: bytes) -> None:
        self.layer.send(data, self.flow)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state}>"


# --- server transactions (RFC 3261 s.17.2) ------------------------------------


class ServerTransaction(Transaction):
    """A transaction created by a received request; the TU answers through it."""

    def __init__(self, layer: TransactionLayer, key: tuple, request: SIPRequest, flow: Flow):
        super().__init__(layer, key, request, flow)
        self.last_response: SIPResponse | None = None
        self._last_bytes: bytes | None = None

    def _transmit(self, response: SIPResponse) -> None:
        self.last_response = response
        self._last_bytes = bytes(response)
        self._send(self._last_bytes)

    def _retransmit(self) -> None:
        if self._last_bytes is not None:
            self._send(self._last_bytes)


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction (RFC 3261 s.17.2.1, RFC 6026 s.7.1).

    Proceeding -> Completed (3xx-6xx: Timer G retransmits it, Timer H waits
    for the ACK) -> Confirmed (ACK, Timer I) -> Terminated; or Proceeding ->
    Accepted (2xx) -> Terminated at Timer L (64*T1). In Accepted, INVITE
    retransmissions are absorbed and 2xx retransmissions come from the TU
    (:meth:`send_response` with the same 2xx).
    """

    initial_state = "proceeding"
    TRANSITIONS = frozenset(
        {
            ("proceeding", "completed"),
            ("proceeding", "accepted"),
            ("completed", "confirmed"),
            ("completed", "terminated"),
            ("confirmed", "terminated"),
            ("accepted", "terminated"),
        }
    )

    def send_response(self, response: SIPResponse, now: float, retransmit: bool = True) -> None:
        """Send a response from the TU.

        Args:
            response: The response.
            now: The current time, seconds.
            retransmit: For a 3xx-6xx: retransmit it on Timer G until the ACK
                (RFC 3261 s.17.2.1). False sends it once, as a stateless UAS
                would (s.8.2.7): for refusals under overload, so that a flood
                from spoofed sources earns no retransmissions; the
                transaction still answers retransmitted INVITEs, one response
                each.

        Raises:
            LocalProtocolError: A response after the final one (a 2xx again in
                Accepted is a retransmission, and allowed).
        """
        code = response.status_code
        if self.state == "accepted" and 200 <= code < 300:
            self._transmit(response)  # the TU's 2xx retransmission (RFC 6026 s.7.1)
            return
        if self.state != "proceeding":
            raise LocalProtocolError(f"response {code} in state {self.state}")
        self._transmit(response)
        t = self.layer.timer_values
        if 200 <= code < 300:
            self._go("accepted")
            self._start_timer("L", now, 64 * t.t1)
        elif code >= 300:
            self._go("completed")
            if retransmit:
                self._start_retransmit_timer("G", now, t.t1)
            self._start_timer("H", now, 64 * t.t1)

    def receive_request(self, request: SIPRequest, now: float) -> None:
        """A retransmitted INVITE, or an ACK for a non-2xx final response."""
        if request.method == "ACK":
            if self.state == "completed":
                self._go("confirmed")
                self.timers.pop("G", None)
                self.timers.pop("H", None)
                self._start_timer("I", now, self._absorb_interval(self.layer.timer_values.t4))
            return
        if self.state in ("proceeding", "completed"):
            self._retransmit()

    def _timer_G(self, now: float) -> None:
        self._retransmit()
        interval = min(2 * self._intervals["G"], self.layer.timer_values.t2)
        self._start_timer("G", now, interval)

    def _timer_H(self, now: float) -> None:
        self._go("terminated")
        self.layer.tu.on_transaction_timeout(self, now)

    def _timer_I(self, now: float) -> None:
        self._go("terminated")

    def _timer_L(self, now: float) -> None:
        self._go("terminated")


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 s.17.2.2).

    Trying -> Proceeding (1xx) -> Completed (final; Timer J = 64*T1 absorbs
    request retransmissions by re-sending the final response) -> Terminated.
    """

    initial_state = "trying"
    TRANSITIONS = frozenset(
        {
            ("trying", "proceeding"),
            ("trying", "completed"),
            ("proceeding", "completed"),
            ("completed", "terminated"),
        }
    )

    def send_response(self, response: SIPResponse, now: float) -> None:
        """Send a response from the TU.

        Raises:
            LocalProtocolError: A response after the final one.
        """
        if self.state not in ("trying", "proceeding"):
            raise LocalProtocolError(f"response {response.status_code} in state {self.state}")
        self._transmit(response)
        if response.status_code < 200:
            if self.state == "trying":
                self._go("proceeding")
        else:
            self._go("completed")
            self._start_timer("J", now, self._absorb_interval(64 * self.layer.timer_values.t1))

    def receive_request(self, request: SIPRequest, now: float) -> None:
        """A retransmission of the request: re-send the last response, if any."""
        if self.state in ("proceeding", "completed"):
            self._retransmit()

    def _timer_J(self, now: float) -> None:
        self._go("terminated")


# --- client transactions (RFC 3261 s.17.1) ------------------------------------


class ClientTransaction(Transaction):
    """A transaction created by a request we send."""

    def __init__(self, layer: TransactionLayer, key: tuple, request: SIPRequest, flow: Flow):
        super().__init__(layer, key, request, flow)
        self._request_bytes = bytes(request)
        self.udp_fallback: tuple[Flow, str] | None = None
        """For a request the UA moved from UDP to TCP for its size (RFC 3261
        s.18.1.1): the UDP flow and top Via to send it with instead if the TCP
        connection cannot be opened."""

    def fall_back_to_udp(self, now: float) -> None:
        """Send the request over UDP after all: its TCP connection failed (RFC 3261 s.18.1.1).

        The top Via goes back to UDP (the request object is changed in place,
        so a CANCEL or ACK built from it matches), the timers start again as
        for a new UDP request.
        """
        assert self.udp_fallback is not None
        flow, via = self.udp_fallback
        self.udp_fallback = None
        vias = self.request.headers.get_list("Via")
        self.request.headers.set("Via", ", ".join([via, *vias[1:]]))
        self.flow = flow
        self._request_bytes = bytes(self.request)
        self.timers.clear()
        self.start(now)

    def start(self, now: float) -> None:  # pragma: no cover - overridden
        """Send the request and arm the timers."""
        raise NotImplementedError

    def receive_response(self, response: SIPResponse, now: float) -> None:  # pragma: no cover
        """A response matched to this transaction."""
        raise NotImplementedError


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction (RFC 3261 s.17.1.1, RFC 6026 s.7.2).

    Calling (Timer A retransmits, doubling; Timer B = 64*T1 gives up) ->
    Proceeding (1xx) -> Completed (3xx-6xx: ACK sent here, Timer D = 32 s
    absorbs retransmitted finals) or Accepted (2xx: passed to the TU, which
    sends the ACK; Timer M = 64*T1 keeps passing 2xx retransmissions up).
    """

    initial_state = "calling"
    TRANSITIONS = frozenset(
        {
            ("calling", "proceeding"),
            ("calling", "completed"),
            ("calling", "accepted"),
            ("calling", "terminated"),
            ("proceeding", "completed"),
            ("proceeding", "accepted"),
            ("proceeding", "terminated"),  # no final 64*T1 after CANCEL (s.9.1)
            ("completed", "terminated"),
            ("accepted", "terminated"),
        }
    )

    def start(self, now: float) -> None:
        """Send the INVITE and arm Timers A and B."""
        self._send(self._request_bytes)
        t = self.layer.timer_values
        self._start_retransmit_timer("A", now, t.t1)
        self._start_timer("B", now, 64 * t.t1)

    def receive_response(self, response: SIPResponse, now: float) -> None:
        """A response matched to this transaction."""
        code = response.status_code
        tu = self.layer.tu
        if self.state in ("calling", "proceeding"):
            if code < 200:
                if self.state == "calling":
                    self._go("proceeding")
                    self.timers.pop("A", None)
                    self.timers.pop("B", None)
                tu.on_response(self, response, now)
            elif code < 300:
                self._go("accepted")
                self.timers.clear()
                self._start_timer("M", now, 64 * self.layer.timer_values.t1)
                tu.on_response(self, response, now)
            else:
                self._go("completed")
                self.timers.clear()
                self._ack_bytes = bytes(self._make_ack(response))
                self._send(self._ack_bytes)
                self._start_timer("D", now, self._absorb_interval(TIMER_D_UNRELIABLE))
                tu.on_response(self, response, now)
        elif self.state == "completed" and code >= 300:
            self._send(self._ack_bytes)
        elif self.state == "accepted" and 200 <= code < 300:
            tu.on_response(self, response, now)

    def cancel_sent(self, now: float) -> None:
        """The TU sent a CANCEL for this INVITE (RFC 3261 s.9.1).

        If no final response arrives within 64*T1, the transaction is
        destroyed and the TU told through `on_transaction_timeout`.
        """
        if self.state in ("calling", "proceeding"):
            self._start_timer("cancel", now, 64 * self.layer.timer_values.t1)
            self.layer.reschedule(self)

    def _make_ack(self, response: SIPResponse) -> SIPRequest:
        """ACK for a non-2xx final response (RFC 3261 s.17.1.1.3)."""
        req = self.request
        h = Headers()
        h.add("Via", req.headers.get_list("Via")[0])
        for route in req.headers.get_all("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", req.headers.get("From"))
        h.add("To", response.headers.get("To"))
        h.add("Call-ID", req.headers.get("Call-ID"))
        h.add("CSeq", CSeq(req.cseq.seq, "ACK"))
        return SIPRequest("ACK", req.uri, h)

    def _timer_A(self, now: float) -> None:
        self._send(self._request_bytes)
        self._start_timer("A", now, 2 * self._intervals["A"])

    def _timer_B(self, now: float) -> None:
        self._go("terminated")
        self.layer.tu.on_transaction_timeout(self, now)

    def _timer_D(self, now: float) -> None:
        self._go("terminated")

    def _timer_cancel(self, now: float) -> None:
        self._go("terminated")
        self.layer.tu.on_transaction_timeout(self, now)

    def _timer_M(self, now: float) -> None:
        self._go("terminated")


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 s.17.1.2).

    Trying (Timer E retransmits, doubling up to T2; Timer F = 64*T1 gives up)
    -> Proceeding (1xx; Timer E at T2) -> Completed (final; Timer K = T4) ->
    Terminated.
    """

    initial_state = "trying"
    TRANSITIONS = frozenset(
        {
            ("trying", "proceeding"),
            ("trying", "completed"),
            ("trying", "terminated"),
            ("proceeding", "completed"),
            ("proceeding", "terminated"),
            ("completed", "terminated"),
        }
    )

    def start(self, now: float) -> None:
        """Send the request and arm Timers E and F."""
        self._send(self._request_bytes)
        t = self.layer.timer_values
        self._start_retransmit_timer("E", now, t.t1)
        self._start_timer("F", now, 64 * t.t1)

    def receive_response(self, response: SIPResponse, now: float) -> None:
        """A response matched to this transaction."""
        if self.state not in ("trying", "proceeding"):
            return  # retransmitted final in Completed: absorbed
        if response.status_code < 200:
            if self.state == "trying":
                self._go("proceeding")
        else:
            self._go("completed")
            self.timers.clear()
            self._start_timer("K", now, self._absorb_interval(self.layer.timer_values.t4))
        self.layer.tu.on_response(self, response, now)

    def _timer_E(self, now: float) -> None:
        self._send(self._request_bytes)
        t2 = self.layer.timer_values.t2
        interval = t2 if self.state == "proceeding" else min(2 * self._intervals["E"], t2)
        self._start_timer("E", now, interval)

    def _timer_F(self, now: float) -> None:
        self._go("terminated")
        self.layer.tu.on_transaction_timeout(self, now)

    def _timer_K(self, now: float) -> None:
        self._go("terminated")


# --- the layer -----------------------------------------------------------------


def server_key(request: SIPRequest) -> tuple:
    """Server transaction key (RFC 3261 s.17.2.3): branch, sent-by, method.

    ACK matches the INVITE's transaction. A request without an RFC 3261
    branch falls back to Call-ID, CSeq number, From tag and sent-by (the
    RFC 2543 rules, simplified).
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(BRANCH_MAGIC):
        return (branch, via.sent_by.lower(), method)
    return ("2543", request.call_id, request.cseq.seq, request.from_.tag, via.sent_by, method)


def client_key(branch: str, method: str) -> tuple:
    """Client transaction key (RFC 3261 s.17.1.3): branch and CSeq method (ACK/CANCEL own)."""
    return (branch, method)


class TransactionLayer:
    """All live transactions of one endpoint, their timers and the outbox.

    Attributes:
        tu: The transaction user receiving reports.
        timer_values: T1, T2, T4.
        outbox: (message, flow) pairs waiting to be sent by the I/O layer.
        server: Live server transactions by key.
        client: Live client transactions by key.
    """

    def __init__(self, tu: TransactionUser, timer_values: TimerValues | None = None) -> None:
        self.tu = tu
        self.timer_values = timer_values or TimerValues()
        self.outbox: list[tuple[bytes, Flow]] = []
        self.server: dict[tuple, ServerTransaction] = {}
        self.client: dict[tuple, ClientTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._counter = itertools.count()
        self._ended: list[Transaction] = []

    def send(self, data: bytes, flow: Flow) -> None:
        """Queue a message for the I/O layer."""
        self.outbox.append((data, flow))

    def find_server(self, request: SIPRequest) -> ServerTransaction | None:
        """The server transaction a received request belongs to, if any."""
        return self.server.get(server_key(request))

    def create_server(self, request: SIPRequest, flow: Flow) -> ServerTransaction:
        """A new server transaction for a request that matched none; its responses go to `flow`."""
        key = server_key(request)
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        txn = cls(self, key, request, flow)
        self.server[key] = txn
        return txn

    def respond(
        self, txn: ServerTransaction, response: SIPResponse, now: float, retransmit: bool = True
    ) -> None:
        """Send `response` through `txn` and re-arm its timers.

        ``retransmit=False`` sends an INVITE's error response once (see
        `ServerInviteTransaction.send_response`).
        """
        if retransmit:
            txn.send_response(response, now)  # type: ignore[attr-defined]
        else:
            txn.send_response(response, now, retransmit=False)  # type: ignore[call-arg]
        self.reschedule(txn)
        self._report_terminated(now)

    def receive_request(self, txn: ServerTransaction, request: SIPRequest, now: float) -> None:
        """Hand a retransmission (or an ACK) to its server transaction."""
        txn.receive_request(request, now)  # type: ignore[attr-defined]
        self.reschedule(txn)
        self._report_terminated(now)

    def start_client(self, request: SIPRequest, flow: Flow, now: float) -> ClientTransaction:
        """Create and start a client transaction for `request` (its top Via has the branch)."""
        key = client_key(request.top_via.branch or "", request.method)
        cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        txn = cls(self, key, request, flow)
        self.client[key] = txn
        txn.start(now)
        self.reschedule(txn)
        return txn

    def receive_response(self, response: SIPResponse, now: float) -> bool:
        """Hand a response to its client transaction; False when none matches."""
        via = response.top_via
        txn = self.client.get(client_key(via.branch or "", response.cseq.method))
        if txn is None:
            return False
        txn.receive_response(response, now)
        self.reschedule(txn)
        self._report_terminated(now)
        return True

    def transport_failed(self, flow: Flow, now: float) -> int:
        """The transport could not carry requests to ``flow``'s destination (RFC 3261 s.17.1.1.2).

        Every client transaction to that transport and address that has had no
        response yet (Calling, Trying) goes to Terminated and its TU is told
        through ``on_transaction_timeout``, as RFC 3261 s.17.1.1.2 and
        s.17.1.2.2 ask for a transport error (s.8.1.3.1: treated as a 503).
        A request that went over TCP only because of its size is sent over
        UDP instead (s.18.1.1).

        Returns:
            How many transactions failed.
        """
        failed = 0
        for txn in list(self.client.values()):
            if txn.state not in ("calling", "trying") or not txn.flow.same_destination(flow):
                continue
            if txn.udp_fallback is not None:
                txn.fall_back_to_udp(now)  # moved to TCP for its size only (s.18.1.1)
                self.reschedule(txn)
                continue
            txn.timers.clear()
            txn._go("terminated")
            self.tu.on_transaction_timeout(txn, now)
            failed += 1
        self._report_terminated(now)
        return failed

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction, or None."""
        heap = self._heap
        while heap:
            deadline, _, txn = heap[0]
            if txn.terminated or txn.next_deadline() != deadline:
                heapq.heappop(heap)
                continue
            return deadline
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now`."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, txn = heapq.heappop(heap)
            if txn.terminated:
                continue
            txn.handle_timer(now)
            self.reschedule(txn)
        self._report_terminated(now)

    def reschedule(self, txn: Transaction) -> None:
        """Put `txn`'s next deadline on the layer's heap (after its timers changed)."""
        deadline = txn.next_deadline()
        if deadline is not None and not txn.terminated:
            heapq.heappush(self._heap, (deadline, next(self._counter), txn))

    def transaction_ended(self, txn: Transaction) -> None:
        """A transaction reached Terminated: forget it (reported to the TU afterwards)."""
        table = self.server if isinstance(txn, ServerTransaction) else self.client
        if table.get(txn.key) is txn:
            del table[txn.key]
        self._ended.append(txn)

    def _report_terminated(self, now: float) -> None:
        """Tell the TU which transactions ended, once what ended them was reported."""
        while self._ended:
            self.tu.on_transaction_terminated(self._ended.pop(0), now)
