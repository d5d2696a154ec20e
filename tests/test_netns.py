"""The network namespace helper (tests/helpers/netns.py): NAT really hides the inside host.

Needs root and namespaces (it skips otherwise; marked interop so that CI,
which runs as root, fails rather than skips).
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.helpers.netns import NetLab, require_netns

pytestmark = pytest.mark.interop

SEND = (
    "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
    "s.settimeout(1);s.sendto(b'ping',(sys.argv[1],int(sys.argv[2])));"
    "print(s.recvfrom(100)[0].decode())"
)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_nat_masquerades_outbound_and_blocks_inbound():
    require_netns(nft=True)
    before = namespaces()
    with NetLab() as lab:
        nat = lab.nat()
        with nat.outside.entered():  # a UDP "server" on the public side
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((nat.outside_addr, 0))
        server.settimeout(2)
        port = server.getsockname()[1]
        with server:
            sender = subprocess.Popen(
                nat.inside.argv("python3", "-c", SEND, nat.outside_addr, str(port)),
                stdout=subprocess.PIPE,
                text=True,
            )
            data, addr = server.recvfrom(100)
            assert data == b"ping"
            assert addr[0] == nat.router_outside_addr  # masqueraded, not 198.51.100.2
            server.sendto(b"pong", addr)  # the reply finds its way back through the NAT
            out, _ = sender.communicate(timeout=5)
            assert out.strip() == "pong"
        # No route from the outside to the inside host.
        probe = nat.outside.run("python3", "-c", SEND, nat.inside_addr, "9", check=False)
        assert probe.returncode != 0
        assert {ns.name for ns in lab.namespaces} <= namespaces()
    assert namespaces() == before  # every namespace was removed


def test_entered_namespace_only_moves_sockets_made_inside():
    require_netns()
    with NetLab() as lab:
        ns = lab.namespace("lo")
        with ns.entered():
            inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            inside.bind(("127.0.0.1", 0))
        outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        outside.bind(("127.0.0.1", 0))
        with inside, outside:
            # The two loopbacks are different networks.
            outside.sendto(b"x", inside.getsockname())
            inside.settimeout(0.3)
            with pytest.raises(TimeoutError):
                inside.recv(10)
