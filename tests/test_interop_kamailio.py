"""Interop: Kamailio (Debian package kamailio) in front of the real SIPServer on loopback.

Three shapes, each rendered from a config by tests/helpers/kamailio.py:

- stateful proxy (tests/kamailio/proxy.cfg): SIPp and PJSIP call through
  it; it record-routes the INVITE, so ACK, re-INVITE and BYE must come
  back through it from both ends (its log shows each request's source);
- dispatcher (deploy/kamailio/dispatcher.cfg, the config users get) in
  front of two server instances: 10 calls spread over both, OPTIONS
  probing marks a stopped instance inactive, calls fail over on timeout
  and on 503;
- registrar with Digest (tests/kamailio/registrar.cfg): PJSIP registers
  (a wrong password is refused), our server calls it through Kamailio's
  location lookup; our server registers itself and PJSIP calls it; and our
  server behind a NAT router (network namespaces) registers through it and
  takes a call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from pipecat_sip.call import SIPCall
from pipecat_sip.server import Registration, SIPServer
from tests.helpers.audio import read_wav, rms, tone, tone_energy_ratio, write_wav
from tests.helpers.echo import EchoBot
from tests.helpers.kamailio import (
    DISPATCHER_CFG,
    PROXY_CFG,
    REGISTRAR_CFG,
    Kamailio,
    quote,
    require_kamailio,
)
from tests.helpers.netns import NetLab, require_netns
from tests.helpers.peers import free_udp_port, require_binary
from tests.helpers.pjsua import Pjsua, require_pjsua2
from tests.helpers.server import Recorder, start_server, wait_for
from tests.helpers.sipp import run_sipp, start_sipp

pytestmark = pytest.mark.interop


@pytest.fixture
def kamailio():
    require_kamailio()


def tone_wav(path: Path, freq_hz: float = 1000.0, seconds: float = 6.0) -> Path:
    lead = np.zeros(int(0.3 * 8000), dtype=np.int16)
    return write_wav(path, np.concatenate([lead, tone(freq_hz, seconds)]), 8000)


def sources(kam: Kamailio, method: str, call_id: str | None = None) -> set[str]:
    """The ``ip:port`` each ``method`` request reached Kamailio from (for one Call-ID)."""
    return {r["src"] for r in kam.requests(method) if call_id is None or r.get("callid") == call_id}


# --- stateful proxy -----------------------------------------------------------------------


async def test_sipp_call_through_proxy(kamailio, tmp_path: Path):
    require_binary("sipp")
    rec = Recorder()
    server = await start_server(rec)
    kam = Kamailio(
        PROXY_CFG, tmp_path / "kam", defines={"BACKEND": quote(f"sip:127.0.0.1:{server.port}")}
    )
    try:
        async with kam:
            sipp_port = free_udp_port()
            result = await run_sipp(
                "uac_basic.xml",
                f"127.0.0.1:{kam.port}",
                keys={"hold_ms": "300"},
                local_port=sipp_port,
            )
            assert result.ok, result.summary() + "\n" + kam.log_tail()
            assert await wait_for(lambda: len(rec.ended) == 1)
            call = rec.calls[0]
            assert f"127.0.0.1:{kam.port}" in (call.info.header("Record-Route") or ""), call.info
            # SIPp's ACK and BYE followed the Record-Route (RFC 3261 s.12.2.1.1).
            sipp_src = f"127.0.0.1:{sipp_port}"
            for method in ("INVITE", "ACK", "BYE"):
                assert sources(kam, method, call.call_id) == {sipp_src}, kam.log_tail()
            assert list(rec.ended.values()) == ["remote_bye"]
    finally:
        await server.stop()


@pytest.mark.slow
async def test_pjsua_calls_through_proxy_and_we_hang_up(kamailio, tmp_path: Path):
    require_pjsua2()
    rec = Recorder(hangup_after=2.5)
    server = await start_server(rec)
    kam = Kamailio(
        PROXY_CFG, tmp_path / "kam", defines={"BACKEND": quote(f"sip:127.0.0.1:{server.port}")}
    )
    try:
        async with kam, Pjsua(tmp_path / "pj", codecs=["PCMU/8000"]) as pj:
            pj_src = f"127.0.0.1:{pj.ports['udp']}"
            call = await pj.call(f"sip:bot@127.0.0.1:{kam.port}", play=tone_wav(tmp_path / "t.wav"))
            state = await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            await asyncio.sleep(1.2)
            await pj.hold(call)  # a re-INVITE from PJSIP, routed by the route set
            await pj.wait_event("media_state", call=call, status="local_hold", timeout=5)
            await pj.wait_call_state(call, "DISCONNECTED", timeout=5)
            bye = await pj.wait_event("tsx", call=call, method="BYE", role="uas", timeout=2)
            assert bye["code"] == 200, bye
        call_id = state["call_id"]
        server_src = f"127.0.0.1:{server.port}"
        assert sources(kam, "INVITE", call_id) == {pj_src}, kam.requests("INVITE")
        assert pj_src in sources(kam, "ACK", call_id), kam.log_tail()
        assert sources(kam, "BYE", call_id) == {server_src}, kam.requests("BYE")
        reinvites = [r for r in kam.requests("INVITE") if r.get("callid") == call_id]
        assert len(reinvites) == 2 and reinvites[1]["route"] != "<null>", reinvites

        sip_call: SIPCall = rec.calls[0]
        assert f"127.0.0.1:{kam.port}" in (sip_call.info.header("Record-Route") or "")
        assert rec.ended[sip_call.call_id] == "local_bye"
        heard = np.frombuffer(b"".join(rec.audio[sip_call.call_id]), dtype="<i2")
        assert tone_energy_ratio(heard[4000:8000], 8000, 1000) > 0.8, "PJSIP's tone not heard"
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await server.stop()


async def test_server_calls_pjsua_through_proxy(kamailio, tmp_path: Path):
    require_pjsua2()
    server = await start_server(None)
    kam = Kamailio(PROXY_CFG, tmp_path / "kam", defines={"BACKEND": quote("sip:127.0.0.1:9")})
    try:
        async with kam, Pjsua(tmp_path / "pj", name="alice") as pj:
            await pj.listen(auto_answer=200)
            call = await server.call(pj.uri, destination=("127.0.0.1", kam.port), timeout=5)
            incoming = await pj.wait_event("incoming_call", timeout=2)
            assert "Record-Route:" in incoming["msg"], incoming["msg"]
            await pj.wait_call_state(incoming["call"], "CONFIRMED", timeout=5)
            await asyncio.sleep(0.3)
            await call.hangup()
            await pj.wait_call_state(incoming["call"], "DISCONNECTED", timeout=5)
        server_src = f"127.0.0.1:{server.port}"
        # Our ACK and BYE (UAC side) used the route set from the 200's Record-Route.
        assert sources(kam, "INVITE", call.call_id) == {server_src}
        assert sources(kam, "ACK", call.call_id) == {server_src}, kam.log_tail()
        assert sources(kam, "BYE", call.call_id) == {server_src}, kam.log_tail()
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await server.stop()


async def test_a_second_forks_200_is_acknowledged_and_ended(kamailio, tmp_path: Path):
    """Kamailio forks our INVITE to two SIPp phones that both answer at once
    (RFC 3261 s.13.2.2.4): the call is the first fork's; the other 200 gets an
    ACK and a BYE on its own dialog (through the proxy's Record-Route) while
    the call goes on, and each phone's scenario ends cleanly."""
    require_binary("sipp")
    server = await start_server(None)
    try:
        async with (
            await start_sipp("uas_fork", "", calls=1, timeout=30) as first,
            await start_sipp("uas_fork", "", calls=1, timeout=30) as second,
        ):
            kam = Kamailio(
                PROXY_CFG,
                tmp_path / "kam",
                defines={
                    "BACKEND": quote(f"sip:{first.target}"),
                    "FORK_TO": quote(f"sip:bob@{second.target}"),
                },
                children=1,  # one worker: our ACK and BYE reach the phone in the order sent
            )
            async with kam:
                call = await server.call(
                    f"sip:bob@127.0.0.1:{kam.port}",
                    destination=("127.0.0.1", kam.port),
                    timeout=5,
                )
                # One fork's phone is hung up while our call stays up.
                assert await wait_for(lambda: not (first.running and second.running), 5), (
                    kam.log_tail()
                )
                assert call.established
                released, kept = (first, second) if not first.running else (second, first)
                assert kept.running
                result = await released.wait(5)
                assert result.ok, result.summary() + "\n" + kam.log_tail()
                await call.hangup()
                assert (await kept.wait(5)).ok, kam.log_tail()
                server_src = f"127.0.0.1:{server.port}"
                # Two dialogs, each ACKed and ended by us through the proxy.
                acks = [r for r in kam.requests("ACK") if r.get("callid") == call.call_id]
                byes = [r for r in kam.requests("BYE") if r.get("callid") == call.call_id]
                assert len(acks) == 2 and len(byes) == 2, kam.log_tail()
                assert {r["src"] for r in acks + byes} == {server_src}
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await server.stop()


# --- dispatcher (deploy/kamailio/dispatcher.cfg) ------------------------------------------


class Busy:
    """A call handler that answers every INVITE 503 (an instance that is full)."""

    def __init__(self) -> None:
        self.calls: list[SIPCall] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        await call.reject(503, retry_after=5)


def dispatcher(tmp_path: Path, servers, **defines) -> Kamailio:
    """The shipped dispatcher config in front of ``servers`` (set 1), probing every second."""
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text(
        "".join(f"1 sip:127.0.0.1:{s.port} 0 0 duid=bot-{i}\n" for i, s in enumerate(servers))
    )
    return Kamailio(
        DISPATCHER_CFG,
        tmp_path / "kam",
        defines={
            "DISPATCHER_LIST": quote(str(ds_list)),
            "DS_PING_INTERVAL": 1,
            "FR_TIMER_MS": 1000,
            **defines,
        },
        children=1,  # in order: SIPp aborts a call on a 1xx relayed after its 2xx
    )


async def test_dispatcher_spreads_calls_and_fails_over_when_one_stops(kamailio, tmp_path: Path):
    require_binary("sipp")
    recs = [Recorder(), Recorder()]
    servers = [await start_server(rec) for rec in recs]
    dests = [f"sip:127.0.0.1:{s.port}" for s in servers]
    kam = dispatcher(tmp_path, servers)
    try:
        async with kam:
            # OPTIONS probing: both instances answer 200, both are active.
            await kam.wait_dispatcher({d: "A" for d in dests}, timeout=5)
            result = await run_sipp(
                "uac_basic.xml",
                f"127.0.0.1:{kam.port}",
                calls=10,
                rate=20,
                keys={"hold_ms": "200"},
            )
            assert result.ok, result.summary() + "\n" + kam.log_tail()
            counts = [len(rec.calls) for rec in recs]
            assert sum(counts) == 10 and min(counts) >= 3, counts  # round-robin: 5 and 5
            for rec in recs:
                assert await wait_for(lambda rec=rec: len(rec.ended) == len(rec.calls))
                assert set(rec.ended.values()) == {"remote_bye"}
                for call in rec.calls:  # the proxy stayed in the dialog
                    assert f"127.0.0.1:{kam.port}" in (call.info.header("Record-Route") or "")

            # Stop instance 1: calls sent to it get no answer, fail over in
            # FR_TIMER_MS, and the probe marks it inactive.
            await servers[1].stop()
            result = await run_sipp(
                "uac_basic.xml",
                f"127.0.0.1:{kam.port}",
                calls=4,
                rate=10,
                keys={"hold_ms": "200"},
            )
            assert result.ok, result.summary() + "\n" + kam.log_tail()
            assert len(recs[0].calls) == counts[0] + 4
            assert len(recs[1].calls) == counts[1]
            states = await kam.wait_dispatcher({dests[0]: "A", dests[1]: "I"}, timeout=5)
            assert states[dests[1]].startswith("I"), states
    finally:
        for server in servers:
            await server.stop()


async def test_dispatcher_fails_over_on_503(kamailio, tmp_path: Path):
    require_binary("sipp")
    busy, rec = Busy(), Recorder()
    servers = [await start_server(busy), await start_server(rec)]
    kam = dispatcher(tmp_path, servers)
    try:
        async with kam:
            await kam.wait_dispatcher({f"sip:127.0.0.1:{s.port}": "A" for s in servers}, timeout=5)
            result = await run_sipp(
                "uac_basic.xml",
                f"127.0.0.1:{kam.port}",
                calls=4,
                rate=10,
                keys={"hold_ms": "100"},
            )
            assert result.ok, result.summary() + "\n" + kam.log_tail()
            # Round-robin sent some INVITEs to the busy instance; each of them
            # was retried on the other one, and SIPp never saw the 503.
            assert busy.calls, "round-robin never chose the busy instance"
            assert len(rec.calls) == 4
            received = result.messages("received")
            assert not any(m.startswith("SIP/2.0 503") for m in received), received
    finally:
        for server in servers:
            await server.stop()


async def test_dispatcher_allowlist_refuses_other_sources(kamailio, tmp_path: Path):
    require_binary("sipp")
    rec = Recorder()
    server = await start_server(rec)
    allow = tmp_path / "allow.address"
    allow.write_text("1 127.0.0.99 32\n")  # not SIPp's 127.0.0.1
    kam = dispatcher(
        tmp_path, [server], WITH_ALLOWLIST=None, WITH_PIKE=None, ALLOWLIST_FILE=quote(str(allow))
    )
    try:
        async with kam:
            await kam.wait_dispatcher({f"sip:127.0.0.1:{server.port}": "A"}, timeout=5)
            result = await run_sipp("uac_basic.xml", f"127.0.0.1:{kam.port}", calls=1, timeout=5)
            assert not result.ok
            received = result.messages("received")
            assert any(m.startswith("SIP/2.0 403") for m in received), result.summary()
            assert not rec.calls
    finally:
        await server.stop()


# --- registrar with Digest and nathelper (tests/kamailio/registrar.cfg) --------------------

USERS = {"alice": "s3cret", "bot": "b0t-pw"}


def registrar(tmp_path: Path, **kwargs) -> Kamailio:
    users = "\n".join(f'\t$sht(users=>{u}) = "{p}";' for u, p in USERS.items())
    return Kamailio(
        REGISTRAR_CFG,
        tmp_path / "kam",
        defines={"REALM": quote("pipecat.test")},
        substitutions={"USERS": users},
        **kwargs,
    )


def assert_heard_tone(path: str | Path, freq_hz: float, start_s: float, end_s: float) -> None:
    samples, rate = read_wav(path)
    part = samples[int(start_s * rate) : int(end_s * rate)]
    ratio = tone_energy_ratio(part, rate, freq_hz)
    assert part.size and ratio > 0.8 and rms(part) > 1000, (
        f"{freq_hz} Hz share {ratio:.3f}, rms {rms(part):.0f} in {start_s}-{end_s} s "
        f"of {samples.size / rate:.1f} s"
    )


@pytest.mark.slow
async def test_pjsua_registers_with_digest_and_we_call_it(kamailio, tmp_path: Path):
    require_pjsua2()
    bot = EchoBot()
    server = await start_server(None)
    try:
        async with registrar(tmp_path) as kam, Pjsua(tmp_path / "pj", name="alice") as pj:
            registrar_uri = f"sip:127.0.0.1:{kam.port}"
            wrong = await pj.add_account(
                "sip:alice@127.0.0.1",
                registrar=registrar_uri,
                username="alice",
                password="wrong",
                reg_retry_s=60,
            )
            refused = await pj.wait_event("reg_state", acc=wrong, timeout=5)
            assert refused["code"] in (401, 403), refused
            await pj.remove_account(wrong)
            acc = await pj.register(
                registrar_uri,
                "alice",
                USERS["alice"],
                auto_answer=200,
                play=str(tone_wav(tmp_path / "t.wav", 700)),
                record=str(tmp_path / "heard{n}.wav"),
            )
            regs = kam.requests("REGISTER")
            assert len(regs) >= 3, regs  # wrong: challenge + refused answer; right: + answer
            dump = await kam.kamcmd("ul.dump")
            assert "alice" in dump and f":{pj.ports['udp']}" in dump, dump

            call = await server.call(
                f"sip:alice@127.0.0.1:{kam.port}", destination=("127.0.0.1", kam.port), timeout=5
            )
            echo = asyncio.ensure_future(bot.run(call))
            incoming = await pj.wait_event("incoming_call", acc=acc, timeout=2)
            await pj.wait_call_state(incoming["call"], "CONFIRMED", timeout=5)
            await asyncio.sleep(2.0)
            await call.hangup()
            await asyncio.wait_for(echo, 5)
            closed = await pj.wait_event("recording_closed", call=incoming["call"], timeout=5)
        assert_heard_tone(closed["path"], 700, 0.8, 1.8)
        assert sources(kam, "BYE", call.call_id) == {f"127.0.0.1:{server.port}"}
    finally:
        await server.stop()


async def test_server_registers_and_pjsua_calls_it(kamailio, tmp_path: Path):
    require_pjsua2()
    bot = EchoBot()
    async with registrar(tmp_path) as kam:
        server = await start_server(
            bot,
            user="bot",
            registration=Registration(
                registrar=f"sip:127.0.0.1:{kam.port}", username="bot", password=USERS["bot"]
            ),
        )
        try:
            assert await wait_for(lambda: server.registered, 5), kam.log_tail()
            assert "bot" in await kam.kamcmd("ul.dump")
            async with Pjsua(tmp_path / "pj") as pj:
                heard = tmp_path / "heard.wav"
                call = await pj.call(
                    f"sip:bot@127.0.0.1:{kam.port}",
                    play=tone_wav(tmp_path / "t.wav", 900),
                    record=heard,
                )
                await pj.wait_call_state(call, "CONFIRMED", timeout=5)
                await asyncio.sleep(2.0)
                await pj.hangup(call)
                await pj.wait_event("recording_closed", call=call, timeout=5)
            assert_heard_tone(heard, 900, 0.8, 1.8)
            assert await wait_for(lambda: len(bot.ended) == 1)
        finally:
            await server.stop()
        # stop() removed the binding (REGISTER with Expires: 0)
        assert "bot" not in await kam.kamcmd("ul.dump")


async def test_server_behind_nat_registers_and_takes_a_call(kamailio, tmp_path: Path):
    # inside (our server, 198.51.100.2) -- router (masquerade) -- outside
    # (Kamailio and PJSIP, 203.0.113.2). The server registers through the NAT;
    # Kamailio saves the binding at the router's public address (nathelper)
    # and a call from PJSIP reaches the server back through that binding. The
    # server sends RTP first, so PJSIP latches onto the NAT'ed address and its
    # own RTP comes back through the router.
    require_pjsua2()
    require_netns(nft=True)
    bot = EchoBot()
    with NetLab() as lab:
        nat = lab.nat()
        with nat.inside.entered():
            kam = registrar(tmp_path, host=nat.outside_addr, netns=nat.outside.name)
            async with kam:
                server = SIPServer(
                    bot,
                    host=nat.inside_addr,
                    port=0,
                    user="bot",
                    rtp_port_range=(20000, 20099),
                    registration=Registration(
                        registrar=f"sip:{nat.outside_addr}:{kam.port}",
                        username="bot",
                        password=USERS["bot"],
                    ),
                )
                await server.start()
                try:
                    assert await wait_for(lambda: server.registered, 5), kam.log_tail()
                    dump = await kam.kamcmd("ul.dump")
                    assert f"Received: sip:{nat.router_outside_addr}:" in dump, dump
                    pj = Pjsua(tmp_path / "pj", bind=nat.outside_addr, netns=nat.outside.name)
                    async with pj:
                        heard = tmp_path / "heard.wav"
                        call = await pj.call(
                            f"sip:bot@{nat.outside_addr}:{kam.port}",
                            play=tone_wav(tmp_path / "t.wav", 800),
                            record=heard,
                        )
                        await pj.wait_call_state(call, "CONFIRMED", timeout=5)
                        await asyncio.sleep(2.5)
                        await pj.hangup(call)
                        await pj.wait_call_state(call, "DISCONNECTED", timeout=5)
                        await pj.wait_event("recording_closed", call=call, timeout=5)
                        pj_log = pj.log
                    # PJSIP latched onto where our RTP really came from (RFC 3550
                    # symmetric RTP through NAT), not the address in our SDP.
                    switched = f"Remote RTP address switched to {nat.router_outside_addr}:"
                    assert switched in pj_log, pj.log_tail()
                    assert await wait_for(lambda: len(bot.ended) == 1), kam.log_tail()
                    sip_call = bot.calls[0]
                    # The INVITE came through Kamailio, at our NAT binding.
                    assert sip_call.info.remote_address == (nat.outside_addr, kam.port)
                    assert list(bot.ended.values()) == ["remote_bye"]
                    assert_heard_tone(heard, 800, 1.0, 2.2)
                finally:
                    await server.stop()
