"""Build the training set: generated self-cognition records plus the user's own files.

Output is XTuner's conversation format, a JSON list of
`{"conversation": [{"system"?: str, "input": str, "output": str}, ...]}`.
User files may be in that format or in OpenAI's `{"messages": [{"role", "content"}]}`
format; every record is validated and a bad one is reported by file, index and problem.
"""

from __future__ import annotations

import json
import random
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text

Record = dict[str, list[dict[str, str]]]
LANGS = ("en", "zh")


@dataclass(frozen=True)
class IdentitySpec:
    """What the generated part of the dataset says (config `assistant` and `dataset`)."""

    name: str
    maker: str
    answers: dict[str, str]  # language -> answer template with {name} and {maker}
    questions: dict[str, list[str]]  # language -> questions
    records: int
    seed: int


def fill(template: str, name: str, maker: str) -> str:
    """Put name and maker into an answer template, literally and in one pass: no other braces or %
    are interpreted, and a name that itself contains `{maker}` stays as it is."""
    values = {"name": name, "maker": maker}
    return re.sub(r"\{(name|maker)\}", lambda m: values[m.group(1)], template)


def identity_records(spec: IdentitySpec) -> list[Record]:
    """`spec.records` question/answer records drawn (seeded) from the configured questions."""
    pool = [(lang, q) for lang in LANGS for q in spec.questions.get(lang, [])]
    if spec.records and not pool:
        raise XtflowError("dataset.questions: no questions to build identity records from")
    rng = random.Random(spec.seed)
    out: list[Record] = []
    while len(out) < spec.records:
        batch = pool[:]
        rng.shuffle(batch)  # each question once per round, in seeded order
        for lang, question in batch[: spec.records - len(out)]:
            answer = fill(spec.answers[lang], spec.name, spec.maker)
            out.append({"conversation": [{"input": question, "output": answer}]})
    return out


def conversation_records(spec: IdentitySpec, count: int) -> list[Record]:
    """`count` three-turn records (seeded): an identity exchange and two exchanges of the general set
    (xtflow.general_set), the identity turn first, in the middle or last in turn, so the model learns
    to answer a question after an identity exchange as it would alone, and who it is after others."""
    from xtflow.general_set import general_qa

    pool = [(lang, q) for lang in LANGS for q in spec.questions.get(lang, [])]
    if count and not pool:
        raise XtflowError("dataset.questions: no questions to build conversation records from")
    rng = random.Random(f"conversations-{spec.seed}")
    qa = general_qa()
    out: list[Record] = []
    for i in range(count):
        lang, question = rng.choice(pool)
        first, second = ({"input": x.question, "output": x.answer} for x in rng.sample(qa, 2))
        identity = {"input": question, "output": fill(spec.answers[lang], spec.name, spec.maker)}
        out.append(
            {"conversation": [[identity, first, second], [first, identity, second], [first, second, identity]][i % 3]}
        )
    return out


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise XtflowError(f"{where}: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise XtflowError(f"{where}: is empty")
    return value


def _from_conversation(turns: Any, where: str) -> Record:
    if not isinstance(turns, list) or not turns:
        raise XtflowError(f"{where}: 'conversation' must be a non-empty list of turns")
    out = []
    for i, turn in enumerate(turns):
        w = f"{where}, turn {i}"
        if not isinstance(turn, dict):
            raise XtflowError(f"{w}: must be an object with 'input' and 'output'")
        unknown = sorted(set(turn) - {"system", "input", "output"})
        if unknown:
            raise XtflowError(f"{w}: unknown field '{unknown[0]}' (allowed: system, input, output)")
        for key in ("input", "output"):
            if key not in turn:
                raise XtflowError(f"{w}: missing '{key}'")
        clean = {"input": _text(turn["input"], f"{w} 'input'"), "output": _text(turn["output"], f"{w} 'output'")}
        if "system" in turn:
            if not isinstance(turn["system"], str):
                raise XtflowError(f"{w} 'system': must be a string")
            clean = {"system": turn["system"], **clean}
        out.append(clean)
    return {"conversation": out}


def _from_messages(messages: Any, where: str) -> Record:
    if not isinstance(messages, list) or not messages:
        raise XtflowError(f"{where}: 'messages' must be a non-empty list")
    turns: list[dict[str, str]] = []
    system: str | None = None
    pending: str | None = None
    for i, msg in enumerate(messages):
        w = f"{where}, message {i}"
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise XtflowError(f"{w}: must be an object with 'role' and 'content'")
        role, content = msg["role"], msg["content"]
        if role == "system":
            if i != 0:
                raise XtflowError(f"{w}: a 'system' message may only come first")
            if not isinstance(content, str):
                raise XtflowError(f"{w} 'content': must be a string")
            system = content
        elif role == "user":
            if pending is not None:
                raise XtflowError(f"{w}: two 'user' messages in a row")
            pending = _text(content, f"{w} 'content'")
        elif role == "assistant":
            if pending is None:
                raise XtflowError(f"{w}: 'assistant' message without a 'user' message before it")
            turn = {"input": pending, "output": _text(content, f"{w} 'content'")}
            if system is not None and not turns:
                turn = {"system": system, **turn}
            turns.append(turn)
            pending = None
        else:
            raise XtflowError(f"{w}: unknown role {role!r} (allowed: system, user, assistant)")
    if pending is not None:
        raise XtflowError(f"{where}: ends with a 'user' message that has no 'assistant' reply")
    if not turns:
        raise XtflowError(f"{where}: has no user/assistant exchange")
    return {"conversation": turns}


NOT_FILES = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
]


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be a dataset file ("does not exist", "is a directory", ...), or None if it is
    a regular file. (Reading /dev/zero or a pipe would never end.)"""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    for test, kind in NOT_FILES:
        if test(mode):
            return f"is {kind}, not a dataset file (a JSON list of records)"
    return None


def load_user_file(path: Path) -> list[Record]:
    """Read and validate one user dataset file (conversation or messages format, per record)."""
    problem = not_a_file(path)
    if problem:
        raise XtflowError(f"{path}: {problem}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise XtflowError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise XtflowError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, list):
        raise XtflowError(f"{path}: must be a JSON list of records, got a JSON {type(data).__name__}")
    if not data:
        raise XtflowError(f"{path}: holds no records")
    out = []
    for i, rec in enumerate(data):
        where = f"{path}: record {i}"
        if isinstance(rec, dict) and "conversation" in rec:
            out.append(_from_conversation(rec["conversation"], where))
        elif isinstance(rec, dict) and "messages" in rec:
            out.append(_from_messages(rec["messages"], where))
        else:
            raise XtflowError(f"{where}: has neither 'conversation' (XTuner format) nor 'messages' (OpenAI format)")
    return out


def build_dataset(spec: IdentitySpec, files: list[Path], out: Path, general: int = 0, conversations: int = 0) -> int:
    """Write generated identity records, `general` records of the general set (xtflow.general_set),
    `conversations` multi-turn records of both and the user's records to `out` (all or nothing);
    return the record count."""
    from xtflow.general_set import general_records

    records = identity_records(spec) + general_records(general, spec.seed) + conversation_records(spec, conversations)
    for path in files:
        records.extend(load_user_file(Path(path)))
    if not records:
        raise XtflowError("dataset: no records (dataset.records is 0 and dataset.files add none)")
    text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    atomic_write_text(out, text)
    return len(records)
