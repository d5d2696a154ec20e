"""Per-packet CPU of SRTP next to the plain RTP path (a script, not a test).

For one 20 ms G.711 packet (12-byte header + 160 bytes), timed with
time.perf_counter over a bounded number of packets, in one run so the ratios
compare like with like. Every figure is timed once per round and rounds are
interleaved (best of ROUNDS), so load from other processes hits all figures
alike:

- plain: RtpPacket.parse + RtpPacket.serialize (the brief's plain path);
- media: the pure media path of one packet each way (codec.encode +
  RtpSender.packet to send, RtpPacket.parse + codec.decode to receive);
- protect, unprotect: SrtpContext.protect_rtp / unprotect_rtp of such a
  packet, per suite (fresh sequence numbers: a context refuses to protect or
  accept one twice);
- reject_bad_tag: unprotect_rtp of a packet with a bad tag (what an
  attacker's flood costs per datagram);
- loopback_plain, loopback_srtp: the media path of one packet with its
  syscalls over a UDP socket pair on 127.0.0.1 (encode, packet, [protect],
  sendto, recv, [unprotect], parse, decode): the closest figure here to the
  integrated media path.

SRTP figures are taken on both ways of calling libsrtp: ``direct`` (the cffi
fast path SrtpContext uses when its import self-test passes) and ``public``
(pylibsrtp.Session's methods, the fallback).

Ratios printed: (protect + unprotect) / plain, (media + protect + unprotect) /
media, and loopback_srtp / loopback_plain. The target for the integrated media
path is SRTP <= 1.3x plain per call.

Prints one JSON object per figure, then a short table.

Usage: .venv/bin/python bench/srtp.py [--packets 10000] [--quick]
"""

import argparse
import json
import random
import socket
import time
from collections.abc import Callable

from pipecat_sip.codecs import PCMU
from pipecat_sip.rtp import RtpPacket, RtpSender, srtp
from pipecat_sip.rtp.srtp import SUITES, SrtpContext

ROUNDS = 7
KEY_A = bytes(range(30))
KEY_B = bytes(range(100, 130))
PCM = bytes(320)


def wire_packets(count: int) -> list[bytes]:
    rng = random.Random(0)
    sender = RtpSender(0, 8000, ssrc=0x1234ABCD, rng=rng)
    return [sender.packet(rng.randbytes(160), 160) for _ in range(count)]


def context(suite: str, direct: bool, sending: bool) -> SrtpContext:
    srtp._DIRECT = direct
    try:
        if sending:
            return SrtpContext(suite, local_key=KEY_A, remote_key=KEY_B)
        return SrtpContext(suite, local_key=KEY_B, remote_key=KEY_A)
    finally:
        srtp._DIRECT = srtp._direct_works()


def plain_job(wires: list[bytes]) -> Callable[[], Callable[[], None]]:
    one = wires[0]

    def prepare():
        def run():
            for _ in wires:
                RtpPacket.parse(one).serialize()

        return run

    return prepare


def media_job(wires: list[bytes]) -> Callable[[], Callable[[], None]]:
    one = wires[0]

    def prepare():
        sender = RtpSender(0, 8000)

        def run():
            for _ in wires:
                sender.packet(PCMU.encode(PCM), 160)
                PCMU.decode(RtpPacket.parse(one).payload)

        return run

    return prepare


def protect_job(suite: str, direct: bool, wires: list[bytes]):
    def prepare():
        ctx = context(suite, direct, True)  # fresh per round: each sequence number once

        def run():
            for wire in wires:
                ctx.protect_rtp(wire)

        return run

    return prepare


def unprotect_job(suite: str, direct: bool, wires: list[bytes]):
    sender = context(suite, direct, True)
    protected = [sender.protect_rtp(wire) for wire in wires]
    assert None not in protected

    def prepare():
        ctx = context(suite, direct, False)

        def run():
            for wire in protected:
                ctx.unprotect_rtp(wire)
            assert ctx.stats.rtp_unprotected == len(wires), ctx

        return run

    return prepare


def reject_job(suite: str, direct: bool, wires: list[bytes]):
    bad = bytearray(context(suite, direct, True).protect_rtp(wires[0]))
    bad[-1] ^= 1
    bad = bytes(bad)

    def prepare():
        ctx = context(suite, direct, False)

        def run():
            for _ in wires:
                ctx.unprotect_rtp(bad)

        return run

    return prepare


def loopback_job(secure: bool, count: int, sockets: tuple[socket.socket, socket.socket]):
    a, b = sockets
    dest = b.getsockname()

    def prepare():
        tx = context("AES_CM_128_HMAC_SHA1_80", srtp._DIRECT, True)
        rx = context("AES_CM_128_HMAC_SHA1_80", srtp._DIRECT, False)
        sender = RtpSender(0, 8000)

        def run():
            for _ in range(count):
                wire = sender.packet(PCMU.encode(PCM), 160)
                if secure:
                    wire = tx.protect_rtp(wire)
                a.sendto(wire, dest)
                data = b.recv(2048)
                if secure:
                    data = rx.unprotect_rtp(data)
                PCMU.decode(RtpPacket.parse(data).payload)

        return run

    return prepare


def interleaved(jobs: dict[tuple, Callable], packets: int) -> dict[tuple, float]:
    """Best-of-ROUNDS us per packet of each job, the jobs taking turns in every round."""
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(ROUNDS):
        for key, prepare in jobs.items():
            run = prepare()  # set-up (fresh contexts) outside the timing
            start = time.perf_counter()
            run()
            best[key] = min(best[key], (time.perf_counter() - start) / packets)
    return {key: value * 1e6 for key, value in best.items()}


def bench(packets: int) -> list[dict]:
    wires = wire_packets(packets)
    engines = [("direct", True)] if srtp._direct_works() else []
    engines.append(("public", False))
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        b.settimeout(1.0)
        jobs: dict[tuple, Callable] = {
            ("-", "-", "plain"): plain_job(wires),
            ("-", "-", "media"): media_job(wires),
            ("-", "-", "loopback_plain"): loopback_job(False, packets, (a, b)),
            ("-", "-", "loopback_srtp"): loopback_job(True, packets, (a, b)),
        }
        for engine, direct in engines:
            for suite in SUITES:
                jobs[(engine, suite, "protect")] = protect_job(suite, direct, wires)
                jobs[(engine, suite, "unprotect")] = unprotect_job(suite, direct, wires)
                jobs[(engine, suite, "reject_bad_tag")] = reject_job(suite, direct, wires)
        figures = interleaved(jobs, packets)
    finally:
        a.close()
        b.close()

    rows = []
    for (engine, suite, figure), value in figures.items():
        row = {"bench": "srtp", "figure": figure, "us_per_packet": round(value, 3)}
        if suite != "-":
            row = {"bench": "srtp", "engine": engine, "suite": suite, **row}
        rows.append(row)
    plain, media = figures[("-", "-", "plain")], figures[("-", "-", "media")]
    for engine, _ in engines:
        for suite in SUITES:
            both = figures[(engine, suite, "protect")] + figures[(engine, suite, "unprotect")]
            rows.append(
                {
                    "bench": "srtp",
                    "engine": engine,
                    "suite": suite,
                    "figure": "ratio",
                    "protect_unprotect_us": round(both, 3),
                    "srtp_over_plain": round(both / plain, 2),
                    "media_with_srtp_over_media": round((media + both) / media, 2),
                    "packets": packets * ROUNDS,
                }
            )
    loop_plain = figures[("-", "-", "loopback_plain")]
    loop_srtp = figures[("-", "-", "loopback_srtp")]
    rows.append(
        {
            "bench": "srtp",
            "figure": "loopback_ratio",
            "engine": "direct" if srtp._DIRECT else "public",
            "srtp_over_plain": round(loop_srtp / loop_plain, 2),
            "packets": packets * ROUNDS,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=10000, help="packets per round")
    parser.add_argument("--quick", action="store_true", help="1000 packets per round")
    args = parser.parse_args()
    packets = 1000 if args.quick else max(100, min(args.packets, 100_000))
    rows = bench(packets)
    for row in rows:
        print(json.dumps(row))
    print()
    print(f"{'engine':<8} {'suite':<26} {'figure':<16} {'us/packet':>10}")
    for row in rows:
        if "us_per_packet" in row:
            print(
                f"{row.get('engine', '-'):<8} {row.get('suite', '-'):<26} {row['figure']:<16} "
                f"{row['us_per_packet']:>10.3f}"
            )
    print()
    for row in rows:
        if row["figure"] == "ratio":
            print(
                f"{row['engine']:<7} {row['suite']}: protect+unprotect "
                f"{row['protect_unprotect_us']} us = {row['srtp_over_plain']}x plain "
                f"(parse+serialize); pure media path with SRTP = "
                f"{row['media_with_srtp_over_media']}x without"
            )
        elif row["figure"] == "loopback_ratio":
            print(
                f"loopback UDP, media path with syscalls ({row['engine']}): "
                f"SRTP = {row['srtp_over_plain']}x plain"
            )


if __name__ == "__main__":
    main()
