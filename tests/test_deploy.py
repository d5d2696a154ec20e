"""The shipped deployment files (deploy/): instance planning, systemd units, Kamailio's list.

deploy/make_instances.py must give each instance its own SIP port, RTP range
and API port (nothing overlapping), env files the runner accepts, and
dispatcher lines Kamailio accepts with the shipped dispatcher.cfg; the
systemd units must pass ``systemd-analyze verify``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipecat_sip.runner import build_parser, parse_config
from tests.helpers.kamailio import DISPATCHER_CFG, Kamailio, quote, require_kamailio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))
import make_instances  # noqa: E402


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_make_instances_writes_disjoint_ports_the_runner_accepts(tmp_path: Path):
    out = tmp_path / "etc"
    ds = tmp_path / "dispatcher.list"
    code = make_instances.main(
        ["--host", "10.0.0.11", "--instances", "4", "--out", str(out), "--dispatcher-list", str(ds)]
    )
    assert code == 0
    common = read_env(REPO / "deploy" / "systemd" / "common.env.example")
    seen: set[int] = set()
    for i in range(1, 5):
        env = {**common, **read_env(out / f"bot-{i}.env")}
        config = parse_config(build_parser().parse_args([]), env)
        ports = {config.port, config.api_port, *range(*config.rtp_port_range)}
        assert not ports & seen, f"bot-{i} shares ports"
        seen |= ports
        assert config.drain_timeout_s == 300 and config.log_format == "json"
        assert config.api_host == "0.0.0.0" and config.api_token
    lines = ds.read_text().splitlines()
    assert lines == [f"1 sip:10.0.0.11:{5071 + i} 0 0 duid=bot-{i + 1}" for i in range(4)]


def test_make_instances_refuses_overlaps_and_bad_ranges(capsys):
    with pytest.raises(ValueError, match="overlaps"):
        make_instances.plan(2, first_sip_port=20001, rtp_first=20000)
    with pytest.raises(ValueError, match="even"):
        make_instances.plan(1, rtp_per_instance=3)
    with pytest.raises(ValueError, match="outside"):
        make_instances.plan(40, rtp_first=60000)
    assert make_instances.main(["--host", "nope", "--instances", "1"]) == 2
    assert "error:" in capsys.readouterr().err
    assert make_instances.main(["--host", "::1", "--instances", "1", "--rtp-first", "40000"]) == 0
    captured = capsys.readouterr()
    assert "ephemeral" in captured.err and "sip:[::1]:5071" in captured.out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path):
    unit_dir = REPO / "deploy" / "systemd"
    for name in ("pipecat-sip@.service", "pipecat-sip.target"):
        text = (unit_dir / name).read_text()
        # Point the unit at this checkout's interpreter so the exec path check passes.
        text = text.replace("/opt/pipecat-sip/.venv/bin/python", sys.executable)
        text = text.replace("/opt/pipecat-sip", str(REPO))
        target = tmp_path / (name.replace("@.", "@bot-1.") if "@" in name else name)
        target.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "pipecat-sip@bot-1.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    noise = [line for line in result.stderr.splitlines() if "pipecat-sip" in line]
    assert not noise, result.stderr


@pytest.mark.interop
async def test_generated_dispatcher_list_loads_in_the_shipped_config(tmp_path: Path):
    require_kamailio()
    ds = tmp_path / "dispatcher.list"
    assert (
        make_instances.main(
            ["--host", "127.0.0.1", "--instances", "3", "--dispatcher-list", str(ds)]
        )
        == 0
    )
    kam = Kamailio(DISPATCHER_CFG, tmp_path / "kam", defines={"DISPATCHER_LIST": quote(str(ds))})
    async with kam:
        dests = await kam.dispatcher_destinations()
    assert sorted(dests) == [f"sip:127.0.0.1:{5071 + i}" for i in range(3)]
