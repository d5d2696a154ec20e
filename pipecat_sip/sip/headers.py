"""Header names and the structured header values Via and CSeq (RFC 3261 s.20, s.25.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.uri import DIGITS_RE, TOKEN_RE, format_params, parse_params

# RFC 3261 s.7.3.3 and the IANA registry: compact form -> full name.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
    "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
    "Reason", "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After",
    "Route", "RSeq", "Server", "Session-Expires", "Subject", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]  # fmt: skip
_CANONICAL = {name.lower(): name for name in _KNOWN}
_CANONICAL.update({full.lower(): full for full in COMPACT_FORMS.values()})
_CANONICAL.update({short: full for short, full in COMPACT_FORMS.items()})
#: Header name in lower case (compact forms too) -> its canonical name in lower case.
LOOKUP_KEYS = {lowered: canon.lower() for lowered, canon in _CANONICAL.items()}

# Headers whose values are comma-separated lists (RFC 3261 s.7.3.1): several
# header lines and one line with commas are equivalent.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Allow", "Allow-Events", "Contact",
        "Content-Encoding", "Content-Language", "Proxy-Require", "Record-Route", "Require",
        "Route", "Supported", "Unsupported", "Via", "In-Reply-To", "Call-Info", "Alert-Info",
        "Error-Info", "Warning",
    )
)  # fmt: skip

# Headers that may appear once only; a second value makes the request invalid
# (RFC 4475 s.3.1.2.19).
SINGLE_HEADERS = frozenset(
    name.lower()
    for name in ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type")
)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms expanded.

    Unknown names keep the spelling they arrived with (X- headers included).
    """
    return _CANONICAL.get(name.lower(), name)


# sent-by host: hostname / IPv4address / IPv6reference. "_" is let through
# (some softphones put their machine name here); received= is what we use.
_SENT_BY_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)\Z")
_SENT_PROTOCOL_RE = re.compile(r"^\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/]+)\s+(.*)$", re.S)


@dataclass
class Via:
    """One Via header value (RFC 3261 s.20.42, RFC 3581 rport).

    Attributes:
        transport: "UDP", "TCP", "TLS", ... (upper case).
        host: sent-by host (IPv6 in brackets).
        port: sent-by port, or None.
        params: branch, received, rport, maddr, ttl and extensions; `rport`
            is None when present without a value.
        protocol: "SIP/2.0".
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse `SIP/2.0/UDP host:port;branch=z9hG4bK...`.

        Raises:
            SIPParseError: The value does not follow the via-parm grammar.
        """
        m = _SENT_PROTOCOL_RE.match(text)
        if not m:
            raise SIPParseError(f"invalid Via {text!r}")
        name, version, transport, rest = m.groups()
        if not (TOKEN_RE.match(name) and TOKEN_RE.match(version) and TOKEN_RE.match(transport)):
            raise SIPParseError(f"invalid Via sent-protocol in {text!r}")
        sent_by, _, param_text = rest.partition(";")
        sent_by = sent_by.strip()
        host, port = _parse_sent_by(sent_by, text)
        params = parse_params(param_text)
        return cls(
            transport=transport.upper(),
            host=host,
            port=port,
            params=params,
            protocol=f"{name}/{version}".upper(),
        )

    @property
    def branch(self) -> str | None:
        """The branch parameter, or None."""
        return self.get_param("branch")

    def get_param(self, name: str) -> str | None:
        """Value of a parameter (case-insensitive name), or None."""
        lowered = name.lower()
        for key, value in self.params.items():
            if key.lower() == lowered:
                return value
        return None

    def has_param(self, name: str) -> bool:
        """Whether the parameter is present (case-insensitive)."""
        return any(k.lower() == name.lower() for k in self.params)

    @property
    def sent_by(self) -> str:
        """`host[:port]` as written."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


def _parse_sent_by(sent_by: str, whole: str) -> tuple[str, int | None]:
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise SIPParseError(f"invalid Via sent-by in {whole!r}")
        host, after = sent_by[: end + 1], sent_by[end + 1 :].strip()
    else:
        host, colon, port = sent_by.partition(":")
        host = host.strip()
        after = ":" + port if colon else ""
    if not _SENT_BY_HOST_RE.match(host):
        raise SIPParseError(f"invalid Via sent-by in {whole!r}")
    if not after:
        return host, None
    port_text = after[1:].strip()
    if not after.startswith(":") or not DIGITS_RE.match(port_text):
        raise SIPParseError(f"invalid Via port in {whole!r}")
    if not 0 < int(port_text) < 65536:
        raise SIPParseError(f"invalid Via port in {whole!r}")
    return host, int(port_text)


@dataclass(frozen=True)
class CSeq:
    """The CSeq header (RFC 3261 s.20.16): sequence number and method.

    Attributes:
        seq: 32-bit sequence number (0 .. 2**31-1 when we generate it).
        method: The request method, case-sensitive.
    """

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse `4711 INVITE`.

        Raises:
            SIPParseError: Not a 32-bit number followed by a method token.
        """
        parts = text.split()
        if len(parts) != 2 or not DIGITS_RE.match(parts[0]) or not TOKEN_RE.match(parts[1]):
            raise SIPParseError(f"invalid CSeq {text!r}")
        seq = int(parts[0])
        if seq >= 2**32:
            raise SIPParseError(f"CSeq number out of range in {text!r}")
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
