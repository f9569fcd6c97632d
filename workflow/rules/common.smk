# Helpers shared by the rules: config validation and the paths stages agree on.

import sys
from pathlib import Path

from xtflow.base_model import check_model_dir
from xtflow.errors import XtflowError
from xtflow.settings import validate


def _checked_config(raw):
    """Validate (and fill defaults into) the config, or stop with one line naming the key."""
    try:
        checked = validate(raw)
        for i, path in enumerate(checked["dataset"]["files"]):
            if not Path(path).is_file():
                raise XtflowError(f"config key 'dataset.files[{i}]': '{path}' does not exist")
        if checked["base_model"]["path"] is not None:
            check_model_dir(Path(checked["base_model"]["path"]))
    except XtflowError as e:
        sys.exit(f"xtflow: error: {e}")
    return checked


_validated = _checked_config(config)
config.clear()
config.update(_validated)

XT = config["xtuner"]
TRAIN = config["train"]

BASE_MODEL = "resources/base_model"
DATASET = "results/data/train.json"
XTUNER_CONFIG = f"results/xtuner/{XT['base_config']}.py"
WORK_DIR = "results/train/work_dir"
CHECKPOINT = "results/train/final_checkpoint.pth"
ADAPTER = "results/hf_adapter"
FINAL_MODEL = "results/final_model"


def checkpoint_output():
    """The final checkpoint handle: a file, or a directory when DeepSpeed writes checkpoints."""
    return directory(CHECKPOINT) if TRAIN["deepspeed"] else CHECKPOINT


def gpus_for(device):
    """GPUs a job asks its executor (e.g. SLURM) for."""
    return TRAIN["gpus"] if device == "cuda" else 0
