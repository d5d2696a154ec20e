"""The :class:`Codec` interface every RTP audio codec implements.

A codec turns PCM16 little-endian mono at :attr:`Codec.sample_rate` into RTP
payload bytes and back. Stateless codecs (G.711) share one object between all
calls; stateful ones (G.722 ADPCM, Opus) hand out one object per RTP stream
with :meth:`Codec.for_stream`. Pure code: no I/O, no clock, no logging.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["Codec", "UnknownCodecError"]


class UnknownCodecError(KeyError):
    """No codec is registered (or available) under the requested encoding name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown codec"


class Codec(ABC):
    """An RTP audio codec.

    The object in the registry (:func:`pipecat_sip.codecs.get_codec`) describes
    the codec and may be shared by every call; the media layer calls
    :meth:`for_stream` once per RTP session and uses what it returns for that
    session only (a stateful codec keeps its encoder and decoder state there).

    Attributes:
        encoding_name: SDP rtpmap encoding name, e.g. ``"PCMU"``, ``"opus"``.
        payload_type: Static RTP payload type (RFC 3551), or the dynamic
            payload type (96-127) we would like for a dynamic codec; SDP code
            picks the real number.
        clock_rate: RTP timestamp clock, Hz (the SDP rtpmap rate). It may
            differ from ``sample_rate``: G.722 has an 8000 Hz clock for 16 kHz
            audio (RFC 3551 s.4.5.2), Opus always 48000 Hz (RFC 7587 s.4.1).
        sample_rate: Rate of the PCM this codec encodes and decodes, Hz.
        channels: The rtpmap encoding parameter (``opus/48000/2`` says 2 by
            RFC 7587 s.7 even for mono). The PCM is always mono.
        fmtp: The ``a=fmtp`` parameters we write for this codec in our offers
            and answers (what we can receive), or None.
        invalid_payloads: Payloads this object could not decode (concealed
            instead); always 0 for codecs where every byte string is valid.
        stateful: The codec keeps state between packets (G.722, Opus): use one
            :meth:`for_stream` object per RTP stream, and encode silence with
            :meth:`silence` for every silent packet rather than caching one
            payload (a stateless codec's silence payload can be cached).
    """

    encoding_name: str
    payload_type: int
    clock_rate: int
    sample_rate: int
    channels: int = 1
    fmtp: str | None = None
    invalid_payloads: int = 0
    stateful: bool = False
    constant_bitrate: bool = True

    @abstractmethod
    def encode(self, pcm: bytes) -> bytes:
        """Encode PCM16 little-endian mono at ``sample_rate`` into a payload.

        Raises:
            ValueError: ``pcm`` is not whole 16-bit samples, or not a length the
                codec can put in one packet.
        """

    @abstractmethod
    def decode(self, payload: bytes) -> bytes:
        """Decode a payload into PCM16 little-endian mono at ``sample_rate``.

        Never raises for bad input: a payload the codec cannot decode gives
        concealment (or silence) and counts in :attr:`invalid_payloads`.
        """

    def silence(self, samples: int) -> bytes:
        """Return the payload of ``samples`` samples (at ``sample_rate``) of silence.

        For a :attr:`stateful` codec this goes through the stream's encoder.

        Raises:
            ValueError: ``samples`` is not a length the codec can encode.
        """
        return self.encode(bytes(2 * samples))

    def for_stream(self, fmtp: str | None = None) -> Codec:
        """Return a codec object that keeps the state of one RTP stream.

        Call it once per RTP session and use the result for that session's
        encoding and decoding only. Stateless codecs return ``self``.

        Args:
            fmtp: The peer's ``a=fmtp`` parameters for the negotiated format
                (what the peer can receive, e.g. RFC 7587 ``useinbandfec=1``),
                or None. Codecs without parameters ignore it.
        """
        return self

    def conceal(self, samples: int) -> bytes | None:
        """Return ``samples`` samples of the codec's own packet loss concealment.

        Args:
            samples: Samples at ``sample_rate`` to make up (one lost packet).

        Returns:
            PCM16 little-endian mono, or None when the codec has no PLC of its
            own (G.711, G.722): the media layer then uses a generic one.
        """
        return None

    def decode_fec(self, payload: bytes, samples: int) -> bytes | None:
        """Recover a lost packet from the forward error correction in the next one.

        Call it with the payload that followed the loss, before decoding that
        payload normally with :meth:`decode`.

        Args:
            payload: The payload received after the lost packet.
            samples: Samples at ``sample_rate`` the lost packet held.

        Returns:
            PCM16 little-endian mono of the lost packet, or None when the codec
            has no in-band FEC (then use :meth:`conceal` or a generic PLC).
        """
        return None

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {self.encoding_name}/{self.clock_rate} pt={self.payload_type}>"
