"""SRTP and SRTCP (RFC 3711) per call, over libsrtp (the ``pylibsrtp`` binding).

One :class:`SrtpContext` per call protects what we send with our master key
and salt and checks and decrypts what the peer sends with theirs (SDES,
RFC 4568, exchanges them in the SDP; see :mod:`pipecat_sip.sdes`). Every
call is ``bytes in, bytes or None out``: a packet that fails authentication,
is a replay, is malformed or of a size we do not accept is counted in
:attr:`SrtpContext.stats` and dropped (None); nothing is raised out of the
four packet methods.

Crypto suites (RFC 4568 s.6.2): ``AES_CM_128_HMAC_SHA1_80`` and
``AES_CM_128_HMAC_SHA1_32``, both AES-128 counter mode with a 16-byte master
key and a 14-byte master salt (30 bytes, key first). The suite names the
SRTP authentication tag: 10 bytes (80 bits) or 4 bytes (32 bits); SRTCP
always carries a 10-byte tag (RFC 4568 s.6.2.1 and s.6.2.2).

Packet layout (RFC 3711 s.3.1 and s.3.4)::

    SRTP:  RTP header | encrypted payload | [MKI] | auth tag
    SRTCP: RTCP header (first 8 bytes) | encrypted rest | E + SRTCP index (4) | [MKI] | auth tag

The MKI (master key identifier) is not authenticated. libsrtp is set up
without MKI; when the peer's SDES key carries one, this module checks and
strips it before libsrtp sees the packet (one master key per direction, as
:mod:`pipecat_sip.sdes` accepts).

Bounded work: every packet is size-checked (and an RTP header's CSRC and
extension lengths read) before libsrtp touches it, so one datagram costs at
most one HMAC over at most :data:`MAX_PACKET_SIZE` bytes. The number of
inbound SSRCs libsrtp keeps a stream (replay window, rollover counter) for is
capped (``max_streams``): the oldest is dropped when a new authenticated SSRC
comes. Only authenticated packets create streams.

Keys: the master keys go into libsrtp when the context is built and are not
kept by this object; ``repr()`` and ``str()`` show the suite and counters,
never key material, and no error text carries a key.

Example::

    ctx = SrtpContext("AES_CM_128_HMAC_SHA1_80", local_key=ours, remote_key=theirs)
    wire = ctx.protect_rtp(rtp_bytes)          # send wire, unless None
    rtp_bytes = ctx.unprotect_rtp(datagram)    # None: dropped, counted in ctx.stats
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

import pylibsrtp

__all__ = [
    "MAX_PACKET_SIZE",
    "SUITES",
    "SrtpContext",
    "SrtpStats",
    "SrtpSuite",
]


@dataclass(frozen=True, slots=True)
class SrtpSuite:
    """What one SDES crypto suite means to SRTP (RFC 4568 s.6.2).

    Attributes:
        name: The crypto-suite name of ``a=crypto``.
        profile: The libsrtp profile.
        key_length: Master key, bytes.
        salt_length: Master salt, bytes.
        rtp_tag_length: SRTP authentication tag, bytes.
        rtcp_tag_length: SRTCP authentication tag, bytes.
    """

    name: str
    profile: int
    key_length: int
    salt_length: int
    rtp_tag_length: int
    rtcp_tag_length: int

    @property
    def key_salt_length(self) -> int:
        """Master key plus master salt, bytes (the ``inline:`` value decoded)."""
        return self.key_length + self.salt_length


SUITES: dict[str, SrtpSuite] = {
    "AES_CM_128_HMAC_SHA1_80": SrtpSuite(
        "AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10, 10
    ),
    "AES_CM_128_HMAC_SHA1_32": SrtpSuite(
        "AES_CM_128_HMAC_SHA1_32", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4, 10
    ),
}
"""The suites we support, by their SDES name, in our order of preference."""

MAX_PACKET_SIZE = 1500
"""Largest datagram unprotected (libsrtp's buffer in pylibsrtp), bytes."""

_MAX_PLAIN_SIZE = MAX_PACKET_SIZE - pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN
"""Largest RTP/RTCP packet protected: room is left for libsrtp's worst-case trailer."""

_RTP_HEADER = 12
_RTCP_HEADER = 8
_SRTCP_INDEX = 4  # E flag + 31-bit SRTCP index
_DEFAULT_WINDOW = 128  # replay window, packets (RFC 3711 s.3.3.2 asks for at least 64)
_MAX_WINDOW = 0x7FFF  # libsrtp's largest replay window

# libsrtp status texts (pylibsrtp.ERRORS) that say what happened to a packet.
_AUTH_FAILURES = frozenset({"authentication failure"})
_REPLAYS = frozenset({"replay check failed (bad index)", "replay check failed (index too old)"})


@dataclass(slots=True)
class SrtpStats:
    """Counters of one :class:`SrtpContext`.

    Attributes:
        rtp_protected: RTP packets protected (sent).
        rtcp_protected: RTCP packets protected (sent).
        rtp_unprotected: SRTP packets authenticated and decrypted (received).
        rtcp_unprotected: SRTCP packets authenticated and decrypted (received).
        auth_failures: Received packets whose authentication tag did not verify
            (tampered, wrong key, or not SRTP at all).
        replays: Received packets already seen or older than the replay window
            (RFC 3711 s.3.3.2).
        other: Every other drop: a size or header we do not accept, a wrong
            MKI, an expired key lifetime, any other libsrtp failure, on either
            direction.
    """

    rtp_protected: int = 0
    rtcp_protected: int = 0
    rtp_unprotected: int = 0
    rtcp_unprotected: int = 0
    auth_failures: int = 0
    replays: int = 0
    other: int = 0


class SrtpContext:
    """The SRTP/SRTCP state of one call: our outbound key and the peer's inbound key.

    Args:
        suite: Crypto-suite name, a key of :data:`SUITES`.
        local_key: Our master key || master salt (30 bytes for the AES_CM_128
            suites): protects what we send.
        remote_key: The peer's master key || master salt: checks what we receive.
        remote_mki: The peer's MKI as (value, length in bytes 1-128), when its
            SDES key has one: expected (and stripped) in front of the tag of
            every packet it sends (RFC 3711 s.3.1).
        remote_lifetime: Packets the peer's key may protect (the SDES lifetime),
            counted separately for SRTP and SRTCP (RFC 4568 s.6.1); past it
            received packets are dropped (``other``) until
            :meth:`update_remote_key`. None: libsrtp's limit.
        window_size: Replay window for received packets, 64 to 32767 packets
            (RFC 3711 s.3.3.2; an SDES ``WSH`` hint may ask for more than 128).
        max_streams: Most inbound SSRCs kept at once (each has its own
            replay window and rollover counter); the oldest is forgotten past it.

    Raises:
        TypeError: A key is not bytes.
        ValueError: Unknown suite, a key of the wrong length, the same key both
            ways (RFC 3711 s.9.1: a key must not protect two streams' packets),
            an MKI or lifetime out of range, or a bad window or stream cap. The
            text never contains key material.
    """

    __slots__ = (
        "suite",
        "stats",
        "_tx",
        "_rx",
        "_rtp_tag",
        "_rtcp_tag",
        "_mki",
        "_mki_length",
        "_window",
        "_lifetime",
        "_rtp_count",
        "_rtcp_count",
        "_streams",
        "_max_streams",
        "_last_ssrc",
        "_local_digest",
    )

    def __init__(
        self,
        suite: str,
        *,
        local_key: bytes,
        remote_key: bytes,
        remote_mki: tuple[int, int] | None = None,
        remote_lifetime: int | None = None,
        window_size: int = _DEFAULT_WINDOW,
        max_streams: int = 8,
    ):
        info = SUITES.get(suite)
        if info is None:
            raise ValueError(f"unsupported SRTP crypto suite {suite!r}")
        if not 64 <= window_size <= _MAX_WINDOW:
            raise ValueError(f"SRTP replay window must be 64-{_MAX_WINDOW}, got {window_size}")
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {max_streams}")
        _check_key(info, local_key, "local")
        _check_key(info, remote_key, "remote")
        # A digest of our key, to refuse it as the peer's later: never shown.
        self._local_digest = hashlib.sha256(bytes(local_key)).digest()
        self.suite: SrtpSuite = info
        """The crypto suite."""
        self.stats = SrtpStats()
        """Counters; see :class:`SrtpStats`."""
        self._rtp_tag = info.rtp_tag_length
        self._rtcp_tag = info.rtcp_tag_length
        self._window = window_size
        self._max_streams = max_streams
        self._streams: OrderedDict[int, None] = OrderedDict()
        self._tx = _session(info, local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, window_size)
        self._set_remote(remote_key, remote_mki, remote_lifetime)

    @classmethod
    def from_sdes(cls, keys, **kwargs) -> SrtpContext:
        """Build the context from the outcome of SDES (a :class:`pipecat_sip.sdes.SdesKeys`).

        The peer's ``WSH`` widens the replay window (never below 128).

        Args:
            keys: An object with ``suite``, ``local_key``, ``remote_key``,
                ``remote_mki``, ``remote_lifetime`` and ``remote_window``.
            **kwargs: More constructor arguments (``max_streams``).

        Raises:
            ValueError: As for the constructor.
        """
        window = max(_DEFAULT_WINDOW, min(keys.remote_window or 0, _MAX_WINDOW))
        return cls(
            keys.suite,
            local_key=keys.local_key,
            remote_key=keys.remote_key,
            remote_mki=keys.remote_mki,
            remote_lifetime=keys.remote_lifetime,
            window_size=kwargs.pop("window_size", window),
            **kwargs,
        )

    def update_remote_key(
        self,
        remote_key: bytes,
        *,
        remote_mki: tuple[int, int] | None = None,
        remote_lifetime: int | None = None,
    ) -> None:
        """Take the peer's new master key (a re-offer re-keyed, RFC 4568 s.7.1.4).

        Our outbound state (key, rollover counter, SRTCP index) is kept, so
        nothing we already sent is ever encrypted again with the same index.
        The inbound replay windows start afresh.

        Raises:
            TypeError: The key is not bytes.
            ValueError: A key of the wrong length, the local key again, or an
                MKI or lifetime out of range.
        """
        _check_key(self.suite, remote_key, "remote")
        self._set_remote(remote_key, remote_mki, remote_lifetime)

    def _set_remote(
        self, remote_key: bytes, mki: tuple[int, int] | None, lifetime: int | None
    ) -> None:
        if hmac.compare_digest(hashlib.sha256(bytes(remote_key)).digest(), self._local_digest):
            raise ValueError("the local and remote SRTP master keys are the same")
        if mki is not None:
            value, length = mki
            if not 1 <= length <= 128 or not 0 <= value < 1 << (8 * length):
                raise ValueError(
                    f"an MKI needs a length of 1-128 bytes that holds its value, got {length}"
                )
        if lifetime is not None and lifetime < 1:
            raise ValueError(f"SRTP key lifetime must be at least 1 packet, got {lifetime}")
        rx = _session(self.suite, remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, self._window)
        self._rx = rx
        self._mki = b"" if mki is None else mki[0].to_bytes(mki[1], "big")
        self._mki_length = len(self._mki)
        self._lifetime = lifetime
        self._rtp_count = 0
        self._rtcp_count = 0
        self._streams.clear()
        self._last_ssrc = -1

    # --- sending --------------------------------------------------------------------------

    def protect_rtp(self, packet: bytes) -> bytes | None:
        """Encrypt and authenticate one RTP packet (RFC 3711 s.3.3).

        Args:
            packet: A whole RTP packet (header, payload, padding), at most
                1352 bytes.

        Returns:
            The SRTP packet (the input plus the tag), or None when it cannot be
            protected (too short or long, a malformed header, a key past its
            lifetime): counted in ``stats.other``.
        """
        size = len(packet)
        if size < _RTP_HEADER or size > _MAX_PLAIN_SIZE or _rtp_header_length(packet) > size:
            self.stats.other += 1
            return None
        try:
            out = self._tx.protect(bytes(packet))
        except (pylibsrtp.Error, ValueError, TypeError):
            self.stats.other += 1
            return None
        self.stats.rtp_protected += 1
        return out

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """Encrypt and authenticate one (compound) RTCP packet (RFC 3711 s.3.4).

        Args:
            packet: A whole RTCP compound packet, at most 1352 bytes.

        Returns:
            The SRTCP packet (the input plus E flag and index, and the tag), or
            None: counted in ``stats.other``.
        """
        size = len(packet)
        if size < _RTCP_HEADER or size > _MAX_PLAIN_SIZE or packet[0] >> 6 != 2:
            self.stats.other += 1
            return None
        try:
            out = self._tx.protect_rtcp(bytes(packet))
        except (pylibsrtp.Error, ValueError, TypeError):
            self.stats.other += 1
            return None
        self.stats.rtcp_protected += 1
        return out

    # --- receiving ------------------------------------------------------------------------

    def unprotect_rtp(self, packet: bytes) -> bytes | None:
        """Authenticate, replay-check and decrypt one SRTP packet (RFC 3711 s.3.3).

        Args:
            packet: One datagram.

        Returns:
            The RTP packet, or None when it is dropped: counted in
            ``stats.auth_failures``, ``stats.replays`` or ``stats.other``.
        """
        stats = self.stats
        size = len(packet)
        tag = self._rtp_tag
        mki = self._mki_length
        if (
            size > MAX_PACKET_SIZE
            or size < _RTP_HEADER + mki + tag
            or _rtp_header_length(packet) > size - mki - tag
        ):
            stats.other += 1
            return None
        if mki:
            packet = self._strip_mki(packet, size, tag)
            if packet is None:
                return None
        lifetime = self._lifetime
        if lifetime is not None and self._rtp_count >= lifetime:
            stats.other += 1
            return None
        try:
            out = self._rx.unprotect(bytes(packet))
        except pylibsrtp.Error as exc:
            self._count_failure(str(exc))
            return None
        except (ValueError, TypeError):
            stats.other += 1
            return None
        self._rtp_count += 1
        stats.rtp_unprotected += 1
        self._saw_ssrc(int.from_bytes(packet[8:12], "big"))
        return out

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """Authenticate, replay-check and decrypt one SRTCP packet (RFC 3711 s.3.4).

        Args:
            packet: One datagram.

        Returns:
            The (compound) RTCP packet, or None when it is dropped: counted in
            ``stats.auth_failures``, ``stats.replays`` or ``stats.other``.
        """
        stats = self.stats
        size = len(packet)
        tag = self._rtcp_tag
        mki = self._mki_length
        if (
            size > MAX_PACKET_SIZE
            or size < _RTCP_HEADER + _SRTCP_INDEX + mki + tag
            or packet[0] >> 6 != 2
        ):
            stats.other += 1
            return None
        if mki:
            packet = self._strip_mki(packet, size, tag)
            if packet is None:
                return None
        lifetime = self._lifetime
        if lifetime is not None and self._rtcp_count >= lifetime:
            stats.other += 1
            return None
        try:
            out = self._rx.unprotect_rtcp(bytes(packet))
        except pylibsrtp.Error as exc:
            self._count_failure(str(exc))
            return None
        except (ValueError, TypeError):
            stats.other += 1
            return None
        self._rtcp_count += 1
        stats.rtcp_unprotected += 1
        self._saw_ssrc(int.from_bytes(packet[4:8], "big"))
        return out

    def _strip_mki(self, packet: bytes, size: int, tag: int) -> bytes | None:
        """Check the MKI in front of the tag and return the packet without it."""
        start = size - tag - self._mki_length
        if packet[start : size - tag] != self._mki:
            self.stats.other += 1
            return None
        return packet[:start] + packet[size - tag :]

    def _count_failure(self, text: str) -> None:
        if text in _AUTH_FAILURES:
            self.stats.auth_failures += 1
        elif text in _REPLAYS:
            self.stats.replays += 1
        else:
            self.stats.other += 1

    def _saw_ssrc(self, ssrc: int) -> None:
        """Keep libsrtp's inbound streams (one per authenticated SSRC) within the cap."""
        if ssrc == self._last_ssrc:
            return
        self._last_ssrc = ssrc
        streams = self._streams
        if ssrc in streams:
            streams.move_to_end(ssrc)
            return
        streams[ssrc] = None
        while len(streams) > self._max_streams:
            oldest, _ = streams.popitem(last=False)
            try:
                self._rx.remove_stream(oldest)
            except pylibsrtp.Error:
                pass

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<SrtpContext {self.suite.name} sent {s.rtp_protected}/{s.rtcp_protected} "
            f"received {s.rtp_unprotected}/{s.rtcp_unprotected} "
            f"dropped auth={s.auth_failures} replay={s.replays} other={s.other}>"
        )

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("SrtpContext cannot be pickled or copied (it holds live key state)")


def _check_key(info: SrtpSuite, key: bytes, which: str) -> None:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"the {which} SRTP master key must be bytes")
    if len(key) != info.key_salt_length:
        raise ValueError(
            f"{info.name} needs a {info.key_salt_length}-byte {which} master key and salt, "
            f"got {len(key)} bytes"
        )


def _session(info: SrtpSuite, key: bytes, ssrc_type: int, window: int) -> pylibsrtp.Session:
    """A libsrtp session with one template stream for any SSRC in one direction.

    The policy (which holds the key) is dropped once libsrtp has derived the
    session keys from it.
    """
    policy = pylibsrtp.Policy(key=bytes(key), ssrc_type=ssrc_type, srtp_profile=info.profile)
    policy.window_size = window
    try:
        return pylibsrtp.Session(policy)
    except pylibsrtp.Error as exc:  # the text is libsrtp's status, never the key
        raise ValueError(f"libsrtp refused the {info.name} policy: {exc}") from None
    finally:
        policy.key = None


def _rtp_header_length(packet: bytes) -> int:
    """Bytes of the RTP header with CSRCs and extension (RFC 3550 s.5.1, 5.3.1); 0 if not v2."""
    first = packet[0]
    if first >> 6 != 2:
        return 1 << 16  # never fits: rejected by the caller's size check
    length = _RTP_HEADER + 4 * (first & 0x0F)
    if first & 0x10:
        if len(packet) < length + 4:
            return 1 << 16
        length += 4 + 4 * int.from_bytes(packet[length + 2 : length + 4], "big")
    return length
