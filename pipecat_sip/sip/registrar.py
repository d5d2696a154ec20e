"""A registrar for softphones (RFC 3261 s.10.3), sans-IO, bindings in memory.

Softphones (MicroSIP, Zoiper, Linphone, PJSIP) with an account pointed at
the bot REGISTER their Contact for an address-of-record; :class:`Registrar`
keeps the bindings with their expiry (from ``now``), answers 200 with every
current binding of the AoR and its remaining ``expires``, 423 with
``Min-Expires`` for too short a lifetime, 500 for a REGISTER older than the
binding's (same Call-ID, lower CSeq), and removes bindings on ``Expires: 0``
or ``Contact: *``. :meth:`Registrar.lookup` gives the bindings of a user,
newest first, with the flow the REGISTER came on (the way back through a
NAT, or the TCP/TLS connection).

Bindings are keyed by the AoR's user part (one domain per server). Work per
REGISTER is bounded (at most ``max_bindings`` per AoR, ``max_aors`` AoRs;
the oldest binding of a full AoR makes room for a new one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.uri import SIPURI, Address

if TYPE_CHECKING:
    from pipecat_sip.sip.message import SIPRequest
    from pipecat_sip.sip.transport import Flow

__all__ = ["Binding", "Registrar", "RegistrarAnswer"]

_MAX_CONTACTS = 16


@dataclass(eq=False)
class Binding:
    """One Contact bound to an address-of-record.

    Attributes:
        aor: The AoR's key (its user part, lower case).
        contact: The Contact URI (where calls go).
        flow: Where the REGISTER came from (calls go back that way).
        expires_at: When the binding lapses, seconds (the ``now`` clock).
        call_id: The REGISTER's Call-ID.
        cseq: Its CSeq number.
        q: The contact's q value, or None.
        registered_at: When it was last refreshed, seconds.
    """

    aor: str
    contact: SIPURI
    flow: Flow
    expires_at: float
    call_id: str
    cseq: int
    q: str | None = None
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        """Seconds left, at least 0."""
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True)
class RegistrarAnswer:
    """How to answer a REGISTER.

    Attributes:
        status_code: 200, 400, 403, 423, 500 or 503.
        reason: Reason phrase, or None for the standard one.
        headers: Headers of the answer (Contact bindings, Min-Expires, Date).
        aor: The AoR key, when one was read.
        changed: Bindings added, refreshed or removed.
    """

    status_code: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    aor: str | None = None
    changed: int = 0


class Registrar:
    """Bindings of softphones that register with us.

    Args:
        min_expires: Shortest lifetime accepted, seconds (423 below it).
        max_expires: Longest lifetime granted, seconds (longer ones are cut).
        default_expires: Lifetime when the REGISTER names none, seconds.
        max_aors: Addresses-of-record kept at most (503 for a new one beyond).
        max_bindings: Bindings per AoR (the oldest gives way).

    Raises:
        ValueError: Inconsistent limits.
    """

    def __init__(
        self,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_aors: int = 1000,
        max_bindings: int = 10,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_aors = max_aors
        self.max_bindings = max_bindings
        self._bindings: dict[str, list[Binding]] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self._bindings.values())

    @property
    def aors(self) -> list[str]:
        """The AoRs with bindings (expired ones may remain until the next look)."""
        return list(self._bindings)

    def lookup(self, user: str, now: float) -> list[Binding]:
        """The live bindings of ``user``, newest first."""
        key = user.lower()
        bindings = self._purge(key, now)
        return sorted(bindings, key=lambda b: b.registered_at, reverse=True)

    def _purge(self, key: str, now: float) -> list[Binding]:
        bindings = [b for b in self._bindings.get(key, []) if b.expires_at > now]
        if bindings:
            self._bindings[key] = bindings
        else:
            self._bindings.pop(key, None)
        return bindings

    def purge(self, now: float) -> None:
        """Drop every lapsed binding."""
        for key in list(self._bindings):
            self._purge(key, now)

    def register(
        self, request: SIPRequest, flow: Flow, now: float, *, user: str | None = None
    ) -> RegistrarAnswer:
        """Process a REGISTER (RFC 3261 s.10.3 steps 5-8).

        Args:
            request: The REGISTER.
            flow: Where it came from.
            now: The time, seconds.
            user: The Digest user it authenticated as; it may only change
                its own AoR (403 otherwise). None: not authenticated.

        Returns:
            The answer to send.
        """
        try:
            to_uri = request.to.uri
            contacts = request.headers.get_list("Contact")
        except SIPParseError as exc:
            return RegistrarAnswer(400, f"Bad Request ({exc})"[:80])
        if not isinstance(to_uri, SIPURI) or not to_uri.user:
            return RegistrarAnswer(404, "Not Found (no user in To)")
        key = to_uri.user.lower()
        if user is not None and user.lower() != key:
            return RegistrarAnswer(403, "Forbidden (not your address-of-record)", aor=key)
        header_expires = _seconds(request.headers.get("Expires"))
        if len(contacts) > _MAX_CONTACTS:
            return RegistrarAnswer(400, "Bad Request (too many Contacts)", aor=key)
        bindings = self._purge(key, now)
        if any(c.strip() == "*" for c in contacts):
            # RFC 3261 s.10.3 step 6: "*" only alone and with Expires: 0.
            if len(contacts) != 1 or header_expires != 0:
                return RegistrarAnswer(400, "Bad Request (Contact: * needs Expires: 0)", aor=key)
            removed = 0
            for binding in bindings:
                if binding.call_id == request.call_id and request.cseq.seq <= binding.cseq:
                    return RegistrarAnswer(500, "Server Internal Error (CSeq out of order)")
                removed += 1
            self._bindings.pop(key, None)
            return RegistrarAnswer(200, headers=self._answer_headers(key, now), aor=key,
                                   changed=removed)  # fmt: skip
        parsed: list[tuple[Address, int]] = []
        for text in contacts:
            try:
                address = Address.parse(text)
            except SIPParseError as exc:
                return RegistrarAnswer(400, f"Bad Request (Contact: {exc})"[:80], aor=key)
            if not isinstance(address.uri, SIPURI):
                return RegistrarAnswer(400, "Bad Request (Contact is not a SIP URI)", aor=key)
            expires = _seconds(address.get_param("expires"))
            if expires is None:
                expires = header_expires
            if expires is None:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                return RegistrarAnswer(
                    423, headers=(("Min-Expires", str(self.min_expires)),), aor=key
                )
            parsed.append((address, min(expires, self.max_expires)))
        if parsed and key not in self._bindings and len(self._bindings) >= self.max_aors:
            self.purge(now)
            if len(self._bindings) >= self.max_aors:
                return RegistrarAnswer(503, "Service Unavailable (registrar full)", aor=key)
        changed = 0
        for address, expires in parsed:
            uri = address.uri
            assert isinstance(uri, SIPURI)
            existing = next((b for b in bindings if _same_contact(b.contact, uri)), None)
            if existing is not None:
                if existing.call_id == request.call_id and request.cseq.seq <= existing.cseq:
                    return RegistrarAnswer(500, "Server Internal Error (CSeq out of order)")
                bindings.remove(existing)
            changed += 1
            if expires == 0:
                continue
            bindings.append(
                Binding(
                    key,
                    uri,
                    flow,
                    now + expires,
                    request.call_id,
                    request.cseq.seq,
                    address.get_param("q"),
                    now,
                )
            )
            while len(bindings) > self.max_bindings:
                bindings.remove(min(bindings, key=lambda b: b.registered_at))
        if bindings:
            self._bindings[key] = bindings
        else:
            self._bindings.pop(key, None)
        return RegistrarAnswer(
            200, headers=self._answer_headers(key, now), aor=key, changed=changed
        )

    def _answer_headers(self, key: str, now: float) -> tuple[tuple[str, str], ...]:
        """One Contact per current binding with its remaining expires (RFC 3261 s.10.3 step 8)."""
        headers = [
            ("Contact", f"<{b.contact}>;expires={b.remaining(now)}")
            for b in self._bindings.get(key, [])
        ]
        return tuple(headers)


def _seconds(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    return min(int(text), 2**32 - 1)


def _same_contact(a: SIPURI, b: SIPURI) -> bool:
    """Contact URIs equal for binding purposes (RFC 3261 s.19.1.4, simplified)."""
    return (a.scheme, a.user, a.host.lower(), a.port, (a.get_param("transport") or "").lower()) == (
        b.scheme,
        b.user,
        b.host.lower(),
        b.port,
        (b.get_param("transport") or "").lower(),
    )
