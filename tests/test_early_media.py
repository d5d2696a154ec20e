"""Provisional responses and early media (RFC 3261 s.13.2.1, s.12.1; RFC 3960).

On the fake clock: a 18x makes the early dialog on both sides (UAS with its
first 18x, UAC from a tagged 1xx with Contact) and the 2xx confirms that same
dialog. Then two real servers on loopback: the callee rings, sends 183 with
its SDP and audio before answering; the caller's progress handler sees
"ringing" and "early_media" with the media already flowing; a call that is
never answered is cancelled at the caller's timeout.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipecat_sip.call import CallFailed, SIPCall
from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.events import CallProgress, IncomingCall
from pipecat_sip.transport import SIPParams, SIPTransport
from tests.helpers.callctl import start_beside
from tests.helpers.server import start_server, wait_for
from tests.sip_pair import SDP_ANSWER, SDP_OFFER, SIPPair


def test_183_with_sdp_makes_the_early_dialog_and_the_2xx_confirms_it():
    pair = SIPPair()
    incoming: list[str] = []
    pair.on_event(
        "b", lambda p, e: incoming.append(e.call_id) if isinstance(e, IncomingCall) else None
    )
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)
    pair.run_for(0.01)
    pair.act("b", "ringing", incoming[0])
    pair.b.ringing(incoming[0], pair.now, status_code=183, sdp=SDP_ANSWER)
    pair.flush()
    progress = [e.response for e in pair.of_type("a", CallProgress) if e.response.status_code > 100]
    assert [r.status_code for r in progress] == [180, 183]
    assert progress[1].body == SDP_ANSWER and progress[1].content_type == "application/sdp"
    assert progress[0].to.tag == progress[1].to.tag  # one UAS, one early dialog
    a_session, b_session = pair.a.session(call_id), pair.b.session(incoming[0])
    assert a_session.early_dialog is not None and b_session.early_dialog is not None
    assert a_session.dialog is None and b_session.dialog is None
    a_early, b_early = a_session.early_dialog, b_session.early_dialog
    assert a_early.call_id == b_early.call_id == call_id
    assert (a_early.local_tag, a_early.remote_tag) == (b_early.remote_tag, b_early.local_tag)
    early_id = a_session.early_dialog.id
    pair.act("b", "answer", incoming[0], SDP_ANSWER)
    pair.run_for(1)
    assert a_session.dialog is not None and a_session.dialog.id == early_id
    assert b_session.dialog is b_session.early_dialog
    pair.act("a", "hangup", call_id)
    pair.run()
    pair.assert_no_leaks()


def test_provisional_status_must_be_1xx_and_the_call_must_ring():
    pair = SIPPair()
    incoming: list[str] = []
    pair.on_event(
        "b", lambda p, e: incoming.append(e.call_id) if isinstance(e, IncomingCall) else None
    )
    pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)
    pair.run_for(0.01)
    with pytest.raises(LocalProtocolError, match="101-199"):
        pair.b.ringing(incoming[0], pair.now, status_code=200)
    pair.act("b", "reject", incoming[0], 486)
    with pytest.raises(LocalProtocolError):
        pair.b.ringing(incoming[0], pair.now)
    pair.run()
    pair.assert_no_leaks()


def test_a_bye_in_the_early_dialog_ends_the_ringing_call():
    # RFC 3261 s.15: the caller may send BYE in an early dialog; the INVITE gets 487.
    pair = SIPPair()
    incoming: list[str] = []
    pair.on_event(
        "b", lambda p, e: incoming.append(e.call_id) if isinstance(e, IncomingCall) else None
    )
    call_id = pair.a.invite(pair.uri_of("b"), SDP_OFFER, pair.now)
    pair.run_for(0.01)
    pair.act("b", "ringing", incoming[0])
    dialog = pair.a.session(call_id).early_dialog
    assert dialog is not None
    bye = dialog.create_request("BYE", pair.a.new_via(dialog.next_hop()))
    pair.inject("b", bytes(bye), pair.addr["a"])
    pair.run()
    statuses = [c.first_line for c in pair.sent("b", "SIP/2.0")]
    assert "SIP/2.0 487 Request Terminated" in statuses
    assert [e.reason for e in pair.ended("b")] == ["remote_bye"]
    assert [(e.reason, e.status_code) for e in pair.ended("a")] == [("cancelled", 487)]
    pair.assert_no_leaks()


# --- two servers ------------------------------------------------------------------


def tone(seconds: float = 0.02, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


class EarlyMediaCallee:
    """Rings, sends 183 with early media and a tone, answers after ``answer_after`` (or never)."""

    def __init__(self, answer_after: float | None) -> None:
        self.answer_after = answer_after
        self.calls: list[SIPCall] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        await call.ring()
        await call.progress(early_media=True)
        assert call.media is not None
        for _ in range(10):
            call.media.send_audio(tone())
        if self.answer_after is None:
            await call.wait_ended()
            return
        await asyncio.sleep(self.answer_after)
        await call.answer()
        await call.wait_ended()


async def test_outbound_call_hears_early_media_before_the_answer():
    callee = EarlyMediaCallee(answer_after=0.6)
    server = await start_server(callee)
    caller = await start_beside(server)
    heard_before_answer: list[bytes] = []
    kinds: list[tuple[str, int]] = []
    placed: list[SIPCall] = []

    def progress(kind: str, status_code: int) -> None:
        kinds.append((kind, status_code))
        if kind == "early_media":
            call = placed[0]
            assert call.media is not None and not call.established
            call.media.on_audio = heard_before_answer.append

    try:
        call = await caller.call(
            f"sip:bot@127.0.0.1:{server.port}", progress_handler=progress, wait=False
        )
        placed.append(call)
        await call.wait_answered(5)
        assert ("ringing", 180) in kinds and ("early_media", 183) in kinds
        assert kinds.index(("ringing", 180)) < kinds.index(("early_media", 183))
        assert heard_before_answer, "no early media reached the caller"
        assert call.progress_events == kinds
        inbound = callee.calls[0]
        assert await wait_for(lambda: inbound.established)
        assert call.media is not None and inbound.media is not None
        await call.hangup()
        assert await wait_for(lambda: not server.calls and not caller.calls)
    finally:
        await caller.stop()
        await server.stop()


async def test_unanswered_outbound_call_is_cancelled_at_its_timeout():
    callee = EarlyMediaCallee(answer_after=None)
    server = await start_server(callee)
    caller = await start_beside(server)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(CallFailed) as info:
            await caller.call(f"sip:bot@127.0.0.1:{server.port}", timeout=1.0)
        assert (info.value.reason, info.value.status_code) == ("no answer", 408)
        assert 0.9 < loop.time() - started < 3.0
        assert await wait_for(lambda: callee.calls and callee.calls[0].ended)
        assert callee.calls[0].end_reason == "cancelled"
        assert await wait_for(lambda: not caller.calls and caller.ports.in_use == 0)
    finally:
        await caller.stop()
        await server.stop()


async def test_progress_is_refused_once_answered():
    done: list[Exception] = []

    async def handler(call: SIPCall) -> None:
        await call.answer()
        try:
            await call.progress()
        except RuntimeError as exc:
            done.append(exc)
        await call.wait_ended()

    server = await start_server(handler)
    caller = await start_beside(server)
    try:
        call = await caller.call(f"sip:bot@127.0.0.1:{server.port}", timeout=5)
        assert await wait_for(lambda: done)
        await call.hangup()
    finally:
        await caller.stop()
        await server.stop()
    assert "cannot send progress" in str(done[0])


async def test_dialout_is_connected_at_the_first_provisional_and_answered_at_the_200():
    """Daily's order on a SIPTransport dial-out: ``on_dialout_connected`` when
    the far end rings (its 180), ``on_dialout_answered`` at the 200, 0.6 s
    later. Regression: both fired together at the answer."""
    callee = EarlyMediaCallee(answer_after=0.6)
    server = await start_server(callee)
    caller = await start_beside(server)
    transport = SIPTransport(params=SIPParams(), server=caller)
    loop = asyncio.get_running_loop()
    seen: dict[str, float] = {}

    @transport.event_handler("on_dialout_connected")
    async def on_connected(transport, data):
        seen["connected"] = loop.time()

    @transport.event_handler("on_dialout_answered")
    async def on_answered(transport, data):
        seen["answered"] = loop.time()

    try:
        session_id, error = await transport.start_dialout(
            {"sipUri": f"sip:bot@127.0.0.1:{server.port}"}
        )
        assert session_id and error is None
        assert await wait_for(lambda: "answered" in seen, 5), seen
        assert seen["answered"] - seen["connected"] > 0.4, seen
        assert callee.calls and await wait_for(lambda: callee.calls[0].established)
        assert await transport.stop_dialout(session_id) is None
        assert await wait_for(lambda: not server.calls and not caller.calls)
    finally:
        await caller.stop()
        await server.stop()
