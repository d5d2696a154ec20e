"""Jitter buffer simulation: added delay, loss and concealment, CPU per packet (a script).

A pure simulation, no sockets: a sender makes one RTP packet every ptime on
its own clock (optionally skewed against ours, with talkspurts and silences
during which it sends nothing or digital silence), a network model delays,
drops and duplicates them, and our media clock pops the buffer every ptime
at a random phase. For every packet released the added delay is
``release tick - arrival``. Each scenario runs several seeds.

Prints one JSON object per scenario (``{"bench": "jitter", ...}``), then a
table; ``--sweep`` also tries other parameter values on the same patterns
(how the defaults were chosen).

Usage: .venv/bin/python bench/jitter.py [--seconds 60] [--seeds 3] [--sweep] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipecat_sip.rtp.jitterbuffer import JitterBuffer  # noqa: E402
from pipecat_sip.rtp.packet import RtpPacket  # noqa: E402

PTIME = 0.020
STEP = 160
SPEECH = bytes(range(1, 161))  # not digital silence
SILENCE = b"\xff" * 160


@dataclass
class Network:
    """Delay = base + jitter model; loss random or in bursts (Gilbert); duplicates."""

    base: float = 0.010
    jitter: str = "none"  # none | uniform | walk | spikes
    spread: float = 0.0  # s
    loss: float = 0.0  # random loss probability, or Gilbert p (good -> bad)
    burst_r: float = 0.0  # Gilbert r (bad -> good); 0: random loss
    dup: float = 0.0
    noise: float = 0.0002  # OS scheduling noise on arrivals, s
    _walk: float = 0.0
    _spike: float = 0.0
    _bad: bool = False

    def delay(self, rng: random.Random) -> float:
        d = self.base + rng.uniform(0, self.noise)
        if self.jitter == "uniform":
            d += rng.uniform(0, self.spread)
        elif self.jitter == "walk":  # correlated: a bounded random walk
            self._walk = min(self.spread, max(0.0, self._walk + rng.gauss(0, self.spread / 8)))
            d += self._walk
        elif self.jitter == "spikes":  # mostly clean; a queue builds and drains now and then
            if self._spike <= 0 and rng.random() < 0.004:
                self._spike = self.spread
            d += self._spike
            self._spike = max(0.0, self._spike - PTIME)
        return d

    def lost(self, rng: random.Random) -> bool:
        if self.burst_r:
            if self._bad:
                self._bad = rng.random() >= self.burst_r
            else:
                self._bad = rng.random() < self.loss
            return self._bad
        return rng.random() < self.loss


@dataclass
class Scenario:
    name: str
    net: Network = field(default_factory=Network)
    skew: float = 0.0  # sender clock fast (+) or slow (-), fraction
    talk: bool = False  # talkspurts and silences
    send_silence: bool = False  # during silences: digital silence packets, else nothing


def simulate(scenario: Scenario, seconds: float, seed: int, **params) -> dict:
    rng = random.Random(seed)
    net = Network(**{k: v for k, v in vars(scenario.net).items() if not k.startswith("_")})
    buffer = JitterBuffer(8000, 20, **params)
    seq = rng.getrandbits(16)
    ts = rng.getrandbits(32)
    ssrc = rng.getrandbits(32)
    interval = PTIME / (1 + scenario.skew)
    # Arrivals, sorted by time.
    arrivals: list[tuple[float, int, RtpPacket]] = []
    t = rng.uniform(0, PTIME)
    talking, left = True, rng.uniform(1.0, 3.0)
    marker = True
    sent = 0
    n = 0
    while t < seconds:
        if scenario.talk:
            left -= interval
            if left <= 0:
                talking = not talking
                left = rng.uniform(1.0, 3.0) if talking else rng.uniform(0.3, 2.0)
                marker = talking
        if talking or scenario.send_silence:
            payload = SPEECH if talking else SILENCE
            packet = RtpPacket(0, seq, ts, ssrc, payload, marker)
            marker = False
            seq = (seq + 1) & 0xFFFF
            sent += 1
            if not net.lost(rng):
                at = t + net.delay(rng)
                arrivals.append((at, n, packet))
                n += 1
                if net.dup and rng.random() < net.dup:
                    arrivals.append((at + rng.uniform(0, 0.01), n, packet))
                    n += 1
        ts = (ts + STEP) & 0xFFFFFFFF
        t += interval
    arrivals.sort()
    arrived_at: dict[int, float] = {}
    delays: list[float] = []
    frames = nones = 0
    phase = rng.uniform(0, PTIME)
    i = 0
    total = len(arrivals)
    put = buffer.put
    pop = buffer.pop
    start = time.process_time()
    tick = phase
    end = arrivals[-1][0] if arrivals else 0.0  # the tail after the last arrival is not judged
    while tick < end:
        while i < total and arrivals[i][0] <= tick:
            at, _, packet = arrivals[i]
            arrived_at.setdefault(id(packet), at)
            put(packet, at)
            i += 1
        for item in pop(tick):
            if item is None:
                nones += 1
            else:
                frames += 1
                delays.append(tick - arrived_at[id(item)])
        tick += PTIME
    cpu = time.process_time() - start
    st = buffer.stats
    return {
        "delays": delays,
        "sent": sent,
        "frames": frames,
        "concealed": nones,
        "concealed_loss": nones - st.concealed_no_loss,
        "late": st.late,
        "lost": st.lost,
        "duplicates": st.duplicates,
        "stretched": st.stretched,
        "shrunk": st.shrunk,
        "dropped_speech": st.dropped_speech,
        "resyncs": st.resyncs,
        "jitter_ms": buffer.jitter_ms,
        "cpu_us_per_packet": cpu / max(1, total) * 1e6,
        "ticks": int((end - phase) / PTIME),
    }


def replay(path: Path, seeds: int) -> dict:
    """A recorded trace (seq, RTP timestamp, arrival us), at `seeds` random tick phases."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            seq, ts, us = (int(x) for x in line.split(","))
            rows.append((us / 1e6, RtpPacket(0, seq, ts, 1, SPEECH, not rows)))
    delays: list[float] = []
    late = concealed = 0
    for seed in range(seeds):
        buffer = JitterBuffer()
        phase = random.Random(seed).uniform(0, PTIME)
        arrived = {}
        i = 0
        tick = phase
        while tick < rows[-1][0]:
            while i < len(rows) and rows[i][0] <= tick:
                arrived[id(rows[i][1])] = rows[i][0]
                buffer.put(rows[i][1], rows[i][0])
                i += 1
            for item in buffer.pop(tick):
                if item is None:
                    concealed += 1
                else:
                    delays.append(tick - arrived[id(item)])
            tick += PTIME
        late += buffer.stats.late + buffer.stats.lost
    sent = len(rows) * seeds
    return {
        "bench": "jitter",
        "scenario": f"recorded {path.stem}",
        "params": {},
        "delay_p50_ms": round(percentile(delays, 0.5) * 1000, 2),
        "delay_p95_ms": round(percentile(delays, 0.95) * 1000, 2),
        "delay_p99_ms": round(percentile(delays, 0.99) * 1000, 2),
        "jitter_ms": round(buffer.jitter_ms, 2),
        "played_pct": round(100 * len(delays) / sent, 2),
        "concealed_pct": round(100 * concealed / sent, 2),
        "concealed_loss_pct": round(100 * concealed / sent, 2),
        "late_pct": round(100 * late / sent, 2),
        "lost_pct": 0.0,
        "stretched": buffer.stats.stretched,
        "shrunk": buffer.stats.shrunk,
        "dropped_speech": buffer.stats.dropped_speech,
        "resyncs": buffer.stats.resyncs,
        "cpu_us_per_packet": float("nan"),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def run(scenario: Scenario, seconds: float, seeds: int, **params) -> dict:
    delays: list[float] = []
    sums: dict[str, float] = {}
    for seed in range(seeds):
        result = simulate(scenario, seconds, seed, **params)
        delays += result.pop("delays")
        for key, value in result.items():
            sums[key] = sums.get(key, 0) + value
    sent = max(1, sums["sent"])
    return {
        "bench": "jitter",
        "scenario": scenario.name,
        "params": params,
        "delay_p50_ms": round(percentile(delays, 0.5) * 1000, 2),
        "delay_p95_ms": round(percentile(delays, 0.95) * 1000, 2),
        "delay_p99_ms": round(percentile(delays, 0.99) * 1000, 2),
        "jitter_ms": round(sums["jitter_ms"] / seeds, 2),
        "played_pct": round(100 * sums["frames"] / sent, 2),
        "concealed_pct": round(100 * sums["concealed"] / sent, 2),
        "concealed_loss_pct": round(100 * sums["concealed_loss"] / sent, 2),
        "late_pct": round(100 * sums["late"] / sent, 2),
        "lost_pct": round(100 * sums["lost"] / sent, 2),
        "stretched": int(sums["stretched"]),
        "shrunk": int(sums["shrunk"]),
        "dropped_speech": int(sums["dropped_speech"]),
        "resyncs": int(sums["resyncs"]),
        "cpu_us_per_packet": round(sums["cpu_us_per_packet"] / seeds, 2),
    }


SCENARIOS = [
    Scenario("clean"),
    Scenario("clean, talkspurts", talk=True),
    Scenario("jitter 30 ms uniform", Network(jitter="uniform", spread=0.030)),
    Scenario(
        "jitter 30 ms uniform, talkspurts", Network(jitter="uniform", spread=0.030), talk=True
    ),
    Scenario("jitter 60 ms walk", Network(jitter="walk", spread=0.060)),
    Scenario("spikes 100 ms", Network(jitter="spikes", spread=0.100)),
    Scenario("loss 5% random", Network(loss=0.05)),
    Scenario("loss bursts (2%/30%)", Network(loss=0.02, burst_r=0.3)),
    Scenario("duplicates 5%", Network(dup=0.05)),
    Scenario("skew +0.5%", skew=0.005),
    Scenario("skew -0.5%", skew=-0.005),
    Scenario("skew +0.5%, silence packets", skew=0.005, talk=True, send_silence=True),
    Scenario("skew -0.5%, talkspurts", skew=-0.005, talk=True),
    Scenario(
        "jitter 30 ms + loss 2% + skew -0.5%",
        Network(jitter="uniform", spread=0.030, loss=0.02),
        skew=-0.005,
    ),
]

SWEEP = {
    "margin_ms": [0.0, 1.0, 3.0],
    "late_fraction": [0.005, 0.02, 0.05],
    "window": [100, 250, 500],
    "base_window": [25, 50, 100],
    "stuck_ms": [1000, 3000],
}
SWEEP_SCENARIOS = (
    "clean",
    "jitter 30 ms uniform",
    "jitter 60 ms walk",
    "spikes 100 ms",
    "skew +0.5%",
    "jitter 30 ms + loss 2% + skew -0.5%",
)


def table(rows: list[dict]) -> None:
    head = (
        f"{'scenario':38} {'params':26} {'p50':>6} {'p95':>6} {'p99':>6} {'J':>5} "
        f"{'conc%':>6} {'c/loss':>6} {'late%':>6} {'lost%':>6} {'+/-':>9} {'cut':>4} {'us/pkt':>6}"
    )
    print(head)
    for r in rows:
        params = ",".join(f"{k[:6]}={v}" for k, v in r["params"].items()) or "defaults"
        print(
            f"{r['scenario'][:38]:38} {params[:26]:26} {r['delay_p50_ms']:6.1f} "
            f"{r['delay_p95_ms']:6.1f} {r['delay_p99_ms']:6.1f} {r['jitter_ms']:5.1f} "
            f"{r['concealed_pct']:6.2f} {r['concealed_loss_pct']:6.2f} "
            f"{r['late_pct']:6.2f} {r['lost_pct']:6.2f} "
            f"{str(r['stretched']) + '/' + str(r['shrunk']):>9} {r['dropped_speech']:4} "
            f"{r['cpu_us_per_packet']:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also try other parameter values")
    parser.add_argument("--quick", action="store_true", help="a few seconds, one seed")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.seeds = 5.0, 1
    rows = []
    # The clean path over many tick phases: the added delay is the wait for the next tick.
    phases = run(
        Scenario("clean, 50 tick phases"), min(args.seconds, 5.0), 50 if not args.quick else 5
    )
    print(json.dumps(phases), flush=True)
    rows.append(phases)
    for scenario in SCENARIOS:
        row = run(scenario, args.seconds, args.seeds)
        print(json.dumps(row), flush=True)
        rows.append(row)
    data = Path(__file__).resolve().parent.parent / "tests" / "data" / "jitter"
    for trace in sorted(data.glob("*.csv")):
        row = replay(trace, 20 if not args.quick else 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.sweep:
        for scenario in SCENARIOS:
            if scenario.name not in SWEEP_SCENARIOS:
                continue
            for key, values in SWEEP.items():
                for value in values:
                    row = run(scenario, args.seconds, args.seeds, **{key: value})
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print()
    table(rows)


if __name__ == "__main__":
    main()
