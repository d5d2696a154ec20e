"""DTMF carried in SIP INFO, and its merge with RFC 4733 events (sans-IO).

Many phones and PBXs send key presses as INFO requests inside the call's
dialog instead of (or as well as) RFC 4733 telephone-events: the body is
``application/dtmf-relay`` (``Signal=5`` and ``Duration=160`` lines, the
Cisco format most peers use) or ``application/dtmf`` (just ``5``). No RFC
defines these bodies; RFC 6086 is the INFO method they ride on.

:func:`parse_dtmf_info` reads one press from such a body,
:func:`dtmf_relay_body` writes one, and :class:`DtmfMerger` decides, for
presses arriving both ways, which are the same press: a key from one source
that the other source reported within ``window_s`` is a duplicate (each
report absorbs at most one of the other source's, so "5", "5" pressed twice
stays two presses).
"""

from __future__ import annotations

from collections import deque

__all__ = ["DTMF_CONTENT_TYPES", "DtmfMerger", "dtmf_relay_body", "parse_dtmf_info"]

#: The INFO bodies read as key presses.
DTMF_CONTENT_TYPES = frozenset({"application/dtmf-relay", "application/dtmf"})

_KEYS = "0123456789*#ABCD"
# Event numbers some peers put in Signal= (RFC 4733 s.3.2 numbering).
_EVENT_KEYS = {str(i): _KEYS[i] for i in range(16)}
_MAX_BODY = 512


def parse_dtmf_info(content_type: str | None, body: bytes) -> tuple[str, int | None] | None:
    """The key press in an INFO body, or None when it carries none.

    Args:
        content_type: The INFO's Content-Type (media type, any case).
        body: The body.

    Returns:
        ``(key, duration_ms)`` with ``key`` one of ``0-9 * # A-D`` and the
        duration when given (``application/dtmf-relay``), else None.
    """
    if content_type is None or len(body) > _MAX_BODY:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if kind == "application/dtmf":
        key = text.strip().upper()
        key = _EVENT_KEYS.get(key, key) if len(key) > 1 else key
        return (key, None) if len(key) == 1 and key in _KEYS else None
    if kind != "application/dtmf-relay":
        return None
    key = None
    duration = None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "signal":
            value = value.upper()
            if value.isdigit() and len(value) <= 2:
                key = _EVENT_KEYS.get(str(int(value))) if len(value) == 2 else value
            elif len(value) == 1 and value in _KEYS:
                key = value
        elif name == "duration" and value.isdigit() and len(value) <= 6:
            duration = int(value)
    if key is None:
        return None
    return key, duration


def dtmf_relay_body(key: str, duration_ms: int = 100) -> bytes:
    """An ``application/dtmf-relay`` body for one key press.

    Raises:
        ValueError: Unknown key or a duration outside 10-5000 ms.
    """
    key = key.upper()
    if len(key) != 1 or key not in _KEYS:
        raise ValueError(f"unknown DTMF key {key!r}")
    if not 10 <= duration_ms <= 5000:
        raise ValueError(f"DTMF duration must be 10-5000 ms, got {duration_ms}")
    return f"Signal={key}\r\nDuration={duration_ms}\r\n".encode("ascii")


class DtmfMerger:
    """Reports each key press once when a peer sends it both as INFO and as RFC 4733.

    Args:
        window_s: How far apart (seconds) the two reports of one press may be.
        max_pending: Reports remembered (older ones are forgotten first).
    """

    def __init__(self, window_s: float = 1.5, max_pending: int = 32) -> None:
        self.window_s = window_s
        self._pending: deque[list] = deque(maxlen=max_pending)  # [key, source, time, matched]
        self.duplicates = 0

    def accept(self, key: str, source: str, now: float) -> bool:
        """Whether a press of ``key`` from ``source`` at ``now`` is new (report it).

        Args:
            key: The key.
            source: Where it came from ("rfc4733", "info").
            now: The time, seconds.
        """
        pending = self._pending
        while pending and now - pending[0][2] > self.window_s:
            pending.popleft()
        for entry in pending:
            if entry[0] == key and entry[1] != source and not entry[3]:
                entry[3] = True
                self.duplicates += 1
                return False
        pending.append([key, source, now, False])
        return True
