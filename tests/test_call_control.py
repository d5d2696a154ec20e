"""SIPCall's call-control surface against a fake CallControl: ring, progress, transfer, DTMF.

The handle never touches the user agent: these tests drive it with a fake
control (recording what it was asked) and tell it what the manager would
(``transfer_update``, ``notify_progress``, ``receive_dtmf``).
"""

from __future__ import annotations

import asyncio

import pytest

from pipecat_sip.call import CallInfo, SIPCall, TransferFailed
from pipecat_sip.sip.invite import CallState


class Signalling:
    def __init__(self, state: CallState) -> None:
        self.state = state


class FakeControl:
    def __init__(self, signalling: Signalling) -> None:
        self.signalling = signalling
        self.actions: list[tuple] = []

    async def answer(self, call):
        self.actions.append(("answer",))

    def reject(self, call, status_code, reason, retry_after):
        self.actions.append(("reject", status_code))

    def hangup(self, call):
        self.actions.append(("hangup",))
        self.signalling.state = CallState.TERMINATING

    def release(self, call):
        self.actions.append(("release",))

    def ring(self, call):
        self.actions.append(("ring",))
        self.signalling.state = CallState.EARLY

    async def progress(self, call, early_media):
        self.actions.append(("progress", early_media))
        self.signalling.state = CallState.EARLY

    def transfer(self, call, target, replaces):
        self.actions.append(("transfer", target, replaces))
        return f"t{len(self.actions)}"

    def send_info(self, call, content_type, body):
        self.actions.append(("info", content_type, body))


def make(state=CallState.INCOMING, direction="inbound"):
    signalling = Signalling(state)
    control = FakeControl(signalling)
    info = CallInfo(
        call_id="c1@test",
        direction=direction,
        from_uri="sip:alice@example.com",
        from_display_name=None,
        to_uri="sip:bot@example.com",
        to_display_name=None,
        request_uri="sip:bot@example.com",
        remote_address=("192.0.2.1", 5060),
        codec="PCMU",
        sample_rate=8000,
    )
    return SIPCall(control, info, signalling), control, signalling


async def test_ring_and_progress_only_while_ringing_inbound():
    call, control, signalling = make()
    await call.ring()
    await call.progress()
    await call.progress(early_media=False)
    assert control.actions == [("ring",), ("progress", True), ("progress", False)]
    signalling.state = CallState.ACCEPTED
    with pytest.raises(RuntimeError, match="cannot ring"):
        await call.ring()
    outbound, _, _ = make(CallState.CALLING, "outbound")
    with pytest.raises(RuntimeError, match="cannot send progress"):
        await outbound.progress()


async def test_transfer_reports_states_and_ends_the_call_on_success():
    call, control, signalling = make(CallState.CONFIRMED)
    call.mark_established()
    states = []
    call.add_transfer_handler(lambda state, code: states.append((state, code)))
    task = asyncio.create_task(call.transfer("sip:agent@pbx.example", timeout=5))
    await asyncio.sleep(0)
    [(_, target, replaces)] = [a for a in control.actions if a[0] == "transfer"]
    assert (target, replaces) == ("sip:agent@pbx.example", None)
    tid = "t1"
    call.transfer_update(tid, "accepted", 202)
    call.transfer_update(tid, "trying", 100)
    assert not task.done()
    call.transfer_update(tid, "succeeded", 200)
    await asyncio.wait_for(task, 1)
    assert states == [("accepted", 202), ("trying", 100), ("succeeded", 200)]
    assert call.end_reason == "transferred" and ("hangup",) in control.actions
    call.transfer_update(tid, "failed", 500)  # late: nothing more happens
    assert states[-1] == ("succeeded", 200)


async def test_transfer_failures():
    call, control, _ = make(CallState.CONFIRMED)
    call.mark_established()
    task = asyncio.create_task(call.transfer("sip:agent@pbx.example"))
    await asyncio.sleep(0)
    call.transfer_update("t1", "failed", 486, "busy")
    with pytest.raises(TransferFailed) as info:
        await task
    assert (info.value.status_code, info.value.reason) == (486, "busy")
    assert call.established  # the call goes on
    with pytest.raises(TransferFailed) as info:
        await call.transfer("sip:agent@pbx.example", timeout=0.05)
    assert info.value.status_code is None and "no outcome" in info.value.reason
    # The call ending meanwhile fails a waiting transfer.
    task = asyncio.create_task(call.transfer("sip:agent@pbx.example"))
    await asyncio.sleep(0)
    await call.hangup()
    with pytest.raises(TransferFailed, match="call ended"):
        await task
    ringing, _, _ = make()
    with pytest.raises(TransferFailed, match="not established"):
        await ringing.transfer("sip:x@y")


async def test_dtmf_by_info_out_and_merged_in():
    call, control, _ = make(CallState.CONFIRMED)
    with pytest.raises(RuntimeError):
        call.send_info_dtmf("1")
    call.mark_established()
    call.send_info_dtmf("#", 250)
    assert control.actions[-1] == (
        "info",
        "application/dtmf-relay",
        b"Signal=#\r\nDuration=250\r\n",
    )
    with pytest.raises(ValueError):
        call.send_info_dtmf("x")
    keys: list[str] = []
    call.add_dtmf_handler(keys.append)
    assert call.receive_dtmf("5", "info", now=1.0)
    assert not call.receive_dtmf("5", "rfc4733", now=1.1)
    assert call.receive_dtmf("5", "rfc4733", now=1.4)  # the second press of "55"
    assert not call.receive_dtmf("5", "info", now=1.45)
    call.remove_dtmf_handler(keys.append)
    call.receive_dtmf("6", "info", now=2.0)
    assert keys == ["5", "5"]


async def test_progress_handlers_hear_provisionals():
    call, _, _ = make(CallState.CALLING, "outbound")
    heard = []
    call.add_progress_handler(lambda kind, code: heard.append((kind, code)))

    async def later(kind, code):
        heard.append(("async", kind))

    call.add_progress_handler(later)
    call.notify_progress("ringing", 180)
    call.notify_progress("early_media", 183)
    await asyncio.sleep(0)
    assert heard[:2] == [("ringing", 180), ("async", "ringing")] or ("ringing", 180) in heard
    assert call.progress_events == [("ringing", 180), ("early_media", 183)]
