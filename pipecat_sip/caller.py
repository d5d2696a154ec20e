"""A test caller: place one SIP call, play a WAV, record what comes back, send DTMF.

`python -m pipecat_sip call sip:bot@127.0.0.1:6060 --play in.wav --record out.wav
--dtmf 12# --duration 10` calls a bot the way a phone would, so a deployment
can be checked without a softphone. Exit status: 0 when the call was
answered and lasted (or was ended by the far side), 1 when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr
from loguru import logger

from pipecat_sip.call import CallFailed
from pipecat_sip.server import SIPServer


@dataclass
class CallResult:
    """What a test call did.

    Attributes:
        answered: Whether the call was answered.
        status_code: Final SIP status when it failed, else None.
        end_reason: Why it ended ("local_bye", "remote_bye", ...).
        received_samples: Samples of audio received (at the codec rate).
        dtmf_sent: Digits sent.
    """

    answered: bool
    status_code: int | None = None
    end_reason: str | None = None
    received_samples: int = 0
    dtmf_sent: str = ""


def read_wav(path: str, sample_rate: int) -> bytes:
    """Read a 16-bit PCM WAV as mono PCM16 at `sample_rate` Hz (resampled with soxr).

    Raises:
        ValueError: Not a 16-bit PCM WAV.
    """
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate)
    return samples.astype(np.int16).tobytes()


def write_wav(path: str, pcm: bytes, sample_rate: int) -> None:
    """Write mono PCM16 as a WAV file."""
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


async def place_call(
    target: str,
    *,
    play: str | None = None,
    record: str | None = None,
    dtmf: str = "",
    dtmf_delay_s: float = 1.0,
    duration_s: float = 10.0,
    host: str = "127.0.0.1",
    headers: Sequence[tuple[str, str]] = (),
    answer_timeout_s: float = 30.0,
) -> CallResult:
    """Place a call and run it for `duration_s` seconds (less if the far end hangs up).

    Args:
        target: SIP URI to call.
        play: WAV file sent as our voice (any rate, 16-bit).
        record: WAV file to write with what we heard (codec rate, mono).
        dtmf: Digits to send (RFC 4733 when negotiated, else in-band), 300 ms apart.
        dtmf_delay_s: Seconds after answer before the first digit.
        duration_s: Call length in seconds, from answer.
        host: Local address to bind (SIP and RTP) and write in SDP.
        headers: Extra INVITE headers.
        answer_timeout_s: Seconds to wait for an answer.

    Returns:
        What happened.
    """
    server = SIPServer(host=host, port=0, rtp_port_range=(20000, 30000), max_calls=1)
    await server.start()
    try:
        try:
            call = await server.call(target, headers=headers, timeout=answer_timeout_s)
        except CallFailed as exc:
            logger.error(f"call failed: {exc}")
            return CallResult(answered=False, status_code=exc.status_code, end_reason=exc.reason)
        media = call.media
        assert media is not None
        rate = media.sample_rate
        received: list[bytes] = []
        media.on_audio = received.append
        if play:
            media.send_audio(read_wav(play, rate))
        logger.info(f"{call}: answered ({call.info.codec}), running {duration_s} s")
        sent = ""
        loop = asyncio.get_running_loop()
        end_at = loop.time() + duration_s
        if dtmf:
            try:
                await asyncio.wait_for(call.wait_ended(), dtmf_delay_s)
            except TimeoutError:
                for digit in dtmf:
                    if call.ended:
                        break
                    media.send_dtmf(digit)
                    sent += digit
                    await asyncio.sleep(0.3)
        remaining = max(0.0, end_at - loop.time())
        try:
            await asyncio.wait_for(call.wait_ended(), remaining)
        except TimeoutError:
            await call.hangup()
        pcm = b"".join(received)
        if record:
            write_wav(record, pcm, rate)
        return CallResult(
            answered=True,
            end_reason=call.end_reason,
            received_samples=len(pcm) // 2,
            dtmf_sent=sent,
        )
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipecat_sip call URI [--play F] [--record F] [--dtmf D] [--duration S]`."""
    parser = argparse.ArgumentParser(prog="python -m pipecat_sip")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("call", help="place a test call")
    p.add_argument("uri", help="SIP URI to call, e.g. sip:bot@127.0.0.1:6060")
    p.add_argument("--play", help="WAV file to play as the caller's voice")
    p.add_argument("--record", help="WAV file to write with what the caller heard")
    p.add_argument("--dtmf", default="", help="digits to send, e.g. 12#")
    p.add_argument("--duration", type=float, default=10.0, help="call length, seconds")
    p.add_argument("--host", default="127.0.0.1", help="local address to call from")
    p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "INFO")
    result = asyncio.run(
        place_call(
            args.uri,
            play=args.play,
            record=args.record,
            dtmf=args.dtmf,
            duration_s=args.duration,
            host=args.host,
        )
    )
    if not result.answered:
        print(f"call failed: {result.end_reason} {result.status_code or ''}".strip())
        return 1
    print(
        f"call ok: ended by {result.end_reason}, heard {result.received_samples} samples, "
        f"sent DTMF {result.dtmf_sent or '-'}"
    )
    return 0
