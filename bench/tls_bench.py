"""SIP over TCP/TLS benchmarks (a script, not a test): call setup over TLS and idle connections.

Two figures of issue 12, each against a SIPServer in a child process (so the
load generator's work is not on the server's core):

- ``setup``: INVITE-to-200 OK over TLS at 20 calls/s. The generator is a raw
  TLS client (SIPp here has no TLS): each call sends an INVITE with a G.711
  offer, the server answers at once (its media sends to a UDP socket of ours
  that discards), the generator ACKs, holds the call ``--hold`` s and sends
  BYE. The time is from writing the INVITE to reading its 200 OK. Two cases:
  ``persistent`` (all calls on one TLS connection, as a trunk keeps it) and
  ``handshake`` (a new TLS connection per call: the handshake included).
  Target: p95 <= 15 ms on loopback.
- ``idle``: N TCP and N TLS connections opened to the server, each proving
  itself with one OPTIONS, then held idle; the server's RSS (``/proc/PID``)
  before and after gives kB per connection, and a second sample after
  ``--hold`` s shows it does not grow while they idle.

Prints one JSON line per figure, then a short table.

Usage: .venv/bin/python bench/tls_bench.py [setup|idle|all] [--rate 20] [--seconds 10]
           [--hold 2] [--connections 500] [--uvloop] [--transport tls|tcp] [--cpu N]
       .venv/bin/python bench/tls_bench.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipecat_sip.host import freeze_startup_objects  # noqa: E402
from pipecat_sip.sip.framing import Message, StreamFramer  # noqa: E402
from pipecat_sip.sip.message import SIPResponse, parse_message  # noqa: E402

_ids = itertools.count(1)


# --- the server (child process) -----------------------------------------------------------------
async def serve(args: argparse.Namespace) -> None:
    from loguru import logger

    from pipecat_sip.endpoint import StreamSettings
    from pipecat_sip.server import SIPServer
    from pipecat_sip.tls import TLSConfig

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    async def on_call(call) -> None:
        await call.answer()
        await call.wait_ended()

    settings = StreamSettings(
        max_connections=args.connections * 2 + 100,
        max_connections_per_ip=args.connections * 2 + 100,
        idle_timeout=3600,
    )
    server = SIPServer(
        on_call,
        host="127.0.0.1",
        port=0,
        transports=("udp", "tcp", "tls"),
        tls=TLSConfig(args.cert),
        rtp_port_range=(30000, 39999),
        max_calls=1000,
        rate_limit=0,
        stream_settings=settings,
        send_silence=True,
    )
    await server.start()
    freeze_startup_objects()  # as the runner does once started
    print(
        json.dumps(
            {"ready": True, "tcp": server.tcp_port, "tls": server.tls_port, "pid": os.getpid()}
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closes our stdin to stop us
    await stop.wait()
    await server.stop(timeout=1.0)


# --- helpers -----------------------------------------------------------------------------------
def make_pki(directory: Path) -> tuple[str, str]:
    import trustme

    ca = trustme.CA()
    cert = directory / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return str(cert), str(ca_file)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def headers(method: str, uri: str, call_id: str, cseq: int, branch: str, port: int, tag: str,
            to_tag: str = "", transport: str = "TLS") -> str:  # fmt: skip
    to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:load@127.0.0.1>;tag={tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:load@127.0.0.1:{port};transport={transport.lower()}>\r\n"
    )


class Connection:
    """One client connection; responses are handed to waiters by (Call-ID, CSeq method)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = StreamFramer(max_message_size=65536, max_header_bytes=16384)
        self.waiters: dict[tuple[str, str], asyncio.Queue] = {}
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext | None) -> Connection:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost" if context else None
        )
        return cls(reader, writer)

    @property
    def local_port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await self.reader.read(65536):
                for event in self.framer.receive(data, loop.time()):
                    if not isinstance(event, Message):
                        continue
                    message = parse_message(event.data)
                    if not isinstance(message, SIPResponse):
                        # An in-dialog request from the server (none expected): 200 it.
                        continue
                    queue = self.waiters.get((message.call_id, message.cseq.method))
                    if queue is not None:
                        queue.put_nowait((time.perf_counter(), message))

    def expect(self, call_id: str, method: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.waiters[(call_id, method)] = queue
        return queue

    async def final(self, queue: asyncio.Queue, timeout: float = 10.0):
        while True:
            at, response = await asyncio.wait_for(queue.get(), timeout)
            if response.status_code >= 200:
                return at, response

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def one_call(
    conn: Connection, port: int, media_port: int, hold: float, transport: str = "TLS"
) -> float:
    n = next(_ids)
    call_id, tag = f"bench-{n}-{os.getpid()}", f"t{n}"
    uri = f"sip:bot@127.0.0.1:{port};transport={transport.lower()}"
    sdp = (
        "v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
    ).encode()
    local = conn.local_port
    invite = (
        headers("INVITE", uri, call_id, 1, f"i{n}", local, tag, transport=transport)
        + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    ).encode() + sdp
    queue = conn.expect(call_id, "INVITE")
    start = time.perf_counter()
    conn.writer.write(invite)
    at, ok = await conn.final(queue)
    setup_ms = (at - start) * 1000
    if ok.status_code != 200:
        raise RuntimeError(f"INVITE answered {ok.status_code}")
    to_tag = ok.to.tag or ""
    target = str(ok.contacts[0].uri) if ok.contacts else uri
    ack = (
        headers("ACK", target, call_id, 1, f"a{n}", local, tag, to_tag, transport)
        + "Content-Length: 0\r\n\r\n"
    )
    conn.writer.write(ack.encode())
    await asyncio.sleep(hold)
    bye = (
        headers("BYE", target, call_id, 2, f"b{n}", local, tag, to_tag, transport)
        + "Content-Length: 0\r\n\r\n"
    )
    queue = conn.expect(call_id, "BYE")
    conn.writer.write(bye.encode())
    await conn.final(queue)
    conn.waiters.pop((call_id, "INVITE"), None)
    conn.waiters.pop((call_id, "BYE"), None)
    return setup_ms


async def run_setup(ports: dict, ca_file: str, args: argparse.Namespace) -> list[dict]:
    kind = args.transport
    context: ssl.SSLContext | None = None
    if kind == "tls":
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    port = ports[kind]
    transport = kind.upper()
    discard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    discard.bind(("127.0.0.1", 0))
    discard.setblocking(False)
    media_port = discard.getsockname()[1]
    loop = asyncio.get_running_loop()
    loop.add_reader(discard.fileno(), lambda: _drain(discard))
    rows = []
    try:
        for case in ("persistent", "handshake"):
            shared = await Connection.open(port, context) if case == "persistent" else None
            warm = shared or await Connection.open(port, context)
            await one_call(warm, port, media_port, 0)  # warm-up
            if warm is not shared:
                await warm.aclose()
            total = int(args.rate * args.seconds)
            interval = 1.0 / args.rate
            tasks = []
            failures = 0

            async def call(delay: float, shared: Connection | None = shared) -> float | None:
                nonlocal failures
                await asyncio.sleep(delay)
                conn = shared
                start = time.perf_counter()
                try:
                    if conn is None:
                        conn = await Connection.open(port, context)
                    handshake_ms = (time.perf_counter() - start) * 1000
                    setup = await one_call(conn, port, media_port, args.hold, transport)
                    return setup + (handshake_ms if shared is None else 0.0)
                except (OSError, RuntimeError, TimeoutError, ssl.SSLError) as exc:
                    failures += 1
                    print(f"call failed: {exc!r}", file=sys.stderr)
                    return None
                finally:
                    if shared is None and conn is not None:
                        await conn.aclose()

            begin = loop.time()
            for i in range(total):
                tasks.append(asyncio.ensure_future(call(i * interval)))
            results = [r for r in await asyncio.gather(*tasks) if r is not None]
            elapsed = loop.time() - begin
            if shared is not None:
                await shared.aclose()
            rows.append(
                {
                    "bench": "tls_setup",
                    "transport": kind,
                    "case": case,
                    "rate": args.rate,
                    "calls": total,
                    "failed": failures,
                    "hold_s": args.hold,
                    "p50_ms": round(percentile(results, 50), 2),
                    "p95_ms": round(percentile(results, 95), 2),
                    "p99_ms": round(percentile(results, 99), 2),
                    "max_ms": round(max(results), 2) if results else None,
                    "elapsed_s": round(elapsed, 1),
                    "uvloop": args.uvloop,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            await asyncio.sleep(args.hold + 0.5)  # let the last calls end on the server
    finally:
        loop.remove_reader(discard.fileno())
        discard.close()
    return rows


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        for _ in range(64):
            sock.recv(2048)


async def run_idle(ports: dict, ca_file: str, pid: int, args: argparse.Namespace) -> list[dict]:
    context = ssl.create_default_context(cafile=ca_file)
    rows = []
    n = args.connections
    for kind in ("tcp", "tls"):
        ctx = context if kind == "tls" else None
        warm = [await Connection.open(ports[kind], ctx) for _ in range(5)]
        for conn in warm:
            await options(conn, kind)
        await asyncio.sleep(0.3)
        before = rss_kb(pid)
        conns: list[Connection] = []
        start = time.perf_counter()
        for i in range(0, n, 50):  # 50 at a time
            batch = await asyncio.gather(
                *(Connection.open(ports[kind], ctx) for _ in range(min(50, n - i)))
            )
            conns += batch
            await asyncio.gather(*(options(c, kind) for c in batch))
        opened_s = time.perf_counter() - start
        await asyncio.sleep(0.5)
        after = rss_kb(pid)
        await asyncio.sleep(args.hold)
        held = rss_kb(pid)
        rows.append(
            {
                "bench": "idle_connections",
                "transport": kind,
                "connections": n,
                "rss_before_kb": before,
                "rss_after_kb": after,
                "rss_after_hold_kb": held,
                "kb_per_connection": round((after - before) / n, 1),
                "growth_while_idle_kb": held - after,
                "open_s": round(opened_s, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        await asyncio.gather(*(conn.aclose() for conn in conns + warm))
        await asyncio.sleep(0.5)
    return rows


async def options(conn: Connection, kind: str) -> None:
    n = next(_ids)
    call_id = f"idle-{n}-{os.getpid()}"
    uri = f"sip:pipecat@127.0.0.1;transport={kind}"
    text = (
        headers(
            "OPTIONS", uri, call_id, 1, f"o{n}", conn.local_port, f"t{n}", transport=kind.upper()
        )
        + "Content-Length: 0\r\n\r\n"
    )
    queue = conn.expect(call_id, "OPTIONS")
    conn.writer.write(text.encode())
    _, response = await conn.final(queue)
    conn.waiters.pop((call_id, "OPTIONS"), None)
    if response.status_code != 200:
        raise RuntimeError(f"OPTIONS answered {response.status_code}")


async def main_async(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.connections * 2 + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory() as tmp:
        cert, ca_file = make_pki(Path(tmp))
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            "--cert",
            cert,
            "--connections",
            str(args.connections),
        ]
        if args.uvloop:
            cmd.append("--uvloop")
        if args.cpu is not None:
            cmd = ["taskset", "-c", str(args.cpu), *cmd]
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            ready = json.loads(child.stdout.readline())
            rows = []
            if args.what in ("setup", "all"):
                rows += await run_setup(ready, ca_file, args)
            if args.what in ("idle", "all"):
                rows += await run_idle(ready, ca_file, ready["pid"], args)
        finally:
            if child.stdin is not None:
                child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    print()
    for row in rows:
        if row["bench"] == "tls_setup":
            print(
                f"INVITE-to-200 over {row['transport']}, {row['case']:10} {row['rate']:g} calls/s "
                f"x {row['calls']}: p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms "
                f"(target <= 15), failed {row['failed']}"
            )
        else:
            print(
                f"{row['connections']} idle {row['transport']} connections: "
                f"{row['kb_per_connection']} kB each, "
                f"{row['growth_while_idle_kb']} kB growth while idle"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=("setup", "idle", "all"))
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of calls")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each call is held")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument(
        "--transport", choices=("tls", "tcp"), default="tls", help="setup: tls, or tcp to compare"
    )
    parser.add_argument("--uvloop", action="store_true", help="run the server on uvloop")
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    parser.add_argument("--quick", action="store_true", help="a few seconds, figures not judged")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.uvloop:
            import uvloop

            uvloop.run(serve(args))
        else:
            asyncio.run(serve(args))
        return
    if args.quick:
        args.seconds, args.hold, args.connections = 1.0, 0.3, 20
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
