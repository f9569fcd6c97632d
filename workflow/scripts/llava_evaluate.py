"""Snakemake job: held-out image accuracy, projector-only vs fine-tuned (see xtflow.llava_evaluate)."""

from pathlib import Path

from xtflow.chat_model import RunSettings
from xtflow.llava_evaluate import evaluate_llava
from xtflow.llava_model import LlavaRun
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    run = LlavaRun(RunSettings(p.prompt_template, ""), Path(i.llm), Path(i.visual_encoder))
    exports = {"projector_only": Path(i.projector_only), "finetuned": Path(i.finetuned)}
    summary = evaluate_llava(exports, run, Path(i.test), p.max_new_tokens, Path(o.summary), Path(o.replies), p.device)
    for model, s in summary.items():
        print(f"xtflow: {model}: accuracy {s['accuracy']:.3f} on {s['images']} images, baseline {s['baseline']:.3f}")


run_job(snakemake, job)
