"""Shared helpers: run the real workflow with real Snakemake in a temporary project directory."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass
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


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """Real Snakemake on the xtflow Snakefile in `workdir`, one core."""
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), "--cores", "1", *args]


def snakemake_env(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The tests' environment for Snakemake: offline unless `env` says otherwise (variables to set, or to
    remove where None)."""
    run_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for key, value in (env or {}).items():
        if value is None:
            run_env.pop(key, None)
        else:
            run_env[key] = value
    return run_env


def snakemake(
    workdir: Path, *args: str, timeout: float = 900, check: bool = False, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Run real Snakemake on the xtflow Snakefile in `workdir`; bounded so a hang fails the test.
    Offline unless `env` says otherwise (`env`: variables to set, or to remove where None)."""
    cmd = snakemake_command(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=snakemake_env(env), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run as a user makes one (`cp -a`: links, hard links and times kept)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True, timeout=300)
    return dst


def chat(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m xtflow.chat --workdir WORKDIR ARGS...`, its output captured."""
    cmd = [sys.executable, "-m", "xtflow.chat", "--workdir", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


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
    """One run of .test/config/config.yaml through results/final_model (48 iterations, no general
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


# -- a base model from the Hugging Face Hub (tests/fakehub.py stands in for the hub) ----------------------------------
HUB_ID = "internlm/internlm2-chat-1_8b"  # the real model's id; the fake hub serves a tiny model under it
HUB_RUN_TARGETS = ("results/train/final_checkpoint.pth", "results/report/run.html")


def hub_env(hf_home: Path, endpoint: str, offline: bool) -> dict[str, str | None]:
    """The hub client's settings for Snakemake and its jobs: its own cache (HF_HOME), the endpoint, offline or not."""
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": None,
        "HUGGINGFACE_HUB_CACHE": None,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "1" if offline else None,
        "TRANSFORMERS_OFFLINE": None,
    }


def closed_port() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (connections are refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def hub_config() -> dict[str, Any]:
    """The smallest run (.test/config/config.yaml: 48 identity records and 48 conversations x 4 epochs = 48
    iterations) on the hub model."""
    config = quick_config()
    config["base_model"]["path"] = HUB_ID
    return config


@dataclass(frozen=True)
class HubRun:
    workdir: Path  # a run through train and run_info on the downloaded model (the later stages read its files alike)
    hf_home: Path  # the hub client's cache it filled
    model: Path  # what the fake hub served
    commit: str  # the commit the fake hub served
    endpoint: str  # the fake hub's address (stopped now: connections are refused)
    requests: list[tuple[str, str, str | None]]  # what the fake hub was asked
    stderr: str  # Snakemake's


@pytest.fixture(scope="session")
def hub_run(tmp_path_factory: pytest.TempPathFactory) -> HubRun:
    """`base_model.path: internlm/internlm2-chat-1_8b` with the hub reachable (the fake one, serving a tiny
    model) and an empty cache: the real client downloads it, and the workflow trains on it. It stops after the
    train stage: adapter and merge read resources/base_model as train does, a directory of links as every
    local model's (tests/test_recipes.py runs them on one)."""
    from fakehub import FakeHub, repo_from_dir
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model

    root = tmp_path_factory.mktemp("hub")
    model = root / "served"
    build_tiny_model(TinyModelSpec(1024, 64, 128, 2, 4, 1024, 0), model)
    repo = repo_from_dir(model)
    workdir, hf_home = root / "run", root / "hf_home"
    write_config(workdir, hub_config())
    with FakeHub({HUB_ID: repo}) as hub:
        env = hub_env(hf_home, hub.endpoint, offline=False)
        proc = snakemake(workdir, HUB_RUN_TARGETS[0], HUB_RUN_TARGETS[1], env=env, check=True)
    return HubRun(workdir, hf_home, model, repo.commit, hub.endpoint, list(hub.requests), proc.stderr)
