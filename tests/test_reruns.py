"""Precise reruns: after a completed run, a config change reruns exactly the stages that depend on it.

One test per row of the README's table "What a change reruns".
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    HUB_ID,
    HUB_RUN_TARGETS,
    USER_RECORDS,
    HubRun,
    closed_port,
    completed_config,
    dry_run_with,
    hub_config,
    hub_env,
    planned_jobs,
    set_key,
    snakemake,
)
from fakehub import FakeHub, repo_from_dir

DOWNSTREAM_OF_DATA = {"dataset", "train", "adapter", "merge"}
DOWNSTREAM_OF_HYPERPARAMS = {"xtuner_config", "train", "adapter", "merge"}


def _dry_run_with(completed_run: Path, tmp_path: Path, change: dict[str, Any], *extra: str) -> set[str]:
    # the README's table is about results/final_model (the default target adds evaluation and report)
    output = dry_run_with(completed_run, tmp_path, change, *(extra or ["results/final_model"]))
    jobs = planned_jobs(output)
    if not jobs:
        assert "Nothing to be done" in output
    return jobs


ROWS = [
    ("dataset: assistant name", {"assistant.name": "Other"}, DOWNSTREAM_OF_DATA),
    ("dataset: questions", {"dataset.questions.en": ["Who are you?"]}, DOWNSTREAM_OF_DATA),
    # 128 is also general_records': Snakemake compares params as a set of values, so only names tell them apart
    ("dataset: record count", {"dataset.records": 128}, DOWNSTREAM_OF_DATA),
    (
        "dataset: name and maker swapped",
        {"assistant.name": "the xtflow team", "assistant.maker": "XtBot"},
        DOWNSTREAM_OF_DATA,
    ),
    ("dataset: seed", {"dataset.seed": 7}, DOWNSTREAM_OF_DATA),
    ("dataset: general records", {"dataset.general_records": 16}, DOWNSTREAM_OF_DATA),
    ("dataset: conversations", {"dataset.conversations": 6}, DOWNSTREAM_OF_DATA),
    ("hyperparameter: lr", {"xtuner.lr": 1.0e-3}, DOWNSTREAM_OF_HYPERPARAMS),
    ("hyperparameter: epochs", {"xtuner.max_epochs": 2}, DOWNSTREAM_OF_HYPERPARAMS),
    ("hyperparameter: LoRA rank", {"xtuner.lora.r": 4}, DOWNSTREAM_OF_HYPERPARAMS),
    ("hyperparameter: max_length", {"xtuner.max_length": 200}, DOWNSTREAM_OF_HYPERPARAMS),
    ("adapter export: fp32", {"adapter.fp32": True}, {"adapter", "merge"}),
    ("adapter export: shard size", {"adapter.max_shard_size": "1GB"}, {"adapter", "merge"}),
    ("merge setting: shard size", {"merge.max_shard_size": "1GB"}, {"merge"}),
    (
        "base model",
        {"base_model.tiny.seed": 1},
        {"base_model", "general_skill", "xtuner_config", "train", "adapter", "merge"},
    ),
    (
        "general skill",
        {"base_model.general_skill.epochs": 20},
        {"general_skill", "xtuner_config", "train", "adapter", "merge"},
    ),
    ("recipe", {"recipe": "tutorial"}, DOWNSTREAM_OF_DATA | DOWNSTREAM_OF_HYPERPARAMS),
    ("nothing", {}, set()),
    ("runtime only: log interval", {"train.log_interval": 1}, set()),
]


@pytest.mark.parametrize("label,change,expected", ROWS, ids=[r[0] for r in ROWS])
def test_change_reruns_exactly(completed_run: Path, tmp_path: Path, label: str, change: dict, expected: set) -> None:
    assert _dry_run_with(completed_run, tmp_path, change) == expected


def test_threads_rerun_nothing(completed_run: Path, tmp_path: Path) -> None:
    assert _dry_run_with(completed_run, tmp_path, {}, "--cores", "2") == set()


def test_user_data_file_contents_rerun_data_downstream(completed_run: Path, tmp_path: Path) -> None:
    """Editing a user dataset file (same path) reruns the dataset and what follows from it."""
    copy = tmp_path / "run"
    shutil.copytree(completed_run, copy, symlinks=True)
    extra = copy / "data" / "extra.json"
    extra.parent.mkdir()
    extra.write_text(json.dumps(USER_RECORDS), encoding="utf-8")
    config = set_key(completed_config(), "dataset.files", ["data/extra.json"])
    (copy / "config" / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    snakemake(copy, "results/data/train.json", check=True)  # the dataset with the file as it is
    assert planned_jobs(snakemake(copy, "-n", "results/data/train.json", check=True).stdout) == set()

    later = extra.stat().st_mtime + 60
    extra.write_text(json.dumps(USER_RECORDS[:2]), encoding="utf-8")
    os.utime(extra, (later, later))
    proc = snakemake(copy, "-n", "results/data/train.json", check=True)
    assert planned_jobs(proc.stdout) == {"dataset"}  # the edit alone makes the dataset stale
    assert planned_jobs(snakemake(copy, "-n", "results/final_model", check=True).stdout) == DOWNSTREAM_OF_DATA


def test_hub_revision_reruns_the_download_and_downstream(hub_run: HubRun, tmp_path: Path) -> None:
    """A hub model's revision (here pinned to the very commit in use: a change of config all the same). The hub
    run stops after train: adapter and merge follow train as in the rows above; run_info shows the config."""
    config = hub_config()
    config["base_model"]["revision"] = hub_run.commit
    override = tmp_path / "changed.yaml"
    override.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = hub_env(hub_run.hf_home, closed_port(), offline=True)
    proc = snakemake(hub_run.workdir, "-n", *HUB_RUN_TARGETS, "--configfile", str(override), env=env, check=True)
    assert planned_jobs(proc.stdout) == {"download_model", "xtuner_config", "train", "run_info"}


def test_new_commit_on_the_hub_reruns_nothing(hub_run: HubRun) -> None:
    """`main` moved on the hub: the run keeps the commit it fetched, and does not even ask."""
    moved = repo_from_dir(hub_run.model, **{"generation_config.json": b'{"max_new_tokens": 7}'})
    with FakeHub({HUB_ID: moved}) as fake:
        env = hub_env(hub_run.hf_home, fake.endpoint, offline=False)
        proc = snakemake(hub_run.workdir, "-n", *HUB_RUN_TARGETS, env=env, check=True)
    assert planned_jobs(proc.stdout) == set() and "Nothing to be done" in proc.stdout + proc.stderr
    assert fake.requests == []
