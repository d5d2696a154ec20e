"""RTP (RFC 3550), RTCP and RFC 4733 telephone events, sans-IO.

Packets (:mod:`~pipecat_sip.rtp.packet`), the sender state
(:mod:`~pipecat_sip.rtp.sender`), DTMF (:mod:`~pipecat_sip.rtp.dtmf`), RTCP
(:mod:`~pipecat_sip.rtp.rtcp`, :mod:`~pipecat_sip.rtp.reports`), and the
pieces of a call's media session: the packetizer, latching, the RTP timeout
and :class:`~pipecat_sip.rtp.session.MediaSession`, which composes them.
Nothing here does I/O or reads a clock; the port pool, which binds sockets,
is :mod:`pipecat_sip.ports`.
"""

from pipecat_sip.rtp.dtmf import (
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    TelephoneEventParseError,
)
from pipecat_sip.rtp.latching import Latching
from pipecat_sip.rtp.liveness import Liveness
from pipecat_sip.rtp.packet import (
    RTP_HEADER,
    RtpHeaderExtension,
    RtpPacket,
    RtpParseError,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_gt,
)
from pipecat_sip.rtp.packetizer import Packetizer
from pipecat_sip.rtp.reports import RtcpReporter
from pipecat_sip.rtp.sender import RtpSender
from pipecat_sip.rtp.session import (
    AudioReceived,
    DtmfReceived,
    MediaSession,
    Notice,
    RtpStats,
    RtpTimeout,
)

__all__ = [
    "RTP_HEADER",
    "AudioReceived",
    "DtmfReceived",
    "DtmfReceiver",
    "DtmfSender",
    "Latching",
    "Liveness",
    "MediaSession",
    "Notice",
    "Packetizer",
    "RtcpReporter",
    "RtpHeaderExtension",
    "RtpPacket",
    "RtpParseError",
    "RtpSender",
    "RtpStats",
    "RtpTimeout",
    "TelephoneEvent",
    "TelephoneEventParseError",
    "is_rtcp",
    "seq_add",
    "seq_diff",
    "seq_gt",
]
