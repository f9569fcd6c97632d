"""Shared helpers: run the real workflow with real Snakemake in a temporary project directory."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from slurmrun import SlurmRun

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"

# Tests stop Snakemake with Ctrl-C (SIGINT to its process group), as a user does. A suite started as a
# background job of a script (`make test &`) inherits SIGINT ignored, and so would every program it starts:
# Python then installs no KeyboardInterrupt handler, and Snakemake ran through the Ctrl-C to its end.
# Handled here, SIGINT is at its default again in each program the tests start (exec resets a handled
# signal, not an ignored one).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))

# The xtflow of this checkout, in the tests and in every process they start (not another copy
# that happens to be installed).
sys.path.insert(0, str(REPO / "workflow"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "workflow"), os.environ.get("PYTHONPATH")]))
# Where SLURM's client is installed but no controller answers, the SLURM executor plugin waits 10 s
# for `scontrol show config` at every Snakemake start, local runs included (README Troubleshooting).
# An empty SLURM config makes scontrol fail at once; tests/test_slurm.py points it at its cluster.
os.environ["SLURM_CONF"] = "/dev/null"


def default_config() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CONFIG)


def set_key(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set config['a']['b'] = value for dotted key 'a.b' (creating sections); returns config."""
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return config


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    """Lay out a user's project: <workdir>/config/config.yaml."""
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def snakemake_call(
    workdir: Path, args: tuple[str, ...] = (), env: dict[str, str | None] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of real Snakemake on the xtflow Snakefile in `workdir` (one core):
    offline unless `env` says otherwise (`env`: variables to set, or to remove where None)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), "--cores", "1", *args]
    run_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for key, value in (env or {}).items():
        if value is None:
            run_env.pop(key, None)
        else:
            run_env[key] = value
    return cmd, run_env


def _failed(proc: subprocess.CompletedProcess) -> AssertionError:
    return AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")


def snakemake(
    workdir: Path, *args: str, timeout: float = 900, check: bool = False, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Run real Snakemake on the xtflow Snakefile in `workdir`; bounded so a hang fails the test."""
    cmd, run_env = snakemake_call(workdir, args, env)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env, check=False)
    if check and proc.returncode != 0:
        raise _failed(proc)
    return proc


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run as a user makes one (`cp -a`: links, hard links and times kept)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True, timeout=300)
    return dst


def chat(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m xtflow.chat --workdir WORKDIR ARGS...`, its output captured."""
    cmd = [sys.executable, "-m", "xtflow.chat", "--workdir", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


USER_RECORDS = [
    {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}, {"role": "assistant", "content": f"{a + b}"}]}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
]


def completed_config() -> dict[str, Any]:
    """The config of the shared completed run: the embedded default exactly as shipped."""
    return default_config()


def planned_jobs(output: str) -> set[str]:
    """The jobs of a dry run, from Snakemake's 'Job stats' table (the `all` target left out)."""
    lines = output.splitlines()
    if not any("Job stats:" in ln for ln in lines):
        return set()
    start = next(i for i, ln in enumerate(lines) if "Job stats:" in ln) + 3
    jobs = set()
    for ln in lines[start:]:
        parts = ln.split()
        if not parts or parts[0] == "total":
            break
        jobs.add(parts[0])
    return jobs - {"all"}


def dry_run_with(
    workdir: Path, tmp_path: Path, change: dict[str, Any], *args: str, config: dict[str, Any] | None = None
) -> str:
    """Snakemake's dry-run output (stdout and stderr) in `workdir` with the run's config (default: the
    completed run's) changed by `change` (dotted keys), given as `--configfile` after `args` (targets, options)."""
    config = completed_config() if config is None else config
    for dotted, value in change.items():
        set_key(config, dotted, value)
    override = tmp_path / "changed.yaml"
    override.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    proc = snakemake(workdir, "-n", *args, "--configfile", str(override), check=True)
    return proc.stdout + proc.stderr


def quick_config() -> dict[str, Any]:
    """The smallest run through every stage (.test/config/config.yaml over the embedded default)."""
    return yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text(encoding="utf-8"))


@dataclass
class SharedRun:
    """A run that several tests inspect (never modify it; copy it). It starts in the background as soon
    as the collected tests are known (or, if it builds on another shared run, as soon as what it needs
    of that run exists), so it trains while tests that do not need it run."""

    workdir: Path
    timeout: float
    process: subprocess.Popen | None = None
    starter: threading.Thread | None = None

    def result(self) -> subprocess.CompletedProcess:
        if self.starter is not None:
            self.starter.join(timeout=3600)  # it may wait for other runs first (after, tail)
        if self.process is None:
            raise AssertionError(f"{self.workdir}: not started (the shared run it builds on failed)")
        try:
            self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        logs = self.workdir.parent
        proc = subprocess.CompletedProcess(
            self.process.args,
            self.process.returncode,
            (logs / "snakemake.stdout").read_text(encoding="utf-8", errors="replace"),
            (logs / "snakemake.stderr").read_text(encoding="utf-8", errors="replace"),
        )
        if proc.returncode != 0:
            raise _failed(proc)
        return proc


def internlm2_config() -> dict[str, Any]:
    """.test/config/config.yaml on a tiny InternLM2 base model (InternLM2's own architecture, its remote code)."""
    return set_key(quick_config(), "base_model.tiny.architecture", "internlm2")


def tutorial_config(balanced: Path) -> dict[str, Any]:
    """recipe: tutorial on the completed run's base model (taught the general skill)."""
    config = default_config()
    config["recipe"] = "tutorial"
    config["base_model"]["path"] = str(balanced / "resources" / "base_model")
    return config


@dataclass(frozen=True)
class SharedRunSpec:
    config: Callable[..., dict[str, Any]]
    targets: tuple[str, ...]
    timeout: float  # a bound on its wall time, seconds
    after: tuple[str, str] | None = None  # (shared run, a file of it): start once that file exists
    tail: bool = False  # start once FIRST_RUNS have ended


SHARED_RUNS: dict[str, SharedRunSpec] = {
    # .test/config/config.yaml through results/final_model (24 iterations, no general skill)
    "quick_run": SharedRunSpec(quick_config, ("results/final_model",), 900),
    # the embedded default's default target (final model, evaluation, the report's pieces)
    "completed_run": SharedRunSpec(completed_config, (), 1500),
    # the tutorial recipe's evaluation and report pieces, from the completed run's taught base model
    "tutorial_run": SharedRunSpec(
        tutorial_config, ("report_files",), 1500, ("completed_run", "benchmarks/general_skill.tsv")
    ),
    # .test/config/config.yaml on a tiny InternLM2 base model: final model and evaluation
    "internlm2_run": SharedRunSpec(
        internlm2_config, ("results/final_model", "results/eval/summary.csv"), 900, tail=True
    ),
}
# The shared runs that train from the start of the session, on both cores with the tests that need none. The
# tail runs (`tail`; and the SLURM run) start once these have ended: the tests that read the first runs come
# one at a time and leave the second core free.
FIRST_RUNS = {"quick_run", "completed_run", "tutorial_run", "llava_run"}
_started: dict[str, SharedRun] = {}
_stopping = threading.Event()


def _start(name: str, factory: pytest.TempPathFactory) -> SharedRun:
    if name in _started:
        return _started[name]
    spec = SHARED_RUNS[name]
    run = _started[name] = SharedRun(factory.mktemp(name) / "run", spec.timeout)
    first = _start(spec.after[0], factory) if spec.after else None

    def launch() -> None:
        if spec.tail:
            _wait_for_first_runs()
        if first is not None and spec.after is not None:
            ready = first.workdir / spec.after[1]
            while not ready.exists():
                if _stopping.is_set() or first.process is None or first.process.poll() is not None:
                    return
                time.sleep(1)
        if _stopping.is_set():
            return
        write_config(run.workdir, spec.config(*([first.workdir] if first else [])))
        run.process = start_snakemake(run.workdir, *spec.targets, output=run.workdir.parent)

    if first is None and not spec.tail:
        launch()
    else:
        run.starter = threading.Thread(target=launch, daemon=True)
        run.starter.start()
    return run


LONG_RUNS = {"completed_run", "tutorial_run", "balanced_run", "llava_run", "slurm_run", "internlm2_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files that need no shared run first, then those of the quick run, then those of the long runs
    (a file as a whole, so its module fixtures are built once): the long runs train in the background
    meanwhile, instead of the session waiting for them."""

    def waits(item: pytest.Item) -> int:
        names = set(getattr(item, "fixturenames", ()))
        return 2 if names & LONG_RUNS else int("quick_run" in names)

    group: dict[str, int] = {}
    for item in items:
        group[item.nodeid.split("::")[0]] = max(group.get(item.nodeid.split("::")[0], 0), waits(item))
    items.sort(key=lambda item: group[item.nodeid.split("::")[0]])  # stable: files keep their order


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    factory = session.config._tmp_path_factory  # the tmp_path_factory fixture's object
    for name in SHARED_RUNS:
        if name in wanted:
            _start(name, factory)
    for name in BACKGROUND_TASKS:
        if name in wanted:
            _task(name, factory)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _stopping.set()
    for proc in list(_running):  # a background task's process: its task then cleans up
        os.killpg(proc.pid, signal.SIGKILL)
    if "slurm_run" in _tasks:  # the cluster goes down before the session ends
        _tasks["slurm_run"].thread.join(timeout=150)
    for run in _started.values():  # a run no test waited for (-x, a keyboard interrupt): stop it
        if run.starter is not None:
            run.starter.join(timeout=5)
        if run.process is not None and run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The quick run and Snakemake's output."""
    run = _start("quick_run", tmp_path_factory)
    return run.workdir, run.result()


@pytest.fixture(scope="session")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The completed run of the embedded default."""
    run = _start("completed_run", tmp_path_factory)
    run.result()
    return run.workdir


def start_snakemake(workdir: Path, *args: str, output: Path | None = None) -> subprocess.Popen:
    """Real Snakemake in the background, in a process group of its own (so a test can signal it); its
    output to `output`/snakemake.stdout and .stderr, or nowhere."""
    cmd, env = snakemake_call(workdir, args, None)
    if output is None:
        quiet = subprocess.DEVNULL
        return subprocess.Popen(cmd, stdout=quiet, stderr=quiet, env=env, start_new_session=True)
    with (output / "snakemake.stdout").open("w") as out, (output / "snakemake.stderr").open("w") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)


def xtuner_processes_in(workdir: Path) -> list[str]:
    """Command lines of XTuner tools running in `workdir` (other tests may train elsewhere)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if "xtuner_tools" in cmd and Path(cwd) == workdir:
            found.append(cmd)
    return found


def interrupt_once(proc: subprocess.Popen, workdir: Path, pattern: str, timeout: float = 300) -> list[str]:
    """Ctrl-C (SIGINT to its process group) to a started workflow once `pattern` (a glob in `workdir`)
    matches; returns the matches. The workflow must stop, and no XTuner tool may outlive it."""
    deadline = time.monotonic() + timeout
    try:
        while not list(workdir.glob(pattern)):
            assert proc.poll() is None, f"the workflow ended before {pattern} appeared"
            assert time.monotonic() < deadline, f"no {pattern} within {timeout} s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)
    assert not xtuner_processes_in(workdir), "an XTuner tool outlived the workflow"
    return sorted(p.name for p in workdir.glob(pattern))


# mmengine writes it once a checkpoint is complete (the checkpoint file itself appears while being written)
LLAVA_PRETRAIN_CHECKPOINTED = "results/llava/pretrain/work_dir/last_checkpoint"


# The LLaVA tests' sizes: the tiniest that still shows learning (measured: 0.80 of the 60 held-out images
# fine-tuned, 0.00 projector-only). The embedded default (2400 finetune records, 120 test images) reaches
# 0.98: README "LLaVA" has the command.
LLAVA_TEST_SIZES = {
    "llava.data.generated.pretrain": 640,  # 40 iterations of 16
    "llava.pretrain.save_steps": 10,  # the Ctrl-C comes after the first checkpoint, 30 iterations before the end
    "llava.data.generated.finetune": 800,  # 100 iterations of 8
    "llava.data.generated.test": 60,
}


def llava_config() -> dict[str, Any]:
    """The config of the shared LLaVA run: the embedded default at LLAVA_TEST_SIZES."""
    config = completed_config()
    for dotted, value in LLAVA_TEST_SIZES.items():
        set_key(config, dotted, value)
    return config


def build_llava_run(factory: pytest.TempPathFactory) -> Path:
    """The LLaVA target (llava_config()), in a copy of the completed text run (whose base model is its
    LLM), as a user meets it: started, stopped by Ctrl-C once the pretrain stage has written its first
    checkpoint, and run again to the end (the log of the stopped run is kept as
    logs/llava/train_pretrain.interrupted.log)."""
    completed = _start("completed_run", factory)
    completed.result()
    workdir = factory.mktemp("llava") / "run"
    copy_run(completed.workdir, workdir)
    write_config(workdir, llava_config())
    interrupt_once(start_snakemake(workdir, "--cores", "2", "llava"), workdir, LLAVA_PRETRAIN_CHECKPOINTED)
    log = workdir / "logs" / "llava" / "train_pretrain.log"
    shutil.copy(log, log.with_name("train_pretrain.interrupted.log"))
    if not _stopping.is_set():
        snakemake(workdir, "--cores", "2", "llava", check=True, timeout=1200)
    return workdir


def _wait_for_first_runs() -> None:
    """Until every started one of FIRST_RUNS has ended (failed or not), or the session ends."""

    def busy() -> bool:
        runs = [run for name, run in list(_started.items()) if name in FIRST_RUNS]
        starting = any(r.starter is not None and r.starter.is_alive() for r in runs)
        running = any(r.process is not None and r.process.poll() is None for r in runs)
        return starting or running or any(t.thread.is_alive() for n, t in list(_tasks.items()) if n in FIRST_RUNS)

    while busy() and not _stopping.is_set():
        time.sleep(1)


def slurm_config() -> dict[str, Any]:
    """Every stage, shortened: how the jobs run is tested on SLURM, not what they learn."""
    config = default_config()
    config["base_model"]["general_skill"]["epochs"] = 10
    config["base_model"]["tiny"].update(hidden_size=64, intermediate_size=128, num_layers=2)
    config["xtuner"]["max_epochs"] = 2
    return config


_running: list[subprocess.Popen] = []  # what background tasks run now: stopped if the session ends first


def build_slurm_run(factory: pytest.TempPathFactory) -> SlurmRun:
    """slurm_config() through the SLURM profile on a one-node cluster (tests/slurmrun.py). A tail run (see
    FIRST_RUNS): it mostly waits on SLURM."""
    from slurmrun import run_on_slurm

    _wait_for_first_runs()
    if _stopping.is_set():
        raise AssertionError("the session ended before the SLURM run started")
    workdir = factory.mktemp("slurm") / "run"
    write_config(workdir, slurm_config())
    return run_on_slurm(workdir, _running)


class BackgroundTask:
    """A shared run built by several steps (not one Snakemake call), in a thread of its own."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(build,), daemon=True)
        self.thread.start()

    def _run(self, build: Callable[[], Any]) -> None:
        try:
            self.value = build()
        except BaseException as e:  # handed to the test that asks for the run
            self.error = e

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout=timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the shared run was not ready within {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


BACKGROUND_TASKS: dict[str, Callable[[pytest.TempPathFactory], Any]] = {
    "llava_run": build_llava_run,
    "slurm_run": build_slurm_run,
}
_tasks: dict[str, BackgroundTask] = {}


def _task(name: str, factory: pytest.TempPathFactory) -> BackgroundTask:
    if name not in _tasks:
        _tasks[name] = BackgroundTask(lambda: BACKGROUND_TASKS[name](factory))
    return _tasks[name]


@pytest.fixture(scope="session")
def llava_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared LLaVA run (build_llava_run), built in the background once the completed run is done.
    Never modify it (copy it)."""
    return _task("llava_run", tmp_path_factory).result(timeout=3000)


@pytest.fixture(scope="session")
def slurm_run(tmp_path_factory: pytest.TempPathFactory) -> SlurmRun:
    """The workflow on a real SLURM (build_slurm_run)."""
    return _task("slurm_run", tmp_path_factory).result(timeout=3000)


# -- a base model from the Hugging Face Hub (tests/fakehub.py stands in for the hub) ----------------------------------
HUB_ID = "internlm/internlm2-chat-1_8b"  # the real model's id; the fake hub serves a tiny model under it
HUB_RUN_TARGETS = ("results/train/final_checkpoint.pth", "results/report/run.html")


def hub_env(hf_home: Path, endpoint: str, offline: bool) -> dict[str, str | None]:
    """The hub client's settings for Snakemake and its jobs: its own cache (HF_HOME), the endpoint, offline or not."""
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": None,
        "HUGGINGFACE_HUB_CACHE": None,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "1" if offline else None,
        "TRANSFORMERS_OFFLINE": None,
    }


def closed_port() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (connections are refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def hub_config() -> dict[str, Any]:
    """The smallest run (.test/config/config.yaml: 48 identity records x 4 epochs = 24 iterations) on the hub model."""
    config = quick_config()
    config["base_model"]["path"] = HUB_ID
    return config


@dataclass(frozen=True)
class HubRun:
    workdir: Path  # a run through train and run_info on the downloaded model (the later stages read its files alike)
    hf_home: Path  # the hub client's cache it filled
    model: Path  # what the fake hub served
    commit: str  # the commit the fake hub served
    endpoint: str  # the fake hub's address (stopped now: connections are refused)
    requests: list[tuple[str, str, str | None]]  # what the fake hub was asked
    stderr: str  # Snakemake's


@pytest.fixture(scope="session")
def hub_run(tmp_path_factory: pytest.TempPathFactory) -> HubRun:
    """`base_model.path: internlm/internlm2-chat-1_8b` with the hub reachable (the fake one, serving a tiny
    model) and an empty cache: the real client downloads it, and the workflow trains on it. It stops after the
    train stage: adapter and merge read resources/base_model as train does, a directory of links as every
    local model's (tests/test_recipes.py runs them on one)."""
    from fakehub import FakeHub, repo_from_dir
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model

    root = tmp_path_factory.mktemp("hub")
    model = root / "served"
    build_tiny_model(TinyModelSpec(1024, 64, 128, 2, 4, 1024, 0), model)
    repo = repo_from_dir(model)
    workdir, hf_home = root / "run", root / "hf_home"
    write_config(workdir, hub_config())
    with FakeHub({HUB_ID: repo}) as hub:
        env = hub_env(hf_home, hub.endpoint, offline=False)
        proc = snakemake(workdir, HUB_RUN_TARGETS[0], HUB_RUN_TARGETS[1], env=env, check=True)
    return HubRun(workdir, hf_home, model, repo.commit, hub.endpoint, list(hub.requests), proc.stderr)


@pytest.fixture(scope="session")
def internlm2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest full run (.test/config/config.yaml) on a tiny InternLM2 base model: final model and
    evaluation (never modify it)."""
    run = _start("internlm2_run", tmp_path_factory)
    run.result()
    return run.workdir


@pytest.fixture(scope="session")
def tutorial_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial recipe's run (see tutorial_config)."""
    run = _start("tutorial_run", tmp_path_factory)
    run.result()
    return run.workdir
