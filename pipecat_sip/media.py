"""Asyncio RTP media: a shared pacing clock and the per-call RTP session.

:class:`MediaClock` is one ``loop.call_at`` timer per event loop (and packet
time) that fires at absolute monotonic deadlines ``start + k * ptime``; on each
tick every registered :class:`RTPSession` sends at most one packet (two when
the loop ran late). There is no task per call and no ``sleep()`` loop, so a
core can pace hundreds of calls.

:class:`RTPSession` owns one call's UDP socket: it packetizes queued PCM into
RTP on the clock's ticks (silence or nothing when idle, marker bit at each
talkspurt, RFC 4733 DTMF interleaved), and decodes what arrives (symmetric
RTP latching, telephone-event to keys, RTCP and junk counted and dropped).
The protocol work is done by the sans-IO pieces in :mod:`pipecat_sip.rtp` and
:mod:`pipecat_sip.codecs`.
"""

import asyncio
import random
import secrets
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from loguru import logger

from pipecat_sip.codecs import Codec
from pipecat_sip.codecs.tones import dtmf_tone
from pipecat_sip.rtp.dtmf import DtmfReceiver, DtmfSender, event_for_key
from pipecat_sip.rtp.packet import RtpPacket, RtpParseError, is_rtcp
from pipecat_sip.rtp.rtcp import (
    RTCP_SR,
    ReceptionStats,
    SenderInfo,
    compound,
    ntp_timestamp,
    parse_compound,
)
from pipecat_sip.rtp.sender import RtpSender

__all__ = ["MediaClock", "RTPSession", "RtpStats"]

MAX_BURST = 2
"""Most packets one session sends in one tick when the loop ran late; older
deadlines are skipped (the RTP timestamp still moves on over them)."""

PHASES = 4
"""Phases of the media clock: sessions are spread over ``ptime / PHASES`` offsets."""

SESSIONS_PER_PHASE = 32
"""Sessions a phase takes before the next phase is used."""

_PHASE_ORDER = (0, 2, 1, 3)  # fill phases far apart first

_INBAND_GAP_MS = 60  # silence after an in-band DTMF tone, so repeated keys stay apart
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
        self._handle = loop.call_at(when, self._tick)

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


@dataclass(slots=True)
class RtpStats:
    """Counters of one RTP session.

    Attributes:
        packets_sent: RTP packets sent (audio, silence and telephone-event).
        octets_sent: Payload octets sent.
        packets_received: Valid RTP packets accepted (audio and telephone-event).
        octets_received: Payload octets accepted.
        packets_invalid: Datagrams that were not valid RTP.
        packets_rtcp: RTCP datagrams received (on the RTCP port, or muxed on the
            RTP port, RFC 5761).
        rtcp_sent: RTCP compound packets sent (reports, and the BYE on close).
        packets_wrong_source: Packets dropped because they came from another
            address than the latched one.
        packets_unknown_pt: Packets of a payload type we did not negotiate.
        dtmf_sent: Key presses sent (RFC 4733 or in-band).
        dtmf_received: Key presses received.
        deadlines_skipped: Packet times skipped because the loop ran late.
        send_errors: Errors the socket reported on sending.
        errors: Exceptions caught in callbacks (ours or the user's).
    """

    packets_sent: int = 0
    octets_sent: int = 0
    packets_received: int = 0
    octets_received: int = 0
    packets_invalid: int = 0
    packets_rtcp: int = 0
    rtcp_sent: int = 0
    packets_wrong_source: int = 0
    packets_unknown_pt: int = 0
    dtmf_sent: int = 0
    dtmf_received: int = 0
    deadlines_skipped: int = 0
    send_errors: int = 0
    errors: int = 0


class _RtpProtocol(asyncio.DatagramProtocol):
    """Hands datagrams to the session; nothing raised escapes into the loop."""

    def __init__(self, session: "RTPSession"):
        self._session = session

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._session._on_datagram(data, addr)
        except Exception:
            self._session._log_error("error handling a received RTP packet")

    def error_received(self, exc: Exception) -> None:
        self._session._transport_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._on_connection_lost()


class _RtcpProtocol(asyncio.DatagramProtocol):
    """Hands RTCP datagrams (the odd port) to the session; nothing raised escapes."""

    def __init__(self, session: "RTPSession"):
        self._session = session

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._session._on_rtcp(data, addr)
        except Exception:
            self._session._log_error("error handling a received RTCP packet")

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable: the peer does not listen for RTCP


class RTPSession:
    """One call's RTP stream over a UDP socket: paced sending and receiving.

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
    SDP address) until the first valid packet arrives, then latches to that
    packet's source (symmetric RTP, for NAT) and drops packets from any
    other source. Audio packets are decoded and passed to :attr:`on_audio`;
    telephone-event packets (our payload type, or any of
    ``extra_telephone_event_pts``) become one :attr:`on_dtmf` call per key
    press.

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
    - ``on_timeout()``: once, when no RTP arrived for ``rtp_timeout_s``.

    Args:
        sock: A bound UDP socket (e.g. from :class:`~pipecat_sip.rtp.ports.PortPool`);
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
        rtp_timeout_s: Call ``on_timeout`` when no RTP arrived for this long,
            counted from :meth:`start`; 0 disables it.
        clock: The pacing clock; default the loop's shared one for ``ptime_ms``.
        log_prefix: Put in front of log lines (e.g. the call).
        rtcp_sock: A bound UDP socket for RTCP (the RTP port + 1), or None
            for no RTCP; the session closes it.
        rtcp_interval_s: Mean seconds between our RTCP reports (RFC 3550
            s.6.2 recommends 5).
        cname: Our RTCP CNAME; default a random one per session (RFC 7022).

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
    ):
        self.codec = codec
        self.payload_type = codec.payload_type if payload_type is None else payload_type
        self.telephone_event_pt = telephone_event_pt
        self.ptime_ms = ptime_ms
        self.sample_rate = codec.sample_rate
        """Rate of the PCM sent and received, Hz."""
        self.samples_per_packet = codec.sample_rate * ptime_ms // 1000
        """PCM samples per packet."""
        if ptime_ms <= 0 or self.samples_per_packet * 1000 != codec.sample_rate * ptime_ms:
            raise ValueError(f"ptime {ptime_ms} ms is not a whole number of samples")
        if clock is not None and clock.ptime_ms != ptime_ms:
            raise ValueError(f"clock paces {clock.ptime_ms} ms packets, session wants {ptime_ms}")
        te_pts = {*extra_telephone_event_pts}
        if telephone_event_pt is not None:
            te_pts.add(telephone_event_pt)
        te_pts.discard(self.payload_type)
        for pt in (self.payload_type, *te_pts):
            if not 0 <= pt <= 127:
                raise ValueError(f"RTP payload type {pt} is out of range 0-127")
        self._te_pts = frozenset(te_pts)
        self._send_silence = send_silence
        self._rtp_timeout = max(0.0, float(rtp_timeout_s))
        self._clock = clock
        self._log = f"{log_prefix}: " if log_prefix else "RTPSession: "
        self._sock = sock
        self._remote = self._destination(remote_addr)
        self._sdp_addr = tuple(remote_addr[:2])
        self._latched: Any = None  # the source address we latched to

        self._rtp = RtpSender(self.payload_type, codec.clock_rate)
        self._ts_step = codec.clock_rate * ptime_ms // 1000
        self._bytes_per_packet = 2 * self.samples_per_packet
        self._silence_pcm = bytes(self._bytes_per_packet)
        self._silence_payload = codec.silence(self.samples_per_packet)
        self._audio = bytearray()
        self._idle = True  # nothing was queued at the last packet: next audio starts a talkspurt
        self._dtmf_out: deque[DtmfSender] = deque()
        self._dtmf_in = DtmfReceiver(log_prefix=self._log)
        self._waiters: list[tuple[int, asyncio.Future]] = []

        self._transport: asyncio.DatagramTransport | None = None
        self._lost: asyncio.Future | None = None
        self._closed = False
        self._rx_count = 0
        self._rx_mark = 0
        self._last_rx = 0.0
        self._timed_out = False
        self._sending = True  # the negotiated direction lets us send
        self._receiving = True  # ... and the peer sends (the RTP timeout runs)

        self._rtcp_sock = rtcp_sock
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._rtcp_interval = max(0.05, float(rtcp_interval_s))
        self._rtcp_source: Any = None  # where the peer's RTCP comes from (symmetric RTCP)
        self._next_rtcp = float("inf")
        self._packets_at_report = 0  # RTP packets sent when the last report went out
        self._reception: ReceptionStats | None = None  # about the latched source
        self.cname = cname or f"{secrets.token_urlsafe(12)}@pipecat-sip"
        """Our RTCP CNAME."""

        self.stats = RtpStats()
        self.on_audio = None
        self.on_dtmf = None
        self.on_timeout = None

    # --- public API -------------------------------------------------------------------

    @property
    def send_silence(self) -> bool:
        """Send silence packets when no audio is queued (else send nothing)."""
        return self._send_silence

    @send_silence.setter
    def send_silence(self, value: bool) -> None:
        self._send_silence = bool(value)

    @property
    def sending(self) -> bool:
        """Whether packets go on the wire (False while the peer holds the call)."""
        return self._sending

    @property
    def receiving(self) -> bool:
        """Whether the peer is expected to send RTP (the RTP timeout runs only then)."""
        return self._receiving

    @property
    def sdp_address(self) -> tuple[str, int]:
        """The peer's RTP address from its SDP (before latching), ``(host, port)``."""
        return self._sdp_addr

    def set_direction(self, *, send: bool, receive: bool) -> None:
        """Follow the negotiated direction (RFC 3264 s.5.1): hold and resume.

        With ``send`` False the clock keeps taking queued audio off at the
        packet pace, so whatever plays on still takes its real time, but
        nothing goes on the wire (recvonly/inactive: RFC 3264 forbids
        sending) and key presses are dropped; the RTP timestamp runs on.
        With ``receive`` False the RTP timeout waits; it counts again from
        when ``receive`` is set back.

        Args:
            send: Put packets on the wire.
            receive: Expect packets from the peer.
        """
        if receive and not self._receiving:
            self._rx_mark = -1  # the next tick restarts the timeout count from now
        self._sending = bool(send)
        self._receiving = bool(receive)

    def set_telephone_event_pt(self, payload_type: int | None) -> None:
        """Send key presses with a new telephone-event payload type (a re-offer renumbered it).

        None sends them as in-band tones. Events still arriving on the old
        number are accepted.

        Raises:
            ValueError: ``payload_type`` is out of 0-127 or is the audio payload type.
        """
        if payload_type is not None:
            if not 0 <= payload_type <= 127 or payload_type == self.payload_type:
                raise ValueError(f"invalid telephone-event payload type {payload_type}")
            self._te_pts = self._te_pts | {payload_type}
        self.telephone_event_pt = payload_type

    @property
    def rtp_timeout_s(self) -> float:
        """Seconds without received RTP before `on_timeout` fires; 0 disables."""
        return self._rtp_timeout

    @rtp_timeout_s.setter
    def rtp_timeout_s(self, value: float) -> None:
        self._rtp_timeout = max(0.0, float(value))

    @property
    def ssrc(self) -> int:
        """Our SSRC."""
        return self._rtp.ssrc

    @property
    def remote_addr(self) -> tuple | None:
        """Where packets go now: the SDP address, or the latched source; None on hold."""
        return self._remote

    @property
    def latched(self) -> bool:
        """True once the first valid packet fixed the peer's source address."""
        return self._latched is not None

    @property
    def local_addr(self) -> tuple:
        """The socket's bound address (raises OSError once closed)."""
        return self._sock.getsockname()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def backlog_bytes(self) -> int:
        """PCM bytes queued and not yet sent."""
        return len(self._audio)

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
        self._last_rx = loop.time()
        if self._rtcp_sock is not None:
            self._rtcp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _RtcpProtocol(self), sock=self._rtcp_sock
            )
            self._next_rtcp = loop.time() + self._rtcp_interval * random.uniform(0.25, 0.75)
        self._clock.add(self)

    async def close(self) -> None:
        """Stop media and close the socket (idempotent; the port's release is the caller's).

        Pending :meth:`wait_for_backlog` calls return; queued audio and DTMF
        are dropped. Returns once the socket is closed.
        """
        rtcp = self._rtcp_transport
        if rtcp is not None and not rtcp.is_closing():
            if not self._closed:
                self._send_rtcp(bye=True)  # RFC 3550 s.6.6: leaving the session
            rtcp.close()
        elif rtcp is None and self._rtcp_sock is not None:
            self._rtcp_sock.close()
        if not self._closed:
            self._closed = True
            if self._clock is not None:
                self._clock.remove(self)
            self._audio.clear()
            self._dtmf_out.clear()
            self._wake_waiters(force=True)
            if self._transport is not None:
                self._transport.close()
            else:
                self._sock.close()
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
        if len(pcm) & 1:
            raise ValueError(f"PCM16 data has an odd length ({len(pcm)} bytes)")
        if not self._closed:
            self._audio += pcm

    async def wait_for_backlog(self, max_bytes: int) -> None:
        """Return once at most ``max_bytes`` of PCM are queued, or the session is closed.

        Woken by the clock tick that sent the packet (or by :meth:`clear_audio`),
        no polling.
        """
        if self._closed or len(self._audio) <= max_bytes:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((max_bytes, future))
        await future

    def clear_audio(self) -> None:
        """Drop all queued audio now (barge-in): the next packet is silence."""
        self._audio.clear()
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
        if self._closed:
            return
        if self.telephone_event_pt is not None:
            self._dtmf_out.append(
                DtmfSender(
                    self._rtp,
                    self.telephone_event_pt,
                    key,
                    duration_ms,
                    ptime_ms=self.ptime_ms,
                    clock_rate=self.codec.clock_rate,
                )
            )
        else:
            if not 1 <= duration_ms <= 8000:
                raise ValueError(f"DTMF duration must be 1-8000 ms, got {duration_ms}")
            tone = dtmf_tone(key, duration_ms, self.sample_rate)
            gap = bytes(2 * (self.sample_rate * _INBAND_GAP_MS // 1000))
            self._audio += tone + gap
        self.stats.dtmf_sent += 1

    def update_remote(self, remote_addr: tuple[str, int]) -> None:
        """Send to a new SDP address (re-INVITE) and latch again on the next packets."""
        self._remote = self._destination(remote_addr)
        self._sdp_addr = tuple(remote_addr[:2])
        self._latched = None
        self._rtcp_source = None
        logger.info(f"{self._log}RTP remote address now {remote_addr[0]}:{remote_addr[1]}")

    def __repr__(self) -> str:
        return (
            f"<RTPSession {self.codec.encoding_name}/{self.payload_type} -> {self._remote}"
            f"{' latched' if self._latched else ''}{' closed' if self._closed else ''}>"
        )

    # --- clock side -------------------------------------------------------------------

    def _on_tick(self, now: float, sends: int, skipped: int) -> None:
        if self._closed:
            return
        if skipped:
            self._rtp.advance(skipped * self._ts_step)
            self.stats.deadlines_skipped += skipped
        self._send_one()
        if sends > 1:
            self._send_one()
        if self._waiters:
            self._wake_waiters()
        if now >= self._next_rtcp:
            self._send_rtcp()
            self._next_rtcp = now + self._rtcp_interval * random.uniform(0.5, 1.5)
        if self._rtp_timeout and self._receiving and not self._timed_out:
            if self._rx_count != self._rx_mark:
                self._rx_mark = self._rx_count
                self._last_rx = now
            elif now - self._last_rx >= self._rtp_timeout:
                self._timed_out = True
                self._fire_timeout()

    def _send_one(self) -> None:
        if not self._sending:
            self._play_out_held()
            return
        dtmf = self._dtmf_out
        while dtmf:
            packet = next(dtmf[0], None)
            if packet is not None:
                self._send(packet, 4)
                return
            dtmf.popleft()
        audio = self._audio
        if audio:
            size = self._bytes_per_packet
            if len(audio) >= size:
                pcm = bytes(audio[:size])
                del audio[:size]
            else:  # the end of speech: pad the last packet with silence
                pcm = bytes(audio) + self._silence_pcm[len(audio) :]
                audio.clear()
            payload = self.codec.encode(pcm)
            marker = self._idle
            self._idle = False
            self._send(self._rtp.packet(payload, self._ts_step, marker=marker), len(payload))
        else:
            self._idle = True
            if self._send_silence:
                payload = self._silence_payload
                self._send(self._rtp.packet(payload, self._ts_step), len(payload))
            else:
                self._rtp.advance(self._ts_step)

    # --- RTCP (RFC 3550 s.6) --------------------------------------------------------------

    def _on_rtcp(self, data: bytes, addr: Any) -> None:
        """A datagram on the RTCP port: from the latched RTP source's host only."""
        latched = self._latched
        if latched is not None and addr[0] != latched[0]:
            self.stats.packets_wrong_source += 1
            return
        self.stats.packets_rtcp += 1
        if self._read_rtcp(data):
            self._rtcp_source = addr  # symmetric RTCP: answer where it comes from

    def _read_rtcp(self, data: bytes) -> bool:
        """Take the peer's SR (for LSR/DLSR) from a compound packet; False if not RTCP."""
        try:
            packets = parse_compound(data)
        except ValueError:
            self.stats.packets_invalid += 1
            return False
        reception = self._reception
        for packet in packets:
            if packet.packet_type == RTCP_SR and packet.ntp is not None:
                if reception is not None and packet.ssrc == reception.ssrc:
                    reception.sender_report(packet.ntp, time.monotonic())
        return True

    def _rtcp_destination(self) -> Any:
        if self._rtcp_source is not None:
            return self._rtcp_source
        remote = self._remote
        if remote is None:
            return None
        return (remote[0], remote[1] + 1, *remote[2:])  # RFC 3550 s.11: RTP port + 1

    def _send_rtcp(self, bye: bool = False) -> None:
        """Send a compound report (SR if we sent RTP since the last one, else RR)."""
        transport = self._rtcp_transport
        destination = self._rtcp_destination()
        if transport is None or destination is None:
            return
        rtp = self._rtp
        sender = None
        if rtp.packets_sent != self._packets_at_report:
            # The packet just sent started at this instant: its timestamp is the
            # stream's current one minus one packet.
            sender = SenderInfo(
                ntp=ntp_timestamp(time.time()),
                rtp_timestamp=(rtp.timestamp - self._ts_step) & 0xFFFFFFFF,
                packets=rtp.packets_sent,
                octets=rtp.octets_sent,
            )
            self._packets_at_report = rtp.packets_sent
        reception = self._reception
        blocks = [reception.report_block(time.monotonic())] if reception is not None else []
        try:
            self._rtcp_sock.sendto(compound(rtp.ssrc, self.cname, sender, blocks, bye), destination)
        except OSError:
            return  # best effort: RTCP never holds up the media
        self.stats.rtcp_sent += 1

    def _play_out_held(self) -> None:
        """One packet time while held: nothing on the wire (RFC 3264 s.5.1).

        Queued audio drains at the packet pace and pending key presses are
        dropped; the RTP timestamp runs on, the sequence number does not (no
        packet was sent, RFC 3550 s.5.1), and the next audio after resuming
        starts a talkspurt (marker bit).
        """
        self._dtmf_out.clear()
        del self._audio[: self._bytes_per_packet]
        self._idle = True
        self._rtp.advance(self._ts_step)

    def _send(self, packet: bytes, payload_size: int) -> None:
        remote = self._remote
        if remote is not None and self._transport is not None:
            try:
                self._sock.sendto(packet, remote)  # non-blocking; cheaper than the transport's
            except (BlockingIOError, InterruptedError):
                self.stats.send_errors += 1  # socket buffer full: drop, as UDP would
                return
            except OSError as exc:
                self._transport_error(exc)
                return
            stats = self.stats
            stats.packets_sent += 1
            stats.octets_sent += payload_size

    def _wake_waiters(self, force: bool = False) -> None:
        backlog = len(self._audio)
        waiting = []
        for max_bytes, future in self._waiters:
            if future.done():
                continue
            if force or backlog <= max_bytes:
                future.set_result(None)
            else:
                waiting.append((max_bytes, future))
        self._waiters = waiting

    def _fire_timeout(self) -> None:
        logger.warning(f"{self._log}no RTP received for {self._rtp_timeout:g} s")
        callback = self.on_timeout
        if callback is not None:
            try:
                callback()
            except Exception:
                self._log_error("error in on_timeout")

    # --- socket side ------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        stats = self.stats
        if is_rtcp(data):
            stats.packets_rtcp += 1
            if self._rtcp_transport is not None:
                self._read_rtcp(data)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            stats.packets_invalid += 1
            return
        payload_type = packet.payload_type
        if payload_type != self.payload_type and payload_type not in self._te_pts:
            stats.packets_unknown_pt += 1
            return
        latched = self._latched
        if latched is None:
            self._latch(addr)
        elif addr != latched:
            stats.packets_wrong_source += 1
            return
        self._rx_count += 1
        stats.packets_received += 1
        stats.octets_received += len(packet.payload)
        if self._rtcp_transport is not None:
            reception = self._reception
            if reception is None or reception.ssrc != packet.ssrc:  # a new stream
                reception = self._reception = ReceptionStats(packet.ssrc, self.codec.clock_rate)
            reception.update(packet.sequence_number, packet.timestamp, time.monotonic())
        if payload_type == self.payload_type:
            on_audio = self.on_audio
            if on_audio is not None:
                on_audio(self.codec.decode(packet.payload))
        else:
            key = self._dtmf_in.feed(packet)
            if key is not None:
                stats.dtmf_received += 1
                on_dtmf = self.on_dtmf
                if on_dtmf is not None:
                    on_dtmf(key)

    def _latch(self, addr: Any) -> None:
        self._latched = addr
        if tuple(addr[:2]) != self._sdp_addr:
            logger.info(
                f"{self._log}latching RTP to {addr[0]}:{addr[1]} "
                f"(SDP said {self._sdp_addr[0]}:{self._sdp_addr[1]})"
            )
        self._remote = addr

    def _on_connection_lost(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if not self._closed:  # the socket went away under us
            self._closed = True
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

    @staticmethod
    def _destination(remote_addr: tuple[str, int]) -> tuple[str, int] | None:
        host, port = remote_addr[0], remote_addr[1]
        if not port or host in ("", "0.0.0.0", "::"):
            return None
        return (host, port)
