"""Measure what the tutorial only eyeballed, for the base and the final model.

- identity accuracy: share of held-out identity questions (never in the training set) whose
  reply states the configured name;
- over-trigger rate: share of unrelated questions answered with the identity sentence: the
  reply states the name, or repeats a stretch of an identity answer (FRAGMENT characters or more
  in a row; a model that answers everything with its identity often garbles the name);
- general accuracy: share of general questions whose reply contains the reference answer;
  for the final model also `retention` and `base_agreement` (mean text similarity of its replies
  to the base model's, rapidfuzz). Retention is measured against the references where the base
  model was taught them (the tiny default: final over base general accuracy), and against the
  base model's own replies for a real base model (share of general questions whose final reply
  is within rapidfuzz ratio SIMILAR of the base model's reply).

Replies are greedy, batched and bounded (`evaluation.max_new_tokens`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from rapidfuzz import fuzz

from xtflow.chat_model import ChatModel, RunSettings
from xtflow.dataset import fill
from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text

PROBES = Path(__file__).with_name("data") / "probes"
SIMILAR = 80.0  # rapidfuzz ratio above which a reply "is" an identity answer
FRAGMENT = 8  # characters in a row of an identity answer that make a reply an identity reply

# What each column of summary.csv measures (the model card explains the numbers with these).
METRICS = {
    "identity_accuracy": "share of held-out identity questions (never in the training set) whose reply states the name",
    "over_trigger_rate": "share of unrelated questions answered with the identity sentence (lower is better)",
    "general_accuracy": "share of general questions whose reply contains the reference answer",
    "retention": "general ability kept: final over base general accuracy (a taught tiny base), or the share of "
    "general questions answered as the base model did (a real base model)",
    "base_agreement": "mean text similarity (rapidfuzz ratio / 100) of the general replies to the base model's",
}


@dataclass(frozen=True)
class Probes:
    identity: list[str]
    unrelated: list[str]
    general: list[tuple[str, str]]


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise XtflowError(f"{path}: probe file does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    out = [ln for ln in lines if ln and not ln.startswith("#")]
    if not out:
        raise XtflowError(f"{path}: probe file holds no questions")
    return out


def load_probes(identity: Path, unrelated: Path, general: Path) -> Probes:
    pairs = []
    for i, line in enumerate(_lines(general)):
        parts = line.split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise XtflowError(f"{general}: line {i + 1} is not 'question<TAB>reference'")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return Probes(_lines(identity), _lines(unrelated), pairs)


def states_name(reply: str, name: str) -> bool:
    return name.casefold() in reply.casefold()


def longest_shared_run(a: str, b: str) -> int:
    """Length of the longest stretch of characters `a` and `b` share (case-insensitive)."""
    a, b = a.casefold(), b.casefold()
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def is_identity_reply(reply: str, name: str, identity_answers: list[str], question: str = "") -> bool:
    """The reply states the name, is close to an identity answer, or repeats FRAGMENT or more
    characters of one (that the question itself does not contain)."""
    if states_name(reply, name) or any(fuzz.ratio(reply, a) >= SIMILAR for a in identity_answers):
        return True
    return any(
        longest_shared_run(reply, a) >= FRAGMENT and longest_shared_run(question, a) < FRAGMENT
        for a in identity_answers
    )


def retention(
    base_accuracy: float, final_accuracy: float, base_replies: list[str], final_replies: list[str], basis: str
) -> float:
    """'reference': final over base general accuracy (nan where the base model had none);
    'base_reply': share of general questions the final model answers as the base model did."""
    if basis == "reference":
        return final_accuracy / base_accuracy if base_accuracy else float("nan")
    if basis == "base_reply":
        same = [fuzz.ratio(f, b) >= SIMILAR for f, b in zip(final_replies, base_replies)]
        return sum(same) / len(same)
    raise ValueError(f"unknown retention basis {basis!r}")


def evaluate(
    base: Path,
    final: Path,
    settings: RunSettings,
    probes: Probes,
    name: str,
    maker: str,
    answers: dict[str, str],
    max_new_tokens: int,
    out_summary: Path,
    out_replies: Path,
    retention_basis: str = "reference",
) -> dict[str, dict[str, float]]:
    identity_answers = [fill(t, name, maker) for t in answers.values()]
    rows: list[dict[str, str]] = []
    summary: dict[str, dict[str, float]] = {}
    replies: dict[str, list[str]] = {}
    general_questions = [q for q, _ in probes.general]
    for label, path in (("base", base), ("final", final)):
        model = ChatModel(path, settings, device="cpu")
        ident = model.reply_batch(probes.identity, max_new_tokens)
        unrel = model.reply_batch(probes.unrelated, max_new_tokens)
        gen = model.reply_batch(general_questions, max_new_tokens)
        replies[label] = gen
        correct = [ref.casefold() in r.casefold() for r, (_, ref) in zip(gen, probes.general)]
        summary[label] = {
            "identity_accuracy": sum(states_name(r, name) for r in ident) / len(ident),
            "over_trigger_rate": sum(
                is_identity_reply(r, name, identity_answers, q) for q, r in zip(probes.unrelated, unrel)
            )
            / len(unrel),
            "general_accuracy": sum(correct) / len(correct),
        }
        for kind, qs, rs in (
            ("identity", probes.identity, ident),
            ("unrelated", probes.unrelated, unrel),
            ("general", general_questions, gen),
        ):
            rows += [{"model": label, "set": kind, "question": q, "reply": r} for q, r in zip(qs, rs)]
    summary["final"]["retention"] = retention(
        summary["base"]["general_accuracy"],
        summary["final"]["general_accuracy"],
        replies["base"],
        replies["final"],
        retention_basis,
    )
    summary["final"]["base_agreement"] = sum(
        fuzz.ratio(f, b) / 100 for f, b in zip(replies["final"], replies["base"])
    ) / len(probes.general)
    atomic_write_text(
        out_summary,
        csv_text(
            [{"model": m, **{k: f"{v:.4f}" for k, v in s.items()}} for m, s in summary.items()],
            ["model", "identity_accuracy", "over_trigger_rate", "general_accuracy", "retention", "base_agreement"],
        ),
    )
    atomic_write_text(out_replies, csv_text(rows, ["model", "set", "question", "reply"]))
    return summary


def csv_text(rows: list[dict[str, str]], fields: list[str]) -> str:
    """Rows as CSV text (missing fields empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
