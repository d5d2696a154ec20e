"""One call's RTP/RTCP media session, sans-IO: datagrams and ``now`` in, datagrams and events out.

:class:`MediaSession` composes the pure pieces of :mod:`pipecat_sip.rtp`:

- :class:`~pipecat_sip.rtp.packetizer.Packetizer`: queued PCM and key
  presses to one RTP packet per packet time (talkspurts, silence, hold);
- :class:`~pipecat_sip.rtp.latching.Latching`: which source is accepted
  and sent to (symmetric RTP);
- :class:`~pipecat_sip.rtp.liveness.Liveness`: the RTP timeout;
- :class:`~pipecat_sip.rtp.reports.RtcpReporter`: RTCP reports and
  reception statistics (RFC 3550 s.6);
- :class:`~pipecat_sip.rtp.dtmf.DtmfReceiver`: RFC 4733 events to keys;
- an optional jitter buffer (see :class:`JitterBuffer`);
- an optional :class:`~pipecat_sip.rtp.srtp.SrtpContext` (SRTP/SRTCP,
  RFC 3711): what is sent is protected last, what arrives is checked and
  decrypted first (after a cheap source check), see :class:`MediaSession`.

Its owner (the asyncio adapter :class:`pipecat_sip.media.RTPSession`, or a
test) calls :meth:`MediaSession.receive_rtp` and
:meth:`MediaSession.receive_rtcp` with each datagram and the time,
:meth:`MediaSession.on_tick` once per packet time of its pacing clock, and
sends the datagrams these return. What the owner should act on or log
comes out as events (:attr:`MediaSession.events`): :class:`AudioReceived`,
:class:`DtmfReceived`, :class:`RtpTimeout`, :class:`QualityReport`,
:class:`Notice`. The decoded
PCM of an audio packet without a jitter buffer is the return value of
:meth:`MediaSession.receive_rtp` instead (no event object per packet).

Nothing here reads a clock or a socket: ``now`` is seconds of a monotonic
clock, the wall clock for NTP timestamps is ``now + wall_offset``, and every
random value (SSRC, initial sequence number and timestamp, CNAME, RTCP
interval jitter) comes from the ``rng`` given, so a run is reproducible.
"""

import base64
import secrets
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipecat_sip.codecs import Codec
from pipecat_sip.rtp.budget import InputBudget
from pipecat_sip.rtp.dtmf import DtmfReceiver, describe_event, event_for_key
from pipecat_sip.rtp.jitterbuffer import JitterBuffer as AdaptiveJitterBuffer
from pipecat_sip.rtp.latching import Latching
from pipecat_sip.rtp.liveness import Liveness
from pipecat_sip.rtp.packet import RTP_HEADER, RtpPacket, RtpParseError
from pipecat_sip.rtp.packetizer import Packetizer
from pipecat_sip.rtp.plc import Concealer
from pipecat_sip.rtp.quality import CallQualityStats, QualityMonitor
from pipecat_sip.rtp.reports import RtcpReporter
from pipecat_sip.rtp.rtcp import ntp_timestamp
from pipecat_sip.rtp.sender import RtpSender
from pipecat_sip.rtp.srtp import SrtpContext, SrtpStats
from pipecat_sip.sdp import HOLD_ADDRESSES

__all__ = [
    "MAX_AHEAD_S",
    "MAX_PACKET_PTIMES",
    "MIN_PACKET_COST_S",
    "Address",
    "AudioReceived",
    "Datagram",
    "DtmfReceived",
    "Event",
    "JitterBuffer",
    "MediaSession",
    "Notice",
    "QualityReport",
    "RtpStats",
    "RtpTimeout",
    "is_hold_address",
]

Address = Any
"""A socket address: ``(host, port)``, or ``(host, port, flowinfo, scope_id)`` for IPv6."""

Datagram = tuple[bytes, Address, bool]
"""A datagram to send: ``(data, destination, is_rtcp)``; RTCP goes out on the RTCP socket."""

MAX_AHEAD_S = 0.3
"""Most audio, seconds, a call accepts ahead of real time (a burst after a
network stall); packets beyond it are dropped and counted (``packets_over_rate``)."""

MAX_PACKET_PTIMES = 6
"""Largest payload accepted, in packet times of the codec (120 ms at 20 ms);
larger ones are dropped and counted (``packets_too_large``)."""

MAX_RTCP_RATE = 20
"""Most RTCP datagrams read per second and call (a burst of as many at once); the rest
are dropped unread and counted (``rtcp_over_rate``). RFC 3550 s.6.2 has a peer
report every few seconds; this bounds the parsing a flood can cause."""

MIN_PACKET_COST_S = 0.01
"""What any accepted packet costs of the input budget at least, seconds (10 ms,
the shortest usual ptime): many tiny packets are bounded too."""

_HOLD_HOSTS = HOLD_ADDRESSES | {""}  # and no host at all
_unpack_header = RTP_HEADER.unpack_from
_NOTHING: tuple = ()


def is_hold_address(addr: tuple[str, int]) -> bool:
    """True for an address RTP must not go to: port 0 or an unspecified host (RFC 3264 s.8.4)."""
    return not addr[1] or addr[0] in _HOLD_HOSTS


class JitterBuffer(Protocol):
    """What :class:`MediaSession` needs of a jitter buffer (the slot's fixed interface)."""

    def put(self, packet: RtpPacket, now: float) -> None:
        """Take an accepted packet (audio, comfort noise or telephone-event) at ``now``, s."""

    def pop(self, now: float) -> list[RtpPacket | None]:
        """The packets due at ``now`` (one call per media-clock tick), in play-out order.

        None stands for one packet time lost: conceal it.
        """


@dataclass(slots=True)
class RtpStats:
    """Counters of one RTP session.

    Attributes:
        packets_sent: RTP packets sent (audio, silence and telephone-event);
            those the socket then refused are also in ``send_errors``.
        octets_sent: Payload octets sent.
        packets_received: Valid RTP packets accepted (audio, comfort noise
            and telephone-event).
        octets_received: Payload octets accepted.
        packets_invalid: Datagrams that were not valid RTP (or RTCP, on the
            RTCP port).
        packets_rtcp: RTCP datagrams received (on the RTCP port, or muxed on the
            RTP port, RFC 5761).
        rtcp_sent: RTCP compound packets sent (reports, and the BYE on close).
        packets_wrong_source: Packets dropped because they came from another
            address than the latched one.
        packets_unknown_pt: Packets of a payload type we did not negotiate.
        dtmf_sent: Key presses sent (RFC 4733 or in-band).
        dtmf_received: Key presses received.
        dtmf_ignored: Key presses received that Pipecat has no key for
            (``A``-``D``, flash, other events).
        deadlines_skipped: Packet times skipped because the loop ran late.
        send_errors: Errors the socket reported on sending.
        errors: Exceptions caught in callbacks (ours or the user's).
        packets_over_rate: Packets dropped because the call was receiving
            faster than real time (more than :data:`MAX_AHEAD_S` ahead).
        packets_too_large: Packets dropped for a payload over
            :data:`MAX_PACKET_PTIMES` packet times.
        packets_on_probation: Packets of a new source dropped while it
            proved itself (see :mod:`pipecat_sip.rtp.latching`).
        rtcp_truncated: RTCP compounds of which only the first packets were read.
        rtcp_over_rate: RTCP datagrams dropped unread, over
            :data:`MAX_RTCP_RATE` a second.
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
    dtmf_ignored: int = 0
    deadlines_skipped: int = 0
    send_errors: int = 0
    errors: int = 0
    packets_over_rate: int = 0
    packets_too_large: int = 0
    packets_on_probation: int = 0
    rtcp_truncated: int = 0
    rtcp_over_rate: int = 0


@dataclass(slots=True)  # not frozen: made once a packet time per call, and frozen's
class AudioReceived:  # __init__ costs 2.5x (object.__setattr__ per field)
    """PCM for the owner to play, from the jitter buffer's play-out.

    Attributes:
        pcm: PCM16 little-endian mono at the codec's sample rate, one
            packet's worth.
        concealed: True when it stands in for a lost packet (concealment
            or silence).
    """

    pcm: bytes
    concealed: bool = False


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A key press received (RFC 4733), once per press.

    Attributes:
        key: ``"0"``-``"9"``, ``"*"`` or ``"#"``.
    """

    key: str


@dataclass(frozen=True, slots=True)
class RtpTimeout:
    """Nothing came from the peer for the RTP timeout (reported once).

    Attributes:
        timeout_s: The timeout, seconds.
    """

    timeout_s: float


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The call's quality figures, every ``quality_interval_s`` and once at close.

    Attributes:
        stats: The figures (see :class:`~pipecat_sip.rtp.quality.CallQualityStats`;
            ``stats.final`` is True for the one at close).
    """

    stats: CallQualityStats


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the owner may log: the session logs nothing itself.

    Attributes:
        code: A fixed short name of the kind of notice ("latched",
            "remote", "dtmf_ignored", ...), for counting repeats.
        text: The message, without a call prefix.
        level: "info" or "warning".
    """

    code: str
    text: str
    level: str = "info"


Event = AudioReceived | DtmfReceived | RtpTimeout | QualityReport | Notice
"""The events a :class:`MediaSession` reports."""


def _format_addr(addr: Address) -> str:
    host = addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class MediaSession:
    """The pure media session of one call: RTP sending and receiving, RTCP, timeout.

    Sending: :meth:`queue_audio` queues PCM16 at :attr:`sample_rate`; each
    :meth:`on_tick` returns at most one packet per packet time due (see
    :class:`~pipecat_sip.rtp.packetizer.Packetizer`) addressed to
    :attr:`remote_addr`: the SDP address until latching, then the
    latched source. While :attr:`sending` is False (hold) nothing goes on
    the wire but queued audio drains at the packet pace. A session made
    with ``confirmed=False`` sends nothing at all (RTP or RTCP, and its
    queue waits) until :meth:`confirm` or accepted RTP from the peer.

    Receiving: :meth:`receive_rtp` parses a datagram, drops junk, unknown
    payload types and packets from sources latching refuses (each counted
    in :attr:`stats`; the policy is in :mod:`pipecat_sip.rtp.latching`:
    the SDP address always wins, another source only while the SDP
    address is silent, from a plausible host, after a short run of
    consecutive packets), and returns the decoded PCM of an
    audio packet (without a jitter buffer), or hands the packet to the
    jitter buffer. Telephone-events become :class:`DtmfReceived` events,
    once per key press.

    RTCP (``rtcp=True``): a compound SR/RR + SDES CNAME about every
    ``rtcp_interval_s``, to the RTP destination's port + 1 until RTCP
    arrives from the peer, then back to that source; a BYE from
    :meth:`close`. Received SRs feed LSR/DLSR.

    Timeout: :class:`RtpTimeout` once, when nothing (RTP or RTCP) came from
    the peer for ``rtp_timeout_s``, whatever the direction (RTCP goes on
    during hold); counted from :meth:`start` or, for a session started
    unconfirmed, from :meth:`confirm` or the peer's first packet.

    Input bounds: a call accepts at most :data:`MAX_AHEAD_S` of audio ahead
    of real time (a token bucket; telephone-events and comfort noise have
    their own) and payloads up to :data:`MAX_PACKET_PTIMES` packet times;
    the rest is dropped and counted. RTCP is read only from the peer's host
    (:meth:`~pipecat_sip.rtp.latching.Latching.rtcp_allowed`) and only its
    first :data:`~pipecat_sip.rtp.reports.MAX_RTCP_PACKETS` packets.

    Jitter buffer slot: with ``jitter_buffer`` given, every accepted packet
    of the audio, comfort-noise and telephone-event payload types goes to
    its ``put(packet, now)``, and each tick decodes what ``pop(now)``
    returns into :class:`AudioReceived` events (None: one packet time
    concealed with ``codec.conceal(samples)`` when the codec has it, else
    silence; comfort noise: silence; telephone-events: keys). A codec with
    in-band FEC (Opus) rebuilds a lost packet from the next one when the
    buffer already holds it (``peek()``), before concealment is tried.

    Call quality: a :class:`~pipecat_sip.rtp.quality.QualityMonitor` reads
    the report blocks about our stream in the peer's SR/RR (loss, jitter,
    RTT from LSR/DLSR, RFC 3550 s.6.4.1) and, with our reception statistics
    and the jitter buffer's figures, gives
    :class:`~pipecat_sip.rtp.quality.CallQualityStats` with an E-model MOS:
    a :class:`QualityReport` event every ``quality_interval_s`` (0: none) and
    one at :meth:`close`; :attr:`quality` is the latest.

    SRTP (``srtp`` given, RFC 3711): every RTP packet and RTCP compound
    (the BYE too) is protected just before it is returned for sending, so
    nothing is protected while the call is held or unconfirmed. A received
    datagram's source is checked first (the latched source's host, or
    before latching a plausible host, as for RTCP), then it is
    authenticated, replay-checked and decrypted, and only then parsed: so
    latching, the RTP timeout and the statistics see authenticated packets
    only. Drops are counted in :attr:`srtp_stats` (never one event per
    packet: a :class:`Notice` ``"srtp_drop"`` at the 1st, 10th, 100th...
    drop).

    Args:
        codec: The negotiated codec (``codec.for_stream()`` is used when it
            has one: a stateful codec gets its own encoder and decoder).
        remote_addr: The peer's RTP address from its SDP, ``(host, port)``;
            port 0 or an unspecified host means "do not send" (hold).
        payload_type: The negotiated audio payload type; default the codec's.
        telephone_event_pt: The negotiated telephone-event payload type, or None.
        extra_telephone_event_pts: More payload types to accept
            telephone-events on (e.g. those of the peer's offer).
        comfort_noise_pt: The negotiated comfort-noise payload type (RFC 3389,
            13), or None: CN packets are then dropped as unknown.
        ptime_ms: Packet time, ms.
        send_silence: Send encoded silence when nothing is queued (else send
            nothing and let the timestamp run on).
        rtp_timeout_s: Seconds without accepted RTP before :class:`RtpTimeout`;
            0 disables it.
        rtcp: Send RTCP reports and read the peer's.
        rtcp_interval_s: Mean seconds between our reports.
        cname: Our RTCP CNAME; default a random one (RFC 7022).
        rng: ``random.Random``-like source of every random value; default
            ``secrets.SystemRandom()``.
        jitter_buffer: A :class:`JitterBuffer`, or None to deliver each
            audio packet as it arrives.
        wall_offset: Wall clock minus ``now``, seconds (for NTP timestamps).
        signaling_address: The host (or ``(host, port)``) the call's SIP
            signalling came from: with ``latching="signaling"`` RTP may
            latch to a source on it or on the SDP ``c=`` host.
        latching: The latching policy, ``"signaling"``, ``"any"`` or
            ``"off"`` (see :mod:`pipecat_sip.rtp.latching`).
        confirmed: False: send nothing (RTP or RTCP) until :meth:`confirm`
            (the call's ACK) or an accepted RTP packet from the peer shows
            it owns the address; the RTP timeout counts from then.
        srtp: The call's SRTP context (from SDES, :mod:`pipecat_sip.sdes`),
            or None for plain RTP.
        quality_interval_s: Seconds between :class:`QualityReport` events
            while the session runs; 0 (default) sends only the one at close.

    Raises:
        ValueError: A payload type is out of range, ``ptime_ms`` does not
            fit the codec's rates, or an unknown latching policy.

    Example:
        >>> import random
        >>> from pipecat_sip.codecs import PCMU
        >>> s = MediaSession(codec=PCMU, remote_addr=("192.0.2.7", 4000), rng=random.Random(1))
        >>> s.start(0.0)
        >>> [(len(data), addr, rtcp) for data, addr, rtcp in s.on_tick(0.02)]
        [(172, ('192.0.2.7', 4000), False)]
    """

    def __init__(
        self,
        *,
        codec: Codec,
        remote_addr: tuple[str, int],
        payload_type: int | None = None,
        telephone_event_pt: int | None = None,
        extra_telephone_event_pts: Iterable[int] = (),
        comfort_noise_pt: int | None = None,
        ptime_ms: int = 20,
        send_silence: bool = True,
        rtp_timeout_s: float = 30.0,
        rtcp: bool = True,
        rtcp_interval_s: float = 5.0,
        cname: str | None = None,
        rng: Any = None,
        jitter_buffer: JitterBuffer | None = None,
        wall_offset: float = 0.0,
        signaling_address: str | tuple | None = None,
        latching: str = "signaling",
        confirmed: bool = True,
        srtp: SrtpContext | None = None,
        quality_interval_s: float = 0.0,
    ):
        rng = rng or secrets.SystemRandom()
        self.codec = codec
        """The negotiated codec, as given."""
        for_stream = getattr(codec, "for_stream", None)
        if callable(for_stream):
            # A stream object already set up for the peer's fmtp (Opus: its FEC,
            # bitrate, band) keeps that set-up in the copy made here.
            peer_fmtp = getattr(codec, "peer_fmtp", None)
            stream = for_stream(peer_fmtp) if isinstance(peer_fmtp, str) else for_stream()
        else:
            stream = codec
        self._stream_codec = stream
        self.payload_type = codec.payload_type if payload_type is None else payload_type
        te_pts = {*extra_telephone_event_pts}
        if telephone_event_pt is not None:
            te_pts.add(telephone_event_pt)
        te_pts.discard(self.payload_type)
        extra = () if comfort_noise_pt is None else (comfort_noise_pt,)
        for pt in (self.payload_type, *te_pts, *extra):
            if not 0 <= pt <= 127:
                raise ValueError(f"RTP payload type {pt} is out of range 0-127")
        self._te_pts = frozenset(te_pts)
        self._cn_pt = comfort_noise_pt if comfort_noise_pt != self.payload_type else None
        self.ptime_ms = ptime_ms
        self.sample_rate = codec.sample_rate
        """Rate of the PCM sent and received, Hz."""

        self._rtp = RtpSender(self.payload_type, codec.clock_rate, rng=rng)
        self._packetizer = Packetizer(
            self._rtp,
            stream,
            ptime_ms=ptime_ms,
            telephone_event_pt=telephone_event_pt,
            send_silence=send_silence,
            stateless=stream is codec,
        )
        self._next_packet = self._packetizer.next_packet
        self.samples_per_packet = self._packetizer.samples_per_packet
        """PCM samples per packet."""
        self._decode = stream.decode
        conceal = getattr(stream, "conceal", None)
        self._conceal = conceal if callable(conceal) else None
        decode_fec = getattr(stream, "decode_fec", None)
        own_fec = getattr(type(stream), "decode_fec", None) is not Codec.decode_fec
        self._decode_fec = decode_fec if callable(decode_fec) and own_fec else None
        has_fec = getattr(stream, "has_fec", None)
        self._has_fec = has_fec if callable(has_fec) else None
        self.fec_recovered = 0
        """Lost packets rebuilt from the next packet's in-band FEC (Opus)."""
        self._silence_pcm = bytes(2 * self.samples_per_packet)
        try:
            ptime_bytes = len(codec.silence(self.samples_per_packet))
        except Exception:
            ptime_bytes = 0
        ptime_bytes = ptime_bytes or self.samples_per_packet
        if getattr(codec, "constant_bitrate", True):
            # The payload's size tells its audio time (G.711, G.722).
            self._max_payload = MAX_PACKET_PTIMES * ptime_bytes
            self._seconds_per_byte = ptime_ms / 1000 / ptime_bytes
        else:
            # Variable bitrate (Opus): sizes tell nothing of time; each packet counts
            # one packet time, and a payload may reach the codec's largest frame
            # (1275 bytes per 20 ms, RFC 6716 s.3.4).
            self._max_payload = MAX_PACKET_PTIMES * max(ptime_bytes, 1275 * ptime_ms // 20)
            self._seconds_per_byte = 0.0
        # A variable-bitrate codec may say how long a packet is (Opus: its TOC byte, up
        # to 120 ms whatever the ptime, RFC 7587 s.4.2): the budget charges that time.
        seconds = getattr(codec, "packet_seconds", None)
        self._packet_seconds = None if self._seconds_per_byte or not callable(seconds) else seconds
        self._min_cost = max(MIN_PACKET_COST_S, 0.0 if self._seconds_per_byte else ptime_ms / 1000)
        self._audio_budget = InputBudget(MAX_AHEAD_S)
        self._event_budget = InputBudget(MAX_AHEAD_S)  # telephone-event and comfort noise
        self._rtcp_budget = InputBudget(1.0)  # one token a second, MAX_RTCP_RATE a datagram
        self._over_rate = False  # dropping a flood: noticed once per run

        self._sdp_addr = tuple(remote_addr[:2])
        self._remote: Address | None = None if is_hold_address(remote_addr) else self._sdp_addr
        if isinstance(signaling_address, tuple):
            signaling_address = signaling_address[0]
        self._latch = Latching(remote_addr, policy=latching, signaling_host=signaling_address)
        self._source_heard = 0.0  # when the latched source last sent an accepted packet
        self._liveness = Liveness(rtp_timeout_s)
        self._dtmf_in = DtmfReceiver()
        self._monitor = QualityMonitor(
            codec.encoding_name,
            clock_rate=codec.clock_rate,
            ptime_ms=ptime_ms,
            ssrc=self._rtp.ssrc,
            plc=False,
        )
        self._quality: CallQualityStats | None = None
        self._quality_interval = max(0.0, float(quality_interval_s))
        self._next_quality = float("inf")
        self._jitter: JitterBuffer | None = None
        self._plc: Concealer | None = None
        self.set_jitter_buffer(jitter_buffer)
        self.cname = cname or (
            base64.urlsafe_b64encode(rng.getrandbits(96).to_bytes(12, "big")).decode()
            + "@pipecat-sip"
        )
        """Our RTCP CNAME."""
        self._reporter = (
            RtcpReporter(
                self._rtp,
                self.cname,
                clock_rate=codec.clock_rate,
                ts_step=self._packetizer.ts_step,
                interval_s=rtcp_interval_s,
                rng=rng,
            )
            if rtcp
            else None
        )
        self._rtcp_source: Address | None = None  # where the peer's RTCP comes from
        self.wall_offset = wall_offset
        """Wall clock minus ``now``, seconds: NTP timestamps are of ``now + wall_offset``."""

        self._sending = True
        self._receiving = True
        self._started = False
        self._closed = False
        self._confirmed = bool(confirmed)
        self._active = False  # started, confirmed and not closed: the clock's ticks count
        self.stats = RtpStats()
        """The session's counters."""
        self._srtp = srtp
        self._srtp_drops = 0  # received datagrams SRTP dropped (for the notices' pace)
        self._srtp_notice_at = 1
        self.events: deque[Event] = deque()
        """Events not taken yet, oldest first (``popleft()`` them, or :meth:`next_event`)."""

    # --- state --------------------------------------------------------------------------

    @property
    def ssrc(self) -> int:
        """Our SSRC."""
        return self._rtp.ssrc

    @property
    def rtp(self) -> RtpSender:
        """Our stream's sequence number, timestamp and counts."""
        return self._rtp

    @property
    def telephone_event_pt(self) -> int | None:
        """The telephone-event payload type we send key presses with (None: in-band)."""
        return self._packetizer.telephone_event_pt

    @property
    def send_silence(self) -> bool:
        """Send silence packets when no audio is queued (else send nothing)."""
        return self._packetizer.send_silence

    @send_silence.setter
    def send_silence(self, value: bool) -> None:
        self._packetizer.send_silence = bool(value)

    @property
    def rtp_timeout_s(self) -> float:
        """Seconds without accepted RTP before :class:`RtpTimeout`; 0 disables."""
        return self._liveness.timeout_s

    @rtp_timeout_s.setter
    def rtp_timeout_s(self, value: float) -> None:
        self._liveness.timeout_s = max(0.0, float(value))

    @property
    def sending(self) -> bool:
        """Whether packets go on the wire (False while the peer holds the call)."""
        return self._sending

    @property
    def receiving(self) -> bool:
        """Whether the negotiated direction has the peer send RTP to us."""
        return self._receiving

    @property
    def sdp_address(self) -> tuple[str, int]:
        """The peer's RTP address from its SDP, ``(host, port)``."""
        return self._sdp_addr

    @property
    def remote_addr(self) -> Address | None:
        """Where RTP goes now: the SDP address, or the latched source; None on hold."""
        return self._remote

    @property
    def latched(self) -> bool:
        """True once a received packet fixed the peer's source address."""
        return self._latch.source is not None

    @property
    def backlog_bytes(self) -> int:
        """PCM bytes queued and not yet sent."""
        return self._packetizer.backlog_bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def srtp(self) -> SrtpContext | None:
        """The SRTP context packets are protected with, or None (plain RTP)."""
        return self._srtp

    @property
    def srtp_stats(self) -> SrtpStats | None:
        """The SRTP context's counters (protected, authenticated, dropped), or None."""
        return self._srtp.stats if self._srtp is not None else None

    def set_srtp(self, srtp: SrtpContext | None) -> None:
        """Protect with another SRTP context from now on (a re-offer changed our key or suite).

        A re-offer that only changes the peer's key is
        :meth:`SrtpContext.update_remote_key` on :attr:`srtp` instead: our
        outbound state then goes on.
        """
        self._srtp = srtp

    def next_event(self) -> Event | None:
        """The oldest event not taken yet, or None."""
        return self.events.popleft() if self.events else None

    # --- control ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start the stream at ``now``: the RTP timeout counts, the first RTCP report is due.

        Idempotent. Before it, :meth:`on_tick` sends nothing.
        """
        if self._started or self._closed:
            return
        self._started = True
        if self._confirmed:
            self._begin(now)

    @property
    def confirmed(self) -> bool:
        """Whether the peer has shown it owns its address (ACK, or RTP from it)."""
        return self._confirmed

    def confirm(self, now: float) -> None:
        """The peer owns its address (the call's ACK): start sending, count the timeout from now.

        Idempotent; before :meth:`start` it takes effect at :meth:`start`.
        """
        if self._confirmed:
            return
        self._confirmed = True
        if self._started and not self._closed:
            self._begin(now)

    def _begin(self, now: float) -> None:
        """Started and confirmed: the clock's ticks send, the timeout and RTCP run."""
        self._active = True
        self._liveness.start(now)
        if self._reporter is not None:
            self._reporter.start(now)
        self._monitor.snapshot(now)  # the first interval starts now
        if self._quality_interval:
            self._next_quality = now + self._quality_interval

    def close(self, now: float) -> Sequence[Datagram]:
        """End the session (idempotent): drop the queues, return the RTCP BYE to send.

        A session that ran reports its last :class:`QualityReport` (``final``).

        Returns:
            The compound RR/SR + SDES + BYE (RFC 3550 s.6.6) when RTCP is on
            and the session had started, else nothing.
        """
        if self._closed:
            return _NOTHING
        was_active = self._active
        self._closed = True
        self._active = False
        self._packetizer.clear()
        if was_active:
            self._report_quality(now, final=True)
        if not self._started or not self._confirmed:
            return _NOTHING  # nothing to an address the peer has not shown it owns
        return self._rtcp_report(now, bye=True)

    def queue_audio(self, pcm: bytes) -> None:
        """Queue PCM16 little-endian mono at :attr:`sample_rate` (ignored once closed).

        Raises:
            ValueError: ``pcm`` is not whole 16-bit samples.
        """
        if len(pcm) & 1:
            raise ValueError(f"PCM16 data has an odd length ({len(pcm)} bytes)")
        if not self._closed:
            self._packetizer.queue_audio(pcm)

    def clear_audio(self) -> None:
        """Drop all queued audio now (barge-in): the next packet is silence."""
        self._packetizer.clear_audio()

    def queue_dtmf(self, key: str, duration_ms: int = 100) -> None:
        """Send one key press after any still being sent (ignored once closed).

        RFC 4733 events when a telephone-event payload type is set (audio is
        held back meanwhile), otherwise an in-band Q.23 tone behind the audio.

        Args:
            key: ``"0"``-``"9"``, ``"*"``, ``"#"`` or ``"A"``-``"D"``.
            duration_ms: Length of the press, ms (1-8000).

        Raises:
            ValueError: Unknown key or a duration out of range.
        """
        if self._closed:
            event_for_key(key)  # still validate
            return
        self._packetizer.queue_dtmf(key, duration_ms)
        self.stats.dtmf_sent += 1

    def set_direction(self, *, send: bool, receive: bool, now: float) -> None:
        """Follow the negotiated direction (RFC 3264 s.5.1): hold and resume.

        With ``send`` False nothing goes on the wire, queued audio drains at
        the packet pace and key presses are dropped; the RTP timestamp runs
        on. The RTP timeout runs in every direction state: a held call
        still gets RTCP from a live peer (RFC 3550 s.6, RFC 3264 s.5.1).

        Args:
            send: Put packets on the wire.
            receive: Expect packets from the peer.
            now: The time, seconds (monotonic).
        """
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
        self._packetizer.telephone_event_pt = payload_type

    def update_remote(self, remote_addr: tuple[str, int]) -> None:
        """Send to a new SDP address (re-INVITE) and latch again on the next packets."""
        self._sdp_addr = tuple(remote_addr[:2])
        self._remote = None if is_hold_address(remote_addr) else self._sdp_addr
        self._latch.reset(remote_addr)
        self._rtcp_source = None
        self.events.append(
            Notice("remote", f"RTP remote address now {_format_addr(self._sdp_addr)}")
        )

    # --- receiving ----------------------------------------------------------------------

    def receive_rtp(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """Take one datagram from the RTP port.

        RTCP muxed on the port (RFC 5761) is read as RTCP; junk, unknown
        payload types and packets from another source than the latched one
        are counted and dropped.

        Args:
            data: The datagram.
            addr: Its source address.
            now: Arrival time, seconds (monotonic).

        Returns:
            The decoded PCM16 of an audio packet to play now (no jitter
            buffer), else None. Key presses and notices go to :attr:`events`.
        """
        stats = self.stats
        size = len(data)
        if size >= 2 and 192 <= data[1] <= 223:  # RTCP on the RTP port (RFC 5761 s.4)
            self._read_rtcp(data, addr, now, muxed=True)
            return None
        if size < 12:
            stats.packets_invalid += 1
            return None
        srtp = self._srtp
        if srtp is not None:
            # The source first (one comparison for a stranger), then the crypto.
            if addr != self._latch.source and not self._latch.rtcp_allowed(addr[0]):
                stats.packets_wrong_source += 1
                return None
            data = srtp.unprotect_rtp(data)
            if data is None:
                self._srtp_dropped()
                return None
        first, second, seq, timestamp, ssrc = _unpack_header(data)
        packet = None
        if first == 0x80:  # V=2, no padding, extension or CSRC: the common case
            payload = data[12:]
        else:
            try:
                packet = RtpPacket.parse(data)
            except RtpParseError:
                stats.packets_invalid += 1
                return None
            payload = packet.payload
        pt = second & 0x7F
        audio = pt == self.payload_type
        if not audio and pt not in self._te_pts and pt != self._cn_pt:
            stats.packets_unknown_pt += 1
            return None
        octets = len(payload)
        if octets > self._max_payload:
            stats.packets_too_large += 1
            return None
        if addr != self._latch.source and not self._admit(addr, ssrc, seq, now):
            return None
        if audio:
            cost = octets * self._seconds_per_byte
            if self._packet_seconds is not None:
                cost = self._packet_seconds(payload) or 0.0
            budget = self._audio_budget
        else:
            cost = MIN_PACKET_COST_S
            budget = self._event_budget
        floor = self._min_cost if audio else MIN_PACKET_COST_S
        if not budget.take(cost if cost > floor else floor, now):
            stats.packets_over_rate += 1
            if not self._over_rate:
                self._over_rate = True
                self.events.append(
                    Notice(
                        "over_rate",
                        f"RTP arriving faster than real time: dropping what is more than "
                        f"{MAX_AHEAD_S * 1000:g} ms ahead",
                        "warning",
                    )
                )
            return None
        self._over_rate = False
        if not self._confirmed:
            self.confirm(now)  # RTP from the peer: it owns the address
        self._source_heard = now
        self._liveness.last_heard = now
        stats.packets_received += 1
        stats.octets_received += octets
        reporter = self._reporter
        if reporter is not None:
            reception = reporter.reception
            if reception is None:
                reception = reporter.track(ssrc)
            elif reception.ssrc != ssrc:
                reception = reporter.switch(ssrc, seq)  # None until confirmed
            if reception is not None:
                reception.update(seq, timestamp, now, audio or pt == self._cn_pt)  # events: untimed
        jitter = self._jitter
        if jitter is not None:
            if packet is None:
                packet = RtpPacket(pt, seq, timestamp, ssrc, bytes(payload), bool(second & 0x80))
            jitter.put(packet, now)
            return None
        if audio:
            return self._decode(payload)
        if pt != self._cn_pt:
            if packet is None:
                packet = RtpPacket(pt, seq, timestamp, ssrc, bytes(payload), bool(second & 0x80))
            self._feed_dtmf(packet)
        return None

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram from the RTCP port (RFC 3550 s.6).

        The source is checked first (the host of the latched RTP source, or
        before latching a plausible one: see
        :meth:`~pipecat_sip.rtp.latching.Latching.rtcp_allowed`), so a
        stranger's datagram costs one comparison; then at most
        :data:`~pipecat_sip.rtp.reports.MAX_RTCP_PACKETS` packets are read.
        An SR of our source feeds LSR/DLSR, valid RTCP keeps the call alive
        (the RTP timeout), and later reports go back to ``addr``
        (symmetric RTCP).

        Args:
            data: The datagram.
            addr: Its source address.
            now: Arrival time, seconds (monotonic).
        """
        self._read_rtcp(data, addr, now, muxed=False)

    def _read_rtcp(self, data: bytes, addr: Address, now: float, muxed: bool) -> None:
        stats = self.stats
        if not self._latch.rtcp_allowed(addr[0]):
            stats.packets_wrong_source += 1
            return
        if not self._rtcp_budget.take(1.0 / MAX_RTCP_RATE, now):
            stats.rtcp_over_rate += 1  # a flood: not even authenticated or parsed
            return
        if self._srtp is not None:  # SRTCP (RFC 3711 s.3.4), after the host check
            data = self._srtp.unprotect_rtcp(data)
            if data is None:
                self._srtp_dropped()
                return
        stats.packets_rtcp += 1
        reporter = self._reporter
        if reporter is None:
            return
        truncated = reporter.truncated
        if reporter.read(data, now):
            # The peer's report blocks about our stream: loss, jitter, RTT (LSR/DLSR).
            self._monitor.on_rtcp(
                reporter.packets,
                ntp_timestamp(now + self.wall_offset),
                now,
                sent_lsr=reporter.sent_lsr,
            )
            if not muxed:
                self._rtcp_source = addr
            if self._confirmed:
                self._liveness.last_heard = now
        else:
            stats.packets_invalid += 1
        if reporter.truncated != truncated:
            stats.rtcp_truncated += 1

    def _admit(self, addr: Address, ssrc: int, seq: int, now: float) -> bool:
        """A valid packet from another source than the latched one: latch, or drop it."""
        latch = self._latch
        probation = latch.on_probation
        previous = latch.source
        if not latch.offer(addr, ssrc, seq, now, self._source_heard):
            if latch.on_probation != probation:
                self.stats.packets_on_probation += 1
            else:
                self.stats.packets_wrong_source += 1
            return False
        source = latch.source
        self._remote = source
        if latch.sdp_heard:
            if previous is not None:
                self.events.append(
                    Notice("latched", f"RTP back to the SDP address {_format_addr(source)}")
                )
        else:
            self.events.append(
                Notice(
                    "latched",
                    f"latching RTP to {_format_addr(source)} "
                    f"(SDP said {_format_addr(self._sdp_addr)})",
                )
            )
        return True

    def _srtp_dropped(self) -> None:
        """Count a datagram SRTP refused; a notice at the 1st, 10th, 100th... only."""
        self._srtp_drops += 1
        if self._srtp_drops < self._srtp_notice_at:
            return
        self._srtp_notice_at *= 10
        s = self._srtp.stats if self._srtp is not None else None
        detail = (
            f": {s.auth_failures} failed authentication, {s.replays} replayed, {s.other} other"
            if s is not None
            else ""
        )
        self.events.append(
            Notice(
                "srtp_drop",
                f"SRTP dropped {self._srtp_drops} received packet(s) so far{detail}",
                "warning",
            )
        )

    def _feed_dtmf(self, packet: RtpPacket) -> None:
        receiver = self._dtmf_in
        ignored = receiver.ignored_events
        key = receiver.feed(packet)
        if key is not None:
            self.stats.dtmf_received += 1
            self.events.append(DtmfReceived(key))
        elif receiver.ignored_events != ignored:
            self.stats.dtmf_ignored += 1
            event = receiver.last_ignored_event or 0
            self.events.append(
                Notice(
                    "dtmf_ignored",
                    f"ignoring telephone-event {event} ({describe_event(event)}): "
                    "Pipecat's keypad has no such key",
                )
            )

    # --- the clock side -------------------------------------------------------------------

    def on_tick(self, now: float, sends: int = 1, skipped: int = 0) -> Sequence[Datagram]:
        """One deadline of the pacing clock: the datagrams to send now.

        Args:
            now: The time, seconds (monotonic).
            sends: Packet times due at this tick (more than 1 when the clock
                ran late: it sends a short burst).
            skipped: Older packet times passed over unsent; the RTP timestamp
                moves on over them.

        Returns:
            ``(data, destination, is_rtcp)`` tuples: RTP packets (at most
            ``sends``) and, when due, an RTCP report. Events (timeout,
            jitter-buffer play-out) go to :attr:`events`.
        """
        if not self._active:
            return _NOTHING
        if skipped:
            self._packetizer.skip(skipped)
            self.stats.deadlines_skipped += skipped
        out: Any = _NOTHING
        remote = self._remote
        if self._sending and remote is not None:
            packet = self._next_packet()
            if packet is not None:
                stats = self.stats
                stats.packets_sent += 1
                stats.octets_sent += len(packet) - 12
                srtp = self._srtp
                if srtp is not None:
                    packet = srtp.protect_rtp(packet)  # last, just before the wire
                if packet is not None:
                    out = [(packet, remote, False)]
            if sends > 1:
                out = self._burst(out, sends - 1, remote)
        else:
            for _ in range(sends):
                self._packetizer.hold_tick()
        if self._jitter is not None:
            # One play-out per packet time due, as one packet is sent per packet
            # time: a late tick popping once left the buffer a frame behind, and
            # after a few the buffer took the lag for missed ticks and dropped
            # the packets of the slots it skipped (seen under load: 11% late).
            for _ in range(sends):
                self._play_out(now)
        reporter = self._reporter
        if reporter is not None and now >= reporter.next_report:
            report = self._rtcp_report(now)
            if report:
                out = [*out, *report]
        if now >= self._next_quality:
            self._next_quality = now + self._quality_interval
            self._report_quality(now)
        live = self._liveness
        if live.timeout_s and now - live.last_heard >= live.timeout_s and live.check(now):
            self.events.append(RtpTimeout(live.timeout_s))
        return out

    def _burst(self, out: Any, count: int, remote: Address) -> Any:
        """The packets after the first of a late tick."""
        packetizer = self._packetizer
        stats = self.stats
        srtp = self._srtp
        for _ in range(count):
            packet = packetizer.next_packet()
            if packet is not None:
                stats.packets_sent += 1
                stats.octets_sent += len(packet) - 12
                if srtp is not None:
                    packet = srtp.protect_rtp(packet)
                    if packet is None:
                        continue  # counted in srtp.stats.other
                if out is _NOTHING:
                    out = []
                out.append((packet, remote, False))
        return out

    def _rtcp_report(self, now: float, bye: bool = False) -> Sequence[Datagram]:
        reporter = self._reporter
        if reporter is None:
            return _NOTHING
        data = reporter.report(now, now + self.wall_offset, bye=bye)
        if self._srtp is not None:  # SRTCP: the whole compound (RFC 3711 s.3.4)
            data = self._srtp.protect_rtcp(data)
            if data is None:
                return _NOTHING
        destination = self._rtcp_source
        if destination is None:
            remote = self._remote
            if remote is None:
                return _NOTHING
            destination = (remote[0], remote[1] + 1, *remote[2:])  # RFC 3550 s.11: RTP port + 1
        self.stats.rtcp_sent += 1
        return [(data, destination, True)]

    # --- call quality ---------------------------------------------------------------------

    @property
    def quality(self) -> CallQualityStats | None:
        """The latest quality figures reported (periodic or final), or None before the first."""
        return self._quality

    @property
    def quality_monitor(self) -> QualityMonitor:
        """The monitor that reads the peer's reports (RTT, its view of our stream)."""
        return self._monitor

    @property
    def quality_interval_s(self) -> float:
        """Seconds between :class:`QualityReport` events (0: only the one at close)."""
        return self._quality_interval

    def set_quality_interval(self, seconds: float, now: float) -> None:
        """Report quality every ``seconds`` from ``now`` on (0: only at close).

        Raises:
            ValueError: ``seconds`` is negative or not finite.
        """
        seconds = float(seconds)
        if not 0.0 <= seconds < float("inf"):
            raise ValueError(f"quality interval must be >= 0 s, got {seconds}")
        self._quality_interval = seconds
        self._next_quality = now + seconds if seconds and not self._closed else float("inf")

    def quality_snapshot(self, now: float) -> CallQualityStats:
        """The figures at ``now`` without starting a new interval (for polling, e.g. an API).

        ``fraction_lost`` and ``mos`` cover the time since the last
        :class:`QualityReport`; :attr:`quality` is not changed.
        """
        return self._snapshot(now, advance=False)

    def _snapshot(self, now: float, final: bool = False, advance: bool = True) -> CallQualityStats:
        reporter = self._reporter
        jitter = self._jitter
        return self._monitor.snapshot(
            now,
            reception=reporter.reception if reporter is not None else None,
            buffer=jitter if isinstance(jitter, AdaptiveJitterBuffer) else None,
            recovered=self.fec_recovered,
            final=final,
            advance=advance,
        )

    def _report_quality(self, now: float, final: bool = False) -> None:
        stats = self._quality = self._snapshot(now, final)
        self.events.append(QualityReport(stats))

    @property
    def telephone_event_pts(self) -> frozenset[int]:
        """The payload types telephone-events are accepted on."""
        return self._te_pts

    @property
    def comfort_noise_pt(self) -> int | None:
        """The comfort-noise payload type, or None."""
        return self._cn_pt

    @property
    def jitter_buffer(self) -> JitterBuffer | None:
        """The jitter buffer audio is played out through, or None (each packet at once)."""
        return self._jitter

    def set_jitter_buffer(self, jitter_buffer: JitterBuffer | None) -> None:
        """Play received audio out through ``jitter_buffer`` (None: each packet at once).

        With a buffer, a lost packet is concealed by the codec's own PLC when
        it has one (Opus), else by G.711 Appendix I style concealment
        (:class:`~pipecat_sip.rtp.plc.Concealer`). Set it before media flows.
        """
        self._jitter = jitter_buffer
        self._plc = None
        if jitter_buffer is not None and self._conceal is None:
            self._plc = Concealer(self.sample_rate, self.samples_per_packet)
        self._monitor.set_concealment(jitter_buffer is not None)
        peek = getattr(jitter_buffer, "peek", None)
        self._peek = peek if callable(peek) and self._decode_fec is not None else None

    def _play_out(self, now: float) -> None:
        """Decode what the jitter buffer has due now into AudioReceived events."""
        jitter = self._jitter
        assert jitter is not None
        events = self.events
        plc = self._plc
        for packet in jitter.pop(now):
            if packet is None:
                events.append(AudioReceived(self._recover() or self._concealment(), True))
                continue
            pt = packet.payload_type
            if pt == self.payload_type:
                pcm = self._decode(packet.payload)
                events.append(AudioReceived(plc.good(pcm) if plc is not None else pcm))
            elif pt == self._cn_pt:
                pcm = self._silence_pcm
                events.append(AudioReceived(plc.good(pcm) if plc is not None else pcm))
            elif pt in self._te_pts:
                self._feed_dtmf(packet)

    def _recover(self) -> bytes | None:
        """The lost packet rebuilt from the in-band FEC of the next one, if it is here."""
        peek = self._peek
        if peek is None:
            return None
        following = peek()
        if following is None or following.payload_type != self.payload_type:
            return None
        has_fec = self._has_fec
        if has_fec is not None and not has_fec(following.payload):
            return None  # nothing to rebuild from: conceal
        try:
            pcm = self._decode_fec(following.payload, self.samples_per_packet)
        except ValueError:
            return None
        if not isinstance(pcm, bytes) or len(pcm) != 2 * self.samples_per_packet:
            return None
        self.fec_recovered += 1
        return pcm

    def _concealment(self) -> bytes:
        conceal = self._conceal
        if conceal is not None:
            pcm = conceal(self.samples_per_packet)
            if isinstance(pcm, bytes):
                return pcm
        if self._plc is not None:
            return self._plc.conceal()
        return self._silence_pcm

    def __repr__(self) -> str:
        return (
            f"<MediaSession {self.codec.encoding_name}/{self.payload_type} -> {self._remote}"
            f"{' latched' if self.latched else ''}{' closed' if self._closed else ''}>"
        )
