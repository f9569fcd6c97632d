# Helpers shared by the rules: config validation and the paths stages agree on.

import json
import os
import sys
from pathlib import Path

from xtflow import hub, paths
from xtflow.base_model import check_model_dir
from xtflow.dataset import not_a_file
from xtflow.errors import XtflowError
from xtflow.fsutil import check_writable
from xtflow.llava_encoder import check_visual_encoder
from xtflow.publish import card_settings
from xtflow.push import check_ready
from xtflow.settings import typed_command_line, validate
from xtflow.snakemake_io import DOWNSTREAM_ENV, downstream_outputs


def _checked_config(raw):
    """Validate (and fill defaults into) the config, or stop with one line naming the key. Returns it with
    the base model's hub id (None: a local directory or the tiny default)."""
    try:
        # nested `--config` values come from Snakemake as strings: read them as YAML (xtflow.settings)
        checked = validate(typed_command_line(raw, workflow.config_settings.config))
        for i, path in enumerate(checked["dataset"]["files"]):
            problem = not_a_file(Path(path))
            if problem:
                raise XtflowError(f"config key 'dataset.files[{i}]': '{path}' {problem}")
        base = checked["base_model"]
        model = hub.parse_source(base["path"], base["revision"])
        if model is not None:
            # Only the main Snakemake process may ask the hub: a job on a cluster node parses this file
            # again, and must neither wait for a hub it may not reach nor refuse to start.
            plan = hub.preflight(model, network=workflow.is_main_process)
            if plan:
                print(plan, file=sys.stderr)
        elif base["path"] is not None:
            check_model_dir(Path(base["path"]))
        _check_llava_inputs(checked["llava"])
    except XtflowError as e:
        sys.exit(f"xtflow: error: {e}")
    return checked, model


def _check_llava_inputs(llava):
    """The LLaVA target's local inputs exist (the records themselves are checked by rule llava_data)."""
    if llava["llm"] is not None:
        check_model_dir(Path(llava["llm"]), "llava.llm")
    if llava["visual_encoder"]["path"] is not None:
        check_visual_encoder(Path(llava["visual_encoder"]["path"]))
    for split in paths.LLAVA_SPLITS:
        given = llava["data"][split]
        if given is not None and not Path(given["json"]).is_file():
            raise XtflowError(f"config key 'llava.data.{split}.json': '{given['json']}' does not exist")
        if given is not None and not Path(given["images"]).is_dir():
            raise XtflowError(f"config key 'llava.data.{split}.images': '{given['images']}' is not a directory")
    projector = llava["pretrained_projector"]
    if projector is not None and not Path(projector).exists():
        raise XtflowError(f"config key 'llava.pretrained_projector': '{projector}' does not exist")


_validated, HUB_MODEL = _checked_config(config)
config.clear()
config.update(_validated)

XTFLOW_ENV = "../envs/xtflow.yaml"  # every rule's software (conda:)

XT = config["xtuner"]
TRAIN = config["train"]

SKILL = config["base_model"]["general_skill"]
BASE_MODEL = paths.BASE_MODEL
UNTAUGHT_MODEL = paths.UNTAUGHT_MODEL
DATASET = paths.DATASET
XTUNER_CONFIG = paths.xtuner_config(XT["base_config"])
WORK_DIR = paths.WORK_DIR
CHECKPOINT = paths.CHECKPOINT
ADAPTER = paths.ADAPTER
FINAL_MODEL = paths.FINAL_MODEL


def probe_file(kind):
    """A probe file from config `evaluation.<kind>`, or the one shipped with xtflow."""
    from xtflow.evaluate import PROBE_FILES, PROBES

    return config["evaluation"][kind] or str(PROBES / PROBE_FILES[kind])


def harness_version():
    """The installed lm-eval's version, or "not installed" (config evaluation.harness)."""
    from xtflow.harness import installed_version

    return installed_version() or "not installed"


def identity_answers():
    """The identity answers the dataset stage writes (the train rule refuses to cut them at max_length)."""
    from xtflow.dataset import fill

    who = config["assistant"]
    return sorted({fill(answer, who["name"], who["maker"]) for answer in config["dataset"]["answer"].values()})


def verbatim(value):
    """A params value Snakemake must not format: it expands `{...}` in strings as wildcards, so a
    name like "{x}" would break the run. A function's result is used as it is (and still compared
    between runs, so a change still triggers a rerun)."""
    return lambda wildcards: value


def checkpoint_output():
    """The final checkpoint handle: a file, or a directory when DeepSpeed writes checkpoints."""
    return directory(CHECKPOINT) if TRAIN["deepspeed"] else CHECKPOINT


def gpus_for(device, count):
    """GPUs a job needs: `count` on cuda, none on cpu."""
    return count if device == "cuda" else 0


def gpu_resource(device, count):
    """Snakemake's `gpu` resource (the SLURM plugin's --gpus) when train.gpu_request is `gpus`."""
    return gpus_for(device, count) if TRAIN["gpu_request"] == "gpus" else 0


def gpu_model_resource(device, count):
    return (TRAIN["gpu_model"] or "") if gpu_resource(device, count) else ""


def gres_resource(device, count):
    """The `gres` resource (--gres=gpu[:model]:N) when train.gpu_request is `gres`."""
    n = gpus_for(device, count)
    if TRAIN["gpu_request"] != "gres" or not n:
        return ""
    return ":".join(["gpu", *([TRAIN["gpu_model"]] if TRAIN["gpu_model"] else []), str(n)])


# The LLaVA target (rules/llava.smk).
LLAVA = config["llava"]
LLAVA_LLM = paths.llava_llm(LLAVA)
LLAVA_VISUAL_ENCODER = paths.llava_visual_encoder(LLAVA)


def llava_checkpoint(stage):
    """A stage's final checkpoint; for pretrain, the pretrained projector instead where one is given
    (the pretrain stage then never runs)."""
    if stage == "pretrain" and LLAVA["pretrained_projector"] is not None:
        return LLAVA["pretrained_projector"]
    return paths.llava_checkpoint(stage)


def llava_train_input(wildcards):
    inputs = dict(
        config=paths.llava_xtuner_config(wildcards.stage),
        data=paths.llava_data(wildcards.stage),
        llm=LLAVA_LLM,
        visual_encoder=LLAVA_VISUAL_ENCODER,
    )
    if wildcards.stage == "finetune":
        inputs["projector"] = llava_checkpoint("pretrain")
    return inputs


def llava_stage_settings(wildcards):
    """Exactly the values a stage's XTuner config holds (so only a change of one rewrites it)."""
    from dataclasses import asdict

    from xtflow.llava_config import stage_settings

    return asdict(stage_settings(LLAVA, wildcards.stage, LLAVA_LLM, LLAVA_VISUAL_ENCODER, llava_checkpoint("pretrain")))


def llava_export_in_fp32(wildcards):
    """Whether the stage's adapter export runs with --fp32 (xtflow.llava_config.export_in_fp32)."""
    from xtflow.llava_config import export_in_fp32

    return export_in_fp32(LLAVA, wildcards.stage)


def share_rule_graph():
    """Tell every job which outputs are made from its own: a job that starts removes them
    (xtflow.snakemake_io.invalidate_downstream). Call it once all rules are defined."""
    rules_io = {
        r.name: ([str(f) for f in r.input if isinstance(f, str)], [str(f) for f in r.output]) for r in workflow.rules
    }
    os.environ[DOWNSTREAM_ENV] = json.dumps(downstream_outputs(rules_io))


onstart:
    # Snakemake deletes and creates outputs before a job runs: check the output trees first.
    # A push that cannot succeed (no repository, no token) stops here, before any job runs (only an
    # explicit target pushes: nothing depends on the push's record).
    try:
        check_writable([Path(d) for d in ("results", "resources", "logs", "benchmarks")])
        if {"push", paths.PUSH_RECORD} & {str(t) for t in workflow.dag_settings.targets}:
            check_ready(config["publish"])
    except XtflowError as e:
        sys.exit(f"xtflow: error: {e}")
