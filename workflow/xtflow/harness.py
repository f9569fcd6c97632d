"""Optional: standard benchmarks through lm-evaluation-harness (the `lm-eval` package), base vs final.

Config `evaluation.harness: {tasks: [...], limit: N, include_path: DIR, chat_template: true}` adds
the `harness` rule, which runs lm-eval's tasks on the base and the final model (lm-eval's `hf` model,
its own prompts and metrics, each prompt in the model's chat template unless `chat_template: false`)
and writes results/eval/harness.json. `include_path` is a folder of task YAML files of your own, e.g.
a task on a local dataset, for machines without a dataset hub.

lm-eval is not one of xtflow's pinned dependencies (it is large, and a run needs its tasks' data).
Where it is not installed the job says so in one line and the file holds `"status": "not
installed"` and no scores; the installed version is one of the rule's params, so installing it
reruns the rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text

PACKAGE = "lm-eval"


@dataclass(frozen=True)
class HarnessSpec:
    """Config `evaluation.harness`."""

    tasks: list[str]
    limit: int | None = None  # documents per task (None: all)
    include_path: str | None = None  # a folder of the user's task YAML files
    chat_template: bool = True  # wrap each prompt in the model's chat template (lm-eval --apply_chat_template)


def installed_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _numbers(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """lm-eval's per-task results, numbers only (it also reports names and aliases)."""
    return {
        task: {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, metrics in results.items()
    }


def run_harness(base: Path, final: Path, spec: HarnessSpec, out: Path) -> dict[str, Any]:
    version = installed_version()
    result: dict[str, Any] = {"harness": PACKAGE, "tasks": spec.tasks, "limit": spec.limit}
    if version is None:
        print(f"xtflow: evaluation.harness: {PACKAGE} is not installed (pip install '{PACKAGE}[hf]'); nothing was run")
        result.update(status="not installed", scores={})
    else:
        import torch
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=spec.include_path)
        unknown = sorted(set(spec.tasks) - set(manager.all_tasks))
        if unknown:
            raise XtflowError(f"config key 'evaluation.harness.tasks': {PACKAGE} has no task {unknown[0]!r}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        scores = {}
        for label, path in (("base", base), ("final", final)):
            run = simple_evaluate(
                model="hf",
                model_args={"pretrained": str(path), "trust_remote_code": True, "device": device},
                tasks=list(spec.tasks),
                limit=spec.limit,
                task_manager=manager,
                apply_chat_template=spec.chat_template,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
            )
            scores[label] = _numbers(run["results"])
            print(f"xtflow: {PACKAGE} {label}: {json.dumps(scores[label], sort_keys=True)}", flush=True)
        result.update(status="ok", version=version, scores=scores)
    atomic_write_text(out, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
