"""Summarize a py-spy folded-stack profile (`make bench` with BENCH_PROFILE=1): where a service spends its time.

Prints the functions with the most samples on top of the stack (self) and anywhere in it (total), as a share
of all samples. `python -m devtools.profile_summary bench/results/profile-*/notifier.folded [--top 25]`.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

FRAME = re.compile(r"^(?P<function>[^ ]+) \((?P<file>[^:)]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`function (path/to/site-packages/pkg/module.py:12)` -> `pkg/module.py:function`."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"].split("site-packages/")[-1].split("/src/")[-1]
    return f"{path}:{match['function']}"


def summarize(folded: Path, top: int) -> str:
    self_samples: collections.Counter[str] = collections.Counter()
    total_samples: collections.Counter[str] = collections.Counter()
    all_samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short(f) for f in stack.split(";")]
        all_samples += int(count)
        self_samples[frames[-1]] += int(count)
        for frame in set(frames):
            total_samples[frame] += int(count)
    if not all_samples:
        return f"{folded}: no samples"
    lines = [f"{folded}: {all_samples} samples", "  self %  function"]
    lines += [f"  {n / all_samples:6.1%}  {f}" for f, n in self_samples.most_common(top)]
    lines += ["  total %  function"]
    lines += [f"  {n / all_samples:6.1%}  {f}" for f, n in total_samples.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for profile in args.profiles:
        print(summarize(profile, args.top))


if __name__ == "__main__":
    main()
