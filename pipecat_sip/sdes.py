"""SDES: SRTP master keys in SDP ``a=crypto`` attributes (RFC 4568), offer and answer.

Pure code, standard library only: no I/O, no clock, no logging; randomness
(the master keys) comes from an injectable ``random.Random``-like object,
``secrets.SystemRandom()`` by default. What went wrong is returned as text
(reasons) or raised as :class:`CryptoParseError` / :class:`NoAcceptableCrypto`.

Wire format (RFC 4568 s.9.1, and s.9.2 for SRTP)::

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params    = key-param *(";" key-param)
    key-param     = "inline:" key-salt ["|" lifetime] ["|" mki]
    key-salt      = base64(master key || master salt)
    lifetime      = ["2^"] 1*DIGIT          ; packets this key may protect
    mki           = mki-value ":" mki-length ; MKI value, its length in bytes (1-128)

e.g. ``a=crypto:1 AES_CM_128_HMAC_SHA1_80
inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP``.

Offer/answer (RFC 4568 s.5 to s.7), as done here:

- Answerer (:func:`answer_crypto`, :func:`negotiate_srtp`): the first offered
  crypto line (in the offer's order, the offerer's preference) that we can
  honour is taken; the answer has one ``a=crypto`` with the same tag and
  crypto-suite and our own fresh key, no lifetime and no MKI. Lines we cannot
  honour are skipped with a reason: a crypto-suite other than
  :data:`SUPPORTED_SUITES`, more than one master key, a lifetime shorter than
  we accept or longer than SRTP allows, ``KDR`` other than 0, the
  ``UNENCRYPTED_SRTP``, ``UNENCRYPTED_SRTCP`` and ``UNAUTHENTICATED_SRTP``
  flags, or an unknown session parameter (unknown ones that start with ``-``
  are optional and ignored). No acceptable line in any secure stream: 488.
  A single MKI is honoured (the receiving context checks and strips it);
  ``FEC_ORDER`` and ``FEC_KEY`` are ignored (we send no FEC); ``WSH`` sets the
  replay window for the peer's packets.
- Offerer (:func:`offer_crypto`, :func:`create_srtp_offer`): ``RTP/SAVP`` with
  one line per supported suite, tags 1 and 2, ``AES_CM_128_HMAC_SHA1_80``
  first, each with its own key. The answer (:func:`accept_answer`) must carry
  exactly one ``a=crypto`` whose tag and suite are one of ours.

A master key never appears in ``repr()`` of these objects nor in an
exception's text. :meth:`CryptoAttribute.serialize` does write it: that is the
``a=crypto`` line for the SDP body.
"""

from __future__ import annotations

import base64
import binascii
import copy
import random
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipecat_sip.sdp import (
    MediaDescription,
    NegotiatedMedia,
    NoCommonCodec,
    SessionDescription,
    apply_answer,
    create_offer,
    negotiate,
)

__all__ = [
    "DEFAULT_MIN_LIFETIME",
    "SAVP_PROTOS",
    "SRTP_MODES",
    "SUPPORTED_SUITES",
    "CryptoAttribute",
    "CryptoParseError",
    "KeyParam",
    "NoAcceptableCrypto",
    "SdesKeys",
    "accept_answer",
    "add_crypto",
    "answer_crypto",
    "apply_srtp_answer",
    "create_srtp_offer",
    "crypto_attributes",
    "generate_key",
    "negotiate_srtp",
    "offer_crypto",
    "unsupported_reason",
]

#: Crypto suites we can use, in our order of preference (RFC 4568 s.6.2), with the
#: length of their master key || master salt in bytes (16 + 14).
SUPPORTED_SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
}

#: Secure RTP profiles of an m= line (RFC 3711 s.12, RFC 5124), and their plain twins.
SAVP_PROTOS: dict[str, str] = {"RTP/SAVP": "RTP/AVP", "RTP/SAVPF": "RTP/AVPF"}

#: Values of the SRTP policy (``SIP_SRTP``): never, when the peer offers it, always.
SRTP_MODES: tuple[str, ...] = ("off", "optional", "required")

#: Shortest key lifetime (packets) accepted without re-keying: 2^20 packets are
#: 5.8 hours of 20 ms packets, longer than a call.
DEFAULT_MIN_LIFETIME = 1 << 20

_MAX_SRTP_LIFETIME = 1 << 48  # RFC 3711 s.9.2: at most 2^48 SRTP packets per master key
_MAX_VALUE_LENGTH = 4096  # characters of one a=crypto value
_MAX_KEY_PARAMS = 16
_MAX_SESSION_PARAMS = 32
_MAX_CRYPTO_LINES = 32  # a=crypto lines read per m= line

_WSP = re.compile(r"[ \t]+")
_TAG = re.compile(r"[0-9]{1,9}")
_SUITE = re.compile(r"[A-Za-z0-9_]+")
_KEY_METHOD = re.compile(r"[A-Za-z0-9_]+")
_KEY_INFO = re.compile(r"[\x21-\x3a\x3c-\x7e]+")  # visible characters except ";"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,20})")
_MKI = re.compile(r"([0-9]{1,310}):([0-9]{1,3})")
_VCHAR = re.compile(r"[\x21-\x7e]+")
_KDR = re.compile(r"[0-9]{1,2}")
_WSH = re.compile(r"[0-9]{2,9}")
_FLAGS = frozenset({"UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"})
_FEC_TYPES = frozenset({"FEC_SRTP", "SRTP_FEC"})


class CryptoParseError(ValueError):
    """An ``a=crypto`` value that does not follow RFC 4568 s.9; the text says where."""


class NoAcceptableCrypto(NoCommonCodec):
    """No secure stream of an offer or answer can be used (RFC 4568 s.7.1.2, s.7.1.3).

    A :class:`~pipecat_sip.sdp.NoCommonCodec`: a UAS answers the INVITE with
    ``488 Not Acceptable Here`` (:attr:`status_code`).
    """


@dataclass(frozen=True, slots=True, repr=False)
class KeyParam:
    """One ``inline:`` key-param of an SRTP crypto line (RFC 4568 s.6.1).

    Attributes:
        key_salt: Master key || master salt (30 bytes for the AES_CM_128 suites).
        lifetime: Packets the key may protect, or None (the suite's default).
        mki: (MKI value, MKI length in bytes 1-128), or None: with an MKI every
            packet protected with this key carries the value in front of its tag.
    """

    key_salt: bytes = field(repr=False)
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.lifetime is not None and self.lifetime < 1:
            raise ValueError(f"key lifetime must be at least 1 packet, got {self.lifetime}")
        if self.mki is not None:
            value, length = self.mki
            if not 1 <= length <= 128:
                raise ValueError(f"MKI length {length} is outside 1-128 bytes")
            if not 0 <= value < 1 << (8 * length):
                raise ValueError(f"MKI value does not fit in {length} bytes")

    @classmethod
    def parse(cls, text: str) -> KeyParam:
        """Parse ``inline:<key-salt>[|lifetime][|mki]`` (RFC 4568 s.9.2).

        Raises:
            CryptoParseError: Not ``inline``, bad base64, a bad lifetime or MKI,
                or fields out of order.
        """
        method, sep, info = text.partition(":")
        if not sep or not _KEY_METHOD.fullmatch(method) or not _KEY_INFO.fullmatch(info):
            raise CryptoParseError("key-param is not <key-method>:<key-info>")
        if method.lower() != "inline":
            raise CryptoParseError(
                f"key method {method!r} is not inline (the only SRTP key method, RFC 4568 s.6.1)"
            )
        parts = info.split("|")
        if len(parts) > 3:
            raise CryptoParseError("inline key has more than key-salt|lifetime|mki")
        key_salt = _decode_key(parts[0])
        lifetime: int | None = None
        mki: tuple[int, int] | None = None
        for part in parts[1:]:
            if ":" in part:
                match = _MKI.fullmatch(part)
                if match is None or mki is not None:
                    raise CryptoParseError("inline key has a malformed MKI (value:length)")
                value, length = int(match.group(1)), int(match.group(2))
                if not 1 <= length <= 128:
                    raise CryptoParseError(f"MKI length {length} is outside 1-128 bytes")
                if value >= 1 << (8 * length):
                    raise CryptoParseError(f"MKI value does not fit in {length} bytes")
                mki = (value, length)
            else:
                match = _LIFETIME.fullmatch(part)
                if match is None or lifetime is not None or mki is not None:
                    raise CryptoParseError(
                        "inline key has a malformed or misplaced lifetime ([2^]digits before MKI)"
                    )
                number = int(match.group(2))
                if match.group(1):
                    if number > 99:
                        raise CryptoParseError(f"key lifetime 2^{number} is out of range")
                    number = 1 << number
                if number < 1:
                    raise CryptoParseError("key lifetime is 0 packets")
                lifetime = number
        return cls(key_salt, lifetime, mki)

    def serialize(self) -> str:
        """Return ``inline:...`` (canonical base64; a power-of-two lifetime as ``2^n``)."""
        out = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            lifetime = self.lifetime
            if lifetime & (lifetime - 1) == 0:
                out += f"|2^{lifetime.bit_length() - 1}"
            else:
                out += f"|{lifetime}"
        if self.mki is not None:
            out += f"|{self.mki[0]}:{self.mki[1]}"
        return out

    def __repr__(self) -> str:
        return (
            f"KeyParam(key_salt=<{len(self.key_salt)} bytes>, lifetime={self.lifetime!r}, "
            f"mki={self.mki!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class CryptoAttribute:
    """One ``a=crypto`` attribute (RFC 4568 s.4, s.9).

    Attributes:
        tag: 0-999999999, identifies the line within its m= line; the answer
            repeats the tag of the line it accepts.
        suite: The crypto-suite as written (compare with :attr:`suite_key`).
        key_params: The master keys, at least one.
        session_params: Session parameters as written (``KDR=0``, ``WSH=128``,
            ``FEC_ORDER=FEC_SRTP``, ``UNENCRYPTED_SRTCP``, ``-EXT=1``...).
    """

    tag: int
    suite: str
    key_params: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:
            raise ValueError(f"crypto tag {self.tag} is outside 0-999999999")
        if not _SUITE.fullmatch(self.suite):
            raise ValueError("crypto-suite must be letters, digits and '_'")
        if not self.key_params:
            raise ValueError("a crypto attribute needs at least one key")
        for param in self.session_params:
            if not _VCHAR.fullmatch(param):
                raise ValueError("a session parameter must be visible characters, no spaces")

    @property
    def suite_key(self) -> str:
        """The crypto-suite in upper case (ABNF literals are case-insensitive)."""
        return self.suite.upper()

    @property
    def key(self) -> KeyParam:
        """The first (usually only) master key."""
        return self.key_params[0]

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an ``a=crypto:`` line (what follows ``crypto:``).

        Fields are separated by spaces or tabs (any run of them); leading and
        trailing whitespace is ignored. Session parameters are kept as written;
        the known ones (RFC 4568 s.6.3) are checked.

        Args:
            value: E.g. ``"1 AES_CM_128_HMAC_SHA1_80 inline:...|2^20|1:4"``.

        Returns:
            The attribute.

        Raises:
            CryptoParseError: Too long, fewer than three fields, a bad tag,
                crypto-suite or key-param, a key of the wrong length for a
                suite we know, MKI lengths that differ between keys (RFC 4568
                s.6.1), or a malformed known session parameter. The text
                never contains key material.
        """
        if len(value) > _MAX_VALUE_LENGTH:
            raise CryptoParseError(f"a=crypto value is longer than {_MAX_VALUE_LENGTH} characters")
        fields = _WSP.split(value.strip(" \t"))
        if len(fields) < 3:
            raise CryptoParseError("a=crypto needs a tag, a crypto-suite and key-params")
        tag_text, suite, key_text, *session = fields
        if not _TAG.fullmatch(tag_text):
            raise CryptoParseError("a=crypto tag is not 1-9 digits")
        if not _SUITE.fullmatch(suite):
            raise CryptoParseError("a=crypto crypto-suite is not letters, digits and '_'")
        pieces = key_text.split(";")
        if len(pieces) > _MAX_KEY_PARAMS:
            raise CryptoParseError(f"a=crypto has more than {_MAX_KEY_PARAMS} keys")
        keys = tuple(KeyParam.parse(piece) for piece in pieces)
        length = SUPPORTED_SUITES.get(suite.upper())
        if length is not None:
            for key in keys:
                if len(key.key_salt) != length:
                    raise CryptoParseError(
                        f"{suite} needs a {length}-byte master key and salt, "
                        f"the inline key has {len(key.key_salt)}"
                    )
        mki_lengths = {key.mki[1] if key.mki else 0 for key in keys}
        if len(mki_lengths) > 1:
            raise CryptoParseError("the keys of one a=crypto line have MKIs of different lengths")
        if len(keys) > 1 and 0 in mki_lengths:
            raise CryptoParseError("an a=crypto line with several keys needs an MKI on each")
        if len(session) > _MAX_SESSION_PARAMS:
            raise CryptoParseError(f"a=crypto has more than {_MAX_SESSION_PARAMS} session params")
        for param in session:
            _check_session_param(param)
        return cls(int(tag_text), suite, keys, tuple(session))

    def serialize(self) -> str:
        """Return the value of the ``a=crypto:`` line (single spaces between fields)."""
        keys = ";".join(key.serialize() for key in self.key_params)
        return " ".join([str(self.tag), self.suite, keys, *self.session_params])

    def session_param(self, name: str) -> str | None:
        """Return the value of session parameter ``NAME=value`` (case-insensitive), or None."""
        prefix = name.upper() + "="
        for param in self.session_params:
            if param.upper().startswith(prefix):
                return param[len(prefix) :]
        return None

    def __repr__(self) -> str:
        params = tuple(
            "FEC_KEY=<key>" if p.upper().startswith("FEC_KEY=") else p for p in self.session_params
        )
        return (
            f"CryptoAttribute(tag={self.tag}, suite={self.suite!r}, "
            f"key_params={self.key_params!r}, session_params={params!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class SdesKeys:
    """The outcome of SDES for one stream: what the SRTP context is built from.

    Attributes:
        tag: The tag of the crypto line in use.
        suite: The crypto-suite (canonical upper case).
        local_key: Our master key || salt: protects what we send.
        remote_key: The peer's master key || salt: checks what we receive.
        remote_mki: The peer's MKI (value, length in bytes), or None.
        remote_lifetime: Packets the peer's key may protect, or None.
        remote_window: The replay window the peer's ``WSH`` asks for, or None.
    """

    tag: int
    suite: str
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)
    remote_mki: tuple[int, int] | None = None
    remote_lifetime: int | None = None
    remote_window: int | None = None

    def __repr__(self) -> str:
        return (
            f"SdesKeys(tag={self.tag}, suite={self.suite!r}, local_key=<{len(self.local_key)} "
            f"bytes>, remote_key=<{len(self.remote_key)} bytes>, remote_mki={self.remote_mki!r}, "
            f"remote_lifetime={self.remote_lifetime!r}, remote_window={self.remote_window!r})"
        )


def _decode_key(text: str) -> bytes:
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise CryptoParseError("inline key-salt is not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise CryptoParseError("inline key-salt is not base64") from None


def _check_session_param(param: str) -> None:
    """Check the known session parameters of RFC 4568 s.6.3 (s.9.2 grammar)."""
    if not _VCHAR.fullmatch(param):
        raise CryptoParseError("a=crypto session parameter has invisible characters")
    name, sep, value = param.partition("=")
    name = name.upper()
    if not sep:
        return  # a flag: UNENCRYPTED_SRTP..., or an extension
    if name == "KDR":
        if not _KDR.fullmatch(value) or int(value) > 24:
            raise CryptoParseError(f"KDR={value} is not 0-24")
    elif name == "WSH":
        if not _WSH.fullmatch(value) or int(value) < 64:
            raise CryptoParseError(f"WSH={value} is not a window of at least 64")
    elif name == "FEC_ORDER":
        if value.upper() not in _FEC_TYPES:
            raise CryptoParseError(f"FEC_ORDER={value} is not FEC_SRTP or SRTP_FEC")
    elif name == "FEC_KEY":
        try:
            for piece in value.split(";"):
                KeyParam.parse(piece)
        except CryptoParseError as exc:
            raise CryptoParseError(f"FEC_KEY: {exc}") from None


def generate_key(suite: str = "AES_CM_128_HMAC_SHA1_80", rng: random.Random | None = None) -> bytes:
    """A fresh random master key || master salt for ``suite`` (RFC 3711 s.8.1).

    Args:
        suite: A key of :data:`SUPPORTED_SUITES`.
        rng: A ``random.Random``-like object (``getrandbits``); default
            ``secrets.SystemRandom()``. Pass a seeded one only in tests.

    Returns:
        30 bytes for the AES_CM_128 suites.

    Raises:
        ValueError: Unsupported suite.
    """
    length = SUPPORTED_SUITES.get(suite.upper())
    if length is None:
        raise ValueError(f"unsupported SRTP crypto suite {suite!r}")
    rng = rng or secrets.SystemRandom()
    return rng.getrandbits(8 * length).to_bytes(length, "big")


def unsupported_reason(
    crypto: CryptoAttribute, *, min_lifetime: int = DEFAULT_MIN_LIFETIME
) -> str | None:
    """Why we cannot honour a crypto line, or None when we can (RFC 4568 s.6, s.7.1.2).

    Args:
        crypto: A parsed line (the peer's, offered or answered).
        min_lifetime: Shortest key lifetime accepted, packets.

    Returns:
        A short reason, or None.
    """
    if crypto.suite_key not in SUPPORTED_SUITES:
        return f"crypto-suite {crypto.suite} is not supported"
    if len(crypto.key_params) != 1:
        return "several master keys (MKI-selected) are not supported"
    lifetime = crypto.key.lifetime
    if lifetime is not None:
        if lifetime > _MAX_SRTP_LIFETIME:
            return "key lifetime exceeds the SRTP maximum of 2^48 packets"
        if lifetime < min_lifetime:
            return f"key lifetime of {lifetime} packets is below the {min_lifetime} we accept"
    for param in crypto.session_params:
        name, sep, value = param.partition("=")
        upper = name.upper()
        if not sep and upper in _FLAGS:
            return f"session parameter {upper} is not supported"
        if sep and upper == "KDR":
            if not value or value.strip("0"):
                return f"key derivation rate KDR={_show(value)} is not supported"
            continue
        if sep and upper in ("WSH", "FEC_ORDER", "FEC_KEY"):
            continue
        if param.startswith("-"):
            continue  # optional extension (RFC 4568 s.6.3): ignored
        return f"unknown session parameter {_show(param)}"
    return None


def _show(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _window_hint(crypto: CryptoAttribute) -> int | None:
    value = crypto.session_param("WSH")
    if value is None or not _WSH.fullmatch(value):
        return None
    return min(max(int(value), 64), 0x7FFF)


def answer_crypto(
    offered: Sequence[CryptoAttribute],
    *,
    rng: random.Random | None = None,
    min_lifetime: int = DEFAULT_MIN_LIFETIME,
    previous: SdesKeys | None = None,
) -> tuple[CryptoAttribute, SdesKeys]:
    """Answer the crypto lines of one offered stream (RFC 4568 s.7.1.2).

    The first line we can honour wins (the offer's order); the answer line has
    its tag and suite, our key, no lifetime, MKI or session params. Our key is
    fresh, or, answering a re-offer (RFC 4568 s.7.1.4), the one in use when
    the suite is the same: then the SRTP context goes on as it is.

    Args:
        offered: The stream's parsed crypto lines, in offer order.
        rng: Randomness for our key (see :func:`generate_key`).
        min_lifetime: Shortest peer key lifetime accepted, packets.
        previous: The keys in use in this dialog, when answering a re-offer.

    Returns:
        (our answer line, the keys for the SRTP context).

    Raises:
        NoAcceptableCrypto: No line can be honoured; the text gives each reason.
    """
    reasons = []
    for crypto in offered:
        reason = unsupported_reason(crypto, min_lifetime=min_lifetime)
        if reason is not None:
            reasons.append(f"tag {crypto.tag}: {reason}")
            continue
        suite = crypto.suite_key
        if (
            previous is not None
            and previous.suite == suite
            and previous.local_key != crypto.key.key_salt
        ):
            ours = previous.local_key
        else:
            ours = generate_key(suite, rng)
            while ours == crypto.key.key_salt:  # never one key both ways (RFC 3711 s.9.1)
                ours = generate_key(suite, rng)
        answer = CryptoAttribute(crypto.tag, crypto.suite, (KeyParam(ours),))
        keys = SdesKeys(
            tag=crypto.tag,
            suite=suite,
            local_key=ours,
            remote_key=crypto.key.key_salt,
            remote_mki=crypto.key.mki,
            remote_lifetime=crypto.key.lifetime,
            remote_window=_window_hint(crypto),
        )
        return answer, keys
    raise NoAcceptableCrypto(
        "no acceptable a=crypto: " + ("; ".join(reasons) or "the stream has none")
    )


def offer_crypto(
    rng: random.Random | None = None, suites: Sequence[str] = tuple(SUPPORTED_SUITES)
) -> list[CryptoAttribute]:
    """Our crypto lines for an offered stream: one per suite, tags 1, 2, ... (RFC 4568 s.7.1.1).

    Each line has its own fresh key, no lifetime, MKI or session params.

    Args:
        rng: Randomness for the keys (see :func:`generate_key`).
        suites: Suites in our order of preference.

    Raises:
        ValueError: An unsupported suite, or none.
    """
    if not suites:
        raise ValueError("offer_crypto needs at least one suite")
    rng = rng or secrets.SystemRandom()
    return [
        CryptoAttribute(tag, suite, (KeyParam(generate_key(suite, rng)),))
        for tag, suite in enumerate(suites, start=1)
    ]


def accept_answer(
    offered: Sequence[CryptoAttribute],
    answered: Sequence[CryptoAttribute],
    *,
    min_lifetime: int = DEFAULT_MIN_LIFETIME,
) -> SdesKeys:
    """Read the crypto line of the answer to our offered stream (RFC 4568 s.7.1.3).

    Args:
        offered: The crypto lines we offered for the stream.
        answered: The parsed crypto lines of the answer's stream.
        min_lifetime: Shortest peer key lifetime accepted, packets.

    Returns:
        The keys for the SRTP context.

    Raises:
        NoAcceptableCrypto: Not exactly one line, a tag we did not offer, a
            different suite, our own key sent back, or a line we cannot honour.
    """
    if len(answered) != 1:
        raise NoAcceptableCrypto(f"the answer has {len(answered)} a=crypto lines, not one")
    answer = answered[0]
    ours = next((c for c in offered if c.tag == answer.tag), None)
    if ours is None:
        raise NoAcceptableCrypto(f"the answer's a=crypto tag {answer.tag} was not offered")
    if ours.suite_key != answer.suite_key:
        raise NoAcceptableCrypto(
            f"the answer's tag {answer.tag} has suite {answer.suite}, we offered {ours.suite}"
        )
    reason = unsupported_reason(answer, min_lifetime=min_lifetime)
    if reason is not None:
        raise NoAcceptableCrypto(f"the answer's a=crypto: {reason}")
    if answer.key.key_salt == ours.key.key_salt:
        raise NoAcceptableCrypto("the answer sent our own master key back")
    return SdesKeys(
        tag=answer.tag,
        suite=answer.suite_key,
        local_key=ours.key.key_salt,
        remote_key=answer.key.key_salt,
        remote_mki=answer.key.mki,
        remote_lifetime=answer.key.lifetime,
        remote_window=_window_hint(answer),
    )


# ------------------------------------------------------------------------- SDP helpers


def crypto_attributes(md: MediaDescription) -> tuple[list[CryptoAttribute], list[str]]:
    """Parse the ``a=crypto`` lines of an m= line (read through ``md.attributes``).

    Malformed lines are skipped (RFC 4568 s.7.1.2: a line the answerer cannot
    parse is one it cannot accept); so are lines past the first 32.

    Returns:
        (parsed lines in order, one reason per skipped line).
    """
    parsed: list[CryptoAttribute] = []
    reasons: list[str] = []
    seen = 0
    for name, value in md.attributes:
        if name.lower() != "crypto":
            continue
        seen += 1
        if seen > _MAX_CRYPTO_LINES:
            reasons.append(f"a=crypto lines past the first {_MAX_CRYPTO_LINES} ignored")
            break
        try:
            parsed.append(CryptoAttribute.parse(value or ""))
        except CryptoParseError as exc:
            reasons.append(f"a=crypto line {seen}: {exc}")
    return parsed, reasons


def add_crypto(md: MediaDescription, crypto: CryptoAttribute) -> None:
    """Append ``a=crypto:<crypto>`` to ``md.attributes``."""
    md.attributes.append(("crypto", crypto.serialize()))


def _is_savp(md: MediaDescription) -> bool:
    return md.proto.upper() in SAVP_PROTOS


def negotiate_srtp(
    offer: SessionDescription,
    mode: str = "optional",
    *,
    rng: random.Random | None = None,
    min_lifetime: int = DEFAULT_MIN_LIFETIME,
    previous: SdesKeys | None = None,
    **negotiate_args,
) -> tuple[SessionDescription, NegotiatedMedia, SdesKeys | None]:
    """Answer an offer under an SRTP policy: :func:`pipecat_sip.sdp.negotiate` plus SDES.

    - ``off``: as :func:`~pipecat_sip.sdp.negotiate` (``RTP/SAVP`` streams are
      rejected; an offer with only those gets 488).
    - ``optional``: the first audio stream that is usable wins, as plain
      ``RTP/AVP`` or as ``RTP/SAVP``/``RTP/SAVPF`` with a crypto line we can
      honour (the offer's order decides).
    - ``required``: only secure streams are considered; plain ones are rejected.

    The answer keeps every m= line's proto; the accepted secure stream gets our
    ``a=crypto`` line.

    Args:
        offer: The parsed offer.
        mode: One of :data:`SRTP_MODES`.
        rng: Randomness for our key (see :func:`generate_key`).
        min_lifetime: Shortest peer key lifetime accepted, packets.
        previous: The keys in use in this dialog when answering a re-offer
            (see :func:`answer_crypto`).
        **negotiate_args: Passed to :func:`~pipecat_sip.sdp.negotiate`
            (``supported``, ``local_address``, ``local_port``, ...).

    Returns:
        (answer, negotiated media, keys for the SRTP context or None for plain RTP).

    Raises:
        ValueError: Unknown mode.
        NoCommonCodec: No usable stream; :class:`NoAcceptableCrypto` when the
            reason is SRTP. Both mean 488.
    """
    if mode not in SRTP_MODES:
        raise ValueError(f"SRTP mode must be one of {', '.join(SRTP_MODES)}, got {mode!r}")
    if mode == "off":
        answer, media = negotiate(offer, **negotiate_args)
        return answer, media, None
    shadow = copy.deepcopy(offer)
    reasons: list[str] = []
    chosen: dict[int, tuple[CryptoAttribute, SdesKeys]] = {}
    for index, md in enumerate(shadow.media):
        if md.media.lower() != "audio" or md.port == 0:
            continue
        where = f"m= line {index + 1}"
        if _is_savp(md):
            offered, skipped = crypto_attributes(md)
            try:
                chosen[index] = answer_crypto(
                    offered, rng=rng, min_lifetime=min_lifetime, previous=previous
                )
            except NoAcceptableCrypto as exc:
                reasons.append(f"{where} ({md.proto}): {'; '.join([*skipped, str(exc)])}")
                md.port = 0
                continue
            md.proto = SAVP_PROTOS[md.proto.upper()]
        elif mode == "required" and md.proto.upper() in ("RTP/AVP", "RTP/AVPF"):
            reasons.append(f"{where} offers plain {md.proto} and SRTP is required")
            md.port = 0
    try:
        answer, media = negotiate(shadow, **negotiate_args)
    except NoCommonCodec as exc:
        text = f"{exc}" + (f"; SRTP: {'; '.join(reasons)}" if reasons else "")
        if chosen or not reasons:
            raise NoCommonCodec(text) from None
        raise NoAcceptableCrypto(text) from None
    keys = None
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        theirs.proto = ours.proto  # RFC 3264 s.6: the answer's proto is the offer's
        if theirs.port != 0 and index in chosen:
            crypto, keys = chosen[index]
            add_crypto(theirs, crypto)
    return answer, media, keys


def create_srtp_offer(
    mode: str = "optional",
    *,
    rng: random.Random | None = None,
    **create_args,
) -> tuple[SessionDescription, list[CryptoAttribute]]:
    """Build an offer under an SRTP policy: :func:`pipecat_sip.sdp.create_offer` plus SDES.

    ``off`` gives the plain offer and no crypto lines; ``optional`` and
    ``required`` give ``RTP/SAVP`` with one crypto line per supported suite
    (with ``optional`` the caller falls back to a plain offer on 488, see the
    module notes).

    Args:
        mode: One of :data:`SRTP_MODES`.
        rng: Randomness for our keys (see :func:`generate_key`).
        **create_args: Passed to :func:`~pipecat_sip.sdp.create_offer`.

    Returns:
        (offer, our crypto lines; keep them for :func:`apply_srtp_answer`).

    Raises:
        ValueError: Unknown mode, or as :func:`~pipecat_sip.sdp.create_offer`.
    """
    if mode not in SRTP_MODES:
        raise ValueError(f"SRTP mode must be one of {', '.join(SRTP_MODES)}, got {mode!r}")
    offer = create_offer(**create_args)
    if mode == "off":
        return offer, []
    cryptos = offer_crypto(rng)
    for md in offer.media:
        md.proto = "RTP/SAVP"
        for crypto in cryptos:
            add_crypto(md, crypto)
    return offer, cryptos


def apply_srtp_answer(
    offer: SessionDescription,
    cryptos: Sequence[CryptoAttribute],
    answer: SessionDescription,
    mode: str = "optional",
    *,
    min_lifetime: int = DEFAULT_MIN_LIFETIME,
) -> tuple[NegotiatedMedia, SdesKeys | None]:
    """Read the answer to an offer from :func:`create_srtp_offer` (RFC 3264 s.7, RFC 4568 s.7.1.3).

    Args:
        offer: The offer we sent.
        cryptos: Our crypto lines from :func:`create_srtp_offer` (empty: plain offer).
        answer: The parsed answer.
        mode: The policy the offer was made under.
        min_lifetime: Shortest peer key lifetime accepted, packets.

    Returns:
        (negotiated media, keys for the SRTP context or None for plain RTP).

    Raises:
        NoCommonCodec: As :func:`~pipecat_sip.sdp.apply_answer`.
        NoAcceptableCrypto: The accepted stream's crypto answer is unusable, or
            (``required``) the answer turned our secure stream into plain RTP.
            The offerer cannot reject an answer: ACK, then BYE.
    """
    media = apply_answer(offer, answer)
    if not cryptos:
        return media, None
    for ours, theirs in zip(offer.media, answer.media, strict=False):
        if ours.media.lower() != "audio" or ours.port == 0 or theirs.port == 0:
            continue
        if not _is_savp(theirs):
            if mode == "required":
                raise NoAcceptableCrypto(f"the answer made our RTP/SAVP stream {theirs.proto}")
            return media, None  # a sloppy peer answered plain RTP; optional takes it
        answered, skipped = crypto_attributes(theirs)
        if skipped and not answered:
            raise NoAcceptableCrypto("the answer's a=crypto: " + "; ".join(skipped))
        return media, accept_answer(cryptos, answered, min_lifetime=min_lifetime)
    raise NoAcceptableCrypto("the answer accepts no audio stream")
