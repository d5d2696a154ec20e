"""RTP port pool: even ports, RTCP neighbours reserved, host-busy ports skipped, release/reuse."""

import random
import socket

import pytest

from pipecat_sip.ports import PortPool, PortPoolExhausted

HOST = "127.0.0.1"


def free_range(size: int) -> int:
    """Return an even port whose ``size`` consecutive ports are free on loopback now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - size) & ~1
        socks = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    pytest.skip("no free UDP port range on loopback")


def occupy(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, port))
    return sock


@pytest.fixture
def base() -> int:
    return free_range(12)


def drain(pool: PortPool) -> list:
    leases = []
    while True:
        try:
            leases.append(pool.acquire())
        except PortPoolExhausted:
            return leases


def close_all(leases) -> None:
    for lease in leases:
        lease.close()


def test_hands_out_even_ports_with_their_rtcp_port_in_range(base):
    pool = PortPool(base, base + 9, HOST)  # pairs: base..base+9 -> 5 RTP ports
    leases = drain(pool)
    try:
        ports = sorted(lease.port for lease in leases)
        assert ports == [base, base + 2, base + 4, base + 6, base + 8]
        assert all(port % 2 == 0 and port + 1 <= base + 9 for port in ports)
        for lease in leases:
            assert lease.sock.getsockname() == (HOST, lease.port)
            assert lease.sock.type == socket.SOCK_DGRAM
            assert lease.sock.getblocking() is False
        assert pool.in_use == 5 and pool.available == 0 and pool.capacity == 5
    finally:
        close_all(leases)


def test_even_end_without_rtcp_port_is_not_handed_out(base):
    pool = PortPool(base, base + 4, HOST)  # base+4 would need base+5 for RTCP
    assert pool.capacity == 2
    leases = drain(pool)
    close_all(leases)
    assert sorted(lease.port for lease in leases) == [base, base + 2]


def test_odd_start_is_raised_to_even(base):
    pool = PortPool(base + 1, base + 7, HOST)
    assert pool.start == base + 2
    leases = drain(pool)
    close_all(leases)
    assert sorted(lease.port for lease in leases) == [base + 2, base + 4, base + 6]


def test_ports_busy_on_the_host_are_skipped(base):
    busy = [occupy(base), occupy(base + 4)]
    try:
        pool = PortPool(base, base + 9, HOST)
        leases = drain(pool)
        close_all(leases)
        assert sorted(lease.port for lease in leases) == [base + 2, base + 6, base + 8]
        assert pool.in_use == 3
    finally:
        for sock in busy:
            sock.close()


def test_pair_with_a_busy_rtcp_port_is_skipped(base):
    rtcp = occupy(base + 1)  # RTCP goes to the RTP port + 1 (RFC 3550 s.11)
    try:
        pool = PortPool(base, base + 3, HOST)
        lease = pool.acquire()
        assert lease.port == base + 2
        assert lease.rtcp_sock.getsockname()[1] == base + 3
        lease.close()
    finally:
        rtcp.close()


def test_exhaustion_raises_and_recovers(base):
    pool = PortPool(base, base + 1, HOST)
    lease = pool.acquire()
    with pytest.raises(
        PortPoolExhausted, match=rf"no free RTP port in {base}-{base + 1}: 1 leased"
    ):
        pool.acquire()
    with pytest.raises(PortPoolExhausted):  # still no crash on a second try
        pool.acquire()
    lease.close()
    pool.release(lease.port)
    again = pool.acquire()
    again.close()
    assert again.port == base


def test_exhaustion_counts_host_busy_ports(base):
    busy = occupy(base)
    try:
        pool = PortPool(base, base + 1, HOST)
        with pytest.raises(PortPoolExhausted, match="0 leased, 1 busy on the host"):
            pool.acquire()
        assert pool.in_use == 0 and pool.available == 1
    finally:
        busy.close()


def test_release_returns_every_port_and_a_just_released_port_waits(base):
    pool = PortPool(base, base + 7, HOST)  # 4 RTP ports
    first = pool.acquire()
    first.close()
    pool.release(first.port)
    second = pool.acquire()  # a just-released port is reused last
    assert second.port != first.port
    leases = [second, *drain(pool)]
    close_all(leases)
    assert sorted(lease.port for lease in leases) == [base, base + 2, base + 4, base + 6]
    for lease in leases:
        pool.release(lease.port)
    assert pool.in_use == 0 and pool.available == 4
    leases = drain(pool)
    close_all(leases)
    assert len(leases) == 4


def test_release_is_idempotent_and_tolerates_foreign_ports(base):
    pool = PortPool(base, base + 3, HOST)
    lease = pool.acquire()
    lease.close()
    pool.release(lease.port)
    pool.release(lease.port)
    pool.release(base + 1)  # an RTCP port: never leased, ignored
    pool.release(1)  # not in the range: logged, ignored
    assert pool.in_use == 0 and pool.available == 2


def test_released_port_can_be_bound_again_after_close(base):
    pool = PortPool(base, base + 1, HOST)
    lease = pool.acquire()
    lease.close()
    pool.release(lease.port)
    lease = pool.acquire()
    lease.close()
    assert lease.port == base


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (10000, 10000, "no even/odd port pair"),
        (10001, 10002, "no even/odd port pair"),
        (10010, 10000, "not a port range"),
        (0, 10, "not a port range"),
        (65534, 65536, "not a port range"),
    ],
)
def test_invalid_ranges(start, end, message):
    with pytest.raises(ValueError, match=message):
        PortPool(start, end, HOST)


def test_bind_errors_other_than_busy_propagate():
    pool = PortPool(40000, 40011, "192.0.2.1")  # TEST-NET-1: not an address of this host
    with pytest.raises(OSError):
        pool.acquire()
    assert pool.in_use == 0


def test_rtp_bleed_ports_are_random_not_in_order():
    """Security: the next call's port cannot be guessed from this one's (RTP bleed)."""
    base = free_range(64)

    def ports(seed: int) -> list[int]:
        pool = PortPool(base, base + 63, HOST, rng=random.Random(seed))  # 32 RTP ports
        leases = [pool.acquire() for _ in range(8)]
        close_all(leases)
        return [lease.port for lease in leases]

    first, again, other = ports(1), ports(1), ports(2)
    assert first == again  # reproducible with a seeded rng
    assert first != other
    steps = {b - a for a, b in zip(first, first[1:], strict=False)}
    assert steps != {2}  # not handed out in order
    assert len(set(first)) == 8


def test_rtp_bleed_a_released_port_is_not_handed_out_again_at_once():
    base = free_range(16)
    pool = PortPool(base, base + 15, HOST, rng=random.Random(3))  # 8 ports, 4 cooling
    seen = []
    for _ in range(40):
        lease = pool.acquire()
        lease.close()
        seen.append(lease.port)
        pool.release(lease.port)
    for i in range(4, len(seen)):
        assert seen[i] not in seen[i - 4 : i]  # the last 4 released wait while others are free
    assert len(set(seen)) == 8
