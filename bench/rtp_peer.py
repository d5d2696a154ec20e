"""RTP peer for the load benchmark: feeds every call and timestamps what the server sends.

One UDP socket on 127.0.0.1 stands for the media side of every call (the
SIPp scenario writes its port into the SDP). When a call's server RTP port
first sends to it, the peer starts streaming 20 ms PCMU (or, ``--codec G722``,
G.722) speech to that port
from the same socket (so the server's symmetric-RTP latching keeps it as the
destination) at its own phase in the 20 ms period, as independent phones
would. Every packet the server sends is timestamped by the kernel on arrival
(SO_TIMESTAMPNS, CLOCK_REALTIME) and demultiplexed by source port; socket
overflow drops are counted (SO_RXQ_OVFL) so that they are not mistaken for
server gaps.

Prints ``{"ready": true, "port": P}``; on SIGTERM (or after --max-seconds) it
prints one JSON line of figures over the steady window, when every stream is
running: from the last stream's first packet + ``--settle`` s to the first
stream's last packet - 0.5 s. Streams shorter than half the longest (failed
calls) are left out of the window and counted.

Usage: .venv/bin/python bench/rtp_peer.py [--max-seconds 60]
"""

import argparse
import heapq
import json
import select
import signal
import socket
import struct
import sys
import time
from array import array
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipecat_sip.codecs import PCMU  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux values
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
PTIME_S = 0.020
SAMPLES = 160
IDLE_STOP_S = 1.0  # stop feeding a stream the server stopped sending on


def speech_payloads(seconds: float = 6.0, codec: str = "PCMU") -> list[bytes]:
    """20 ms payloads of speech (espeak-ng), or speech-like noise without it.

    PCMU, or G.722 (the 8 kHz speech upsampled to 16 kHz, one encoder for the
    whole loop: every call gets the same valid G.722 stream).
    """
    pcm = None
    try:
        import tempfile

        from tests.helpers.audio import read_wav, speech_wav

        with tempfile.TemporaryDirectory() as tmp:
            path = speech_wav(
                Path(tmp) / "speech.wav",
                "The quick brown fox jumps over the lazy dog. Pipecat answers the phone.",
            )
            samples, _ = read_wav(path)
            pcm = samples.astype("<i2")
    except Exception:
        pcm = None
    if pcm is None or len(pcm) < SAMPLES * 10:
        rng = np.random.default_rng(1)
        n = int(seconds * 8000)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / 8000)
        pcm = (rng.normal(0, 4000, n) * envelope).clip(-32768, 32767).astype("<i2")
    frames = len(pcm) // SAMPLES
    if codec == "G722":
        import soxr

        from pipecat_sip.codecs import get_codec

        wide = soxr.resample(pcm[: frames * SAMPLES].astype(np.float32), 8000, 16000)
        wide = wide.clip(-32768, 32767).astype("<i2")
        encoder = get_codec("G722").for_stream()
        n = 2 * SAMPLES
        return [encoder.encode(wide[i * n : (i + 1) * n].tobytes()) for i in range(frames)]
    return [PCMU.encode(pcm[i * SAMPLES : (i + 1) * SAMPLES].tobytes()) for i in range(frames)]


class Stream:
    __slots__ = ("addr", "ts", "seq", "ssrc", "next_send", "sent", "seq_out", "last_rx")

    def __init__(self, addr, phase: float, now: float):
        self.addr = addr
        self.ts = array("q")  # kernel receive time, ns (CLOCK_REALTIME)
        self.seq = array("l")
        self.ssrc = None
        self.next_send = now + phase
        self.sent = 0
        self.seq_out = 0
        self.last_rx = now


def analyse(streams: list[Stream], settle_s: float, overflow: int) -> dict:
    lengths = [s.ts[-1] - s.ts[0] for s in streams if len(s.ts) > 1]
    result = {
        "streams": len(streams),
        "receiver_drops": overflow,
    }
    if not lengths:
        return result | {"streams_full": 0}
    longest = max(lengths)
    full = [s for s in streams if len(s.ts) > 1 and s.ts[-1] - s.ts[0] >= longest / 2]
    start = max(s.ts[0] for s in full) + int(settle_s * 1e9)
    end = min(s.ts[-1] for s in full) - int(0.5e9)
    result |= {"streams_full": len(full), "streams_short": len(streams) - len(full)}
    if end - start < 1e9:
        return result | {"window_s": max(0.0, (end - start) / 1e9), "error": "window under 1 s"}
    devs = []
    packets = []
    gaps = reordered = 0
    for s in full:
        ts = np.frombuffer(s.ts, dtype=np.int64)
        seq = np.frombuffer(s.seq, dtype=np.int32 if s.seq.itemsize == 4 else np.int64)
        mask = (ts >= start) & (ts <= end)
        ts, seq = ts[mask], seq[mask].astype(np.int64)
        packets.append(len(ts))
        if len(ts) < 2:
            continue
        step = (np.diff(seq) + 32768) % 65536 - 32768  # 16-bit wrap
        gaps += int(np.sum(step[step > 1] - 1))
        reordered += int(np.sum(step < 1))
        devs.append(np.abs(np.diff(ts) / 1e6 - PTIME_S * 1000))
    dev = np.concatenate(devs) if devs else np.zeros(1)
    window_s = (end - start) / 1e9
    return result | {
        "window_start": start / 1e9,
        "window_end": end / 1e9,
        "window_s": round(window_s, 3),
        "packets_per_stream": round(float(np.mean(packets)), 1),
        "packets_per_stream_min": int(min(packets)),
        "packets_expected": round(window_s / PTIME_S, 1),
        "seq_gaps": gaps,
        "reordered": reordered,
        "dev_p50_ms": round(float(np.percentile(dev, 50)), 3),
        "dev_p99_ms": round(float(np.percentile(dev, 99)), 3),
        "dev_max_ms": round(float(np.max(dev)), 3),
        "intervals": int(dev.size),
    }


def run(args: argparse.Namespace) -> None:
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    payloads = speech_payloads(codec=args.codec)
    pt = 9 if args.codec == "G722" else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.setblocking(False)
    print(json.dumps({"ready": True, "port": sock.getsockname()[1]}), flush=True)

    streams: dict[tuple, Stream] = {}
    order: list[Stream] = []
    heap: list[tuple[float, int, Stream]] = []
    overflow = 0
    cmsg_space = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
    unpack_ts = struct.Struct("=qq").unpack_from
    unpack_hdr = struct.Struct("!xxHxxxxI").unpack_from
    header = struct.Struct("!BBHII")
    ssrc_out = 0x5EED0000
    deadline = time.monotonic() + args.max_seconds
    phase_seq = 0
    silence = PCMU.silence(SAMPLES)  # (G.722 silence varies: echo_pct is then ~100)
    received = echoed = 0  # packets from the server / of them not silence (the echo)
    while not stop:
        now = time.monotonic()
        if now > deadline:
            break
        # send what is due
        while heap and heap[0][0] <= now:
            _, _, st = heapq.heappop(heap)
            if now - st.last_rx > IDLE_STOP_S:
                continue  # the call is over: stop feeding it
            payload = payloads[st.sent % len(payloads)]
            packet = (
                header.pack(
                    0x80, pt, st.seq_out & 0xFFFF, (st.sent * SAMPLES) & 0xFFFFFFFF, st.ssrc
                )
                + payload
            )
            try:
                sock.sendto(packet, st.addr)
            except OSError:
                pass
            st.sent += 1
            st.seq_out += 1
            st.next_send += PTIME_S
            if st.next_send < now - PTIME_S:  # we ran late: skip, do not burst
                st.next_send = now + PTIME_S
            heapq.heappush(heap, (st.next_send, id(st), st))
        timeout = min(0.005, max(0.0, heap[0][0] - time.monotonic())) if heap else 0.005
        select.select([sock], [], [], timeout)
        # drain
        while True:
            try:
                data, ancdata, _, addr = sock.recvmsg(2048, cmsg_space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            ts_ns = 0
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET:
                    if kind == SO_TIMESTAMPNS:
                        sec, nsec = unpack_ts(cdata)
                        ts_ns = sec * 1_000_000_000 + nsec
                    elif kind == SO_RXQ_OVFL:
                        overflow = int.from_bytes(cdata[:4], "little")
            if len(data) < 12:
                continue
            st = streams.get(addr)
            if st is None:
                mono = time.monotonic()
                phase = ((phase_seq * 0.618034) % 1.0) * PTIME_S  # spread the phases
                phase_seq += 1
                st = streams[addr] = Stream(addr, phase, mono)
                st.ssrc = ssrc_out + len(order)
                order.append(st)
                heapq.heappush(heap, (st.next_send, id(st), st))
            seq, _ssrc = unpack_hdr(data)
            received += 1
            if data[12:] != silence:
                echoed += 1
            st.ts.append(ts_ns or time.time_ns())
            st.seq.append(seq)
            st.last_rx = time.monotonic()
    result = analyse(order, args.settle, overflow)
    result["input_packets_sent"] = sum(s.sent for s in order)
    result["echo_pct"] = round(100.0 * echoed / max(1, received), 1)
    print(json.dumps({"peer_stats": True} | result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=1.0, help="s after the last stream starts")
    parser.add_argument("--codec", choices=("PCMU", "G722"), default="PCMU")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
