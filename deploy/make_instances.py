r"""Per-instance settings for N pipecat-sip instances on one host, and their dispatcher list.

One instance is one process and uses one core: run one per core, each with
its own SIP port, RTP port range and operations API port. This writes
``<prefix>-<i>.env`` files for ``deploy/systemd/pipecat-sip@.service``
(``/etc/pipecat-sip/<prefix>-<i>.env``) and prints (or appends to a file)
the lines of Kamailio's dispatcher list for ``deploy/kamailio/dispatcher.cfg``.
For several hosts, run it on each with that host's address and a prefix of
its own, and concatenate the dispatcher lines on the Kamailio host.

    python deploy/make_instances.py --host 10.0.0.11 --instances 4 --out /etc/pipecat-sip \\
        --dispatcher-list /etc/kamailio/dispatcher.list
    systemctl enable --now pipecat-sip@bot-1 pipecat-sip@bot-2 pipecat-sip@bot-3 ...

Ports: SIP ``--first-sip-port`` + i, API ``--first-api-port`` + i, RTP
``--rtp-first`` + i * ``--rtp-per-instance`` (an even number of ports: one
even/odd pair per call). Ranges that overlap, leave 1024-65535 or reach
Linux's ephemeral ports (32768-60999 by default, used by outgoing sockets)
are refused or warned about.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EPHEMERAL = (32768, 60999)


@dataclass(frozen=True)
class InstancePlan:
    """One instance's name and ports."""

    name: str
    sip_port: int
    rtp_first: int
    rtp_last: int
    api_port: int | None

    def env(self) -> str:
        """The instance's environment file."""
        lines = [
            f"# pipecat-sip instance {self.name} (deploy/make_instances.py)",
            f"SIP_SERVER_PORT={self.sip_port}",
            f"SIP_RTP_PORT_RANGE={self.rtp_first}-{self.rtp_last}",
        ]
        if self.api_port is not None:
            lines.append(f"SIP_API_PORT={self.api_port}")
        return "\n".join(lines) + "\n"


def plan(
    count: int,
    *,
    prefix: str = "bot",
    first_sip_port: int = 5071,
    first_api_port: int | None = 9101,
    rtp_first: int = 20000,
    rtp_per_instance: int = 2000,
) -> list[InstancePlan]:
    """The instances' ports.

    Raises:
        ValueError: A count or range out of bounds, or ranges that overlap.
    """
    if not 1 <= count <= 256:
        raise ValueError(f"--instances must be 1-256, not {count}")
    if rtp_per_instance < 2 or rtp_per_instance % 2:
        raise ValueError(f"--rtp-per-instance must be an even number >= 2, not {rtp_per_instance}")
    if rtp_first % 2:
        raise ValueError(f"--rtp-first must be even (RTP on even ports), not {rtp_first}")
    plans = []
    for i in range(count):
        first = rtp_first + i * rtp_per_instance
        plans.append(
            InstancePlan(
                name=f"{prefix}-{i + 1}",
                sip_port=first_sip_port + i,
                rtp_first=first,
                rtp_last=first + rtp_per_instance - 1,
                api_port=first_api_port + i if first_api_port is not None else None,
            )
        )
    used: list[tuple[int, int, str]] = []
    for p in plans:
        used.append((p.sip_port, p.sip_port, f"{p.name} SIP"))
        used.append((p.rtp_first, p.rtp_last, f"{p.name} RTP"))
        if p.api_port is not None:
            used.append((p.api_port, p.api_port, f"{p.name} API"))
    for first, last, what in used:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"{what} ports {first}-{last} are outside 1024-65535")
    used.sort()
    for (a_first, a_last, a_what), (b_first, _, b_what) in zip(used, used[1:], strict=False):
        if b_first <= a_last:
            raise ValueError(f"{a_what} ({a_first}-{a_last}) overlaps {b_what} (from {b_first})")
    return plans


def dispatcher_lines(plans: Sequence[InstancePlan], host: str, set_id: int = 1) -> list[str]:
    """Kamailio dispatcher list lines: ``set URI flags priority attributes``."""
    shown = f"[{host}]" if ":" in host else host
    return [f"{set_id} sip:{shown}:{p.sip_port} 0 0 duid={p.name}" for p in plans]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, help="this host's address, as Kamailio reaches it")
    parser.add_argument(
        "--instances", type=int, default=os.cpu_count() or 1, help="default: one per core"
    )
    parser.add_argument("--prefix", default="bot", help="instance names: PREFIX-1, PREFIX-2, ...")
    parser.add_argument("--first-sip-port", type=int, default=5071)
    parser.add_argument("--first-api-port", type=int, default=9101, help="0: no operations API")
    parser.add_argument("--rtp-first", type=int, default=20000)
    parser.add_argument("--rtp-per-instance", type=int, default=2000, help="ports (2 per call)")
    parser.add_argument("--set", type=int, default=1, help="dispatcher set id")
    parser.add_argument("--out", type=Path, help="directory for the .env files (default: none)")
    parser.add_argument("--dispatcher-list", type=Path, help="append the dispatcher lines here")
    args = parser.parse_args(argv)
    try:
        ipaddress.ip_address(args.host)
        plans = plan(
            args.instances,
            prefix=args.prefix,
            first_sip_port=args.first_sip_port,
            first_api_port=args.first_api_port or None,
            rtp_first=args.rtp_first,
            rtp_per_instance=args.rtp_per_instance,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in plans:
        if p.rtp_first <= EPHEMERAL[1] and p.rtp_last >= EPHEMERAL[0]:
            print(
                f"warning: {p.name} RTP {p.rtp_first}-{p.rtp_last} reaches the ephemeral ports "
                f"{EPHEMERAL[0]}-{EPHEMERAL[1]} (net.ipv4.ip_local_port_range)",
                file=sys.stderr,
            )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for p in plans:
            (args.out / f"{p.name}.env").write_text(p.env())
    lines = dispatcher_lines(plans, args.host, args.set)
    if args.dispatcher_list is not None:
        with args.dispatcher_list.open("a") as f:
            f.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
