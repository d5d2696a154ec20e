"""The runner: Pipecat Cloud session bodies, routing before answering, SIP flags, STUN."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aioice import stun
from pipecat.runner.types import DailyRunnerArguments, RunnerArguments

from pipecat_sip.call import CallFailed
from pipecat_sip.routes import Accept, Redirect, Reject
from pipecat_sip.runner import (
    SIPRunnerConfig,
    SIPSessionRequest,
    create_transport,
    serve,
    sip_options,
    sip_session_request,
)
from pipecat_sip.server import SIPServer
from pipecat_sip.stun import StunError, learn_rtp_mapping, parse_stun_server, stun_binding
from pipecat_sip.transport import DialoutRequest, parse_dialout_settings
from tests.helpers.server import start_server

ROOT = Path(__file__).resolve().parents[1]


def args(body) -> RunnerArguments:
    return RunnerArguments(body=body, session_id="s1")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"dialout_settings": {"phone_number": "+1 415 555-0100", "caller_id": "+14155550199"}},
            SIPSessionRequest(
                "dialout", DialoutRequest("+14155550100", True, "+14155550199", None, (), 60.0)
            ),
        ),
        (
            {"dialout_settings": [{"phoneNumber": "+14155550100", "displayName": "Bot"}]},
            SIPSessionRequest("dialout", DialoutRequest("+14155550100", True, None, "Bot")),
        ),
        (
            {"sip": {"dialout": {"sipUri": "sip:alice@pbx.example.com", "timeout": 20,
                                 "headers": {"X-Campaign": "spring"}}}},
            SIPSessionRequest(
                "dialout",
                DialoutRequest(
                    "sip:alice@pbx.example.com", False, None, None, (("X-Campaign", "spring"),), 20
                ),
            ),
        ),
        ({"sip": {"register": True, "wait": 30}}, SIPSessionRequest("register", wait_s=30.0)),
        (
            {"sip": {"register": {"registrar": "sip:pbx.example.com", "username": "1001"}}},
            SIPSessionRequest("register", None, "sip:pbx.example.com", "1001", 300.0),
        ),
        ('{"sip": {"register": true}}', SIPSessionRequest("register")),  # a JSON string body
        ({}, None),
        ({"other": 1}, None),
        (None, None),
    ],
)  # fmt: skip
def test_session_bodies(body, expected):
    assert sip_session_request(args(body), {}) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dialout_settings": {}}, "dialout_settings: dial-out settings need exactly one of"),
        ({"dialout_settings": [{}, {}]}, "one dial-out per session"),
        ({"dialout_settings": {"phoneNumber": "call me"}}, "phoneNumber: 'call me' is not"),
        ({"sip": {"dialout": {"sipUri": "http://x"}}}, "sipUri: 'http://x' is not a SIP URI"),
        ({"sip": {"dialout": {"sipUri": "sip:a@b", "headers": {"From": "x"}}}}, "'From' cannot"),
        ({"sip": {"dialout": {"sipUri": "sip:a@b", "headers": {"X-A": "a\r\nB: c"}}}}, "one line"),
        ({"sip": {"dialout": {"sipUri": "sip:a@b", "timeout": 0}}}, "timeout"),
        ({"sip": {"dialout": {"sipUri": "sip:a@b"}, "register": True}}, "exactly one"),
        ({"sip": {"register": "yes"}}, "sip.register must be true or an object"),
        ({"sip": {"register": {"password": "x"}}}, "unknown key 'password'"),
        ({"sip": {"register": True, "wait": 99999}}, "sip.wait must be 1-3600"),
        ({"sip": "dialout"}, "sip must be an object"),
    ],
)
def test_bad_session_bodies_say_what(body, message):
    with pytest.raises(ValueError, match=None) as error:
        sip_session_request(args(body), {})
    assert message in str(error.value) and str(error.value).startswith("session body")


def test_only_sessions_without_a_transport_are_sip_ones():
    body = {"dialout_settings": {"phoneNumber": "+14155550100"}}
    daily = DailyRunnerArguments(room_url="https://x.daily.co/r", token="t", body=body)
    assert sip_session_request(daily, {}) is None  # Daily's own dial-out
    assert sip_session_request(args({}), {"SIP_SESSION": "register"}) == SIPSessionRequest(
        "register"
    )

    class OldPipecatSessionArguments:  # pipecatcloud before it subclassed RunnerArguments
        session_id = "s"
        body = {"sip": {"register": True}}

    assert sip_session_request(OldPipecatSessionArguments(), {}).kind == "register"


async def test_a_non_sip_session_still_goes_to_pipecat():
    with pytest.raises(ValueError, match="Unsupported runner arguments type"):
        await create_transport(args({"hello": 1}), {"sip": lambda: None})


def test_dialout_settings_keys():
    request = parse_dialout_settings(
        {"sip_uri": "sip:bob@10.0.0.1", "display_name": "Acme", "callerId": "1001"}
    )
    assert request == DialoutRequest("sip:bob@10.0.0.1", False, "1001", "Acme")
    with pytest.raises(ValueError, match="callerId"):
        parse_dialout_settings({"phoneNumber": "+1555", "callerId": "a b"})
    with pytest.raises(ValueError, match="displayName"):
        parse_dialout_settings({"phoneNumber": "+1555", "displayName": "x\r\n"})


# --- routing before answering ------------------------------------------------------------


async def test_serve_routes_before_answering():
    seen: list = []

    async def bot(runner_args):
        seen.append(runner_args.settings)
        await runner_args.call.wait_answered(5)
        await asyncio.sleep(0.2)
        await runner_args.call.hangup()

    def route(info):
        user = info.request_uri.split(":", 1)[1].split("@", 1)[0]
        return {
            "busy": Reject(486, "Not today", "busy"),
            "moved": Redirect(("sip:elsewhere@192.0.2.1",), 302, "moved"),
            "pizza": Accept({"voice": "v1"}, "pizza"),
            "broken": 42,
        }.get(user)

    base = random.randrange(20000, 40000, 2)
    config = SIPRunnerConfig(host="127.0.0.1", port=0, public_address="127.0.0.1",
                             rtp_port_range=(base, base + 99))  # fmt: skip
    stop = asyncio.Event()
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        serve(bot, config, stop_event=stop, started=ready.set_result, route=route)
    )
    server = await asyncio.wait_for(ready, 10)
    caller = await start_server(None)
    try:
        target = f"127.0.0.1:{server.port}"
        for user, code in (("busy", 486), ("moved", 302), ("broken", 500)):
            with pytest.raises(CallFailed) as failed:
                await caller.call(f"sip:{user}@{target}", timeout=5)
            assert failed.value.status_code == code, user
        call = await caller.call(f"sip:pizza@{target}", timeout=5)
        await asyncio.wait_for(call.wait_ended(), 5)
        call = await caller.call(f"sip:anyone@{target}", timeout=5)
        await asyncio.wait_for(call.wait_ended(), 5)
        assert seen == [{"voice": "v1"}, {}]
    finally:
        await caller.stop()
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_redirect_carries_its_contacts():
    async def bot(runner_args):  # never reached
        raise AssertionError

    base = random.randrange(20000, 40000, 2)
    config = SIPRunnerConfig(host="127.0.0.1", port=0, public_address="127.0.0.1",
                             rtp_port_range=(base, base + 99))  # fmt: skip
    stop = asyncio.Event()
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    targets = ("sip:a@192.0.2.1", "sip:b@192.0.2.2:5070")
    task = asyncio.ensure_future(
        serve(bot, config, stop_event=stop, started=ready.set_result,
              route=lambda info: Redirect(targets))
    )  # fmt: skip
    server = await asyncio.wait_for(ready, 10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    invite = (
        f"INVITE sip:x@127.0.0.1:{server.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKredir1;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:c@127.0.0.1>;tag=f1\r\nTo: <sip:x@127.0.0.1>\r\n"
        "Call-ID: redirect-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:c@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendto(sock, invite, ("127.0.0.1", server.port))
        final = None
        for _ in range(10):
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
            if not data.startswith(b"SIP/2.0 1"):
                final = data.decode()
                break
        assert final is not None and final.startswith("SIP/2.0 302"), final
        assert "Contact: <sip:a@192.0.2.1>" in final and "<sip:b@192.0.2.2:5070>" in final
    finally:
        sock.close()
        stop.set()
        await asyncio.wait_for(task, 10)


# --- SIP options without --transport -------------------------------------------------------


def test_sip_options_are_ours_only():
    assert sip_options(["--sip-port", "5070", "--host", "x", "-t", "sip", "-v"]) == ["--sip-port"]
    assert sip_options(["--registrar=sip:pbx", "--port", "7860"]) == ["--registrar"]


def test_sip_flags_with_another_transport_stop_with_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "bot.py", "-t", "daily", "--sip-port", "5070"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --sip-port is a SIP option: add --transport sip (not --transport daily)"
    ]


def test_sip_flags_alone_imply_the_sip_transport(tmp_path):
    base = random.randrange(20000, 40000, 2)
    proc = subprocess.Popen(
        [sys.executable, "bot.py", "--sip-host", "127.0.0.1", "--sip-port", "0",
         "--rtp-ports", f"{base}-{base + 19}", "--public-address", "127.0.0.1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Ready: call sip:" in line or len(lines) > 200:
                break
        text = "".join(lines)
        assert "--sip-host is a SIP option: running --transport sip" in text, text
        assert "Ready: call sip:pipecat@127.0.0.1:" in text, text
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


# --- STUN ------------------------------------------------------------------------------------


class StunResponder(asyncio.DatagramProtocol):
    """A STUN server stand-in on loopback: answers Binding with a fixed mapped address."""

    def __init__(self, mapped: tuple[str, int] | None) -> None:
        self.mapped = mapped
        self.requests = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.requests += 1
        if self.mapped is None:
            return  # silent server
        request = stun.parse_message(data)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = self.mapped
        self.transport.sendto(b"junk", addr)  # ignored: not STUN
        self.transport.sendto(bytes(response), addr)


async def stun_server(mapped):
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunResponder(mapped), local_addr=("127.0.0.1", 0)
    )
    return transport, protocol, transport.get_extra_info("sockname")[:2]


async def test_stun_binding_learns_the_rtp_ports_mapping():
    transport, protocol, address = await stun_server(("203.0.113.5", 41000))
    server = SIPServer(None, host="127.0.0.1", port=0, rtp_port_range=(41000, 41009))
    try:
        mapping = await learn_rtp_mapping(server.ports, address)
        assert mapping.public == ("203.0.113.5", 41000)
        assert mapping.local == ("127.0.0.1", mapping.local[1])
        assert mapping.port_preserved == (mapping.local[1] == 41000)
    finally:
        transport.close()


async def test_stun_timeout_is_bounded():
    transport, protocol, address = await stun_server(None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(StunError, match="did not answer"):
            await stun_binding(sock, address, timeout=1.2)
        assert loop.time() - started < 2.0
        assert protocol.requests == 2  # at 0 and 0.5 s (RFC 8489 RTO doubling)
    finally:
        sock.close()
        transport.close()


def test_stun_server_values():
    assert parse_stun_server("stun.example.net") == ("stun.example.net", 3478)
    assert parse_stun_server("stun:192.0.2.1:19302") == ("192.0.2.1", 19302)
    assert parse_stun_server("[2001:db8::1]:3479") == ("2001:db8::1", 3479)
    for bad in ("", "host:port", "a b", "[::1"):
        with pytest.raises(ValueError, match="SIP_STUN_SERVER"):
            parse_stun_server(bad)


async def test_serve_keeps_start_up_objects_out_of_the_collectors_passes():
    """A full collection with Pipecat loaded walked ~100,000 start-up objects
    (~30 ms here, no RTP sent meanwhile); while serving they are frozen, and
    given back when serve() returns."""
    import gc

    async def bot(runner_args):  # never reached
        raise AssertionError

    assert gc.get_freeze_count() == 0
    base = random.randrange(20000, 40000, 2)
    config = SIPRunnerConfig(host="127.0.0.1", port=0, public_address="127.0.0.1",
                             rtp_port_range=(base, base + 99))  # fmt: skip
    stop = asyncio.Event()
    frozen: list[int] = []
    task = asyncio.ensure_future(
        serve(bot, config, stop_event=stop, started=lambda s: frozen.append(gc.get_freeze_count()))
    )
    for _ in range(200):
        if frozen:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert frozen and frozen[0] > 10_000  # Pipecat and pipecat_sip's modules at least
    assert gc.get_freeze_count() == 0
