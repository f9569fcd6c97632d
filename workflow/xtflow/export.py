"""Export the trained adapter to Hugging Face format and merge it into the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

from xtflow.fsutil import atomic_dir
from xtflow.xtuner_tools import run_tool


def export_adapter(config: Path, checkpoint: Path, out: Path, fp32: bool, max_shard_size: str, log: Path) -> None:
    """`pth_to_hf`: the LoRA adapter as safetensors in `out` (written all or nothing). For a LLaVA config,
    XTuner's LLaVA layout: projector/, and llm_adapter/ and visual_encoder_adapter/ where LoRA trained."""
    with atomic_dir(out) as tmp:
        args = [str(config), str(checkpoint), str(tmp), "--safe-serialization", "--max-shard-size", max_shard_size]
        run_tool("pth_to_hf", args + (["--fp32"] if fp32 else []), log)


def merge_adapter(base: Path, adapter: Path, out: Path, device: str, max_shard_size: str, vision: bool = False) -> str:
    """Base model + adapter -> a standalone model in `out` (written all or nothing), in the base model's
    dtype; returns that dtype's name. `vision`: a CLIP vision tower and its image processor instead of
    an LLM and its tokenizer.

    What XTuner's merge tool (`xtuner convert merge`, `--is-clip`) does, except for the dtype: it loads
    the base model in float16 whatever it is stored in, so a bfloat16 model (internlm2-chat-1_8b) came
    out float16 (a narrower range than it was trained in), and the float32 tiny default too. Here the
    base model is loaded in its own dtype (config.json's torch_dtype), peft adds the LoRA deltas there,
    and the merged model is saved in it, with the tokenizer (or image processor) and, for remote code
    (InternLM2), its code files and auto_map.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPVisionModel

    if vision:
        model = CLIPVisionModel.from_pretrained(base, torch_dtype="auto", low_cpu_mem_usage=True, device_map=device)
        companion = CLIPImageProcessor.from_pretrained(base)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            base, torch_dtype="auto", low_cpu_mem_usage=True, device_map=device, trust_remote_code=True
        )
        companion = AutoTokenizer.from_pretrained(base, trust_remote_code=True)
    dtype = str(model.dtype).removeprefix("torch.")
    merged = PeftModel.from_pretrained(model, adapter, is_trainable=False).merge_and_unload()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        companion.save_pretrained(str(tmp))
    print(f"xtflow: merged {adapter} into {base} -> {out} ({dtype})", flush=True)
    return dtype


def merge_llava(llm: Path, visual_encoder: Path, export: Path, out: Path, device: str, max_shard_size: str) -> None:
    """A fine-tuned LLaVA export (`pth_to_hf`) merged, in XTuner's layout: `llm/` and `visual_encoder/`
    with their LoRA adapters merged in (each in its base model's dtype), `projector/` as trained
    (written all or nothing). It chats without the run's models: `xtuner chat OUT/llm --llava OUT
    --image ...`."""
    with atomic_dir(out) as tmp:
        merge_adapter(llm, export / "llm_adapter", tmp / "llm", device, max_shard_size)
        encoder = tmp / "visual_encoder"
        merge_adapter(visual_encoder, export / "visual_encoder_adapter", encoder, device, max_shard_size, vision=True)
        shutil.copytree(export / "projector", tmp / "projector")
