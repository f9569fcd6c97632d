"""Where each stage of the workflow writes, relative to the run directory: the one module that names them.

The rules (workflow/rules/common.smk), the chat and web commands and the config checks all read
these names from here.
"""

from __future__ import annotations

BASE_MODEL = "resources/base_model"
UNTAUGHT_MODEL = "resources/tiny_untaught"  # the tiny default before rule general_skill
DATASET = "results/data/train.json"
WORK_DIR = "results/train/work_dir"
CHECKPOINT = "results/train/final_checkpoint.pth"
ADAPTER = "results/hf_adapter"
FINAL_MODEL = "results/final_model"
EVAL_SUMMARY = "results/eval/summary.csv"
EVAL_REPLIES = "results/eval/replies.csv"
EVAL_HARNESS = "results/eval/harness.json"
REPORT = "results/report"
PUBLISH_MODEL = "results/publish/model"  # the merged model as a hub repository: weights, tokenizer, card
PUBLISH_ADAPTER = "results/publish/adapter"  # the LoRA adapter alone, with its own card
PUSH_RECORD = "results/publish/push.json"  # what `snakemake push` uploaded (or, dry run, would upload)

# The LLaVA target (rules/llava.smk): the tutorial's multimodal fine-tune, beside the text pipeline.
LLAVA_VISUAL_ENCODER = "resources/llava/visual_encoder"  # the tiny CLIP built when none is given
LLAVA_EVAL_SUMMARY = "results/llava/eval/summary.csv"
LLAVA_EVAL_REPLIES = "results/llava/eval/replies.csv"
LLAVA_MERGED = "results/llava/merged"
LLAVA_REPORT = "results/llava/report/evaluation.html"
LLAVA_STAGES = ("pretrain", "finetune")  # the tutorial's two XTuner trainings
LLAVA_SPLITS = ("pretrain", "finetune", "test")  # the data: one split per training, plus held-out images


def xtuner_config(base_config: str) -> str:
    """The written XTuner config, named after the built-in config it was made from."""
    return f"results/xtuner/{base_config}.py"


def llava_data(split: str) -> str:
    """One LLaVA data split: records.json (LLaVA's format), images/ (paths in the records are relative
    to it) and sample.png (the image EvaluateChatHook shows during training)."""
    return f"results/llava/data/{split}"


def llava_xtuner_config(stage: str) -> str:
    return f"results/llava/xtuner/{stage}.py"


def llava_work_dir(stage: str) -> str:
    return f"results/llava/{stage}/work_dir"


def llava_checkpoint(stage: str) -> str:
    return f"results/llava/{stage}/final_checkpoint.pth"


def llava_export(stage: str) -> str:
    """`pth_to_hf` of a stage in XTuner's LLaVA layout: projector/ (both stages), llm_adapter/ and
    visual_encoder_adapter/ (finetune): what `xtuner chat --llava` loads."""
    return f"results/llava/hf/{stage}"


def llava_llm(llava: dict) -> str:
    """The LLaVA target's LLM: config `llava.llm`, or the text pipeline's base model."""
    return llava["llm"] or BASE_MODEL


def llava_visual_encoder(llava: dict) -> str:
    """The LLaVA target's visual encoder: config `llava.visual_encoder.path`, or the tiny one it builds."""
    return llava["visual_encoder"]["path"] or LLAVA_VISUAL_ENCODER
