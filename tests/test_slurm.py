"""The SLURM profile on a real SLURM: a single-node cluster brought up on this machine from Debian's
packages (munge, MariaDB + slurmdbd, slurmctld, slurmd, two fake GPUs), the tiny workflow submitted
through snakemake-executor-plugin-slurm, every stage checked in sacct."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, SNAKEFILE, default_config, write_config

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
STAGES = ["dataset", "base_model", "general_skill", "xtuner_config", "train", "adapter", "merge"]

# Overrides for this 2-core, 24 GiB one-node cluster only: the profile's train/merge sizes exceed it.
LOCAL_OVERRIDES = [
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--set-resources",
    "train:mem_mb=4000",
    "train:cpus_per_task=2",
    "adapter:mem_mb=4000",
    "merge:mem_mb=4000",
    "base_model:mem_mb=2000",
    # the CPU run asks for one (fake) GPU, to prove the request reaches sbatch and the job sees it
    "train:gpu=1",
    "--set-threads",
    "train=2",
]


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    # conftest points the other tests' SLURM clients at an empty config; these use the cluster's
    saved = os.environ.pop("SLURM_CONF", None)
    up = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=180, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, text=True, timeout=120, check=False)
        if saved is not None:
            os.environ["SLURM_CONF"] = saved


def sacct_since(start: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-a", "-n", "-P", "-X", "-S", start, "--format=JobID,Comment,State,AllocTRES"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [dict(zip(["id", "comment", "state", "tres"], ln.split("|"))) for ln in out.splitlines() if ln.strip()]


def test_workflow_runs_as_slurm_jobs(slurm_cluster: None, completed_run: Path, tmp_path: Path) -> None:
    config = default_config()  # every stage, shortened: how the jobs run is tested here, not what they learn
    config["base_model"]["general_skill"]["epochs"] = 10
    config["base_model"]["tiny"].update(hidden_size=64, intermediate_size=128, num_layers=2)
    config["xtuner"]["max_epochs"] = 2
    write_config(tmp_path, config)
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
    cmd = [
        "timeout",
        "-k",
        "10",
        "900",
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(tmp_path),
        "--profile",
        str(PROFILE),
        *LOCAL_OVERRIDES,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=960, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    jobs = {j["comment"].removeprefix("rule_"): j for j in sacct_since(start)}
    assert set(STAGES) <= set(jobs), f"sacct lists {sorted(jobs)}"
    for stage in STAGES:
        assert jobs[stage]["state"] == "COMPLETED", jobs[stage]
    assert "gres/gpu=1" in jobs["train"]["tres"], jobs["train"]
    assert "gres/gpu" not in jobs["dataset"]["tres"]

    # the same kind of artifacts as a local run
    for out in ("results/final_model", "results/hf_adapter"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == sorted(
            p.name for p in (completed_run / out).iterdir()
        )
    assert (tmp_path / "results" / "train" / "final_checkpoint.pth").is_file()


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
