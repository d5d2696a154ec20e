"""Prometheus metrics (issue 16 item 4): GET /metrics parsed by prometheus-client's own parser.

A scripted sequence of SIP traffic from raw UDP peers (two OPTIONS, a call
the caller ends, a call we end, a call refused 488 for its codec, RTP with
known gaps) must show up as exactly these counts; labels stay bounded.
"""

from __future__ import annotations

import asyncio
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipecat_sip.api import OperationsAPI
from pipecat_sip.metrics import ServerMetrics, _Histogram, classify_sip
from pipecat_sip.rtp.packet import RtpPacket
from pipecat_sip.sip.message import parse_message
from tests.helpers.server import Recorder, start_server, wait_for
from tests.test_robustness import PCMU, RawPeer, UdpSocket, options_bytes


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(parsed, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def test_classify_sip_bounds_methods_and_statuses():
    assert classify_sip(b"INVITE sip:a@b SIP/2.0\r\n") == ("request", "INVITE", "")
    assert classify_sip(b"FOO sip:a@b SIP/2.0\r\n") == ("request", "other", "")
    assert classify_sip(b"\x00\xff junk") == ("request", "other", "")
    assert classify_sip(b"") == ("request", "other", "")
    assert classify_sip(b"A" * 5000) == ("request", "other", "")
    ok = b"SIP/2.0 200 OK\r\nVia: x\r\nCSeq: 7 BYE\r\n\r\n"
    assert classify_sip(ok) == ("response", "BYE", "200")
    assert classify_sip(b"SIP/2.0 299 Odd\r\ncseq:1 invite\r\n") == ("response", "INVITE", "2xx")
    assert classify_sip(b"SIP/2.0 999 No\r\nCSeq: 1 XYZZY\r\n") == ("response", "other", "other")
    assert classify_sip(b"SIP/2.0 abc\r\n") == ("response", "other", "other")
    # A CSeq beyond the first 4 KiB is not looked for (bounded work).
    far = b"SIP/2.0 180 Ringing\r\nX: " + b"a" * 5000 + b"\r\nCSeq: 1 INVITE\r\n"
    assert classify_sip(far) == ("response", "other", "180")


def test_histogram_buckets_are_cumulative():
    h = _Histogram((0.01, 0.1))
    for v in (0.0, 0.05, 0.05, 0.5):
        h.observe(v)
    family = h.family("x", "doc")
    got = {s.labels.get("le"): s.value for s in family.samples if s.name == "x_bucket"}
    assert got == {"0.01": 1, "0.1": 3, "+Inf": 4}
    assert [s.value for s in family.samples if s.name == "x_count"] == [4]


def bad_codec_invite(peer: RawPeer) -> bytes:
    text = peer.invite_bytes().decode()
    head, body = text.split("\r\n\r\n", 1)
    body = body.replace("RTP/AVP 0 101", "RTP/AVP 18").replace(
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000"
    )
    head = re.sub(r"Content-Length: \d+", f"Content-Length: {len(body)}", head)
    return f"{head}\r\n\r\n{body}".encode()


def ack_for_error(invite: bytes, response) -> bytes:
    """The ACK of a non-2xx final response (RFC 3261 s.17.1.1.3): the INVITE's branch."""
    req = parse_message(invite)
    return (
        f"ACK {req.uri} SIP/2.0\r\n"
        f"Via: {req.headers.get('Via')}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {req.headers.get('From')}\r\n"
        f"To: {response.headers.get('To')}\r\n"
        f"Call-ID: {req.call_id}\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def send_rtp_paced(peer: RawPeer, port: int, seqs: list[int]) -> None:
    pcm = bytes(320)
    for i, seq in enumerate(seqs):
        packet = RtpPacket(0, seq & 0xFFFF, 160 * (seq - seqs[0]), 0x1234, PCMU.encode(pcm))
        peer.rtp.send(packet.serialize(), ("127.0.0.1", port))
        if i % 2:
            await asyncio.sleep(0.04)  # real time: a flood would be cut by the input budget


async def test_metrics_match_a_scripted_call_sequence():
    rec = Recorder()
    server = await start_server(rec)  # default timers: nothing is retransmitted here
    api = OperationsAPI(server)
    await api.start()
    a, b, c = [await RawPeer.open(server) for _ in range(3)]
    probe = await UdpSocket.open()
    try:
        # Two OPTIONS.
        for cseq in (1, 2):
            probe.send(options_bytes(probe.port, server.port, cseq=cseq), a.server_addr)
        assert await wait_for(lambda: len(probe.datagrams) == 2)
        # Call A: 55 packet times with 5 lost on the way, then the caller hangs up.
        await a.establish()
        assert await wait_for(lambda: len(rec.calls) == 1 and rec.calls[0].established)
        seqs = [s for s in range(1000, 1055) if s not in (1010, 1020, 1021, 1030, 1040)]
        await send_rtp_paced(a, rec.calls[0].local_rtp_port, seqs)
        assert await wait_for(lambda: rec.calls[0].media.stats.packets_received == 50)
        a.send_bye()
        assert await wait_for(lambda: a.responses(200, method="BYE"))
        # Call B: we hang up.
        await b.establish()
        assert await wait_for(lambda: len(rec.calls) == 2 and rec.calls[1].established)
        await rec.calls[1].hangup()
        assert await wait_for(lambda: b.requests("BYE"))
        b.answer_byes()
        # Call C: no common codec: 488, ACKed.
        invite = bad_codec_invite(c)
        c.sip.send(invite, c.server_addr)
        assert await wait_for(lambda: c.responses(488))
        c.sip.send(ack_for_error(invite, c.responses(488)[0]), c.server_addr)
        assert await wait_for(lambda: len(rec.ended) == 2 and not server.calls)
        await asyncio.sleep(0.2)  # the last ACK and BYE answer are in

        async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
            r = await http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        m = samples(r.text)
        p = "pipecat_sip_"
        requests_in = {"OPTIONS": 2, "INVITE": 3, "ACK": 3, "BYE": 1}
        for method, count in requests_in.items():
            assert value(m, p + "sip_requests_total", direction="in", method=method) == count
        assert value(m, p + "sip_requests_total", direction="out", method="BYE") == 1
        responses_out = {
            ("OPTIONS", "200"): 2,
            ("INVITE", "100"): 3,
            ("INVITE", "180"): 2,
            ("INVITE", "200"): 2,
            ("INVITE", "488"): 1,
            ("BYE", "200"): 1,
        }
        for (method, status), count in responses_out.items():
            got = value(m, p + "sip_responses_total", direction="out", method=method, status=status)
            assert got == count, (method, status, got)
        out_total = sum(
            v for (n, labels), v in m.items() if n == p + "sip_responses_total" and
            ("direction", "out") in labels
        )  # fmt: skip
        assert out_total == sum(responses_out.values())
        assert value(m, p + "sip_responses_total", direction="in", method="BYE", status="200") == 1

        assert value(m, p + "calls_started_total", direction="inbound") == 2
        assert value(m, p + "calls_started_total", direction="outbound") == 0
        assert value(m, p + "calls_ended_total", reason="remote_bye") == 1
        assert value(m, p + "calls_ended_total", reason="local_bye") == 1
        assert value(m, p + "calls_active", direction="inbound") == 0
        assert value(m, p + "rtp_packets_total", direction="in") == 50
        assert value(m, p + "rtp_payload_bytes_total", direction="in") == 50 * 160
        assert value(m, p + "rtp_packets_total", direction="out") > 0
        assert value(m, p + "dropped_total", layer="rtp", cause="over_rate") == 0
        assert value(m, p + "dropped_total", layer="sip", cause="rate_limit") == 0
        # One call with reception statistics: 5 of 55 lost (0.091), in the 0.1 bucket.
        assert value(m, p + "call_packet_loss_ratio_count") == 1
        assert value(m, p + "call_packet_loss_ratio_bucket", le="0.05") == 0
        assert value(m, p + "call_packet_loss_ratio_bucket", le="0.1") == 1
        assert abs(value(m, p + "call_packet_loss_ratio_sum") - 5 / 55) < 1e-9
        assert value(m, p + "call_jitter_ms_count") == 1
        assert value(m, p + "rtp_ports_in_use") == 0
        assert value(m, p + "rtp_ports_capacity") == server.ports.capacity
        assert value(m, p + "accepting_calls") == 1
        assert (p + "registration_up", ()) not in m  # no registration configured
        # No per-call labels anywhere.
        for _, labels in m:
            assert not any(name in ("call_id", "call") for name, _ in labels), labels
    finally:
        for peer in (a, b, c):
            peer.close()
        probe.close()
        await api.stop()
        await server.stop()


async def test_live_call_counted_then_folded_in_once_and_pipeline_errors_counted():
    from loguru import logger

    rec = Recorder()
    server = await start_server(rec)
    metrics = ServerMetrics(server)
    peer = await RawPeer.open(server)
    try:
        await peer.establish()
        assert await wait_for(lambda: rec.calls and rec.calls[0].established)
        await send_rtp_paced(peer, rec.calls[0].local_rtp_port, list(range(10)))
        assert await wait_for(lambda: rec.calls[0].media.stats.packets_received == 10)
        live = samples(metrics.render().decode())
        name = "pipecat_sip_rtp_packets_total"
        assert value(live, name, direction="in") == 10
        assert value(live, "pipecat_sip_calls_active", direction="inbound") == 1
        peer.send_bye()
        assert await wait_for(lambda: not server.calls)
        ended = samples(metrics.render().decode())
        assert value(ended, name, direction="in") == 10  # moved to the totals, not twice
        assert value(ended, "pipecat_sip_calls_active", direction="inbound") == 0

        logger.patch(lambda r: r.update(name="pipecat.pipeline.task")).error("boom")
        logger.patch(lambda r: r.update(name="pipecat_sip.calls")).error("not Pipecat's")
        errors = samples(metrics.render().decode())
        assert value(errors, "pipecat_sip_pipeline_errors_total") == 1
    finally:
        peer.close()
        metrics.close()
        await server.stop()
