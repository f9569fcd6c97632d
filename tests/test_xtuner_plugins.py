"""xtflow's changes to XTuner's training, as the components the written config names (xtflow.xtuner_plugins)."""

from __future__ import annotations

import pytest

from xtflow.tiny_model import TinyModelSpec, build_tiny_model
from xtflow.xtuner_plugins import (
    BatchedEvaluateChatHook,
    NonFiniteLossError,
    StopAtNonFiniteLoss,
    compile_decoder_layers,
    prepare_lora_keeping_dtype,
    sampling_context,
    skip_lora_input_cast,
)


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


def lora_model(model, cast: bool):  # noqa: ANN001, ANN201
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        prepare_lora_keeping_dtype(model),
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    if not cast:
        assert skip_lora_input_cast(peft_model) == 7  # 7 adapted linears x 1 layer
    return peft_model


def test_skipping_the_input_cast_learns_the_same_under_autocast(bf16_model) -> None:  # noqa: ANN001
    """Loss and adapter gradients of one bf16-autocast step are the same with and without peft's cast."""
    import torch

    ids = torch.randint(5, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    results = []
    for cast in (True, False):
        torch.manual_seed(0)  # the same adapter initialisation
        model = lora_model(bf16_model(), cast)
        seen = set()
        for name, module in model.named_modules():
            if name.endswith("lora_A.default"):
                module.register_forward_pre_hook(lambda m, args: seen.add(args[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}
        assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
        assert seen == {torch.float32 if cast else torch.bfloat16}  # what the adapters are given
        results.append((loss.detach().float(), grads))
    (loss_cast, grads_cast), (loss_skip, grads_skip) = results
    torch.testing.assert_close(loss_skip, loss_cast)
    assert grads_skip.keys() == grads_cast.keys() and len(grads_cast) == 14
    for name in grads_cast:
        torch.testing.assert_close(grads_skip[name], grads_cast[name], rtol=2e-2, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in grads_cast.values())


def test_sampling_turns_the_cast_back_on_and_restores_it(bf16_model) -> None:  # noqa: ANN001
    """Sampling: peft's cast on, cuDNN attention off (a plan per key length); both restored after."""
    import torch

    model = lora_model(bf16_model(), cast=False)
    ids = torch.randint(5, 400, (1, 8), generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):  # bf16 input into fp32 adapters without autocast
        model(input_ids=ids)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with sampling_context(model):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        assert model.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape == (1, 11)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    assert not any(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))


class _Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def test_batched_sampling_gives_xtuner_replies(tmp_path) -> None:  # noqa: ANN001
    """Every prompt in one left-padded generate call: the same greedy replies as XTuner's one-by-one loop."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from xtuner.engine.hooks import EvaluateChatHook
    from xtuner.utils import PROMPT_TEMPLATE

    out = tmp_path / "model"
    build_tiny_model(TinyModelSpec(400, 32, 64, 2, 2, 128, 3), out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    hook = BatchedEvaluateChatHook(
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=str(out)),
        evaluation_inputs=["Who are you?", "Tell me about the capital city of France, please.", "你好"],
        prompt_template=PROMPT_TEMPLATE.internlm2_chat,
        system="You are a bot.",
        max_new_tokens=12,
        generation_kwargs=dict(do_sample=False),
    )

    def replies(fn) -> list[str]:  # noqa: ANN001
        runner = SimpleNamespace(logger=_Logger(), cfg={})
        with torch.no_grad():
            fn(hook, runner, model, torch.device("cpu"), 12)
        return [line for line in runner.logger.lines if line.startswith("Sample output:")]

    batched = replies(BatchedEvaluateChatHook._eval_language)
    assert len(batched) == 3
    assert batched == replies(EvaluateChatHook._eval_language)
    assert "<pad>" not in "".join(batched)
    hook.evaluation_inputs = hook.evaluation_inputs[:1]  # one prompt: XTuner's own loop runs
    assert replies(BatchedEvaluateChatHook._eval_language) == replies(EvaluateChatHook._eval_language) == batched[:1]


def test_compiles_each_decoder_layer_in_place(bf16_model) -> None:  # noqa: ANN001
    model = lora_model(bf16_model(), cast=False)
    keys = list(model.state_dict())
    assert compile_decoder_layers(model) == 1
    layer = model.get_base_model().model.layers[0]
    assert layer._compiled_call_impl is not None
    assert list(model.state_dict()) == keys  # checkpoints keep their keys (no `_orig_mod.`)


def test_unpacked_data_recompiles_the_layers_once(bf16_model) -> None:  # noqa: ANN001
    """A new sequence length in every batch (XTuner's padded batches): one graph for the first
    length, one for any length after it, not one per length."""
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = lora_model(bf16_model(), cast=False)
    compile_decoder_layers(model, backend="eager")
    graphs = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for length in (8, 11, 13, 17, 9):
            mask = torch.ones(2, length, dtype=torch.bool)
            mask[1, length - 3 :] = False  # padding, as XTuner's default_collate_fn masks it
            model(
                input_ids=torch.randint(5, 400, (2, length), generator=torch.Generator().manual_seed(length)),
                attention_mask=mask,
            )
            graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs == [1, 2, 2, 2, 2]


@pytest.mark.parametrize("before", [True, False])
def test_sample_before_training_only_when_configured(before: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import torch

    calls: list[dict] = []
    monkeypatch.setattr(BatchedEvaluateChatHook, "_generate_samples", lambda self, runner, **kw: calls.append(kw))
    hook = object.__new__(BatchedEvaluateChatHook)
    hook.max_new_tokens = 16
    hook.sample_before_train = before
    runner = SimpleNamespace(model=torch.nn.Linear(2, 2), iter=0, logger=_Logger())
    hook.before_train(runner)
    assert calls == ([{"max_new_tokens": 16}] if before else [])
    assert any("no EvaluateChatHook sample before training" in line for line in runner.logger.lines) is not before


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")])
def test_training_stops_at_the_first_non_finite_loss(loss: float) -> None:
    """One line naming the learning rate, at the iteration whose loss went wrong; finite losses pass."""
    from types import SimpleNamespace

    import torch

    hook = StopAtNonFiniteLoss()
    runner = SimpleNamespace(iter=1, cfg={"lr": 1e30})
    hook.after_train_iter(runner, 0, outputs={"loss": torch.tensor(2.5, requires_grad=True)})
    with pytest.raises(NonFiniteLossError) as err:
        hook.after_train_iter(runner, 1, outputs={"loss": torch.tensor(loss)})
    assert str(err.value).startswith(
        f"config key 'xtuner.lr': the training loss became {loss} at iteration 2 with learning rate 1e+30;"
    )
    assert "\n" not in str(err.value)
