"""Measure what the tutorial only eyeballed, for the base and the final model.

Probe sets (workflow/xtflow/data/probes/, or the user's files through `evaluation.*`):
- identity: held-out identity questions (never in the training set), zh and en;
- unrelated: questions on topics never trained on, which must not get the identity sentence;
- general: questions with a reference answer (the tiny default is taught them);
- conversations: several turns of those kinds, each asked after the previous turns and the model's
  own replies to them, with the run's prompt template (as in the chat and the web demo).

Each reply is judged on its own:
- identity question: correct when the reply states the configured name;
- unrelated question: an over-trigger when the reply is an identity reply: it states the name, is
  within similarity SIMILAR of an identity answer, or repeats FRAGMENT or more characters in a row
  of one that the question does not hold (a model that answers everything with its identity often
  garbles the name);
- general question: correct when the reply contains the reference;
- language: a text is Chinese when it has more CJK characters than Latin-alphabet words, English
  when it has Latin words and no more CJK characters than words, neither when it has none of both.
  A reply is in the question's language when the two agree.

Rates (summary.csv, one row per model, probe setting and metric) come with the number of probes and
a Wilson 95% interval; "conversation" rows count only the turns after a previous turn. For the
final model also `retention`: of the general questions the base model answered right (the tiny
default, taught the references), the share the final model still answers right; for a real base
model, the share of general questions answered as the base model did (similarity SIMILAR or more to
its own reply). `base_agreement`: mean similarity of the final model's general replies to the base
model's (a mean, not a rate: no interval).

Replies are greedy, batched and bounded (`evaluation.max_new_tokens`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from rapidfuzz import fuzz, utils

from xtflow.chat_model import ChatModel, RunSettings
from xtflow.dataset import fill
from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text

PROBES = Path(__file__).with_name("data") / "probes"
PROBE_FILES = {
    "identity": "identity_heldout.txt",
    "unrelated": "unrelated.txt",
    "general": "general.tsv",
    "conversations": "conversations.tsv",
}
SIMILAR = 80.0  # similarity (0-100) from which two texts count as the same
FRAGMENT = 8  # characters in a row of an identity answer that make a reply an identity reply
KINDS = ("identity", "unrelated", "general")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]+")
SUMMARY_FIELDS = ["model", "probes", "metric", "value", "k", "n", "low", "high"]
REPLY_FIELDS = [
    "model",
    "set",
    "conversation",
    "turn",
    "kind",
    "section",
    "question",
    "reference",
    "reply",
    "correct",
    "in_language",
]


@dataclass(frozen=True)
class Turn:
    """One probe question: its kind, text, reference answer (general) and section of its file."""

    kind: str
    question: str
    reference: str = ""
    section: str = ""


Verdict = Callable[[Turn, str], tuple[bool, bool]]  # (probe, reply) -> (correct, in its language)

# What each metric of summary.csv measures (the model card explains the numbers with these).
METRICS = {
    "identity_accuracy": "share of held-out identity questions (never in the training set) whose reply states the name",
    "identity_in_language": "share of held-out identity questions answered with the name in their own language",
    "over_trigger_rate": "share of unrelated questions answered with the identity sentence (lower is better)",
    "language_consistency": "share of identity and unrelated questions answered in the question's language (zh/en)",
    "general_accuracy": "share of general questions whose reply contains the reference answer",
    "retention": "general ability kept: of the general questions the base model answered right, the share still "
    "answered right (a taught tiny base), or the share answered as the base model did (a real base model)",
    "base_agreement": "mean text similarity (rapidfuzz ratio / 100) of the general replies to the base model's",
}


@dataclass(frozen=True)
class Probes:
    identity: list[Turn]
    unrelated: list[Turn]
    general: list[Turn]
    conversations: list[list[Turn]]


# -- probe files ------------------------------------------------------------------


def _entries(path: Path) -> list[tuple[int, str, str]]:
    """(line number, line, section) of each entry; `# section: x` lines name the section, other
    `#` lines are comments, blank lines come back as '' (they end a conversation)."""
    if not path.is_file():
        raise XtflowError(f"{path}: probe file does not exist")
    out, section = [], ""
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line.startswith("# section:"):
            section = line.removeprefix("# section:").strip()
        elif not line.startswith("#"):
            out.append((n, raw.rstrip("\r\n"), section))
    if not any(line.strip() for _, line, _ in out):
        raise XtflowError(f"{path}: probe file holds no questions")
    return out


def _turn(path: Path, n: int, line: str, section: str, kind: str | None) -> Turn:
    """A line `question` (kind given), `question<TAB>reference` (general) or, in a conversation
    file (kind None), `kind<TAB>question[<TAB>reference]`."""
    parts = [p.strip() for p in line.split("\t")]
    if kind is None:
        if parts[0] not in KINDS:
            raise XtflowError(f"{path}: line {n}: kind {parts[0]!r} is not one of {', '.join(KINDS)}")
        kind, parts = parts[0], parts[1:]
    shape = "question<TAB>reference" if kind == "general" else "question"
    if len(parts) != (2 if kind == "general" else 1) or not all(parts):
        raise XtflowError(f"{path}: line {n} is not '{shape}'")
    return Turn(kind, parts[0], parts[1] if kind == "general" else "", section)


def load_questions(path: Path, kind: str) -> list[Turn]:
    return [_turn(path, n, line, section, kind) for n, line, section in _entries(path) if line.strip()]


def load_conversations(path: Path) -> list[list[Turn]]:
    conversations: list[list[Turn]] = [[]]
    for n, line, section in _entries(path):
        if not line.strip():
            conversations.append([])
        else:
            conversations[-1].append(_turn(path, n, line, section, None))
    return [c for c in conversations if c]


def load_probes(identity: Path, unrelated: Path, general: Path, conversations: Path) -> Probes:
    return Probes(
        load_questions(identity, "identity"),
        load_questions(unrelated, "unrelated"),
        load_questions(general, "general"),
        load_conversations(conversations),
    )


# -- judging one reply ------------------------------------------------------------


def similarity(a: str, b: str) -> float:
    """rapidfuzz ratio (0-100) of the two texts, lower-cased and without punctuation."""
    return fuzz.ratio(a, b, processor=utils.default_process)


def language(text: str) -> str:
    """'zh', 'en' or '' (neither): Chinese when CJK characters outnumber Latin-alphabet words."""
    cjk, words = len(CJK.findall(text)), len(LATIN_WORD.findall(text))
    return "zh" if cjk > words else "en" if words else ""


def states_name(reply: str, name: str) -> bool:
    return name.casefold() in reply.casefold()


def longest_shared_run(a: str, b: str) -> int:
    """Length of the longest stretch of characters `a` and `b` share (case-insensitive)."""
    a, b = a.casefold(), b.casefold()
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def is_identity_reply(reply: str, name: str, identity_answers: list[str], question: str = "") -> bool:
    """The reply states the name, is close to an identity answer, or repeats FRAGMENT or more
    characters of one (that the question itself does not contain)."""
    if states_name(reply, name) or any(similarity(reply, a) >= SIMILAR for a in identity_answers):
        return True
    return any(
        longest_shared_run(reply, a) >= FRAGMENT and longest_shared_run(question, a) < FRAGMENT
        for a in identity_answers
    )


def judge(turn: Turn, reply: str, name: str, identity_answers: list[str]) -> tuple[bool, bool]:
    """(correct, in the question's language): identity stated / no identity reply / reference given."""
    if turn.kind == "identity":
        correct = states_name(reply, name)
    elif turn.kind == "unrelated":
        correct = not is_identity_reply(reply, name, identity_answers, turn.question)
    else:
        correct = turn.reference.casefold() in reply.casefold()
    return correct, language(reply) == language(turn.question)


# -- rates ------------------------------------------------------------------------


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of k successes in n trials (scipy); nan, nan for n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")


def retention(
    base_correct: list[bool], final_correct: list[bool], base: list[str], final: list[str], basis: str
) -> Rate:
    """'reference': of the general questions the base model answered right, those the final model
    still answers right; 'base_reply': general questions the final model answers as the base did."""
    if basis == "reference":
        kept = [f for b, f in zip(base_correct, final_correct) if b]
        return Rate(sum(kept), len(kept))
    if basis == "base_reply":
        return Rate(sum(similarity(f, b) >= SIMILAR for f, b in zip(final, base)), len(final))
    raise ValueError(f"unknown retention basis {basis!r}")


@dataclass(frozen=True)
class Judged:
    """A reply with its probe, where it was asked, and its verdicts."""

    model: str
    set: str  # identity, unrelated, general or conversation
    conversation: int  # 0 for single questions, else the conversation's number (from 1)
    turn: int  # 1 for single questions
    probe: Turn
    reply: str
    correct: bool
    in_language: bool

    def row(self) -> dict[str, str]:
        return {
            "model": self.model,
            "set": self.set,
            "conversation": str(self.conversation or ""),
            "turn": str(self.turn),
            "kind": self.probe.kind,
            "section": self.probe.section,
            "question": self.probe.question,
            "reference": self.probe.reference,
            "reply": self.reply,
            "correct": str(int(self.correct)),
            "in_language": str(int(self.in_language)),
        }


def rates(judged: list[Judged]) -> dict[str, Rate]:
    """The rates of one model in one probe setting (single questions, or turns after a previous turn)."""

    def rate(items: list[Judged], ok: Callable[[Judged], bool]) -> Rate:
        return Rate(sum(1 for j in items if ok(j)), len(items))

    ident = [j for j in judged if j.probe.kind == "identity"]
    unrel = [j for j in judged if j.probe.kind == "unrelated"]
    gen = [j for j in judged if j.probe.kind == "general"]
    return {
        "identity_accuracy": rate(ident, lambda j: j.correct),
        "identity_in_language": rate(ident, lambda j: j.correct and j.in_language),
        "over_trigger_rate": rate(unrel, lambda j: not j.correct),
        "language_consistency": rate(ident + unrel, lambda j: j.in_language),
        "general_accuracy": rate(gen, lambda j: j.correct),
    }


# -- the stage --------------------------------------------------------------------


def ask(model: ChatModel, label: str, probes: Probes, max_new_tokens: int, judge_reply: Verdict) -> list[Judged]:
    """Every probe of every set to one model: single questions, then the conversations turn by turn
    (the turns of all conversations at one depth in one batch, each after its own history)."""
    out: list[Judged] = []
    for kind, turns in (("identity", probes.identity), ("unrelated", probes.unrelated), ("general", probes.general)):
        replies = model.reply_batch([t.question for t in turns], max_new_tokens)
        out += [Judged(label, kind, 0, 1, t, r, *judge_reply(t, r)) for t, r in zip(turns, replies)]
    histories: list[list[tuple[str, str]]] = [[] for _ in probes.conversations]
    for depth in range(max((len(c) for c in probes.conversations), default=0)):
        live = [i for i, c in enumerate(probes.conversations) if len(c) > depth]
        turns = [probes.conversations[i][depth] for i in live]
        replies = model.reply_batch([t.question for t in turns], max_new_tokens, histories=[histories[i] for i in live])
        for i, t, r in zip(live, turns, replies):
            histories[i].append((t.question, r))
            out.append(Judged(label, "conversation", i + 1, depth + 1, t, r, *judge_reply(t, r)))
    return out


def summarize(judged: list[Judged], basis: str) -> list[dict[str, str]]:
    """summary.csv's rows: per model, the rates on single questions and on turns after a previous turn,
    then the final model's retention and agreement with the base model."""
    rows: list[dict[str, str]] = []

    def add(model: str, probes: str, metric: str, value: float, n: int, rate: Rate | None = None) -> None:
        low, high = wilson(rate.k, rate.n) if rate else (float("nan"), float("nan"))
        rows.append(
            {
                "model": model,
                "probes": probes,
                "metric": metric,
                "value": f"{value:.4f}",
                "k": str(rate.k) if rate else "",
                "n": str(n),
                "low": "" if low != low else f"{low:.4f}",
                "high": "" if high != high else f"{high:.4f}",
            }
        )

    for model in ("base", "final"):
        single = [j for j in judged if j.model == model and j.set != "conversation"]
        after = [j for j in judged if j.model == model and j.set == "conversation" and j.turn > 1]
        for probes, items in (("single", single), ("conversation", after)):
            for metric, rate in rates(items).items():
                if rate.n:
                    add(model, probes, metric, rate.value, rate.n, rate)
    base, final = ([j for j in judged if j.model == m and j.set == "general"] for m in ("base", "final"))
    kept = retention(
        [j.correct for j in base], [j.correct for j in final], [j.reply for j in base], [j.reply for j in final], basis
    )
    add("final", "single", "retention", kept.value, kept.n, kept)
    agreement = sum(similarity(f.reply, b.reply) / 100 for f, b in zip(final, base)) / max(1, len(final))
    add("final", "single", "base_agreement", agreement, len(final))
    return rows


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
    device: str = "cpu",
) -> list[dict[str, str]]:
    identity_answers = [fill(t, name, maker) for t in answers.values()]

    def judge_reply(turn: Turn, reply: str) -> tuple[bool, bool]:
        return judge(turn, reply, name, identity_answers)

    judged: list[Judged] = []
    for label, path in (("base", base), ("final", final)):
        judged += ask(ChatModel(path, settings, device=device), label, probes, max_new_tokens, judge_reply)
    rows = summarize(judged, retention_basis)
    atomic_write_text(out_summary, csv_text(rows, SUMMARY_FIELDS))
    write_replies(judged, out_replies)
    return rows


def write_replies(judged: list[Judged], path: Path) -> None:
    """replies.csv, every field quoted: a reply may hold a bare carriage return, which minimal quoting with
    "\n" line ends leaves unquoted (a reader then splits the row there)."""
    atomic_write_text(path, csv_text([j.row() for j in judged], REPLY_FIELDS, csv.QUOTE_ALL))


def read_summary(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """summary.csv as {(model, probes, metric): {value, k, n, low, high}} (nan where empty)."""
    with path.open(encoding="utf-8", newline="") as f:
        return {
            (r["model"], r["probes"], r["metric"]): {
                k: float(r[k]) if r[k] else float("nan") for k in ("value", "k", "n", "low", "high")
            }
            for r in csv.DictReader(f)
        }


def summary_columns(path: Path) -> dict[str, dict[str, str]]:
    """summary.csv as one row per model, as written there: a column per metric (`conversation_` before
    the name for turns after a previous turn) and its `_low`, `_high` and `_n`."""
    wide: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            name = r["metric"] if r["probes"] == "single" else f"{r['probes']}_{r['metric']}"
            for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high"), ("_n", "n")):
                wide.setdefault(r["model"], {})[name + suffix] = r[key]
    return wide


def csv_text(rows: list[dict[str, str]], fields: list[str], quoting: int = csv.QUOTE_MINIMAL) -> str:
    """Rows as CSV text (missing fields empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n", quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
