"""The registrar for softphones (RFC 3261 s.10.3): bindings with expiry, Digest, calling an AoR.

Pure (:class:`Registrar` with a fake clock: expires from Contact or Expires,
423 Min-Expires, removal by Expires: 0 and Contact: *, stale CSeq 500,
bounds), through a user agent on the pair (REGISTER challenged 401, a user
registering another's name 403), then between real servers: one server
registers as "alice" with a password (our own REGISTER client playing the
softphone), and the bot calls ``sip:alice@bot``, which reaches it.
"""

from __future__ import annotations

import random

import pytest

from pipecat_sip.call import SIPCall
from pipecat_sip.server import Registration
from pipecat_sip.sip.auth import DigestServer
from pipecat_sip.sip.events import Registered, RegistrationFailed
from pipecat_sip.sip.message import SIPRequest, parse_message
from pipecat_sip.sip.registrar import Registrar
from pipecat_sip.sip.transport import Flow
from tests.helpers.callctl import start_beside
from tests.helpers.server import start_server, wait_for
from tests.sip_pair import SIPPair

FLOW = Flow.udp(("198.51.100.7", 40000))


def register(
    contacts: list[str],
    *,
    expires: int | None = None,
    user: str = "alice",
    call_id: str = "reg-1",
    cseq: int = 1,
) -> SIPRequest:
    lines = [
        "REGISTER sip:bot.example SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:40000;branch=z9hG4bKreg",
        f"From: <sip:{user}@bot.example>;tag=r1",
        f"To: <sip:{user}@bot.example>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, SIPRequest)
    return msg


def test_binding_kept_until_it_expires_and_listed_with_remaining_time():
    reg = Registrar(min_expires=60, max_expires=3600)
    answer = reg.register(register(["<sip:alice@10.0.0.5:5060>"], expires=300), FLOW, 100.0)
    assert answer.status_code == 200 and answer.aor == "alice"
    assert answer.headers == (("Contact", "<sip:alice@10.0.0.5:5060>;expires=300"),)
    [binding] = reg.lookup("Alice", 200.0)
    assert str(binding.contact) == "sip:alice@10.0.0.5:5060" and binding.flow == FLOW
    assert binding.remaining(200.0) == 200
    assert reg.lookup("alice", 399.9) and not reg.lookup("alice", 400.0)
    assert len(reg) == 0 and reg.aors == []


def test_expires_rules_min_max_and_per_contact():
    reg = Registrar(min_expires=60, max_expires=3600, default_expires=1800)
    too_short = reg.register(register(["<sip:alice@10.0.0.5>"], expires=30), FLOW, 0.0)
    assert too_short.status_code == 423 and too_short.headers == (("Min-Expires", "60"),)
    answer = reg.register(
        register(["<sip:alice@10.0.0.5>;expires=7200", "<sip:alice@10.0.0.6>"]), FLOW, 0.0
    )
    assert dict(answer.headers) != {} and [h[1] for h in answer.headers] == [
        "<sip:alice@10.0.0.5>;expires=3600",
        "<sip:alice@10.0.0.6>;expires=1800",
    ]
    # A refresh of one binding, then its removal with expires=0.
    reg.register(register(["<sip:alice@10.0.0.6>"], expires=600, cseq=2), FLOW, 10.0)
    assert {str(b.contact): b.remaining(10.0) for b in reg.lookup("alice", 10.0)} == {
        "sip:alice@10.0.0.5": 3590,
        "sip:alice@10.0.0.6": 600,
    }
    gone = reg.register(register(["<sip:alice@10.0.0.6>;expires=0"], cseq=3), FLOW, 20.0)
    assert [h[1] for h in gone.headers] == ["<sip:alice@10.0.0.5>;expires=3580"]
    # A REGISTER with no Contact only asks for the bindings.
    assert reg.register(register([], cseq=4), FLOW, 20.0).headers == gone.headers


def test_star_removes_all_and_old_cseqs_are_refused():
    reg = Registrar()
    reg.register(register(["<sip:alice@10.0.0.5>", "<sip:alice@10.0.0.6>"], cseq=5), FLOW, 0.0)
    stale = reg.register(register(["<sip:alice@10.0.0.5>"], cseq=4), FLOW, 1.0)
    assert stale.status_code == 500 and len(reg.lookup("alice", 1.0)) == 2
    bad_star = reg.register(register(["*"], expires=60, cseq=6), FLOW, 1.0)
    assert bad_star.status_code == 400
    cleared = reg.register(register(["*"], expires=0, cseq=6), FLOW, 1.0)
    assert cleared.status_code == 200 and cleared.headers == () and cleared.changed == 2
    assert reg.lookup("alice", 1.0) == []


def test_bounds_per_aor_and_in_all():
    reg = Registrar(max_aors=2, max_bindings=2)
    for i in range(3):
        reg.register(register([f"<sip:alice@10.0.0.{i}>"], call_id=f"c{i}"), FLOW, float(i))
    assert [str(b.contact) for b in reg.lookup("alice", 3.0)] == [
        "sip:alice@10.0.0.2",
        "sip:alice@10.0.0.1",
    ]  # newest first; the oldest gave way
    assert reg.register(register(["<sip:bob@10.0.0.9>"], user="bob"), FLOW, 3.0).status_code == 200
    full = reg.register(register(["<sip:carol@10.0.0.9>"], user="carol"), FLOW, 3.0)
    assert full.status_code == 503
    many = register([f"<sip:alice@10.1.0.{i}>" for i in range(17)], cseq=9)
    assert reg.register(many, FLOW, 3.0).status_code == 400


def test_authenticated_user_may_register_only_its_own_name():
    reg = Registrar()
    answer = reg.register(register(["<sip:alice@10.0.0.5>"]), FLOW, 0.0, user="bob")
    assert answer.status_code == 403 and reg.lookup("alice", 0.0) == []
    assert (
        reg.register(register(["<sip:alice@10.0.0.5>"]), FLOW, 0.0, user="alice").status_code == 200
    )


def test_register_through_the_user_agent_is_challenged_and_405_without_registrar():
    auth = DigestServer("pipecat-sip", {"alice": "wonderland"}, rng=random.Random(5))
    registrar = Registrar()
    pair = SIPPair(b_options={"authenticator": auth, "registrar": registrar})
    pair.a.register(pair.uri_of("b"), pair.addr["b"], pair.now, user="alice", password="wonderland")
    pair.run_for(1)
    statuses = [c.first_line for c in pair.sent("b", "SIP/2.0")]
    assert statuses[:2] == ["SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"]
    [ok] = [parse_message(c.data) for c in pair.sent("b", "SIP/2.0 200")]
    assert ok.contacts and ok.contacts[0].get_param("expires") == "3600"
    assert pair.of_type("a", Registered)[0].expires == 3600
    [binding] = registrar.lookup("alice", pair.now)
    assert binding.flow.remote == pair.addr["a"]
    assert "REGISTER" in (pair.b.capabilities()[0][1])
    # Wrong password: refused; a registration for another name: 403.
    pair.a.register(pair.uri_of("b"), pair.addr["b"], pair.now, user="alice", password="x")
    pair.a.register(pair.uri_of("b"), pair.addr["b"], pair.now, user="bob", username="alice",
                    password="wonderland")  # fmt: skip
    pair.run_for(1)
    failures = sorted(e.status_code for e in pair.of_type("a", RegistrationFailed))
    assert failures == [401, 403]
    plain = SIPPair()
    plain.a.register(plain.uri_of("b"), plain.addr["b"], plain.now)
    plain.run_for(1)
    assert [c.first_line for c in plain.sent("b", "SIP/2.0")] == ["SIP/2.0 405 Method Not Allowed"]
    assert "REGISTER" not in plain.b.capabilities()[0][1]


class Answer:
    def __init__(self) -> None:
        self.calls: list[SIPCall] = []

    async def __call__(self, call: SIPCall) -> None:
        self.calls.append(call)
        await call.answer()
        await call.wait_ended()


async def test_bot_calls_a_registered_softphone_by_its_address_of_record():
    bot = await start_server(None, accept_registrations=True, auth_users={"alice": "wonderland"})
    phone_side = Answer()
    phone = await start_beside(
        bot,
        handler=phone_side,
        user="alice",
        registration=Registration(
            f"sip:127.0.0.1:{bot.port}", username="alice", password="wonderland", expires=300
        ),
    )
    try:
        assert await wait_for(lambda: phone.registered)
        [binding] = bot.registrar.lookup("alice", bot.now())
        assert binding.contact.port == phone.port and binding.remaining(bot.now()) > 290
        call = await bot.call("sip:alice@bot", timeout=5)
        assert await wait_for(lambda: phone_side.calls and phone_side.calls[0].established)
        inbound = phone_side.calls[0]
        assert inbound.info.to_uri == "sip:alice@bot"
        assert inbound.info.request_uri == str(binding.contact)
        await call.hangup()
        with pytest.raises(Exception):  # noqa: B017 - not registered: not an IP, no DNS name
            await bot.call("sip:nobody@bot.invalid", timeout=2)
    finally:
        await phone.stop()
        await bot.stop()
