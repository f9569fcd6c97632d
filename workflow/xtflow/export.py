"""Export the trained adapter to Hugging Face format and merge it into the base model."""

from __future__ import annotations

from pathlib import Path

from xtflow.fsutil import atomic_dir
from xtflow.xtuner_tools import run_tool


def export_adapter(config: Path, checkpoint: Path, out: Path, fp32: bool, max_shard_size: str, log: Path) -> None:
    """`pth_to_hf`: the LoRA adapter as safetensors in `out` (written all or nothing)."""
    with atomic_dir(out) as tmp:
        args = [str(config), str(checkpoint), str(tmp), "--safe-serialization", "--max-shard-size", max_shard_size]
        run_tool("pth_to_hf", args + (["--fp32"] if fp32 else []), log)


def merge_adapter(base: Path, adapter: Path, out: Path, device: str, max_shard_size: str) -> str:
    """Base model + adapter -> a standalone model in `out` (written all or nothing), in the base model's
    dtype; returns that dtype's name.

    What XTuner's merge tool (`xtuner convert merge`) does, except for the dtype: it loads the base model
    in float16 whatever it is stored in, so a bfloat16 model (internlm2-chat-1_8b) came out float16 (a
    narrower range than it was trained in), and the float32 tiny default too. Here the base model is
    loaded in its own dtype (config.json's torch_dtype), peft adds the LoRA deltas there, and the merged
    model is saved in it, with the tokenizer and, for remote code (InternLM2), its code files and auto_map.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        base, torch_dtype="auto", low_cpu_mem_usage=True, device_map=device, trust_remote_code=True
    )
    dtype = str(model.dtype).removeprefix("torch.")
    merged = PeftModel.from_pretrained(model, adapter, is_trainable=False).merge_and_unload()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        AutoTokenizer.from_pretrained(base, trust_remote_code=True).save_pretrained(str(tmp))
    print(f"xtflow: merged {adapter} into {base} -> {out} ({dtype})", flush=True)
    return dtype
