"""Routing calls before they are answered: by dialled number or user part.

The runner asks a routing hook what to do with each incoming call, with its
:class:`~pipecat_sip.call.CallInfo`, before answering it. The hook returns
one of

- :class:`Accept` (answer; its ``settings`` reach ``bot()`` as
  ``runner_args.settings``: a system prompt, a voice, a greeting, ...),
- :class:`Reject` (a final status such as 404 or 486, no answer),
- :class:`Redirect` (302 Moved Temporarily with Contact, RFC 3261 s.21.3.3),

or None, which accepts with no settings. :class:`RouteTable` is such a hook
read from a TOML file (``SIP_ROUTES``)::

    [default]                      # every accepted call, unless its route says otherwise
    system_prompt = "You are the switchboard of Example Ltd."

    [routes."+14155550100"]        # the dialled number (Request-URI user part)
    system_prompt = "You take orders for Example Pizza. Be brief."
    voice = "71a7ad14-091c-4e8e-a314-022ece01c121"
    greeting = "Example Pizza, what can I get you?"

    [routes.sales]                 # a user part: sip:sales@...
    redirect = "sip:sales@pbx.example.com"

    [routes."+14155550199"]
    reject = 486                   # Busy Here
    reason = "Closed for the night"

    [routes."*"]                   # anything else; without it, the default settings
    reject = 404

A route's extra settings go in a ``settings`` table (``[routes.sales.settings]``)
and are passed through as they are.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Accept",
    "Decision",
    "Redirect",
    "Reject",
    "RouteTable",
    "RoutesError",
    "dialled",
    "load_routes",
]


class RoutesError(ValueError):
    """A routes file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Accept:
    """Answer the call; ``settings`` go to ``bot()`` as ``runner_args.settings``.

    Attributes:
        settings: Per-call settings (``system_prompt``, ``voice``,
            ``greeting`` and whatever else the bot reads).
        route: The route that matched (its key in the file), or None.
    """

    settings: Mapping[str, Any] = field(default_factory=dict)
    route: str | None = None


@dataclass(frozen=True)
class Reject:
    """Refuse the call with a final status (RFC 3261 s.21.4-21.6).

    Attributes:
        status_code: 400-699.
        reason: Reason phrase, or None for the standard one.
        route: The route that matched, or None.
    """

    status_code: int = 486
    reason: str | None = None
    route: str | None = None


@dataclass(frozen=True)
class Redirect:
    """Send the caller elsewhere: 3xx with one Contact per target (RFC 3261 s.8.1.3.4).

    Attributes:
        targets: SIP URIs to try, in order (at most 5).
        status_code: 300-399; 302 Moved Temporarily by default.
        route: The route that matched, or None.
    """

    targets: tuple[str, ...]
    status_code: int = 302
    route: str | None = None


Decision = Accept | Reject | Redirect

_SETTING_KEYS = {"system_prompt": 20000, "voice": 200, "greeting": 2000}
_ROUTE_KEYS = set(_SETTING_KEYS) | {"reject", "reason", "redirect", "settings"}
_MAX_ROUTES = 10000
_MAX_REDIRECTS = 5
_VISUAL = re.compile(r"[\s().-]")


def _user_part(uri: str) -> str | None:
    """The user part of ``sip:user@host`` / ``sips:`` / ``tel:+1...`` (None if none)."""
    text = uri.strip()
    if text.startswith("<") and ">" in text:
        text = text[1 : text.index(">")]
    scheme, colon, rest = text.partition(":")
    if not colon:
        return None
    scheme = scheme.lower()
    if scheme == "tel":
        return rest.split(";", 1)[0] or None
    if scheme not in ("sip", "sips") or "@" not in rest:
        return None
    user = rest.split("@", 1)[0].split(";", 1)[0]
    return user or None


def _number_key(text: str) -> str | None:
    """A phone number's digits with a leading +, or None if ``text`` is no number."""
    cleaned = _VISUAL.sub("", text)
    digits = cleaned[1:] if cleaned.startswith("+") else cleaned
    if digits.isdigit() and 3 <= len(digits) <= 20:
        return "+" + digits
    return None


def dialled(info: Any) -> str | None:
    """What the caller dialled: the Request-URI's user part, else the To URI's.

    Args:
        info: A :class:`~pipecat_sip.call.CallInfo` (``request_uri``, ``to_uri``).

    Returns:
        The user part (``+14155550100``, ``sales``), or None.
    """
    for uri in (getattr(info, "request_uri", ""), getattr(info, "to_uri", "")):
        if uri:
            user = _user_part(uri)
            if user:
                return user
    return None


@dataclass(frozen=True)
class RouteTable:
    """Routes by dialled number or user part, with default settings; a routing hook.

    Matching: the exact user part first, then the same phone number
    written another way (``+1 415 555 0100`` matches ``14155550100``),
    then ``"*"``; a call matching nothing is accepted with the defaults.

    Attributes:
        routes: Key (as in the file) to its decision; an :class:`Accept`'s
            settings already include the defaults.
        defaults: Settings of every accepted call.
        source: Where the table was read from, for messages.
    """

    routes: Mapping[str, Decision] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<routes>"

    def __post_init__(self) -> None:
        numbers: dict[str, str] = {}
        for key in self.routes:
            number = _number_key(key)
            if number is not None:
                numbers.setdefault(number, key)
        object.__setattr__(self, "_numbers", numbers)

    def __call__(self, info: Any) -> Decision:
        """The decision for a call (the runner calls the table as its routing hook)."""
        return self.decide(info)

    def match(self, info: Any) -> str | None:
        """The key of the route for a call, or None.

        Args:
            info: The call's :class:`~pipecat_sip.call.CallInfo`.

        Returns:
            The matching key, ``"*"``, or None.
        """
        user = dialled(info)
        if user is not None:
            if user in self.routes:
                return user
            number = _number_key(user)
            if number is not None and number in self._numbers:  # type: ignore[attr-defined]
                return self._numbers[number]  # type: ignore[attr-defined]
        return "*" if "*" in self.routes else None

    def decide(self, info: Any) -> Decision:
        """Accept (with settings), reject or redirect a call.

        Args:
            info: The call's :class:`~pipecat_sip.call.CallInfo`.

        Returns:
            The decision.
        """
        key = self.match(info)
        if key is None:
            return Accept(dict(self.defaults))
        return self.routes[key]


def load_routes(path: str | Path | None) -> RouteTable | None:
    """Read a routes file (TOML, see the module docstring); None or "" gives None.

    Args:
        path: The file (``SIP_ROUTES``).

    Returns:
        The table, or None when no file is named.

    Raises:
        RoutesError: The file is missing, not TOML, or an entry is wrong;
            one line naming the file and the entry.
    """
    if path is None or str(path).strip() == "":
        return None
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise RoutesError(f"SIP_ROUTES {source}: no such file") from None
    except OSError as exc:
        raise RoutesError(f"SIP_ROUTES {source}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RoutesError(f"SIP_ROUTES {source}: not TOML ({exc})") from None
    return parse_routes(data, source)


def parse_routes(data: Mapping[str, Any], source: str = "<routes>") -> RouteTable:
    """Build a table from parsed TOML.

    Raises:
        RoutesError: An entry is wrong; the message names it.
    """
    where = f"SIP_ROUTES {source}"
    unknown = set(data) - {"default", "routes"}
    if unknown:
        raise RoutesError(f"{where}: unknown table {sorted(unknown)[0]!r} (default, routes)")
    defaults = data.get("default", {})
    if not isinstance(defaults, Mapping):
        raise RoutesError(f"{where}: [default] must be a table")
    extra = set(defaults) - set(_SETTING_KEYS) - {"settings"}
    if extra:
        raise RoutesError(
            f"{where}: [default]: unknown key {sorted(extra)[0]!r} "
            f"({', '.join([*_SETTING_KEYS, 'settings'])})"
        )
    default_settings = _settings(defaults, f"{where}: [default]")
    routes = data.get("routes", {})
    if not isinstance(routes, Mapping):
        raise RoutesError(f"{where}: [routes] must be a table of routes")
    if len(routes) > _MAX_ROUTES:
        raise RoutesError(f"{where}: more than {_MAX_ROUTES} routes")
    table: dict[str, Decision] = {}
    for key, entry in routes.items():
        name = f'{where}: routes."{key}"'
        if not key or len(key) > 64 or any(ord(c) < 33 or ord(c) == 127 for c in key):
            raise RoutesError(f"{name}: a key must be a number, a user part or '*'")
        if not isinstance(entry, Mapping):
            raise RoutesError(f"{name}: must be a table")
        table[key] = _route(entry, name, key, default_settings)
    return RouteTable(table, default_settings, source)


def _settings(entry: Mapping[str, Any], name: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, limit in _SETTING_KEYS.items():
        if key not in entry:
            continue
        value = entry[key]
        if not isinstance(value, str) or not value.strip():
            raise RoutesError(f"{name}: {key} must be a non-empty string")
        if len(value) > limit:
            raise RoutesError(f"{name}: {key} is longer than {limit} characters")
        settings[key] = value
    extra = entry.get("settings", {})
    if not isinstance(extra, Mapping):
        raise RoutesError(f"{name}: settings must be a table")
    for key, value in extra.items():
        if key in _SETTING_KEYS:
            raise RoutesError(f"{name}: settings.{key}: set {key} on the route itself")
        settings[key] = value
    return settings


def _route(entry: Mapping[str, Any], name: str, key: str, defaults: Mapping[str, Any]) -> Decision:
    unknown = set(entry) - _ROUTE_KEYS
    if unknown:
        raise RoutesError(
            f"{name}: unknown key {sorted(unknown)[0]!r} ({', '.join(sorted(_ROUTE_KEYS))})"
        )
    accepts = set(entry) & (set(_SETTING_KEYS) | {"settings"})
    if "reject" in entry:
        if "redirect" in entry or accepts:
            other = "redirect" if "redirect" in entry else sorted(accepts)[0]
            raise RoutesError(f"{name}: reject cannot go with {other}")
        code = entry["reject"]
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 699:
            raise RoutesError(f"{name}: reject must be a status code 400-699, not {code!r}")
        reason = entry.get("reason")
        if reason is not None and (
            not isinstance(reason, str)
            or not reason.strip()
            or len(reason) > 100
            or any(ord(c) < 32 or ord(c) == 127 for c in reason)
        ):
            raise RoutesError(f"{name}: reason must be one line of at most 100 characters")
        return Reject(code, reason, key)
    if "reason" in entry:
        raise RoutesError(f"{name}: reason goes with reject")
    if "redirect" in entry:
        if accepts:
            raise RoutesError(f"{name}: redirect cannot go with {sorted(accepts)[0]}")
        value = entry["redirect"]
        targets = [value] if isinstance(value, str) else value
        if not isinstance(targets, list) or not 1 <= len(targets) <= _MAX_REDIRECTS:
            raise RoutesError(f"{name}: redirect must be a SIP URI or a list of 1-5")
        from pipecat_sip.sip.errors import SIPParseError
        from pipecat_sip.sip.uri import SIPURI

        for target in targets:
            try:
                if not isinstance(target, str):
                    raise SIPParseError("not a string")
                SIPURI.parse(target.strip())
            except SIPParseError:
                raise RoutesError(f"{name}: redirect {target!r} is not a SIP URI") from None
        return Redirect(tuple(t.strip() for t in targets), 302, key)
    return Accept({**defaults, **_settings(entry, name)}, key)
