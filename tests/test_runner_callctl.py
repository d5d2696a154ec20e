"""The runner's call-control settings: the default trunk, inbound Digest users, the registrar.

Flags win over the environment; a bad value is one line naming the variable
(or flag), as for the runner's other settings.
"""

from __future__ import annotations

import argparse

import pytest

from pipecat_sip.runner import ConfigError, build_parser, parse_config


def config(argv: list[str] | None = None, env: dict[str, str] | None = None):
    args = build_parser().parse_args(["-t", "sip", *(argv or [])])
    return parse_config(args, env or {})


def test_default_trunk_from_the_environment():
    cfg = config(
        env={
            "SIP_TRUNK_PROXY": "sip:sip.carrier.example",
            "SIP_TRUNK_USERNAME": "4930555000",
            "SIP_TRUNK_AUTH_USER": "a1b2",
            "SIP_TRUNK_PASSWORD": "s3cret",
            "SIP_TRUNK_FROM_USER": "bot",
            "SIP_CALLER_ID": "+4930555000",
        }
    )
    trunk = cfg.trunk
    assert trunk is not None and trunk.proxy == "sip:sip.carrier.example"
    assert trunk.credentials is not None and trunk.credentials.username == "a1b2"
    assert (trunk.from_user, trunk.caller_id) == ("bot", "+4930555000")
    assert "s3cret" not in repr(cfg)
    assert config().trunk is None


def test_trunk_flags_override_and_bad_values_name_their_source():
    cfg = config(
        ["--trunk-proxy", "sip:192.0.2.10:5070", "--caller-id", "+1 555 0100"],
        {"SIP_TRUNK_PROXY": "sip:ignored.example", "SIP_CALLER_ID": "+49"},
    )
    assert cfg.trunk is not None and cfg.trunk.proxy == "sip:192.0.2.10:5070"
    assert cfg.trunk.caller_id == "+1 555 0100"
    with pytest.raises(ConfigError) as info:
        config(["--trunk-proxy", "sip:a b"])
    assert str(info.value).startswith("--trunk-proxy: 'sip:a b' is not a SIP URI")
    with pytest.raises(ConfigError) as info:
        config(env={"SIP_TRUNK_PROXY": "sip:x.example", "SIP_CALLER_ID": "bob"})
    assert str(info.value).startswith("SIP_CALLER_ID: 'bob' is not a phone number")
    with pytest.raises(ConfigError, match="SIP_TRUNK_PROXY is not"):
        config(env={"SIP_TRUNK_USERNAME": "u"})


def test_auth_users_file(tmp_path):
    users = tmp_path / "users"
    users.write_text("# softphones\nalice:wonderland\nbob:builder\n")
    cfg = config(["--auth-users", str(users)], {"SIP_AUTH_REALM": "bot.example"})
    assert cfg.auth_users == {"alice": "wonderland", "bob": "builder"}
    assert cfg.auth_realm == "bot.example" and "wonderland" not in repr(cfg)
    cfg = config(env={"SIP_AUTH_USERS": str(users), "SIP_AUTH_EXEMPT_NETWORKS": "192.0.2.0/28"})
    assert cfg.auth_exempt_networks == ("192.0.2.0/28",)
    assert config().auth_users is None
    broken = tmp_path / "broken"
    broken.write_text("alice:x\nnobody\n")
    cases = [
        (["--auth-users", str(tmp_path / "missing")], {}, "--auth-users: cannot read"),
        (["--auth-users", str(broken)], {}, "line 2 is not user:password"),
        ([], {"SIP_AUTH_USERS": str(tmp_path)}, "SIP_AUTH_USERS: cannot read"),
        ([], {"SIP_AUTH_REALM": 'a"b'}, "SIP_AUTH_REALM:"),
        ([], {"SIP_AUTH_EXEMPT_NETWORKS": "nonsense"}, "SIP_AUTH_EXEMPT_NETWORKS:"),
    ]
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    cases.append((["--auth-users", str(empty)], {}, "lists no user:password"))
    for argv, env, message in cases:
        with pytest.raises(ConfigError) as info:
            config(argv, env)
        assert message in str(info.value) and "\n" not in str(info.value)
        assert "x\n" not in str(info.value)  # never a password


def test_parse_config_without_the_new_flags():
    # A Namespace from elsewhere (tests, embedding code) lacks the new attributes.
    cfg = parse_config(argparse.Namespace(), {"SIP_TRUNK_PROXY": "sip:192.0.2.1"})
    assert cfg.trunk is not None and cfg.auth_users is None


def test_registrar_flag():
    assert config(["--accept-registrations"]).accept_registrations
    assert config(env={"SIP_ACCEPT_REGISTRATIONS": "true"}).accept_registrations
    assert not config(env={"SIP_ACCEPT_REGISTRATIONS": "0"}).accept_registrations
    assert not config().accept_registrations
    with pytest.raises(ConfigError, match="SIP_ACCEPT_REGISTRATIONS: 'maybe'"):
        config(env={"SIP_ACCEPT_REGISTRATIONS": "maybe"})


def test_server_arguments_carry_the_call_control_settings(tmp_path):
    from pipecat_sip.runner import server_arguments

    users = tmp_path / "users"
    users.write_text("alice:wonderland\n")
    cfg = config(
        ["--auth-users", str(users), "--accept-registrations"],
        {"SIP_TRUNK_PROXY": "sip:192.0.2.10", "SIP_TRUNK_PASSWORD": "pw",
         "SIP_TRUNK_USERNAME": "u", "SIP_AUTH_EXEMPT_NETWORKS": "192.0.2.0/28"},
    )  # fmt: skip
    arguments = server_arguments(cfg)
    assert [t.proxy for t in arguments["trunks"]] == ["sip:192.0.2.10"]
    assert arguments["auth_users"] == {"alice": "wonderland"}
    assert arguments["accept_registrations"] is True
    assert arguments["auth_exempt_networks"] == ("192.0.2.0/28",)
    from pipecat_sip.server import SIPServer

    server = SIPServer(None, **arguments)  # every argument is one SIPServer takes
    assert server.trunks["default"].credentials.username == "u" and server.registrar is not None
