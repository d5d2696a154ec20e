"""Trunks: routes for outbound calls (Request-URI, From, P-Asserted-Identity, credentials).

The pure part (:meth:`Trunk.route`, :meth:`Trunk.from_env`) on its own, then
two real SIPServers on loopback: a "carrier" that challenges with Digest and
a bot that calls through a trunk pointing at it (authenticated both ways,
the retried INVITE carrying the auth user, wrong credentials failing with
``CallFailed("auth_failed", 401)``).
"""

from __future__ import annotations

import asyncio

import pytest

from pipecat_sip.call import CallFailed, SIPCall
from pipecat_sip.sip.auth import parse_credentials
from pipecat_sip.trunk import Trunk, normalize_number, trunks_by_name
from tests.helpers.callctl import start_beside
from tests.helpers.server import start_server, wait_for


def carrier_trunk(**kwargs) -> Trunk:
    kwargs.setdefault("name", "carrier")
    kwargs.setdefault("proxy", "sip:192.0.2.10:5070")
    kwargs.setdefault("username", "4930555000")
    return Trunk(**kwargs)


def test_numbers_are_normalized():
    assert normalize_number("+49 (30) 123-45.6") == "+493012345" + "6"
    assert normalize_number("*21#") == "*21#"
    assert normalize_number("alice") is None and normalize_number("") is None


@pytest.mark.parametrize(
    "target",
    ["+4930123456", "+49 30 123456", "tel:+4930123456", "sip:+4930123456@carrier"],
)
def test_route_puts_the_number_at_the_proxy(target):
    route = carrier_trunk().route(target)
    assert str(route.request_uri) == "sip:+4930123456@192.0.2.10:5070"
    assert str(route.to.uri) == "sip:+4930123456@192.0.2.10"
    assert str(route.proxy) == "sip:192.0.2.10:5070"


def test_caller_id_in_from_or_in_p_asserted_identity():
    plain = carrier_trunk(caller_id="+4930555111", display_name="Pipecat Bot")
    route = plain.route("+4930123")
    assert (route.from_user, route.from_host, route.display_name) == (
        "+4930555111",
        "192.0.2.10",
        "Pipecat Bot",
    )
    assert not [h for h in route.headers if h[0] == "P-Asserted-Identity"]
    pai = carrier_trunk(
        caller_id="+4930555111", p_asserted_identity=True, from_host="carrier.example"
    )
    route = pai.route("+4930123", caller_id="+4930555222", display_name="Sales")
    assert route.from_user == "4930555000" and route.from_host == "carrier.example"
    assert dict(route.headers)["P-Asserted-Identity"] == (
        '"Sales" <sip:+4930555222@carrier.example>'
    )
    # An explicit From user wins; the trunk's headers come first, the call's after.
    with_headers = carrier_trunk(headers=(("X-Account", "7"),)).route(
        "+1", from_user="ops", headers=[("X-Campaign", "spring")]
    )
    assert with_headers.from_user == "ops"
    assert list(with_headers.headers) == [("X-Account", "7"), ("X-Campaign", "spring")]


def test_credentials_use_the_auth_user_and_the_password_is_not_shown():
    trunk = carrier_trunk(auth_user="a1b2", password="s3cret")
    assert trunk.credentials is not None and trunk.credentials.username == "a1b2"
    assert carrier_trunk(password="x").credentials.username == "4930555000"
    assert carrier_trunk().credentials is None
    assert "s3cret" not in repr(trunk) and "s3cret" not in repr(trunk.credentials)


def test_transport_from_the_uri_or_the_field():
    assert carrier_trunk(transport="tcp").proxy_uri.get_param("transport") == "tcp"
    trunk = carrier_trunk(proxy="sip:pbx.example;transport=TLS")
    assert trunk.transport == "tls"
    assert trunk.route("+1").request_uri.get_param("transport") == "TLS"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"proxy": "http://x"}, "is not a SIP URI"),
        ({"transport": "sctp"}, "is not udp, tcp or tls"),
        ({"caller_id": "alice"}, "is not a number"),
        ({"username": "a b"}, "is not a SIP user part"),
        ({"headers": (("X Bad", "1"),)}, "is not a token"),
        ({"headers": (("X-Ok", "1\r\nBYE"),)}, "line break"),
        ({"name": "has space"}, "must be a token"),
        ({"display_name": 'say "hi"'}, "quote"),
    ],
)
def test_bad_trunks_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        carrier_trunk(**kwargs)


def test_bad_targets_refused():
    trunk = carrier_trunk()
    for target in ("not a uri", "sip:carrier", "tel:abc"):
        with pytest.raises(ValueError):
            trunk.route(target)
    with pytest.raises(ValueError, match="caller_id"):
        trunk.route("+1", caller_id="x")


def test_from_env_reads_the_default_trunk_and_names_bad_variables():
    assert Trunk.from_env({}) is None
    trunk = Trunk.from_env(
        {
            "SIP_TRUNK_PROXY": "sip:sip.carrier.example",
            "SIP_TRUNK_USERNAME": "4930555000",
            "SIP_TRUNK_AUTH_USER": "a1b2",
            "SIP_TRUNK_PASSWORD": "pw",
            "SIP_TRUNK_FROM_USER": "bot",
            "SIP_CALLER_ID": "+4930555000",
            "SIP_TRUNK_PAI": "true",
            "SIP_TRUNK_HEADERS": "X-Account: 7 | X-Tenant: acme;region=eu",
        }
    )
    assert trunk.headers == (("X-Account", "7"), ("X-Tenant", "acme;region=eu"))
    assert trunk is not None and trunk.name == "default"
    assert (trunk.auth_user, trunk.from_user, trunk.caller_id) == ("a1b2", "bot", "+4930555000")
    assert trunk.p_asserted_identity and trunk.credentials.password == "pw"
    cases = {
        "SIP_TRUNK_PROXY": ({"SIP_TRUNK_PROXY": "http://carrier"}, "not a SIP URI"),
        "SIP_CALLER_ID": ({"SIP_CALLER_ID": "bob"}, "not a phone number"),
        "SIP_TRUNK_USERNAME": ({"SIP_TRUNK_USERNAME": "a b"}, "not a SIP user part"),
        "SIP_TRUNK_TRANSPORT": ({"SIP_TRUNK_TRANSPORT": "sctp"}, "not udp"),
        "SIP_TRUNK_PAI": ({"SIP_TRUNK_PAI": "maybe"}, "true or false"),
        "SIP_TRUNK_HEADERS": ({"SIP_TRUNK_HEADERS": "X-Bad"}, "is not 'Name: value'"),
    }
    for var, (extra, message) in cases.items():
        env = {"SIP_TRUNK_PROXY": "sip:sip.carrier.example", **extra}
        with pytest.raises(ValueError) as info:
            Trunk.from_env(env)
        text = str(info.value)
        assert text.startswith(f"{var}: ") and message in text and "\n" not in text
    with pytest.raises(ValueError, match="SIP_TRUNK_PROXY is not"):
        Trunk.from_env({"SIP_TRUNK_PASSWORD": "pw"})
    # host[:port] as the Pipecat Cloud dial-out path takes it
    assert Trunk.from_env({"SIP_TRUNK_PROXY": "sip.trunk.example.net:5060"}).proxy == (
        "sip:sip.trunk.example.net:5060"
    )


def test_trunks_by_name():
    a, b = carrier_trunk(name="a"), carrier_trunk(name="b")
    assert list(trunks_by_name([a, b])) == ["a", "b"]
    assert trunks_by_name({"a": a}) == {"a": a}
    with pytest.raises(ValueError, match="two trunks"):
        trunks_by_name([a, a])
    with pytest.raises(ValueError, match="under the key"):
        trunks_by_name({"x": a})


# --- two servers: a challenging carrier and a bot calling through it ---------------


class Answer:
    def __init__(self) -> None:
        self.calls: list[SIPCall] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        await call.answer()
        await call.wait_ended()


async def _pair(password: str, **carrier_options):
    answer = Answer()
    carrier = await start_server(answer, auth_users={"a1b2": "s3cret"}, **carrier_options)
    trunk = Trunk(
        name="carrier",
        proxy=f"sip:127.0.0.1:{carrier.port}",
        username="4930555000",
        auth_user="a1b2",
        password=password,
        caller_id="+4930555111",
        p_asserted_identity=True,
    )
    bot = await start_beside(carrier, trunks=[trunk])
    return carrier, bot, answer


async def test_call_through_a_trunk_answers_the_carriers_challenge():
    carrier, bot, answer = await _pair("s3cret")
    seen = []
    original = carrier.ua.receive

    def spy(data, flow, now):
        if data.startswith(b"INVITE "):
            seen.append(data)
        original(data, flow, now)

    carrier.ua.receive = spy
    try:
        call = await bot.call("+4930123456", timeout=5)
        assert call.established
        assert await wait_for(lambda: answer.calls and answer.calls[0].established)
        inbound = answer.calls[0]
        assert inbound.info.auth_user == "a1b2"
        assert inbound.info.request_uri == f"sip:+4930123456@127.0.0.1:{carrier.port}"
        assert inbound.info.from_uri.startswith("sip:4930555000@127.0.0.1")
        assert inbound.info.header("P-Asserted-Identity") == "<sip:+4930555111@127.0.0.1>"
        first, second = seen
        assert b"Authorization" not in first
        auth_line = next(
            line for line in second.split(b"\r\n") if line.startswith(b"Authorization:")
        )
        creds = parse_credentials(auth_line.split(b":", 1)[1].decode().strip())
        assert creds.username == "a1b2" and creds.realm == "pipecat-sip"
        await call.hangup()
        assert await wait_for(lambda: not carrier.calls and not bot.calls)
    finally:
        await bot.stop()
        await carrier.stop()


async def test_wrong_trunk_password_fails_with_401():
    carrier, bot, answer = await _pair("wrong")
    try:
        with pytest.raises(CallFailed) as info:
            await bot.call("sip:+4930123456@carrier", timeout=5)
        assert (info.value.reason, info.value.status_code) == ("auth_failed", 401)
        assert not answer.calls
        assert carrier.authenticator is not None and carrier.authenticator.stats["failed"] == 1
        assert not bot.calls and bot.ports.in_use == 0
    finally:
        await bot.stop()
        await carrier.stop()


async def test_exempt_network_is_not_challenged_and_unknown_trunk_refused():
    carrier, bot, answer = await _pair("wrong", auth_exempt_networks="127.0.0.0/8")
    try:
        call = await bot.call("+4930123", trunk="carrier", timeout=5)
        assert await wait_for(lambda: answer.calls and answer.calls[0].established)
        assert answer.calls[0].info.auth_user is None
        await call.hangup()
        with pytest.raises(ValueError, match="no trunk named"):
            await bot.call("+1", trunk="other")
        plain = await start_beside(carrier, bot)
        try:
            with pytest.raises(CallFailed, match="configure a trunk"):
                await plain.call("+4930123")
        finally:
            await plain.stop()
    finally:
        await bot.stop()
        await carrier.stop()
    await asyncio.sleep(0)
