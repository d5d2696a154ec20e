"""Shutdown and draining (issue 11 item 14, issue 16 item 2).

From the first moment of a stop or a drain, new INVITEs get 503 with
Retry-After and OPTIONS get 503 (so a load balancer's probe takes the
instance out); no INVITE is answered 200 and then left in silence. A drain
lets live calls finish (their BYE is served), hangs up what is left after
its timeout or at once on ``hangup_now()`` (a second SIGTERM), and the
runner exits 0.
"""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace

import pytest

from pipecat_sip.sip.message import SIPResponse
from tests.helpers.instance import Instance
from tests.helpers.server import Recorder, start_server, wait_for
from tests.test_robustness import FAST_TIMERS, RawPeer, UdpSocket, options_bytes


def finals(peer: RawPeer, method: str = "INVITE") -> list[SIPResponse]:
    return [r for r in peer.responses(method=method) if r.status_code >= 200]


async def options_status(server_port: int) -> SIPResponse:
    sock = await UdpSocket.open()
    try:
        sock.send(options_bytes(sock.port, server_port), ("127.0.0.1", server_port))
        peer = RawPeer(sock, sock, SimpleNamespace(port=server_port))
        assert await wait_for(lambda: peer.responses(method="OPTIONS"), 2), "no answer to OPTIONS"
        return peer.responses(method="OPTIONS")[0]
    finally:
        sock.close()


async def test_item14_invites_during_the_stop_window_get_503_never_200_then_silence():
    rec = Recorder()
    server = await start_server(rec, timer_values=FAST_TIMERS)
    live = await RawPeer.open(server)
    late: list[RawPeer] = []
    try:
        await live.establish()
        assert await wait_for(lambda: len(rec.calls) == 1)
        # The live caller never answers our BYE: stop() waits for it (up to 1.5 s),
        # with the SIP socket still open. That is the stop window.
        stopping = asyncio.ensure_future(server.stop(timeout=1.5))
        assert await wait_for(lambda: live.requests("BYE"), 2), "no BYE to the live call"
        assert (await options_status(server.port)).status_code == 503
        for _ in range(5):
            peer = await RawPeer.open(server)
            late.append(peer)
            peer.send_invite()
        assert await wait_for(lambda: all(finals(p) for p in late), 2), [p.messages() for p in late]
        for peer in late:
            (final,) = {r.status_code: r for r in finals(peer)}.values()
            assert final.status_code == 503, final
            assert final.headers.get("Retry-After") == str(server.retry_after_s), final
            assert not peer.responses(200) and not peer.responses(180)
        assert len(rec.calls) == 1, "a call was handed to the bot during the stop"
        await stopping
        assert server.manager is not None and server.manager.rejected_unavailable == 5
        assert rec.ended[rec.calls[0].call_id] == "shutdown"
    finally:
        for peer in (live, *late):
            peer.close()
        await server.stop()


async def test_item14_drain_serves_live_calls_refuses_new_ones_and_stops_when_they_end():
    rec = Recorder()
    server = await start_server(rec, timer_values=FAST_TIMERS)
    live = await RawPeer.open(server)
    newcomer = await RawPeer.open(server)
    try:
        await live.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].established)
        assert (await options_status(server.port)).status_code == 200
        draining = asyncio.ensure_future(server.drain(10.0))
        assert await wait_for(lambda: not server.accepting)
        response = await options_status(server.port)
        assert response.status_code == 503 and response.headers.get("Retry-After"), response
        newcomer.send_invite()
        assert await wait_for(lambda: finals(newcomer), 2)
        assert [r.status_code for r in finals(newcomer)] == [503]
        await asyncio.sleep(0.3)
        assert not draining.done(), "drain ended while a call was still up"
        assert not live.requests("BYE"), "the live call was hung up during the drain"
        live.send_bye()  # the caller ends its call: served as usual
        assert await wait_for(lambda: live.responses(200, method="BYE"), 2), live.messages()
        hung_up = await asyncio.wait_for(draining, 3.0)  # long before the 10 s
        assert hung_up == 0
        assert rec.ended[rec.calls[0].call_id] == "remote_bye"
        assert server.endpoint is None and server.ports.in_use == 0
    finally:
        live.close()
        newcomer.close()
        await server.stop()


async def test_item14_drain_timeout_hangs_up_what_is_left():
    rec = Recorder()
    server = await start_server(rec, timer_values=FAST_TIMERS)
    live = await RawPeer.open(server)
    try:
        await live.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].established)
        loop = asyncio.get_running_loop()
        began = loop.time()
        hung_up = await server.drain(0.6, stop_timeout=0.3)
        assert hung_up == 1
        assert 0.55 < loop.time() - began < 2.0
        assert live.requests("BYE"), "the call left after the drain got no BYE"
        assert rec.ended[rec.calls[0].call_id] == "shutdown"
        assert server.ports.in_use == 0 and not server.calls
    finally:
        live.close()
        await server.stop()


async def test_item14_hangup_now_cuts_a_drain_short():
    rec = Recorder()
    server = await start_server(rec, timer_values=FAST_TIMERS)
    live = await RawPeer.open(server)
    try:
        await live.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].established)
        draining = asyncio.ensure_future(server.drain(60.0, stop_timeout=0.3))
        await asyncio.sleep(0.3)
        assert not draining.done()
        server.hangup_now()  # what a second SIGTERM does
        assert await asyncio.wait_for(draining, 2.0) == 1
        assert live.requests("BYE")
    finally:
        live.close()
        await server.stop()


@pytest.mark.slow
async def test_item14_runner_sigterm_drains_and_a_second_sigterm_hangs_up_at_once():
    # The runner as a process: SIGTERM with a live call and --drain-timeout 30.
    async with Instance(api=True, drain_timeout=30) as inst:
        live = RawPeer(await UdpSocket.open(), await UdpSocket.open(), inst)
        newcomer = RawPeer(await UdpSocket.open(), await UdpSocket.open(), inst)
        try:
            await live.establish()
            await inst.wait_line(": incoming from", 5)
            inst.signal(signal.SIGTERM)
            await inst.wait_line("Shutting down: taking no new calls", 5)
            newcomer.send_invite()
            assert await wait_for(lambda: finals(newcomer), 3)
            assert [r.status_code for r in finals(newcomer)] == [503]
            assert (await options_status(inst.port)).status_code == 503
            await asyncio.sleep(0.5)
            assert inst.proc is not None and inst.proc.returncode is None, "exited while draining"
            inst.signal(signal.SIGTERM)  # the second: hang up now
            assert await wait_for(lambda: live.requests("BYE"), 3), inst.log[-2000:]
            live.answer_byes()
            assert await inst.wait_exit(10) == 0, inst.log[-3000:]
            assert "Second stop signal" in inst.log
            assert "ended (shutdown)" in inst.log, inst.log[-3000:]
        finally:
            live.close()
            newcomer.close()


@pytest.mark.slow
async def test_item14_runner_sigterm_lets_a_live_call_finish_and_exits_0():
    async with Instance(api=False, drain_timeout=30) as inst:
        live = RawPeer(await UdpSocket.open(), await UdpSocket.open(), inst)
        try:
            await live.establish()
            await inst.wait_line(": incoming from", 5)
            inst.signal(signal.SIGTERM)
            await inst.wait_line("Shutting down: taking no new calls", 5)
            await asyncio.sleep(1.0)
            assert not live.requests("BYE")
            live.send_bye()
            assert await inst.wait_exit(10) == 0, inst.log[-3000:]
            assert "ended (remote_bye)" in inst.log, inst.log[-3000:]
            assert live.responses(200, method="BYE")
        finally:
            live.close()
