"""GPU benchmark of the train stage: the tutorial's stock settings against xtflow's GPU recipes.

    python bench/gpu_train_bench.py --out DIR [--tokens 262144] [--variants stock,qlora,lora] [--gpus 1]
                                     [--deepspeed deepspeed_zero2]

Builds a model of InternLM2-1.8B's shape (Llama architecture: hidden 2048, 24 layers, 16 heads,
8 KV heads, FFN 8192, vocab 92544; random weights, so speed and memory are honest, quality is not),
one packed dataset of a fixed number of tokens, and runs the workflow's train stage
(`xtflow.train.train`, what the `train` rule runs) once per variant, in this process's order,
on the same GPU(s). Prints, per variant: s/iter, tokens/s (per GPU), peak GPU memory (mmengine's
max allocated), time spent sampling in EvaluateChatHook, and the wall time of the whole stage
(dataset processing, model load, training, sampling, checkpoint saving). Writes
DIR/results.json and each variant's train log.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from xtflow.tiny_model import BOS, EOS, IM_END, PAD, build_tokenizer  # noqa: E402
from xtflow.train import train  # noqa: E402
from xtflow.xtuner_config import XtunerSettings, write_config  # noqa: E402

BASE_CONFIG = "internlm2_1_8b_qlora_alpaca_e3"
MAX_LENGTH = 2048
SHAPE = dict(
    hidden_size=2048,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_key_value_heads=8,
    intermediate_size=8192,
    vocab_size=92544,
    max_position_embeddings=4096,
)

STOCK_INPUTS = ["请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai"]


def variants(data: Path, model: Path) -> dict[str, XtunerSettings]:
    """Same tokens per optimizer step (16 x 2048) in every variant; only how they are computed differs."""
    from xtuner.utils import SYSTEM_TEMPLATE

    stock = XtunerSettings(
        model_path=str(model),
        data_path=str(data),
        prompt_template="internlm2_chat",
        max_length=MAX_LENGTH,
        pack_to_max_length=True,
        batch_size=1,
        accumulative_counts=16,
        max_epochs=1,
        lr=2e-4,
        warmup_ratio=0.25,
        save_steps=500,
        save_total_limit=2,
        evaluation_freq=500,
        evaluation_inputs=STOCK_INPUTS,
        evaluation_max_new_tokens=600,
        system=SYSTEM_TEMPLATE.alpaca,
        seed=42,
        lora_r=64,
        lora_alpha=16,
        lora_dropout=0.1,
        load_in_4bit=True,
        dtype="float16",
        gradient_checkpointing=True,
        device="cuda",
    )
    recipe = dict(
        batch_size=4,
        accumulative_counts=4,
        dtype="bfloat16",
        evaluation_max_new_tokens=16,
        evaluation_before_train=False,
        compile=True,
    )
    return {
        # (a) the tutorial's config as shipped: fp16 AMP, 4-bit, micro-batch 1, 600-token samples
        "stock": stock,
        # (b) xtflow's GPU recipe (config/internlm2_chat_1_8b.yaml with packing on, its large-dataset setting),
        # QLoRA: bf16, micro-batch 4 x 2048 tokens, compiled decoder layers, bounded samples at checkpoints only
        "qlora": replace(stock, **recipe),
        # (c) the bf16 LoRA variant: no 4-bit, no activation recomputation
        "lora": replace(stock, **recipe, load_in_4bit=False, gradient_checkpointing=False),
    }


def build_model(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    build_tokenizer(1024, out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD, IM_END)}
    config = LlamaConfig(
        **SHAPE,
        bos_token_id=ids[BOS],
        eos_token_id=[ids[EOS], ids[IM_END]],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters", flush=True)
    model.save_pretrained(out, safe_serialization=True)
    del model
    torch.cuda.empty_cache()


def build_data(out: Path, tokens: int, tokenizer_dir: Path) -> int:
    """Records of ~300 tokens, enough to pack into tokens / 2048 samples."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    lines = (REPO / "workflow" / "xtflow" / "data" / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    rng = random.Random(0)
    records, total = [], 0
    while total < tokens + MAX_LENGTH:
        q = rng.choice(lines)
        a = " ".join(rng.choice(lines) for _ in range(6))
        records.append({"conversation": [{"input": q, "output": a}]})
        total += len(tok.encode(q + a, add_special_tokens=False)) + 20
    out.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return len(records)


WINDOW = 10  # mmengine's LogProcessor logs `time` as the mean of the last 10 iterations


def parse_log(log: Path, batch: int, gpus: int) -> dict[str, float]:
    """Steady-state s/iter: the logged window means whose 10 iterations all follow iteration 2
    (the first iterations hold CUDA start-up); the last logged mean where the run is shorter."""
    text = log.read_text(encoding="utf-8", errors="replace")
    logged = [(int(i), float(t)) for i, t in re.findall(r"Iter\(train\) \[\s*(\d+)/\d+\].*?\btime: ([\d.]+)", text)]
    mems = [int(m) for m in re.findall(r"Iter\(train\) .*?\bmemory: (\d+)", text)]
    sampling = re.findall(r"EvaluateChatHook sampling took ([\d.]+) s in (\d+) calls", text)
    steady = [t for i, t in logged if i > WINDOW + 2] or [t for _, t in logged[-1:]]
    s_iter = statistics.median(steady) if steady else float("nan")
    return {
        "s_per_iter": s_iter,
        "steady_windows": len(steady),
        "tokens_per_s_per_gpu": batch * MAX_LENGTH / s_iter if steady else float("nan"),
        "peak_memory_mb": max(mems) if mems else float("nan"),
        "sampling_s": float(sampling[-1][0]) if sampling else float("nan"),
        "sampling_calls": int(sampling[-1][1]) if sampling else 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", type=int, default=128 * MAX_LENGTH)
    p.add_argument("--variants", default="stock,qlora,lora")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--deepspeed", default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/xtflow-bench"))
    p.add_argument("--log-interval", type=int, default=2)
    p.add_argument("--adapter", action="store_true", help="also run the adapter stage (pth_to_hf) after training")
    args = p.parse_args()

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    model, data = args.work / "model", args.work / "train.json"
    if not (model / "config.json").is_file():
        build_model(model)
    if not data.is_file():
        print(f"dataset: {build_data(data, args.tokens, model)} records", flush=True)
    gpu = torch.cuda.get_device_name(0)
    peak = 989e12 if "H100" in gpu or "H200" in gpu else float("nan")  # dense bf16 FLOP/s (SXM)
    params = 1.89e9
    results = {"gpu": gpu, "gpus": args.gpus, "deepspeed": args.deepspeed, "tokens": args.tokens, "variants": {}}
    all_variants = variants(data, model)
    for name in args.variants.split(","):
        settings = all_variants[name]
        run = args.work / f"{name}-{args.gpus}gpu-{args.deepspeed or 'ddp'}"
        run.mkdir(exist_ok=True)
        config, log = run / "config.py", run / "train.log"
        log.write_text("", encoding="utf-8")
        write_config(BASE_CONFIG, settings, config)
        start = time.perf_counter()
        train(
            config=config,
            data=data,
            model=model,
            work_dir=run / "work_dir",
            handle=run / "final_checkpoint.pth",
            log=log,
            deepspeed=args.deepspeed,
            gpus=args.gpus,
            warmup_ratio=settings.warmup_ratio,
            log_interval=args.log_interval,
        )
        wall = time.perf_counter() - start
        r = parse_log(log, settings.batch_size, args.gpus)
        if args.adapter:
            from xtflow.export import export_adapter

            t0 = time.perf_counter()
            export_adapter(config, run / "final_checkpoint.pth", run / "hf_adapter", False, "2GB", log)
            r["adapter_s"] = time.perf_counter() - t0
            r["adapter_files"] = sorted(p.name for p in (run / "hf_adapter").iterdir())
        r.update(
            stage_wall_s=wall,
            settings={
                k: v
                for k, v in asdict(settings).items()
                if k not in ("model_path", "data_path", "system", "evaluation_inputs")
            },
        )
        r["sampling_share"] = r["sampling_s"] / wall
        r["mfu_bf16"] = 4 * params * r["tokens_per_s_per_gpu"] / peak
        results["variants"][name] = r
        (args.out / f"train-{name}-{args.gpus}gpu.log").write_text(
            log.read_text(encoding="utf-8", errors="replace"), encoding="utf-8"
        )
        print(
            f"{name:6s} s/iter {r['s_per_iter']:.3f}  tokens/s/GPU {r['tokens_per_s_per_gpu']:,.0f}  "
            f"peak {r['peak_memory_mb']:,} MB  sampling {r['sampling_s']:.1f} s ({100 * r['sampling_share']:.1f}%)  "
            f"stage {wall:.1f} s  MFU {100 * r['mfu_bf16']:.1f}%",
            flush=True,
        )
        (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
