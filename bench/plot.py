"""Plot bench/load.py results: server CPU % and p99 send-interval deviation against N.

Reads JSON lines (load.py ``--out`` files, or its stdout saved), keeps the
latest run's ``"bench": "load"`` rows per (mode, uvloop, lean), and writes a
PNG with two panels sharing the N axis.

Usage: .venv/bin/python bench/plot.py bench/results/load.jsonl [-o bench/results/load.png]
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

P99_BOUND_MS = 5.0


def load_rows(paths: list[Path]) -> tuple[list[dict], dict]:
    rows: list[dict] = []
    run: dict = {}
    for path in paths:
        for line in path.read_text().splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("bench") == "load_run":
                run = data
            elif data.get("bench") == "load":
                rows.append(data)
    # Latest figure per series and N.
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = (row["mode"], row.get("uvloop", False), row.get("lean", False), row["calls"])
        latest[key] = row
    return list(latest.values()), run


def series_name(mode: str, uvloop: bool, lean: bool) -> str:
    extras = [x for x, on in (("uvloop", uvloop), ("lean", lean)) if on]
    return mode + (f" ({', '.join(extras)})" if extras else "")


def plot(rows: list[dict], run: dict, out: Path) -> None:
    series: dict[str, list[dict]] = {}
    for row in rows:
        name = series_name(row["mode"], row.get("uvloop", False), row.get("lean", False))
        series.setdefault(name, []).append(row)
    fig, (ax_cpu, ax_dev) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for name, items in sorted(series.items()):
        items.sort(key=lambda r: r["calls"])
        ns = [r["calls"] for r in items]
        ax_cpu.plot(ns, [r.get("cpu_pct") for r in items], marker="o", label=name)
        ax_dev.plot(ns, [r.get("dev_p99_ms") for r in items], marker="o", label=name)
    ax_cpu.axhline(100, color="grey", linestyle=":", linewidth=1)
    ax_cpu.set_ylabel("server CPU, % of one core")
    ax_cpu.legend()
    ax_cpu.grid(True, alpha=0.3)
    ax_dev.axhline(P99_BOUND_MS, color="red", linestyle="--", linewidth=1, label="5 ms bound")
    ax_dev.set_yscale("log")
    ax_dev.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax_dev.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax_dev.set_yticks([0.5, 1, 2, 5, 10, 20, 50, 100])
    ax_dev.set_ylabel("p99 |send interval - 20 ms|, ms")
    ax_dev.set_xlabel("concurrent calls (N)")
    ax_dev.legend()
    ax_dev.grid(True, alpha=0.3, which="both")
    title = "pipecat-sip echo load, server on one core"
    if run:
        title += f"\n{run.get('cpu', '')}, nproc {run.get('nproc')}, {run.get('date', '')[:10]}"
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="JSON-lines files from load.py")
    parser.add_argument("-o", "--output", type=Path, default=Path("bench/results/load.png"))
    args = parser.parse_args()
    rows, run = load_rows(args.inputs)
    if not rows:
        sys.exit("no load rows in the input")
    plot(rows, run, args.output)


if __name__ == "__main__":
    main()
