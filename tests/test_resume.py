"""Interrupted training resumes; training whose inputs changed starts fresh. Killed by a real signal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import SNAKEFILE, default_config, snakemake, write_config
from stopping import trainings_in


def slow_config() -> dict:
    """Long enough to interrupt (224 iterations), checkpoints every 40, all kept.

    Few epochs of many records: mmengine sleeps 2 s at every epoch boundary."""
    config = default_config()
    config["dataset"]["records"] = 896
    config["dataset"]["general_records"] = 0  # resuming is what is tested here, not what is learned
    config["base_model"]["general_skill"] = None
    config["base_model"]["tiny"].update(hidden_size=64, intermediate_size=128, num_layers=2)
    config["xtuner"].update(max_epochs=2, save_steps=40, save_total_limit=-1, evaluation_freq=10_000)
    return config


def run_and_interrupt(workdir: Path) -> list[str]:
    """Start the workflow, press Ctrl-C (SIGINT to its process group) once a checkpoint exists."""
    work = workdir / "results" / "train" / "work_dir"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), "--cores", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not list(work.glob("iter_*.pth")):
            assert proc.poll() is None, "the workflow ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) != 0
        shutil.copy(workdir / "logs" / "train.log", workdir / "logs" / "train.interrupted.log")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)
    assert not trainings_in(workdir), "XTuner training outlived the workflow"
    assert not (workdir / "results" / "train" / "final_checkpoint.pth").exists(), "training finished before the kill"
    return sorted(p.name for p in work.glob("iter_*.pth"))


def test_interrupted_training_resumes_from_newest_checkpoint(tmp_path: Path) -> None:
    write_config(tmp_path, slow_config())
    before = run_and_interrupt(tmp_path)
    assert before
    newest = max(before, key=lambda n: int(n[5:-4]))

    snakemake(tmp_path, "results/final_model", check=True)  # the same command again

    log = (tmp_path / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert f"xtflow: resuming from results/train/work_dir/{newest}" in log  # inside the run, wherever it is
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


# -- the work directory's generations, its lock, its checkpoint marker (xtflow.train; no training) ---------------------


def _generation(work: Path, fp: str, iteration: int, finished: bool = False) -> Path:
    """A work directory as a training of fingerprint `fp` leaves it, with a real (tiny) checkpoint."""
    import torch

    from xtflow.train import FINGERPRINT, FINISHED

    work.mkdir(parents=True)
    ckpt = work / f"iter_{iteration}.pth"
    torch.save({"state_dict": {"w": torch.zeros(4)}, "meta": {"iter": iteration}}, ckpt)
    # mmengine writes the absolute path: here one of another directory, as in a copied or moved run
    (work / "last_checkpoint").write_text(f"/elsewhere/results/train/work_dir/{ckpt.name}", encoding="utf-8")
    (work / FINGERPRINT).write_text(fp + "\n", encoding="utf-8")
    if finished:
        (work / FINISHED).write_text(ckpt.name + "\n", encoding="utf-8")
    return ckpt


def _plan():  # noqa: ANN202
    from xtflow.train import TrainPlan

    return TrainPlan(records=48, samples=48, packed=False, iters_per_epoch=6, max_epochs=8, warmup_iters=4)


def test_a_finished_training_of_the_same_inputs_is_reused(tmp_path: Path) -> None:
    from xtflow.train import prepare_work_dir

    work = tmp_path / "work_dir"
    ckpt = _generation(work, "same", 48, finished=True)
    said: list[str] = []
    start = prepare_work_dir(work, "same", _plan(), said.append)
    assert start.finished == ckpt and start.resume_from is None  # inside this work dir, not /elsewhere
    assert said == [
        f"xtflow: reusing the finished training in {work} (iter_48.pth): config, data and base model unchanged, "
        "nothing to retrain"
    ]


def test_a_reverted_change_swaps_the_previous_generation_back(tmp_path: Path) -> None:
    """work_dir holds a refused change's training, work_dir.stale the one of the restored inputs: that one is
    used again (finished: reused; unfinished: resumed), and the other becomes the stale generation."""
    from xtflow.train import prepare_work_dir

    work, stale = tmp_path / "work_dir", tmp_path / "work_dir.stale"
    _generation(work, "refused", 2)
    _generation(stale, "restored", 16)
    start = prepare_work_dir(work, "restored", _plan(), lambda line: None)
    assert start.resume_from == work / "iter_16.pth" and start.finished is None
    assert (stale / "iter_2.pth").is_file() and not (tmp_path / "work_dir.swap").exists()


def test_other_inputs_never_resume(tmp_path: Path) -> None:
    from xtflow.train import FINGERPRINT, prepare_work_dir

    work, stale = tmp_path / "work_dir", tmp_path / "work_dir.stale"
    _generation(work, "old", 16)
    start = prepare_work_dir(work, "new", _plan(), lambda line: None)
    assert start.resume_from is None and start.finished is None
    assert (stale / "iter_16.pth").is_file() and (work / FINGERPRINT).read_text() == "new\n"
    assert not list(work.glob("iter_*"))


def test_a_second_trainer_is_refused_until_the_first_process_dies(tmp_path: Path) -> None:
    """The lock of a training that was killed (SIGKILL: no clean-up ran) is free again: the kernel drops it."""
    import pytest

    from xtflow.errors import XtflowError
    from xtflow.train import work_dir_lock

    work = tmp_path / "results" / "train" / "work_dir"
    hold = (
        "import pathlib, time\n"
        "from xtflow.train import work_dir_lock\n"
        f"with work_dir_lock(pathlib.Path({str(work)!r})):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(XtflowError) as err:
            with work_dir_lock(work):
                pass
        assert str(err.value).startswith(f"{work} is in use by another training (started by process {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    with work_dir_lock(work):  # free again
        pass
