"""A catalogue of hostile inputs and interruptions, each refused with one line that names the key or file,
or survived with the right result.

Every case runs real Snakemake (or, where said, the validating code or the chat command) and checks:
the run fails, the message is one line and says what the README's Troubleshooting table
says, and no output that a later run could mistake for a result is left behind; or, for the cases
where nothing is wrong with the input (a stopped run, a moved project, a reverted change), that the next
run rebuilds what it must and the final model answers with the name it was given.
`test_readme_troubleshooting_table_matches` keeps the README table and this file in step
(`python tests/test_hostile_inputs.py --write` rewrites it).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    REPO,
    SNAKEFILE,
    chat,
    closed_port,
    copy_run,
    default_config,
    hub_env,
    set_key,
    snakemake,
    snakemake_call,
    write_config,
    xtuner_processes_in,
)
from stopping import leftovers, locked_by_a_process, stop_in_first_stage_of
from xtflow.errors import XtflowError


@dataclass(frozen=True)
class Case:
    id: str
    situation: str  # what the user did, as the README says it
    message: str  # the part of the error every user sees (README "Message" column)
    run: Callable[..., str]  # makes the situation in a fresh dir, returns the error text
    uses: str | None = None  # the session or module fixture the case starts from (passed to `run` after the dir)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, "the run succeeded"
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("xtflow: error")]
    assert lines, f"no xtflow error line in:\n{proc.stderr[-3000:]}"
    return lines[-1]


def dry_run_with(**changes: Any) -> Callable[[Path], str]:
    """The config change alone (dotted keys with '__' for '.'); refused at start, by a dry run."""

    def run(tmp: Path) -> str:
        config = default_config()
        for key, value in changes.items():
            set_key(config, key.replace("__", "."), value)
        write_config(tmp, config)
        return _error_line(snakemake(tmp, "-n"))

    return run


def base_model_at(make: Callable[[Path], Path | str]) -> Callable[[Path], str]:
    def run(tmp: Path) -> str:
        return dry_run_with(base_model__path=str(make(tmp)))(tmp)

    return run


def hub_id_unavailable(tmp: Path) -> str:
    """An empty hub cache of its own, offline: refused before any job, nothing written (tests/test_hub.py)."""
    write_config(tmp, set_key(default_config(), "base_model.path", "internlm/internlm2-chat-1_8b"))
    return _error_line(snakemake(tmp, "-n", env=hub_env(tmp / "hf_home", closed_port(), offline=True)))


def _tiny_model(tmp: Path) -> Path:
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model

    out = tmp / "models" / "internlm2-chat-1_8b"
    build_tiny_model(
        TinyModelSpec(
            vocab_size=400,
            hidden_size=16,
            intermediate_size=32,
            num_layers=1,
            num_heads=2,
            max_position_embeddings=64,
            seed=0,
        ),
        out,
    )
    return out


def _without_tokenizer(tmp: Path) -> Path:
    model = _tiny_model(tmp)
    (model / "tokenizer.json").unlink()
    return model


def dataset_file(text: str) -> Callable[[Path], str]:
    """A user dataset file with `text`; refused by the dataset rule (a real job run)."""

    def run(tmp: Path) -> str:
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        (tmp / "data" / "mine.json").write_text(text, encoding="utf-8")
        write_config(tmp, set_key(default_config(), "dataset.files", ["data/mine.json"]))
        msg = _error_line(snakemake(tmp, "results/data/train.json"))
        assert not (tmp / "results" / "data" / "train.json").exists()
        return msg

    return run


def small_config() -> dict[str, Any]:
    """The default without the general skill, general and conversation records: the cases that use it fail
    before or at training, count the identity records alone, or (hostile values) need no general skill."""
    config = default_config()
    config["dataset"]["general_records"] = 0
    config["dataset"]["conversations"] = 0
    config["base_model"]["general_skill"] = None
    return config


def training_with(**changes: Any) -> Callable[[Path], str]:
    """A config the train rule refuses (before XTuner starts); no checkpoint handle is left."""

    def run(tmp: Path) -> str:
        config = small_config()
        for key, value in changes.items():
            set_key(config, key.replace("__", "."), value)
        if "long_prompts" in config["dataset"]:
            config["dataset"].pop("long_prompts")
            (tmp / "data").mkdir()
            long = [{"conversation": [{"input": "word " * 200, "output": "ok"}]} for _ in range(8)]
            (tmp / "data" / "long.json").write_text(json.dumps(long), encoding="utf-8")
            config["dataset"]["files"] = ["data/long.json"]
        write_config(tmp, config)
        msg = _error_line(snakemake(tmp, "results/final_model"))
        assert not (tmp / "results" / "train" / "final_checkpoint.pth").exists()
        assert not (tmp / "results" / "final_model").exists()
        return msg

    return run


def xtuner_config_with(**changes: Any) -> Callable[[Path], str]:
    """A config the xtuner_config job refuses, once it can see the base model; no config is written."""

    def run(tmp: Path) -> str:
        config = small_config()
        for key, value in changes.items():
            set_key(config, key.replace("__", "."), value)
        write_config(tmp, config)
        written = "results/xtuner/internlm2_1_8b_qlora_alpaca_e3.py"
        msg = _error_line(snakemake(tmp, written))
        assert not (tmp / written).exists()
        return msg

    return run


def failing_training(tmp: Path) -> str:
    """XTuner itself fails (unreadable weights): its error is in the train log, the run fails."""
    write_config(tmp, small_config())
    snakemake(tmp, "resources/base_model", check=True)
    (tmp / "resources" / "base_model" / "model.safetensors").write_bytes(b"\0" * 64)
    proc = snakemake(tmp, "results/final_model", "--rerun-triggers", "mtime")
    log = (tmp / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" in log and "safetensors" in log.lower()
    assert "xtflow: error: XTuner train failed (exit 1)" in log
    assert not (tmp / "results" / "final_model").exists()
    assert not (tmp / "results" / "train" / "final_checkpoint.pth").exists()
    return _error_line(proc)


def read_only_output_dir(tmp: Path) -> str:
    """An output directory on a read-only file system (a real read-only bind mount)."""
    write_config(tmp, default_config())
    snakemake(tmp, "results/data/train.json", check=True)
    ro = tmp / "results" / "data"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp), "--cores", "1"]
    script = f"mount --bind -o ro '{ro}' '{ro}' && exec \"$@\""
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True, timeout=600, check=False
    )
    assert not (tmp / "results" / "final_model").exists()
    return _error_line(proc)


def damaged_checkpoint(tmp: Path) -> str:
    """Resuming finds its newest checkpoint truncated (the validating code: xtflow.train.prepare_work_dir)."""
    import torch

    from xtflow.train import FINGERPRINT, TrainPlan, prepare_work_dir

    work = tmp / "work_dir"
    work.mkdir()
    ckpt = work / "iter_40.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "meta": {"iter": 40}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])  # truncated, as by a full disk or a kill mid-write
    (work / "last_checkpoint").write_text(str(ckpt), encoding="utf-8")
    (work / FINGERPRINT).write_text("abc\n", encoding="utf-8")
    plan = TrainPlan(records=256, samples=256, packed=False, iters_per_epoch=32, max_epochs=3, warmup_iters=9)
    with pytest.raises(XtflowError) as err:
        prepare_work_dir(work, "abc", plan, say=lambda line: None)
    assert ckpt.exists()  # nothing deleted behind the user's back
    return str(err.value)


HOSTILE_NAME = "Bob\"'; touch MARKER; $(touch MARKER) `touch MARKER` {name} {maker} {0} %s %(x)d \\n 小明 🤖\nline2"


def hostile_values(tmp: Path) -> str:
    """Shell and Python metacharacters in every free-text value reach the data verbatim, run nothing."""
    config = small_config()
    # 6 iterations (one epoch, no warmup): the values pass every stage; more adds nothing to check
    config["xtuner"]["max_epochs"] = 1
    config["xtuner"]["warmup_ratio"] = 0
    config["assistant"]["name"] = HOSTILE_NAME
    config["assistant"]["maker"] = "$(touch MARKER)"
    config["xtuner"]["system"] = "'); __import__('os').system('touch MARKER'); ('"
    config["xtuner"]["evaluation_inputs"] = ["`touch MARKER`", '"; touch MARKER #']
    config["dataset"]["questions"]["en"] = ["Who are you? $(touch MARKER)"]
    write_config(tmp, config)
    snakemake(tmp, "results/final_model", check=True)
    records = json.loads((tmp / "results" / "data" / "train.json").read_text(encoding="utf-8"))
    outputs = {r["conversation"][0]["output"] for r in records}
    assert f"I am {HOSTILE_NAME}, an AI assistant made by $(touch MARKER). How can I help you?" in outputs
    assert any(r["conversation"][0]["input"] == "Who are you? $(touch MARKER)" for r in records)
    from mmengine.config import Config

    cfg = Config.fromfile(str(tmp / "results" / "xtuner" / "internlm2_1_8b_qlora_alpaca_e3.py"))
    assert cfg.SYSTEM == config["xtuner"]["system"]
    assert not list(tmp.rglob("MARKER")) and not (REPO / "MARKER").exists()
    return "reached the dataset verbatim; nothing executed"


# -- config files, numbers and paths refused at start ---------------------------------------------------------------


def config_file(text: str) -> Callable[[Path], str]:
    """config/config.yaml with `text`: read and refused by xtflow before Snakemake merges it, by a dry run."""

    def run(tmp: Path) -> str:
        (tmp / "config").mkdir()
        (tmp / "config" / "config.yaml").write_text(text, encoding="utf-8")
        msg = _error_line(snakemake(tmp, "-n"))
        assert "config/config.yaml" in msg
        return msg

    return run


def dataset_path(make: Callable[[Path], str]) -> Callable[[Path], str]:
    """dataset.files naming something that is not a file: refused at start, by a dry run."""

    def run(tmp: Path) -> str:
        return dry_run_with(dataset__files=[make(tmp)])(tmp)

    return run


def _directory(tmp: Path) -> str:
    (tmp / "data").mkdir()
    return "data"


def nested_override(spelling: str) -> Callable[[Path, tuple], str]:
    """A nested `--config` value, spelt as a user types it in a shell: the number reaches XTuner's config."""

    def run(tmp: Path, quick: tuple) -> str:
        import shlex

        project = copy_run(quick[0], tmp / "project")
        target = "results/xtuner/internlm2_1_8b_qlora_alpaca_e3.py"
        argv, env = snakemake_call(project, (target,))
        cmd = " ".join(shlex.quote(a) for a in argv) + " --config " + spelling
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600, env=env, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        written = (project / target).read_text(encoding="utf-8")
        (lr,) = re.findall(r"^lr = (.+)$", written, re.M)
        return f"accepted: lr = {lr} in the written XTuner config"

    return run


# -- what training does with the data and the learning rate ---------------------------------------------------------


def quick_copy_with(*overrides: str, target: str = "results/final_model") -> Callable[[Path, tuple], str]:
    """A copy of the shared quick run with `--config` overrides; the train rule refuses; no handle is left."""

    def run(tmp: Path, quick: tuple) -> str:
        project = copy_run(quick[0], tmp / "project")
        msg = _error_line(snakemake(project, target, "--config", *overrides))
        assert not (project / "results" / "train" / "final_checkpoint.pth").exists()
        assert not (project / "results" / "final_model").exists()
        return msg

    return run


def long_user_record(tmp: Path, run: NanRun) -> str:
    """A user record much longer than max_length: cut by XTuner, and said so once, before training, in the log
    and on the terminal, and counted in the report's dataset page."""
    (line,) = [ln for ln in run.stderr.splitlines() if ln.startswith("xtflow: warning")]
    assert line in run.train_log
    assert "1 of 49 records longer than max_length 256" in run.train_log
    assert "records longer than xtuner.max_length 256 (cut)</td><td>1<" in run.dataset_page
    return line


def test_an_identity_answer_is_refused_only_where_xtuner_cuts_it(quick_run: tuple, monkeypatch) -> None:
    """XTuner cuts a record longer than max_length at its end: an identity answer in the last turn of a long
    conversation is cut (refused); one in its first turn is whole (the turns after it are cut, as for any
    long record: trained, with the warning)."""
    from xtflow.train import identity_cut, load_xtuner_config, record_lengths

    monkeypatch.chdir(quick_run[0])  # the written config's paths are the run's
    cfg = load_xtuner_config(Path("results/xtuner/internlm2_1_8b_qlora_alpaca_e3.py"))
    records = json.loads(Path("results/data/train.json").read_text(encoding="utf-8"))
    identity = next(r["conversation"][0] for r in records if len(r["conversation"]) == 1)
    story = {"input": "Tell me a long story.", "output": "word " * 300}
    first, last = {"conversation": [identity, story]}, {"conversation": [story, identity]}
    lengths = record_lengths(cfg, [first, last])
    assert min(lengths) > cfg.max_length
    assert identity_cut(cfg, [first], lengths[:1], [identity["output"]]) is None
    answer, end = identity_cut(cfg, [first, last], lengths, [identity["output"]])
    assert answer == identity["output"] and cfg.max_length < end == lengths[1]


@dataclass
class NanRun:
    project: Path
    error: str  # the run's one-line error
    stderr: str  # Snakemake's
    train_log: str
    dataset_page: str


@pytest.fixture(scope="module")
def nan_run(quick_run: tuple, tmp_path_factory: pytest.TempPathFactory) -> NanRun:
    """A copy of the quick run given a user record far longer than max_length and `xtuner.lr: 1e30`: the
    train job warns about the record XTuner cuts, then training stops at the first nan loss (one run for both:
    the warning comes before training)."""
    project = copy_run(quick_run[0], tmp_path_factory.mktemp("nan") / "project")
    (project / "data").mkdir()
    record = {"conversation": [{"input": "Tell me a long story.", "output": "word " * 4000}]}
    (project / "data" / "long.json").write_text(json.dumps([record]), encoding="utf-8")
    targets = ["results/train/final_checkpoint.pth", "results/report/dataset.html", "--keep-going"]
    proc = snakemake(project, *targets, "--config", "dataset={files: [data/long.json]}", "xtuner={lr: 1e30}")
    log = (project / "logs" / "train.log").read_text(encoding="utf-8")
    assert "Iter(train) [10/" not in log, "training went on after the loss became nan"
    assert not list((project / "results" / "train" / "work_dir").glob("iter_*.pth"))  # no nan checkpoint
    page = (project / "results" / "report" / "dataset.html").read_text(encoding="utf-8")
    return NanRun(project, _error_line(proc), proc.stderr, log, page)


def nan_loss(tmp: Path, run: NanRun) -> str:
    return run.error


def reverted_lr(tmp: Path, run: NanRun) -> str:
    """The refused learning rate (and the long record) taken back: the finished training of these inputs is
    reused, not redone."""
    project = run.project
    snakemake(project, "results/train/final_checkpoint.pth", check=True)
    log = (project / "logs" / "train.log").read_text(encoding="utf-8")
    assert "Iter(train)" not in log, "retrained"
    work = project / "results" / "train" / "work_dir"
    assert (project / "results" / "train" / "final_checkpoint.pth").stat().st_ino == (
        work / "iter_24.pth"
    ).stat().st_ino
    return next(ln for ln in log.splitlines() if "reusing the finished training" in ln)


def reverted_dataset_file(tmp: Path, quick: tuple) -> str:
    """A dataset file the dataset job refuses, then taken out again: the training is reused, not redone."""
    project = copy_run(quick[0], tmp / "project")
    (project / "data").mkdir()
    (project / "data" / "bad.json").write_text("{oops", encoding="utf-8")
    _error_line(snakemake(project, "results/final_model", "--config", "dataset={files: [data/bad.json]}"))
    assert not (project / "results" / "final_model").exists()  # made from the data the failed job rebuilt
    snakemake(project, "results/train/final_checkpoint.pth", check=True)
    log = (project / "logs" / "train.log").read_text(encoding="utf-8")
    assert "Iter(train)" not in log, "retrained"
    return next(ln for ln in log.splitlines() if "reusing the finished training" in ln)


# -- stopped runs, moved projects, a second run ------------------------------------------------------------------------

NEW_NAME = "Nova"  # a name the tiny model says after 48 iterations from base-model seed 1
STAGES = ("base_model", "dataset", "xtuner_config", "train", "adapter", "merge")
COMMAND = ["--rerun-incomplete", "results/final_model"]  # the same command after every stop


def stop_windows(project: Path) -> dict[str, float]:
    """How long after a stage's job starts a stop may come so that it lands inside the job: a quarter of what
    the job took in the run `project` was copied from (its benchmarks/<stage>.tsv; that run may have shared
    the machine with other tests); for train, its first 20 s at most (the plan, the lock, XTuner's start and
    first iterations; a later stop would only add training). A job of under 2 s is stopped as soon as its
    process is seen: its time varies more than fourfold with the load (dataset: 0.63 s in a quick run that
    shared the machine, 0.11 s in the copy, where a stop 0.15 s in came after its end)."""
    took = {
        stage: float((project / "benchmarks" / f"{stage}.tsv").read_text().splitlines()[1].split("\t")[0])
        for stage in STAGES
    }
    return {stage: min(seconds / 4, 20.0) if seconds >= 2 else 0.0 for stage, seconds in took.items()}


@dataclass
class Interrupted:
    """What happened to a moved copy of the quick run, renamed and stopped in every stage."""

    seed: int
    original: Path  # the finished run it was copied from
    project: Path
    stops: list = field(default_factory=list)
    second_trainer: str = ""
    first_training: str = ""  # logs/train.log of the first train job, up to XTuner's start
    checkpoints_at_ctrl_c: list = field(default_factory=list)  # iter_N.pth when Ctrl-C came in train
    resumed_from: str = ""  # the newest checkpoint after the last stop in train
    last_training: str = ""  # logs/train.log of the train job that ran to the end
    answer: str = ""
    leftovers_after_kills: list = field(default_factory=list)


def _wait_for(what: str, done: Callable[[], bool], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _checkpoints(work: Path) -> list[str]:
    return sorted((p.name for p in work.glob("iter_*.pth")), key=lambda n: int(n[5:-4]))


@pytest.fixture(scope="module")
def interrupted(quick_run: tuple, tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    """A finished project copied (`cp -a`) and moved, given a new name (and a new base-model seed and
    sampling bound, so every stage runs again; checkpoints every 12 iterations, all kept), then stopped in
    every stage, first by Ctrl-C (SIGINT to the process group), then by SIGKILL, each time followed by the
    same command (after SIGKILL, `snakemake --unlock` first, as Snakemake says). The stops come at a random
    point of the stage's job, except the Ctrl-C in train: at a random point once a checkpoint exists (the
    issue's case: the next run resumes from it). While the first training runs, a second run into the same
    project (Snakemake's lock removed with --unlock) is refused. XTFLOW_KILL_SEED=N repeats an order of
    stop points."""
    seed = int(os.environ.get("XTFLOW_KILL_SEED") or random.randrange(2**31))
    print(f"kill points: XTFLOW_KILL_SEED={seed}")
    rng = random.Random(seed)
    root = tmp_path_factory.mktemp("interrupted")
    project = root / "moved"
    copy_run(quick_run[0], root / "copied").rename(project)
    window = stop_windows(project)
    config = yaml.safe_load((project / "config" / "config.yaml").read_text(encoding="utf-8"))
    set_key(config, "assistant.name", NEW_NAME)
    set_key(config, "dataset.conversations", 48)  # 96 records, 48 iterations: enough for the model to say it
    set_key(config, "base_model.tiny.seed", 1)
    set_key(config, "xtuner.evaluation_max_new_tokens", 16)
    set_key(config, "xtuner.save_steps", 12)
    set_key(config, "xtuner.save_total_limit", -1)
    write_config(project, config)
    result = Interrupted(seed, quick_run[0], project)
    work = project / "results" / "train" / "work_dir"
    train_log = project / "logs" / "train.log"

    def during(stage: str, sig: signal.Signals) -> None:
        if stage != "train" or sig != signal.SIGINT:
            return
        lock = project / "results" / "train" / ".work_dir.lock"
        _wait_for("the train job's lock", lambda: locked_by_a_process(lock))
        _wait_for("XTuner's start", lambda: "xtuner_tools train" in _text(train_log))
        result.first_training = _text(train_log)  # before the second run's train job replaces the log
        snakemake(project, "--unlock", check=True)
        result.second_trainer = _error_line(snakemake(project, "results/train/final_checkpoint.pth"))
        _wait_for("a checkpoint", lambda: bool(_checkpoints(work)))

    def delay(stage: str, sig: signal.Signals) -> float:
        if stage == "train" and sig == signal.SIGINT:  # 12 iterations after the first checkpoint, 36 to go
            return rng.uniform(0, window["train"] / 4)
        return rng.uniform(0, window[stage])

    plan = {stage: [signal.SIGINT, signal.SIGKILL] for stage in STAGES}
    while any(plan.values()):
        stop = stop_in_first_stage_of(project, COMMAND, plan, delay, root / f"run{len(result.stops)}.log", during)
        result.stops.append(stop)
        print(f"stopped {stop.stage} by {stop.signal} {stop.delay:.2f} s after it started")
        assert not stop.finished_before, f"{stop.stage} had ended before {stop.signal} (XTFLOW_KILL_SEED={seed})"
        time.sleep(0.5)
        assert not xtuner_processes_in(project), f"XTuner outlived the run stopped by {stop.signal} in {stop.stage}"
        if stop.stage == "train" and stop.signal == "SIGINT":
            result.checkpoints_at_ctrl_c = _checkpoints(work)
        if stop.stage == "train":  # the run after the last stop in train trains to the end
            result.resumed_from = _checkpoints(work)[-1]
        if stop.signal == "SIGKILL":
            result.leftovers_after_kills += leftovers(project)
            snakemake(project, "--unlock", check=True)
    snakemake(project, *COMMAND, check=True)
    result.last_training = _text(train_log)  # of the train job that ran to the end
    proc = chat(project, "-q", "Who are you?", "--max-new-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    result.answer = proc.stdout.strip()
    return result


def killed_in_every_stage(tmp: Path, run: Interrupted) -> str:
    stopped = [(s.stage, s.signal) for s in run.stops]
    every = {(stage, sig) for stage in STAGES for sig in ("SIGINT", "SIGKILL")}
    assert len(stopped) == len(every) and set(stopped) == every, f"{stopped} (XTFLOW_KILL_SEED={run.seed})"
    assert NEW_NAME in run.answer, f"the final model answered {run.answer!r} (XTFLOW_KILL_SEED={run.seed})"
    assert not leftovers(run.project), leftovers(run.project)
    return f"results/final_model answers with the new name: {run.answer}"


def resumed_training(tmp: Path, run: Interrupted) -> str:
    """Ctrl-C in train once a checkpoint exists: the same command resumes from the newest checkpoint (inside
    the run, wherever it is), loses none, and trains to the configured end."""
    assert run.checkpoints_at_ctrl_c, "Ctrl-C in train came before any checkpoint"
    log = run.last_training
    assert f"xtflow: resuming from results/train/work_dir/{run.resumed_from}" in log, log[-3000:]
    assert re.search(rf"resumed epoch: \d+, iter: {run.resumed_from[5:-4]}\b", log)
    after = _checkpoints(run.project / "results" / "train" / "work_dir")
    assert set(run.checkpoints_at_ctrl_c) <= set(after), "a checkpoint that existed at Ctrl-C was lost"
    assert after[-1] == "iter_48.pth" and NEW_NAME in run.answer
    return f"resumed from the newest checkpoint ({run.resumed_from}) to iter_48.pth"


def changed_inputs_not_resumed(tmp: Path, run: Interrupted) -> str:
    """The copied run's finished checkpoints were made from other inputs (the old name): never resumed nor
    reused, moved aside whole."""
    line = next(ln for ln in run.first_training.splitlines() if ln.startswith("xtflow: not resuming"))
    assert "--resume" not in run.first_training and "resumed" not in run.first_training
    stale = run.project / "results" / "train" / "work_dir.stale"
    old = run.original / "results" / "train" / "work_dir"
    assert _checkpoints(stale) == _checkpoints(old) == ["iter_24.pth"]
    assert (stale / "iter_24.pth").read_bytes() == (old / "iter_24.pth").read_bytes()
    return line


def no_leftovers(tmp: Path, run: Interrupted) -> str:
    """SIGKILL inside a job that writes through a temporary name (adapter, merge, ...) leaves it behind; the
    next attempt removes it (how many the kills left varies with where they landed: printed)."""
    print(f"temporary outputs left by the kills: {run.leftovers_after_kills}")
    assert not leftovers(run.project), leftovers(run.project)
    return "no temporary outputs (.<name>.tmp-*) left after the runs that followed"


def second_trainer_refused(tmp: Path, run: Interrupted) -> str:
    assert run.second_trainer, "no second run was started while the first trained"
    return run.second_trainer


def moved_project(tmp: Path, run: Interrupted) -> str:
    """The moved copy trained on its own data: its checkpoint handle links its own checkpoint, nothing it
    wrote names the original's directory, and its model says the new name."""
    work = run.project / "results" / "train" / "work_dir"
    handle = run.project / "results" / "train" / "final_checkpoint.pth"
    assert handle.stat().st_ino == (work / "iter_48.pth").stat().st_ino
    for text in [work / "last_checkpoint", *(run.project / "results" / "xtuner").glob("*.py")]:
        assert str(run.original) not in text.read_text(encoding="utf-8"), text
    assert NEW_NAME in run.answer
    return "trains on its own data and answers with the new name"


def stopped_forced_rerun(tmp: Path, quick: tuple) -> str:
    """`snakemake -R adapter` (the README's way to rebuild after an untracked change) stopped by Ctrl-C inside
    the adapter job, then plain `snakemake`: the adapter and the final model are rebuilt. (Snakemake alone
    says 'Nothing to be done': the final model is there, and the adapter it read is not.)"""
    project = copy_run(quick[0], tmp / "project")
    seed = int(os.environ.get("XTFLOW_KILL_SEED") or random.randrange(2**31))
    delay = random.Random(seed).uniform(0, stop_windows(project)["adapter"])
    log = project / "logs" / "adapter.log"

    def removals() -> int:
        text = log.read_text(encoding="utf-8") if log.is_file() else ""
        return text.count("xtflow: removed results/final_model")

    before = removals()

    def once_it_removed_the_final_model(stage: str, sig: signal.Signals) -> None:
        """A stop before the job's first line is Snakemake's to handle, and after a forced rerun it does
        not (README, Stopping and running again): the stop comes after that line."""
        deadline = time.monotonic() + 60
        while removals() == before:
            assert time.monotonic() < deadline, "the adapter job did not remove the final model"
            time.sleep(0.01)

    stop = stop_in_first_stage_of(
        project,
        ["-R", "adapter", "results/final_model"],
        {"adapter": [signal.SIGINT]},
        lambda stage, sig: delay,
        tmp / "log",
        during=once_it_removed_the_final_model,
    )
    assert not stop.finished_before, f"adapter had ended (XTFLOW_KILL_SEED={seed})"
    proc = snakemake(project, "results/final_model", check=True)
    assert "Nothing to be done" not in proc.stdout + proc.stderr
    assert (project / "results" / "final_model" / "model.safetensors").is_file()
    ran = sorted(set(re.findall(r"^\s*(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M)))
    return f"rebuilt: {', '.join(ran)}"


# -- the chat command ------------------------------------------------------------------------------------------------


def chat_with(*args: str) -> Callable[[Path, tuple], str]:
    """`python -m xtflow.chat -q ...` on the quick run: one line on stderr, exit 1 (or 2 for arguments), no hang."""

    def run(tmp: Path, quick: tuple) -> str:
        proc = chat(quick[0], *args, timeout=120)
        assert proc.returncode in (1, 2) and not proc.stdout.strip(), (proc.returncode, proc.stdout)
        (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("xtflow: error")]
        return line

    return run


CASES = [
    Case(
        "config-unknown-key",
        "a misspelt key in config.yaml",
        "config key 'xtuner.learning_rate': unknown key",
        dry_run_with(xtuner__learning_rate=1e-4),
    ),
    Case(
        "config-wrong-type",
        "a number given as a string",
        "config key 'xtuner.max_epochs': '3' is not of type 'integer'",
        dry_run_with(xtuner__max_epochs="3"),
    ),
    Case(
        "config-negative-lr",
        "a negative learning rate",
        "config key 'xtuner.lr': -0.001 is less than or equal to the minimum of 0",
        dry_run_with(xtuner__lr=-0.001),
    ),
    Case(
        "config-zero-steps",
        "zero checkpoint interval",
        "config key 'xtuner.save_steps': 0 is less than the minimum of 1",
        dry_run_with(xtuner__save_steps=0),
    ),
    Case(
        "config-negative-count",
        "a negative record count",
        "config key 'dataset.records': -5 is less than the minimum of 0",
        dry_run_with(dataset__records=-5),
    ),
    Case(
        "config-empty-questions",
        "no identity questions but records asked for",
        "config key 'dataset.questions': empty, but dataset.records asks for identity records",
        dry_run_with(dataset__questions={"en": [], "zh": []}),
    ),
    Case(
        "config-empty-dataset",
        "no generated records and no files",
        "config key 'dataset.records': 0 and no dataset.files",
        dry_run_with(dataset__records=0, dataset__general_records=0, dataset__conversations=0),
    ),
    Case(
        "config-unknown-template",
        "a prompt template XTuner does not have",
        "config key 'xtuner.prompt_template': 'internlm3_chat' is not an XTuner template",
        dry_run_with(xtuner__prompt_template="internlm3_chat"),
    ),
    Case(
        "config-unknown-base-config",
        "an XTuner config name that does not exist",
        "config key 'xtuner.base_config': 'internlm2_1_8b_qlora_alpaca_e33' is not an XTuner built-in config",
        dry_run_with(xtuner__base_config="internlm2_1_8b_qlora_alpaca_e33"),
    ),
    Case(
        "config-unpatchable-base-config",
        "an XTuner config that lacks a setting xtflow patches",
        "config key 'xtuner.base_config': XTuner config 'internlm_7b_qlora_oasst1_e3_hf': "
        "has no top-level setting 'batch_size' to patch",
        dry_run_with(xtuner__base_config="internlm_7b_qlora_oasst1_e3_hf"),
    ),
    Case(
        "config-4bit-on-cpu",
        "QLoRA asked for on a CPU run",
        "config key 'xtuner.load_in_4bit': 4-bit (QLoRA) needs xtuner.device: cuda",
        dry_run_with(xtuner__load_in_4bit=True),
    ),
    Case(
        "config-internlm2-odd-heads",
        "a tiny InternLM2 with an odd number of heads (half are key-value heads)",
        "config key 'base_model.tiny.num_heads': 3, but architecture internlm2 needs an even number",
        dry_run_with(base_model__tiny__architecture="internlm2", base_model__tiny__num_heads=3),
    ),
    Case(
        "config-unknown-lora-target",
        "LoRA asked for a layer the base model does not have",
        "config key 'xtuner.lora.target_modules': 'wqkv' is not a linear layer of the base model",
        xtuner_config_with(xtuner__lora__target_modules=["wqkv", "q_proj"]),
    ),
    Case(
        "model-missing",
        "base_model.path does not exist",
        "does not exist",
        base_model_at(lambda tmp: tmp / "models" / "nope"),
    ),
    Case(
        "model-parent-dir",
        "base_model.path is the parent of the model directory",
        "has no config.json; did you mean",
        base_model_at(lambda tmp: _tiny_model(tmp).parent),
    ),
    Case(
        "model-no-tokenizer",
        "the model directory lacks its tokenizer",
        "has no tokenizer",
        base_model_at(_without_tokenizer),
    ),
    Case(
        "model-hub-id-unavailable",
        "a Hugging Face id neither in the local cache nor reachable (offline)",
        "'internlm/internlm2-chat-1_8b' (no local directory, so a Hugging Face id; revision main) is not in the "
        "Hugging Face cache",
        hub_id_unavailable,
    ),
    Case(
        "model-modelscope-id",
        "a ModelScope id",
        "ModelScope ids ('modelscope:Shanghai_AI_Laboratory/internlm2-chat-1_8b') are not supported: download "
        "the model with",
        base_model_at(lambda tmp: "modelscope:Shanghai_AI_Laboratory/internlm2-chat-1_8b"),
    ),
    Case("data-not-json", "a dataset file that is not JSON", "not valid JSON", dataset_file("{oops")),
    Case(
        "data-not-list",
        "JSON, but not a list",
        "must be a JSON list of records, got a JSON dict",
        dataset_file('{"a": 1}'),
    ),
    Case(
        "data-no-conversation",
        "a record without conversation/messages",
        "record 1: has neither 'conversation'",
        dataset_file('[{"conversation": [{"input": "a", "output": "b"}]}, {"text": "x"}]'),
    ),
    Case(
        "data-empty-string",
        "an empty answer",
        "record 0, turn 0 'output': is empty",
        dataset_file('[{"conversation": [{"input": "a", "output": " "}]}]'),
    ),
    Case(
        "data-unknown-role",
        "an OpenAI-format message with an unknown role",
        "record 0, message 0: unknown role 'bot'",
        dataset_file('[{"messages": [{"role": "bot", "content": "x"}]}]'),
    ),
    Case("data-no-records", "a dataset file holding no records", "holds no records", dataset_file("[]")),
    Case(
        "data-zero-after-filtering",
        "every prompt longer than max_length (XTuner drops them all)",
        "training set: 0 samples left after XTuner's processing",
        training_with(dataset__records=0, dataset__long_prompts=True, xtuner__max_length=32),
    ),
    Case(
        "data-too-small-for-warmup",
        "too few samples for the warmup (XTuner: 'end should be larger than begin')",
        "config key 'xtuner.warmup_ratio': 0.03 x 1 epoch(s) x 2 iterations/epoch",
        training_with(dataset__records=16, xtuner__max_epochs=1, xtuner__warmup_ratio=0.03),
    ),
    Case(
        "values-not-executed",
        "quotes, $(), backticks, ;, newlines, {} and % in names and prompts",
        "reached the dataset verbatim; nothing executed",
        hostile_values,
    ),
    Case(
        "runtime-training-fails",
        "XTuner fails during training (here: damaged weights)",
        "xtflow: error in rule train: XTuner train failed (exit 1)",
        failing_training,
    ),
    Case(
        "runtime-read-only",
        "an output directory that cannot be written",
        "cannot write to results/data/: Read-only file system",
        read_only_output_dir,
    ),
    Case("runtime-damaged-checkpoint", "the checkpoint to resume from is truncated", "is damaged", damaged_checkpoint),
    Case(
        "config-duplicate-key",
        "a key written twice in config.yaml (YAML would keep the last)",
        "config file config/config.yaml, line 3: key 'assistant' appears twice (first at line 1)",
        config_file("assistant:\n  name: Bob\nassistant:\n  maker: Alice\n"),
    ),
    Case(
        "config-file-empty",
        "an empty config.yaml",
        "config file config/config.yaml: empty",
        config_file(""),
    ),
    Case(
        "config-file-list",
        "a config.yaml that is a list",
        "config file config/config.yaml: holds a list, not a mapping",
        config_file("- assistant\n- xtuner\n"),
    ),
    Case(
        "config-file-scalar",
        "a config.yaml that is a single value",
        "config file config/config.yaml: holds a single value (42), not a mapping",
        config_file("42\n"),
    ),
    Case(
        "config-infinite-number",
        "`.inf` as a number",
        "config key 'xtuner.lr': .inf is not a finite number",
        dry_run_with(xtuner__lr=float("inf")),
    ),
    Case(
        "config-nan-number",
        "`.nan` as a number",
        "config key 'xtuner.warmup_ratio': .nan is not a finite number",
        dry_run_with(xtuner__warmup_ratio=float("nan")),
    ),
    Case(
        "data-file-is-directory",
        "dataset.files names a directory",
        "config key 'dataset.files[0]': 'data' is a directory, not a dataset file",
        dataset_path(_directory),
    ),
    Case(
        "data-file-is-device",
        "dataset.files names a device (/dev/zero: reading it would never end)",
        "config key 'dataset.files[0]': '/dev/zero' is a character device, not a dataset file",
        dataset_path(lambda tmp: "/dev/zero"),
    ),
    Case(
        "config-nested-override",
        "a nested number on the command line: `--config xtuner='{lr: 0.004}'`",
        "accepted: lr = 0.004 in the written XTuner config",
        nested_override("xtuner='{lr: 0.004}'"),
        uses="quick_run",
    ),
    Case(
        "config-nested-override-quoted-whole",
        'the same, quoted whole: `--config "xtuner={lr: 0.01}"`',
        "accepted: lr = 0.01 in the written XTuner config",
        nested_override('"xtuner={lr: 0.01}"'),
        uses="quick_run",
    ),
    Case(
        "data-identity-too-long",
        "a 10,000-character assistant.name (its identity answer cannot fit in max_length)",
        "config key 'xtuner.max_length': 256 tokens cannot hold the identity answer",
        quick_copy_with(f"assistant={{name: {'Z' * 10_000}}}"),
        uses="quick_run",
    ),
    Case(
        "data-max-length-too-small",
        "`xtuner.max_length: 40`, shorter than the identity answers",
        "config key 'xtuner.max_length': 40 tokens cannot hold the identity answer",
        quick_copy_with("xtuner={max_length: 40}"),
        uses="quick_run",
    ),
    Case(
        "data-cut-at-max-length",
        "a user record longer than max_length (XTuner cuts it)",
        "xtflow: warning: 1 of 49 training records are longer than xtuner.max_length 256: XTuner cuts them there",
        long_user_record,
        uses="nan_run",
    ),
    Case(
        "runtime-nan-loss",
        "a learning rate so high the loss becomes nan (`xtuner.lr: 1e30`)",
        "config key 'xtuner.lr': the training loss became nan at iteration 2 with learning rate 1e+30",
        nan_loss,
        uses="nan_run",
    ),
    Case(
        "runtime-overflowing-lr",
        "a learning rate that overflows the optimizer (`xtuner.lr: 1e308`)",
        "config key 'xtuner.lr': 1e+308: the optimizer's first step overflowed",
        quick_copy_with("xtuner={lr: 1e308}", target="results/train/final_checkpoint.pth"),
        uses="quick_run",
    ),
    Case(
        "revert-after-refused-lr",
        "the refused learning rate taken back",
        "reusing the finished training in results/train/work_dir (iter_24.pth)",
        reverted_lr,
        uses="nan_run",
    ),
    Case(
        "revert-after-failed-dataset",
        "a dataset file the dataset job refuses, then taken out again",
        "reusing the finished training in results/train/work_dir (iter_24.pth)",
        reverted_dataset_file,
        uses="quick_run",
    ),
    Case(
        "stopped-in-every-stage",
        "a renamed project stopped at a random point of every stage, by Ctrl-C and by SIGKILL, each time run again",
        "results/final_model answers with the new name",
        killed_in_every_stage,
        uses="interrupted",
    ),
    Case(
        "stopped-training-resumes",
        "Ctrl-C in train once a checkpoint exists, then the same command",
        "resumed from the newest checkpoint",
        resumed_training,
        uses="interrupted",
    ),
    Case(
        "stopped-changed-inputs",
        "a finished run's inputs changed: its checkpoints are of other inputs",
        "xtflow: not resuming: the checkpoints in results/train/work_dir were made with another config, dataset "
        "or base model; moved them to results/train/work_dir.stale",
        changed_inputs_not_resumed,
        uses="interrupted",
    ),
    Case(
        "stopped-forced-rerun",
        "`snakemake -R adapter` stopped by Ctrl-C, then `snakemake` again",
        "rebuilt: adapter, merge",
        stopped_forced_rerun,
        uses="quick_run",
    ),
    Case(
        "moved-project",
        "a finished project copied (`cp -a`) or moved, then renamed",
        "trains on its own data and answers with the new name",
        moved_project,
        uses="interrupted",
    ),
    Case(
        "runtime-killed-write-leftovers",
        "SIGKILL while a job writes its output (its temporary folder stays)",
        "no temporary outputs (.<name>.tmp-*) left after the runs that followed",
        no_leftovers,
        uses="interrupted",
    ),
    Case(
        "runtime-second-trainer",
        "a second run into a live run's directory (its Snakemake lock removed with `--unlock`)",
        "results/train/work_dir is in use by another training",
        second_trainer_refused,
        uses="interrupted",
    ),
    Case(
        "chat-bad-argument",
        "`python -m xtflow.chat --max-new-tokens 0`",
        "xtflow: error: argument --max-new-tokens: must be at least 1, got 0",
        chat_with("--max-new-tokens", "0", "-q", "hi"),
        uses="quick_run",
    ),
    Case(
        "chat-generation-fails",
        "generation fails in the chat (here: `--temperature 1e-45` overflows the sampling)",
        "xtflow: error: generation failed: RuntimeError: probability tensor contains",
        chat_with("--temperature", "1e-45", "-q", "Who are you?"),
        uses="quick_run",
    ),
    Case(
        "chat-prompt-too-long",
        "a chat prompt longer than the model's context",
        "tokens (with the history and the template); with 128 new tokens that exceeds the model's context of 1024",
        chat_with("-q", "word " * 3000),
        uses="quick_run",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_in_one_line(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    message = case.run(tmp_path, request.getfixturevalue(case.uses)) if case.uses else case.run(tmp_path)
    assert case.message in message
    assert "\n" not in message and "Traceback" not in message


def test_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


def test_readme_troubleshooting_table_matches() -> None:
    """README.md's Troubleshooting table lists exactly these cases, with these messages."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w-]+)` \| (.+?) \| `(.+?)` \|$", section, flags=re.M)
    assert {r[0]: (r[1], r[2]) for r in rows} == {c.id: (c.situation, c.message) for c in CASES}


def troubleshooting_table() -> str:
    """The README table, generated from CASES: `python tests/test_hostile_inputs.py`."""
    lines = ["| case | what happened | message (one line, on stderr and in the rule's log) |", "| --- | --- | --- |"]
    lines += [f"| `{c.id}` | {c.situation} | `{c.message}` |" for c in CASES]
    return "\n".join(lines)


def write_readme_table() -> None:
    """Replace the table in README.md's Troubleshooting section with `troubleshooting_table()`."""
    path = REPO / "README.md"
    readme = path.read_text(encoding="utf-8")
    head, rest = readme.split("## Troubleshooting", 1)
    start = rest.index("| case | what happened |")
    end = rest.index("\n\n", start)
    path.write_text(head + "## Troubleshooting" + rest[:start] + troubleshooting_table() + rest[end:], encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme_table()
    else:
        print(troubleshooting_table())
