"""The operations API (issue 16 item 3) over real HTTP and WebSocket, against a running server.

A real SIPServer and its OperationsAPI run on loopback in the test's loop;
httpx and the websockets client talk to them over TCP; callers are a raw
UDP SIP peer (tests/test_robustness.py's RawPeer) and SIPp.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import httpx
import pytest
import websockets

from pipecat_sip.api import OperationsAPI, check_api_binding
from pipecat_sip.call import SIPCall
from pipecat_sip.rtp.dtmf import TelephoneEvent
from pipecat_sip.rtp.packet import RtpPacket
from pipecat_sip.runner import ConfigError, build_parser, parse_config
from tests.helpers.server import Recorder, start_server, wait_for
from tests.helpers.sipp import start_sipp
from tests.test_robustness import FAST_TIMERS, RawPeer, rtp_packets

TOKEN = "s3cret-token-for-tests"


class Events:
    """A WebSocket client of /events collecting what it receives."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.kwargs = kwargs
        self.events: list[dict[str, Any]] = []
        self._ws: Any = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Events:
        self._ws = await websockets.connect(self.url, **self.kwargs)
        self._task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                self.events.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass

    def of(self, kind: str, call_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == kind and (call_id is None or e.get("call_id") == call_id)
        ]

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, 2)


async def running(handler=None, **api_kwargs):
    server = await start_server(handler, timer_values=FAST_TIMERS)
    api = OperationsAPI(server, **api_kwargs)
    await api.start()
    return server, api


def dtmf_packets(key_event: int, ssrc: int = 0x4321, seq: int = 5000) -> list[bytes]:
    out = []
    for i, (end, duration) in enumerate([(False, 160), (False, 320), (True, 800), (True, 800)]):
        payload = TelephoneEvent(key_event, end=end, duration=duration).serialize()
        out.append(RtpPacket(101, seq + i, 64000, ssrc, payload, marker=i == 0).serialize())
    return out


async def test_health_ready_docs_and_json_errors():
    server, api = await running(Recorder())
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
            r = await http.get("/health")
            assert r.status_code == 200 and r.json() == {"status": "ok", "calls": 0}
            r = await http.get("/ready")
            assert r.status_code == 200 and r.json()["ready"] is True
            r = await http.get("/docs")
            assert r.status_code == 200 and "swagger" in r.text.lower()
            paths = (await http.get("/openapi.json")).json()["paths"]
            for path in ("/health", "/ready", "/calls", "/calls/{call_id}", "/metrics"):
                assert path in paths, sorted(paths)
            assert {"post", "get"} <= set(paths["/calls"])
            assert "/calls/{call_id}/transfer" in paths and "/calls/{call_id}/dtmf" in paths
            r = await http.get("/calls/nope")
            assert r.status_code == 404 and r.json() == {"detail": "no such call"}
            r = await http.get("/no/such/path")
            assert r.status_code == 404 and r.headers["content-type"] == "application/json"
            for path in ("/calls/nope/transfer", "/calls/nope/dtmf"):
                r = await http.post(path, json={"target": "sip:a@b", "digits": "1"})
                assert r.status_code in (404, 422), r.text
            assert (await http.delete("/calls/nope")).status_code == 404

            server.stop_accepting()  # draining: not ready, still healthy
            r = await http.get("/ready")
            assert r.status_code == 503 and r.json()["draining"] is True
            assert (await http.get("/health")).status_code == 200
            r = await http.post("/calls", json={"target": "sip:bob@127.0.0.1:9"})
            assert r.status_code == 503, r.text
            await server.stop()
            assert (await http.get("/health")).status_code == 503
    finally:
        await api.stop()
        await server.stop()


async def test_a_stopped_api_and_its_server_are_freed():
    """Regression: FastAPI's module-level caches of endpoint callables held the
    API (its route closures captured it), so every server and call it had seen
    stayed alive after stop()."""
    server, api = await running(Recorder())
    async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
        assert (await http.get("/calls")).status_code == 200
        assert (await http.get("/calls/nope")).status_code == 404
    await api.stop()
    await server.stop()
    gone_api, gone_server = weakref.ref(api), weakref.ref(server)
    del api, server
    await asyncio.sleep(0.05)  # the sockets' connection_lost callbacks run
    gc.collect()
    assert gone_api() is None and gone_server() is None


async def test_inbound_call_listed_dtmf_both_ways_events_and_hangup():
    rec = Recorder()
    server, api = await running(rec)
    peer = await RawPeer.open(server)
    try:
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=5) as http,
            Events(api.url.replace("http", "ws") + "/events") as events,
        ):
            await asyncio.sleep(0.1)
            await peer.establish()
            assert await wait_for(lambda: rec.calls and rec.calls[0].established)
            call: SIPCall = rec.calls[0]
            for packet in rtp_packets(10):
                peer.rtp.send(packet, ("127.0.0.1", call.local_rtp_port))
            assert await wait_for(lambda: events.of("answered")), events.events

            listed = (await http.get("/calls")).json()
            assert listed["count"] == 1
            (view,) = listed["calls"]
            assert view["call_id"] == peer.call_id
            assert view["direction"] == "inbound" and view["state"] == "confirmed"
            assert view["codec"] == "PCMU" and view["from"].startswith("sip:raw@")
            assert view["to"].startswith("sip:bot@") and view["answered"] is True
            assert await wait_for(lambda: call.media and call.media.stats.packets_received == 10)
            detail = (await http.get(f"/calls/{peer.call_id}")).json()
            assert detail["quality"]["rtp"]["packets_received"] == 10
            assert detail["duration_s"] > 0

            # DTMF from the caller (RFC 4733) shows up as an event.
            for packet in dtmf_packets(5):
                peer.rtp.send(packet, ("127.0.0.1", call.local_rtp_port))
            assert await wait_for(lambda: events.of("dtmf")), events.events
            assert [e["digit"] for e in events.of("dtmf")] == ["5"]

            # DTMF to the caller through the API: RFC 4733 packets (PT 101) arrive.
            before = len(peer.rtp.datagrams)
            r = await http.post(f"/calls/{peer.call_id}/dtmf", json={"digits": "1#"})
            assert r.status_code == 200, r.text
            assert r.json() == {"call_id": peer.call_id, "digits": "1#", "method": "rfc4733"}

            def keys_heard() -> set[int]:
                heard = set()
                for data, _ in peer.rtp.datagrams[before:]:
                    packet = RtpPacket.parse(data)
                    if packet.payload_type == 101:
                        heard.add(TelephoneEvent.parse(packet.payload).event)
                return heard

            assert await wait_for(lambda: keys_heard() == {1, 11}, 3), keys_heard()

            # Transfer: 409 or 501 without REFER support (never 500).
            r = await http.post(f"/calls/{peer.call_id}/transfer", json={"target": "sip:x@y"})
            if not hasattr(call, "transfer"):
                assert r.status_code == 501 and "not supported" in r.json()["detail"]

            r = await http.delete(f"/calls/{peer.call_id}")
            assert r.status_code == 200 and r.json()["end_reason"] == "local_bye", r.text
            assert await wait_for(lambda: peer.requests("BYE")), peer.messages()
            peer.answer_byes()
            assert await wait_for(lambda: events.of("ended")), events.events
            ended = (await http.get(f"/calls/{peer.call_id}")).json()
            assert ended["end_reason"] == "local_bye" and ended["state"] == "terminated"
            assert (await http.delete(f"/calls/{peer.call_id}")).status_code == 409
            assert (await http.get("/calls")).json()["count"] == 0
            kinds = [e["type"] for e in events.events if e.get("call_id") == peer.call_id]
            assert kinds[:2] == ["incoming", "answered"] and kinds[-1] == "ended", kinds
            assert events.of("ended")[0]["reason"] == "local_bye"
    finally:
        peer.close()
        await api.stop()
        await server.stop()


@pytest.mark.interop
async def test_dial_out_to_sipp_answered_and_hung_up_through_the_api():
    dialled: list[tuple[SIPCall, dict]] = []

    async def dial_handler(call: SIPCall, settings: dict) -> None:
        dialled.append((call, settings))
        await call.wait_ended()

    server, api = await running(None, dial_handler=dial_handler)
    try:
        async with (
            await start_sipp("uas_answer", "", calls=1, timeout=20) as uas,
            httpx.AsyncClient(base_url=api.url, timeout=5) as http,
            Events(api.url.replace("http", "ws") + "/events") as events,
        ):
            await asyncio.sleep(0.1)
            body = {
                "target": f"sip:alice@{uas.target}",
                "caller_id": "4930123",
                "display_name": "Bot",
                "headers": {"X-Campaign": "42"},
                "settings": {"system_prompt": "be brief", "voice": "v1"},
                "timeout": 10,
            }
            r = await http.post("/calls", json=body)
            assert r.status_code == 202, r.text
            call_id = r.json()["call_id"]
            assert r.json()["state"] in ("calling", "early", "confirmed")
            assert await wait_for(lambda: dialled, 5), events.events
            call, settings = dialled[0]
            assert call.call_id == call_id
            assert settings == {"system_prompt": "be brief", "voice": "v1"}
            view = (await http.get(f"/calls/{call_id}")).json()
            assert view["direction"] == "outbound" and view["state"] == "confirmed"
            assert view["codec"] == "PCMU"
            await asyncio.sleep(0.3)
            r = await http.delete(f"/calls/{call_id}")
            assert r.status_code == 200, r.text
            result = await uas.wait(timeout=10)
            assert result.ok, result.summary()
            (invite,) = [m for m in result.messages("received") if m.startswith("INVITE")]
            assert "X-Campaign: 42" in invite and '"Bot"' in invite and "4930123" in invite
            assert await wait_for(lambda: events.of("ended", call_id)), events.events
            kinds = [e["type"] for e in events.events if e.get("call_id") == call_id]
            assert kinds == ["dialing", "answered", "ended"], kinds
    finally:
        await api.stop()
        await server.stop()


async def test_dial_out_refused_target_is_400_and_rejected_call_ends():
    server, api = await running(None)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
            r = await http.post("/calls", json={"target": "mailto:bob@example.com"})
            assert r.status_code in (400, 502), r.text
            assert "detail" in r.json()
    finally:
        await api.stop()
        await server.stop()


async def test_malformed_bodies_are_422_with_field_errors():
    server, api = await running(Recorder())
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
            bad_dials: list[Any] = [
                {},
                {"target": ""},
                {"target": "sip:a b@c"},
                {"target": "sip:a@b", "timeout": -1},
                {"target": "sip:a@b", "headers": {"X-Evil": "a\r\nVia: x"}},
                {"target": "sip:a@b", "headers": {"Call-ID": "mine"}},
                {"target": "sip:a@b", "headers": {"Bad Name": "x"}},
                {"target": "sip:a@b", "unknown": 1},
                {"target": 42},
                ["sip:a@b"],
            ]
            for body in bad_dials:
                r = await http.post("/calls", json=body)
                assert r.status_code == 422, (body, r.status_code, r.text)
                assert isinstance(r.json()["detail"], list), r.text
            r = await http.post(
                "/calls", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert r.status_code == 422
            for body in ({}, {"digits": "x"}, {"digits": "1" * 33}, {"digits": "1", "method": "?"}):
                r = await http.post("/calls/any/dtmf", json=body)
                assert r.status_code == 422, (body, r.text)
            for body in ({}, {"target": "sip:a@b c"}, {"target": "sip:a@b", "timeout": 0}):
                r = await http.post("/calls/any/transfer", json=body)
                assert r.status_code == 422, (body, r.text)
    finally:
        await api.stop()
        await server.stop()


async def test_bearer_token_required_when_set_and_off_localhost():
    with pytest.raises(ValueError, match="SIP_API_TOKEN"):
        check_api_binding("0.0.0.0", None)
    with pytest.raises(ValueError, match="SIP_API_TOKEN"):
        check_api_binding("192.0.2.10", "")
    check_api_binding("0.0.0.0", TOKEN)
    check_api_binding("127.0.0.1", None)
    check_api_binding("::1", None)
    check_api_binding("localhost", None)
    args = build_parser().parse_args(["--api-port", "8080", "--api-host", "0.0.0.0"])
    with pytest.raises(ConfigError, match="needs SIP_API_TOKEN"):
        parse_config(args, {})
    config = parse_config(args, {"SIP_API_TOKEN": TOKEN})
    assert (config.api_host, config.api_port, config.api_token) == ("0.0.0.0", 8080, TOKEN)
    with pytest.raises(ValueError):
        OperationsAPI(await start_server(None), host="0.0.0.0")

    server, api = await running(Recorder(), token=TOKEN)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
            for path in ("/calls", "/calls/x", "/metrics"):
                r = await http.get(path)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
                r = await http.get(path, headers={"Authorization": "Bearer wrong"})
                assert r.status_code == 401, r.text
            ok = {"Authorization": f"Bearer {TOKEN}"}
            assert (await http.get("/calls", headers=ok)).status_code == 200
            assert (await http.get("/metrics", headers=ok)).status_code == 200
            assert (await http.post("/calls", json={})).status_code in (401, 422)
            assert (await http.delete("/calls/x")).status_code == 401
            # Health checks stay open for load balancers and orchestrators.
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/ready")).status_code == 200
        ws_url = api.url.replace("http", "ws") + "/events"
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(ws_url):
                pass
        async with websockets.connect(
            ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ):
            pass
        async with websockets.connect(f"{ws_url}?token={TOKEN}"):
            pass
    finally:
        await api.stop()
        await server.stop()


@pytest.mark.interop
@pytest.mark.slow
async def test_runner_api_dials_out_and_runs_the_bot_with_the_settings():
    from tests.helpers.instance import Instance

    async with (
        Instance(api=True) as inst,
        await start_sipp("uas_answer", "", calls=1, timeout=20) as uas,
        httpx.AsyncClient(base_url=inst.api, timeout=5) as http,
    ):
        # instance_bot.py's bot hangs up after body["hangup_after"] seconds.
        body = {"target": f"sip:alice@{uas.target}", "settings": {"hangup_after": 1.0}}
        r = await http.post("/calls", json=body)
        assert r.status_code == 202, r.text
        call_id = r.json()["call_id"]
        result = await uas.wait(timeout=10)
        assert result.ok, result.summary()  # the bot's BYE after 1 s ended the call
        assert await wait_for(lambda: "ended (local_bye)" in inst.log, 5), inst.log[-2000:]
        view = (await http.get(f"/calls/{call_id}")).json()
        assert view["end_reason"] == "local_bye" and 0.8 < view["duration_s"] < 3
