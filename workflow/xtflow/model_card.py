"""The model cards (README.md) of what xtflow publishes, written with huggingface_hub's model-card support.

The front matter is `ModelCardData.to_yaml()` (base model, license, languages, tags, library, and the
evaluation as `model-index` through `EvalResult`); the text is the Jinja template
`templates/model_card.md`, rendered by `ModelCard.from_template`, one template for the merged
model's card and the adapter's. What they say: the base model (`BaseFacts`: hub id, license from its
README), the evaluation (`Evaluation`: every column of results/eval/summary.csv), the training
settings, the dataset statistics, the package versions, and code that chats with the model. Nothing
in a card varies between two runs of the same config: no dates, no paths of the machine.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow import paths
from xtflow.errors import XtflowError
from xtflow.evaluate import METRICS, summary_columns
from xtflow.hub import source_record

TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
TAGS = ["xtuner", "lora", "self-cognition", "xtflow"]
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
PROBE_SETS = {
    "identity": "held-out identity questions",
    "unrelated": "unrelated questions",
    "general": "general questions with reference answers",
    "conversation": "conversation turns",
}


@dataclass(frozen=True)
class Evaluation:
    """results/eval/summary.csv, one row per model (`evaluate.summary_columns`): every column is a measurement."""

    columns: list[str]
    by_model: dict[str, dict[str, str]]
    probe_sizes: dict[str, int]

    @classmethod
    def read(cls, summary_csv: Path, replies_csv: Path) -> Evaluation:
        by_model = summary_columns(summary_csv)
        columns = list(dict.fromkeys(c for row in by_model.values() for c in row))
        with replies_csv.open(encoding="utf-8", newline="") as f:
            sets = [r["set"] for r in csv.DictReader(f) if r["model"] == "final"]
        return cls(columns, by_model, {s: sets.count(s) for s in dict.fromkeys(sets)})

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
    if column.startswith("conversation_"):
        return f"{meaning(column.removeprefix('conversation_'))}, on turns after a previous turn of a conversation"
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


@dataclass(frozen=True)
class BaseFacts:
    """What the published folders say about the base model."""

    hub_id: str | None
    name: str  # portable: the hub id, or where an xtflow run keeps the base model
    text: str  # for the card
    license: dict[str, str]  # license (+ license_name, license_link), possibly empty
    license_from_base: bool
    remote_code: bool

    @classmethod
    def read(cls, base_dir: Path, settings: dict[str, Any]) -> BaseFacts:
        b = settings["base"]
        if b["hub_id"]:
            text = f"[{b['hub_id']}](https://huggingface.co/{b['hub_id']})"
            fetched = source_record(base_dir)  # downloaded by rule download_model: the commit it used
            if fetched and fetched.get("repo_id") == b["hub_id"]:
                text += f" at commit `{fetched['commit']}`"
        elif b["tiny"]:
            t = b["tiny"]
            taught = " and taught a small general Q&A set" if t["general_skill"] else ""
            text = (
                f"xtflow's tiny default ({t['num_layers']} layers, hidden size {t['hidden_size']}, "
                f"vocabulary {t['vocab_size']}; random weights{taught}), built by the run and not published"
            )
        else:
            text = f"a local model, `{b['local_name']}` (set `publish.base_model_id` to name its hub id)"
        configured = settings["license"]
        found = license_of(base_dir, configured)
        return cls(
            hub_id=b["hub_id"],
            name=b["hub_id"] or paths.BASE_MODEL,
            text=text,
            license=found or ({"license": configured} if configured else {}),
            license_from_base=bool(found),
            remote_code=bool(read_json(base_dir / "config.json").get("auto_map")),
        )


def license_of(base_dir: Path, configured: str | None) -> dict[str, str]:
    """The base model's license (license, license_name, license_link) from the front matter of its
    README.md; empty where it names none. A configured license (`publish.license`) other than the
    base model's is refused: a fine-tuned model keeps its base model's license."""
    from huggingface_hub import metadata_load

    readme = base_dir / "README.md"
    meta = (metadata_load(readme) or {}) if readme.is_file() else {}
    found = {k: str(meta[k]) for k in ("license", "license_name", "license_link") if meta.get(k)}
    if "license" in found and configured and configured != found["license"]:
        raise XtflowError(
            f"config key 'publish.license': '{configured}' differs from the base model's license "
            f"'{found['license']}' (its README.md); a fine-tuned model keeps its base model's license"
        )
    return found


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, metadata)."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return f.read(size)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def card_facts(
    model: Path, dataset: Path, base_model: Path, summary: Path, replies: Path, loss_csv: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """What both cards show: evaluation, training, dataset statistics, software."""
    import platform

    from xtflow.report import dataset_statistics, versions

    stats, _, _ = dataset_statistics(dataset, base_model)
    with loss_csv.open(encoding="utf-8", newline="") as f:
        losses = list(csv.DictReader(f))
    ds = settings["dataset"]
    parts = [
        f"{ds['records']} identity records generated from {ds['questions']['en']} English and "
        f"{ds['questions']['zh']} Chinese questions (seed {ds['seed']})"
    ]
    if ds["general_records"]:
        parts.append(f"{ds['general_records']} records of xtflow's general Q&A set")
    if ds["files"]:
        parts.append(f"the records of {ds['files']} dataset file(s) of the user's")
    xt = settings["xtuner"]
    training = {"recipe": settings["recipe"]}
    training.update({f"xtuner.{k}": v for k, v in xt.items() if k != "lora"})
    training.update({f"xtuner.lora.{k}": v for k, v in xt["lora"].items()})
    training.update({f"train.{k}": v for k, v in settings["train"].items()})
    # the packages that made the model: bitsandbytes and DeepSpeed only where the run used them
    unused = {"bitsandbytes"} if not xt["load_in_4bit"] else set()
    unused |= {"deepspeed"} if not settings["train"]["deepspeed"] else set()
    software = {"python": platform.python_version()}
    software.update({k: v for k, v in versions().items() if k not in unused and v != "not installed"})
    last = losses[-1] if losses else None
    return {
        "evaluation": Evaluation.read(summary, replies),
        "parameters": f"{parameter_count(model):,}",
        "iterations_text": f"{last['iter']} iterations, last logged training loss {float(last['loss']):.4f}"
        if last
        else "no iterations logged",
        "dataset_text": "The training set: " + "; ".join(parts) + ".",
        "dataset_stats": cells(stats),
        "training": cells(training),
        "versions": cells(software),
        "xtuner_version": software.get("xtuner", "?"),
    }


def parameter_count(model_dir: Path) -> int:
    """Parameters in a model's safetensors files (read from their headers)."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, entry in json.loads(safetensors_header(path)).items():
            if name != "__metadata__":
                n = 1
                for dim in entry["shape"]:
                    n *= dim
                total += n
    return total


def model_card(kind: str, settings: dict[str, Any], base: BaseFacts, facts: dict[str, Any]) -> str:
    """README.md of the published model (`kind` model) or adapter (`kind` adapter)."""
    name, xt = settings["assistant"]["name"], settings["xtuner"]
    repo = settings["repo_ids"][kind] or "."
    if kind == "model":
        snippet = chat_snippet(repo, xt["system"], base.remote_code)
    else:
        snippet = adapter_snippet(base.name, repo, xt["system"], base.remote_code)
    title = name if kind == "model" else f"{name} (LoRA adapter)"
    languages = settings["dataset"]["languages"]
    evaluation: Evaluation = facts["evaluation"]
    metadata = {
        "base_model": base.hub_id,
        **base.license,
        "language": languages or None,
        "library_name": "transformers" if kind == "model" else "peft",
        "pipeline_tag": "text-generation",
        "tags": TAGS,
        "model_name": title,
        "eval_results": evaluation.eval_results(f"xtflow probes: {evaluation.probes_text()}") or None,
    }
    license_id = base.license.get("license_name") or base.license.get("license")
    text = {
        "title": title,
        "name": cell(name),
        "maker": cell(settings["assistant"]["maker"]),
        "base_text": base.text,
        "base_on_hub": bool(base.hub_id),
        "license_text": (f"`{license_id}`" + (", the base model's" if base.license_from_base else ""))
        if license_id
        else "none given (set `publish.license`)",
        "languages_text": ", ".join(LANGUAGE_NAMES.get(x, x) for x in languages) or "those of the dataset files",
        "prompt_template": xt["prompt_template"],
        "snippet": snippet,
        "max_new_tokens": settings["evaluation_max_new_tokens"],
        "probe_sizes_text": evaluation.probes_text(),
        "evaluation": evaluation.table(),
        "base_config": xt["base_config"],
        "recipe": settings["recipe"],
        "tiny": bool(settings["base"]["tiny"]),
        **{k: v for k, v in facts.items() if k != "evaluation"},
    }
    return render_card(kind, metadata, text)
