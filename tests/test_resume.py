"""The training's work directory (xtflow.train, no training here): an interrupted training of the same inputs
resumes, a finished one is reused, checkpoints of other inputs never resume, one trainer at a time.

The same with real signals, a real XTuner training and a renamed, moved project: tests/test_hostile_inputs.py
(`stopped-training-resumes`, `stopped-changed-inputs`, `runtime-second-trainer`, `stopped-in-every-stage`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
