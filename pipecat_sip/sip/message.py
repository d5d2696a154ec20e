"""SIP requests and responses: parsing and serialization (RFC 3261 s.7, s.25).

`parse_message(data)` turns one UDP datagram into a `SIPRequest` or
`SIPResponse`, or raises `SIPParseError` carrying the status to answer with
and what could be read (enough to address a 400 Bad Request). `bytes(msg)`
serializes, always writing full header names and a Content-Length equal to
the body's length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.headers import (
    LIST_HEADERS,
    LOOKUP_KEYS,
    SINGLE_HEADERS,
    CSeq,
    Via,
    canonical_name,
)
from pipecat_sip.sip.uri import (
    DIGITS_RE,
    SIPURI,
    TOKEN_RE,
    URI,
    AbsoluteURI,
    Address,
    parse_uri,
    split_outside_quotes,
)

SIP_VERSION = "SIP/2.0"

#: Most values one Via, Route, Record-Route or Contact header list may hold; more
#: makes the message malformed (400). Max-Forwards (70 by default, RFC 3261 s.8.1.1.6)
#: keeps real Via and Route lists far shorter, and the cap bounds the work one
#: datagram can cause.
MAX_LIST_VALUES = 100

T = TypeVar("T")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}

_REQUEST_LINE_RE = re.compile(r"^([^ ]+) ([^ ]+) ([^ ]+)$")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF; a missing
# SP after the code is accepted (RFC 4475 s.3.1.1.13), a fourth digit is not.
_STATUS_LINE_RE = re.compile(r"^([^ ]+) ([0-9]{3})(?: (.*))?\Z", re.S)
_VERSION_RE = re.compile(r"^SIP/[0-9]+\.[0-9]+\Z", re.I)
# The empty line ending the headers (CRLF, or a bare LF from lenient peers).
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")


def _key(name: str) -> str:
    """The lookup key of a header name: its canonical spelling in lower case."""
    key = _EXACT_KEYS.get(name)  # the spellings code and peers use: no lower()
    if key is not None:
        return key
    lowered = name.lower()
    return _KEYS.get(lowered, lowered)


_KEYS = LOOKUP_KEYS
# Known names as spelled canonically, in lower case and compact (a fixed set:
# what arrives with another spelling takes the lower() path above).
_EXACT_KEYS = {
    spelling: key
    for lowered, key in LOOKUP_KEYS.items()
    for spelling in (lowered, canonical_name(lowered))
}


class Headers:
    """An ordered multi-map of header fields with case-insensitive names.

    Names are stored in canonical form (compact forms expanded); values are
    the text after the colon, one entry per header line. `get_list` splits
    comma-separated list headers (Via, Contact, Route, Allow, ...). Lookups
    are O(1) through an index by name; `version` changes with every
    mutation (parsed values cached by a message are keyed by it).
    """

    __slots__ = ("_items", "_index", "version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), str(v)) for n, v in items]
        self.version = 0
        self._reindex()

    @classmethod
    def _parsed(cls, items: list[tuple[str, str]], index: dict[str, list[int]]) -> Headers:
        """Headers from lines already in canonical form and their index (the parser's)."""
        h = cls.__new__(cls)
        h._items = items
        h._index = index
        h.version = 1
        return h

    def _reindex(self) -> None:
        index: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(self._items):
            index.setdefault(name.lower(), []).append(i)
        self._index = index
        self.version += 1

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header, or `default`."""
        positions = self._index.get(_key(name))
        return self._items[positions[0]][1] if positions else default

    def get_all(self, name: str) -> list[str]:
        """Every line's value of a header, in order (not split on commas)."""
        items = self._items
        return [items[i][1] for i in self._index.get(_key(name), ())]

    def count(self, name: str) -> int:
        """How many lines the header has."""
        return len(self._index.get(_key(name), ()))

    def get_list(self, name: str) -> list[str]:
        """All values of a list header, split on commas outside quotes and <...>.

        Raises:
            SIPParseError: A quoted string or <...> is unterminated, or there
                are more than ``MAX_LIST_VALUES`` values.
        """
        values: list[str] = []
        for line in self.get_all(name):
            values.extend(v for v in split_outside_quotes(line, ",") if v)
            if len(values) > MAX_LIST_VALUES:
                raise SIPParseError(f"more than {MAX_LIST_VALUES} {canonical_name(name)} values")
        return values

    def add(self, name: str, value: object) -> None:
        """Append a header line."""
        canon = canonical_name(name)
        self._items.append((canon, str(value)))
        self._index.setdefault(canon.lower(), []).append(len(self._items) - 1)
        self.version += 1

    def set(self, name: str, value: object) -> None:
        """Replace every line of a header by one line (in place of the first)."""
        canon = canonical_name(name)
        positions = self._index.get(canon.lower())
        if not positions:
            self.add(canon, value)
            return
        first = positions[0]
        drop = set(positions[1:])
        self._items[first] = (canon, str(value))
        if drop:
            self._items = [item for i, item in enumerate(self._items) if i not in drop]
        self._reindex()

    def remove(self, name: str) -> None:
        """Remove every line of a header."""
        key = _key(name)
        if key in self._index:
            self._items = [(n, v) for n, v in self._items if n.lower() != key]
            self._reindex()

    def insert_first(self, name: str, value: object) -> None:
        """Insert a header line before all others of the same name (Via, Record-Route)."""
        canon = canonical_name(name)
        positions = self._index.get(canon.lower())
        if not positions:
            self.add(canon, value)
            return
        self._items.insert(positions[0], (canon, str(value)))
        self._reindex()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        """A shallow copy."""
        h = Headers()
        h._items = list(self._items)
        h._reindex()
        return h

    def as_dict(self) -> dict[str, list[str]]:
        """Canonical name -> list of line values, in first-seen order."""
        out: dict[str, list[str]] = {}
        for n, v in self._items:
            out.setdefault(n, []).append(v)
        return out


class SIPMessage:
    """What requests and responses share: headers, body and typed accessors.

    The typed accessors parse on access and raise `SIPParseError` for bad
    values; `parse_message` has already checked the mandatory ones.
    """

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._parsed: dict[str, tuple[Headers, int, object]] = {}

    def _cached(self, key: str, compute: Callable[[], T]) -> T:
        """A parsed header value, computed once per version of the headers."""
        headers = self.headers
        entry = self._parsed.get(key)
        if entry is not None and entry[0] is headers and entry[1] == headers.version:
            return entry[2]  # type: ignore[return-value]
        value = compute()
        self._parsed[key] = (headers, headers.version, value)
        return value

    def _address_list(self, name: str) -> list[Address]:
        values = self.headers.get_list(name)
        if len(values) > MAX_LIST_VALUES:
            raise SIPParseError(f"more than {MAX_LIST_VALUES} {name} values")
        return [Address.parse(v) for v in values]

    # --- typed accessors ---------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        """The Via values, topmost first.

        Raises:
            SIPParseError: A Via is malformed, or there are more than
                ``MAX_LIST_VALUES`` of them.
        """

        def parse() -> list[Via]:
            values = self.headers.get_list("Via")
            if len(values) > MAX_LIST_VALUES:
                raise SIPParseError(f"more than {MAX_LIST_VALUES} Via values")
            return [Via.parse(v) for v in values]

        return list(self._cached("vias", parse))

    @property
    def top_via(self) -> Via:
        """The topmost Via.

        Raises:
            SIPParseError: There is no Via.
        """

        def parse() -> Via:
            first = self.headers.get("Via")
            if first is None:
                raise SIPParseError("missing Via")
            values = split_outside_quotes(first, ",")
            if not values or not values[0]:
                raise SIPParseError("missing Via")
            return Via.parse(values[0])

        return self._cached("top_via", parse)

    @property
    def from_(self) -> Address:
        """The From address."""
        return self._cached("from", lambda: Address.parse(self._required("From")))

    @property
    def to(self) -> Address:
        """The To address."""
        return self._cached("to", lambda: Address.parse(self._required("To")))

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self._required("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        """The CSeq."""
        return self._cached("cseq", lambda: CSeq.parse(self._required("CSeq")))

    @property
    def contacts(self) -> list[Address]:
        """The Contact addresses (empty for `Contact: *`)."""

        def parse() -> list[Address]:
            if self.headers.get_list("Contact") == ["*"]:
                return []
            return self._address_list("Contact")

        return list(self._cached("contacts", parse))

    @property
    def record_route(self) -> list[Address]:
        """The Record-Route addresses, topmost first."""
        return list(self._cached("record_route", lambda: self._address_list("Record-Route")))

    @property
    def route(self) -> list[Address]:
        """The Route addresses, topmost first."""
        return list(self._cached("route", lambda: self._address_list("Route")))

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255), or None when absent."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not DIGITS_RE.match(value) or int(value) > 255:
            raise SIPParseError(f"invalid Max-Forwards {value!r}")
        return int(value)

    @property
    def content_type(self) -> str | None:
        """The media type of the body without parameters, lower case, or None."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";")[0].strip().lower()

    def option_tags(self, name: str) -> list[str]:
        """The option tags of Require, Proxy-Require, Supported or Unsupported."""
        return [t.strip() for t in self.headers.get_list(name) if t.strip()]

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SIPParseError(f"missing {name}")
        return value

    # --- serialization -----------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - overridden
        """The request or status line."""
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = [self.start_line()]
        for name, value in self.headers:
            if name.lower() != "content-length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def serialize(self) -> bytes:
        """The message as bytes for the wire (Content-Length set from the body)."""
        return bytes(self)


class SIPRequest(SIPMessage):
    """A SIP request (RFC 3261 s.7.1).

    Attributes:
        method: The method, case-sensitive ("INVITE").
        uri: The Request-URI.
    """

    def __init__(
        self, method: str, uri: URI, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        """`Method Request-URI SIP/2.0`."""
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<SIPRequest {self.method} {self.uri}>"


class SIPResponse(SIPMessage):
    """A SIP response (RFC 3261 s.7.2).

    Attributes:
        status_code: 100-699.
        reason: The reason phrase.
    """

    def __init__(
        self,
        status_code: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status_code = status_code
        self.reason = reason if reason is not None else REASON_PHRASES.get(status_code, "")

    def start_line(self) -> str:
        """`SIP/2.0 Status-Code Reason-Phrase`."""
        return f"{SIP_VERSION} {self.status_code} {self.reason}"

    def __repr__(self) -> str:
        return f"<SIPResponse {self.status_code} {self.reason}>"


def is_keepalive(data: bytes) -> bool:
    """Whether a datagram is a CRLF keep-alive (RFC 5626 s.3.5.1) rather than a message."""
    return not data.strip(b"\r\n \t")


def parse_message(data: bytes) -> SIPRequest | SIPResponse:
    """Parse one SIP message from a UDP datagram (RFC 3261 s.7, s.18.3).

    Leading blank lines are skipped; folded header lines are joined; compact
    header names are expanded; the body is cut to Content-Length (or is the
    rest of the datagram when the header is absent).

    Args:
        data: One datagram.

    Returns:
        The request or response; its mandatory headers (Via, From, To,
        Call-ID, CSeq) are present and well formed.

    Raises:
        SIPParseError: The message is malformed. `status_code` is the answer
            a UAS should give; `partial` holds what was readable, or None.
    """
    data = data.lstrip(b"\r\n")  # RFC 3261 s.7.5: ignore CRLFs before the start line
    m = _HEAD_END_RE.search(data)
    head, body = (data[: m.start()], data[m.end() :]) if m else (data, b"")
    text = head.decode("utf-8", "surrogateescape")
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].strip():
        raise SIPParseError("empty message")

    msg = _parse_start_line(lines[0])
    msg.headers, header_error = _parse_header_lines(lines[1:])
    try:
        if header_error:
            raise SIPParseError(header_error)
        msg.body = _frame_body(msg.headers, body)
        _validate(msg)
    except SIPParseError as exc:
        raise SIPParseError(str(exc), exc.status_code, msg) from None
    return msg


class _BadStartLine(SIPRequest):
    """A request whose start line could not be read; kept to answer 400."""


def _parse_start_line(line: str) -> SIPRequest | SIPResponse:
    line = line.rstrip("\r")
    if line.upper().startswith("SIP/"):
        m = _STATUS_LINE_RE.match(line)
        if not m or not _VERSION_RE.match(m.group(1)):
            raise SIPParseError(f"invalid status line {line!r}")
        if m.group(1).upper() != SIP_VERSION:
            raise SIPParseError(f"unsupported SIP version {m.group(1)!r}")
        code = int(m.group(2))
        if not 100 <= code <= 699:
            raise SIPParseError(f"invalid status code {code}")
        return SIPResponse(code, m.group(3) or "")
    m = _REQUEST_LINE_RE.match(line)
    if not m or not TOKEN_RE.match(m.group(1)):
        first = line.split(" ", 1)[0]
        return _BadStartLine(first if TOKEN_RE.match(first) else "", AbsoluteURI(line))
    method, uri_text, version = m.groups()
    if not _VERSION_RE.match(version):
        return _BadStartLine(method, AbsoluteURI(line))
    request = SIPRequest(method, AbsoluteURI(uri_text))
    if version.upper() != SIP_VERSION:
        request.__class__ = _WrongVersion
        return request
    try:
        request.uri = parse_uri(uri_text)
    except SIPParseError as exc:
        request.__class__ = _BadURI if exc.status_code == 416 else _BadStartLine
        return request
    if isinstance(request.uri, SIPURI) and request.uri.headers:
        # RFC 3261 s.19.1.1 (table): headers are not allowed in a Request-URI
        # (RFC 4475 s.3.1.2.11 escruri: rejecting with 400 is acceptable).
        request.__class__ = _BadStartLine
    return request


class _WrongVersion(SIPRequest):
    """A request of another SIP version; answered 505."""


class _BadURI(SIPRequest):
    """A request with a Request-URI scheme we do not support; answered 416."""


def _parse_header_lines(lines: list[str]) -> tuple[Headers, str | None]:
    """Headers that could be read, and the first error (bad lines are skipped)."""
    items: list[tuple[str, str]] = []
    index: dict[str, list[int]] = {}
    error: str | None = None
    token = TOKEN_RE.match
    for raw in lines:
        if not raw:
            continue
        if raw[0] in " \t":  # header folding (LWS): continue the previous line
            if items:
                name, value = items[-1]
                items[-1] = (name, f"{value} {raw.strip()}".strip())
            else:
                error = error or "folded line before the first header"
            continue
        name, colon, value = raw.partition(":")
        name = name.rstrip(" \t")
        if not colon or not token(name):
            error = error or f"invalid header line {raw[:80]!r}"
            continue
        key = _key(name)
        positions = index.get(key)
        if positions is None:
            index[key] = [len(items)]
        else:
            positions.append(len(items))
        items.append((_CANONICAL_BY_KEY.get(key, name), value.strip()))
    return Headers._parsed(items, index), error


def _frame_body(headers: Headers, body: bytes) -> bytes:
    values = headers.get_all("Content-Length")
    if not values:
        return body
    text = values[0].strip()
    if not DIGITS_RE.match(text):
        raise SIPParseError(f"invalid Content-Length {text!r}")
    length = int(text)
    if length > len(body):
        raise SIPParseError(f"Content-Length {length} exceeds the {len(body)} bytes received")
    return body[:length]


_OTHER_LIST_HEADERS = LIST_HEADERS - {"via", "contact", "route", "record-route"}
_MANDATORY = tuple((_key(name), name) for name in ("Via", "From", "To", "Call-ID", "CSeq"))
# Lookup key -> canonical spelling, for the names we know (others keep theirs).
_CANONICAL_BY_KEY = {key: canonical_name(key) for key in LOOKUP_KEYS.values()}


def _validate(msg: SIPRequest | SIPResponse) -> None:
    if isinstance(msg, _BadStartLine):
        raise SIPParseError(f"invalid request line {msg.uri}")
    if isinstance(msg, _WrongVersion):
        raise SIPParseError("unsupported SIP version", 505)
    if isinstance(msg, _BadURI):
        raise SIPParseError(f"unsupported Request-URI scheme in {msg.uri}", 416)
    index = msg.headers._index
    for key, name in _MANDATORY:
        if key not in index:
            raise SIPParseError(f"missing {name}")
    for key, positions in index.items():
        if len(positions) > 1 and key in SINGLE_HEADERS:
            raise SIPParseError(f"more than one {canonical_name(key)} header")
    msg.vias  # noqa: B018 - parse to validate
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    msg.contacts  # noqa: B018 - RFC 4475 s.3.1.2.13 regbadct
    msg.route  # noqa: B018
    msg.record_route  # noqa: B018
    cseq = msg.cseq
    msg.max_forwards  # noqa: B018
    if not msg.call_id or any(c in msg.call_id for c in " \t"):
        raise SIPParseError(f"invalid Call-ID {msg.call_id!r}")
    for key in _OTHER_LIST_HEADERS.intersection(index):  # the typed ones are parsed above
        msg.headers.get_list(key)
    if isinstance(msg, SIPRequest) and cseq.method != msg.method:
        raise SIPParseError(f"CSeq method {cseq.method!r} does not match {msg.method!r}")


def make_response(
    request: SIPRequest,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, object]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SIPResponse:
    """Build a response to `request` (RFC 3261 s.8.2.6).

    Via, From, To, Call-ID and CSeq are copied as received (so this works
    for a `partial` request from `SIPParseError` too); the To tag is added
    when the request's To has none and `to_tag` is given.

    Args:
        request: The request answered.
        status_code: 100-699.
        reason: The reason phrase; the standard one when None.
        to_tag: Our tag for the To header (not on 100 Trying).
        headers: Further header lines, in order.
        body: The body.
        content_type: Content-Type of the body, written in full.

    Returns:
        The response.
    """
    h = Headers()
    for line in request.headers.get_all("Via"):
        h.add("Via", line)
    # A header missing from a `partial` request stays missing (no empty lines).
    to = request.headers.get("To")
    if to is not None and to_tag and status_code != 100:
        try:
            address = Address.parse(to)
            if address.tag is None:
                to = str(address.with_tag(to_tag))
        except SIPParseError:
            pass
    for name, value in (
        ("From", request.headers.get("From")),
        ("To", to),
        ("Call-ID", request.headers.get("Call-ID")),
        ("CSeq", request.headers.get("CSeq")),
    ):
        if value is not None:
            h.add(name, value)
    if status_code == 100 and "Timestamp" in request.headers:
        h.add("Timestamp", request.headers.get("Timestamp"))
    for name, value in headers:
        h.add(name, value)
    if body and content_type:
        h.add("Content-Type", content_type)
    return SIPResponse(status_code, reason, h, body)
