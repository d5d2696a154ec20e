"""SIP trunks: where outbound calls go, as whom, and with which credentials.

A :class:`Trunk` describes a carrier account (or a PBX's SIP trunk): the
proxy INVITEs are sent to, the Digest account that answers its 401/407
challenges (RFC 3261 s.22.2; the *auth user* may differ from the user in
From), the identity the call shows (From user and host, display name,
caller ID, optionally in ``P-Asserted-Identity``, RFC 3325) and headers the
carrier wants on every INVITE.

:meth:`Trunk.route` turns a dialled target (``+4930123``, ``tel:+4930123``,
``sip:+4930123@trunk``, where ``trunk`` is the trunk's name) into the
Request-URI, To and From of the INVITE; :meth:`Trunk.from_env` reads the
default trunk from ``SIP_TRUNK_*`` variables.

Example:
    ```python
    trunk = Trunk(
        name="carrier",
        proxy="sip:sip.carrier.example",
        username="4930555000",
        auth_user="a1b2c3",
        password=os.environ["SIP_TRUNK_PASSWORD"],
        caller_id="+4930555000",
    )
    server = SIPServer(on_call, trunks=[trunk])
    call = await server.call("+4930123456", trunk="carrier")
    ```
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipecat_sip.sip.auth import Credentials
from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.uri import SIPURI, Address

__all__ = ["OutboundRoute", "Trunk", "is_phone_number", "normalize_number", "trunks_by_name"]

_TRANSPORTS = ("udp", "tcp", "tls")
# Visual separators of a dialled number (RFC 3966 s.5.1.1): dropped.
_SEPARATORS_RE = re.compile(r"[\s().\-]")
_NUMBER_RE = re.compile(r"\+?[0-9*#]{1,32}\Z")
_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+\Z")
_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}\Z")


def normalize_number(text: str) -> str | None:
    """A dialled number without visual separators (``+49 (30) 123-45`` -> ``+493012345``).

    Returns:
        The number, or None when ``text`` is not one (letters, an empty string).
    """
    number = _SEPARATORS_RE.sub("", text.strip())
    return number if _NUMBER_RE.match(number) else None


def is_phone_number(text: str) -> bool:
    """Whether ``text`` is a bare dialled number (digits, ``+``, ``*``, ``#``, separators)."""
    return normalize_number(text) is not None


@dataclass(frozen=True)
class OutboundRoute:
    """How one outbound call is placed (what :meth:`Trunk.route` works out).

    Attributes:
        request_uri: The INVITE's Request-URI.
        to: The To address.
        proxy: Where the INVITE is sent (the trunk's proxy URI).
        from_user: User part of From.
        from_host: Host part of From.
        display_name: Display name of From (and P-Asserted-Identity).
        headers: Headers for the INVITE (the trunk's, P-Asserted-Identity, the caller's).
        credentials: Digest credentials for 401/407, or None.
    """

    request_uri: SIPURI
    to: Address
    proxy: SIPURI
    from_user: str | None
    from_host: str | None
    display_name: str | None
    headers: tuple[tuple[str, str], ...]
    credentials: Credentials | None


@dataclass(frozen=True)
class Trunk:
    """A carrier or PBX trunk for outbound calls (and the identity they show).

    Attributes:
        name: Name to pick it by (``server.call(..., trunk="carrier")``,
            ``sip:+4930123@carrier``).
        proxy: The trunk's SIP URI, where INVITEs go: ``sip:sip.carrier.example``,
            ``sip:192.0.2.10:5060``, ``sip:pbx.example;transport=tcp``. A host
            name is located with RFC 3263 (NAPTR/SRV/A) and failed over.
        username: The account's user name (From user by default, and the
            Digest user name unless ``auth_user`` is set).
        auth_user: The Digest user name when it differs from ``username``
            (many carriers give an "authorization user" or id); default
            ``username``.
        password: The Digest password; None answers no challenge.
        from_user: User part of From; default ``username``.
        from_host: Host part of From (the carrier's domain); default the
            proxy's host.
        display_name: Display name shown with the caller ID.
        caller_id: The number presented (E.164, ``+4930555000``): in From,
            or in ``P-Asserted-Identity`` when ``p_asserted_identity``.
        headers: Extra headers for every INVITE, ``(name, value)`` pairs.
        p_asserted_identity: Put the caller ID in ``P-Asserted-Identity``
            (RFC 3325; carriers that authenticate by the From user want the
            account there and the presented number here).
        transport: ``udp``, ``tcp`` or ``tls``, when the proxy URI names none.

    Raises:
        ValueError: A bad proxy URI, transport, caller ID or header.
    """

    name: str
    proxy: str
    username: str | None = None
    auth_user: str | None = None
    password: str | None = field(default=None, repr=False)
    from_user: str | None = None
    from_host: str | None = None
    display_name: str | None = None
    caller_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    p_asserted_identity: bool = False
    transport: str = "udp"

    def __post_init__(self) -> None:
        if not self.name or not _TOKEN_RE.match(self.name):
            raise ValueError(f"trunk name {self.name!r} must be a token (letters, digits, -_.)")
        try:
            uri = SIPURI.parse(self.proxy)
        except SIPParseError:
            raise ValueError(f"trunk {self.name}: proxy {self.proxy!r} is not a SIP URI") from None
        transport = (uri.get_param("transport") or self.transport).lower()
        if transport not in _TRANSPORTS:
            raise ValueError(f"trunk {self.name}: transport {transport!r} is not udp, tcp or tls")
        for what, value in (
            ("username", self.username),
            ("auth_user", self.auth_user),
            ("from_user", self.from_user),
        ):
            if value is not None and not _USER_RE.match(value):
                raise ValueError(f"trunk {self.name}: {what} {value!r} is not a SIP user part")
        if self.from_host is not None:
            try:
                SIPURI.parse(f"sip:{self.from_host}")
            except SIPParseError:
                raise ValueError(
                    f"trunk {self.name}: from_host {self.from_host!r} is not a host"
                ) from None
        if self.caller_id is not None and normalize_number(self.caller_id) is None:
            raise ValueError(f"trunk {self.name}: caller_id {self.caller_id!r} is not a number")
        if self.display_name is not None and any(c in self.display_name for c in '"\r\n\\'):
            raise ValueError(f"trunk {self.name}: display_name has a quote or line break")
        object.__setattr__(self, "headers", tuple((str(n), str(v)) for n, v in self.headers))
        for name, value in self.headers:
            check_header(name, value)
        object.__setattr__(self, "transport", transport)

    @property
    def proxy_uri(self) -> SIPURI:
        """The proxy as a URI, with the transport parameter set when not UDP."""
        uri = SIPURI.parse(self.proxy)
        if self.transport != "udp" and uri.get_param("transport") is None and uri.scheme == "sip":
            uri.params["transport"] = self.transport
        return uri

    @property
    def credentials(self) -> Credentials | None:
        """The Digest credentials (auth user, password), or None without a password."""
        user = self.auth_user or self.username
        if self.password is None or not user:
            return None
        return Credentials(user, self.password)

    def matches(self, host: str) -> bool:
        """Whether a target URI's host names this trunk (its name or its proxy's host)."""
        lowered = host.lower()
        return lowered == self.name.lower() or lowered == self.proxy_uri.host.lower()

    def route(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        display_name: str | None = None,
        from_user: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> OutboundRoute:
        """Work out the INVITE for a call to ``target`` through this trunk.

        Args:
            target: A number (``+4930123``, ``030 123``), ``tel:+4930123``, or a
                SIP URI (``sip:+4930123@carrier``: its host, the trunk's name
                or any other, is replaced by the proxy's host and port).
            caller_id: The number to present instead of the trunk's.
            display_name: The display name instead of the trunk's.
            from_user: The From user instead of the rule below.
            headers: More headers for this call.

        The From user is ``from_user``, else the caller ID (unless the trunk
        presents it in ``P-Asserted-Identity``), else the trunk's
        ``from_user``, else its ``username``.

        Returns:
            The route.

        Raises:
            ValueError: ``target`` is neither a number nor a SIP/tel URI, or
                ``caller_id`` is not a number.
        """
        proxy = self.proxy_uri
        user = _target_user(target)
        request_uri = SIPURI(proxy.host, user=user, port=proxy.port, scheme=proxy.scheme)
        transport = proxy.get_param("transport")
        if transport is not None:
            request_uri.params["transport"] = transport
        number = None
        if caller_id is not None:
            number = normalize_number(caller_id)
            if number is None:
                raise ValueError(f"caller_id {caller_id!r} is not a number")
        elif self.caller_id is not None:
            number = normalize_number(self.caller_id)
        account = self.from_user or self.username
        if from_user is None:
            from_user = account if self.p_asserted_identity or not number else number
        from_host = self.from_host or proxy.host
        name = display_name if display_name is not None else self.display_name
        extra = list(self.headers)
        if self.p_asserted_identity and number:
            pai = Address(SIPURI(from_host, user=number), name)
            extra.append(("P-Asserted-Identity", str(pai)))
        for header_name, value in headers:
            check_header(header_name, value)
            extra.append((header_name, value))
        to = Address(SIPURI(proxy.host, user=user, scheme=proxy.scheme))
        return OutboundRoute(
            request_uri=request_uri,
            to=to,
            proxy=proxy,
            from_user=from_user,
            from_host=from_host,
            display_name=name,
            headers=tuple(extra),
            credentials=self.credentials,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str = "default") -> Trunk | None:
        """The default trunk from the environment, or None when ``SIP_TRUNK_PROXY`` is unset.

        Variables: ``SIP_TRUNK_PROXY`` (the proxy URI, or ``host[:port]``), ``SIP_TRUNK_USERNAME``,
        ``SIP_TRUNK_AUTH_USER``, ``SIP_TRUNK_PASSWORD``, ``SIP_TRUNK_FROM_USER``,
        ``SIP_TRUNK_FROM_HOST``, ``SIP_TRUNK_DISPLAY_NAME``, ``SIP_CALLER_ID``,
        ``SIP_TRUNK_PAI`` (``1``/``true``: caller ID in P-Asserted-Identity),
        ``SIP_TRUNK_TRANSPORT``, ``SIP_TRUNK_HEADERS`` (extra headers for every
        INVITE, ``Name: value`` separated by ``|``).

        Raises:
            ValueError: A bad value; the message names the variable, in one line.
        """
        proxy = (env.get("SIP_TRUNK_PROXY") or "").strip()
        if proxy and not proxy.lower().startswith(("sip:", "sips:")):
            proxy = f"sip:{proxy}"  # host[:port] as well as a SIP URI
        if not proxy:
            for var in ("SIP_TRUNK_USERNAME", "SIP_TRUNK_PASSWORD", "SIP_TRUNK_AUTH_USER"):
                if env.get(var):
                    raise ValueError(f"{var} is set but SIP_TRUNK_PROXY is not")
            return None

        def get(var: str) -> str | None:
            value = env.get(var)
            return value.strip() if value and value.strip() else None

        try:
            SIPURI.parse(proxy)
        except SIPParseError:
            raise ValueError(
                f"SIP_TRUNK_PROXY: {proxy!r} is not a SIP URI (sip:sip.carrier.example)"
            ) from None
        pai_text = (get("SIP_TRUNK_PAI") or "false").lower()
        if pai_text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"SIP_TRUNK_PAI: {pai_text!r} is not true or false")
        caller_id = get("SIP_CALLER_ID")
        if caller_id is not None and normalize_number(caller_id) is None:
            raise ValueError(f"SIP_CALLER_ID: {caller_id!r} is not a phone number (+4930555000)")
        values = {
            "username": ("SIP_TRUNK_USERNAME", get("SIP_TRUNK_USERNAME")),
            "auth_user": ("SIP_TRUNK_AUTH_USER", get("SIP_TRUNK_AUTH_USER")),
            "from_user": ("SIP_TRUNK_FROM_USER", get("SIP_TRUNK_FROM_USER")),
            "from_host": ("SIP_TRUNK_FROM_HOST", get("SIP_TRUNK_FROM_HOST")),
            "display_name": ("SIP_TRUNK_DISPLAY_NAME", get("SIP_TRUNK_DISPLAY_NAME")),
        }
        kwargs: dict[str, object] = {key: value for key, (_, value) in values.items()}
        var = "SIP_TRUNK_PROXY"
        try:
            cls(name, proxy)
            for key, (variable, value) in values.items():  # one at a time, to name it
                var = variable
                cls(name, proxy, **{key: value})  # type: ignore[arg-type]
            var = "SIP_TRUNK_TRANSPORT"
            transport = (get("SIP_TRUNK_TRANSPORT") or "udp").lower()
            if transport not in _TRANSPORTS:
                raise ValueError(f"{transport!r} is not udp, tcp or tls")
            var = "SIP_TRUNK_HEADERS"
            headers = _headers_from_text(get("SIP_TRUNK_HEADERS") or "")
            var = "SIP_TRUNK_PROXY"
            return cls(
                name,
                proxy,
                password=env.get("SIP_TRUNK_PASSWORD") or None,
                caller_id=caller_id,
                p_asserted_identity=pai_text in ("1", "true", "yes", "on"),
                transport=transport,
                headers=headers,
                **kwargs,  # type: ignore[arg-type]
            )
        except ValueError as exc:
            text = str(exc).removeprefix(f"trunk {name}: ")
            raise ValueError(f"{var}: {text}") from None


def _headers_from_text(text: str) -> tuple[tuple[str, str], ...]:
    """``Name: value|Name2: value2`` as header pairs.

    Raises:
        ValueError: An item without a colon, or a bad name.
    """
    out = []
    for item in text.split("|"):
        if not item.strip():
            continue
        name, colon, value = item.partition(":")
        if not colon:
            raise ValueError(f"{item.strip()[:40]!r} is not 'Name: value'")
        check_header(name.strip(), value.strip())
        out.append((name.strip(), value.strip()))
    return tuple(out)


def check_header(name: str, value: str) -> None:
    """Refuse a header that would break the message (a bad name, a line break in the value).

    Raises:
        ValueError: Says which header.
    """
    if not _TOKEN_RE.match(name):
        raise ValueError(f"header name {name!r} is not a token")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name} has a line break in its value")


def _target_user(target: str) -> str:
    """The user part to dial: a number, a tel: URI's number, or a SIP URI's user.

    Raises:
        ValueError: None of these.
    """
    text = target.strip()
    number = normalize_number(text)
    if number is not None:
        return number
    lowered = text.lower()
    if lowered.startswith("tel:"):
        number = normalize_number(text[4:].split(";", 1)[0])
        if number is None:
            raise ValueError(f"{target!r} is not a tel: URI with a number")
        return number
    try:
        uri = SIPURI.parse(text)
    except SIPParseError:
        raise ValueError(f"{target!r} is neither a number nor a SIP URI") from None
    if not uri.user:
        raise ValueError(f"{target!r} has no user part to dial")
    return uri.user


def trunks_by_name(trunks: Mapping[str, Trunk] | Sequence[Trunk]) -> dict[str, Trunk]:
    """The trunks keyed by name (a mapping's keys must match the trunks' names).

    Raises:
        ValueError: Two trunks with one name, or a key that is not its trunk's name.
    """
    out: dict[str, Trunk] = {}
    items = list(trunks.items()) if isinstance(trunks, Mapping) else [(t.name, t) for t in trunks]
    for key, trunk in items:
        if not isinstance(trunk, Trunk):
            raise ValueError(f"{trunk!r} is not a Trunk")
        if key != trunk.name:
            raise ValueError(f"trunk {trunk.name!r} listed under the key {key!r}")
        if key in out:
            raise ValueError(f"two trunks named {key!r}")
        out[key] = trunk
    return out


def host_is_ip(host: str) -> bool:
    """Whether a URI host is an IP literal (brackets allowed)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
