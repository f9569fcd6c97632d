"""Config validation: schema defaults, and one-line errors that name the key, from real Snakemake too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import default_config, set_key, snakemake, write_config
from xtflow.errors import XtflowError
from xtflow.settings import merge_config_files, validate


def test_embedded_default_is_valid_and_defaults_are_filled() -> None:
    cfg = validate({})
    assert cfg["xtuner"]["base_config"] == "internlm2_1_8b_qlora_alpaca_e3"
    assert cfg["xtuner"]["prompt_template"] == "internlm2_chat"
    assert cfg["merge"]["device"] == "cpu"
    shipped = validate(default_config())
    assert shipped["xtuner"]["device"] == "cpu" and shipped["base_model"]["path"] is None


CASES = [
    ("xtuner.lr", -1, "config key 'xtuner.lr'"),
    ("xtuner.lr", 0, "config key 'xtuner.lr'"),
    ("xtuner.max_epochs", "3", "config key 'xtuner.max_epochs': '3' is not of type 'integer'"),
    ("xtuner.save_steps", 0, "config key 'xtuner.save_steps'"),
    ("dataset.records", -5, "config key 'dataset.records'"),
    ("xtuner.dtype", "fp8", "config key 'xtuner.dtype'"),
    ("xtuner.learning_rate", 1e-4, "config key 'xtuner.learning_rate': unknown key"),
    ("bogus", 1, "config key 'bogus': unknown key"),
    ("xtuner.load_in_4bit", True, "config key 'xtuner.load_in_4bit': 4-bit (QLoRA) needs xtuner.device: cuda"),
    (
        "xtuner.base_config",
        "no_such_cfg",
        "config key 'xtuner.base_config': 'no_such_cfg' is not an XTuner built-in config",
    ),
    ("assistant.name", "", "config key 'assistant.name'"),
]


@pytest.mark.parametrize("key,value,message", CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_bad_value_names_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(XtflowError) as err:
        validate(set_key(default_config(), key, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_snakemake_refuses_bad_config_in_one_line(tmp_path: Path) -> None:
    write_config(tmp_path, set_key(default_config(), "xtuner.lr", -1))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["xtflow: error: config key 'xtuner.lr': -1 is less than or equal to the minimum of 0"]
    assert not (tmp_path / "results").exists()


def test_snakemake_refuses_missing_dataset_file(tmp_path: Path) -> None:
    write_config(tmp_path, set_key(default_config(), "dataset.files", ["data/mine.json"]))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert "config key 'dataset.files[0]': 'data/mine.json' does not exist" in proc.stderr


def test_key_order_does_not_matter() -> None:
    """Snakemake compares params as text: reordered YAML keys must give identical params."""
    a = default_config()
    b = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(list(a.items()))}
    assert repr(validate(a)) == repr(validate(b))


# the documented GPU commands: the recipe (bf16 LoRA), and the recipe with config/qlora.yaml after it (4-bit)
GPU_RECIPES = {"recipe": ["internlm2_chat_1_8b.yaml"], "qlora": ["internlm2_chat_1_8b.yaml", "qlora.yaml"]}


def gpu_recipe_files(recipe: str) -> list[Path]:
    from conftest import REPO

    return [REPO / "config" / name for name in GPU_RECIPES[recipe]]


@pytest.mark.parametrize("recipe", sorted(GPU_RECIPES))
def test_gpu_recipe_config_is_valid_and_patches(recipe: str) -> None:
    """config/internlm2_chat_1_8b.yaml (and config/qlora.yaml after it) merged over the default, as `--configfile`
    does, validates: bf16 on cuda, 4-bit only with config/qlora.yaml, the stock config's 16 samples per step."""
    xt = validate(merge_config_files(default_config(), gpu_recipe_files(recipe)))["xtuner"]
    assert (xt["device"], xt["dtype"], xt["load_in_4bit"]) == ("cuda", "bfloat16", recipe == "qlora")
    assert xt["gradient_checkpointing"] == (recipe == "qlora")  # bf16 LoRA at micro-batch 2 fits 24 GB without it
    assert xt["batch_size"] * xt["accumulative_counts"] == 16


@pytest.mark.parametrize("recipe", sorted(GPU_RECIPES))
def test_gpu_recipe_trains_on_the_default_dataset(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented GPU commands (`--configfile config/internlm2_chat_1_8b.yaml [config/qlora.yaml]`, default
    dataset) get past the train rule's plan check with enough optimizer steps: real Snakemake builds the dataset
    and the XTuner config (CPU stages), then the plan is counted as the train rule counts it (the training itself
    needs a GPU)."""
    import shutil

    import yaml

    from conftest import REPO
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model
    from xtflow.train import check_plan, plan_training

    model = tmp_path / "model"  # stands in for internlm2-chat-1_8b (a tokenizer and a config are all it needs here)
    build_tiny_model(TinyModelSpec(1024, 32, 64, 1, 2, 4096, 0), model)
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    files = gpu_recipe_files(recipe)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"base_model": {"path": str(model)}}), encoding="utf-8")
    config = "results/xtuner/internlm2_1_8b_qlora_alpaca_e3.py"
    snakemake(
        tmp_path,
        config,
        "results/data/train.json",
        "--configfile",
        "config/config.yaml",
        *map(str, files),
        str(tmp_path / "mine.yaml"),
        check=True,
    )
    xt = merge_config_files({}, files)["xtuner"]
    monkeypatch.chdir(tmp_path)  # the written config's paths are the run directory's, as in the train job
    plan = plan_training(Path(config), 1)
    check_plan(plan, xt["warmup_ratio"])  # raises on a plan XTuner would crash on or ruin
    assert plan.total_iters // xt["accumulative_counts"] >= 20  # optimizer steps
    written = Path(config).read_text(encoding="utf-8")
    assert f"batch_size={xt['batch_size']}" in written.replace(" ", "")


def test_nested_command_line_values_are_read_as_numbers() -> None:
    """Snakemake gives `--config xtuner='{lr: 0.004}'` as {'xtuner': {'lr': '0.004'}}: numbers, booleans and
    null become what a config file would make of them where the schema wants them; strings stay strings."""
    from xtflow.settings import typed_command_line

    given = {
        "xtuner": {"lr": "0.004", "max_epochs": "3", "compile": "true", "system": "1e3", "lora": {"r": "8"}},
        "assistant": {"name": "123"},
        "base_model": {"path": "null"},
    }
    config = {**default_config(), **given}
    typed = typed_command_line(config, given)
    assert typed["xtuner"]["lr"] == 0.004 and typed["xtuner"]["max_epochs"] == 3 and typed["xtuner"]["compile"] is True
    assert typed["xtuner"]["lora"]["r"] == 8 and typed["xtuner"]["system"] == "1e3"
    assert typed["assistant"]["name"] == "123" and typed["base_model"]["path"] is None
    assert typed_command_line(config, {"xtuner": {"lr": "1e-4"}})["xtuner"]["lr"] == "0.004"  # not the value given
    assert validate(typed)["xtuner"]["lr"] == 0.004
    # a value from a config file is never touched: `max_epochs: "3"` there stays refused
    assert typed_command_line(set_key(default_config(), "xtuner.max_epochs", "3"), {})["xtuner"]["max_epochs"] == "3"


def test_config_file_duplicate_keys_are_found_at_any_depth(tmp_path: Path) -> None:
    from xtflow.settings import load_config_file

    path = tmp_path / "c.yaml"
    path.write_text("xtuner:\n  lr: 0.1\n  lora:\n    r: 4\n    r: 8\n", encoding="utf-8")
    with pytest.raises(XtflowError) as err:
        load_config_file(path)
    assert str(err.value) == (
        f"config file {path}, line 5: key 'r' appears twice (first at line 4); YAML keeps only the last one, "
        "so the first would be lost"
    )
    path.write_text("xtuner: {lr: 0.1\n", encoding="utf-8")
    with pytest.raises(XtflowError, match=rf"^config file {path}, line \d+: not valid YAML"):
        load_config_file(path)


def test_non_finite_numbers_are_refused_in_lists_too() -> None:
    with pytest.raises(XtflowError, match=r"^config key 'xtuner.evaluation_inputs\[1\]': -.inf is not a finite"):
        validate(set_key(default_config(), "xtuner.evaluation_inputs", ["a", float("-inf")]))
