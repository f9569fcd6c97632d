"""Where a LoRA training step's GPU time goes: XTuner's model wrapper, one step profiled.

    python bench/gpu_profile_step.py --model DIR [--batch 4,8] [--steps 8] [--profile]
                                      [--variants 'xtuner;bf16-frozen;xtflow@4,8;xtflow+4bit+gc']
    python bench/gpu_profile_step.py --model DIR --generate [--variants xtflow+4bit]

Builds XTuner's `SupervisedFinetune` exactly as the workflow's config does (LoRA r 64 on every
linear layer, dropout 0.1, the model loaded in bf16), then runs forward + backward + AdamW steps of
`--batch` x 2048 tokens under bf16 autocast (what mmengine's AmpOptimWrapper does), outside mmengine
(no data loading, no hooks). Prints per variant the median step time, tokens/s, the share of the
GPU's dense bf16 peak (4 x parameters FLOP per token) and peak memory, then the CUDA kernels that
take the time in one profiled step.

Variants:
  xtuner       as XTuner 0.2.0 builds it: `prepare_model_for_kbit_training` casts every frozen
               bf16 weight to fp32, so autocast re-casts them to bf16 in every matmul, every step.
  bf16-frozen  the frozen weights stay bf16 (autocast computes the same bf16 matmuls; the fp32
               copies are exact upcasts of those bf16 values), also in a 4-bit model (norms,
               embeddings, output layer); `xtflow.xtuner_plugins.prepare_lora_keeping_dtype`.
  xtflow       bf16-frozen, and peft's cast of every LoRA layer's input to fp32 is off
               (`skip_lora_input_cast`): what xtflow's train stage does.
Flags: +4bit (QLoRA, nf4 with double quantization, bf16 compute), +gc (activation checkpointing),
+compile (torch.compile of each decoder layer: one compiled graph the 24 layers share), +sdpa / +eager
(the `attn_implementation` asked of from_pretrained: InternLM2's remote code reads it from there only, and
runs eager attention without it), +noout (LoRA on every linear layer but the output layer: XTuner's choice
adapts InternLM2's `output`), +plainrope (InternLM2's dynamic-NTK RoPE runs its plain path in training,
`xtflow.xtuner_plugins.static_rope_in_training`). Models with remote code (`bench/gpu_train_bench.py
--model-only`, InternLM2) load with trust_remote_code.

--generate times EvaluateChatHook-style sampling instead: 16 new tokens, KV cache, no autocast,
for 1 prompt and for 2 prompts in one batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))  # this checkout's xtflow

SEQ = 2048


def build(  # noqa: ANN201
    model_dir: Path,
    keep_bf16: bool,
    checkpointing: bool,
    load_in_4bit: bool,
    attn_implementation: str | None = None,
    lora_output: bool = True,
):
    import torch
    import xtuner.model.sft as sft
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    original = sft.prepare_model_for_kbit_training
    if keep_bf16:
        from xtflow.xtuner_plugins import prepare_lora_keeping_dtype

        sft.prepare_model_for_kbit_training = prepare_lora_keeping_dtype
    try:
        quant = (
            dict(
                type=BitsAndBytesConfig,
                load_in_4bit=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
                bnb_4bit_quant_type="nf4",
            )
            if load_in_4bit
            else None
        )
        llm = dict(
            type=AutoModelForCausalLM.from_pretrained,
            pretrained_model_name_or_path=str(model_dir),
            torch_dtype=torch.bfloat16,
            quantization_config=quant,
            trust_remote_code=True,
        )
        if attn_implementation:
            llm["attn_implementation"] = attn_implementation
        lora = dict(type=LoraConfig, r=64, lora_alpha=16, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM")
        if not lora_output:
            lora["target_modules"] = "all-linear"  # peft's: every linear layer but the output layer
        from mmengine.config import ConfigDict

        model = sft.SupervisedFinetune(
            llm=ConfigDict(llm), lora=ConfigDict(lora), use_activation_checkpointing=checkpointing
        )
    finally:
        sft.prepare_model_for_kbit_training = original
    model.train()  # from_pretrained leaves eval mode; mmengine's loop trains (dropout, checkpointing on)
    return model.cuda()


def run(name: str, model, batch: int, steps: int, profile: bool, peak: float, params: float) -> None:  # noqa: ANN001
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(100, 1000, (batch, SEQ), device="cuda", generator=g)
    data = {
        "input_ids": ids,
        "labels": ids.clone(),
        "position_ids": torch.arange(SEQ, device="cuda").expand(batch, SEQ).contiguous(),
    }

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(data, mode="loss")["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    torch.cuda.reset_peak_memory_stats()
    losses = []
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses.append(step())
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times[3:])
    print(f"{name}: first step {times[0]:.1f} s", flush=True)
    tps = batch * SEQ / s
    print(
        f"{name}: batch {batch} x {SEQ}  step {s:.3f} s  tokens/s {tps:,.0f}  "
        f"MFU {100 * 4 * params * tps / peak:.1f}%  peak memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB  "
        f"losses {' '.join(f'{float(x):.4f}' for x in losses[:4])}",
        flush=True,
    )
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CUDA]) as p:
            step()
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70), flush=True)


def sample(name: str, model, profile: bool, peak: float) -> None:  # noqa: ANN001
    """Time `generate` as EvaluateChatHook runs it after training: eval mode, KV cache, no autocast,
    xtflow's `sampling_context` (peft's input cast on, compiled layers eager, no cuDNN attention), 16 new
    tokens. The first call is profiled (CPU and CUDA) with --profile: what a first sample in a process
    costs beyond the later ones."""
    import contextlib

    import torch

    from xtflow.xtuner_plugins import sampling_context

    run(name, model, 4, 4, False, peak, 1.89e9)  # a few training steps first, as in the stage
    model.activation_checkpointing_disable()
    model.llm.config.use_cache = True
    model.eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    for call, prompts in enumerate((2, 2, 1, 2)):
        ids = torch.randint(100, 1000, (prompts, 40), device="cuda", generator=g)
        prof = contextlib.nullcontext()
        if profile and call == 0:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as prof_

            prof = prof_(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        with prof as p, sampling_context(model), torch.no_grad():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                min_new_tokens=16,
                do_sample=True,
                temperature=0.1,
                top_p=0.75,
                top_k=40,
            )
            torch.cuda.synchronize()
        took = time.perf_counter() - t0
        print(
            f"{name}: generate {prompts} prompt(s) x {out.shape[1] - 40} tokens  {took:.2f} s  "
            f"{1000 * took / (out.shape[1] - 40):.0f} ms per step",
            flush=True,
        )
        if profile and call == 0:
            print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--batch", default="4", help="comma-separated micro-batch sizes")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument(
        "--variants",
        default="xtuner;bf16-frozen;xtflow",
        help="';'-separated; append +4bit for QLoRA, +gc for activation checkpointing, +compile for "
        "torch.compile, @2,4 for micro-batch sizes other than --batch",
    )
    p.add_argument("--profile", action="store_true")
    p.add_argument("--generate", action="store_true", help="time sampling (16 tokens, 1 and 2 prompts) instead")
    args = p.parse_args()

    import gc

    import torch

    gpu = torch.cuda.get_device_name(0)
    peak = 989e12 if "H100" in gpu or "H200" in gpu else float("nan")
    print(f"gpu: {gpu}", flush=True)
    for spec in args.variants.split(";"):
        spec, _, batches = spec.partition("@")
        name, *flags = spec.split("+")
        torch.manual_seed(0)  # the same LoRA initialisation in every variant
        attn = "sdpa" if "sdpa" in flags else "eager" if "eager" in flags else None
        model = build(
            args.model, name in ("bf16-frozen", "xtflow"), "gc" in flags, "4bit" in flags, attn, "noout" not in flags
        )
        if "plainrope" in flags:
            from xtflow.xtuner_plugins import static_rope_in_training

            static_rope_in_training(model.llm)
        if name == "xtflow":
            from xtflow.xtuner_plugins import skip_lora_input_cast

            skip_lora_input_cast(model.llm)
        if "compile" in flags:
            for layer in model.llm.get_base_model().model.layers:
                layer.compile()
        if args.generate:
            sample(spec, model, args.profile, peak)
            continue
        params = 1.89e9  # InternLM2-1.8B's shape (4-bit storage packs two weights per element)
        for batch in (int(b) for b in (batches or args.batch).split(",")):
            try:
                run(spec, model, batch, args.steps, args.profile, peak, params)
            except torch.OutOfMemoryError:
                print(f"{name}: batch {batch}: out of GPU memory", flush=True)
        del model
        gc.collect()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
