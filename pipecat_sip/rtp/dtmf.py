"""RFC 4733 telephone-events: DTMF as RTP payload, in both directions.

Sans-IO: :class:`DtmfReceiver` takes parsed packets and returns keys,
:class:`DtmfSender` turns one key press into packets through an
:class:`~pipecat_sip.rtp.sender.RtpSender`. No sockets, no clocks.

RFC 4733 section 2.3, the payload format::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Event codes (section 3.2): 0-9 the digits, 10 ``*``, 11 ``#``, 12-15 ``A``-``D``,
16 flash. One event is one key press, identified by its RTP timestamp (the
time it began); every packet of the event carries that timestamp.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pipecat_sip.rtp.packet import RtpPacket, ts_diff
from pipecat_sip.rtp.sender import RtpSender

__all__ = [
    "EVENT_FLASH",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
    "TelephoneEventParseError",
    "describe_event",
    "event_for_key",
    "key_for_event",
]

_EVENT_KEYS = "0123456789*#ABCD"  # index == event code (RFC 4733 section 3.2)
EVENT_FLASH = 16
"""Event code of a hook flash (RFC 4733 section 3.2)."""

_PIPECAT_KEYS = frozenset("0123456789*#")  # the keys of Pipecat's KeypadEntry
_FORMAT = struct.Struct("!BBH")
_MAX_DURATION = 0xFFFF


class TelephoneEventParseError(ValueError):
    """A telephone-event payload is malformed (the text says why)."""


def event_for_key(key: str) -> int:
    """Return the RFC 4733 event code of a DTMF key (``A``-``D`` case-insensitive).

    Raises:
        ValueError: Not one of ``0-9 * # A-D``.
    """
    code = _EVENT_KEYS.find(key.upper()) if len(key) == 1 else -1
    if code < 0:
        raise ValueError(f"no telephone-event for DTMF key {key!r}")
    return code


def key_for_event(event: int) -> str | None:
    """Return the DTMF key of an event code, or None for flash and non-DTMF events."""
    return _EVENT_KEYS[event] if 0 <= event < len(_EVENT_KEYS) else None


def describe_event(event: int) -> str:
    """Name an event code for people: ``"A"``, ``"flash"``, ``"non-DTMF"`` (RFC 4733 s.3.2)."""
    key = key_for_event(event)
    if key is not None:
        return key
    return "flash" if event == EVENT_FLASH else "non-DTMF"


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 section 2.3).

    Attributes:
        event: Event code, 0-255 (0-15 are DTMF keys).
        end: The E bit: this packet reports the end of the event.
        volume: Power level as -dBm0, 0-63 (DTMF only; 0 otherwise).
        duration: Duration so far, in RTP clock ticks since the event's
            timestamp, 0-65535.
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> "TelephoneEvent":
        """Parse the first event of a payload (the R bit is ignored).

        Raises:
            TelephoneEventParseError: The payload is shorter than 4 bytes.
        """
        if len(payload) < 4:
            raise TelephoneEventParseError(
                f"telephone-event payload is {len(payload)} bytes, shorter than 4"
            )
        event, flags, duration = _FORMAT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        """Return the 4-byte payload (R bit zero).

        Raises:
            ValueError: A field is out of range.
        """
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} is out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume {self.volume} is out of range 0-63")
        if not 0 <= self.duration <= _MAX_DURATION:
            raise ValueError(f"telephone-event duration {self.duration} is out of range 0-65535")
        return _FORMAT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


class DtmfReceiver:
    """Turns received telephone-event packets into one key per key press.

    An event is identified by its RTP timestamp (RFC 4733 section 2.5.2):
    its start packets (marker bit, possibly repeated), continuation packets,
    the end packets (usually three) and any retransmission all share it, so
    the key is reported once, from whichever packet of the event arrives
    first. A press whose start packets were lost is still reported from its
    continuation or end packets. Late packets of an earlier event are
    ignored, and so are the segments of a long event (section 2.5.1.3).
    A stream replayed with identical headers (SIPp's ``play_pcap_audio``
    playing one capture twice in a call) therefore reports its key once.

    ``A``-``D`` (events 12-15), flash (16) and non-DTMF events are ignored
    (Pipecat's keypad has no such keys): each such press is counted in
    :attr:`ignored_events` and its code kept in :attr:`last_ignored_event`,
    for the caller to report (this object logs nothing).

    Example:
        >>> rx = DtmfReceiver()
        >>> start = RtpPacket(101, 1, 8000, 7, TelephoneEvent(5).serialize(), marker=True)
        >>> rx.feed(start), rx.feed(start)
        ('5', None)
    """

    def __init__(self) -> None:
        self._ssrc: int | None = None
        self._timestamp: int | None = None  # of the latest event
        self._event = -1
        self._ended = False
        self.keys_received = 0
        """Key presses reported."""
        self.invalid_packets = 0
        """Packets whose payload was not a telephone-event."""
        self.ignored_events = 0
        """Presses of events Pipecat has no key for (``A``-``D``, flash, others)."""
        self.last_ignored_event: int | None = None
        """The event code of the latest ignored press."""

    def feed(self, packet: RtpPacket) -> str | None:
        """Take one telephone-event packet.

        Args:
            packet: A parsed RTP packet of a telephone-event payload type.

        Returns:
            The key (``"0"``-``"9"``, ``"*"``, ``"#"``) when this packet is the
            first one seen of a new key press, else None (a new press of an
            ignored event also moves :attr:`ignored_events` on).
        """
        try:
            event = TelephoneEvent.parse(packet.payload)
        except TelephoneEventParseError:
            self.invalid_packets += 1
            return None
        if packet.ssrc != self._ssrc:
            self._ssrc = packet.ssrc
            self._timestamp = None
        if self._timestamp is not None:
            age = ts_diff(packet.timestamp, self._timestamp)
            if age < 0:
                return None  # a straggler of an earlier event
            if age == 0:
                self._ended = self._ended or event.end
                return None  # same press: retransmission, continuation or end
            if (
                age == _MAX_DURATION
                and event.event == self._event
                and not self._ended
                and not packet.marker
            ):
                self._timestamp = packet.timestamp  # next segment of a long event
                self._ended = event.end
                return None
        self._timestamp = packet.timestamp
        self._event = event.event
        self._ended = event.end
        key = key_for_event(event.event)
        if key not in _PIPECAT_KEYS:
            self.ignored_events += 1
            self.last_ignored_event = event.event
            return None
        self.keys_received += 1
        return key


class DtmfSender(Iterator[bytes]):
    """The RTP packets of one key press (RFC 4733 section 2.5.1), one per ptime.

    Iterate once per packet time: the first packet carries the marker bit,
    each following one a duration grown by one packet time, all of them the
    timestamp the stream had when the first was built; then the end packet
    (E bit, final duration) is sent ``end_packets`` times. Every packet moves
    the stream's timestamp on by one packet time, so media resumes at the
    right time. The event's timestamp is taken when the first packet is
    built, not when the sender is created.

    Args:
        rtp: The stream's sender (shared with the audio packets).
        payload_type: The negotiated telephone-event payload type.
        key: ``"0"``-``"9"``, ``"*"``, ``"#"`` or ``"A"``-``"D"``.
        duration_ms: Length of the press in ms, rounded up to whole packets
            (1-8000).
        ptime_ms: Packet time in ms.
        clock_rate: telephone-event RTP clock in Hz (the audio clock).
        volume: Power level as -dBm0 (0-63).
        end_packets: How many times the end packet is sent.

    Raises:
        ValueError: Unknown key or a value out of range.

    Example:
        >>> rtp = RtpSender(0, 8000)
        >>> len(list(DtmfSender(rtp, 101, "5", duration_ms=100)))  # 4 + 3 end packets
        7
    """

    def __init__(
        self,
        rtp: RtpSender,
        payload_type: int,
        key: str,
        duration_ms: int = 100,
        *,
        ptime_ms: int = 20,
        clock_rate: int = 8000,
        volume: int = 10,
        end_packets: int = 3,
    ):
        event = event_for_key(key)
        if not 1 <= duration_ms <= 8000:
            raise ValueError(f"DTMF duration must be 1-8000 ms, got {duration_ms}")
        if not 0 <= volume <= 63:
            raise ValueError(f"telephone-event volume {volume} is out of range 0-63")
        if end_packets < 1:
            raise ValueError(f"at least one end packet is needed, got {end_packets}")
        self.key = key.upper()
        self._rtp = rtp
        self._payload_type = payload_type
        self._step = clock_rate * ptime_ms // 1000
        count = max(1, -(-(duration_ms * clock_rate // 1000) // self._step))  # whole packets
        total = min(count * self._step, _MAX_DURATION)
        growing = [TelephoneEvent(event, False, volume, k * self._step) for k in range(1, count)]
        final = [TelephoneEvent(event, True, volume, total)] * end_packets
        self._payloads = [e.serialize() for e in growing + final]
        self._index = 0
        self._timestamp = 0

    @property
    def done(self) -> bool:
        """True once every packet has been built."""
        return self._index >= len(self._payloads)

    def __len__(self) -> int:
        return len(self._payloads)

    def __next__(self) -> bytes:
        index = self._index
        if index >= len(self._payloads):
            raise StopIteration
        if index == 0:
            self._timestamp = self._rtp.timestamp
        self._index = index + 1
        return self._rtp.packet(
            self._payloads[index],
            self._step,
            marker=index == 0,
            payload_type=self._payload_type,
            timestamp=self._timestamp,
        )
