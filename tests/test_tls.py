"""SIP over TLS (RFC 3261 s.26, RFC 5630, RFC 5922) with the real SIPServer on loopback.

Certificates come from trustme (a throw-away CA per test run); no key is
committed. Covers the configuration errors at start-up, verified calls by IP
address and by name (SNI), refused verification with its log line, the lab
switch, the TLS version floor, and a registration kept alive over TLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from pathlib import Path

import pytest
import trustme
from loguru import logger

from pipecat_sip.call import CallFailed
from pipecat_sip.server import Registration, SIPServer
from pipecat_sip.sip.framing import PONG, Message, StreamFramer
from pipecat_sip.sip.message import SIPResponse, make_response, parse_message
from pipecat_sip.tls import TLSConfig, TLSConfigError, client_context, server_context
from tests.helpers.server import Recorder, start_server, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/::1/localhost, and a stranger CA."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")
    other_name = ca.issue_cert("sip.other.test")
    stranger = trustme.CA()
    paths = {
        "ca": d / "ca.pem",
        "cert": d / "server.pem",
        "key": d / "server.key",
        "chain": d / "server-with-key.pem",
        "other_name": d / "other-name.pem",
        "stranger_ca": d / "stranger-ca.pem",
        "stranger_cert": d / "stranger.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(paths["cert"]), append=True)
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(paths["chain"]))
    other_name.private_key_and_cert_chain_pem.write_to_path(str(paths["other_name"]))
    stranger.cert_pem.write_to_path(str(paths["stranger_ca"]))
    stranger.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(paths["stranger_cert"])
    )
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture
async def servers():
    started: list[SIPServer] = []

    async def make(handler=None, **kwargs) -> SIPServer:
        server = await start_server(handler, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip()), level="DEBUG")
    yield lines
    logger.remove(sink)


def bot(uri: str) -> str:
    return uri.replace("pipecat@", "bot@")


# --- configuration ------------------------------------------------------------------------
def test_missing_unreadable_and_mismatched_files_are_one_line_errors(pki, tmp_path) -> None:
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("hello")
    cases = [
        (TLSConfig(cert_file=str(tmp_path / "nope.pem")), "cert", "no such file"),
        (TLSConfig(cert_file=str(tmp_path)), "cert", "is a directory"),
        (TLSConfig(cert_file=str(not_pem)), "cert", "not a PEM file"),
        (TLSConfig(cert_file=pki["cert"]), "cert", "TLS certificate"),  # no key anywhere
        (TLSConfig(cert_file=pki["cert"], key_file=str(tmp_path / "k.pem")), "key", "no such"),
        (TLSConfig(cert_file=pki["other_name"], key_file=pki["key"]), "key", "does not match"),
        (TLSConfig(key_file=pki["key"]), "key", "without a certificate"),
        (TLSConfig(ca_file=str(tmp_path / "ca.pem")), "ca", "no such file"),
        (TLSConfig(ca_file=str(not_pem)), "ca", "not a PEM file"),
        (TLSConfig(cert_file=pki["chain"], min_version="1.1"), "min_version", "1.2 or 1.3"),
    ]
    for config, setting, text in cases:
        with pytest.raises(TLSConfigError) as info:
            config.load()
        assert info.value.setting == setting, (config, info.value)
        assert text in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


def test_good_files_give_contexts_with_the_tls_floor(pki) -> None:
    server, client = TLSConfig(cert_file=pki["cert"], key_file=pki["key"], ca_file=pki["ca"]).load()
    assert server is not None
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    lab = client_context(verify=False)
    assert lab.verify_mode == ssl.CERT_NONE and not lab.check_hostname
    assert server_context(pki["chain"], min_version="1.3").minimum_version == (
        ssl.TLSVersion.TLSv1_3
    )


def test_a_tls_listener_without_a_certificate_fails_at_construction(pki) -> None:
    with pytest.raises(TLSConfigError, match="without a certificate"):
        SIPServer(None, transports="udp,tls")
    with pytest.raises(TLSConfigError, match="no such file"):
        SIPServer(None, transports="tls", tls=TLSConfig(cert_file="/nonexistent/cert.pem"))
    with pytest.raises(ValueError, match="'sctp' is not one of"):
        SIPServer(None, transports="udp,sctp")


def test_runner_names_the_variable_of_a_bad_tls_file(pki, tmp_path) -> None:
    import argparse

    from pipecat_sip.runner import ConfigError, build_parser, parse_config

    env = {"SIP_TRANSPORTS": "udp,tls", "SIP_TLS_CERT": str(tmp_path / "missing.pem")}
    with pytest.raises(ConfigError) as info:
        parse_config(argparse.Namespace(), env)
    assert str(info.value).startswith("SIP_TLS_CERT: TLS certificate ")
    env = {"SIP_TLS_CERT": pki["other_name"], "SIP_TLS_KEY": pki["key"]}
    with pytest.raises(ConfigError, match="^SIP_TLS_KEY: TLS key .* does not match"):
        parse_config(argparse.Namespace(), env)
    flags = build_parser().parse_args(["--tls-ca", str(tmp_path / "x.pem")])
    with pytest.raises(ConfigError, match="^--tls-ca: TLS CA bundle"):
        parse_config(flags, {})
    good = parse_config(
        argparse.Namespace(),
        {
            "SIP_TRANSPORTS": "udp,tcp,tls",
            "SIP_TLS_CERT": pki["cert"],
            "SIP_TLS_KEY": pki["key"],
            "SIP_TLS_CA": pki["ca"],
            "SIP_TLS_PORT": "5071",
            "SIP_TCP_PORT": "5070",
        },
    )
    assert good.transports == ("udp", "tcp", "tls")
    assert (good.tcp_port, good.tls_port) == (5070, 5071)
    assert good.tls == TLSConfig(pki["cert"], pki["key"], pki["ca"], verify=True)
    lab = parse_config(argparse.Namespace(), {"SIP_TLS_VERIFY": "false"})
    assert lab.tls is not None and lab.tls.verify is False


# --- calls ----------------------------------------------------------------------------------
async def test_a_call_over_tls_verified_by_ip_address(pki, servers) -> None:
    recorder = Recorder(hangup_after=0.2)
    callee = await servers(
        recorder, transports=("udp", "tls"), tls=TLSConfig(pki["cert"], pki["key"])
    )
    assert callee.tls_port and callee.tls_port != callee.port
    caller = await servers(None, tls=TLSConfig(ca_file=pki["ca"]))  # UDP listener only
    target = bot(callee.uri_for("tls"))
    assert target.startswith("sips:")
    call = await caller.call(target, timeout=5)
    assert call.info.transport == "TLS"
    [conn] = caller.endpoint._connections.values()
    ssl_object = conn.transport.get_extra_info("ssl_object")
    assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    assert ssl_object.getpeercert()["subjectAltName"]  # verified, so the cert was read
    await asyncio.wait_for(call.wait_ended(), 5)
    assert callee.endpoint.stats["connected"] == 0  # the BYE came back on our connection
    incoming = recorder.calls[0]
    assert incoming.info.transport == "TLS"
    assert incoming.info.request_uri.startswith("sips:")


async def test_a_call_by_host_name_sends_sni_and_checks_the_name(pki, servers) -> None:
    callee = await servers(
        Recorder(hangup_after=0.2), transports=("tls",), tls=TLSConfig(pki["chain"])
    )
    names: list[str | None] = []
    callee.endpoint._listeners["TLS"]  # the listener is up
    context = callee._server_ssl
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    caller = await servers(None, tls=TLSConfig(ca_file=pki["ca"]))
    call = await caller.call(f"sips:bot@localhost:{callee.tls_port}", timeout=5)
    await asyncio.wait_for(call.wait_ended(), 5)
    assert names == ["localhost"]


async def test_an_untrusted_certificate_refuses_the_call_with_a_clear_log_line(
    pki, servers, log_lines
) -> None:
    callee = await servers(Recorder(), transports=("tls",), tls=TLSConfig(pki["stranger_cert"]))
    caller = await servers(None, tls=TLSConfig(ca_file=pki["ca"]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(CallFailed):
        await caller.call(f"sips:bot@localhost:{callee.tls_port}", timeout=10)
    assert loop.time() - start < 3  # the transport error ends it, not Timer B
    line = next(x for x in log_lines if "cannot connect to tls:" in x)
    assert "certificate verify failed" in line and "(TLS name localhost)" in line
    assert caller.endpoint.stats["tls_verify_failed"] == 1
    assert callee.calls == {}


async def test_a_certificate_for_another_name_is_refused(pki, servers, log_lines) -> None:
    callee = await servers(Recorder(), transports=("tls",), tls=TLSConfig(pki["other_name"]))
    caller = await servers(None, tls=TLSConfig(ca_file=pki["ca"]))
    with pytest.raises(CallFailed):
        await caller.call(f"sips:bot@localhost:{callee.tls_port}", timeout=10)
    line = next(x for x in log_lines if "cannot connect to tls:" in x)
    assert "certificate verify failed" in line and "localhost" in line


async def test_verification_off_is_for_labs_and_says_so(pki, servers, log_lines) -> None:
    callee = await servers(
        Recorder(hangup_after=0.2), transports=("tls",), tls=TLSConfig(pki["stranger_cert"])
    )
    caller = await servers(None, tls=TLSConfig(verify=False))
    assert any("NOT verified" in line for line in log_lines)
    call = await caller.call(f"sips:bot@127.0.0.1:{callee.tls_port}", timeout=5)
    await asyncio.wait_for(call.wait_ended(), 5)


async def test_tls_1_1_clients_are_refused_and_1_2_accepted(pki, servers) -> None:
    server = await servers(Recorder(), transports=("tls",), tls=TLSConfig(pki["chain"]))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki["ca"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.tls_port, ssl=old, server_hostname="localhost"
        )
        writer.close()
    ok = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ok.load_verify_locations(pki["ca"])
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.tls_port, ssl=ok, server_hostname="localhost"
    )
    try:
        port = server.tls_port
        writer.write(
            (
                f"OPTIONS sips:pipecat@127.0.0.1:{port} SIP/2.0\r\n"
                "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1;rport\r\n"
                "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:pipecat@127.0.0.1>\r\n"
                "Call-ID: tls-options\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        framer = StreamFramer()
        events: list = []
        while not events:
            events = framer.receive(await asyncio.wait_for(reader.read(65536), 3), 0.0)
        response = parse_message(events[0].data)
        assert isinstance(response, SIPResponse) and response.status_code == 200
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    finally:
        writer.close()


async def test_a_tls_call_over_ipv6(pki, servers) -> None:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 not available")
    import random

    base = random.randrange(20000, 40000, 2)
    callee = SIPServer(
        Recorder(hangup_after=0.2),
        host="::1",
        port=0,
        transports=("tls",),
        tls=TLSConfig(pki["chain"]),
        rtp_port_range=(base, base + 99),
    )
    caller = SIPServer(
        None,
        host="::1",
        port=0,
        transports=("udp",),
        tls=TLSConfig(ca_file=pki["ca"]),
        rtp_port_range=(base + 100, base + 199),
    )
    await callee.start()
    await caller.start()
    try:
        call = await caller.call(f"sips:bot@[::1]:{callee.tls_port}", timeout=5)
        assert call.info.transport == "TLS" and call.info.remote_address[0] == "::1"
        await asyncio.wait_for(call.wait_ended(), 5)
    finally:
        await caller.stop()
        await callee.stop()


async def test_a_registration_over_tls_is_kept_alive_with_crlf_pings(pki, servers) -> None:
    registers = []
    pings = 0

    async def registrar(reader, writer):
        nonlocal pings
        framer = StreamFramer()
        loop = asyncio.get_running_loop()
        while data := await reader.read(65536):
            for event in framer.receive(data, loop.time()):
                if isinstance(event, Message):
                    request = parse_message(event.data)
                    registers.append(request)
                    writer.write(bytes(make_response(request, 200, to_tag="r")))
                else:
                    pings += 1
                    writer.write(PONG)
        writer.close()

    context = server_context(pki["chain"])
    listener = await asyncio.start_server(registrar, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    try:
        server = await servers(
            None,
            transports=("udp", "tls"),
            tls=TLSConfig(pki["chain"], ca_file=pki["ca"]),
            registration=Registration(f"sips:localhost:{port}", expires=60),
            keepalive_interval=0.3,
        )
        assert await wait_for(lambda: server.registered, 5)
        register = registers[0]
        assert register.top_via.transport == "TLS"
        contact = register.contacts[0].uri
        assert contact.scheme == "sips" and contact.port == server.tls_port
        assert await wait_for(lambda: pings >= 2, 5)
        assert server.endpoint.stats["pong_timeouts"] == 0
        assert server.endpoint.connection_count == 1
    finally:
        listener.close()


def test_pki_files_are_made_by_the_test(pki) -> None:
    for path in pki.values():
        assert Path(path).is_file()
    repo = Path(__file__).resolve().parent.parent
    committed = [p for p in repo.rglob("*.key") if ".venv" not in p.parts]
    assert committed == []  # no private key in the repository


async def test_tls_connections_hold_a_small_read_buffer_and_still_take_big_messages(
    pki, servers
) -> None:
    """asyncio's SSL protocol starts with 256 KiB per connection; ours keep 16 KiB."""
    server = await servers(Recorder(), transports=("tls",), tls=TLSConfig(pki["chain"]))
    context = ssl.create_default_context(cafile=pki["ca"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.tls_port, ssl=context, server_hostname="localhost"
    )
    try:
        body = b"x" * 12000
        port = server.tls_port
        writer.write(
            (
                f"OPTIONS sip:pipecat@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
                "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKbig;rport\r\n"
                "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:pipecat@127.0.0.1>\r\n"
                "Call-ID: tls-big\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        framer = StreamFramer()
        events: list = []
        while not events:
            events = framer.receive(await asyncio.wait_for(reader.read(65536), 3), 0.0)
        assert parse_message(events[0].data).status_code == 200
        [conn] = server.endpoint._connections.values()
        protocol = getattr(conn.transport, "_ssl_protocol", None)
        if protocol is not None and type(protocol).__module__ == "asyncio.sslproto":
            assert len(protocol._ssl_buffer) == 16 * 1024 and protocol.max_size == 16 * 1024
    finally:
        writer.close()


async def test_srtp_required_works_over_tls_signalling_without_the_lab_override(
    pki, servers
) -> None:
    """SDES keys go only over TLS (pipecat_sip.calls): with our TLS, SRTP needs no override."""
    recorder = Recorder(hangup_after=1.0)
    callee = await servers(
        recorder, transports=("tls",), tls=TLSConfig(pki["chain"]), srtp="required"
    )
    caller = await servers(None, tls=TLSConfig(ca_file=pki["ca"]), srtp="required")
    call = await caller.call(f"sips:bot@127.0.0.1:{callee.tls_port}", timeout=5)
    await asyncio.wait_for(call.wait_ended(), 5)
    incoming = recorder.calls[0]
    assert incoming.info.transport == "TLS"
    stats = incoming.media.srtp_stats
    assert stats.rtp_unprotected > 20 and stats.auth_failures == 0 and stats.replays == 0
    assert len(recorder.audio[incoming.call_id]) > 20
