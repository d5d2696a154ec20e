"""Added-latency benchmark of the SIP transport (a script, not a test).

In one process: a real RTPSession on a loopback UDP socket, a SIPTransport
over it (the call is tests/fakes.FakeCall: no SIP signalling is involved in
these figures) and a pipeline ``[input, Probe, output]`` at 8 kHz or 16 kHz.
A peer (two threads with their own UDP socket) plays the caller.

1. Echo phase: the peer sends 20 ms PCMU packets every 20.1 ms (so the
   packets' phase against the transport's send clock sweeps through a whole
   period), low noise with a 1 ms pulse in every 5th packet. The Probe
   echoes each InputAudioRawFrame as an OutputAudioRawFrame.
   - input delay: packet handed to the socket (peer, ``time.time_ns`` just
     before sendto) -> the InputAudioRawFrame holding the pulse reaches the
     Probe, plus the pulse's shift inside the audio (resampler look-ahead);
   - output delay: the Probe pushes the OutputAudioRawFrame holding the
     pulse -> the RTP packet holding it arrives at the peer (kernel
     timestamp, SO_TIMESTAMPNS), plus the pulse's shift inside the audio.
     This includes waiting for the next 20 ms send tick (0-20 ms).
2. Barge-in phase: the bot speaks (1 s tone queued into the pipeline); after
   300-600 ms the Probe broadcasts an InterruptionFrame. ``bargein_ms``: the
   arrival of the last loud packet at the peer minus the interruption time
   (negative: the last bot packet had already left when the interruption
   came, nothing was sent after it); ``bargein_quiet_ms``: the first quiet
   packet after it, i.e. when the caller's ear gets silence.

3. Jitter-buffer phase (8 kHz pipeline, the echo phase alone), for each of
   ``--jitter-ms`` (default 0 and 30) with the jitter buffer on and off:
   the peer delays each packet by a uniform 0..J ms before it goes on the
   wire (a simulated arrival pattern: above 20 ms packets overtake each
   other), the real RTPSession and SIPTransport receive it.
   - ``jb_wait_ms``: per audio packet, the jitter buffer's own delay: from
     ``put`` (the datagram's arrival in the session) to the ``pop`` that
     plays it, on the session's clock (includes the wait for the next 20 ms
     tick, which the direct path does not have);
   - ``input_ms``: the packet's nominal send time (before the added jitter)
     -> its InputAudioRawFrame at the Probe (network jitter included);
   - ``order``: frames the pipeline received out of sequence or twice, and
     the jitter buffer's late/lost/concealed counts.

Prints one JSON line per pipeline rate and per jitter-buffer case, then tables.

Usage: .venv/bin/python bench/latency.py [--rates 8000,16000] [--seconds 6] [--bargeins 10]
                                         [--jitter-ms 0,30] [--jb-seconds 6]
       .venv/bin/python bench/latency.py --quick
"""

import argparse
import asyncio
import heapq
import json
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from pipecat_sip.codecs import PCMU  # noqa: E402
from pipecat_sip.media import RTPSession  # noqa: E402
from pipecat_sip.rtp import RtpSender  # noqa: E402
from pipecat_sip.transport import LowLatencyResampler, SIPParams, SIPTransport  # noqa: E402
from tests.fakes import FakeCall  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PULSE_AT = 8  # sample of the pulse in its 160-sample packet
PULSE_EVERY = 5
PULSE_LEVEL = 8000  # detection threshold (pulses are 20000, noise 100)
LOUD_LEVEL = 2000  # barge-in: a packet of bot speech (tone 10000, silence 0)
SEND_PERIOD_S = 0.0201


def pulse_packet_pcm(pulse: bool, rng: np.random.Generator) -> bytes:
    pcm = rng.normal(0, 100, 160)
    if pulse:
        pcm[PULSE_AT : PULSE_AT + 8] = 20000
    return pcm.clip(-32768, 32767).astype("<i2").tobytes()


def peak(pcm: bytes) -> tuple[int, int]:
    """(max |sample|, its index) of PCM16."""
    a = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    i = int(np.argmax(a))
    return int(a[i]), i


class Peer:
    """The caller: a sending thread and a receiving thread on one UDP socket."""

    def __init__(self, jitter_s: float = 0.0, seed: int = 7) -> None:
        self.jitter_s = jitter_s
        self._rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.dest: tuple | None = None
        self.mode = "silence"  # or "pulses"
        self.sent: list[tuple[int, bool]] = []  # (time_ns before sendto, has pulse)
        self.received: list[tuple[int, bytes]] = []  # (kernel time ns, decoded PCM)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, daemon=True),
            threading.Thread(target=self._recv_loop, daemon=True),
        ]

    def start(self, dest: tuple) -> None:
        self.dest = dest
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.sock.close()

    def _send_loop(self) -> None:
        sender = RtpSender(0, 8000)
        rng = np.random.default_rng(2)
        silence = PCMU.encode(bytes(320))
        start = time.monotonic()
        k = 0
        index = 0
        due: list[tuple[float, int, bytes]] = []  # (send at, k, packet): the jittered path
        while not self._stop.is_set():
            produce_at = start + (k + 1) * SEND_PERIOD_S
            wake = min(produce_at, due[0][0]) if due else produce_at
            delay = wake - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            while due and due[0][0] <= time.monotonic():
                self.sock.sendto(heapq.heappop(due)[2], self.dest)
            if time.monotonic() < produce_at:
                continue
            k += 1
            if self.mode == "pulses":
                pulse = index % PULSE_EVERY == 0
                payload = PCMU.encode(pulse_packet_pcm(pulse, rng))
                index += 1
            else:
                pulse, payload = False, silence
            packet = sender.packet(payload, 160)
            now = time.time_ns()
            if self.jitter_s:
                extra = self._rng.uniform(0.0, self.jitter_s)
                heapq.heappush(due, (time.monotonic() + extra, k, packet))
            else:
                self.sock.sendto(packet, self.dest)
            if pulse:
                self.sent.append((now, True))

    def _recv_loop(self) -> None:
        space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(2048, space)
            except (TimeoutError, OSError):
                continue
            ts = time.time_ns()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("=qq", cdata[:16])
                    ts = sec * 1_000_000_000 + nsec
            if len(data) > 12 and data[1] & 0x7F == 0:
                self.received.append((ts, PCMU.decode(data[12:])))


class Probe(FrameProcessor):
    """Echoes input audio (when `echo`), recording frame times and pulse positions."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.frames = 0
        self.echo = True
        self.inputs: list[tuple[int, int, int]] = []  # (time ns, sample rate, pulse index)
        self.outputs: list[tuple[int, int, int]] = []  # (time ns before push, rate, index)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames += 1
            now = time.time_ns()
            level, index = peak(frame.audio)
            if level >= PULSE_LEVEL:
                self.inputs.append((now, frame.sample_rate, index))
            if self.echo:
                out = OutputAudioRawFrame(
                    audio=frame.audio, sample_rate=frame.sample_rate, num_channels=1
                )
                now = time.time_ns()
                if level >= PULSE_LEVEL:
                    self.outputs.append((now, frame.sample_rate, index))
                await self.push_frame(out)
            return
        await self.push_frame(frame, direction)


def stats(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"n": 0}
    a = np.array(values_ms)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
        "max": round(float(a.max()), 2),
        "mean": round(float(a.mean()), 2),
    }


async def run_rate(rate: int, seconds: float, bargeins: int) -> dict:
    peer = Peer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    media = RTPSession(sock=sock, remote_addr=peer.addr, codec=PCMU, rtp_timeout_s=0)
    await media.start()
    call = FakeCall(media=media)
    transport = SIPTransport(call, SIPParams())
    probe = Probe()
    worker = PipelineWorker(
        Pipeline([transport.input(), probe, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        idle_timeout_secs=None,
    )
    connected = asyncio.Event()

    @transport.event_handler("on_client_connected")
    async def on_connected(transport, client):
        connected.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    result: dict = {"bench": "latency", "pipeline_rate": rate}
    try:
        await asyncio.wait_for(connected.wait(), 10)
        peer.start(media.local_addr)
        # 1. echo: input and output delay
        peer.mode = "pulses"
        await asyncio.sleep(seconds)
        peer.mode = "silence"
        await asyncio.sleep(0.3)
        probe.echo = False
        sent = list(peer.sent)
        inputs = list(probe.inputs)
        outputs = list(probe.outputs)
        wire = [(ts, *peak(pcm)) for ts, pcm in peer.received]
        wire_pulses = [(ts, i) for ts, level, i in wire if level >= PULSE_LEVEL]
        n_in = min(len(sent), len(inputs))
        in_ms = [
            (inputs[k][0] - sent[k][0]) / 1e6
            + (inputs[k][2] / inputs[k][1] - PULSE_AT / 8000) * 1e3
            for k in range(n_in)
        ]
        n_out = min(len(outputs), len(wire_pulses))
        out_ms = [
            (wire_pulses[k][0] - outputs[k][0]) / 1e6
            + (wire_pulses[k][1] / 8000 - outputs[k][2] / outputs[k][1]) * 1e3
            for k in range(n_out)
        ]
        result["pulses_sent"] = len(sent)
        result["pulses_in"] = len(inputs)
        result["pulses_out_wire"] = len(wire_pulses)
        result["input_ms"] = stats(in_ms)
        result["output_ms"] = stats(out_ms)
        # 2. barge-in
        rng = random.Random(3)
        tone_t = np.arange(rate) / rate
        speech = (10000 * np.sin(2 * np.pi * 440 * tone_t)).astype("<i2").tobytes()
        barge_ms: list[float] = []  # last loud packet on the wire (< 0: none after)
        quiet_ms: list[float] = []  # first quiet packet after the last loud one
        for _ in range(bargeins):
            await asyncio.sleep(0.3)
            await worker.queue_frames(
                [OutputAudioRawFrame(audio=speech, sample_rate=rate, num_channels=1)]
            )
            await asyncio.sleep(rng.uniform(0.3, 0.6))
            t_int = time.time_ns()
            await probe.broadcast_interruption()
            await asyncio.sleep(0.4)
            recent = [(ts, peak(pcm)[0] >= LOUD_LEVEL) for ts, pcm in peer.received]
            recent = [(ts, loud) for ts, loud in recent if ts > t_int - 1e9]
            loud = [ts for ts, is_loud in recent if is_loud]
            if loud:
                barge_ms.append((max(loud) - t_int) / 1e6)
                quiet = [ts for ts, is_loud in recent if ts > max(loud) and not is_loud]
                if quiet:
                    quiet_ms.append((min(quiet) - t_int) / 1e6)
        result["bargein_ms"] = stats(barge_ms)
        result["bargein_quiet_ms"] = stats(quiet_ms)
        result["resampler_delay_ms"] = (
            0.0 if rate == 8000 else LowLatencyResampler(rate, 8000).delay_ms
        )
    finally:
        await worker.cancel()
        await asyncio.wait({task}, timeout=5)
        peer.stop()
        await media.close()
    return result


class Order:
    """Sequence numbers in the order the pipeline gets them: reordered and repeated ones."""

    def __init__(self) -> None:
        self.top: int | None = None
        self.seen: set[int] = set()
        self.reordered = 0
        self.repeated = 0

    def deliver(self, seq: int) -> None:
        if seq in self.seen:
            self.repeated += 1
            return
        self.seen.add(seq)
        if self.top is not None and (seq - self.top) % 65536 > 32768:
            self.reordered += 1
        else:
            self.top = seq


def watch_direct_path(media: RTPSession, order: Order) -> None:
    """Without a jitter buffer, log the order in which audio packets are delivered."""
    receive = media._receive_rtp  # the adapter's bound call into the pure session

    def watched(data, addr, now):
        pcm = receive(data, addr, now)
        if pcm is not None and len(data) > 12 and data[1] & 0x7F == 0:
            order.deliver(struct.unpack_from("!H", data, 2)[0])
        return pcm

    media._receive_rtp = watched


def time_jitter_buffer(media: RTPSession, order: Order) -> list[float]:
    """Wrap the session's jitter buffer to log each audio packet's wait in it (s) and order."""
    jb = media.jitter_buffer
    put_at: dict[int, float] = {}
    waits: list[float] = []
    put, pop = jb.put, jb.pop

    def timed_put(packet, now):
        if packet.payload_type == 0:
            put_at[packet.sequence_number] = now
        put(packet, now)

    def timed_pop(now):
        out = pop(now)
        for packet in out:
            if packet is not None and packet.payload_type == 0:
                order.deliver(packet.sequence_number)
                at = put_at.pop(packet.sequence_number, None)
                if at is not None:
                    waits.append(now - at)
        return out

    jb.put, jb.pop = timed_put, timed_pop
    return waits


async def run_jitter(seconds: float, jitter_ms: float, jitter_buffer: bool) -> dict:
    """The echo phase at 8 kHz over a jittered path, jitter buffer on or off."""
    peer = Peer(jitter_s=jitter_ms / 1000.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    media = RTPSession(sock=sock, remote_addr=peer.addr, codec=PCMU, rtp_timeout_s=0)
    await media.start()
    call = FakeCall(media=media)
    transport = SIPTransport(call, SIPParams(jitter_buffer=jitter_buffer))
    order = Order()
    waits: list[float] = []
    if jitter_buffer:
        waits = time_jitter_buffer(media, order)
    else:
        watch_direct_path(media, order)
    probe = Probe()
    probe.echo = False
    worker = PipelineWorker(
        Pipeline([transport.input(), probe, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        idle_timeout_secs=None,
    )
    connected = asyncio.Event()

    @transport.event_handler("on_client_connected")
    async def on_connected(transport, client):
        connected.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    result: dict = {
        "bench": "latency_jitter",
        "jitter_ms": jitter_ms,
        "jitter_buffer": jitter_buffer,
        "seconds": seconds,
    }
    try:
        await asyncio.wait_for(connected.wait(), 10)
        peer.mode = "pulses"
        peer.start(media.local_addr)
        await asyncio.sleep(seconds)
        peer.mode = "silence"
        await asyncio.sleep(0.3)
        sent = list(peer.sent)
        inputs = list(probe.inputs)
        n_in = min(len(sent), len(inputs))
        in_ms = [
            (inputs[k][0] - sent[k][0]) / 1e6
            + (inputs[k][2] / inputs[k][1] - PULSE_AT / 8000) * 1e3
            for k in range(n_in)
        ]
        result["pulses_sent"] = len(sent)
        result["pulses_in"] = len(inputs)
        result["input_ms"] = stats(in_ms)
        if jitter_buffer:
            result["jb_wait_ms"] = stats([w * 1000 for w in waits])
            jb = media.jitter_buffer
            s = jb.stats
            result["jb"] = {
                "received": s.received,
                "played": s.played,
                "late": s.late,
                "lost": s.lost,
                "duplicates": s.duplicates,
                "concealed": s.concealed,
                "target_delay_ms": round(jb.target_delay_ms, 1),
                "jitter_ms": round(jb.jitter_ms, 2),
            }
        result["frames_in"] = probe.frames
        result["frames_per_s"] = round(probe.frames / (seconds + 0.3), 2)
        result["reordered"] = order.reordered
        result["repeated"] = order.repeated
    finally:
        await worker.cancel()
        await asyncio.wait({task}, timeout=5)
        peer.stop()
        await media.close()
    return result


def jitter_table(rows: list[dict]) -> str:
    head = (
        f"{'jitter ms':>9} {'buffer':>6} {'what':>10} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'max ms':>8}  notes"
    )
    lines = [head]
    for row in rows:
        jb = "on" if row["jitter_buffer"] else "off"
        notes = f"frames/s {row['frames_per_s']}, out of order {row['reordered']}"
        if "jb" in row:
            b = row["jb"]
            notes += f", late {b['late']}, lost {b['lost']}, concealed {b['concealed']}"
        for key in ("jb_wait_ms", "input_ms"):
            s = row.get(key)
            if not s:
                continue
            lines.append(
                f"{row['jitter_ms']:>9g} {jb:>6} {key[:-3]:>10} {s.get('n', 0):>5} "
                f"{s.get('p50', '-'):>8} {s.get('p95', '-'):>8} {s.get('max', '-'):>8}  {notes}"
            )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = f"{'rate Hz':>8} {'direction':>10} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    lines = [head]
    for row in rows:
        for key, name in (
            ("input_ms", "in"),
            ("output_ms", "out"),
            ("bargein_ms", "barge-in"),
            ("bargein_quiet_ms", "quiet"),
        ):
            s = row.get(key, {})
            lines.append(
                f"{row['pipeline_rate']:>8} {name:>10} {s.get('n', 0):>5} {s.get('p50', '-'):>8} "
                f"{s.get('p95', '-'):>8} {s.get('max', '-'):>8}"
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for rate in [int(r) for r in args.rates.split(",") if r]:
        row = await run_rate(rate, args.seconds, args.bargeins)
        rows.append(row)
        print(json.dumps(row), flush=True)
    jitter_rows = []
    for jitter_ms in [float(j) for j in args.jitter_ms.split(",") if j]:
        for on in (False, True):
            row = await run_jitter(args.jb_seconds, jitter_ms, on)
            jitter_rows.append(row)
            print(json.dumps(row), flush=True)
    if rows:
        print(table(rows))
    if jitter_rows:
        print(jitter_table(jitter_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="8000,16000", help="pipeline sample rates, Hz")
    parser.add_argument("--seconds", type=float, default=6.0, help="echo phase length")
    parser.add_argument("--bargeins", type=int, default=10)
    parser.add_argument(
        "--jitter-ms", default="0,30", help="jitter-buffer phase: uniform jitter added, ms"
    )
    parser.add_argument("--jb-seconds", type=float, default=6.0, help="per jitter-buffer case")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.bargeins, args.jb_seconds = 1.5, 2, 1.5
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
