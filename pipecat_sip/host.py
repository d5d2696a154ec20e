"""Process-wide facts and settings the server needs.

The address to advertise, the open-file limit, and keeping start-up's
objects out of the garbage collector's full passes.
"""

from __future__ import annotations

import gc
import socket

from loguru import logger

__all__ = ["default_public_address", "ensure_fd_limit", "freeze_startup_objects"]


def default_public_address(host: str) -> str:
    """The address to write into SDP and Contact when none is configured.

    A specific bind address is used as is. For a wildcard bind (0.0.0.0, ::)
    it is the address of the interface that routes outwards: a UDP socket is
    *connected* (no packet is sent) to a TEST-NET-1 address (RFC 5737) and
    asked for its local address; 127.0.0.1 when the host has no route.
    """
    if host not in ("0.0.0.0", "::", ""):
        return host
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def ensure_fd_limit(needed: int) -> None:
    """Raise this process's soft open-file limit towards ``needed`` (up to the hard limit).

    The common soft default, 1024, would cap a server at ~340 calls with a
    "Too many open files" on the next RTP port.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning(f"cannot raise the open-file limit from {soft} to {target}: {exc}")
            return
    if target < needed:
        logger.warning(
            f"open-file limit {target} (hard) is below the {needed} that max_calls needs; "
            "calls beyond it will fail (raise `ulimit -n`)"
        )


def freeze_startup_objects() -> int:
    """Collect once, then keep everything alive now out of later collections.

    Pipecat, its services and their SDKs leave ~100,000 objects that live as
    long as the process. CPython's full (oldest-generation) collection walks
    all of them: ~30 ms here with Pipecat alone, 50 ms with a bot's services,
    during which no call's RTP is sent (a burst of late packets for every
    call) and every SIP message waits. ``gc.freeze()`` moves them to a
    permanent generation that collections skip; what calls allocate later
    is collected as before. Call it once start-up has imported what it
    needs; the runner does (``python bot.py --transport sip``).

    Garbage among the frozen objects is not freed until ``gc.unfreeze()``,
    which is why this collects first.

    Returns:
        How many objects are frozen now.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
