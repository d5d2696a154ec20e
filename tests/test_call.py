"""SIPCall on its own, against a fake CallControl, and the INVITE usage table.

The call handle never touches the user agent or sockets: everything it does
goes through the `CallControl` protocol, so a fake records what it was asked.
"""

from __future__ import annotations

import asyncio

import pytest

from pipecat_sip.call import CallFailed, CallInfo, SIPCall
from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.invite import TRANSITIONS, CallState, InviteEvent, Role, next_state


class Signalling:
    """Stands in for the UA's InviteSession: only its state is read."""

    def __init__(self, state: CallState) -> None:
        self.state = state


class FakeControl:
    """Records what the call asked; moves the fake signalling state as the UA would."""

    def __init__(self, signalling: Signalling) -> None:
        self.signalling = signalling
        self.actions: list[tuple] = []
        self.released: list[SIPCall] = []

    async def answer(self, call: SIPCall) -> None:
        self.actions.append(("answer",))
        self.signalling.state = CallState.ACCEPTED
        call.mark_answered()

    def reject(self, call, status_code, reason, retry_after) -> None:
        self.actions.append(("reject", status_code, reason, retry_after))
        self.signalling.state = CallState.TERMINATED

    def hangup(self, call) -> None:
        self.actions.append(("hangup",))
        self.signalling.state = CallState.TERMINATING

    def release(self, call) -> None:
        self.released.append(call)


def make_call(state: CallState = CallState.INCOMING, direction: str = "inbound"):
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


async def test_answer_goes_through_the_control_and_the_state_is_the_sessions():
    call, control, signalling = make_call()
    assert call.state is CallState.INCOMING
    await call.answer()
    assert control.actions == [("answer",)]
    assert call.state is CallState.ACCEPTED and call.answered_at is not None
    signalling.state = CallState.CONFIRMED  # the ACK, as the UA reports it
    call.mark_established()
    await call.wait_answered(1)
    assert call.established and call.state is CallState.CONFIRMED


async def test_answer_refused_unless_ringing_inbound():
    call, _, _ = make_call(CallState.CONFIRMED)
    with pytest.raises(RuntimeError):
        await call.answer()
    outbound, _, _ = make_call(CallState.CALLING, "outbound")
    with pytest.raises(RuntimeError):
        await outbound.answer()


async def test_reject_marks_the_end_first_then_asks_the_control_and_releases():
    call, control, _ = make_call()
    reasons = []
    call.add_ended_handler(reasons.append)
    await call.reject(603, "Decline", retry_after=30)
    assert control.actions == [("reject", 603, "Decline", 30)]
    assert call.ended and call.end_reason == "rejected" and reasons == ["rejected"]
    assert control.released == [call]
    with pytest.raises(CallFailed):
        await call.wait_answered(0.1)


async def test_hangup_is_idempotent_and_its_reason_wins_over_the_uas_report():
    call, control, _ = make_call(CallState.CONFIRMED)
    call.mark_established()
    await call.hangup(reason="shutdown")
    await call.finish("local_bye")  # what the UA reports for our own BYE
    await call.hangup()
    assert control.actions == [("hangup",)]
    assert call.end_reason == "shutdown" and await call.wait_ended() == "shutdown"
    assert control.released == [call]
    assert call.state is CallState.TERMINATING


async def test_far_end_hangup_runs_ended_handlers_once_and_late_handlers_at_once():
    call, control, _ = make_call(CallState.CONFIRMED)
    seen: list[str] = []

    async def async_handler(reason: str) -> None:
        seen.append(f"async {reason}")

    call.add_ended_handler(seen.append)
    call.add_ended_handler(async_handler)
    await call.finish("remote_bye")
    await asyncio.sleep(0)
    call.add_ended_handler(lambda r: seen.append(f"late {r}"))
    await asyncio.sleep(0)
    assert seen == ["remote_bye", "async remote_bye", "late remote_bye"]
    assert control.actions == []  # the far end ended it: nothing to send


async def test_hold_handlers_fire_on_changes_only():
    call, _, _ = make_call(CallState.CONFIRMED)
    changes: list[bool] = []
    call.add_hold_handler(changes.append)
    call.set_held(True)
    call.set_held(True)
    call.set_held(False)
    assert changes == [True, False] and call.held is False


async def test_a_failing_handler_is_contained():
    call, control, _ = make_call(CallState.CONFIRMED)

    def broken(reason: str) -> None:
        raise RuntimeError("bug in bot code")

    call.add_ended_handler(broken)
    await call.finish("remote_bye")
    assert control.released == [call]


# --- the INVITE usage table (RFC 5057 states) -------------------------------------------


def test_unknown_transition_is_a_local_error():
    with pytest.raises(LocalProtocolError, match="no transition"):
        next_state(Role.UAS, CallState.CONFIRMED, InviteEvent.ACCEPT)
    with pytest.raises(LocalProtocolError):
        next_state(Role.UAC, CallState.TERMINATED, InviteEvent.BYE_RECEIVED)


@pytest.mark.parametrize(
    "role, path, end",
    [
        (Role.UAS, [InviteEvent.PROVISIONAL, InviteEvent.ACCEPT, InviteEvent.ACK], "confirmed"),
        (Role.UAS, [InviteEvent.ACCEPT, InviteEvent.BYE_SENT, InviteEvent.BYE_DONE], "terminated"),
        (Role.UAS, [InviteEvent.PROVISIONAL, InviteEvent.CANCEL], "terminated"),
        (Role.UAC, [InviteEvent.PROVISIONAL, InviteEvent.ACCEPT], "confirmed"),
        (Role.UAC, [InviteEvent.PROVISIONAL, InviteEvent.CANCEL, InviteEvent.REJECT], "terminated"),
        (
            Role.UAC,
            [InviteEvent.PROVISIONAL, InviteEvent.CANCEL, InviteEvent.ACCEPT],
            "terminating",
        ),
    ],
)
def test_paths_through_the_table(role, path, end):
    state = CallState.INCOMING if role is Role.UAS else CallState.CALLING
    for event in path:
        state = next_state(role, state, event)
    assert state == end


def test_every_live_state_can_fail_and_terminated_is_final():
    for role in Role:
        for state in CallState:
            if state is CallState.TERMINATED:
                assert not [k for k in TRANSITIONS if k[0] is role and k[1] is state]
            else:
                assert next_state(role, state, InviteEvent.ERROR) is CallState.TERMINATED
