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


def merge_adapter(base: Path, adapter: Path, out: Path, device: str, max_shard_size: str, log: Path) -> None:
    """`merge`: base model + adapter -> a standalone model in `out` (written all or nothing)."""
    with atomic_dir(out) as tmp:
        args = [str(base), str(adapter), str(tmp), "--device", device, "--safe-serialization"]
        run_tool("merge", args + ["--max-shard-size", max_shard_size], log)
