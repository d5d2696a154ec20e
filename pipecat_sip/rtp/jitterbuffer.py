"""An adaptive play-out (jitter) buffer for received RTP audio, sans-IO.

:class:`JitterBuffer` takes every accepted packet of one audio stream with
:meth:`~JitterBuffer.put` (audio, RFC 3389 comfort noise and RFC 4733
telephone-events, which share the stream's sequence space) and, once per
media-clock tick, :meth:`~JitterBuffer.pop` returns what is due: at most one
audio frame, or ``None`` for one packet time to conceal, with any
telephone-event packets that come before it in sequence order. It reads no
clock: ``now`` (seconds of a monotonic clock) comes in with every call.

How it plays out:

- Packets are kept by extended sequence number (RFC 3550 A.1 style, wrap
  handled) and released in sequence order, each at its *slot*: the RTP
  timestamp the play head reaches at that tick. The head advances one packet
  time per tick. Duplicates and packets whose slot has passed are dropped and
  counted.
- Delay is measured per packet as its relative transit time
  ``r = arrival - timestamp / clock_rate`` (the quantity RFC 3550 A.8 takes
  differences of); the head's own offset ``H`` (tick time minus slot
  timestamp, in the same units) makes ``H - r`` the time the packet waits.
  ``m``, the least ``r`` of the last ``base_window`` packets, is the
  "fastest path" (short, so that it follows a sender clock skewed against
  ours); each packet's lateness ``r - m`` goes into a longer window of
  ``window`` packets, whose ``1 - late_fraction`` quantile ``q`` is the
  jitter to absorb. The buffer keeps ``H - m`` between ``q + margin`` and
  one packet time more, within ``min_delay_ms`` and ``max_delay_ms``.
- It changes the delay only where nobody hears it: by holding or dropping a
  silent frame (comfort noise, or digital silence), by lengthening or
  shortening a silence (DTX, between talkspurts, while the sender sends
  nothing), or by starting a talkspurt (marker bit) a tick later. A packet
  that arrives late while its slot and every slot since were concealed is
  still played and the head steps back (the concealment becomes stretching)
  when the lateness statistics, that packet included, call for that much
  delay: the delay grows by the lateness seen, while a rare spike (within
  ``late_fraction``) stays concealed. A talkspurt whose first packets come
  late after a silence simply starts later (up to ``max_delay_ms``).
  Speech is cut only when the delay stayed a packet time too long for
  ``stuck_ms`` (a sender clock running fast with no pause), then at most a
  frame every 200 ms, or when it exceeds ``max_delay_ms``.
- A missing packet whose slot is due yields ``None``; when nothing at all
  arrives it yields ``None`` for at most ``max_conceal_ms`` and then empty
  lists (the sender is silent: comfort noise ended, DTX, hold, DTMF), never
  minutes of "loss". After a silence of ``resync_ms`` or a timestamp jump
  the head is re-anchored on the next talkspurt; an SSRC change or a
  sequence jump, each confirmed by a second packet in sequence (RFC 3550
  A.1), resets the buffer.
- Memory is bounded: packets are accepted only within ``max_packets``
  sequence numbers ahead of the head, so at most that many are held.

Work per call is O(1) amortized except a scan over missing sequence numbers
(bounded by ``max_packets``) and a sorted-window update (bounded by
``window``, done in C): about 3 us per packet (put and pop) on the CI
machine.

The defaults come from ``bench/jitter.py``: on a clean path the added delay
is the wait for the next tick (p95 18.1, p99 18.8 ms at 20 ms ptime over 50
tick phases; a ``margin_ms`` of 1 made that p99 20.7 ms, for no fewer late
packets); under 30 ms of uniform jitter p95 44 ms with no late packet; with pauses in the speech a
``stuck_ms`` of 3 s cuts no speech where 1 s cut 15-40 frames a minute for
3-4 ms less delay; a ``late_fraction`` of 2% keeps 1.5% of late packets on
rare 100 ms spikes instead of waiting for them.
"""

from __future__ import annotations

import math
from bisect import bisect_left as _bisect_left
from bisect import insort as _insort
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipecat_sip.rtp.packet import RtpPacket, seq_diff

__all__ = ["COMFORT_NOISE_PT", "JitterBuffer", "JitterBufferStats", "is_digital_silence"]

COMFORT_NOISE_PT = 13
"""Static payload type of RFC 3389 comfort noise (RFC 3551 section 6)."""

_AUDIO, _CN, _EVENT = 0, 1, 2
_SEQ_BASE = 1 << 16  # extended sequence numbers start one cycle up (stay positive)
_TS_BASE = 1 << 32
_MAX_MISORDER = 100  # RFC 3550 A.1: older than this is a restart, not a late packet
_DUP_MEMORY = 64  # sequence numbers below the head remembered to tell duplicates from late
_DUP_MASK = (1 << _DUP_MEMORY) - 1
_MIN_SAMPLES = 20  # packets in the window before the delay is ever lowered
_LEFT_MEMORY = 4  # sources left whose stragglers are recognized
_CATCH_TICKS = 10  # once speech must be cut, at most one frame per this many ticks
_TICK_BLOCK = 50  # ticks over which the tick grid is re-estimated
_EPS = 1e-9

_DROP, _RESYNC, _WAIT = 0, 1, 2


def is_digital_silence(packet: RtpPacket) -> bool:
    """True when the payload is one repeated byte (encoded digital silence, e.g. G.711 0xFF).

    The default silence test of :class:`JitterBuffer`: cheap, codec-agnostic,
    and true for the silence packets senders emit when ``send_silence`` is on.
    """
    payload = packet.payload
    return bool(payload) and payload.count(payload[0]) == len(payload)


@dataclass(slots=True)
class JitterBufferStats:
    """Counters of a :class:`JitterBuffer` since it was made (resets keep counting).

    Attributes:
        received: Packets given to :meth:`JitterBuffer.put`.
        duplicates: Packets dropped because the same sequence number was
            already held or released.
        late: Packets dropped because their play-out slot had passed.
        discarded: Packets dropped for other reasons: stragglers of an SSRC
            left (older than where it was left), a sequence jump not (yet) confirmed, a timestamp
            far off the stream's and not confirmed by the next packet.
        lost: Sequence numbers skipped because they had not arrived when
            their turn came (those arriving later are also counted in
            ``late``).
        played: Audio frames returned (comfort noise included).
        comfort_noise: Comfort-noise frames among ``played``.
        events: Telephone-event packets returned.
        concealed: ``None`` entries returned (packet times to conceal).
        concealed_no_loss: Of ``concealed``, those that stood for no lost or
            late packet: a silence the sender left (DTX, the end of a
            talkspurt without comfort noise) or a slot whose packet came
            late and was played after it (stretching).
        quiet_ticks: Ticks that returned no frame (silence: DTX, comfort
            noise, DTMF, holds, before the first packet is due).
        stretched: Packet times of delay added (holds, and late packets
            played after their slot was concealed).
        shrunk: Packet times of delay removed by dropping silent frames or
            shortening silences.
        dropped_speech: Non-silent frames dropped to keep the delay bounded.
        resets: Buffer resets (SSRC change, confirmed sequence jump).
        resyncs: Re-anchorings of the play head (long silence, timestamp jump).
        missed_ticks: Ticks the caller did not :meth:`JitterBuffer.pop`
            (detected from ``now``; their slots were skipped).
    """

    received: int = 0
    duplicates: int = 0
    late: int = 0
    discarded: int = 0
    lost: int = 0
    played: int = 0
    comfort_noise: int = 0
    events: int = 0
    concealed: int = 0
    concealed_no_loss: int = 0
    quiet_ticks: int = 0
    stretched: int = 0
    shrunk: int = 0
    dropped_speech: int = 0
    resets: int = 0
    resyncs: int = 0
    missed_ticks: int = 0


class _Entry:
    __slots__ = ("packet", "ts", "arrival", "kind")

    def __init__(self, packet: RtpPacket, ts: int, arrival: float, kind: int):
        self.packet = packet
        self.ts = ts  # extended RTP timestamp
        self.arrival = arrival
        self.kind = kind


class JitterBuffer:
    """Reorders one RTP audio stream and releases one frame per packet time.

    Call :meth:`put` for every accepted packet of the audio payload type,
    comfort noise and telephone-event, and :meth:`pop` once per media-clock
    tick (every ``ptime_ms``). See the module docstring for the algorithm.

    The stream's packets are expected to carry ``ptime_ms`` of audio each
    (the negotiated ptime); telephone-event packets may carry any timestamp.

    Args:
        clock_rate: RTP timestamp clock of the audio payload, Hz.
        ptime_ms: Packet time and tick period, ms (a whole number of
            timestamp units).
        min_delay_ms: Least time the earliest packets wait, ms (0: the
            buffer adds only what the measured jitter needs, plus the wait
            for the next tick).
        max_delay_ms: Most time the earliest packets wait, ms; packets later
            than that are dropped rather than delaying the stream further.
        telephone_event_pts: Payload types of RFC 4733 telephone-events.
        comfort_noise_pt: Payload type of RFC 3389 comfort noise (None: none).
        max_packets: Hard cap on packets held, and how far ahead of the head
            (in sequence numbers) a packet is accepted; default enough for
            twice ``max_delay_ms`` plus a margin.
        window: Packets in the sliding window of lateness statistics.
        base_window: Packets over which the fastest transit is taken (short:
            it follows clock skew; long: steadier under jitter).
        late_fraction: Fraction of packets the target delay may leave late
            (0-0.5).
        margin_ms: Extra wait added above the quantile, ms.
        max_conceal_ms: Longest run of ``None`` returned while nothing
            arrives, ms; after it the buffer returns empty lists.
        resync_ms: A silence this long (no frame played), ms, re-anchors the
            play head on the next talkspurt with fresh statistics.
        stuck_ms: How long, ms, the delay may stay a packet time above target
            with no silence to shorten before a speech frame is dropped.
        is_silence: Tells a silent audio packet (may be dropped or held to
            adapt); default :func:`is_digital_silence`. Comfort noise always
            counts as silent.

    Raises:
        ValueError: A parameter is out of range, or ``ptime_ms`` is not a
            whole number of timestamp units.

    Example:
        ::

            buffer = JitterBuffer(clock_rate=8000, ptime_ms=20, telephone_event_pts=[101])
            buffer.put(packet, now)            # on each datagram
            for item in buffer.pop(now):       # on each 20 ms tick
                if item is None:
                    pcm = concealer.conceal()
                elif item.payload_type == 101:
                    dtmf.feed(item)
                else:
                    pcm = concealer.good(codec.decode(item.payload))
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        ptime_ms: int = 20,
        min_delay_ms: float = 0.0,
        max_delay_ms: float = 200.0,
        *,
        telephone_event_pts: Iterable[int] = (),
        comfort_noise_pt: int | None = COMFORT_NOISE_PT,
        max_packets: int | None = None,
        window: int = 250,
        base_window: int = 50,
        late_fraction: float = 0.02,
        margin_ms: float = 0.5,
        max_conceal_ms: float = 200.0,
        resync_ms: float = 2000.0,
        stuck_ms: float = 3000.0,
        is_silence: Callable[[RtpPacket], bool] | None = None,
    ):
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate} Hz")
        step = round(clock_rate * ptime_ms / 1000)
        if ptime_ms <= 0 or step < 1 or abs(step * 1000 - clock_rate * ptime_ms) > 1e-6:
            raise ValueError(f"ptime {ptime_ms} ms is not a whole number of {clock_rate} Hz units")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(
                f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms} and {max_delay_ms}"
            )
        if not 0 <= late_fraction <= 0.5:
            raise ValueError(f"late_fraction must be within 0-0.5, got {late_fraction}")
        if window < 1 or base_window < 1:
            raise ValueError(f"windows must hold at least one packet, got {window}, {base_window}")
        if margin_ms < 0 or max_conceal_ms < 0 or resync_ms <= 0 or stuck_ms <= 0:
            raise ValueError(
                "margin_ms and max_conceal_ms must be >= 0, resync_ms and stuck_ms > 0"
            )
        self.clock_rate = clock_rate
        self.ptime_ms = ptime_ms
        self.min_delay_ms = float(min_delay_ms)
        self.max_delay_ms = float(max_delay_ms)
        period = ptime_ms / 1000.0
        self._rate = float(clock_rate)
        self._period = period
        self._step = step
        self._half = self._step / 2
        self._min_delay = min_delay_ms / 1000.0
        self._max_delay = max_delay_ms / 1000.0
        self._margin = margin_ms / 1000.0
        if max_packets is None:
            max_packets = max(16, math.ceil(2 * max_delay_ms / ptime_ms) + 8)
        if max_packets < 2:
            raise ValueError(f"max_packets must be at least 2, got {max_packets}")
        self.max_packets = max_packets
        self._window = window
        self._base_window = base_window
        self._q_full = min(window - 1, math.ceil((1.0 - late_fraction) * window) - 1)
        self._keep = 1.0 - late_fraction
        self._conceal_limit = int(max_conceal_ms // ptime_ms)
        self._resync_ticks = max(1, math.ceil(resync_ms / ptime_ms))
        self._stuck_ticks = max(1, math.ceil(stuck_ms / ptime_ms))
        # A timestamp further than this from the head is a jump, not jitter.
        self._jump = (max_delay_ms / 1000.0 + 4 * period) * clock_rate
        self._catchup = 3 * period  # the caller is this far behind the tick grid: it missed ticks
        self._event_pts = frozenset(telephone_event_pts)
        self._cn_pt = comfort_noise_pt
        self._is_silence = is_silence or is_digital_silence
        self.stats = JitterBufferStats()

        self._ssrc: int | None = None
        self._left: dict[int, int] = {}  # sources left: SSRC -> next sequence number then
        self._candidate: tuple[RtpPacket, float] | None = None  # first packet of another SSRC
        self._floor: int | None = None  # a returning source's packets start here
        self._allowance = self._min_delay  # wait for the first packet after (re)sync, s
        self._queue: dict[int, _Entry] = {}
        self._fifo: deque[float] = deque()  # lateness r - m of the last `window` packets, s
        self._sorted: list[float] = []  # the same, sorted
        self._mins: deque[tuple[int, float]] = deque()  # (index, r): sliding minimum of r
        self._count = 0  # audio packets stored (index for the sliding minimum)
        self._jitter = 0.0
        self._reset()

    # --- public API ----------------------------------------------------------------------

    def put(self, packet: RtpPacket, now: float) -> None:
        """Take one received packet (RFC 3550 A.1 source and sequence checks).

        A packet of another SSRC than the stream's switches to that source
        (a reset) only once the next packet of it follows in sequence; the
        first is then played too. Packets of a source left earlier that are
        older than where it was left are stragglers and dropped.

        Args:
            packet: An accepted packet of the stream: audio, comfort noise or
                telephone-event.
            now: Its arrival, seconds of the monotonic clock :meth:`pop` gets.
        """
        stats = self.stats
        stats.received += 1
        ssrc = packet.ssrc
        if ssrc == self._ssrc:
            head = self._next_seq
            if head is not None:  # the common case, inline: a new packet within the window
                top = self._max_seq
                ext = top + ((packet.sequence_number - top + 0x8000) & 0xFFFF) - 0x8000
                if head <= ext < head + self.max_packets and ext not in self._queue:
                    pt = packet.payload_type
                    kind = _EVENT if pt in self._event_pts else _CN if pt == self._cn_pt else _AUDIO
                    self._store(packet, ext, kind, now)
                    return
        else:
            left = self._left
            seq = packet.sequence_number
            if ssrc in left and seq_diff(seq, left[ssrc]) < 0:
                stats.discarded += 1  # a straggler of a source we left
                return
            if self._ssrc is not None:
                held = self._candidate
                if (
                    held is None
                    or held[0].ssrc != ssrc
                    or seq_diff(seq, held[0].sequence_number) != 1
                ):
                    self._candidate = (packet, now)  # wait for the next one in sequence
                    stats.discarded += 1
                    return
                self._candidate = None
                stats.discarded -= 1  # the held first packet is played after all
                if self._next_seq is not None:
                    left[self._ssrc] = self._next_seq & 0xFFFF
                    while len(left) > _LEFT_MEMORY:
                        del left[next(iter(left))]
                self._reset()
                self._jitter = 0.0
                stats.resets += 1
                self._ssrc = ssrc
                self._floor = left.pop(ssrc, None)
                self._admit(held[0], held[1])
            else:
                self._ssrc = ssrc
                self._floor = left.pop(ssrc, None)
        self._admit(packet, now)

    def _admit(self, packet: RtpPacket, now: float) -> None:
        """Sequence checks within the stream's source, then store."""
        stats = self.stats
        pt = packet.payload_type
        kind = _EVENT if pt in self._event_pts else _CN if pt == self._cn_pt else _AUDIO
        seq = packet.sequence_number
        head = self._next_seq
        if head is None:
            ext = seq + _SEQ_BASE
            self._next_seq = self._max_seq = ext
        else:
            top = self._max_seq
            ext = top + seq_diff(seq, top & 0xFFFF)
            if ext < head:
                back = head - ext
                floor = self._floor
                if (
                    not self._started
                    and back <= _MAX_MISORDER
                    and top - ext < self.max_packets
                    and (floor is None or seq_diff(seq, floor) >= 0)
                ):
                    self._next_seq = ext  # nothing released yet: an earlier packet, reordered
                else:
                    bit = back - 1
                    if bit < _DUP_MEMORY:
                        if (self._seen >> bit) & 1:
                            stats.duplicates += 1
                            return
                        self._seen |= 1 << bit
                        stats.late += 1
                    elif back <= _MAX_MISORDER:
                        stats.late += 1
                    else:
                        self._probation(packet, now)
                    return
            elif ext >= head + self.max_packets:
                self._probation(packet, now)
                return
            elif ext in self._queue:
                stats.duplicates += 1
                return
        self._store(packet, ext, kind, now)

    def pop(self, now: float) -> list[RtpPacket | None]:
        """Return what is due at this tick, in play-out (sequence) order.

        Call once per media-clock tick, every ``ptime_ms``; when the loop ran
        late, call once per deadline (pops at one ``now`` are fine).

        Args:
            now: The tick's time, seconds of the monotonic clock :meth:`put` gets.

        Returns:
            Telephone-event packets due, then at most one audio entry: an
            audio or comfort-noise packet, or ``None`` for one packet time
            lost (conceal it). An empty list, or events alone, means no audio
            is due (the sender is silent or the buffer is filling).
        """
        out: list[RtpPacket | None] = []
        seq = self._next_seq
        if seq is None:
            return out
        if self._synced:
            excess = now - self._play_ts / self._rate - self._h
            if 0.0 <= excess < self._catchup:  # _follow_clock's common case, inline
                if excess < self._blk_min:
                    self._blk_min = excess
                self._blk_n += 1
                if self._blk_n >= _TICK_BLOCK:
                    self._h += self._blk_min
                    self._blk_min = math.inf
                    self._blk_n = 0
            else:
                self._follow_clock(now)
            # The common cases, inline: the next packet is due now and is played as is,
            # either with nothing to adapt or (speech, not stuck) with a wish to shrink
            # that must wait for a silence. What _play would do, without its search.
            entry = self._queue.get(seq)
            if (
                entry is not None
                and entry.kind == _AUDIO
                and entry.ts == self._play_ts
                and not self._quiet
                and not self._caught_up
            ):
                low = self._low
                h = self._h
                excess = 0
                fast = True
                if low is not None:
                    if h < low - _EPS:  # _want() == 1: grow, in _play
                        fast = False
                    elif self._settled and h - self._period >= low + _EPS:  # _want() == -1
                        excess = self._excess + 1
                        fast = not (
                            excess >= self._stuck_ticks
                            or h - self._mins[0][1] > self._max_delay + self._period + _EPS
                            or self._is_silence(entry.packet)
                        )
                if fast:
                    del self._queue[seq]
                    self._seen = ((self._seen << 1) | 1) & _DUP_MASK
                    self._next_seq = seq + 1
                    self._excess = excess
                    self._in_cn = False
                    self.stats.played += 1
                    self._play_ts += self._step
                    out.append(entry.packet)
                    return out
        elif not self._sync(now, out):
            self.stats.quiet_ticks += 1
            return out
        self._play(now, out)
        self._caught_up = False
        if self._synced:
            self._play_ts += self._step
        return out

    def peek(self) -> RtpPacket | None:
        """The audio packet due at the next tick, if it is held already; nothing is removed.

        Meant for the moment after :meth:`pop` returned ``None``: when the
        packet that follows the lost one is here, a codec with in-band FEC
        (Opus, RFC 6716 s.2.1.7) can rebuild the lost frame from it (decode
        that packet's FEC first, then the packet itself at the next tick).

        Returns:
            The held audio packet (not comfort noise, not a telephone-event)
            whose timestamp is the next tick's slot, else None (also before
            play-out starts).
        """
        if not self._synced:
            return None
        seq = self._head()
        if seq is None:
            return None
        entry = self._queue[seq]
        if entry.kind != _AUDIO or abs(entry.ts - self._play_ts) >= self._half:
            return None
        return entry.packet

    def reset(self) -> None:
        """Forget the stream (held packets, sequence and timing state); keep the counters."""
        self._ssrc = None
        self._left.clear()
        self._candidate = None
        self._jitter = 0.0
        self._reset()

    @property
    def ssrc(self) -> int | None:
        """SSRC of the stream being played, or None before the first packet."""
        return self._ssrc

    @property
    def jitter(self) -> float:
        """Interarrival jitter of audio packets, RTP timestamp units (RFC 3550 A.8)."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter of audio packets, ms (RFC 3550 A.8)."""
        return self._jitter * 1000.0 / self._rate

    @property
    def held(self) -> int:
        """Packets held now."""
        return len(self._queue)

    @property
    def delay_ms(self) -> float:
        """Current buffering delay of a median packet, ms (0 before play-out starts)."""
        srt = self._sorted
        if not self._synced or not srt:
            return 0.0
        return max(0.0, (self._h - self._mins[0][1] - srt[len(srt) // 2]) * 1000.0)

    @property
    def target_delay_ms(self) -> float:
        """Wait the buffer aims at for the earliest packets, ms (from the measured jitter)."""
        return self._target_allowance() * 1000.0

    # --- receiving ---------------------------------------------------------------------

    def _reset(self) -> None:
        """Forget the stream's packets and timing (not the SSRC, counters or allowance)."""
        self._queue.clear()
        self._next_seq: int | None = None  # extended seq of the first unresolved packet
        self._max_seq = 0  # highest extended seq accepted (the unwrap reference)
        self._seen = 0  # bit i: seq (next_seq - 1 - i) was received
        self._started = False  # a packet was released or dropped since the reset
        self._probe: int | None = None  # RFC 3550 A.1 bad_seq: the seq confirming a jump
        self._ts_ref: int | None = None  # extended timestamp of the latest audio packet
        self._synced = False
        self._play_ts = 0  # extended timestamp of this tick's slot (next tick's, between pops)
        self._h = 0.0  # tick time minus slot timestamp / clock rate, s
        self._blk_min = math.inf
        self._blk_n = 0
        self._since_real: int | None = None  # first slot with no real frame since the last one
        self._none_ts: int | None = None  # slot of the last None returned
        self._run_nones = 0  # consecutive None returned
        self._quiet = 1  # ticks since the last frame played (start: quiet)
        self._excess = 0  # consecutive ticks the delay was a packet time above target
        self._gap_run = 0  # sequence numbers lost since the last frame played
        self._late_run = 0  # packets dropped late since the last frame played
        self._in_event = False  # the sender is sending telephone-events instead of audio
        self._in_cn = False  # the last frame was comfort noise
        self._caught_up = False  # this pop skipped the slots of missed ticks
        self._last_r: float | None = None
        self._clear_window()

    def _clear_window(self) -> None:
        self._fifo.clear()
        self._sorted.clear()
        self._mins.clear()
        self._last_r = None
        self._low: float | None = None  # least H the statistics call for (None: no data)
        self._wait = self._allowance
        self._settled = False  # enough packets to lower the delay

    def _probation(self, packet: RtpPacket, now: float) -> None:
        """A sequence number far from the stream's: restart only when the next one follows."""
        seq = packet.sequence_number
        if seq == self._probe:
            self._reset()
            self.stats.resets += 1
            self._next_seq = self._max_seq = seq + _SEQ_BASE
            pt = packet.payload_type
            kind = _EVENT if pt in self._event_pts else _CN if pt == self._cn_pt else _AUDIO
            self._store(packet, seq + _SEQ_BASE, kind, now)
        else:
            self._probe = (seq + 1) & 0xFFFF
            self.stats.discarded += 1

    def _store(self, packet: RtpPacket, ext: int, kind: int, now: float) -> None:
        ref = self._ts_ref
        if ref is None:
            ext_ts = packet.timestamp + _TS_BASE
        else:  # ts_diff, inline
            ext_ts = ref + ((packet.timestamp - ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        self._queue[ext] = _Entry(packet, ext_ts, now, kind)
        if ext > self._max_seq:
            self._max_seq = ext
        if kind == _EVENT:
            if ref is None:
                self._ts_ref = ext_ts
            return
        self._ts_ref = ext_ts
        # Relative transit time (s); RFC 3550 A.8 jitter from its differences.
        rate = self._rate
        r = now - ext_ts / rate
        last = self._last_r
        if last is not None:
            self._jitter += (abs(r - last) * rate - self._jitter) / 16.0
        self._last_r = r
        # Sliding minimum of r over the last `base_window` packets (monotonic deque).
        self._count = index = self._count + 1
        mins = self._mins
        while mins and mins[-1][1] >= r:
            mins.pop()
        mins.append((index, r))
        first = mins[0]
        if first[0] <= index - self._base_window:
            mins.popleft()
            first = mins[0]
        base = first[1]
        lateness = r - base
        fifo = self._fifo
        srt = self._sorted
        fifo.append(lateness)
        _insort(srt, lateness)
        n = len(fifo)
        window = self._window
        if n > window:
            del srt[_bisect_left(srt, fifo.popleft())]
            n = window
        # The wait the statistics call for, and the least head offset H giving it.
        q = self._q_full if n == window else min(n - 1, math.ceil(self._keep * n) - 1)
        wait = srt[q] + self._margin
        if wait < self._min_delay:
            wait = self._min_delay
        elif wait > self._max_delay:
            wait = self._max_delay
        self._wait = wait
        self._low = base + wait
        self._settled = n >= _MIN_SAMPLES
        if self._synced and self._since_real is not None:
            self._maybe_rewind(ext, ext_ts)

    def _maybe_rewind(self, ext: int, ext_ts: int) -> None:
        """Play a late packet whose slot (and every slot since) was concealed: stretch."""
        d = ext_ts - self._play_ts
        if d >= -self._half or ext_ts < self._since_real - self._half:
            return
        queue = self._queue
        for k in range(self._next_seq, ext):
            if k in queue:
                return  # an earlier packet is waiting: not the head
        if self._none_ts is not None and ext_ts <= self._none_ts:
            # Its slot was concealed: stretch only as far as the lateness statistics
            # (this packet included) call for; a rare spike stays concealed.
            budget = self._target_allowance()
        else:
            budget = self._max_delay  # only silence since its slot: moving it is free
        if self._h - d / self._rate - self._mins[0][1] > budget + self._period + _EPS:
            return
        self._shift(d)
        self.stats.stretched += round(-d / self._step)  # those Nones stood for this packet

    # --- play-out ----------------------------------------------------------------------

    def _shift(self, delta: float) -> None:
        """Move this tick's slot by ``delta`` timestamp units (the delay changes by -delta)."""
        self._play_ts += delta
        self._h -= delta / self._rate

    def _target_allowance(self) -> float:
        """Wait for the earliest packets that the statistics call for, s."""
        return self._allowance if self._low is None else self._wait

    def _want(self) -> int:
        """+1: the delay should grow a packet time; -1: it may shrink one; 0: keep it."""
        low = self._low
        if low is None:
            return 0
        h = self._h  # the wait of a packet on the fastest path is h - m
        if h < low - _EPS:
            return 1
        if self._settled and h - self._period >= low + _EPS:
            return -1
        return 0

    def _follow_clock(self, now: float) -> None:
        """Track the tick grid from the pops' times; skip the slots of missed ticks."""
        excess = now - self._play_ts / self._rate - self._h
        if excess < 0:  # this pop is earlier than the grid assumed: the grid is earlier
            self._h += excess
            return
        if excess >= self._catchup:
            missed = int(excess / self._period + 1e-6)
            self._play_ts += missed * self._step
            self.stats.missed_ticks += missed
            self._caught_up = True  # packets of the skipped slots are late, not a jump
            excess -= missed * self._period
        if excess < self._blk_min:
            self._blk_min = excess
        self._blk_n += 1
        if self._blk_n >= _TICK_BLOCK:  # every pop of the block was late: the grid is later
            self._h += self._blk_min
            self._blk_min = math.inf
            self._blk_n = 0

    def _head(self) -> int | None:
        """Extended sequence number of the first held packet, or None."""
        queue = self._queue
        if not queue:
            return None
        seq = self._next_seq
        top = self._max_seq
        while seq <= top:
            if seq in queue:
                return seq
            seq += 1
        return None

    def _take(self, seq: int) -> _Entry:
        """Remove the head packet; the sequence numbers before it are resolved as lost."""
        entry = self._queue.pop(seq)
        gap = seq - self._next_seq
        if gap:
            self.stats.lost += gap
            self._gap_run += gap
        self._seen = ((self._seen << (gap + 1)) | 1) & _DUP_MASK
        self._next_seq = seq + 1
        self._started = True
        return entry

    def _resync(self) -> None:
        """Re-anchor on the next talkspurt with fresh statistics (keep the jitter allowance)."""
        self._allowance = self._target_allowance()
        self._close_run()
        self._clear_window()
        self._synced = False
        self._since_real = None
        self._run_nones = 0
        self._excess = 0
        self._quiet = 1
        self.stats.resyncs += 1

    def _sync(self, now: float, out: list) -> bool:
        """Start play-out at the first audio packet once it has waited the allowance."""
        queue = self._queue
        while True:
            seq = self._head()
            if seq is None:
                return False
            entry = queue[seq]
            if entry.kind == _EVENT:
                self._take(seq)
                self._emit_event(entry, out)
                continue
            if now + _EPS < entry.arrival + self._allowance:
                return False
            self._synced = True
            self._play_ts = entry.ts
            self._h = now - entry.ts / self._rate
            self._blk_min = math.inf
            self._blk_n = 0
            return True

    def _emit_event(self, entry: _Entry, out: list) -> None:
        out.append(entry.packet)
        self.stats.events += 1
        self._in_event = True

    def _play(self, now: float, out: list) -> None:
        """Fill ``out`` for this tick's slot (``self._play_ts``)."""
        queue = self._queue
        half = self._half
        want = self._want()
        if want < 0:
            self._excess += 1
        else:
            self._excess = 0
        for _ in range(self.max_packets + 4):
            seq = self._head()
            if seq is None:
                self._starve(out, want)
                return
            entry = queue[seq]
            if entry.kind == _EVENT:
                self._take(seq)
                self._emit_event(entry, out)
                continue
            if self._quiet >= self._resync_ticks:
                self._resync()  # a long silence: anchor the new talkspurt afresh
                if not self._sync(now, out):
                    self.stats.quiet_ticks += 1
                    return
                want = 0  # fresh statistics: nothing to adapt yet (and _mins is empty)
                continue
            d = entry.ts - self._play_ts
            if d > self._jump or (d < -self._jump and not self._caught_up):
                verdict = self._judge_jump(seq, entry)
                if verdict == _DROP:
                    self._take(seq)
                    self.stats.discarded += 1
                    self._gap_run += 1  # its slot is lost: conceal it
                    continue
                if verdict == _RESYNC:
                    self._resync()
                    if not self._sync(now, out):
                        self.stats.quiet_ticks += 1
                        return
                    want = 0  # as above: the window was cleared
                    continue
                self._starve(out, 0)
                return
            if d < -half:  # its slot has passed
                self._take(seq)
                self.stats.late += 1
                self._late_run += 1
                continue
            if d < half:  # due now
                if want:
                    if want < 0:
                        forced = self._excess >= self._stuck_ticks or (
                            self._h - self._mins[0][1] > self._max_delay + self._period + _EPS
                        )
                        silent = entry.kind == _CN or self._is_silence(entry.packet)
                        follower = queue.get(seq + 1)
                        if (
                            (silent or forced)
                            and follower is not None
                            and follower.kind != _EVENT
                            and abs(follower.ts - entry.ts - self._step) < half
                        ):
                            self._take(seq)
                            self._shift(self._step + d)
                            self.stats.shrunk += 1
                            if not silent:
                                self.stats.dropped_speech += 1
                                # Still too long? The next cut comes a few ticks on.
                                self._excess = self._stuck_ticks - _CATCH_TICKS
                            else:
                                self._excess = 0
                            want = 0
                            continue
                    elif (
                        entry.kind == _CN
                        or self._is_silence(entry.packet)
                        or (entry.packet.marker and self._quiet)
                    ):
                        self._mark_quiet()
                        self._shift(-self._step)  # hold: this slot again next tick
                        self.stats.stretched += 1
                        self.stats.quiet_ticks += 1
                        return
                self._take(seq)
                if d:
                    self._shift(d)  # realign to the packet's own timestamp
                self._release(entry, out)
                return
            # Early: its slot is still ahead.
            gap = seq - self._next_seq + self._gap_run
            if gap > self._run_nones:  # packets before it are missing: this slot is lost
                self._conceal(out)
            else:  # the sender sent nothing for this slot (DTX, a timestamp jump)
                self._quiet_tick(want, entry.ts)
            return
        self._starve(out, want)  # unreachable in practice: the loop is bounded

    def _judge_jump(self, seq: int, entry: _Entry) -> int:
        """A head packet far off the play head: follow it, drop it, or wait for the next."""
        queue = self._queue
        for k in range(seq + 1, min(self._max_seq, seq + 8) + 1):
            follower = queue.get(k)
            if follower is None or follower.kind == _EVENT:
                continue
            fd = follower.ts - self._play_ts
            if -self._jump <= fd <= self._jump:
                return _DROP  # the next packet fits the stream: this one is the odd one out
            if abs(follower.ts - entry.ts) <= 4 * self._step * (k - seq):
                return _RESYNC  # the next packet confirms the new timeline
            return _DROP
        return _RESYNC if self._quiet else _WAIT

    def _close_run(self) -> None:
        """Account the Nones since the last frame: those beyond the packets lost or late."""
        spare = self._run_nones - self._gap_run - self._late_run
        if spare > 0:
            self.stats.concealed_no_loss += spare
        self._run_nones = self._gap_run = self._late_run = 0

    def _release(self, entry: _Entry, out: list) -> None:
        self._close_run()
        out.append(entry.packet)
        stats = self.stats
        stats.played += 1
        if entry.kind == _CN:
            stats.comfort_noise += 1
            self._in_cn = True
        else:
            self._in_cn = False
        self._in_event = False
        self._quiet = 0
        self._since_real = None

    def _mark_quiet(self) -> None:
        self._quiet += 1
        if self._since_real is None:
            self._since_real = self._play_ts

    def _conceal(self, out: list) -> None:
        self._none_ts = self._play_ts
        self._mark_quiet()
        out.append(None)
        self._run_nones += 1
        self.stats.concealed += 1

    def _starve(self, out: list, want: int) -> None:
        """No audio packet held for this slot."""
        if self._in_event or self._in_cn or self._run_nones >= self._conceal_limit:
            self._quiet_tick(want, None)
        else:
            self._conceal(out)

    def _quiet_tick(self, want: int, limit: int | None) -> None:
        """A tick without a frame: change the delay freely (nobody hears a silence move)."""
        self._mark_quiet()
        self.stats.quiet_ticks += 1
        if want > 0:
            self._shift(-self._step)
            self.stats.stretched += 1
        elif want < 0 and (
            limit is None or limit - (self._play_ts + 2 * self._step) >= -self._half
        ):
            self._shift(self._step)
            self.stats.shrunk += 1
