"""xtflow's changes to XTuner's behaviour in the train tool (xtflow.xtuner_compat)."""

from __future__ import annotations

import pytest

from xtflow.tiny_model import TinyModelSpec, build_tiny_model
from xtflow.xtuner_compat import prepare_lora_keeping_dtype


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("m") / "model"
    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 64, 0), out)
    return lambda: AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.bfloat16)


def test_unquantized_lora_keeps_frozen_weights_in_their_dtype(bf16_model) -> None:  # noqa: ANN001
    import torch
    from peft import prepare_model_for_kbit_training

    model = prepare_lora_keeping_dtype(bf16_model())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())
    # what XTuner 0.2.0 does through peft: every frozen weight becomes fp32
    upcast = prepare_model_for_kbit_training(bf16_model(), use_gradient_checkpointing=False)
    assert {p.dtype for p in upcast.parameters()} == {torch.float32}


def test_quantized_models_go_through_peft_unchanged(bf16_model, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import peft

    seen = []
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", lambda m, *a: seen.append(a) or m)
    model = bf16_model()
    model.is_loaded_in_4bit = True
    assert prepare_lora_keeping_dtype(model, True, None) is model
    assert seen == [(True, None)]

