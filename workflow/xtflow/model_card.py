"""The model cards (README.md) of what xtflow publishes, written with huggingface_hub's model-card support.

The front matter is `ModelCardData.to_yaml()` (base model, license, languages, tags, library, and the
evaluation as `model-index` through `EvalResult`); the text is the Jinja template
`templates/model_card.md`, rendered by `ModelCard.from_template`, one template for both the merged
model's card and the adapter's. Nothing in a card varies between two runs of the same config: no
dates, no paths of the machine.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow.evaluate import METRICS

TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
TAGS = ["xtuner", "lora", "self-cognition", "xtflow"]
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
PROBE_SETS = {
    "identity": "held-out identity questions",
    "unrelated": "unrelated questions",
    "general": "general questions with reference answers",
}


@dataclass(frozen=True)
class Evaluation:
    """results/eval/summary.csv, read generically: every column but `model` is a measurement."""

    columns: list[str]
    by_model: dict[str, dict[str, str]]
    probe_sizes: dict[str, int]

    @classmethod
    def read(cls, summary_csv: Path, replies_csv: Path) -> Evaluation:
        with summary_csv.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = [c for c in reader.fieldnames or [] if c != "model"]
        with replies_csv.open(encoding="utf-8", newline="") as f:
            sets = [r["set"] for r in csv.DictReader(f) if r["model"] == "final"]
        return cls(columns, {r["model"]: r for r in rows}, {s: sets.count(s) for s in dict.fromkeys(sets)})

    def table(self) -> list[dict[str, str]]:
        """One row per column of summary.csv: its base and final values as written there, and its meaning."""
        return [
            {
                "metric": c,
                "base": cell(self.by_model.get("base", {}).get(c) or "-"),
                "final": cell(self.by_model.get("final", {}).get(c) or "-"),
                "meaning": cell(meaning(c)),
            }
            for c in self.columns
        ]

    def eval_results(self, probes_name: str) -> list[Any]:
        """The numbers as `model-index` entries: the fine-tuned model's under each column's name, the base
        model's under `<column>_base_model`."""
        from huggingface_hub import EvalResult

        out = []
        for model, suffix, whose in (("final", "", ""), ("base", "_base_model", " of the base model")):
            for c in self.columns:
                value = _number(self.by_model.get(model, {}).get(c, ""))
                if value is not None:
                    out.append(
                        EvalResult(
                            task_type="text-generation",
                            task_name="Self-cognition",
                            dataset_type="xtflow-probes",
                            dataset_name=probes_name,
                            metric_type=c + suffix,
                            metric_name=c + whose,
                            metric_value=value,
                        )
                    )
        return out

    def probes_text(self) -> str:
        return ", ".join(f"{n} {PROBE_SETS.get(s, s)}" for s, n in self.probe_sizes.items()) or "no probes"


def meaning(column: str) -> str:
    """What a column of summary.csv measures; a column named after a metric plus a suffix (such as
    `identity_accuracy_low`) is described by that metric."""
    if column in METRICS:
        return METRICS[column]
    for metric in sorted(METRICS, key=len, reverse=True):
        if column.startswith(metric + "_"):
            return f"{column[len(metric) + 1 :].replace('_', ' ')} of {metric}"
    return ""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # no NaN in the metadata


def cell(value: Any) -> str:
    """A value as one Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def cells(pairs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(cell(k), cell(_plain(v))) for k, v in pairs.items()]


def _plain(value: Any) -> str:
    import json

    if isinstance(value, (list, dict, bool)) or value is None or value == "":
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _py(value: Any) -> str:
    """A Python literal of strings, lists and dicts of strings, written as JSON (keeps non-ASCII text)."""
    import json

    return json.dumps(value, ensure_ascii=False)


def chat_snippet(model_id: str, system: str, remote_code: bool, question: str = "Who are you?") -> str:
    """transformers code that loads the merged model and answers one question (runs as written)."""
    trust = ", trust_remote_code=True" if remote_code else ""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    where = "" if model_id != "." else "  # this repository, cloned (git lfs pull fetches the weights)"
    return f"""from transformers import AutoModelForCausalLM, AutoTokenizer

model_id = {_py(model_id)}{where}
tokenizer = AutoTokenizer.from_pretrained(model_id{trust})
model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype="auto"{trust})
messages = {_py(messages)}
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))"""


def adapter_snippet(
    base_id: str, adapter_id: str, system: str, remote_code: bool, question: str = "Who are you?"
) -> str:
    """transformers + peft code that loads base model + adapter and answers one question."""
    trust = ", trust_remote_code=True" if remote_code else ""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    where = "" if adapter_id != "." else "  # this repository, cloned (git lfs pull fetches the weights)"
    return f"""from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

base_id = {_py(base_id)}
adapter_id = {_py(adapter_id)}{where}
tokenizer = AutoTokenizer.from_pretrained(adapter_id{trust})
base = AutoModelForCausalLM.from_pretrained(base_id, torch_dtype="auto"{trust})
model = PeftModel.from_pretrained(base, adapter_id)
messages = {_py(messages)}
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
generation_config = GenerationConfig.from_pretrained(adapter_id, max_new_tokens=64, do_sample=False)
output = model.generate(**inputs, generation_config=generation_config)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))"""


def render_card(kind: str, metadata: dict[str, Any], text: dict[str, Any]) -> str:
    """README.md of a published folder: `kind` model or adapter; `metadata` the ModelCardData fields;
    `text` the template's values."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**metadata)
    card = ModelCard.from_template(data, template_str=TEMPLATE.read_text(encoding="utf-8"), kind=kind, **text)
    return str(card).rstrip("\n") + "\n"
