"""Shared helpers: run the real workflow with real Snakemake in a temporary project directory."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))

# The xtflow of this checkout, in the tests and in every process they start (not another copy
# that happens to be installed).
sys.path.insert(0, str(REPO / "workflow"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "workflow"), os.environ.get("PYTHONPATH")]))
# Where SLURM's client is installed but no controller answers, the SLURM executor plugin waits 10 s
# for `scontrol show config` at every Snakemake start, local runs included (README Troubleshooting).
# An empty SLURM config makes scontrol fail at once; tests/test_slurm.py points it at its cluster.
os.environ["SLURM_CONF"] = "/dev/null"


def default_config() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CONFIG)


def set_key(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set config['a']['b'] = value for dotted key 'a.b' (creating sections); returns config."""
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return config


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    """Lay out a user's project: <workdir>/config/config.yaml."""
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def snakemake(workdir: Path, *args: str, timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    """Run real Snakemake on the xtflow Snakefile in `workdir`; bounded so a hang fails the test."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), "--cores", "1", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


USER_RECORDS = [
    {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}, {"role": "assistant", "content": f"{a + b}"}]}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
]


def completed_config() -> dict[str, Any]:
    """The config of the shared completed run: the embedded default exactly as shipped."""
    return default_config()


def planned_jobs(output: str) -> set[str]:
    """The jobs of a dry run, from Snakemake's 'Job stats' table (the `all` target left out)."""
    lines = output.splitlines()
    if not any("Job stats:" in ln for ln in lines):
        return set()
    start = next(i for i, ln in enumerate(lines) if "Job stats:" in ln) + 3
    jobs = set()
    for ln in lines[start:]:
        parts = ln.split()
        if not parts or parts[0] == "total":
            break
        jobs.add(parts[0])
    return jobs - {"all"}


def quick_config() -> dict[str, Any]:
    """The smallest run through every stage (.test/config/config.yaml over the embedded default)."""
    return yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One run of .test/config/config.yaml through results/final_model (24 iterations, no general
    skill), shared by the tests that inspect it (never modify it; copy it), with Snakemake's output."""
    workdir = tmp_path_factory.mktemp("quick")
    write_config(workdir, quick_config())
    return workdir, snakemake(workdir, "results/final_model", check=True, timeout=900)


@pytest.fixture(scope="session")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full run of the embedded default: the default target (final model, evaluation, the
    report's pieces), shared by the tests that inspect it (never modify it)."""
    workdir = tmp_path_factory.mktemp("run")
    write_config(workdir, completed_config())
    snakemake(workdir, check=True, timeout=1500)
    return workdir
