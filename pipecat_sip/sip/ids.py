"""Random identifiers of SIP: branches, tags, Call-IDs and initial CSeq numbers.

Every identifier the SIP layer makes comes from one :class:`Identifiers`
object, whose random source is injectable: pass ``random.Random(seed)`` and a
test run is exactly reproducible; the default is the operating system's
source (``secrets.SystemRandom``), since tags and Call-IDs must be hard to
guess (RFC 3261 s.19.3: "cryptographically random").
"""

from __future__ import annotations

import random
import secrets

__all__ = ["BRANCH_MAGIC", "Identifiers"]

BRANCH_MAGIC = "z9hG4bK"
"""The magic cookie starting every RFC 3261 branch (s.8.1.1.7)."""


class Identifiers:
    """Makes branches, tags, Call-IDs and initial CSeq numbers from one random source.

    Args:
        rng: A ``random.Random``-like object (``getrandbits``, ``randrange``);
            default ``secrets.SystemRandom()``.

    Example:
        >>> ids = Identifiers(random.Random(1))
        >>> ids.branch().startswith(BRANCH_MAGIC)
        True
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else secrets.SystemRandom()

    def branch(self) -> str:
        """A new branch parameter: the magic cookie and 80 random bits (RFC 3261 s.8.1.1.7)."""
        return f"{BRANCH_MAGIC}{self.rng.getrandbits(80):020x}"

    def tag(self) -> str:
        """A new From/To tag of 48 random bits (RFC 3261 s.19.3 asks for at least 32)."""
        return f"{self.rng.getrandbits(48):012x}"

    def call_id(self, host: str) -> str:
        """A new Call-ID, ``<96 random bits>@host`` (RFC 3261 s.8.1.1.4)."""
        return f"{self.rng.getrandbits(96):024x}@{host}"

    def cseq(self) -> int:
        """An initial CSeq number: 1 .. 2**15, leaving room below 2**31 (RFC 3261 s.8.1.1.5)."""
        return self.rng.randrange(1, 2**15 + 1)

    def token(self, nbits: int = 64) -> str:
        """Random hex text of ``nbits`` bits (Digest cnonce, nonce)."""
        return f"{self.rng.getrandbits(nbits):0{(nbits + 3) // 4}x}"
