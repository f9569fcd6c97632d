"""A catalogue of hostile inputs, each refused with one line that names the key or file.

Every case runs real Snakemake (or, where said, the validating code) and checks:
the run fails, the message is one line and says what the README's Troubleshooting table
says, and no output that a later run could mistake for a result is left behind.
`test_readme_troubleshooting_table_matches` keeps the README table and this file in step.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, SNAKEFILE, closed_port, default_config, hub_env, set_key, snakemake, write_config
from xtflow.errors import XtflowError


@dataclass(frozen=True)
class Case:
    id: str
    situation: str  # what the user did, as the README says it
    message: str  # the part of the error every user sees (README "Message" column)
    run: Callable[[Path], str]  # makes the situation in a fresh dir, returns the error text


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, "the run succeeded"
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("xtflow: error")]
    assert lines, f"no xtflow error line in:\n{proc.stderr[-3000:]}"
    return lines[-1]


def dry_run_with(**changes: Any) -> Callable[[Path], str]:
    """The config change alone (dotted keys with '__' for '.'); refused at start, by a dry run."""

    def run(tmp: Path) -> str:
        config = default_config()
        for key, value in changes.items():
            set_key(config, key.replace("__", "."), value)
        write_config(tmp, config)
        return _error_line(snakemake(tmp, "-n"))

    return run


def base_model_at(make: Callable[[Path], Path | str]) -> Callable[[Path], str]:
    def run(tmp: Path) -> str:
        return dry_run_with(base_model__path=str(make(tmp)))(tmp)

    return run


def hub_id_unavailable(tmp: Path) -> str:
    """An empty hub cache of its own, offline: refused before any job, nothing written (tests/test_hub.py)."""
    write_config(tmp, set_key(default_config(), "base_model.path", "internlm/internlm2-chat-1_8b"))
    return _error_line(snakemake(tmp, "-n", env=hub_env(tmp / "hf_home", closed_port(), offline=True)))


def _tiny_model(tmp: Path) -> Path:
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model

    out = tmp / "models" / "internlm2-chat-1_8b"
    build_tiny_model(
        TinyModelSpec(
            vocab_size=400,
            hidden_size=16,
            intermediate_size=32,
            num_layers=1,
            num_heads=2,
            max_position_embeddings=64,
            seed=0,
        ),
        out,
    )
    return out


def _without_tokenizer(tmp: Path) -> Path:
    model = _tiny_model(tmp)
    (model / "tokenizer.json").unlink()
    return model


def dataset_file(text: str) -> Callable[[Path], str]:
    """A user dataset file with `text`; refused by the dataset rule (a real job run)."""

    def run(tmp: Path) -> str:
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        (tmp / "data" / "mine.json").write_text(text, encoding="utf-8")
        write_config(tmp, set_key(default_config(), "dataset.files", ["data/mine.json"]))
        msg = _error_line(snakemake(tmp, "results/data/train.json"))
        assert not (tmp / "results" / "data" / "train.json").exists()
        return msg

    return run


def quick_config() -> dict[str, Any]:
    """The default without the general skill, general and conversation records: the cases that use it fail
    before or at training, count the identity records alone, or (hostile values) need no general skill."""
    config = default_config()
    config["dataset"]["general_records"] = 0
    config["dataset"]["conversations"] = 0
    config["base_model"]["general_skill"] = None
    return config


def training_with(**changes: Any) -> Callable[[Path], str]:
    """A config the train rule refuses (before XTuner starts); no checkpoint handle is left."""

    def run(tmp: Path) -> str:
        config = quick_config()
        for key, value in changes.items():
            set_key(config, key.replace("__", "."), value)
        if "long_prompts" in config["dataset"]:
            config["dataset"].pop("long_prompts")
            (tmp / "data").mkdir()
            long = [{"conversation": [{"input": "word " * 200, "output": "ok"}]} for _ in range(8)]
            (tmp / "data" / "long.json").write_text(json.dumps(long), encoding="utf-8")
            config["dataset"]["files"] = ["data/long.json"]
        write_config(tmp, config)
        msg = _error_line(snakemake(tmp, "results/final_model"))
        assert not (tmp / "results" / "train" / "final_checkpoint.pth").exists()
        assert not (tmp / "results" / "final_model").exists()
        return msg

    return run


def xtuner_config_with(**changes: Any) -> Callable[[Path], str]:
    """A config the xtuner_config job refuses, once it can see the base model; no config is written."""

    def run(tmp: Path) -> str:
        config = quick_config()
        for key, value in changes.items():
            set_key(config, key.replace("__", "."), value)
        write_config(tmp, config)
        written = "results/xtuner/internlm2_1_8b_qlora_alpaca_e3.py"
        msg = _error_line(snakemake(tmp, written))
        assert not (tmp / written).exists()
        return msg

    return run


def failing_training(tmp: Path) -> str:
    """XTuner itself fails (unreadable weights): its error is in the train log, the run fails."""
    write_config(tmp, quick_config())
    snakemake(tmp, "resources/base_model", check=True)
    (tmp / "resources" / "base_model" / "model.safetensors").write_bytes(b"\0" * 64)
    proc = snakemake(tmp, "results/final_model", "--rerun-triggers", "mtime")
    log = (tmp / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" in log and "safetensors" in log.lower()
    assert "xtflow: error: XTuner train failed (exit 1)" in log
    assert not (tmp / "results" / "final_model").exists()
    assert not (tmp / "results" / "train" / "final_checkpoint.pth").exists()
    return _error_line(proc)


def read_only_output_dir(tmp: Path) -> str:
    """An output directory on a read-only file system (a real read-only bind mount)."""
    write_config(tmp, default_config())
    snakemake(tmp, "results/data/train.json", check=True)
    ro = tmp / "results" / "data"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp), "--cores", "1"]
    script = f"mount --bind -o ro '{ro}' '{ro}' && exec \"$@\""
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True, timeout=600, check=False
    )
    assert not (tmp / "results" / "final_model").exists()
    return _error_line(proc)


def damaged_checkpoint(tmp: Path) -> str:
    """Resuming finds its newest checkpoint truncated (the validating code: xtflow.train.prepare_work_dir)."""
    import torch

    from xtflow.train import FINGERPRINT, TrainPlan, prepare_work_dir

    work = tmp / "work_dir"
    work.mkdir()
    ckpt = work / "iter_40.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "meta": {"iter": 40}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])  # truncated, as by a full disk or a kill mid-write
    (work / "last_checkpoint").write_text(str(ckpt), encoding="utf-8")
    (work / FINGERPRINT).write_text("abc\n", encoding="utf-8")
    plan = TrainPlan(records=256, samples=256, packed=False, iters_per_epoch=32, max_epochs=3, warmup_iters=9)
    with pytest.raises(XtflowError) as err:
        prepare_work_dir(work, "abc", plan, say=lambda line: None)
    assert ckpt.exists()  # nothing deleted behind the user's back
    return str(err.value)


HOSTILE_NAME = "Bob\"'; touch MARKER; $(touch MARKER) `touch MARKER` {name} {maker} {0} %s %(x)d \\n 小明 🤖\nline2"


def hostile_values(tmp: Path) -> str:
    """Shell and Python metacharacters in every free-text value reach the data verbatim, run nothing."""
    config = quick_config()
    config["xtuner"]["max_epochs"] = 4  # 24 iterations: the values pass every stage; more adds nothing to check
    config["assistant"]["name"] = HOSTILE_NAME
    config["assistant"]["maker"] = "$(touch MARKER)"
    config["xtuner"]["system"] = "'); __import__('os').system('touch MARKER'); ('"
    config["xtuner"]["evaluation_inputs"] = ["`touch MARKER`", '"; touch MARKER #']
    config["dataset"]["questions"]["en"] = ["Who are you? $(touch MARKER)"]
    write_config(tmp, config)
    snakemake(tmp, "results/final_model", check=True)
    records = json.loads((tmp / "results" / "data" / "train.json").read_text(encoding="utf-8"))
    outputs = {r["conversation"][0]["output"] for r in records}
    assert f"I am {HOSTILE_NAME}, an AI assistant made by $(touch MARKER). How can I help you?" in outputs
    assert any(r["conversation"][0]["input"] == "Who are you? $(touch MARKER)" for r in records)
    from mmengine.config import Config

    cfg = Config.fromfile(str(tmp / "results" / "xtuner" / "internlm2_1_8b_qlora_alpaca_e3.py"))
    assert cfg.SYSTEM == config["xtuner"]["system"]
    assert not list(tmp.rglob("MARKER")) and not (REPO / "MARKER").exists()
    return "reached the dataset verbatim; nothing executed"


CASES = [
    Case(
        "config-unknown-key",
        "a misspelt key in config.yaml",
        "config key 'xtuner.learning_rate': unknown key",
        dry_run_with(xtuner__learning_rate=1e-4),
    ),
    Case(
        "config-wrong-type",
        "a number given as a string",
        "config key 'xtuner.max_epochs': '3' is not of type 'integer'",
        dry_run_with(xtuner__max_epochs="3"),
    ),
    Case(
        "config-negative-lr",
        "a negative learning rate",
        "config key 'xtuner.lr': -0.001 is less than or equal to the minimum of 0",
        dry_run_with(xtuner__lr=-0.001),
    ),
    Case(
        "config-zero-steps",
        "zero checkpoint interval",
        "config key 'xtuner.save_steps': 0 is less than the minimum of 1",
        dry_run_with(xtuner__save_steps=0),
    ),
    Case(
        "config-negative-count",
        "a negative record count",
        "config key 'dataset.records': -5 is less than the minimum of 0",
        dry_run_with(dataset__records=-5),
    ),
    Case(
        "config-empty-questions",
        "no identity questions but records asked for",
        "config key 'dataset.questions': empty, but dataset.records asks for identity records",
        dry_run_with(dataset__questions={"en": [], "zh": []}),
    ),
    Case(
        "config-empty-dataset",
        "no generated records and no files",
        "config key 'dataset.records': 0 and no dataset.files",
        dry_run_with(dataset__records=0, dataset__general_records=0, dataset__conversations=0),
    ),
    Case(
        "config-unknown-template",
        "a prompt template XTuner does not have",
        "config key 'xtuner.prompt_template': 'internlm3_chat' is not an XTuner template",
        dry_run_with(xtuner__prompt_template="internlm3_chat"),
    ),
    Case(
        "config-unknown-base-config",
        "an XTuner config name that does not exist",
        "config key 'xtuner.base_config': 'internlm2_1_8b_qlora_alpaca_e33' is not an XTuner built-in config",
        dry_run_with(xtuner__base_config="internlm2_1_8b_qlora_alpaca_e33"),
    ),
    Case(
        "config-unpatchable-base-config",
        "an XTuner config that lacks a setting xtflow patches",
        "config key 'xtuner.base_config': XTuner config 'internlm_7b_qlora_oasst1_e3_hf': "
        "has no top-level setting 'batch_size' to patch",
        dry_run_with(xtuner__base_config="internlm_7b_qlora_oasst1_e3_hf"),
    ),
    Case(
        "config-4bit-on-cpu",
        "QLoRA asked for on a CPU run",
        "config key 'xtuner.load_in_4bit': 4-bit (QLoRA) needs xtuner.device: cuda",
        dry_run_with(xtuner__load_in_4bit=True),
    ),
    Case(
        "config-internlm2-odd-heads",
        "a tiny InternLM2 with an odd number of heads (half are key-value heads)",
        "config key 'base_model.tiny.num_heads': 3, but architecture internlm2 needs an even number",
        dry_run_with(base_model__tiny__architecture="internlm2", base_model__tiny__num_heads=3),
    ),
    Case(
        "config-unknown-lora-target",
        "LoRA asked for a layer the base model does not have",
        "config key 'xtuner.lora.target_modules': 'wqkv' is not a linear layer of the base model",
        xtuner_config_with(xtuner__lora__target_modules=["wqkv", "q_proj"]),
    ),
    Case(
        "model-missing",
        "base_model.path does not exist",
        "does not exist",
        base_model_at(lambda tmp: tmp / "models" / "nope"),
    ),
    Case(
        "model-parent-dir",
        "base_model.path is the parent of the model directory",
        "has no config.json; did you mean",
        base_model_at(lambda tmp: _tiny_model(tmp).parent),
    ),
    Case(
        "model-no-tokenizer",
        "the model directory lacks its tokenizer",
        "has no tokenizer",
        base_model_at(_without_tokenizer),
    ),
    Case(
        "model-hub-id-unavailable",
        "a Hugging Face id neither in the local cache nor reachable (offline)",
        "'internlm/internlm2-chat-1_8b' (no local directory, so a Hugging Face id; revision main) is not in the "
        "Hugging Face cache",
        hub_id_unavailable,
    ),
    Case(
        "model-modelscope-id",
        "a ModelScope id",
        "ModelScope ids ('modelscope:Shanghai_AI_Laboratory/internlm2-chat-1_8b') are not supported: download "
        "the model with",
        base_model_at(lambda tmp: "modelscope:Shanghai_AI_Laboratory/internlm2-chat-1_8b"),
    ),
    Case("data-not-json", "a dataset file that is not JSON", "not valid JSON", dataset_file("{oops")),
    Case(
        "data-not-list",
        "JSON, but not a list",
        "must be a JSON list of records, got a JSON dict",
        dataset_file('{"a": 1}'),
    ),
    Case(
        "data-no-conversation",
        "a record without conversation/messages",
        "record 1: has neither 'conversation'",
        dataset_file('[{"conversation": [{"input": "a", "output": "b"}]}, {"text": "x"}]'),
    ),
    Case(
        "data-empty-string",
        "an empty answer",
        "record 0, turn 0 'output': is empty",
        dataset_file('[{"conversation": [{"input": "a", "output": " "}]}]'),
    ),
    Case(
        "data-unknown-role",
        "an OpenAI-format message with an unknown role",
        "record 0, message 0: unknown role 'bot'",
        dataset_file('[{"messages": [{"role": "bot", "content": "x"}]}]'),
    ),
    Case("data-no-records", "a dataset file holding no records", "holds no records", dataset_file("[]")),
    Case(
        "data-zero-after-filtering",
        "every prompt longer than max_length (XTuner drops them all)",
        "training set: 0 samples left after XTuner's processing",
        training_with(dataset__records=0, dataset__long_prompts=True, xtuner__max_length=32),
    ),
    Case(
        "data-too-small-for-warmup",
        "too few samples for the warmup (XTuner: 'end should be larger than begin')",
        "config key 'xtuner.warmup_ratio': 0.03 x 1 epoch(s) x 2 iterations/epoch",
        training_with(dataset__records=16, xtuner__max_epochs=1, xtuner__warmup_ratio=0.03),
    ),
    Case(
        "values-not-executed",
        "quotes, $(), backticks, ;, newlines, {} and % in names and prompts",
        "reached the dataset verbatim; nothing executed",
        hostile_values,
    ),
    Case(
        "runtime-training-fails",
        "XTuner fails during training (here: damaged weights)",
        "xtflow: error in rule train: XTuner train failed (exit 1)",
        failing_training,
    ),
    Case(
        "runtime-read-only",
        "an output directory that cannot be written",
        "cannot write to results/data/: Read-only file system",
        read_only_output_dir,
    ),
    Case("runtime-damaged-checkpoint", "the checkpoint to resume from is truncated", "is damaged", damaged_checkpoint),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_in_one_line(case: Case, tmp_path: Path) -> None:
    message = case.run(tmp_path)
    assert case.message in message
    assert "\n" not in message and "Traceback" not in message


def test_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


def test_readme_troubleshooting_table_matches() -> None:
    """README.md's Troubleshooting table lists exactly these cases, with these messages."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w-]+)` \| (.+?) \| `(.+?)` \|$", section, flags=re.M)
    assert {r[0]: (r[1], r[2]) for r in rows} == {c.id: (c.situation, c.message) for c in CASES}


def troubleshooting_table() -> str:
    """The README table, generated from CASES: `python tests/test_hostile_inputs.py`."""
    lines = ["| case | what happened | message (one line, on stderr and in the rule's log) |", "| --- | --- | --- |"]
    lines += [f"| `{c.id}` | {c.situation} | `{c.message}` |" for c in CASES]
    return "\n".join(lines)


if __name__ == "__main__":
    print(troubleshooting_table())
