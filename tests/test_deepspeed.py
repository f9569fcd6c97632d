"""DeepSpeed (`train.deepspeed`): installed by `make setup` at its pin, and the train stage's one-process
DeepSpeed launch really trains (ZeRO-2 on the CPU, fp32) and exports its directory checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, default_config, set_key


def test_deepspeed_is_installed_at_its_pin() -> None:
    """workflow/envs/xtflow.post-deploy.sh (what `make setup` runs) builds it from requirements.in's pin
    (that it imports and trains: the test below)."""
    from importlib.metadata import version

    (pin,) = re.findall(r"^deepspeed==(\S+)", (REPO / "workflow/envs/requirements.in").read_text(), re.MULTILINE)
    assert version("deepspeed") == pin


def test_deepspeed_config_validates() -> None:
    from xtflow.settings import validate

    cfg = default_config()
    for key, value in [("xtuner.device", "cuda"), ("xtuner.dtype", "bfloat16"), ("train.deepspeed", "deepspeed_zero2")]:
        set_key(cfg, key, value)
    assert validate(cfg)["train"]["deepspeed"] == "deepspeed_zero2"


# Test-only, put on the training process's path: DeepSpeed's CPU accelerator compiles a C++ shared-memory
# all-reduce op (deepspeed_shm_comm) when its process group starts, 1-2 minutes of g++ on a small machine
# (every fresh CI machine); one process shares memory with no one, and a GPU run never builds it.
NO_SHM_OP = """\
import importlib.abc, importlib.machinery, sys


class _NoShmOp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "deepspeed.comm.torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.build_shm_op = lambda: None

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _NoShmOp())
"""


def test_zero2_trains_in_one_process_and_exports(
    quick_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process, no launcher (what a 1-GPU run is): DeepSpeed finds its rank in the environment xtflow
    gives it (without, it asks MPI: `No module named 'mpi4py'`). XTuner's ZeRO-2 json with fp16/bf16 off
    (DeepSpeed's CPU accelerator has no fp16), one iteration on the quick run's model and data; the
    checkpoint is a directory, and the adapter stage converts it."""
    import os
    from dataclasses import replace

    from test_xtuner_config import SETTINGS
    from xtflow.export import export_adapter
    from xtflow.train import train
    from xtflow.xtuner_config import write_config, xtuner_package_dir

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_SHM_OP, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ["PYTHONPATH"]]))
    workdir, _ = quick_run
    model, data = workdir / "resources" / "base_model", workdir / "results" / "data" / "train.json"
    settings = replace(
        SETTINGS,
        model_path=str(model),
        data_path=str(data),
        batch_size=len(json.loads(data.read_text(encoding="utf-8"))),  # the whole set: one iteration
        accumulative_counts=1,
        max_epochs=1,
        lr=5e-3,
        warmup_ratio=0.0,
        evaluation_freq=100,
        evaluation_inputs=["Who are you?"],
        evaluation_max_new_tokens=2,
        evaluation_before_train=False,
        system="",
    )
    config = tmp_path / "config.py"
    write_config("internlm2_1_8b_qlora_alpaca_e3", settings, config)
    zero2 = json.loads((xtuner_package_dir() / "configs" / "deepspeed" / "deepspeed_zero2.json").read_text())
    zero2["fp16"]["enabled"] = zero2["bf16"]["enabled"] = False
    (tmp_path / "zero2_fp32.json").write_text(json.dumps(zero2), encoding="utf-8")
    handle, log = tmp_path / "final_checkpoint.pth", tmp_path / "train.log"
    train(config, data, model, tmp_path / "work_dir", handle, log, str(tmp_path / "zero2_fp32.json"), 1, 0.0, 1)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Iter(train) [1/1]" in text and "deepspeed_shm_comm" not in text, text[-3000:]
    assert handle.is_dir() and (handle / "mp_rank_00_model_states.pt").is_file()
    export_adapter(config, handle, tmp_path / "hf_adapter", False, "2GB", log)
    assert (tmp_path / "hf_adapter" / "adapter_model.safetensors").is_file()
