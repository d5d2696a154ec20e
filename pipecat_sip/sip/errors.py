"""Errors of the SIP layer, split as h11 does: ours and the peer's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat_sip.sip.message import SIPMessage


class LocalProtocolError(Exception):
    """We were asked to do something RFC 3261 forbids (a bug in the caller's code)."""


class RemoteProtocolError(Exception):
    """The peer sent something we cannot accept.

    Attributes:
        status_code: The status a UAS answers with (400 Bad Request by default).
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class SIPParseError(RemoteProtocolError, ValueError):
    """A message from the network could not be understood.

    Attributes:
        status_code: The status a UAS should answer with (400 Bad Request by
            default; 505 for an unsupported SIP version, 416 for an unsupported
            URI scheme).
        partial: What could be read of the message (start line and raw
            headers), enough to build the error response, or None when not
            even that was readable: the datagram is then dropped.
    """

    def __init__(
        self, message: str, status_code: int = 400, partial: SIPMessage | None = None
    ) -> None:
        super().__init__(message, status_code)
        self.partial = partial
