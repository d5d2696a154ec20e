"""Per-packet CPU cost of each codec (a script, not a test; figures are printed, not judged).

For G.711 (PCMU, PCMA), G.722 and Opus (when the opus extra and libopus are
installed): encode and decode of one 20 ms packet of a speech-like signal
(voiced harmonics with a syllable-rate envelope) through one stream object,
as a call uses it; Opus also with in-band FEC on (the peer said
``useinbandfec=1``) and its concealment of one lost packet. Timed with
time.perf_counter, best of several rounds of a bounded number of packets.

Prints one JSON object per figure, then a table with the share of one core a
call's codec work takes (50 packets a second each way).

Usage: .venv/bin/python bench/bench_codecs.py [--packets 2000] [--quick]
"""

import argparse
import json
import sys
import time

import numpy as np

from pipecat_sip.codecs import get_codec, unavailable_codecs

ROUNDS = 5
PTIME_MS = 20


def speech_like(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 1.3 * t)) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 21))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return np.round(x / np.abs(x).max() * 12000).astype("<i2")


def best_us(fn, packets: list, rounds: int) -> float:
    """Best-of-rounds mean time of fn(packet) over the packets, microseconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for packet in packets:
            fn(packet)
        best = min(best, (time.perf_counter() - start) / len(packets))
    return best * 1e6


def bench_codec(name: str, packets: int, rounds: int, fmtp: str | None = None) -> dict:
    codec = get_codec(name)
    samples = codec.sample_rate * PTIME_MS // 1000
    signal = speech_like(packets * PTIME_MS / 1000 + 0.1, codec.sample_rate).tobytes()
    frames = [signal[2 * samples * i : 2 * samples * (i + 1)] for i in range(packets)]
    encoder = codec.for_stream(fmtp)
    payloads = [encoder.encode(frame) for frame in frames]
    encode_us = best_us(codec.for_stream(fmtp).encode, frames, rounds)
    decode_us = best_us(codec.for_stream().decode, payloads, rounds)
    row = {
        "bench": "codec",
        "codec": codec.encoding_name,
        "fmtp": fmtp,
        "sample_rate": codec.sample_rate,
        "payload_bytes": round(sum(map(len, payloads)) / len(payloads), 1),
        "encode_us": round(encode_us, 2),
        "decode_us": round(decode_us, 2),
        "packets": packets * rounds,
        # a call encodes and decodes 1000 / PTIME_MS packets a second
        "core_percent_per_call": round((encode_us + decode_us) * (1000 / PTIME_MS) / 1e4, 3),
    }
    stream = codec.for_stream()
    if stream.conceal(samples) is not None:
        row["conceal_us"] = round(best_us(lambda _: stream.conceal(samples), frames, rounds), 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=2000, help="20 ms packets per round")
    parser.add_argument("--quick", action="store_true", help="200 packets, 2 rounds")
    args = parser.parse_args()
    packets = max(10, min(args.packets, 50_000))
    rounds = ROUNDS
    if args.quick:
        packets, rounds = 200, 2
    runs = [("PCMU", None), ("PCMA", None), ("G722", None)]
    missing = unavailable_codecs().get("opus")
    if missing is None:
        runs += [("opus", None), ("opus", "useinbandfec=1")]
    else:
        print(json.dumps({"bench": "codec", "codec": "opus", "skipped": missing}))
    rows = []
    for name, fmtp in runs:
        row = bench_codec(name, packets, rounds, fmtp)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'codec':<22}{'bytes':>7}{'encode us':>11}{'decode us':>11}{'% core/call':>13}")
    for row in rows:
        label = row["codec"] + (f" ({row['fmtp']})" if row["fmtp"] else "")
        print(
            f"{label:<22}{row['payload_bytes']:>7}{row['encode_us']:>11}{row['decode_us']:>11}"
            f"{row['core_percent_per_call']:>13}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
