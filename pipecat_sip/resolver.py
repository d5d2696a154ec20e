"""Asynchronous SIP server location (RFC 3263) and host lookups, never blocking the event loop.

`ServerLocator` runs the sans-IO `pipecat_sip.sip.locate.ServerLocation`
state machine against DNS with dnspython's asyncio resolver
(``dns.asyncresolver``): the queries of one round (NAPTR; then the SRV names;
then A/AAAA for each target) run concurrently, each with its own timeout, and
the whole location has an overall deadline. Answers are kept in a small
TTL-respecting cache (bounded, least recently used first out; NXDOMAIN and
NODATA cached for a short time), and identical queries in flight at the same
moment share one lookup.

`ServerLocator.resolve_host` turns a host name in an SDP ``c=`` line into an
address once, before media starts, so no RTP send ever does a lookup; it
raises `HostResolutionError`, which a UAS answers with 488.

Name servers: the ones given (``SIP_DNS_SERVERS``, see `parse_nameservers`),
else the system's ``/etc/resolv.conf``. Names in ``/etc/hosts``, and
``localhost`` (RFC 6761 s.6.3), never go to DNS: they are answered from the
file (A/AAAA) or as empty (NAPTR/SRV), as the C library's resolver would.
Both files are read once, off the event loop.

Example:
    ```python
    locator = ServerLocator(transports=("udp",), families=(4,))
    destinations = await locator.locate("sip:alice@example.com")
    # [Destination(transport='udp', ip='198.51.100.7', port=5060, hostname='edge.example.com'), ...]
    address = await locator.resolve_host("media.example.com", 4)
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from loguru import logger

from pipecat_sip.sip.locate import (
    SRV_PREFIXES,
    TRANSPORTS,
    Destination,
    LocationError,
    NAPTRRecord,
    Query,
    RandomLike,
    Record,
    ServerLocation,
    SRVRecord,
    ip_version,
    normalize_name,
    usable_address,
)
from pipecat_sip.sip.uri import SIPURI

__all__ = [
    "Destination",
    "HostResolutionError",
    "LocationError",
    "RecordCache",
    "ServerLocator",
    "parse_hosts",
    "parse_nameservers",
]

#: Seconds one DNS query may take (all its name servers and retries together).
DEFAULT_QUERY_TIMEOUT = 2.0
#: Seconds a whole location (up to three rounds of queries) may take.
DEFAULT_LIFETIME = 6.0
#: Cached answers kept at most.
DEFAULT_CACHE_SIZE = 512
#: Longest a positive answer is cached, seconds, whatever its TTL says.
DEFAULT_MAX_TTL = 3600.0
#: How long NXDOMAIN and empty answers are cached, seconds.
DEFAULT_NEGATIVE_TTL = 30.0
#: Records converted from one DNS answer (a 64 KiB TCP answer can hold thousands).
_MAX_RECORDS_READ = 128
_RESOLV_CONF = "/etc/resolv.conf"
_HOSTS_FILE = "/etc/hosts"
_MAX_HOSTS_BYTES = 1 << 20


class HostResolutionError(LocationError):
    """A host name could not be turned into an address (SDP ``c=``: a UAS answers 488)."""


def parse_nameservers(text: str | Iterable[str | tuple[str, int]]) -> list[tuple[str, int]]:
    """Parse name servers such as ``SIP_DNS_SERVERS``.

    Args:
        text: ``"192.0.2.53, 127.0.0.1:5353 [2001:db8::53]:53 ::1"`` (commas
            or spaces between entries; a port after ``:`` for IPv4, after
            ``]:`` for IPv6), or an iterable of such strings or ``(ip, port)``.

    Returns:
        ``(ip, port)`` pairs, port 53 by default.

    Raises:
        ValueError: An entry is not an IP address with an optional port; the
            message names it.
    """
    items: Iterable[str | tuple[str, int]]
    items = text.replace(",", " ").split() if isinstance(text, str) else text
    out: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, tuple):
            host, port = item[0], int(item[1])
        else:
            host, port = _split_server(item)
        version = ip_version(host)
        if version is None or not 0 < port < 65536:
            raise ValueError(f"{item!r} is not a name server address like 192.0.2.53:53")
        out.append((host.strip("[]"), port))
    return out


def _split_server(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    else:
        host, port_text = item, ""
    if port_text and not port_text.isdigit():
        return item, 0
    return host, int(port_text) if port_text else 53


def parse_hosts(text: str) -> dict[str, list[str]]:
    """Parse a hosts file (``/etc/hosts``): name (lower case) to addresses, in file order.

    Lines are ``address name [aliases...]``; ``#`` starts a comment; lines
    that do not start with an IP address are skipped.
    """
    hosts: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) < 2 or ip_version(fields[0]) is None:
            continue
        for name in fields[1:]:
            key = normalize_name(name)
            if key is not None and fields[0] not in hosts.setdefault(key, []):
                hosts[key].append(fields[0])
    return hosts


class RecordCache:
    """DNS answers by query, kept for their TTL; bounded, least recently used evicted first.

    Pure: the caller passes ``now`` (seconds, monotonic).

    Args:
        max_entries: Answers kept at most (>= 1).
        max_ttl: Longest a positive answer is kept, seconds.
        negative_ttl: How long an empty answer (NXDOMAIN, NODATA) is kept, seconds.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_CACHE_SIZE,
        *,
        max_ttl: float = DEFAULT_MAX_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"cache size must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self._entries: OrderedDict[Query, tuple[float, tuple[Record, ...]]] = OrderedDict()

    def get(self, query: Query, now: float) -> tuple[Record, ...] | None:
        """The cached records (possibly empty: a cached negative answer), or None."""
        entry = self._entries.get(query)
        if entry is None:
            return None
        expires, records = entry
        if now >= expires:
            del self._entries[query]
            return None
        self._entries.move_to_end(query)
        return records

    def put(self, query: Query, records: Sequence[Record], ttl: float | None, now: float) -> None:
        """Keep an answer: for ``min(ttl, max_ttl)`` s, or ``negative_ttl`` when empty.

        A TTL of 0 (or less) is not cached (RFC 1035 s.3.2.1: use once).
        """
        lifetime = self.negative_ttl if not records else min(ttl or 0.0, self.max_ttl)
        if lifetime <= 0:
            self._entries.pop(query, None)
            return
        self._entries[query] = (now + lifetime, tuple(records))
        self._entries.move_to_end(query)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every answer."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ServerLocator:
    """Finds where to send SIP requests for a URI (RFC 3263 s.4), asynchronously.

    Args:
        nameservers: Name servers as ``(ip, port)`` or text (see
            `parse_nameservers`, e.g. the value of ``SIP_DNS_SERVERS``); None
            uses the system's (`resolv_conf`).
        transports: Transports we can use, in our preference order.
        families: IP versions we can use, preferred first: ``(4,)`` for an
            IPv4 socket, ``(6, 4)`` to prefer IPv6 and allow both.
        query_timeout: Seconds one query may take (its name servers are tried
            in turn within it).
        lifetime: Seconds a whole `locate` may take.
        cache_size: Answers cached at most.
        max_ttl: Longest a positive answer is cached, seconds.
        negative_ttl: How long NXDOMAIN/NODATA is cached, seconds.
        hosts_file: A hosts file whose names are answered without DNS; None for none.
            By default ``/etc/hosts`` when `nameservers` is None, none otherwise.
        resolv_conf: The resolver configuration read when `nameservers` is None.
        rng: Random source for SRV weights; default `secrets.SystemRandom()`.

    Attributes:
        stats: Counters: "queries" (sent to a server), "cache_hits",
            "coalesced" (shared a lookup in flight), "timeouts", "failures",
            "hosts_file".

    Raises:
        ValueError: A bad name server, transport, family or size.
    """

    _DEFAULT = object()

    def __init__(
        self,
        nameservers: str | Iterable[str | tuple[str, int]] | None = None,
        *,
        transports: Sequence[str] = ("udp",),
        families: Sequence[int] = (4,),
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
        lifetime: float = DEFAULT_LIFETIME,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_ttl: float = DEFAULT_MAX_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        hosts_file: str | None | object = _DEFAULT,
        resolv_conf: str = _RESOLV_CONF,
        rng: RandomLike | None = None,
    ) -> None:
        if not transports or any(t not in TRANSPORTS for t in transports):
            raise ValueError(f"transports must be some of {TRANSPORTS}, not {tuple(transports)}")
        if not families or any(f not in (4, 6) for f in families):
            raise ValueError(f"families must be some of (4, 6), not {tuple(families)}")
        if query_timeout <= 0 or lifetime <= 0:
            raise ValueError("query_timeout and lifetime must be positive")
        self.nameservers = parse_nameservers(nameservers) if nameservers is not None else None
        if self.nameservers == []:
            raise ValueError("no name server given")
        self.transports = tuple(transports)
        self.families = tuple(families)
        self.query_timeout = query_timeout
        self.lifetime = lifetime
        self.cache = RecordCache(cache_size, max_ttl=max_ttl, negative_ttl=negative_ttl)
        if hosts_file is ServerLocator._DEFAULT:
            hosts_file = _HOSTS_FILE if self.nameservers is None else None
        self.hosts_file: str | None = hosts_file  # type: ignore[assignment]
        self.resolv_conf = resolv_conf
        self.stats: Counter[str] = Counter()
        self._rng = rng or secrets.SystemRandom()
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._hosts: dict[str, list[str]] | None = None
        self._setup_error: str | None = None
        self._setup_lock: asyncio.Lock | None = None
        self._inflight: dict[Query, asyncio.Task] = {}

    # --- public -------------------------------------------------------------------
    async def locate(
        self,
        uri: str | SIPURI,
        *,
        transports: Sequence[str] | None = None,
        families: Sequence[int] | None = None,
    ) -> list[Destination]:
        """The ordered destinations for `uri` (RFC 3263 s.4.1, s.4.2).

        Args:
            uri: The URI to reach: the Request-URI, or the outbound proxy /
                first Route URI when there is one (RFC 3261 s.8.1.2).
            transports: Override the locator's transports for this lookup.
            families: Override the locator's IP versions for this lookup.

        Returns:
            ``[Destination(transport, ip, port, hostname), ...]``, best first;
            walk it with `pipecat_sip.sip.locate.TargetList` on failure.

        Raises:
            LocationError: Nothing reachable was found (the message says what
                was tried), or the lookups took longer than `lifetime`.
            SIPParseError: `uri` is not a SIP URI.
        """
        if not isinstance(uri, SIPURI):
            uri = SIPURI.parse(uri)
        location = ServerLocation(
            uri,
            transports=transports or self.transports,
            families=families or self.families,
            rng=self._rng,
        )
        try:
            async with asyncio.timeout(self.lifetime):
                while queries := location.queries():
                    answers = await asyncio.gather(
                        *(self._answer(q, self.query_timeout) for q in queries)
                    )
                    for query, (records, error) in zip(queries, answers, strict=True):
                        if error is None:
                            location.receive(query, records)
                        else:
                            location.fail(query, error)
        except TimeoutError:
            raise LocationError(
                f"cannot locate {uri}: DNS took longer than {self.lifetime:g} s", location.notes
            ) from None
        destinations = location.destinations()
        if location.notes:
            logger.debug(f"DNS: {uri}: {'; '.join(location.notes)}")
        return destinations

    async def resolve_host(self, name: str, family: int = 4, timeout: float | None = None) -> str:
        """One address for a host name: for an SDP ``c=`` line, resolved once before media.

        Args:
            name: A host name, or an IP address (returned as it is).
            family: 4 (A) or 6 (AAAA), as the ``c=`` line's IP4/IP6 and the
                RTP socket's family ask.
            timeout: Seconds the lookup may take; default `query_timeout`.

        Returns:
            The first usable address of that family.

        Raises:
            HostResolutionError: Not a host name, not an address of `family`,
                no such name, no address, or no answer in time (a UAS maps
                this to 488 Not Acceptable Here).
        """
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family}")
        version = ip_version(name)
        if version is not None:
            if version != family:
                raise HostResolutionError(f"{name} is not an IPv{family} address")
            return name.strip("[]")
        host = normalize_name(name)
        if host is None:
            raise HostResolutionError(f"{name!r} is not a host name")
        timeout = self.query_timeout if timeout is None else timeout
        query = Query(host, "A" if family == 4 else "AAAA")
        try:
            async with asyncio.timeout(timeout):
                records, error = await self._answer(query, timeout)
        except TimeoutError:
            raise HostResolutionError(
                f"cannot resolve {host} (IPv{family}): no answer in {timeout:g} s"
            ) from None
        if error is not None:
            raise HostResolutionError(f"cannot resolve {host} (IPv{family}): {error}")
        for record in records:
            address = usable_address(record, family)  # type: ignore[arg-type]
            if address is not None:
                return address
        raise HostResolutionError(f"{host} has no IPv{family} address")

    def cached_host(self, name: str, family: int = 4) -> str | None:
        """An address for `name` without any lookup: numeric, hosts file, localhost or cache.

        For code that cannot wait (a synchronous re-INVITE answer hook): None
        means "not known now"; await `resolve_host` instead, or refuse (488).
        """
        version = ip_version(name)
        if version is not None:
            return name.strip("[]") if version == family else None
        host = normalize_name(name)
        if host is None or family not in (4, 6):
            return None
        query = Query(host, "A" if family == 4 else "AAAA")
        records = self._local_answer(query)  # the hosts file once read; localhost always
        if records is None:
            records = self.cache.get(query, asyncio.get_running_loop().time())
        for record in records or ():
            address = usable_address(record, family)  # type: ignore[arg-type]
            if address is not None:
                return address
        return None

    def clear_cache(self) -> None:
        """Forget every cached answer."""
        self.cache.clear()

    async def close(self) -> None:
        """Cancel the lookups in flight (on shutdown): their waiters see "lookup cancelled"."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- one query: hosts file, cache, in-flight sharing, then DNS ---------------------
    async def _answer(self, query: Query, timeout: float) -> tuple[tuple[Record, ...], str | None]:
        """(records, None), or ((), reason) on a failure; never raises but for cancellation."""
        await self._setup()
        local = self._local_answer(query)
        if local is not None:
            self.stats["hosts_file"] += 1
            return local, None
        now = asyncio.get_running_loop().time()
        cached = self.cache.get(query, now)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached, None
        if self._resolver is None:
            return (), self._setup_error or "no DNS resolver"
        task = self._inflight.get(query)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(query, timeout))
            self._inflight[query] = task
            task.add_done_callback(lambda _t, q=query: self._inflight.pop(q, None))
        else:
            self.stats["coalesced"] += 1
        # shield: a caller that gives up (cancelled) leaves the lookup to the others.
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                return (), "lookup cancelled"  # by close(), not by our caller
            raise

    def _local_answer(self, query: Query) -> tuple[Record, ...] | None:
        """The answer for a name that never goes to DNS, or None.

        Names in the hosts file and ``localhost`` / ``*.localhost`` (RFC 6761
        s.6.3) are answered here: A/AAAA from the file (``localhost``:
        127.0.0.1 / ::1 unless the file says otherwise), and NAPTR / SRV for
        them are empty, so RFC 3263 falls through to the plain addresses.
        """
        name = query.name
        if query.rdtype == "SRV":
            for prefix in SRV_PREFIXES.values():
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    break
        hosts = self._hosts or {}
        is_localhost = name == "localhost" or name.endswith(".localhost")
        if name not in hosts and not is_localhost:
            return None
        if query.rdtype not in ("A", "AAAA"):
            return ()
        version = 4 if query.rdtype == "A" else 6
        known = [a for a in hosts.get(name, ()) if ip_version(a) == version]
        if not known and is_localhost:
            known = ["127.0.0.1" if version == 4 else "::1"]
        return tuple(known)

    async def _fetch(self, query: Query, timeout: float) -> tuple[tuple[Record, ...], str | None]:
        assert self._resolver is not None
        self.stats["queries"] += 1
        loop = asyncio.get_running_loop()
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(query.name),  # absolute: no search list
                query.rdtype,
                search=False,
                raise_on_no_answer=False,
                lifetime=timeout,
            )
        except dns.resolver.NXDOMAIN:
            self.cache.put(query, (), None, loop.time())
            return (), None
        except dns.exception.Timeout:
            self.stats["timeouts"] += 1
            return (), f"no answer in {timeout:g} s"
        except dns.resolver.NoNameservers as exc:
            self.stats["failures"] += 1
            return (), f"no server could answer ({_short(exc)})"
        except dns.exception.DNSException as exc:
            self.stats["failures"] += 1
            return (), _short(exc)
        except Exception as exc:  # never let a strange answer escape
            self.stats["failures"] += 1
            logger.debug(f"DNS: {query.rdtype} {query.name}: {exc!r}")
            return (), f"lookup failed ({type(exc).__name__})"
        records = _convert(answer.rrset, query.rdtype) if answer.rrset is not None else ()
        ttl = answer.rrset.ttl if answer.rrset is not None else None
        self.cache.put(query, records, ttl, loop.time())
        return records, None

    # --- configuration, read once off the loop ----------------------------------------
    async def _setup(self) -> None:
        if self._resolver is not None or self._setup_error is not None:
            return
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self._resolver is not None or self._setup_error is not None:
                return
            resolver, hosts, error = await asyncio.to_thread(self._read_configuration)
            self._hosts = hosts
            self._resolver, self._setup_error = resolver, error
            if error:
                logger.warning(f"DNS: {error}")

    def _read_configuration(
        self,
    ) -> tuple[dns.asyncresolver.Resolver | None, dict[str, list[str]], str | None]:
        """(resolver or None, hosts, error): runs in a worker thread (file reads)."""
        hosts: dict[str, list[str]] = {}
        if self.hosts_file:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                with open(self.hosts_file, encoding="utf-8", errors="replace") as f:
                    hosts = parse_hosts(f.read(_MAX_HOSTS_BYTES))
        try:
            if self.nameservers is None:
                resolver = dns.asyncresolver.Resolver(filename=self.resolv_conf)
                count = len(resolver.nameservers)
            else:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.nameservers
                ]
                count = len(self.nameservers)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return (
                None,
                hosts,
                f"no DNS configuration ({self.resolv_conf}: {_short(exc)}); set SIP_DNS_SERVERS",
            )
        # Each server gets a share of a query's time before the next is tried.
        resolver.timeout = max(0.1, self.query_timeout / max(1, min(count, 3)))
        resolver.lifetime = self.query_timeout
        resolver.cache = None
        return resolver, hosts, None


def _convert(rrset: Iterable, rdtype: str) -> tuple[Record, ...]:
    """Convert dnspython rdata to the plain record values of `pipecat_sip.sip.locate` (bounded)."""
    out: list[Record] = []
    for rdata in rrset:
        if len(out) >= _MAX_RECORDS_READ:
            break
        try:
            if rdtype == "NAPTR":
                out.append(
                    NAPTRRecord(
                        rdata.order,
                        rdata.preference,
                        rdata.flags.decode("ascii", "replace"),
                        rdata.service.decode("ascii", "replace"),
                        rdata.regexp.decode("ascii", "replace"),
                        rdata.replacement.to_text(),
                    )
                )
            elif rdtype == "SRV":
                out.append(
                    SRVRecord(rdata.priority, rdata.weight, rdata.port, rdata.target.to_text())
                )
            elif rdtype in ("A", "AAAA"):
                out.append(rdata.address)
        except (AttributeError, UnicodeError, ValueError):
            continue  # a record of another type (CNAME owner data) or unreadable
    return tuple(out)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
