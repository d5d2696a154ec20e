"""SDP bodies (RFC 8866, formerly RFC 4566) and the offer/answer model (RFC 3264).

Pure code, standard library only: bytes go in, dataclasses come out and back.
No I/O and no clock; the only randomness is a fresh ``o=`` session id when the
caller does not pass one.

Parsing is tolerant where real peers are sloppy (LF-only or CR-only line
endings, trailing whitespace, blank lines, session-level lines out of order,
unknown line types and attributes, malformed ``a=`` values) and strict where
the structure is broken (no ``v=`` first, a line without ``=``, a bad
``o=``/``c=``/``m=``/``t=``/``b=`` line). Anything wrong raises
:class:`SDPParseError` with a precise message, never another exception.

Serializing writes CRLF line endings in RFC 8866 s.5 order. A body parsed and
serialized again gives an equal value (``parse(serialize(x)) == x``); bodies
already in that order come back byte for byte.

Example (the UAS side of an INVITE)::

    offer = SessionDescription.parse(request.body)
    try:
        answer, media = negotiate(offer, local_address="192.0.2.1", local_port=40000)
    except NoCommonCodec:
        ...  # answer the INVITE with 488 Not Acceptable Here
    body = answer.serialize()
    # send RTP to media.remote_address with media.payload_type every media.ptime ms
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DIRECTIONS",
    "HOLD_ADDRESSES",
    "OPUS_FMTP",
    "STATIC_PAYLOAD_TYPES",
    "CodecDescription",
    "MediaDescription",
    "MediaFormat",
    "NegotiatedMedia",
    "NoCommonCodec",
    "Origin",
    "SDPParseError",
    "SessionDescription",
    "apply_answer",
    "create_offer",
    "negotiate",
    "parse_fmtp",
]

#: The direction attributes of RFC 8866 s.6.7 (RFC 3264 s.5.1).
DIRECTIONS: tuple[str, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

#: RFC 3551 s.6 tables 4 and 5: static payload type -> (encoding name, clock rate Hz,
#: channels). Used for payload types that an m= line lists without an a=rtpmap.
#: G722 has an 8000 Hz RTP clock although it carries 16 kHz audio (RFC 3551 s.4.5.2).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# Name -> static payload type for create_offer (mono entries; the lowest wins: DVI4 -> 5).
_STATIC_BY_NAME: dict[str, int] = {
    name.upper(): pt
    for pt, (name, _, channels) in reversed(STATIC_PAYLOAD_TYPES.items())
    if channels == 1
}

# Canonical spelling of encoding names written into our own SDP.
_CANONICAL_NAMES: dict[str, str] = {n.upper(): n for n, _, _ in STATIC_PAYLOAD_TYPES.values()}
_CANONICAL_NAMES.update({"TELEPHONE-EVENT": "telephone-event", "OPUS": "opus"})

#: The ``a=fmtp`` we write for Opus when a codec is named by the string ``"opus"``
#: (RFC 7587 s.6.1): we play back and capture at 16 kHz, want mono, and can use
#: in-band FEC. The same as ``OpusCodec().fmtp`` in :mod:`pipecat_sip.codecs.opus`.
OPUS_FMTP = (
    "maxplaybackrate=16000;sprop-maxcapturerate=16000;stereo=0;sprop-stereo=0;useinbandfec=1"
)

# Codecs whose RTP clock rate and channel count are fixed: an offer with another
# rate (or channel count) is not the codec we can decode. Opus is always
# opus/48000/2 (RFC 7587 s.7); G722 has an 8000 Hz clock (RFC 3551 s.4.5.2).
_FIXED_RATE: dict[str, tuple[int, int]] = {
    "PCMU": (8000, 1),
    "PCMA": (8000, 1),
    "G722": (8000, 1),
    "GSM": (8000, 1),
    "G723": (8000, 1),
    "G729": (8000, 1),
    "OPUS": (48000, 2),
}

# Dynamic codecs known by name: the format and fmtp create_offer/negotiate write
# for them when named by a string.
_DYNAMIC_FMTP: dict[str, str] = {"OPUS": OPUS_FMTP}

# Packet durations a codec can carry, ms; another a=ptime is answered with 20.
# Opus frames are 2.5-60 ms (RFC 6716 s.2.1.4), of which 10 ms and up are in range.
_PTIMES_MS: dict[str, tuple[int, ...]] = {"OPUS": (10, 20, 40, 60)}

# Formats that are never the main audio codec of a stream.
_NOT_A_CODEC = frozenset({"TELEPHONE-EVENT", "CN"})

_FIRST_DYNAMIC_PT = 96  # RFC 3551 s.3: 96-127 are dynamic
_CN_PT = 13  # RFC 3389 s.5 / RFC 3551: CN/8000 is static payload type 13

# Transports we can speak: plain RTP. RTP/AVPF is answered as such, without feedback.
_PLAIN_RTP = frozenset({"RTP/AVP", "RTP/AVPF"})

_DEFAULT_PTIME_MS = 20
_PTIME_RANGE_MS = (10, 200)
_TELEPHONE_EVENT_FMTP = "0-16"  # RFC 4733 s.3: DTMF 0-9 * # A-D, and flash (16)
#: Connection addresses that put a stream on hold the RFC 2543 way (RFC 3264 s.8.4).
HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TYPE = re.compile(r"[A-Za-z]")
_PTIME = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")


class SDPParseError(ValueError):
    """An SDP body that cannot be parsed; the message says which line and why."""


class NoCommonCodec(Exception):
    """No stream in an offer (or answer) can be used with the codecs we support.

    A UAS answers the INVITE with ``488 Not Acceptable Here`` (RFC 3261 s.13.3.1.1),
    available as :attr:`status_code`.
    """

    status_code: int = 488


@dataclass
class Origin:
    """The ``o=`` line (RFC 8866 s.5.2).

    ``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``

    Attributes:
        username: Login of the originating user, ``-`` when there is none.
        session_id: Numeric session id, constant for the life of the session.
        session_version: Numeric version, increased by one for every new offer or
            answer that changes the session (RFC 3264 s.8).
        nettype: ``IN``.
        addrtype: ``IP4`` or ``IP6``.
        address: Address or host name of the originator.
    """

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass
class MediaFormat:
    """One RTP payload format of an m= line, with its ``a=rtpmap`` and ``a=fmtp``.

    Attributes:
        payload_type: RTP payload type, 0-127.
        encoding_name: As in ``a=rtpmap`` (case kept; compare case-insensitively),
            or from the RFC 3551 table for a static payload type without rtpmap;
            ``""`` when unknown.
        clock_rate: RTP clock rate in Hz (0 when unknown).
        channels: Audio channels (the rtpmap encoding parameter), 1 by default.
        fmtp: Format parameters of ``a=fmtp:<pt> <params>``, or None.
        has_rtpmap: Whether an ``a=rtpmap`` line is written for this format.
            Parsing sets it to whether the body had one.
    """

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None
    has_rtpmap: bool = True


@dataclass
class MediaDescription:
    """One media section: an ``m=`` line and the lines that follow it (RFC 8866 s.5.14).

    ``a=rtpmap``, ``a=fmtp``, ``a=ptime`` and the direction attribute are parsed into
    :attr:`formats`, :attr:`ptime` and :attr:`direction`; every other attribute
    stays in :attr:`attributes`, in order. The first valid occurrence of each wins;
    later or malformed ones are kept in :attr:`attributes` as they were.

    Attributes:
        media: ``audio``, ``video``, ``image``, ``application``...
        port: Transport port; 0 means the stream is rejected or disabled (RFC 3264 s.6).
        proto: ``RTP/AVP``, ``RTP/SAVP``, ``udptl``...
        formats: Payload formats in the m= line's order (RTP-based protos only).
        connection_address: Address of the media-level ``c=`` line, or None (then the
            session-level one applies). Host name, IPv4 or IPv6 address; may carry a
            multicast ``/ttl`` suffix.
        direction: ``sendrecv``, ``sendonly``, ``recvonly``, ``inactive``, or None
            when the section has no direction attribute (the session's applies, then
            ``sendrecv``).
        ptime: ``a=ptime`` in ms, or None.
        attributes: Other ``a=`` lines as (name, value); value None for a flag.
        port_count: The ``/<number of ports>`` of the m= line, or None.
        information: ``i=`` line, or None.
        bandwidths: ``b=`` lines as (bwtype, kilobits per second or as bwtype says).
        encryption_key: ``k=`` line, or None.
        connection_addrtype: ``IP4`` or ``IP6`` of the ``c=`` line; None with an
            address means "infer from the address" and is filled in on creation.
        raw_formats: The m= line's format tokens for protos that are not RTP-based
            (``m=image 0 udptl t38``).
        other_lines: Lines of unknown or repeated single-use types, as (type, value).
    """

    media: str
    port: int
    proto: str
    formats: list[MediaFormat] = field(default_factory=list)
    connection_address: str | None = None
    direction: str | None = None
    ptime: int | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    port_count: int | None = None
    information: str | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    encryption_key: str | None = None
    connection_addrtype: str | None = None
    raw_formats: list[str] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_direction_and_addrtype(self)

    def get_format(self, payload_type: int) -> MediaFormat | None:
        """Return the format with this payload type, or None."""
        for fmt in self.formats:
            if fmt.payload_type == payload_type:
                return fmt
        return None

    def get_attribute(self, name: str) -> str | None:
        """Return the value of the first attribute named ``name`` (None if absent or a flag)."""
        for attr_name, value in self.attributes:
            if attr_name == name:
                return value
        return None

    def _serialize_into(self, out: list[str]) -> None:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        tokens = [str(fmt.payload_type) for fmt in self.formats] + self.raw_formats
        out.append(" ".join([f"m={self.media}", port, self.proto, *tokens]))
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.connection_address is not None:
            out.append(_connection_line(self.connection_addrtype, self.connection_address))
        out.extend(f"b={bwtype}:{value}" for bwtype, value in self.bandwidths)
        if self.encryption_key is not None:
            out.append(f"k={self.encryption_key}")
        for fmt in self.formats:
            if fmt.has_rtpmap and fmt.encoding_name:
                rtpmap = f"a=rtpmap:{fmt.payload_type} {fmt.encoding_name}/{fmt.clock_rate}"
                if fmt.channels != 1:
                    rtpmap += f"/{fmt.channels}"
                out.append(rtpmap)
            if fmt.fmtp is not None:
                out.append(f"a=fmtp:{fmt.payload_type} {fmt.fmtp}".rstrip(" "))
        if self.ptime is not None:
            out.append(f"a=ptime:{self.ptime}")
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out.extend(_attribute_line(name, value) for name, value in self.attributes)
        out.extend(f"{line_type}={value}" for line_type, value in self.other_lines)


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 8866 s.5).

    The session-level direction attribute is parsed into :attr:`direction`; other
    session attributes stay in :attr:`attributes`, in order.

    Attributes:
        version: ``v=`` (always 0).
        origin: ``o=`` line.
        session_name: ``s=`` line (``-`` in our own bodies; ``""`` when absent).
        connection_address: Session-level ``c=`` address, or None.
        timing: ``t=`` lines as (start, stop) NTP seconds; (0, 0) for SIP.
        direction: Session-level direction attribute, or None.
        attributes: Other session-level ``a=`` lines as (name, value or None).
        media: Media sections in order.
        information: ``i=`` line, or None.
        uri: ``u=`` line, or None.
        emails: ``e=`` lines.
        phones: ``p=`` lines.
        bandwidths: Session-level ``b=`` lines as (bwtype, value).
        encryption_key: ``k=`` line, or None.
        connection_addrtype: ``IP4``/``IP6`` of the session ``c=`` line (inferred from
            the address when None).
        other_lines: ``r=``, ``z=``, lines of unknown types and repeats of single-use
            lines, as (type, value). Written after the session attributes.
    """

    version: int
    origin: Origin
    session_name: str
    connection_address: str | None = None
    timing: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    direction: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    encryption_key: str | None = None
    connection_addrtype: str | None = None
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_direction_and_addrtype(self)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body.

        Args:
            data: The body, as bytes (UTF-8; undecodable bytes are kept as lone
                surrogates and written back unchanged) or str.

        Returns:
            The parsed session description.

        Raises:
            SDPParseError: The body is empty, does not start with ``v=``, has a line
                without ``=`` or with a type that is not one letter, lacks ``o=``,
                or has an invalid ``v=``, ``o=``, ``c=``, ``b=``, ``t=`` or ``m=`` line.
        """
        return _Parser(data).parse()

    def serialize(self) -> bytes:
        """Return the body as bytes, CRLF line endings, in RFC 8866 s.5 order."""
        o = self.origin
        out = [
            f"v={self.version}",
            f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} "
            f"{o.address}",
            f"s={self.session_name}",
        ]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={email}" for email in self.emails)
        out.extend(f"p={phone}" for phone in self.phones)
        if self.connection_address is not None:
            out.append(_connection_line(self.connection_addrtype, self.connection_address))
        out.extend(f"b={bwtype}:{value}" for bwtype, value in self.bandwidths)
        out.extend(f"t={start} {stop}" for start, stop in self.timing)
        if self.encryption_key is not None:
            out.append(f"k={self.encryption_key}")
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out.extend(_attribute_line(name, value) for name, value in self.attributes)
        out.extend(f"{line_type}={value}" for line_type, value in self.other_lines)
        for media in self.media:
            media._serialize_into(out)
        return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.serialize()


class CodecDescription(Protocol):
    """A codec as offer/answer needs to know it; :class:`pipecat_sip.codecs.Codec` is one.

    Attributes:
        encoding_name: rtpmap encoding name (``"PCMU"``, ``"opus"``...).
        clock_rate: RTP clock rate, Hz.
        channels: rtpmap channel count (``opus/48000/2``: 2).
        payload_type: A static RTP payload type (RFC 3551), or a dynamic number
            (96-127, only a wish: offers number dynamic codecs themselves).
        fmtp: Our ``a=fmtp`` parameters for it (what we can receive), or None.
    """

    encoding_name: str
    clock_rate: int
    channels: int
    payload_type: int
    fmtp: str | None


@dataclass(frozen=True)
class NegotiatedMedia:
    """The outcome of an offer/answer exchange for the one audio stream we use.

    Attributes:
        remote_address: (host, port) to send RTP to: the stream's ``c=`` address
            (media level, else session level; may be a host name or IPv6 address)
            and the m= port. ``0.0.0.0`` when the peer put the call on hold the
            RFC 2543 way.
        payload_type: RTP payload type to send with (the peer's number).
        encoding_name: Canonical codec name (``PCMU``, ``PCMA``, ``G722``, ``opus``...).
        clock_rate: RTP clock rate in Hz (8000 for G.722, 48000 for Opus).
        telephone_event_pt: The peer's payload type for telephone-event at the
            codec's clock rate (RFC 4733 s.2.3.1), or None when not offered.
        ptime: Packet time to send with, in ms.
        direction: Our direction: ``sendrecv``, ``sendonly`` (we may send only),
            ``recvonly`` or ``inactive``.
        on_hold: The peer put us on hold (connection address 0.0.0.0 or ``::``, or
            the peer's direction is sendonly or inactive).
        channels: The codec's rtpmap channel count (2 for Opus, whose audio we
            still send and receive mono).
        fmtp: The peer's ``a=fmtp`` parameters for the codec (what the peer can
            receive, e.g. RFC 7587 ``useinbandfec=1``), or None; see
            :meth:`fmtp_parameters`.
        cn_pt: The payload type of comfort noise (RFC 3389, ``CN`` at the codec's
            clock rate) when both sides have it, else None. Such packets carry
            a noise level, no audio: play them as silence.
    """

    remote_address: tuple[str, int]
    payload_type: int
    encoding_name: str
    clock_rate: int
    telephone_event_pt: int | None
    ptime: int
    direction: str
    on_hold: bool
    channels: int = 1
    fmtp: str | None = None
    cn_pt: int | None = None

    def fmtp_parameters(self) -> dict[str, str]:
        """The peer's fmtp as parameters (see :func:`parse_fmtp`)."""
        return parse_fmtp(self.fmtp)


def parse_fmtp(fmtp: str | None) -> dict[str, str]:
    """Split ``a=fmtp`` parameters ``name=value; name=value`` into a dict.

    The form of RFC 7587 s.6.1 and most payload formats: parameters separated
    by ``;`` (spaces around them allowed), names lowercased, values kept; a
    parameter without ``=`` maps to ``""`` (``0-16`` of telephone-event). The
    first occurrence of a name wins.

    Args:
        fmtp: The parameters (the text after ``a=fmtp:<pt> ``), or None.

    Returns:
        Parameter name -> value; empty for None or empty text.
    """
    params: dict[str, str] = {}
    if not fmtp:
        return params
    for item in fmtp.split(";"):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name and name not in params:
            params[name] = value.strip()
    return params


# --------------------------------------------------------------------------- parsing


def _show(text: str, limit: int = 40) -> str:
    """Quote a piece of input for an error message, shortened."""
    if len(text) > limit:
        return repr(text[:limit] + "...")
    return repr(text)


def _uint(token: str, max_digits: int = 20) -> int | None:
    """Parse an unsigned decimal of ASCII digits, or return None."""
    if 0 < len(token) <= max_digits and token.isascii() and token.isdigit():
        return int(token)
    return None


def _check_direction_and_addrtype(section: SessionDescription | MediaDescription) -> None:
    """Shared __post_init__ of the session and media sections.

    Raises:
        ValueError: The direction is not one of DIRECTIONS.
    """
    if section.direction is not None and section.direction not in DIRECTIONS:
        raise ValueError(f"invalid direction {section.direction!r}, expected one of {DIRECTIONS}")
    if section.connection_address is not None and section.connection_addrtype is None:
        section.connection_addrtype = _addrtype_of(section.connection_address)


def _addrtype_of(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _connection_line(addrtype: str | None, address: str) -> str:
    return f"c=IN {addrtype or _addrtype_of(address)} {address}"


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _is_rtp(proto: str) -> bool:
    return "RTP" in proto.upper().split("/")


def _bare_format(payload_type: int) -> MediaFormat:
    """The format of a payload type listed without a=rtpmap (RFC 3551 table or unknown)."""
    name, rate, channels = STATIC_PAYLOAD_TYPES.get(payload_type, ("", 0, 1))
    return MediaFormat(payload_type, name, rate, channels, has_rtpmap=False)


class _Parser:
    """One pass over the lines of a body; session level first, then media sections."""

    def __init__(self, data: bytes | str) -> None:
        if isinstance(data, str):
            text = data
        elif isinstance(data, (bytes, bytearray, memoryview)):
            text = bytes(data).decode("utf-8", "surrogateescape")
        else:
            raise TypeError(f"SDP body must be bytes or str, not {type(data).__name__}")
        if text.startswith("\ufeff"):
            text = text[1:]
        self._text = text

    def _lines(self) -> Iterator[tuple[int, str, str]]:
        """Yield (line number, type, value); RFC 8866 s.5: ``<type>=<value>``."""
        for number, raw in enumerate(_LINE_BREAK.split(self._text), 1):
            line = raw.rstrip()
            if not line:
                continue
            line_type, sep, value = line.partition("=")
            if not sep:
                raise SDPParseError(f"SDP line {number} has no '='")
            if len(line_type) != 1 or not _TYPE.fullmatch(line_type):
                raise SDPParseError(f"SDP line {number} has invalid type {_show(line_type)}")
            yield number, line_type, value

    def parse(self) -> SessionDescription:
        lines = self._lines()
        first = next(lines, None)
        if first is None:
            raise SDPParseError("SDP body is empty")
        number, line_type, value = first
        if line_type != "v":
            raise SDPParseError(
                f"SDP line {number} must be v=, got {_show(line_type + '=' + value)}"
            )
        if value != "0":
            raise SDPParseError(f"v= line has unsupported version {_show(value)}")

        origin: Origin | None = None
        session_name: str | None = None
        fields: dict[str, str] = {}  # i, u, k at session level
        connection: tuple[str, str] | None = None
        emails: list[str] = []
        phones: list[str] = []
        bandwidths: list[tuple[str, int]] = []
        timing: list[tuple[int, int]] = []
        attributes: list[tuple[str, str | None]] = []
        other: list[tuple[str, str]] = []
        media: list[MediaDescription] = []

        section: _MediaBuilder | None = None
        for _number, line_type, value in lines:
            if line_type == "m":
                if section is not None:
                    media.append(section.build())
                section = _MediaBuilder(value)
            elif section is not None:
                section.add(line_type, value)
            elif line_type == "o" and origin is None:
                origin = _parse_origin(value)
            elif line_type == "s" and session_name is None:
                session_name = value
            elif line_type == "c" and connection is None:
                connection = _parse_connection(value)
            elif line_type in "iuk" and line_type not in fields:
                fields[line_type] = value
            elif line_type == "e":
                emails.append(value)
            elif line_type == "p":
                phones.append(value)
            elif line_type == "b":
                bandwidths.append(_parse_bandwidth(value))
            elif line_type == "t":
                timing.append(_parse_timing(value))
            elif line_type == "a":
                attributes.append(_parse_attribute(value))
            else:
                other.append((line_type, value))
        if section is not None:
            media.append(section.build())
        if origin is None:
            raise SDPParseError("SDP has no o= line")

        direction, attributes = _take_direction(attributes)
        return SessionDescription(
            version=0,
            origin=origin,
            session_name=session_name if session_name is not None else "",
            connection_address=connection[1] if connection else None,
            connection_addrtype=connection[0] if connection else None,
            timing=timing,
            direction=direction,
            attributes=attributes,
            media=media,
            information=fields.get("i"),
            uri=fields.get("u"),
            emails=emails,
            phones=phones,
            bandwidths=bandwidths,
            encryption_key=fields.get("k"),
            other_lines=other,
        )


class _MediaBuilder:
    """Collects the lines of one media section, then resolves its attributes."""

    def __init__(self, m_line: str) -> None:
        self.media = _parse_media_line(m_line)
        self.attributes: list[tuple[str, str | None]] = []

    def add(self, line_type: str, value: str) -> None:
        md = self.media
        if line_type == "a":
            self.attributes.append(_parse_attribute(value))
        elif line_type == "c" and md.connection_address is None:
            md.connection_addrtype, md.connection_address = _parse_connection(value)
        elif line_type == "b":
            md.bandwidths.append(_parse_bandwidth(value))
        elif line_type == "i" and md.information is None:
            md.information = value
        elif line_type == "k" and md.encryption_key is None:
            md.encryption_key = value
        else:
            md.other_lines.append((line_type, value))

    def build(self) -> MediaDescription:
        md = self.media
        by_pt = {fmt.payload_type: fmt for fmt in md.formats}
        mapped: set[int] = set()
        with_fmtp: set[int] = set()
        rest: list[tuple[str, str | None]] = []
        for name, value in self.attributes:
            if name == "rtpmap" and value is not None:
                rtpmap = _parse_rtpmap(value)
                if rtpmap is not None and rtpmap[0] in by_pt and rtpmap[0] not in mapped:
                    pt, encoding_name, clock_rate, channels = rtpmap
                    fmt = by_pt[pt]
                    fmt.encoding_name, fmt.clock_rate, fmt.channels = (
                        encoding_name,
                        clock_rate,
                        channels,
                    )
                    fmt.has_rtpmap = True
                    mapped.add(pt)
                    continue
            elif name == "fmtp" and value is not None:
                parts = value.split(None, 1)
                pt = _uint(parts[0], 3) if parts else None
                if pt is not None and pt in by_pt and pt not in with_fmtp:
                    by_pt[pt].fmtp = parts[1] if len(parts) > 1 else ""
                    with_fmtp.add(pt)
                    continue
            elif name == "ptime" and value is not None and md.ptime is None:
                if _PTIME.fullmatch(value):
                    md.ptime = round(float(value))
                    continue
            elif value is None and name in DIRECTIONS and md.direction is None:
                md.direction = name
                continue
            rest.append((name, value))
        md.attributes = rest
        return md


def _parse_origin(value: str) -> Origin:
    # o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
    # (a username with spaces, which some peers send, is kept whole)
    parts = value.split()
    if len(parts) < 6:
        raise SDPParseError(f"o= line needs 6 fields, got {len(parts)}: {_show(value)}")
    username = " ".join(parts[:-5])
    sess_id, sess_version, nettype, addrtype, address = parts[-5:]
    session_id = _uint(sess_id, 64)
    if session_id is None:
        raise SDPParseError(f"o= line has invalid sess-id {_show(sess_id)}")
    session_version = _uint(sess_version, 64)
    if session_version is None:
        raise SDPParseError(f"o= line has invalid sess-version {_show(sess_version)}")
    return Origin(username, session_id, session_version, nettype, addrtype, address)


def _parse_connection(value: str) -> tuple[str, str]:
    # c=<nettype> <addrtype> <connection-address>; returns (addrtype, address)
    parts = value.split()
    if len(parts) != 3:
        raise SDPParseError(f"c= line needs 3 fields, got {len(parts)}: {_show(value)}")
    nettype, addrtype, address = parts
    if nettype.upper() != "IN":
        raise SDPParseError(f"c= line has unsupported nettype {_show(nettype)}")
    return addrtype, address


def _parse_bandwidth(value: str) -> tuple[str, int]:
    # b=<bwtype>:<bandwidth>
    bwtype, sep, amount = value.partition(":")
    if not sep:
        raise SDPParseError(f"b= line has no ':' in {_show(value)}")
    bandwidth = _uint(amount)
    if bandwidth is None:
        raise SDPParseError(f"b= line has invalid bandwidth {_show(amount)}")
    return bwtype, bandwidth


def _parse_timing(value: str) -> tuple[int, int]:
    # t=<start-time> <stop-time>
    parts = value.split()
    if len(parts) != 2:
        raise SDPParseError(f"t= line needs 2 fields, got {len(parts)}: {_show(value)}")
    start, stop = _uint(parts[0]), _uint(parts[1])
    if start is None:
        raise SDPParseError(f"t= line has invalid start time {_show(parts[0])}")
    if stop is None:
        raise SDPParseError(f"t= line has invalid stop time {_show(parts[1])}")
    return start, stop


def _parse_media_line(value: str) -> MediaDescription:
    # m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = value.split()
    if len(parts) < 3:
        raise SDPParseError(f"m= line needs at least 3 fields, got {len(parts)}: {_show(value)}")
    media, port_token, proto, *tokens = parts
    port_text, slash, count_text = port_token.partition("/")
    port = _uint(port_text, 5)
    if port is None or port > 65535:
        raise SDPParseError(f"m= line has invalid port {_show(port_text)}")
    port_count = None
    if slash:
        port_count = _uint(count_text, 5)
        if port_count is None:
            raise SDPParseError(f"m= line has invalid port count {_show(count_text)}")
    md = MediaDescription(media, port, proto, port_count=port_count)
    if not _is_rtp(proto):
        md.raw_formats = tokens
        return md
    seen: set[int] = set()
    for token in tokens:
        pt = _uint(token, 3)
        if pt is None or pt > 127:
            raise SDPParseError(f"m= line has invalid payload type {_show(token)}")
        if pt not in seen:  # a payload type listed twice is listed once
            seen.add(pt)
            md.formats.append(_bare_format(pt))
    return md


def _parse_attribute(value: str) -> tuple[str, str | None]:
    # a=<attribute-name>[:<attribute-value>]
    name, sep, attr_value = value.partition(":")
    return (name, attr_value) if sep else (name, None)


def _parse_rtpmap(value: str) -> tuple[int, str, int, int] | None:
    # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
    parts = value.split(None, 1)
    if len(parts) != 2:
        return None
    pt = _uint(parts[0], 3)
    pieces = parts[1].split("/")
    if pt is None or pt > 127 or len(pieces) not in (2, 3):
        return None
    name = pieces[0]
    clock_rate = _uint(pieces[1], 10)
    channels = _uint(pieces[2], 3) if len(pieces) == 3 else 1
    if not name or any(c.isspace() for c in name) or clock_rate is None or channels is None:
        return None
    return pt, name, clock_rate, channels


def _take_direction(
    attributes: list[tuple[str, str | None]],
) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Split off the first direction flag from session-level attributes."""
    for index, (name, value) in enumerate(attributes):
        if value is None and name in DIRECTIONS:
            return name, attributes[:index] + attributes[index + 1 :]
    return None, attributes


# ---------------------------------------------------------------------- offer/answer


def _canonical(name: str) -> str:
    return _CANONICAL_NAMES.get(name.upper(), name)


def _describe(formats: Sequence[MediaFormat]) -> str:
    names = [
        f"{f.encoding_name}/{f.clock_rate}" if f.encoding_name else f"PT {f.payload_type}"
        for f in formats
    ]
    return ", ".join(names) or "no formats"


@dataclass(frozen=True)
class _Wanted:
    """One codec we support, resolved from a name or a :class:`CodecDescription`."""

    key: str  # upper-case encoding name
    name: str  # as written in our SDP
    clock_rate: int  # 0: unknown (a name we know nothing about; matched by name)
    channels: int
    fmtp: str | None
    static_pt: int | None  # RFC 3551 static payload type, None for a dynamic codec
    strict: bool  # the clock rate and channels must match too

    def matches(self, fmt: MediaFormat) -> bool:
        if fmt.encoding_name.upper() != self.key:
            return False
        return not self.strict or (fmt.clock_rate, fmt.channels) == (
            self.clock_rate,
            self.channels,
        )


def _wanted(codec: str | CodecDescription) -> _Wanted:
    """Resolve a supported codec: a name (static table, known dynamic) or a description.

    Raises:
        ValueError: The name is a telephone-event or comfort noise, not a codec.
    """
    if isinstance(codec, str):
        key = codec.upper()
        name = _canonical(codec)
        static_pt = _STATIC_BY_NAME.get(key)
        fixed = _FIXED_RATE.get(key)
        if fixed is not None:
            clock_rate, channels, strict = *fixed, True
        elif static_pt is not None:
            clock_rate, _, channels = STATIC_PAYLOAD_TYPES[static_pt]
            strict = False
        else:
            clock_rate, channels, strict = 0, 1, False
        fmtp = _DYNAMIC_FMTP.get(key)
    else:
        key = codec.encoding_name.upper()
        name = _canonical(codec.encoding_name)
        clock_rate, channels, fmtp = codec.clock_rate, codec.channels, codec.fmtp
        pt = codec.payload_type
        static = STATIC_PAYLOAD_TYPES.get(pt) if pt is not None else None
        static_pt = pt if static and (static[0].upper(), static[1]) == (key, clock_rate) else None
        strict = True
    if key in _NOT_A_CODEC:
        raise ValueError(f"{codec if isinstance(codec, str) else name!r} is not an audio codec")
    return _Wanted(key, name, clock_rate, channels, fmtp, static_pt, strict)


def _wanted_list(supported: Sequence[str | CodecDescription]) -> list[_Wanted]:
    return [_wanted(codec) for codec in supported]


def _match(fmt: MediaFormat, wanted: Sequence[_Wanted]) -> _Wanted | None:
    if fmt.encoding_name.upper() in _NOT_A_CODEC:
        return None
    return next((w for w in wanted if w.matches(fmt)), None)


def _format_pt(formats: Sequence[MediaFormat], name: str, clock_rate: int) -> int | None:
    """The payload type of the first format ``name`` at ``clock_rate`` (case-insensitive)."""
    for fmt in formats:
        if fmt.encoding_name.lower() == name and fmt.clock_rate == clock_rate:
            return fmt.payload_type
    return None


def _telephone_event_pt(formats: Sequence[MediaFormat], clock_rate: int) -> int | None:
    return _format_pt(formats, "telephone-event", clock_rate)


def _ptime_of(md: MediaDescription, codec: str = "") -> int:
    """The stream's ptime in ms: a=ptime, else a=maxptime when below 20, else 20.

    A ptime the codec cannot carry (Opus has no 30 ms frame) gives 20.
    """
    low, high = _PTIME_RANGE_MS
    ptime = _DEFAULT_PTIME_MS
    if md.ptime is not None and low <= md.ptime <= high:
        ptime = md.ptime
    else:
        maxptime = md.get_attribute("maxptime")
        if maxptime is not None and _PTIME.fullmatch(maxptime):
            value = round(float(maxptime))
            if low <= value < _DEFAULT_PTIME_MS:
                ptime = value
    allowed = _PTIMES_MS.get(codec.upper())
    if allowed is not None and ptime not in allowed:
        return _DEFAULT_PTIME_MS
    return ptime


def _host_of(address: str) -> str:
    return address.split("/", 1)[0]  # drop a multicast /ttl/count suffix


def _direction_from(send: bool, receive: bool) -> str:
    if send and receive:
        return "sendrecv"
    if send:
        return "sendonly"
    if receive:
        return "recvonly"
    return "inactive"


def _answer_direction(offered: str) -> str:
    """RFC 3264 s.6.1: our direction for an offered one (we want to send and receive)."""
    return _direction_from(
        send=offered in ("sendrecv", "recvonly"), receive=offered in ("sendrecv", "sendonly")
    )


def _new_session_id() -> int:
    # RFC 8866 s.5.2 suggests an NTP timestamp; a random 31-bit number is as unique
    # and fits the integer types of every peer seen.
    return secrets.randbelow(2**31 - 1) + 1


def _own_origin(
    username: str, session_id: int | None, session_version: int, local_address: str
) -> Origin:
    return Origin(
        username,
        _new_session_id() if session_id is None else session_id,
        session_version,
        "IN",
        _addrtype_of(local_address),
        local_address,
    )


def _rejected(md: MediaDescription) -> MediaDescription:
    """RFC 3264 s.6: a rejected stream keeps its m= line with port 0 and its formats."""
    return MediaDescription(
        media=md.media,
        port=0,
        proto=md.proto,
        formats=[_bare_format(fmt.payload_type) for fmt in md.formats],
        raw_formats=list(md.raw_formats),
    )


def negotiate(
    offer: SessionDescription,
    supported: Sequence[str | CodecDescription] = ("PCMU", "PCMA"),
    *,
    local_address: str,
    local_port: int,
    session_id: int | None = None,
    session_version: int = 0,
    username: str = "-",
    comfort_noise: bool = True,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer an SDP offer (the UAS side of RFC 3264 s.6).

    The first audio m= line that uses RTP/AVP (or RTP/AVPF), has a non-zero port and
    lists a codec we support is accepted; its codec is the first of the offer's
    formats that is in ``supported`` (the offerer's preference wins). A codec
    matches by encoding name (case-insensitive) and, for codecs whose rate is
    fixed (PCMU, PCMA, G722, opus/48000/2...) or that are given as a
    :class:`CodecDescription`, clock rate and channels; a dynamic payload type
    is answered with the offer's number (RFC 3264 s.6.1).

    The answer lists that codec (with our ``a=fmtp`` for it, e.g. Opus's), then,
    when offered at the codec's clock rate, telephone-event (RFC 4733) and
    comfort noise (``CN``, RFC 3389) under the offerer's payload types, each with
    an ``a=rtpmap``; ``a=fmtp:<te> 0-16``, ``a=ptime`` (the offer's, else 20; a
    ptime Opus cannot carry gives 20) and our direction (sendonly is answered
    with recvonly, recvonly with sendonly, inactive with inactive). Every other
    m= line is answered with port 0, so the answer has as many m= lines as the
    offer, in the same order (RFC 3264 s.6). ``c=`` with our address is written
    at session level; ``s=-`` and ``t=0 0``.

    Args:
        offer: The parsed offer.
        supported: Codecs we can send and receive: names (``"PCMU"``, ``"G722"``,
            ``"opus"``, case-insensitive) or codec objects with the attributes of
            :class:`CodecDescription`. Only a filter: the offer's order decides.
        local_address: Our IPv4 or IPv6 address (or host name) for ``o=`` and ``c=``.
        local_port: Our RTP port.
        session_id: ``o=`` session id; a random one when None. Keep it for the
            answers to later re-offers of the same dialog.
        session_version: ``o=`` session version; increase it for every new answer
            in the dialog that changes something.
        username: ``o=`` username.
        comfort_noise: Accept comfort noise when offered.

    Returns:
        (answer, negotiated media of the accepted stream).

    Raises:
        NoCommonCodec: No audio stream can be accepted; the message says why for
            each audio m= line. A UAS answers 488 Not Acceptable Here.
        ValueError: ``supported`` names telephone-event or CN.
    """
    wanted = _wanted_list(supported)
    reasons: list[str] = []
    chosen: tuple[int, MediaFormat, _Wanted, str] | None = None
    for index, md in enumerate(offer.media):
        if md.media.lower() != "audio":
            continue
        where = f"m= line {index + 1}"
        if md.port == 0:
            reasons.append(f"{where} is disabled (port 0)")
            continue
        if md.proto.upper() not in _PLAIN_RTP:
            reasons.append(f"{where} uses {md.proto}, not RTP/AVP")
            continue
        address = md.connection_address or offer.connection_address
        if address is None:
            reasons.append(f"{where} has no connection address")
            continue
        found = next(((fmt, w) for fmt in md.formats if (w := _match(fmt, wanted))), None)
        if found is None:
            names = ", ".join(w.name for w in wanted)
            reasons.append(f"{where} offers {_describe(md.formats)}; we support {names}")
            continue
        chosen = (index, found[0], found[1], address)
        break
    if chosen is None:
        raise NoCommonCodec(
            "no usable audio stream in the offer: " + ("; ".join(reasons) or "no audio m= line")
        )

    index, codec, ours, address = chosen
    offered_md = offer.media[index]
    offered_direction = offered_md.direction or offer.direction or "sendrecv"
    our_direction = _answer_direction(offered_direction)
    host = _host_of(address)
    encoding_name = _canonical(codec.encoding_name)
    ptime = _ptime_of(offered_md, encoding_name)
    te_pt = _telephone_event_pt(offered_md.formats, codec.clock_rate)
    cn_pt = _format_pt(offered_md.formats, "cn", codec.clock_rate) if comfort_noise else None

    formats = [
        MediaFormat(
            codec.payload_type, encoding_name, codec.clock_rate, codec.channels, fmtp=ours.fmtp
        )
    ]
    if te_pt is not None:
        formats.append(
            MediaFormat(te_pt, "telephone-event", codec.clock_rate, fmtp=_TELEPHONE_EVENT_FMTP)
        )
    if cn_pt is not None:
        formats.append(MediaFormat(cn_pt, "CN", codec.clock_rate))
    accepted = MediaDescription(
        media=offered_md.media,
        port=local_port,
        proto=offered_md.proto,
        formats=formats,
        direction=our_direction,
        ptime=ptime,
    )
    answer = SessionDescription(
        version=0,
        origin=_own_origin(username, session_id, session_version, local_address),
        session_name="-",
        connection_address=local_address,
        timing=[(0, 0)],
        media=[accepted if i == index else _rejected(md) for i, md in enumerate(offer.media)],
    )
    negotiated = NegotiatedMedia(
        remote_address=(host, offered_md.port),
        payload_type=codec.payload_type,
        encoding_name=encoding_name,
        clock_rate=codec.clock_rate,
        telephone_event_pt=te_pt,
        ptime=ptime,
        direction=our_direction,
        on_hold=host in HOLD_ADDRESSES or offered_direction in ("sendonly", "inactive"),
        channels=codec.channels,
        fmtp=codec.fmtp,
        cn_pt=cn_pt,
    )
    return answer, negotiated


class _PayloadTypes:
    """Hands out dynamic payload types 96-127 that are not taken yet."""

    def __init__(self, taken: set[int]) -> None:
        self._taken = taken

    def take(self, pt: int) -> None:
        self._taken.add(pt)

    def next(self) -> int:
        for pt in range(_FIRST_DYNAMIC_PT, 128):
            if pt not in self._taken:
                self._taken.add(pt)
                return pt
        raise ValueError("no dynamic RTP payload type (96-127) is left")


def create_offer(
    *,
    local_address: str,
    local_port: int,
    codecs: Sequence[str | CodecDescription] = ("PCMU", "PCMA"),
    telephone_event_pt: int | None = 101,
    ptime: int = 20,
    session_id: int | None = None,
    session_version: int = 0,
    username: str = "-",
    comfort_noise: bool = True,
) -> SessionDescription:
    """Build an SDP offer with one sendrecv audio stream (the UAC side of RFC 3264 s.5).

    The m= line lists the codecs in ``codecs`` order: static ones under their
    RFC 3551 payload type (PCMU 0, PCMA 8, G722 9), dynamic ones (Opus) under
    the lowest free numbers from 96, each with ``a=rtpmap`` and its ``a=fmtp``.
    Then comfort noise ``13 CN/8000`` (RFC 3389) when an 8000 Hz codec is
    offered, and telephone-event at every clock rate among the codecs: RFC 4733
    s.2.1 wants the events' clock to be the audio's, so an Opus offer has
    ``telephone-event/48000`` too. ``telephone_event_pt`` numbers the one at
    8000 Hz (or, with no 8000 Hz codec, at the first codec's rate); the others
    take free dynamic numbers.

    Args:
        local_address: Our IPv4 or IPv6 address (or host name) for ``o=`` and ``c=``.
        local_port: Our RTP port.
        codecs: Codecs in our preference order: names with a static payload type
            or known to us (``"opus"``, written with :data:`OPUS_FMTP`), or codec
            objects with the attributes of :class:`CodecDescription`.
        telephone_event_pt: Payload type for telephone-event (see above), or
            None to offer no telephone-event.
        ptime: Packet time we want to receive, in ms.
        session_id: ``o=`` session id; a random one when None.
        session_version: ``o=`` session version.
        username: ``o=`` username.
        comfort_noise: Offer ``CN/8000`` (we play it as silence).

    Returns:
        The offer; serialize it for the INVITE body.

    Raises:
        ValueError: A codec name has no static payload type and is not known, a
            name is telephone-event or CN, the list is empty, telephone_event_pt
            is outside 0-127 or taken by a codec, no dynamic payload type is left,
            or ptime < 1.
    """
    wanted: list[_Wanted] = []
    for codec in codecs:
        w = _wanted(codec)
        if w.static_pt is None and w.clock_rate == 0:
            raise ValueError(f"codec {codec!r} has no static RTP payload type and no known rtpmap")
        if not any(
            (x.key, x.clock_rate, x.channels) == (w.key, w.clock_rate, w.channels) for x in wanted
        ):
            wanted.append(w)
    if not wanted:
        raise ValueError("create_offer needs at least one codec")
    if ptime < 1:
        raise ValueError(f"ptime must be at least 1 ms, got {ptime}")
    static = {w.static_pt for w in wanted if w.static_pt is not None}
    if telephone_event_pt is not None:
        if not 0 <= telephone_event_pt <= 127:
            raise ValueError(f"telephone_event_pt {telephone_event_pt} is outside 0-127")
        if telephone_event_pt in static:
            raise ValueError(f"telephone_event_pt {telephone_event_pt} is used by a codec")
    numbers = _PayloadTypes(static | {telephone_event_pt} - {None})

    formats: list[MediaFormat] = []
    for w in wanted:
        pt = w.static_pt if w.static_pt is not None else numbers.next()
        formats.append(MediaFormat(pt, w.name, w.clock_rate, w.channels, fmtp=w.fmtp))
    rates = list(dict.fromkeys(fmt.clock_rate for fmt in formats))
    if comfort_noise and 8000 in rates and _CN_PT not in static | {telephone_event_pt}:
        formats.append(MediaFormat(_CN_PT, "CN", 8000))
    if telephone_event_pt is not None:
        first = 8000 if 8000 in rates else rates[0]
        for rate in [first] + [r for r in rates if r != first]:
            pt = telephone_event_pt if rate == first else numbers.next()
            formats.append(MediaFormat(pt, "telephone-event", rate, fmtp=_TELEPHONE_EVENT_FMTP))
    return SessionDescription(
        version=0,
        origin=_own_origin(username, session_id, session_version, local_address),
        session_name="-",
        connection_address=local_address,
        timing=[(0, 0)],
        media=[
            MediaDescription(
                media="audio",
                port=local_port,
                proto="RTP/AVP",
                formats=formats,
                direction="sendrecv",
                ptime=ptime,
            )
        ],
    )


def _offered_codecs(md: MediaDescription) -> list[_Wanted]:
    """The codecs of one of our offered m= lines, to match the answer against."""
    wanted = []
    for fmt in md.formats:
        key = fmt.encoding_name.upper()
        if not key or key in _NOT_A_CODEC:
            continue
        fixed = _FIXED_RATE.get(key)
        strict = fixed is not None or fmt.has_rtpmap
        wanted.append(
            _Wanted(key, _canonical(fmt.encoding_name), fmt.clock_rate, fmt.channels, fmt.fmtp,
                    fmt.payload_type if fmt.payload_type < _FIRST_DYNAMIC_PT else None, strict)
        )  # fmt: skip
    return wanted


def apply_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedMedia:
    """Read the answer to our offer (the UAC side, RFC 3264 s.7).

    The m= lines of the answer pair up with those of the offer by position. The
    first audio stream that both sides kept (non-zero ports) and whose answer
    lists a codec we offered is used; the codec is the first such format in the
    answer (same encoding name, clock rate and channels as offered), with the
    answer's payload type and fmtp. ptime is the answer's (what the peer wants to
    receive), else 20. telephone-event and comfort noise count when the answer
    has them at the codec's clock rate (CN only if we offered it).

    Args:
        offer: The offer we sent (e.g. from :func:`create_offer`).
        answer: The parsed answer.

    Returns:
        The negotiated media; ``direction`` combines our offered direction with
        the answer's.

    Raises:
        NoCommonCodec: The answer accepts no audio stream with a codec we offered.
    """
    reasons: list[str] = []
    if len(answer.media) != len(offer.media):
        reasons.append(f"the answer has {len(answer.media)} m= lines, the offer {len(offer.media)}")
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=False)):
        if ours.media.lower() != "audio" or ours.port == 0:
            continue
        where = f"m= line {index + 1}"
        if theirs.port == 0:
            reasons.append(f"{where} was rejected (port 0)")
            continue
        offered = _offered_codecs(ours)
        codec = next((fmt for fmt in theirs.formats if _match(fmt, offered)), None)
        if codec is None:
            reasons.append(f"{where} answers {_describe(theirs.formats)}")
            continue
        address = theirs.connection_address or answer.connection_address
        if address is None:
            reasons.append(f"{where} has no connection address")
            continue
        our_offered = ours.direction or offer.direction or "sendrecv"
        their_answered = theirs.direction or answer.direction or "sendrecv"
        direction = _direction_from(
            send=our_offered in ("sendrecv", "sendonly")
            and their_answered in ("sendrecv", "recvonly"),
            receive=our_offered in ("sendrecv", "recvonly")
            and their_answered in ("sendrecv", "sendonly"),
        )
        host = _host_of(address)
        encoding_name = _canonical(codec.encoding_name)
        cn_pt = None
        if _format_pt(ours.formats, "cn", codec.clock_rate) is not None:
            cn_pt = _format_pt(theirs.formats, "cn", codec.clock_rate)
        return NegotiatedMedia(
            remote_address=(host, theirs.port),
            payload_type=codec.payload_type,
            encoding_name=encoding_name,
            clock_rate=codec.clock_rate,
            telephone_event_pt=_telephone_event_pt(theirs.formats, codec.clock_rate),
            ptime=_ptime_of(theirs, encoding_name),
            direction=direction,
            on_hold=host in HOLD_ADDRESSES or their_answered in ("sendonly", "inactive"),
            channels=codec.channels,
            fmtp=codec.fmtp,
            cn_pt=cn_pt,
        )
    raise NoCommonCodec(
        "the answer accepts no audio stream with a codec we offered: "
        + ("; ".join(reasons) or "no audio m= line")
    )
