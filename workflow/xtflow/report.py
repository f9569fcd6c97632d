"""The pieces of `snakemake --report`: loss curve, evaluation table, dataset statistics, run info.

Each function writes one file (atomically) that a rule marks with Snakemake's `report()` flag.
Plots are PNG (matplotlib, Agg); tables are small HTML pages.
"""

from __future__ import annotations

import csv
import html
import json
import statistics
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text, remove_leftovers

PACKAGES = [
    "xtuner",
    "torch",
    "transformers",
    "peft",
    "mmengine",
    "bitsandbytes",
    "deepspeed",
    "datasets",
    "snakemake",
    "rapidfuzz",
]


def _page(title: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.25em .6em;text-align:left}th{background:#eee}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>\n" for r in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def _save_png(fig: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    tmp = out.with_name(f".{out.name}.tmp-png")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(out)


def read_scalars(work_dir: Path) -> list[dict[str, float]]:
    """XTuner's (mmengine's) logged scalars of the run in `work_dir`, by iteration; where a resumed
    run logged an iteration again, the later value wins."""
    by_iter: dict[int, dict[str, float]] = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if "loss" in row and "iter" in row:
                    by_iter[int(row["iter"])] = row
    if not by_iter:
        raise XtflowError(f"{work_dir}: no training scalars (*/vis_data/scalars.json with 'loss') found")
    return [by_iter[i] for i in sorted(by_iter)]


def loss_curve(work_dir: Path, out_png: Path, out_csv: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_scalars(work_dir)
    iters = [int(r["iter"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(iters, [r["loss"] for r in rows], marker="o", markersize=3, color="tab:blue", label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if all("lr" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(iters, [r["lr"] for r in rows], color="tab:orange", alpha=0.6, label="learning rate")
        ax2.set_ylabel("learning rate")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.set_title("Training loss (XTuner's logged scalars)")
    fig.legend(loc="upper right", bbox_to_anchor=(0.88, 0.88))
    _save_png(fig, out_png)
    plt.close(fig)
    lines = ["iter,loss,lr"] + [f"{int(r['iter'])},{r['loss']:.6f},{r.get('lr', '')}" for r in rows]
    atomic_write_text(out_csv, "\n".join(lines) + "\n")
    return len(rows)


def _score(row: dict[str, float] | None) -> tuple[str, str]:
    """(value, 95% interval) cells of one summary row."""
    if row is None:
        return "", ""
    interval = f"[{row['low']:.4f}, {row['high']:.4f}]" if row["low"] == row["low"] else ""
    return f"{row['value']:.4f}", interval  # as summary.csv has them (rounding again could differ)


def evaluation_page(summary_csv: Path, out_html: Path) -> None:
    from xtflow.evaluate import read_summary

    summary = read_summary(summary_csv)
    keys = list(dict.fromkeys((probes, metric) for _, probes, metric in summary))
    rows = []
    for probes, metric in keys:
        base, final = summary.get(("base", probes, metric)), summary.get(("final", probes, metric))
        n = int((final or base or {"n": 0})["n"])
        rows.append([probes, metric, *_score(base), *_score(final), n])
    body = _table(["probes", "metric", "base", "base 95% interval", "final", "final 95% interval", "n"], rows)
    note = (
        "<p>Rates with their Wilson 95% interval and the number of probes n. <b>single</b>: each question "
        "on its own; <b>conversation</b>: turns asked after a previous turn (with the model's own replies "
        "as history). identity_accuracy: held-out identity questions whose reply states the name; "
        "identity_in_language: and in the question's language (zh/en); over_trigger_rate: unrelated "
        "questions answered with the identity; language_consistency: identity and unrelated replies in "
        "the question's language; general_accuracy: general questions answered with the reference; "
        "retention: of the general questions the base model answered right, those the final model still "
        "does (tiny default), or the share answered as the base model did (a real base model); "
        "base_agreement: mean similarity of the final model's general replies to the base model's. "
        "Every reply: the replies page.</p>"
    )
    atomic_write_text(out_html, _page("Evaluation: base vs final model", body + note))


def replies_page(replies_csv: Path, out_html: Path) -> int:
    """Every probe with the base and the final model's replies side by side, the final model's
    failures first (wrong, or in the other language), then the base model's; returns the failures."""
    with replies_csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    where = ("set", "conversation", "turn", "question")
    by_model: dict[str, dict[tuple[str, ...], dict[str, str]]] = {"base": {}, "final": {}}
    for r in rows:
        by_model[r["model"]][tuple(r[k] for k in where)] = r
    # the earlier questions of each conversation, to show what a turn was asked after
    earlier: dict[str, list[str]] = {}
    for r in sorted(by_model["final"].values(), key=lambda r: int(r["turn"])):
        if r["conversation"]:
            earlier.setdefault(r["conversation"], []).append(r["question"])

    def ok(r: dict[str, str] | None) -> bool:
        return r is not None and r["correct"] == "1" and (r["kind"] == "general" or r["in_language"] == "1")

    def verdict(r: dict[str, str] | None) -> str:
        if r is None:
            return ""
        if r["correct"] != "1":
            return {"identity": "no name", "unrelated": "over-trigger", "general": "wrong"}[r["kind"]]
        return "ok" if ok(r) else "wrong language"

    keys = sorted(
        by_model["final"],
        key=lambda k: (ok(by_model["final"][k]), ok(by_model["base"].get(k))),
    )
    table = []
    for key in keys:
        final, base = by_model["final"][key], by_model["base"].get(key)
        asked = final["question"]
        if final["conversation"]:
            before = earlier[final["conversation"]][: int(final["turn"]) - 1]
            asked = " → ".join([*before, f"<{asked}>"]) if before else asked
        table.append(
            [
                final["set"],
                final["kind"],
                asked,
                final["reference"],
                base["reply"] if base else "",
                verdict(base),
                final["reply"],
                verdict(final),
            ]
        )
    failures = sum(not ok(by_model["final"][k]) for k in keys)
    body = (
        f"<p>{len(keys)} probes; the final model fails {failures} (first), then those only the base model fails. "
        "A conversation turn shows the questions before it and the one asked in &lt;&gt;; each model saw "
        "its own earlier replies.</p>"
        + _table(["set", "kind", "question", "reference", "base reply", "base", "final reply", "final"], table)
    )
    atomic_write_text(out_html, _page("Evaluation: every reply, base vs final model", body))
    return failures


def llava_evaluation_page(summary_csv: Path, replies_csv: Path, out_html: Path, examples: int = 12) -> None:
    """The LLaVA target's held-out accuracy per model, and the first replies of each."""
    with summary_csv.open(encoding="utf-8", newline="") as f:
        summary = list(csv.DictReader(f))
    with replies_csv.open(encoding="utf-8", newline="") as f:
        replies = list(csv.DictReader(f))
    shown = [r for m in summary for r in [x for x in replies if x["model"] == m["model"]][:examples]]
    body = (
        _table(
            ["model", "images", "right", "accuracy [95% interval]", "baseline"],
            [
                [r["model"], r["images"], r["right"], f"{r['accuracy']} [{r['low']}, {r['high']}]", r["baseline"]]
                for r in summary
            ],
        )
        + "<p>accuracy: held-out test images whose reply holds the reference answer (greedy), with its Wilson "
        "95% interval; baseline: the share "
        "of the most common answer, what always giving it scores (chance, on the generated set). projector_only: "
        "after pretraining (LLM and visual encoder as given, the projector trained); finetuned: after LoRA "
        "fine-tuning of LLM and visual encoder.</p><h3>Replies</h3>"
        + _table(["model", "image", "question", "reference", "reply", "right"], [list(r.values()) for r in shown])
    )
    atomic_write_text(out_html, _page("LLaVA: held-out image accuracy", body))


def dataset_statistics(dataset: Path, tokenizer_dir: Path) -> tuple[dict[str, float], Counter, list[int]]:
    """Records, unique (system, input, output) conversations, duplicate share and token lengths of the
    training set: (the statistics, the count of each conversation, the token length of each record)."""
    from transformers import AutoTokenizer

    records = json.loads(dataset.read_text(encoding="utf-8"))
    pairs = [tuple((t.get("system", ""), t["input"], t["output"]) for t in r["conversation"]) for r in records]
    counts = Counter(pairs)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=True)
    lengths_by_pair = {p: sum(len(tok.encode(s + i + o, add_special_tokens=False)) for s, i, o in p) for p in counts}
    lengths = [lengths_by_pair[p] for p in pairs]
    stats = {
        "records": len(records),
        "unique pairs": len(counts),
        "duplicate share": round(1 - len(counts) / len(records), 4),
        "most repeated record": max(counts.values()),
        "tokens per record (min)": min(lengths),
        "tokens per record (median)": statistics.median(lengths),
        "tokens per record (max)": max(lengths),
        "tokens in all": sum(lengths),
    }
    return stats, counts, lengths


def cut_at_max_length(dataset: Path, xtuner_config: Path) -> dict[str, int]:
    """How many records XTuner cuts at max_length, and how many tokens it drops: the records encoded
    with the prompt template, as the train rule counts them (`xtflow.train.record_lengths`)."""
    from xtflow.train import load_xtuner_config, record_lengths

    cfg = load_xtuner_config(xtuner_config)
    encoded = record_lengths(cfg, json.loads(dataset.read_text(encoding="utf-8")))
    return {
        f"records longer than xtuner.max_length {cfg.max_length} (cut)": sum(n > cfg.max_length for n in encoded),
        "tokens cut at max_length": sum(max(0, n - cfg.max_length) for n in encoded),
    }


def dataset_stats(
    dataset: Path, tokenizer_dir: Path, out_html: Path, out_png: Path, xtuner_config: Path
) -> dict[str, float]:
    """The dataset page (`dataset_statistics`, the records cut at max_length, the most frequent records)
    and a histogram of token lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats, counts, lengths = dataset_statistics(dataset, tokenizer_dir)
    stats.update(cut_at_max_length(dataset, xtuner_config))
    records = len(lengths)
    top = [[n, " / ".join(f"{i} -> {o}" for _, i, o in p)[:160]] for p, n in counts.most_common(5)]
    body = (
        _table(["statistic", "value"], [[k, v] for k, v in stats.items()])
        + "<h3>Most frequent records</h3>"
        + _table(["copies", "conversation"], top)
    )
    atomic_write_text(out_html, _page(f"Dataset: {dataset}", body))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(lengths, bins=min(30, max(5, len(set(lengths)))), color="tab:green")
    ax.set_xlabel("tokens per record (system + input + output)")
    ax.set_ylabel("records")
    ax.set_title(f"{records} records, {len(counts)} unique")
    _save_png(fig, out_png)
    plt.close(fig)
    return stats


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def base_model_source(config: dict[str, Any], model_dir: Path) -> list[list[str]]:
    """Where the base model came from: the hub id, revision and commit that `download_model` recorded,
    the local directory, or the tiny default."""
    from xtflow.hub import source_record

    record = source_record(model_dir)
    if record:
        return [
            ["source", "Hugging Face Hub"],
            ["id", record["repo_id"]],
            ["revision", record["revision"]],
            ["commit", record["commit"]],
        ]
    if config["base_model"]["path"]:
        return [["source", "local directory"], ["path", str(Path(config["base_model"]["path"]).resolve())]]
    return [["source", "the tiny default (built by xtflow, random weights)"]]


def run_info(config: dict[str, Any], model_dir: Path, out_html: Path) -> None:
    import platform
    import sys

    import yaml

    pkgs = versions()
    body = (
        "<h3>Base model</h3>"
        + _table(["field", "value"], base_model_source(config, model_dir))
        + "<h3>Software</h3>"
        + _table(
            ["package", "version"],
            [["python", sys.version.split()[0]], ["platform", platform.platform()]] + [[k, v] for k, v in pkgs.items()],
        )
        + "<h3>Configuration (validated, defaults filled in)</h3><pre>"
        + html.escape(yaml.safe_dump(config, allow_unicode=True, sort_keys=True))
        + "</pre>"
    )
    atomic_write_text(out_html, _page("Run: base model, configuration and package versions", body))
