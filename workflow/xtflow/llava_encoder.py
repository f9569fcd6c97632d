"""The LLaVA target's visual encoder: a checked local CLIP directory, or the tiny default built on CPU.

XTuner's LLaVA configs load it twice, as `CLIPVisionModel.from_pretrained(path)` and as
`CLIPImageProcessor.from_pretrained(path)`: a directory needs both the model and its image processor
(`preprocessor_config.json`), as openai/clip-vit-large-patch14-336 has them. The tiny default has the
shape of config `llava.visual_encoder.tiny` (random weights, seeded: the same settings give
byte-identical files), with OpenAI's image mean and standard deviation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from xtflow.base_model import model_dir_problem
from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_dir

KEY = "llava.visual_encoder.path"
CLIP_TYPES = ("clip", "clip_vision_model")  # a whole CLIP (its vision tower is used) or the tower alone


@dataclass(frozen=True)
class TinyClipSpec:
    """Shape of the tiny CLIP vision tower; every field comes from config `llava.visual_encoder.tiny`."""

    image_size: int
    patch_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    seed: int


def check_visual_encoder(path: Path) -> None:
    """Raise XtflowError (one line naming the key) unless `path` is a local CLIP with its image processor."""
    problem = model_dir_problem(path, tokenizer=False)
    if problem:
        raise XtflowError(f"config key '{KEY}': '{path}' {problem}")
    model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type not in CLIP_TYPES:
        raise XtflowError(f"config key '{KEY}': '{path}' holds a '{model_type}' model, not a CLIP vision model")
    if not (path / "preprocessor_config.json").is_file():
        raise XtflowError(f"config key '{KEY}': '{path}' has no image processor (preprocessor_config.json)")


def build_tiny_clip(spec: TinyClipSpec, out: Path) -> int:
    """Write a seeded CLIP vision tower and its image processor to `out` (all or nothing); returns the
    number of image tokens the LLM sees per image."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    config = CLIPVisionConfig(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        projection_dim=spec.hidden_size,
        hidden_act="quick_gelu",
    )
    torch.manual_seed(spec.seed)
    model = CLIPVisionModel(config)
    side = spec.image_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        resample=3,  # bicubic, as OpenAI's
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        (tmp / "xtflow_tiny_clip.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
    return (side // spec.patch_size) ** 2
