"""The SLURM profile on a real SLURM: a single-node cluster brought up on this machine from Debian's
packages (munge, MariaDB + slurmdbd, slurmctld, slurmd, two fake GPUs), the tiny workflow submitted
through snakemake-executor-plugin-slurm, every stage checked in sacct."""

from __future__ import annotations

from pathlib import Path

from conftest import default_config, write_config
from slurmrun import SlurmRun

STAGES = ["dataset", "base_model", "general_skill", "xtuner_config", "train", "adapter", "merge"]


def test_workflow_runs_as_slurm_jobs(slurm_run: SlurmRun, completed_run: Path) -> None:
    """conftest.slurm_config() (every stage, shortened) through the SLURM profile, built in the background."""
    assert slurm_run.returncode == 0, slurm_run.output
    jobs = slurm_run.jobs
    assert set(STAGES) <= set(jobs), f"sacct lists {sorted(jobs)}"
    for stage in STAGES:
        assert jobs[stage]["state"] == "COMPLETED", jobs[stage]
    assert "gres/gpu=1" in jobs["train"]["tres"], jobs["train"]
    assert "gres/gpu" not in jobs["dataset"]["tres"]

    # the same kind of artifacts as a local run
    run = slurm_run.workdir
    for out in ("results/final_model", "results/hf_adapter"):
        assert sorted(p.name for p in (run / out).iterdir()) == sorted(p.name for p in (completed_run / out).iterdir())
    assert (run / "results" / "train" / "final_checkpoint.pth").is_file()


def test_gpu_requests_come_from_config(tmp_path: Path) -> None:
    """train.gpus, gpu_request and gpu_model decide what the executor is asked for (both styles)."""
    from conftest import snakemake

    base = default_config()
    base["xtuner"].update(device="cuda", dtype="bfloat16", load_in_4bit=True)
    base["merge"]["device"] = "cuda"
    for request, expected_train, expected_merge in [
        ("gpus", "gpu=2, gpu_model=a100, gres=", "gpu=1, gpu_model=a100, gres="),
        ("gres", "gpu=0, gpu_model=, gres=gpu:a100:2", "gpu=0, gpu_model=, gres=gpu:a100:1"),
    ]:
        base["train"].update(gpus=2, gpu_request=request, gpu_model="a100")
        write_config(tmp_path, base)
        out = snakemake(tmp_path, "-n", check=True).stdout
        blocks = {b.split(":")[0].strip(): b for b in out.split("rule ")[1:]}
        assert expected_train in blocks["train"] and expected_merge in blocks["merge"]
        assert "gpu=" not in blocks["dataset"]
