"""Interrupted training resumes; training whose inputs changed starts fresh. Killed by a real signal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import default_config, interrupt_once, snakemake, start_snakemake, write_config


def slow_config() -> dict:
    """Long enough to interrupt (224 iterations), checkpoints every 40, all kept.

    Few epochs of many records: mmengine sleeps 2 s at every epoch boundary."""
    config = default_config()
    config["dataset"]["records"] = 896
    config["dataset"]["general_records"] = 0  # resuming is what is tested here, not what is learned
    config["dataset"]["conversations"] = 0
    config["base_model"]["general_skill"] = None
    config["base_model"]["tiny"].update(hidden_size=64, intermediate_size=128, num_layers=2)
    config["xtuner"].update(max_epochs=2, save_steps=40, save_total_limit=-1, evaluation_freq=10_000)
    return config


def run_and_interrupt(workdir: Path) -> list[str]:
    """Start the workflow, press Ctrl-C (SIGINT to its process group) once a checkpoint exists."""
    before = interrupt_once(start_snakemake(workdir, "--cores", "1"), workdir, "results/train/work_dir/iter_*.pth")
    shutil.copy(workdir / "logs" / "train.log", workdir / "logs" / "train.interrupted.log")
    assert not (workdir / "results" / "train" / "final_checkpoint.pth").exists(), "training finished before the kill"
    return before


def test_interrupted_training_resumes_from_newest_checkpoint(tmp_path: Path) -> None:
    write_config(tmp_path, slow_config())
    before = run_and_interrupt(tmp_path)
    assert before
    newest = max(before, key=lambda n: int(n[5:-4]))

    snakemake(tmp_path, "results/final_model", check=True)  # the same command again

    log = (tmp_path / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert f"xtflow: resuming from {tmp_path}/results/train/work_dir/{newest}" in log
    assert f"resumed epoch: 0, iter: {newest[5:-4]}" in log
    work = tmp_path / "results" / "train" / "work_dir"
    after = {p.name for p in work.glob("iter_*.pth")}
    assert set(before) <= after, "a checkpoint that existed before the interruption was lost"
    assert "iter_224.pth" in after
    assert (tmp_path / "results" / "final_model" / "model.safetensors").is_file()


def test_changed_config_never_resumes_old_checkpoints(tmp_path: Path) -> None:
    config = slow_config()
    write_config(tmp_path, config)
    before = run_and_interrupt(tmp_path)
    config["xtuner"]["lr"] = 1.0e-3
    write_config(tmp_path, config)

    snakemake(tmp_path, "results/train/final_checkpoint.pth", check=True)

    log = (tmp_path / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    stale = tmp_path / "results" / "train" / "work_dir.stale"
    assert "made with another config, dataset or base model; moved them to" in log
    assert "resumed" not in log and "--resume" not in log
    assert sorted(p.name for p in stale.glob("iter_*.pth")) == before


def test_a_copied_work_dir_reads_its_own_newest_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mmengine records the newest checkpoint by its absolute path: in a copied or moved run directory that
    is the original's file (resumed from, or published, or missing once the original is gone)."""
    from xtflow.train import last_checkpoint

    original = tmp_path / "run" / "work_dir"
    original.mkdir(parents=True)
    (original / "iter_50.pth").write_bytes(b"weights")
    (original / "last_checkpoint").write_text(str(original / "iter_50.pth"), encoding="utf-8")
    copy = tmp_path / "copy" / "work_dir"
    shutil.copytree(original, copy)
    assert last_checkpoint(copy) == copy / "iter_50.pth"
    monkeypatch.chdir(tmp_path)  # a relative work dir (the rules' are): the path comes back absolute, as mmengine's
    assert last_checkpoint(copy.relative_to(tmp_path)) == copy / "iter_50.pth"
    shutil.rmtree(original)
    assert last_checkpoint(copy) == copy / "iter_50.pth"
