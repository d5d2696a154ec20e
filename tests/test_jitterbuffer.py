"""JitterBuffer on a fake clock: exact frame sequences, delays, adaptation, bounds.

Recorded patterns in tests/data/jitter/*.csv (seq, RTP timestamp, arrival in
microseconds) were captured from a real RTPSession paced by MediaClock over
loopback on the 2-core CI machine, idle and with three CPU burners running
(arrival p99 spread 1.6 ms and 27 ms respectively).
"""

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipecat_sip.rtp.jitterbuffer import JitterBuffer, is_digital_silence
from pipecat_sip.rtp.packet import RtpPacket

PTIME = 0.020
STEP = 160
TS0 = 1000
SPEECH = bytes(range(1, 161))
SILENCE = b"\xff" * 160
TE = 101
DATA = Path(__file__).parent / "data" / "jitter"


def audio(seq, ts=None, *, marker=False, ssrc=0x1234, pt=0, payload=SPEECH):
    """An audio packet; by default its timestamp follows its sequence number."""
    if ts is None:
        ts = TS0 + seq * STEP
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker)


def label(item):
    if item is None:
        return "N"
    if item.payload_type == TE:
        return f"e{item.sequence_number}"
    if item.payload_type == 13:
        return f"cn{item.sequence_number}"
    return item.sequence_number


def drive(buffer, arrivals, ticks, *, phase=0.010, start=0.0):
    """Put each (time, packet) when the fake clock passes it; pop every PTIME.

    Returns one tuple of labels per tick, and the delay (release tick minus
    arrival) of every audio packet released, keyed by the packet's id.
    """
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out, delays, arrived = [], {}, {}
    i = 0
    for k in range(ticks):
        now = start + phase + k * PTIME
        while i < len(arrivals) and arrivals[i][0] <= now:
            at, packet = arrivals[i]
            arrived.setdefault(id(packet), at)
            buffer.put(packet, at)
            i += 1
        items = buffer.pop(now)
        out.append(tuple(label(item) for item in items))
        for item in items:
            if item is not None:
                delays[id(item)] = now - arrived[id(item)]
    return out, delays


def steady(seqs, *, first=0.001, marker_first=True, **kw):
    """Arrivals one PTIME apart, in the order given."""
    return [
        (first + i * PTIME, audio(seq, marker=marker_first and i == 0, **kw))
        for i, seq in enumerate(seqs)
    ]


def frames(out):
    """The audio entries of each tick (events left out)."""
    return [tuple(x for x in tick if not (isinstance(x, str) and x[0] == "e")) for tick in out]


# --- clean path --------------------------------------------------------------------------


def test_clean_path_releases_each_packet_at_the_next_tick():
    buffer = JitterBuffer(8000, 20)
    out, delays = drive(buffer, steady(range(10)), 10)
    assert out == [(i,) for i in range(10)]
    # Each packet arrived 9 ms before its tick: added delay 9 ms, less than one packet.
    assert all(abs(d - 0.009) < 1e-9 for d in delays.values())
    st = buffer.stats
    assert (st.played, st.concealed, st.late, st.lost, st.stretched, st.shrunk) == (
        10,
        0,
        0,
        0,
        0,
        0,
    )


def test_release_is_aligned_to_the_tick_and_adds_at_most_one_packet():
    for phase in [i / 1000 for i in range(1, 20, 2)]:
        buffer = JitterBuffer()
        _, delays = drive(buffer, steady(range(200)), 202, phase=phase)
        assert len(delays) == 200
        assert all(0 <= d <= PTIME + 1e-9 for d in delays.values()), phase


def test_empty_pops_before_any_packet_and_marker_first_packet():
    buffer = JitterBuffer()
    assert buffer.pop(0.0) == [] and buffer.pop(0.02) == []
    out, _ = drive(buffer, steady(range(3), first=0.05), 6)
    assert out == [(), (), (), (0,), (1,), (2,)]


# --- reordering, duplicates, late, loss ----------------------------------------------------


def test_reordering_within_the_delay_comes_out_in_order():
    order = [0, 1, 3, 2, 4, 5, 6, 7]
    buffer = JitterBuffer(min_delay_ms=40)
    out, _ = drive(buffer, steady(order), 10)
    assert out == [(), (), (0,), (1,), (2,), (3,), (4,), (5,), (6,), (7,)]
    assert buffer.stats.late == 0 and buffer.stats.concealed == 0


def test_reordered_packet_after_its_slot_is_stretched_in_not_lost():
    # 1,2,4,3,5 with no delay yet: slot 2 is concealed, 2 arrives just after and is
    # still played (the delay grows one packet); nothing is lost.
    buffer = JitterBuffer()
    out, delays = drive(buffer, steady([0, 1, 3, 2, 4, 5, 6]), 8)
    assert out == [(0,), (1,), ("N",), (2,), (3,), (4,), (5,), (6,)]
    st = buffer.stats
    assert (st.stretched, st.late, st.lost, st.concealed, st.concealed_no_loss) == (1, 0, 0, 1, 1)
    assert max(delays.values()) <= 0.049 + 1e-9  # packet 3 waited for 2 to be played


def test_duplicates_are_dropped_and_counted():
    arrivals = steady(range(6)) + [
        (0.0015, audio(0)),  # while still held
        (0.0500, audio(1)),  # after its release
        (0.1000, audio(5)),  # after its release, last one
    ]
    buffer = JitterBuffer()
    out, _ = drive(buffer, arrivals, 6)
    assert out == [(i,) for i in range(6)]
    assert buffer.stats.duplicates == 3 and buffer.stats.played == 6


def test_a_packet_too_late_to_stretch_is_dropped_as_late():
    # max_delay 20 ms: packet 3 arrives 3 ticks late, beyond any stretch.
    arrivals = [a for a in steady(range(8)) if a[1].sequence_number != 3]
    arrivals.append((0.001 + 6 * PTIME + 0.0005, audio(3)))
    buffer = JitterBuffer(max_delay_ms=20)
    out, _ = drive(buffer, arrivals, 8)
    assert out == [(0,), (1,), (2,), ("N",), (4,), (5,), (6,), (7,)]
    st = buffer.stats
    assert st.late == 1 and st.lost == 1 and st.concealed == 1 and st.concealed_no_loss == 0
    # A second copy of it is a duplicate, not late again.
    buffer.put(audio(3), 0.2)
    assert buffer.stats.duplicates == 1 and buffer.stats.late == 1


def test_burst_of_loss_yields_one_none_per_lost_packet():
    arrivals = [a for a in steady(range(12)) if a[1].sequence_number not in (3, 4, 5)]
    buffer = JitterBuffer()
    out, _ = drive(buffer, arrivals, 12)
    assert out == [(0,), (1,), (2,), ("N",), ("N",), ("N",)] + [(i,) for i in range(6, 12)]
    st = buffer.stats
    assert st.lost == 3 and st.concealed == 3 and st.concealed_no_loss == 0


def test_sequence_and_timestamp_wrap():
    arrivals = [
        (0.001 + i * PTIME, audio(65533 + i, ts=0xFFFFFF00 + STEP * i, marker=i == 0))
        for i in range(8)
    ]
    arrivals[4], arrivals[5] = (arrivals[4][0], arrivals[5][1]), (arrivals[5][0], arrivals[4][1])
    buffer = JitterBuffer(min_delay_ms=20)
    out, _ = drive(buffer, arrivals, 9)
    assert [x for tick in out for x in tick] == [65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert buffer.stats.late == buffer.stats.lost == buffer.stats.concealed == 0


# --- telephone-events and comfort noise ---------------------------------------------------


def test_telephone_events_keep_their_order_and_are_not_frames():
    ev_ts = TS0 + 2 * STEP
    arrivals = [
        (0.001, audio(0, marker=True)),
        (0.021, audio(1)),
        (0.041, audio(2, ts=ev_ts, pt=TE)),
        (0.061, audio(3, ts=ev_ts, pt=TE)),
        (0.081, audio(4, ts=ev_ts, pt=TE)),
        (0.101, audio(5, ts=TS0 + 5 * STEP, marker=True)),
        (0.121, audio(6, ts=TS0 + 6 * STEP)),
    ]
    buffer = JitterBuffer(telephone_event_pts=[TE])
    out, _ = drive(buffer, arrivals, 7)
    # While the sender sends events instead of audio: no frame, and no concealment.
    assert out == [(0,), (1,), ("e2",), ("e3",), ("e4",), (5,), (6,)]
    assert buffer.stats.events == 3 and buffer.stats.concealed == 0 and buffer.stats.played == 4


def test_telephone_events_wait_behind_earlier_audio():
    # With 40 ms of delay, an event that arrives early still comes out after audio 1.
    arrivals = [
        (0.001, audio(0, marker=True)),
        (0.021, audio(1)),
        (0.022, audio(2, ts=TS0 + 2 * STEP, pt=TE)),
        (0.041, audio(3, ts=TS0 + 2 * STEP)),
        (0.061, audio(4, ts=TS0 + 3 * STEP)),
    ]
    buffer = JitterBuffer(min_delay_ms=40, telephone_event_pts=[TE])
    out, _ = drive(buffer, arrivals, 7)
    assert out == [(), (), (0,), (1,), ("e2", 3), (4,), ("N",)]


def test_comfort_noise_is_a_frame_of_silence_and_the_gap_after_it_is_not_loss():
    arrivals = steady(range(3))
    arrivals.append((0.061, audio(3, pt=13, payload=b"\x40")))
    gap = 22  # slots the sender leaves before the next talkspurt (440 ms)
    arrivals += [
        (0.5 + 0.001 + i * PTIME, audio(4 + i, ts=TS0 + (4 + i + gap) * STEP, marker=i == 0))
        for i in range(3)
    ]
    buffer = JitterBuffer()
    out, _ = drive(buffer, arrivals, 29)
    assert out == [(0,), (1,), (2,), ("cn3",)] + [()] * gap + [(4,), (5,), (6,)]
    st = buffer.stats
    assert st.comfort_noise == 1 and st.concealed == 0 and st.quiet_ticks == gap


# --- silence, resync, SSRC change, bounds ------------------------------------------------


def test_long_silence_with_nothing_sent_is_not_concealed_for_minutes():
    buffer = JitterBuffer(max_conceal_ms=200)
    talk = steady(range(50))
    # The sender sends nothing for 120 s (timestamps run on), then talks again; its
    # clock runs 0.5% slow, so the old timeline is 600 ms off by then.
    resume = 0.001 + 50 * PTIME + 120.0
    ts_resume = TS0 + 50 * STEP + int(120.0 / 1.005 * 8000)
    talk += [
        (resume + i * PTIME, audio(50 + i, ts=ts_resume + i * STEP, marker=i == 0))
        for i in range(20)
    ]
    ticks = int((resume - 0.01) / PTIME) + 22
    out, delays = drive(buffer, talk, ticks)
    nones = sum(1 for tick in out[:-5] if tick == ("N",))
    assert nones == 10  # 200 ms, then silence (empty lists)
    assert buffer.stats.concealed_no_loss == 10  # the next packet followed without a gap
    played = [x for tick in out for x in tick if x != "N"]
    assert played == list(range(70))
    assert buffer.stats.resyncs == 1 and buffer.stats.late == 0
    assert max(delays.values()) <= PTIME + 1e-9
    assert buffer.held <= buffer.max_packets


def test_ssrc_change_resets_once_confirmed_and_stragglers_are_dropped():
    old = steady(range(5), ssrc=1)
    new = [
        (0.101 + i * PTIME, audio(9000 + i, ts=77 + i * STEP, marker=i == 0, ssrc=2))
        for i in range(5)
    ]
    stray = [(0.05, audio(500, ssrc=3))]  # one packet of another source: no switch
    straggler = [(0.125, audio(3, ssrc=1))]  # an old packet of the source left
    buffer = JitterBuffer()
    out, _ = drive(buffer, old + new + stray + straggler, 11)
    # The switch waits for 9001 (RFC 3550 A.1: in sequence), then plays 9000 too.
    assert out == [(0,), (1,), (2,), (3,), (4,), ("N",)] + [(9000 + i,) for i in range(5)]
    assert buffer.stats.resets == 1 and buffer.stats.discarded == 2
    assert buffer.ssrc == 2
    # The old source coming back with new packets is followed (after two in sequence).
    buffer.put(audio(10, ssrc=1), 0.22)
    buffer.put(audio(11, ssrc=1), 0.221)
    assert buffer.ssrc == 1 and buffer.stats.resets == 2


def test_far_future_sequence_needs_confirmation_and_memory_stays_bounded():
    buffer = JitterBuffer()
    out, _ = drive(buffer, steady(range(3)), 3)
    # One packet 20000 ahead: discarded, not held, the stream goes on.
    buffer.put(audio(20003), 0.06)
    assert buffer.held == 0 and buffer.stats.discarded == 1
    buffer.put(audio(3), 0.061)
    assert [label(x) for x in buffer.pop(0.07)] == [3]
    # Two in a row far ahead: the sender restarted its numbering (RFC 3550 A.1).
    buffer.put(audio(40000, ts=5), 0.08)
    buffer.put(audio(40001, ts=5 + STEP), 0.081)
    assert buffer.stats.resets == 1
    assert [label(x) for x in buffer.pop(0.09)] == [40001]
    # A flood within the window never holds more than max_packets.
    for i in range(10_000):
        buffer.put(audio(40002 + i, ts=5 + (2 + i) * STEP), 0.1)
    assert buffer.held <= buffer.max_packets


def test_a_timestamp_far_off_is_dropped_when_the_next_packet_fits_the_stream():
    arrivals = steady(range(10))
    arrivals[4] = (arrivals[4][0], audio(4, ts=TS0 + 4 * STEP + 8000 * 3600))  # an hour ahead
    buffer = JitterBuffer(min_delay_ms=20)
    out, _ = drive(buffer, arrivals, 12)
    assert frames(out) == [(), (0,), (1,), (2,), (3,), ("N",), (5,), (6,), (7,), (8,), (9,), ("N",)]
    assert buffer.stats.discarded == 1 and buffer.stats.resyncs == 0


def test_a_timestamp_jump_confirmed_by_the_next_packet_resyncs():
    jump = 8000 * 60
    arrivals = steady(range(5)) + [
        (0.101 + i * PTIME, audio(5 + i, ts=TS0 + (5 + i) * STEP + jump)) for i in range(5)
    ]
    buffer = JitterBuffer(min_delay_ms=20)
    out, _ = drive(buffer, arrivals, 12)
    assert [x for tick in out for x in tick if x != "N"] == list(range(10))
    assert buffer.stats.resyncs == 1 and buffer.stats.discarded == 0


def test_missed_pops_are_caught_up_from_the_clock():
    buffer = JitterBuffer()
    arrivals = steady(range(30))
    drive(buffer, arrivals[:10], 10)
    for at, packet in arrivals[10:26]:
        buffer.put(packet, at)
    # The caller did not pop for 15 ticks; the next pop plays what is due now.
    items = buffer.pop(0.010 + 25 * PTIME)
    assert [label(x) for x in items] == [25]
    assert buffer.stats.missed_ticks == 15 and buffer.stats.late == 15


# --- adaptation ---------------------------------------------------------------------------


def jittery(seqs, spread, rng, *, first=0.001):
    return [(first + i * PTIME + rng.uniform(0, spread), audio(s)) for i, s in enumerate(seqs)]


def test_delay_grows_to_the_jitter_and_stays_in_band():
    rng = random.Random(7)
    buffer = JitterBuffer()
    arrivals = jittery(range(3000), 0.030, rng)
    out, delays = drive(buffer, arrivals, 3005)
    d = sorted(delays.values())
    late = buffer.stats.late + buffer.stats.lost
    assert late <= 0.02 * 3000
    # After adapting, the wait covers 30 ms of jitter plus less than a packet.
    tail = [delays[id(p)] for _, p in arrivals[1000:] if id(p) in delays]
    assert max(tail) <= 0.030 + PTIME + 0.002
    assert buffer.target_delay_ms == pytest.approx(30, abs=2)
    assert 0.015 < d[len(d) // 2] < 0.040


@pytest.mark.parametrize("spread_ms", [0, 10, 30, 60])
def test_jitter_sweep_late_packets_and_delay_bounded(spread_ms):
    rng = random.Random(spread_ms)
    buffer = JitterBuffer()
    n = 2500
    arrivals = jittery(range(n), spread_ms / 1000, rng)
    _, delays = drive(buffer, arrivals, n + 10)
    st = buffer.stats
    assert st.played + st.late + st.lost >= n - 1
    assert (st.late + st.lost) / n <= 0.03
    values = sorted(delays.values())
    p95 = values[math.ceil(0.95 * len(values)) - 1]
    assert p95 <= spread_ms / 1000 + PTIME + 0.003
    assert st.dropped_speech <= 3


def test_a_rare_spike_is_concealed_not_waited_for():
    arrivals = steady(range(400))
    for k in range(200, 205):  # one 100 ms spike draining over five packets
        at, packet = arrivals[k]
        arrivals[k] = (at + 0.1 - (k - 200) * PTIME, packet)
    buffer = JitterBuffer()
    _, delays = drive(buffer, arrivals, 400)
    assert buffer.stats.stretched == 0 and buffer.stats.dropped_speech == 0
    assert buffer.stats.late == 5 and buffer.stats.concealed == 5
    after = [delays[id(p)] for _, p in arrivals[210:] if id(p) in delays]
    assert max(after) <= PTIME


@pytest.mark.parametrize("skew", [0.005, -0.005])
def test_clock_skew_keeps_the_delay_bounded(skew):
    """A sender clock 0.5% fast or slow, talking non-stop for 60 s."""
    n = 3000
    interval = PTIME / (1 + skew)
    arrivals = [(0.001 + i * interval, audio(i, marker=i == 0)) for i in range(n)]
    buffer = JitterBuffer()
    _, delays = drive(buffer, arrivals, int(n * interval / PTIME) + 2)
    st = buffer.stats
    assert max(delays.values()) <= 0.06
    drift_frames = n * abs(skew)  # 15 packet times over the call
    if skew > 0:  # too much audio: a frame cut now and then (no silence to shorten)
        assert abs(st.dropped_speech - drift_frames) <= 3
        assert st.concealed <= 1 and st.late == 0  # (one at the very end: the stream stops)
    else:  # too little: a packet time stretched now and then, nothing lost
        assert abs(st.stretched - drift_frames) <= 3 and st.lost == 0 and st.late == 0
        assert st.concealed - st.concealed_no_loss <= 2  # (the stream's end: not yet resolved)


def test_skew_with_silence_packets_adapts_on_silence_only():
    """The fast sender sends digital silence half the time: only silence is dropped."""
    n = 3000
    interval = PTIME / 1.005
    arrivals = [
        (0.001 + i * interval, audio(i, payload=SILENCE if (i // 100) % 2 else SPEECH))
        for i in range(n)
    ]
    buffer = JitterBuffer()
    _, delays = drive(buffer, arrivals, int(n * interval / PTIME) + 2)
    st = buffer.stats
    assert st.dropped_speech == 0 and abs(st.shrunk - 15) <= 3
    assert max(delays.values()) <= 0.045


def talkspurts(spurts, *, rng=None, spread=0.0, shift=0.0):
    """Arrivals of talkspurts [(first slot, packets)], nothing sent between them."""
    arrivals, seq = [], 0
    for slot, count in spurts:
        for i in range(count):
            jitter = rng.uniform(0, spread) if rng else 0.0
            at = 0.001 + (slot + i) * PTIME + jitter + (shift if slot else 0.0)
            arrivals.append((at, audio(seq, ts=TS0 + (slot + i) * STEP, marker=i == 0)))
            seq += 1
    return arrivals


def test_a_talkspurt_arriving_later_after_a_silence_starts_later():
    """The path got 25 ms longer during a silence: the next talkspurt is played whole."""
    arrivals = talkspurts([(0, 50), (75, 50)], shift=0.025)
    buffer = JitterBuffer()
    out, delays = drive(buffer, arrivals, 126)
    played = [x for tick in out for x in tick if x != "N"]
    assert played == list(range(100))
    st = buffer.stats
    assert st.late == st.lost == st.dropped_speech == 0
    assert st.stretched == 1  # one packet time of silence added before the talkspurt
    assert st.concealed == st.concealed_no_loss == 10  # the first silence's start
    assert max(delays[id(p)] for _, p in arrivals[50:]) <= PTIME + 1e-9


def test_delay_is_lowered_in_silences_not_by_cutting_speech():
    """Jitter goes away: the delay comes down in the silences between talkspurts."""
    rng = random.Random(5)
    first = talkspurts([(0, 300)], rng=rng, spread=0.050)
    later = talkspurts([(0, 300)] + [(300 + k * 125, 100) for k in range(1, 12)])[300:]
    arrivals = first + later
    buffer = JitterBuffer()
    ticks = 300 + 12 * 125
    _, delays = drive(buffer, arrivals, ticks)
    st = buffer.stats
    assert st.dropped_speech == 0 and st.shrunk >= 2
    last = [delays[id(p)] for _, p in arrivals[-100:]]
    assert max(last) <= PTIME + 0.002  # back to the clean-path delay


def test_recorded_idle_machine_adds_at_most_a_packet():
    arrivals = recorded("loopback_rtpsession.csv")
    buffer = JitterBuffer()
    _, delays = drive(buffer, arrivals, len(arrivals) + 5, phase=0.0101)
    st = buffer.stats
    assert st.played == len(arrivals) and st.late == st.lost == 0
    values = sorted(delays.values())
    assert values[math.ceil(0.95 * len(values)) - 1] <= PTIME + 0.002


def test_recorded_loaded_machine_absorbs_its_jitter():
    arrivals = recorded("loopback_rtpsession_loaded.csv")
    buffer = JitterBuffer()
    _, delays = drive(buffer, arrivals, len(arrivals) + 10, phase=0.0101)
    st = buffer.stats
    assert (st.late + st.lost) <= 0.02 * len(arrivals)
    assert st.played >= 0.98 * len(arrivals)
    assert max(delays.values()) <= 0.08


def recorded(name):
    arrivals = []
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        seq, ts, us = (int(x) for x in line.split(","))
        arrivals.append((us / 1e6, RtpPacket(0, seq, ts, 0xAB, SPEECH, not arrivals)))
    return arrivals


def test_digital_silence_detector():
    assert is_digital_silence(audio(0, payload=SILENCE))
    assert not is_digital_silence(audio(0, payload=SPEECH))
    assert not is_digital_silence(audio(0, payload=b""))


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="ptime"):
        JitterBuffer(8000, 0.1)
    with pytest.raises(ValueError, match="min_delay_ms"):
        JitterBuffer(min_delay_ms=100, max_delay_ms=50)
    with pytest.raises(ValueError, match="clock rate"):
        JitterBuffer(0)
    with pytest.raises(ValueError, match="late_fraction"):
        JitterBuffer(late_fraction=0.9)


# --- properties ---------------------------------------------------------------------------

events = st.lists(
    st.tuples(
        st.integers(0, 80),  # sequence offset
        st.floats(0, 0.2),  # extra delay, s
        st.sampled_from(["audio", "audio", "audio", "cn", "event", "dup"]),
        st.integers(0, 40),  # chance of an SSRC change (0 changes)
    ),
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(0, 0xFFFF), st.floats(0, 0.02))
def test_properties_one_frame_per_tick_in_order_no_duplicates_bounded(items, seq0, phase):
    buffer = JitterBuffer(telephone_event_pts=[TE], max_delay_ms=100)
    arrivals = []
    ssrc = 1
    for offset, extra, kind, change in items:
        if change == 0:
            ssrc += 1
        seq = seq0 + offset
        pt = {"cn": 13, "event": TE}.get(kind, 0)
        packet = audio(seq, pt=pt, ssrc=ssrc)
        at = offset * PTIME + extra
        arrivals.append((at, packet))
        if kind == "dup":
            arrivals.append((at + extra / 2, audio(seq, ssrc=ssrc)))
    arrivals.sort(key=lambda a: a[0])
    released = set()
    last = {}
    i = 0
    for k in range(120):
        now = phase + k * PTIME
        while i < len(arrivals) and arrivals[i][0] <= now:
            buffer.put(arrivals[i][1], arrivals[i][0])
            i += 1
            assert buffer.held <= buffer.max_packets
        items_out = buffer.pop(now)
        audio_entries = [x for x in items_out if x is None or x.payload_type != TE]
        assert len(audio_entries) <= 1  # at most one frame (or None) per tick ...
        if audio_entries:
            assert items_out[-1] is audio_entries[0]  # ... after the events due before it
        for x in items_out:
            if x is None:
                continue
            key = (x.ssrc, x.sequence_number)
            assert key not in released  # never the same packet twice
            released.add(key)
            prev = last.get(x.ssrc)
            if prev is not None:  # sequence order within a source (offsets never wrap here)
                assert (x.sequence_number - prev) & 0xFFFF < 0x8000
            last[x.ssrc] = x.sequence_number
    st_ = buffer.stats
    assert st_.played + st_.events <= st_.received


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)), max_size=300))
def test_properties_hostile_packets_never_crash_and_stay_bounded(pairs):
    buffer = JitterBuffer(telephone_event_pts=[TE])
    for i, (seq, ts) in enumerate(pairs):
        buffer.put(RtpPacket(i % 3 and 0 or TE, seq, ts, 7, b"x"), i * 0.001)
        if i % 7 == 0:
            assert len([x for x in buffer.pop(i * 0.001) if x is None or x.payload_type != TE]) <= 1
        assert buffer.held <= buffer.max_packets


def test_bench_quick_mode_runs():
    """bench/jitter.py --quick runs (so the script cannot rot); its figures are not judged."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "bench" / "jitter.py"), "--quick"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["scenario"] for r in rows} >= {"clean", "jitter 30 ms uniform", "skew +0.5%"}
    for row in rows:
        for key in ("delay_p50_ms", "delay_p95_ms", "concealed_pct", "late_pct"):
            assert key in row, row


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(0, 0.05), min_size=1, max_size=300),  # per-packet jitter, s
    st.lists(st.integers(0, 299), max_size=30),  # lost packets
    st.floats(-0.005, 0.005),  # sender clock skew
    st.floats(0, 0.02),
)
def test_properties_wait_is_bounded_on_a_fifo_path(extras, lost, skew, phase):
    """In-order delivery, jitter up to 50 ms: nothing waits longer than max_delay + 2 ticks.

    (A packet that overtakes others waits for them, and a path that suddenly gets
    much faster leaves packets early until a silence or the delay cap: those waits
    are not bounded by max_delay alone.)
    """
    buffer = JitterBuffer(max_delay_ms=100)
    interval = PTIME / (1 + skew)
    arrivals, last = [], 0.0
    for i, extra in enumerate(extras):
        last = max(last, i * interval + extra)
        if i not in set(lost):
            arrivals.append((last, audio(i, marker=i == 0)))
    _, delays = drive(buffer, arrivals, len(extras) + 20, phase=phase)
    assert all(d <= 0.100 + 2 * PTIME + 1e-6 for d in delays.values())
    assert buffer.held <= buffer.max_packets


def test_a_timestamp_jump_while_the_buffer_wants_to_shrink_is_followed():
    # The first packet 60 ms late, the rest on time: the buffer holds a packet time
    # too much and waits for a silence to shrink. Then the timestamp jumps 10 s ahead
    # (a new talkspurt, RFC 3550 s.5.1) and the next packet confirms it: the buffer
    # re-anchors on it. It used to go on with the old wish to shrink over the cleared
    # statistics and raise IndexError out of pop() (the tick's RTP then went unsent).
    jump = TS0 + 160 * 40 + 8000 * 10
    arrivals = [(i * PTIME + (0.061 if i == 0 else 0.001), audio(i)) for i in range(40)]
    arrivals += [
        ((40 + j) * PTIME + 0.001, audio(40 + j, jump + STEP * j, marker=j == 0)) for j in range(10)
    ]
    buffer = JitterBuffer()
    out, _ = drive(buffer, arrivals, 80)
    played = [x for tick in frames(out) for x in tick if x != "N"]
    assert played == list(range(1, 50))  # in order, the jump included (0 came after 1)
    assert buffer.stats.resyncs == 1
