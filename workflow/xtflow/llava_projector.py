"""The projector a fine-tuning starts from: checked before XTuner loads it, because XTuner will not.

`LLaVAModel(pretrained_pth=...)` loads the checkpoint with `load_state_dict(strict=False)`: a
checkpoint whose keys do not match (another model's, a DeepSpeed directory's wrong file) loads nothing,
silently, and fine-tuning starts from a random projector. The check here needs the projector's
weights, `projector.model.0.weight` of shape (LLM hidden size, visual encoder hidden size).
"""

from __future__ import annotations

import json
from pathlib import Path

from xtflow.errors import XtflowError

FIRST_LAYER = "projector.model.0.weight"  # XTuner's ProjectorModel: Linear, GELU, Linear, ...


def check_pretrained_projector(pth: Path, llm: Path, visual_encoder: Path, source: str) -> int:
    """Raise XtflowError (one line naming `source`, the config key or rule that gave `pth`) unless the
    checkpoint holds a projector between these two models; returns how many projector tensors it holds."""
    from transformers import CLIPVisionConfig
    from xtuner.model.utils import guess_load_checkpoint

    try:
        state = guess_load_checkpoint(str(pth))
    except Exception as e:  # torch raises many kinds on a damaged or foreign file
        raise XtflowError(f"{source}: '{pth}' is not a readable checkpoint ({type(e).__name__}: {e})") from None
    found = sorted(k for k in state if k.startswith("projector."))
    if FIRST_LAYER not in state:
        others = ", ".join(sorted(state)[:3]) or "nothing"
        raise XtflowError(
            f"{source}: '{pth}' holds no projector weights ({FIRST_LAYER}; it holds {others}): XTuner would "
            "load nothing from it and fine-tune a random projector"
        )
    llm_hidden = json.loads((llm / "config.json").read_text(encoding="utf-8"))["hidden_size"]
    vision_hidden = CLIPVisionConfig.from_pretrained(str(visual_encoder)).hidden_size
    shape = tuple(state[FIRST_LAYER].shape)
    if shape != (llm_hidden, vision_hidden):
        raise XtflowError(
            f"{source}: '{pth}' holds a projector from {shape[1]} to {shape[0]} features, but the visual "
            f"encoder gives {vision_hidden} and the LLM takes {llm_hidden}"
        )
    return len(found)
