#!/usr/bin/env bash
# Run on the lent GPU machine (see ../shared/notes/gpu-machine.md and docs/benchmarks.md):
#   bash bench/gpu_session.sh single   # GPU tests + 1-GPU benchmark (stock vs xtflow recipes)
#   bash bench/gpu_session.sh multi    # 2 GPUs, DeepSpeed zero2, through the adapter; 1-GPU zero2 baseline
#   bash bench/gpu_session.sh issue7   # stock vs the GPU recipe vs bf16 LoRA (TOKENS=...), compiled-step grid
#   bash bench/gpu_session.sh grid     # profiler: LoRA preparation, micro-batch, checkpointing, compile, sampling
#   bash bench/gpu_session.sh workflow # the GPU recipe through results/final_model with real Snakemake
#   bash bench/gpu_session.sh compile-ab # its train rule with xtuner.compile false / true; first samples
# Expects .gpu/site.tar.xz: the Python 3.12 packages xtflow needs beside the machine's torch
# (built on the CPU machine; see docs/benchmarks.md). Results go to $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ ! -d /tmp/site/xtuner ]; then
  mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site
  # Prefer the machine's own builds where it has them (they match its torch and CUDA).
  python3 -c "import torchvision" 2>/dev/null && rm -rf /tmp/site/torchvision /tmp/site/torchvision-* /tmp/site/torchvision.libs
  python3 -c "import skimage" 2>/dev/null && rm -rf /tmp/site/skimage /tmp/site/scikit_image*
fi
export PYTHONPATH=/tmp/site:$PWD/workflow PATH=/tmp/site/bin:$PATH HF_HOME=/tmp/hf PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, xtuner, bitsandbytes, peft, mmengine; print('torch', torch.__version__, 'transformers', transformers.__version__, 'xtuner', xtuner.__version__, 'bitsandbytes', bitsandbytes.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
ensure_model() {  # the model of InternLM2-1.8B's shape (random weights) that the benchmarks use
  [ -f "$1/config.json" ] || CUDA_VISIBLE_DEVICES=0 python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; import gpu_train_bench as b; b.build_model(Path('$1'))"
}
ensure_snakemake() {  # Snakemake on the GPU machine: .gpu/snakemake-wheels.tar (bash bench/gpu_wheels.sh)
  if [ ! -d /tmp/site2/snakemake ]; then
    mkdir -p /tmp/whl && tar -xf .gpu/snakemake-wheels.tar -C /tmp/whl
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 /tmp/whl/smkw/*.whl
  fi
  export PYTHONPATH=$PYTHONPATH:/tmp/site2 PATH=$PATH:/tmp/site2/bin
}
recipe_dir() {  # a fresh project dir $1 for the GPU recipe; the rest of the args: lines of its gpu.yaml
  local w=$1; shift
  rm -rf "$w" && mkdir -p "$w/config" && cp config/config.yaml "$w/config/"
  printf '%s\n' "$@" > "$w/gpu.yaml"
}
recipe_snakemake() {  # in project dir $1, within $2 seconds: Snakemake on the GPU recipe, the rest of the args
  local w=$1 limit=$2 repo=$PWD; shift 2
  (cd "$w" && timeout "$limit" python3 -m snakemake -s "$repo/Snakefile" --cores 8 "$@" \
    --configfile config/config.yaml "$repo/config/internlm2_chat_1_8b.yaml" gpu.yaml)
}
case "${1:-single}" in
  single)
    CUDA_VISIBLE_DEVICES=0 timeout 380 python3 bench/gpu_train_bench.py --out "$OUT/bench1" --tokens 98304 --variants stock,qlora,lora 2>&1 | tail -n 400 > "$OUT/bench1.log" || true
    grep -E "^(model|dataset|stock|qlora|lora) " "$OUT/bench1.log" || tail -40 "$OUT/bench1.log"
    CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py -k qlora 2>&1 | tail -4
    ;;
  issue7)
    # issue 7 in one call: stock vs the QLoRA recipe vs bf16 LoRA, same GPU, same data, fresh work dir
    # (nothing resumed); then the compiled step with and without peft's fp32 upcast of frozen weights.
    rm -rf /tmp/xtflow-bench
    CUDA_VISIBLE_DEVICES=0 timeout ${BENCH_S:-420} python3 bench/gpu_train_bench.py --out "$OUT/bench1" --tokens ${TOKENS:-524288} --variants stock,qlora,lora 2>&1 | tail -n 900 > "$OUT/bench1.log" || true
    grep -E "^(model|dataset|stock|qlora|lora) " "$OUT/bench1.log" || tail -40 "$OUT/bench1.log"
    CUDA_VISIBLE_DEVICES=0 timeout --signal=INT ${GRID_S:-110} python3 bench/gpu_profile_step.py --model /tmp/xtflow-bench/model --batch 4 --steps 10 --variants "xtflow+4bit+gc+compile@4,8;xtuner+4bit+gc+compile;xtflow+compile@4,8" 2>&1 | grep -v Warning > "$OUT/grid2.log" || true
    grep -E "^(xtuner|xtflow)" "$OUT/grid2.log" || tail -20 "$OUT/grid2.log"
    ;;
  profile)
    # where a step's time goes: LoRA and QLoRA, with and without activation checkpointing
    ensure_model /tmp/xtflow-bench/model
    CUDA_VISIBLE_DEVICES=0 timeout 240 python3 bench/gpu_profile_step.py --model /tmp/xtflow-bench/model --batch 4 --profile --variants "${2:-xtuner,bf16-frozen,xtuner+4bit+gc}" 2>&1 | grep -v Warning > "$OUT/profile.log" || true
    CUDA_VISIBLE_DEVICES=0 timeout 200 python3 bench/gpu_profile_step.py --model /tmp/xtflow-bench/model --batch 2,4,8 --variants "${3:-bf16-frozen,xtuner+4bit+gc,xtuner+4bit}" 2>&1 | grep -v Warning > "$OUT/batches.log" || true
    grep -hE "^(gpu|xtuner|bf16-frozen)" "$OUT/profile.log" "$OUT/batches.log" || tail -30 "$OUT/profile.log"
    ;;
  grid)
    # issue 7, step by step: where the time goes with xtflow's LoRA preparation, micro-batch and
    # checkpointing choices, sampling cost, and torch.compile (regional) -- docs/benchmarks.md
    M=/tmp/xtflow-bench/model
    ensure_model $M
    P="timeout --signal=INT"
    CUDA_VISIBLE_DEVICES=0 $P 120 python3 bench/gpu_profile_step.py --model $M --batch 4 --profile --steps 8 --variants "xtflow;xtflow+4bit+gc" 2>&1 | grep -v Warning > "$OUT/profile.log" || true
    grep -E "^(gpu|xtflow)" "$OUT/profile.log" || tail -20 "$OUT/profile.log"
    CUDA_VISIBLE_DEVICES=0 $P 190 python3 bench/gpu_profile_step.py --model $M --steps 8 --variants "xtuner+4bit+gc@4;bf16-frozen@4;xtflow@4,8;xtflow+4bit+gc@4,8;xtflow+4bit@1,2,4" 2>&1 | grep -v Warning > "$OUT/grid.log" || true
    grep -E "^(xtuner|bf16|xtflow)" "$OUT/grid.log" || tail -20 "$OUT/grid.log"
    CUDA_VISIBLE_DEVICES=0 $P 75 python3 bench/gpu_profile_step.py --model $M --generate --variants "xtflow+4bit+gc;xtflow" 2>&1 | grep -v Warning > "$OUT/generate.log" || true
    grep -E "^xtflow" "$OUT/generate.log" || tail -20 "$OUT/generate.log"
    CUDA_VISIBLE_DEVICES=0 $P ${COMPILE_S:-150} python3 bench/gpu_profile_step.py --model $M --batch 4 --steps 8 --variants "xtflow+compile;xtflow+4bit+gc+compile" 2>&1 | grep -v Warning > "$OUT/compile.log" || true
    grep -E "^xtflow" "$OUT/compile.log" || tail -20 "$OUT/compile.log"
    ;;
  workflow)
    # the GPU recipe through results/final_model with real Snakemake, as README documents it, on a model of
    # InternLM2-1.8B's shape (random weights, the tiny tokenizer). Needs .gpu/snakemake-wheels.tar too
    # (Snakemake and the packages it needs beyond .gpu/site.tar.xz: bash bench/gpu_wheels.sh).
    ensure_snakemake
    M=/tmp/xtflow-bench/model W=/tmp/xtflow-wf
    ensure_model $M
    recipe_dir $W "base_model: {path: $M}" "merge: {device: cuda}"
    SECONDS=0
    CUDA_VISIBLE_DEVICES=0 recipe_snakemake $W ${WORKFLOW_S:-420} results/final_model > "$OUT/workflow.log" 2>&1 || true
    echo "snakemake wall $SECONDS s" >> "$OUT/workflow.log"
    tail -25 "$OUT/workflow.log"
    mkdir -p "$OUT/wf" && cp -r $W/logs $W/benchmarks "$OUT/wf/" 2>/dev/null || true
    ls -la $W/results/final_model 2>&1 | tee "$OUT/final_model.txt"
    for f in $W/benchmarks/*.tsv; do echo "$(basename $f .tsv): $(sed -n 2p $f | cut -f1) s"; done 2>&1 | tee "$OUT/rule_seconds.txt" || true
    # a second dry run must find nothing to do
    recipe_snakemake $W 120 results/final_model -n 2>&1 | tail -3 | tee "$OUT/rerun.txt" || true
    ;;
  compile-ab)
    # the GPU recipe's train rule on the default dataset (unpacked) with xtuner.compile false, then true
    # (recompiles logged); then the first samples of a compiled bf16 LoRA model in xtflow's sampling context
    ensure_snakemake
    M=/tmp/xtflow-bench/model
    ensure_model $M
    for c in false true; do
      W=/tmp/xtflow-wf-$c
      recipe_dir $W "base_model: {path: $M}" "xtuner: {compile: $c}"
      CUDA_VISIBLE_DEVICES=0 TORCH_LOGS=recompiles recipe_snakemake $W ${TRAIN_S:-220} results/train/final_checkpoint.pth > "$OUT/snakemake-compile-$c.log" 2>&1 || true
      cp $W/logs/train.log "$OUT/train-compile-$c.log" || true
      echo "compile $c: train rule $(sed -n 2p $W/benchmarks/train.tsv 2>/dev/null | cut -f1) s, $(grep -c 'Recompiling function' $W/logs/train.log || true) recompiles"
      grep -E "Iter\(train\)|xtflow: (torch|Eval)" $W/logs/train.log | cut -c1-150 || tail -5 "$OUT/snakemake-compile-$c.log"
    done
    CUDA_VISIBLE_DEVICES=0 timeout --signal=INT ${GENERATE_S:-100} python3 bench/gpu_profile_step.py --model $M --generate --profile --variants "xtflow+compile" 2>&1 | grep -v Warning > "$OUT/generate.log" || true
    grep -E "^xtflow" "$OUT/generate.log" || tail -20 "$OUT/generate.log"
    ;;
  tests)
    CUDA_VISIBLE_DEVICES=0 timeout ${TESTS_S:-400} python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/pytest-gpu.log"
    ;;
  tests+sample)
    # the GPU tests, then what the first EvaluateChatHook sample of a process costs (profiled)
    CUDA_VISIBLE_DEVICES=0 timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/pytest-gpu.log" || true
    M=/tmp/xtflow-bench/model
    ensure_model $M
    CUDA_VISIBLE_DEVICES=0 timeout --signal=INT 120 python3 bench/gpu_profile_step.py --model $M --generate --profile --variants "xtuner+4bit+gc+compile" 2>&1 | grep -v Warning > "$OUT/generate.log" || true
    grep -E "^xtuner" "$OUT/generate.log" || tail -20 "$OUT/generate.log"
    ;;
  multi2)
    timeout 300 python3 bench/gpu_train_bench.py --out "$OUT/bench2" --variants qlora --gpus 2 --deepspeed deepspeed_zero2 --adapter 2>&1 | tail -n 300 > "$OUT/bench2.log" || true
    grep -E "^(model|dataset|qlora) " "$OUT/bench2.log" || tail -40 "$OUT/bench2.log"
    ;;
  multi)
    timeout 270 python3 bench/gpu_train_bench.py --out "$OUT/bench2" --variants qlora --gpus 2 --deepspeed deepspeed_zero2 --adapter 2>&1 | tail -n 300 > "$OUT/bench2.log" || true
    grep -E "^(model|dataset|qlora) " "$OUT/bench2.log" || tail -40 "$OUT/bench2.log"
    CUDA_VISIBLE_DEVICES=0 timeout 200 python3 bench/gpu_train_bench.py --out "$OUT/bench3" --variants qlora --gpus 1 --deepspeed deepspeed_zero2 --adapter 2>&1 | tail -n 300 > "$OUT/bench3.log" || true
    grep -E "^(qlora) " "$OUT/bench3.log" || tail -40 "$OUT/bench3.log"
    ;;
esac
