"""Self-tests of the interop harness (tests/helpers, tests/sipp) without our SIP server.

SIPp scenarios are run against SIPp itself (its built-in UAS, or the
``selftest_uas_*.xml`` stand-ins), and two baresip instances call each other.
Everything runs on 127.0.0.1 on ports probed free at test time.
"""

from __future__ import annotations

import asyncio
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.audio import (
    dominant_frequency,
    read_wav,
    rms,
    speech_wav,
    tone,
    tone_energy_ratio,
    write_pcmu_file,
    write_silence_padded_wav,
    write_tone_wav,
)
from tests.helpers.baresip import Baresip, make_wav_for_baresip
from tests.helpers.peers import free_udp_port, require_binary
from tests.helpers.sipp import (
    SCENARIO_DIR,
    SippResult,
    run_sipp,
    scenario_args,
    scenario_keys,
    start_sipp,
)

# -- helpers for the checks -----------------------------------------------------------


def header(message: str, name: str) -> str:
    """Return the first value of header ``name`` in a logged SIP message."""
    match = re.search(rf"^{re.escape(name)}:\s*(.*?)\r?$", message, re.MULTILINE | re.IGNORECASE)
    assert match, f"no {name} header in:\n{message}"
    return match.group(1)


def branch(message: str) -> str:
    return re.search(r"branch=([^;\s]+)", header(message, "Via")).group(1)


def sent(result: SippResult, method: str) -> list[str]:
    return [m for m in result.messages("sent") if m.startswith(f"{method} ")]


def mulaw_decode(payload: bytes) -> np.ndarray:
    """G.711 mu-law to int16 (ITU-T G.711), enough to check what SIPp streamed."""
    u = ~np.frombuffer(payload, dtype=np.uint8)
    exponent = (u >> 4) & 0x07
    mantissa = (u & 0x0F).astype(np.int32)
    magnitude = ((mantissa << 3) + 0x84) << exponent.astype(np.int32)
    return np.where(u & 0x80, -(magnitude - 0x84), magnitude - 0x84).astype(np.int16)


# -- pure helpers (no peer needed) ------------------------------------------------------


def test_tone_analysis():
    x = tone(1000, 1.0, 8000, 0.5)
    assert tone_energy_ratio(x, 8000, 1000) > 0.99
    assert tone_energy_ratio(x, 8000, 440) < 0.01
    assert abs(dominant_frequency(x, 8000) - 1000) < 2
    assert abs(rms(x) - 0.5 * 32767 / np.sqrt(2)) < 50
    silence = np.zeros(800, np.int16)
    assert tone_energy_ratio(silence, 8000, 1000) == 0.0
    assert dominant_frequency(silence, 8000) == 0.0
    assert rms(np.zeros(0, np.int16)) == 0.0


def test_wav_round_trip_and_padding(tmp_path: Path):
    path = write_tone_wav(tmp_path / "t.wav", 440, 0.5)
    samples, rate = read_wav(path)
    assert rate == 8000 and samples.dtype == np.int16 and samples.size == 4000
    padded = write_silence_padded_wav(tmp_path / "p.wav", path, lead_s=0.25, total_s=2.0)
    out, _ = read_wav(padded)
    assert out.size == 16000
    assert not out[:2000].any() and out[2000:6000].any() and not out[6000:].any()
    wav = make_wav_for_baresip(tmp_path / "b.wav", freq_hz=1000, call_seconds=3, tone_seconds=1)
    out, _ = read_wav(wav)
    assert out.size == 24000 and out[:8000].any() and not out[8000:].any()
    with pytest.raises(ValueError, match="sample rate"):
        write_silence_padded_wav(tmp_path / "x.wav", path, rate=16000)


def test_free_ports():
    ports = {free_udp_port() for _ in range(20)}
    assert len(ports) == 20
    even = free_udp_port(even=True, span=4)
    assert even % 2 == 0


def test_require_binary_skips_with_package_name(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(pytest.skip.Exception, match=r"no-such-peer-xyz not installed"):
        require_binary("no-such-peer-xyz")
    monkeypatch.setattr("tests.helpers.peers.shutil.which", lambda _name: None)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install sip-tester"):
        require_binary("sipp")
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install baresip-core"):
        require_binary("baresip")


def test_scenarios_declare_their_keys():
    assert scenario_keys(SCENARIO_DIR / "uac_basic.xml") == {"hold_ms": "1000"}
    assert scenario_keys(SCENARIO_DIR / "uac_rtp.xml") == {"hold_ms": "3000"}
    assert scenario_keys(SCENARIO_DIR / "uas_answer.xml") == {"ring_ms": "200"}
    assert scenario_keys(SCENARIO_DIR / "options.xml") == {}
    assert scenario_args(SCENARIO_DIR / "uac_retransmit_invite.xml") == ["-nr"]
    for path in SCENARIO_DIR.glob("*.xml"):
        text = path.read_text(encoding="latin-1")
        if "INVITE sip:" in text and "delayed_offer" not in path.name:  # those send no SDP
            assert "Content-Type: application/sdp" in text, path.name
            assert "c=IN IP4 [local_ip]" in text or "c=IN IP4 [rtp_ip]" in text, path.name


# -- SIPp ---------------------------------------------------------------------------------


@pytest.mark.interop
async def test_sipp_uac_basic_and_options_against_builtin_uas():
    async with await start_sipp("uas", "", calls=None, extra_args=["-aa"], timeout=15) as uas:
        basic = await run_sipp("uac_basic", uas.target, keys={"hold_ms": "500"}, timeout=10)
        assert basic.ok, basic.summary()
        assert basic.successful_calls == 1 and basic.failed_calls == 0
        assert "SuccessfulCall(C)" in basic.stats
        (bye,) = sent(basic, "BYE")
        assert header(bye, "CSeq") == "2 BYE"

        options = await run_sipp("options", uas.target, timeout=10)
        assert options.ok, options.summary()
        (reply,) = options.messages("received")
        assert reply.startswith("SIP/2.0 200")
    assert uas.pid is not None and not uas.running


@pytest.mark.interop
async def test_run_sipp_reports_unanswered_invite():
    # Nothing listens at the target: the INVITE is never answered.
    target = f"127.0.0.1:{free_udp_port()}"
    result = await run_sipp("uac_basic", target, timeout=2, extra_args=["-recv_timeout", "1000"])
    assert not result.ok
    assert result.returncode != 0 and not result.timed_out
    assert "uac_basic.xml" in result.summary()


@pytest.mark.interop
async def test_sipp_overrun_is_stopped():
    uas = await start_sipp("uas", "", calls=None, timeout=30)
    assert uas.running
    result = await uas.wait(timeout=0.5)
    assert result.timed_out and not uas.running
    assert not result.ok and "timed_out=True" in result.summary()
    assert not uas.workdir.exists()


@pytest.mark.interop
async def test_sipp_load_50_concurrent_rtp_calls():
    calls = 50
    async with await start_sipp("uas_answer", "", calls=calls, timeout=20) as uas:
        uac = await run_sipp(
            "uac_rtp", uas.target, calls=calls, concurrent=calls, rate=50,
            keys={"hold_ms": "2000"}, timeout=20, trace_msg=False,
        )  # fmt: skip
        uas_result = await uas.wait(timeout=5)
    assert uac.ok and uac.successful_calls == calls, uac.summary()
    assert uas_result.successful_calls == calls, uas_result.summary()


def _check_cancel(result: SippResult) -> None:
    (invite,) = sent(result, "INVITE")
    (cancel,) = sent(result, "CANCEL")
    (ack,) = sent(result, "ACK")
    assert branch(cancel) == branch(invite) == branch(ack)
    assert header(cancel, "CSeq") == header(invite, "CSeq").replace("INVITE", "CANCEL")
    assert header(ack, "CSeq") == header(invite, "CSeq").replace("INVITE", "ACK")
    assert "tag=" not in header(cancel, "To") and "tag=" in header(ack, "To")
    assert header(cancel, "Call-ID") == header(invite, "Call-ID")


def _check_bad_codec(result: SippResult) -> None:
    (invite,) = sent(result, "INVITE")
    (ack,) = sent(result, "ACK")
    assert "m=audio" in invite and "RTP/AVP 18\r\n" in invite and "PCMU" not in invite
    assert branch(ack) == branch(invite)


def _check_retransmit(result: SippResult) -> None:
    first, second = sent(result, "INVITE")
    assert first == second
    assert len(sent(result, "ACK")) == 1


def _check_server_bye(result: SippResult) -> None:
    (reply,) = [m for m in result.messages("sent") if m.startswith("SIP/2.0 200")]
    assert header(reply, "CSeq").endswith("BYE")
    assert not sent(result, "BYE")


def _check_bye_unknown(result: SippResult) -> None:
    (bye,) = sent(result, "BYE")
    assert "tag=" in header(bye, "To")


def _check_uas_answer(result: SippResult) -> None:
    received = result.messages("received")
    assert [m.split(" ", 2)[1] for m in received] == ["100", "180", "200", "200"]
    assert "Content-Type: application/sdp" in received[2]


@pytest.mark.interop
@pytest.mark.parametrize(
    ("uas_scenario", "uac_scenario", "keys", "check"),
    [
        ("selftest_uas_delayed", "uac_cancel", None, _check_cancel),
        ("selftest_uas_reject", "uac_bad_codec", None, _check_bad_codec),
        ("selftest_uas_slow_answer", "uac_retransmit_invite", None, _check_retransmit),
        ("selftest_uas_hangup", "uac_server_bye", None, _check_server_bye),
        ("selftest_uas_481", "bye_unknown", None, _check_bye_unknown),
        ("uas_answer", "uac_basic", {"hold_ms": "200"}, _check_uas_answer),
    ],
)
async def test_sipp_scenario_against_stand_in(uas_scenario, uac_scenario, keys, check):
    async with await start_sipp(uas_scenario, "", timeout=10) as uas:
        uac = await run_sipp(uac_scenario, uas.target, keys=keys, timeout=10)
        uas_result = await uas.wait(timeout=5)
    assert uac.ok, uac.summary()
    assert uas_result.ok, uas_result.summary()
    check(uac)


@pytest.mark.interop
async def test_sipp_uac_rtp_streams_pcmu(tmp_path: Path):
    calls, hold_ms = 3, 1000
    packets: list[tuple[tuple[str, int], bytes]] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            packets.append((addr, data))

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    sink_port = transport.get_extra_info("sockname")[1]
    try:
        uas = await start_sipp(
            "selftest_uas_media_sink", "", calls=calls, keys={"sink_port": str(sink_port)},
            timeout=15,
        )  # fmt: skip
        async with uas:
            uac = await run_sipp(
                "uac_rtp", uas.target, calls=calls, concurrent=calls, rate=10,
                keys={"hold_ms": str(hold_ms)}, timeout=15, workdir=tmp_path / "sipp",
            )  # fmt: skip
            uas_result = await uas.wait(timeout=5)
    finally:
        transport.close()
    assert uac.ok, uac.summary()
    assert uas_result.ok, uas_result.summary()
    assert uac.successful_calls == calls
    assert (tmp_path / "sipp" / "pcmu_tone.ulaw").stat().st_size == 80000

    rtp = [d for _, d in packets if len(d) >= 12 and d[0] >> 6 == 2]
    assert len(rtp) >= 0.6 * calls * hold_ms / 20, f"{len(rtp)} RTP packets"
    assert {d[1] & 0x7F for d in rtp} == {0}
    assert {len(d) - 12 for d in rtp} == {160}
    sources = {addr for addr, _ in packets}
    assert len(sources) == 1, f"all calls stream from -mp: {sources}"
    by_ssrc: dict[int, list[bytes]] = {}
    for d in rtp:
        by_ssrc.setdefault(struct.unpack("!I", d[8:12])[0], []).append(d)
    assert len(by_ssrc) == calls, f"SSRCs {[hex(s) for s in by_ssrc]}"
    stream = sorted(by_ssrc.values(), key=len)[-1]
    stream.sort(key=lambda d: struct.unpack("!H", d[2:4])[0])
    audio = mulaw_decode(b"".join(d[12:] for d in stream))
    assert abs(dominant_frequency(audio, 8000) - 1000) < 10


@pytest.mark.interop
def test_write_pcmu_file_and_speech(tmp_path: Path):
    path = write_pcmu_file(tmp_path / "t.ulaw", freq_hz=440, seconds=0.5)
    data = path.read_bytes()
    assert len(data) == 4000
    assert abs(dominant_frequency(mulaw_decode(data), 8000) - 440) < 5
    speech = speech_wav(tmp_path / "s.wav", "one two three")
    samples, rate = read_wav(speech)
    assert rate == 8000 and samples.size > 4000 and rms(samples) > 300


# -- baresip ------------------------------------------------------------------------------


@pytest.mark.interop
async def test_baresip_call_tone_and_dtmf(tmp_path: Path):
    answer_wav = make_wav_for_baresip(tmp_path / "1k.wav", freq_hz=1000, call_seconds=15)
    dial_wav = make_wav_for_baresip(tmp_path / "440.wav", freq_hz=440, call_seconds=15)
    async with (
        Baresip(tmp_path / "answerer", wav=answer_wav, answer=True, name="answerer") as answerer,
        Baresip(tmp_path / "dialer", wav=dial_wav, name="dialer") as dialer,
    ):
        await dialer.dial(answerer.uri)
        established = await dialer.wait_event("CALL_ESTABLISHED", timeout=5)
        assert established["peeruri"] == answerer.uri
        await answerer.wait_event("CALL_ESTABLISHED", timeout=5)
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(0.5)
        await dialer.send_dtmf("12#")
        await asyncio.sleep(max(0.0, 3.0 - (asyncio.get_running_loop().time() - started)))
        await dialer.hangup()
        await dialer.wait_event("CALL_CLOSED", timeout=5)
        await answerer.wait_event("CALL_CLOSED", timeout=5)

        digits = [(await answerer.wait_event("CALL_DTMF_START", 1))["param"] for _ in range(3)]
        assert digits == ["1", "2", "#"], answerer.log[-2000:]

        heard, rate = read_wav(await dialer.wait_recording("dec"))
        assert rate == 8000 and heard.size >= 2 * rate, f"{heard.size} samples"
        assert tone_energy_ratio(heard, rate, 1000) > 0.8, dominant_frequency(heard, rate)
        heard_440, _ = read_wav(await answerer.wait_recording("dec"))
        assert tone_energy_ratio(heard_440, rate, 440) > 0.8, dominant_frequency(heard_440, rate)
    assert dialer.pid is not None
    assert dialer._proc.returncode is not None and answerer._proc.returncode is not None
