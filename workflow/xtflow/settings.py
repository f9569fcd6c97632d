"""Validate the workflow config against its JSON schema, fill in defaults, check what a schema can't.

Errors are one line naming the key: `config key 'xtuner.lr': -1 is not greater than 0`, or the file
and line: `config file config/config.yaml, line 9: key 'assistant' appears twice (first at line 1)`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from xtflow.errors import XtflowError
from xtflow.general_set import general_qa
from xtflow.llava_config import check_llava_patchable
from xtflow.push import check_repo
from xtflow.xtuner_config import check_patchable

SCHEMA = Path(__file__).with_name("schemas") / "config.schema.yaml"
RECIPES = Path(__file__).with_name("recipes")


def _with_defaults(validator_class: type) -> type:
    """A validator that fills in `default` values of missing properties (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = ".".join(filter(None, [path, extra[0] if extra else ""]))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config key '{path}': unknown key (allowed here: {allowed})"
    return f"config key '{path or '<top>'}': {error.message}"


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML says keys are
    unique; PyYAML, and so Snakemake, silently keeps the last one: `assistant:` twice drops the name)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                raise XtflowError(
                    f"config file {self.name}, line {line}: key '{key}' appears twice (first at line {first[key]}); "
                    "YAML keeps only the last one, so the first would be lost"
                )
            first[key] = line
        return super().construct_mapping(node, deep)


def load_config_file(path: Path) -> dict[str, Any]:
    """A config file as Snakemake reads it (YAML, or JSON), refusing in one line that names the file what
    Snakemake would take silently or refuse without naming it: duplicate keys, an empty file, a file that
    is a list or a single value, YAML that does not parse."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise XtflowError(f"config file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise XtflowError(f"config file {path}{where}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()
    if data is None:
        raise XtflowError(f"config file {path}: empty; it must map config keys to values (see config/README.md)")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({data!r})"
        raise XtflowError(
            f"config file {path}: holds {kind}, not a mapping of config keys to values (see config/README.md)"
        )
    return data


def merge_config_files(config: dict[str, Any], files: list[Path]) -> dict[str, Any]:
    """`files` merged into `config` in order, as Snakemake merges `--configfile`'s files (its own
    `update_config`: nested mappings merged key by key); returns `config`."""
    from snakemake.utils import update_config

    for path in files:
        update_config(config, load_config_file(path))
    return config


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    else:
        yield path, node


def check_finite(config: Mapping[str, Any]) -> None:
    """Refuse `.inf` and `.nan` anywhere: they pass every numeric bound of a JSON schema (nan compares
    false with everything) and would be written into XTuner's config as names that do not exist."""
    for path, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            shown = yaml.safe_dump(value).split("\n")[0]
            raise XtflowError(f"config key '{path}': {shown} is not a finite number")


def _resolved(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with its `$ref` (into `schema`'s definitions) merged in."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = schema
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**_resolved(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _scalar(text: str) -> Any:
    """A `--config` value as Snakemake types a top-level one (int, then float: `1e-4` is a number,
    though YAML 1.1 reads it as a string), else as YAML reads a scalar (`true`, `null`)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def typed_command_line(
    config: dict[str, Any], overrides: Mapping[str, Any], schema_path: Path = SCHEMA
) -> dict[str, Any]:
    """`config` with the values of `--config` overrides that Snakemake left as strings read as YAML.

    Snakemake types a top-level `--config key=value` (int, float, bool), but reads a nested one
    (`--config xtuner='{lr: 0.004}'`) with YAML's base loader: every value inside is a string, and the
    schema would refuse `'0.004'` as not a number. Each such string is read as Snakemake reads a
    top-level value (`0.004`, `1e-4`, `true`, `null`) where the schema accepts that value, and kept as the
    string it is where the schema wants a string (`assistant={name: 123}` names the assistant "123");
    `null` is null wherever the schema allows it.
    """
    import jsonschema

    schema = yaml.safe_load(schema_path.read_text(encoding="utf-8"))
    out = copy.deepcopy(config)

    def fits(value: Any, node: dict[str, Any]) -> bool:
        return jsonschema.Draft7Validator({**node, "definitions": schema["definitions"]}).is_valid(value)

    def walk(over: Mapping[str, Any], target: dict[str, Any], node: dict[str, Any]) -> None:
        props = _resolved(schema, node).get("properties", {})
        for key, value in over.items():
            sub = _resolved(schema, props.get(key, {}))
            if isinstance(value, Mapping) and isinstance(target.get(key), dict):
                walk(value, target[key], sub)
            elif isinstance(value, str) and target.get(key) == value:
                parsed = _scalar(value)
                typed = not isinstance(parsed, (str, list, dict)) and fits(parsed, sub)
                if typed and (parsed is None or not fits(value, sub)):
                    target[key] = parsed

    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            walk(value, out[key], _resolved(schema, schema["properties"].get(key, {})))
    return out


def validate(config: dict[str, Any], schema_path: Path = SCHEMA) -> dict[str, Any]:
    """Return a validated copy of `config` with defaults filled in; XtflowError names the bad key."""
    schema = yaml.safe_load(schema_path.read_text(encoding="utf-8"))
    cfg = copy.deepcopy(config) if config else {}
    check_finite(cfg)
    validator = _with_defaults(jsonschema.Draft7Validator)(schema)
    # Validate twice: the first pass fills defaults, the second checks the filled-in result.
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise XtflowError(_key(errors[0]))
    cfg = apply_recipe(cfg)
    check_semantics(cfg)
    return canonical(cfg)


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """`recipe: tutorial` replaces the keys workflow/recipes/tutorial.yaml sets; `balanced` changes nothing."""
    if cfg["recipe"] == "balanced":
        return cfg
    overlay = yaml.safe_load((RECIPES / f"{cfg['recipe']}.yaml").read_text(encoding="utf-8"))
    return _merge(cfg, overlay)


def canonical(value: Any) -> Any:
    """Dicts with sorted keys, recursively. Snakemake compares params by their text, so the
    order of keys in a user's YAML must not look like a change (and force a rerun)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def check_semantics(cfg: dict[str, Any]) -> None:
    """Rules that span several keys or need the installed XTuner."""
    xt = cfg["xtuner"]
    if cfg["dataset"]["general_records"] > len(general_qa()):
        raise XtflowError(
            f"config key 'dataset.general_records': the general set has {len(general_qa())} "
            f"questions, got {cfg['dataset']['general_records']}"
        )
    check_precision("xtuner", xt)
    if cfg["train"]["deepspeed"] and xt["device"] != "cuda":
        raise XtflowError("config key 'train.deepspeed': DeepSpeed needs xtuner.device: cuda")
    if cfg["train"]["gpus"] > 1 and xt["device"] != "cuda":
        raise XtflowError("config key 'train.gpus': more than one GPU needs xtuner.device: cuda")
    if cfg["merge"]["device"] != "cpu" and xt["device"] == "cpu":
        raise XtflowError("config key 'merge.device': a CPU run merges on cpu")
    tiny = cfg["base_model"]["tiny"]
    if cfg["base_model"]["path"] is None and tiny["architecture"] == "internlm2" and tiny["num_heads"] % 2:
        raise XtflowError(
            f"config key 'base_model.tiny.num_heads': {tiny['num_heads']}, but architecture internlm2 needs an even "
            "number (half of them are key-value heads, as internlm2-chat-1_8b's 16 / 8)"
        )
    ds = cfg["dataset"]
    if (ds["records"] > 0 or ds["conversations"] > 0) and not (ds["questions"]["en"] or ds["questions"]["zh"]):
        asks = "dataset.records" if ds["records"] else "dataset.conversations"
        raise XtflowError(f"config key 'dataset.questions': empty, but {asks} asks for identity records")
    if ds["records"] == 0 and not ds["files"] and not ds["general_records"] and not ds["conversations"]:
        raise XtflowError(
            "config key 'dataset.records': 0 and no dataset.files (nor dataset.general_records, "
            "dataset.conversations): the dataset would be empty"
        )
    for key in ("repo_id", "adapter_repo_id"):
        check_repo(cfg["publish"]["hub"], f"publish.{key}", cfg["publish"][key])
    # the base config must patch: fail before any job runs
    check_patchable(xt["base_config"], xt)
    check_llava(cfg["llava"])


def check_precision(section: str, values: dict[str, Any]) -> None:
    """4-bit and half precision need a GPU (`section`: xtuner or llava)."""
    if values["device"] == "cpu" and values["load_in_4bit"]:
        raise XtflowError(
            f"config key '{section}.load_in_4bit': 4-bit (QLoRA) needs {section}.device: cuda; set it false on CPU"
        )
    if values["device"] == "cpu" and values["dtype"] != "float32":
        raise XtflowError(
            f"config key '{section}.dtype': {values['dtype']} training needs a GPU; "
            f"use float32 with {section}.device: cpu"
        )


def check_llava(llava: dict[str, Any]) -> None:
    """The LLaVA section's cross-key rules; its two XTuner configs must patch."""
    check_precision("llava", llava)
    if llava["merge"]["device"] != "cpu" and llava["device"] == "cpu":
        raise XtflowError("config key 'llava.merge.device': a CPU run merges on cpu")
    tiny = llava["visual_encoder"]["tiny"]
    if tiny["image_size"] % tiny["patch_size"] or tiny["hidden_size"] % tiny["num_heads"]:
        raise XtflowError(
            "config key 'llava.visual_encoder.tiny': image_size must be a multiple of patch_size, "
            "hidden_size a multiple of num_heads"
        )
    check_llava_patchable(llava)
