"""DTMF by SIP INFO: the bodies, the merge with RFC 4733, and both directions between servers.

A key press may arrive as an INFO (``application/dtmf-relay`` or
``application/dtmf``), as RFC 4733 events, or both for the same press
(linphone, some PBXs): the call reports it once. Sending by INFO
(``call.send_info_dtmf``, ``SIPParams(dtmf_mode="info")``) reaches the far
end's DTMF handlers.
"""

from __future__ import annotations

import asyncio

import pytest
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import OutputDTMFFrame

from pipecat_sip.call import SIPCall
from pipecat_sip.sip.info import DtmfMerger, dtmf_relay_body, parse_dtmf_info
from pipecat_sip.transport import SIPParams, SIPTransport
from tests.helpers.callctl import start_beside
from tests.helpers.server import start_server, wait_for


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("Application/DTMF-Relay", b"Signal= #\nDuration= 250", ("#", 250)),
        ("application/dtmf-relay", b"Signal=10\r\nDuration=100\r\n", ("*", 100)),
        ("application/dtmf-relay", b"Signal=11\r\n", ("#", None)),
        ("application/dtmf-relay", b"Signal=a\r\n", ("A", None)),
        ("application/dtmf", b"7", ("7", None)),
        ("application/dtmf", b"11\r\n", ("#", None)),
        ("application/dtmf-relay", b"Signal=X\r\n", None),
        ("application/dtmf-relay", b"Duration=100\r\n", None),
        ("application/sdp", b"Signal=5", None),
        (None, b"Signal=5", None),
        ("application/dtmf-relay", b"Signal=5" + b" " * 600, None),
        ("application/dtmf-relay", b"\xff\xfe", None),
    ],
)
def test_info_bodies(content_type, body, expected):
    assert parse_dtmf_info(content_type, body) == expected


def test_relay_body_round_trip_and_limits():
    body = dtmf_relay_body("9", 120)
    assert body == b"Signal=9\r\nDuration=120\r\n"
    assert parse_dtmf_info("application/dtmf-relay", body) == ("9", 120)
    with pytest.raises(ValueError):
        dtmf_relay_body("x")
    with pytest.raises(ValueError):
        dtmf_relay_body("1", 5)


def test_merger_reports_each_press_once():
    merge = DtmfMerger(window_s=1.0)
    # A press sent both ways, in either order, is one press.
    assert merge.accept("5", "info", 0.00) and not merge.accept("5", "rfc4733", 0.05)
    assert merge.accept("6", "rfc4733", 0.50) and not merge.accept("6", "info", 0.52)
    # Two presses of one key, each sent both ways, are two presses.
    assert merge.accept("7", "info", 1.00) and not merge.accept("7", "rfc4733", 1.02)
    assert merge.accept("7", "info", 1.30) and not merge.accept("7", "rfc4733", 1.33)
    # One source alone: every press counts, however close.
    assert merge.accept("8", "rfc4733", 2.0) and merge.accept("8", "rfc4733", 2.1)
    # The other source's report after the window is a new press.
    assert merge.accept("9", "info", 3.0) and merge.accept("9", "rfc4733", 4.01)
    assert merge.duplicates == 4


class KeyRecorder:
    def __init__(self) -> None:
        self.calls: list[SIPCall] = []
        self.keys: dict[str, list[str]] = {}

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        self.keys[call.call_id] = keys = []
        call.add_dtmf_handler(keys.append)
        await call.answer()
        await call.wait_ended()


async def test_info_and_rfc4733_for_the_same_presses_arrive_once_in_order():
    bot = KeyRecorder()
    server = await start_server(bot)
    caller = await start_beside(server)
    try:
        call = await caller.call(f"sip:bot@127.0.0.1:{server.port}", timeout=5)
        assert await wait_for(lambda: bot.calls and bot.calls[0].established)
        assert call.media is not None and call.negotiated.telephone_event_pt is not None
        for key in "123#":
            call.send_info_dtmf(key, 100)
            call.media.send_dtmf(key, 100)  # the same press as RFC 4733 too
            await asyncio.sleep(0.3)
        keys = bot.keys[bot.calls[0].call_id]
        assert await wait_for(lambda: len(keys) >= 4)
        await asyncio.sleep(0.5)
        assert keys == list("123#")
        assert bot.calls[0].media is not None and bot.calls[0].media.stats.dtmf_received == 4
        with pytest.raises(ValueError):
            call.send_info_dtmf("x")
        await call.hangup()
        with pytest.raises(RuntimeError):
            call.send_info_dtmf("1")
    finally:
        await caller.stop()
        await server.stop()


async def test_transport_sends_dtmf_frames_by_info_when_asked():
    bot = KeyRecorder()
    server = await start_server(bot)
    caller = await start_beside(server)
    try:
        call = await caller.call(f"sip:bot@127.0.0.1:{server.port}", timeout=5)
        assert await wait_for(lambda: bot.calls and bot.calls[0].established)
        transport = SIPTransport(call, SIPParams(dtmf_mode="info"))
        frame = OutputDTMFFrame(button=KeypadEntry.FOUR)
        await transport.output()._write_dtmf_native(frame)
        keys = bot.keys[bot.calls[0].call_id]
        assert await wait_for(lambda: keys == ["4"])
        assert bot.calls[0].media.stats.dtmf_received == 0  # no RFC 4733 went out
        await call.hangup()
    finally:
        await caller.stop()
        await server.stop()


async def test_info_key_presses_become_input_dtmf_frames_once():
    from pipecat.frames.frames import InputDTMFFrame
    from pipecat.tests.utils import SleepFrame, run_test

    bot = KeyRecorder()
    server = await start_server(bot)
    caller = await start_beside(server)
    try:
        call = await caller.call(f"sip:bot@127.0.0.1:{server.port}", timeout=5)
        assert await wait_for(lambda: bot.calls and bot.calls[0].established)
        transport = SIPTransport(bot.calls[0], SIPParams(audio_out_enabled=False))

        async def press() -> None:
            await asyncio.sleep(0.3)
            for key in "90*":
                call.send_info_dtmf(key)
                call.media.send_dtmf(key, 60)
                await asyncio.sleep(0.25)

        presser = asyncio.create_task(press())
        down, _ = await run_test(transport.input(), frames_to_send=[SleepFrame(1.6)])
        await presser
        keys = [f.button for f in down if isinstance(f, InputDTMFFrame)]
        assert keys == [KeypadEntry.NINE, KeypadEntry.ZERO, KeypadEntry.STAR]
        await call.hangup()
    finally:
        await caller.stop()
        await server.stop()
