"""HTTP Digest authentication for SIP requests (RFC 3261 s.22, RFC 7616, RFC 8760).

Both sides, sans-IO:

- client: read a ``WWW-Authenticate`` / ``Proxy-Authenticate`` challenge and
  answer it with an ``Authorization`` / ``Proxy-Authorization`` value
  (:func:`digest_authorization`); :class:`DigestClient` answers the
  challenges of one request chain (an INVITE and its retries), each nonce
  once, and fails on a repeated challenge that is not ``stale``;
- server: :class:`DigestServer` challenges requests and checks their
  answers: nonces that expire (``now`` comes in), ``stale=true`` for an
  expired nonce answered with the right password, nonce counts that may
  only grow (a replayed ``nc`` is refused), and failed attempts counted per
  source address, a source with too many in a window refused outright.

Algorithms MD5 and SHA-256 (and their ``-sess`` forms), ``qop=auth`` or no
qop (RFC 2069 compatibility); ``auth-int`` is not offered.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

    from pipecat_sip.sip.message import SIPRequest, SIPResponse

__all__ = [
    "AuthDecision",
    "Credentials",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestServer",
    "digest_authorization",
    "parse_challenge",
    "parse_credentials",
]

#: Longest Authorization value read, characters (a real one is a few hundred).
MAX_CREDENTIALS_LENGTH = 4096

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


def _hash(algorithm: str) -> Callable[[bytes], hashlib._Hash]:
    """The hash function of a Digest algorithm name (``MD5``, ``SHA-256``, ``-sess`` forms)."""
    return _HASHES[algorithm.upper().removesuffix("-SESS")]


def digest_ha1(
    algorithm: str, username: str, realm: str, password: str, nonce: str = "", cnonce: str = ""
) -> str:
    """``HA1`` of RFC 7616 s.3.4.2 (for ``-sess`` algorithms, of the nonce and cnonce too)."""
    hash_ = _hash(algorithm)
    ha1 = hash_(f"{username}:{realm}:{password}".encode()).hexdigest()
    if algorithm.upper().endswith("-SESS"):
        ha1 = hash_(f"{ha1}:{nonce}:{cnonce}".encode()).hexdigest()
    return ha1


def digest_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: int | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 s.3.4.1; RFC 2069 without qop)."""
    hash_ = _hash(algorithm)
    ha2 = hash_(f"{method}:{uri}".encode()).hexdigest()
    if qop:
        text = f"{ha1}:{nonce}:{(nc or 0):08x}:{cnonce or ''}:{qop}:{ha2}"
    else:
        text = f"{ha1}:{nonce}:{ha2}"
    return hash_(text.encode()).hexdigest()


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
    qop = None
    if challenge.qop:
        if "auth" not in challenge.qop:
            raise ValueError(f"Digest qop {challenge.qop} offers no 'auth'")
        qop = "auth"
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = digest_ha1(algorithm, username, challenge.realm, password, challenge.nonce, cnonce)
    response = digest_response(
        algorithm, ha1, challenge.nonce, method, uri, qop=qop, nc=nc, cnonce=cnonce
    )
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


# --- client: the challenges of one request chain ------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What we answer Digest challenges with (a trunk's or a registrar's account).

    Attributes:
        username: The Digest user name (a trunk's "auth user", which may
            differ from the From user).
        password: The password.
        realm: Answer only challenges of this realm; None answers any.
    """

    username: str
    password: str
    realm: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=..., realm={self.realm!r})"


class DigestClient:
    """Answers the 401/407 challenges of a call's requests (RFC 3261 s.22.2-22.3).

    A challenge to a request that carried our answer for the same realm,
    without ``stale=true``, means the credentials were refused (RFC 3261
    s.22.2: "the UAC SHOULD NOT re-attempt the request with the same
    credentials"). Answers are kept per ``(header, realm)``, so a proxy's 407
    and the far end's 401 both go on the retried request, each with its own
    growing nonce count. The caller bounds how often one request is retried.

    Args:
        credentials: The account.
        cnonce: Makes client nonces (``Identifiers.token``).
    """

    def __init__(self, credentials: Credentials, cnonce: Callable[[], str]) -> None:
        self.credentials = credentials
        self._cnonce = cnonce
        self._answers: dict[tuple[str, str], list] = {}  # (header, realm) -> [challenge, nc]
        self.answered = 0
        """Challenges answered so far."""
        self.refused_reason: str | None = None
        """Why the last :meth:`answer` gave up, for the log."""

    def answer(self, response: SIPResponse, request: SIPRequest | None = None) -> bool:
        """Take the challenges of a 401/407 to ``request``; False when they must not be answered.

        Args:
            response: The 401 or 407.
            request: The request it answers (its Authorization headers tell
                a refusal from a first challenge); None: the request carried none.

        Returns:
            Whether :meth:`headers` now answers them; a False sets :attr:`refused_reason`.
        """
        code = response.status_code
        name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        header = "Authorization" if code == 401 else "Proxy-Authorization"
        values = response.headers.get_all(name)[:8]
        if not values:
            self.refused_reason = f"{code} without {name}"
            return False
        carried: dict[str, str] = {}
        if request is not None:
            for value in request.headers.get_all(header)[:8]:
                try:
                    creds = parse_credentials(value)
                except ValueError:
                    continue
                carried[creds.realm] = creds.nonce
        chosen: dict[str, DigestChallenge] = {}
        errors = []
        for value in values:
            try:
                challenge = parse_challenge(value)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if self.credentials.realm is not None and challenge.realm != self.credentials.realm:
                errors.append(f"realm {challenge.realm!r} is not ours")
                continue
            best = chosen.get(challenge.realm)
            # RFC 8760 s.2.4: the first challenge of the algorithm we prefer (SHA-256 first).
            if best is None or _rank(challenge.algorithm) < _rank(best.algorithm):
                chosen[challenge.realm] = challenge
        if not chosen:
            self.refused_reason = "challenge not understood: " + "; ".join(errors[:2])
            return False
        for realm, challenge in chosen.items():
            sent = carried.get(realm)
            if sent is not None and (not challenge.stale or sent == challenge.nonce):
                self.refused_reason = f"credentials refused ({code} again for realm {realm!r})"
                return False
        for realm, challenge in chosen.items():
            self._answers[(header, realm)] = [challenge, 0]
            self.answered += 1
        return True

    def headers(self, method: str, uri: str) -> list[tuple[str, str]]:
        """Authorization headers for a retried request (the nonce counts grow)."""
        out = []
        for (header, _realm), entry in self._answers.items():
            challenge = entry[0]
            entry[1] += 1
            try:
                value = digest_authorization(
                    challenge,
                    method,
                    uri,
                    self.credentials.username,
                    self.credentials.password,
                    nc=entry[1],
                    cnonce=self._cnonce(),
                )
            except ValueError:
                continue
            out.append((header, value))
        return out


def _rank(algorithm: str) -> int:
    return 0 if algorithm.upper().startswith("SHA-256") else 1


# --- server: challenges and checks ------------------------------------------------------


@dataclass(frozen=True)
class DigestCredentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` value (RFC 7616 s.3.4).

    Attributes:
        username: The user name.
        realm: The realm answered.
        nonce: The server nonce answered.
        uri: The digest-uri (the Request-URI as the client sent it).
        response: The hex response.
        algorithm: The algorithm (``MD5`` when absent).
        qop: ``auth``, or None (RFC 2069 style).
        nc: The nonce count, or None without qop.
        cnonce: The client nonce, or None without qop.
        opaque: The opaque value echoed, or None.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: int | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(value: str) -> DigestCredentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` header value.

    Raises:
        ValueError: Not Digest, too long, a required parameter missing, or a
            malformed nonce count.
    """
    if len(value) > MAX_CREDENTIALS_LENGTH:
        raise ValueError(f"credentials longer than {MAX_CREDENTIALS_LENGTH} characters")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"authentication scheme {scheme!r} is not Digest")
    params = _auth_params(rest)
    missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
    if missing:
        raise ValueError(f"Digest credentials without {', '.join(missing)}")
    qop = params.get("qop") or None
    nc = None
    cnonce = None
    if qop is not None:
        qop = qop.lower()
        text = params.get("nc", "")
        if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"Digest nonce count {text[:16]!r} is not 8 hex digits")
        nc = int(text, 16)
        cnonce = params.get("cnonce")
        if not cnonce:
            raise ValueError("Digest credentials with qop but no cnonce")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=params.get("opaque"),
    )


@dataclass(frozen=True)
class AuthDecision:
    """What :meth:`DigestServer.check` decided about one request.

    Attributes:
        ok: The request is authenticated; go on.
        username: The authenticated user name (when ``ok``).
        status_code: The answer when not ``ok``: 401/407 (challenge) or 403
            (the source is refused for too many failures).
        headers: Headers for that answer (the challenges).
        reason: Why, for the log ("no credentials", "wrong password",
            "stale nonce", "replayed nonce count", "too many failures", ...).
        failure: Whether this counted as a failed attempt of its source.
    """

    ok: bool
    username: str | None = None
    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    failure: bool = False


UserLookup = Callable[[str], "str | None"]
"""``lookup(username) -> password`` (None: no such user)."""


@dataclass
class _Source:
    failures: int = 0
    window_start: float = 0.0


@dataclass
class _Nonce:
    highest_nc: int = 0


class DigestServer:
    """Challenges requests and checks Digest answers (RFC 3261 s.22.4, RFC 7616, RFC 8760).

    Nonces are ``<issued ms>.<random>.<HMAC>``: the HMAC (a random secret of
    this object) proves a nonce is ours without a table; a bounded table of
    the nonces issued recently keeps the highest nonce count used with each,
    so a replayed or lower ``nc`` is refused. A nonce older than
    ``nonce_ttl_s`` (or no longer in the table) answered with the right
    password gets a new challenge with ``stale=true`` (RFC 7616 s.3.3), so
    the client retries without asking its user. A wrong password, an
    unknown user or a replay counts as a failure of the source address;
    ``max_failures`` failures within ``failure_window_s`` make every request
    of that source a 403 until the window has passed.

    Args:
        realm: The realm of our challenges.
        users: User name to password, or a function ``lookup(username) ->
            password | None``.
        algorithms: Algorithms challenged with, one ``WWW-Authenticate`` each,
            preferred first (RFC 8760 s.2.4).
        nonce_ttl_s: Seconds a nonce may be answered.
        rng: Random source for nonces and the HMAC secret (a
            ``random.Random``; default the OS's).
        proxy: Challenge as a proxy (407, ``Proxy-Authenticate``) instead of
            as a UAS (401).
        max_nonces: Nonces remembered (older ones answer stale).
        max_failures: Failures of one source within ``failure_window_s``
            before it is refused; 0 disables the limit.
        failure_window_s: The window of ``max_failures``, seconds.
        max_sources: Source addresses tracked (least recently failed dropped first).

    Attributes:
        stats: Counters "challenged", "accepted", "failed", "stale",
            "replayed", "refused".

    Raises:
        ValueError: An unknown algorithm or a non-positive lifetime.
    """

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str] | UserLookup,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonce_ttl_s: float = 300.0,
        rng: random.Random | None = None,
        proxy: bool = False,
        max_nonces: int = 4096,
        max_failures: int = 10,
        failure_window_s: float = 60.0,
        max_sources: int = 4096,
    ) -> None:
        self.realm = realm
        self.algorithms = tuple(algorithms)
        if not self.algorithms or any(
            a.upper().removesuffix("-SESS") not in _HASHES for a in self.algorithms
        ):
            raise ValueError(f"Digest algorithms must be MD5 or SHA-256, not {self.algorithms}")
        if nonce_ttl_s <= 0 or failure_window_s <= 0:
            raise ValueError("nonce_ttl_s and failure_window_s must be positive")
        self._lookup: UserLookup = users.get if isinstance(users, Mapping) else users
        self.nonce_ttl_s = nonce_ttl_s
        self.proxy = proxy
        self.max_nonces = max_nonces
        self.max_failures = max_failures
        self.failure_window_s = failure_window_s
        self.max_sources = max_sources
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self._secret = self._rng.getrandbits(256).to_bytes(32, "big")
        self._opaque = f"{self._rng.getrandbits(64):016x}"
        self._nonces: OrderedDict[str, _Nonce] = OrderedDict()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.stats: dict[str, int] = dict.fromkeys(
            ("challenged", "accepted", "failed", "stale", "replayed", "refused"), 0
        )

    @property
    def status_code(self) -> int:
        """The challenge status: 401 (UAS) or 407 (proxy)."""
        return 407 if self.proxy else 401

    # --- nonces -------------------------------------------------------------------
    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self, now: float) -> str:
        """A fresh nonce, remembered for nonce-count checks."""
        stem = f"{int(now * 1000):x}.{self._rng.getrandbits(64):016x}"
        nonce = f"{stem}.{self._mac(stem)}"
        self._nonces[nonce] = _Nonce()
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)
        return nonce

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since we issued ``nonce``, or None when it is not one of ours."""
        stem, _, mac = nonce.rpartition(".")
        issued, _, _rand = stem.partition(".")
        if not stem or not hmac.compare_digest(mac, self._mac(stem)):
            return None
        try:
            age = now - int(issued, 16) / 1000
        except ValueError:
            return None
        return age if age >= -1.0 else None

    def challenge_headers(self, now: float, *, stale: bool = False) -> tuple[tuple[str, str], ...]:
        """The ``WWW-Authenticate`` (or ``Proxy-Authenticate``) headers of a new challenge."""
        nonce = self.new_nonce(now)
        name = "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"
        out = []
        for algorithm in self.algorithms:
            value = (
                f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
                f'opaque="{self._opaque}", algorithm={algorithm}, qop="auth"'
            )
            if stale:
                value += ", stale=true"
            out.append((name, value))
        return tuple(out)

    # --- sources ------------------------------------------------------------------
    def refused(self, source: str, now: float) -> bool:
        """Whether ``source`` has failed too often lately (its requests get 403)."""
        if not self.max_failures:
            return False
        entry = self._sources.get(source)
        if entry is None:
            return False
        if now - entry.window_start >= self.failure_window_s:
            del self._sources[source]
            return False
        return entry.failures >= self.max_failures

    def failures(self, source: str) -> int:
        """Failures counted for ``source`` in its current window."""
        entry = self._sources.get(source)
        return entry.failures if entry is not None else 0

    def _fail(self, source: str, now: float) -> None:
        self.stats["failed"] += 1
        entry = self._sources.get(source)
        if entry is None or now - entry.window_start >= self.failure_window_s:
            entry = _Source(0, now)
            self._sources[source] = entry
        self._sources.move_to_end(source)
        entry.failures += 1
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)

    # --- the check ------------------------------------------------------------------
    def check(self, request: SIPRequest, source: str, now: float) -> AuthDecision:
        """Authenticate ``request`` from ``source`` (an IP address) at ``now``.

        Returns:
            ``ok`` with the user name, or the answer to send (401/407 with
            challenges, or 403 for a refused source).
        """
        if self.refused(source, now):
            self.stats["refused"] += 1
            return AuthDecision(False, status_code=403, reason="too many failures")
        header = "Proxy-Authorization" if self.proxy else "Authorization"
        ours = None
        for value in request.headers.get_all(header)[:8]:
            try:
                creds = parse_credentials(value)
            except ValueError:
                continue
            if creds.realm == self.realm:
                ours = creds
                break
        if ours is None:
            self.stats["challenged"] += 1
            return self._challenge("no credentials", now)
        return self._verify(ours, request, source, now)

    def _challenge(
        self, reason: str, now: float, *, stale: bool = False, failure: bool = False
    ) -> AuthDecision:
        return AuthDecision(
            False,
            status_code=self.status_code,
            headers=self.challenge_headers(now, stale=stale),
            reason=reason,
            failure=failure,
        )

    def _verify(
        self, creds: DigestCredentials, request: SIPRequest, source: str, now: float
    ) -> AuthDecision:
        if creds.algorithm.upper() not in {a.upper() for a in self.algorithms}:
            self._fail(source, now)
            return self._challenge(f"algorithm {creds.algorithm!r} not offered", now, failure=True)
        if creds.qop not in (None, "auth"):
            self._fail(source, now)
            return self._challenge(f"qop {creds.qop!r} not offered", now, failure=True)
        if not _same_uri(creds.uri, str(request.uri)):
            self._fail(source, now)
            return self._challenge("digest-uri is not the Request-URI", now, failure=True)
        password = self._lookup(creds.username) if creds.username else None
        if password is None:
            self._fail(source, now)
            return self._challenge("unknown user", now, failure=True)
        ha1 = digest_ha1(
            creds.algorithm, creds.username, self.realm, password, creds.nonce, creds.cnonce or ""
        )
        expected = digest_response(
            creds.algorithm,
            ha1,
            creds.nonce,
            request.method,
            creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        if not hmac.compare_digest(expected, creds.response):
            self._fail(source, now)
            return self._challenge("wrong password", now, failure=True)
        age = self._nonce_age(creds.nonce, now)
        if age is None:  # right password, but not a nonce of ours
            self._fail(source, now)
            return self._challenge("nonce not issued here", now, failure=True)
        state = self._nonces.get(creds.nonce)
        if age > self.nonce_ttl_s or state is None:
            self.stats["stale"] += 1
            return self._challenge("stale nonce", now, stale=True)
        nc = creds.nc if creds.nc is not None else 1
        if nc <= state.highest_nc:
            self.stats["replayed"] += 1
            self._fail(source, now)
            return self._challenge(f"replayed nonce count {nc}", now, failure=True)
        # Without qop there is no count: the nonce is good for one request.
        state.highest_nc = nc if creds.qop else 2**32
        self._nonces.move_to_end(creds.nonce)
        self.stats["accepted"] += 1
        return AuthDecision(True, username=creds.username)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """Whether the digest-uri names the Request-URI (RFC 7616 s.3.4.6), as text or parsed."""
    if digest_uri == request_uri:
        return True
    from pipecat_sip.sip.uri import SIPURI  # local: uri.py does not import this module

    try:
        a, b = SIPURI.parse(digest_uri), SIPURI.parse(request_uri)
    except Exception:
        return False
    return (a.scheme, a.user, a.host.lower(), a.port) == (b.scheme, b.user, b.host.lower(), b.port)


def users_from_text(text: str) -> dict[str, str]:
    """Users from a ``SIP_AUTH_USERS`` file: one ``user:password`` a line, ``#`` comments.

    Raises:
        ValueError: A line without ``:``, or an empty user name (the message
            gives the line number, never the password).
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        user = user.strip()
        if not colon or not user or not password:
            raise ValueError(f"line {number} is not user:password")
        users[user] = password
    return users
