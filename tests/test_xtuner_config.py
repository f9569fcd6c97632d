"""XTuner config stage: the written config loads with mmengine and holds every patched value."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from xtflow.errors import XtflowError
from xtflow.pysource import PatchError
from xtflow.xtuner_config import XtunerSettings, builtin_config_path, patch_config, write_config

BASE = "internlm2_1_8b_qlora_alpaca_e3"

SETTINGS = XtunerSettings(
    model_path="/models/base",
    data_path="/data/train.json",
    prompt_template="internlm2_chat",
    max_length=777,
    pack_to_max_length=False,
    batch_size=3,
    accumulative_counts=5,
    max_epochs=4,
    lr=3.5e-4,
    warmup_ratio=0.05,
    save_steps=123,
    save_total_limit=3,
    evaluation_freq=45,
    evaluation_inputs=["你是谁？", "Who are you?"],
    evaluation_max_new_tokens=17,
    system="You are 'X' \"quoted\" {braces} %s",
    seed=1234,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.05,
    load_in_4bit=False,
    dtype="float32",
    gradient_checkpointing=False,
    device="cpu",
)


def load(tmp_path: Path, settings: XtunerSettings, base: str = BASE) -> Config:
    out = tmp_path / "cfg.py"
    write_config(base, settings, out)
    return Config.fromfile(str(out))


def test_written_config_holds_every_patched_value(tmp_path: Path) -> None:
    cfg = load(tmp_path, SETTINGS)
    from xtuner.utils import PROMPT_TEMPLATE

    assert cfg.pretrained_model_name_or_path == "/models/base"
    assert cfg.model.llm.pretrained_model_name_or_path == "/models/base"
    assert cfg.tokenizer.pretrained_model_name_or_path == "/models/base"
    assert cfg.data_path == "/data/train.json"
    ds = cfg.train_dataloader.dataset
    assert ds.dataset.path == "json" and ds.dataset.data_files == {"train": "/data/train.json"}
    assert ds.dataset_map_fn is None
    assert ds.map_num_proc == 1  # no worker processes (a Ctrl-C among them hung the run)
    assert cfg.prompt_template == PROMPT_TEMPLATE.internlm2_chat
    assert ds.max_length == 777 and ds.pack_to_max_length is False
    assert cfg.train_dataloader.batch_size == 3
    assert cfg.optim_wrapper.accumulative_counts == 5
    assert cfg.train_cfg.max_epochs == 4
    assert cfg.optim_wrapper.optimizer.lr == 3.5e-4
    assert cfg.param_scheduler[0].end == pytest.approx(0.05 * 4)
    assert cfg.default_hooks.checkpoint.interval == 123
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 3
    chat = cfg.custom_hooks[1]
    assert chat.every_n_iters == 45 and chat.max_new_tokens == 17
    assert chat.evaluation_inputs == ["你是谁？", "Who are you?"]
    # xtflow's components, named by the config itself (it trains the same by hand)
    assert chat.type.__name__ == "BatchedEvaluateChatHook" and chat.sample_before_train is True
    assert cfg.model.type.__name__ == "FastLoraSupervisedFinetune" and cfg.model.compile_layers is False
    assert load(tmp_path, replace(SETTINGS, compile=True)).model.compile_layers is True
    assert load(tmp_path, replace(SETTINGS, evaluation_before_train=False)).custom_hooks[1].sample_before_train is False
    assert cfg.SYSTEM == chat.system == "You are 'X' \"quoted\" {braces} %s"
    # training stops at the first nan/inf loss, by hand too
    assert cfg.custom_hooks[-1].type.__name__ == "StopAtNonFiniteLoss"
    assert cfg.randomness.seed == 1234
    assert cfg.model.llm.torch_dtype == torch.float32
    assert "quantization_config" not in cfg.model.llm
    assert cfg.model.use_activation_checkpointing is False
    assert (cfg.model.lora.r, cfg.model.lora.lora_alpha, cfg.model.lora.lora_dropout) == (16, 32, 0.05)
    # CPU: plain OptimWrapper (AmpOptimWrapper needs a GPU), and the shim is in the file
    assert cfg.optim_wrapper.type.__name__ == "OptimWrapper"
    assert "loss_scale" not in cfg.optim_wrapper and "dtype" not in cfg.optim_wrapper
    assert "is_bf16_supported" in (tmp_path / "cfg.py").read_text(encoding="utf-8")


def test_gpu_qlora_config_keeps_4bit_and_amp(tmp_path: Path) -> None:
    cfg = load(tmp_path, replace(SETTINGS, load_in_4bit=True, dtype="bfloat16", device="cuda"))
    q = cfg.model.llm.quantization_config
    assert q.load_in_4bit is True and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert cfg.model.llm.torch_dtype == torch.bfloat16
    assert cfg.optim_wrapper.type.__name__ == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    assert "is_bf16_supported" not in (tmp_path / "cfg.py").read_text(encoding="utf-8")


def test_zero_warmup_drops_the_linear_warmup(tmp_path: Path) -> None:
    cfg = load(tmp_path, replace(SETTINGS, warmup_ratio=0.0))
    assert [s.type.__name__ for s in cfg.param_scheduler] == ["CosineAnnealingLR"]
    assert cfg.param_scheduler[0].begin == 0


def test_untouched_parts_stay_byte_identical() -> None:
    stock = builtin_config_path(BASE).read_text(encoding="utf-8")
    patched = patch_config(stock, SETTINGS)
    assert "# Copyright (c) OpenMMLab. All rights reserved." in patched
    assert "#                          PART 1  Settings                           #" in patched
    assert patched.count("\n") >= stock.count("\n") - 15


@pytest.mark.parametrize(
    "setting,needle",
    [
        ("max_length", "max_length = 2048\n"),
        ("save_steps", "save_steps = 500\n"),
        (
            "evaluation_inputs",
            'evaluation_inputs = ["请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai"]\n',
        ),
        ("lora_dropout", "        lora_dropout=0.1,\n"),
        ("seed", "randomness = dict(seed=None, deterministic=False)\n"),
    ],
)
def test_base_config_missing_a_setting_is_refused(setting: str, needle: str) -> None:
    stock = builtin_config_path(BASE).read_text(encoding="utf-8")
    assert needle in stock
    broken = stock.replace(needle, "randomness = dict(deterministic=False)\n" if setting == "seed" else "")
    with pytest.raises(PatchError) as err:
        patch_config(broken, SETTINGS, origin="my-config")
    assert "my-config" in str(err.value)


def test_unknown_builtin_config_is_named() -> None:
    with pytest.raises(XtflowError, match="'internlm2_1_8b_qlora_alpaca_e33' is not an XTuner built-in config"):
        builtin_config_path("internlm2_1_8b_qlora_alpaca_e33")


def test_other_builtin_configs_patch_too(tmp_path: Path) -> None:
    """Not only the tutorial's config: another model family's QLoRA config patches and loads."""
    cfg = load(tmp_path, SETTINGS, base="qwen1_5_0_5b_chat_qlora_alpaca_e3")
    assert cfg.pretrained_model_name_or_path == "/models/base" and cfg.train_dataloader.batch_size == 3


def test_tensorboard_visualizer_writes_event_files(tmp_path: Path) -> None:
    """xtuner.visualizer: tensorboard -> mmengine's TensorBoard backend beside its local JSON scalars
    (which the report's loss curve reads), built from the written config as XTuner's runner builds it."""
    from mmengine.registry import VISUALIZERS

    assert load(tmp_path, SETTINGS).visualizer is None  # mmengine's default: the local backend only
    cfg = load(tmp_path, replace(SETTINGS, visualizer="tensorboard"))
    backends = [b.type.__name__ for b in cfg.visualizer.vis_backends]
    assert backends == ["LocalVisBackend", "TensorboardVisBackend"]
    visualizer = VISUALIZERS.build(dict(**cfg.visualizer, name="xtflow-test", save_dir=str(tmp_path / "vis")))
    visualizer.add_scalars({"loss": 1.5}, step=1)
    visualizer.close()
    assert list((tmp_path / "vis" / "vis_data").glob("events.out.tfevents.*"))
    assert (tmp_path / "vis" / "vis_data" / "scalars.json").is_file()
