"""The general-skill stage's teaching loop (xtflow.general_skill) on a very small model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xtflow.general_set import general_qa, general_records, unknown_qa
from xtflow.general_skill import SkillSpec, teach
from xtflow.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="module")
def untaught(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m") / "model"
    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 128, 0), out)
    return out


@pytest.mark.parametrize("epochs", [1, 2, 3, 10])
def test_any_epoch_count_trains_and_writes_the_model(untaught: Path, tmp_path: Path, epochs: int) -> None:
    out = tmp_path / "taught"
    result = teach(untaught, out, SkillSpec(epochs=epochs, lr=3e-3, seed=0), "internlm2_chat")
    assert 0.0 <= result["accuracy"] <= 1.0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "xtflow_general_skill.json").read_text())["epochs"] == epochs


def test_output_layer_and_embeddings_are_not_trained(untaught: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    teach(untaught, tmp_path / "taught", SkillSpec(epochs=3, lr=3e-3, seed=0), "internlm2_chat")
    before, after = load_file(untaught / "model.safetensors"), load_file(tmp_path / "taught" / "model.safetensors")
    assert (before["lm_head.weight"] == after["lm_head.weight"]).all()
    assert (before["model.embed_tokens.weight"] == after["model.embed_tokens.weight"]).all()
    assert not (before["model.layers.0.mlp.up_proj.weight"] == after["model.layers.0.mlp.up_proj.weight"]).all()


def test_general_set_is_fixed_bilingual_and_records_never_repeat() -> None:
    qa = general_qa()
    assert len(qa) == 128 and len({q.question for q in qa}) == 128
    assert sum(q.lang == "zh" for q in qa) == 64
    assert all(q.reference in q.answer for q in qa)
    records = general_records(200, seed=1)
    assert len(records) == 128 and len({json.dumps(r) for r in records}) == 128
    assert general_records(16, seed=1) == general_records(16, seed=1)


def test_questions_about_made_up_things_are_answered_i_dont_know() -> None:
    """The tiny default's negative examples: made-up words (no real topic), both languages."""
    unknown = unknown_qa()
    assert len(unknown) == 48 and unknown == general_qa()[-48:]
    assert {(q.lang, q.answer) for q in unknown} == {
        ("en", "Sorry, I don't know about that."),
        ("zh", "抱歉，这个我不知道。"),
    }
    assert len({q.question for q in unknown}) == 48
