"""Interop: SIPp (Debian package sip-tester) calls the real SIPServer on loopback.

Each test starts a server on a free port, runs a SIPp scenario from
tests/sipp/ against it, and checks both what SIPp saw (exit code, counters)
and what the server did (calls created, end reasons, RTP ports returned).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from pipecat_sip.rtp.sender import RtpSender
from pipecat_sip.server import Registration, SIPServer
from tests.helpers.peers import require_binary
from tests.helpers.server import Recorder, start_server, wait_for
from tests.helpers.sipp import run_sipp, start_sipp

pytestmark = pytest.mark.interop


@pytest.fixture
def sipp():
    require_binary("sipp")


def target(server: SIPServer) -> str:
    return f"127.0.0.1:{server.port}"


class RtpSink:
    """A UDP socket of the test on 127.0.0.1 that notes when each datagram arrives."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[float, bytes]] = []  # (loop time, datagram)
        self.loop.add_reader(self.sock, self._read)

    def _read(self) -> None:
        self.received.append((self.loop.time(), self.sock.recv(2048)))

    def close(self) -> None:
        self.loop.remove_reader(self.sock)
        self.sock.close()


async def test_basic_call_bye_from_caller(sipp):
    rec = Recorder()
    server = await start_server(rec)
    try:
        result = await run_sipp("uac_basic.xml", target(server), keys={"hold_ms": "500"})
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert list(rec.ended.values()) == ["remote_bye"]
        call = rec.calls[0]
        assert call.info.codec == "PCMU" and call.info.sample_rate == 8000
        assert call.info.from_display_name == "SIPp"
        assert server.ports.in_use == 0 and not server.calls
    finally:
        await server.stop()


async def test_server_ends_call_with_bye(sipp):
    rec = Recorder(hangup_after=0.3)
    server = await start_server(rec)
    try:
        result = await run_sipp("uac_server_bye.xml", target(server))
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert list(rec.ended.values()) == ["local_bye"]
        assert await wait_for(lambda: not server.ua.layer.client)  # BYE transaction completed
        assert server.ports.in_use == 0
    finally:
        await server.stop()


async def test_cancel_before_answer(sipp):
    rec = Recorder(answer_delay=10.0)
    server = await start_server(rec)
    try:
        result = await run_sipp("uac_cancel.xml", target(server))
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert list(rec.ended.values()) == ["cancelled"]
        assert server.ports.in_use == 0 and not server.calls
    finally:
        await server.stop()


async def test_options_health_check(sipp):
    server = await start_server(Recorder())
    try:
        result = await run_sipp("options.xml", target(server))
        assert result.ok, result.summary()
        response = next(m for m in result.messages("received") if m.startswith("SIP/2.0 200"))
        for header in ("Allow:", "Accept:", "Supported:"):
            assert header in response, response
        assert "INVITE" in response and "application/sdp" in response
    finally:
        await server.stop()


async def test_bye_for_unknown_dialog_gets_481(sipp):
    server = await start_server(Recorder())
    try:
        result = await run_sipp("bye_unknown.xml", target(server))
        assert result.ok, result.summary()
    finally:
        await server.stop()


async def test_no_common_codec_gets_488(sipp):
    rec = Recorder()
    server = await start_server(rec)
    try:
        result = await run_sipp("uac_bad_codec.xml", target(server))
        assert result.ok, result.summary()
        assert rec.calls == []  # never reached the application
        assert server.ports.in_use == 0
    finally:
        await server.stop()


async def test_retransmitted_invite_makes_one_call(sipp):
    rec = Recorder(answer_delay=0.3)
    server = await start_server(rec)
    try:
        result = await run_sipp("uac_retransmit_invite.xml", target(server))
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert len(rec.calls) == 1
        invites = [m for m in result.messages("sent") if m.startswith("INVITE")]
        assert len(invites) >= 2  # SIPp really did send the INVITE twice
    finally:
        await server.stop()


async def test_50_concurrent_calls_with_rtp(sipp):
    rec = Recorder()
    server = await start_server(rec, max_calls=100)
    try:
        result = await run_sipp(
            "uac_rtp.xml",
            target(server),
            calls=50,
            concurrent=50,
            rate=50,
            keys={"hold_ms": "2000"},
            timeout=60,
            trace_msg=False,
        )
        assert result.ok, result.summary()
        assert result.successful_calls == 50 and result.failed_calls == 0
        assert len(rec.calls) == 50
        assert await wait_for(lambda: len(rec.ended) == 50)
        assert set(rec.ended.values()) == {"remote_bye"}
        received = [c.media.stats.packets_received for c in rec.calls if c.media]
        assert len(received) == 50 and min(received) > 0  # SIPp's RTP reached every call
        assert server.ports.in_use == 0 and not server.calls
    finally:
        await server.stop()


async def test_capacity_limit_gets_503_with_retry_after(sipp):
    rec = Recorder(answer_delay=1.5)
    server = await start_server(rec, max_calls=1)
    try:
        first = asyncio.create_task(
            run_sipp("uac_basic.xml", target(server), keys={"hold_ms": "100"})
        )
        assert await wait_for(lambda: len(rec.calls) == 1)
        result = await run_sipp("uac_basic.xml", target(server), keys={"hold_ms": "100"})
        assert not result.ok
        received = result.messages("received")
        busy = [m for m in received if m.startswith("SIP/2.0 503")]
        assert busy, result.summary()
        assert "Retry-After:" in busy[0]
        assert (await first).ok  # the admitted call is unaffected
        assert len(rec.calls) == 1
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("hold_direction", "answer_direction"), [("inactive", "inactive"), ("sendonly", "recvonly")]
)
async def test_hold_and_resume_by_reinvite(sipp, hold_direction, answer_direction):
    # RFC 3264 s.8.4: a re-INVITE offering sendonly/inactive holds the call. The
    # 200 answers recvonly/inactive with a new o= version, no RTP leaves while
    # held, the RTP timeout runs during hold too (RTCP keeps a held call
    # alive; SIPp sends none, so 3 s here outlasts its 1.5 s hold), an offer
    # without our codec gets 488 and changes nothing, sendrecv resumes.
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=3.0)
    loop = asyncio.get_running_loop()
    rtp = RtpSink()
    transitions: list[tuple[float, bool]] = []
    holds: list[bool] = []

    async def play_peer() -> None:
        # The caller's RTP: every 20 ms, except while it holds with "inactive"
        # (sendonly is music on hold: it keeps sending). Records when the
        # server stops and starts sending.
        await wait_for(lambda: rec.calls and rec.calls[0].media is not None)
        call = rec.calls[0]
        call.add_hold_handler(holds.append)
        media = call.media
        sender = RtpSender(0, 8000)
        transitions.append((loop.time(), media.sending))
        while True:
            if media.sending != transitions[-1][1]:
                transitions.append((loop.time(), media.sending))
            if hold_direction == "sendonly" or media.sending:
                packet = sender.packet(bytes([0xFF]) * 160, 160)
                rtp.sock.sendto(packet, ("127.0.0.1", call.local_rtp_port))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(play_peer())
    try:
        keys = {
            "rtp_port": str(rtp.port),
            "hold_direction": hold_direction,
            "answer_direction": answer_direction,
        }
        result = await run_sipp("uac_hold.xml", target(server), keys=keys)
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert list(rec.ended.values()) == ["remote_bye"]  # no RTP timeout
        call = rec.calls[0]
        assert call.local_sdp.origin.session_version == 2  # hold, resume; not the 488
        assert [sending for _, sending in transitions] == [True, False, True]
        assert holds == [True, False] and not call.held
        held_from, held_until = transitions[1][0], transitions[2][0]
        assert held_until - held_from >= 1.4
        arrivals = [t for t, _ in rtp.received]
        # The transitions are polled every 20 ms: leave 30 ms at either end.
        during_hold = [t for t in arrivals if held_from + 0.03 < t < held_until - 0.03]
        assert not during_hold, f"{len(during_hold)} RTP packets sent while held"
        assert [t for t in arrivals if t < held_from]  # sending before the hold
        assert [t for t in arrivals if t > held_until]  # resumed
    finally:
        watcher.cancel()
        rtp.close()
        await server.stop()


async def test_delayed_offer_answered_in_the_ack(sipp):
    # RFC 3261 s.13.2.1: an INVITE without SDP gets our offer in the 200 and the
    # caller's answer in the ACK; media runs with the codec it picked (PCMA).
    rec = Recorder()
    server = await start_server(rec)
    rtp = RtpSink()
    try:
        keys = {"rtp_port": str(rtp.port), "hold_ms": "600"}
        result = await run_sipp("uac_delayed_offer.xml", target(server), keys=keys)
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert list(rec.ended.values()) == ["remote_bye"]
        call = rec.calls[0]
        assert call.info.codec == "PCMA" and call.negotiated.payload_type == 8
        assert call.negotiated.telephone_event_pt == 101
        assert len(rtp.received) >= 10  # RTP went where the ACK's SDP said
        assert all(data[1] & 0x7F == 8 for _, data in rtp.received)
        assert server.ports.in_use == 0
    finally:
        rtp.close()
        await server.stop()


async def test_delayed_offer_without_answer_in_the_ack_is_hung_up(sipp):
    rec = Recorder()
    server = await start_server(rec)
    try:
        result = await run_sipp("uac_delayed_offer_no_answer.xml", target(server))
        assert result.ok, result.summary()
        assert await wait_for(lambda: len(rec.ended) == 1)
        assert list(rec.ended.values()) == ["local_bye"]
        assert rec.calls[0].media is None  # no media was started
        assert server.ports.in_use == 0 and not server.calls
    finally:
        await server.stop()


async def test_registers_with_digest_auth_and_unregisters_on_stop(sipp):
    # RFC 3261 s.10 / s.22: SIPp as a registrar challenges with Digest, checks our
    # answer (its verifyauth), grants 60 s; stopping the server removes the binding.
    async with await start_sipp("uas_registrar.xml", "", calls=1, timeout=20) as registrar:
        server = await start_server(
            Recorder(),
            registration=Registration(
                registrar=f"sip:{registrar.target}", username="bot1000", password="s3cret"
            ),
        )
        try:
            assert await wait_for(lambda: server.registered, 5.0)
        finally:
            await server.stop()
        assert not server.registered
        result = await registrar.wait()
    assert result.ok, result.summary()
    assert result.successful_calls == 1


async def test_wrong_password_is_refused_and_not_retried_at_once(sipp):
    async with await start_sipp("uas_registrar.xml", "", calls=1, timeout=20) as registrar:
        server = await start_server(
            Recorder(),
            registration=Registration(
                registrar=f"sip:{registrar.target}", username="bot1000", password="wrong"
            ),
        )
        try:
            result = await registrar.wait()  # 401, our answer, 403: the scenario's end
            await asyncio.sleep(0.3)
            assert not server.registered
        finally:
            await server.stop()
    assert result.ok, result.summary()
