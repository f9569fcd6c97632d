"""The train benchmark measures what it trains, also when called again with the same work directory."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_train_bench_called_again_with_the_same_work_dir_trains_again(tmp_path):
    """The train stage resumes from its work dir's last checkpoint. The bench once kept its variants' work
    dirs, so a second GPU call with the same --work trained nothing and stopped on a NaN figure."""
    cmd = [sys.executable, str(REPO / "bench" / "gpu_train_bench.py"), "--shape", "tiny", "--tokens", "8192"]
    cmd += ["--variants", "stock", "--work", str(tmp_path / "work")]
    for call in ("first", "second"):
        out = tmp_path / call
        done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        stock = json.loads((out / "results.json").read_text(encoding="utf-8"))["variants"]["stock"]
        assert stock["losses"] and stock["tokens_per_s_per_gpu"] > 0, (call, stock)
