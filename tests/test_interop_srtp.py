"""Interop (issue 12 item 5): SRTP with SDES against baresip and PJSIP, checked on the wire.

Real peers on loopback, started and stopped by each test: baresip 1.0
(Debian baresip-core, its ``srtp`` module, account ``;mediaenc=srtp-mand``:
``RTP/SAVP`` with SDES) and PJSIP 2.15 (the pjsua2-python wheel, SRTP
mandatory). Our in-process SIPServer runs a real echo pipeline per call
(tests/helpers/echo.py).

Signalling is UDP: TLS is not on main yet, so the server runs with the lab
override ``srtp_insecure_signaling=True`` (without it SDES keys are only
exchanged over TLS, see pipecat_sip/calls.py). The SDP, keys included, is
therefore readable in the capture, and the tests use that: tshark records
the call's SIP and media ports on ``lo``, the ``a=crypto`` keys are read
from the captured SDP, and every captured RTP and RTCP datagram of the call
must authenticate and decrypt under its sender's key with a payload that
differs from its plaintext: no plain RTP in either direction.

Audio is checked both ways: the peer plays a tone, hears its echo through
our pipeline (after our SRTP, its SRTP, and back), our pipeline sees its
RFC 4733 digits; in the call we place, the peer receives our key press.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipecat_sip.rtp.srtp import SrtpContext
from pipecat_sip.sdes import crypto_attributes
from pipecat_sip.sdp import SDPParseError, SessionDescription
from tests.helpers.audio import dominant_frequency, read_wav, rms, tone_energy_ratio, write_wav
from tests.helpers.audio import tone as make_tone
from tests.helpers.baresip import Baresip, make_wav_for_baresip, require_module
from tests.helpers.capture import Capture, Datagram
from tests.helpers.echo import EchoBot
from tests.helpers.peers import require_binary
from tests.helpers.pjsua import Pjsua, require_pjsua2
from tests.helpers.server import start_server, wait_for

pytestmark = pytest.mark.interop

LAB = {"srtp_insecure_signaling": True}  # UDP signalling: TLS is not on main yet
TONE_HZ = 1000
LEAD_S = 1.0


@pytest.fixture
def baresip_srtp():
    require_binary("tshark")
    require_module("srtp")


def rtp_range() -> tuple[int, int]:
    """Our RTP ports, below the kernel's ephemeral ports (where the peers' come from).

    Media pointed at one of our own ports is refused, so the ranges must not meet.
    """
    base = random.randrange(20000, 32000, 2)
    return (base, base + 199)


# --- the capture check ----------------------------------------------------------------


def sdp_keys(datagrams: list[Datagram], sip_ports: set[int]) -> dict[int, list[tuple[str, bytes]]]:
    """Every SDP on the SIP ports: media port -> [(suite, key)] that party sends with."""
    keys: dict[int, list[tuple[str, bytes]]] = {}
    for d in datagrams:
        if d.src_port not in sip_ports and d.dst_port not in sip_ports:
            continue
        head, _, body = d.payload.partition(b"\r\n\r\n")
        if not body.startswith(b"v=0"):
            continue
        try:
            sdp = SessionDescription.parse(body)
        except SDPParseError:
            continue
        for md in sdp.media:
            cryptos, _ = crypto_attributes(md)
            for c in cryptos:
                keys.setdefault(md.port, []).append((c.suite_key, c.key.key_salt))
    return keys


def check_srtp_on_the_wire(
    datagrams: list[Datagram], sip_ports: set[int], media_ports: set[int]
) -> dict:
    """Authenticate every datagram the call's parties sent under the sender's SDES key.

    ``media_ports`` are the RTP ports of both parties' SDP; a datagram from
    RTP port P (RTCP: P + 1) is the SDP owner's, protected with the key in
    its SDP (RFC 4568: each side sends with its own key). Datagrams from
    other ports (the stranger's, other processes' on this loopback) are
    not the call's and are left out.

    Returns:
        ``{"rtp": Counter(port), "rtcp": Counter(port), "plain_rtcp": [...],
        "failed": [...], "keys": {...}}``: datagrams authenticated per
        sending party, plain RTCP compounds, datagrams that authenticated
        under no key.
    """
    keys = sdp_keys(datagrams, sip_ports)
    contexts: dict[int, list[SrtpContext]] = {}
    for port, found in keys.items():
        for suite, key in found:
            dummy = bytes(30) if key != bytes(30) else bytes(range(30))
            contexts.setdefault(port, []).append(
                SrtpContext(suite, local_key=dummy, remote_key=key)
            )
    result = {"rtp": Counter(), "rtcp": Counter(), "plain_rtcp": [], "failed": [], "keys": keys}
    senders = {p + offset: p for p in media_ports for offset in (0, 1)}
    for d in datagrams:
        port = senders.get(d.src_port)
        if port is None or len(d.payload) < 2:
            continue
        is_rtcp = 192 <= d.payload[1] <= 223
        for ctx in contexts.get(port, []):
            plain = ctx.unprotect_rtcp(d.payload) if is_rtcp else ctx.unprotect_rtp(d.payload)
            if plain is not None:
                start = 8 if is_rtcp else 12
                assert d.payload[start : len(plain)] != plain[start:], "not encrypted"
                result["rtcp" if is_rtcp else "rtp"][port] += 1
                break
        else:
            if is_rtcp and _is_plain_rtcp(d.payload):
                result["plain_rtcp"].append(d)
            else:
                result["failed"].append(d)
    return result


def _is_plain_rtcp(data: bytes) -> bool:
    """A well-formed plain RTCP compound (its length words add up, no SRTCP trailer)."""
    offset = 0
    while offset + 4 <= len(data):
        if data[offset] >> 6 != 2:
            return False
        offset += 4 * (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1)
    return offset == len(data)


def assert_no_plain_media(capture: Capture, result: dict, *, ours: int, theirs: int) -> None:
    """Both directions' RTP is all SRTP, our RTCP is all SRTCP; nothing failed to authenticate.

    Every frame tshark decodes as RTP from either party is one that
    authenticated as SRTP under its sender's key.
    """
    seen_by_tshark = capture.rtp_frames_by_port()
    for port in (ours, theirs):
        assert seen_by_tshark.get(port, 0) == result["rtp"][port], (port, seen_by_tshark)
    assert not result["failed"], [
        (d.src_port, d.dst_port, d.payload[:16].hex()) for d in result["failed"][:5]
    ]
    assert result["rtp"][ours] > 50 and result["rtp"][theirs] > 50, result["rtp"]
    assert result["rtcp"][ours] >= 1, result["rtcp"]  # our SR reports and the BYE, as SRTCP
    assert not [d for d in result["plain_rtcp"] if d.src_port == ours + 1]


def assert_tone(samples: np.ndarray, rate: int, freq_hz: float, what: str) -> None:
    assert samples.size >= rate // 2, f"{what}: only {samples.size / rate:.2f} s recorded"
    ratio = tone_energy_ratio(samples, rate, freq_hz)
    assert ratio > 0.8 and rms(samples) > 1000, (
        f"{what}: {freq_hz:.0f} Hz share {ratio:.3f}, rms {rms(samples):.0f}, "
        f"dominant {dominant_frequency(samples, rate):.0f} Hz"
    )


async def inject(port: int, count: int = 200) -> None:
    """A stranger on the peer's host floods our RTP and RTCP ports."""
    rng = random.Random(9)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for seq in range(count):
            header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xBAD5EED)
            sock.sendto(header + rng.randbytes(170), ("127.0.0.1", port))  # forged SRTP
            sock.sendto(header + bytes(160), ("127.0.0.1", port))  # plain RTP
            sock.sendto(bytes([0x80, 200]) + rng.randbytes(60), ("127.0.0.1", port + 1))
            if seq % 20 == 0:
                await asyncio.sleep(0.02)


# --- baresip --------------------------------------------------------------------------


async def test_baresip_calls_us_over_srtp_echo_dtmf_and_no_plain_rtp(baresip_srtp, tmp_path: Path):
    wav = make_wav_for_baresip(
        tmp_path / "tone.wav", freq_hz=TONE_HZ, lead_s=LEAD_S, call_seconds=9
    )
    bot = EchoBot()
    ports = rtp_range()
    server = await start_server(bot, srtp="required", rtp_port_range=ports, **LAB)
    phone = Baresip(
        tmp_path / "phone", wav=wav, name="phone", media_encryption="srtp-mand", audio_codecs="pcmu"
    )
    try:
        async with phone:
            capture = Capture(
                tmp_path / "call.pcapng",
                [server.port, phone.sip_port, ports, phone.rtp_ports],
            )
            async with capture:
                await phone.dial(f"sip:bot@127.0.0.1:{server.port}")
                await phone.wait_event("CALL_ESTABLISHED", timeout=5)
                assert await wait_for(lambda: bot.calls and bot.calls[0].media is not None)
                call = bot.calls[0]
                await asyncio.sleep(1.5)
                await phone.send_dtmf("12#")
                await inject(call.local_rtp_port)
                await asyncio.sleep(2.0)
                await phone.hangup()
                await phone.wait_event("CALL_CLOSED", timeout=5)
                heard, rate = read_wav(await phone.wait_recording("dec", timeout=5))

        assert await wait_for(lambda: bot.finished == 1)
        assert not bot.errors, bot.errors
        assert bot.ended[call.call_id] == "remote_bye"
        assert bot.digits(0) == ["1", "2", "#"]
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in phone.log
        assert call.local_sdp.media[0].proto == "RTP/SAVP"
        # The echo of baresip's tone, through both sides' SRTP.
        assert_tone(heard[heard.size // 2 :], rate, TONE_HZ, "echo")
        assert rms(heard[: int(0.8 * rate)]) < 0.05 * rms(heard[heard.size // 2 :])

        stats = call.media.srtp_stats
        assert stats.rtp_unprotected > 100 and stats.rtp_protected > 100
        # The stranger's 400 RTP datagrams failed authentication; they were
        # counted, the call went on (the echo above is after them).
        assert stats.auth_failures >= 400, stats
        assert call.media.stats.packets_received == stats.rtp_unprotected

        result = check_srtp_on_the_wire(
            capture.datagrams(),
            sip_ports={server.port, phone.sip_port},
            media_ports={call.local_sdp.media[0].port, call.negotiated.remote_address[1]},
        )
        assert_no_plain_media(
            capture,
            result,
            ours=call.local_sdp.media[0].port,
            theirs=call.negotiated.remote_address[1],
        )
        # baresip sends its RTCP reports as SRTCP too; two things it sends plain:
        # a 16-byte RTCP APP "PING"/"PONG" probe at the start and the RTCP BYE
        # as it closes the stream (after tearing its SRTP down). We drop both
        # (counted in srtp_stats.other): baresip's leaks, not RTP.
        assert result["rtcp"][call.negotiated.remote_address[1]] >= 1, result["rtcp"]
        for d in result["plain_rtcp"]:
            assert d.payload[1] in (203, 204), d.payload.hex()  # BYE or APP, no SR/RR
            assert d.payload[1] != 204 or d.payload[8:16] == b"PINGPONG", d.payload.hex()
        assert stats.other >= len(result["plain_rtcp"])
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await phone.close()
        await server.stop()


async def test_we_call_baresip_over_srtp_both_ways_and_no_plain_rtp(baresip_srtp, tmp_path: Path):
    wav = make_wav_for_baresip(tmp_path / "tone.wav", freq_hz=600, call_seconds=12)
    ports = rtp_range()
    server = await start_server(None, srtp="required", rtp_port_range=ports, **LAB)
    phone = Baresip(
        tmp_path / "phone",
        wav=wav,
        name="phone",
        answer=True,
        media_encryption="srtp-mand",
        audio_codecs="pcmu",
    )
    try:
        async with phone:
            capture = Capture(
                tmp_path / "call.pcapng", [server.port, phone.sip_port, ports, phone.rtp_ports]
            )
            async with capture:
                call = await server.call(phone.uri, timeout=5)
                heard: list[bytes] = []
                call.media.on_audio = heard.append
                call.media.send_audio(make_tone(TONE_HZ, 2.0).tobytes())
                await asyncio.sleep(2.5)
                call.media.send_dtmf("4")
                event = await phone.wait_event("CALL_DTMF_START", timeout=3)
                await asyncio.sleep(0.5)
                await call.hangup()
                await phone.wait_event("CALL_CLOSED", timeout=5)
                phone_heard, rate = read_wav(await phone.wait_recording("dec", timeout=5))

        assert event["param"] == "4"
        assert call.local_sdp.media[0].proto == "RTP/SAVP"
        ours = np.frombuffer(b"".join(heard), "<i2")
        assert_tone(ours[int(0.5 * 8000) :], 8000, 600, "what we heard from baresip")
        assert_tone(phone_heard[int(0.3 * rate) : int(1.8 * rate)], rate, TONE_HZ, "baresip heard")
        stats = call.media.srtp_stats
        assert stats.auth_failures == stats.replays == 0, stats

        result = check_srtp_on_the_wire(
            capture.datagrams(),
            sip_ports={server.port, phone.sip_port},
            media_ports={call.local_sdp.media[0].port, call.negotiated.remote_address[1]},
        )
        assert_no_plain_media(
            capture,
            result,
            ours=call.local_sdp.media[0].port,
            theirs=call.negotiated.remote_address[1],
        )
        # The offer had both suites; baresip picked one; the captured answer had one key.
        assert len(result["keys"][call.local_sdp.media[0].port]) == 2
        assert len(result["keys"][call.negotiated.remote_address[1]]) == 1
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await phone.close()
        await server.stop()


async def test_optional_offers_srtp_then_plain_to_a_baresip_without_it(tmp_path: Path):
    """The fallback; its plain call's capture is also the control of the wire check."""
    require_binary("baresip")
    require_binary("tshark")
    wav = make_wav_for_baresip(tmp_path / "tone.wav", freq_hz=600, call_seconds=8)
    ports = rtp_range()
    server = await start_server(None, srtp="optional", rtp_port_range=ports, **LAB)
    phone = Baresip(tmp_path / "phone", wav=wav, name="phone", answer=True, audio_codecs="pcmu")
    try:
        async with phone:
            capture = Capture(
                tmp_path / "call.pcapng", [server.port, phone.sip_port, ports, phone.rtp_ports]
            )
            async with capture:
                call = await server.call(phone.uri, timeout=5)
                heard: list[bytes] = []
                call.media.on_audio = heard.append
                await asyncio.sleep(1.5)
                await call.hangup()
                await phone.wait_event("CALL_CLOSED", timeout=5)
        # baresip refused the RTP/SAVP offer (488), then took the plain one.
        assert "no common audio codecs - rejected" in phone.log
        assert call.local_sdp.media[0].proto == "RTP/AVP" and call.media.srtp is None
        assert_tone(np.frombuffer(b"".join(heard), "<i2")[4000:], 8000, 600, "plain fallback")
        # The same wire check on this plain call finds plain RTP both ways.
        ours, theirs = call.local_sdp.media[0].port, call.negotiated.remote_address[1]
        result = check_srtp_on_the_wire(
            capture.datagrams(), sip_ports={server.port, phone.sip_port}, media_ports={ours, theirs}
        )
        assert result["rtp"][ours] == result["rtp"][theirs] == 0
        failed = Counter(d.src_port for d in result["failed"])
        tshark = capture.rtp_frames_by_port()
        assert failed[ours] > 50 and failed[ours] == tshark[ours], (failed, tshark)
        assert failed[theirs] > 50 and failed[theirs] == tshark[theirs], (failed, tshark)
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await phone.close()
        await server.stop()


# --- PJSIP ------------------------------------------------------------------------------


async def test_pjsua_srtp_echo_dtmf_hold_resume(tmp_path: Path):
    require_pjsua2()
    bot = EchoBot()
    server = await start_server(bot, srtp="optional", rtp_port_range=rtp_range(), **LAB)
    lead = np.zeros(int(0.5 * 8000), dtype=np.int16)
    wav = write_wav(tmp_path / "tone.wav", np.concatenate([lead, make_tone(TONE_HZ, 8.0)]), 8000)
    heard = tmp_path / "heard.wav"
    try:
        async with Pjsua(tmp_path / "pj", codecs=["PCMU/8000"]) as pj:
            await pj.listen(auto_answer=0, srtp="required")
            call = await pj.call(f"sip:bot@127.0.0.1:{server.port}", play=wav, record=heard)
            await pj.wait_call_state(call, "CONFIRMED", timeout=5)
            await pj.wait_event("media_state", call=call, status="active")
            assert await wait_for(lambda: bot.calls and bot.calls[0].media is not None)
            sip_call = bot.calls[0]
            context = sip_call.media.srtp
            assert context is not None and sip_call.local_sdp.media[0].proto == "RTP/SAVP"
            await asyncio.sleep(1.0)
            await pj.send_dtmf(call, "123#")
            await asyncio.sleep(1.5)
            # Hold and resume: re-INVITEs with a=crypto (RFC 4568 s.7.1.4).
            await pj.hold(call)
            await pj.wait_event("media_state", call=call, status="local_hold", timeout=5)
            await pj.resume(call)
            await pj.wait_event("media_state", call=call, status="active", timeout=5)
            received = sip_call.media.srtp_stats.rtp_unprotected
            await asyncio.sleep(1.0)
            await pj.hangup(call)
            await pj.wait_call_state(call, "DISCONNECTED", timeout=5)
            closed = await pj.wait_event("recording_closed", call=call, timeout=5)
            assert closed["complete"], closed

        assert await wait_for(lambda: bot.finished == 1)
        assert not bot.errors, bot.errors
        assert bot.digits(0) == ["1", "2", "3", "#"]
        stats = sip_call.media.srtp_stats
        assert stats.auth_failures == stats.replays == 0, stats
        assert sip_call.media.srtp is context  # the re-INVITEs kept both keys
        assert stats.rtp_unprotected > received + 30, "no SRTP from PJSIP after the resume"
        samples, rate = read_wav(heard)
        assert_tone(samples[int(1.0 * rate) : int(2.5 * rate)], rate, TONE_HZ, "echo")
        assert_tone(samples[-int(0.8 * rate) :], rate, TONE_HZ, "echo after the resume")
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await server.stop()
