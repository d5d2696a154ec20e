"""Packet-loss concealment for codecs without their own (G.711 Appendix I style).

:class:`Concealer` keeps the last 48.75 ms of decoded speech. For a lost
packet, :meth:`Concealer.conceal` repeats the last pitch period, found by
normalized autocorrelation over the last 20 ms (periods 5-15 ms, 66-200 Hz;
a higher voice repeats two of its periods). The repeated period is made
periodic by overlap-adding its last quarter with the quarter period before
it, and the join with the speech already played is smoothed by fading out
the step between what was played and what the repetition assumed, over a
quarter period. After 10 ms of loss the repetition widens to two, after
20 ms to three periods (less buzzy), each change cross-faded; the level
falls linearly from 100% at 10 ms to silence at 60 ms (20% per 10 ms). The
first good frame after a loss is overlap-added with the continued
concealment over 4 ms, plus 4 ms per further 10 ms lost (at most 10 ms).

Differences from the Appendix I reference: no 3.75 ms output delay (the
join at the start of a loss is smoothed forward, in the concealed frame,
instead of by rewriting the end of the last good frame), and any sample
rate (the lengths scale from 8 kHz). numpy does the signal work; a good
frame with no loss before it costs no numpy work at all: the history is
kept as the last frames' bytes and made an array only when a loss starts.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["Concealer"]

_HISTORY_MS = 48.75  # three longest periods and a quarter
_PITCH_MIN_MS = 5.0  # 200 Hz
_PITCH_MAX_MS = 15.0  # 66.7 Hz
_CORR_MS = 20.0  # the window whose period is sought
_WIDEN_MS = 10.0  # repeat one more period every 10 ms, up to three
_FADE_START_MS = 10.0  # full level for the first 10 ms of a loss ...
_SILENT_MS = 60.0  # ... then down linearly to silence at 60 ms
_JOIN_MS = 4.0  # end-of-loss overlap: 4 ms, +4 ms per further 10 ms lost
_JOIN_MAX_MS = 10.0


class Concealer:
    """Conceals lost frames of one stream of PCM16 mono.

    Feed every decoded frame to :meth:`good` and call :meth:`conceal` for
    each lost one (a ``None`` from the jitter buffer).

    Args:
        sample_rate: PCM sample rate, Hz (8000 for G.711, 16000 for G.722).
        samples_per_frame: Samples of one concealed frame (ptime x rate).

    Raises:
        ValueError: A rate or frame size that is not positive.

    Example:
        ::

            concealer = Concealer(8000, 160)
            pcm = concealer.good(codec.decode(packet.payload))  # a packet arrived
            pcm = concealer.conceal()                            # one was lost
    """

    def __init__(self, sample_rate: int = 8000, samples_per_frame: int = 160):
        if sample_rate <= 0 or samples_per_frame <= 0:
            raise ValueError(
                f"sample rate and frame size must be positive, got {sample_rate}, "
                f"{samples_per_frame}"
            )
        self.sample_rate = sample_rate
        self.samples_per_frame = samples_per_frame
        ms = sample_rate / 1000.0
        self._pitch_min = max(2, round(_PITCH_MIN_MS * ms))
        self._pitch_max = max(self._pitch_min + 1, round(_PITCH_MAX_MS * ms))
        self._corr = max(4, round(_CORR_MS * ms))
        self._history_len = max(
            round(_HISTORY_MS * ms), 3 * self._pitch_max + self._pitch_max // 4 + 1
        )
        self._widen = max(1, round(_WIDEN_MS * ms))
        self._fade_start = round(_FADE_START_MS * ms)
        self._silent = round(_SILENT_MS * ms)
        self._join = max(1, round(_JOIN_MS * ms))
        self._join_max = max(1, round(_JOIN_MAX_MS * ms))
        self._history_bytes = 2 * self._history_len
        self._recent: deque[bytes] = deque()  # the last frames played, enough for the history
        self._recent_size = 0
        self._erased = 0  # samples concealed in the current loss (0: no loss)
        self._pitch = self._pitch_max
        self._periods = 1
        self._cycle = np.zeros(0)
        self._pos = 0
        self._offset = 0.0  # step at the first join, faded out over a quarter period
        self._h = np.zeros(0)  # the history as floats, while concealing
        self._pending: tuple[np.ndarray, int] | None = None  # repetition being faded out
        self._fade = np.zeros(0)  # weights of the wider repetition while cross-fading
        self._join_ramp = np.zeros(0)
        # Level per erased sample: 1 until 10 ms, linear down to 0 at 60 ms (and after).
        t = np.arange(self._silent + max(samples_per_frame, self._join_max), dtype=np.float64)
        span = max(1, self._silent - self._fade_start)
        self._gains = np.clip(1.0 - (t - self._fade_start) / span, 0.0, 1.0)
        self._steps = np.arange(max(samples_per_frame, self._join_max, self._widen))

    @property
    def concealing(self) -> bool:
        """True between a :meth:`conceal` and the next :meth:`good`."""
        return self._erased > 0

    def good(self, pcm: bytes) -> bytes:
        """Record a received frame; return it, smoothed into the concealment after a loss.

        Args:
            pcm: PCM16 little-endian mono, any whole number of samples.

        Returns:
            ``pcm`` itself when no loss came before it; otherwise the frame
            with its start overlap-added with the continued concealment.

        Raises:
            ValueError: ``pcm`` is not whole 16-bit samples.
        """
        if len(pcm) & 1:
            raise ValueError(f"PCM16 data has an odd length ({len(pcm)} bytes)")
        if self._erased:
            frame = np.frombuffer(pcm, dtype="<i2")
            length = min(
                len(frame),
                self._join + self._join * ((self._erased - 1) // self._widen),
                self._join_max,
            )
            out = frame.astype(np.float64)
            if length:
                tail = self._synthesize(length)
                ramp = (np.arange(length) + 1.0) / (length + 1.0)
                out[:length] = tail * (1.0 - ramp) + out[:length] * ramp
            self._erased = 0
            frame = np.clip(np.rint(out), -32768, 32767).astype("<i2")
            pcm = frame.tobytes()
        self._remember(pcm if type(pcm) is bytes else bytes(pcm))
        return pcm

    def conceal(self) -> bytes:
        """Return one frame (``samples_per_frame`` samples of PCM16) standing in for a lost one."""
        if not self._erased:
            self._start()
        out = self._synthesize(self.samples_per_frame)
        np.rint(out, out=out)
        np.clip(out, -32768, 32767, out=out)
        pcm = out.astype("<i2").tobytes()
        self._remember(pcm)
        return pcm

    # --- internals ------------------------------------------------------------------------

    def _remember(self, pcm: bytes) -> None:
        """Keep ``pcm`` as the newest frame; forget frames older than the history needs."""
        if not pcm:
            return
        recent = self._recent
        recent.append(pcm)
        size = self._recent_size + len(pcm)
        keep = self._history_bytes
        while size - len(recent[0]) >= keep:
            size -= len(recent.popleft())
        self._recent_size = size

    def _history(self) -> np.ndarray:
        """The last ``_history_len`` samples played (zeros before the first), int16."""
        data = b"".join(self._recent)
        keep = self._history_bytes
        data = data[-keep:] if len(data) >= keep else bytes(keep - len(data)) + data
        return np.frombuffer(data, dtype="<i2")

    def _find_pitch(self, h: np.ndarray) -> int:
        """The lag, in samples, that best predicts the last ``_CORR_MS`` from the past."""
        lo, hi, corr = self._pitch_min, self._pitch_max, self._corr
        seg = h[-(corr + hi) :]
        target = seg[hi:]
        dots = np.correlate(seg[: hi - lo + corr], target, "valid")  # lag hi - j at index j
        squares = np.concatenate(([0.0], np.cumsum(seg * seg)))
        energy = squares[corr : corr + hi - lo + 1] - squares[: hi - lo + 1]
        scores = np.where(energy > 1e-9, dots / np.sqrt(np.maximum(energy, 1e-9)), -np.inf)
        best = int(np.argmax(scores))
        if not np.isfinite(scores[best]) or scores[best] <= 0:
            return hi
        return hi - best

    def _start(self) -> None:
        """The first lost frame: find the period and set up its repetition."""
        h = self._history().astype(np.float64)
        self._h = h
        self._pitch = pitch = self._find_pitch(h)
        self._periods = 1
        self._cycle = self._make_cycle(1)
        self._pos = 0
        # What was played ends at h[-1]; the repetition starts at h[-pitch], whose own
        # predecessor is h[-pitch - 1]. Carry the difference and fade it out over a
        # quarter period.
        self._offset = h[-1] - h[-pitch - 1]
        quarter = max(1, pitch // 4)
        self._join_ramp = 1.0 - np.arange(quarter) / quarter
        self._fade = (np.arange(quarter) + 0.5) / quarter

    def _make_cycle(self, periods: int) -> np.ndarray:
        """The last ``periods`` pitch periods, their end blended into what precedes them."""
        h = self._h
        pitch = self._pitch
        length = periods * pitch
        cycle = h[-length:].copy()
        quarter = max(1, pitch // 4)
        before = h[-length - quarter : -length]
        ramp = (np.arange(quarter) + 0.5) / quarter
        cycle[-quarter:] = cycle[-quarter:] * (1.0 - ramp) + before * ramp
        return cycle

    def _synthesize(self, n: int) -> np.ndarray:
        """The next ``n`` concealed samples (advancing the loss by ``n``)."""
        out = np.empty(n)
        done = 0
        while done < n:
            erased = self._erased
            if erased >= self._silent:
                out[done:] = 0.0
                self._erased += n - done
                break
            # Up to the next widening point (every 10 ms, up to three periods).
            boundary = (erased // self._widen + 1) * self._widen
            chunk = min(n - done, boundary - erased)
            want = min(3, 1 + erased // self._widen)
            if want != self._periods:
                self._widen_to(want)
            cycle = self._cycle
            steps = self._steps
            part = cycle.take((self._pos + steps[:chunk]) % len(cycle))
            if self._pending is not None:  # cross-fade from the narrower repetition
                old, old_pos = self._pending
                fade = self._fade[:chunk]
                k = len(fade)
                old_part = old.take((old_pos + steps[:k]) % len(old))
                part[:k] += (old_part - part[:k]) * (1.0 - fade)
                self._pending = None
            if self._offset and erased < len(self._join_ramp):  # the first join's step
                ramp = self._join_ramp[erased : erased + chunk]
                part[: len(ramp)] += self._offset * ramp
            self._pos = (self._pos + chunk) % len(cycle)
            part *= self._gains[erased : erased + chunk]
            out[done : done + chunk] = part
            done += chunk
            self._erased += chunk
        return out

    def _widen_to(self, periods: int) -> None:
        """Repeat ``periods`` periods from now on, starting at the same phase one period back."""
        phase = self._pos % self._pitch
        old, old_pos = self._cycle, self._pos
        self._cycle = self._make_cycle(periods)
        self._periods = periods
        self._pos = phase
        self._pending = (old, old_pos)
