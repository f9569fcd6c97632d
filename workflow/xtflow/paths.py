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


def xtuner_config(base_config: str) -> str:
    """The written XTuner config, named after the built-in config it was made from."""
    return f"results/xtuner/{base_config}.py"
