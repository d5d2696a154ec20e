"""Twilio media-stream load generator for bench/compare_ws.py (a script, not a test).

Opens ``--calls`` websocket connections to ``--url`` (at ``--rate`` connections
per second) and on each speaks what Twilio sends a media-stream server:
``connected``, ``start`` (streamSid, callSid, mediaFormat audio/x-mulaw 8000 Hz
mono), then one ``media`` message every 20 ms with 160 bytes of base64 mu-law,
from absolute deadlines at a per-call phase, until a common stop time, then
``stop``. The audio is speech (espeak-ng, or speech-like noise) at -18 dB with a
20 ms 1 kHz tone burst at about -6 dBFS once per ``--burst-period`` s.

Every message the server sends is timestamped on receipt (``time.monotonic_ns``
in this process, after the websockets library has read it: user-space times,
not kernel ones) and its payload kept, per stream.

Prints one JSON line (``peer_stats``) of figures over the steady window (from
the last stream's first echo + ``--settle`` s to the stop time - 0.5 s):

- connections failed (no connect, no echo, or closed before the stop time),
- echo received: audio bytes in the window / (window * 8000 B/s), mean and min,
- arrival-interval deviation p50/p99/max in ms: |interval - audio duration of
  the previous message| (Pipecat paces its websocket output by its own sleep
  and sends 40 ms per message by default, so the nominal interval is the
  message's own duration, not 20 ms), with the message size distribution,
- added delay of the echo: from sending a burst to the moment its onset would
  play if each received message played on arrival (arrival + the onset's
  offset in the message), p50/p95/max,
- this generator's own send lateness (p99), to show it kept up.

Usage: .venv/bin/python bench/ws_peer.py --url ws://127.0.0.1:PORT/ws --calls 10
"""

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from rtp_peer import speech_payloads  # noqa: E402

from pipecat_sip.codecs import PCMU  # noqa: E402

PTIME_S = 0.020
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
BYTES_PER_S = 8000
BURST_HZ = 1000.0
BURST_AMPLITUDE = 16000  # PCM16; speech is scaled under SPEECH_PEAK
SPEECH_GAIN = 0.125
ONSET_THRESHOLD = 8000  # |sample| above this is the burst
ONSET_QUIET_S = 0.2  # an onset follows this long under the threshold
CONNECT_TIMEOUT_S = 5.0
TAIL_S = 1.0  # after the stop time: wait for the echo's tail


def audio_payloads() -> tuple[list[bytes], bytes]:
    """(quiet speech payloads, one burst payload), 160 bytes of mu-law each."""
    speech = []
    for payload in speech_payloads():
        pcm = np.frombuffer(PCMU.decode(payload), dtype="<i2").astype(np.float64)
        speech.append(PCMU.encode((pcm * SPEECH_GAIN).astype("<i2").tobytes()))
    t = np.arange(FRAME_BYTES) / 8000.0
    tone = (BURST_AMPLITUDE * np.sin(2 * np.pi * BURST_HZ * t)).astype("<i2")
    return speech, PCMU.encode(tone.tobytes())


class Call:
    """One Twilio media stream: what was sent and what came back."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.stream_sid = f"MZ{index:032x}"
        self.call_sid = f"CA{index:032x}"
        self.connected = False
        self.error = ""
        self.closed_at = 0.0  # monotonic s when the server closed early
        self.arrivals = array("q")  # monotonic ns of each received media message
        self.sizes = array("l")  # its payload bytes
        self.audio = bytearray()  # all received mu-law, in order
        self.raw: list[tuple[int, str | bytes]] = []  # (monotonic ns, message) as received
        self.bursts: list[float] = []  # monotonic s each burst message was sent
        self.late: list[float] = []  # send lateness, s
        self.sent = 0
        self.other_events: Counter = Counter()

    def media(self, payload: str, seq: int) -> str:
        """A Twilio ``media`` message (formatted by hand: cheaper than json.dumps)."""
        return (
            f'{{"event":"media","sequenceNumber":"{seq + 3}","media":{{"track":"inbound",'
            f'"chunk":"{seq + 1}","timestamp":"{seq * 20}","payload":"{payload}"}},'
            f'"streamSid":"{self.stream_sid}"}}'
        )

    def start_messages(self) -> list[str]:
        return [
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "start": {
                        "accountSid": "AC" + "0" * 32,
                        "streamSid": self.stream_sid,
                        "callSid": self.call_sid,
                        "tracks": ["inbound"],
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                        "customParameters": {},
                    },
                    "streamSid": self.stream_sid,
                }
            ),
        ]


async def receive(ws, call: Call) -> None:
    """Timestamp every message the server sends (parsed later, off the clock)."""
    with contextlib.suppress(Exception):
        async for raw in ws:
            call.raw.append((time.monotonic_ns(), raw))


def parse(call: Call) -> None:
    """Turn the raw messages into arrivals, payload sizes and the received audio."""
    for t, raw in call.raw:
        try:
            message = json.loads(raw)
        except ValueError:
            call.other_events["bad_json"] += 1
            continue
        event = message.get("event")
        if event == "media":
            payload = base64.b64decode(message["media"]["payload"])
            call.arrivals.append(t)
            call.sizes.append(len(payload))
            call.audio += payload
        else:
            call.other_events[str(event)] += 1
    call.raw.clear()


async def run_call(call: Call, args, start_at: float, stop_at: float, speech, burst) -> None:
    """Connect at `start_at`, stream until `stop_at` (monotonic s), then stop and close."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    try:
        ws = await asyncio.wait_for(
            connect(args.url, compression=None, ping_interval=None, max_queue=None),
            CONNECT_TIMEOUT_S,
        )
    except Exception as exc:
        call.error = f"connect: {exc!r}"[:200]
        return
    call.connected = True
    receiver = asyncio.ensure_future(receive(ws, call))
    try:
        for message in call.start_messages():
            await ws.send(message)
        speech_b64 = [base64.b64encode(p).decode() for p in speech]
        burst_b64 = base64.b64encode(burst).decode()
        period = max(1, round(args.burst_period / PTIME_S))
        burst_phase = (call.index * 7) % period  # bursts of different calls apart
        phase = ((call.index * 0.618034) % 1.0) * PTIME_S
        t0 = time.monotonic() + phase
        seq = 0
        while True:
            due = t0 + seq * PTIME_S
            if due >= stop_at:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            if receiver.done():
                call.closed_at = now
                break
            call.late.append(now - due)
            if seq % period == burst_phase:
                call.bursts.append(now)
                payload = burst_b64
            else:
                payload = speech_b64[seq % len(speech_b64)]
            await ws.send(call.media(payload, seq))
            call.sent += 1
            seq += 1
        if not call.closed_at:
            stop = {"event": "stop", "sequenceNumber": str(seq + 3), "streamSid": call.stream_sid}
            await ws.send(json.dumps(stop | {"stop": {"callSid": call.call_sid}}))
            await asyncio.sleep(max(0.0, stop_at + TAIL_S - time.monotonic()))
    except Exception as exc:
        call.error = f"stream: {exc!r}"[:200]
        call.closed_at = call.closed_at or time.monotonic()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2.0)
        receiver.cancel()
        with contextlib.suppress(BaseException):
            await receiver


def onsets(call: Call) -> list[float]:
    """Monotonic s at which each echoed burst's onset would play (arrival + offset)."""
    if not call.audio:
        return []
    pcm = np.abs(np.frombuffer(PCMU.decode(bytes(call.audio)), dtype="<i2").astype(np.int32))
    loud = np.flatnonzero(pcm > ONSET_THRESHOLD)
    if loud.size == 0:
        return []
    quiet = int(ONSET_QUIET_S * 8000)
    first = loud[np.concatenate(([True], np.diff(loud) > quiet))]
    starts = np.concatenate(([0], np.cumsum(np.frombuffer(call.sizes, dtype=np.int64))))
    arrivals = np.frombuffer(call.arrivals, dtype=np.int64)
    result = []
    for index in first:
        message = int(np.searchsorted(starts, index, side="right")) - 1
        offset_s = (index - starts[message]) / BYTES_PER_S
        result.append(arrivals[message] / 1e9 + offset_s)
    return result


def percentile(values, q: float) -> float | None:
    if len(values) == 0:
        return None
    return round(float(np.percentile(values, q)), 2)


def analyse(calls: list[Call], args, stop_at: float) -> dict:
    """Figures over the steady window (see the module docstring)."""
    good = [c for c in calls if c.connected and not c.error and len(c.arrivals) and not c.closed_at]
    result = {
        "calls": len(calls),
        "connections_failed": len(calls) - len(good),
        "errors": sorted({c.error for c in calls if c.error})[:3],
        "messages_sent": sum(c.sent for c in calls),
        "other_events": dict(sum((c.other_events for c in calls), Counter())),
    }
    late = np.concatenate([np.asarray(c.late) for c in calls if c.late] or [np.zeros(1)])
    result["peer_send_late_p99_ms"] = round(float(np.percentile(late, 99)) * 1000, 2)
    result["peer_send_late_max_ms"] = round(float(np.max(late)) * 1000, 2)
    if not good:
        return result | {"error": "no stream echoed"}
    start = max(c.arrivals[0] for c in good) / 1e9 + args.settle
    end = stop_at - 0.5
    if end - start < 1.0:
        return result | {"window_s": round(max(0.0, end - start), 3), "error": "window under 1 s"}
    window_s = end - start
    devs, intervals, echo, sizes = [], [], [], Counter()
    for c in good:
        t = np.frombuffer(c.arrivals, dtype=np.int64) / 1e9
        size = np.frombuffer(c.sizes, dtype=np.int64)
        mask = (t >= start) & (t <= end)
        t, size = t[mask], size[mask]
        echo.append(100.0 * size.sum() / (window_s * BYTES_PER_S))
        sizes.update(size.tolist())
        if len(t) > 1:
            gap = np.diff(t) * 1000
            intervals.append(gap)
            devs.append(np.abs(gap - size[:-1] / BYTES_PER_S * 1000))
    dev = np.concatenate(devs) if devs else np.zeros(1)
    gaps = np.concatenate(intervals) if intervals else np.zeros(1)
    total = sum(sizes.values()) or 1
    delays = []
    for c in good:
        sent = np.asarray(c.bursts)
        for t_on in onsets(c):
            if not start <= t_on <= end + TAIL_S:
                continue
            before = sent[sent <= t_on]
            if before.size and t_on - before[-1] < args.burst_period:
                delays.append((t_on - before[-1]) * 1000)
    expected_bursts = sum(
        int(np.sum((np.asarray(c.bursts) >= start) & (np.asarray(c.bursts) <= end))) for c in good
    )
    return result | {
        "window_start_mono": start,
        "window_end_mono": end,
        "window_s": round(window_s, 3),
        "echo_pct": round(float(np.mean(echo)), 1),
        "echo_pct_min": round(float(np.min(echo)), 1),
        "messages_per_stream": round(float(np.mean([len(g) + 1 for g in intervals])), 1),
        "msg_ms_p50": round(float(np.percentile(list(sizes.elements()), 50)) / 8, 2),
        "msg_sizes": {str(k): round(v / total, 3) for k, v in sizes.most_common(4)},
        "interval_p50_ms": round(float(np.percentile(gaps, 50)), 2),
        "dev_p50_ms": round(float(np.percentile(dev, 50)), 3),
        "dev_p99_ms": round(float(np.percentile(dev, 99)), 3),
        "dev_max_ms": round(float(np.max(dev)), 3),
        "intervals": int(dev.size),
        "echo_delay_p50_ms": percentile(delays, 50),
        "echo_delay_p95_ms": percentile(delays, 95),
        "echo_delay_max_ms": round(max(delays), 1) if delays else None,
        "echo_delay_n": len(delays),
        "bursts_in_window": expected_bursts,
    }


async def main_async(args) -> None:
    speech, burst = audio_payloads()
    mono_to_wall = time.time() - time.monotonic()
    base = time.monotonic() + 0.2
    ramp_s = args.calls / args.rate
    stop_at = base + ramp_s + 1.0 + args.settle + args.steady + 0.5
    calls = [Call(i) for i in range(args.calls)]
    print(
        json.dumps({"ready": True, "stop_in_s": round(stop_at - time.monotonic(), 2)}), flush=True
    )
    tasks = [
        asyncio.ensure_future(run_call(c, args, base + i / args.rate, stop_at, speech, burst))
        for i, c in enumerate(calls)
    ]
    budget = stop_at + TAIL_S + 10 - time.monotonic()
    _done, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    for call in calls:
        parse(call)
    result = analyse(calls, args, stop_at)
    for key in ("window_start", "window_end"):
        if f"{key}_mono" in result:
            result[key] = result.pop(f"{key}_mono") + mono_to_wall  # time.time(), for /proc samples
    result["unfinished"] = len(pending)
    print(json.dumps({"peer_stats": True} | result), flush=True)


def main() -> None:
    """Parse arguments and run the load."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="connections/s")
    parser.add_argument("--settle", type=float, default=1.0, help="s before the window opens")
    parser.add_argument("--steady", type=float, default=8.0, help="s with all calls streaming")
    parser.add_argument("--burst-period", type=float, default=1.0, help="s between tone bursts")
    args = parser.parse_args()
    if not args.url.startswith("ws://127.0.0.1:"):
        parser.error("loopback only: --url ws://127.0.0.1:PORT/ws")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
