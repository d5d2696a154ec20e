"""A UDP relay that impairs traffic like a bad network: delay, jitter, loss, reorder, duplicates.

``tc netem`` is not available on this kernel, so tests put :class:`UdpRelay`
between two loopback endpoints instead. The relay owns one socket. Datagrams
from :attr:`UdpRelay.target` ("side B", e.g. our server) go to the last
source seen on the other side ("side A", e.g. a phone); datagrams from any
other source go to the target. Each direction has its own
:class:`Impairment`; all randomness comes from one seeded
``random.Random``, so a run can be repeated exactly.

Per datagram, in this order: lost with probability ``loss``; otherwise held
back with probability ``reorder`` and sent right after the next datagram of
its direction (or ``hold_ms`` later if none comes); sent after ``delay_ms``
plus a uniform jitter in ``[-jitter_ms, +jitter_ms]`` (never negative, so a
large jitter reorders too); duplicated with probability ``duplicate``. At
most ``max_queue`` datagrams wait per direction: more are dropped and
counted. :class:`RelayStats` counts what was done.

Example::

    relay = UdpRelay(target=("127.0.0.1", server_rtp), seed=7,
                     a_to_b=Impairment(loss=0.05, jitter_ms=30))
    await relay.start()          # relay.port: give it to side A as B's address
    ...
    print(relay.stats.a_to_b)
    relay.close()
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

Addr = tuple[str, int]

MAX_DELAY_MS = 1000.0


@dataclass(frozen=True)
class Impairment:
    """What happens to one direction's datagrams.

    Attributes:
        loss: Probability (0..1) that a datagram is dropped.
        delay_ms: Fixed one-way delay, ms.
        jitter_ms: Each datagram's delay varies uniformly by +- this many ms
            (0-60 is a plausible range for a bad mobile or Wi-Fi path).
        reorder: Probability that a datagram is held and sent after the next one.
        duplicate: Probability that a datagram is sent twice.
        hold_ms: How long a held datagram waits for a successor, ms.
        max_queue: Most datagrams waiting (delayed or held) at once; more are dropped.
    """

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    hold_ms: float = 40.0
    max_queue: int = 1000

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability 0..1, not {value}")
        if not 0.0 <= self.delay_ms <= MAX_DELAY_MS or not 0.0 <= self.jitter_ms <= MAX_DELAY_MS:
            raise ValueError(f"delay and jitter must be 0..{MAX_DELAY_MS:g} ms")
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")

    @property
    def is_clean(self) -> bool:
        """True when datagrams pass untouched and at once."""
        return not (self.loss or self.delay_ms or self.jitter_ms or self.reorder or self.duplicate)


@dataclass
class DirectionStats:
    """Counters for one direction (all in datagrams).

    Attributes:
        received: Arrived at the relay.
        forwarded: Sent on (each copy of a duplicate counts).
        lost: Dropped by the ``loss`` draw.
        reordered: Held back and sent after a later datagram.
        duplicated: Sent a second time.
        delayed: Sent later than they arrived (delay or jitter).
        queue_full: Dropped because ``max_queue`` datagrams were waiting.
        no_destination: Dropped because the other side was not known yet.
    """

    received: int = 0
    forwarded: int = 0
    lost: int = 0
    reordered: int = 0
    duplicated: int = 0
    delayed: int = 0
    queue_full: int = 0
    no_destination: int = 0


@dataclass
class RelayStats:
    """Counters of both directions: ``a_to_b`` (towards the target) and ``b_to_a``."""

    a_to_b: DirectionStats = field(default_factory=DirectionStats)
    b_to_a: DirectionStats = field(default_factory=DirectionStats)


class _Direction:
    def __init__(self, relay: UdpRelay, imp: Impairment, stats: DirectionStats) -> None:
        self.relay = relay
        self.imp = imp
        self.stats = stats
        self.waiting = 0
        self.held: tuple[bytes, Addr] | None = None
        self.held_timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes, dest: Addr | None) -> None:
        st, imp, rng = self.stats, self.imp, self.relay.rng
        st.received += 1
        if dest is None:
            st.no_destination += 1
            return
        if imp.is_clean:
            self.relay.send(data, dest, st)
            return
        if imp.loss and rng.random() < imp.loss:
            st.lost += 1
            return
        if self.held is None and imp.reorder and rng.random() < imp.reorder:
            if self.waiting >= imp.max_queue:
                st.queue_full += 1
                return
            self.held = (data, dest)
            self.waiting += 1
            st.reordered += 1
            self.held_timer = self.relay.loop.call_later(imp.hold_ms / 1000.0, self.release)
            return
        self.schedule(data, dest)
        if self.held is not None:
            self.release()

    def release(self) -> None:
        if self.held_timer is not None:
            self.held_timer.cancel()
            self.held_timer = None
        if self.held is None:
            return
        data, dest = self.held
        self.held = None
        self.waiting -= 1
        self.schedule(data, dest)

    def schedule(self, data: bytes, dest: Addr) -> None:
        imp, rng, st = self.imp, self.relay.rng, self.stats
        copies = 2 if imp.duplicate and rng.random() < imp.duplicate else 1
        if copies == 2:
            st.duplicated += 1
        for _ in range(copies):
            delay = imp.delay_ms
            if imp.jitter_ms:
                delay += rng.uniform(-imp.jitter_ms, imp.jitter_ms)
            delay = max(0.0, delay)
            if delay <= 0.0:
                self.relay.send(data, dest, st)
                continue
            if self.waiting >= imp.max_queue:
                st.queue_full += 1
                continue
            self.waiting += 1
            st.delayed += 1
            self.relay.loop.call_later(delay / 1000.0, self.deliver, data, dest)

    def deliver(self, data: bytes, dest: Addr) -> None:
        self.waiting -= 1
        self.relay.send(data, dest, self.stats)

    def cancel(self) -> None:
        if self.held_timer is not None:
            self.held_timer.cancel()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.relay._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.relay.errors += 1  # ICMP unreachable from a side that went away


class UdpRelay:
    """One UDP socket relaying between a fixed target (side B) and whoever talks to it (side A).

    Attributes:
        target: Side B's address; may be set after start (until then every
            datagram is counted as ``no_destination`` and dropped).
        peer: Side A's address: the source of the latest datagram not from the target.
        host: Address the relay binds.
        port: The relay's port once started.
        stats: :class:`RelayStats`.
        errors: Socket errors seen (ICMP port unreachable, ...).
    """

    def __init__(
        self,
        *,
        target: Addr | None = None,
        a_to_b: Impairment | None = None,
        b_to_a: Impairment | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Prepare a relay.

        Args:
            target: Side B (``(host, port)``), or None to set later.
            a_to_b: Impairment towards the target; default none.
            b_to_a: Impairment from the target back to side A; default none.
            seed: Seed of the relay's ``random.Random``.
            host: Local address to bind (loopback).
            port: Local port; 0 picks a free one.
        """
        self.target = target
        self.peer: Addr | None = None
        self.host = host
        self.port = port
        self.rng = random.Random(seed)
        self.stats = RelayStats()
        self.errors = 0
        self._a_to_b = _Direction(self, a_to_b or Impairment(), self.stats.a_to_b)
        self._b_to_a = _Direction(self, b_to_a or Impairment(), self.stats.b_to_a)
        self._transport: asyncio.DatagramTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # type: ignore[assignment]

    async def start(self) -> int:
        """Bind the socket; return the relay's port."""
        self.loop = asyncio.get_running_loop()
        self._transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self.port = self._transport.get_extra_info("sockname")[1]
        return self.port

    @property
    def address(self) -> Addr:
        """``(host, port)`` of the relay."""
        return (self.host, self.port)

    def _received(self, data: bytes, addr: Addr) -> None:
        if self.target is None:
            # Nothing is learnt before the target is known: a datagram from
            # the future target must not be taken for side A.
            self._a_to_b.push(data, None)
        elif addr == self.target:
            self._b_to_a.push(data, self.peer)
        else:
            self.peer = addr
            self._a_to_b.push(data, self.target)

    def send(self, data: bytes, dest: Addr, stats: DirectionStats) -> None:
        """Send one datagram now (used by the directions; counts it as forwarded)."""
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.sendto(data, dest)
        stats.forwarded += 1

    def close(self) -> None:
        """Close the socket; datagrams still waiting are dropped. Idempotent."""
        self._a_to_b.cancel()
        self._b_to_a.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> UdpRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
