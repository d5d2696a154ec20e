"""Locating SIP servers (RFC 3263 s.4): transport, port and address selection, sans-IO.

RFC 3263 turns a SIP URI into an ordered list of ``(transport, ip, port)``
destinations through up to three rounds of DNS lookups: NAPTR on the domain
(s.4.1), SRV on the names the NAPTR records point to, or on ``_sip._udp`` /
``_sip._tcp`` / ``_sips._tcp`` when there are none (s.4.1, s.4.2), then A
and AAAA on each SRV target, or on the domain itself when there is no SRV
record (s.4.2). A numeric IP address skips every lookup; an explicit port
skips NAPTR and SRV.

This module does no I/O. :class:`ServerLocation` is a small state machine
(states ``naptr`` -> ``srv`` -> ``address`` -> ``done``, as a table) that
says which queries to run next (:meth:`ServerLocation.queries`) and takes
their answers as plain record values (:meth:`ServerLocation.receive`,
:meth:`ServerLocation.fail`). All queries of one round are independent, so
the asyncio layer (``pipecat_sip.resolver``) runs them concurrently: a
location takes at most three round trips. When it is done,
:meth:`ServerLocation.destinations` gives the ordered list, and a
:class:`TargetList` walks it on failure (timeout, transport error, 503:
RFC 3263 s.4.3).

Why a state machine rather than a set of pure functions the async layer
calls in order: the branching (no NAPTR -> SRV per transport; no SRV -> A/AAAA
with the default port; a NAPTR whose SRV name is empty -> the next one) then
lives here, next to the RFC text, and is tested with a dict of fake records;
the async layer is a loop of "run these queries, hand back the answers".

Every answer is bounded before it is used: at most :data:`MAX_RECORDS` records
per answer, :data:`MAX_SRV_NAMES` SRV names, :data:`MAX_TARGETS` SRV targets,
:data:`MAX_ADDRESSES_PER_HOST` addresses per host and :data:`MAX_DESTINATIONS`
destinations in all, so one hostile DNS answer costs a fixed amount of work.
What would be logged is kept in :attr:`ServerLocation.notes` (bounded too).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from pipecat_sip.sip.errors import LocalProtocolError
from pipecat_sip.sip.uri import SIPURI

#: Transports this module knows, in the default preference order.
TRANSPORTS = ("udp", "tcp", "tls")
#: NAPTR services (RFC 3263 s.4.1, the "D2X" resolution services) and their transport.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
#: SRV service names per transport (RFC 3263 s.4.1, RFC 2782 ``_Service._Proto.Name``).
SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
#: Default ports per transport (RFC 3261 s.19.1.2).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

#: Records used from one DNS answer; the rest are ignored (and noted).
MAX_RECORDS = 32
#: SRV names queried after NAPTR (distinct replacements).
MAX_SRV_NAMES = 6
#: Distinct SRV targets whose addresses are looked up.
MAX_TARGETS = 12
#: Addresses used per host name (per A or AAAA answer).
MAX_ADDRESSES_PER_HOST = 8
#: Destinations in one location result.
MAX_DESTINATIONS = 32
#: Notes kept per location; later ones are counted in ``notes_dropped``.
MAX_NOTES = 32

# hostname = *( domainlabel "." ) toplabel [ "." ]   (RFC 3261 s.25.1)
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum; SRV owner
# names also have "_" labels (RFC 2782). A DNS name is at most 253 characters.
_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\Z")


class LocationError(Exception):
    """No destination could be found for a URI (a UAC reports this as a local 503/408).

    Attributes:
        notes: What was tried and why each step failed, for the log.
    """

    def __init__(self, message: str, notes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.notes = list(notes)


@dataclass(frozen=True)
class NAPTRRecord:
    """One NAPTR record's fields (RFC 3403 s.4.1).

    Attributes:
        order: Lower first; records of a higher order are backups.
        preference: Lower first among records of the same order.
        flags: "s" (the replacement is an SRV name) is the only one SIP uses.
        service: "SIP+D2U", "SIP+D2T", "SIPS+D2T", ... (RFC 3263 s.4.1).
        regexp: Must be empty for SIP; records with one are ignored.
        replacement: The SRV name to query, e.g. ``_sip._udp.example.com``.
    """

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True)
class SRVRecord:
    """One SRV record's fields (RFC 2782).

    Attributes:
        priority: Lower first.
        weight: Relative chance among records of the same priority.
        port: Port of the service, 1-65535 (0 is ignored).
        target: Host name of the server; "." means "no such service here".
    """

    priority: int
    weight: int
    port: int
    target: str


class Destination(NamedTuple):
    """One place to send a request to (RFC 3263 s.4.2).

    Attributes:
        transport: "udp", "tcp" or "tls".
        ip: IPv4 or IPv6 address (no brackets).
        port: Port, 1-65535.
        hostname: The name that resolved to ``ip`` (SRV target or URI host),
            or the IP address itself for a numeric URI.
    """

    transport: str
    ip: str
    port: int
    hostname: str


class Query(NamedTuple):
    """One DNS query to run: ``name`` (no final dot, lower case) and ``rdtype``.

    ``rdtype`` is "NAPTR", "SRV", "A" or "AAAA".
    """

    name: str
    rdtype: str


Record = NAPTRRecord | SRVRecord | str


class RandomLike(Protocol):
    """What weighted SRV selection needs from a random source (`random.Random`)."""

    def randint(self, a: int, b: int) -> int:
        """A uniform integer N with a <= N <= b."""
        ...


def normalize_name(name: str) -> str | None:
    """A DNS name in lower case without the final dot, or None when it is not a host name.

    Args:
        name: A name from a URI or a DNS record (dnspython's text form, where
            unusual bytes appear as backslash-DDD escapes and are refused here).

    Returns:
        The name, or None when it is empty, ".", longer than 253 characters,
        or has a label that is not letters, digits, "-" and "_".
    """
    name = name.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    if not all(_LABEL_RE.match(label) for label in name.split(".")):
        return None
    return name


def ip_version(host: str) -> int | None:
    """4 or 6 when `host` is a numeric IP address (brackets allowed for IPv6), else None."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def usable_address(text: str, version: int) -> str | None:
    """The address when it is a unicast IP of `version`, else None (0.0.0.0, multicast, ...).

    Args:
        text: Address text from an A/AAAA answer or a hosts file.
        version: 4 or 6.

    Returns:
        The address in canonical form, or None (also for a scoped IPv6
        address or a value that is not text).
    """
    if not isinstance(text, str) or "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if ip.version != version or ip.is_unspecified or ip.is_multicast:
        return None
    if ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return str(ip)


def _default_transport(secure: bool, transports: Sequence[str]) -> str | None:
    """UDP for sip (TCP when we have no UDP), TLS for sips (RFC 3263 s.4.1)."""
    if secure:
        return "tls" if "tls" in transports else None
    for transport in ("udp", "tcp"):
        if transport in transports:
            return transport
    return None


def uri_transport(uri: SIPURI, transports: Sequence[str] = TRANSPORTS) -> str | None:
    """The transport the URI itself decides, or None when NAPTR/SRV must (RFC 3263 s.4.1).

    - A ``transport=`` parameter wins: "udp", "tcp" or "tls" (``transport=tcp``
      with ``sips:`` means TLS over TCP).
    - Else a numeric IP address, or an explicit port: UDP for ``sip:`` (TCP
      when UDP is not among `transports`), TLS for ``sips:``.
    - Else None: the caller looks up NAPTR.

    Args:
        uri: The URI to reach (after ``maddr`` has been considered).
        transports: The transports we can use, in our preference order.

    Returns:
        "udp", "tcp", "tls", or None.

    Raises:
        LocationError: The parameter names a transport we cannot use, or
            ``sips:`` asks for UDP (RFC 3261 s.26.2.2: sips needs TLS).
    """
    secure = uri.scheme == "sips"
    param = uri.get_param("transport")
    if param is not None:
        value = param.lower()
        if value == "tcp" and secure:
            value = "tls"
        if secure and value != "tls":
            raise LocationError(f"{uri}: a sips URI cannot use transport={param}")
        if value not in transports:
            raise LocationError(f"{uri}: transport={param} is not one we support")
        return value
    host = _target_host(uri)
    if ip_version(host) is not None or uri.port is not None:
        transport = _default_transport(secure, transports)
        if transport is None:
            raise LocationError(f"{uri}: no transport of ours can reach it")
        return transport
    return None


def _target_host(uri: SIPURI) -> str:
    """TARGET of RFC 3263 s.4: the maddr parameter when present, else the host."""
    maddr = uri.get_param("maddr")
    host = maddr if maddr else uri.host
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def order_naptr(
    records: Iterable[NAPTRRecord], *, secure: bool, transports: Sequence[str] = TRANSPORTS
) -> list[tuple[str, str]]:
    """The usable NAPTR records as ``(transport, srv_name)``, best first (RFC 3263 s.4.1).

    A ``sips:`` URI keeps only "SIPS+D2T"; a ``sip:`` URI keeps every service
    whose transport is in `transports` (TLS included, as s.4.1 advises).
    Records without the "s" flag, with a regexp, or with a bad replacement are
    dropped. Order: ascending order, then ascending preference (RFC 3403
    s.4.1); duplicates keep their first place.

    Args:
        records: The NAPTR answer (only the first :data:`MAX_RECORDS` are read).
        secure: Whether the URI is ``sips:``.
        transports: The transports we can use.

    Returns:
        ``(transport, srv_name)`` pairs, at most :data:`MAX_SRV_NAMES`.
    """
    usable: list[tuple[int, int, int, str, str]] = []
    for index, record in enumerate(_first(records, MAX_RECORDS)):
        transport = NAPTR_SERVICES.get(record.service.upper())
        if transport is None or transport not in transports:
            continue
        if secure and transport != "tls":
            continue
        if record.flags.lower() != "s" or record.regexp:
            continue
        name = normalize_name(record.replacement)
        if name is None:
            continue
        usable.append((record.order, record.preference, index, transport, name))
    usable.sort()
    out: list[tuple[str, str]] = []
    for *_, transport, name in usable:
        if (transport, name) not in out:
            out.append((transport, name))
    return out[:MAX_SRV_NAMES]


def order_srv(records: Iterable[SRVRecord], rng: RandomLike | None = None) -> list[SRVRecord]:
    """Order SRV records for trying (RFC 2782 "Usage rules"; RFC 3263 s.4.3).

    Records go by ascending priority; within one priority they are drawn one
    at a time, each with a chance proportional to its weight (weight-0 records
    are placed first in the running sum, so they get a small chance when
    others have weight). Records with target "." or port 0 are dropped.

    Args:
        records: The SRV answer (only the first :data:`MAX_RECORDS` are read).
        rng: Random source with ``randint(a, b)``; default `secrets.SystemRandom()`.

    Returns:
        The records in the order to try them.
    """
    rng = rng or secrets.SystemRandom()
    groups: dict[int, list[SRVRecord]] = {}
    for record in _first(records, MAX_RECORDS):
        if normalize_name(record.target) is None and ip_version(record.target.rstrip(".")) is None:
            continue
        if not 0 < record.port < 65536 or record.priority < 0 or record.weight < 0:
            continue
        groups.setdefault(record.priority, []).append(record)
    out: list[SRVRecord] = []
    for priority in sorted(groups):
        # Weight-0 records first, the others in their given order (RFC 2782).
        pool = sorted(groups[priority], key=lambda r: r.weight != 0)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.randint(0, total)
            running = 0
            for i, record in enumerate(pool):
                running += record.weight
                if running >= pick:
                    out.append(pool.pop(i))
                    break
    return out


def _first(items: Iterable, n: int) -> list:
    out = []
    for item in items:
        if len(out) >= n:
            break
        out.append(item)
    return out


# (state, event) -> next state. "answered": every query of the round has an answer.
_TRANSITIONS = {
    ("naptr", "answered"): "srv",
    ("srv", "answered"): "address",
    ("address", "answered"): "done",
}


class ServerLocation:
    """The RFC 3263 lookups for one URI, as a state machine over DNS answers.

    Use: while :meth:`queries` returns queries, run them (concurrently is
    fine), hand each answer to :meth:`receive` (or a failure to :meth:`fail`);
    then read :meth:`destinations`.

    States: "naptr" (NAPTR on the domain), "srv" (SRV on the NAPTR
    replacements, or on ``_sip._udp.`` etc. when NAPTR gave nothing usable,
    or on the prefix of a ``transport=`` parameter), "address" (A/AAAA on
    each SRV target, or on the domain with the default port), "done". A
    numeric URI starts "done", one with an explicit port starts "address",
    one with ``transport=`` and no port starts "srv" (RFC 3263 s.4.1, s.4.2).

    Args:
        uri: The URI to reach (Request-URI, or the first Route / outbound proxy).
        transports: The transports we can use, in our preference order
            (the order of the SRV fallback queries and of their results).
        families: IP versions we can use, preferred first: ``(4,)``, ``(6, 4)``.
            Only these are queried; addresses of one host go preferred family first.
        rng: Random source for SRV weights (`random.Random`-like); default
            `secrets.SystemRandom()`.

    Raises:
        LocationError: The URI itself rules out every transport we have.
        ValueError: `transports` or `families` is empty or unknown.

    Example:
        ```python
        location = ServerLocation(SIPURI.parse("sip:bob@example.com"))
        while queries := location.queries():
            for query in queries:
                location.receive(query, lookup(query))  # NAPTRRecord, SRVRecord or "ip"
        targets = TargetList(location.destinations())
        ```
    """

    def __init__(
        self,
        uri: SIPURI,
        *,
        transports: Sequence[str] = ("udp",),
        families: Sequence[int] = (4,),
        rng: RandomLike | None = None,
    ) -> None:
        if not transports or any(t not in TRANSPORTS for t in transports):
            raise ValueError(f"transports must be some of {TRANSPORTS}, not {tuple(transports)}")
        if not families or any(f not in (4, 6) for f in families):
            raise ValueError(f"families must be some of (4, 6), not {tuple(families)}")
        self.uri = uri
        self.transports = tuple(dict.fromkeys(transports))
        self.families = tuple(dict.fromkeys(families))
        self.secure = uri.scheme == "sips"
        self.notes: list[str] = []
        self.notes_dropped = 0
        self._rng = rng or secrets.SystemRandom()
        self._destinations: list[Destination] = []
        self._pending: dict[Query, bool] = {}  # query -> answered
        self._answers: dict[Query, list[Record]] = {}
        # What the SRV round asks: (transport, srv_name); from NAPTR or the fallback.
        self._srv_names: list[tuple[str, str]] = []
        # Whether the SRV names' transport was decided (by NAPTR or transport=), so a
        # plain A/AAAA fallback keeps it (s.4.2) instead of s.4.1's default.
        self._transport_decided = False
        # What the address round resolves: (transport, host, port) in order.
        self._hosts: list[tuple[str, str, int]] = []

        target = _target_host(uri)
        transport = uri_transport(uri, self.transports)
        version = ip_version(target)
        self.target = target if version is not None else (normalize_name(target) or "")
        if version is not None:
            self.state = "done"
            if version in self.families:
                port = uri.port or DEFAULT_PORTS[transport or "udp"]
                ip = str(ipaddress.ip_address(target))  # canonical: 2001:DB8:0::1 -> 2001:db8::1
                self._destinations.append(Destination(transport or "udp", ip, port, ip))
            else:
                self._note(f"{target} is IPv{version}, which we cannot use")
            return
        if not self.target:
            self.state = "done"
            self._note(f"{target!r} is not a host name")
            return
        if uri.port is not None:
            assert transport is not None
            self._hosts = [(transport, self.target, uri.port)]
            self._enter("address")
        elif transport is not None:
            self._srv_names = [(transport, SRV_PREFIXES[transport] + self.target)]
            self._transport_decided = True
            self._enter("srv")
        else:
            self._enter("naptr")

    # --- the caller's side ------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether every lookup has been answered."""
        return self.state == "done"

    def queries(self) -> list[Query]:
        """The queries of the current round still waiting for an answer; [] when done."""
        return [q for q, answered in self._pending.items() if not answered]

    def receive(self, query: Query, records: Iterable[Record]) -> None:
        """Take the answer to one query (an empty answer, NXDOMAIN and NODATA alike: ``[]``).

        Args:
            query: One of :meth:`queries`.
            records: `NAPTRRecord` for NAPTR, `SRVRecord` for SRV, address text
                for A/AAAA. Records of another kind, and those past
                :data:`MAX_RECORDS`, are ignored.

        Raises:
            LocalProtocolError: `query` is not one this location is waiting for.
        """
        if self._pending.get(query) is not False:
            raise LocalProtocolError(f"{query} is not a pending query (state {self.state})")
        kept: list[Record] = []
        count = 0
        for record in records:
            count += 1
            if len(kept) < MAX_RECORDS:
                kept.append(record)
        if count > MAX_RECORDS:
            self._note(f"{query.rdtype} {query.name}: used {MAX_RECORDS} of {count} records")
        self._answers[query] = kept
        self._pending[query] = True
        if all(self._pending.values()):
            self._round_done()

    def fail(self, query: Query, reason: str) -> None:
        """Take a failed query (timeout, SERVFAIL, ...): noted, then treated as empty.

        RFC 3263 moves on to the next step when a lookup yields nothing, so a
        NAPTR timeout still leads to SRV and A/AAAA lookups.

        Raises:
            LocalProtocolError: `query` is not one this location is waiting for.
        """
        self._note(f"{query.rdtype} {query.name}: {reason}")
        self.receive(query, ())

    def destinations(self) -> list[Destination]:
        """The ordered destinations to try (at most :data:`MAX_DESTINATIONS`).

        Raises:
            LocalProtocolError: Lookups are still pending.
            LocationError: Nothing was found; the message and ``notes`` say why.
        """
        if not self.done:
            raise LocalProtocolError(f"location of {self.uri} is still in state {self.state}")
        if not self._destinations:
            why = "; ".join(self.notes) if self.notes else "no address records"
            raise LocationError(f"cannot locate {self.uri}: {why}", self.notes)
        return list(self._destinations)

    def run(self, lookup: Callable[[Query], Iterable[Record] | None]) -> list[Destination]:
        """Drive the lookups with a synchronous `lookup` (tests, pre-resolved data).

        Args:
            lookup: Returns the records of a query; None counts as a failure.

        Returns:
            :meth:`destinations`.

        Raises:
            LocationError: Nothing was found.
        """
        while queries := self.queries():
            for query in queries:
                records = lookup(query)
                if records is None:
                    self.fail(query, "no answer")
                else:
                    self.receive(query, records)
        return self.destinations()

    # --- the rounds -----------------------------------------------------------------
    def _enter(self, state: str) -> None:
        """Start a round; one that needs no query is answered at once."""
        self.state = state
        self._pending = {}
        self._answers = {}
        if state == "naptr":
            self._pending[Query(self.target, "NAPTR")] = False
        elif state == "srv":
            for _, name in self._srv_names:
                self._pending[Query(name, "SRV")] = False
        elif state == "address":
            for _, host, _ in self._hosts:
                if ip_version(host) is not None:
                    continue
                for family in self.families:
                    self._pending[Query(host, "A" if family == 4 else "AAAA")] = False
        if state != "done" and not self._pending:
            self._round_done()

    def _round_done(self) -> None:
        state = self.state
        if state == "naptr":
            records = [
                r for r in self._answers[Query(self.target, "NAPTR")] if isinstance(r, NAPTRRecord)
            ]
            self._srv_names = order_naptr(records, secure=self.secure, transports=self.transports)
            self._transport_decided = bool(self._srv_names)
            if not self._srv_names:
                if records:
                    self._note(f"NAPTR {self.target}: no service we can use")
                # s.4.1: no NAPTR -> SRV for each transport we support.
                self._srv_names = [
                    (t, SRV_PREFIXES[t] + self.target)
                    for t in self.transports
                    if not self.secure or t == "tls"
                ]
        elif state == "srv":
            self._hosts = self._hosts_from_srv()
        elif state == "address":
            self._collect_destinations()
        self._enter(_TRANSITIONS[(state, "answered")])

    def _hosts_from_srv(self) -> list[tuple[str, str, int]]:
        hosts: list[tuple[str, str, int]] = []
        targets: set[str] = set()
        declined = False
        for transport, name in self._srv_names:
            records = [
                r for r in self._answers.get(Query(name, "SRV"), ()) if isinstance(r, SRVRecord)
            ]
            if any(r.target.strip() in (".", "") for r in records):
                declined = True  # RFC 2782: "." -> "decidedly not available"
                self._note(f"SRV {name}: the service is not available there")
            for record in order_srv(records, self._rng):
                host = record.target.rstrip(".").lower()
                host = host if ip_version(host) is not None else normalize_name(host)
                if host is None:
                    continue
                if host not in targets:
                    if len(targets) >= MAX_TARGETS:
                        self._note(f"SRV: more than {MAX_TARGETS} targets, the rest ignored")
                        return hosts
                    targets.add(host)
                if (transport, host, record.port) not in hosts:
                    hosts.append((transport, host, record.port))
        if not hosts and declined:
            return hosts
        if not hosts:
            # s.4.2: no SRV records -> A/AAAA of the domain, default port, with the
            # transport decided before (transport=, or NAPTR's best record), else
            # s.4.1's default.
            if self._transport_decided:
                transport = self._srv_names[0][0]
            else:
                transport = _default_transport(self.secure, self.transports)
            if transport is None:
                self._note("no SRV records, and no transport of ours for a plain lookup")
                return []
            hosts.append((transport, self.target, DEFAULT_PORTS[transport]))
        return hosts

    def _collect_destinations(self) -> None:
        out: list[Destination] = []
        seen: set[tuple[str, str, int]] = set()
        for transport, host, port in self._hosts:
            addresses: list[str] = []
            version = ip_version(host)
            if version is not None:
                if version in self.families:
                    addresses = [str(ipaddress.ip_address(host))]
            else:
                for family in self.families:
                    query = Query(host, "A" if family == 4 else "AAAA")
                    got = 0
                    for record in self._answers.get(query, ()):
                        address = usable_address(record, family)  # type: ignore[arg-type]
                        if address is None:
                            continue
                        if got >= MAX_ADDRESSES_PER_HOST:
                            self._note(
                                f"{query.rdtype} {host}: more than "
                                f"{MAX_ADDRESSES_PER_HOST} addresses, the rest ignored"
                            )
                            break
                        got += 1
                        addresses.append(address)
                if not addresses:
                    self._note(f"{host}: no usable address")
            for address in addresses:
                key = (transport, address, port)
                if key in seen:
                    continue
                if len(out) >= MAX_DESTINATIONS:
                    self._note(f"more than {MAX_DESTINATIONS} destinations, the rest ignored")
                    self._destinations = out
                    return
                seen.add(key)
                out.append(Destination(transport, address, port, host))
        self._destinations = out

    def _note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        else:
            self.notes_dropped += 1


#: Final responses after which a UAC tries the next destination (RFC 3263 s.4.3).
FAILOVER_STATUS_CODES = frozenset({503})


class TargetList:
    """The destinations of one request, walked in order on failure (RFC 3263 s.4.3).

    RFC 3263 s.4.3: when the transaction to a destination times out (Timer B
    or F), fails at the transport layer (ICMP error, refused or reset
    connection, TLS failure) or gets a 503, the client tries the next
    destination, with a new transaction (a new branch; an INVITE keeps its
    Call-ID, From tag and CSeq). A CANCEL or an ACK for a non-2xx goes to the
    destination of its INVITE, never to the next one.

    Args:
        destinations: The ordered destinations (from :meth:`ServerLocation.destinations`).

    Example:
        ```python
        targets = TargetList(destinations)
        destination = targets.current
        ...  # send; on a timeout or a 503:
        destination = targets.failed("503")  # None when every one failed
        ```
    """

    def __init__(self, destinations: Iterable[Destination]) -> None:
        self._destinations: list[Destination] = _first(destinations, MAX_DESTINATIONS)
        self._index = 0
        self.failures: list[tuple[Destination, str]] = []
        """Each destination given up on, with the reason passed to :meth:`failed`."""

    @property
    def current(self) -> Destination | None:
        """The destination to use now, or None when all have failed."""
        if self._index < len(self._destinations):
            return self._destinations[self._index]
        return None

    @property
    def exhausted(self) -> bool:
        """Whether every destination has failed."""
        return self._index >= len(self._destinations)

    @property
    def remaining(self) -> list[Destination]:
        """The current destination and those after it."""
        return self._destinations[self._index :]

    def failed(self, reason: str) -> Destination | None:
        """Give up on the current destination and move to the next.

        Args:
            reason: Why, for the log: "timeout", "transport error", "503", ...

        Returns:
            The next destination, or None when none is left.
        """
        current = self.current
        if current is not None:
            self.failures.append((current, reason))
            self._index += 1
        return self.current

    @staticmethod
    def should_fail_over(status_code: int) -> bool:
        """Whether a final response means "try the next destination" (503, RFC 3263 s.4.3).

        A local timeout (no response: Timer B/F) and a transport error also
        mean it; they have no status code of their own here.
        """
        return status_code in FAILOVER_STATUS_CODES

    def __iter__(self) -> Iterator[Destination]:
        return iter(self._destinations)

    def __len__(self) -> int:
        return len(self._destinations)

    def __repr__(self) -> str:
        return f"<TargetList {self._index}/{len(self._destinations)} {self.current}>"
