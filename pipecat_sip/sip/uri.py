"""SIP URIs and addresses (name-addr / addr-spec), RFC 3261 sections 19.1 and 25.1.

Values keep their escaped wire form, so a parsed URI serializes back to the
same text; comparisons that RFC 3261 s.19.1.4 makes case-insensitive (scheme,
host, parameter names) are done on lowered copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipecat_sip.sip.errors import SIPParseError

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
# (\Z, not $: "$" also matches before a final newline.)
TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+\Z")
# port = 1*DIGIT, and the other numbers of the grammar: ASCII digits only
# (str.isdigit() also takes "²" and "٣", which int() rejects or reads).
DIGITS_RE = re.compile(r"^[0-9]+\Z")
# hostname = *( domainlabel "." ) toplabel [ "." ]; IPv4address; IPv6reference
HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)\Z")
# Never part of a URI: white space, controls, and the delimiters of name-addr
# and quoted-string (RFC 3986 s.2; RFC 3261 s.25.1 escapes them as %HH).
_NOT_IN_URI_RE = re.compile(r'[\x00-\x20\x7f<>"]')
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
_QUOTED_STRING_RE = re.compile(r'^"((?>[^"\\]+|\\.)*+)"\Z', re.S)


# One element of a separated list: quoted strings and <...> taken whole, anything else
# up to the separator. The scan runs in the regex engine: linear, no Python loop per
# character (a 16 KB header of separators costs about as much as 16 KB of text).
_ELEMENT_RE = {
    sep: re.compile(r'(?:"(?>[^"\\]+|\\.)*+"|<[^>]*+>|[^"<' + re.escape(sep) + r"]++)*+", re.S)
    for sep in (",", ";")
}


#: Most parameters one URI, Via or address may carry (more: malformed, 400); bounds the
#: work of one header.
MAX_PARAMS = 64


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split `text` on `sep`, ignoring separators inside quotes or <...>.

    Args:
        text: A header value.
        sep: A one-character separator ("," between values, ";" between parameters).

    Returns:
        The pieces, stripped of surrounding white space; empty pieces are kept.

    Raises:
        SIPParseError: A quoted string or <...> is not closed.
    """
    if '"' not in text and "<" not in text:
        return [piece.strip() for piece in text.split(sep)]
    element = _ELEMENT_RE.get(sep) or re.compile(
        r'(?:"(?>[^"\\]+|\\.)*+"|<[^>]*+>|[^"<' + re.escape(sep) + r"]++)*+", re.S
    )
    parts: list[str] = []
    pos = 0
    n = len(text)
    while True:
        end = element.match(text, pos).end()  # type: ignore[union-attr]
        parts.append(text[pos:end].strip())
        if end >= n:
            return parts
        stop = text[end]
        if stop == '"':
            raise SIPParseError(f"unterminated quoted string in {text!r}")
        if stop == "<":
            raise SIPParseError(f"unterminated '<' in {text!r}")
        pos = end + 1


def parse_params(text: str) -> dict[str, str | None]:
    """Parse `;name=value;flag` parameters (generic-param, RFC 3261 s.25.1).

    Args:
        text: The parameters without the leading ';' (may be empty).

    Returns:
        Names (as written) to values; None for a parameter without '='.

    Raises:
        SIPParseError: A parameter name is not a token.
    """
    params: dict[str, str | None] = {}
    if not text.strip():
        return params
    pieces = split_outside_quotes(text, ";")
    if len(pieces) > MAX_PARAMS:
        raise SIPParseError(f"more than {MAX_PARAMS} parameters")
    for piece in pieces:
        if not piece:
            raise SIPParseError(f"empty parameter in {text!r}")
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not TOKEN_RE.match(name):
            raise SIPParseError(f"invalid parameter name {name!r}")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialize parameters as `;name=value;flag`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _get_param(params: dict[str, str | None], name: str) -> tuple[str | None, bool]:
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return value, True
    return None, False


@dataclass
class SIPURI:
    """A sip: or sips: URI (RFC 3261 s.19.1).

    Attributes:
        scheme: "sip" or "sips" (lower case).
        user: The user part, escaped as on the wire, or None.
        password: The password, or None.
        host: Host name, IPv4 address or bracketed IPv6 reference.
        port: Port number, or None when absent.
        params: URI parameters (transport, user, lr, maddr, ...).
        headers: URI headers after '?', as (name, value) pairs.
    """

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> SIPURI:
        """Parse a SIP-URI or SIPS-URI.

        Raises:
            SIPParseError: Not a sip/sips URI (status 416) or malformed (400).
        """
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or not TOKEN_RE.match(scheme):
            raise SIPParseError(f"invalid URI {text!r}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            raise SIPParseError(f"unsupported URI scheme {scheme!r}", 416)
        if _NOT_IN_URI_RE.search(rest):
            raise SIPParseError(f'white space, control or <>" character in URI {text!r}')
        user = password = None
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, _, pw = userinfo.partition(":")
            password = pw if _ else None
            if not user:
                raise SIPParseError(f"empty user part in URI {text!r}")
        rest, qmark, header_text = rest.partition("?")
        hostport, _, param_text = rest.partition(";")
        host, port = _split_hostport(hostport, text)
        headers: list[tuple[str, str]] = []
        if qmark:
            # headers = "?" header *( "&" header ); header = hname "=" hvalue
            for item in header_text.split("&"):
                name, _, value = item.partition("=")
                if not name:
                    raise SIPParseError(f"empty URI header name in {text!r}")
                headers.append((name, value))
        return cls(
            host=host,
            user=user,
            port=port,
            scheme=scheme,
            password=password,
            params=parse_params(param_text),
            headers=headers,
        )

    def get_param(self, name: str) -> str | None:
        """Value of a URI parameter (case-insensitive name), or None."""
        return _get_param(self.params, name)[0]

    def has_param(self, name: str) -> bool:
        """Whether the URI has the parameter (case-insensitive name)."""
        return _get_param(self.params, name)[1]

    @property
    def host_port(self) -> tuple[str, int]:
        """(host without brackets, port), the port defaulting to 5060 (5061 for sips)."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port or (5061 if self.scheme == "sips" else 5060)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(format_params(self.params))
        if self.headers:
            out += ["?", "&".join(f"{k}={v}" for k, v in self.headers)]
        return "".join(out)


@dataclass
class AbsoluteURI:
    """A URI of another scheme (tel:, urn:, http:), kept as text (RFC 3986 absoluteURI)."""

    text: str

    @property
    def scheme(self) -> str:
        """The scheme in lower case."""
        return self.text.partition(":")[0].lower()

    def __str__(self) -> str:
        return self.text


URI = SIPURI | AbsoluteURI


def parse_uri(text: str) -> URI:
    """Parse a sip:/sips: URI into `SIPURI`, any other absolute URI into `AbsoluteURI`.

    Raises:
        SIPParseError: Not a URI, or a malformed sip/sips URI.
    """
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or not TOKEN_RE.match(scheme) or not scheme[0].isalpha():
        raise SIPParseError(f"invalid URI {text!r}")
    if scheme.lower() in ("sip", "sips"):
        return SIPURI.parse(text)
    if _NOT_IN_URI_RE.search(text):
        raise SIPParseError(f"invalid URI {text!r}")
    return AbsoluteURI(text)


def _split_hostport(hostport: str, whole: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SIPParseError(f"unterminated IPv6 reference in {whole!r}")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        if after and not after.startswith(":"):
            raise SIPParseError(f"invalid host in {whole!r}")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
    if not host or not HOST_RE.match(host):
        raise SIPParseError(f"invalid host {host!r} in {whole!r}")
    if port_text is None:
        return host, None
    if not DIGITS_RE.match(port_text) or not 0 < int(port_text) < 65536:
        raise SIPParseError(f"invalid port {port_text!r} in {whole!r}")
    return host, int(port_text)


@dataclass
class Address:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route.

    Attributes:
        uri: The address's URI.
        display_name: The display name without quotes, or None.
        params: Header parameters after the URI (tag, expires, q, ...).
    """

    uri: URI
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse `"Name" <sip:u@h>;tag=x`, `Name <sip:u@h>` or `sip:u@h;tag=x`.

        Per RFC 3261 s.20.10, parameters after an addr-spec without angle
        brackets are header parameters, not URI parameters.

        Raises:
            SIPParseError: The address is malformed.
        """
        text = text.strip()
        display_name: str | None = None
        lt = _find_laquot(text)
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SIPParseError(f"unterminated '<' in address {text!r}")
            name_text = text[:lt].strip()
            if name_text.startswith('"'):
                quoted = _QUOTED_STRING_RE.match(name_text)
                if not quoted:
                    raise SIPParseError(f"invalid display name in {text!r}")
                display_name = re.sub(r"\\(.)", r"\1", quoted.group(1), flags=re.S)
            elif name_text:
                if not all(TOKEN_RE.match(w) for w in name_text.split()):
                    raise SIPParseError(f"invalid display name {name_text!r}")
                display_name = " ".join(name_text.split())
            uri = parse_uri(text[lt + 1 : gt])
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SIPParseError(f"unexpected text after '>' in {text!r}")
            params = parse_params(rest[1:])
        else:
            uri_text, _, param_text = text.partition(";")
            if "?" in uri_text or "," in uri_text:
                raise SIPParseError(f"addr-spec with '?' or ',' must use <...>: {text!r}")
            uri = parse_uri(uri_text)
            params = parse_params(param_text)
        return cls(uri=uri, display_name=display_name, params=params)

    @property
    def tag(self) -> str | None:
        """The tag parameter (RFC 3261 s.19.3), or None."""
        return _get_param(self.params, "tag")[0]

    def get_param(self, name: str) -> str | None:
        """Value of a header parameter (case-insensitive name), or None."""
        return _get_param(self.params, name)[0]

    def with_tag(self, tag: str) -> Address:
        """A copy of this address with the tag parameter set."""
        params = {k: v for k, v in self.params.items() if k.lower() != "tag"}
        params["tag"] = tag
        return Address(uri=self.uri, display_name=self.display_name, params=params)

    def __str__(self) -> str:
        out = ""
        if self.display_name is not None:
            # quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F): CR and LF cannot
            # be escaped, so they become spaces (no header injection).
            name = self.display_name.replace("\r", " ").replace("\n", " ")
            escaped = re.sub(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f"\\]', r"\\\g<0>", name)
            out = f'"{escaped}" '
        return f"{out}<{self.uri}>{format_params(self.params)}"


# Text before the first "<" outside quoted strings (a display name), matched in the regex
# engine: linear, no Python loop per character.
_BEFORE_LAQUOT_RE = re.compile(r'(?:"(?>[^"\\]+|\\.)*+"|[^"<]++)*+', re.S)


def _find_laquot(text: str) -> int:
    end = _BEFORE_LAQUOT_RE.match(text).end()  # type: ignore[union-attr]
    return end if end < len(text) and text[end] == "<" else -1
