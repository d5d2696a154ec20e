"""Interop: a PJSIP call to the real SIPServer over an impaired path (tests/helpers/relay.py).

``tc netem`` is not available here, so the bad network is a UDP relay on
127.0.0.2. Our server binds 127.0.0.1 but writes 127.0.0.2 into Contact,
Via and SDP (``public_address``, as behind a 1:1 NAT), and a relay on
127.0.0.2 forwards each port to 127.0.0.1: a clean one for SIP, and for
RTP one per call on the call's port, with loss, delay, jitter, reordering
and duplication in both directions. PJSIP sends its RTP to 127.0.0.2 (our
SDP), our server latches onto the relay (the source of what it receives),
so both directions cross the impairments. The call must complete, the echo
must be heard, RFC 4733 digits must arrive once and in order, and the
relay's counters must show that it really did impair the media.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from pipecat_sip.call import SIPCall
from tests.helpers.audio import (
    dominant_frequency,
    read_wav,
    rms,
    tone,
    tone_energy_ratio,
    write_wav,
)
from tests.helpers.echo import EchoBot
from tests.helpers.pjsua import Pjsua, require_pjsua2
from tests.helpers.relay import Impairment, UdpRelay
from tests.helpers.server import start_server, wait_for

pytestmark = pytest.mark.interop

PUBLIC = "127.0.0.2"
BAD_NETWORK = Impairment(loss=0.05, delay_ms=30, jitter_ms=20, reorder=0.05, duplicate=0.02)


class RelayedEcho(EchoBot):
    """Echo bot that puts an impairing relay in front of each call's RTP port first."""

    def __init__(self, impairment: Impairment) -> None:
        super().__init__()
        self.impairment = impairment
        self.relays: list[UdpRelay] = []

    async def __call__(self, call: SIPCall) -> None:
        port = call.local_rtp_port
        relay = UdpRelay(
            host=PUBLIC,
            port=port,
            target=("127.0.0.1", port),
            a_to_b=self.impairment,
            b_to_a=self.impairment,
            seed=1234 + len(self.relays),
        )
        await relay.start()
        self.relays.append(relay)
        await super().__call__(call)

    def close(self) -> None:
        for relay in self.relays:
            relay.close()


async def test_call_over_lossy_jittery_path(tmp_path: Path):
    require_pjsua2()
    bot = RelayedEcho(BAD_NETWORK)
    # No silence before the caller's first packet: our first RTP then goes to
    # where we latched (the relay), never straight to PJSIP's SDP address,
    # which PJSIP would latch onto, leaving the relay out of the path.
    server = await start_server(bot, public_address=PUBLIC, send_silence=False)
    sip_relay = UdpRelay(host=PUBLIC, port=server.port, target=("127.0.0.1", server.port))
    lead = np.zeros(int(0.3 * 8000), dtype=np.int16)
    wav = write_wav(tmp_path / "tone.wav", np.concatenate([lead, tone(1000, 8.0)]), 8000)
    heard = tmp_path / "heard.wav"
    try:
        await sip_relay.start()
        async with Pjsua(tmp_path / "pj", codecs=["PCMU/8000"]) as pj:
            call = await pj.call(f"sip:bot@{PUBLIC}:{server.port}", play=wav, record=heard)
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            media = await pj.wait_event("media_state", call=call, status="active")
            assert media["remote_rtp"] == f"{PUBLIC}:{bot.calls[0].local_rtp_port}", media
            await asyncio.sleep(1.5)
            await pj.send_dtmf(call, "159")
            await asyncio.sleep(2.0)
            await pj.hangup(call)
            await pj.wait_call_state(call, "DISCONNECTED", timeout=5)
            await pj.wait_event("recording_closed", call=call, timeout=5)

        assert await wait_for(lambda: len(bot.ended) == 1 and bot.finished == 1)
        sip_call = bot.calls[0]
        assert bot.ended[sip_call.call_id] == "remote_bye" and not bot.errors
        assert bot.digits(0) == ["1", "5", "9"]

        stats = bot.relays[0].stats
        for direction in (stats.a_to_b, stats.b_to_a):
            assert direction.received > 100, stats  # 20 ms packets for ~3.5 s
            assert direction.lost > 0 and direction.reordered > 0, stats
            assert direction.delayed > 0 and direction.queue_full == 0, stats
        # Our server latched onto the relay: its RTP went through it, not straight to PJSIP.
        assert stats.b_to_a.forwarded > 100, stats
        assert sip_call.media.stats.errors == 0

        samples, rate = read_wav(heard)
        echo = samples[int(1.0 * rate) : int(3.5 * rate)]
        ratio = tone_energy_ratio(echo, rate, 1000)
        assert ratio > 0.8 and rms(echo) > 800, (
            f"1 kHz share {ratio:.3f}, rms {rms(echo):.0f}, "
            f"dominant {dominant_frequency(echo, rate):.0f} Hz; relay {stats}"
        )
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        sip_relay.close()
        bot.close()
        await server.stop()


# --- the relay itself ---------------------------------------------------------------------


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.received.append(data)


async def relay_run(impairment: Impairment, count: int = 400, seed: int = 3) -> tuple:
    """Send ``count`` numbered datagrams from A through a relay to B; return (stats, order)."""
    loop = asyncio.get_running_loop()
    b_transport, b = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    a_transport, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    relay = UdpRelay(
        target=b_transport.get_extra_info("sockname")[:2], a_to_b=impairment, seed=seed
    )
    try:
        await relay.start()
        for i in range(count):
            a_transport.sendto(i.to_bytes(4, "big"), relay.address)
            if i % 20 == 19:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        return relay.stats.a_to_b, [int.from_bytes(d, "big") for d in b.received]
    finally:
        relay.close()
        a_transport.close()
        b_transport.close()


async def test_relay_counts_what_it_did_and_is_repeatable():
    imp = Impairment(loss=0.1, jitter_ms=5, reorder=0.1, duplicate=0.05, delay_ms=5)
    stats, order = await relay_run(imp)
    assert stats.received == 400 and stats.queue_full == 0
    assert stats.forwarded == len(order) == 400 - stats.lost + stats.duplicated
    assert 20 < stats.lost < 60 and stats.reordered > 10 and stats.duplicated > 5, stats
    assert order != sorted(order), "nothing was reordered"
    assert len(set(order)) == 400 - stats.lost  # every survivor arrived, duplicates twice
    again, _ = await relay_run(imp)  # the same seed draws the same fates
    assert (again.lost, again.reordered, again.duplicated) == (
        stats.lost,
        stats.reordered,
        stats.duplicated,
    )


async def test_relay_queue_is_bounded():
    stats, order = await relay_run(Impairment(delay_ms=100, max_queue=8), count=100)
    assert stats.queue_full > 0 and stats.forwarded == len(order) <= 100 - stats.queue_full
    assert stats.forwarded + stats.queue_full == 100


def test_impairment_rejects_bad_values():
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(jitter_ms=-1)
    with pytest.raises(ValueError):
        Impairment(max_queue=0)
