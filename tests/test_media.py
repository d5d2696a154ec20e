"""The asyncio adapter (RTPSession) and MediaClock over real UDP sockets on 127.0.0.1.

The protocol behaviour (exact packets, sequence numbers, timestamps, DTMF,
timeout, RTCP) is tested on a fake clock in test_media_session.py; these
tests check what the adapter adds: sockets, the shared clock, callbacks,
backlog waits, closing. Timing checks are sanity bounds only (the CI
machine has 2 cores); exact figures belong to bench/.
"""

import asyncio
import socket
import time

import numpy as np
import pytest

from pipecat_sip.codecs import PCMU
from pipecat_sip.codecs.tones import detect_dtmf
from pipecat_sip.media import MAX_BURST, MediaClock, RTPSession
from pipecat_sip.rtp import DtmfSender, RtpPacket, RtpSender, TelephoneEvent, seq_diff
from pipecat_sip.rtp.packet import ts_diff

HOST = "127.0.0.1"
TE_PT = 101


class Peer(asyncio.DatagramProtocol):
    """A bare UDP endpoint that records what it receives and can send anything."""

    def __init__(self):
        self.received: list[tuple[float, bytes, tuple]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append((time.monotonic(), data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")

    @property
    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for _, data, _ in self.received]

    def send(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def tone(ms: int, hz: float = 1000.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(8 * ms) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def is_silence(packet: RtpPacket, codec=PCMU) -> bool:
    return packet.payload == codec.silence(len(packet.payload))


@pytest.fixture
async def media():
    """Factory for peers and sessions, all closed at teardown."""
    peers: list[Peer] = []
    sessions: list[RTPSession] = []

    class Factory:
        async def peer(self) -> Peer:
            loop = asyncio.get_running_loop()
            _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
            peers.append(peer)
            return peer

        async def session(self, remote_addr, *, start=True, sock=None, **kwargs) -> RTPSession:
            kwargs.setdefault("codec", PCMU)
            session = RTPSession(sock=sock or udp_socket(), remote_addr=remote_addr, **kwargs)
            sessions.append(session)
            if start:
                await session.start()
            return session

    yield Factory()
    for session in sessions:
        await session.close()
    for peer in peers:
        peer.transport.close()


# --- sending: cadence, continuity, talkspurts ---------------------------------------------


async def test_cadence_and_continuity_over_a_second(media):
    peer = await media.peer()
    session = await media.session(peer.addr)
    await asyncio.sleep(1.0)
    await session.close()
    received = peer.received
    packets = peer.packets
    assert 40 <= len(packets) <= 55
    for before, after in zip(packets, packets[1:], strict=False):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1
        assert ts_diff(after.timestamp, before.timestamp) == 160
    assert {p.ssrc for p in packets} == {session.ssrc}
    assert {p.payload_type for p in packets} == {0}
    assert {len(p.payload) for p in packets} == {160}
    assert all(is_silence(p) for p in packets)
    mean_interval = (received[-1][0] - received[0][0]) / (len(received) - 1)
    assert 0.017 < mean_interval < 0.025
    assert session.stats.packets_sent == len(packets)


async def test_ptime_30_uses_its_own_clock(media):
    peer = await media.peer()
    session = await media.session(peer.addr, ptime_ms=30)
    other = await media.session(peer.addr)
    assert session.samples_per_packet == 240
    assert MediaClock.for_loop(ptime_ms=30).session_count == 1
    assert MediaClock.for_loop().session_count == 1
    await asyncio.sleep(0.6)
    await other.close()
    ours = [p for p in peer.packets if p.ssrc == session.ssrc]
    assert 15 <= len(ours) <= 22
    assert {len(p.payload) for p in ours} == {240}
    assert {ts_diff(b.timestamp, a.timestamp) for a, b in zip(ours, ours[1:], strict=False)} == {
        240
    }


# --- backlog and barge-in -----------------------------------------------------------------


async def test_wait_for_backlog_is_woken_by_the_clock(media):
    peer = await media.peer()
    session = await media.session(peer.addr)
    await session.wait_for_backlog(0)  # nothing queued: returns at once
    session.send_audio(tone(200))  # 3200 bytes
    started = time.monotonic()
    await asyncio.wait_for(session.wait_for_backlog(320), 2.0)
    elapsed = time.monotonic() - started
    assert session.backlog_bytes <= 320
    assert 0.1 < elapsed < 0.6  # 9 packets of 20 ms
    await asyncio.wait_for(session.wait_for_backlog(0), 1.0)
    assert session.backlog_bytes == 0


async def test_clear_and_close_release_backlog_waiters(media):
    peer = await media.peer()
    session = await media.session(peer.addr)
    session.send_audio(tone(2000))
    waiter = asyncio.create_task(session.wait_for_backlog(0))
    cancelled = asyncio.create_task(session.wait_for_backlog(0))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    assert not waiter.done()
    session.clear_audio()
    await asyncio.wait_for(waiter, 1.0)
    session.send_audio(tone(2000))
    waiter = asyncio.create_task(session.wait_for_backlog(0))
    await asyncio.sleep(0.05)
    await session.close()
    await asyncio.wait_for(waiter, 1.0)


def test_send_audio_rejects_odd_lengths():
    session = RTPSession(sock=udp_socket(), remote_addr=(HOST, 9), codec=PCMU)
    with pytest.raises(ValueError, match="odd length"):
        session.send_audio(b"\x00\x00\x00")
    asyncio.run(session.close())


# --- receiving ------------------------------------------------------------------------------


def rtp_packets(count: int, *, payload_type=0, payload=None, sender=None) -> list[bytes]:
    sender = sender or RtpSender(payload_type, 8000)
    payload = payload if payload is not None else PCMU.encode(tone(20))
    return [sender.packet(payload, 160) for _ in range(count)]


async def test_receives_and_decodes_audio(media):
    peer = await media.peer()
    session = await media.session(peer.addr)
    heard = []
    session.on_audio = heard.append
    payload = PCMU.encode(tone(20))
    for data in rtp_packets(5, payload=payload):
        peer.send(data, session.local_addr)
    assert await until(lambda: len(heard) == 5)
    assert heard == [PCMU.decode(payload)] * 5
    assert session.stats.packets_received == 5
    assert session.stats.octets_received == 800


async def test_latches_to_the_real_source_and_drops_others(media):
    sdp_peer = await media.peer()  # the address the SDP named
    real_peer = await media.peer()  # where the packets actually come from (NAT)
    intruder = await media.peer()
    session = await media.session(sdp_peer.addr)
    heard = []
    session.on_audio = heard.append
    assert await until(lambda: len(sdp_peer.received) >= 2)  # before latching: the SDP address
    assert not session.latched and session.remote_addr == sdp_peer.addr

    for data in rtp_packets(3):  # 3 in a row from the SDP host: latched on the third
        real_peer.send(data, session.local_addr)
    assert await until(lambda: len(heard) == 1)
    assert session.latched and session.remote_addr == real_peer.addr
    assert session.stats.packets_on_probation == 2
    assert await until(lambda: len(real_peer.received) >= 3)
    await asyncio.sleep(0.05)
    sdp_count = len(sdp_peer.received)
    await asyncio.sleep(0.1)
    assert len(sdp_peer.received) == sdp_count  # nothing more to the SDP address

    for data in rtp_packets(4):
        intruder.send(data, session.local_addr)
    assert await until(lambda: session.stats.packets_wrong_source == 4)
    assert len(heard) == 1
    assert session.remote_addr == real_peer.addr
    assert intruder.received == []


async def test_junk_rtcp_and_unknown_payload_types_are_dropped(media):
    peer = await media.peer()
    session = await media.session(peer.addr)
    heard = []
    session.on_audio = heard.append
    rtcp_rr = bytes.fromhex("81c90007") + bytes(28)
    junk = [b"\x80", b"hello world!", bytes.fromhex("40000001000000000000000b") + b"x"]
    for data in [rtcp_rr, *junk, *rtp_packets(2, payload_type=13)]:  # 13: comfort noise
        peer.send(data, session.local_addr)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.sendto(b"", session.local_addr)  # asyncio's sendto() skips empty datagrams
    raw.close()
    assert await until(
        lambda: (
            session.stats.packets_rtcp == 1
            and session.stats.packets_invalid == 4
            and session.stats.packets_unknown_pt == 2
        )
    )
    assert heard == [] and not session.latched
    for data in rtp_packets(1):
        peer.send(data, session.local_addr)
    assert await until(lambda: len(heard) == 1)


async def test_callback_errors_never_escape(media):
    peer = await media.peer()
    session = await media.session(peer.addr)

    def broken(pcm):
        raise RuntimeError("bot bug")

    session.on_audio = broken
    for data in rtp_packets(3):
        peer.send(data, session.local_addr)
    assert await until(lambda: session.stats.errors == 3)
    assert session.stats.packets_received == 3
    before = session.stats.packets_sent
    await asyncio.sleep(0.1)
    assert session.stats.packets_sent > before  # still sending


async def test_update_remote_sends_to_the_new_address_and_relatches(media):
    first, second = await media.peer(), await media.peer()
    session = await media.session(first.addr)
    for data in rtp_packets(1):
        first.send(data, session.local_addr)
    assert await until(lambda: session.latched)
    session.update_remote(second.addr)
    assert not session.latched and session.remote_addr == second.addr
    assert await until(lambda: len(second.received) >= 2)
    for data in rtp_packets(1):
        second.send(data, session.local_addr)
    assert await until(lambda: session.latched and session.stats.packets_received == 2)


# --- DTMF -----------------------------------------------------------------------------------


async def test_rfc4733_dtmf_between_sessions(media):
    tap = await media.peer()
    bob_sock = udp_socket()
    alice = await media.session(bob_sock.getsockname(), telephone_event_pt=TE_PT)
    bob = await media.session(alice.local_addr, sock=bob_sock, telephone_event_pt=TE_PT)
    keys, bob_keys = [], []
    bob.on_dtmf = keys.append
    alice.on_dtmf = bob_keys.append
    alice.send_audio(tone(100))
    alice.send_dtmf("1")
    alice.send_dtmf("#", 60)
    bob.send_dtmf("9")
    assert await until(lambda: len(keys) == 2 and len(bob_keys) == 1)
    assert keys == ["1", "#"] and bob_keys == ["9"]
    assert bob.stats.dtmf_received == 2 and alice.stats.dtmf_sent == 2

    # What went on the wire: a tap session that sends the same way.
    tapped = await media.session(tap.addr, telephone_event_pt=TE_PT)
    tapped.send_audio(tone(200))
    tapped.send_dtmf("5", 100)
    assert await until(lambda: sum(p.payload_type == TE_PT for p in tap.packets) == 7)
    await asyncio.sleep(0.05)
    packets = tap.packets
    events = [i for i, p in enumerate(packets) if p.payload_type == TE_PT]
    assert events == list(range(events[0], events[0] + 7))  # audio paused meanwhile
    assert [packets[i].marker for i in events] == [True] + [False] * 6
    assert len({packets[i].timestamp for i in events}) == 1
    ends = [TelephoneEvent.parse(packets[i].payload).end for i in events]
    assert ends == [False] * 4 + [True] * 3
    for before, after in zip(packets, packets[1:], strict=False):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1
    after_event = packets[events[-1] + 1]
    assert ts_diff(after_event.timestamp, packets[events[0]].timestamp) == 7 * 160
    assert not is_silence(after_event)  # the rest of the audio follows


async def test_inband_dtmf_when_no_telephone_event(media):
    bob_sock = udp_socket()
    alice = await media.session(bob_sock.getsockname())
    bob = await media.session(alice.local_addr, sock=bob_sock)
    heard = []
    bob.on_audio = heard.append
    await asyncio.sleep(0.05)
    heard.clear()
    alice.send_dtmf("7", 100)
    await until(lambda: alice.backlog_bytes == 0)
    await asyncio.sleep(0.1)
    pcm = b"".join(heard)
    x = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(x) > 1000)
    assert len(loud) > 0
    segment = x[loud[0] : loud[0] + 640].tobytes()  # 80 ms of the tone
    assert detect_dtmf(segment) == "7"
    assert alice.stats.dtmf_sent == 1
    assert bob.stats.packets_unknown_pt == 0


async def test_send_dtmf_rejects_unknown_keys(media):
    peer = await media.peer()
    for kwargs in ({}, {"telephone_event_pt": TE_PT}):
        session = await media.session(peer.addr, **kwargs)
        with pytest.raises(ValueError):
            session.send_dtmf("X")
        with pytest.raises(ValueError):
            session.send_dtmf("1", 0)
        assert session.backlog_bytes == 0 and session.stats.dtmf_sent == 0


# --- timeout, clock, close ------------------------------------------------------------------


async def test_rtp_timeout_fires_once(media):
    peer = await media.peer()
    fired = []
    session = await media.session(peer.addr, rtp_timeout_s=0.2)
    session.on_timeout = lambda: fired.append(time.monotonic())
    started = time.monotonic()
    assert await until(lambda: fired, timeout=2.0)
    assert 0.15 < fired[0] - started < 1.5
    await asyncio.sleep(0.4)
    assert len(fired) == 1


async def test_one_shared_clock_per_loop(media):
    peer = await media.peer()
    clock = MediaClock.for_loop()
    assert MediaClock.for_loop() is clock
    first = await media.session(peer.addr)
    second = await media.session(peer.addr)
    assert clock.session_count == 2 and clock.running
    await asyncio.sleep(0.2)
    assert 7 <= clock.ticks <= 14  # one timer for both sessions
    await first.close()
    assert clock.running
    await second.close()
    assert not clock.running and clock.session_count == 0


async def test_explicit_clock_and_its_checks(media):
    peer = await media.peer()
    clock = MediaClock(20)
    session = await media.session(peer.addr, clock=clock)
    assert clock.session_count == 1
    assert MediaClock.for_loop().session_count == 0
    await session.close()
    assert not clock.running
    with pytest.raises(ValueError, match="clock paces 20 ms"):
        RTPSession(sock=udp_socket(), remote_addr=peer.addr, codec=PCMU, ptime_ms=30, clock=clock)
    with pytest.raises(ValueError, match="payload type 200"):
        RTPSession(sock=udp_socket(), remote_addr=peer.addr, codec=PCMU, telephone_event_pt=200)


async def test_late_loop_skips_deadlines_instead_of_bursting(media):
    peer = await media.peer()
    session = await media.session(peer.addr)
    clock = MediaClock.for_loop()
    await asyncio.sleep(0.2)
    sent_before = session.stats.packets_sent
    time.sleep(0.25)  # block the loop: about 12 deadlines pass
    for _ in range(3):
        await asyncio.sleep(0)
    assert session.stats.packets_sent - sent_before <= MAX_BURST
    assert clock.skipped_deadlines >= 8 and clock.late_ticks >= 1
    assert session.stats.deadlines_skipped == clock.skipped_deadlines
    await asyncio.sleep(0.3)
    received, packets = peer.received, peer.packets
    for before, after in zip(packets, packets[1:], strict=False):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1
    jumps = [ts_diff(b.timestamp, a.timestamp) for a, b in zip(packets, packets[1:], strict=False)]
    assert max(jumps) >= 8 * 160 and all(j % 160 == 0 for j in jumps)
    # Overall the timestamps follow the wall clock.
    elapsed_ticks = (received[-1][0] - received[0][0]) * 8000
    assert abs(ts_diff(packets[-1].timestamp, packets[0].timestamp) - elapsed_ticks) <= 4 * 160


async def test_close_is_idempotent_and_frees_the_socket(media):
    peer = await media.peer()
    sock = udp_socket()
    port = sock.getsockname()[1]
    session = await media.session(peer.addr, sock=sock)
    await asyncio.sleep(0.05)
    await session.close()
    await session.close()
    assert session.closed and sock.fileno() == -1
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    again.bind((HOST, port))  # the port is free again
    again.close()
    sent = session.stats.packets_sent
    session.send_audio(tone(20))  # ignored after close
    session.send_dtmf("1")
    await session.wait_for_backlog(0)
    await asyncio.sleep(0.05)
    assert session.stats.packets_sent == sent and session.backlog_bytes == 0
    with pytest.raises(RuntimeError, match="closed"):
        await session.start()


async def test_close_before_start_closes_the_socket(media):
    sock = udp_socket()
    session = await media.session((HOST, 9), sock=sock, start=False)
    await session.start()
    await session.start()  # idempotent
    await session.close()
    assert sock.fileno() == -1
    never_started_sock = udp_socket()
    never_started = await media.session((HOST, 9), sock=never_started_sock, start=False)
    await never_started.close()
    assert never_started_sock.fileno() == -1


async def test_many_sessions_spread_over_phases_keep_cadence(media):
    from pipecat_sip.media import PHASES, SESSIONS_PER_PHASE

    peer = await media.peer()
    clock = MediaClock.for_loop()
    count = SESSIONS_PER_PHASE * 2 + 3
    sessions = [await media.session(peer.addr) for _ in range(count)]
    phases = {clock._phase_of[s] for s in sessions}
    assert len(phases) == 3 and phases <= set(range(PHASES))
    loop = asyncio.get_running_loop()
    sent_before = [s.stats.packets_sent for s in sessions]
    skipped_before, started = clock.skipped_deadlines, loop.time()
    await asyncio.sleep(0.5)
    elapsed = loop.time() - started
    sent = [s.stats.packets_sent - b for s, b in zip(sessions, sent_before, strict=True)]
    # Every session keeps the same cadence, one packet per 20 ms, never ahead of
    # real time; deadlines the clock skipped after a stall of the machine (counted,
    # summed over the phases) are the only packets missing (~25 in 0.5 s).
    skipped_per_phase = (clock.skipped_deadlines - skipped_before) / len(phases)
    due = elapsed / 0.020
    assert max(sent) - min(sent) <= 2, sent
    assert all(due - 3 <= n + skipped_per_phase and n <= due + 1 for n in sent), (
        sent,
        due,
        skipped_per_phase,
    )
    for session in sessions:
        await session.close()
    assert not clock.running and clock.session_count == 0


# --- what the adapter adds: notices logged and counted, the jitter-buffer slot --------------


async def test_repeated_notices_are_counted_not_each_logged(media):
    from loguru import logger

    peer = await media.peer()
    session = await media.session(peer.addr, telephone_event_pt=TE_PT)
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        sender = RtpSender(0, 8000)
        for _ in range(12):  # twelve presses of "A": Pipecat has no such key
            for data in DtmfSender(sender, TE_PT, "A", 20, end_packets=1):
                peer.send(data, session.local_addr)
        assert await until(lambda: session.stats.dtmf_ignored == 12)
    finally:
        logger.remove(sink)
    ignored = [line for line in lines if "ignoring telephone-event 12" in line]
    assert len(ignored) == 5  # the first few, then only every 1000th
    assert ignored[0].startswith("RTPSession: ignoring") and ignored[-1].endswith("(5 so far)")


async def test_jitter_buffer_output_reaches_on_audio_on_ticks(media):
    class PassThrough:
        def __init__(self):
            self.due = []

        def put(self, packet, now):
            self.due.append(packet)

        def pop(self, now):
            due, self.due = self.due, []
            return due

    peer = await media.peer()
    session = await media.session(peer.addr, jitter_buffer=PassThrough())
    heard = []
    session.on_audio = heard.append
    for data in rtp_packets(3):
        peer.send(data, session.local_addr)
    assert await until(lambda: len(heard) == 3)
    assert heard == [PCMU.decode(PCMU.encode(tone(20)))] * 3
