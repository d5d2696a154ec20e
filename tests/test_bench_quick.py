"""The benchmarks' quick modes run (so the scripts cannot rot); their figures are not judged."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def run_script(*argv: str, timeout: float = 60.0) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    rows = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def require_sipp() -> None:
    # Under CI conftest.py turns this skip of an interop test into a failure.
    if shutil.which("sipp") is None:
        pytest.skip("sipp (sip-tester) is not installed")


@pytest.mark.interop
def test_load_quick(tmp_path):
    require_sipp()
    out = tmp_path / "load.jsonl"
    rows = run_script(str(BENCH / "load.py"), "--quick", "--out", str(out))
    load = [r for r in rows if r.get("bench") == "load"]
    assert {r["mode"] for r in load} == {"pipeline", "media"}
    for row in load:
        for key in ("calls_failed", "cpu_pct", "rss_per_call_kb", "seq_gaps", "dev_p99_ms"):
            assert key in row, row
    png = tmp_path / "load.png"
    subprocess.run(
        [sys.executable, str(BENCH / "plot.py"), str(out), "-o", str(png)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert png.stat().st_size > 1000


@pytest.mark.interop
def test_dispatch_quick():
    require_sipp()
    if shutil.which("kamailio") is None:
        pytest.skip("kamailio is not installed")
    rows = [
        r for r in run_script(str(BENCH / "dispatch.py"), "--quick") if r.get("bench") == "dispatch"
    ]
    assert [r["setup"] for r in rows] == ["direct", "dispatched"]
    for row in rows:
        for key in ("calls_failed", "split", "cpu_per_call_pct", "dev_p99_ms"):
            assert key in row, row
    assert sum(rows[1]["split"]) == rows[1]["calls_ok"]


def test_latency_quick():
    rows = run_script(str(BENCH / "latency.py"), "--quick", "--rates", "16000")
    (row,) = [r for r in rows if r["bench"] == "latency"]
    for key in ("input_ms", "output_ms", "bargein_ms"):
        assert row[key]["n"] > 0, row
    jitter = [r for r in rows if r["bench"] == "latency_jitter"]
    assert {(r["jitter_ms"], r["jitter_buffer"]) for r in jitter} == {
        (0.0, False), (0.0, True), (30.0, False), (30.0, True)
    }  # fmt: skip
    for r in jitter:
        assert r["input_ms"]["n"] > 0 and (not r["jitter_buffer"] or r["jb_wait_ms"]["n"] > 0), r


@pytest.mark.interop
def test_setup_quick():
    require_sipp()
    rows = run_script(str(BENCH / "setup.py"), "--quick", "--mode", "media")
    assert rows and rows[0]["bench"] == "setup" and "invite_200_p95_ms" in rows[0], rows


def test_compare_ws_quick(tmp_path):
    # Pipecat's FastAPI WebSocket path under the same echo load (no SIPp needed).
    rows = run_script(
        str(BENCH / "compare_ws.py"), "--quick", "--out", str(tmp_path / "ws.jsonl"), timeout=90
    )
    (row,) = [r for r in rows if r.get("bench") == "compare_ws"]
    for key in ("calls_failed", "cpu_pct", "rss_per_call_kb", "echo_pct", "dev_p99_ms"):
        assert key in row, row


def test_pipeline_cpu_quick():
    # Pipecat's null-transport floor, SIPTransport and media-only, N=5 for 1 s each.
    rows = run_script(str(BENCH / "pipeline_cpu.py"), "--quick", timeout=120)
    rows = [r for r in rows if r.get("bench") == "pipeline_cpu"]
    assert {r["mode"] for r in rows} == {"null", "sip", "media"}
    for row in rows:
        assert row["per_call_pct"] > 0 and row["echo_pct"] > 0, row


def test_bench_media_srtp_quick():
    rows = run_script(
        str(BENCH / "bench_media.py"),
        "--srtp", "--iterations", "200", "--sessions", "10", "--seconds", "0.5", "--rounds", "1",
    )  # fmt: skip
    (ratio,) = [r for r in rows if r["bench"] == "srtp_ratio"]
    for key in (
        "session_receive",
        "session_send",
        "loaded_us_per_packet",
        "floor_session_receive",
        "floor_loaded_us_per_packet",
    ):
        assert ratio[key] > 0, ratio
    loaded = [r for r in rows if r["bench"] == "sessions"]
    assert {r["codec"] for r in loaded} == {"PCMU", "PCMU+SRTP", "PCMU+SRTP floor"}
    assert all(r["srtp_drops"] == 0 and r["packets_received"] > 0 for r in loaded), loaded


def test_bench_media_jitter_buffer_quick():
    rows = run_script(
        str(BENCH / "bench_media.py"),
        "--jitter-buffer", "--iterations", "200", "--sessions", "10", "--seconds", "0.5",
        "--rounds", "1",
    )  # fmt: skip
    (ratio,) = [r for r in rows if r["bench"] == "jitter_buffer_ratio"]
    for key in (
        "session_played",
        "loaded_us_per_packet",
        "floor_session_played",
        "floor_loaded_us_per_packet",
    ):
        assert ratio[key] > 0, ratio
    played = [r for r in rows if r["bench"] == "session"]
    assert all(r["echoed"] > 0 for r in played), played  # the audio came back out both ways
    loaded = [r for r in rows if r["bench"] == "sessions"]
    assert {r["codec"] for r in loaded} == {"PCMU", "PCMU+JB", "PCMU+JB floor"}
    assert all(r["packets_received"] > 0 for r in loaded), loaded


def test_bench_srtp_quick():
    rows = run_script(str(BENCH / "srtp.py"), "--quick")
    assert any(r["figure"] == "loopback_ratio" for r in rows)
