"""Base model stage: the tiny default is deterministic; a local model directory is checked and linked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xtflow.base_model import check_model_dir, link_model
from xtflow.errors import XtflowError
from xtflow.tiny_model import IM_END, IM_START, TinyModelSpec, build_tiny_model

SPEC = TinyModelSpec(
    vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, max_position_embeddings=128, seed=3
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_model(SPEC, out)
    return out


def test_tiny_model_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_tiny_model(SPEC, again)
    files = sorted(p.name for p in tiny.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (tiny / name).read_bytes() == (again / name).read_bytes(), name


def test_tiny_model_loads_and_has_chat_tokens(tiny: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    for special in (IM_START, IM_END):
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == special
    text = tok.apply_chat_template(
        [{"role": "user", "content": "你好 $(x)"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok.encode("你好 $(x) {}%", add_special_tokens=False)) == "你好 $(x) {}%"
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert model.config.vocab_size == len(tok)


def test_local_model_is_linked_not_copied(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "resources" / "base_model"
    link_model(tiny, out)
    assert (out / "model.safetensors").is_symlink()
    assert (out / "model.safetensors").resolve() == (tiny / "model.safetensors").resolve()


def test_parent_directory_names_the_model_subdirectory(tiny: Path, tmp_path: Path) -> None:
    parent = tmp_path / "models"
    shutil.copytree(tiny, parent / "internlm2-chat-1_8b")
    with pytest.raises(XtflowError) as err:
        check_model_dir(parent)
    assert f"'{parent}' has no config.json; did you mean '{parent / 'internlm2-chat-1_8b'}'?" in str(err.value)


def test_missing_tokenizer(tiny: Path, tmp_path: Path) -> None:
    broken = tmp_path / "m"
    shutil.copytree(tiny, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(XtflowError, match="has no tokenizer"):
        check_model_dir(broken)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(XtflowError, match=f"config key 'base_model.path': '{tmp_path / 'nope'}' does not exist"):
        check_model_dir(tmp_path / "nope")


def test_weights_whose_link_target_is_gone(tiny: Path, tmp_path: Path) -> None:
    """resources/base_model links into a hub cache: a deleted cache leaves links to nothing."""
    linked = tmp_path / "linked"
    shutil.copytree(tiny, linked)
    (linked / "model.safetensors").unlink()
    (linked / "model.safetensors").symlink_to(tmp_path / "deleted" / "model.safetensors")
    with pytest.raises(XtflowError, match=r"has no weights \(\*.safetensors or \*.bin\)"):
        check_model_dir(linked)
