"""Write a runnable XTuner config: a built-in config with xtflow's settings patched in.

This automates the tutorial's `xtuner copy-cfg` + hand edit. The result keeps the
stock file's layout and comments; only the patched values change. It loads with
mmengine's `Config.fromfile` and runs unchanged with `xtuner train` by hand.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from xtflow import paths
from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text
from xtflow.pysource import PatchError, SourceEditor
from xtflow.xtuner_tools import CPU_SHIM

DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """What every config xtflow writes sets, text or LLaVA (patch_schedule and the other shared edits)."""

    prompt_template: str
    max_length: int
    batch_size: int
    accumulative_counts: int
    max_epochs: int
    lr: float
    warmup_ratio: float
    save_steps: int
    save_total_limit: int
    evaluation_freq: int
    evaluation_inputs: list[str]
    evaluation_max_new_tokens: int
    seed: int
    load_in_4bit: bool
    dtype: str
    gradient_checkpointing: bool
    device: str
    evaluation_before_train: bool = True
    compile: bool = False


@dataclass(frozen=True, kw_only=True)
class XtunerSettings(TrainingSettings):
    """The values patched into the base config (from config.yaml `xtuner:` and paths)."""

    model_path: str
    data_path: str
    pack_to_max_length: bool
    system: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    visualizer: str | None = None  # None: mmengine's local JSON scalars only; "tensorboard": also TensorBoard
    # None: XTuner's choice (find_all_linear_names); "all-linear": all but the output layer; or layer names
    lora_target_modules: str | list[str] | None = None
    # False: XTuner's own SupervisedFinetune and EvaluateChatHook, the tutorial's config with its values
    # patched in and nothing of xtflow's (the benchmarks' stock baseline; compile and the sampling
    # settings need xtflow's components)
    plugins: bool = True


def xtuner_package_dir() -> Path:
    """Where xtuner is installed, found without importing it (importing takes seconds)."""
    spec = importlib.util.find_spec("xtuner")
    if spec is None or not spec.submodule_search_locations:
        raise XtflowError("python package 'xtuner' is not installed in this environment (run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0])


@functools.cache
def xtuner_builtin_configs() -> dict[str, Path]:
    """XTuner's built-in configs by name (as `xtuner list-cfg` shows them), found on disk."""
    root = xtuner_package_dir() / "configs"
    return {p.stem: p for p in root.rglob("*.py") if not p.name.startswith("_")}


def builtin_config_path(name: str, key: str = "xtuner.base_config") -> Path:
    """Path of an XTuner built-in config, by name (as `xtuner list-cfg` shows them); `key` names the
    config key that gave it, for the error."""
    configs = xtuner_builtin_configs()
    if name not in configs:
        close = sorted(n for n in configs if n.startswith(name.split("_")[0]))[:3]
        hint = f" (e.g. {', '.join(close)})" if close else ""
        raise XtflowError(f"config key '{key}': '{name}' is not an XTuner built-in config{hint}")
    return configs[name]


def prompt_template_names() -> list[str]:
    """Keys of xtuner.utils.PROMPT_TEMPLATE, read from its source (importing xtuner takes seconds)."""
    source = xtuner_package_dir() / "utils" / "templates.py"
    ed = SourceEditor(source.read_text(encoding="utf-8"), str(source))
    call = ed.assignment("PROMPT_TEMPLATE").value
    if not isinstance(call, ast.Call):
        raise XtflowError(f"{source}: PROMPT_TEMPLATE is not a ConfigDict(...); unsupported XTuner version")
    return sorted(kw.arg for kw in call.keywords if kw.arg)


def check_prompt_template(name: str, key: str = "xtuner.prompt_template") -> None:
    templates = prompt_template_names()
    if name not in templates:
        raise XtflowError(f"config key '{key}': '{name}' is not an XTuner template (known: {', '.join(templates)})")


def _find_dataset_dict(ed: SourceEditor) -> tuple[str, ast.Call]:
    """The one top-level `X = dict(type=process_hf_dataset, ...)`: the training data."""
    found = []
    for node in ed.tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and any(
                kw.arg == "type" and ed.text(kw.value) == "process_hf_dataset" for kw in value.keywords
            ):
                found.append(node.targets[0].id)
    if len(found) != 1:
        raise PatchError(
            f"{ed.origin}: expected one top-level dict(type=process_hf_dataset, ...) dataset, found {len(found)}"
        )
    return found[0], ed.dict_path(found[0])


def find_hook(ed: SourceEditor, hook_type: str) -> ast.Call:
    hooks = ed.assignment("custom_hooks").value
    if not isinstance(hooks, ast.List):
        raise PatchError(f"{ed.origin}: 'custom_hooks' is not a list to patch")
    for item in hooks.elts:
        call = ed.dict_call(item, "custom_hooks[]")
        if any(kw.arg == "type" and ed.text(kw.value) == hook_type for kw in call.keywords):
            return call
    raise PatchError(f"{ed.origin}: 'custom_hooks' has no {hook_type} to patch")


def check_patchable(base_name: str, xt: dict) -> None:
    """Patch the base config in memory (no file written): fails now, before any job, if it cannot be."""
    settings = settings_from_config(xt, model_path=Path(paths.BASE_MODEL), data_path=Path(paths.DATASET))
    base = builtin_config_path(base_name)
    try:
        patch_config(base.read_text(encoding="utf-8"), settings, origin=f"XTuner config '{base_name}'")
    except PatchError as e:
        raise XtflowError(f"config key 'xtuner.base_config': {e}; xtflow cannot patch it") from None


def patch_config(source: str, s: XtunerSettings, origin: str = "<config>") -> str:
    """Return `source` with every setting of `s` patched in; PatchError if one is missing."""
    ed = SourceEditor(source, origin)
    r = repr

    # PART 1: the plain settings the tutorial edits by hand.
    ed.set_assignment("pretrained_model_name_or_path", r(s.model_path))
    ed.set_assignment("prompt_template", f"PROMPT_TEMPLATE.{s.prompt_template}")
    ed.insert_before(ed.assignment("prompt_template"), f"data_path = {s.data_path!r}  # xtflow")
    patch_schedule(ed, s)
    ed.set_assignment("pack_to_max_length", r(s.pack_to_max_length))
    ed.set_assignment("SYSTEM", r(s.system))

    patch_seed(ed, s.seed)  # the stock configs leave it None

    # PART 2: model dtype, 4-bit and LoRA.
    patch_model(ed, s, "SupervisedFinetune", "FastLoraSupervisedFinetune", s.plugins)
    lora = ed.dict_path("model", "lora")
    ed.set_keyword(lora, "r", r(s.lora_r), "model.lora")
    ed.set_keyword(lora, "lora_alpha", r(s.lora_alpha), "model.lora")
    ed.set_keyword(lora, "lora_dropout", r(s.lora_dropout), "model.lora")
    if s.lora_target_modules is not None:
        ed.add_keyword(lora, "target_modules", r(s.lora_target_modules), "model.lora")

    # PART 3: the training data is xtflow's JSON in XTuner's conversation format.
    ds_name, ds = _find_dataset_dict(ed)
    ed.set_keyword(ds, "dataset", "dict(type=load_dataset, path='json', data_files=dict(train=data_path))", ds_name)
    ed.set_keyword(ds, "dataset_map_fn", "None", ds_name)
    # One process: XTuner's default forks up to 32 `datasets` workers to tokenize, and a Ctrl-C reaching
    # them (a terminal signals the whole process group) left the run hung on a dead worker's lock. Here it
    # is also faster: 10,000 records took 11 s in one process, 28 s in 32 (2 cores).
    ed.add_keyword(ds, "map_num_proc", "1", ds_name)

    # PART 4: the warmup (none: no LinearLR) and an optimizer wrapper that matches device and dtype.
    patch_warmup(ed, s.warmup_ratio)
    patch_optimizer(ed, s.dtype)

    # PART 5: bounded, batched sampling during training (xtflow.xtuner_plugins.BatchedEvaluateChatHook).
    patch_chat_hook(ed, s.evaluation_max_new_tokens, s.evaluation_before_train, s.plugins)
    if s.plugins:
        # Stop at the first nan/inf loss, naming the learning rate (xtflow.xtuner_plugins.StopAtNonFiniteLoss).
        ed.insert_before(ed.assignment("default_hooks"), "custom_hooks += [dict(type=StopAtNonFiniteLoss)]  # xtflow")

    # PART 6: experiment tracking through mmengine's visualizer backends (watch a long run live).
    if s.visualizer == "tensorboard":
        ed.set_assignment("visualizer", TENSORBOARD_VISUALIZER)
        ed.insert_after_imports(
            "from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer  # xtflow"
        )
    elif s.visualizer is not None:
        raise XtflowError(f"config key 'xtuner.visualizer': '{s.visualizer}' is not one of null, tensorboard")

    return finish_patch(ed, PLUGIN_IMPORT if s.plugins else None, s.device)


# -- the edits every xtflow config gets, text or LLaVA ------------------------------------------------


SCHEDULE = (
    "max_length",
    "batch_size",
    "accumulative_counts",
    "max_epochs",
    "lr",
    "save_steps",
    "save_total_limit",
    "evaluation_freq",
    "evaluation_inputs",
)


def patch_schedule(ed: SourceEditor, s: TrainingSettings) -> None:
    """The top-level settings every XTuner config has under these names: lengths, schedule, checkpoints,
    samples."""
    for name in SCHEDULE:
        ed.set_assignment(name, repr(getattr(s, name)))


def patch_seed(ed: SourceEditor, seed: int) -> None:
    """Reproducible: the stock configs leave the seed None."""
    ed.set_keyword(ed.dict_path("randomness"), "seed", repr(seed), "randomness")


def patch_model(ed: SourceEditor, s: TrainingSettings, stock: str, ours: str, plugins: bool = True) -> None:
    """`model`: XTuner's class `stock` replaced by xtflow's `ours` (xtflow.xtuner_plugins: its LoRA
    preparation and attention choice; `compile_layers`: torch.compile each decoder layer) unless
    `plugins` is False, activation checkpointing, and the LLM's precision."""
    model = ed.dict_path("model")
    model_type = ed.keyword(model, "type", "model").value
    if ed.text(model_type) != stock:
        raise PatchError(f"{ed.origin}: model type is not {stock} (xtflow fine-tunes it with LoRA)")
    if plugins:
        ed.replace(model_type, ours)
        ed.add_keyword(model, "compile_layers", repr(s.compile), "model")
    elif s.compile or not s.evaluation_before_train:
        raise XtflowError("xtuner.compile and xtuner.evaluation_before_train: false need xtflow's components")
    ed.add_keyword(model, "use_activation_checkpointing", repr(s.gradient_checkpointing), "model")
    patch_llm_precision(ed, s.dtype, s.load_in_4bit)


def patch_llm_precision(ed: SourceEditor, dtype: str, load_in_4bit: bool) -> None:
    """`model.llm`: its dtype, and 4-bit quantization kept (compute dtype matched) or removed."""
    if dtype not in DTYPES:
        raise XtflowError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    llm = ed.dict_path("model", "llm")
    ed.set_keyword(llm, "torch_dtype", f"torch.{dtype}", "model.llm")
    if load_in_4bit:
        quant = ed.dict_call(ed.keyword(llm, "quantization_config", "model.llm").value, "model.llm.quantization_config")
        compute = "float16" if dtype == "float32" else dtype
        ed.set_keyword(quant, "bnb_4bit_compute_dtype", f"torch.{compute}", "model.llm.quantization_config")
    elif ed.has_keyword(llm, "quantization_config"):
        ed.remove_keywords(llm, ["quantization_config"], "model.llm")


def patch_warmup(ed: SourceEditor, warmup_ratio: float) -> None:
    """`warmup_ratio`; no warmup means no LinearLR: XTuner's would run from 0 to 0 and crash."""
    ed.set_assignment("warmup_ratio", repr(warmup_ratio))
    if warmup_ratio == 0:
        schedulers = ed.assignment("param_scheduler").value
        if not isinstance(schedulers, ast.List):
            raise PatchError(f"{ed.origin}: 'param_scheduler' is not a list to patch")
        kept = [e for e in schedulers.elts if "LinearLR" not in ed.text(e).split(",")[0]]
        if len(kept) == len(schedulers.elts):
            raise PatchError(f"{ed.origin}: 'param_scheduler' has no LinearLR warmup to remove")
        ed.replace(schedulers, "[" + ", ".join(ed.text(e) for e in kept) + "]")


def patch_optimizer(ed: SourceEditor, dtype: str) -> None:
    """The optimizer wrapper must match device and dtype: fp32 without AMP (AmpOptimWrapper needs a GPU)."""
    optim = ed.dict_path("optim_wrapper")
    optim_type = ed.keyword(optim, "type", "optim_wrapper")
    if dtype == "float32":
        ed.replace(optim_type.value, "OptimWrapper")
        amp_keys = [key for key in ("loss_scale", "dtype") if ed.has_keyword(optim, key)]
        ed.remove_keywords(optim, amp_keys, "optim_wrapper")
        ed.insert_after_imports("from mmengine.optim import OptimWrapper  # xtflow")
    else:
        if ed.text(optim_type.value) != "AmpOptimWrapper":
            raise PatchError(
                f"{ed.origin}: optim_wrapper type is {ed.text(optim_type.value)}, expected AmpOptimWrapper"
            )
        ed.set_keyword(optim, "dtype", repr(dtype), "optim_wrapper")


def patch_chat_hook(ed: SourceEditor, max_new_tokens: int, before_train: bool, plugins: bool = True) -> None:
    """XTuner's EvaluateChatHook -> xtflow's BatchedEvaluateChatHook (unless `plugins` is False), bounded
    (XTuner: 600 tokens)."""
    chat_hook = find_hook(ed, "EvaluateChatHook")
    ed.add_keyword(chat_hook, "max_new_tokens", repr(max_new_tokens), "EvaluateChatHook")
    if plugins:
        ed.replace(ed.keyword(chat_hook, "type", "custom_hooks[EvaluateChatHook]").value, "BatchedEvaluateChatHook")
        ed.add_keyword(chat_hook, "sample_before_train", repr(before_train), "EvaluateChatHook")


def finish_patch(ed: SourceEditor, plugin_import: str | None, device: str) -> str:
    """Import xtflow's components the config names (None: it names none), add the CPU shim on CPU; the
    patched text."""
    if plugin_import is not None:
        ed.insert_after_imports(plugin_import)
    if device == "cpu":
        ed.insert_after_imports(CPU_SHIM)
    return ed.result()


PLUGIN_IMPORT = (
    "from xtflow.xtuner_plugins import BatchedEvaluateChatHook, FastLoraSupervisedFinetune, StopAtNonFiniteLoss"
    "  # xtflow"
)
# the local backend keeps vis_data/scalars.json, which the report's loss curve reads
TENSORBOARD_VISUALIZER = (
    "dict(type=Visualizer, vis_backends=[dict(type=LocalVisBackend), dict(type=TensorboardVisBackend)])"
)


HEADER = """\
# Written by xtflow from XTuner's built-in config '{name}' (xtuner {version}).
# Do not edit: change config/config.yaml and let Snakemake rewrite it.
# It runs by hand too, and trains as the workflow does: python -m xtuner.tools.train {out}
"""


def write_config(base_name: str, s: XtunerSettings, out: Path) -> None:
    """Patch the built-in config `base_name` and write it to `out` (atomically)."""
    write_patched(base_name, lambda source, origin: patch_config(source, s, origin), out)


def write_patched(base_name: str, patch: Callable[[str, str], str], out: Path, key: str = "xtuner.base_config") -> None:
    """`patch(source, origin)` applied to the built-in config `base_name`, written to `out` (atomically)
    under xtflow's header."""
    base = builtin_config_path(base_name, key)
    text = patch(base.read_text(encoding="utf-8"), f"XTuner config '{base_name}'")
    atomic_write_text(out, HEADER.format(name=base_name, version=metadata.version("xtuner"), out=out) + text)


def settings_from_config(xt: dict, model_path: Path, data_path: Path) -> XtunerSettings:
    """XtunerSettings from config.yaml's `xtuner:` section (validated) and the stage paths.

    The paths are written as given: relative to the run directory (XTuner runs there), so a run
    directory that is copied or moved trains on its own data and model, never on the original's."""
    check_prompt_template(xt["prompt_template"])
    return XtunerSettings(
        **training_values(xt),
        model_path=str(model_path),
        data_path=str(data_path),
        pack_to_max_length=xt["pack_to_max_length"],
        system=xt["system"],
        lora_r=xt["lora"]["r"],
        lora_alpha=xt["lora"]["alpha"],
        lora_dropout=xt["lora"]["dropout"],
        lora_target_modules=xt["lora"]["target_modules"],
        visualizer=xt["visualizer"],
    )


def training_values(*sections: dict[str, Any]) -> dict[str, Any]:
    """TrainingSettings' fields from config sections that name them alike (`xtuner:`; a LLaVA stage's
    section, then `llava:`): each from the first section that has it."""
    names = [f.name for f in fields(TrainingSettings)]
    return {name: next(section[name] for section in sections if name in section) for name in names}
