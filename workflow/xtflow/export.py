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


def merge_adapter(
    base: Path, adapter: Path, out: Path, device: str, max_shard_size: str, log: Path, is_clip: bool = False
) -> None:
    """`merge`: base model + adapter -> a standalone model in `out` (written all or nothing). `is_clip`:
    a CLIP vision tower and its image processor instead of an LLM and its tokenizer."""
    with atomic_dir(out) as tmp:
        args = [str(base), str(adapter), str(tmp), "--device", device, "--safe-serialization"]
        run_tool("merge", args + ["--max-shard-size", max_shard_size] + (["--is-clip"] if is_clip else []), log)


def merge_llava(
    llm: Path, visual_encoder: Path, export: Path, out: Path, device: str, max_shard_size: str, log: Path
) -> None:
    """A fine-tuned LLaVA export (`pth_to_hf`) merged, in XTuner's layout: `llm/` and `visual_encoder/`
    with their LoRA adapters merged in, `projector/` as trained (written all or nothing). It chats
    without the run's models: `xtuner chat OUT/llm --llava OUT --image ...`. XTuner saves the LLM in
    fp16, the visual encoder as it was."""
    with atomic_dir(out) as tmp:
        merge_adapter(llm, export / "llm_adapter", tmp / "llm", device, max_shard_size, log)
        encoder = tmp / "visual_encoder"
        merge_adapter(visual_encoder, export / "visual_encoder_adapter", encoder, device, max_shard_size, log, True)
        shutil.copytree(export / "projector", tmp / "projector")
