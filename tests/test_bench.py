"""The train benchmark measures what it trains, also when called again with the same work directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_train_bench  # noqa: E402


def resuming_train(*, work_dir: Path, log: Path, **_: object) -> None:
    """The train stage's contract that matters here, without XTuner's minutes: it resumes from a checkpoint
    left in its work dir, so a finished run trains (and logs) nothing more."""
    if (work_dir / "last_checkpoint").is_file():
        return
    log.write_text(
        "Iter(train) [ 2/2]  lr: 1.0000e-04  eta: 0:00:00  time: 0.5000  data_time: 0.0100  loss: 1.2345\n",
        encoding="utf-8",
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "last_checkpoint").write_text("iter_2.pth", encoding="utf-8")


def bench(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["gpu_train_bench.py", "--shape", "tiny", "--tokens", "4096", *args])
    gpu_train_bench.main()


def test_train_bench_called_again_with_the_same_work_dir_trains_again(tmp_path, monkeypatch):
    """The bench once kept its variants' work dirs, so a second GPU call with the same --work trained nothing
    and stopped on a NaN figure ("cannot convert float NaN to integer")."""
    monkeypatch.setattr(gpu_train_bench, "train", resuming_train)
    for call in ("first", "second"):
        bench(monkeypatch, "--variants", "stock", "--work", str(tmp_path / "work"), "--out", str(tmp_path / call))
        stock = json.loads((tmp_path / call / "results.json").read_text(encoding="utf-8"))["variants"]["stock"]
        assert stock["losses"] == {"2": 1.2345} and stock["tokens_per_s_per_gpu"] > 0, (call, stock)


def test_train_bench_stops_in_one_line_when_nothing_was_trained(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_train_bench, "train", lambda **_: None)
    with pytest.raises(SystemExit) as stop:
        bench(monkeypatch, "--variants", "stock", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"))
    assert str(stop.value).startswith("stock: no training iteration was logged in ") and "\n" not in str(stop.value)
