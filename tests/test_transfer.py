"""Transfers between real servers on loopback: blind (REFER) and attended (Replaces).

Three SIPServers: the *caller* (the transferee, whose refer handler decides),
the *bot* (the transferor: ``call.transfer``) and the *human* (the target).
A blind transfer that succeeds ends the bot's call ("transferred") once the
caller's call to the human is up; one the caller refuses raises
``TransferFailed(603)``; one to a busy human raises ``TransferFailed(486)``;
an attended one makes the caller's INVITE replace the bot's call with the
human, which the human's server then ends.
"""

from __future__ import annotations

import asyncio

import pytest

from pipecat_sip.call import SIPCall, TransferFailed, TransferRequest
from pipecat_sip.transport import SIPParams, SIPTransport
from tests.helpers.callctl import start_beside
from tests.helpers.server import start_server, wait_for


class Answering:
    def __init__(self, reject: int | None = None) -> None:
        self.reject = reject
        self.calls: list[SIPCall] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        if self.reject:
            await call.reject(self.reject)
            return
        await call.answer()
        await call.wait_ended()


async def three(human_reject: int | None = None):
    bot_handler, human_handler = Answering(), Answering(reject=human_reject)
    bot = await start_server(bot_handler)
    human = await start_beside(bot, handler=human_handler)
    caller = await start_beside(bot, human)
    return caller, bot, human, bot_handler, human_handler


async def stop(*servers) -> None:
    for server in servers:
        await server.stop()


def uri(server) -> str:
    return f"sip:someone@127.0.0.1:{server.port}"


async def test_blind_transfer_succeeds_and_ends_the_bots_call():
    caller, bot, human, bot_side, human_side = await three()
    requests: list[TransferRequest] = []
    try:
        call = await caller.call(uri(bot), timeout=5)

        def accept(request: TransferRequest) -> bool:
            requests.append(request)
            return True

        call.set_refer_handler(accept)
        assert await wait_for(lambda: bot_side.calls and bot_side.calls[0].established)
        bot_call = bot_side.calls[0]
        states: list[tuple[str, int | None]] = []
        bot_call.add_transfer_handler(lambda state, code: states.append((state, code)))
        await bot_call.transfer(f"sip:agent@127.0.0.1:{human.port}", timeout=10)
        assert [s for s, _ in states][0] == "accepted" and states[-1] == ("succeeded", 200)
        assert "trying" in [s for s, _ in states]
        assert await wait_for(lambda: bot_call.ended)
        assert bot_call.end_reason == "transferred"
        [request] = requests
        assert request.refer_to == f"sip:agent@127.0.0.1:{human.port}"
        assert request.referred_by == f"<{uri(bot)}>"  # the bot as the caller knows it
        new_call = await asyncio.wait_for(request.wait_new_call(), 5)
        assert new_call.established and human_side.calls[0].established
        assert human_side.calls[0].info.header("Referred-By") == request.referred_by
        assert await wait_for(lambda: call.ended)  # the bot's BYE ended the old call
        await new_call.hangup()
        assert await wait_for(lambda: not caller.calls and not bot.calls and not human.calls)
    finally:
        await stop(caller, bot, human)


async def test_refused_and_failed_transfers_leave_the_call_up():
    caller, bot, human, bot_side, _ = await three(human_reject=486)
    try:
        call = await caller.call(uri(bot), timeout=5)  # no refer handler: REFER gets 603
        assert await wait_for(lambda: bot_side.calls and bot_side.calls[0].established)
        bot_call = bot_side.calls[0]
        with pytest.raises(TransferFailed) as info:
            await bot_call.transfer(uri(human), timeout=5)
        assert info.value.status_code == 603 and bot_call.established
        call.set_refer_handler(lambda request: True)
        with pytest.raises(TransferFailed) as info:
            await bot_call.transfer(uri(human), timeout=5)
        assert info.value.status_code == 486 and bot_call.established
        transport = SIPTransport(bot_call, SIPParams())
        failed: list[int | None] = []

        @transport.event_handler("on_transfer_failed")
        async def on_failed(transport, status_code):
            failed.append(status_code)

        result = await transport.transfer_result(uri(human), timeout=5)
        assert result == {"transferred": False, "status_code": 486, "reason": "failed (486)"}
        assert await wait_for(lambda: failed == [486])
        with pytest.raises(TransferFailed, match="no outcome"):
            call.set_refer_handler(lambda request: asyncio.sleep(3600))  # never decides
            await bot_call.transfer(uri(human), timeout=0.5)
        await call.hangup()
        with pytest.raises(TransferFailed, match="not established"):
            await asyncio.sleep(0.2)
            await bot_call.transfer(uri(human))
    finally:
        await stop(caller, bot, human)


async def test_attended_transfer_replaces_the_bots_call_with_the_human():
    caller, bot, human, bot_side, human_side = await three()
    try:
        call = await caller.call(uri(bot), timeout=5)
        call.set_refer_handler(lambda request: True)
        assert await wait_for(lambda: bot_side.calls and bot_side.calls[0].established)
        to_caller = bot_side.calls[0]
        to_human = await bot.call(f"sip:agent@127.0.0.1:{human.port}", timeout=5)
        assert await wait_for(lambda: human_side.calls and human_side.calls[0].established)
        consulted = human_side.calls[0]
        await to_caller.transfer(f"sip:agent@127.0.0.1:{human.port}", replaces=to_human, timeout=10)
        assert await wait_for(lambda: to_caller.ended and to_human.ended)
        assert to_caller.end_reason == "transferred"
        assert to_human.end_reason == "remote_bye"  # the human's side ended the replaced call
        assert consulted.end_reason == "replaced"
        replacing = human_side.calls[1]
        assert replacing.info.replaces == consulted.call_id and replacing.established
        await replacing.hangup()
        assert await wait_for(lambda: not caller.calls and not bot.calls and not human.calls)
    finally:
        await stop(caller, bot, human)
