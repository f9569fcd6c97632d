"""Base models from the Hugging Face Hub: the real client (huggingface_hub) against a fake hub on 127.0.0.1
(tests/fakehub.py), writing a real cache in a temporary HF_HOME; no network is used.

The workflow: a hub id downloads and trains (the session fixture `hub_run`), runs again from the cache
offline and with the hub unreachable, and is refused before any job when neither cached nor reachable.
The module (xtflow.hub) in processes of their own, as Snakemake runs it: the client reads HF_HOME,
HF_ENDPOINT and HF_HUB_OFFLINE when it is imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    HUB_ID,
    HubRun,
    closed_port,
    default_config,
    hub_config,
    hub_env,
    snakemake,
    write_config,
)
from fakehub import FakeHub, Repo, repo_from_dir
from xtflow import hub
from xtflow.errors import XtflowError
from xtflow.progress import ProgressLine

FOLDER = "models--internlm--internlm2-chat-1_8b"


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, "the run succeeded"
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("xtflow: error")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def client_env(hf_home: Path, endpoint: str, offline: bool = False) -> dict[str, str]:
    env = {**os.environ}
    for key, value in hub_env(hf_home, endpoint, offline).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def python(code: str) -> list[str]:
    """A fresh Python running `code` with `from xtflow import hub` done (the client reads its settings at import)."""
    return [sys.executable, "-c", "from pathlib import Path\nfrom xtflow import hub\n" + code]


def hub_call(code: str, hf_home: Path, endpoint: str, offline: bool = False) -> subprocess.CompletedProcess:
    env = client_env(hf_home, endpoint, offline)
    return subprocess.run(python(code), capture_output=True, text=True, env=env, timeout=120, check=False)


def fetch_code(out: Path, revision: str | None = None, every: float = 30.0) -> str:
    return (
        f"hub.fetch(hub.parse_source({HUB_ID!r}, {revision!r}), Path({str(out)!r}), every={every})\n"
        f"print('record', hub.source_record(Path({str(out)!r})))"
    )


# -- the workflow -----------------------------------------------------------------------------------------------------
def test_hub_id_downloads_into_the_cache_and_trains(hub_run: HubRun) -> None:
    run, commit = hub_run.workdir, hub_run.commit
    assert f"xtflow: {HUB_ID} (revision main, commit {commit}) will be downloaded from {hub_run.endpoint}" in (
        hub_run.stderr
    )
    snapshot = hub_run.hf_home / "hub" / FOLDER / "snapshots" / commit
    assert (hub_run.hf_home / "hub" / FOLDER / "refs" / "main").read_text() == commit  # the client's own layout
    base = run / "resources" / "base_model"
    assert (base / "model.safetensors").is_symlink()
    assert (base / "model.safetensors").readlink() == snapshot / "model.safetensors"
    assert (base / "model.safetensors").read_bytes() == (hub_run.model / "model.safetensors").read_bytes()
    assert hub.source_record(base) == {"hub": "huggingface", "repo_id": HUB_ID, "revision": "main", "commit": commit}
    log = (run / "logs" / "download_model.log").read_text(encoding="utf-8")
    assert f"xtflow: fetching {HUB_ID} (revision main = commit {commit}) from {hub_run.endpoint}: 7 files" in log
    assert "xtflow: fetched " in log and "\r" not in log  # plain lines, no progress-bar redraws
    assert any(m == "GET" and p.endswith(f"/resolve/{commit}/model.safetensors") for m, p, _ in hub_run.requests)
    # asked only by the check before any job (1) and the download job (its check, the file listing, and
    # snapshot_download: 3, plus the files); transformers given an id would have asked for /resolve/main/...
    api = [p for _, p, _ in hub_run.requests if p.startswith(f"/api/models/{HUB_ID}")]
    files = [p for _, p, _ in hub_run.requests if p.startswith(f"/{HUB_ID}/resolve/{commit}/")]
    assert len(api) == 4 and len(api) + len(files) == len(hub_run.requests), hub_run.requests
    # the rest of the workflow saw a local directory: it trained, and the run info names the commit
    train_log = (run / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert "xtflow: 48 samples, 6 iterations/epoch x 4 epoch(s) = 24 iterations" in train_log
    assert "Iter(train) [20/24]" in train_log
    assert (run / "results" / "train" / "final_checkpoint.pth").is_file()
    info = (run / "results" / "report" / "run.html").read_text(encoding="utf-8")
    assert f"<td>commit</td><td>{commit}</td>" in info and f"<td>id</td><td>{HUB_ID}</td>" in info


@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_cached_model_runs_without_the_hub(hub_run: HubRun, tmp_path: Path, how: str) -> None:
    """HF_HUB_OFFLINE=1, or no hub answering (here: connection refused): the cache is used, the commit recorded."""
    write_config(tmp_path, hub_config())
    env = hub_env(hub_run.hf_home, closed_port(), offline=how == "offline")
    targets = ["results/report/run.html"] + (["results/report/dataset.html"] if how == "offline" else [])
    snakemake(tmp_path, *targets, env=env, check=True)
    info = (tmp_path / "results" / "report" / "run.html").read_text(encoding="utf-8")
    assert f"<td>commit</td><td>{hub_run.commit}</td>" in info
    log = (tmp_path / "logs" / "download_model.log").read_text(encoding="utf-8")
    assert "xtflow: fetching" not in log
    if how == "unreachable":
        assert "failed (Connection refused): using the cached commit" in log
    else:  # the tokenizer loaded from the linked snapshot, with no network
        assert "tokens per record" in (tmp_path / "results" / "report" / "dataset.html").read_text(encoding="utf-8")


def test_download_runs_where_snakemake_runs_on_slurm(hub_run: HubRun, tmp_path: Path) -> None:
    """On a cluster the download runs beside Snakemake (a login node has the network): with the SLURM executor
    and no SLURM to submit to, download_model still runs, while a job that is submitted (dataset) fails."""
    write_config(tmp_path, hub_config())
    slurm = ["--executor", "slurm", "--jobs", "2", "--slurm-init-seconds-before-status-checks", "1", "--keep-going"]
    resources = ["--default-resources", "slurm_account=none", "slurm_partition=none"]
    env = hub_env(hub_run.hf_home, closed_port(), offline=True)
    proc = snakemake(tmp_path, "resources/base_model", "results/data/train.json", *slurm, *resources, env=env)
    assert proc.returncode != 0  # the dataset job could not be submitted
    assert "localrule download_model:" in proc.stderr and "\nrule dataset:" in proc.stderr
    assert hub.source_record(tmp_path / "resources" / "base_model")["commit"] == hub_run.commit
    assert not (tmp_path / "results" / "data" / "train.json").exists()


@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_not_cached_and_no_hub_is_refused_before_any_job(tmp_path: Path, how: str) -> None:
    work, hf_home = tmp_path / "run", tmp_path / "hf_home"
    write_config(work, hub_config())
    proc = snakemake(work, env=hub_env(hf_home, closed_port(), offline=how == "offline"))
    line = _error_line(proc)
    why = "HF_HUB_OFFLINE is set" if how == "offline" else "cannot be reached (Connection refused)"
    assert line.startswith(f"xtflow: error: config key 'base_model.path': '{HUB_ID}' (no local directory,")
    assert f"is not in the Hugging Face cache {hf_home / 'hub'} and " in line and why in line
    assert f"`hf download {HUB_ID}`" in line and f"`hf download {HUB_ID} --local-dir DIR`" in line
    assert not any((work / d).exists() for d in ("resources", "results", "logs", "benchmarks"))


def test_hub_answers_no_such_model_or_revision(tmp_path: Path) -> None:
    with FakeHub({}) as fake:
        proc = hub_call("hub.preflight(hub.parse_source('models/nope'))", tmp_path, fake.endpoint)
        assert f"'models/nope' is no local directory and no model on {fake.endpoint}" in proc.stderr
    work = tmp_path / "run"
    config = hub_config()
    config["base_model"]["revision"] = "v9"
    write_config(work, config)
    with FakeHub({HUB_ID: Repo({"config.json": b"{}"})}) as fake:
        proc = snakemake(work, "-n", env=hub_env(tmp_path / "hf", fake.endpoint, offline=False))
    assert f"config key 'base_model.revision': '{HUB_ID}' has no revision 'v9' on {fake.endpoint}" in _error_line(proc)


# -- the module -------------------------------------------------------------------------------------------------------
def test_parse_source_and_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.parse_source(HUB_ID) == hub.HubModel(HUB_ID)
    assert hub.parse_source(f"hf:{HUB_ID}", "v1") == hub.HubModel(HUB_ID, "v1", explicit=True)
    assert hub.parse_source(None) is None and hub.parse_source("/models/x") is None
    # for the model card (issue 15): the id, or None for a local directory and the tiny default
    config = hub_config()
    assert hub.hub_id(config) == hub.hub_id(config["base_model"]) == hub.hub_id(f"hf:{HUB_ID}") == HUB_ID
    assert hub.hub_id(default_config()) is None and hub.hub_id(str(tmp_path)) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "internlm" / "internlm2-chat-1_8b").mkdir(parents=True)
    assert hub.parse_source(HUB_ID) is None  # a local directory of that name wins; hf: asks for the hub
    with pytest.raises(XtflowError, match=r"'base_model.revision': set, but base_model.path is no hub id"):
        hub.parse_source(HUB_ID, "main")
    with pytest.raises(XtflowError, match="is null"):
        hub.parse_source(None, "main")
    with pytest.raises(XtflowError, match="is not a valid Hugging Face id"):
        hub.parse_source("hf:bad..id/x")
    ms = "Shanghai_AI_Laboratory/internlm2-chat-1_8b"
    with pytest.raises(XtflowError) as err:
        hub.parse_source(f"modelscope:{ms}")
    assert f"ModelScope ids ('modelscope:{ms}') are not supported" in str(err.value)
    assert f"`modelscope download --model {ms} --local_dir DIR`" in str(err.value)


def test_progress_lines_count_bytes_on_disk(tmp_path: Path) -> None:
    lines: list[str] = []
    blobs = {"a" * 64: 4_000_000, "b" * 40: 1_000_000}
    (tmp_path / ("b" * 40)).write_bytes(b"x" * 1_000_000)  # finished
    terminal = io.StringIO()
    live = ProgressLine("download_model", terminal, every=0)
    with hub.DownloadProgress(tmp_path, blobs, every=0.05, write=lines.append, live=live) as progress:
        assert progress.on_disk() == 1_000_000
        part = tmp_path / ("a" * 64 + ".incomplete")
        for _ in range(4):
            with part.open("ab") as f:
                f.write(b"x" * 500_000)
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("(3.0 MB of" in ln for ln in lines):
            time.sleep(0.05)
    assert lines and all(ln.startswith("xtflow: download ") for ln in lines)
    assert lines[-1].startswith("xtflow: download  60% (3.0 MB of 5.0 MB), ") and "s left" in lines[-1]
    shown = terminal.getvalue().splitlines()  # the job's live line (not a terminal here: one line per update)
    assert shown and all(ln.startswith("xtflow download_model: ") for ln in shown)
    assert shown[-1].startswith("xtflow download_model:  60% (3.0 MB of 5.0 MB), ")


def test_missing_shards_make_a_snapshot_incomplete(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "model-00001-of-00002.safetensors"):
        (tmp_path / name).write_text("{}")
    assert hub.missing_files(tmp_path) is None
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert hub.missing_files(tmp_path) == "misses 1 of its 2 weight shards (model-00002-of-00002.safetensors, ...)"


def test_cache_states_partial_other_revision_and_a_moved_branch(hub_run: HubRun, tmp_path: Path) -> None:
    hf_home = tmp_path / "hf_home"
    shutil.copytree(hub_run.hf_home, hf_home, symlinks=True)
    gone = closed_port()
    proc = hub_call(f"hub.preflight(hub.parse_source({HUB_ID!r}, 'v1.0'))", hf_home, gone, offline=True)
    assert f"is in the Hugging Face cache {hf_home / 'hub'}, but not at revision 'v1.0' (cached: main = " in proc.stderr
    # a pinned commit that is cached: no request at all (the endpoint refuses connections)
    proc = hub_call(fetch_code(tmp_path / "pinned", hub_run.commit), hf_home, gone)
    assert proc.returncode == 0 and f"'commit': '{hub_run.commit}'" in proc.stdout, proc.stderr
    assert "asking" not in proc.stdout
    # the branch moved on the hub: the new commit is fetched; unchanged files are blobs already in the cache
    moved = repo_from_dir(hub_run.model, **{"generation_config.json": b'{"max_new_tokens": 7}'})
    with FakeHub({HUB_ID: moved}) as fake:
        proc = hub_call(fetch_code(tmp_path / "moved"), hf_home, fake.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert f"'commit': '{moved.commit}'" in proc.stdout and moved.commit != hub_run.commit
    assert (hf_home / "hub" / FOLDER / "refs" / "main").read_text() == moved.commit
    assert "of it already in the cache" in proc.stdout
    fetched = [path for method, path, _ in fake.requests if method == "GET" and "/resolve/" in path]
    assert not any(path.endswith("model.safetensors") for path in fetched)
    # an interrupted download (weights missing from the snapshot): refused offline, naming what is missing
    (hf_home / "hub" / FOLDER / "snapshots" / moved.commit / "model.safetensors").unlink()
    proc = hub_call(f"hub.preflight(hub.parse_source({HUB_ID!r}))", hf_home, gone, offline=True)
    assert "is only partly in the Hugging Face cache" in proc.stderr and "its snapshot has no weights" in proc.stderr
    with FakeHub({HUB_ID: moved}) as fake:  # online, the next run completes it
        proc = hub_call(fetch_code(tmp_path / "completed"), hf_home, fake.endpoint)
    assert proc.returncode == 0 and f"'commit': '{moved.commit}'" in proc.stdout, proc.stderr
    weights = "model.safetensors"
    assert (tmp_path / "completed" / weights).read_bytes() == (hub_run.model / weights).read_bytes()


def test_other_formats_are_left_out(hub_run: HubRun, tmp_path: Path) -> None:
    """transformers loads model.safetensors: the repo's TensorFlow and PyTorch-pickle copies are not downloaded."""
    repo = repo_from_dir(hub_run.model, **{"tf_model.h5": b"h" * 1000, "pytorch_model.bin": b"p" * 1000})
    with FakeHub({HUB_ID: repo}) as fake:
        proc = hub_call(fetch_code(tmp_path / "out"), tmp_path / "hf_home", fake.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert "7 files" in proc.stdout and "(2 files in formats transformers does not load left out)" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in hub_run.model.iterdir()] + [hub.SOURCE_FILE]
    )


def incomplete_sizes(blobs: Path) -> list[int]:
    """The sizes of the client's unfinished blobs; one that is moved into place while this looks is skipped."""
    sizes = []
    for f in blobs.glob("*.incomplete"):
        with contextlib.suppress(FileNotFoundError):
            sizes.append(f.stat().st_size)
    return sizes


def test_a_killed_download_resumes(hub_run: HubRun, tmp_path: Path) -> None:
    """Killed midway (Ctrl-C, a lost node): the next run continues the unfinished blobs with Range requests."""
    big = os.urandom(24_000_000)
    repo = repo_from_dir(hub_run.model, **{"model.safetensors": big})
    hf_home = tmp_path / "hf_home"
    blobs = hf_home / "hub" / FOLDER / "blobs"
    with FakeHub({HUB_ID: repo}, throttle=0.01) as fake:  # about 6 MB/s
        code = python(fetch_code(tmp_path / "out", every=0.5))
        first = subprocess.Popen(code, env=client_env(hf_home, fake.endpoint), stdout=subprocess.DEVNULL)
        # killed once the weights' blob is partly written: a small file's blob, complete but not yet moved, would
        # be finished without any request, and the weights' blob not yet begun be fetched from its first byte
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(1_000_000 <= n < len(big) for n in incomplete_sizes(blobs)):
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        partial = max(incomplete_sizes(blobs), default=0)
        assert 1_000_000 <= partial < len(big), f"the weights' blob held {partial} bytes when killed"
        proc = hub_call(fetch_code(tmp_path / "out", every=0.5), hf_home, fake.endpoint)
        ranges = [rng for _, _, rng in fake.requests if rng]
    assert proc.returncode == 0, proc.stderr
    assert "of it already in the cache" in proc.stdout and "xtflow: download " in proc.stdout
    assert ranges and all(rng.startswith("bytes=") and rng != "bytes=0-" for rng in ranges), fake.requests
    assert not list(blobs.glob("*.incomplete"))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == big


def test_a_broken_transfer_is_retried_within_the_job(hub_run: HubRun, tmp_path: Path) -> None:
    big = os.urandom(3_000_000)
    repo = repo_from_dir(hub_run.model, **{"model.safetensors": big})
    with FakeHub({HUB_ID: repo}, cut_after=1_000_000) as fake:
        proc = hub_call(fetch_code(tmp_path / "out"), tmp_path / "hf_home", fake.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert "xtflow: download interrupted (" in proc.stdout and "); resuming (attempt 2 of 3)" in proc.stdout
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == big
