"""Held-out image accuracy of the LLaVA target: the projector-only model (after pretraining) against the
fine-tuned one, on the test split (images never trained on).

Each test record's first human turn is asked about its image (greedy, bounded replies); a reply is right
when it contains the record's first answer as whole words, case and punctuation aside ("Red." is right
in "The colour is red"). Each accuracy comes with its Wilson 95% interval (as the text pipeline's rates)
and the baseline: the share of the most common answer, what always giving it scores (1/6 on the
generated set, whose six colours are balanced: chance).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

from xtflow.evaluate import csv_text, wilson
from xtflow.fsutil import atomic_write_text
from xtflow.llava_dataset import IMAGE_TOKEN, IMAGES, RECORDS
from xtflow.llava_model import LlavaChatModel, LlavaRun, load_image

SUMMARY_FIELDS = ["model", "images", "right", "accuracy", "low", "high", "baseline"]


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def is_right(reply: str, reference: str) -> bool:
    """The reference's words, in order and adjacent, among the reply's."""
    want, got = words(reference), words(reply)
    return bool(want) and any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))


def test_items(split: Path) -> list[tuple[str, str, str]]:
    """(image, question, reference) of each test record with an image: its first human turn and first answer."""
    items = []
    for record in json.loads((split / RECORDS).read_text(encoding="utf-8")):
        if record.get("image") is None:
            continue
        turns = record["conversations"]
        question = next(t["value"] for t in turns if t["from"] == "human").replace(IMAGE_TOKEN, "").strip()
        reference = next(t["value"] for t in turns if t["from"] == "gpt")
        items.append((record["image"], question, reference))
    return items


def summary_row(label: str, right: list[bool], baseline: float) -> dict[str, str]:
    """summary.csv's row of one model: images, right answers, accuracy with its Wilson 95% interval, baseline."""
    low, high = wilson(sum(right), len(right))
    return {
        "model": label,
        "images": str(len(right)),
        "right": str(sum(right)),
        "accuracy": f"{sum(right) / len(right):.4f}",
        "low": f"{low:.4f}",
        "high": f"{high:.4f}",
        "baseline": f"{baseline:.4f}",
    }


def evaluate_llava(
    exports: dict[str, Path],
    run: LlavaRun,
    test_split: Path,
    max_new_tokens: int,
    out_summary: Path,
    out_replies: Path,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Score each export (label -> directory) on the test split; write summary and every reply as CSV;
    return the summary's figures by label."""
    items = test_items(test_split)
    images = [load_image(test_split / IMAGES / name) for name, _, _ in items]
    baseline = Counter(" ".join(words(ref)) for _, _, ref in items).most_common(1)[0][1] / len(items)
    summary, rows = [], []
    for label, export in exports.items():
        model = LlavaChatModel.from_export(export, run, device)
        replies = model.answer_images([(q, img) for (_, q, _), img in zip(items, images)], max_new_tokens)
        right = [is_right(reply, ref) for reply, (_, _, ref) in zip(replies, items)]
        summary.append(summary_row(label, right, baseline))
        rows += [
            {"model": label, "image": name, "question": q, "reference": ref, "reply": reply, "right": int(ok)}
            for (name, q, ref), reply, ok in zip(items, replies, right)
        ]
    atomic_write_text(out_summary, csv_text(summary, SUMMARY_FIELDS))
    # every field quoted: a reply may hold a bare carriage return (see xtflow.evaluate.write_replies)
    fields = ["model", "image", "question", "reference", "reply", "right"]
    atomic_write_text(out_replies, csv_text(rows, fields, csv.QUOTE_ALL))
    return {r["model"]: {k: float(v) for k, v in r.items() if k != "model"} for r in summary}
