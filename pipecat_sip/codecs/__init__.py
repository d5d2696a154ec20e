"""Audio codecs for RTP payloads and the codec registry.

A :class:`Codec` turns PCM16 little-endian mono at ``sample_rate`` into RTP
payload bytes and back. Codecs are looked up by their SDP rtpmap encoding
name with :func:`get_codec`; :data:`SUPPORTED_CODECS` lists the names we
offer, in order of preference. New codecs plug in with
:func:`register_codec`.

Example:
    >>> codec = get_codec("pcmu")
    >>> codec.encode(bytes(320)) == codec.silence(160)
    True
"""

from abc import ABC, abstractmethod

import numpy as np

from pipecat_sip.codecs import g711

__all__ = [
    "PCMA",
    "PCMU",
    "SUPPORTED_CODECS",
    "Codec",
    "G711Codec",
    "UnknownCodecError",
    "get_codec",
    "register_codec",
]


class UnknownCodecError(KeyError):
    """No codec is registered under the requested encoding name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown codec"


class Codec(ABC):
    """An RTP audio codec (stateless; one instance is shared by all calls).

    Attributes:
        encoding_name: SDP rtpmap encoding name, e.g. ``"PCMU"``.
        payload_type: Static RTP payload type (RFC 3551), or the payload
            type we prefer to offer for a dynamic codec.
        clock_rate: RTP timestamp clock, Hz (the SDP rtpmap rate).
        sample_rate: Rate of the PCM this codec encodes and decodes, Hz.
    """

    encoding_name: str
    payload_type: int
    clock_rate: int
    sample_rate: int

    @abstractmethod
    def encode(self, pcm: bytes) -> bytes:
        """Encode PCM16 little-endian mono at ``sample_rate`` into a payload.

        Raises:
            ValueError: ``pcm`` is not whole 16-bit samples.
        """

    @abstractmethod
    def decode(self, payload: bytes) -> bytes:
        """Decode a payload into PCM16 little-endian mono at ``sample_rate``."""

    def silence(self, samples: int) -> bytes:
        """Return the payload of ``samples`` samples of silence."""
        return self.encode(bytes(2 * samples))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {self.encoding_name}/{self.clock_rate} pt={self.payload_type}>"


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

_REGISTRY: dict[str, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Make ``codec`` available to :func:`get_codec` under its encoding name.

    A codec registered later under the same name (case-insensitive) replaces
    the earlier one. Registering does not add the name to
    :data:`SUPPORTED_CODECS`.
    """
    _REGISTRY[codec.encoding_name.upper()] = codec


def get_codec(encoding_name: str) -> Codec:
    """Return the codec for an SDP encoding name (case-insensitive).

    Raises:
        UnknownCodecError: (a ``KeyError``) no codec has that name.
    """
    try:
        return _REGISTRY[encoding_name.upper()]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownCodecError(f"unknown codec {encoding_name!r} (known: {known})") from None


register_codec(PCMU)
register_codec(PCMA)

SUPPORTED_CODECS: tuple[str, ...] = ("PCMU", "PCMA")
"""Encoding names we offer and accept, in order of preference."""
