"""SIP_ROUTES: the TOML routing table, its errors, and the runner's use of its decisions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipecat_sip.routes import (
    Accept,
    Redirect,
    Reject,
    RoutesError,
    dialled,
    load_routes,
    parse_routes,
)
from tests.fakes import FakeCallInfo

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = """
[default]
system_prompt = "You are the switchboard."
voice = "default-voice"

[routes."+14155550100"]
system_prompt = "You take pizza orders."
voice = "pizza-voice"
greeting = "Example Pizza, what can I get you?"

[routes."+14155550100".settings]
max_minutes = 5

[routes.sales]
redirect = "sip:sales@pbx.example.com"

[routes."+14155550199"]
reject = 486
reason = "Closed for the night"

[routes.support]
greeting = "Support here."
"""


def info(request_uri: str, to_uri: str = "sip:other@example.com") -> FakeCallInfo:
    return FakeCallInfo("c1", request_uri=request_uri, to_uri=to_uri)


def table(tmp_path: Path, text: str = EXAMPLE):
    path = tmp_path / "routes.toml"
    path.write_text(text)
    return load_routes(path)


def test_routes_by_dialled_number_and_user_part(tmp_path):
    routes = table(tmp_path)
    pizza = routes(info("sip:+14155550100@trunk.example;user=phone"))
    assert pizza == Accept(
        {
            "system_prompt": "You take pizza orders.",
            "voice": "pizza-voice",
            "greeting": "Example Pizza, what can I get you?",
            "max_minutes": 5,
        },
        "+14155550100",
    )
    # The same number written without + or with separators matches too.
    assert routes(info("sip:14155550100@10.0.0.1")).route == "+14155550100"
    assert routes(info("tel:+1-415-555-0100")).route == "+14155550100"
    assert routes(info("sip:sales@bot.example")) == Redirect(
        ("sip:sales@pbx.example.com",), 302, "sales"
    )
    assert routes(info("sip:+14155550199@trunk")) == Reject(
        486, "Closed for the night", "+14155550199"
    )
    # A route without a prompt keeps the defaults and adds its own greeting.
    assert routes(info("sip:support@bot")).settings == {
        "system_prompt": "You are the switchboard.",
        "voice": "default-voice",
        "greeting": "Support here.",
    }
    # No route: the defaults; no Request-URI user: the To user.
    assert routes(info("sip:nobody@bot")) == Accept(
        {"system_prompt": "You are the switchboard.", "voice": "default-voice"}
    )
    assert routes(info("sip:bot.example", to_uri="<sip:sales@bot>")).route == "sales"


def test_catch_all_route(tmp_path):
    routes = table(tmp_path, '[routes."+1555"]\ngreeting = "hi"\n[routes."*"]\nreject = 404\n')
    assert routes(info("sip:+1555@x")).route == "+1555"
    assert routes(info("sip:other@x")) == Reject(404, None, "*")
    assert dialled(info("sip:x.example", to_uri="")) is None
    assert routes(info("sip:x.example", to_uri="")) == Reject(404, None, "*")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[routes.a]\nvoise = "x"\n', "routes.\"a\": unknown key 'voise'"),
        ("[routes.a]\nreject = 200\n", 'routes."a": reject must be a status code 400-699'),
        ("[routes.a]\nreject = true\n", 'routes."a": reject must be a status code'),
        (
            '[routes.a]\nreject = 486\ngreeting = "x"\n',
            'routes."a": reject cannot go with greeting',
        ),
        ('[routes.a]\nreason = "x"\n', 'routes."a": reason goes with reject'),
        (
            '[routes.a]\nredirect = "mailto:x@y"\n',
            "routes.\"a\": redirect 'mailto:x@y' is not a SIP URI",
        ),
        ("[routes.a]\nredirect = []\n", 'routes."a": redirect must be a SIP URI or a list of 1-5'),
        (
            '[routes.a]\nsystem_prompt = ""\n',
            'routes."a": system_prompt must be a non-empty string',
        ),
        ("[routes.a]\nvoice = 5\n", 'routes."a": voice must be a non-empty string'),
        (
            '[routes.a.settings]\nvoice = "x"\n',
            'routes."a": settings.voice: set voice on the route',
        ),
        ('[routes]\na = "x"\n', 'routes."a": must be a table'),
        ('[defaults]\nvoice = "x"\n', "unknown table 'defaults'"),
        ("[default]\nreject = 404\n", "[default]: unknown key 'reject'"),
        ("not toml ===", "not TOML"),
    ],
)
def test_bad_entries_are_named_in_one_line(tmp_path, text, message):
    with pytest.raises(RoutesError) as error:
        table(tmp_path, text)
    text = str(error.value)
    assert message in text and "\n" not in text and "routes.toml" in text


def test_missing_file_and_no_file():
    assert load_routes(None) is None and load_routes("") is None
    with pytest.raises(RoutesError, match="no such file"):
        load_routes("/nonexistent/routes.toml")
    assert parse_routes({}).decide(info("sip:x@y")) == Accept({})


def test_bot_stops_on_a_bad_routes_file_with_one_line(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[routes."+1555"]\nreject = 99\n')
    run = subprocess.run(
        [sys.executable, "bot.py", "--transport", "sip"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SIP_ROUTES": str(path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f'error: SIP_ROUTES {path}: routes."+1555": reject must be a status code 400-699, not 99'
    ], run.stderr


def test_bot_module_routes_calls_with_its_table(tmp_path, monkeypatch):
    path = tmp_path / "routes.toml"
    path.write_text(EXAMPLE)
    monkeypatch.setenv("SIP_ROUTES", str(path))
    monkeypatch.syspath_prepend(str(ROOT))
    import importlib

    sys.modules.pop("bot", None)
    bot = importlib.import_module("bot")
    try:
        assert bot.route_call(info("sip:sales@x")).targets == ("sip:sales@pbx.example.com",)
        assert bot.route_call(info("sip:+14155550100@x")).settings["voice"] == "pizza-voice"
    finally:
        sys.modules.pop("bot", None)
