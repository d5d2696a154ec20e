"""SIPTransport in real Pipecat pipelines, against FakeCall / FakeMedia."""

import asyncio
import socket
from collections.abc import Callable

import numpy as np
import pytest
import soxr
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    ClientConnectedFrame,
    EndFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.workers.runner import WorkerRunner

from pipecat_sip.codecs import get_codec
from pipecat_sip.media import RTPSession
from pipecat_sip.rtp.packet import RtpPacket
from pipecat_sip.rtp.sender import RtpSender
from pipecat_sip.sip.invite import CallState
from pipecat_sip.transport import LowLatencyResampler, SIPParams, SIPTransport
from tests.fakes import FakeCall, FakeMedia

PACKET = 320  # bytes of PCM16 in a 20 ms packet at 8 kHz


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


def tone(rate: int, samples: int, freq: float = 440.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(samples) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


async def started_call(**kwargs) -> FakeCall:
    call = FakeCall(**kwargs)
    await call.media.start()
    return call


def quiet_params(**kwargs) -> SIPParams:
    return SIPParams(audio_out_end_silence_secs=0, **kwargs)


# Input


@pytest.mark.parametrize("pipeline_rate", [8000, 16000])
async def test_input_one_frame_per_packet_at_pipeline_rate(pipeline_rate):
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_out_enabled=False))
    packets = [tone(8000, 160, amplitude=1000 + i) for i in range(10)]

    async def feed():
        await wait_until(lambda: call.media.on_audio is not None)
        for packet in packets:
            call.media.receive_audio(packet)

    feeder = asyncio.create_task(feed())
    down, _ = await run_test(
        transport.input(),
        frames_to_send=[SleepFrame(0.3)],
        pipeline_params=PipelineParams(audio_in_sample_rate=pipeline_rate),
    )
    await feeder

    assert isinstance(down[0], ClientConnectedFrame)
    audio = [f for f in down if isinstance(f, InputAudioRawFrame)]
    assert len(audio) == len(packets)
    for frame in audio:
        assert frame.sample_rate == pipeline_rate
        assert frame.num_channels == 1
        assert len(frame.audio) == PACKET * pipeline_rate // 8000
    if pipeline_rate == 8000:
        assert [f.audio for f in audio] == packets  # untouched
    else:
        # The tone survives resampling, delayed by the resampler's look-ahead.
        got = np.frombuffer(b"".join(f.audio for f in audio), "<i2").astype(float)
        want = soxr.resample(np.frombuffer(b"".join(packets), "<i2"), 8000, 16000, "MQ")
        delay = 16000 * 4 // 1000
        assert np.max(np.abs(got[delay + 50 : -50] - want[50 : len(got) - delay - 50])) < 20


async def test_input_dtmf_frames_and_event():
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_out_enabled=False))
    keys = []

    @transport.event_handler("on_dtmf")
    async def on_dtmf(transport, key):
        keys.append(key)

    async def feed():
        await wait_until(lambda: call.media.on_dtmf is not None)
        for key in "5#*":
            call.media.receive_dtmf(key)

    feeder = asyncio.create_task(feed())
    down, _ = await run_test(transport.input(), frames_to_send=[SleepFrame(0.2)])
    await feeder

    dtmf = [f.button for f in down if isinstance(f, InputDTMFFrame)]
    assert dtmf == [KeypadEntry.FIVE, KeypadEntry.POUND, KeypadEntry.STAR]
    assert keys == ["5", "#", "*"]


async def test_input_bounded_when_the_pipeline_falls_behind():
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_out_enabled=False))
    burst = [tone(8000, 160, amplitude=100 + i) for i in range(400)]

    async def feed():
        await wait_until(lambda: call.media.on_audio is not None)
        for packet in burst:  # 8 s of audio before the pipeline runs once
            call.media.receive_audio(packet)

    feeder = asyncio.create_task(feed())
    down, _ = await run_test(
        transport.input(),
        frames_to_send=[SleepFrame(0.3)],
        pipeline_params=PipelineParams(audio_in_sample_rate=8000),
    )
    await feeder

    audio = [f.audio for f in down if isinstance(f, InputAudioRawFrame)]
    assert audio == burst[:250]  # 5 s kept, in order; the rest dropped


# Output


async def test_output_odd_length_frame_is_packetized():
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_in_enabled=False))
    audio = tone(8000, 333)

    await run_test(
        transport.output(),
        frames_to_send=[
            OutputAudioRawFrame(audio=audio, sample_rate=8000, num_channels=1),
            TTSStoppedFrame(),
        ],
        pipeline_params=PipelineParams(audio_out_sample_rate=8000),
    )

    packets = call.media.sent_packets
    assert all(len(p) == PACKET for p in packets)
    assert len(packets) == 3  # 333 samples -> 160 + 160 + 13 padded
    assert b"".join(packets) == audio + bytes(3 * PACKET - len(audio))


async def test_output_resampled_from_pipeline_rate_to_codec_rate():
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_in_enabled=False))
    audio = tone(16000, 1600)  # 100 ms

    await run_test(
        transport.output(),
        frames_to_send=[
            OutputAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1),
            TTSStoppedFrame(),
        ],
        pipeline_params=PipelineParams(audio_out_sample_rate=16000),
    )

    packets = call.media.sent_packets
    assert all(len(p) == PACKET for p in packets)
    sent = np.frombuffer(b"".join(packets), "<i2").astype(float)
    want = soxr.resample(np.frombuffer(audio, "<i2"), 16000, 8000, "MQ")
    delay = 8000 * 4 // 1000
    # All 100 ms arrive (the tail is flushed before BYE), delayed by 4 ms.
    assert len(sent) >= len(want) + delay
    assert np.max(np.abs(sent[delay + 20 : delay + len(want) - 20] - want[20:-20])) < 20
    assert call.hangup_calls == 1


async def test_interruption_clears_media_queue():
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_in_enabled=False))
    speech = np.full(8000 * 2, 1000, dtype="<i2").tobytes()  # 2 s, never "silence"

    await run_test(
        transport.output(),
        frames_to_send=[
            OutputAudioRawFrame(audio=speech, sample_rate=8000, num_channels=1),
            SleepFrame(0.3),
            InterruptionFrame(),
            SleepFrame(0.2),
        ],
        pipeline_params=PipelineParams(audio_out_sample_rate=8000),
    )

    events = call.media.events
    clears = [i for i, e in enumerate(events) if e[0] == "clear"]
    assert clears, events
    first = clears[0]
    # Our own backlog was at most about a packet when the caller barged in.
    assert events[first][1] <= 2 * PACKET
    # Nothing of the interrupted speech went out after the clear.
    after = [e[1] for e in events[first:] if e[0] == "audio"]
    assert not any(np.any(np.frombuffer(p, "<i2")) for p in after)
    spoken = [e for e in events[:first] if e[0] == "audio"]
    assert 5 <= len(spoken) <= 40  # ~0.3 s of the 2 s was played


async def test_dtmf_out():
    call = await started_call()
    transport = SIPTransport(call, quiet_params(audio_in_enabled=False, dtmf_duration_ms=120))

    await run_test(
        transport.output(),
        frames_to_send=[
            OutputDTMFFrame(button=KeypadEntry.ONE),
            OutputDTMFUrgentFrame(buttons=[KeypadEntry.STAR, KeypadEntry.NINE]),
            SleepFrame(0.1),
        ],
    )

    dtmf = [e for e in call.media.events if e[0] == "dtmf"]
    assert sorted(dtmf) == sorted([("dtmf", "1", 120), ("dtmf", "*", 120), ("dtmf", "9", 120)])
    # An urgent frame's keys keep their order.
    assert [e[1] for e in dtmf if e[1] != "1"] == ["*", "9"]


# Lifecycle


class Session:
    """A pipeline [input, *middle, output] over a FakeCall, with event records."""

    def __init__(
        self,
        call: FakeCall,
        params: SIPParams | None = None,
        middle: tuple[FrameProcessor, ...] = (),
        rate: int = 8000,
    ):
        self.call = call
        self.transport = SIPTransport(call, params or quiet_params())
        self.worker = PipelineWorker(
            Pipeline([self.transport.input(), *middle, self.transport.output()]),
            params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
            cancel_on_idle_timeout=False,
        )
        self.connected: list = []
        self.disconnected: list = []

        @self.transport.event_handler("on_client_connected")
        async def on_connected(transport, client):
            self.connected.append(transport.get_client_id(client))

        @self.transport.event_handler("on_client_disconnected")
        async def on_disconnected(transport, client):
            self.disconnected.append((client, transport.end_reason))

    async def run(self, action, timeout: float = 5.0, wait_connected: bool = True) -> None:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        task = asyncio.create_task(runner.run())
        try:
            if wait_connected:
                await wait_until(lambda: bool(self.connected) or self.transport.far_end_gone)
            else:
                await wait_until(lambda: self.transport.input().started)
            await action()
            # Not wait_for: the runner swallows the cancellation wait_for sends on timeout.
            done, _ = await asyncio.wait({task}, timeout=timeout)
            assert done, "the pipeline did not end"
        finally:
            if not task.done():
                task.cancel()


async def test_end_frame_hangs_up_once_after_audio():
    call = await started_call()
    session = Session(call)
    speech = np.full(8000 // 5, 1000, dtype="<i2").tobytes()  # 200 ms

    async def speak_and_end():
        await session.worker.queue_frames(
            [OutputAudioRawFrame(audio=speech, sample_rate=8000, num_channels=1), EndFrame()]
        )

    await session.run(speak_and_end)

    assert session.connected == [call.call_id]
    assert call.hangup_calls == 1 and call.byes_sent == 1
    assert call.end_reason == "local_bye"
    assert b"".join(call.media.sent_packets) == speech  # all of it played before BYE
    assert session.disconnected == []  # we hung up; the caller did not


async def test_remote_hangup_fires_disconnected_without_bye():
    call = await started_call()
    session = Session(call)

    await session.run(lambda: call.remote_hangup("remote_bye"))

    assert session.disconnected == [(call, "remote_bye")]
    assert call.hangup_calls == 0
    assert call.media.on_audio is None and call.media.on_dtmf is None


async def test_rtp_timeout_ends_pipeline_without_bye():
    call = await started_call()
    session = Session(call)

    await session.run(lambda: call.remote_hangup("rtp_timeout"))

    assert session.disconnected == [(call, "rtp_timeout")]
    assert call.hangup_calls == 0


async def test_cancel_frame_hangs_up():
    call = await started_call()
    session = Session(call)

    await session.run(lambda: session.worker.cancel(reason="test"))

    assert call.hangup_calls == 1 and call.byes_sent == 1
    assert session.disconnected == []


async def test_call_ended_before_pipeline_started():
    call = await started_call()
    await call.remote_hangup()
    session = Session(call)

    async def nothing():
        pass

    await session.run(nothing)

    assert session.connected == []
    assert [c for c, _ in session.disconnected] == [call]
    assert call.hangup_calls == 0


async def test_connected_fires_once_the_ack_arrives():
    call = await started_call(state=CallState.ACCEPTED)
    session = Session(call)

    async def ack_then_end():
        await asyncio.sleep(0.1)
        assert session.connected == []  # answered, no ACK yet
        call.establish()
        await wait_until(lambda: bool(session.connected))
        await session.worker.queue_frame(EndFrame())

    await session.run(ack_then_end, wait_connected=False)

    assert session.connected == [call.call_id]
    assert call.hangup_calls == 1


class Capture(FrameProcessor):
    def __init__(self):
        super().__init__()
        self.audio: list[InputAudioRawFrame] = []

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.audio.append(frame)
        await self.push_frame(frame, direction)


class Peer(asyncio.DatagramProtocol):
    def __init__(self):
        self.packets: list[RtpPacket] = []

    def datagram_received(self, data, addr):
        self.packets.append(RtpPacket.parse(data))


async def test_with_real_rtp_session_on_loopback():
    """Transport + the real RTPSession, a UDP peer on 127.0.0.1, pipeline at 16 kHz."""
    loop = asyncio.get_running_loop()
    peer_udp, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    codec = get_codec("PCMU")
    media = RTPSession(
        sock=sock,
        remote_addr=peer_udp.get_extra_info("sockname"),
        codec=codec,
        telephone_event_pt=101,
        rtp_timeout_s=0,
    )
    await media.start()
    call = FakeCall(media=media)
    capture = Capture()
    session = Session(call, middle=(capture,), rate=16000)
    bot_speech = tone(16000, 3200, freq=500)  # 200 ms

    async def talk():
        sender = RtpSender(0, 8000)
        for _ in range(10):
            peer_udp.sendto(sender.packet(codec.encode(tone(8000, 160)), 160), media.local_addr)
        await wait_until(lambda: len(capture.audio) >= 10)
        await session.worker.queue_frames(
            [
                OutputAudioRawFrame(audio=bot_speech, sample_rate=16000, num_channels=1),
                OutputDTMFFrame(button=KeypadEntry.SEVEN),
                EndFrame(),
            ]
        )

    try:
        await session.run(talk)
    finally:
        peer_udp.close()

    assert len(capture.audio) == 10
    assert all(f.sample_rate == 16000 and len(f.audio) == 640 for f in capture.audio)
    audio = [p for p in peer.packets if p.payload_type == 0]
    assert all(len(p.payload) == 160 for p in audio)
    loud = [
        p for p in audio if np.max(np.abs(np.frombuffer(codec.decode(p.payload), "<i2"))) > 2000
    ]
    assert 10 <= len(loud) <= 11  # 200 ms, 4 ms later
    events = [p for p in peer.packets if p.payload_type == 101]
    assert events and all(p.payload[0] == 7 for p in events)
    assert call.hangup_calls == 1 and media.closed


async def test_hold_and_resume_fire_transport_events():
    call = await started_call()
    transport = SIPTransport(call, quiet_params())
    events = []

    @transport.event_handler("on_hold")
    async def on_hold(transport, client):
        events.append(("hold", client))

    @transport.event_handler("on_resume")
    async def on_resume(transport, client):
        events.append(("resume", client))

    async def far_end():
        await wait_until(lambda: call.media.on_audio is not None)
        await call.set_held(True)
        await wait_until(lambda: len(events) == 1)
        await call.set_held(False)

    task = asyncio.create_task(far_end())
    await run_test(transport.input(), frames_to_send=[SleepFrame(0.3)])
    await task
    assert events == [("hold", call), ("resume", call)]


def test_transport_api():
    call = FakeCall(media=FakeMedia())
    transport = SIPTransport(
        call, SIPParams(send_silence_when_idle=False, rtp_timeout_s=0), input_name="in"
    )
    assert transport.call is call
    assert transport.call_info.call_id == call.call_id
    assert transport.get_client_id(call) == call.call_id
    assert transport.input().name == "in"
    assert call.call_id in str(transport) and call.call_id in str(transport.output())
    assert call.media.send_silence is False and call.media.rtp_timeout_s == 0
    with pytest.raises(ValueError):
        SIPParams(rtp_timeout_s=-1)
    # RTP writes wait only for the packet clock: no per-chunk write timeout.
    assert SIPParams().audio_out_write_timeout_secs is None
    assert SIPParams(audio_out_write_timeout_secs=5).audio_out_write_timeout_secs == 5
    with pytest.raises(ValueError):
        SIPParams(audio_out_write_timeout_secs=0)


# Resampler


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (24000, 8000), (8000, 24000)]
)
def test_resampler_delay_within_one_packet(in_rate, out_rate):
    resampler = LowLatencyResampler(in_rate, out_rate)
    chunk = in_rate // 50  # 20 ms
    signal = np.zeros(chunk * 10, dtype="<i2")
    impulse_at = chunk * 3 + 7
    signal[impulse_at] = 20000

    outputs = [
        resampler.resample(signal[i : i + chunk].tobytes()) for i in range(0, len(signal), chunk)
    ]

    # No bursts: every 20 ms in gives 20 ms out.
    assert {len(o) for o in outputs} == {2 * out_rate // 50}
    out = np.frombuffer(b"".join(outputs), "<i2")
    peak = int(np.argmax(np.abs(out.astype(int))))
    delay_ms = 1000 * (peak / out_rate - impulse_at / in_rate)
    print(f"{in_rate}->{out_rate} Hz: added delay {delay_ms:.2f} ms")
    assert 0 <= delay_ms < 20
    assert delay_ms == pytest.approx(resampler.delay_ms, abs=1000 / min(in_rate, out_rate))


def g711_noise_db(pcm: np.ndarray, rate: int) -> float:
    """Power of the quantization noise a mu-law round trip adds to `pcm`, dB."""
    at_8k = soxr.resample(pcm, rate, 8000, "VHQ") if rate != 8000 else pcm
    codec = get_codec("PCMU")
    coded = np.frombuffer(codec.decode(codec.encode(at_8k.astype("<i2").tobytes())), "<i2")
    return 10 * np.log10(np.mean((coded.astype(float) - at_8k.astype(float)) ** 2))


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (24000, 8000), (8000, 24000)]
)
def test_resampler_error_far_under_g711_noise(in_rate, out_rate):
    # Fed in odd-sized pieces, the windowed output differs from resampling the
    # whole signal at once only by the filter taps beyond the look-ahead: at
    # least 15 dB under the noise G.711 adds to the same audio.
    rng = np.random.default_rng(7)
    x = rng.normal(0, 6000, in_rate * 2).clip(-32768, 32767).astype("<i2")
    resampler = LowLatencyResampler(in_rate, out_rate)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 900))  # odd sizes too
        parts.append(resampler.resample(x[i : i + n].tobytes()))
        i += n
    parts.append(resampler.flush())
    got = np.frombuffer(b"".join(parts), "<i2").astype(float)
    want = soxr.resample(x, in_rate, out_rate, "MQ").astype(float)
    delay = round(resampler.delay_ms * out_rate / 1000)
    error = got[delay : delay + len(want)] - want
    error_db = 10 * np.log10(np.mean(error[100:-100] ** 2))
    g711_db = g711_noise_db(want, out_rate)
    print(f"{in_rate}->{out_rate} Hz: error {error_db:.1f} dB, G.711 noise {g711_db:.1f} dB")
    assert error_db <= g711_db - 15


def test_resampler_rejects_aliases():
    # Without an anti-alias filter these would fold into the telephone band at
    # 8 kHz (5 kHz -> 3 kHz, 4.5 kHz -> 3.5 kHz); G.712 asks >= 25 dB.
    for rate, freq in ((24000, 5000), (16000, 4500), (16000, 6000)):
        out = LowLatencyResampler(rate, 8000).resample(tone(rate, rate, freq, amplitude=10000))
        assert np.max(np.abs(np.frombuffer(out, "<i2")[200:])) <= 10000 * 10 ** (-45 / 20)
    for rate in (24000, 16000):
        passband = LowLatencyResampler(rate, 8000).resample(tone(rate, rate, freq=3400))
        assert np.max(np.abs(np.frombuffer(passband, "<i2")[200:])) > 7500


def test_resampler_rejects_bad_arguments():
    with pytest.raises(ValueError):
        LowLatencyResampler(0, 8000)
    with pytest.raises(ValueError):
        LowLatencyResampler(8000, 16000, quality="VHQ")


async def _real_media_output(peer_protocol):
    """A SIPTransport over a real RTPSession sending to a loopback peer."""
    loop = asyncio.get_running_loop()
    peer_udp, peer = await loop.create_datagram_endpoint(peer_protocol, local_addr=("127.0.0.1", 0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    media = RTPSession(
        sock=sock,
        remote_addr=peer_udp.get_extra_info("sockname"),
        codec=get_codec("PCMU"),
        rtp_timeout_s=0,
    )
    await media.start()
    call = FakeCall(media=media)
    return SIPTransport(call, SIPParams()), media, peer_udp, peer


class TimedPeer(asyncio.DatagramProtocol):
    def __init__(self):
        self.packets: list[tuple[float, RtpPacket]] = []

    def datagram_received(self, data, addr):
        self.packets.append((asyncio.get_running_loop().time(), RtpPacket.parse(data)))


def _loud(packet: RtpPacket) -> bool:
    pcm = np.frombuffer(get_codec("PCMU").decode(packet.payload), "<i2")
    return int(np.max(np.abs(pcm))) > 2000


async def test_paced_cadence_over_seconds_with_real_rtp_session():
    """3 s of bot audio in uneven TTS-like chunks: one packet per 20 ms, no gaps."""
    transport, media, peer_udp, peer = await _real_media_output(TimedPeer)
    chunks = [tone(8000, n) for n in (1234, 4000, 977, 8000, 3100, 5689)]  # 23000 samples
    try:
        await run_test(
            transport.output(),
            frames_to_send=[
                *(OutputAudioRawFrame(audio=c, sample_rate=8000, num_channels=1) for c in chunks),
                SleepFrame(3.2),
            ],
            pipeline_params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        )
    finally:
        peer_udp.close()
    audio = [(t, p) for t, p in peer.packets if _loud(p)]
    assert 140 <= len(audio) <= 146, len(audio)  # 23000 samples = 143.75 packets
    times = np.array([t for t, _ in audio])
    intervals = np.diff(times) * 1000
    assert abs(intervals.mean() - 20.0) < 1.0, intervals.mean()
    packets = [p for _, p in peer.packets]
    for before, after in zip(packets, packets[1:], strict=False):
        assert after.sequence_number == (before.sequence_number + 1) % 65536
        assert after.timestamp == (before.timestamp + 160) % 2**32
    assert sum(p.marker for _, p in audio) == 1  # one talkspurt


async def test_interruption_silences_the_wire_within_two_packets():
    transport, media, peer_udp, peer = await _real_media_output(TimedPeer)
    loop = asyncio.get_running_loop()
    marks: dict[str, float] = {}

    class Mark(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, InterruptionFrame):
                marks["interruption"] = loop.time()
            await self.push_frame(frame, direction)

    speech = tone(8000, 8000 * 3)  # 3 s the caller must not hear in full
    try:
        pipeline = Pipeline([Mark(), transport.output()])
        await run_test(
            pipeline,
            frames_to_send=[
                OutputAudioRawFrame(audio=speech, sample_rate=8000, num_channels=1),
                SleepFrame(0.6),
                InterruptionFrame(),
                SleepFrame(0.5),
            ],
            pipeline_params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        )
    finally:
        peer_udp.close()
    t_interrupt = marks["interruption"]
    loud_after = [t for t, p in peer.packets if _loud(p) and t > t_interrupt]
    assert len(loud_after) <= 2, len(loud_after)
    assert loud_after == [] or loud_after[-1] - t_interrupt <= 0.045
    assert any(_loud(p) for t, p in peer.packets if t < t_interrupt)
