"""HTTP Digest authentication for SIP requests (RFC 3261 s.22, RFC 7616, RFC 8760).

The client side only: read a ``WWW-Authenticate`` / ``Proxy-Authenticate``
challenge and answer it with an ``Authorization`` / ``Proxy-Authorization``
value. Algorithms MD5 and SHA-256 (and their ``-sess`` forms), ``qop=auth``
or no qop (RFC 2069 compatibility); ``auth-int`` is not offered.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

__all__ = ["DigestChallenge", "digest_authorization", "parse_challenge"]

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True)
class DigestChallenge:
    """A parsed Digest challenge.

    Attributes:
        realm: Protection realm.
        nonce: Server nonce.
        algorithm: ``MD5``, ``MD5-sess``, ``SHA-256`` or ``SHA-256-sess``.
        qop: The qop values offered (empty: none, RFC 2069 style).
        opaque: Opaque value to echo, or None.
        stale: The previous answer had a stale nonce (retry with this one).
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def _auth_params(text: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas; values may be quoted strings."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if not name or i >= n or text[i] != "=":
            raise ValueError(f"auth parameter without a value near {text[start : start + 20]!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                raise ValueError("unterminated quoted string in a challenge")
            i += 1
            params[name] = "".join(value)
        else:
            start = i
            while i < n and text[i] not in ", \t":
                i += 1
            params[name] = text[start:i]
    return params


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value.

    Raises:
        ValueError: Not a Digest challenge, a realm or nonce missing, or an
            algorithm we cannot answer.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"authentication scheme {scheme!r} is not Digest")
    params = _auth_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise ValueError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper().removesuffix("-SESS") not in _HASHES:
        raise ValueError(f"Digest algorithm {algorithm!r} is not supported")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_authorization(
    challenge: DigestChallenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The ``Authorization`` (or ``Proxy-Authorization``) value answering ``challenge``.

    Args:
        challenge: The parsed challenge.
        method: The request's method (``REGISTER``, ``INVITE``...).
        uri: The request's Request-URI, as sent.
        username: Our user name in the realm.
        password: Its password.
        nc: Nonce count (how many times this nonce was used, from 1).
        cnonce: Client nonce; a random one when None (tests pass a fixed one).

    Returns:
        ``Digest username="...", realm="...", ...``.

    Raises:
        ValueError: The challenge offers qop but not ``auth``.
    """
    algorithm = challenge.algorithm
    base = algorithm.upper().removesuffix("-SESS")
    hash_ = _HASHES[base]

    def h(text: str) -> str:
        return hash_(text.encode("utf-8")).hexdigest()

    qop = None
    if challenge.qop:
        if "auth" not in challenge.qop:
            raise ValueError(f"Digest qop {challenge.qop} offers no 'auth'")
        qop = "auth"
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop:
        response = h(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
