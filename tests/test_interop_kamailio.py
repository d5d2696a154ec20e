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
from pipecat_sip.server import Registration
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
from tests.helpers.peers import free_udp_port, require_binary
from tests.helpers.pjsua import Pjsua, PjsuaError, require_pjsua2
from tests.helpers.server import Recorder, start_server, wait_for
from tests.helpers.sipp import run_sipp

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
