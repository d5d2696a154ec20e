"""Protection against hostile peers: source networks, rate limits, safe and bounded logs.

Every datagram may come from an attacker, so what one datagram can cost is
bounded here: the rate limiter does O(1) work per datagram and keeps at
most a fixed number of sources; text a peer chose (Call-IDs, request lines,
reason phrases) is escaped before it reaches a log line, so it cannot forge
lines or terminal sequences; and a warning that repeats is logged once per
interval with a count, so a flood of junk cannot flood the log.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

__all__ = [
    "DEFAULT_RATE_BURST",
    "DEFAULT_RATE_LIMIT",
    "MAX_TRACKED_SOURCES",
    "Network",
    "RateLimiter",
    "RepeatFilter",
    "escape",
    "in_networks",
    "parse_networks",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Default per-source request rate (requests/s) and burst for the token bucket.
DEFAULT_RATE_LIMIT = 100.0
DEFAULT_RATE_BURST = 200
#: Sources the rate limiter remembers at most; the least recently seen is forgotten first.
MAX_TRACKED_SOURCES = 10000


def parse_networks(networks: Iterable[str | Network] | str) -> tuple[Network, ...]:
    """Parse CIDR networks (`"10.0.0.0/8"`, `"192.0.2.7"`, `"2001:db8::/32"`).

    Args:
        networks: Networks as text or `ipaddress` networks; a string may hold
            several, separated by commas or spaces. Host bits are allowed
            (`10.1.2.3/8` means `10.0.0.0/8`).

    Returns:
        The networks.

    Raises:
        ValueError: One is not a network; the message names it.
    """
    if isinstance(networks, str):
        networks = networks.replace(",", " ").split()
    out: list[Network] = []
    for net in networks:
        if isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(net)
            continue
        try:
            out.append(ipaddress.ip_network(str(net).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{net!r} is not a network like 10.0.0.0/8") from None
    return tuple(out)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether IP ``host`` lies in one of ``networks`` (IPv4-mapped IPv6 counts as IPv4)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


class RateLimiter:
    """Token buckets per source IP: `rate` requests/s on average, `burst` at once.

    Pure: the caller passes the time. Work per call is O(1): the buckets are
    kept in least-recently-seen order and, past ``max_sources``, the oldest
    is forgotten (a forgotten source starts again with a full bucket), so a
    flood from spoofed addresses neither grows memory nor slows the check.

    Args:
        rate: Tokens added per second (requests/s); must be > 0.
        burst: Bucket size (requests accepted at once after a quiet period).
        max_sources: Most sources remembered.

    Raises:
        ValueError: rate <= 0, burst < 1 or max_sources < 1.
    """

    def __init__(self, rate: float, burst: int, *, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError(f"rate limit needs rate > 0 and burst >= 1, not {rate}/{burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, host: str, now: float) -> bool:
        """Take one token for `host` at time `now` (seconds); False when none is left."""
        buckets = self._buckets
        entry = buckets.get(host)
        if entry is None:
            tokens = self.burst
            if len(buckets) >= self.max_sources:
                buckets.popitem(last=False)
        else:
            tokens, last = entry
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            buckets.move_to_end(host)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        buckets[host] = (tokens, now)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(c: str) -> bool:
    code = ord(c)
    # C0 controls, DEL, C1 controls (NEL among them), and the Unicode line/paragraph separators.
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029) or c == "\\"


def escape(text: object, limit: int = 300) -> str:
    r"""Peer-supplied text made safe for one log line.

    Control characters (C0, DEL, C1 such as NEL), U+2028/U+2029 and the
    backslash are written as escapes (``\x1b``, ``\r``, ``\u2028``); the
    result is cut to ``limit`` characters (with "..." marking the cut).
    """
    s = str(text)
    if len(s) > limit:
        s = s[:limit] + "..."
    if not any(_unsafe(c) for c in s):
        return s
    return "".join(_escape_char(c) if _unsafe(c) else c for c in s)


class RepeatFilter:
    """Lets one log line of each kind through per ``interval_s`` and counts the rest.

    Args:
        interval_s: Seconds between two lines of the same kind.
        max_kinds: Most kinds remembered (kinds are fixed keys, so this is a safety net).

    Example:
        >>> f = RepeatFilter(10.0)
        >>> f.check("junk", 0.0), f.check("junk", 1.0), f.check("junk", 11.0)
        ((True, 0), (False, 0), (True, 1))
    """

    def __init__(self, interval_s: float = 10.0, *, max_kinds: int = 256) -> None:
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (last logged, suppressed since)

    def check(self, kind: str, now: float) -> tuple[bool, int]:
        """Whether to log a line of ``kind`` now, and how many were suppressed since the last."""
        entry = self._kinds.get(kind)
        if entry is None:
            if len(self._kinds) >= self.max_kinds:
                self._kinds.clear()
            self._kinds[kind] = (now, 0)
            return True, 0
        last, suppressed = entry
        if now - last >= self.interval_s:
            self._kinds[kind] = (now, 0)
            return True, suppressed
        self._kinds[kind] = (last, suppressed + 1)
        return False, 0
