"""Dataset stage: determinism, both input formats, and bad records named by file and index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xtflow.dataset import IdentitySpec, build_dataset, conversation_records, fill, load_user_file
from xtflow.errors import XtflowError

SPEC = IdentitySpec(
    name="XtBot",
    maker="the xtflow team",
    answers={"en": "I am {name}, made by {maker}.", "zh": "我是{name}，由{maker}打造。"},
    questions={"en": ["Who are you?", "What is your name?"], "zh": ["你是谁？"]},
    records=10,
    seed=7,
)


def test_same_config_gives_byte_identical_file(tmp_path: Path) -> None:
    build_dataset(SPEC, [], tmp_path / "a.json")
    build_dataset(SPEC, [], tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_another_seed_gives_another_order(tmp_path: Path) -> None:
    build_dataset(SPEC, [], tmp_path / "a.json")
    other = IdentitySpec(**{**SPEC.__dict__, "seed": 8})
    build_dataset(other, [], tmp_path / "b.json")
    a = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert a != b
    assert len(a) == len(b) == 10


def test_generated_records_pair_questions_with_their_language(tmp_path: Path) -> None:
    n = build_dataset(SPEC, [], tmp_path / "d.json")
    records = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert n == len(records) == 10
    for rec in records:
        (turn,) = rec["conversation"]
        if turn["input"] == "你是谁？":
            assert turn["output"] == "我是XtBot，由the xtflow team打造。"
        else:
            assert turn["output"] == "I am XtBot, made by the xtflow team."
    # every question is used before any repeats
    assert {r["conversation"][0]["input"] for r in records[:3]} == {"Who are you?", "What is your name?", "你是谁？"}


def test_conversation_records_put_the_identity_turn_first_in_the_middle_and_last(tmp_path: Path) -> None:
    from xtflow.general_set import general_qa

    general = {(x.question, x.answer) for x in general_qa()}
    identity = {
        ("Who are you?", "I am XtBot, made by the xtflow team."),
        ("你是谁？", "我是XtBot，由the xtflow team打造。"),
    }
    identity.add(("What is your name?", "I am XtBot, made by the xtflow team."))
    records = conversation_records(SPEC, 6)
    assert conversation_records(SPEC, 6) == records  # seeded
    places = []
    for rec in records:
        turns = [(t["input"], t["output"]) for t in rec["conversation"]]
        assert len(turns) == 3
        places.append([i for i, t in enumerate(turns) if t in identity])
        assert all(t in general for i, t in enumerate(turns) if i not in places[-1])
    assert places == [[0], [1], [2], [0], [1], [2]]
    n = build_dataset(SPEC, [], tmp_path / "d.json", general=4, conversations=6)
    assert n == 10 + 4 + 6
    assert json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))[-6:] == records


def test_fill_is_literal() -> None:
    assert fill("I am {name} ({maker}) {0} %s", "{x}%d$(id){maker}", "a") == "I am {x}%d$(id){maker} (a) {0} %s"


def test_conversation_and_messages_formats_are_merged(tmp_path: Path) -> None:
    conv = tmp_path / "conv.json"
    conv.write_text(
        json.dumps([{"conversation": [{"system": "S", "input": "hi", "output": "hello"}]}]), encoding="utf-8"
    )
    msgs = tmp_path / "msgs.json"
    msgs.write_text(
        json.dumps(
            [
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"},
                        {"role": "user", "content": "3+3?"},
                        {"role": "assistant", "content": "6"},
                    ]
                }
            ]
        ),
        encoding="utf-8",
    )
    spec = IdentitySpec(**{**SPEC.__dict__, "records": 2})
    n = build_dataset(spec, [conv, msgs], tmp_path / "out.json")
    records = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert n == 4
    assert records[2] == {"conversation": [{"system": "S", "input": "hi", "output": "hello"}]}
    assert records[3] == {
        "conversation": [
            {"system": "Be brief.", "input": "2+2?", "output": "4"},
            {"input": "3+3?", "output": "6"},
        ]
    }


BAD = [
    ("not json", "{oops", "not valid JSON"),
    ("object", '{"conversation": []}', "must be a JSON list of records"),
    ("empty list", "[]", "holds no records"),
    (
        "no known key",
        '[{"conversation": [{"input": "a", "output": "b"}]}, {"text": "x"}]',
        "record 1: has neither 'conversation'",
    ),
    ("missing output", '[{"conversation": [{"input": "a"}]}]', "record 0, turn 0: missing 'output'"),
    ("empty output", '[{"conversation": [{"input": "a", "output": "  "}]}]', "record 0, turn 0 'output': is empty"),
    (
        "non-string input",
        '[{"conversation": [{"input": 3, "output": "b"}]}]',
        "record 0, turn 0 'input': must be a string",
    ),
    ("unknown role", '[{"messages": [{"role": "bot", "content": "x"}]}]', "record 0, message 0: unknown role 'bot'"),
    ("dangling user", '[{"messages": [{"role": "user", "content": "x"}]}]', "record 0: ends with a 'user' message"),
    (
        "assistant first",
        '[{"messages": [{"role": "assistant", "content": "x"}]}]',
        "without a 'user' message before it",
    ),
    ("empty conversation", '[{"conversation": []}]', "record 0: 'conversation' must be a non-empty list"),
]


@pytest.mark.parametrize("label,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_user_file_is_named_with_record_and_problem(tmp_path: Path, label: str, text: str, message: str) -> None:
    path = tmp_path / "mine.json"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out.json"
    with pytest.raises(XtflowError) as err:
        build_dataset(SPEC, [path], out)
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()  # nothing half-written


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(XtflowError, match="dataset file does not exist"):
        load_user_file(tmp_path / "nope.json")
