"""xtflow's changes to XTuner's training, as XTuner components that the written config names.

`xtflow.xtuner_config` writes `type=FastLoraSupervisedFinetune` for the model and
`type=BatchedEvaluateChatHook` for the sampling hook (and imports them from here), so
`python -m xtuner.tools.train <written config>` by hand trains exactly as the `train` rule does
(the LLaVA configs name `FastLoraLLaVAModel` likewise).
They change how fast a step runs and how sampling is bounded, not what is learned
(docs/benchmarks.md):

- `FastLoraSupervisedFinetune`: XTuner's `SupervisedFinetune` whose LoRA preparation keeps an
  unquantized model's frozen weights in their dtype (`prepare_lora_keeping_dtype`), feeds bf16
  LoRA layers bf16 inputs under autocast (`skip_lora_input_cast`), lists the adapted layers in a
  fixed order (`lora_target_names`, which also resolves config `xtuner.lora.target_modules`), and with
  `compile_layers` (config `xtuner.compile`) compiles each decoder layer. Where XTuner leaves a model's
  attention to its default, it asks for torch's SDPA if the model's class supports it
  (`prepare_attention`: InternLM2, whose remote code otherwise runs eager attention), and InternLM2's
  dynamic-NTK rotary embedding runs its plain path in training (`static_rope_in_training`).
- `FastLoraLLaVAModel`: XTuner's `LLaVAModel` with the same LoRA preparation, attention choice and
  rotary embedding change for its LLM, which can generate from embeddings (`xtflow.remote_code`).
- `LLaVADatasetWithProcesses`: XTuner's `LLaVADataset` with a bound on its text-processing processes.
- `BatchedEvaluateChatHook`: XTuner's `EvaluateChatHook` that keeps to the configured bound before
  training too, samples all prompts in one batch, does not sample the same weights twice at the
  end, optionally skips the sample before training (`xtuner.evaluation_before_train`) and logs
  what sampling cost.
- `StopAtNonFiniteLoss`: stops training at the first loss that is nan or infinite (a learning rate
  far too high), before a broken checkpoint is saved, naming the learning rate.
"""

from __future__ import annotations

import functools
import math
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import load_checkpoint
from peft import get_peft_model
from xtuner.dataset import LLaVADataset
from xtuner.engine.hooks import EvaluateChatHook
from xtuner.model import LLaVAModel, SupervisedFinetune
from xtuner.model.utils import find_all_linear_names

from xtflow.base_model import linear_layer_names, output_layer_name
from xtflow.remote_code import generate_from_embeddings


def prepare_lora_keeping_dtype(
    model: Any, use_gradient_checkpointing: bool = True, gradient_checkpointing_kwargs: dict[str, Any] | None = None
) -> Any:
    """XTuner's LoRA preparation without casting an unquantized model's frozen weights to fp32.

    XTuner 0.2.0 calls peft's `prepare_model_for_kbit_training` for every LoRA model, quantized or
    not; for an unquantized bf16 model that doubles the weights' memory and makes autocast cast every
    frozen weight back to bf16 in every matmul. For such a model this only freezes the weights (all
    that function does besides the cast); 4-bit and 8-bit models go through peft unchanged (keeping
    their norms and embeddings bf16 too saved 1.9 GB but no time once the layers are compiled, and
    without compiling it changed the first optimizer steps: docs/benchmarks.md).
    """
    from peft import prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing, gradient_checkpointing_kwargs)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def half_precision(model: Any) -> bool:
    """Whether a model computes in bf16/fp16: xtflow then trains it under AMP autocast."""
    import torch

    return any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())


def skip_lora_input_cast(model: Any) -> int:
    """Stop peft casting each LoRA layer's input to the adapter's fp32 (returns how many layers).

    peft casts the input of every LoRA layer to the adapter weights' dtype (fp32) before dropout
    and the two small matmuls. Under autocast those matmuls run in bf16 anyway, so the cast only
    adds an fp32 copy of every adapted layer's input, an fp32 dropout and a cast back: per layer,
    in forward, backward and recomputation. xtflow trains half-precision models under autocast
    only (`AmpOptimWrapper`), so the cast is turned off for them; sampling turns it back on (see
    `lora_input_cast`), since `generate` runs without autocast.
    """
    layers = _lora_layers(model)
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def _lora_layers(model: Any) -> list[Any]:
    """peft's layers that cast their input (`cast_input_dtype_enabled`)."""
    return [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]


@contextmanager
def sampling_context(model: Any) -> Iterator[None]:
    """How xtflow runs `generate` on a model being trained: peft's input cast on (`lora_input_cast`),
    compiled layers eager (generation's changing shapes would recompile them), and no cuDNN attention:
    cuDNN builds an attention plan for every new key length, which made a first 16-token sample of a
    bf16 model take 5-7 s instead of about 1 s (docs/benchmarks.md); training keeps it."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with lora_input_cast(model), torch.compiler.set_stance("force_eager"), sdpa_kernel(backends):
        yield


@contextmanager
def lora_input_cast(model: Any) -> Iterator[None]:
    """peft's input cast on for the duration (for `generate`, which runs without autocast)."""
    layers = _lora_layers(model)
    before = [layer.cast_input_dtype_enabled for layer in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = True
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.cast_input_dtype_enabled = value


def compile_decoder_layers(model: Any, backend: str = "inductor") -> int:
    """`torch.compile` every transformer block in place (returns how many).

    Regional compilation: the blocks share one compiled graph (compiled once, in seconds, not once
    per block), and the element-wise work around each LoRA matmul (dropout, scaling, adds, norms,
    dtype casts) is fused into few kernels that compute in fp32 internally. The module tree and
    state-dict keys do not change, so checkpoints are the same. Blocks are the model's
    `_no_split_modules` classes (LlamaDecoderLayer, InternLM2DecoderLayer, ...). Should a model's
    code not compile, torch falls back to running it eagerly (`suppress_errors`): slower, same result.
    Unpacked data (a new sequence length in every batch) costs one recompile: torch then compiles
    the blocks for any length (automatic dynamic shapes).
    """
    import torch

    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    torch._dynamo.config.suppress_errors = True
    for layer in layers:
        layer.compile(backend=backend)
    return len(layers)


def single_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int] | None:
    """The token ids of stop words that are each one token; None if any is not."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            return None
        ids.append(encoded[0])
    return ids


def lora_target_names(model: Any, targets: str | Sequence[str] | None) -> list[str]:
    """The names of the layers LoRA adapts (config `xtuner.lora.target_modules`), sorted: XTuner's list
    and peft's come from sets, so their order (and adapter_config.json) varied by run.

    None: XTuner's choice (`find_all_linear_names`: every linear layer but one named lm_head or
    output_layer; InternLM2's is named `output`, so it is adapted); "all-linear": every linear layer
    but the model's output layer (what peft's "all-linear" means); else the given names.
    """
    if targets is None:
        return sorted(find_all_linear_names(model))
    if targets == "all-linear":
        head = output_layer_name(model)
        return sorted(name for name in linear_layer_names(model) if name != head)
    return sorted(targets)


def add_lora(model: Any, lora: Any) -> Any:
    """peft's LoRA on the layers `lora_target_names` picks for `lora.target_modules`."""
    lora.target_modules = lora_target_names(model, lora.target_modules)
    return get_peft_model(model, lora)


def prepare_lora_llm(llm: Any, lora: Any, use_activation_checkpointing: bool, compile_layers: bool) -> Any:
    """xtflow's LoRA preparation of an LLM (see the module's docstring); returns the peft model."""
    llm = add_lora(prepare_lora_keeping_dtype(llm, use_activation_checkpointing), lora)
    if half_precision(llm):
        skip_lora_input_cast(llm)
    if compile_layers:
        print_log(f"xtflow: torch.compile of {compile_decoder_layers(llm)} decoder layers", "current")
    return llm


def sdpa_supported(model_path: str, llm_config: Any) -> bool:
    """Whether the class from_pretrained builds for this model (remote code resolved) declares SDPA support."""
    from transformers import AutoModelForCausalLM

    auto_map = getattr(llm_config, "auto_map", None) or {}
    if "AutoModelForCausalLM" in auto_map:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        cls = get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], model_path)
    else:
        cls = AutoModelForCausalLM._model_mapping.get(type(llm_config))
    return bool(getattr(cls, "_supports_sdpa", False))


def prepare_attention(cfg: Any, llm_config: Any) -> Any:
    """XTuner's attention choice for the model dict `cfg` (flash_attention_2 where flash-attn is installed,
    sdpa for the config classes it lists), and torch's SDPA where that leaves the model's default and
    the model's class supports it.

    XTuner does not list InternLM2Config, and InternLM2's remote code takes its attention class from
    the `attn_implementation` keyword of from_pretrained only (transformers 4.48 overwrites config.json's
    value; the code turns None into "eager"), so without this it trains with eager attention: a
    [batch, heads, T, T] score tensor kept per layer. SDPA computes the same attention (same loss; the
    gradients agree to rounding) without storing it. An older InternLM2 code without an SDPA class
    (`_supports_sdpa` unset) keeps eager.
    """
    return prefer_sdpa(SupervisedFinetune._prepare_for_flash_attn(cfg, llm_config), llm_config)


def prefer_sdpa(cfg: Any, llm_config: Any) -> Any:
    """torch's SDPA for the model dict `cfg` where XTuner's choice left the model's default and the model's
    class supports it (`prepare_attention`)."""
    if cfg.get("attn_implementation") is None and sdpa_supported(cfg.pretrained_model_name_or_path, llm_config):
        cfg.attn_implementation = "sdpa"
        print_log(f"xtflow: attn_implementation sdpa for {type(llm_config).__name__}", "current")
    return cfg


def static_rope_in_training(model: Any) -> int:
    """Let InternLM2's dynamic-NTK rotary embeddings run their plain path in training; returns how many.

    Each layer's `InternLM2DynamicNTKScalingRotaryEmbedding` asks `torch.max(position_ids) + 1 >
    max_position_embeddings` in every forward: on a GPU a device-to-host sync per layer (and per
    recomputation), and under torch.compile a graph break around every layer's rotary embedding. In
    training, XTuner's position ids count up from 0 in each row (packed or not), so a row no longer than
    max_position_embeddings never takes the scaled path: for those, the plain rotary embedding is the
    same computation. Longer rows, and generation (eval mode), keep the dynamic one.
    """
    count = 0
    for module in model.modules():
        if type(module).__name__ == "InternLM2DynamicNTKScalingRotaryEmbedding":
            module.forward = types.MethodType(_rope_plain_in_training, module)
            count += 1
    return count


def _rope_plain_in_training(self: Any, x: Any, position_ids: Any) -> Any:
    if self.training and position_ids.shape[-1] <= self.max_position_embeddings:
        return super(type(self), self).forward(x, position_ids)  # InternLM2RotaryEmbedding.forward
    return type(self).forward(self, x, position_ids)


class FastLoraSupervisedFinetune(SupervisedFinetune):
    """XTuner's SupervisedFinetune with xtflow's LoRA preparation (see the module's docstring)."""

    def __init__(self, *args: Any, compile_layers: bool = False, **kwargs: Any) -> None:
        self.compile_layers = compile_layers  # read by _prepare_for_lora, which the base __init__ calls
        super().__init__(*args, **kwargs)

    @staticmethod
    def _prepare_for_flash_attn(cfg: Any, llm_cfg: Any) -> Any:
        return prepare_attention(cfg, llm_cfg)

    def build_llm_from_cfg(self, llm_cfg: Any, use_varlen_attn: bool, max_position_embeddings: int | None) -> Any:
        llm = super().build_llm_from_cfg(llm_cfg, use_varlen_attn, max_position_embeddings)
        if count := static_rope_in_training(llm):
            print_log(f"xtflow: plain RoPE in training for {count} dynamic-NTK rotary embeddings", "current")
        return llm

    def _prepare_for_lora(self, peft_model: Any = None, use_activation_checkpointing: bool = True) -> None:
        self.llm = prepare_lora_llm(self.llm, self.lora, use_activation_checkpointing, self.compile_layers)
        if peft_model is not None:
            load_checkpoint(self, peft_model)


class FastLoraLLaVAModel(LLaVAModel):
    """XTuner's LLaVAModel with xtflow's LoRA preparation, attention choice and rotary embeddings for the
    LLM (as FastLoraSupervisedFinetune's) and LoRA layers of the visual encoder listed in a fixed order."""

    def __init__(self, *args: Any, compile_layers: bool = False, **kwargs: Any) -> None:
        self.compile_layers = compile_layers  # read by _prepare_llm_for_lora, which the base __init__ calls
        super().__init__(*args, **kwargs)
        if count := static_rope_in_training(self.llm):
            print_log(f"xtflow: plain RoPE in training for {count} dynamic-NTK rotary embeddings", "current")
        generate_from_embeddings(self.llm)  # EvaluateChatHook samples from the image's embeddings
        self.projector.register_forward_hook(self._in_embedding_dtype)

    def _in_embedding_dtype(self, _module: Any, _inputs: Any, features: Any) -> Any:
        """The projector's image features in the LLM's embedding dtype. XTuner builds the projector in the
        visual encoder's dtype (float32 in the stock configs); in training autocast casts its output,
        but EvaluateChatHook samples without autocast, and float32 features made a bf16 4-bit LLM fail
        at its first unquantized layer (the output layer) on the GPU. A no-op in training."""
        return features.to(self.llm.get_input_embeddings().weight.dtype)

    @staticmethod
    def _prepare_for_flash_attn(cfg: Any, llm_cfg: Any) -> tuple[Any, Any]:
        cfg, llm_cfg = LLaVAModel._prepare_for_flash_attn(cfg, llm_cfg)
        return prefer_sdpa(cfg, llm_cfg), llm_cfg

    def _prepare_llm_for_lora(self, lora_config: Any, use_activation_checkpointing: bool = True) -> None:
        lora = self._parse_lora_config(lora_config)
        self.llm = prepare_lora_llm(self.llm, lora, use_activation_checkpointing, self.compile_layers)

    def _prepare_visual_encoder_for_lora(self, lora_config: Any, use_activation_checkpointing: bool = True) -> None:
        self.visual_encoder = add_lora(self.visual_encoder, self._parse_lora_config(lora_config))


class BatchedEvaluateChatHook(EvaluateChatHook):
    """XTuner's EvaluateChatHook, bounded, batched and timed (see the module's docstring).

    XTuner 0.2.0 ignores `max_new_tokens` before training (it samples 50 tokens there) and samples
    twice at the end: at the last iteration's checkpoint and again after training, from the same
    weights. Here the first sample keeps to the configured bound where that is below 50 tokens, the
    repeated end sample is skipped, and the prompts are sampled in one batch, eagerly where the
    model's layers are compiled (generation's changing shapes would recompile them). One line in
    the train log per sample and a total when the run ends.
    """

    def __init__(self, *args: Any, sample_before_train: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sample_before_train = sample_before_train
        self.seconds = 0.0
        self.calls = 0
        self.sampled_after_iter: int | None = None

    def _generate_samples(self, runner: Any, max_new_tokens: int | None = None, save_eval_output: bool = False) -> None:
        start = time.perf_counter()
        try:
            with sampling_context(runner.model):
                super()._generate_samples(runner, max_new_tokens, save_eval_output)
        finally:
            took = time.perf_counter() - start
            self.seconds += took
            self.calls += 1
            self.sampled_after_iter = runner.iter
            runner.logger.info(f"xtflow: EvaluateChatHook sample at iteration {runner.iter} took {took:.2f} s")

    def _eval_language(
        self, runner: Any, model: Any, device: Any, max_new_tokens: int | None = None, save_eval_output: bool = False
    ) -> None:
        """Every prompt in one left-padded `generate` call.

        XTuner generates one prompt at a time; a decode step costs about as much for a few prompts
        as for one (it is bound by kernel launches), so this divides the sampling time by the number
        of prompts. Stop words must be single tokens (they become end-of-sequence ids, which stop each
        sequence on its own); otherwise XTuner's per-prompt loop runs. Logs and saves what XTuner does.
        """
        import torch

        stops = single_token_ids(self.tokenizer, [c.stop_word for c in self.stop_criteria])
        if stops is None or len(self.evaluation_inputs) < 2:
            super()._eval_language(runner, model, device, max_new_tokens, save_eval_output)
            return
        prompts = [
            tuple(self.tokenizer.encode((self.system + self.instruction).format(input=text, round=1, **runner.cfg)))
            for text in self.evaluation_inputs
        ]
        pad, eos = self.gen_config.pad_token_id, self.gen_config.eos_token_id
        ends = ([] if eos is None else [eos] if isinstance(eos, int) else list(eos)) + stops
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            generation_config=self.gen_config,
            eos_token_id=ends,
        )
        texts = []
        for prompt, row in zip(prompts, out[:, width:].tolist()):
            reply = next((row[: i + 1] for i, t in enumerate(row) if t in ends), row)
            texts.append(self.tokenizer.decode(list(prompt) + reply))
            runner.logger.info(f"Sample output:\n{texts[-1]}\n")
        if save_eval_output:
            self._save_eval_output(runner, [f"{t}\n" for t in texts])

    def before_train(self, runner: Any) -> None:
        if not self.sample_before_train:
            runner.logger.info(
                "xtflow: no EvaluateChatHook sample before training (xtuner.evaluation_before_train: false)"
            )
            return
        # XTuner's 50 tokens here, or the configured bound where that is smaller
        self._generate_samples(runner, max_new_tokens=min(50, self.max_new_tokens))

    def after_train(self, runner: Any) -> None:
        # after_train_iter saw runner.iter == last index; after training runner.iter is one more
        if self.sampled_after_iter == runner.iter - 1:
            runner.logger.info("xtflow: EvaluateChatHook already sampled these weights at the last iteration")
            return
        self._generate_samples(runner)

    def after_run(self, runner: Any) -> None:
        runner.logger.info(f"xtflow: EvaluateChatHook sampling took {self.seconds:.2f} s in {self.calls} calls")


class LLaVADatasetWithProcesses(LLaVADataset):
    """XTuner's LLaVADataset whose text processing maps with `map_num_proc` processes.

    LLaVADataset has no such argument: it always calls `process_hf_dataset` with its default of 32
    processes, capped only at the record count (8 dataset passes each forking 32 processes: a minute
    of start-up on 2 cores). The module-level function is bound to the count while the base class
    builds the dataset, and restored after.
    """

    def __init__(self, *args: Any, map_num_proc: int = 32, **kwargs: Any) -> None:
        import xtuner.dataset.llava as llava_module

        process = llava_module.process_hf_dataset
        llava_module.process_hf_dataset = functools.partial(process, map_num_proc=map_num_proc)
        try:
            super().__init__(*args, **kwargs)
        finally:
            llava_module.process_hf_dataset = process


class NonFiniteLossError(FloatingPointError):
    """The training loss became nan or infinite (raised by StopAtNonFiniteLoss; its message is one line)."""


class StopAtNonFiniteLoss(Hook):
    """Stop training at the first iteration whose loss is not finite.

    Without it, a learning rate far too high (`xtuner.lr: 1e30`) trains on to the end on a nan loss,
    saves nan weights and fails much later, in sampling or when the model is used. mmengine already
    reads the loss of every iteration (its runtime-info hook), so this check costs no extra
    synchronisation. It runs before the checkpoint hook, so no nan checkpoint is saved.
    """

    priority = "NORMAL"

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        loss = (outputs or {}).get("loss")
        if loss is None:
            return
        value = float(loss.detach() if hasattr(loss, "detach") else loss)
        if math.isfinite(value):
            return
        lr = runner.cfg.get("lr", "?")
        raise NonFiniteLossError(
            f"config key 'xtuner.lr': the training loss became {value} at iteration {runner.iter + 1} with "
            f"learning rate {lr}; training stopped there. Lower xtuner.lr (or check the data and the base "
            "model's weights)"
        )
