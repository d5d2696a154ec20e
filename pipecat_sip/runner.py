"""`python bot.py --transport sip`: the SIP entry point beside Pipecat's development runner.

Pipecat's runner (`pipecat.runner.run.main`) does not know a "sip"
transport, so a bot calls our `main()` instead. With `-t sip` /
`--transport sip` it starts a `SIPServer` and calls the bot module's
`bot(runner_args)` once per accepted call with `SIPRunnerArguments`; with
any other transport it hands over to Pipecat's `main()` unchanged.

`create_transport(runner_args, transport_params)` builds a `SIPTransport`
from the `"sip"` entry for SIP calls and delegates everything else to
`pipecat.runner.utils.create_transport`.

Configuration (flags override environment, `.env` is read with python-dotenv):

| flag | variable | default |
|---|---|---|
| `--sip-host` | `SIP_SERVER_HOST` | 0.0.0.0 |
| `--sip-port` | `SIP_SERVER_PORT` | 6060 |
| `--rtp-ports` | `SIP_RTP_PORT_RANGE` | 10000-15000 |
| `--public-address` | `SIP_PUBLIC_ADDRESS` | the outbound interface's address |
| `--max-calls` | `SIP_MAX_CALLS` | 100 |
| `--rtp-timeout` | `SIP_RTP_TIMEOUT` | 30 (seconds; 0 disables) |
| `--allowed-networks` | `SIP_ALLOWED_NETWORKS` | empty: all (CIDRs, comma-separated; others 403) |
| `--rate-limit` | `SIP_RATE_LIMIT` | 100 (requests/s per source IP; 0 disables) |
| `--rate-burst` | `SIP_RATE_BURST` | 200 (requests at once per source IP) |
| `--server-name` | `SIP_SERVER_NAME` | pipecat-sip (Server/User-Agent header; `none` sends none) |
| `--event-loop` | `SIP_EVENT_LOOP` | auto: uvloop when installed, else `asyncio` (or `uvloop`) |
| `--registrar` | `SIP_REGISTRAR` | none: no registration (a registrar URI: REGISTER there) |
| `--username` | `SIP_USERNAME` | registration user (AoR user part and Digest user name) |
| | `SIP_PASSWORD` | Digest password (environment or .env only, never a flag) |
| `--register-expires` | `SIP_REGISTER_EXPIRES` | 300 (seconds asked per registration) |
| `--trunk-proxy` | `SIP_TRUNK_PROXY` | none: no trunk (default trunk's proxy URI) |
| | `SIP_TRUNK_USERNAME`, `_AUTH_USER`, `_FROM_USER` | the trunk's account |
| | `SIP_TRUNK_FROM_HOST`, `_PAI`, `_TRANSPORT` | see `Trunk.from_env` |
| | `SIP_TRUNK_PASSWORD` | the trunk's Digest password (environment only) |
| `--caller-id` | `SIP_CALLER_ID` | none (the number outbound calls present) |
| `--auth-users` | `SIP_AUTH_USERS` | none: no inbound Digest (`user:password` lines) |
| `--auth-realm` | `SIP_AUTH_REALM` | pipecat-sip (the realm of our challenges) |
| `--auth-exempt-networks` | `SIP_AUTH_EXEMPT_NETWORKS` | none (CIDRs not challenged) |
| `--accept-registrations` | `SIP_ACCEPT_REGISTRATIONS` | false (a registrar for softphones) |
| `--codecs` | `SIP_CODECS` | G722,PCMU,PCMA (add `opus` with the `opus` extra) |
| `--rtp-latching` | `SIP_RTP_LATCHING` | signaling (also: any, off) |
| `--hold-timeout` | `SIP_HOLD_TIMEOUT` | 600 (seconds a call may stay held; 0: no limit) |
| `--max-call-duration` | `SIP_MAX_CALL_DURATION` | 14400 (seconds; 0: no limit) |
| `--max-unconfirmed` | `SIP_MAX_UNCONFIRMED_PER_SOURCE` | 5 (calls waiting for an ACK per source) |
| `--stun-server` | `SIP_STUN_SERVER` | none (host[:port]: the RTP public address for SDP) |
| `--srtp` | `SIP_SRTP` | off (SRTP with SDES: `off`, `optional` or `required`) |
| `--srtp-insecure-signaling` | `SIP_SRTP_INSECURE_SIGNALING` | no: SDES keys over TLS only |
| `--drain-timeout` | `SIP_DRAIN_TIMEOUT` | 0 (seconds live calls may take to end after SIGTERM) |
| `--api-port` | `SIP_API_PORT` | none: no operations API (a TCP port: `pipecat_sip.api` on it) |
| `--api-host` | `SIP_API_HOST` | 127.0.0.1 (any other address needs `SIP_API_TOKEN`) |
| | `SIP_API_TOKEN` | the API's bearer token (environment or .env only, never a flag) |
| `--log-format` | `SIP_LOG_FORMAT` | text (`json`: one JSON object per line, with the Call-ID) |
| `--sip-transports` | `SIP_TRANSPORTS` | udp (comma-separated: udp, tcp, tls) |
| `--sip-tcp-port` | `SIP_TCP_PORT` | the SIP port |
| `--sip-tls-port` | `SIP_TLS_PORT` | the SIP port + 1 |
| `--tls-cert` | `SIP_TLS_CERT` | none (PEM certificate chain; needed for tls) |
| `--tls-key` | `SIP_TLS_KEY` | none: the key is in the certificate file |
| `--tls-ca` | `SIP_TLS_CA` | the system's trust store (PEM CA bundle for peers) |
| `--tls-verify` | `SIP_TLS_VERIFY` | true (false: labs only, peers not verified) |
| `--keepalive-interval` | `SIP_KEEPALIVE_INTERVAL` | 30 (seconds; 0: no keep-alives) |
| `--dns-servers` | `SIP_DNS_SERVERS` | the system's (name servers for RFC 3263 lookups) |

SIP options given without `--transport` imply it (`python bot.py --sip-port 5070`);
with another transport they stop start-up with one line saying so.

Routing: before answering, `serve()` asks a routing hook (the bot module's
`route_call(info)`, or `route=`) what to do with each call's `CallInfo`:
`pipecat_sip.routes.Accept(settings)` (settings reach `bot()` as
`runner_args.settings`), `Reject(status)` or `Redirect(targets)` (302); None accepts.

Pipecat Cloud: `create_transport` recognises a SIP request in a session's
body (`RunnerArguments.body`, as Pipecat Cloud passes it) and returns a
`SIPTransport` for it; see `sip_session_request` for the body formats.

Shutdown: SIGTERM (or SIGINT) stops taking calls at once (INVITE and OPTIONS
get 503, so a load balancer sends no more), lets live calls finish for up to
the drain timeout, hangs up the rest and exits 0; a second signal hangs up at
once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import ipaddress
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.runner.types import RunnerArguments

from pipecat_sip.call import CallFailed, SIPCall
from pipecat_sip.host import freeze_startup_objects
from pipecat_sip.resolver import parse_nameservers
from pipecat_sip.routes import Accept, Redirect, Reject
from pipecat_sip.sdes import SRTP_MODES
from pipecat_sip.server import (
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    Registration,
    SIPServer,
    parse_networks,
    parse_transports,
)
from pipecat_sip.sip.auth import users_from_text
from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.uri import SIPURI
from pipecat_sip.tls import TLSConfig, TLSConfigError
from pipecat_sip.transport import DialoutRequest, parse_dialout_settings
from pipecat_sip.trunk import Trunk

BotFunction = Callable[[Any], Awaitable[Any]]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable or flag."""


class APIStartError(OSError):
    """The operations API's TCP port cannot be bound."""


@dataclass
class SIPRunnerArguments(RunnerArguments):
    """Runner arguments for one SIP call, as Pipecat's runner passes to `bot(runner_args)`.

    Attributes:
        call: The answered call; `call.info` holds its data (From, To, Call-ID,
            codec, INVITE headers).
        settings: Per-call settings from the routing hook's `Accept`
            (`system_prompt`, `voice`, `greeting`, ...); empty without one.
    """

    call: SIPCall | None = field(default=None, kw_only=True)
    settings: dict[str, Any] = field(default_factory=dict, kw_only=True)


@dataclass(frozen=True)
class SIPRunnerConfig:
    """Validated SIP runner settings.

    Attributes:
        host: Bind address.
        port: SIP UDP port.
        rtp_port_range: (first, last) RTP ports, inclusive.
        public_address: Address for SDP and Contact, or None to detect.
        max_calls: Concurrent calls before 503.
        rtp_timeout_s: Seconds without RTP before a call ends (0 disables).
        allowed_networks: CIDR networks allowed to place calls (empty: all).
        rate_limit: Requests/s accepted per source IP (0 disables).
        rate_burst: Requests accepted at once per source IP.
        server_name: Server/User-Agent header value, or None for none.
        event_loop: "uvloop" or "asyncio" (resolved from "auto").
        registration: Where to register, or None.
        trunk: The default trunk for outbound calls, or None.
        auth_users: Users (name to password) whose INVITEs are accepted
            after a Digest challenge; None: no authentication.
        auth_realm: The realm of our challenges.
        auth_exempt_networks: CIDRs whose requests are not challenged.
        accept_registrations: Be a registrar for softphones (with auth_users:
            authenticated).
        public_address_v6: The IPv6 address of a dual-stack server (second
            address of SIP_PUBLIC_ADDRESS), or None.
        rtp_latching: "signaling", "any" or "off" (pipecat_sip.rtp.latching).
        hold_timeout_s: Seconds a call may stay held (0: no limit).
        max_call_duration_s: Seconds a call may last (0: no limit).
        max_unconfirmed_per_source: Calls one source may have waiting for an ACK.
        codecs: Codec names to offer and accept, in order (SIP_CODECS), or None
            for the default (G722, PCMU, PCMA).
        stun_server: STUN server (host, port) for the RTP port's public
            mapping, or None.
        srtp: SRTP policy: "off", "optional" or "required".
        srtp_insecure_signaling: Send SDES keys over UDP/TCP signalling too (labs).
        drain_timeout_s: Seconds live calls may take to end after SIGTERM
            before they are hung up (0: at once).
        api_port: TCP port of the operations API, or None for none.
        api_host: Address the operations API binds.
        api_token: The operations API's bearer token, or None.
        log_format: "text" or "json".
        transports: Transports to listen on ("udp", "tcp", "tls").
        tcp_port: TCP port, or None for the SIP port.
        tls_port: TLS port, or None for the SIP port + 1.
        tls: TLS settings, or None.
        keepalive_interval: Seconds between keep-alives on the registration's flow.
        dns_servers: Name servers for RFC 3263 lookups, or None for the system's.
    """

    host: str = "0.0.0.0"
    port: int = 6060
    rtp_port_range: tuple[int, int] = (10000, 15000)
    public_address: str | None = None
    max_calls: int = 100
    rtp_timeout_s: float = 30.0
    allowed_networks: tuple[str, ...] = ()
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: int = DEFAULT_RATE_BURST
    server_name: str | None = "pipecat-sip"
    event_loop: str = "asyncio"
    registration: Registration | None = None
    trunk: Trunk | None = None
    auth_users: dict[str, str] | None = field(default=None, repr=False)
    auth_realm: str = "pipecat-sip"
    auth_exempt_networks: tuple[str, ...] = ()
    accept_registrations: bool = False
    public_address_v6: str | None = None
    rtp_latching: str = "signaling"
    hold_timeout_s: float = 600.0
    max_call_duration_s: float = 14400.0
    max_unconfirmed_per_source: int = 5
    codecs: tuple[str, ...] | None = None
    stun_server: tuple[str, int] | None = None
    srtp: str = "off"
    srtp_insecure_signaling: bool = False
    drain_timeout_s: float = 0.0
    api_port: int | None = None
    api_host: str = "127.0.0.1"
    api_token: str | None = None
    log_format: str = "text"
    transports: tuple[str, ...] = ("udp",)
    tcp_port: int | None = None
    tls_port: int | None = None
    tls: TLSConfig | None = None
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    dns_servers: tuple[tuple[str, int], ...] | None = None


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _port(value: str, name: str, allow_zero: bool = False) -> int:
    text = value.strip()
    if not text.isdigit() or not (0 if allow_zero else 1) <= int(text) <= 65535:
        raise ConfigError(f"{name}: {value!r} is not a port number (1-65535)")
    return int(text)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _flag(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: {value!r} is not yes or no (1/0, true/false, on/off)")


def _address(value: str, name: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not an IP address") from None


def _seconds(
    value: str | None, name: str, *, default: float, maximum: float | None = None
) -> float:
    """A duration in seconds, 0 (off) up to ``maximum`` (or any finite); ``default`` when unset."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a number of seconds") from None
    if maximum is not None and not 0 <= seconds <= maximum:
        raise ConfigError(f"{name}: {value!r} must be 0 (off) to {maximum:g} seconds")
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{name}: {value!r} must be 0 (off) or more seconds")
    return seconds


def _networks(value: str | None, name: str) -> tuple[str, ...]:
    """A comma-separated list of CIDRs, normalized; empty when unset."""
    if not value:
        return ()
    try:
        return tuple(str(n) for n in parse_networks(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def server_arguments(config: SIPRunnerConfig, **overrides: Any) -> dict[str, Any]:
    """The `SIPServer` keyword arguments the runner's settings stand for.

    Args:
        config: The validated settings.
        **overrides: Arguments that differ for this server (``port``,
            ``registration``, ``user``).
    """
    arguments: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "public_address": config.public_address,
        "public_address_v6": config.public_address_v6,
        "rtp_port_range": config.rtp_port_range,
        "max_calls": config.max_calls,
        "rtp_timeout_s": config.rtp_timeout_s,
        "allowed_networks": config.allowed_networks,
        "rate_limit": config.rate_limit,
        "rate_burst": config.rate_burst,
        "server_name": config.server_name,
        "registration": config.registration,
        "rtp_latching": config.rtp_latching,
        "hold_timeout_s": config.hold_timeout_s,
        "max_call_duration_s": config.max_call_duration_s,
        "max_unconfirmed_per_source": config.max_unconfirmed_per_source,
        "trunks": [config.trunk] if config.trunk is not None else [],
        "auth_users": config.auth_users,
        "auth_realm": config.auth_realm,
        "auth_exempt_networks": config.auth_exempt_networks,
        "accept_registrations": config.accept_registrations,
        "srtp": config.srtp,
        "srtp_insecure_signaling": config.srtp_insecure_signaling,
        "transports": config.transports,
        "tcp_port": config.tcp_port,
        "tls_port": config.tls_port,
        "tls": config.tls,
        "keepalive_interval": config.keepalive_interval,
        "dns_servers": config.dns_servers,
    }
    if config.codecs:
        arguments["codecs"] = config.codecs
    arguments.update(overrides)
    return arguments


def parse_config(args: argparse.Namespace, env: Mapping[str, str]) -> SIPRunnerConfig:
    """Build the settings from flags (winning) and environment variables.

    Raises:
        ConfigError: A value is invalid; the message names it, in one line.
    """

    def pick(flag: str, var: str) -> tuple[str | None, str]:
        value = getattr(args, flag, None)
        if value is not None:
            return str(value), "--" + flag.replace("_", "-")
        return env.get(var) or None, var

    value, name = pick("sip_host", "SIP_SERVER_HOST")
    host = _address(value, name) if value else "0.0.0.0"
    value, name = pick("sip_port", "SIP_SERVER_PORT")
    port = _port(value, name, allow_zero=True) if value else 6060
    value, name = pick("rtp_ports", "SIP_RTP_PORT_RANGE")
    rtp_range = (10000, 15000)
    if value:
        first, dash, last = value.partition("-")
        if not dash:
            raise ConfigError(f"{name}: {value!r} is not a range like 10000-15000")
        rtp_range = (_port(first, name), _port(last, name))
        if rtp_range[1] - rtp_range[0] < 1:
            raise ConfigError(f"{name}: {value!r} must hold at least one even/odd port pair")
    value, name = pick("public_address", "SIP_PUBLIC_ADDRESS")
    public = public_v6 = None
    if value:
        addresses = [_address(v, name) for v in value.replace(",", " ").split()]
        if len(addresses) > 2 or (
            len(addresses) == 2 and (":" in addresses[0]) == (":" in addresses[1])
        ):
            raise ConfigError(f"{name}: {value!r} must be one address, or an IPv4 and an IPv6 one")
        public = addresses[0]
        public_v6 = addresses[1] if len(addresses) == 2 else None
    value, name = pick("max_calls", "SIP_MAX_CALLS")
    max_calls = 100
    if value:
        if not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"{name}: {value!r} is not a positive whole number")
        max_calls = int(value)
    rtp_timeout = _seconds(*pick("rtp_timeout", "SIP_RTP_TIMEOUT"), default=30.0)
    networks = _networks(*pick("allowed_networks", "SIP_ALLOWED_NETWORKS"))
    value, name = pick("rate_limit", "SIP_RATE_LIMIT")
    rate_limit = DEFAULT_RATE_LIMIT
    if value:
        try:
            rate_limit = float(value)
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not a number of requests/s") from None
        if not 0 <= rate_limit < float("inf"):
            raise ConfigError(f"{name}: {value!r} must be 0 (off) or more requests/s")
    value, name = pick("rate_burst", "SIP_RATE_BURST")
    rate_burst = DEFAULT_RATE_BURST
    if value:
        if not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"{name}: {value!r} is not a positive whole number")
        rate_burst = int(value)
    value, name = pick("server_name", "SIP_SERVER_NAME")
    server_name: str | None = "pipecat-sip"
    if value is not None:
        server_name = value.strip()
        if server_name.lower() in ("", "none"):
            server_name = None
        elif len(server_name) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in server_name):
            raise ConfigError(f"{name}: {value!r} must be one line of at most 128 characters")
    value, name = pick("event_loop", "SIP_EVENT_LOOP")
    choice = (value or "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"{name}: {value!r} is not one of auto, uvloop, asyncio")
    if choice == "uvloop" and not _uvloop_installed():
        raise ConfigError(f"{name}: 'uvloop' asked for but uvloop is not installed")
    if choice == "auto":
        choice = "uvloop" if _uvloop_installed() else "asyncio"
    registration = None
    value, name = pick("registrar", "SIP_REGISTRAR")
    if value:
        try:
            uri = SIPURI.parse(value.strip())
        except SIPParseError:
            raise ConfigError(f"{name}: {value!r} is not a SIP URI (sip:pbx.example.com)") from None
        username, user_name = pick("username", "SIP_USERNAME")
        if username is not None and not username.strip():
            raise ConfigError(f"{user_name}: empty")
        expires_text, expires_name = pick("register_expires", "SIP_REGISTER_EXPIRES")
        expires = 300
        if expires_text:
            if not expires_text.strip().isdigit() or not 30 <= int(expires_text) <= 86400:
                raise ConfigError(f"{expires_name}: {expires_text!r} is not 30-86400 seconds")
            expires = int(expires_text)
        registration = Registration(
            registrar=str(uri),
            username=username.strip() if username else None,
            password=env.get("SIP_PASSWORD") or None,
            expires=expires,
        )
    trunk = _trunk_config(args, env)
    auth_users = None
    value, name = pick("auth_users", "SIP_AUTH_USERS")
    if value:
        try:
            with open(value.strip(), encoding="utf-8") as f:
                auth_users = users_from_text(f.read())
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {value!r}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: {value!r}: {exc}") from None
        if not auth_users:
            raise ConfigError(f"{name}: {value!r} lists no user:password line")
    value, name = pick("auth_realm", "SIP_AUTH_REALM")
    auth_realm = "pipecat-sip"
    if value is not None:
        auth_realm = value.strip()
        if not auth_realm or any(c in auth_realm for c in '"\\\r\n') or len(auth_realm) > 64:
            raise ConfigError(f"{name}: {value!r} must be 1-64 characters without quotes")
    value, name = pick("accept_registrations", "SIP_ACCEPT_REGISTRATIONS")
    accept_registrations = _flag(value, name) if value is not None else False
    exempt = _networks(*pick("auth_exempt_networks", "SIP_AUTH_EXEMPT_NETWORKS"))
    value, name = pick("rtp_latching", "SIP_RTP_LATCHING")
    rtp_latching = (value or "signaling").strip().lower()
    if rtp_latching not in ("signaling", "any", "off"):
        raise ConfigError(f"{name}: {value!r} is not one of signaling, any, off")
    hold_timeout = _seconds(*pick("hold_timeout", "SIP_HOLD_TIMEOUT"), default=600.0)
    max_duration = _seconds(*pick("max_call_duration", "SIP_MAX_CALL_DURATION"), default=14400.0)
    value, name = pick("max_unconfirmed", "SIP_MAX_UNCONFIRMED_PER_SOURCE")
    max_unconfirmed = 5
    if value:
        if not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"{name}: {value!r} is not a positive whole number")
        max_unconfirmed = int(value)
    stun_server = None
    value, name = pick("stun_server", "SIP_STUN_SERVER")
    if value:
        from pipecat_sip.stun import parse_stun_server

        try:
            stun_server = parse_stun_server(value)
        except ValueError as exc:
            raise ConfigError(str(exc).replace("SIP_STUN_SERVER", name, 1)) from None
    value, name = pick("codecs", "SIP_CODECS")
    codecs = None
    if value:
        from pipecat_sip.codecs import parse_codec_list

        try:
            codecs = parse_codec_list(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    value, name = pick("srtp", "SIP_SRTP")
    srtp = (value or "off").strip().lower()
    if srtp not in SRTP_MODES:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(SRTP_MODES)}")
    value, name = pick("srtp_insecure_signaling", "SIP_SRTP_INSECURE_SIGNALING")
    srtp_insecure = _flag(value, name) if value is not None else False
    drain_timeout = _seconds(
        *pick("drain_timeout", "SIP_DRAIN_TIMEOUT"), default=0.0, maximum=86400
    )
    value, name = pick("api_port", "SIP_API_PORT")
    api_port = _port(value, name, allow_zero=True) if value else None
    value, name = pick("api_host", "SIP_API_HOST")
    api_host = _address(value, name) if value else "127.0.0.1"
    api_token = (env.get("SIP_API_TOKEN") or "").strip() or None
    if api_port is not None:
        from pipecat_sip.api import is_loopback

        if not is_loopback(api_host) and not api_token:
            raise ConfigError(
                f"{name}: the operations API on {api_host} (not loopback) needs SIP_API_TOKEN"
            )
    value, name = pick("log_format", "SIP_LOG_FORMAT")
    log_format = (value or "text").strip().lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"{name}: {value!r} is not one of text, json")
    transports_config = _parse_transport_config(pick, env)
    return SIPRunnerConfig(
        host,
        port,
        rtp_range,
        public,
        max_calls,
        rtp_timeout,
        allowed_networks=networks,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        server_name=server_name,
        event_loop=choice,
        registration=registration,
        trunk=trunk,
        auth_users=auth_users,
        auth_realm=auth_realm,
        auth_exempt_networks=exempt,
        accept_registrations=accept_registrations,
        public_address_v6=public_v6,
        rtp_latching=rtp_latching,
        hold_timeout_s=hold_timeout,
        max_call_duration_s=max_duration,
        max_unconfirmed_per_source=max_unconfirmed,
        stun_server=stun_server,
        codecs=codecs,
        srtp=srtp,
        srtp_insecure_signaling=srtp_insecure,
        drain_timeout_s=drain_timeout,
        api_port=api_port,
        api_host=api_host,
        api_token=api_token,
        log_format=log_format,
        **transports_config,
    )


def _trunk_config(args: argparse.Namespace, env: Mapping[str, str]) -> Trunk | None:
    """The default trunk from ``SIP_TRUNK_*`` (``--trunk-proxy``, ``--caller-id`` win).

    Raises:
        ConfigError: A bad value, named in one line.
    """
    merged = dict(env)
    for flag, var in (("trunk_proxy", "SIP_TRUNK_PROXY"), ("caller_id", "SIP_CALLER_ID")):
        value = getattr(args, flag, None)
        if value is not None:
            merged[var] = str(value)
    try:
        return Trunk.from_env(merged)
    except ValueError as exc:
        text = str(exc)
        for flag, var in (("--trunk-proxy", "SIP_TRUNK_PROXY"), ("--caller-id", "SIP_CALLER_ID")):
            if getattr(args, flag[2:].replace("-", "_"), None) is not None:
                text = text.replace(f"{var}:", f"{flag}:", 1)
        raise ConfigError(text) from None


_TLS_VARIABLES = {
    "cert": ("tls_cert", "SIP_TLS_CERT"),
    "key": ("tls_key", "SIP_TLS_KEY"),
    "ca": ("tls_ca", "SIP_TLS_CA"),
}


def _parse_transport_config(
    pick: Callable[[str, str], tuple[str | None, str]], env: Mapping[str, str]
) -> dict[str, Any]:
    """The transport, TLS, keep-alive and DNS settings (SIP over TCP and TLS).

    Raises:
        ConfigError: A value is invalid; the message names it, in one line.
    """
    value, name = pick("sip_transports", "SIP_TRANSPORTS")
    transports: tuple[str, ...] = ("udp",)
    if value:
        try:
            transports = parse_transports(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    ports: dict[str, int | None] = {}
    for key, flag, var in (
        ("tcp", "sip_tcp_port", "SIP_TCP_PORT"),
        ("tls", "sip_tls_port", "SIP_TLS_PORT"),
    ):
        value, name = pick(flag, var)
        ports[key] = _port(value, name, allow_zero=True) if value else None
    files: dict[str, str | None] = {}
    for key, (flag, var) in _TLS_VARIABLES.items():
        value, name = pick(flag, var)
        files[key] = value.strip() if value and value.strip() else None
    value, name = pick("tls_verify", "SIP_TLS_VERIFY")
    verify = True
    if value is not None:
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            verify = True
        elif text in ("0", "false", "no", "off"):
            verify = False
        else:
            raise ConfigError(f"{name}: {value!r} is not true or false")
    tls = None
    if files["cert"] or files["key"] or files["ca"] or not verify or "tls" in transports:
        tls = TLSConfig(files["cert"], files["key"], files["ca"], verify=verify)
        if "tls" in transports and tls.cert_file is None:
            _, var = _TLS_VARIABLES["cert"]
            raise ConfigError(f"{var}: needed for the tls transport (a PEM certificate chain)")
        try:
            tls.load()  # a missing, unreadable or mismatched file stops start-up here
        except TLSConfigError as exc:
            flag, var = _TLS_VARIABLES.get(exc.setting, _TLS_VARIABLES["cert"])
            _, shown = pick(flag, var)  # the flag when given, else the variable
            raise ConfigError(f"{shown}: {exc}") from None
    keepalive = _seconds(
        *pick("keepalive_interval", "SIP_KEEPALIVE_INTERVAL"),
        default=DEFAULT_KEEPALIVE_INTERVAL,
        maximum=86400,
    )
    value, name = pick("dns_servers", "SIP_DNS_SERVERS")
    dns_servers = None
    if value:
        try:
            dns_servers = tuple(parse_nameservers(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if not dns_servers:
            raise ConfigError(f"{name}: no name server given")
    return {
        "transports": transports,
        "tcp_port": ports["tcp"],
        "tls_port": ports["tls"],
        "tls": tls,
        "keepalive_interval": keepalive,
        "dns_servers": dns_servers,
    }


_SIP_FLAGS: tuple[tuple[str, str], ...] = (
    ("--sip-host", "bind address (SIP_SERVER_HOST, default 0.0.0.0)"),
    ("--sip-port", "SIP UDP port (SIP_SERVER_PORT, default 6060)"),
    ("--rtp-ports", "RTP port range A-B (SIP_RTP_PORT_RANGE, default 10000-15000)"),
    ("--public-address", "address for SDP and Contact (SIP_PUBLIC_ADDRESS)"),
    ("--max-calls", "concurrent calls before 503 (SIP_MAX_CALLS)"),
    ("--rtp-timeout", "seconds without RTP before hang-up (SIP_RTP_TIMEOUT)"),
    (
        "--allowed-networks",
        "CIDRs allowed to call, comma-separated (SIP_ALLOWED_NETWORKS, default: all)",
    ),
    ("--rate-limit", "requests/s per source IP, 0 = off (SIP_RATE_LIMIT, default 100)"),
    ("--rate-burst", "requests at once per source IP (SIP_RATE_BURST, default 200)"),
    ("--server-name", "Server header value, 'none' for none (SIP_SERVER_NAME)"),
    (
        "--event-loop",
        "auto (uvloop when installed), uvloop or asyncio (SIP_EVENT_LOOP, default auto)",
    ),
    ("--registrar", "register at this SIP URI, e.g. sip:pbx.example.com (SIP_REGISTRAR)"),
    ("--username", "registration user / Digest user name (SIP_USERNAME; SIP_PASSWORD)"),
    ("--register-expires", "seconds per registration (SIP_REGISTER_EXPIRES, default 300)"),
    (
        "--trunk-proxy",
        "default trunk for outbound calls, e.g. sip:sip.carrier.example (SIP_TRUNK_PROXY; "
        "SIP_TRUNK_USERNAME, SIP_TRUNK_AUTH_USER, SIP_TRUNK_PASSWORD, SIP_TRUNK_FROM_USER)",
    ),
    ("--caller-id", "number outbound calls present (SIP_CALLER_ID)"),
    ("--auth-users", "file of user:password lines: Digest for INVITEs (SIP_AUTH_USERS)"),
    ("--auth-realm", "Digest realm (SIP_AUTH_REALM, default pipecat-sip)"),
    ("--auth-exempt-networks", "CIDRs not challenged, e.g. a trunk's (SIP_AUTH_EXEMPT_NETWORKS)"),
    ("--codecs", "codecs to offer and accept, in order, e.g. G722,PCMU,PCMA (SIP_CODECS)"),
    (
        "--drain-timeout",
        "seconds live calls may take to end after SIGTERM (SIP_DRAIN_TIMEOUT, default 0)",
    ),
    ("--api-port", "serve the operations API on this TCP port (SIP_API_PORT)"),
    (
        "--api-host",
        "operations API address (SIP_API_HOST, default 127.0.0.1; others need SIP_API_TOKEN)",
    ),
    ("--log-format", "text or json (SIP_LOG_FORMAT, default text)"),
    (
        "--rtp-latching",
        "RTP from elsewhere than the SDP address: signaling (default), any, off (SIP_RTP_LATCHING)",
    ),
    ("--hold-timeout", "seconds a call may stay held, 0 = no limit (SIP_HOLD_TIMEOUT)"),
    (
        "--max-call-duration",
        "seconds a call may last, 0 = no limit (SIP_MAX_CALL_DURATION, default 14400)",
    ),
    (
        "--max-unconfirmed",
        "calls one source may have waiting for an ACK (SIP_MAX_UNCONFIRMED_PER_SOURCE, 5)",
    ),
    ("--stun-server", "STUN server host[:port] for the RTP public address (SIP_STUN_SERVER)"),
    ("--srtp", "SRTP with SDES keys: off, optional or required (SIP_SRTP, default off)"),
    (
        "--srtp-insecure-signaling",
        "yes: SDES keys over UDP/TCP too, labs only (SIP_SRTP_INSECURE_SIGNALING, default no)",
    ),
    ("--sip-transports", "transports to listen on: udp,tcp,tls (SIP_TRANSPORTS, default udp)"),
    ("--sip-tcp-port", "SIP TCP port (SIP_TCP_PORT, default the SIP port)"),
    ("--sip-tls-port", "SIP TLS port (SIP_TLS_PORT, default the SIP port + 1)"),
    ("--tls-cert", "PEM certificate chain for TLS (SIP_TLS_CERT)"),
    ("--tls-key", "PEM private key of the certificate (SIP_TLS_KEY)"),
    ("--tls-ca", "PEM CA bundle peers must chain to (SIP_TLS_CA, default: system store)"),
    ("--tls-verify", "verify peers' certificates: true or false (SIP_TLS_VERIFY, default true)"),
    (
        "--keepalive-interval",
        "seconds between registration-flow keep-alives, 0 = off (SIP_KEEPALIVE_INTERVAL)",
    ),
    ("--dns-servers", "name servers for SIP lookups, e.g. 192.0.2.53,[::1]:53 (SIP_DNS_SERVERS)"),
)
"""The SIP options that take one value: (flag, help naming its environment variable)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python bot.py --transport sip`."""
    parser = argparse.ArgumentParser(description="Pipecat bot over SIP (pipecat-sip)")
    parser.add_argument("-t", "--transport", default="sip", help="transport: sip here")
    for flag, help_text in _SIP_FLAGS:
        parser.add_argument(flag, help=help_text)
    parser.add_argument(
        "--accept-registrations",
        nargs="?",
        const="true",
        help="be a registrar for softphones (SIP_ACCEPT_REGISTRATIONS; with --auth-users: "
        "authenticated)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def sip_options(argv: Sequence[str]) -> list[str]:
    """The SIP-only options on a command line (those Pipecat's runner does not know)."""
    ours = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option not in ("-h", "--help", "-t", "--transport", "-v", "--verbose")
    }
    return [arg.split("=", 1)[0] for arg in argv if arg.split("=", 1)[0] in ours]


def transport_named(argv: Sequence[str]) -> str | None:
    """The transport a command line names with `-t`/`--transport`, or None."""
    for i, arg in enumerate(argv):
        if arg in ("-t", "--transport"):
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("--transport="):
            return arg.split("=", 1)[1]
        if arg.startswith("-t") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:].lstrip("=")
    return None


def wants_sip(argv: Sequence[str]) -> bool:
    """Whether a command line asks for the SIP transport (`-t sip`, `--transport=sip`, ...)."""
    for i, arg in enumerate(argv):
        if arg in ("-t", "--transport") and i + 1 < len(argv):
            return argv[i + 1] == "sip"
        if arg.startswith("--transport="):
            return arg.split("=", 1)[1] == "sip"
        if arg.startswith("-t") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:].lstrip("=") == "sip"
    return False


async def create_transport(runner_args: Any, transport_params: dict[str, Callable[[], Any]]):
    """Build the transport for `runner_args`: a `SIPTransport` for SIP, else Pipecat's.

    A Pipecat Cloud session (`RunnerArguments` with a `body`, no room or
    connection of its own) whose body asks for SIP (see
    :func:`sip_session_request`) gets a `SIPTransport` on a SIP server of its
    own, configured from the environment (the session's secrets), which the
    transport stops when the session ends.

    Args:
        runner_args: `SIPRunnerArguments` or any of Pipecat's runner arguments.
        transport_params: Transport name to a factory of its params
            (`{"sip": lambda: SIPParams(...), "webrtc": ...}`).

    Returns:
        The transport.

    Raises:
        ValueError: No `"sip"` entry for a SIP call or session, a session
            body asking for SIP wrongly (the message says what), or what
            Pipecat raises.
        OSError: The session's SIP socket cannot be bound.
    """
    request = sip_session_request(runner_args, os.environ)
    if request is not None:
        factory = transport_params.get("sip")
        if factory is None:
            raise ValueError("Missing transport params for 'sip' in transport_params")
        return await start_sip_session(runner_args, request, factory(), os.environ)
    if isinstance(runner_args, SIPRunnerArguments):
        from pipecat_sip.transport import SIPTransport

        factory = transport_params.get("sip")
        if factory is None:
            raise ValueError("Missing transport params for 'sip' in transport_params")
        if runner_args.call is None:
            raise ValueError("SIPRunnerArguments has no call")
        return SIPTransport(runner_args.call, factory())
    from pipecat.runner.utils import create_transport as pipecat_create_transport

    return await pipecat_create_transport(runner_args, transport_params)


# --- routing --------------------------------------------------------------------------------

RouteHook = Callable[[Any], Any]


async def decide_route(route: RouteHook | None, info: Any) -> Accept | Reject | Redirect:
    """Ask the routing hook about a call; None (no hook, or it said None) accepts.

    Raises:
        TypeError: The hook returned something that is no decision.
    """
    if route is None:
        return Accept()
    decision = route(info)
    if inspect.isawaitable(decision):
        decision = await decision
    if decision is None:
        return Accept()
    if not isinstance(decision, Accept | Reject | Redirect):
        raise TypeError(
            f"routing hook returned {type(decision).__name__}, not Accept, Reject or Redirect"
        )
    return decision


async def apply_route(route: RouteHook | None, call: SIPCall) -> dict[str, Any] | None:
    """Route one ringing call: its settings when accepted, None when rejected or redirected.

    A failing hook rejects the call with 500 (and logs why).
    """
    try:
        decision = await decide_route(route, call.info)
    except Exception:
        logger.exception(f"{call}: routing hook failed: 500")
        await call.reject(500)
        return None
    where = f" (route {decision.route!r})" if decision.route else ""
    if isinstance(decision, Reject):
        logger.info(f"{call}: rejected {decision.status_code}{where}")
        await call.reject(decision.status_code, decision.reason)
        return None
    if isinstance(decision, Redirect):
        logger.info(f"{call}: redirected {decision.status_code} to {', '.join(decision.targets)}")
        contacts = [("Contact", f"<{target}>") for target in decision.targets]
        await call.reject(decision.status_code, headers=contacts)
        return None
    if decision.route:
        logger.info(f"{call}: accepted{where}")
    return dict(decision.settings)


# --- Pipecat Cloud sessions ---------------------------------------------------------------

#: Longest a registration session waits for its call, seconds.
MAX_SESSION_WAIT_S = 3600.0


@dataclass(frozen=True)
class SIPSessionRequest:
    """What a Pipecat Cloud session's body asks of SIP.

    Attributes:
        kind: "dialout" (call out through the trunk) or "register" (register
            and wait for one inbound call).
        dialout: The call to place (dial-out sessions).
        registrar: Registrar URI from the body, else None (``SIP_REGISTRAR``).
        username: Registration user from the body, else None (``SIP_USERNAME``).
        wait_s: Seconds a registration session waits for its call.
    """

    kind: str
    dialout: DialoutRequest | None = None
    registrar: str | None = None
    username: str | None = None
    wait_s: float = 300.0


_TRANSPORT_ATTRIBUTES = ("room_url", "websocket", "webrtc_connection", "room_name", "url")


def sip_session_request(runner_args: Any, env: Mapping[str, str]) -> SIPSessionRequest | None:
    """Whether a session's runner arguments ask for SIP, and how.

    Only sessions without a transport of their own qualify (Pipecat Cloud's
    ``PipecatSessionArguments``, a plain ``RunnerArguments``): a Daily room's
    session with ``dialout_settings`` stays Daily's. Body formats (JSON)::

        {"dialout_settings": {"phone_number": "+14155550100", "caller_id": "+14155550199"}}
        {"dialout_settings": [{"phoneNumber": "+14155550100", "callerId": "..."}]}
        {"sip": {"dialout": {"sipUri": "sip:alice@pbx.example.com", "displayName": "Bot"}}}
        {"sip": {"register": true, "wait": 300}}
        {"sip": {"register": {"registrar": "sip:pbx.example.com", "username": "1001"}}}

    Dial-out settings are Daily's (see
    :func:`~pipecat_sip.transport.parse_dialout_settings`). Registration
    uses ``SIP_REGISTRAR``, ``SIP_USERNAME`` and ``SIP_PASSWORD`` unless the
    body names the registrar or user (never the password: keep it in the
    secrets). ``SIP_SESSION=register`` makes every such session without a
    body of its own a registration session.

    Args:
        runner_args: What ``bot()`` was called with.
        env: The environment.

    Returns:
        The request, or None when the session is not a SIP one.

    Raises:
        ValueError: The body asks for SIP but not in a form given above.
    """
    if isinstance(runner_args, SIPRunnerArguments) or runner_args is None:
        return None
    if any(getattr(runner_args, name, None) is not None for name in _TRANSPORT_ATTRIBUTES):
        return None
    body = getattr(runner_args, "body", None)
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    if not isinstance(body, Mapping):
        body = {}
    where = "session body"
    if "dialout_settings" in body:
        settings = body["dialout_settings"]
        if isinstance(settings, list):
            if len(settings) != 1:
                raise ValueError(f"{where}: dialout_settings: one dial-out per session")
            settings = settings[0]
        try:
            return SIPSessionRequest("dialout", parse_dialout_settings(settings))
        except ValueError as exc:
            raise ValueError(f"{where}: dialout_settings: {exc}") from None
    sip = body.get("sip")
    if sip is None:
        if (env.get("SIP_SESSION") or "").strip().lower() == "register":
            return SIPSessionRequest("register")
        return None
    if not isinstance(sip, Mapping):
        raise ValueError(f"{where}: sip must be an object with 'dialout' or 'register'")
    if ("dialout" in sip) == ("register" in sip):
        raise ValueError(f"{where}: sip needs exactly one of 'dialout' or 'register'")
    if "dialout" in sip:
        try:
            return SIPSessionRequest("dialout", parse_dialout_settings(sip["dialout"]))
        except ValueError as exc:
            raise ValueError(f"{where}: sip.dialout: {exc}") from None
    register = sip["register"]
    registrar = username = None
    if isinstance(register, Mapping):
        unknown = set(register) - {"registrar", "username"}
        if unknown:
            raise ValueError(f"{where}: sip.register: unknown key {sorted(unknown)[0]!r}")
        registrar, username = register.get("registrar"), register.get("username")
        if registrar is not None:
            try:
                registrar = str(SIPURI.parse(str(registrar).strip()))
            except SIPParseError:
                raise ValueError(f"{where}: sip.register.registrar is not a SIP URI") from None
        if username is not None and not re.fullmatch(r"[A-Za-z0-9.!%*_+`'~-]{1,64}", username):
            raise ValueError(f"{where}: sip.register.username is not a SIP user")
    elif register is not True:
        raise ValueError(f"{where}: sip.register must be true or an object")
    wait = sip.get("wait", 300)
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise ValueError(f"{where}: sip.wait must be a number of seconds")
    if not 1 <= wait <= MAX_SESSION_WAIT_S:
        raise ValueError(f"{where}: sip.wait must be 1-{MAX_SESSION_WAIT_S:g} seconds")
    return SIPSessionRequest("register", None, registrar, username, float(wait))


async def start_sip_session(
    runner_args: Any, request: SIPSessionRequest, params: Any, env: Mapping[str, str]
):
    """Start the SIP side of a Pipecat Cloud session and return its transport.

    The session's server is configured from the environment as ``-t sip``
    is (an unset ``SIP_SERVER_PORT`` takes a free port: nothing calls in
    unasked), learns the RTP port's public mapping by STUN when
    ``SIP_STUN_SERVER`` is set, and is stopped by the transport when the
    session ends. A dial-out session dials when the pipeline starts; a
    registration session registers, fires ``on_dialin_ready``, answers the
    first call the routing hook accepts (others get 486) and gives up with
    ``on_dialin_error`` after ``wait_s``.

    Raises:
        ValueError: The environment's SIP settings are wrong (one line naming
            the variable), or a registration session without a registrar.
        OSError: The SIP socket cannot be bound.
    """
    from pipecat_sip.transport import SIPTransport

    try:
        config = parse_config(argparse.Namespace(), env)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    port = config.port if (env.get("SIP_SERVER_PORT") or "").strip() else 0
    registration = None
    if request.kind == "register":
        base = config.registration
        registrar = request.registrar or (base.registrar if base else None)
        if registrar is None:
            raise ValueError(
                "a registration session needs SIP_REGISTRAR (or sip.register.registrar)"
            )
        username = request.username or (base.username if base else None)
        registration = Registration(
            registrar=registrar,
            username=username,
            password=env.get("SIP_PASSWORD") or None,
            expires=base.expires if base else 300,
        )
    session_id = getattr(runner_args, "session_id", None)
    route = _find_hook("route_call")
    holder: dict[str, Any] = {}

    async def on_call(call: SIPCall) -> None:
        transport = holder["transport"]
        if transport.call is not None or holder.get("taken"):
            await call.reject(486)
            return
        settings = await apply_route(route, call)
        if settings is None or holder.get("taken"):
            if settings is not None:
                await call.reject(486)
            return
        holder["taken"] = True
        # A call can come in before the registration poll noticed: ready comes first.
        await transport.dialin_ready(_aor(server))
        try:
            await call.answer()
        except CallFailed as exc:
            holder["taken"] = False
            await transport.dialin_error(f"the call ended before it was answered ({exc})")
            return
        transport.call_settings = settings
        await transport.attach_call(call)

    async def refuse(call: SIPCall) -> None:  # a dial-out session takes no calls
        await call.reject(486)

    user = (registration.username if registration else None) or "pipecat"
    server = SIPServer(
        on_call if request.kind == "register" else refuse,
        **server_arguments(config, port=port, registration=registration, user=user),
    )
    await _learn_public_address(server, config)
    await server.start()
    transport = SIPTransport(
        None,
        params,
        server=server,
        dialout=request.dialout,
        session_id=session_id,
        owns_server=True,
    )
    transport.call_settings = {}
    holder["transport"] = transport
    if request.kind == "register":
        transport.track_task(asyncio.ensure_future(_await_call(server, transport, request)))
    logger.info(
        f"Pipecat Cloud session {session_id or ''}: SIP {request.kind} "
        f"on udp {server.host}:{server.port} ({server.uri})"
    )
    return transport


def _aor(server: SIPServer) -> str:
    """The address-of-record a registration session is registered as."""
    registration = server.registration
    assert registration is not None
    uri = SIPURI.parse(registration.registrar)
    return str(SIPURI(uri.host, user=registration.username or server.user, port=uri.port))


async def _await_call(server: SIPServer, transport: Any, request: SIPSessionRequest) -> None:
    """Registration session: on_dialin_ready once registered; give up after the wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.wait_s
    registration = server.registration
    assert registration is not None
    while not server.registered and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if server.registered:
        await transport.dialin_ready(_aor(server))
    while transport.call is None and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if transport.call is None:
        message = (
            f"no call in {request.wait_s:g} s"
            if server.registered
            else f"not registered at {registration.registrar} in {request.wait_s:g} s"
        )
        await transport.dialin_error(message)
        transport.end_session(message)


async def _learn_public_address(server: SIPServer, config: SIPRunnerConfig) -> None:
    """STUN (``SIP_STUN_SERVER``) for the RTP port's public address, unless one is configured."""
    if config.stun_server is None or config.public_address is not None:
        return
    from pipecat_sip.stun import StunError, learn_rtp_mapping

    try:
        mapping = await learn_rtp_mapping(server.ports, config.stun_server)
    except (StunError, OSError) as exc:
        logger.warning(f"STUN: {exc}; SDP keeps {server.public_address}")
        return
    server.public_address = mapping.public[0]


def _find_hook(name: str) -> Callable[..., Any] | None:
    """A function of the bot module (`route_call`, ...), or None."""
    for module_name in ("__main__", "bot"):
        module = sys.modules.get(module_name)
        hook = getattr(module, name, None) if module is not None else None
        if callable(hook):
            return hook
    return None


def _find_bot() -> BotFunction:
    main_module = sys.modules.get("__main__")
    bot = getattr(main_module, "bot", None)
    if bot is None:
        import importlib

        bot = getattr(importlib.import_module("bot"), "bot", None)
    if bot is None:
        raise RuntimeError("no bot(runner_args) function found in the main module or bot.py")
    return bot


async def serve(
    bot: BotFunction,
    config: SIPRunnerConfig,
    *,
    stop_event: asyncio.Event | None = None,
    shutdown_timeout_s: float = 3.0,
    started: Callable[[SIPServer], Any] | None = None,
    route: RouteHook | None = None,
) -> None:
    """Run the SIP server until `stop_event` is set (or SIGINT/SIGTERM when None).

    Each incoming call is routed first (`route(call.info)`, see
    :func:`decide_route`: rejected and redirected calls end there), then
    answered, and `bot(SIPRunnerArguments(call=call, settings=...))` runs
    for it; when the bot returns, the call is hung up if still up. On
    stop: no new calls (503), up to `config.drain_timeout_s` for live calls to
    end (a second signal, or `server.hangup_now()`, cuts it short), BYE to
    the rest, up to `shutdown_timeout_s` for the bots to finish, then they
    are cancelled. With `config.api_port` the operations API runs beside
    the server; a call dialled through it runs `bot` too, with the request's
    settings as `runner_args.settings` and `runner_args.body`.

    Raises:
        OSError: The SIP port, or the API's, cannot be bound.
    """
    loop = asyncio.get_running_loop()
    bot_tasks: set[asyncio.Task] = set()

    async def on_dialed(call: SIPCall, settings: dict[str, Any]) -> None:
        runner_args = SIPRunnerArguments(call=call, settings=dict(settings), body=settings)
        task = asyncio.current_task()
        if task is not None:
            bot_tasks.add(task)
        try:
            await bot(runner_args)
        finally:
            bot_tasks.discard(task)  # type: ignore[arg-type]

    async def on_call(call: SIPCall) -> None:
        settings = await apply_route(route, call)
        if settings is None:
            return
        await call.answer()
        runner_args = SIPRunnerArguments(call=call, settings=settings)
        task = asyncio.current_task()
        if task is not None:
            bot_tasks.add(task)
        try:
            await bot(runner_args)
        finally:
            bot_tasks.discard(task)  # type: ignore[arg-type]
            await call.hangup()

    # Registered as an extension, the Contact carries the extension's number.
    registration_user = config.registration.username if config.registration else None
    server = SIPServer(on_call, **server_arguments(config, user=registration_user or "pipecat"))
    if stop_event is None:
        stop_event = asyncio.Event()
        event = stop_event

        def on_signal() -> None:
            if event.is_set():
                logger.info("Second stop signal: hanging up every call now")
                server.hangup_now()
            else:
                event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
    await _learn_public_address(server, config)
    await server.start()
    api = None
    if config.api_port is not None:
        from pipecat_sip.api import OperationsAPI

        api = OperationsAPI(
            server,
            host=config.api_host,
            port=config.api_port,
            token=config.api_token,
            dial_handler=on_dialed,
        )
        try:
            await api.start()
        except OSError as exc:
            await server.stop(timeout=0.5)
            raise APIStartError(
                f"cannot serve the operations API on tcp {config.api_host}:{config.api_port}: {exc}"
            ) from None
    logger.info(f"Ready: call {server.uri}")
    from pipecat_sip.codecs import unavailable_codecs

    for codec, why in unavailable_codecs().items():
        logger.info(f"codec {codec} unavailable: {why}")
    # Start-up's objects out of the collector's full passes (a 30-50 ms stall of
    # every call's media otherwise): see host.freeze_startup_objects.
    logger.debug(f"gc: {freeze_startup_objects()} start-up objects frozen")
    if started is not None:
        started(server)
    try:
        await stop_event.wait()
    finally:
        gc.unfreeze()  # the objects back to the collector (serve() may run in-process)
        live = len(server.calls)
        if config.drain_timeout_s > 0 and live:
            logger.info(
                f"Shutting down: taking no new calls, {live} live call(s) may take up to "
                f"{config.drain_timeout_s:g} s (a second signal hangs up at once)"
            )
        else:
            logger.info(f"Shutting down: hanging up {live} call(s)")
        await server.drain(config.drain_timeout_s, stop_timeout=1.0)
        if bot_tasks:
            _, pending = await asyncio.wait(set(bot_tasks), timeout=shutdown_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if api is not None:
            await api.stop()
        logger.info("SIP server stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point for bots: `-t sip` runs the SIP server, anything else runs Pipecat's runner."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sip_only = sip_options(argv)
    if sip_only and not wants_sip(argv):
        named = transport_named(argv)
        if named is not None:
            print(
                f"error: {sip_only[0]} is a SIP option: add --transport sip "
                f"(not --transport {named or '?'})",
                file=sys.stderr,
            )
            raise SystemExit(2)
        print(f"{sip_only[0]} is a SIP option: running --transport sip", file=sys.stderr)
        argv = ["--transport", "sip", *argv]
    if not wants_sip(argv):
        if "-h" in argv or "--help" in argv:
            print(
                "pipecat-sip: `--transport sip` answers SIP calls "
                "(`--transport sip --help` lists its options). Pipecat's runner:\n"
            )
        from pipecat.runner.run import main as pipecat_main

        pipecat_main()
        return
    from dotenv import load_dotenv

    load_dotenv(override=False)
    args = build_parser().parse_args(argv)
    try:
        config = parse_config(args, os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from pipecat_sip.logs import configure_logging

    configure_logging(config.log_format, "DEBUG" if args.verbose else "INFO")
    bot = _find_bot()
    route = _find_hook("route_call")
    logger.debug(f"event loop: {config.event_loop}")
    try:
        if config.event_loop == "uvloop":
            import uvloop

            # Pipecat's per-frame work is mostly event loop work: uvloop takes
            # about 10-20% off a pipeline call's CPU (bench/README.md).
            uvloop.run(serve(bot, config, route=route))
        else:
            asyncio.run(serve(bot, config, route=route))
    except APIStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        where = "/".join(config.transports)
        print(
            f"error: cannot listen on {where} {config.host}:{config.port}: {exc}", file=sys.stderr
        )
        raise SystemExit(1) from None
