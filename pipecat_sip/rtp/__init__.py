"""RTP (RFC 3550) and RFC 4733 telephone events, sans-IO."""

from pipecat_sip.rtp.dtmf import (
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    TelephoneEventParseError,
)
from pipecat_sip.rtp.packet import (
    RtpHeaderExtension,
    RtpPacket,
    RtpParseError,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_gt,
)
from pipecat_sip.rtp.ports import PortLease, PortPool, PortPoolExhausted
from pipecat_sip.rtp.sender import RtpSender

__all__ = [
    "DtmfReceiver",
    "DtmfSender",
    "PortLease",
    "PortPool",
    "PortPoolExhausted",
    "RtpHeaderExtension",
    "RtpPacket",
    "RtpParseError",
    "RtpSender",
    "TelephoneEvent",
    "TelephoneEventParseError",
    "is_rtcp",
    "seq_add",
    "seq_diff",
    "seq_gt",
]
