"""Run XTuner training and publish a stable handle to its final checkpoint.

The work directory (results/train/work_dir) is not a declared Snakemake output, so
Snakemake never deletes checkpoints (an interrupted training resumes from them); the
declared output is the handle
`results/train/final_checkpoint.pth`: hard links to the newest `iter_N.pth` (a file,
or a directory with DeepSpeed), so later stages never guess `iter_N` names.

A fingerprint of the inputs is kept with the checkpoints: a training of the same inputs
resumes, a finished one is reused (no retraining), and checkpoints of other inputs are
never used. One training at a time writes to the work directory (a lock of xtflow's own).
Nothing in the work directory names another directory, so a copied or moved run trains on
its own files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError, warn
from xtflow.progress import mmengine_iteration
from xtflow.xtuner_tools import run_tool


@dataclass(frozen=True)
class TrainPlan:
    """How many iterations a training will run, as mmengine will count them."""

    records: int
    samples: int
    packed: bool
    iters_per_epoch: int
    max_epochs: int
    warmup_iters: int
    max_length: int = 0
    lengths: tuple[int, ...] = ()  # tokens of each record as XTuner encodes it, before the cut at max_length
    lr: float = 0.0
    # a generated identity answer that ends past max_length (XTuner would cut it), with the tokens it ends at
    identity_cut: tuple[str, int] | None = None

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.max_epochs

    @property
    def cut_records(self) -> int:
        """Records longer than max_length: XTuner cuts them there (the end of the answer is never learned)."""
        return sum(n > self.max_length for n in self.lengths)

    @property
    def cut_tokens(self) -> int:
        return sum(max(0, n - self.max_length) for n in self.lengths)


def load_xtuner_config(config: Path):  # -> mmengine.Config
    from xtflow.xtuner_tools import apply_cpu_shim

    apply_cpu_shim()
    from mmengine.config import Config

    return Config.fromfile(str(config))


def conversation_length(cfg) -> Callable[[list[dict]], int]:
    """Tokens of a list of turns as XTuner's `encode_fn` makes them (prompt template, BOS/EOS, every turn),
    before it cuts them at `max_length`. The first k turns encode as the first tokens of the whole."""
    from xtuner.dataset.utils import encode_fn
    from xtuner.registry import BUILDER

    ds = cfg.train_dataloader.dataset
    tokenizer = BUILDER.build(ds.tokenizer)
    template_map_fn = BUILDER.build(ds.template_map_fn) if ds.get("template_map_fn") else None

    def length(turns: list[dict]) -> int:
        example = {"conversation": [dict(turn) for turn in turns]}
        if template_map_fn is not None:
            example = {**example, **template_map_fn(example)}
        return len(encode_fn(example, tokenizer, max_length=math.inf)["input_ids"])

    return length


def record_turns(record: dict) -> list[dict]:
    """A record's turns in XTuner's conversation format: as given, or from LLaVA's format (`conversations`
    of human and gpt turns, `<image>` first in its turn), as XTuner's `llava_map_fn` makes them."""
    if "conversations" not in record:
        return record["conversation"]
    from xtuner.dataset.map_fns import llava_map_fn

    return llava_map_fn(json.loads(json.dumps(record)))["conversation"]  # (it edits the turns it is given)


def record_lengths(cfg, records: list[dict]) -> list[int]:
    """Tokens of each record (`conversation_length`; a LLaVA record's image counts one, its features come on
    top). Identical records are encoded once."""
    length = conversation_length(cfg)
    by_text: dict[str, int] = {}
    for record in records:
        key = json.dumps(record, sort_keys=True, ensure_ascii=False)
        if key not in by_text:
            by_text[key] = length(record_turns(record))
    return [by_text[json.dumps(record, sort_keys=True, ensure_ascii=False)] for record in records]


def identity_cut(
    cfg, records: list[dict], lengths: Sequence[int], identity_answers: Sequence[str]
) -> tuple[str, int] | None:
    """The first identity answer XTuner would cut (it ends past max_length, in any turn of a record that is
    too long), with the tokens up to its end; None if every one fits."""
    length = conversation_length(cfg)
    for record, n in zip(records, lengths):
        if n <= cfg.max_length:
            continue
        turns = record_turns(record)
        for k, turn in enumerate(turns):
            if turn["output"] in identity_answers:
                end = length(turns[: k + 1])
                if end > cfg.max_length:
                    return turn["output"], end
    return None


def plan_training(config: Path, gpus: int, identity_answers: Sequence[str] = ()) -> TrainPlan:
    """Build the training set exactly as XTuner will (packing included) and count iterations,
    the records XTuner will cut at max_length, and whether it cuts one of `identity_answers`."""
    cfg = load_xtuner_config(config)
    from xtuner.registry import BUILDER

    try:
        samples = len(BUILDER.build(cfg.train_dataloader.dataset))
    except ValueError as e:
        if "Column 'length' doesn't exist" in str(e):  # XTuner's way of saying: nothing left after filtering
            samples = 0
        else:
            raise XtflowError(f"XTuner could not build the training set from {cfg.data_path}: {e}") from None
    per_step = cfg.train_dataloader.batch_size * gpus
    iters = math.ceil(samples / per_step)
    max_epochs = int(cfg.train_cfg.max_epochs)
    # mmengine converts the epoch-based warmup `end` with int(end * epoch_length).
    warmup = int(cfg.warmup_ratio * max_epochs * iters) if "warmup_ratio" in cfg else 0
    records = json.loads(Path(cfg.data_path).read_text(encoding="utf-8"))
    packed = bool(cfg.train_dataloader.dataset.get("pack_to_max_length", False))
    lengths = tuple(record_lengths(cfg, records))
    cut = identity_cut(cfg, records, lengths, identity_answers)
    return TrainPlan(
        len(records), samples, packed, iters, max_epochs, warmup, int(cfg.max_length), lengths, float(cfg.lr), cut
    )


def check_identity_fits(plan: TrainPlan) -> None:
    """Refuse when XTuner would cut a generated identity answer at max_length: the model would never
    learn it whole."""
    if plan.identity_cut is not None:
        answer, end = plan.identity_cut
        shown = answer if len(answer) <= 40 else answer[:37] + "..."
        raise XtflowError(
            f"config key 'xtuner.max_length': {plan.max_length} tokens cannot hold the identity answer "
            f"{shown!r} (it ends at token {end}, with the turns before it and the prompt template): "
            "raise xtuner.max_length or shorten assistant.name, assistant.maker or dataset.answer"
        )


def check_plan(plan: TrainPlan, warmup_ratio: float, section: str = "xtuner") -> None:
    """Refuse a training XTuner would crash on or silently ruin (the tiny-dataset warmup trap).
    `section` is where the config keys live (`xtuner`, or `llava` for the LLaVA stages)."""
    if plan.samples == 0:
        raise XtflowError(
            "training set: 0 samples left after XTuner's processing: every record's prompt fills "
            f"{section}.max_length, leaving no answer tokens to learn (raise max_length or shorten the records)"
        )
    if warmup_ratio > 0 and plan.warmup_iters < 2:
        need = 2 / (plan.max_epochs * plan.iters_per_epoch)
        raise XtflowError(
            f"config key '{section}.warmup_ratio': {warmup_ratio} x {plan.max_epochs} epoch(s) x "
            f"{plan.iters_per_epoch} iterations/epoch ({plan.samples} samples) gives {plan.warmup_iters} warmup "
            f"iteration(s); XTuner needs at least 2 (with 0 it crashes, with 1 the learning rate stays near 0). "
            f"Set warmup_ratio >= {math.ceil(need * 1000) / 1000} or 0, or add data"
        )


def last_checkpoint(work_dir: Path) -> Path:
    """The checkpoint mmengine recorded as newest in `work_dir/last_checkpoint`, inside `work_dir`.

    mmengine writes its absolute path there; in a copied or moved run that path names the
    original's file, so only its name is taken."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        raise XtflowError(f"{work_dir}: training finished without a checkpoint (no last_checkpoint file)")
    ckpt = work_dir / Path(marker.read_text(encoding="utf-8").strip()).name
    if not ckpt.exists():
        raise XtflowError(f"{marker}: names {ckpt}, which does not exist")
    return ckpt


def publish_checkpoint(ckpt: Path, handle: Path) -> None:
    """Make `handle` a hard-linked copy of `ckpt` (file or directory), atomically."""
    tmp = handle.with_name(f".{handle.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if ckpt.is_dir():
        shutil.copytree(ckpt, tmp, copy_function=link)
    else:
        link(str(ckpt), str(tmp))
    if handle.is_dir() and not handle.is_symlink():
        shutil.rmtree(handle)
    os.replace(tmp, handle)
    os.utime(handle)  # newer than the inputs, also when a finished training is reused


FINGERPRINT = "xtflow_fingerprint.json"
FINISHED = "xtflow_finished"  # written when a training of the fingerprinted inputs ran to its end
ITER = re.compile(r"^iter_(\d+)\.pth$")


TRAINING_PACKAGES = ("xtuner", "mmengine", "torch", "transformers", "peft", "bitsandbytes", "deepspeed")


def training_software() -> dict[str, str]:
    """What trains besides the config: the packages' versions and xtflow's training components (the
    written config imports xtflow.xtuner_plugins)."""
    from importlib import metadata

    versions = {}
    for name in TRAINING_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    plugins = Path(__file__).with_name("xtuner_plugins.py").read_bytes()
    return {**versions, "xtflow.xtuner_plugins": hashlib.sha256(plugins).hexdigest()}


def fingerprint(
    config: Path, data: Path, model: Path, deepspeed: str | None, gpus: int, extra: Sequence[Path] = ()
) -> str:
    """What a checkpoint depends on: config text, dataset bytes, the base model's files (sizes and times
    of change: weights replaced in place count; their contents are not read, they can be gigabytes; JSON
    files by content), launch shape, the training software, and `extra` inputs (a LLaVA stage's visual
    encoder, images and starting projector: files by content, directories as the model's). Paths are not
    part of it: a copied or moved run keeps its fingerprint."""
    h = hashlib.sha256()
    for path in (config, data):
        h.update(path.read_bytes())
    _digest_dir(h, model)
    h.update(json.dumps({"deepspeed": deepspeed, "gpus": gpus, "software": training_software()}).encode())
    for path in extra:
        h.update(f"\0{path.name}\0".encode())
        if path.is_dir():
            _digest_dir(h, path)
        else:
            h.update(path.read_bytes())
    return h.hexdigest()


def _digest_dir(h: Any, root: Path, prefix: str = "") -> None:
    """Name, size and time of change of each file below `root` (links followed), the bytes of its JSON files."""
    for entry in sorted(root.iterdir()):
        target = entry.resolve()
        if target.is_file():
            stat = target.stat()
            h.update(f"{prefix}{entry.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            if entry.suffix == ".json":
                h.update(target.read_bytes())
        else:
            h.update(f"{prefix}{entry.name}:dir".encode())
            _digest_dir(h, target, f"{prefix}{entry.name}/")


def iteration_of(ckpt: Path) -> int:
    match = ITER.match(ckpt.name)
    if not match:
        raise XtflowError(f"{ckpt}: not an XTuner checkpoint name (iter_N.pth)")
    return int(match.group(1))


def check_checkpoint(ckpt: Path) -> None:
    """Open a checkpoint (a file, or a DeepSpeed directory) cheaply; name it if it is damaged."""
    import torch

    files = sorted(p for p in ckpt.rglob("*") if p.is_file()) if ckpt.is_dir() else [ckpt]
    if not files:
        raise XtflowError(f"checkpoint {ckpt} is empty; delete it to resume from an earlier one or start fresh")
    for f in files:
        if f.suffix not in (".pth", ".pt"):
            continue
        try:
            torch.load(f, map_location="cpu", mmap=True, weights_only=False)
        except Exception as e:  # torch raises many kinds on a damaged file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise XtflowError(
                f"checkpoint {f} is damaged ({reason}); delete it to resume from an earlier one, "
                "or delete the work dir to start fresh"
            ) from None


@dataclass(frozen=True)
class Start:
    """How a training starts: from nothing, resumed from a checkpoint, or not at all (finished)."""

    resume_from: Path | None = None  # the newest checkpoint of an interrupted training of these inputs
    finished: Path | None = None  # the final checkpoint of a finished training of these inputs


def _generation(work_dir: Path, fp: str) -> tuple[bool, Path | None]:
    """(made for these inputs?, newest checkpoint or None) of a work directory."""
    marker = work_dir / FINGERPRINT
    same = marker.is_file() and marker.read_text(encoding="utf-8").strip() == fp
    newest = last_checkpoint(work_dir) if (work_dir / "last_checkpoint").is_file() else None
    return same, newest


def prepare_work_dir(work_dir: Path, fp: str, plan: TrainPlan, say: Callable[[str], None]) -> Start:
    """Decide between reusing, resuming and starting fresh.

    Only checkpoints made for exactly this config, data and base model are used: a finished
    training of them is reused as it is, an interrupted one resumes from its newest checkpoint.
    The previous generation (`<work_dir>.stale`) is swapped back in when it was made for these
    inputs (a change that was reverted). Checkpoints of other inputs are moved aside to
    `<work_dir>.stale` (one generation kept), never resumed.
    """
    stale = work_dir.with_name(work_dir.name + ".stale")
    same, newest = _generation(work_dir, fp) if work_dir.exists() else (False, None)
    if not same and stale.is_dir() and _generation(stale, fp)[0]:
        aside = work_dir.with_name(work_dir.name + ".swap")
        if aside.exists():
            shutil.rmtree(aside)
        if work_dir.exists():
            work_dir.rename(aside)
        stale.rename(work_dir)
        if aside.exists():
            aside.rename(stale)
        say(f"xtflow: {stale} was made from these same inputs (a change was reverted): swapped it back in")
        same, newest = _generation(work_dir, fp)
    if same and newest is not None:
        finished = (work_dir / FINISHED).is_file() or iteration_of(newest) >= plan.total_iters
        check_checkpoint(newest)
        if finished:
            say(
                f"xtflow: reusing the finished training in {work_dir} ({newest.name}): config, data and "
                "base model unchanged, nothing to retrain"
            )
            return Start(finished=newest)
        say(
            f"xtflow: resuming from {newest} (iteration {iteration_of(newest)} of {plan.total_iters}); "
            "config, data and base model unchanged"
        )
        return Start(resume_from=newest)
    if work_dir.exists():
        if stale.exists():
            shutil.rmtree(stale)
        if newest is not None or any(work_dir.glob("iter_*.pth")):
            say(
                f"xtflow: not resuming: the checkpoints in {work_dir} were made with another config, dataset "
                f"or base model; moved them to {stale}"
            )
            work_dir.rename(stale)
        else:
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    (work_dir / FINGERPRINT).write_text(fp + "\n", encoding="utf-8")
    return Start()


@contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[int]:
    """Hold xtflow's lock on `work_dir` (an flock on `.<name>.lock` beside it); yield its descriptor.

    The kernel releases it when every process holding the descriptor has ended, crashed or been
    killed, so it is never stale. Pass the descriptor on to the training process, so a training
    that outlives this process still holds it. A second trainer is refused, whatever Snakemake's
    own lock says (it can be removed with `--unlock` while a run is live)."""
    lock = work_dir.with_name(f".{work_dir.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise XtflowError(
                f"{work_dir} is in use by another training (started by process {holder}): a second run "
                "must not train into it; wait for that training to end or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)


NON_FINITE = re.compile(r"NonFiniteLossError: (.+)$", re.M)


def training_failure(log: Path, plan: TrainPlan, failure: XtflowError, lr_key: str = "xtuner.lr") -> XtflowError:
    """The one line for a failed XTuner training: the learning rate named where it is the cause
    (a nan/inf loss, stopped by xtflow.xtuner_plugins.StopAtNonFiniteLoss; an optimizer step that
    overflows 32-bit floats before any loss is seen), else `failure` (XTuner's own last error)."""
    from xtflow.xtuner_tools import last_error_line

    stopped = NON_FINITE.findall(log.read_text(encoding="utf-8", errors="replace"))
    if stopped:
        return XtflowError(stopped[-1].strip())
    last = last_error_line(log)
    if "without overflow" in last or last.startswith("OverflowError"):
        return XtflowError(
            f"config key '{lr_key}': {plan.lr}: the optimizer's first step overflowed ({last}); "
            f"training stopped there. Lower {lr_key}"
        )
    return failure


def single_process_rank_env() -> dict[str, str]:
    """The environment torchrun gives a one-process distributed run (rank 0 of 1, a free local port).

    DeepSpeed on one GPU is one process started without a launcher; without RANK and WORLD_SIZE,
    `deepspeed.initialize` looks for them through MPI and fails with `No module named 'mpi4py'`.
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def train(
    config: Path,
    data: Path,
    model: Path,
    work_dir: Path,
    handle: Path,
    log: Path,
    deepspeed: str | None,
    gpus: int,
    warmup_ratio: float,
    log_interval: int = 10,
    identity_answers: Sequence[str] = (),
    extra_inputs: Sequence[Path] = (),
    section: str = "xtuner",
    lr_key: str = "xtuner.lr",
) -> None:
    """Take the work directory's lock, check the plan, train (resuming an interrupted training of the
    same inputs, reusing a finished one), publish the final checkpoint.

    `extra_inputs` are further inputs of the training (a LLaVA stage's visual encoder, images, projector),
    part of the fingerprint; `section` names the config section of max_length and warmup_ratio in
    messages, `lr_key` the learning rate's key."""
    with work_dir_lock(work_dir) as lock:  # first: a second trainer is refused at once
        plan = plan_training(config, gpus, identity_answers)
        check_plan(plan, warmup_ratio, section)
        check_identity_fits(plan)

        def say(line: str) -> None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

        say(
            f"xtflow: {plan.samples} samples, {plan.iters_per_epoch} iterations/epoch x {plan.max_epochs} "
            f"epoch(s) = {plan.total_iters} iterations, {plan.warmup_iters} warmup; {plan.cut_records} of "
            f"{plan.records} records longer than max_length {plan.max_length} ({plan.cut_tokens} tokens cut)"
        )
        if not plan.packed and plan.samples < plan.records:
            say(
                f"xtflow: warning: XTuner dropped {plan.records - plan.samples} of {plan.records} records whose "
                f"prompt fills {section}.max_length (no answer tokens left to learn)"
            )
        if plan.cut_records:
            warn(
                f"{plan.cut_records} of {plan.records} training records are longer than {section}.max_length "
                f"{plan.max_length}: XTuner cuts them there ({plan.cut_tokens} tokens never learned; the longest "
                f"record has {max(plan.lengths)})"
            )
        fp = fingerprint(config, data, model, deepspeed, gpus, extra_inputs)
        start = prepare_work_dir(work_dir, fp, plan, say)
        if start.finished is None:
            args = [str(config), "--work-dir", str(work_dir)]
            if start.resume_from is not None:
                args += ["--resume", str(start.resume_from)]
            if deepspeed:
                args += ["--deepspeed", deepspeed]
            # How the run reports, not what it learns: given here, not in the config file, so it reruns nothing.
            args += ["--cfg-options", f"default_hooks.logger.interval={log_interval}"]
            env = single_process_rank_env() if deepspeed and gpus == 1 else None
            try:
                run_tool("train", args, log, gpus=gpus, env=env, progress=mmengine_iteration, keep_fds=(lock,))
            except XtflowError as failure:
                raise training_failure(log, plan, failure, lr_key) from None
            (work_dir / FINISHED).write_text(last_checkpoint(work_dir).name + "\n", encoding="utf-8")
        # (With packing, XTuner shuffles before packing: its sample count can differ by one from the plan's.)
        publish_checkpoint(last_checkpoint(work_dir), handle)
