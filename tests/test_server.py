"""SIPServer behaviour driven by a raw UDP client on loopback (no third-party peer)."""

from __future__ import annotations

import asyncio
import random
import socket

from pipecat_sip.server import SIPServer
from pipecat_sip.sip.message import SIPResponse, parse_message

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)


def invite(port: int, client_port: int, call_id: str) -> bytes:
    head = (
        f"INVITE sip:bot@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{client_port};branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=t-{call_id}\r\n"
        f"To: <sip:bot@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{client_port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n"
    )
    return head.encode() + OFFER


async def receive_responses(sock: socket.socket, until_status: int, timeout: float):
    loop = asyncio.get_running_loop()
    statuses = []
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), deadline - loop.time())
        except TimeoutError:
            break
        message = parse_message(data)
        assert isinstance(message, SIPResponse)
        statuses.append(message.status_code)
        if message.status_code == until_status:
            break
    return statuses


async def test_unanswered_call_is_rejected_480_after_answer_timeout():
    ringing = []

    async def never_answers(call):
        ringing.append(call)
        await call.wait_ended()

    base = random.randrange(20000, 40000, 2)
    server = SIPServer(
        never_answers,
        host="127.0.0.1",
        port=0,
        rtp_port_range=(base, base + 99),
        answer_timeout_s=0.3,
    )
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        sock.sendto(
            invite(server.port, sock.getsockname()[1], "ring-timeout"), ("127.0.0.1", server.port)
        )
        statuses = await receive_responses(sock, 480, timeout=3.0)
        assert statuses[:2] == [100, 180] and statuses[-1] == 480
        assert ringing and ringing[0].end_reason == "timeout"
        assert server.ports.in_use == 0 and not server.calls
    finally:
        sock.close()
        await server.stop()


async def test_answer_after_cancel_raises_call_failed_without_a_traceback():
    from pipecat_sip.call import CallFailed

    outcome = []

    async def answers_late(call):
        await call.wait_ended()  # the caller cancels while we ring
        try:
            await call.answer()
        except CallFailed as exc:
            outcome.append(str(exc))

    base = random.randrange(20000, 40000, 2)
    server = SIPServer(answers_late, host="127.0.0.1", port=0, rtp_port_range=(base, base + 99))
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    client_port = sock.getsockname()[1]
    try:
        request = invite(server.port, client_port, "cancelled-1")
        sock.sendto(request, ("127.0.0.1", server.port))
        assert (await receive_responses(sock, 180, timeout=3.0))[-1] == 180
        head = request.split(b"\r\n\r\n")[0].decode()
        cancel = (
            head.replace("INVITE sip:", "CANCEL sip:", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
            .replace("Content-Type: application/sdp\r\n", "")
            .split("Content-Length:")[0]
            + "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(cancel.encode(), ("127.0.0.1", server.port))
        statuses = await receive_responses(sock, 487, timeout=3.0)
        assert 200 in statuses and statuses[-1] == 487
        await asyncio.sleep(0.1)
        assert outcome == ["call ended before answer (cancelled)"]
        assert server.ports.in_use == 0 and not server.calls
    finally:
        sock.close()
        await server.stop()


def test_open_file_limit_raised_for_max_calls():
    import resource

    from pipecat_sip.host import ensure_fd_limit as _ensure_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        lower = min(soft, 512)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
        _ensure_fd_limit(lower + 100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(lower + 100, hard)
        _ensure_fd_limit(10)  # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(lower + 100, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
