"""Time a no-op run and a dry run of the workflow on a completed run directory.

    python bench/snakemake_overhead.py [WORKDIR] [REPEATS]

WORKDIR must hold a completed run (e.g. after `make demo`, the repository root).
Prints the median and range of each, in seconds.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or "Nothing to be done" not in proc.stdout + proc.stderr:
        sys.exit(f"not a completed run (or it failed):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    for label, extra in [("no-op run", ["--cores", "1"]), ("dry run", ["-n"])]:
        times = [timed(base + extra) for _ in range(repeats)]
        print(
            f"{label:10s} median {statistics.median(times):.2f} s  "
            f"(min {min(times):.2f}, max {max(times):.2f}, n={repeats})"
        )


if __name__ == "__main__":
    main()
