"""Call quality in the media session: the peer's RTCP, our reception, the jitter buffer, FEC.

The sans-IO :class:`MediaSession` on a fake clock (ticks at ``k / 50`` s) with
exact RTCP exchanges; Opus in-band FEC with the real libopus through the
real :class:`JitterBuffer`; then the asyncio :class:`RTPSession` pair on
loopback (real sockets, real RTCP both ways).
"""

import asyncio
import random
import re
import socket
import struct

import numpy as np
import pytest
from pipecat.frames.frames import EndFrame, MetricsFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.codecs import PCMU, get_codec
from pipecat_sip.media import RTPSession
from pipecat_sip.rtp import MediaSession, RtpPacket, RtpSender
from pipecat_sip.rtp.jitterbuffer import JitterBuffer
from pipecat_sip.rtp.quality import CODEC_IMPAIRMENTS, G711_WITHOUT_PLC, CallQualityStats
from pipecat_sip.rtp.rtcp import compound, ntp_middle, parse_compound
from pipecat_sip.rtp.session import AudioReceived, QualityReport
from pipecat_sip.transport import CallQualityMetricsData, SIPParams, SIPTransport
from tests.fakes import FakeCall

SDP = ("192.0.2.10", 4000)
PEER_SSRC = 0xCAFE
WALL = 1_700_000_000.0  # wall clock minus the monotonic clock of these tests


def make(**kwargs) -> MediaSession:
    kwargs.setdefault("codec", PCMU)
    kwargs.setdefault("remote_addr", SDP)
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("rtcp", True)
    kwargs.setdefault("rtcp_interval_s", 1.0)
    session = MediaSession(**kwargs)
    session.wall_offset = WALL
    session.start(0.0)
    return session


def tone(ms: int, hz: float = 440.0, rate: int = 8000, amplitude: float = 6000.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def quality_events(session: MediaSession) -> list[CallQualityStats]:
    out = []
    while (event := session.next_event()) is not None:
        if isinstance(event, QualityReport):
            out.append(event.stats)
    return out


def block(ssrc: int, *, fraction=0, lost=0, seq=0, jitter=0, lsr=0, dlsr=0) -> bytes:
    return struct.pack(
        "!IIIIII", ssrc, (fraction << 24) | (lost & 0xFFFFFF), seq, jitter, lsr, dlsr
    )


def our_sr_ntp(datagrams) -> int:
    """The NTP timestamp of the SR among the datagrams a tick returned."""
    for data, _, is_rtcp in datagrams:
        if is_rtcp:
            report = parse_compound(data)[0]
            if report.ntp is not None:
                return report.ntp
    raise AssertionError("no SR sent")


def run_until_sr(session: MediaSession, first_tick: int = 1) -> tuple[int, float]:
    """Tick until our first SR goes out; return (its NTP timestamp, its time)."""
    for k in range(first_tick, first_tick + 200):
        out = session.on_tick(k / 50)
        if any(is_rtcp for _, _, is_rtcp in out):
            return our_sr_ntp(out), k / 50
    raise AssertionError("no RTCP report in 4 s")


# --- RTCP receive path -> QualityMonitor ----------------------------------------------------


def test_rtt_from_the_peers_report_of_our_sr_and_its_view_of_our_stream():
    session = make()
    sr_ntp, sent_at = run_until_sr(session)
    # The peer holds our SR for 0.25 s (DLSR), and its report arrives 0.3 s after we sent:
    # RTT = A - LSR - DLSR = 0.3 - 0.25 = 50 ms (RFC 3550 s.6.4.1).
    rr = compound(
        PEER_SSRC,
        "peer",
        None,
        [block(session.ssrc, fraction=64, lost=7, jitter=40, lsr=ntp_middle(sr_ntp), dlsr=16384)],
    )
    session.receive_rtcp(rr, (SDP[0], SDP[1] + 1), sent_at + 0.3)
    assert session.quality_monitor.rtt == pytest.approx(0.05, abs=1 / 65536 * 2)
    stats = session.quality_snapshot(sent_at + 0.4)
    assert stats.rtt_ms == pytest.approx(50.0, abs=0.05)
    assert stats.remote_fraction_lost == pytest.approx(0.25)
    assert stats.remote_cumulative_lost == 7
    assert stats.remote_jitter_ms == pytest.approx(5.0)  # 40 units at 8 kHz
    assert stats.report_age_s == pytest.approx(0.1)
    # A block about someone else's SSRC is not about us: nothing changes.
    other = compound(PEER_SSRC, "peer", None, [block(0x0BAD, lsr=ntp_middle(sr_ntp), dlsr=0)])
    session.receive_rtcp(other, (SDP[0], SDP[1] + 1), sent_at + 0.5)
    assert session.quality_monitor.reports == 1
    # RTCP from a stranger never reaches the monitor.
    forged = compound(PEER_SSRC, "x", None, [block(session.ssrc, lsr=ntp_middle(sr_ntp))])
    session.receive_rtcp(forged, ("198.51.100.66", 5001), sent_at + 0.5)
    assert session.quality_monitor.reports == 1 and session.quality_monitor.rtt == pytest.approx(
        0.05, abs=1e-4
    )


def test_rtcp_muxed_on_the_rtp_port_feeds_the_monitor_too():
    session = make()
    sr_ntp, sent_at = run_until_sr(session)
    rr = compound(PEER_SSRC, "peer", None, [block(session.ssrc, lsr=ntp_middle(sr_ntp), dlsr=0)])
    session.receive_rtp(rr, SDP, sent_at + 0.02)  # RFC 5761
    assert session.quality_monitor.rtt == pytest.approx(0.02, abs=1e-4)


def peer_stream(count: int, lose: set[int] = frozenset(), start: float = 0.0):
    """(arrival time, datagram) of a clean 20 ms PCMU stream from the peer, some lost."""
    sender = RtpSender(0, 8000, ssrc=PEER_SSRC, rng=random.Random(2))
    payload = PCMU.encode(tone(20))
    out = []
    for i in range(count):
        data = sender.packet(payload, 160)
        if i not in lose:
            out.append((start + 0.005 + i * 0.02, data))
    return out


def feed(session: MediaSession, stream, ticks: range) -> list:
    """Deliver the stream and tick; return every event."""
    events = []
    pending = list(stream)
    for k in ticks:
        now = k / 50
        while pending and pending[0][0] <= now:
            t, data = pending.pop(0)
            session.receive_rtp(data, SDP, t)
        session.on_tick(now)
        while (event := session.next_event()) is not None:
            events.append(event)
    return events


def test_periodic_reports_on_the_clock_and_a_final_one_at_close():
    session = make(quality_interval_s=1.0, rtcp=True)
    session.set_jitter_buffer(JitterBuffer(8000, 20))
    events = feed(session, peer_stream(150, lose={30, 31, 120}), range(1, 151))
    reports = [e.stats for e in events if isinstance(e, QualityReport)]
    assert len(reports) == 3  # at 1.0, 2.0 and 3.0 s
    assert [r.interval_s for r in reports] == pytest.approx([1.0, 1.0, 1.0])
    assert not any(r.final for r in reports)
    first, second, third = reports
    # First second: 49 or 50 packets expected of which 30 and 31 lost (reception stats).
    assert first.packets_lost == 2 and first.fraction_lost == pytest.approx(2 / 49, abs=0.002)
    assert first.codec == "PCMU" and first.buffer_delay_ms is not None
    assert first.packets_concealed == 2 and first.mos < second.mos
    assert second.fraction_lost == 0.0 and second.packets_lost == 2
    assert third.packets_lost == 3
    assert session.quality is third
    assert third.mos_min == pytest.approx(first.mos)
    # The whole call so far: 3 of ~148 lost.
    assert third.call_mos < second.mos and third.call_mos > first.mos
    session.close(3.1)
    (final,) = quality_events(session)
    assert final.final and session.quality is final
    assert final.packets_received == 147 and final.packets_lost == 3


def test_no_periodic_reports_by_default_and_no_final_one_for_a_session_that_never_ran():
    session = make()
    feed(session, peer_stream(100), range(1, 120))
    assert session.quality is None
    session.close(3.0)
    assert [s.final for s in quality_events(session)] == [True]
    idle = MediaSession(codec=PCMU, remote_addr=SDP, rng=random.Random(1), confirmed=False)
    idle.start(0.0)
    idle.close(1.0)
    assert quality_events(idle) == [] and idle.quality is None


def test_interval_changed_while_running_and_snapshots_do_not_disturb_it():
    session = make()
    session.set_quality_interval(0.5, 0.0)
    events = feed(session, peer_stream(30, lose={10}), range(1, 16))  # to 0.3 s
    assert not [e for e in events if isinstance(e, QualityReport)]
    polled = session.quality_snapshot(0.3)
    assert polled.packets_lost == 1 and session.quality is None
    events = feed(session, [], range(16, 26))  # to 0.5 s
    (report,) = [e.stats for e in events if isinstance(e, QualityReport)]
    assert report.interval_s == pytest.approx(0.5)  # from start, not from the poll
    assert report.packets_lost == 1 and report.fraction_lost > 0
    with pytest.raises(ValueError):
        session.set_quality_interval(-1, 0.6)


def test_the_rating_knows_whether_losses_are_concealed():
    direct = make()
    assert direct.quality_monitor.codec == G711_WITHOUT_PLC
    direct.set_jitter_buffer(JitterBuffer(8000, 20))
    assert direct.quality_monitor.codec == CODEC_IMPAIRMENTS["PCMU"]


def test_without_rtcp_the_jitter_buffer_gives_the_figures():
    session = make(rtcp=False, quality_interval_s=1.0)
    session.set_jitter_buffer(JitterBuffer(8000, 20))
    events = feed(session, peer_stream(60, lose={5}), range(1, 55))
    (report,) = [e.stats for e in events if isinstance(e, QualityReport)]
    assert report.rtt_ms is None and report.packets_lost == 1 and report.packets_concealed == 1


# --- Opus in-band FEC through the jitter buffer -----------------------------------------------


def test_jitter_buffer_peek_shows_the_next_slots_packet_only():
    buffer = JitterBuffer(8000, 20)

    def packet(seq, pt=0):
        return RtpPacket(pt, seq, seq * 160, 7, bytes(range(1, 161)))

    assert buffer.peek() is None
    for seq in (0, 1, 3, 4):  # 2 is lost
        buffer.put(packet(seq), 0.001 + seq * 0.02)
    played = []
    for k in range(4):
        items = buffer.pop(0.01 + k * 0.02)
        played.append([None if p is None else p.sequence_number for p in items])
        if played[-1] == [None]:
            peeked = buffer.peek()
            assert peeked is not None and peeked.sequence_number == 3
        elif played[-1] == [1]:
            assert buffer.peek() is None  # seq 2 is what the next slot needs; it is not here
    assert played == [[0], [1], [None], [3]]
    assert buffer.peek().sequence_number == 4  # still there: peek removes nothing
    assert buffer.pop(0.09) and buffer.peek() is None


def opus_codec():
    pytest.importorskip("opuslib_next", reason="the opus extra (opuslib-next) is needed")
    return get_codec("opus")


def opus_call(fec: bool, lose: set[int], count: int = 60, min_delay_ms: float = 20.0):
    """Our Opus session receiving a 16 kHz tone from a peer encoder, some packets lost.

    The buffer keeps at least ``min_delay_ms``: FEC needs the packet after a
    loss to be here when the loss's slot is played.

    Returns (session, PCM played per tick, the peer's original PCM per packet).
    """
    opus = opus_codec()
    peer = opus.for_stream("useinbandfec=1" if fec else None)
    session = make(
        codec=opus.for_stream("useinbandfec=1"), payload_type=111, rtcp=False, rng=random.Random(3)
    )
    session.set_jitter_buffer(JitterBuffer(48000, 20, min_delay_ms, max(min_delay_ms, 200)))
    sender = RtpSender(111, 48000, ssrc=PEER_SSRC, rng=random.Random(2))
    t = np.arange(320 * count) / 16000
    signal = (6000 * np.sin(2 * np.pi * 440 * t) * (1 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(
        "<i2"
    )
    frames = [signal[i * 320 : (i + 1) * 320].tobytes() for i in range(count)]
    stream = []
    for i, pcm in enumerate(frames):
        data = sender.packet(peer.encode(pcm), 960)
        if i not in lose:
            stream.append((0.005 + i * 0.02, data))
    events = feed(session, stream, range(1, count + 4))
    audio = [e for e in events if isinstance(e, AudioReceived)][:count]  # not the tail after it
    assert len(audio) == count
    return session, audio, frames


def snr_db(reference: bytes, got: bytes) -> float:
    a = np.frombuffer(reference, "<i2").astype(float)
    b = np.frombuffer(got, "<i2").astype(float)
    best = -np.inf
    for lag in range(0, 200):  # Opus's decoder delay at 16 kHz is ~6.5 ms (104 samples)
        x, y = a[: len(a) - lag], b[lag:]
        best = max(best, 10 * np.log10(np.sum(x**2) / max(np.sum((x - y) ** 2), 1e-9)))
    return best


def test_opus_loss_is_rebuilt_from_the_next_packets_fec_before_concealment():
    lost = {20, 30}
    with_fec, audio, frames = opus_call(True, lost)
    assert with_fec.fec_recovered == 2
    concealed_at = [i for i, e in enumerate(audio) if e.concealed]
    assert len(concealed_at) == 2
    played = b"".join(e.pcm for e in audio)
    without, audio_plc, _ = opus_call(False, lost)
    assert without.fec_recovered == 0  # the peer sent no FEC: libopus concealment
    played_plc = b"".join(e.pcm for e in audio_plc)
    # Around each loss (the lost frame and the one after), FEC is much closer to the original.
    for i in concealed_at:
        ref = b"".join(frames[i - 1 : i + 2])
        got = played[(i - 1) * 640 : (i + 2) * 640]
        got_plc = played_plc[(i - 1) * 640 : (i + 2) * 640]
        assert snr_db(ref, got) > snr_db(ref, got_plc) + 3
    stats = with_fec.quality_snapshot(2.0)
    plain = without.quality_snapshot(2.0)
    assert stats.packets_recovered_fec == 2 and plain.packets_recovered_fec == 0
    # (both also count the ticks concealed after the stream stopped)
    assert stats.packets_concealed == plain.packets_concealed - 2
    assert stats.mos > plain.mos


def test_opus_fec_needs_the_next_packet_in_the_buffer():
    # On a clean path with no minimum delay the packet after a loss arrives after the
    # loss's slot was played: concealment, no FEC (set jitter_buffer_min_ms to one ptime).
    session, audio, _ = opus_call(True, {20, 30}, min_delay_ms=0.0)
    assert session.fec_recovered == 0 and sum(e.concealed for e in audio) == 2


def test_a_stream_codec_keeps_the_peers_fmtp_in_the_session():
    opus = opus_codec()
    session = make(codec=opus.for_stream("useinbandfec=1;maxaveragebitrate=20000"))
    assert session._stream_codec is not session.codec
    assert session._stream_codec.inband_fec  # our encoder adds the FEC the peer asked for
    plain = make(codec=opus.for_stream())
    assert not plain._stream_codec.inband_fec


def test_opus_has_fec_reads_the_lbrr_flag():
    opus_codec()
    from pipecat_sip.codecs.opus import OpusCodec

    t = np.arange(320 * 30) / 16000
    pcm = (6000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
    for fmtp, expect in (("useinbandfec=1", True), (None, False)):
        enc = OpusCodec().for_stream(fmtp)
        packets = [enc.encode(pcm[i * 640 : (i + 1) * 640]) for i in range(30)]
        flags = [OpusCodec.has_fec(p) for p in packets]
        assert any(flags) is expect
        if expect:  # where the flag is set, decode_fec differs from plain concealment
            i = flags.index(True, 5)
            fec = OpusCodec().for_stream()
            plc = OpusCodec().for_stream()
            for p in packets[: i - 1]:
                fec.decode(p), plc.decode(p)
            assert fec.decode_fec(packets[i], 320) != plc.conceal(320)
    assert not OpusCodec.has_fec(b"") and not OpusCodec.has_fec(b"\x48")
    assert not OpusCodec.has_fec(bytes([0xF8, 0xFF]))  # CELT-only: never FEC
    assert not OpusCodec.has_fec(bytes([0x4C, 0xFF]))  # stereo: not read


def test_g711_loss_does_not_peek():
    session = make(rtcp=False)
    calls = []

    class Spy(JitterBuffer):
        def peek(self):
            calls.append(1)
            return super().peek()

    session.set_jitter_buffer(Spy(8000, 20))
    feed(session, peer_stream(20, lose={5}), range(1, 22))
    assert calls == [] and session.fec_recovered == 0


# --- the asyncio adapter on loopback ----------------------------------------------------------


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """An RTP socket on an even port and its RTCP socket on the next one."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtcp.close()
            else:
                rtp.setblocking(False)
                rtcp.setblocking(False)
                return rtp, rtcp
        rtp.close()
    raise RuntimeError("no free even/odd port pair")


async def test_rtp_sessions_on_loopback_report_rtt_and_final_stats():
    a_rtp, a_rtcp = udp_pair()
    b_rtp, b_rtcp = udp_pair()
    a = RTPSession(
        sock=a_rtp,
        rtcp_sock=a_rtcp,
        remote_addr=b_rtp.getsockname(),
        codec=PCMU,
        rtcp_interval_s=0.2,
        quality_interval_s=0.5,
    )
    b = RTPSession(
        sock=b_rtp,
        rtcp_sock=b_rtcp,
        remote_addr=a_rtp.getsockname(),
        codec=PCMU,
        rtcp_interval_s=0.2,
    )
    a.enable_jitter_buffer()
    got: list[CallQualityStats] = []
    a.on_quality = got.append
    await a.start()
    await b.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any(s.rtt_ms is not None for s in got) and len(got) >= 2:
                break
        assert len(got) >= 2 and not any(s.final for s in got)
        with_rtt = [s for s in got if s.rtt_ms is not None]
        assert with_rtt and 0.0 <= with_rtt[-1].rtt_ms < 50.0  # loopback
        assert with_rtt[-1].remote_cumulative_lost == 0
        assert got[-1].packets_received > 10 and got[-1].packets_lost == 0
        assert got[-1].mos > 4.3 and a.quality is got[-1]
        polled = a.quality_snapshot()
        assert polled.packets_received >= got[-1].packets_received and a.quality is got[-1]
    finally:
        await b.close()
        await a.close()
    assert got[-1].final and a.quality is got[-1] and got[-1].packets_lost == 0


# --- SIPTransport: on_call_quality_stats and Pipecat metrics ----------------------------------


class MetricsCapture(FrameProcessor):
    def __init__(self):
        super().__init__()
        self.metrics: list[CallQualityMetricsData] = []

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, MetricsFrame):
            self.metrics += [d for d in frame.data if isinstance(d, CallQualityMetricsData)]
        await self.push_frame(frame, direction)


async def test_transport_fires_quality_events_and_pushes_metrics_frames():
    a_rtp, a_rtcp = udp_pair()
    b_rtp, b_rtcp = udp_pair()
    media = RTPSession(
        sock=a_rtp,
        rtcp_sock=a_rtcp,
        remote_addr=b_rtp.getsockname(),
        codec=PCMU,
        rtcp_interval_s=0.2,
        rtp_timeout_s=0,
    )
    peer = RTPSession(
        sock=b_rtp,
        rtcp_sock=b_rtcp,
        remote_addr=a_rtp.getsockname(),
        codec=PCMU,
        rtcp_interval_s=0.2,
    )
    await media.start()
    await peer.start()
    call = FakeCall(media=media)
    transport = SIPTransport(
        call, SIPParams(audio_out_end_silence_secs=0, quality_stats_interval_s=0.3)
    )
    assert media.quality_interval_s == 0.3 and media.jitter_buffer is not None
    capture = MetricsCapture()
    worker = PipelineWorker(
        Pipeline([transport.input(), capture, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=8000, enable_metrics=True),
        cancel_on_idle_timeout=False,
    )
    seen: list[CallQualityStats] = []

    @transport.event_handler("on_call_quality_stats")
    async def on_stats(transport, stats):
        seen.append(stats)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(capture.metrics) >= 2 and any(s.rtt_ms is not None for s in seen):
                break
        assert len(seen) >= 2 and len(capture.metrics) >= 2
        data = capture.metrics[-1]
        assert data.call_id == call.call_id and data.codec == "PCMU" and not data.final
        assert data.processor == transport.input().name and 4.0 < data.mos <= 4.5
        assert transport.quality is media.quality and transport.quality is not None
        await worker.queue_frames([EndFrame()])
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done
    finally:
        if not task.done():
            task.cancel()
        await peer.close()
    await media.close()  # the call's teardown closes the media: the final figures
    for _ in range(50):
        if seen and seen[-1].final:
            break
        await asyncio.sleep(0.01)
    assert seen[-1].final and seen[-1].packets_received > 10
    assert not any(m.final for m in capture.metrics)  # the final one is an event only


# --- the call-ended log line -----------------------------------------------------------------


async def test_call_ended_log_line_summarises_the_quality():
    from loguru import logger

    from tests.helpers.server import Recorder, start_server, wait_for

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    recorder = Recorder()
    answering = await start_server(recorder)
    calling = await start_server(Recorder(answer=False))
    try:
        call = await calling.call(f"sip:bot@127.0.0.1:{answering.port}", timeout=5)
        assert await wait_for(lambda: recorder.calls and recorder.calls[0].established)
        await asyncio.sleep(0.6)
        ours = recorder.calls[0]
        polled = ours.quality  # None until the first report, or the latest figures
        assert polled is None or polled.codec
        await call.hangup()
        assert await wait_for(lambda: ours.call_id in recorder.ended)
        assert ours.quality is not None and ours.quality.final
        assert ours.quality.packets_received >= 20 and ours.quality.packets_lost == 0
    finally:
        await calling.stop()
        await answering.stop()
        logger.remove(sink)
    # (both ends run in this process under one Call-ID: ours is the one the BYE ended)
    ended = [line for line in lines if f"SIPCall#{ours.call_id}: ended (remote_bye)" in line]
    assert len(ended) == 1, lines[-20:]
    assert re.search(
        r"; MOS \d\.\d\d \(min \d\.\d\d\), lost 0 \(0\.0%\), late 0, concealed \d+, jitter",
        ended[0],
    ), ended[0]
