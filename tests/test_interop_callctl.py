"""Interop for call control (issue 13) with real peers: PJSIP 2.15 (pjsua2 wheel) and SIPp.

PJSIP runs in a child process (tests/helpers/pjsua.py), our SIPServers in
process on loopback:

- 100rel (RFC 3262): PJSIP requires it; the bot rings and sends early media
  (183 with SDP) reliably, PJSIP PRACKs both; then UPDATE (RFC 3311) from
  PJSIP with an offer, answered;
- session timers (RFC 4028): the bot calls PJSIP asking 90 s and refreshes
  by UPDATE at 45 s, seen in PJSIP's log;
- blind transfer (RFC 3515): the bot REFERs PJSIP to a third server, PJSIP
  calls it and NOTIFYs 200, the bot's call ends "transferred"; and PJSIP's
  REFER to the bot, accepted by the call's refer handler;
- DTMF by SIP INFO both ways, once per key;
- PJSIP registering to the bot with a password, then called by the bot at
  its address-of-record;
- SIPp as a carrier challenging our INVITE with 401 (``verifyauth``); SIPp
  requiring 100rel (PRACK with RAck), asking a session timer and sending
  UPDATEs; SIPp as a transferee answering REFER 202 and NOTIFYing sipfrag;
- linphonec (in a namespace with only lo): INFO key presses reach the
  pipeline as InputDTMFFrames in order, and it follows the bot's blind
  transfer to a third server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipecat_sip.call import CallFailed, SIPCall, TransferRequest
from pipecat_sip.trunk import Trunk
from tests.helpers.callctl import start_beside
from tests.helpers.echo import EchoBot
from tests.helpers.linphone import Linphone
from tests.helpers.netns import NetLab, require_netns
from tests.helpers.peers import require_binary
from tests.helpers.pjsua import Pjsua, require_pjsua2
from tests.helpers.server import start_server, wait_for
from tests.helpers.sipp import run_sipp, start_sipp

pytestmark = pytest.mark.interop


@pytest.fixture
def pjsua2_installed():
    require_pjsua2()


def messages(log: str, start: str) -> list[str]:
    """The SIP messages in PJSIP's log whose first line starts with ``start``."""
    out = []
    for chunk in log.split("--end msg--"):
        i = chunk.find(start)
        if i >= 0 and chunk[i:].split("\n", 1)[0].startswith(start):
            out.append(chunk[i:])
    return out


class Bot:
    """Answers each call, optionally after ringing with early media; records key presses."""

    def __init__(self, *, early_media: bool = False, answer_after: float = 0.0) -> None:
        self.early_media = early_media
        self.answer_after = answer_after
        self.calls: list[SIPCall] = []
        self.keys: list[str] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        call.add_dtmf_handler(self.keys.append)
        if self.early_media:
            await call.ring()
            await call.progress(early_media=True)
        if self.answer_after:
            await asyncio.sleep(self.answer_after)
        await call.answer()
        await call.wait_ended()


async def test_pjsua_requiring_100rel_gets_reliable_ringing_and_early_media_then_update(
    pjsua2_installed, tmp_path: Path
):
    bot = Bot(early_media=True, answer_after=0.5)
    server = await start_server(bot)
    try:
        async with Pjsua(tmp_path / "pj", report_messages=True) as pj:
            acc = await pj.listen(auto_answer=0, prack="required")
            call = await pj.call(f"sip:bot@127.0.0.1:{server.port}", acc=acc)
            await pj.wait_call_state(call, "EARLY", timeout=5)
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            pracks = [
                e
                for e in pj.events
                if e.get("event") == "tsx" and e.get("method") == "PRACK" and e["role"] == "uac"
            ]
            assert await wait_for(lambda: len([
                e for e in pj.events
                if e.get("event") == "tsx" and e.get("method") == "PRACK" and e["role"] == "uac"
            ]) >= 3)  # fmt: skip
            pracks = [
                e for e in pj.events if e.get("event") == "tsx" and e.get("method") == "PRACK"
            ]
            assert all(e["code"] == 200 for e in pracks), pracks
            log = pj.log
            reliable = [m for m in messages(log, "SIP/2.0 18") if "RSeq:" in m]
            assert len(reliable) >= 3, log[-3000:]  # the automatic 180, ring(), progress()
            early = [m for m in reliable if m.startswith("SIP/2.0 183")]
            assert early and "application/sdp" in early[0] and "Require: 100rel" in early[0]
            # UPDATE with an offer in the confirmed dialog (RFC 3311).
            await pj.command("update", call=call)
            update = await pj.wait_event("tsx", call=call, method="UPDATE", role="uac", timeout=5)
            assert update["code"] == 200, update
            assert bot.calls[0].established
            await pj.hangup(call)
            await pj.wait_call_state(call, "DISCONNECTED", timeout=5)
        assert await wait_for(lambda: not server.calls and server.ports.in_use == 0)
    finally:
        await server.stop()


@pytest.mark.slow
async def test_bot_refreshes_the_session_by_update_at_half_the_interval(
    pjsua2_installed, tmp_path: Path
):
    server = await start_server(None, session_expires=90, rtp_timeout_s=0)  # PJSIP is silent
    try:
        async with Pjsua(tmp_path / "pj", name="alice") as pj:
            await pj.listen(auto_answer=200, timer="optional")
            call = await server.call(pj.uri, timeout=5)
            started = asyncio.get_running_loop().time()
            incoming = await pj.wait_event("incoming_call", timeout=2)
            await pj.wait_call_state(incoming["call"], "CONFIRMED", timeout=5)
            refresh = await pj.wait_event(
                "tsx", call=incoming["call"], method="UPDATE", role="uas", timeout=60
            )
            elapsed = asyncio.get_running_loop().time() - started
            assert refresh["code"] == 200 and 43 < elapsed < 50, (refresh, elapsed)
            [update] = messages(pj.log, "UPDATE sip:")[:1]
            assert "Session-Expires: 90;refresher=uac" in update, update
            invite = messages(pj.log, "INVITE sip:")[0]
            assert "Session-Expires: 90" in invite and "timer" in invite
            assert call.established
            await call.hangup()
            await pj.wait_call_state(incoming["call"], "DISCONNECTED", timeout=5)
    finally:
        await server.stop()


async def test_bot_transfers_pjsua_blind_and_the_target_gets_the_call(
    pjsua2_installed, tmp_path: Path
):
    bot = Bot()
    server = await start_server(bot)
    human = Bot()
    human_server = await start_beside(server, handler=human)
    try:
        async with Pjsua(tmp_path / "pj") as pj:
            call = await pj.call(f"sip:bot@127.0.0.1:{server.port}")
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            assert await wait_for(lambda: bot.calls and bot.calls[0].established)
            bot_call = bot.calls[0]
            states: list[tuple[str, int | None]] = []
            bot_call.add_transfer_handler(lambda state, code: states.append((state, code)))
            target = f"sip:agent@127.0.0.1:{human_server.port}"
            await bot_call.transfer(target, timeout=10)
            assert states[0] == ("accepted", 202) and states[-1] == ("succeeded", 200)
            request = await pj.wait_event("transfer_request", call=call, timeout=2)
            assert request["dst"] == f"<{target}>" or target in request["dst"]
            assert await wait_for(lambda: bot_call.ended)
            assert bot_call.end_reason == "transferred"
            assert await wait_for(lambda: human.calls and human.calls[0].established)
            assert "Referred-By" in human.calls[0].info.headers
            await pj.wait_call_state(request["new_call"], "CONFIRMED", timeout=5)
            await pj.hangup(request["new_call"])
            await pj.wait_call_state(request["new_call"], "DISCONNECTED", timeout=5)
        assert await wait_for(lambda: not server.calls and not human_server.calls)
    finally:
        await human_server.stop()
        await server.stop()


async def test_pjsua_refer_accepted_by_the_refer_handler(pjsua2_installed, tmp_path: Path):
    accepted: list[TransferRequest] = []

    class Accepting(Bot):
        async def __call__(self, call: SIPCall) -> None:
            call.set_refer_handler(lambda request: accepted.append(request) or True)
            await super().__call__(call)

    bot = Accepting()
    server = await start_server(bot)
    human = Bot()
    human_server = await start_beside(server, handler=human)
    try:
        async with Pjsua(tmp_path / "pj") as pj:
            call = await pj.call(f"sip:bot@127.0.0.1:{server.port}")
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            target = f"sip:agent@127.0.0.1:{human_server.port}"
            await pj.transfer(call, target)
            final = None
            for _ in range(5):
                status = await pj.wait_event("transfer_status", call=call, timeout=5)
                if status["final"]:
                    final = status
                    break
            assert final is not None and final["code"] == 200, final
            [request] = accepted
            assert request.refer_to == target
            new_call = await asyncio.wait_for(request.wait_new_call(), 5)
            assert new_call.established and human.calls[0].established
            await new_call.hangup()
            await pj.hangup(call)
    finally:
        await human_server.stop()
        await server.stop()


async def test_dtmf_by_info_both_ways_with_pjsua(pjsua2_installed, tmp_path: Path):
    bot = Bot()
    server = await start_server(bot)
    try:
        async with Pjsua(tmp_path / "pj") as pj:
            call = await pj.call(f"sip:bot@127.0.0.1:{server.port}")
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            assert await wait_for(lambda: bot.calls and bot.calls[0].established)
            await pj.send_dtmf(call, "159#", method="info")
            assert await wait_for(lambda: len(bot.keys) >= 4, timeout=5)
            await asyncio.sleep(0.5)
            assert bot.keys == list("159#")
            for key in "74":
                bot.calls[0].send_info_dtmf(key, 120)
            assert await wait_for(lambda: pj.digits_received(call) == "74", timeout=5)
            methods = {e["method"] for e in pj.events if e.get("event") == "dtmf"}
            assert methods == {"info"}, methods
            await pj.hangup(call)
    finally:
        await server.stop()


async def test_pjsua_registers_with_a_password_and_the_bot_calls_it(
    pjsua2_installed, tmp_path: Path
):
    server = await start_server(None, accept_registrations=True, auth_users={"alice": "wonderland"})
    try:
        async with Pjsua(tmp_path / "pj", name="alice", report_messages=True) as pj:
            registrar = f"sip:127.0.0.1:{server.port}"
            wrong = await pj.add_account(
                "sip:alice@127.0.0.1", registrar=registrar, username="alice",
                password="wrong", reg_retry_s=300,
            )  # fmt: skip
            refused = await pj.wait_event("reg_state", acc=wrong, timeout=5)
            assert refused["code"] in (401, 403), refused
            assert server.authenticator.failures("127.0.0.1") >= 1
            await pj.remove_account(wrong)
            acc = await pj.register(registrar, "alice", "wonderland", auto_answer=200)
            [binding] = server.registrar.lookup("alice", server.now())
            assert binding.contact.port == pj.ports["udp"]
            call = await server.call("sip:alice@bot.example", timeout=5)
            incoming = await pj.wait_event("incoming_call", acc=acc, timeout=2)
            assert incoming["msg"].startswith(f"INVITE {binding.contact} SIP/2.0")
            assert "To: <sip:alice@bot.example>" in incoming["msg"]
            await pj.wait_call_state(incoming["call"], "CONFIRMED", timeout=5)
            await call.hangup()
            await pj.wait_call_state(incoming["call"], "DISCONNECTED", timeout=5)
            await pj.remove_account(acc)
            assert await wait_for(lambda: not server.registrar.lookup("alice", server.now()))
    finally:
        await server.stop()


# --- SIPp as a carrier that challenges our INVITE -----------------------------------


def carrier_trunk(port: int, password: str) -> Trunk:
    return Trunk(
        name="carrier",
        proxy=f"sip:127.0.0.1:{port}",
        username="4930555000",
        auth_user="a1b2c3",
        password=password,
        caller_id="+4930555000",
        p_asserted_identity=True,
    )


async def test_sipp_proxy_challenges_our_invite_and_verifies_the_answer(tmp_path: Path):
    uas = await start_sipp("uas_digest_401.xml", "", keys={"user": "a1b2c3", "password": "s3cret"})
    server = await start_server(None, trunks=[carrier_trunk(uas.local_port, "s3cret")])
    try:
        call = await server.call("+4930123456", timeout=10)
        assert call.established
        await asyncio.sleep(0.3)
        await call.hangup()
        result = await uas.wait(timeout=15)
        assert result.ok, result.summary()
        invites = [m for m in result.messages("received") if m.startswith("INVITE ")]
        assert len(invites) == 2, result.message_log[-3000:]
        assert "Authorization: Digest" in invites[1]
        assert 'username="a1b2c3"' in invites[1]
        assert "P-Asserted-Identity: <sip:+4930555000@127.0.0.1>" in invites[1]
        assert invites[0].startswith(f"INVITE sip:+4930123456@127.0.0.1:{uas.local_port} SIP/2.0")
    finally:
        await server.stop()
        await uas.stop()


async def test_sipp_refuses_wrong_credentials_and_the_call_fails_401(tmp_path: Path):
    uas = await start_sipp("uas_digest_401.xml", "", keys={"user": "a1b2c3", "password": "s3cret"})
    server = await start_server(None, trunks=[carrier_trunk(uas.local_port, "wrong")])
    try:
        with pytest.raises(CallFailed) as info:
            await server.call("+4930123456", timeout=10)
        assert (info.value.reason, info.value.status_code) == ("auth_failed", 401)
        assert not server.calls and server.ports.in_use == 0
    finally:
        await server.stop()
        await uas.stop()
    assert run_sipp  # the module's other entry point stays importable


# --- linphonec: INFO DTMF into the pipeline, and a blind transfer it follows --------


@pytest.fixture
def linphone_and_netns():
    require_binary("linphonec")
    require_netns()


async def test_linphone_info_dtmf_reaches_the_pipeline_in_order(linphone_and_netns, tmp_path):
    with NetLab() as lab:
        ns = lab.namespace("phone")
        with ns.entered():  # linphonec writes its interfaces' address in SDP: only lo here
            bot = EchoBot()
            server = await start_server(bot)
            try:
                async with Linphone(tmp_path / "lin", netns=ns.name, use_info=True) as phone:
                    call = await phone.call(f"sip:bot@127.0.0.1:{server.port}")
                    await phone.wait_media(call)
                    await asyncio.sleep(0.5)
                    await phone.send_dtmf("159#")
                    assert await wait_for(lambda: len(bot.digits(0)) >= 4, timeout=5)
                    await asyncio.sleep(0.5)
                    await phone.terminate()
                    await phone.wait_ended(call)
                assert bot.digits(0) == ["1", "5", "9", "#"]  # InputDTMFFrames, once each
                assert not bot.errors, bot.errors
            finally:
                await server.stop()


async def test_linphone_follows_the_bots_blind_transfer(linphone_and_netns, tmp_path):
    with NetLab() as lab:
        ns = lab.namespace("phone")
        with ns.entered():
            bot = Bot()
            server = await start_server(bot)
            human = Bot()
            human_server = await start_beside(server, handler=human)
            try:
                async with Linphone(tmp_path / "lin", netns=ns.name) as phone:
                    call = await phone.call(f"sip:bot@127.0.0.1:{server.port}")
                    await phone.wait_media(call)
                    assert await wait_for(lambda: bot.calls and bot.calls[0].established)
                    bot_call = bot.calls[0]
                    target = f"sip:agent@127.0.0.1:{human_server.port}"
                    await bot_call.transfer(target, timeout=15)
                    assert await wait_for(lambda: bot_call.ended)
                    assert bot_call.end_reason == "transferred"
                    assert await wait_for(lambda: human.calls and human.calls[0].established)
                    transferred = human.calls[0]
                    assert transferred.info.request_uri == target
                    await transferred.hangup()
                    assert await wait_for(lambda: not human_server.calls and not server.calls)
            finally:
                await human_server.stop()
                await server.stop()


async def test_sipp_requiring_100rel_prack_session_expires_and_updates():
    bot = Bot(answer_after=0.3)  # after the 180's PRACK, so SIPp sees them in order
    server = await start_server(bot)
    try:
        result = await run_sipp("uac_100rel_update.xml", f"127.0.0.1:{server.port}", timeout=15)
        assert result.ok, result.summary()
        sent = result.messages("received")
        ringing = next(m for m in sent if m.startswith("SIP/2.0 180"))
        assert "RSeq:" in ringing and "Require: 100rel" in ringing
        assert bot.calls and bot.calls[0].end_reason == "remote_bye"
    finally:
        await server.stop()


async def test_sipp_transferee_reports_by_notify_and_the_transfer_succeeds():
    uas = await start_sipp("uas_refer_notify.xml", "")
    server = await start_server(None)
    try:
        call = await server.call(f"sip:sipp@{uas.target}", timeout=5)
        states: list[tuple[str, int | None]] = []
        call.add_transfer_handler(lambda state, code: states.append((state, code)))
        await call.transfer("sip:agent@127.0.0.1:5999", timeout=10)
        assert states == [("accepted", 202), ("trying", 100), ("succeeded", 200)]
        assert await wait_for(lambda: call.ended) and call.end_reason == "transferred"
        result = await uas.wait(timeout=10)
        assert result.ok, result.summary()
    finally:
        await server.stop()
        await uas.stop()
