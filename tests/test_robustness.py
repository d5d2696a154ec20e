"""Robustness (issue 6): faults on loopback against the real `SIPServer`.

A raw UDP test client (`RawPeer`) plays the caller where a real peer would
not misbehave on purpose (no ACK, vanishing without BYE, garbage, RTP from a
second port); SIPp (marked `interop`) places the normal calls and the flood;
`bot.py` runs as a process for SIGTERM with 20 live calls. Timers are made
fast (T1 = 20 ms, so Timer H is 1.28 s) and RTP timeouts short so that each
test takes a few seconds. After every fault the server must still serve, and
every RTP port and call object must be given back.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import socket

import numpy as np
import pytest

from pipecat_sip.codecs import get_codec
from pipecat_sip.rtp.packet import RtpPacket
from pipecat_sip.server import SIPServer
from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.message import SIPRequest, SIPResponse, make_response, parse_message
from pipecat_sip.sip.transaction import TimerValues
from tests.helpers.peers import require_binary
from tests.helpers.relay import Impairment, UdpRelay
from tests.helpers.server import Recorder, wait_for
from tests.helpers.server import start_server as _start_server
from tests.helpers.sipp import run_sipp

FAST_TIMERS = TimerValues(t1=0.02, t2=0.16, t4=0.2)  # Timer H = 64*T1 = 1.28 s
PCMU = get_codec("PCMU")


# --- helpers ---------------------------------------------------------------------------


async def start_server(handler, **kwargs) -> SIPServer:
    kwargs.setdefault("timer_values", FAST_TIMERS)
    return await _start_server(handler, **kwargs)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple]] = []

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.datagrams.append((data, addr))


class UdpSocket:
    """A bound loopback UDP endpoint that keeps what it receives."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _Collector) -> None:
        self.transport = transport
        self.proto = proto
        self.port: int = transport.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls) -> UdpSocket:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _Collector, local_addr=("127.0.0.1", 0)
        )
        return cls(transport, proto)

    @property
    def datagrams(self) -> list[tuple[bytes, tuple]]:
        return self.proto.datagrams

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)

    def close(self) -> None:
        self.transport.close()


class RawPeer:
    """A hand-driven SIP caller on a raw UDP socket (plus an RTP socket)."""

    def __init__(self, sip: UdpSocket, rtp: UdpSocket, server: SIPServer) -> None:
        self.sip = sip
        self.rtp = rtp
        self.server_addr = ("127.0.0.1", server.port)
        self.call_id = f"raw-{secrets.token_hex(6)}@127.0.0.1"
        self.tag = secrets.token_hex(4)
        self.to_tag: str | None = None

    @classmethod
    async def open(cls, server: SIPServer) -> RawPeer:
        return cls(await UdpSocket.open(), await UdpSocket.open(), server)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def messages(self) -> list[SIPRequest | SIPResponse]:
        out = []
        for data, _ in self.sip.datagrams:
            try:
                out.append(parse_message(data))
            except SIPParseError:
                pass
        return out

    def responses(self, code: int | None = None, method: str = "INVITE") -> list[SIPResponse]:
        return [
            m
            for m in self.messages()
            if isinstance(m, SIPResponse)
            and m.cseq.method == method
            and (code is None or m.status_code == code)
        ]

    def requests(self, method: str) -> list[SIPRequest]:
        return [m for m in self.messages() if isinstance(m, SIPRequest) and m.method == method]

    def invite_bytes(self, media_port: int | None = None, call_id: str | None = None) -> bytes:
        port = self.sip.port
        sdp = (
            "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {media_port or self.rtp.port} RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        )
        host, sport = self.server_addr
        return (
            f"INVITE sip:bot@{host}:{sport} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:raw@127.0.0.1:{port}>;tag={self.tag}\r\n"
            f"To: <sip:bot@{host}:{sport}>\r\n"
            f"Call-ID: {call_id or self.call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:raw@127.0.0.1:{port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode()

    def send_invite(self, media_port: int | None = None) -> None:
        self.sip.send(self.invite_bytes(media_port), self.server_addr)

    async def wait_200(self, timeout: float = 5.0) -> SIPResponse:
        assert await wait_for(lambda: self.responses(200), timeout), self.messages()
        ok = self.responses(200)[0]
        self.to_tag = ok.to.tag
        return ok

    def _in_dialog(self, method: str, cseq: int) -> bytes:
        port = self.sip.port
        host, sport = self.server_addr
        return (
            f"{method} sip:bot@{host}:{sport} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:raw@127.0.0.1:{port}>;tag={self.tag}\r\n"
            f"To: <sip:bot@{host}:{sport}>;tag={self.to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def send_ack(self) -> None:
        self.sip.send(self._in_dialog("ACK", 1), self.server_addr)

    def send_bye(self) -> None:
        self.sip.send(self._in_dialog("BYE", 2), self.server_addr)

    def answer_byes(self) -> None:
        for bye in self.requests("BYE"):
            self.sip.send(bytes(make_response(bye, 200)), self.server_addr)

    async def establish(self, media_port: int | None = None) -> SIPResponse:
        self.send_invite(media_port)
        ok = await self.wait_200()
        self.send_ack()
        return ok


def rtp_packets(count: int, *, payload: bytes | None = None, ssrc: int = 0x1234) -> list[bytes]:
    """`count` PCMU packets of 20 ms, a 1 kHz tone unless `payload` is given."""
    t = np.arange(160 * count) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
    out = []
    for i in range(count):
        body = payload if payload is not None else PCMU.encode(pcm[i * 320 : (i + 1) * 320])
        out.append(RtpPacket(0, (1000 + i) & 0xFFFF, 160 * i, ssrc, body).serialize())
    return out


def assert_all_freed(server: SIPServer) -> None:
    assert server.ports.in_use == 0, f"{server.ports.in_use} RTP port(s) still leased"
    assert not server.calls, f"calls left: {list(server.calls)}"
    assert server.ua is not None and server.ua.active_calls == 0


@pytest.fixture
def sipp():
    require_binary("sipp")


# --- 1. INVITE answered, ACK never comes -------------------------------------------------


async def test_no_ack_200_retransmitted_then_bye_after_timer_h():
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=0)
    peer = await RawPeer.open(server)
    try:
        peer.send_invite()
        await peer.wait_200()
        call = rec.calls[0]
        port = call.local_rtp_port
        # no ACK: 200 OK is retransmitted (Timer G) until Timer H (64*T1 = 1.28 s) fires
        assert await wait_for(lambda: peer.requests("BYE"), 5.0), peer.messages()
        assert len(peer.responses(200)) >= 4, "200 OK was not retransmitted"
        assert await wait_for(lambda: rec.ended, 2.0)
        assert rec.ended == {call.call_id: "ack_timeout"}
        peer.answer_byes()
        assert await wait_for(lambda: not server.ua.layer.client, 3.0)
        assert_all_freed(server)
        assert port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))  # the call's RTP socket is closed: free again
        # retransmissions stop once the call is over
        seen = len(peer.responses(200))
        await asyncio.sleep(0.3)
        assert len(peer.responses(200)) == seen
    finally:
        peer.close()
        await server.stop()


# --- 2. the caller vanishes: no BYE, no RTP --------------------------------------------------


async def test_vanished_caller_ends_after_rtp_timeout():
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=0.5)
    peer = await RawPeer.open(server)
    try:
        await peer.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].state == "confirmed")
        call = rec.calls[0]
        assert call.media is not None
        # the caller sends nothing more: after ~0.5 s the server hangs up with BYE
        assert await wait_for(lambda: rec.ended, 5.0)
        assert rec.ended == {call.call_id: "rtp_timeout"}
        assert await wait_for(lambda: peer.requests("BYE"), 2.0)
        assert call.media.closed
        assert server.ports.in_use == 0 and not server.calls  # freed at once
        # the BYE is retransmitted while unanswered; answering it ends the transaction
        peer.answer_byes()
        assert await wait_for(lambda: not server.ua.layer.client, 3.0)
        assert_all_freed(server)
    finally:
        peer.close()
        await server.stop()


# --- 3. garbage on the SIP port and on a live call's RTP port -----------------------------


def garbage_datagrams(seed: int, template: bytes) -> list[bytes]:
    """Random bytes of many sizes (0..65000) and mangled/truncated copies of a SIP INVITE."""
    rng = random.Random(seed)
    sizes = [0, 1, 2, 3, 4, 7, 12, 16, 31, 64, 100, 172, 500, 1000, 1400, 1500, 4096, 9000,
             16384, 16385, 32768, 65000]  # fmt: skip
    out = [rng.randbytes(n) for n in sizes]
    out += [b"\r\n" * n for n in (1, 2, 700)]
    out += [b"INVITE", b"SIP/2.0 200 OK\r\n\r\n", b"\x00" * 300, b"\xff" * 1500]
    for cut in sorted(rng.sample(range(1, len(template)), 40)):
        out.append(template[:cut])  # truncated INVITE
    for _ in range(40):  # flipped bytes
        mangled = bytearray(template)
        for _ in range(rng.randint(1, 8)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        out.append(bytes(mangled))
    out.append(template.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    out.append(template.replace(b"sip:bot@", b"tel:+1", 1))
    out.append(template + b"x" * 60000)  # oversized
    return out


async def _garbage_to_sip_port(server: SIPServer, rec: Recorder) -> UdpSocket:
    junk = await UdpSocket.open()
    # unique Call-IDs so that mangled INVITEs that still parse are separate calls
    template_peer = RawPeer(junk, junk, server)
    template = template_peer.invite_bytes(media_port=9, call_id="junk-template@127.0.0.1")
    for i, data in enumerate(garbage_datagrams(6, template)):
        data = data.replace(b"junk-template", f"junk-{i}".encode())
        junk.send(data, ("127.0.0.1", server.port))
        if i % 20 == 0:
            await asyncio.sleep(0.01)  # let the server drain its socket
    await asyncio.sleep(0.5)
    return junk


async def test_garbage_on_sip_and_rtp_ports_is_ignored():
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=5)
    peer = await RawPeer.open(server)
    junk = None
    try:
        await peer.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].state == "confirmed")
        live = rec.calls[0]
        rtp_addr = ("127.0.0.1", live.local_rtp_port)
        for packet in rtp_packets(5):
            peer.rtp.send(packet, rtp_addr)  # latch the media to the peer's RTP socket
        assert await wait_for(lambda: len(rec.audio[live.call_id]) == 5)

        junk = await _garbage_to_sip_port(server, rec)
        # junk gets SIP responses or nothing: 400 and friends (copying the bad
        # headers as received), and for mangled INVITEs that still parse, the
        # normal answers of a call
        codes = set()
        for data, _ in junk.datagrams:
            m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
            assert m, data[:200]
            codes.add(int(m.group(1)))
        assert 400 in codes, codes

        # garbage of every size on the live call's RTP port, from the latched source
        rng = random.Random(7)
        media = live.media
        assert media is not None
        before_invalid = media.stats.packets_invalid
        for n in list(range(0, 12)) + [13, 50, 172, 1000, 1500, 9000, 65000]:
            peer.rtp.send(rng.randbytes(n), rtp_addr)
        # ... and on its RTCP port (RTP port + 1), RTCP-looking junk included
        rtcp_addr = ("127.0.0.1", live.local_rtp_port + 1)
        for n in (0, 1, 4, 8, 13, 100, 1500):
            peer.rtp.send(rng.randbytes(n), rtcp_addr)
            peer.rtp.send(bytes([0x80, 200]) + rng.randbytes(n), rtcp_addr)
        await asyncio.sleep(0.3)
        assert media.stats.packets_invalid > before_invalid
        assert live.state == "confirmed" and media.stats.errors == 0
        for packet in rtp_packets(5, ssrc=0x1234):
            peer.rtp.send(packet, rtp_addr)
        assert await wait_for(lambda: len(rec.audio[live.call_id]) >= 8)

        # the live call carries on and ends normally
        peer.send_bye()
        assert await wait_for(lambda: rec.ended.get(live.call_id) == "remote_bye")
        assert await wait_for(lambda: not server.calls, 5.0)
        assert_all_freed(server)
    finally:
        peer.close()
        if junk is not None:
            junk.close()
        await server.stop()


@pytest.mark.interop
async def test_normal_call_right_after_garbage(sipp):
    rec = Recorder()
    server = await start_server(rec)
    junk = None
    try:
        junk = await _garbage_to_sip_port(server, rec)
        assert await wait_for(lambda: not server.calls, 5.0)
        result = await run_sipp(
            "uac_basic.xml", f"127.0.0.1:{server.port}", keys={"hold_ms": "300"}
        )
        assert result.ok, result.summary()
        sipp_calls = [c for c in rec.calls if c.call_id in rec.ended and "junk" not in c.call_id]
        assert [rec.ended[c.call_id] for c in sipp_calls] == ["remote_bye"]
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        if junk is not None:
            junk.close()
        await server.stop()


# --- 4. INVITE flood above max_calls ---------------------------------------------------------


@pytest.mark.interop
async def test_invite_flood_gets_503_and_service_resumes(sipp):
    rec = Recorder()
    server = await start_server(rec, timer_values=None, max_calls=5, rtp_timeout_s=10)
    try:
        result = await run_sipp(
            "uac_flood.xml",
            f"127.0.0.1:{server.port}",
            calls=60,
            rate=200,
            concurrent=60,
            keys={"hold_ms": "1500"},
            timeout=30,
        )
        assert result.ok, result.summary()
        busy = [m for m in result.messages("received") if m.startswith("SIP/2.0 503")]
        call_ids = {re.search(r"Call-ID: *(\S+)", m, re.I).group(1) for m in busy}
        assert busy and all("Retry-After:" in m for m in busy), result.summary()
        admitted = len(rec.calls)
        assert 5 <= admitted < 60 and len(call_ids) == 60 - admitted, (admitted, len(call_ids))
        assert await wait_for(lambda: len(rec.ended) == admitted, 5.0)
        assert set(rec.ended.values()) == {"remote_bye"}  # the admitted calls are unaffected
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)

        # full service afterwards: max_calls concurrent calls all admitted
        again = await run_sipp(
            "uac_basic.xml",
            f"127.0.0.1:{server.port}",
            calls=5,
            concurrent=5,
            rate=50,
            keys={"hold_ms": "300"},
            trace_msg=False,
        )
        assert again.ok and again.successful_calls == 5, again.summary()
        assert await wait_for(lambda: server.ports.in_use == 0 and not server.calls)
    finally:
        await server.stop()


# --- 5. 10% RTP loss and reordering through a lossy relay -------------------------------------


async def test_rtp_loss_and_reordering_call_carries_on():
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=5)
    peer = await RawPeer.open(server)
    # Caller -> server: 10% loss, 10% held back behind the next packet; back: clean.
    relay = UdpRelay(a_to_b=Impairment(loss=0.10, reorder=0.10), seed=10)
    try:
        # the relay's port is offered in the SDP; the server's port is known once called
        relay_port = await relay.start()
        peer.send_invite(media_port=relay_port)
        await peer.wait_200()
        call = rec.calls[0]
        relay.target = ("127.0.0.1", call.local_rtp_port)
        peer.send_ack()
        assert await wait_for(lambda: call.state == "confirmed")

        packets = rtp_packets(300)
        for i, packet in enumerate(packets):
            peer.rtp.send(packet, ("127.0.0.1", relay_port))
            if i % 10 == 9:  # 200 ms of audio per burst, in real time (faster is a flood)
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        sent = relay.stats.a_to_b
        assert sent.lost > 10 and sent.reordered > 10, sent
        chunks = rec.audio[call.call_id]
        assert len(chunks) == sent.forwarded, (len(chunks), sent)
        assert 200 < len(chunks) < 300
        pcm = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64)
        spectrum = np.abs(np.fft.rfft(pcm))
        assert abs(np.argmax(spectrum) * 8000 / pcm.size - 1000) < 20  # the tone got through
        assert call.state == "confirmed" and call.media.stats.errors == 0
        # the server's RTP comes back through the relay (latched)
        assert relay.stats.b_to_a.forwarded > 0
        assert peer.rtp.datagrams, "no RTP from the server reached the caller"
        assert all(addr[1] == relay_port for _, addr in peer.rtp.datagrams)

        peer.send_bye()
        assert await wait_for(lambda: rec.ended.get(call.call_id) == "remote_bye")
        assert await wait_for(lambda: not server.calls)
        assert_all_freed(server)
    finally:
        peer.close()
        relay.close()
        await server.stop()


# --- 6. RTP injection from another source after latching ------------------------------------


async def test_rtp_from_another_port_never_reaches_the_call():
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=5)
    peer = await RawPeer.open(server)
    intruder = await UdpSocket.open()
    try:
        await peer.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].state == "confirmed")
        call = rec.calls[0]
        rtp_addr = ("127.0.0.1", call.local_rtp_port)
        quiet = rtp_packets(10, payload=b"\xff" * 160)  # mu-law 0xFF decodes to 0
        loud = rtp_packets(30, payload=b"\x80" * 160, ssrc=0x1234)  # full scale
        for packet in quiet[:5]:
            peer.rtp.send(packet, rtp_addr)
        assert await wait_for(lambda: len(rec.audio[call.call_id]) == 5)
        assert call.media is not None and call.media.latched
        for packet in loud:  # same SSRC and PT, but from another port
            intruder.send(packet, rtp_addr)
        await asyncio.sleep(0.1)
        for packet in quiet[5:]:
            peer.rtp.send(packet, rtp_addr)
        assert await wait_for(lambda: len(rec.audio[call.call_id]) == 10)
        await asyncio.sleep(0.2)
        chunks = rec.audio[call.call_id]
        assert len(chunks) == 10
        assert all(not any(chunk) for chunk in chunks), "injected audio reached on_audio"
        assert call.media.stats.packets_wrong_source == 30
        assert call.media.remote_addr == ("127.0.0.1", peer.rtp.port)
        peer.send_bye()
        assert await wait_for(lambda: not server.calls)
        assert_all_freed(server)
    finally:
        peer.close()
        intruder.close()
        await server.stop()


# --- 7. SIGTERM with 20 live calls ---------------------------------------------------------


@pytest.mark.interop
async def test_sigterm_with_20_live_calls_byes_all_and_exits_0(sipp):
    from tests.test_e2e_bot import EXIT_TIMEOUT_S, BotProcess

    bot = BotProcess()
    try:
        await bot.start()
        # 20 calls that stay up until the server hangs up (uac_server_bye waits for BYE)
        sipp_run = asyncio.ensure_future(
            run_sipp(
                "uac_server_bye.xml",
                f"127.0.0.1:{bot.port}",
                calls=20,
                concurrent=20,
                rate=40,
                timeout=40,
                trace_msg=False,
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while bot.log.count(": incoming from") < 20 and loop.time() < deadline:
            assert not sipp_run.done(), (await sipp_run).summary()
            await asyncio.sleep(0.1)
        assert bot.log.count(": incoming from") == 20, bot.log[-3000:]
        await asyncio.sleep(1.5)  # every 200 OK acknowledged, pipelines running
        assert not sipp_run.done()
        bot.terminate()
        code = await bot.wait_exit(EXIT_TIMEOUT_S + 4)
        result = await asyncio.wait_for(sipp_run, 20)
        assert code == 0, bot.log[-3000:]
        assert result.ok and result.successful_calls == 20, result.summary()
        assert "hanging up 20 call(s)" in bot.log, bot.log[-3000:]
        ended = re.findall(r"SIPCall#\S+: ended \((?:local_bye|shutdown)\)", bot.log)
        assert len(ended) == 20, bot.log[-3000:]
        assert "SIP server stopped" in bot.log
    finally:
        await bot.close()


# --- 8. limits and hardening -------------------------------------------------------------------


def options_bytes(peer_port: int, server_port: int, *, extra: str = "", cseq: int = 1) -> bytes:
    return (
        f"OPTIONS sip:bot@127.0.0.1:{server_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1:{peer_port}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:bot@127.0.0.1:{server_port}>\r\n"
        f"Call-ID: opt-{secrets.token_hex(6)}\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def padded_invite(peer: RawPeer, *, body_bytes: int = 0, headers: int = 0) -> bytes:
    """An INVITE grown by SDP attribute lines (`body_bytes`) or X- headers (`headers`)."""
    data = peer.invite_bytes()
    head, _, sdp = data.partition(b"\r\n\r\n")
    if body_bytes:
        line = b"a=x-pad:" + b"p" * 90 + b"\r\n"
        sdp += line * (body_bytes // len(line) + 1)
        head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(sdp), head)
    if headers:
        head += b"".join(b"\r\nX-Pad-%d: %d" % (i, i) for i in range(headers))
    return head + b"\r\n\r\n" + sdp


async def test_oversized_request_gets_413_and_oversized_junk_is_dropped():
    rec = Recorder()
    server = await start_server(rec, rtp_timeout_s=5)
    peer = await RawPeer.open(server)
    try:
        big = padded_invite(peer, body_bytes=20000)
        assert len(big) > 16384
        peer.sip.send(big, peer.server_addr)
        assert await wait_for(lambda: peer.responses(413), 2.0), peer.messages()
        response = peer.responses(413)[0]
        assert response.call_id == peer.call_id and response.headers.get("Server") == "pipecat-sip"
        # oversized junk and an oversized response: no answer at all
        peer.sip.send(b"\x00" * 20000, peer.server_addr)
        peer.sip.send(b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * 4000 + b"\r\n", peer.server_addr)
        await asyncio.sleep(0.3)
        assert len(peer.sip.datagrams) == 1 and rec.calls == []
        assert server.dropped_oversized == 3
        # a large but allowed INVITE makes a call
        peer.sip.send(padded_invite(peer, body_bytes=10000), peer.server_addr)
        ok = await peer.wait_200()
        assert ok.call_id == peer.call_id and len(rec.calls) == 1
    finally:
        peer.close()
        await server.stop()


async def test_max_message_size_is_configurable():
    server = await start_server(Recorder(), max_message_size=4096)
    peer = await RawPeer.open(server)
    try:
        peer.sip.send(padded_invite(peer, body_bytes=5000), peer.server_addr)
        assert await wait_for(lambda: peer.responses(413), 2.0), peer.messages()
        peer.sip.send(padded_invite(peer, body_bytes=2000), peer.server_addr)
        await peer.wait_200()
    finally:
        peer.close()
        await server.stop()
    with pytest.raises(ValueError, match="max_message_size"):
        SIPServer(port=0, max_message_size=100)


async def test_too_many_headers_gets_400():
    rec = Recorder()
    server = await start_server(rec)
    peer = await RawPeer.open(server)
    try:
        many = padded_invite(peer, headers=200)
        assert len(many) < 16384
        peer.sip.send(many, peer.server_addr)
        assert await wait_for(lambda: peer.responses(400), 2.0), peer.messages()
        assert "128 headers" in peer.responses(400)[0].reason
        # leading CRLFs (allowed before a message) do not hide the headers
        hidden = options_bytes(peer.sip.port, server.port, extra="X: 1\r\n" * 200)
        peer.sip.send(b"\r\n\r\n" + hidden, peer.server_addr)
        assert await wait_for(lambda: peer.responses(400, "OPTIONS"), 2.0), peer.messages()
        assert rec.calls == [] and server.dropped_oversized == 2
        peer.sip.send(padded_invite(peer, headers=100), peer.server_addr)  # 111 headers: fine
        await peer.wait_200()
        assert len(rec.calls) == 1
    finally:
        peer.close()
        await server.stop()


async def test_allowed_networks_403_for_other_sources():
    rec = Recorder()
    server = await start_server(rec, allowed_networks="10.0.0.0/8, 192.168.0.0/16")
    peer = await RawPeer.open(server)
    try:
        peer.send_invite()
        assert await wait_for(lambda: peer.responses(403), 2.0), peer.messages()
        assert rec.calls == [] and server.rejected_forbidden == 1
        assert server.ports.in_use == 0 and not server.calls
        # OPTIONS (health checks) are still answered
        peer.sip.send(options_bytes(peer.sip.port, server.port), peer.server_addr)
        assert await wait_for(lambda: peer.responses(200, "OPTIONS"), 2.0)
    finally:
        peer.close()
        await server.stop()

    server = await start_server(rec, allowed_networks=["10.0.0.0/8", "127.0.0.0/8"])
    peer = await RawPeer.open(server)
    try:
        peer.send_invite()
        await peer.wait_200()
        assert len(rec.calls) == 1
    finally:
        peer.close()
        await server.stop()


def test_parse_networks():
    from pipecat_sip.security import in_networks as _in_networks
    from pipecat_sip.security import parse_networks

    nets = parse_networks("10.1.2.3/8, 2001:db8::/32 192.0.2.7")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
    assert _in_networks("10.9.9.9", nets) and _in_networks("::ffff:10.0.0.1", nets)
    assert _in_networks("2001:db8::5", nets) and not _in_networks("192.0.2.8", nets)
    assert not _in_networks("not-an-ip", nets)
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        parse_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="is not a network"):
        SIPServer(port=0, allowed_networks="example.com")


def test_rate_limiter_token_bucket():
    from pipecat_sip.security import RateLimiter

    limiter = RateLimiter(rate=10, burst=5)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("192.0.2.2", 0.0)  # other sources have their own bucket
    assert not limiter.allow("192.0.2.1", 0.05)  # half a token
    assert limiter.allow("192.0.2.1", 0.1)
    assert [limiter.allow("192.0.2.1", 100.0) for _ in range(6)] == [True] * 5 + [False]
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=5)


def test_rate_limiter_keeps_at_most_max_sources_forgetting_the_least_recent():
    from pipecat_sip.security import MAX_TRACKED_SOURCES, RateLimiter

    limiter = RateLimiter(rate=100, burst=2)
    n = MAX_TRACKED_SOURCES
    assert limiter.allow("192.0.2.1", 0.0) and limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.0)  # its bucket is empty
    for i in range(n):
        limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
        assert len(limiter) <= n
    assert len(limiter) == n
    # 192.0.2.1 was the least recently seen: forgotten, it starts with a full bucket
    assert limiter.allow("192.0.2.1", 0.0)


async def test_rate_limit_drops_excess_with_one_warning():
    from loguru import logger

    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    server = await start_server(Recorder(), rate_limit=20, rate_burst=5)
    probe = await UdpSocket.open()
    try:
        for i in range(30):
            probe.send(
                options_bytes(probe.port, server.port, cseq=i + 1), ("127.0.0.1", server.port)
            )
        await asyncio.sleep(0.3)
        answered = len(probe.datagrams)
        assert 5 <= answered <= 12, answered  # the burst, plus what 20/s refilled meanwhile
        assert server.dropped_rate_limited == 30 - answered
        assert len([w for w in warnings if "rate limit" in w]) == 1  # rate-limited warning
        await asyncio.sleep(0.3)  # refilled: served again
        probe.send(options_bytes(probe.port, server.port), ("127.0.0.1", server.port))
        assert await wait_for(lambda: len(probe.datagrams) == answered + 1, 2.0)
    finally:
        logger.remove(sink)
        probe.close()
        await server.stop()


async def test_rate_limit_zero_disables():
    server = await start_server(Recorder(), rate_limit=0)
    probe = await UdpSocket.open()
    try:
        assert server.rate_limiter is None
        for i in range(250):  # above the default burst, in about 0.25 s
            probe.send(
                options_bytes(probe.port, server.port, cseq=i + 1), ("127.0.0.1", server.port)
            )
            if i % 10 == 9:
                await asyncio.sleep(0.01)
        assert await wait_for(lambda: len(probe.datagrams) == 250, 3.0), len(probe.datagrams)
        assert server.dropped_rate_limited == 0
    finally:
        probe.close()
        await server.stop()


@pytest.mark.parametrize("server_name", [None, "acme-voice"])
async def test_server_header_configurable(server_name):
    rec = Recorder()
    server = await start_server(rec, server_name=server_name)
    peer = await RawPeer.open(server)
    try:
        peer.sip.send(options_bytes(peer.sip.port, server.port), peer.server_addr)
        await peer.establish()
        assert await wait_for(lambda: peer.responses(200, "OPTIONS"))
        for response in [*peer.responses(), *peer.responses(method="OPTIONS")]:
            assert response.headers.get("Server") == server_name, response
        if server_name is None:
            for data, _ in peer.sip.datagrams:
                assert b"\r\nServer:" not in data and b"\r\nUser-Agent:" not in data, data
    finally:
        peer.close()
        await server.stop()


def test_runner_settings_for_limits():
    import argparse

    from pipecat_sip.runner import ConfigError, build_parser, parse_config

    args = build_parser().parse_args([])
    config = parse_config(args, {})
    assert config.allowed_networks == () and config.rate_limit == 100 and config.rate_burst == 200
    assert config.server_name == "pipecat-sip"
    assert config.event_loop == "uvloop"  # auto: installed with Pipecat's runner extra
    assert parse_config(argparse.Namespace(), {"SIP_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    flags = build_parser().parse_args(["--event-loop", "UVLOOP"])
    assert parse_config(flags, {"SIP_EVENT_LOOP": "asyncio"}).event_loop == "uvloop"
    assert config.registration is None
    env_reg = {"SIP_REGISTRAR": "sip:pbx.example.com", "SIP_USERNAME": "1000", "SIP_PASSWORD": "pw"}
    reg = parse_config(argparse.Namespace(), env_reg).registration
    assert (reg.registrar, reg.username, reg.password, reg.expires) == (
        "sip:pbx.example.com",
        "1000",
        "pw",
        300,
    )
    with pytest.raises(ConfigError, match="SIP_REGISTER_EXPIRES: '5' is not 30-86400"):
        parse_config(argparse.Namespace(), env_reg | {"SIP_REGISTER_EXPIRES": "5"})
    env = {
        "SIP_ALLOWED_NETWORKS": "10.0.0.0/8,192.0.2.0/24",
        "SIP_RATE_LIMIT": "0",
        "SIP_RATE_BURST": "50",
        "SIP_SERVER_NAME": "none",
    }
    config = parse_config(args, env)
    assert config.allowed_networks == ("10.0.0.0/8", "192.0.2.0/24")
    assert config.rate_limit == 0 and config.rate_burst == 50 and config.server_name is None
    flags = build_parser().parse_args(["--server-name", "acme", "--allowed-networks", "::1/128"])
    config = parse_config(flags, env)
    assert config.server_name == "acme" and config.allowed_networks == ("::1/128",)
    for var, value, text in [
        ("SIP_ALLOWED_NETWORKS", "10.0.0.0/8,bogus", "SIP_ALLOWED_NETWORKS: 'bogus' is not a"),
        ("SIP_RATE_LIMIT", "fast", "SIP_RATE_LIMIT: 'fast' is not a number"),
        ("SIP_RATE_LIMIT", "-1", "SIP_RATE_LIMIT: '-1' must be 0"),
        ("SIP_RATE_BURST", "0", "SIP_RATE_BURST: '0' is not a positive"),
        ("SIP_SERVER_NAME", "a\x01b", "SIP_SERVER_NAME: 'a\\x01b' must be one line"),
        ("SIP_EVENT_LOOP", "trio", "SIP_EVENT_LOOP: 'trio' is not one of auto, uvloop, asyncio"),
        ("SIP_REGISTRAR", "pbx.example.com", "SIP_REGISTRAR: 'pbx.example.com' is not a SIP URI"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(argparse.Namespace(), {var: value})
        assert str(info.value).startswith(text), str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # Regression: a NaN RTP timeout was accepted (it only checked < 0).
        ("SIP_RTP_TIMEOUT", "nan", "SIP_RTP_TIMEOUT: 'nan' must be 0 (off) or more seconds"),
        ("SIP_RTP_TIMEOUT", "-1", "SIP_RTP_TIMEOUT: '-1' must be 0 (off) or more seconds"),
        ("SIP_DRAIN_TIMEOUT", "99999", "SIP_DRAIN_TIMEOUT: '99999' must be 0 (off) to 86400"),
        ("SIP_KEEPALIVE_INTERVAL", "x", "SIP_KEEPALIVE_INTERVAL: 'x' is not a number of seconds"),
    ],
)
def test_durations_stop_start_up_with_one_line(variable, value, message):
    import argparse

    from pipecat_sip.runner import ConfigError, parse_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(argparse.Namespace(), {variable: value})
