"""Every XTuner 0.2.0 quirk xtflow works around, in one place.

1. The `xtuner` console command runs each tool in a subprocess and always exits 0,
   even when the tool raised. xtflow never calls it: it runs the tool modules
   (`python -m xtuner.tools.train`, ...) directly, whose exit status is honest.
2. On a machine without CUDA, XTuner asks `torch.cpu.is_bf16_supported()`, which
   torch does not have (`AttributeError` in `_prepare_for_flash_attn`). The shim
   below adds it, returning False. It runs before any tool (see `main`), and the
   same text is written into CPU configs so that they also run by hand.
3. mmengine's `AmpOptimWrapper` needs a GPU; CPU configs use `OptimWrapper`
   (handled in `xtflow.xtuner_config`).
4. `load_in_4bit` needs CUDA with transformers 4.48.0 + bitsandbytes 0.50.2
   (refused up front by `xtflow.settings`).
5. Resuming calls `torch.load` on mmengine checkpoints without `weights_only=False`,
   which torch >= 2.6 refuses (`Weights only load failed`). The checkpoints are the
   run's own files, so tools run with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (see `main`).

And what the train tool changes for speed, without changing what is learned
(docs/benchmarks.md, issue 7): `prepare_lora_keeping_dtype`, `skip_lora_input_cast`,
`compile_decoder_layers` (config `xtuner.compile`), `bound_chat_sampling` (bounded,
batched samples; config `xtuner.evaluation_before_train`).

Usage as a module: `python -m xtflow.xtuner_compat TOOL ARGS...`, where TOOL is a
key of `TOOLS` (train, pth_to_hf, merge, chat).
"""

from __future__ import annotations

import ast
import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError

TOOLS: dict[str, str] = {
    "train": "xtuner.tools.train",
    "pth_to_hf": "xtuner.tools.model_converters.pth_to_hf",
    "merge": "xtuner.tools.model_converters.merge",
    "chat": "xtuner.tools.chat",
}

CPU_SHIM = '''\
# xtflow CPU shim: XTuner 0.2.0 calls torch.cpu.is_bf16_supported(), which torch lacks.
# (__import__, not `import`: mmengine turns a config's import statements into lazy objects.)
if not hasattr(__import__("torch").cpu, "is_bf16_supported"):
    __import__("torch").cpu.is_bf16_supported = lambda: False
'''


def apply_cpu_shim() -> None:
    """Give `torch.cpu` the `is_bf16_supported` XTuner expects (a no-op where it exists)."""
    exec(compile(CPU_SHIM, "<xtflow cpu shim>", "exec"), {})


def tool_command(tool: str, args: Sequence[str], gpus: int = 1) -> list[str]:
    """The command line that runs an XTuner tool through this module (shim applied).

    With gpus > 1 it is started by torchrun on one node, as XTuner's own launcher
    does for NPROC_PER_NODE, with `--launcher pytorch`.
    """
    if tool not in TOOLS:
        raise XtflowError(f"unknown XTuner tool '{tool}' (known: {', '.join(TOOLS)})")
    if gpus > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"]
        return [*launcher, "-m", "xtflow.xtuner_compat", tool, *args, "--launcher", "pytorch"]
    return [sys.executable, "-m", "xtflow.xtuner_compat", tool, *args]


def run_tool(tool: str, args: Sequence[str], log: Path, gpus: int = 1, env: dict[str, str] | None = None) -> None:
    """Run an XTuner tool, appending its output to `log`; raise with its last words if it fails.

    A SIGTERM or SIGINT to this process (Snakemake stopping, SLURM's wall-time kill) is passed
    on to the tool, which is waited for, so no orphaned training keeps writing checkpoints.
    """
    cmd = tool_command(tool, args, gpus)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                preexec_fn=_default_stop_signals)
        with _forward_signals(proc) as received:
            returncode = proc.wait()
    if received:
        raise SystemExit(128 + received[0])
    if returncode != 0:
        raise XtflowError(f"XTuner {tool} failed (exit {returncode}): {last_error_line(log)} (full log: {log})")


def _default_stop_signals() -> None:
    """In the tool's process, before exec: SIGINT and SIGTERM act by default. A job started in the
    background of a non-interactive shell inherits SIGINT as ignored; this process forwards the
    signal, so the tool must not ignore it (else training would run on after the job was stopped)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _forward_signals(proc: subprocess.Popen) -> Iterator[list[int]]:
    """Pass SIGTERM/SIGINT on to `proc` (a second one kills it); yield the signals received."""
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            proc.send_signal(signum)
        else:
            proc.kill()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def last_error_line(log: Path) -> str:
    """The most telling line of a failed tool's log: the last exception line, else the last line."""
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) or head in {"KeyboardInterrupt", "SystemExit"}:
            return line
    return lines[-1] if lines else "no output"


def prepare_lora_keeping_dtype(model: Any, use_gradient_checkpointing: bool = True,
                               gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> Any:
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


def fast_lora_preparation(compile_layers: bool = False) -> None:
    """Patch XTuner's LoRA set-up for training: `prepare_lora_keeping_dtype`, `skip_lora_input_cast`,
    and with `compile_layers` (config key `xtuner.compile`) `compile_decoder_layers`."""
    import xtuner.model.sft as sft
    from mmengine.logging import print_log

    sft.prepare_model_for_kbit_training = prepare_lora_keeping_dtype
    original = sft.SupervisedFinetune._prepare_for_lora

    def prepare(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if half_precision(self.llm):
            skip_lora_input_cast(self.llm)
        if compile_layers:
            print_log(f"xtflow: torch.compile of {compile_decoder_layers(self.llm)} decoder layers", "current")

    sft.SupervisedFinetune._prepare_for_lora = prepare


def xtflow_options(config: Path) -> dict[str, Any]:
    """The `xtflow_*` settings xtflow writes into an XTuner config (top-level literal assignments)."""
    tree = ast.parse(config.read_text(encoding="utf-8"))
    options = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("xtflow_")):
            options[node.targets[0].id] = ast.literal_eval(node.value)
    return options


def single_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int] | None:
    """The token ids of stop words that are each one token; None if any is not."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            return None
        ids.append(encoded[0])
    return ids


def batched_eval_language(self: Any, runner: Any, model: Any, device: Any, max_new_tokens: int | None = None,
                          save_eval_output: bool = False) -> None:
    """EvaluateChatHook's text sampling with every prompt in one left-padded `generate` call.

    XTuner generates one prompt at a time; a decode step costs about as much for a few prompts
    as for one (it is bound by kernel launches), so this divides the sampling time by the number
    of prompts. Stop words must be single tokens (they become end-of-sequence ids, which stop each
    sequence on its own); otherwise XTuner's per-prompt loop runs. Logs and saves what XTuner does.
    """
    import torch

    words = [c.stop_word for c in self.stop_criteria]
    stops = single_token_ids(self.tokenizer, words)
    if stops is None or len(self.evaluation_inputs) < 2:
        return _xtuner_eval_language()(self, runner, model, device, max_new_tokens, save_eval_output)
    prompts = [tuple(self.tokenizer.encode((self.system + self.instruction).format(input=text, round=1, **runner.cfg)))
               for text in self.evaluation_inputs]
    pad, eos = self.gen_config.pad_token_id, self.gen_config.eos_token_id
    ends = ([] if eos is None else [eos] if isinstance(eos, int) else list(eos)) + stops
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         generation_config=self.gen_config, eos_token_id=ends)
    texts = []
    for prompt, row in zip(prompts, out[:, width:].tolist()):
        reply = next((row[: i + 1] for i, t in enumerate(row) if t in ends), row)
        texts.append(self.tokenizer.decode(list(prompt) + reply))
        runner.logger.info(f"Sample output:\n{texts[-1]}\n")
    if save_eval_output:
        self._save_eval_output(runner, [f"{t}\n" for t in texts])


def _xtuner_eval_language() -> Any:
    """XTuner's own `EvaluateChatHook._eval_language`, also after `bound_chat_sampling` replaced it."""
    from xtuner.engine.hooks import EvaluateChatHook

    return EvaluateChatHook.__dict__.get("_xtflow_xtuner_eval_language", EvaluateChatHook._eval_language)


def bound_chat_sampling(sample_before_train: bool = True) -> None:
    """Keep XTuner's EvaluateChatHook to the bound the config sets, batch it, and time it.

    XTuner 0.2.0 ignores the hook's `max_new_tokens` before training (it samples 50 tokens there),
    and samples twice at the end: at the last iteration's checkpoint and again after training,
    from the same weights. Here the first sample keeps to the configured bound where that is below
    50 tokens, the repeated end sample is skipped, and the prompts are sampled in one batch
    (`batched_eval_language`), eagerly where the model's layers are compiled (generation's changing
    shapes would recompile them). With `sample_before_train` False (config key
    `xtuner.evaluation_before_train`) there is no sample before training. One line in the train
    log per sample and a total at exit.
    """
    import atexit
    import time

    from xtuner.engine.hooks import EvaluateChatHook

    spent = {"seconds": 0.0, "calls": 0}
    original = EvaluateChatHook._generate_samples
    EvaluateChatHook._xtflow_xtuner_eval_language = _xtuner_eval_language()

    def timed(self: Any, runner: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            with sampling_context(runner.model):
                return original(self, runner, *args, **kwargs)
        finally:
            took = time.perf_counter() - start
            spent["seconds"] += took
            spent["calls"] += 1
            self._xtflow_sampled_after = runner.iter
            runner.logger.info(f"xtflow: EvaluateChatHook sample at iteration {runner.iter} took {took:.2f} s")

    def before_train(self: Any, runner: Any) -> None:
        if not sample_before_train:
            runner.logger.info("xtflow: no EvaluateChatHook sample before training (xtuner.evaluation_before_train: false)")
            return
        # XTuner's 50 tokens here, or the configured bound where that is smaller
        self._generate_samples(runner, max_new_tokens=min(50, self.max_new_tokens))

    def after_train(self: Any, runner: Any) -> None:
        # after_train_iter saw runner.iter == last index; after training runner.iter is one more
        if getattr(self, "_xtflow_sampled_after", None) == runner.iter - 1:
            runner.logger.info("xtflow: EvaluateChatHook already sampled these weights at the last iteration")
            return
        self._generate_samples(runner)

    EvaluateChatHook._generate_samples = timed
    EvaluateChatHook._eval_language = batched_eval_language
    EvaluateChatHook.before_train = before_train
    EvaluateChatHook.after_train = after_train
    atexit.register(lambda: print(f"xtflow: EvaluateChatHook sampling took {spent['seconds']:.2f} s in "
                                  f"{spent['calls']} calls", flush=True))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOOLS:
        sys.exit(f"usage: python -m xtflow.xtuner_compat {{{','.join(TOOLS)}}} ARGS...")
    tool, rest = argv[0], argv[1:]
    apply_cpu_shim()
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    if tool == "train":
        options = xtflow_options(Path(rest[0])) if rest and rest[0].endswith(".py") else {}
        bound_chat_sampling(options.get("xtflow_evaluation_before_train", True))
        fast_lora_preparation(options.get("xtflow_compile", False))
    sys.argv = [TOOLS[tool], *rest]
    runpy.run_module(TOOLS[tool], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
