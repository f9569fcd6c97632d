"""GPU-only paths (4-bit QLoRA, bf16 AMP, DeepSpeed): run with `make test-gpu` / `pytest -m gpu` on a CUDA machine.

They call the stage functions the rules call (no Snakemake needed on the GPU machine).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _cuda() -> None:
    """Selected only with -m gpu; there, a machine without a GPU is a failure, not a skip."""
    import torch

    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU"


from xtflow.dataset import IdentitySpec, build_dataset  # noqa: E402
from xtflow.export import export_adapter, merge_adapter  # noqa: E402
from xtflow.tiny_model import TinyModelSpec, build_tiny_model  # noqa: E402
from xtflow.train import train  # noqa: E402
from xtflow.xtuner_config import XtunerSettings, write_config  # noqa: E402


def run_stages(tmp: Path, architecture: str = "llama", **overrides) -> Path:
    model, data = tmp / "base_model", tmp / "train.json"
    build_tiny_model(TinyModelSpec(1024, 64, 128, 2, 4, 512, 0, architecture), model)
    build_dataset(
        IdentitySpec(
            "XtBot",
            "the xtflow team",
            {"en": "I am {name}, made by {maker}.", "zh": "我是{name}。"},
            {"en": ["Who are you?"], "zh": ["你是谁？"]},
            256,
            42,
        ),
        [],
        data,
    )
    s = XtunerSettings(
        model_path=str(model),
        data_path=str(data),
        prompt_template="internlm2_chat",
        max_length=128,
        pack_to_max_length=False,
        batch_size=8,
        accumulative_counts=1,
        max_epochs=2,
        lr=2e-3,
        warmup_ratio=0.1,
        save_steps=32,
        save_total_limit=2,
        evaluation_freq=1000,
        evaluation_inputs=["Who are you?"],
        evaluation_max_new_tokens=8,
        system="",
        seed=42,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        load_in_4bit=True,
        dtype="bfloat16",
        gradient_checkpointing=True,
        device="cuda",
    )
    s = replace(s, **overrides)
    config, log = tmp / "cfg.py", tmp / "train.log"
    write_config("internlm2_1_8b_qlora_alpaca_e3", s, config)
    handle = tmp / "final_checkpoint.pth"
    train(config, data, model, tmp / "work_dir", handle, log, None, 1, s.warmup_ratio)
    export_adapter(config, handle, tmp / "hf_adapter", False, "2GB", log)
    merge_adapter(model, tmp / "hf_adapter", tmp / "final_model", "cpu", "2GB")
    return tmp


def test_qlora_4bit_bf16_through_merge(tmp_path: Path) -> None:
    """config/qlora.yaml's settings over the GPU recipe: 4-bit, bf16, compiled decoder layers, no sample before
    training."""
    out = run_stages(tmp_path, compile=True, evaluation_before_train=False)
    assert (out / "hf_adapter" / "adapter_model.safetensors").is_file()
    assert (out / "final_model" / "model.safetensors").is_file()
    log = (out / "train.log").read_text(errors="replace")
    assert "Iter(train) [60/64]" in log and "memory:" in log
    assert "xtflow: torch.compile of 2 decoder layers" in log
    assert "xtflow: no EvaluateChatHook sample before training" in log
    # samples at the two checkpoints (iterations 32 and 64; none before training, none repeated after), eagerly
    assert "xtflow: EvaluateChatHook sampling took" in log and "in 2 calls" in log, log[-3000:]


@pytest.mark.parametrize("four_bit", [False, True], ids=["recipe", "qlora"])
def test_gpu_recipes_on_internlm2_train_with_sdpa_and_merge_in_bf16(four_bit: bool, tmp_path: Path) -> None:
    """The GPU recipe (bf16 LoRA without activation checkpointing) and config/qlora.yaml's 4-bit on InternLM2's
    own architecture (remote code, bf16, compiled): SDPA attention, plain RoPE in training, the merged model in the
    base model's bfloat16 with its code files."""
    import json

    out = run_stages(
        tmp_path,
        "internlm2",
        compile=True,
        evaluation_before_train=False,
        load_in_4bit=four_bit,
        gradient_checkpointing=four_bit,
    )
    log = (out / "train.log").read_text(errors="replace")
    assert "xtflow: attn_implementation sdpa for InternLM2Config" in log
    assert "xtflow: plain RoPE in training for 2 dynamic-NTK rotary embeddings" in log
    assert "Iter(train) [60/64]" in log and "xtflow: torch.compile of 2 decoder layers" in log
    final = out / "final_model"
    assert json.loads((final / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert (final / "modeling_internlm2.py").is_file() and (final / "configuration_internlm2.py").is_file()


def test_lora_bf16_without_checkpointing(tmp_path: Path) -> None:
    out = run_stages(tmp_path, load_in_4bit=False, gradient_checkpointing=False)
    assert (out / "final_model" / "model.safetensors").is_file()
    log = (out / "train.log").read_text(errors="replace")
    assert "xtflow: EvaluateChatHook already sampled these weights at the last iteration" in log


@pytest.mark.parametrize("architecture", ["llama", "internlm2"])
def test_llava_recipe_qlora_through_merge(architecture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The LLaVA recipe's settings (config/llava_internlm2_chat_1_8b.yaml: 4-bit LLM, bf16, activation
    checkpointing, LoRA r 512 / 64) on the tiny models (the LLM a Llama, or InternLM2's own architecture,
    the tutorial's: SDPA, plain RoPE in training, bf16 merge with its code): both trainings, the exports,
    the merge, replies."""
    import yaml

    from conftest import REPO
    from xtflow import paths
    from xtflow.chat_model import RunSettings
    from xtflow.export import merge_llava
    from xtflow.llava_config import export_in_fp32, stage_settings, write_llava_config
    from xtflow.llava_dataset import IMAGES, RECORDS, write_split
    from xtflow.llava_encoder import TinyClipSpec, build_tiny_clip
    from xtflow.llava_evaluate import evaluate_llava
    from xtflow.llava_model import LlavaRun
    from xtflow.settings import validate

    monkeypatch.chdir(tmp_path)  # the written configs' paths are the run directory's
    llm, encoder = tmp_path / "llm", tmp_path / "visual_encoder"
    build_tiny_model(TinyModelSpec(1024, 128, 256, 4, 4, 2048, 0, architecture), llm)
    build_tiny_clip(TinyClipSpec(32, 8, 32, 64, 2, 2, 0), encoder)
    overlay = yaml.safe_load((REPO / "config" / "llava_internlm2_chat_1_8b.yaml").read_text(encoding="utf-8"))
    llava = validate(overlay)["llava"]
    generated = {"pretrain": 32 * 40, "finetune": 16 * 40, "test": 24, "image_size": 32, "seed": 0}
    log = tmp_path / "train.log"
    for stage in paths.LLAVA_SPLITS:
        write_split(Path(paths.llava_data(stage)), None, stage, generated)
    for stage in paths.LLAVA_STAGES:
        s = stage_settings(llava, stage, str(llm), str(encoder), paths.llava_checkpoint("pretrain"))
        assert (s.load_in_4bit, s.dtype, s.device) == (True, "bfloat16", "cuda")
        config = Path(paths.llava_xtuner_config(stage))
        write_llava_config(llava[stage]["base_config"], s, config)
        split = Path(paths.llava_data(stage))
        extra = [encoder, split / IMAGES] + ([Path(s.pretrained_pth)] if s.pretrained_pth else [])
        train(
            config,
            split / RECORDS,
            llm,
            Path(paths.llava_work_dir(stage)),
            Path(paths.llava_checkpoint(stage)),
            log,
            None,
            1,
            s.warmup_ratio,
            extra_inputs=extra,
            section="llava",
        )
        assert "Iter(train) [40/40]" in log.read_text(errors="replace")
        fp32 = export_in_fp32(llava, stage)  # as the llava_adapter rule: True for the 4-bit LLM without LoRA
        export_adapter(config, Path(paths.llava_checkpoint(stage)), Path(paths.llava_export(stage)), fp32, "2GB", log)
    if architecture == "internlm2":
        text = log.read_text(errors="replace")
        assert "xtflow: attn_implementation sdpa for InternLM2Config" in text
        assert "xtflow: plain RoPE in training for 4 dynamic-NTK rotary embeddings" in text
    merge_llava(llm, encoder, Path(paths.llava_export("finetune")), Path(paths.LLAVA_MERGED), "cpu", "2GB")
    merged = json.loads((Path(paths.LLAVA_MERGED) / "llm" / "config.json").read_text(encoding="utf-8"))
    assert merged["torch_dtype"] == json.loads((llm / "config.json").read_text(encoding="utf-8"))["torch_dtype"]
    run = LlavaRun(RunSettings("internlm2_chat", ""), llm, encoder)
    exports = {"finetuned": Path(paths.llava_export("finetune")), "merged": Path(paths.LLAVA_MERGED)}
    scores = evaluate_llava(
        exports, run, Path(paths.llava_data("test")), 8, tmp_path / "s.csv", tmp_path / "r.csv", "cuda"
    )
    assert scores["finetuned"]["images"] == 24 and scores["merged"]["images"] == 24
