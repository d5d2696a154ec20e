"""bench/tls_bench.py's quick mode runs (so the script cannot rot); its figures are not judged."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tls_bench_quick():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tls_bench.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    setup = [r for r in rows if r["bench"] == "tls_setup"]
    idle = [r for r in rows if r["bench"] == "idle_connections"]
    assert {r["case"] for r in setup} == {"persistent", "handshake"}
    assert all(r["failed"] == 0 and r["p95_ms"] > 0 for r in setup), setup
    assert {r["transport"] for r in idle} == {"tcp", "tls"}
    assert all("kb_per_connection" in r for r in idle), idle
