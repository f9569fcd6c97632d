"""GPU benchmark of the LLaVA target's two trainings: the tutorial's stock config settings against xtflow's
recipe (config/llava_internlm2_chat_1_8b.yaml), in one call, with random weights.

    python bench/llava_gpu_bench.py --out DIR [--iterations 20] [--variants stock,recipe]
    python bench/llava_gpu_bench.py --out DIR --variants stock; ... --variants recipe   # the same, in two calls
    python bench/llava_gpu_bench.py --out DIR --shape tiny --device cpu --iterations 20  # runs on a CPU: a check

Builds the real shapes with random weights (speed and memory are honest, what they say is not): the
CLIP ViT-L/14-336 vision tower (xtflow.llava_encoder, 303 M parameters, 576 image tokens) and
InternLM2-chat-1.8B's shape (bench/gpu_train_bench.py's, 1.89 B: InternLM2's own architecture, its remote
code, or with `--arch llama` a Llama of that shape), and the generated shapes drawn at
336 px, as many as each stage's batch size x --iterations. Per variant it runs both stages of the
workflow's train stage (`xtflow.train.train`, what rule llava_train runs: the plan check, the written
config, XTuner's training tool), the finetune stage from that variant's pretrained projector. Prints per
variant and stage: s/iter (steady state), samples/s, peak GPU memory (mmengine's), the time spent in
EvaluateChatHook's samples and the stage's wall time (dataset, model load, training, sampling, saving);
writes DIR/results.json and every train log.

The variants differ only in settings: `stock` has the stock configs' (fp16 AMP, XTuner's 32 dataset
processes, EvaluateChatHook's 600-token samples, also before training); `recipe` has the recipe file's.
Both are 4-bit QLoRA with activation checkpointing, at the stock batch sizes (32, 16) and LoRA ranks
(512 and 64), with the recipe's warmup (0.05; raised to 2 iterations where --iterations is short:
xtflow refuses fewer, XTuner's 0.03 x 40 would be 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
# the XTuner tools this starts import the written configs' xtflow components: this checkout's, as the workflow does
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "workflow"), os.getenv("PYTHONPATH")]))

from gpu_train_bench import build_model, host_info, parse_log  # noqa: E402

from xtflow import paths  # noqa: E402
from xtflow.llava_config import LlavaStageSettings, stage_settings, write_llava_config  # noqa: E402
from xtflow.llava_dataset import IMAGES, RECORDS, write_split  # noqa: E402
from xtflow.llava_encoder import TinyClipSpec, build_tiny_clip  # noqa: E402
from xtflow.settings import validate  # noqa: E402
from xtflow.train import train  # noqa: E402

CLIP_L_336 = TinyClipSpec(
    image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16, seed=0
)
RECIPE = REPO / "config" / "llava_internlm2_chat_1_8b.yaml"
# The stock configs' settings where the recipe differs (llava_internlm2_chat_1_8b_*_e1_gpu8_*.py).
STOCK = dict(
    dtype="float16",
    dataset_processes=32,
    evaluation_max_new_tokens=600,
    evaluation_before_train=True,
)


def variants(llm: Path, encoder: Path, device: str, iterations: int) -> dict[str, dict[str, LlavaStageSettings]]:
    """{variant: {stage: settings}}, from config.yaml + the recipe file, as the workflow reads them; the
    warmup raised where a short benchmark would get fewer than the 2 iterations xtflow requires."""
    overlay = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    llava = validate(overlay)["llava"]
    warmup = max(llava["warmup_ratio"], 2.5 / iterations)  # int(warmup x iterations) >= 2, rounding aside
    out: dict[str, dict[str, LlavaStageSettings]] = {}
    for name, changes in (("stock", STOCK), ("recipe", {})):
        out[name] = {}
        for stage in paths.LLAVA_STAGES:
            s = stage_settings(llava, stage, str(llm), str(encoder), "pretrain.pth")
            s = replace(s, **changes, warmup_ratio=warmup)
            if device == "cpu":  # the check on a CPU: same code, what a CPU can run
                s = replace(s, dtype="float32", load_in_4bit=False, device="cpu", dataset_processes=1)
            out[name][stage] = s
    return out


def build_models(out: Path, shape: str, arch: str, device: str) -> tuple[Path, Path]:
    """The LLM (bench/gpu_train_bench.py's: InternLM2-chat-1.8B's shape or a tiny one, of `arch`) and the
    visual encoder (CLIP ViT-L/14-336, or the tiny default's), random weights, built once per --work."""
    llm, encoder = out / f"llm-{arch}-{shape}", out / f"visual_encoder-{shape}"
    if not (llm / "config.json").is_file():
        build_model(llm, arch, "full" if shape == "real" else "tiny", device)
    if not (encoder / "config.json").is_file():
        spec = CLIP_L_336 if shape == "real" else TinyClipSpec(32, 8, 32, 64, 2, 2, 0)
        build_tiny_clip(spec, encoder)
    return llm, encoder


def run_stage(run: Path, stage: str, s: LlavaStageSettings, base_config: str, data: Path, log_interval: int) -> dict:
    """One training as rule llava_train runs it, in the variant's run directory (the config's paths are relative)."""
    split = run / paths.llava_data(stage)
    split.parent.mkdir(parents=True, exist_ok=True)
    if not split.exists():
        split.symlink_to(data, target_is_directory=True)
    config = run / paths.llava_xtuner_config(stage)
    write_llava_config(base_config, s, config)
    log = run / f"train_{stage}.log"
    log.write_text("", encoding="utf-8")
    # the train stage resumes from its work dir's last checkpoint: one left by an earlier call with the same
    # --work would train nothing and measure nothing
    shutil.rmtree(run / paths.llava_work_dir(stage), ignore_errors=True)
    extra = [Path(s.visual_encoder_path), split / IMAGES] + ([Path(s.pretrained_pth)] if s.pretrained_pth else [])
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(run)
    try:
        train(
            config=config,
            data=split / RECORDS,
            model=Path(s.llm_path),
            work_dir=run / paths.llava_work_dir(stage),
            handle=run / paths.llava_checkpoint(stage),
            log=log,
            deepspeed=None,
            gpus=1,
            warmup_ratio=s.warmup_ratio,
            log_interval=log_interval,
            extra_inputs=extra,
            section="llava",
        )
    finally:
        os.chdir(cwd)
    wall = time.perf_counter() - start
    r = parse_log(log, s.batch_size, 1)
    if not r["losses"]:
        sys.exit(f"{stage}: no training iteration was logged in {log}")
    r.pop("tokens_per_s_per_gpu")  # counts text tokens of a fixed length; LLaVA samples are images + text
    r.update(samples_per_s=s.batch_size / r["s_per_iter"], stage_wall_s=wall)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iterations", type=int, default=20, help="iterations per stage (data = batch size x this)")
    p.add_argument("--variants", default="stock,recipe")
    p.add_argument("--shape", choices=("real", "tiny"), default="real")
    p.add_argument("--arch", choices=("internlm2", "llama"), default="internlm2", help="the LLM's architecture")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--work", type=Path, default=Path("/tmp/xtflow-llava-bench"))
    p.add_argument("--log-interval", type=int, default=2)
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    llm, encoder = build_models(args.work, args.shape, args.arch, args.device)
    image_size = 336 if args.shape == "real" else 32
    all_variants = variants(llm, encoder, args.device, args.iterations)
    base = {stage: validate({})["llava"][stage]["base_config"] for stage in paths.LLAVA_STAGES}
    # calls with the same --out add their variants (one variant per call fits a 10-minute device slot)
    previous = args.out / "results.json"
    results: dict = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {"variants": {}}
    results.update(shape=args.shape, arch=args.arch, device=args.device, iterations=args.iterations)
    if args.device == "cuda":
        import torch

        results["gpu"] = torch.cuda.get_device_name(0)
    host = host_info(args.device)
    print(f"host: {json.dumps(host)}", flush=True)
    for name in args.variants.split(","):
        run = args.work / name
        results["variants"][name] = {}
        for stage, s in all_variants[name].items():
            count = s.batch_size * args.iterations
            data = args.work / "data" / f"{stage}-{count}-{image_size}"
            if not data.exists():
                generated = {stage: count, "image_size": image_size, "seed": 0}
                print(
                    f"data: {write_split(data, None, stage, generated)} {stage} records at {image_size} px", flush=True
                )
            if stage == "finetune":
                s = replace(s, pretrained_pth=str(run / paths.llava_checkpoint("pretrain")))
            r = run_stage(run, stage, s, base[stage], data, args.log_interval)
            r["host"] = host  # per stage: calls with the same --out may run on different hosts
            r["settings"] = {k: v for k, v in asdict(s).items() if not k.endswith(("_path", "_dir", "_pth"))}
            results["variants"][name][stage] = r
            shutil.copyfile(run / f"train_{stage}.log", args.out / f"train-{name}-{stage}.log")
            print(
                f"{name:6s} {stage:8s} s/iter {r['s_per_iter']:.3f}  samples/s {r['samples_per_s']:.1f}  "
                f"peak {r['peak_memory_mb']:,} MB  sampling {r['sampling_s']:.1f} s  stage {r['stage_wall_s']:.1f} s",
                flush=True,
            )
            (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
