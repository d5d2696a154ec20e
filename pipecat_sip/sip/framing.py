"""SIP message framing on a byte stream (RFC 3261 s.18.3, RFC 5626 s.3.5.1), sans-IO.

Over TCP and TLS, SIP messages follow each other on one byte stream; each
one ends where its Content-Length says (RFC 3261 s.18.3: "the
Content-Length header field MUST be used with stream oriented
transports"). Between messages a peer may send CRLFs: RFC 5626 s.3.5.1
keep-alives, a "ping" of a double CRLF answered by a "pong" of a single
CRLF, and stray CRLFs before a start line (RFC 3261 s.7.5).

:class:`StreamFramer` takes the bytes as they arrive (``receive(data,
now)``), in any split: a message cut across reads, or several in one, and
returns what it found as events: :class:`Message`, :class:`Ping`,
:class:`Pong`, :class:`Oversized` (a message whose headers could be read but
whose size is over the limit: its body is skipped so the stream goes on, and
the caller may answer 413), and :class:`StreamError` (the stream cannot be
framed any more and must be closed: headers over their limit, a missing or
bad Content-Length, a body too large to skip, or a message that did not
complete in time). After a :class:`StreamError` the framer ignores input.

Bounds, so that a peer cannot hold memory or the connection open: the
head (start line and headers) of a message is at most ``max_header_bytes``,
the whole message at most ``max_message_size``, CRLFs between messages at
most ``max_blank_bytes`` per gap, and a message begun must be complete within
``message_timeout`` seconds of its first byte (a "slowloris" peer that trickles
a byte at a time is closed then): :meth:`StreamFramer.deadline` says when,
and :meth:`StreamFramer.check_timeout` is called with ``now`` by the I/O layer.

Example:
    ```python
    framer = StreamFramer()
    for event in framer.receive(chunk, now):
        if isinstance(event, Message):
            ua.receive(event.data, flow, now)
        elif isinstance(event, Ping):
            write(PONG)
        elif isinstance(event, StreamError):
            close()
    ```
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_BLANK_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_SKIP_BYTES",
    "DEFAULT_MESSAGE_TIMEOUT",
    "PING",
    "PONG",
    "FrameEvent",
    "Message",
    "Oversized",
    "Ping",
    "Pong",
    "StreamError",
    "StreamFramer",
]

PING = b"\r\n\r\n"
"""RFC 5626 s.3.5.1 keep-alive request on a stream: a double CRLF."""
PONG = b"\r\n"
"""RFC 5626 s.3.5.1 keep-alive answer on a stream: a single CRLF."""

#: Largest message accepted, bytes (head and body).
DEFAULT_MAX_MESSAGE_SIZE = 16384
#: Largest head (start line and headers with their final blank line), bytes.
DEFAULT_MAX_HEADER_BYTES = 8192
#: Seconds a message may take from its first byte to its last.
DEFAULT_MESSAGE_TIMEOUT = 10.0
#: Largest body of an oversized message skipped (answered 413) rather than closed on, bytes.
DEFAULT_MAX_SKIP_BYTES = 1 << 20
#: Most CRLF bytes accepted between two messages.
DEFAULT_MAX_BLANK_BYTES = 64

# The head ends at the first empty line; bare LF line ends are tolerated as the
# datagram parser tolerates them (pipecat_sip.sip.message).
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
# Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT   (RFC 3261 s.20.14, s.25.1)
_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE)
_MAX_LENGTH_DIGITS = 10
# A header line continued on the next one (RFC 3261 s.7.3.1: LWS with a line end).
_FOLD_RE = re.compile(rb"\r?\n[ \t]+")


@dataclass(frozen=True, slots=True)
class Message:
    """One complete SIP message: its head and exactly Content-Length bytes of body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A double-CRLF keep-alive between messages: answer with :data:`PONG` (RFC 5626 s.4.4.1)."""


@dataclass(frozen=True, slots=True)
class Pong:
    """A single CRLF between messages: the answer to our ping (RFC 5626 s.4.4.1)."""


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message over ``max_message_size``; its body is being skipped, the stream goes on.

    Attributes:
        head: The message's start line and headers (without the final blank
            line), enough to answer 413 Request Entity Too Large.
        size: The message's size as its Content-Length announced it, bytes.
    """

    head: bytes
    size: int


@dataclass(frozen=True, slots=True)
class StreamError:
    """The stream cannot be framed any more: close it.

    Attributes:
        reason: Why, for the log ("headers longer than 8192 bytes", ...).
        kind: "headers_too_long", "bad_content_length", "too_large",
            "timeout" or "blank_flood", for counters.
        head: The message's head when it could be read (a 400 can then be
            sent before closing), else None.
        status_code: The status to answer with when ``head`` is given.
    """

    reason: str
    kind: str
    head: bytes | None = None
    status_code: int = 400


FrameEvent = Message | Ping | Pong | Oversized | StreamError


class StreamFramer:
    """Splits one connection's byte stream into SIP messages and keep-alives.

    Args:
        max_message_size: Largest message accepted, bytes.
        max_header_bytes: Largest head accepted, bytes.
        message_timeout: Seconds from a message's first byte to its last.
        max_skip_bytes: Largest oversized body skipped; a larger one closes.
        max_blank_bytes: Most CRLF bytes between two messages.

    Attributes:
        messages: Messages framed.
        pings: Pings seen. ``pongs``: pongs seen.
        buffered: Bytes held now (at most about ``max_message_size`` plus one read).

    Raises:
        ValueError: A limit is not positive, or the head limit exceeds the size limit.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        message_timeout: float = DEFAULT_MESSAGE_TIMEOUT,
        max_skip_bytes: int = DEFAULT_MAX_SKIP_BYTES,
        max_blank_bytes: int = DEFAULT_MAX_BLANK_BYTES,
    ) -> None:
        if min(max_message_size, max_header_bytes, max_blank_bytes) < 1 or message_timeout <= 0:
            raise ValueError("stream framing limits must be positive")
        if max_header_bytes > max_message_size:
            raise ValueError("max_header_bytes cannot exceed max_message_size")
        self.max_message_size = max_message_size
        self.max_header_bytes = max_header_bytes
        self.message_timeout = message_timeout
        self.max_skip_bytes = max_skip_bytes
        self.max_blank_bytes = max_blank_bytes
        self.messages = 0
        self.pings = 0
        self.pongs = 0
        self.closed = False
        self._buffer = bytearray()
        self._started: float | None = None  # first byte of the message being read
        self._body_needed: int | None = None  # head read: bytes of body still expected
        self._head_len = 0
        self._skip = 0  # bytes of an oversized body still to discard
        self._blank = 0  # CRLF bytes in the current read

    @property
    def buffered(self) -> int:
        """Bytes held for the message being read."""
        return len(self._buffer)

    def deadline(self) -> float | None:
        """When the message being read times out (same clock as ``now``), or None."""
        if self.closed or self._started is None:
            return None
        return self._started + self.message_timeout

    def check_timeout(self, now: float) -> StreamError | None:
        """A :class:`StreamError` when the message being read is overdue at ``now``, else None."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        return self._fail(
            f"message not complete after {self.message_timeout:g} s ({len(self._buffer)} bytes)",
            "timeout",
        )

    def receive(self, data: bytes, now: float) -> list[FrameEvent]:
        """Take bytes read from the stream; returns what they completed, in order.

        Args:
            data: Bytes as read (any split of the stream).
            now: The current time, seconds (monotonic).

        Returns:
            The events, possibly none. A :class:`StreamError` is always the last.
        """
        if self.closed:
            return []
        overdue = self.check_timeout(now)
        if overdue is not None:
            return [overdue]
        events: list[FrameEvent] = []
        self._blank = 0
        self._take(memoryview(data), now, events)
        return events

    # --- internals --------------------------------------------------------------------
    def _take(self, view: memoryview, now: float, events: list[FrameEvent]) -> None:
        """Add bytes to the stream and frame what they complete."""
        while view and not self.closed:
            if self._skip:  # the rest of an oversized body
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                if not self._skip:
                    self._started = None
                continue
            if not self._buffer:  # between messages: keep-alives and stray CRLFs
                view = self._blanks(view, events)
                if not view or self.closed:
                    return
                self._started = now
            self._buffer += view
            view = memoryview(b"")
            while self._buffer and not self.closed and not self._skip:
                if self._body_needed is None:
                    skipped = self._read_head(events)
                    if skipped is not None:  # oversized: go on with what followed it
                        view = skipped
                        break
                    if self._body_needed is None:
                        return  # the head is not complete yet
                total = self._head_len + self._body_needed
                if len(self._buffer) < total:
                    return
                message = bytes(self._buffer[:total])
                rest = memoryview(bytes(self._buffer[total:]))
                self._buffer.clear()
                self._body_needed = None
                self._started = None
                self.messages += 1
                events.append(Message(message))
                view = rest
                break

    def _blanks(self, view: memoryview, events: list[FrameEvent]) -> memoryview:
        """Consume CRLFs between messages: pings and pongs (RFC 5626 s.4.4.1)."""
        i = 0
        n = len(view)
        while i < n and view[i] in (0x0D, 0x0A):
            if view[i : i + 4] == PING:
                self.pings += 1
                events.append(Ping())
                i += 4
                self._blank += 4
            elif view[i : i + 2] == PONG:
                self.pongs += 1
                events.append(Pong())
                i += 2
                self._blank += 2
            else:  # a bare CR or LF: tolerated whitespace (RFC 3261 s.7.5)
                i += 1
                self._blank += 1
            if self._blank > self.max_blank_bytes:
                events.append(
                    self._fail(
                        f"more than {self.max_blank_bytes} bytes of CRLF in one read", "blank_flood"
                    )
                )
                return view[n:]
        return view[i:]

    def _read_head(self, events: list[FrameEvent]) -> memoryview | None:
        """Find the head's end and read its Content-Length.

        Sets ``_body_needed`` when the head is complete and the size allowed.
        For an oversized message: reports it, starts skipping its body and
        returns the bytes that followed what was skipped (the caller frames
        them); else None.
        """
        buffer = self._buffer
        match = _HEAD_END_RE.search(buffer, 0, self.max_header_bytes + 4)
        if match is None or match.end() > self.max_header_bytes:
            if len(buffer) > self.max_header_bytes:
                events.append(
                    self._fail(
                        f"headers longer than {self.max_header_bytes} bytes", "headers_too_long"
                    )
                )
            return None
        head = bytes(buffer[: match.start()])
        head_len = match.end()
        length, problem = _content_length(head)
        if problem is not None:
            events.append(self._fail(problem, "bad_content_length", head, 400))
            return None
        assert length is not None
        size = head_len + length
        if size <= self.max_message_size:
            self._head_len = head_len
            self._body_needed = length
            return None
        if length > self.max_skip_bytes:
            events.append(
                self._fail(
                    f"message of {size} bytes is larger than {self.max_message_size}",
                    "too_large",
                    head,
                    413,
                )
            )
            return None
        events.append(Oversized(head, size))
        body_here = min(len(buffer) - head_len, length)
        rest = memoryview(bytes(buffer[head_len + body_here :]))
        buffer.clear()
        self._skip = length - body_here
        if not self._skip:  # else the skipping is timed as the message would be
            self._started = None
        return rest

    def _fail(
        self, reason: str, kind: str, head: bytes | None = None, status: int = 400
    ) -> StreamError:
        self.closed = True
        self._buffer = bytearray()
        self._started = None
        return StreamError(reason, kind, head, status)


def _content_length(head: bytes) -> tuple[int | None, str | None]:
    """(length, None), or (None, why) when it is missing, repeated differently or not a number."""
    found: int | None = None
    for line in _FOLD_RE.sub(b" ", head).split(b"\n"):
        match = _CONTENT_LENGTH_RE.match(line.rstrip(b"\r"))
        if match is None:
            continue
        text = match.group(1)
        if not text.isdigit() or len(text) > _MAX_LENGTH_DIGITS:
            return None, f"invalid Content-Length {text[:20]!r}"
        value = int(text)
        if found is not None and found != value:
            return None, "Content-Length given twice with different values"
        found = value
    if found is None:
        return None, "no Content-Length on a stream (RFC 3261 s.18.3)"
    return found, None
