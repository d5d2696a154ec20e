"""Network namespaces for interop tests: private networks the test creates and always removes.

:class:`NetLab` is a context manager that creates namespaces (each with its
own ``lo`` up), veth pairs between them with addresses the test chooses
(documentation ranges: 198.51.100.0/24 inside, 203.0.113.0/24 outside), and
a NAT "router" (``net.ipv4.ip_forward=1`` and an nftables ``masquerade``
rule on its outward veth). On exit every namespace is deleted, which also
removes its veths and its nftables ruleset; nothing is ever configured in
the host's own namespace.

Programs run inside with ``ip netns exec`` (:meth:`Namespace.argv`,
:meth:`Namespace.run`). :meth:`Namespace.entered` moves the calling thread
into a namespace for a while (``setns(2)``): sockets created meanwhile (for
example by an in-process ``SIPServer`` and its RTP port pool) belong to that
namespace for their whole life, and child processes started meanwhile start
there.

Needs root and a kernel with network namespaces; :func:`require_netns`
skips the calling test with the reason otherwise. ``tc netem`` is not
available on this kernel: impair traffic with tests/helpers/relay.py.

Example::

    with NetLab() as lab:
        nat = lab.nat()
        nat.inside.run("ping", "-c1", "-W1", nat.outside_addr)
        with nat.inside.entered():
            server = await start_server(handler)  # bound in the inside namespace
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

CLONE_NEWNET = 0x40000000
_CMD_TIMEOUT_S = 10.0
_probe_result: str | None = None  # "" when namespaces work, else the reason they do not


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be set up."""


def _ip() -> str | None:
    return shutil.which("ip")


def netns_unavailable() -> str:
    """Return why namespaces cannot be used here ("" when they can); probed once."""
    global _probe_result
    if _probe_result is not None:
        return _probe_result
    if os.geteuid() != 0:
        _probe_result = "network namespaces need root"
    elif _ip() is None:
        _probe_result = "ip not installed (apt-get install iproute2)"
    else:
        name = f"pcs-probe-{secrets.token_hex(3)}"
        add = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if add.returncode != 0:
            _probe_result = f"ip netns add failed: {add.stderr.strip()}"
        else:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            _probe_result = ""
    return _probe_result


def require_netns(*, nft: bool = False) -> None:
    """Skip the calling test unless namespaces (and ``nft`` if asked) can be used.

    Raises:
        pytest.skip.Exception: Not root, no ``ip`` or no namespace support, or
            ``nft`` missing when ``nft`` is True.
    """
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    if nft and shutil.which("nft") is None:
        pytest.skip("nft not installed (apt-get install nftables)")


def _run(args: Sequence[str], *, check: bool = True, input: str | None = None):
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, input=input
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


@dataclass
class Namespace:
    """One network namespace made by a :class:`NetLab`.

    Attributes:
        name: The namespace's name (``ip netns`` list), unique per lab.
        role: The label the test gave it ("inside", "router", ...).
    """

    name: str
    role: str

    def argv(self, *cmd: str) -> list[str]:
        """``["ip", "netns", "exec", name, *cmd]``: a command line that runs inside."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True, input: str | None = None):
        """Run a short command inside and return its ``CompletedProcess`` (10 s limit).

        Raises:
            NetnsError: ``check`` and the command failed.
        """
        return _run(self.argv(*cmd), check=check, input=input)

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl inside the namespace (``net.*`` keys are per namespace)."""
        self.run("sysctl", "-qw", f"{key}={value}")

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into this namespace until the block ends.

        Sockets created in the block stay in this namespace after it ends;
        subprocesses started in the block run here. Only the calling thread
        moves (``setns(2)`` on a thread), so other threads are unaffected.

        Raises:
            NetnsError: setns failed.
        """
        with (
            open("/proc/thread-self/ns/net", "rb") as home,
            open(f"/run/netns/{self.name}", "rb") as target,
        ):
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())


@dataclass
class NatTopology:
    """``inside -- router (masquerade) -- outside``: a host behind NAT and the Internet side.

    Attributes:
        inside: The host behind NAT (``inside_addr``, default route via the router).
        router: Forwards and masquerades what leaves towards ``outside``.
        outside: The public side (``outside_addr``); it has no route to ``inside``.
        inside_addr: e.g. "198.51.100.2".
        router_inside_addr: e.g. "198.51.100.1".
        router_outside_addr: The public address that NAT'ed traffic comes from, e.g. "203.0.113.1".
        outside_addr: e.g. "203.0.113.2".
    """

    inside: Namespace
    router: Namespace
    outside: Namespace
    inside_addr: str
    router_inside_addr: str
    router_outside_addr: str
    outside_addr: str


class NetLab:
    """Creates namespaces, veth pairs and NAT rules; removes all of them on exit.

    Use as ``with NetLab() as lab:``. Every name carries a random suffix, so
    two labs (or a crashed earlier run's leftovers) never clash.
    """

    def __init__(self, prefix: str = "pcs") -> None:
        self.prefix = prefix
        self.tag = secrets.token_hex(3)
        self.namespaces: list[Namespace] = []
        self._links = 0

    def __enter__(self) -> NetLab:
        require_netns()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete every namespace made here (their veths and nftables rules go with them)."""
        errors = []
        for ns in reversed(self.namespaces):
            proc = _run(["ip", "netns", "del", ns.name], check=False)
            if proc.returncode != 0 and "No such file" not in proc.stderr:
                errors.append(f"{ns.name}: {proc.stderr.strip()}")
        self.namespaces.clear()
        if errors:
            raise NetnsError("could not delete: " + "; ".join(errors))

    def namespace(self, role: str) -> Namespace:
        """Create a namespace with ``lo`` up.

        Args:
            role: A short label ("inside", "router", ...), part of the name.

        Returns:
            The new :class:`Namespace`.

        Raises:
            NetnsError: It could not be created.
        """
        name = f"{self.prefix}-{role}-{self.tag}"
        _run(["ip", "netns", "add", name])
        ns = Namespace(name, role)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def link(self, a: Namespace, a_cidr: str, b: Namespace, b_cidr: str) -> tuple[str, str]:
        """Join two namespaces with a veth pair and address both ends.

        Args:
            a: One namespace.
            a_cidr: Its end's address, e.g. "198.51.100.1/24".
            b: The other namespace.
            b_cidr: Its end's address, e.g. "198.51.100.2/24".

        Returns:
            ``(ifname_in_a, ifname_in_b)``.

        Raises:
            NetnsError: A step failed.
        """
        self._links += 1
        if_a = f"v{self.tag}{self._links}a"  # at most 15 characters
        if_b = f"v{self.tag}{self._links}b"
        _run(["ip", "link", "add", if_a, "netns", a.name, "type", "veth", "peer", if_b,
              "netns", b.name])  # fmt: skip
        for ns, ifname, cidr in ((a, if_a, a_cidr), (b, if_b, b_cidr)):
            ns.run("ip", "addr", "add", cidr, "dev", ifname)
            ns.run("ip", "link", "set", ifname, "up")
        return if_a, if_b

    def nat(
        self,
        *,
        inside_net: str = "198.51.100",
        outside_net: str = "203.0.113",
    ) -> NatTopology:
        """Build ``inside -- router -- outside`` with masquerade on the router's outward veth.

        Args:
            inside_net: First three octets of the private /24 (router .1, host .2).
            outside_net: First three octets of the public /24 (router .1, far side .2).

        Returns:
            The :class:`NatTopology`.

        Raises:
            NetnsError: A step failed (``nft`` missing, for example).
        """
        require_netns(nft=True)
        inside = self.namespace("inside")
        router = self.namespace("router")
        outside = self.namespace("outside")
        self.link(router, f"{inside_net}.1/24", inside, f"{inside_net}.2/24")
        _, out_if = self.link(outside, f"{outside_net}.2/24", router, f"{outside_net}.1/24")
        inside.run("ip", "route", "add", "default", "via", f"{inside_net}.1")
        router.sysctl("net.ipv4.ip_forward", "1")
        ruleset = (
            "table ip nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{out_if}" masquerade\n'
            "  }\n"
            "}\n"
        )
        router.run("nft", "-f", "-", input=ruleset)
        return NatTopology(
            inside=inside,
            router=router,
            outside=outside,
            inside_addr=f"{inside_net}.2",
            router_inside_addr=f"{inside_net}.1",
            router_outside_addr=f"{outside_net}.1",
            outside_addr=f"{outside_net}.2",
        )
