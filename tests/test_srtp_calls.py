"""SRTP in real calls between two in-process SIPServers on loopback (issue 12 item 5).

Server A places calls to server B over UDP. Both use the lab override
(``srtp_insecure_signaling=True``) unless a test is about the TLS-only rule:
no TLS transport exists to carry SDES keys safely otherwise. The tests
check the SDP on each side (``RTP/SAVP``, ``a=crypto``), that media flows
both ways under SRTP (a tone heard, every packet authenticated), the
policies (off / optional / required, the plain second offer after 488), the
TLS-only rule, per-call keys from the injectable rng, re-offers keeping or
changing keys, and a stranger's packets counted and dropped. SIPp places
delayed-offer calls (INVITE without SDP): our offer in the 200 is SRTP under
"required" (the RTP we send then authenticates under our key) and plain
under "optional".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct

import numpy as np
import pytest

from pipecat_sip.call import CallFailed
from pipecat_sip.codecs import PCMU
from pipecat_sip.rtp.srtp import SrtpContext
from pipecat_sip.runner import ConfigError, parse_config
from pipecat_sip.sdes import CryptoAttribute, KeyParam, crypto_attributes
from pipecat_sip.sdp import SessionDescription
from pipecat_sip.server import SIPServer
from tests.helpers.peers import require_binary
from tests.helpers.server import Recorder, start_server, wait_for
from tests.helpers.sipp import run_sipp

LAB = {"srtp_insecure_signaling": True}


def tone(seconds: float, hz: float = 1000.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def tone_share(chunks: list[bytes], hz: float = 1000.0) -> float:
    """Share of the received signal's energy within 50 Hz of ``hz``."""
    pcm = np.frombuffer(b"".join(chunks), "<i2").astype(float)
    if pcm.size < 800:
        return 0.0
    spectrum = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(pcm.size, 1 / 8000)
    return float(spectrum[np.abs(freqs - hz) < 50].sum() / spectrum.sum())


@contextlib.asynccontextmanager
async def servers(a_kwargs: dict, b_kwargs: dict, recorder: Recorder | None = None):
    recorder = recorder or Recorder()
    base = random.randrange(20000, 40000, 2)  # disjoint ranges: media to our own ports is refused
    b = await start_server(recorder, rtp_port_range=(base, base + 199), **b_kwargs)
    a = await start_server(None, rtp_port_range=(base + 200, base + 399), **a_kwargs)
    try:
        yield a, b, recorder
    finally:
        await a.stop(timeout=0.5)
        await b.stop(timeout=0.5)


def target(server: SIPServer) -> str:
    return f"sip:bot@127.0.0.1:{server.port}"


def crypto_lines(sdp: SessionDescription) -> list:
    return crypto_attributes(sdp.media[0])[0]


async def talk(caller_call, answerer_call, recorder: Recorder, seconds: float = 0.6):
    """Each side sends a tone (1 kHz from A, 500 Hz from B); returns what A heard."""
    heard_by_a: list[bytes] = []
    caller_call.media.on_audio = heard_by_a.append
    caller_call.media.send_audio(tone(seconds))
    answerer_call.media.send_audio(tone(seconds, 500.0))
    await asyncio.sleep(seconds + 0.3)
    return heard_by_a, recorder.audio[answerer_call.call_id]


async def test_required_both_ways_media_is_srtp_and_heard():
    async with servers({"srtp": "required", **LAB}, {"srtp": "required", **LAB}) as (a, b, rec):
        call = await a.call(target(b), timeout=5)
        assert await wait_for(lambda: rec.calls and rec.calls[0].media is not None)
        answered = rec.calls[0]
        offer, answer = call.local_sdp, answered.local_sdp
        assert offer.media[0].proto == "RTP/SAVP" and answer.media[0].proto == "RTP/SAVP"
        assert [c.suite for c in crypto_lines(offer)] == [
            "AES_CM_128_HMAC_SHA1_80",
            "AES_CM_128_HMAC_SHA1_32",
        ]
        [chosen] = crypto_lines(answer)
        assert (chosen.tag, chosen.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
        assert call.media.srtp is not None and answered.media.srtp is not None
        heard_a, heard_b = await talk(call, answered, rec)
        assert tone_share(heard_b[5:], 1000) > 0.8, "B did not hear A's tone"
        assert tone_share(heard_a[5:], 500) > 0.8, "A did not hear B's tone"
        for media in (call.media, answered.media):
            s = media.srtp_stats
            assert s.rtp_protected > 20 and s.rtp_unprotected > 20
            assert s.auth_failures == s.replays == s.other == 0
            assert media.stats.packets_received == s.rtp_unprotected
        assert "inline:" not in repr(call.media.srtp) + repr(rec.calls[0].media.srtp)
        await call.hangup()
        assert await wait_for(lambda: not a.calls and not b.calls and b.ports.in_use == 0)
        assert a.ports.in_use == 0


async def test_required_refuses_a_plain_offer_with_488():
    async with servers({"srtp": "off"}, {"srtp": "required", **LAB}) as (a, b, rec):
        with pytest.raises(CallFailed) as failed:
            await a.call(target(b), timeout=5)
        assert failed.value.status_code == 488
        assert not rec.calls
        assert await wait_for(lambda: b.ports.in_use == 0 and a.ports.in_use == 0)


async def test_off_refuses_an_srtp_only_offer_and_optional_retries_plain():
    async with servers({"srtp": "optional", **LAB}, {"srtp": "off"}) as (a, b, rec):
        call = await a.call(target(b), timeout=5)
        # The first INVITE (RTP/SAVP) got 488; this is the second call, plain.
        assert call.local_sdp.media[0].proto == "RTP/AVP" and not crypto_lines(call.local_sdp)
        assert call.media.srtp is None
        assert await wait_for(lambda: rec.calls and rec.calls[0].media is not None)
        assert len(rec.calls) == 1 and rec.calls[0].media.srtp is None
        heard_a, heard_b = await talk(call, rec.calls[0], rec)
        assert tone_share(heard_b[5:], 1000) > 0.8 and tone_share(heard_a[5:], 500) > 0.8
        await call.hangup()
        assert await wait_for(lambda: a.ports.in_use == 0 and b.ports.in_use == 0)


async def test_optional_answers_srtp_when_offered_and_plain_when_not():
    async with servers({"srtp": "required", **LAB}, {"srtp": "optional", **LAB}) as (a, b, rec):
        call = await a.call(target(b), timeout=5)
        assert await wait_for(lambda: rec.calls and rec.calls[0].media is not None)
        assert rec.calls[0].media.srtp is not None and call.media.srtp is not None
        await call.hangup()
        a.manager.srtp = "off"
        call = await a.call(target(b), timeout=5)
        assert await wait_for(lambda: len(rec.calls) == 2 and rec.calls[1].media is not None)
        assert rec.calls[1].media.srtp is None and call.media.srtp is None
        assert rec.calls[1].local_sdp.media[0].proto == "RTP/AVP"
        await call.hangup()


async def test_sdes_keys_only_over_tls_unless_the_lab_override():
    # Required without the override: inbound 488, outbound refused before any INVITE.
    async with servers({"srtp": "required", **LAB}, {"srtp": "required"}) as (a, b, rec):
        with pytest.raises(CallFailed) as failed:
            await a.call(target(b), timeout=5)
        assert failed.value.status_code == 488 and not rec.calls
        a.manager.srtp_insecure_signaling = False
        with pytest.raises(CallFailed, match="not TLS"):
            await a.call(target(b), timeout=5)
        assert a.ports.in_use == 0
    # Optional without the override: a plain offer, no keys on the wire.
    async with servers({"srtp": "optional"}, {"srtp": "optional"}) as (a, b, rec):
        call = await a.call(target(b), timeout=5)
        assert call.local_sdp.media[0].proto == "RTP/AVP"
        assert b"a=crypto" not in call.local_sdp.serialize()
        assert call.media.srtp is None
        await call.hangup()


async def test_keys_per_call_from_the_injected_rng():
    def offers(seed: int) -> list[bytes]:
        return [c.key.key_salt for c in crypto_lines(seen[seed])]

    seen: dict = {}
    for seed in (7, 7, 8):
        async with servers(
            {"srtp": "required", "srtp_rng": random.Random(seed), **LAB},
            {"srtp": "required", "srtp_rng": random.Random(seed + 100), **LAB},
        ) as (a, b, rec):
            first = await a.call(target(b), timeout=5)
            second = await a.call(target(b), timeout=5)
            keys_1 = [c.key.key_salt for c in crypto_lines(first.local_sdp)]
            keys_2 = [c.key.key_salt for c in crypto_lines(second.local_sdp)]
            assert len(set(keys_1 + keys_2)) == 4, "keys repeat across suites or calls"
            assert await wait_for(lambda: len(rec.calls) == 2)
            answer_keys = {crypto_lines(c.local_sdp)[0].key.key_salt for c in rec.calls}
            assert len(answer_keys) == 2 and not answer_keys & set(keys_1 + keys_2)
            seen.setdefault(seed, []).append(keys_1)
            await first.hangup()
            await second.hangup()
    assert seen[7][0] == seen[7][1], "the same seed gave other keys"
    assert seen[7][0] != seen[8][0]


def reoffer(offer: SessionDescription, *, version: int, key: bytes | None = None, plain=False):
    """The caller's offer again (a re-INVITE's), optionally re-keyed or made plain."""
    sdp = SessionDescription.parse(offer.serialize())
    sdp.origin.session_version = version
    md = sdp.media[0]
    cryptos = crypto_lines(sdp)
    md.attributes = [(n, v) for n, v in md.attributes if n != "crypto"]
    if plain:
        md.proto = "RTP/AVP"
        return sdp.serialize()
    for c in cryptos:
        k = KeyParam(key) if key is not None and c.tag == 1 else c.key
        md.attributes.append(("crypto", CryptoAttribute(c.tag, c.suite, (k,)).serialize()))
    return sdp.serialize()


async def test_reoffer_keeps_keys_takes_a_new_peer_key_and_refuses_plain():
    async with servers({"srtp": "required", **LAB}, {"srtp": "required", **LAB}) as (a, b, rec):
        call = await a.call(target(b), timeout=5)
        assert await wait_for(lambda: rec.calls and rec.calls[0].media is not None)
        answered = rec.calls[0]
        manager = b.manager
        context = answered.media.srtp
        our_key = crypto_lines(answered.local_sdp)[0].key.key_salt
        # The same offer again (e.g. a session refresh): same keys, same context.
        body = manager._answer_reoffer(answered, reoffer(call.local_sdp, version=1))
        again = SessionDescription.parse(body)
        assert crypto_lines(again)[0].key.key_salt == our_key
        assert answered.media.srtp is context
        unprotected = context.stats.rtp_unprotected
        await asyncio.sleep(0.2)
        assert context.stats.rtp_unprotected > unprotected and context.stats.auth_failures == 0
        # A plain re-offer in an SRTP call: 488, nothing changed.
        with pytest.raises(ValueError, match="SRTP"):
            manager._answer_reoffer(answered, reoffer(call.local_sdp, version=2, plain=True))
        assert answered.media.srtp is context
        # The peer re-keys: we take its new key (A still sends with its old one,
        # so its packets now fail authentication: proof the key changed).
        manager._answer_reoffer(answered, reoffer(call.local_sdp, version=3, key=bytes(30)))
        assert answered.media.srtp is context
        failures = context.stats.auth_failures
        await asyncio.sleep(0.2)
        assert context.stats.auth_failures > failures
        await call.hangup()


async def test_a_strangers_packets_are_counted_not_crashed_on():
    async with servers({"srtp": "required", **LAB}, {"srtp": "required", **LAB}) as (a, b, rec):
        call = await a.call(target(b), timeout=5)
        assert await wait_for(lambda: rec.calls and rec.calls[0].media is not None)
        answered = rec.calls[0]
        port = answered.local_rtp_port
        rng = random.Random(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            attacker.bind(("127.0.0.1", 0))
            for seq in range(300):  # forged SRTP, plain RTP, and junk, to RTP and RTCP
                header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xBAD)
                attacker.sendto(header + rng.randbytes(170), ("127.0.0.1", port))
                attacker.sendto(header + PCMU.encode(tone(0.02)), ("127.0.0.1", port))
                attacker.sendto(rng.randbytes(60), ("127.0.0.1", port + 1))
                if seq % 50 == 0:
                    await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        s = answered.media.srtp_stats
        assert s.auth_failures >= 500, s  # the attacker is on the peer's host: crypto runs
        assert s.rtcp_unprotected == 0
        assert not answered.ended and not call.ended
        assert answered.media.remote_addr == call.media.local_addr[:2]  # not hijacked
        before = s.rtp_unprotected
        await asyncio.sleep(0.2)
        assert s.rtp_unprotected > before  # the real peer still gets through
        await call.hangup()


def test_runner_reads_sip_srtp_and_refuses_a_bad_value():
    config = parse_config(argparse.Namespace(), {"SIP_SRTP": "Required"})
    assert config.srtp == "required" and not config.srtp_insecure_signaling
    config = parse_config(
        argparse.Namespace(srtp="optional", srtp_insecure_signaling="yes"), {"SIP_SRTP": "off"}
    )
    assert config.srtp == "optional" and config.srtp_insecure_signaling
    assert parse_config(argparse.Namespace(), {}).srtp == "off"
    with pytest.raises(ConfigError) as bad:
        parse_config(argparse.Namespace(), {"SIP_SRTP": "always"})
    assert str(bad.value) == "SIP_SRTP: 'always' is not one of off, optional, required"
    with pytest.raises(ConfigError, match="SIP_SRTP_INSECURE_SIGNALING"):
        parse_config(argparse.Namespace(), {"SIP_SRTP_INSECURE_SIGNALING": "maybe"})
    with pytest.raises(ValueError, match="srtp must be"):
        SIPServer(None, srtp="sometimes")


# --- delayed offer (INVITE without SDP), with SIPp as the caller --------------------------


class _Sink:
    """A UDP socket of the test on 127.0.0.1 that keeps every datagram."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.loop.add_reader(self.sock, lambda: self.received.append(self.sock.recv(2048)))

    def close(self) -> None:
        self.loop.remove_reader(self.sock)
        self.sock.close()


@pytest.mark.interop
async def test_delayed_offer_required_offers_srtp_and_sends_only_srtp():
    require_binary("sipp")
    peer_key = bytes(range(30))  # the key SIPp's ACK answers with (the scenario's default)
    rec = Recorder()
    server = await start_server(rec, srtp="required", **LAB)
    sink = _Sink()
    try:
        keys = {"rtp_port": str(sink.port), "hold_ms": "800"}
        result = await run_sipp("uac_delayed_offer_srtp.xml", f"127.0.0.1:{server.port}", keys=keys)
        assert result.ok, result.summary()
        assert await wait_for(lambda: list(rec.ended.values()) == ["remote_bye"])
        call = rec.calls[0]
        assert call.local_sdp.media[0].proto == "RTP/SAVP"  # our offer, in the 200
        assert call.media.srtp is not None and call.info.codec == "PCMA"
        ours = {c.tag: c.key.key_salt for c in crypto_lines(call.local_sdp)}[1]
        check = SrtpContext("AES_CM_128_HMAC_SHA1_80", local_key=peer_key, remote_key=ours)
        rtp = [d for d in sink.received if not 192 <= d[1] <= 223]
        assert len(rtp) >= 10
        assert all(check.unprotect_rtp(d) is not None for d in rtp), check
    finally:
        sink.close()
        await server.stop()


@pytest.mark.interop
async def test_delayed_offer_optional_offers_plain_rtp():
    require_binary("sipp")
    rec = Recorder()
    server = await start_server(rec, srtp="optional", **LAB)
    sink = _Sink()
    try:
        keys = {"rtp_port": str(sink.port), "hold_ms": "400"}
        # The scenario checks the 200's offer is "RTP/AVP 9 0 8 13 101" (plain).
        result = await run_sipp("uac_delayed_offer.xml", f"127.0.0.1:{server.port}", keys=keys)
        assert result.ok, result.summary()
        assert await wait_for(lambda: list(rec.ended.values()) == ["remote_bye"])
        assert rec.calls[0].media.srtp is None
        assert b"a=crypto" not in rec.calls[0].local_sdp.serialize()
    finally:
        sink.close()
        await server.stop()
