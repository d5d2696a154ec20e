"""Asyncio RTP media: a shared pacing clock and the per-call RTP session adapter.

:class:`MediaClock` is one ``loop.call_at`` timer per event loop (and packet
time) that fires at absolute monotonic deadlines ``start + k * ptime``; on each
tick every registered :class:`RTPSession` sends at most one packet (two when
the loop ran late). There is no task per call and no ``sleep()`` loop, so a
core can pace hundreds of calls.

:class:`RTPSession` is a thin adapter around the sans-IO
:class:`~pipecat_sip.rtp.session.MediaSession`, which does the protocol work
(packetizing, talkspurts, DTMF, latching, RTCP, the RTP timeout): it owns the
call's UDP sockets (datagram endpoints on the leased RTP and RTCP sockets),
registers with the shared clock, feeds the pure session every datagram and
tick with ``loop.time()``, sends what it returns with ``sock.sendto``, turns
its events into the ``on_audio``/``on_dtmf``/``on_timeout`` callbacks, wakes
:meth:`RTPSession.wait_for_backlog` futures, and logs its notices (a repeated
notice is counted, and logged only now and then).
"""

import asyncio
import contextvars
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from loguru import logger

from pipecat_sip.codecs import Codec
from pipecat_sip.rtp.dtmf import event_for_key
from pipecat_sip.rtp.session import (
    AudioReceived,
    DtmfReceived,
    JitterBuffer,
    MediaSession,
    Notice,
    RtpStats,
    RtpTimeout,
)
from pipecat_sip.rtp.srtp import SrtpContext, SrtpStats

__all__ = ["MediaClock", "RTPSession", "RtpStats"]

MAX_BURST = 2
"""Most packets one session sends in one tick when the loop ran late; older
deadlines are skipped (the RTP timestamp still moves on over them)."""

PHASES = 4
"""Phases of the media clock: sessions are spread over ``ptime / PHASES`` offsets."""

SESSIONS_PER_PHASE = 32
"""Sessions a phase takes before the next phase is used."""

_PHASE_ORDER = (0, 2, 1, 3)  # fill phases far apart first

_CLOSE_TIMEOUT_S = 1.0
_LOG_EVERY = 1000  # after the first, log only every n-th repeated receive/send error


class MediaClock:
    """Paces every :class:`RTPSession` of one event loop from a single timer.

    Sessions are spread over :data:`PHASES` phases offset by ``ptime /
    PHASES`` (a phase fills up to :data:`SESSIONS_PER_PHASE` sessions before
    the next one is used), so a tick sends at most a phase's worth of packets
    and received packets are handled between ticks. Each phase's deadlines
    are absolute: ``start + k * ptime + phase * ptime / PHASES`` on the loop's
    monotonic clock, and on each of its deadlines every session of the phase
    sends at most one packet. When the loop was late by a packet time or
    more, each session sends up to :data:`MAX_BURST` packets and skips the
    older deadlines, advancing its RTP timestamp over them, so timestamps stay
    consistent with elapsed time without a burst. One timer handle is armed
    at a time, and only while sessions are registered.

    Get the loop's shared clock with :meth:`for_loop`; RTPSession does so
    unless given one.

    Args:
        ptime_ms: Packet time in ms.
        loop: The event loop; by default the running loop when the first
            session registers.

    Attributes:
        ticks: Timer callbacks so far.
        late_ticks: Ticks that ran a packet time or more behind a deadline.
        skipped_deadlines: Deadlines skipped (no packet sent for them), summed
            over phases.
    """

    _registry: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()

    def __init__(self, ptime_ms: int = 20, *, loop: asyncio.AbstractEventLoop | None = None):
        if ptime_ms <= 0:
            raise ValueError(f"ptime must be positive, got {ptime_ms} ms")
        self.ptime_ms = ptime_ms
        self.period = ptime_ms / 1000.0
        self._offset = self.period / PHASES
        self._loop_ref = weakref.ref(loop) if loop is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None  # held only while ticking
        self._phase_of: dict[RTPSession, int] = {}
        self._phases: list[dict[RTPSession, None]] = [{} for _ in range(PHASES)]
        self._snapshots: list[tuple[RTPSession, ...]] = [() for _ in range(PHASES)]
        self._next_k = [0] * PHASES  # phase p's next deadline: start + k * period + p * offset
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._start = 0.0
        self.ticks = 0
        self.late_ticks = 0
        self.skipped_deadlines = 0
        self._context = contextvars.Context()  # see _arm

    @classmethod
    def for_loop(
        cls, loop: asyncio.AbstractEventLoop | None = None, ptime_ms: int = 20
    ) -> "MediaClock":
        """Return the shared clock of ``loop`` (default: the running loop) for a packet time.

        Raises:
            RuntimeError: No loop given and none running.
        """
        loop = loop or asyncio.get_running_loop()
        clocks = cls._registry.get(loop)
        if clocks is None:
            clocks = cls._registry[loop] = {}
        clock = clocks.get(ptime_ms)
        if clock is None:
            clock = clocks[ptime_ms] = cls(ptime_ms, loop=loop)
        return clock

    @property
    def running(self) -> bool:
        """True while the timer is armed (at least one session registered)."""
        return self._handle is not None

    @property
    def session_count(self) -> int:
        """How many sessions the clock paces."""
        return len(self._phase_of)

    def add(self, session: "RTPSession") -> None:
        """Pace ``session`` from its phase's next deadline on (starts the timer if idle).

        Raises:
            RuntimeError: Called outside the clock's event loop.
        """
        if session in self._phase_of:
            return
        loop = asyncio.get_running_loop()
        bound = self._loop_ref() if self._loop_ref is not None else None
        if bound is None:
            self._loop_ref = weakref.ref(loop)
        elif bound is not loop:
            raise RuntimeError("MediaClock used from an event loop other than its own")
        now = loop.time()
        if self._handle is None:
            self._loop = loop
            self._start = now
            self._next_k = [0] * PHASES
        phase = self._pick_phase()
        members = self._phases[phase]
        if not members:  # a phase joining: its next deadline from now on
            self._next_k[phase] = max(
                0, -int(-(now - self._start - phase * self._offset) // self.period)
            )
        members[session] = None
        self._snapshots[phase] = tuple(members)
        self._phase_of[session] = phase
        self._arm()

    def remove(self, session: "RTPSession") -> None:
        """Stop pacing ``session`` (stops the timer when none is left)."""
        phase = self._phase_of.pop(session, None)
        if phase is None:
            return
        members = self._phases[phase]
        del members[session]
        self._snapshots[phase] = tuple(members)
        if not self._phase_of and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._loop = None

    def _pick_phase(self) -> int:
        sizes = [len(members) for members in self._phases]
        for phase in _PHASE_ORDER:
            if sizes[phase] < SESSIONS_PER_PHASE:
                return phase
        return min(_PHASE_ORDER, key=sizes.__getitem__)

    def _deadline(self, phase: int) -> float:
        return self._start + self._next_k[phase] * self.period + phase * self._offset

    def _arm(self) -> None:
        """Arm the one timer at the earliest deadline of any non-empty phase."""
        loop = self._loop
        if loop is None:
            return
        when = min(self._deadline(p) for p in range(PHASES) if self._phases[p])
        if self._handle is not None:
            if self._armed_at == when:
                return
            self._handle.cancel()
        self._armed_at = when
        # In a context of its own: the clock serves every call, so it must not
        # keep the context (e.g. the log's Call-ID) of the call that started it.
        self._handle = loop.call_at(when, self._tick, context=self._context)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._handle = None
        now = loop.time()
        period = self.period
        self.ticks += 1
        for phase in range(PHASES):
            snapshot = self._snapshots[phase]
            if not snapshot:
                continue
            late = now - self._deadline(phase)
            if late < 0:
                continue
            due = 1 if late < period else int(late / period) + 1
            sends = due if due <= MAX_BURST else MAX_BURST
            skipped = due - sends
            self._next_k[phase] += due
            if due > 1:
                self.late_ticks += 1
                self.skipped_deadlines += skipped
            for session in snapshot:
                try:
                    session._on_tick(now, sends, skipped)
                except Exception:
                    session._log_error("error in media tick")
        if self._phase_of and self._loop is not None:
            self._arm()


_LOG_FIRST = 5  # notices of one kind logged in full before only every _LOG_EVERY-th is


class _RtpProtocol(asyncio.DatagramProtocol):
    """Hands datagrams to the session; nothing raised escapes into the loop."""

    def __init__(self, session: "RTPSession"):
        self._session = session

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            session = self._session
            if session._dual_stack:
                addr = _from_dual_stack(addr)
            session._on_datagram(data, addr)
        except Exception:
            self._session._log_error("error handling a received RTP packet")

    def error_received(self, exc: Exception) -> None:
        self._session._transport_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._on_connection_lost()


def _from_dual_stack(addr: Any) -> tuple:
    """A dual-stack socket's source as the session sees it: ``::ffff:a.b.c.d`` as IPv4."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        return (host[7:], addr[1])
    return (host, addr[1])


def _to_dual_stack(addr: Any) -> tuple:
    """An IPv4 destination as a dual-stack IPv6 socket sends to it."""
    host = addr[0]
    if ":" not in host:
        return (f"::ffff:{host}", addr[1])
    return addr


class _RtcpProtocol(asyncio.DatagramProtocol):
    """Hands RTCP datagrams (the odd port) to the session; nothing raised escapes."""

    def __init__(self, session: "RTPSession"):
        self._session = session

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            session = self._session
            if session._dual_stack:
                addr = _from_dual_stack(addr)
            session._on_rtcp(data, addr)
        except Exception:
            self._session._log_error("error handling a received RTCP packet")

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable: the peer does not listen for RTCP


class RTPSession:
    """One call's RTP stream over a UDP socket: paced sending and receiving.

    The protocol work is the sans-IO :class:`~pipecat_sip.rtp.session.MediaSession`
    (:attr:`session`); this class gives it sockets, the shared clock and
    callbacks.

    Sending: :meth:`send_audio` queues PCM16 at :attr:`sample_rate`; on every
    clock tick one packet of :attr:`samples_per_packet` samples goes out, the
    last piece of speech padded with silence. With nothing queued, encoded
    silence is sent (``send_silence=True``) or nothing at all while the RTP
    timestamp still moves on. The first audio packet after an idle spell
    carries the marker bit. :meth:`send_dtmf` sends RFC 4733 events in the
    same paced stream (audio waits meanwhile) when a telephone-event payload
    type was negotiated, in-band tones otherwise.

    Receiving: datagrams are parsed as RTP; RTCP, junk and unknown payload
    types are counted and dropped. The session sends to ``remote_addr`` (the
    SDP address) and latches (symmetric RTP, for NAT) as
    :mod:`pipecat_sip.rtp.latching` says: packets from the SDP address
    always win; another source is taken only while the SDP address is
    silent, from a plausible host (``latching``, ``signaling_address``),
    after a short run of consecutive packets; other sources are dropped.
    Input is bounded by audio time (a few hundred ms ahead of real time) and
    payload size; what is dropped is counted in :attr:`stats`. Audio packets
    are decoded and passed to :attr:`on_audio` (at once, or through the
    ``jitter_buffer``); telephone-event packets (our
    payload type, or any of ``extra_telephone_event_pts``) become one
    :attr:`on_dtmf` call per key press.

    RTCP (RFC 3550 s.6), when an ``rtcp_sock`` (the odd port) is given: a
    compound SR (RR while we send nothing) + SDES CNAME about every
    ``rtcp_interval_s`` (randomized 0.5-1.5x, the first after half of it),
    with a report block on the latched source (loss, jitter, LSR/DLSR), sent
    to the RTP destination's port + 1 until RTCP arrives from the peer, then
    back to that source; a BYE on :meth:`close`. Received SRs feed LSR/DLSR.

    Callbacks (plain functions, called from the event loop; set them before
    or after :meth:`start`):

    - ``on_audio(pcm: bytes)``: decoded PCM16 of each received audio packet.
    - ``on_dtmf(key: str)``: ``"0"``-``"9"``, ``"*"`` or ``"#"``, once per press.
    - ``on_timeout()``: once, when no RTP or RTCP arrived for ``rtp_timeout_s``
      (held or not).

    Observers that must not take ``on_dtmf`` from its owner (the transport)
    append to ``dtmf_listeners`` (``listener(key)``, besides ``on_dtmf``).

    Args:
        sock: A bound UDP socket (e.g. from :class:`~pipecat_sip.ports.PortPool`);
            the session closes it.
        remote_addr: The peer's RTP address from its SDP, ``(host, port)``;
            port 0 or an unspecified host means "do not send" (hold).
        codec: The negotiated codec.
        payload_type: The negotiated audio payload type; default the codec's.
        telephone_event_pt: The negotiated telephone-event payload type, or None.
        extra_telephone_event_pts: More payload types to accept telephone-events
            on (e.g. the one in the peer's offer: linphone sends on 96 even
            when the answer said 101).
        ptime_ms: Packet time in ms.
        send_silence: Send encoded silence when nothing is queued (else send
            nothing and let the timestamp run on).
        rtp_timeout_s: Call ``on_timeout`` when no RTP or RTCP arrived for
            this long, counted from :meth:`start` (or from confirmation with
            ``confirmed=False``); 0 disables it.
        clock: The pacing clock; default the loop's shared one for ``ptime_ms``.
        log_prefix: Put in front of log lines (e.g. the call).
        rtcp_sock: A bound UDP socket for RTCP (the RTP port + 1), or None
            for no RTCP; the session closes it.
        rtcp_interval_s: Mean seconds between our RTCP reports (RFC 3550
            s.6.2 recommends 5).
        cname: Our RTCP CNAME; default a random one per session (RFC 7022).
        comfort_noise_pt: The negotiated comfort-noise payload type (13), or
            None (CN packets are then dropped as unknown).
        rng: ``random.Random``-like source of the session's random values
            (SSRC, first sequence number and timestamp, CNAME, RTCP jitter);
            default ``secrets.SystemRandom()``.
        jitter_buffer: A jitter buffer (``put(packet, now)``, ``pop(now)``,
            see :class:`~pipecat_sip.rtp.session.JitterBuffer`), or None to
            deliver each audio packet as it arrives.
        signaling_address: The host (or ``(host, port)``) the call's SIP
            signalling came from: with ``latching="signaling"`` RTP may
            latch to a source on that host or on the SDP ``c=`` host.
        latching: ``"signaling"`` (default), ``"any"`` or ``"off"``: which
            other sources than the SDP address RTP may latch to (see
            :mod:`pipecat_sip.rtp.latching`).
        confirmed: False: send nothing until :meth:`confirm` (the call's
            ACK) or accepted RTP from the peer; the RTP timeout counts from
            then. True (default): from :meth:`start`.
        srtp: The call's SRTP context (RFC 3711, keys from SDES), or None
            for plain RTP: every packet sent is protected with it and every
            datagram received must authenticate (see
            :class:`~pipecat_sip.rtp.session.MediaSession`); its counters
            are :attr:`srtp_stats`.

    Raises:
        ValueError: A payload type is out of range, ``ptime_ms`` does not fit
            the codec's rates, or ``clock`` has another packet time.

    Example:
        ::

            session = RTPSession(sock=lease.sock, remote_addr=("203.0.113.5", 4000), codec=PCMU,
                                 telephone_event_pt=101)
            session.on_audio = lambda pcm: ...
            session.on_dtmf = lambda key: ...
            await session.start()
            session.send_audio(pcm_8khz)
            await session.wait_for_backlog(320)
            await session.close()
    """

    on_audio: Callable[[bytes], None] | None
    on_dtmf: Callable[[str], None] | None
    on_timeout: Callable[[], None] | None

    def __init__(
        self,
        *,
        sock: socket.socket,
        remote_addr: tuple[str, int],
        codec: Codec,
        payload_type: int | None = None,
        telephone_event_pt: int | None = None,
        extra_telephone_event_pts: Iterable[int] = (),
        ptime_ms: int = 20,
        send_silence: bool = True,
        rtp_timeout_s: float = 30.0,
        clock: MediaClock | None = None,
        log_prefix: str = "",
        rtcp_sock: socket.socket | None = None,
        rtcp_interval_s: float = 5.0,
        cname: str | None = None,
        comfort_noise_pt: int | None = None,
        rng: Any = None,
        jitter_buffer: JitterBuffer | None = None,
        signaling_address: str | tuple | None = None,
        latching: str = "signaling",
        confirmed: bool = True,
        srtp: SrtpContext | None = None,
    ):
        if clock is not None and clock.ptime_ms != ptime_ms:
            raise ValueError(f"clock paces {clock.ptime_ms} ms packets, session wants {ptime_ms}")
        self._session = session = MediaSession(
            codec=codec,
            remote_addr=remote_addr,
            payload_type=payload_type,
            telephone_event_pt=telephone_event_pt,
            extra_telephone_event_pts=extra_telephone_event_pts,
            comfort_noise_pt=comfort_noise_pt,
            ptime_ms=ptime_ms,
            send_silence=send_silence,
            rtp_timeout_s=rtp_timeout_s,
            rtcp=rtcp_sock is not None,
            rtcp_interval_s=rtcp_interval_s,
            cname=cname,
            rng=rng,
            jitter_buffer=jitter_buffer,
            signaling_address=signaling_address,
            latching=latching,
            confirmed=confirmed,
            srtp=srtp,
        )
        self.codec = codec
        self.payload_type = session.payload_type
        self.ptime_ms = ptime_ms
        self.sample_rate = session.sample_rate
        """Rate of the PCM sent and received, Hz."""
        self.samples_per_packet = session.samples_per_packet
        """PCM samples per packet."""
        self.cname = session.cname
        """Our RTCP CNAME."""
        self.stats: RtpStats = session.stats
        """The session's counters (the pure session's, plus socket errors)."""
        self._clock = clock
        self._log = f"{log_prefix}: " if log_prefix else "RTPSession: "
        self._sock = sock
        # A dual-stack IPv6 socket (bound to ::) talks to IPv4 peers through mapped
        # addresses; the pure session only ever sees plain IPv4 and IPv6.
        self._dual_stack = sock.family == socket.AF_INET6 and sock.getsockname()[0] == "::"
        self._rtcp_sock = rtcp_sock
        self._receive_rtp = session.receive_rtp
        self._receive_rtcp = session.receive_rtcp
        self._tick = session.on_tick
        self._events = session.events
        self._time: Callable[[], float] = time.monotonic  # loop.time once started
        self._notices: dict[str, int] = {}
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._lost: asyncio.Future | None = None
        self._closed = False
        self.on_audio = None
        self.on_dtmf = None
        self.on_timeout = None
        self.dtmf_listeners: list[Callable[[str], None]] = []
        """Also called with each key press received (besides ``on_dtmf``)."""

    # --- public API -------------------------------------------------------------------

    @property
    def session(self) -> MediaSession:
        """The sans-IO media session this adapter drives."""
        return self._session

    @property
    def telephone_event_pt(self) -> int | None:
        """The telephone-event payload type key presses go out with (None: in-band)."""
        return self._session.telephone_event_pt

    @property
    def send_silence(self) -> bool:
        """Send silence packets when no audio is queued (else send nothing)."""
        return self._session.send_silence

    @send_silence.setter
    def send_silence(self, value: bool) -> None:
        self._session.send_silence = value

    @property
    def sending(self) -> bool:
        """Whether packets go on the wire (False while the peer holds the call)."""
        return self._session.sending

    @property
    def receiving(self) -> bool:
        """Whether the negotiated direction has the peer send RTP to us."""
        return self._session.receiving

    @property
    def sdp_address(self) -> tuple[str, int]:
        """The peer's RTP address from its SDP (before latching), ``(host, port)``."""
        return self._session.sdp_address

    def set_direction(self, *, send: bool, receive: bool) -> None:
        """Follow the negotiated direction (RFC 3264 s.5.1): hold and resume.

        With ``send`` False the clock keeps taking queued audio off at the
        packet pace, so whatever plays on still takes its real time, but
        nothing goes on the wire (recvonly/inactive: RFC 3264 forbids
        sending) and key presses are dropped; the RTP timestamp runs on.
        The RTP timeout runs whatever the direction: a held call still gets
        the peer's RTCP.

        Args:
            send: Put packets on the wire.
            receive: Expect packets from the peer.
        """
        self._session.set_direction(send=send, receive=receive, now=self._time())

    def set_telephone_event_pt(self, payload_type: int | None) -> None:
        """Send key presses with a new telephone-event payload type (a re-offer renumbered it).

        None sends them as in-band tones. Events still arriving on the old
        number are accepted.

        Raises:
            ValueError: ``payload_type`` is out of 0-127 or is the audio payload type.
        """
        self._session.set_telephone_event_pt(payload_type)

    @property
    def rtp_timeout_s(self) -> float:
        """Seconds without received RTP before `on_timeout` fires; 0 disables."""
        return self._session.rtp_timeout_s

    @rtp_timeout_s.setter
    def rtp_timeout_s(self, value: float) -> None:
        self._session.rtp_timeout_s = value

    @property
    def ssrc(self) -> int:
        """Our SSRC."""
        return self._session.ssrc

    @property
    def remote_addr(self) -> tuple | None:
        """Where packets go now: the SDP address, or the latched source; None on hold."""
        return self._session.remote_addr

    @property
    def latched(self) -> bool:
        """True once a received packet fixed the peer's source address."""
        return self._session.latched

    @property
    def local_addr(self) -> tuple:
        """The socket's bound address (raises OSError once closed)."""
        return self._sock.getsockname()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def srtp(self) -> SrtpContext | None:
        """The SRTP context (None: plain RTP)."""
        return self._session.srtp

    @property
    def srtp_stats(self) -> SrtpStats | None:
        """SRTP counters beside :attr:`stats`: protected, authenticated, dropped; None if plain."""
        return self._session.srtp_stats

    def set_srtp(self, srtp: SrtpContext | None) -> None:
        """Protect with another SRTP context from now on (a re-offer changed our key)."""
        self._session.set_srtp(srtp)

    @property
    def backlog_bytes(self) -> int:
        """PCM bytes queued and not yet sent."""
        return self._session.backlog_bytes

    async def start(self) -> None:
        """Start receiving and sending (idempotent).

        Raises:
            RuntimeError: The session was closed.
        """
        if self._closed:
            raise RuntimeError("RTPSession is closed")
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self), sock=self._sock
        )
        self._transport = transport
        if self._closed:  # closed while we awaited
            transport.close()
            return
        if self._clock is None:
            self._clock = MediaClock.for_loop(loop, self.ptime_ms)
        if self._rtcp_sock is not None:
            self._rtcp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpProtocol(self), sock=self._rtcp_sock
            )
            if self._closed:
                self._rtcp_transport.close()
                return
        self._time = loop.time
        now = loop.time()
        self._session.wall_offset = time.time() - now
        self._session.start(now)
        self._clock.add(self)

    async def close(self) -> None:
        """Stop media and close the socket (idempotent; the port's release is the caller's).

        Pending :meth:`wait_for_backlog` calls return; queued audio and DTMF
        are dropped. Returns once the socket is closed.
        """
        rtcp = self._rtcp_transport
        if not self._closed:
            self._closed = True
            bye = self._session.close(self._time())  # RFC 3550 s.6.6: leaving the session
            if rtcp is not None and not rtcp.is_closing():
                for data, addr, _ in bye:
                    self._send_rtcp(data, addr)
            if self._clock is not None:
                self._clock.remove(self)
            self._wake_waiters(force=True)
            if self._transport is not None:
                self._transport.close()
            else:
                self._sock.close()
        if rtcp is not None and not rtcp.is_closing():
            rtcp.close()
        elif rtcp is None and self._rtcp_sock is not None:
            self._rtcp_sock.close()
        if self._lost is not None and not self._lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), _CLOSE_TIMEOUT_S)
            except TimeoutError:
                logger.warning(f"{self._log}RTP socket did not close in {_CLOSE_TIMEOUT_S} s")

    def send_audio(self, pcm: bytes) -> None:
        """Queue PCM16 little-endian mono at :attr:`sample_rate` for paced sending.

        Ignored once the session is closed.

        Raises:
            ValueError: ``pcm`` is not whole 16-bit samples.
        """
        self._session.queue_audio(pcm)

    async def wait_for_backlog(self, max_bytes: int) -> None:
        """Return once at most ``max_bytes`` of PCM are queued, or the session is closed.

        Woken by the clock tick that sent the packet (or by :meth:`clear_audio`),
        no polling.
        """
        if self._closed or self._session.backlog_bytes <= max_bytes:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((max_bytes, future))
        await future

    def clear_audio(self) -> None:
        """Drop all queued audio now (barge-in): the next packet is silence."""
        self._session.clear_audio()
        if self._waiters:
            self._wake_waiters()

    def send_dtmf(self, key: str, duration_ms: int = 100) -> None:
        """Send one key press after any key presses still being sent.

        As RFC 4733 events when a telephone-event payload type was
        negotiated (audio is held back meanwhile), otherwise as an in-band
        Q.23 tone queued behind the audio.

        Args:
            key: ``"0"``-``"9"``, ``"*"``, ``"#"`` or ``"A"``-``"D"``.
            duration_ms: Length of the press in ms.

        Raises:
            ValueError: Unknown key or a duration out of range (1-8000 ms).
        """
        event_for_key(key)  # validate before queueing anything
        self._session.queue_dtmf(key, duration_ms)

    @property
    def confirmed(self) -> bool:
        """Whether the peer has shown it owns its address (we may send to it)."""
        return self._session.confirmed

    @property
    def jitter_buffer(self) -> Any:
        """The jitter buffer received audio is played out through, or None."""
        return self._session.jitter_buffer

    def set_jitter_buffer(self, jitter_buffer: Any) -> None:
        """Play received audio out through ``jitter_buffer`` (None: each packet at once).

        One frame per packet time then reaches ``on_audio``, in sequence order,
        lost packets concealed; set it before media flows.
        """
        self._session.set_jitter_buffer(jitter_buffer)

    def enable_jitter_buffer(self, min_delay_ms: float = 0.0, max_delay_ms: float = 200.0) -> None:
        """Play received audio out through an adaptive jitter buffer (``rtp.jitterbuffer``).

        Args:
            min_delay_ms: Least play-out delay the buffer keeps, ms.
            max_delay_ms: Most play-out delay it may adapt to, ms.

        Raises:
            ValueError: The bounds are negative or reversed.
        """
        from pipecat_sip.rtp.jitterbuffer import JitterBuffer

        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(
                f"jitter buffer bounds {min_delay_ms}-{max_delay_ms} ms are not a range"
            )
        self.set_jitter_buffer(
            JitterBuffer(
                self.codec.clock_rate,
                self.ptime_ms,
                min_delay_ms,
                max_delay_ms,
                telephone_event_pts=self._session.telephone_event_pts,
                comfort_noise_pt=self._session.comfort_noise_pt,
            )
        )

    def confirm(self) -> None:
        """The peer owns its address (the call's ACK): start sending; the RTP timeout counts.

        For a session made with ``confirmed=False``; idempotent.
        """
        self._session.confirm(self._time())

    def update_remote(self, remote_addr: tuple[str, int]) -> None:
        """Send to a new SDP address (re-INVITE) and latch again on the next packets."""
        self._session.update_remote(remote_addr)
        self._dispatch()

    def __repr__(self) -> str:
        return (
            f"<RTPSession {self.codec.encoding_name}/{self.payload_type} -> {self.remote_addr}"
            f"{' latched' if self.latched else ''}{' closed' if self._closed else ''}>"
        )

    # --- clock side -------------------------------------------------------------------

    def _on_tick(self, now: float, sends: int, skipped: int) -> None:
        out = self._tick(now, sends, skipped)
        if out:
            sock = self._sock
            dual = self._dual_stack
            for data, addr, rtcp in out:
                if rtcp:
                    self._send_rtcp(data, addr)
                    continue
                if dual:
                    addr = _to_dual_stack(addr)
                try:
                    sock.sendto(data, addr)  # non-blocking; cheaper than the transport's
                except (BlockingIOError, InterruptedError):
                    self.stats.send_errors += 1  # socket buffer full: drop, as UDP would
                except OSError as exc:
                    self._transport_error(exc)
        if self._waiters:
            self._wake_waiters()
        if self._events:
            self._dispatch()

    def _send_rtcp(self, data: bytes, addr: Any) -> None:
        if self._dual_stack:
            addr = _to_dual_stack(addr)
        try:
            (self._rtcp_sock or self._sock).sendto(data, addr)
        except OSError:
            pass  # best effort: RTCP never holds up the media

    def _wake_waiters(self, force: bool = False) -> None:
        backlog = self._session.backlog_bytes
        waiting = []
        for max_bytes, future in self._waiters:
            if future.done():
                continue
            if force or backlog <= max_bytes:
                future.set_result(None)
            else:
                waiting.append((max_bytes, future))
        self._waiters = waiting

    # --- socket side ------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        pcm = self._receive_rtp(data, addr, self._time())
        if pcm is not None:
            on_audio = self.on_audio
            if on_audio is not None:
                try:
                    on_audio(pcm)
                except Exception:
                    self._log_error("error in on_audio")
        if self._events:
            self._dispatch()

    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        self._receive_rtcp(data, addr, self._time())
        if self._events:
            self._dispatch()

    def _dispatch(self) -> None:
        """Act on the pure session's events: callbacks and log lines."""
        events = self._events
        while events:
            event = events.popleft()
            kind = type(event)
            if kind is AudioReceived:
                callback, arg, what = self.on_audio, event.pcm, "on_audio"
            elif kind is DtmfReceived:
                callback, arg, what = self.on_dtmf, event.key, "on_dtmf"
                for listener in self.dtmf_listeners:
                    try:
                        listener(arg)
                    except Exception:
                        self._log_error("error in a DTMF listener")
            elif kind is RtpTimeout:
                logger.warning(f"{self._log}no RTP received for {event.timeout_s:g} s")
                on_timeout = self.on_timeout
                if on_timeout is not None:
                    try:
                        on_timeout()
                    except Exception:
                        self._log_error("error in on_timeout")
                continue
            else:
                self._log_notice(event)
                continue
            if callback is not None:
                try:
                    callback(arg)
                except Exception:
                    self._log_error(f"error in {what}")

    def _log_notice(self, notice: Notice) -> None:
        """Log a notice; past the first few of a kind, only every _LOG_EVERY-th, with the count."""
        count = self._notices.get(notice.code, 0) + 1
        self._notices[notice.code] = count
        if count <= _LOG_FIRST or count % _LOG_EVERY == 0:
            text = f"{self._log}{notice.text}" + (f" ({count} so far)" if count > 1 else "")
            if notice.level == "warning":
                logger.warning(text)
            else:
                logger.info(text)

    def _on_connection_lost(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if not self._closed:  # the socket went away under us
            self._closed = True
            self._session.close(self._time())
            if self._clock is not None:
                self._clock.remove(self)
            self._wake_waiters(force=True)

    def _transport_error(self, exc: Exception) -> None:
        stats = self.stats
        stats.send_errors += 1
        if stats.send_errors % _LOG_EVERY == 1:
            logger.warning(f"{self._log}RTP socket error ({stats.send_errors}): {exc}")

    def _log_error(self, what: str) -> None:
        self.stats.errors += 1
        if self.stats.errors % _LOG_EVERY == 1:
            logger.exception(f"{self._log}{what} ({self.stats.errors} so far)")
