"""Write the LLaVA target's two XTuner configs: the tutorial's pretrain and finetune configs, patched.

As for the text pipeline (`xtflow.xtuner_config`, whose shared edits these reuse): XTuner's built-in
config, copied with only the listed values changed, so it reads like the stock file and trains by hand
exactly as the rule trains it (`python -m xtuner.tools.train results/llava/xtuner/<stage>.py`). Besides
the values of config `llava:`, the edits every run needs:

- local paths for the LLM, the visual encoder, the data and the evaluation image (the stock configs
  name hub ids, a data folder of their own and a URL, fetched when the hook is built: offline, fails);
- `LLaVADatasetWithProcesses`: the text processing bound to `llava.dataset_processes` (XTuner: 32);
- `FastLoraLLaVAModel`, `BatchedEvaluateChatHook` (xtflow.xtuner_plugins), the seed, the precision, the
  optimizer wrapper and the warmup as for text; the CPU shim on CPU.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow import paths
from xtflow.errors import XtflowError
from xtflow.llava_dataset import IMAGES, RECORDS, SAMPLE
from xtflow.pysource import PatchError, SourceEditor
from xtflow.xtuner_config import (
    TrainingSettings,
    builtin_config_path,
    check_prompt_template,
    finish_patch,
    patch_chat_hook,
    patch_model,
    patch_optimizer,
    patch_schedule,
    patch_seed,
    patch_warmup,
    training_values,
    write_patched,
)

PLUGIN_IMPORT = (
    "from xtflow.xtuner_plugins import BatchedEvaluateChatHook, FastLoraLLaVAModel, LLaVADatasetWithProcesses  # xtflow"
)


@dataclass(frozen=True, kw_only=True)
class LlavaStageSettings(TrainingSettings):
    """The values patched into one stage's config (config `llava:` and the stage's paths)."""

    stage: str  # pretrain or finetune
    llm_path: str
    visual_encoder_path: str
    data_dir: str  # a split written by xtflow.llava_dataset: records.json, images/, sample.png
    pretrained_pth: str | None  # finetune: the projector to start from
    dataset_processes: int
    dataloader_workers: int
    llm_lora: dict[str, Any] | None = None  # finetune: {r, alpha, dropout}
    visual_encoder_lora: dict[str, Any] | None = None


def stage_settings(
    llava: dict[str, Any], stage: str, llm: str, visual_encoder: str, pretrained_pth: str | None
) -> LlavaStageSettings:
    """One stage's settings from config `llava:` (validated) and the paths the rules agreed on."""
    check_prompt_template(llava["prompt_template"], "llava.prompt_template")
    own = llava[stage]
    return LlavaStageSettings(
        **training_values(own, llava),
        stage=stage,
        llm_path=llm,
        visual_encoder_path=visual_encoder,
        data_dir=paths.llava_data(stage),
        pretrained_pth=pretrained_pth if stage == "finetune" else None,
        dataset_processes=llava["dataset_processes"],
        dataloader_workers=llava["dataloader_workers"],
        llm_lora=own.get("llm_lora"),
        visual_encoder_lora=own.get("visual_encoder_lora"),
    )


def export_in_fp32(llava: dict[str, Any], stage: str) -> bool:
    """Whether a stage's export (`pth_to_hf`) runs with `--fp32`: as `llava.adapter.fp32` says, except for a
    4-bit LLM without LoRA (pretraining in the recipe). XTuner's fp16 conversion calls the LLM's `.half()`,
    which transformers refuses for a quantized model, and such a stage saves nothing of the LLM (only the
    projector, which that conversion leaves as it is), so `--fp32` changes no saved tensor there."""
    return llava["adapter"]["fp32"] or (llava["load_in_4bit"] and not llava[stage].get("llm_lora"))


def patch_llava_config(source: str, s: LlavaStageSettings, origin: str = "<config>") -> str:
    """Return `source` (a stock LLaVA config) with every setting of `s` patched in."""
    ed = SourceEditor(source, origin)
    r = repr
    data = Path(s.data_dir)

    # PART 1: local models and data, the schedule, what the hook asks about which image.
    ed.set_assignment("llm_name_or_path", r(s.llm_path))
    ed.set_assignment("visual_encoder_name_or_path", r(s.visual_encoder_path))
    ed.set_assignment("data_root", r(f"{data}/"))
    ed.set_assignment("data_path", r(str(data / RECORDS)))
    ed.set_assignment("image_folder", r(str(data / IMAGES)))
    ed.set_assignment("prompt_template", f"PROMPT_TEMPLATE.{s.prompt_template}")
    patch_schedule(ed, s)
    ed.set_assignment("dataloader_num_workers", r(s.dataloader_workers))
    ed.set_assignment("evaluation_images", r(str(data / SAMPLE)))
    if s.stage == "finetune":
        ed.set_assignment("pretrained_pth", r(s.pretrained_pth))
    patch_seed(ed, s.seed)

    # PART 2: the model: xtflow's LoRA preparation, precision, LoRA shapes.
    patch_model(ed, s, "LLaVAModel", "FastLoraLLaVAModel")
    for part, lora in (("llm_lora", s.llm_lora), ("visual_encoder_lora", s.visual_encoder_lora)):
        if lora is not None:
            call = ed.dict_path("model", part)
            ed.set_keyword(call, "r", r(lora["r"]), f"model.{part}")
            ed.set_keyword(call, "lora_alpha", r(lora["alpha"]), f"model.{part}")
            ed.set_keyword(call, "lora_dropout", r(lora["dropout"]), f"model.{part}")

    # PART 3: the dataset's text processing in few processes; no pinned memory without an accelerator.
    dataset_name, dataset = _find_llava_dataset(ed)
    ed.replace(ed.keyword(dataset, "type", dataset_name).value, "LLaVADatasetWithProcesses")
    ed.add_keyword(dataset, "map_num_proc", r(s.dataset_processes), dataset_name)
    if s.device == "cpu":
        ed.set_keyword(ed.dict_path("train_dataloader"), "pin_memory", "False", "train_dataloader")

    # PART 4: warmup, optimizer wrapper and bounded sampling, as for text.
    patch_warmup(ed, s.warmup_ratio)
    patch_optimizer(ed, s.dtype)
    patch_chat_hook(ed, s.evaluation_max_new_tokens, s.evaluation_before_train)
    return finish_patch(ed, PLUGIN_IMPORT, s.device)


def _find_llava_dataset(ed: SourceEditor) -> tuple[str, ast.Call]:
    """The one top-level `X = dict(type=LLaVADataset, ...)`."""
    found = [
        node.targets[0].id
        for node in ed.tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Call)
        and any(kw.arg == "type" and ed.text(kw.value) == "LLaVADataset" for kw in node.value.keywords)
    ]
    if len(found) != 1:
        raise PatchError(f"{ed.origin}: expected one top-level dict(type=LLaVADataset, ...), found {len(found)}")
    return found[0], ed.dict_path(found[0])


def write_llava_config(base_name: str, s: LlavaStageSettings, out: Path) -> None:
    """Patch the built-in config `base_name` for stage `s.stage` and write it to `out` (atomically)."""
    key = f"llava.{s.stage}.base_config"
    write_patched(base_name, lambda source, origin: patch_llava_config(source, s, origin), out, key)


def check_llava_patchable(llava: dict[str, Any]) -> None:
    """Patch both stages' base configs in memory (nothing written): fails before any job if one cannot be."""
    for stage in paths.LLAVA_STAGES:
        key = f"llava.{stage}.base_config"
        base_name = llava[stage]["base_config"]
        base = builtin_config_path(base_name, key)
        settings = stage_settings(llava, stage, "llm", "visual_encoder", "projector.pth")
        try:
            patch_llava_config(base.read_text(encoding="utf-8"), settings, f"XTuner config '{base_name}'")
        except PatchError as e:
            raise XtflowError(f"config key '{key}': {e}; xtflow cannot patch it") from None
