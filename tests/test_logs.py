"""JSON logs for log shippers (issue 16 item 5): one JSON object per line, the Call-ID a field."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
from loguru import logger

from pipecat_sip.logs import configure_logging
from pipecat_sip.runner import ConfigError, build_parser, parse_config
from tests.helpers.instance import Instance
from tests.helpers.server import start_server, wait_for
from tests.test_robustness import RawPeer, UdpSocket


@pytest.fixture
def json_log():
    out = io.StringIO()
    configure_logging("json", "DEBUG", sink=out)
    yield out
    logger.remove()
    logger.configure(patcher=lambda r: None)
    logger.add(sys.stderr)


def records(out: io.StringIO) -> list[dict]:
    return [json.loads(line)["record"] for line in out.getvalue().splitlines()]


async def test_json_lines_carry_the_call_id_of_the_call_they_are_about(json_log):
    async def handler(call):
        logger.info("handler: answering")
        await call.answer()

        async def helper():  # a task the bot starts: it inherits the call's context
            logger.info("helper task running")

        await asyncio.ensure_future(helper())
        await call.wait_ended()

    server = await start_server(handler)
    peers = [await RawPeer.open(server) for _ in range(2)]
    try:
        for peer in peers:
            await peer.establish()
        assert await wait_for(lambda: len(server.calls) == 2)
        await asyncio.sleep(0.2)
        for peer in peers:
            peer.send_bye()
        assert await wait_for(lambda: not server.calls)
        await asyncio.sleep(0.1)
    finally:
        for peer in peers:
            peer.close()
        await server.stop()
    lines = records(json_log)
    assert lines and all("call_id" in r["extra"] for r in lines)
    listening = [r for r in lines if "SIP server listening" in r["message"]]
    assert listening and listening[0]["extra"]["call_id"] is None
    for peer in peers:
        mine = [r for r in lines if r["extra"]["call_id"] == peer.call_id]
        messages = [r["message"] for r in mine]
        assert any(": incoming from" in m for m in messages), messages
        assert any(": ended (remote_bye)" in m for m in messages), messages
        assert "handler: answering" in messages and "helper task running" in messages
        # Every line naming this call is tagged with it, never with the other call.
        for r in lines:
            if f"SIPCall#{peer.call_id}" in r["message"]:
                assert r["extra"]["call_id"] == peer.call_id, r
    assert {r["level"]["name"] for r in lines} <= {"DEBUG", "INFO", "WARNING"}


def test_log_format_setting():
    parser = build_parser()
    assert parse_config(parser.parse_args([]), {}).log_format == "text"
    assert parse_config(parser.parse_args([]), {"SIP_LOG_FORMAT": "JSON"}).log_format == "json"
    assert parse_config(parser.parse_args(["--log-format", "json"]), {}).log_format == "json"
    with pytest.raises(ConfigError, match="SIP_LOG_FORMAT: 'xml' is not one of text, json"):
        parse_config(parser.parse_args([]), {"SIP_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError):
        configure_logging("xml")


@pytest.mark.slow
async def test_runner_writes_one_json_object_per_line():
    async with Instance(api=False, env={"SIP_LOG_FORMAT": "json"}) as inst:
        peer = RawPeer(await UdpSocket.open(), await UdpSocket.open(), inst)
        try:
            await peer.establish()
            await inst.wait_line(": incoming from", 5)
            peer.send_bye()
            await inst.wait_line("ended (remote_bye)", 5)
        finally:
            peer.close()
    text = [line for line in inst.lines if line.strip()]
    # Pipecat logs its banner when it is imported, before the runner sets the
    # format up; every line from then on is one JSON object.
    assert "Pipecat" in text[0] and not text[0].startswith("{")
    lines = [json.loads(line) for line in text[1:]]
    incoming = [x["record"] for x in lines if ": incoming from" in x["record"]["message"]]
    assert incoming and incoming[0]["extra"]["call_id"] == peer.call_id
