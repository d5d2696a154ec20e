"""Helpers for the call-control tests: a second server whose RTP ports never meet the first's."""

from __future__ import annotations

import random

from pipecat_sip.server import SIPServer
from tests.helpers.server import start_server


async def start_beside(*others: SIPServer, handler=None, **kwargs) -> SIPServer:
    """Start a server on loopback whose RTP range overlaps none of ``others``'.

    Two servers in one test with overlapping ranges could offer each other a
    port of their own, which the media checks refuse (488).
    """
    taken = [(s.ports.start, s.ports.end) for s in others]
    for _ in range(100):
        base = random.randrange(20000, 40000, 2)
        if all(base + 599 < lo or base > hi for lo, hi in taken):
            break
    kwargs.setdefault("rtp_port_range", (base, base + 599))
    return await start_server(handler, **kwargs)
