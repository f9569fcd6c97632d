"""Build what xtflow publishes: results/publish/model, the merged model as a model hub repository, and
results/publish/adapter, the LoRA adapter alone; each with its model card (xtflow.model_card).

- Weights are hard links to the final model's and the adapter's files (copies across file systems).
- The tokenizer prompts exactly as training did: its chat template is kept where it renders what
  XTuner's prompt template does, and replaced by one that does where not.
- generation_config.json ends a reply at the prompt template's stop tokens (`<|im_end|>` for
  internlm2_chat) as well as the model's EOS.
- The base model's remote code (`*.py`, for `trust_remote_code`) and license files come along.
- Nothing names a path of this machine: `_name_or_path` and the adapter's `base_model_name_or_path`
  name the base model by its hub id, or by `resources/base_model` (where an xtflow run keeps it);
  a last check refuses a folder in which any file holds the run's, the workflow's or the base
  model's absolute path.
- The same run gives byte-identical folders: no dates, sorted `target_modules`, sorted JSON keys.

What the cards say is xtflow.model_card; uploading the folders is another stage (xtflow.push).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from xtflow import hub
from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_dir, atomic_write_text, link_or_copy
from xtflow.model_card import BaseFacts, card_facts, model_card, read_json, safetensors_header

LICENSE_FILES = ("LICENSE*", "LICENCE*", "NOTICE*", "COPYING*")
TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "*.tiktoken",
    "chat_template*",
)
# what the workflow leaves in its outputs that is not part of a model (Snakemake's directory timestamp)
NOT_PUBLISHED = (".*", "README.md")


@dataclass(frozen=True)
class PublishInputs:
    """The files a published folder is made from (all outputs of earlier stages)."""

    final_model: Path
    adapter: Path
    base_model: Path
    summary: Path
    replies: Path
    dataset: Path
    loss_csv: Path


def card_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The values of the validated config that the published folders depend on (the `publish` rule's
    params: changing anything else reruns nothing here). No paths: a local base model is named by
    its directory's name only."""
    ds, base, pub = config["dataset"], config["base_model"], config["publish"]
    return {
        "assistant": config["assistant"],
        "base": {
            "hub_id": base_model_hub_id(config),
            "local_name": Path(base["path"]).name if base["path"] else None,
            "tiny": None if base["path"] else {**base["tiny"], "general_skill": base["general_skill"]},
        },
        "dataset": {
            "files": len(ds["files"]),
            "general_records": ds["general_records"],
            "languages": [lang for lang in ("en", "zh") if ds["questions"][lang]],
            "questions": {lang: len(q) for lang, q in ds["questions"].items()},
            "records": ds["records"],
            "seed": ds["seed"],
        },
        "evaluation_max_new_tokens": config["evaluation"]["max_new_tokens"],
        "license": pub["license"],
        "repo_ids": card_repo_ids(pub),
        "recipe": config["recipe"],
        "train": {k: config["train"][k] for k in ("deepspeed", "gpus")},
        "xtuner": config["xtuner"],
    }


def base_model_hub_id(config: dict[str, Any]) -> str | None:
    """The base model's id on a model hub, as published (the cards' `base_model`, the adapter's
    `base_model_name_or_path`): config `publish.base_model_id` if set (the hub id a local directory was
    downloaded from), else `base_model.path` where it is a hub id (xtflow.hub); None for a local
    directory and the tiny default."""
    return config["publish"]["base_model_id"] or hub.hub_id(config)


def card_repo_ids(publish_config: dict[str, Any]) -> dict[str, str | None]:
    """The Hugging Face repository ids the cards' code loads the model and the adapter by; None where
    the folder is not pushed to Hugging Face (the code then loads the folder it is in)."""
    on_hf = publish_config["hub"] == "huggingface"
    return {
        "model": publish_config["repo_id"] if on_hf else None,
        "adapter": publish_config["adapter_repo_id"] if on_hf else None,
    }


def publish(inputs: PublishInputs, settings: dict[str, Any], out_model: Path, out_adapter: Path) -> None:
    """Write both published folders (each all or nothing)."""
    base = BaseFacts.read(inputs.base_model, settings)
    facts = card_facts(
        inputs.final_model, inputs.dataset, inputs.base_model, inputs.summary, inputs.replies, inputs.loss_csv, settings
    )
    needles = machine_paths(inputs.base_model)
    with atomic_dir(out_model) as tmp:
        build_model_folder(inputs, settings, base, facts, tmp)
        check_no_machine_paths(tmp, needles, out_model)
    with atomic_dir(out_adapter) as tmp:
        build_adapter_folder(inputs, settings, base, facts, out_model, tmp)
        check_no_machine_paths(tmp, needles, out_adapter)


def machine_paths(base_dir: Path) -> list[str]:
    """Absolute paths of this machine that nothing published may name: the run directory, the
    workflow's checkout and the base model's real directory."""
    found = [Path.cwd().resolve(), Path(__file__).resolve().parents[2]]
    config = base_dir / "config.json"
    if config.is_symlink():
        found.append(config.resolve().parent)
    return sorted({str(p) for p in found if len(p.parts) > 2})


def check_no_machine_paths(folder: Path, needles: list[str], shown_as: Path) -> None:
    """Refuse a folder in which a file (a safetensors file: its header) holds one of `needles`."""
    encoded = [(n, n.encode("utf-8")) for n in needles]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = safetensors_header(path) if path.suffix == ".safetensors" else path.read_bytes()
        for needle, raw in encoded:
            if raw in data:
                raise XtflowError(
                    f"{shown_as}/{path.relative_to(folder)} holds a path of this machine ({needle}): not published"
                )


# -- files ---------------------------------------------------------------------------------------------


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch(name, p) for p in patterns)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def copy_files(src: Path, dst: Path, keep: Any) -> list[str]:
    """Link or copy the files of `src` whose name `keep(name)` accepts; returns their names."""
    names = sorted(p.name for p in src.iterdir() if p.is_file() and keep(p.name))
    for name in names:
        link_or_copy(src / name, dst / name)
    return names


def remote_code_modules(auto_map: dict[str, Any]) -> set[str]:
    """The module files an `auto_map` names (`modeling_internlm2.InternLM2ForCausalLM` ->
    modeling_internlm2.py; entries of another repository, `repo--module.Class`, are not files here)."""
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if r]
    return {r.rsplit(".", 1)[0] + ".py" for r in refs if "--" not in r}


# -- the merged model ----------------------------------------------------------------------------------


def build_model_folder(
    inputs: PublishInputs, settings: dict[str, Any], base: BaseFacts, facts: dict[str, Any], out: Path
) -> None:
    final = inputs.final_model
    rewritten = {"config.json", "generation_config.json", "tokenizer_config.json"}
    copy_files(final, out, lambda n: not matches(n, NOT_PUBLISHED) and n not in rewritten)
    # remote code and license files of the base model that the merge did not carry over
    copy_files(
        inputs.base_model,
        out,
        lambda n: (n.endswith(".py") or matches(n, LICENSE_FILES)) and not (out / n).exists(),
    )
    config = read_json(final / "config.json")
    config["_name_or_path"] = base.name
    write_json(out / "config.json", config)
    write_tokenizer_config(final, settings["xtuner"]["prompt_template"], out)
    write_generation_config(final, settings["xtuner"]["prompt_template"], out)
    for name in ("tokenizer_config.json", "config.json"):
        missing = remote_code_modules(read_json(out / name).get("auto_map", {})) - {p.name for p in out.iterdir()}
        if missing:
            raise XtflowError(
                f"{final}/{name} names remote code that neither it nor the base model has: {sorted(missing)}"
            )
    link_or_copy(inputs.adapter / "xtuner_config.py", out / "xtuner_config.py")
    atomic_write_text(out / "README.md", model_card("model", settings, base, facts))


def xtuner_template(name: str) -> dict[str, Any]:
    from xtuner.utils import PROMPT_TEMPLATE

    return dict(PROMPT_TEMPLATE[name])


def write_tokenizer_config(model_dir: Path, prompt_template: str, out: Path) -> None:
    """tokenizer_config.json with a chat template that renders what XTuner trained on: the model's own
    where it already does (checked on a few conversations), else one made from the prompt template."""
    from transformers import AutoTokenizer

    from xtflow.chat_model import chat_template_jinja, render_prompt

    template = xtuner_template(prompt_template)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    data = read_json(model_dir / "tokenizer_config.json")
    bos = tokenizer.bos_token if tokenizer.bos_token_id is not None else None

    def renders_as_trained(chat_template: str | None) -> bool:
        if not chat_template:
            return False
        for system, history in (("", []), ("Be brief.", []), ("", [("Hi", "Hello!")]), ("Be brief.", [("1+1?", "2")])):
            messages = [{"role": "system", "content": system}] if system else []
            for q, a in history:
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            messages.append({"role": "user", "content": "Who are you?"})
            try:
                got = tokenizer.apply_chat_template(
                    messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True
                )
            except Exception:  # a template that refuses a system message, say: not what XTuner trained on
                return False
            if got != (bos or "") + render_prompt(template, system, history, "Who are you?"):
                return False
        return True

    if not renders_as_trained(data.get("chat_template")):
        data["chat_template"] = chat_template_jinja(template, bos)
        if not renders_as_trained(data["chat_template"]):
            raise XtflowError(f"could not write a chat template for XTuner's prompt template '{prompt_template}'")
    data.pop("name_or_path", None)
    write_json(out / "tokenizer_config.json", data)


def write_generation_config(model_dir: Path, prompt_template: str, out: Path) -> None:
    """generation_config.json whose eos_token_id also holds the prompt template's stop tokens."""
    from transformers import AutoTokenizer

    from xtflow.chat_model import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    path = model_dir / "generation_config.json"
    data = read_json(path) if path.is_file() else {}
    data["eos_token_id"] = stop_token_ids(tokenizer, xtuner_template(prompt_template), data.get("eos_token_id"))
    if data.get("pad_token_id") is None:
        data["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else data["eos_token_id"][0]
    if data.get("bos_token_id") is None and tokenizer.bos_token_id is not None:
        data["bos_token_id"] = tokenizer.bos_token_id
    write_json(out / "generation_config.json", data)


# -- the adapter ---------------------------------------------------------------------------------------


def build_adapter_folder(
    inputs: PublishInputs, settings: dict[str, Any], base: BaseFacts, facts: dict[str, Any], model: Path, out: Path
) -> None:
    adapter = inputs.adapter
    copy_files(adapter, out, lambda n: not matches(n, NOT_PUBLISHED) and n != "adapter_config.json")
    config = read_json(adapter / "adapter_config.json")
    config["base_model_name_or_path"] = base.name
    if isinstance(config.get("target_modules"), list):  # peft writes a set as a list in any order
        config["target_modules"] = sorted(config["target_modules"])
    write_json(out / "adapter_config.json", config)
    # the tokenizer (with the chat template it was trained with), its remote code, the stop tokens
    tokenizer_code = remote_code_modules(read_json(model / "tokenizer_config.json").get("auto_map", {}))
    copy_files(model, out, lambda n: matches(n, TOKENIZER_FILES + LICENSE_FILES) or n in tokenizer_code)
    link_or_copy(model / "generation_config.json", out / "generation_config.json")
    atomic_write_text(out / "README.md", model_card("adapter", settings, base, facts))
