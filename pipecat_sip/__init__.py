"""pipecat-sip: let a Pipecat bot answer and place phone calls directly over SIP and RTP.

Public API (imported lazily, so the pure protocol modules load without Pipecat):

- `SIPServer`, `Registration`: the SIP/UDP server handing each call to your
  code, and where it keeps itself registered (a PBX extension).
- `SIPCall`, `CallInfo`, `CallFailed`: one call, its data, a failed outbound call.
- `TransferFailed`, `TransferRequest`: a transfer that did not succeed; a
  REFER the far end sent.
- `Trunk`: a carrier account for outbound calls (proxy, credentials, caller ID).
- `SIPTransport`, `SIPParams`, `SIPTransferFrame`: the Pipecat transport for
  one call; a frame that transfers the call after the audio before it.
- `SIPRunnerArguments`, `create_transport`, `main`: `python bot.py --transport sip`.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SIPServer": "pipecat_sip.server",
    "Registration": "pipecat_sip.server",
    "SIPCall": "pipecat_sip.call",
    "CallInfo": "pipecat_sip.call",
    "CallFailed": "pipecat_sip.call",
    "TransferFailed": "pipecat_sip.call",
    "TransferRequest": "pipecat_sip.call",
    "Trunk": "pipecat_sip.trunk",
    "SIPTransport": "pipecat_sip.transport",
    "SIPParams": "pipecat_sip.transport",
    "SIPTransferFrame": "pipecat_sip.transport",
    "SIPRunnerArguments": "pipecat_sip.runner",
    "create_transport": "pipecat_sip.runner",
    "main": "pipecat_sip.runner",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipecat_sip' has no attribute {name!r}")
    return getattr(import_module(module), name)
