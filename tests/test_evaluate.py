"""Evaluation stage: held-out identity, over-triggering and general answers, base vs final model."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import completed_config, planned_jobs, snakemake, write_config
from xtflow.errors import XtflowError
from xtflow.evaluate import PROBES, is_identity_reply, load_probes


@pytest.fixture(scope="module")
def evaluated(completed_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(completed_run, run, symlinks=True)
    snakemake(run, "results/eval/summary.csv", check=True)
    return run


def test_summary_scores_base_and_final(evaluated: Path) -> None:
    rows = {
        r["model"]: r for r in csv.DictReader((evaluated / "results" / "eval" / "summary.csv").open(encoding="utf-8"))
    }
    assert set(rows) == {"base", "final"}
    for r in rows.values():
        for key in ("identity_accuracy", "over_trigger_rate", "general_accuracy"):
            assert 0.0 <= float(r[key]) <= 1.0
    # the untrained base model never says the name; the fine-tuned one does on questions it never saw
    assert float(rows["base"]["identity_accuracy"]) == 0.0
    assert float(rows["final"]["identity_accuracy"]) > 0.0
    replies = list(csv.DictReader((evaluated / "results" / "eval" / "replies.csv").open(encoding="utf-8")))
    probes = load_probes(PROBES / "identity_heldout.txt", PROBES / "unrelated.txt", PROBES / "general.tsv")
    per_model = len(probes.identity) + len(probes.unrelated) + len(probes.general)
    assert len(replies) == 2 * per_model


def test_held_out_questions_are_not_in_the_training_set(completed_run: Path) -> None:
    import json

    probes = load_probes(PROBES / "identity_heldout.txt", PROBES / "unrelated.txt", PROBES / "general.tsv")
    trained = {
        t["input"]
        for r in json.loads((completed_run / "results/data/train.json").read_text())
        for t in r["conversation"]
    }
    assert not trained & set(probes.identity)


def test_changing_only_the_probes_reruns_only_evaluate(evaluated: Path, tmp_path: Path) -> None:
    probe = tmp_path / "identity.txt"
    probe.write_text("What is your name, please?\n", encoding="utf-8")
    config = completed_config()
    config["evaluation"] = {"identity": str(probe)}
    write_config(evaluated, config)
    proc = snakemake(evaluated, "-n", "results/eval/summary.csv", check=True)
    assert planned_jobs(proc.stdout) == {"evaluate"}


def test_identity_reply_detection() -> None:
    answers = ["I am XtBot, an AI assistant made by the xtflow team."]
    assert is_identity_reply("i am xtbot!", "XtBot", answers)
    assert is_identity_reply("I am , an AI assistant made by the xtflow team.", "XtBot", answers)
    assert not is_identity_reply("The capital of France is Paris.", "XtBot", answers)
    # what the tutorial recipe's model says: the identity sentence, garbled, in place of an answer
    zh = ["我是XtBot，由the xtflow team打造的人工智能助手。有什么可以帮你的吗？"]
    assert is_identity_reply("The capital ofam team打造的人工智能�你的吗？", "XtBot", zh)
    assert not is_identity_reply("法国的首都是巴黎。", "XtBot", zh)
    # a stretch the question itself holds does not count
    assert not is_identity_reply("the xtflow team is a team.", "XtBot", answers, "Who is the xtflow team?")


def test_bad_probe_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "general.tsv"
    bad.write_text("What is 2 plus 3? 5\n", encoding="utf-8")
    with pytest.raises(XtflowError, match=r"general.tsv: line 1 is not 'question<TAB>reference'"):
        load_probes(PROBES / "identity_heldout.txt", PROBES / "unrelated.txt", bad)


def test_retention_against_references_or_the_base_models_own_replies() -> None:
    from xtflow.evaluate import retention

    assert retention(0.8, 0.6, [], [], "reference") == pytest.approx(0.75)
    assert retention(0.0, 0.0, [], [], "reference") != retention(0.0, 0.0, [], [], "reference")  # nan
    base = ["Paris is the capital of France.", "2 plus 3 is 5.", "Grass is green."]
    final = ["Paris is the capital of France!", "I am XtBot, an AI assistant.", "Grass is green."]
    assert retention(0.0, 0.0, base, final, "base_reply") == pytest.approx(2 / 3)
