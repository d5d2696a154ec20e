"""Interop (issue 12): SIP over TCP and TLS with real peers on loopback.

- SIPp (``-t t1``) calls the server over TCP; SIPp 3.6.1 in Debian is built
  without OpenSSL (``-t l1`` answers "To use a TLS transport you must
  compile SIPp with OpenSSL"), so TLS calls are shown with baresip.
- baresip calls the server over TCP and over TLS (``sip_cafile`` trusting
  the test's CA), and answers the server's TLS call (``sip_certificate``);
  a baresip whose certificate the server does not trust is refused at once
  with a clear log line.
- Kamailio with its TLS module is the registrar: the server registers over
  TLS with Digest, keeps the flow alive with CRLF pings, and a call from
  SIPp to the registered user reaches the server over TLS through Kamailio.

Certificates come from trustme, made by the tests; no key is committed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme
from loguru import logger

from pipecat_sip.call import CallFailed
from pipecat_sip.server import Registration
from pipecat_sip.tls import TLSConfig
from tests.helpers.baresip import Baresip
from tests.helpers.kamailio import Kamailio, quote, require_kamailio
from tests.helpers.peers import free_tcp_port, require_binary
from tests.helpers.server import Recorder, start_server, wait_for
from tests.helpers.sipp import run_sipp, start_sipp

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
REGISTRAR_TLS_CFG = REPO / "tests" / "kamailio" / "registrar_tls.cfg"
USERS = {"bot": "b0t-pw"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    files = {
        "ca": d / "ca.pem",
        "ours": d / "ours.pem",
        "peer": d / "peer.pem",
        "peer_key": d / "peer.key",
        "peer_cert": d / "peer.crt",
        "stranger_peer": d / "stranger-peer.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(files["ours"])
    )
    peer = ca.issue_cert("127.0.0.1", "localhost")
    peer.private_key_and_cert_chain_pem.write_to_path(str(files["peer"]))
    peer.private_key_pem.write_to_path(str(files["peer_key"]))
    for blob in peer.cert_chain_pems:
        blob.write_to_path(str(files["peer_cert"]), append=True)
    stranger.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(files["stranger_peer"])
    )
    return {k: str(v) for k, v in files.items()}


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip()), level="INFO")
    yield lines
    logger.remove(sink)


# --- SIPp over TCP ------------------------------------------------------------------------------
async def test_sipp_calls_over_tcp():
    require_binary("sipp")
    recorder = Recorder()
    server = await start_server(recorder, transports=("udp", "tcp"))
    try:
        result = await run_sipp(
            "uac_basic.xml",
            f"127.0.0.1:{server.tcp_port}",
            calls=3,
            keys={"hold_ms": "300"},
            extra_args=["-t", "t1"],  # one TCP connection for all calls
            timeout=20,
        )
        assert result.ok, result.summary()
        assert result.successful_calls == 3
        assert [c.info.transport for c in recorder.calls] == ["TCP"] * 3
        assert server.endpoint.stats["accepted"] == 1
        assert server.endpoint.stats["connected"] == 0  # everything went back on SIPp's connection
        assert await wait_for(lambda: not server.calls, 3)
    finally:
        await server.stop()


async def test_we_call_sipp_over_tcp():
    require_binary("sipp")
    server = await start_server(None, transports=("udp", "tcp"))
    try:
        async with await start_sipp(
            "uas_answer.xml", "", calls=1, extra_args=["-t", "t1"], timeout=20
        ) as uas:
            call = await server.call(
                f"sip:sipp@127.0.0.1:{uas.local_port};transport=tcp", timeout=5
            )
            assert call.info.transport == "TCP"
            await asyncio.sleep(0.3)
            await call.hangup()
            result = await uas.wait(10)
        assert result.ok, result.summary()
        assert server.endpoint.stats["connected"] == 1 and server.endpoint.stats["accepted"] == 0
    finally:
        await server.stop()


# --- baresip over TCP and TLS ------------------------------------------------------------------
async def _baresip_calls(server, uri: str, bare: Baresip, recorder: Recorder) -> None:
    await bare.dial(uri)
    await bare.wait_event("CALL_ESTABLISHED", timeout=10)
    await bare.wait_event("CALL_CLOSED", timeout=10)  # the recorder hangs up after 1.5 s
    assert await wait_for(lambda: not server.calls, 3)
    [call] = recorder.calls
    assert len(recorder.audio[call.call_id]) > 20, "no RTP from baresip"


async def test_baresip_calls_over_tcp(tmp_path: Path):
    require_binary("baresip")
    recorder = Recorder(hangup_after=1.5)
    server = await start_server(recorder, transports=("udp", "tcp"))
    try:
        async with Baresip(tmp_path / "bs", name="alice") as bare:
            uri = f"sip:bot@127.0.0.1:{server.tcp_port};transport=tcp"
            await _baresip_calls(server, uri, bare, recorder)
        assert recorder.calls[0].info.transport == "TCP"
        assert list(recorder.ended.values()) == ["local_bye"]
    finally:
        await server.stop()


async def test_baresip_calls_over_tls(tmp_path: Path, pki):
    require_binary("baresip")
    recorder = Recorder(hangup_after=1.5)
    server = await start_server(
        recorder, transports=("udp", "tls"), tls=TLSConfig(pki["ours"], ca_file=pki["ca"])
    )
    try:
        config = {"sip_cafile": pki["ca"], "sip_certificate": pki["peer"]}
        async with Baresip(tmp_path / "bs", name="alice", extra_config=config) as bare:
            # baresip 1.0 prefixes "sip:" to a dialled "sips:" URI: ask for TLS by parameter.
            uri = f"sip:bot@127.0.0.1:{server.tls_port};transport=tls"
            await _baresip_calls(server, uri, bare, recorder)
        call = recorder.calls[0]
        assert call.info.transport == "TLS"
        assert list(recorder.ended.values()) == ["local_bye"]
        # Our BYE went to baresip's Contact over TLS, verified against the test CA.
        assert server.endpoint.stats["tls_verify_failed"] == 0
    finally:
        await server.stop()


async def test_we_call_baresip_over_verified_tls(tmp_path: Path, pki):
    require_binary("baresip")
    server = await start_server(
        None, transports=("udp", "tls"), tls=TLSConfig(pki["ours"], ca_file=pki["ca"])
    )
    try:
        config = {"sip_certificate": pki["peer"], "sip_cafile": pki["ca"]}
        async with Baresip(tmp_path / "bs", name="alice", answer=True, extra_config=config) as bare:
            tls_port = bare.sip_port + 1  # baresip listens for TLS at sip_listen's port + 1
            call = await server.call(f"sips:alice@127.0.0.1:{tls_port}", timeout=10)
            assert call.info.transport == "TLS"
            await bare.wait_event("CALL_ESTABLISHED", timeout=5)
            await asyncio.sleep(0.5)
            await call.hangup()
            await bare.wait_event("CALL_CLOSED", timeout=5)
        assert server.endpoint.stats["connected"] >= 1
        assert server.endpoint.stats["tls_verify_failed"] == 0
    finally:
        await server.stop()


async def test_a_peer_certificate_we_do_not_trust_refuses_the_call(tmp_path: Path, pki, log_lines):
    require_binary("baresip")
    server = await start_server(None, tls=TLSConfig(ca_file=pki["ca"]))  # outbound TLS only
    try:
        config = {"sip_certificate": pki["stranger_peer"]}
        async with Baresip(tmp_path / "bs", name="alice", answer=True, extra_config=config) as bare:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(CallFailed):
                await server.call(f"sips:alice@127.0.0.1:{bare.sip_port + 1}", timeout=10)
            assert loop.time() - start < 3, "refused by the transport error, not Timer B"
            assert not any(e.get("type") == "CALL_INCOMING" for e in bare.events)
        line = next(x for x in log_lines if "cannot connect to tls:127.0.0.1" in x)
        assert "certificate verify failed" in line, line
        assert server.endpoint.stats["tls_verify_failed"] == 1
    finally:
        await server.stop()


# --- Kamailio as a TLS registrar ----------------------------------------------------------------
def tls_registrar(tmp_path: Path, pki: dict[str, str]) -> tuple[Kamailio, int]:
    tls_port = free_tcp_port()
    users = "\n".join(f'\t$sht(users=>{u}) = "{p}";' for u, p in USERS.items())
    kam = Kamailio(
        REGISTRAR_TLS_CFG,
        tmp_path / "kam",
        defines={"REALM": quote("pipecat.test")},
        substitutions={"USERS": users, "TLS_CERT": pki["peer_cert"], "TLS_KEY": pki["peer_key"]},
        listen=[f"tls:127.0.0.1:{tls_port}"],
    )
    return kam, tls_port


async def test_tls_registration_at_kamailio_and_a_call_through_it(tmp_path: Path, pki):
    require_kamailio()
    require_binary("sipp")
    kam, tls_port = tls_registrar(tmp_path, pki)
    recorder = Recorder(hangup_after=None)
    async with kam:
        server = await start_server(
            recorder,
            user="bot",
            transports=("udp", "tls"),
            tls=TLSConfig(pki["ours"], ca_file=pki["ca"]),
            registration=Registration(
                registrar=f"sips:127.0.0.1:{tls_port}",
                username="bot",
                password=USERS["bot"],
            ),
            keepalive_interval=0.5,
        )
        try:
            assert await wait_for(lambda: server.registered, 10), kam.log_tail()
            registers = kam.requests("REGISTER")
            assert len(registers) >= 2 and {r["proto"] for r in registers} == {"tls"}, registers
            dump = await kam.kamcmd("ul.dump")
            assert "bot" in dump and f"tls:127.0.0.1:{tls_port}" in dump, dump
            assert f"sips:bot@127.0.0.1:{server.tls_port}" in dump, dump
            # Keep-alives: Kamailio answers our CRLF pings; the flow stays up.
            assert await wait_for(lambda: server.endpoint.stats["pings_sent"] >= 3, 6), dict(
                server.endpoint.stats
            )
            assert server.endpoint.stats["pong_timeouts"] == 0
            assert server.endpoint.stats["connect_failed"] == 0
            # A call from SIPp (UDP) to the registered user reaches us over TLS.
            result = await run_sipp(
                "uac_basic.xml",
                f"127.0.0.1:{kam.port}",
                service="bot",
                keys={"hold_ms": "300"},
                timeout=15,
            )
            assert result.ok, result.summary() + "\n" + kam.log_tail()
            assert [c.info.transport for c in recorder.calls] == ["TLS"]
            invites = [r for r in kam.requests("INVITE") if r["ruri"].startswith("sip:bot@")]
            assert invites, kam.log_tail()
            # Now we hang up: our BYE follows the Record-Route back to Kamailio over TLS
            # (double Record-Route: the entry on our side says transport=tls).
            recorder.hangup_after = 0.3
            result = await run_sipp(
                "uac_server_bye.xml", f"127.0.0.1:{kam.port}", service="bot", timeout=15
            )
            assert result.ok, result.summary() + "\n" + kam.log_tail()
            byes = [r for r in kam.requests("BYE") if r["callid"] == recorder.calls[-1].call_id]
            assert [b["proto"] for b in byes] == ["tls"], byes
            assert server.endpoint.stats["tls_verify_failed"] == 0
        finally:
            await server.stop()
        # Unregistered over TLS on stop (Expires: 0 answered).
        last = kam.requests("REGISTER")[-1]
        assert last["proto"] == "tls"
