"""Audio codecs for RTP payloads and the codec registry.

A :class:`Codec` turns PCM16 little-endian mono at ``sample_rate`` into RTP
payload bytes and back. Codecs are looked up by their SDP rtpmap encoding
name with :func:`get_codec`; :data:`SUPPORTED_CODECS` lists the names we
offer by default, in order of preference, and :func:`parse_codec_list` reads
a configured list (``SIP_CODECS="G722,PCMU,PCMA"``). New codecs plug in with
:func:`register_codec`.

Built in: G.711 mu-law and A-law (stateless, shared by all calls), G.722
(16 kHz, one state per stream). Opus (RFC 7587) is available when the
``opus`` extra and the system libopus are installed; it is loaded on first
use, and :func:`unavailable_codecs` says why it is not when it is not.

Example:
    >>> codec = get_codec("pcmu")
    >>> codec.encode(bytes(320)) == codec.silence(160)
    True
    >>> parse_codec_list(" g722 , PCMU")
    ('G722', 'PCMU')
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipecat_sip.codecs import g711
from pipecat_sip.codecs.base import Codec, UnknownCodecError
from pipecat_sip.codecs.g722 import G722Codec

__all__ = [
    "G722",
    "PCMA",
    "PCMU",
    "SUPPORTED_CODECS",
    "Codec",
    "G711Codec",
    "G722Codec",
    "UnknownCodecError",
    "available_codecs",
    "get_codec",
    "parse_codec_list",
    "register_codec",
    "unavailable_codecs",
]


class G711Codec(Codec):
    """G.711 (mu-law or A-law) at 8 kHz: one byte per sample, stateless.

    Args:
        encoding_name: ``"PCMU"`` or ``"PCMA"``.
        payload_type: Static payload type (0 for PCMU, 8 for PCMA).
        encode_table: uint8[65536] code per int16 sample (indexed as uint16).
        decode_table: int16[256] linear value per code.
        silence_code: The code byte for linear 0.
    """

    clock_rate = 8000
    sample_rate = 8000

    def __init__(
        self,
        encoding_name: str,
        payload_type: int,
        encode_table: np.ndarray,
        decode_table: np.ndarray,
        silence_code: int,
    ):
        self.encoding_name = encoding_name
        self.payload_type = payload_type
        self._encode_table = encode_table
        self._decode_table = decode_table
        self._silence_code = bytes([silence_code])
        self._silence_cache: dict[int, bytes] = {}

    def encode(self, pcm: bytes) -> bytes:
        """Encode PCM16 little-endian mono at 8 kHz into G.711 codes.

        Raises:
            ValueError: ``pcm`` has an odd number of bytes.
        """
        if len(pcm) & 1:
            raise ValueError(f"PCM16 data has an odd length ({len(pcm)} bytes)")
        return self._encode_table.take(np.frombuffer(pcm, dtype="<u2")).tobytes()

    def decode(self, payload: bytes) -> bytes:
        """Decode G.711 codes into PCM16 little-endian mono at 8 kHz."""
        return self._decode_table.take(np.frombuffer(payload, dtype=np.uint8)).tobytes()

    def silence(self, samples: int) -> bytes:
        """Return ``samples`` bytes of the code for linear 0 (cached per length)."""
        payload = self._silence_cache.get(samples)
        if payload is None:
            payload = self._silence_code * samples
            if len(self._silence_cache) < 16:
                self._silence_cache[samples] = payload
        return payload


PCMU = G711Codec("PCMU", 0, g711.ULAW_ENCODE, g711.ULAW_DECODE, g711.ULAW_SILENCE)
"""G.711 mu-law, RFC 3551 static payload type 0."""
PCMA = G711Codec("PCMA", 8, g711.ALAW_ENCODE, g711.ALAW_DECODE, g711.ALAW_SILENCE)
"""G.711 A-law, RFC 3551 static payload type 8."""

G722 = G722Codec()
"""G.722 at 64 kbit/s, RFC 3551 static payload type 9 (16 kHz audio, 8000 Hz RTP clock)."""

_REGISTRY: dict[str, Codec] = {}


def _load_opus() -> Codec:
    # Imported on first use: the binding loads libopus (and looks for it) on import.
    from pipecat_sip.codecs.opus import OpusCodec

    return OpusCodec()


# Codecs that need an optional package or system library: loaded on first lookup.
_LAZY: dict[str, Callable[[], Codec]] = {"OPUS": _load_opus}
_INSTALL_HINTS: dict[str, str] = {
    "OPUS": "install the opus extra (pip install 'pipecat-sip[opus]') and libopus "
    "(Debian: apt-get install libopus0)",
}
_UNAVAILABLE: dict[str, str] = {}


def _try_lazy(key: str) -> Codec | None:
    loader = _LAZY.get(key)
    if loader is None or key in _UNAVAILABLE:
        return None
    try:
        codec = loader()
    except Exception as exc:  # ImportError, OSError, or the binding's own "not found"
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        _UNAVAILABLE[key] = f"{reason}; {_INSTALL_HINTS.get(key, 'install it')}"
        return None
    _REGISTRY.setdefault(key, codec)
    return _REGISTRY[key]


def register_codec(codec: Codec) -> None:
    """Make ``codec`` available to :func:`get_codec` under its encoding name.

    A codec registered later under the same name (case-insensitive) replaces
    the earlier one (also a built-in one such as Opus, e.g. an
    ``OpusCodec(sample_rate=24000)``). Registering does not add the name to
    :data:`SUPPORTED_CODECS`.
    """
    key = codec.encoding_name.upper()
    _REGISTRY[key] = codec
    _UNAVAILABLE.pop(key, None)


def get_codec(encoding_name: str) -> Codec:
    """Return the codec for an SDP encoding name (case-insensitive).

    The object returned is shared; per RTP stream use its
    :meth:`Codec.for_stream`.

    Raises:
        UnknownCodecError: (a ``KeyError``) no codec has that name, or its
            library is not installed (the message says which and how to get it).
    """
    key = encoding_name.upper()
    codec = _REGISTRY.get(key)
    if codec is None:
        codec = _try_lazy(key)
    if codec is not None:
        return codec
    if key in _UNAVAILABLE:
        raise UnknownCodecError(f"codec {encoding_name!r} is unavailable: {_UNAVAILABLE[key]}")
    raise UnknownCodecError(
        f"unknown codec {encoding_name[:40]!r} (known: {', '.join(_known_names())})"
    )


def _known_names() -> list[str]:
    names = {codec.encoding_name for codec in _REGISTRY.values()}
    names.update(key.lower() for key in _LAZY if key not in _REGISTRY)
    return sorted(names, key=str.upper)


def available_codecs() -> tuple[str, ...]:
    """Encoding names that :func:`get_codec` can return now (loads optional ones)."""
    for key in _LAZY:
        if key not in _REGISTRY:
            _try_lazy(key)
    return tuple(sorted((codec.encoding_name for codec in _REGISTRY.values()), key=str.upper))


def unavailable_codecs() -> dict[str, str]:
    """Optional codecs that cannot be loaded here: encoding name -> one-line reason.

    Meant for one log line at start-up (this package does not log), e.g.
    ``{"opus": "No module named 'opuslib_next'; install the opus extra ..."}``.
    """
    available_codecs()
    return {key.lower(): reason for key, reason in _UNAVAILABLE.items()}


def parse_codec_list(text: str) -> tuple[str, ...]:
    """Parse an ordered codec list such as ``"G722, pcmu,PCMA"`` (``SIP_CODECS``).

    Names are separated by commas, case-insensitive, with spaces allowed
    around them; the order is our preference (what we offer first).

    Args:
        text: The configured list.

    Returns:
        The codecs' encoding names as registered (``("G722", "PCMU", "PCMA")``).

    Raises:
        ValueError: One line naming the first bad entry: empty, unknown,
            unavailable (its library is missing) or listed twice; or the list is
            empty.
    """
    names: list[str] = []
    if not text.strip():
        raise ValueError("the codec list is empty")
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise ValueError(f"the codec list {text[:80]!r} has an empty entry")
        try:
            codec = get_codec(entry)
        except UnknownCodecError as exc:
            raise ValueError(str(exc)) from None
        if codec.encoding_name in names:
            raise ValueError(f"codec {entry[:40]!r} is listed twice")
        names.append(codec.encoding_name)
    return tuple(names)


register_codec(G722)
register_codec(PCMU)
register_codec(PCMA)

SUPPORTED_CODECS: tuple[str, ...] = ("G722", "PCMU", "PCMA")
"""Encoding names we offer and accept by default, in order of preference.

G.722 first: wideband at the cost of G.711 (64 kbit/s, a few microseconds a
packet), and every softphone and most PBXs have it. Opus is not in the
default even when installed: it costs an order of magnitude more CPU per call
(see ``bench/bench_codecs.py``) and, since the offerer's order decides an
answer, listing it would make every softphone call use it. Add it with
``SIP_CODECS=opus,G722,PCMU,PCMA``.
"""
