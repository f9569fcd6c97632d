"""Provide the base model under resources/: a checked link to a local model directory; and what LoRA
can adapt in a base model (its linear layers).

The tutorial links the downloaded model into the work directory; its classic mistake
is to point at the parent directory. xtflow checks the directory first and names the
subdirectory that does hold a config.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth")
KEY = "base_model.path"


def _subdirs_with_config(root: Path, depth: int = 3) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_depth = len(Path(dirpath).relative_to(root).parts)
        if rel_depth >= depth:
            dirnames.clear()
        dirnames.sort()
        if "config.json" in filenames and Path(dirpath) != root:
            found.append(Path(dirpath))
    return found


def model_dir_problem(path: Path, tokenizer: bool = True) -> str | None:
    """What makes `path` no usable Hugging Face model directory (e.g. "has no tokenizer (...)"), or None.
    `tokenizer`: whether it needs one (an LLM does, a vision tower does not)."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a model directory"
    if not (path / "config.json").is_file():
        inside = _subdirs_with_config(path)
        return "has no config.json" + (f"; did you mean '{inside[0]}'?" if inside else " and no subdirectory has one")
    if tokenizer and (
        not (path / "tokenizer_config.json").is_file() or not any((path / f).is_file() for f in TOKENIZER_FILES)
    ):
        return f"has no tokenizer (needs tokenizer_config.json and one of {', '.join(TOKENIZER_FILES)})"
    # is_file: a link whose target is gone (a deleted cache) is no weight file
    if not any(p.is_file() for pattern in WEIGHT_PATTERNS for p in path.glob(pattern)):
        return "has no weights (*.safetensors or *.bin)"
    return None


def check_model_dir(path: Path, key: str = KEY) -> None:
    """Raise XtflowError (one line, naming the key and the path) unless `path` is a usable HF model directory."""
    problem = model_dir_problem(path)
    if problem:
        raise XtflowError(f"config key '{key}': '{path}' {problem}")


def link_model(src: Path, out: Path) -> None:
    """Make `out` a directory of symlinks to the files of the checked model at `src` (nothing copied)."""
    check_model_dir(src)
    src = src.resolve()
    with atomic_dir(out) as tmp:
        for entry in sorted(src.iterdir()):
            (tmp / entry.name).symlink_to(entry)


def linear_layer_names(model: Any) -> set[str]:
    """The last name part of each linear layer of a model (4-bit ones included): what LoRA's
    `target_modules` names, e.g. {wqkv, wo, w1, w2, w3, output} for InternLM2."""
    import torch

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def output_layer_name(model: Any) -> str | None:
    """The last name part of a model's output projection: `lm_head` (Llama), `output` (InternLM2), ..."""
    head = model.get_output_embeddings()
    return next((name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is head), None)


def check_lora_targets(targets: list[str], model_dir: Path) -> None:
    """Refuse layer names the base model does not have (peft would fail at the start of training).
    The model is built on the meta device from its config: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    with torch.device("meta"):
        names = linear_layer_names(AutoModelForCausalLM.from_config(config, trust_remote_code=True))
    missing = [t for t in targets if t not in names]
    if missing:
        raise XtflowError(
            f"config key 'xtuner.lora.target_modules': {', '.join(map(repr, missing))} "
            f"{'is not a linear layer' if len(missing) == 1 else 'are not linear layers'} of the base model "
            f"{model_dir} (its linear layers: {', '.join(sorted(names))})"
        )
