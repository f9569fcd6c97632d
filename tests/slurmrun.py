"""The workflow on a real SLURM: a single-node cluster brought up on this machine from Debian's packages
(munge, MariaDB + slurmdbd, slurmctld, slurmd, two fake GPUs; tests/slurm/cluster.sh), the workflow submitted
through the repository's SLURM profile, and what sacct recorded of its jobs. tests/test_slurm.py checks it;
conftest.py builds it in the background (BACKGROUND_TASKS) while other tests run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"

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


@dataclass(frozen=True)
class SlurmRun:
    workdir: Path
    returncode: int
    output: str  # Snakemake's stdout and stderr, the end of each
    jobs: dict[str, dict[str, str]]  # sacct's record of each job, by rule: id, state, tres


def cluster_env() -> dict[str, str]:
    """The environment of SLURM's clients on the test cluster (conftest points every other test's at an
    empty config)."""
    return {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}


def sacct_since(start: str) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-a", "-n", "-P", "-X", "-S", start, "--format=JobID,Comment,State,AllocTRES"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=cluster_env(),
    ).stdout
    rows = [dict(zip(["id", "comment", "state", "tres"], ln.split("|"))) for ln in out.splitlines() if ln.strip()]
    return {row.pop("comment").removeprefix("rule_"): row for row in rows}


def run_on_slurm(workdir: Path, running: list[subprocess.Popen]) -> SlurmRun:
    """Bring the cluster up, run the workflow in `workdir` (a project with its config/config.yaml) through the
    SLURM profile, read sacct, take the cluster down. The Snakemake process is put in `running` while it runs
    (so a session that ends early can stop it)."""
    env = cluster_env()
    up = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=180, env=env)
    try:
        if up.returncode != 0:
            raise AssertionError(f"the SLURM cluster did not come up:\n{up.stdout}{up.stderr}")
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 2))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        cmd += ["--profile", str(PROFILE), *LOCAL_OVERRIDES]
        with (workdir.parent / "snakemake.log").open("w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            running.append(proc)
            try:
                proc.wait(timeout=900)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            finally:
                running.remove(proc)
            log.seek(0)
            output = log.read()
        return SlurmRun(workdir, proc.returncode, output[-8000:], sacct_since(start))
    finally:
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, text=True, timeout=120, env=env)
