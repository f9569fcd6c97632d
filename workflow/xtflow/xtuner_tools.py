"""Run XTuner's tools as subprocesses whose exit status can be trusted, around XTuner 0.2.0's quirks.

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

What xtflow changes in training itself is not here: the written config names those components
(`xtflow.xtuner_plugins`), so the config trains the same when run by hand.

Usage as a module: `python -m xtflow.xtuner_tools TOOL ARGS...`, where TOOL is a
key of `TOOLS` (train, pth_to_hf, chat). (xtflow merges by itself: `xtflow.export.merge_adapter`.)
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from xtflow.errors import XtflowError
from xtflow.progress import ProgressLine, following

TOOLS: dict[str, str] = {
    "train": "xtuner.tools.train",
    "pth_to_hf": "xtuner.tools.model_converters.pth_to_hf",
    "chat": "xtuner.tools.chat",
}

CPU_SHIM = """\
# xtflow CPU shim: XTuner 0.2.0 calls torch.cpu.is_bf16_supported(), which torch lacks.
# (__import__, not `import`: mmengine turns a config's import statements into lazy objects.)
if not hasattr(__import__("torch").cpu, "is_bf16_supported"):
    __import__("torch").cpu.is_bf16_supported = lambda: False
"""


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
        return [*launcher, "-m", "xtflow.xtuner_tools", tool, *args, "--launcher", "pytorch"]
    return [sys.executable, "-m", "xtflow.xtuner_tools", tool, *args]


def run_tool(
    tool: str,
    args: Sequence[str],
    log: Path,
    gpus: int = 1,
    env: dict[str, str] | None = None,
    progress: Callable[[str], str | None] | None = None,
    keep_fds: Sequence[int] = (),
) -> None:
    """Run an XTuner tool, appending its output to `log`; raise with its last words if it fails.

    A SIGTERM or SIGINT to this process (Snakemake stopping, SLURM's wall-time kill) is passed
    on to the tool, which is waited for, so no orphaned training keeps writing checkpoints.
    With `progress` (a parser of the tool's log lines, e.g. `progress.mmengine_iteration`), the
    terminal gets one live line of what it says (xtflow.progress). `keep_fds` stay open in the tool
    (a lock it must hold for as long as it runs).
    """
    cmd = tool_command(tool, args, gpus)
    log.parent.mkdir(parents=True, exist_ok=True)
    live = following(log, progress, ProgressLine(tool)) if progress else nullcontext()
    with open(log, "a", encoding="utf-8") as fh, live:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_default_stop_signals,
            pass_fds=tuple(keep_fds),
        )
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


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOOLS:
        sys.exit(f"usage: python -m xtflow.xtuner_tools {{{','.join(TOOLS)}}} ARGS...")
    tool, rest = argv[0], argv[1:]
    apply_cpu_shim()
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sys.argv = [TOOLS[tool], *rest]
    runpy.run_module(TOOLS[tool], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
