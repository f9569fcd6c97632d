"""The two recipes compared end to end on CPU: real Snakemake, real XTuner training of the embedded
default, evaluation of base vs final model, and Snakemake's own report.

balanced (the default config as shipped) must know who it is on held-out questions without
answering everything with it and keep its general answers; tutorial (one question, 10,000 identical
records, the tutorial's settings) must reproduce the tutorial's failure.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

import pytest

from conftest import default_config, planned_jobs, snakemake, write_config
from xtflow.evaluate import PROBES, read_summary
from xtflow.general_set import general_probes_tsv, general_qa
from xtflow.settings import validate


@pytest.fixture(scope="session")
def balanced_run(completed_run: Path) -> Path:
    """The embedded default exactly as shipped (recipe: balanced), through the evaluation and the
    report's pieces: the shared completed run."""
    return completed_run


def summary(run: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    return read_summary(run / "results" / "eval" / "summary.csv")


def train_seconds(run: Path) -> float:
    with (run / "benchmarks" / "train.tsv").open(encoding="utf-8") as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["s"])


def test_base_model_has_a_general_skill_to_lose(balanced_run: Path) -> None:
    s = summary(balanced_run)
    assert s[("base", "single", "general_accuracy")]["value"] >= 0.9
    assert s[("base", "single", "identity_accuracy")]["value"] == 0.0
    assert "general skill" in (balanced_run / "logs" / "general_skill.log").read_text(encoding="utf-8")


@pytest.mark.xfail(
    strict=True,
    reason="issue 19: on the new held-out probes the tiny default's balanced recipe reaches over-trigger "
    "0.125 [0.083, 0.184] and identity 0.53, not the targets (docs/evaluation.md); strict, so a recipe "
    "that meets them fails this mark and the mark must go",
)
def test_balanced_recipe_meets_the_thresholds(balanced_run: Path) -> None:
    """Issue 19's targets on the shipped held-out probes (README "Two recipes"); over-triggering is
    judged on the upper end of its 95% interval, alone and after a previous turn."""
    s = summary(balanced_run)
    final = {(probes, metric): row for (model, probes, metric), row in s.items() if model == "final"}
    assert final[("single", "identity_in_language")]["value"] >= 0.95, final
    assert final[("single", "over_trigger_rate")]["high"] <= 0.10, final
    assert final[("conversation", "over_trigger_rate")]["high"] <= 0.10, final
    assert final[("single", "language_consistency")]["value"] >= 0.95, final
    assert final[("single", "retention")]["value"] >= 0.9, final


def test_tutorial_recipe_reproduces_the_tutorials_failure(balanced_run: Path, tutorial_run: Path) -> None:
    tutorial, balanced = summary(tutorial_run), summary(balanced_run)
    for probes in ("single", "conversation"):
        over = ("final", probes, "over_trigger_rate")
        assert tutorial[over]["value"] >= 0.5, tutorial[over]
        assert tutorial[over]["low"] > balanced[over]["high"]  # the intervals do not overlap
    kept = ("final", "single", "retention")
    assert tutorial[kept]["high"] < balanced[kept]["low"]


def test_balanced_trains_in_less_time_than_tutorial(balanced_run: Path, tutorial_run: Path) -> None:
    assert train_seconds(balanced_run) < train_seconds(tutorial_run)


def test_tutorial_data_is_one_question_ten_thousand_times(tutorial_run: Path) -> None:
    records = json.loads((tutorial_run / "results" / "data" / "train.json").read_text(encoding="utf-8"))
    assert len(records) == 10_000
    assert {json.dumps(r, ensure_ascii=False) for r in records} == {json.dumps(records[0], ensure_ascii=False)}
    assert records[0]["conversation"][0]["input"] == "请你介绍一下你自己"
    page = (tutorial_run / "results" / "report" / "dataset.html").read_text(encoding="utf-8")
    assert "<td>unique pairs</td><td>1</td>" in page and "<td>duplicate share</td><td>0.9999</td>" in page


def test_balanced_data_has_no_duplicates_and_mixes_general_records(balanced_run: Path) -> None:
    records = json.loads((balanced_run / "results" / "data" / "train.json").read_text(encoding="utf-8"))
    single = [
        (r["conversation"][0]["input"], r["conversation"][0]["output"]) for r in records if len(r["conversation"]) == 1
    ]
    assert len(single) == len(set(single))
    general = {(q.question, q.answer) for q in general_qa()}
    assert len(general & set(single)) == default_config()["dataset"]["general_records"]
    assert sum(len(r["conversation"]) == 3 for r in records) == default_config()["dataset"]["conversations"] > 0


def test_report_holds_loss_curve_table_stats_and_versions(balanced_run: Path) -> None:
    import numpy as np
    from PIL import Image

    loss = list(csv.DictReader((balanced_run / "results" / "report" / "loss.csv").open(encoding="utf-8")))
    assert len(loss) >= 10 and float(loss[-1]["loss"]) < float(loss[0]["loss"])
    for png in ("loss.png", "token_lengths.png"):
        image = np.asarray(Image.open(balanced_run / "results" / "report" / png).convert("L"), dtype=float)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 10  # a drawn plot, not blank
    page = (balanced_run / "results" / "report" / "evaluation.html").read_text(encoding="utf-8")
    settings = {
        (probes, metric) for _, probes, metric in read_summary(balanced_run / "results" / "eval" / "summary.csv")
    }
    assert "<td>conversation</td><td>over_trigger_rate</td>" in page and "95% interval" in page
    assert page.count("<tr>") == 1 + len(settings)  # a header, then base and final side by side per row
    replies = (balanced_run / "results" / "report" / "replies.html").read_text(encoding="utf-8")
    assert "<th>base reply</th>" in replies and "<th>final reply</th>" in replies
    run = (balanced_run / "results" / "report" / "run.html").read_text(encoding="utf-8")
    assert re.search(r"<td>xtuner</td><td>0\.2\.0</td>", run) and "recipe: balanced" in run

    # the whole report without naming a target (the default target builds every piece)
    proc = snakemake(balanced_run, "--report", "report.zip", check=True)
    assert "Report created" in proc.stdout + proc.stderr
    with zipfile.ZipFile(balanced_run / "report.zip") as report:
        names = "\n".join(report.namelist())
    pieces = ("loss.png", "token_lengths.png", "evaluation.html", "replies.html", "dataset.html", "run.html")
    for name in (*pieces, "report.html"):
        assert name in names, names


def test_changing_only_the_probes_reruns_only_evaluate_and_its_page(balanced_run: Path, tmp_path: Path) -> None:
    probe = tmp_path / "unrelated.txt"
    probe.write_text("What is the colour of the sea?\n", encoding="utf-8")
    config = default_config()
    config["evaluation"]["unrelated"] = str(probe)
    write_config(tmp_path, config)
    override = tmp_path / "config" / "config.yaml"
    proc = snakemake(balanced_run, "-n", "report_files", "--configfile", str(override), check=True)
    # run_info shows the configuration, so it is redone too; training and the models are not
    assert planned_jobs(proc.stdout) == {"evaluate", "evaluation_page", "replies_page", "run_info", "report_files"}


def test_shipped_general_probes_are_the_general_set() -> None:
    assert (PROBES / "general.tsv").read_text(encoding="utf-8") == general_probes_tsv()


def test_tutorial_recipe_replaces_data_and_schedule_keeps_the_rest() -> None:
    cfg = validate(
        {"recipe": "tutorial", "xtuner": {"lr": 1.0e-3, "device": "cpu", "dtype": "float32", "load_in_4bit": False}}
    )
    assert cfg["dataset"]["records"] == 10_000
    assert cfg["dataset"]["questions"] == {"en": [], "zh": ["请你介绍一下你自己"]}
    assert cfg["dataset"]["general_records"] == 0
    xt = cfg["xtuner"]
    assert (
        xt["max_length"],
        xt["pack_to_max_length"],
        xt["batch_size"],
        xt["accumulative_counts"],
        xt["max_epochs"],
    ) == (1024, True, 1, 16, 2)
    assert xt["lr"] == 1.0e-3  # the model's optimizer settings stay the config's
