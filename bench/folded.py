"""Summarize py-spy folded stacks (``--format raw``, from ``load.py --profile``).

Prints the functions with the most inclusive time (on the stack) and the most
self time (top of the stack), as % of all samples, optionally only for
frames whose file matches ``--match`` (e.g. ``pipecat_sip``).

Usage: .venv/bin/python bench/folded.py bench/results/profile/pipeline-50.folded [--top 25]
"""

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{m.group('func')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folded", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only frames whose file contains this")
    args = parser.parse_args()
    total = 0
    inclusive: Counter = Counter()
    self_time: Counter = Counter()
    for line in args.folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += n
        self_time[frames[-1]] += n
    if not total:
        raise SystemExit("no samples")
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", self_time)):
        print(f"\n{title} %:")
        shown = 0
        for name, n in counter.most_common():
            if args.match and args.match not in name:
                continue
            print(f"{100 * n / total:6.1f}  {name}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
