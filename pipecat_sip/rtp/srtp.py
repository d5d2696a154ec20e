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
most one HMAC over at most :data:`MAX_PACKET_SIZE` bytes. libsrtp keeps a
stream (replay window, rollover counter) per SSRC; only authenticated packets
create one, and their number is capped (``max_streams``): the oldest inbound
stream is forgotten when a new authenticated SSRC comes, and a new outbound
SSRC past the cap is refused (an outbound stream is never forgotten, so no
index is ever encrypted twice).

Calling libsrtp: through pylibsrtp's cffi binding with a buffer of our own
when an import-time self-test against libsrtp's reference packets passes
(about half the per-packet overhead of ``pylibsrtp.Session``'s methods),
through those public methods otherwise. One context is used from one thread
(the event loop's).

Keys: the master keys go into libsrtp when the context is built and are not
kept by this object (only a SHA-256 digest of ours, to refuse it as the
peer's key); ``repr()`` and ``str()`` show the suite and counters, never key
material, and no error text carries a key.

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
_BUFFER_SIZE = MAX_PACKET_SIZE + pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN

# libsrtp's srtp_err_status_t values, by pylibsrtp's texts for them.
_STATUS = {text: code for code, text in enumerate(pylibsrtp.ERRORS)}
_AUTH_FAIL = _STATUS.get("authentication failure", 7)
_REPLAY_FAIL = _STATUS.get("replay check failed (bad index)", 9)
_REPLAY_OLD = _STATUS.get("replay check failed (index too old)", 10)
_FAILED = -1  # not a libsrtp status: the binding refused the call

# libsrtp's validation packets (test/srtp_driver.c, srtp_validate), under the
# RFC 3711 B.3 master key and salt: the fast path is checked against them.
_CHECK_KEY = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
_CHECK_RTP = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
_CHECK_SRTP = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
)
_CHECK_RTCP = bytes.fromhex("81c8000bcafebabe" + "ab" * 16)
_CHECK_SRTCP = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798"
)


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
            Also the most SSRCs we may send with: packets of one more are
            refused (``other``); an outbound stream is never forgotten.

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
        "_min_srtp",
        "_min_srtcp",
        "_tx_streams",
        "_last_tx_ssrc",
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
        self._tx_streams: OrderedDict[int, None] = OrderedDict()
        self._last_tx_ssrc = b""
        self._tx = _Engine(
            _session(info, local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, window_size)
        )
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
        self._rx = _Engine(
            _session(self.suite, remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, self._window)
        )
        self._mki = b"" if mki is None else mki[0].to_bytes(mki[1], "big")
        mki_length = len(self._mki)
        self._mki_length = mki_length
        self._min_srtp = _RTP_HEADER + mki_length + self._rtp_tag
        self._min_srtcp = _RTCP_HEADER + _SRTCP_INDEX + mki_length + self._rtcp_tag
        self._lifetime = lifetime
        self._rtp_count = 0
        self._rtcp_count = 0
        self._streams.clear()
        self._last_ssrc = b""

    # --- sending --------------------------------------------------------------------------

    def protect_rtp(self, packet: bytes) -> bytes | None:
        """Encrypt and authenticate one RTP packet (RFC 3711 s.3.3).

        Args:
            packet: A whole RTP packet (header, payload, padding), at most
                1352 bytes.

        Returns:
            The SRTP packet (the input plus the tag), or None when it cannot be
            protected (too short or long, a malformed header, a sequence
            number already protected, a key past its lifetime): counted in
            ``stats.other``.
        """
        size = len(packet)
        if (
            size < _RTP_HEADER
            or size > _MAX_PLAIN_SIZE
            or ((packet[0] & 0xDF) != 0x80 and _rtp_header_length(packet) > size)
        ):
            self.stats.other += 1
            return None
        ssrc = packet[8:12]
        if ssrc != self._last_tx_ssrc and not self._new_tx_ssrc(ssrc):
            self.stats.other += 1
            return None
        out = self._tx.protect(packet if type(packet) is bytes else bytes(packet))
        if type(out) is int:
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
        ssrc = packet[4:8]
        if ssrc != self._last_tx_ssrc and not self._new_tx_ssrc(ssrc):
            self.stats.other += 1
            return None
        out = self._tx.protect_rtcp(packet if type(packet) is bytes else bytes(packet))
        if type(out) is int:
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
        size = len(packet)
        if (
            size < self._min_srtp
            or size > MAX_PACKET_SIZE
            or (
                (packet[0] & 0xDF) != 0x80
                and _rtp_header_length(packet) > size - self._min_srtp + _RTP_HEADER
            )
        ):
            self.stats.other += 1
            return None
        if type(packet) is not bytes:
            packet = bytes(packet)
        if self._mki_length:
            packet = self._strip_mki(packet, size, self._rtp_tag)
            if packet is None:
                return None
        if self._lifetime is not None:
            if self._rtp_count >= self._lifetime:
                self.stats.other += 1
                return None
        out = self._rx.unprotect(packet)
        if type(out) is int:
            self._count_failure(out)
            return None
        self._rtp_count += 1  # authenticated packets only: forgeries cannot use the key up
        self.stats.rtp_unprotected += 1
        ssrc = packet[8:12]
        if ssrc != self._last_ssrc:
            self._saw_ssrc(ssrc)
        return out

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """Authenticate, replay-check and decrypt one SRTCP packet (RFC 3711 s.3.4).

        Args:
            packet: One datagram.

        Returns:
            The (compound) RTCP packet, or None when it is dropped: counted in
            ``stats.auth_failures``, ``stats.replays`` or ``stats.other``.
        """
        size = len(packet)
        if size < self._min_srtcp or size > MAX_PACKET_SIZE or packet[0] >> 6 != 2:
            self.stats.other += 1
            return None
        if type(packet) is not bytes:
            packet = bytes(packet)
        if self._mki_length:
            packet = self._strip_mki(packet, size, self._rtcp_tag)
            if packet is None:
                return None
        if self._lifetime is not None:
            if self._rtcp_count >= self._lifetime:
                self.stats.other += 1
                return None
        out = self._rx.unprotect_rtcp(packet)
        if type(out) is int:
            self._count_failure(out)
            return None
        self._rtcp_count += 1  # authenticated packets only: forgeries cannot use the key up
        self.stats.rtcp_unprotected += 1
        ssrc = packet[4:8]
        if ssrc != self._last_ssrc:
            self._saw_ssrc(ssrc)
        return out

    def _strip_mki(self, packet: bytes, size: int, tag: int) -> bytes | None:
        """Check the MKI in front of the tag and return the packet without it."""
        start = size - tag - self._mki_length
        if packet[start : size - tag] != self._mki:
            self.stats.other += 1
            return None
        return packet[:start] + packet[size - tag :]

    def _count_failure(self, status: int) -> None:
        if status == _AUTH_FAIL:
            self.stats.auth_failures += 1
        elif status == _REPLAY_FAIL or status == _REPLAY_OLD:
            self.stats.replays += 1
        else:
            self.stats.other += 1

    def _saw_ssrc(self, ssrc_bytes: bytes) -> None:
        """Keep libsrtp's inbound streams (one per authenticated SSRC) within the cap."""
        self._last_ssrc = ssrc_bytes
        _track(self._streams, int.from_bytes(ssrc_bytes, "big"), self._max_streams, self._rx)

    def _new_tx_ssrc(self, ssrc_bytes: bytes) -> bool:
        """Admit one of our SSRCs; False past the cap.

        Outbound streams are never forgotten: libsrtp would start a forgotten
        SSRC's rollover counter afresh and could encrypt two packets under the
        same index (RFC 3711 s.9.1). The media path sends one SSRC per call.
        """
        ssrc = int.from_bytes(ssrc_bytes, "big")
        if ssrc not in self._tx_streams:
            if len(self._tx_streams) >= self._max_streams:
                return False
            self._tx_streams[ssrc] = None
        self._last_tx_ssrc = ssrc_bytes
        return True

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


def _track(streams: OrderedDict[int, None], ssrc: int, cap: int, engine: _Engine) -> None:
    """Note a stream's SSRC (newest last); forget the oldest streams past ``cap``.

    A forgotten stream loses its rollover counter and replay window in libsrtp
    (used for inbound streams only).
    """
    if ssrc in streams:
        streams.move_to_end(ssrc)
        return
    streams[ssrc] = None
    while len(streams) > cap:
        oldest, _ = streams.popitem(last=False)
        try:
            engine.remove_stream(oldest)
        except pylibsrtp.Error:
            pass


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


class _Engine:
    """One libsrtp session (one direction, any SSRC) and its four packet operations.

    Each operation takes a packet that passed the caller's size checks (so it
    fits libsrtp's buffer with any trailer) and returns the result as bytes,
    or libsrtp's ``srtp_err_status_t`` as an int (``_FAILED`` when the binding
    refused the call). With :data:`_DIRECT` the operations call libsrtp
    through pylibsrtp's cffi binding with a buffer of their own (about half
    the Python overhead of ``pylibsrtp.Session``'s methods); otherwise they
    call those methods. Not thread-safe (one buffer per session), as nothing
    in the media path is.
    """

    __slots__ = ("session", "protect", "unprotect", "protect_rtcp", "unprotect_rtcp")

    def __init__(self, session: pylibsrtp.Session, direct: bool | None = None):
        self.session = session  # keeps libsrtp's srtp_t alive
        direct = _DIRECT if direct is None else direct
        make = _direct_op if direct else _public_op
        self.protect = make(session, "protect")
        self.unprotect = make(session, "unprotect")
        self.protect_rtcp = make(session, "protect_rtcp")
        self.unprotect_rtcp = make(session, "unprotect_rtcp")

    def remove_stream(self, ssrc: int) -> None:
        """Forget the stream of ``ssrc`` (its replay window and rollover counter)."""
        self.session.remove_stream(ssrc)


def _public_op(session: pylibsrtp.Session, name: str):
    method = getattr(session, name)
    status = _STATUS.get

    def op(packet: bytes):
        try:
            return method(packet)
        except pylibsrtp.Error as exc:
            return status(str(exc), _FAILED)
        except (ValueError, TypeError):
            return _FAILED

    return op


_LIB_FUNCTIONS = {
    "protect": "srtp_protect",
    "unprotect": "srtp_unprotect",
    "protect_rtcp": "srtp_protect_rtcp",
    "unprotect_rtcp": "srtp_unprotect_rtcp",
}


def _direct_op(session: pylibsrtp.Session, name: str):
    ffi = pylibsrtp.ffi
    func = getattr(pylibsrtp.lib, _LIB_FUNCTIONS[name])
    ctx = session._srtp[0]
    buffer = ffi.new("unsigned char[]", _BUFFER_SIZE)
    view = ffi.buffer(buffer)
    length = ffi.new("int *")

    def op(packet: bytes):
        size = len(packet)
        view[0:size] = packet
        length[0] = size
        status = func(ctx, buffer, length)
        if status:
            return status
        return view[0 : length[0]]

    return op  # it holds buffer and length; the _Engine holds the session behind ctx


def _direct_works() -> bool:
    """Whether the cffi fast path gives libsrtp's reference packets (else: public methods)."""
    try:
        suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
        tx = _Engine(_session(suite, _CHECK_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 128), True)
        rx = _Engine(_session(suite, _CHECK_KEY, pylibsrtp.Policy.SSRC_ANY_INBOUND, 128), True)
        return (
            tx.protect(_CHECK_RTP) == _CHECK_SRTP
            and rx.unprotect(_CHECK_SRTP) == _CHECK_RTP
            and rx.unprotect(_CHECK_SRTP) == _REPLAY_FAIL
            and tx.protect_rtcp(_CHECK_RTCP) == _CHECK_SRTCP
            and rx.unprotect_rtcp(_CHECK_SRTCP) == _CHECK_RTCP
        )
    except Exception:
        return False


def _rtp_header_length(packet: bytes) -> int:
    """Bytes of the RTP header with CSRCs and extension (RFC 3550 s.5.1, 5.3.1).

    A version other than 2, or an extension header cut off, gives a length
    that fits no packet.
    """
    first = packet[0]
    if first >> 6 != 2:
        return 1 << 16
    length = _RTP_HEADER + 4 * (first & 0x0F)
    if first & 0x10:
        if len(packet) < length + 4:
            return 1 << 16
        length += 4 + 4 * int.from_bytes(packet[length + 2 : length + 4], "big")
    return length


_DIRECT = _direct_works()
"""True when libsrtp is called through the binding directly (checked at import)."""
