"""Per-packet CPU cost of the media path (a script, not a test).

1. Pure path, per codec, timed with time.perf_counter over a bounded number
   of iterations (best of several rounds):
   - receive: RtpPacket.parse + codec.decode of one 20 ms packet,
   - send: codec.encode + RtpSender.packet of one 20 ms packet,
   and their parts.
2. Session path: one RTPSession's own per-packet work without the socket
   and the event loop: a received datagram to on_audio (its receive
   handler), and a clock tick to the datagram handed to sendto (a socket
   stand-in that drops it), timed like the pure path.
3. Loaded loop: N RTPSessions paired over loopback UDP on one MediaClock,
   all talking for a few seconds; process CPU time per packet (sent and
   received, syscalls included), CPU use of the core, and the clock's late
   ticks.

With ``--srtp`` the session path and the loaded loop are run both plain and
with SRTP (AES_CM_128_HMAC_SHA1_80, each session its own key, SDES-style:
it protects with its own and checks its peer's) in the same run, the loaded
runs taking turns (plain, SRTP, plain, SRTP...; best of ``--rounds`` each),
and the ratios are printed: SRTP's CPU per packet over plain's, and media
sessions per core (sessions / CPU share of the core) each way. The target
(issue 12) is SRTP <= 1.3x plain. A third variant, ``SRTP floor``, puts
libsrtp's own calls in the context's place with nothing of ours around them
(the copy into libsrtp's buffer, the call, the copy out: the least any
Python caller does), so the ratio shows how much of the cost is libsrtp's.

With ``--jitter-buffer`` the same for the adaptive jitter buffer (issue 15):
the played path (one packet received and one tick, the audio echoed back
as ``echo_server.py --mode media`` does) and the loaded loop, each with the
buffer off and on, in one run, and their ratios (target: within 10%). A
third variant, ``JB floor``, puts the least a reordering buffer does in the
session's jitter-buffer slot (hold each packet by sequence number, release
the next one per tick, nothing else: no statistics, no adaptation, no
concealment bookkeeping), so the ratio shows what the slot itself costs.

Prints one JSON object per figure, then a short table.

Usage: .venv/bin/python bench/bench_media.py [--iterations 20000] [--sessions 200] [--seconds 3]
       .venv/bin/python bench/bench_media.py --srtp [--rounds 2] [--sessions 200] [--seconds 3]
       .venv/bin/python bench/bench_media.py --jitter-buffer [--rounds 2] [--sessions 200]
"""

import argparse
import asyncio
import json
import random
import socket
import statistics
import sys
import time

import numpy as np

from pipecat_sip.codecs import PCMA, PCMU
from pipecat_sip.media import MediaClock, RTPSession
from pipecat_sip.rtp import RtpPacket, RtpSender
from pipecat_sip.rtp.srtp import SrtpContext

ROUNDS = 5
SUITE = "AES_CM_128_HMAC_SHA1_80"


def srtp_pair(rng: random.Random) -> tuple[SrtpContext, SrtpContext]:
    """Two contexts that talk to each other: each protects with its key, checks the other's."""
    key_a, key_b = rng.randbytes(30), rng.randbytes(30)
    return (
        SrtpContext(SUITE, local_key=key_a, remote_key=key_b),
        SrtpContext(SUITE, local_key=key_b, remote_key=key_a),
    )


class FloorSrtp:
    """libsrtp's calls alone in an SrtpContext's place (bench only: no checks, no counters).

    ``protect_rtp`` and the others are the context's own libsrtp operations
    (copy in, call, copy out), bound directly: what is left when everything
    of ours around them is taken away.
    """

    def __init__(self, context: SrtpContext):
        self.stats = context.stats
        self._context = context  # keeps libsrtp's sessions alive
        tx, rx = context._tx, context._rx
        self.protect_rtp, self.protect_rtcp = tx.protect, tx.protect_rtcp
        self.unprotect_rtp, self.unprotect_rtcp = rx.unprotect, rx.unprotect_rtcp


class FloorJitterBuffer:
    """The least a reordering buffer does in MediaSession's slot (bench only).

    Holds packets by sequence number and releases the next one per tick
    (``None`` when it is missing); drops late and duplicate packets. No
    statistics, no adaptive delay, no timing: a lower bound on any buffer.
    """

    def __init__(self) -> None:
        self._queue: dict[int, RtpPacket] = {}
        self._next: int | None = None

    def put(self, packet: RtpPacket, now: float) -> None:
        seq = packet.sequence_number
        if self._next is None:
            self._next = seq
        elif (seq - self._next) & 0xFFFF >= 0x8000 or seq in self._queue:
            return  # late or a duplicate
        self._queue[seq] = packet

    def pop(self, now: float) -> list[RtpPacket | None]:
        seq = self._next
        if seq is None:
            return []
        self._next = (seq + 1) & 0xFFFF
        return [self._queue.pop(seq, None)]


def _add_jitter_buffer(session: RTPSession, jitter: bool | str) -> None:
    if jitter == "floor":
        session.set_jitter_buffer(FloorJitterBuffer())
    elif jitter:
        session.enable_jitter_buffer()


def speech_like_pcm(samples: int) -> bytes:
    rng = np.random.default_rng(0)
    return (rng.normal(0, 3000, samples)).clip(-32768, 32767).astype("<i2").tobytes()


def per_call_us(fn, iterations: int) -> float:
    """Best-of-ROUNDS mean time of one fn() call, in microseconds."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, (time.perf_counter() - start) / iterations)
    return best * 1e6


def bench_pure(iterations: int) -> list[dict]:
    results = []
    pcm = speech_like_pcm(160)
    for codec in (PCMU, PCMA):
        sender = RtpSender(codec.payload_type, 8000)
        payload = codec.encode(pcm)
        wire = sender.packet(payload, 160)

        def receive(codec=codec, wire=wire):
            codec.decode(RtpPacket.parse(wire).payload)

        def send(codec=codec, sender=sender):
            sender.packet(codec.encode(pcm), 160)

        figures = {
            "receive": receive,
            "send": send,
            "parse": lambda wire=wire: RtpPacket.parse(wire),
            "decode": lambda codec=codec, payload=payload: codec.decode(payload),
            "encode": lambda codec=codec: codec.encode(pcm),
            "serialize": lambda sender=sender, payload=payload: sender.packet(payload, 160),
        }
        for path, fn in figures.items():
            results.append(
                {
                    "bench": "pure",
                    "codec": codec.encoding_name,
                    "path": path,
                    "us_per_packet": round(per_call_us(fn, iterations), 3),
                    "iterations": iterations * ROUNDS,
                }
            )
    return results


class _NullSocket:
    """Takes datagrams and drops them (the session path without the syscall)."""

    def sendto(self, data, addr):
        return len(data)

    def close(self):
        pass

    def getsockname(self):
        return ("127.0.0.1", 9)


class _FakeTime:
    """A clock moving on one packet time per reading (fed packets arrive in real time)."""

    def __init__(self, start: float, step: float = 0.02):
        self.now = start
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def bench_session_path(iterations: int, secure: bool | str = False) -> list[dict]:
    """Per-packet cost of RTPSession's own receive and send work (no syscalls).

    With ``secure`` the session has an SRTP context and is fed SRTP packets
    (protected beforehand, outside the timing); ``secure="floor"`` puts
    :class:`FloorSrtp` (libsrtp's calls alone) in the context's place.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    addr = ("127.0.0.1", 40000)  # the peer sends from its SDP address
    ours, peers = srtp_pair(random.Random(1)) if secure else (None, None)
    if secure == "floor":
        ours = FloorSrtp(ours)
    session = RTPSession(sock=sock, remote_addr=addr, codec=PCMU, rtp_timeout_s=0, srtp=ours)
    await session.start()
    MediaClock.for_loop().remove(session)  # ticks are driven by hand here
    real_sock, session._sock = session._sock, _NullSocket()
    session._time = _FakeTime(asyncio.get_running_loop().time())  # the adapter's clock, if any
    heard = 0

    def on_audio(pcm: bytes) -> None:
        nonlocal heard
        heard += 1

    session.on_audio = on_audio
    sender = RtpSender(0, 8000)
    payload = PCMU.encode(speech_like_pcm(160))
    wires = [sender.packet(payload, 160) for _ in range(iterations * ROUNDS)]
    if peers is not None:
        wires = [peers.protect_rtp(wire) for wire in wires]
    feed = iter(wires)
    on_datagram = session._on_datagram

    def receive():
        on_datagram(next(feed), addr)

    pcm = speech_like_pcm(160 * (iterations * ROUNDS + 10))
    session.send_audio(pcm)
    tick_clock = _FakeTime(asyncio.get_running_loop().time())
    on_tick = session._on_tick

    def send():
        on_tick(tick_clock(), 1, 0)

    results = []
    for path, fn in (("session receive", receive), ("session send", send)):
        results.append(
            {
                "bench": "session",
                "codec": _label(secure),
                "path": path,
                "us_per_packet": round(per_call_us(fn, iterations), 3),
                "iterations": iterations * ROUNDS,
            }
        )
    assert heard == iterations * ROUNDS, heard
    assert session.stats.packets_sent >= iterations * ROUNDS
    session._sock = real_sock
    await session.close()
    return results


async def bench_sessions(
    count: int, seconds: float, secure: bool | str = False, jitter: bool | str = False
) -> dict:
    """Pairs of sessions talking to each other over loopback on one clock.

    SRTP if ``secure``; received audio played out through each session's
    adaptive jitter buffer if ``jitter``; ``"floor"`` for either puts the
    bench's lower bound in its place (:class:`FloorSrtp`,
    :class:`FloorJitterBuffer`).
    """
    socks = []
    for _ in range(count + count % 2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    sessions = []
    received = 0

    def on_audio(pcm: bytes) -> None:
        nonlocal received
        received += 1

    rng = random.Random(2)
    contexts: list[SrtpContext | None] = [None] * len(socks)
    if secure:
        for i in range(0, len(socks), 2):
            contexts[i], contexts[i + 1] = srtp_pair(rng)
        if secure == "floor":
            contexts = [FloorSrtp(context) for context in contexts]
    for i, sock in enumerate(socks):
        peer = socks[i ^ 1].getsockname()
        session = RTPSession(
            sock=sock, remote_addr=peer, codec=PCMU, rtp_timeout_s=0, srtp=contexts[i]
        )
        session.on_audio = on_audio
        _add_jitter_buffer(session, jitter)
        sessions.append(session)
    for session in sessions:
        await session.start()
    pcm = speech_like_pcm(int(8000 * (seconds + 1)))
    for session in sessions:
        session.send_audio(pcm)
    clock = MediaClock.for_loop()
    await asyncio.sleep(0.5)  # settle
    sent0 = sum(s.stats.packets_sent for s in sessions)
    received0, ticks0, late0 = received, clock.ticks, clock.late_ticks
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    sent = sum(s.stats.packets_sent for s in sessions) - sent0
    got = received - received0
    failures = sum(
        s.srtp_stats.auth_failures + s.srtp_stats.replays + s.srtp_stats.other
        for s in sessions
        if s.srtp_stats is not None
    )
    result = {
        "bench": "sessions",
        "codec": _label(secure, jitter),
        "sessions": len(sessions),
        "seconds": round(wall, 2),
        "packets_sent": sent,
        "packets_received": got,
        "expected_packets_per_session": round(wall / 0.02),
        "cpu_percent": round(100 * cpu / wall, 1),
        "us_per_packet": round(1e6 * cpu / max(1, sent + got), 2),
        "ticks": clock.ticks - ticks0,
        "late_ticks": clock.late_ticks - late0,
        "skipped_deadlines": clock.skipped_deadlines,
        "sessions_per_core": round(len(sessions) * wall / cpu) if cpu else None,
        "srtp_drops": failures,
    }
    if jitter is True:
        result["jitter_buffer_late"] = sum(s.jitter_buffer.stats.late for s in sessions)
        result["jitter_buffer_concealed"] = sum(s.jitter_buffer.stats.concealed for s in sessions)
    for session in sessions:
        await session.close()
    return result


def _label(secure: bool | str = False, jitter: bool | str = False) -> str:
    def part(name: str, value: bool | str) -> str:
        return f"+{name} floor" if value == "floor" else f"+{name}" if value else ""

    return "PCMU" + part("SRTP", secure) + part("JB", jitter)


async def bench_played_path(iterations: int, jitter: bool | str) -> dict:
    """Per-packet cost of one packet received and one tick (played, echoed), interleaved.

    The received audio goes back out (``on_audio = send_audio``), as in
    ``echo_server.py --mode media``; with ``jitter`` it is played out through
    the adaptive jitter buffer at the ticks, else handed on at once.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    addr = ("127.0.0.1", 40000)
    session = RTPSession(sock=sock, remote_addr=addr, codec=PCMU, rtp_timeout_s=0)
    _add_jitter_buffer(session, jitter)
    await session.start()
    MediaClock.for_loop().remove(session)
    real_sock, session._sock = session._sock, _NullSocket()
    heard = [0]
    send_audio = session.send_audio

    def on_audio(pcm: bytes) -> None:
        heard[0] += 1
        send_audio(pcm)

    session.on_audio = on_audio
    sender = RtpSender(0, 8000)
    payload = PCMU.encode(speech_like_pcm(160))
    total = iterations * ROUNDS
    wires = [sender.packet(payload, 160) for _ in range(total + 1)]
    start = asyncio.get_running_loop().time()
    clock = [start]
    session._time = lambda: clock[0]
    on_datagram, on_tick = session._on_datagram, session._on_tick
    count = [0]

    def pair():
        k = count[0]
        count[0] = k + 1
        clock[0] = start + k * 0.02  # each packet on time, the tick 10 ms after it
        on_datagram(wires[k], addr)
        on_tick(clock[0] + 0.01, 1, 0)

    us = per_call_us(pair, iterations)
    session._sock = real_sock
    await session.close()
    return {
        "bench": "session",
        "codec": _label(jitter=jitter),
        "path": "session played",
        "us_per_packet": round(us, 3),
        "iterations": total,
        "echoed": heard[0],  # packets whose audio was handed to on_audio
    }


def loaded_turns(sessions: int, seconds: float, rounds: int, option: str) -> list[dict]:
    """Loaded runs taking turns: without ``option`` (``secure``, ``jitter``), with it, its floor.

    Returns:
        The best run (least CPU per packet) of ``rounds`` each: without, with, floor.
    """
    settings: tuple[bool | str, ...] = (False, True, "floor")
    runs: dict[bool | str, list[dict]] = {setting: [] for setting in settings}
    for _ in range(rounds):
        for setting in settings:
            runs[setting].append(
                asyncio.run(bench_sessions(sessions, seconds, **{option: setting}))
            )
    return [min(runs[setting], key=lambda r: r["us_per_packet"]) for setting in settings]


def loaded_ratio(
    without: dict, with_: dict, floor: dict, rounds: int, names: tuple[str, str]
) -> dict:
    """The loaded runs' ratios (with, and floor, over without) and sessions per core."""
    return {
        "loaded_us_per_packet": round(with_["us_per_packet"] / without["us_per_packet"], 2),
        "loaded_cpu_percent": round(with_["cpu_percent"] / without["cpu_percent"], 2),
        "floor_loaded_us_per_packet": round(floor["us_per_packet"] / without["us_per_packet"], 2),
        f"sessions_per_core_{names[0]}": without["sessions_per_core"],
        f"sessions_per_core_{names[1]}": with_["sessions_per_core"],
        "sessions_per_core_floor": floor["sessions_per_core"],
        "rounds": rounds,
    }


def compare_jitter(iterations: int, sessions: int, seconds: float, rounds: int) -> list[dict]:
    """Jitter buffer off, on and its floor in one run: the played path, then loaded turns."""
    results = [
        asyncio.run(bench_played_path(iterations, jitter)) for jitter in (False, True, "floor")
    ]
    off, on, floor = (r["us_per_packet"] for r in results)
    ratio: dict = {
        "bench": "jitter_buffer_ratio",
        "session_played": round(on / off, 2),
        "floor_session_played": round(floor / off, 2),
    }
    if sessions > 0:
        plain, buffered, least = loaded_turns(sessions, seconds, rounds, "jitter")
        results += [plain, buffered, least]
        ratio |= loaded_ratio(plain, buffered, least, rounds, ("off", "on"))
    results.append(ratio)
    return results


def compare_srtp(iterations: int, sessions: int, seconds: float, rounds: int) -> list[dict]:
    """Plain, SRTP and its floor in one run: the session path, then loaded runs taking turns."""
    results = asyncio.run(bench_session_path(iterations))
    results += asyncio.run(bench_session_path(iterations, secure=True))
    results += asyncio.run(bench_session_path(iterations, secure="floor"))
    if sessions > 0:
        results += loaded_turns(sessions, seconds, rounds, "secure")
    path = {(r["codec"], r["path"]): r["us_per_packet"] for r in results if r["bench"] == "session"}
    ratio: dict = {"bench": "srtp_ratio"}
    for direction in ("receive", "send"):
        plain = path[("PCMU", f"session {direction}")]
        ratio[f"session_{direction}"] = round(
            path[("PCMU+SRTP", f"session {direction}")] / plain, 2
        )
        ratio[f"floor_session_{direction}"] = round(
            path[("PCMU+SRTP floor", f"session {direction}")] / plain, 2
        )
    if sessions > 0:
        ratio |= loaded_ratio(results[-3], results[-2], results[-1], rounds, ("plain", "srtp"))
    results.append(ratio)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000, help="calls per round (5 rounds)")
    parser.add_argument("--sessions", type=int, default=200, help="sessions for the loaded run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the loaded run")
    parser.add_argument("--srtp", action="store_true", help="plain against SRTP, same run")
    parser.add_argument(
        "--jitter-buffer", action="store_true", help="jitter buffer off against on, same run"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="loaded runs per mode (--srtp, --jitter-buffer)"
    )
    args = parser.parse_args()
    iterations = max(100, min(args.iterations, 1_000_000))
    sessions = min(max(args.sessions, 0), 2000)
    seconds = min(args.seconds, 60)

    rounds = min(max(args.rounds, 1), 5)
    if args.srtp:
        results = compare_srtp(iterations, sessions, seconds, rounds)
    elif args.jitter_buffer:
        results = compare_jitter(iterations, sessions, seconds, rounds)
    else:
        results = bench_pure(iterations)
        results += asyncio.run(bench_session_path(iterations))
        if sessions > 0:
            results.append(asyncio.run(bench_sessions(sessions, seconds)))
    for result in results:
        print(json.dumps(result))

    print()
    print(f"{'codec':<16} {'path':<16} {'us/packet':>10}")
    for r in results:
        if r["bench"] in ("pure", "session"):
            print(f"{r['codec']:<16} {r['path']:<16} {r['us_per_packet']:>10.2f}")
    for r in results:
        if r["bench"] == "sessions":
            print(
                f"\n{r['sessions']} {r['codec']} sessions on one clock for {r['seconds']} s: "
                f"{r['cpu_percent']}% of a core, {r['us_per_packet']} us CPU per packet "
                f"(sent + received, syscalls included), "
                f"{r['late_ticks']}/{r['ticks']} late ticks, "
                f"~{r['sessions_per_core']} sessions per core"
            )
    for r in results:
        if r["bench"] == "srtp_ratio":
            print(
                f"\nSRTP / plain: session path receive {r['session_receive']}x, "
                f"send {r['session_send']}x (floor: {r['floor_session_receive']}x, "
                f"{r['floor_session_send']}x)"
            )
            if "loaded_us_per_packet" in r:
                print(
                    f"loaded ({r['rounds']} rounds each, best): CPU per packet "
                    f"{r['loaded_us_per_packet']}x, CPU share {r['loaded_cpu_percent']}x; "
                    f"sessions per core {r['sessions_per_core_plain']} plain, "
                    f"{r['sessions_per_core_srtp']} SRTP (target: SRTP <= 1.3x plain); "
                    f"floor (libsrtp's calls alone) {r['floor_loaded_us_per_packet']}x, "
                    f"{r['sessions_per_core_floor']} sessions per core"
                )
        if r["bench"] == "jitter_buffer_ratio":
            print(
                f"\njitter buffer on / off: played path {r['session_played']}x "
                f"(floor: {r['floor_session_played']}x)"
            )
            if "loaded_us_per_packet" in r:
                print(
                    f"loaded ({r['rounds']} rounds each, best): CPU per packet "
                    f"{r['loaded_us_per_packet']}x; sessions per core "
                    f"{r['sessions_per_core_off']} off, {r['sessions_per_core_on']} on "
                    "(issue 15's target: within 10%); floor (a buffer that only reorders) "
                    f"{r['floor_loaded_us_per_packet']}x, {r['sessions_per_core_floor']} "
                    "sessions per core"
                )
    pure = [r["us_per_packet"] for r in results if r["bench"] == "pure"]
    if pure:
        print(f"(pure path median {statistics.median(pure):.2f} us over {len(pure)} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
