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
| `--rtp-latching` | `SIP_RTP_LATCHING` | signaling (also: any, off) |
| `--hold-timeout` | `SIP_HOLD_TIMEOUT` | 600 (seconds a call may stay held; 0: no limit) |
| `--max-call-duration` | `SIP_MAX_CALL_DURATION` | 14400 (seconds; 0: no limit) |
| `--max-unconfirmed` | `SIP_MAX_UNCONFIRMED_PER_SOURCE` | 5 (calls waiting for an ACK per source) |
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.runner.types import RunnerArguments

from pipecat_sip.call import SIPCall
from pipecat_sip.server import (
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    Registration,
    SIPServer,
    parse_networks,
)
from pipecat_sip.sip.auth import users_from_text
from pipecat_sip.sip.errors import SIPParseError
from pipecat_sip.sip.uri import SIPURI
from pipecat_sip.trunk import Trunk

BotFunction = Callable[[Any], Awaitable[Any]]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable or flag."""


@dataclass
class SIPRunnerArguments(RunnerArguments):
    """Runner arguments for one SIP call, as Pipecat's runner passes to `bot(runner_args)`.

    Attributes:
        call: The answered call; `call.info` holds its data (From, To, Call-ID,
            codec, INVITE headers).
    """

    call: SIPCall | None = field(default=None, kw_only=True)


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


def _address(value: str, name: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not an IP address") from None


def _seconds(value: str | None, name: str, *, default: float) -> float:
    """A duration in seconds, 0 (off) or more; ``default`` when unset."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{name}: {value!r} must be 0 (off) or more seconds")
    return seconds


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
    value, name = pick("rtp_timeout", "SIP_RTP_TIMEOUT")
    rtp_timeout = 30.0
    if value:
        try:
            rtp_timeout = float(value)
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not a number of seconds") from None
        if rtp_timeout < 0:
            raise ConfigError(f"{name}: {value!r} must be 0 (off) or more seconds")
    value, name = pick("allowed_networks", "SIP_ALLOWED_NETWORKS")
    networks: tuple[str, ...] = ()
    if value:
        try:
            networks = tuple(str(n) for n in parse_networks(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
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
    accept_registrations = False
    if value is not None:
        text = value.strip().lower()
        if text not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ConfigError(f"{name}: {value!r} is not true or false")
        accept_registrations = text in ("1", "true", "yes", "on")
    value, name = pick("auth_exempt_networks", "SIP_AUTH_EXEMPT_NETWORKS")
    exempt: tuple[str, ...] = ()
    if value:
        try:
            exempt = tuple(str(n) for n in parse_networks(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python bot.py --transport sip`."""
    parser = argparse.ArgumentParser(description="Pipecat bot over SIP (pipecat-sip)")
    parser.add_argument("-t", "--transport", default="sip", help="transport: sip here")
    parser.add_argument("--sip-host", help="bind address (SIP_SERVER_HOST, default 0.0.0.0)")
    parser.add_argument("--sip-port", help="SIP UDP port (SIP_SERVER_PORT, default 6060)")
    parser.add_argument(
        "--rtp-ports", help="RTP port range A-B (SIP_RTP_PORT_RANGE, default 10000-15000)"
    )
    parser.add_argument("--public-address", help="address for SDP and Contact (SIP_PUBLIC_ADDRESS)")
    parser.add_argument("--max-calls", help="concurrent calls before 503 (SIP_MAX_CALLS)")
    parser.add_argument(
        "--rtp-timeout", help="seconds without RTP before hang-up (SIP_RTP_TIMEOUT)"
    )
    parser.add_argument(
        "--allowed-networks",
        help="CIDRs allowed to call, comma-separated (SIP_ALLOWED_NETWORKS, default: all)",
    )
    parser.add_argument(
        "--rate-limit", help="requests/s per source IP, 0 = off (SIP_RATE_LIMIT, default 100)"
    )
    parser.add_argument(
        "--rate-burst", help="requests at once per source IP (SIP_RATE_BURST, default 200)"
    )
    parser.add_argument(
        "--server-name", help="Server header value, 'none' for none (SIP_SERVER_NAME)"
    )
    parser.add_argument(
        "--event-loop",
        help="auto (uvloop when installed), uvloop or asyncio (SIP_EVENT_LOOP, default auto)",
    )
    parser.add_argument(
        "--registrar", help="register at this SIP URI, e.g. sip:pbx.example.com (SIP_REGISTRAR)"
    )
    parser.add_argument(
        "--username", help="registration user / Digest user name (SIP_USERNAME; SIP_PASSWORD)"
    )
    parser.add_argument(
        "--register-expires", help="seconds per registration (SIP_REGISTER_EXPIRES, default 300)"
    )
    parser.add_argument(
        "--trunk-proxy",
        help="default trunk for outbound calls, e.g. sip:sip.carrier.example (SIP_TRUNK_PROXY; "
        "SIP_TRUNK_USERNAME, SIP_TRUNK_AUTH_USER, SIP_TRUNK_PASSWORD, SIP_TRUNK_FROM_USER)",
    )
    parser.add_argument("--caller-id", help="number outbound calls present (SIP_CALLER_ID)")
    parser.add_argument(
        "--auth-users", help="file of user:password lines: Digest for INVITEs (SIP_AUTH_USERS)"
    )
    parser.add_argument("--auth-realm", help="Digest realm (SIP_AUTH_REALM, default pipecat-sip)")
    parser.add_argument(
        "--accept-registrations",
        nargs="?",
        const="true",
        help="be a registrar for softphones (SIP_ACCEPT_REGISTRATIONS; with --auth-users: "
        "authenticated)",
    )
    parser.add_argument(
        "--auth-exempt-networks",
        help="CIDRs not challenged, e.g. a trunk's (SIP_AUTH_EXEMPT_NETWORKS)",
    )
    parser.add_argument(
        "--rtp-latching",
        help="RTP from elsewhere than the SDP address: signaling (default), any, off "
        "(SIP_RTP_LATCHING)",
    )
    parser.add_argument(
        "--hold-timeout", help="seconds a call may stay held, 0 = no limit (SIP_HOLD_TIMEOUT)"
    )
    parser.add_argument(
        "--max-call-duration",
        help="seconds a call may last, 0 = no limit (SIP_MAX_CALL_DURATION, default 14400)",
    )
    parser.add_argument(
        "--max-unconfirmed",
        help="calls one source may have waiting for an ACK (SIP_MAX_UNCONFIRMED_PER_SOURCE, 5)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


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

    Args:
        runner_args: `SIPRunnerArguments` or any of Pipecat's runner arguments.
        transport_params: Transport name to a factory of its params
            (`{"sip": lambda: SIPParams(...), "webrtc": ...}`).

    Returns:
        The transport.

    Raises:
        ValueError: No `"sip"` entry for a SIP call, or what Pipecat raises.
    """
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
) -> None:
    """Run the SIP server until `stop_event` is set (or SIGINT/SIGTERM when None).

    Each incoming call is answered and `bot(SIPRunnerArguments(call=call))`
    runs for it; when the bot returns, the call is hung up if still up. On
    stop: BYE to every live call, up to `shutdown_timeout_s` for the bots to
    finish, then they are cancelled.
    """
    loop = asyncio.get_running_loop()
    bot_tasks: set[asyncio.Task] = set()

    async def on_call(call: SIPCall) -> None:
        await call.answer()
        runner_args = SIPRunnerArguments(call=call)
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
    server = SIPServer(
        on_call,
        host=config.host,
        port=config.port,
        public_address=config.public_address,
        rtp_port_range=config.rtp_port_range,
        max_calls=config.max_calls,
        rtp_timeout_s=config.rtp_timeout_s,
        allowed_networks=config.allowed_networks,
        rate_limit=config.rate_limit,
        rate_burst=config.rate_burst,
        server_name=config.server_name,
        registration=config.registration,
        public_address_v6=config.public_address_v6,
        rtp_latching=config.rtp_latching,
        hold_timeout_s=config.hold_timeout_s,
        max_call_duration_s=config.max_call_duration_s,
        max_unconfirmed_per_source=config.max_unconfirmed_per_source,
        user=registration_user or "pipecat",
        trunks=[config.trunk] if config.trunk is not None else [],
        auth_users=config.auth_users,
        auth_realm=config.auth_realm,
        auth_exempt_networks=config.auth_exempt_networks,
        accept_registrations=config.accept_registrations,
    )
    if stop_event is None:
        stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
    await server.start()
    logger.info(f"Ready: call {server.uri}")
    if started is not None:
        started(server)
    try:
        await stop_event.wait()
    finally:
        live = len(server.calls)
        logger.info(f"Shutting down: hanging up {live} call(s)")
        await server.stop(timeout=1.0)
        if bot_tasks:
            _, pending = await asyncio.wait(set(bot_tasks), timeout=shutdown_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        logger.info("SIP server stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point for bots: `-t sip` runs the SIP server, anything else runs Pipecat's runner."""
    argv = list(sys.argv[1:] if argv is None else argv)
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
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "INFO")
    bot = _find_bot()
    logger.debug(f"event loop: {config.event_loop}")
    try:
        if config.event_loop == "uvloop":
            import uvloop

            # Pipecat's per-frame work is mostly event loop work: uvloop takes
            # about 10-20% off a pipeline call's CPU (bench/README.md).
            uvloop.run(serve(bot, config))
        else:
            asyncio.run(serve(bot, config))
    except OSError as exc:
        print(f"error: cannot listen on udp {config.host}:{config.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
