"""Base models from the Hugging Face Hub: `base_model.path: internlm/internlm2-chat-1_8b` (+ `base_model.revision`).

Parse time (workflow/rules/common.smk, before any job): `preflight` looks the model up in the hub
client's cache, with no network. Only a model that is not (completely) cached costs one request with
a short timeout, to ask the hub for it; a model neither cached nor reachable is refused in one line.

Job time (rule download_model): `fetch` takes the cached snapshot, or downloads it into the client's
cache with `huggingface_hub.snapshot_download` (resumable: unfinished files stay as
blobs/<etag>.incomplete and the next call continues them), and links the snapshot's files as
resources/base_model with `xtflow_hub_source.json` beside them (the commit used). Every later stage
sees an ordinary local directory and never the hub (transformers, given an id and no network, retries
each file for minutes before it falls back to the cache).

The client reads HF_HUB_CACHE / HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN once, when it is first
imported, and so does everything here (through `huggingface_hub.constants`). Snakemake's jobs inherit its
environment, so the parse-time check and the jobs see the same cache, endpoint and offline switch.

ModelScope ids (`modelscope:org/name`) are refused with a line that says how to download such a model
into a directory (README "Base models from a model hub" explains why).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow.base_model import model_dir_problem
from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_dir
from xtflow.progress import ProgressLine

KEY = "base_model.path"
HF_PREFIX = "hf:"
MODELSCOPE_PREFIX = "modelscope:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
PROBE_TIMEOUT = 5.0  # seconds for the one "does the hub have it?" request
PROGRESS_EVERY = 30.0  # seconds between progress lines in the download log
SOURCE_FILE = "xtflow_hub_source.json"  # in resources/base_model: where the model came from
# Weights transformers' PyTorch loading never reads: other frameworks' formats, always skipped, and
# PyTorch pickles when the repo has safetensors weights (transformers then loads those).
OTHER_FORMATS = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.gguf"]
PICKLED = ["*.bin", "*.pth", "*.pt"]
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class HubModel:
    """A model on the Hugging Face Hub; `revision` None means the default branch."""

    repo_id: str
    revision: str | None = None
    explicit: bool = False  # given as hf:org/name (no local directory was looked for)

    @property
    def rev(self) -> str:
        return self.revision or "main"

    def download_command(self, *extra: str) -> str:
        """The client's own command that fetches this model (on another machine)."""
        rev = [f"--revision {self.revision}"] if self.revision else []
        return " ".join(["hf download", self.repo_id, *rev, *extra])


@dataclass(frozen=True)
class Snapshot:
    """A snapshot folder of the cache: <cache>/models--org--name/snapshots/<commit>."""

    path: Path
    missing: str | None  # None: a usable model; else what it lacks (an interrupted download)

    @property
    def commit(self) -> str:
        return self.path.name


class HubUnreachable(Exception):
    """The hub did not answer (no network, no DNS, timeout, offline mode, server error)."""


# -- what base_model.path names ---------------------------------------------------------------------------------------
def parse_source(path: str | None, revision: str | None = None) -> HubModel | None:
    """`hf:org/name`, or an `org/name` that is no existing local path -> HubModel; a local path or None -> None.

    Raises XtflowError (one line) for ModelScope ids, malformed ids, and a revision given for a local model."""
    if path is not None and path.startswith(MODELSCOPE_PREFIX):
        repo = path[len(MODELSCOPE_PREFIX) :]
        raise XtflowError(
            f"config key '{KEY}': ModelScope ids ('{path}') are not supported: download the model with "
            f"`modelscope download --model {repo} --local_dir DIR` (pip install modelscope) and give DIR"
        )
    explicit = path is not None and path.startswith(HF_PREFIX)
    if path is None or not (explicit or (HUB_ID.match(path) and not Path(path).exists())):
        if revision is not None:
            what = f"'{path}' is a local path" if path else "it is null (the tiny default)"
            raise XtflowError(f"config key 'base_model.revision': set, but {KEY} is no hub id: {what}")
        return None
    repo = path[len(HF_PREFIX) :] if explicit else path
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not HUB_ID.match(repo):
            raise HFValidationError("expected org/name")
        validate_repo_id(repo)
    except HFValidationError as e:
        raise XtflowError(f"config key '{KEY}': '{path}' is not a valid Hugging Face id ({e})") from None
    return HubModel(repo, revision, explicit)


def hub_id(source: Mapping[str, Any] | str | None) -> str | None:
    """The Hugging Face id of the base model (e.g. for a model card's `base_model:`), or None for a local
    directory and the tiny default. `source`: the workflow config, its `base_model` section, or `base_model.path`."""
    if isinstance(source, Mapping):
        section = source.get("base_model", source)
        source = section.get("path") if isinstance(section, Mapping) else None
    model = parse_source(source) if source else None
    return model.repo_id if model else None


# -- the client's cache, no network -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def endpoint() -> str:
    """The hub's address (HF_ENDPOINT, e.g. a mirror; else https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT or "HF_ENDPOINT ('')"


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def repo_folder(model: HubModel) -> Path:
    """<cache>/models--org--name, the client's documented layout."""
    return cache_dir() / ("models--" + model.repo_id.replace("/", "--"))


def cached_revisions(model: HubModel) -> dict[str, str]:
    """What the cache holds of this repo: {branch or tag: commit} from refs/, plus snapshots no ref names."""
    folder = repo_folder(model)
    found: dict[str, str] = {}
    refs = folder / "refs"
    if refs.is_dir():
        for ref in sorted(p for p in refs.rglob("*") if p.is_file()):
            found[ref.relative_to(refs).as_posix()] = ref.read_text(encoding="utf-8").strip()
    snapshots = folder / "snapshots"
    if snapshots.is_dir():
        for snap in sorted(snapshots.iterdir()):
            if snap.name not in found.values():
                found[snap.name] = snap.name
    return found


def missing_files(snapshot: Path) -> str | None:
    """None if the snapshot holds a usable model, else what is missing. The client creates a snapshot folder
    with its first file, and its local-files-only look-up returns the folder even when files are missing."""
    problem = model_dir_problem(snapshot)
    if problem:
        return problem
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (snapshot / index).is_file():
            shards = sorted(set(json.loads((snapshot / index).read_text(encoding="utf-8"))["weight_map"].values()))
            absent = [s for s in shards if not (snapshot / s).is_file()]
            if absent:
                return f"misses {len(absent)} of its {len(shards)} weight shards ({absent[0]}, ...)"
    return None


def find_cached(model: HubModel) -> Snapshot | None:
    """The cached snapshot of model.revision, by the client's own resolution (refs/<branch> -> snapshots/<commit>,
    or snapshots/<commit> for a commit), with no network. None: not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(model.repo_id, revision=model.rev, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    return Snapshot(Path(os.path.abspath(path)), missing_files(path))


# -- the hub, one short request ---------------------------------------------------------------------------------------
def _short(e: BaseException) -> str:
    text = str(e)
    for hint in (
        "Name or service not known",
        "Temporary failure in name resolution",
        "Connection refused",
        "Network is unreachable",
        "No route to host",
        "timed out",
    ):
        if hint in text:
            return hint
    return type(e).__name__


def probe(model: HubModel, timeout: float = PROBE_TIMEOUT) -> str:
    """The commit the hub serves for model.revision: ONE request (GET /api/models/<id>/revision/<rev>), no retries.
    XtflowError: the hub says there is no such model or revision (or it is gated); HubUnreachable: no answer."""
    import requests
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = endpoint()
    try:
        return HfApi().model_info(model.repo_id, revision=model.revision, timeout=timeout).sha
    except OfflineModeIsEnabled:
        raise HubUnreachable("HF_HUB_OFFLINE is set") from None
    except GatedRepoError:  # before RepositoryNotFoundError: it is a subclass
        raise XtflowError(
            f"config key '{KEY}': '{model.repo_id}' is gated on {where}: accept its terms on the model's page, "
            "then log in (`hf auth login`) or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        local = "" if model.explicit else "no local directory and "
        raise XtflowError(
            f"config key '{KEY}': '{model.repo_id}' is {local}no model on {where} "
            "(if it is private: log in with `hf auth login` or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise XtflowError(
            f"config key 'base_model.revision': '{model.repo_id}' has no revision '{model.rev}' on {where}"
        ) from None
    except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL):
        raise HubUnreachable("HF_ENDPOINT is no http(s) URL") from None
    except requests.Timeout:
        raise HubUnreachable(f"no answer in {timeout:g} s") from None
    except requests.ConnectionError as e:
        raise HubUnreachable(_short(e)) from None
    except HfHubHTTPError as e:
        raise HubUnreachable(f"HTTP {e.response.status_code}" if e.response is not None else _short(e)) from None
    except ValueError as e:  # an answer that is not the hub's JSON (a captive portal, a wrong HF_ENDPOINT)
        raise HubUnreachable(f"not a model hub's answer ({_short(e)})") from None


def unavailable(model: HubModel, why: str) -> str:
    """The one line for a model that is neither (completely) cached nor to be had from the hub now."""
    cache = cache_dir()
    snap = find_cached(model)
    held = cached_revisions(model)
    if snap is not None:
        state = f"is only partly in the Hugging Face cache {cache} (its snapshot {snap.missing})"
    elif held:
        listed = ", ".join(k if k == v else f"{k} = {v[:7]}" for k, v in held.items())
        state = f"is in the Hugging Face cache {cache}, but not at revision '{model.rev}' (cached: {listed})"
    else:
        state = f"is not in the Hugging Face cache {cache}"
    what = ("" if model.explicit else "no local directory, so a Hugging Face id; ") + f"revision {model.rev}"
    return (
        f"config key '{KEY}': '{model.repo_id}' ({what}) {state} and {why}: "
        f"on a machine with network run `{model.download_command()}` and copy that cache's "
        f"{repo_folder(model).name} folder into {cache}, "
        f"or run `{model.download_command('--local-dir DIR')}` and give DIR as {KEY}"
    )


def preflight(model: HubModel, *, network: bool = True, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Parse-time check. None: the model is in the cache (nothing to say); a line: it will be downloaded.
    Raises XtflowError (one line) when it can be had neither from the cache nor from the hub.

    network=False (Snakemake parsing the workflow again inside a job, e.g. on a cluster node): never refuses."""
    snap = find_cached(model)
    if (snap is not None and snap.missing is None) or not network:
        return None
    if offline():
        raise XtflowError(unavailable(model, "HF_HUB_OFFLINE is set"))
    try:
        commit = probe(model, timeout)
    except HubUnreachable as e:
        raise XtflowError(unavailable(model, f"{endpoint()} cannot be reached ({e})")) from None
    return f"xtflow: {model.repo_id} (revision {model.rev}, commit {commit}) will be downloaded from {endpoint()}"


# -- job time: download, progress, link -------------------------------------------------------------------------------
def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class DownloadProgress:
    """How much of the expected blobs is on disk (finished blobs/<etag>, plus blobs/<etag>.incomplete), counted
    every second or so: a plain line for the log every `every` seconds, and the job's live line on the terminal
    (xtflow.progress). Independent of tqdm, whose per-file bars the client shows only on a terminal, as
    carriage-return redraws, and of the transport (HTTP, Xet)."""

    def __init__(
        self,
        blobs_dir: Path,
        blobs: dict[str, int],
        every: float,
        write: Callable[[str], None],
        live: ProgressLine | None = None,
    ):
        self.blobs_dir, self.blobs, self.every, self.write, self.live = blobs_dir, blobs, every, write, live
        self.total = sum(blobs.values())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def on_disk(self) -> int:
        done = 0
        for name, size in self.blobs.items():
            blob, part = self.blobs_dir / name, self.blobs_dir / f"{name}.incomplete"
            if blob.is_file():
                done += size
            elif part.is_file():
                done += min(part.stat().st_size, size)
        return done

    def state(self, done: int, rate: float | None) -> str:
        share = 100 * done / self.total if self.total else 100.0
        text = f"{share:3.0f}% ({_human(done)} of {_human(self.total)})"
        if rate:
            text += f", {_human(rate)}/s, about {max(0, self.total - done) / rate:.0f} s left"
        return text

    def _run(self) -> None:
        start, first = time.monotonic(), self.on_disk()  # the rate counts this job's bytes, not resumed ones
        logged = start
        while not self._stop.wait(min(1.0, self.every)):
            done, now = self.on_disk(), time.monotonic()
            # a rate (and the time left) once 1% more is on disk: the first seconds say little
            text = self.state(done, (done - first) / (now - start) if done - first >= self.total / 100 else None)
            if self.live:
                self.live.update(text)
            if now - logged >= self.every:
                self.write(f"xtflow: download {text}")
                logged = now

    def __enter__(self) -> DownloadProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.live:
            self.live.close()


def skipped_patterns(files: list[str]) -> list[str]:
    """Files of the repo the download leaves out (patterns for snapshot_download's ignore_patterns)."""
    return OTHER_FORMATS + (PICKLED if any(f in SAFETENSORS for f in files) else [])


def _download(model: HubModel, every: float, attempts: int, write: Callable[[str], None]) -> Path:
    import requests
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import disable_progress_bars, filter_repo_objects

    broken = (
        requests.exceptions.ChunkedEncodingError,
        requests.ConnectionError,
        requests.Timeout,
        LocalEntryNotFoundError,
        HfHubHTTPError,
    )
    try:
        info = HfApi().model_info(model.repo_id, revision=model.revision, files_metadata=True, timeout=30)
    except broken as e:
        raise XtflowError(f"cannot list the files of {model.repo_id} on {endpoint()} ({_short(e)})") from None
    siblings = info.siblings or []
    skip = skipped_patterns([s.rfilename for s in siblings])
    wanted = list(filter_repo_objects(siblings, ignore_patterns=skip, key=lambda s: s.rfilename))
    blobs = {(s.lfs.sha256 if s.lfs else s.blob_id): (s.size or 0) for s in wanted}
    progress = DownloadProgress(repo_folder(model) / "blobs", blobs, every, write, ProgressLine("download_model"))
    have = progress.on_disk()
    left_out = len(siblings) - len(wanted)
    write(
        f"xtflow: fetching {model.repo_id} (revision {model.rev} = commit {info.sha}) from {endpoint()}: "
        f"{len(wanted)} files, {_human(progress.total)}"
        + (f", {_human(have)} of it already in the cache" if have else "")
        + (f" ({left_out} files in formats transformers does not load left out)" if left_out else "")
        + f", into {cache_dir()}"
    )
    disable_progress_bars()  # off a terminal the client's bars are carriage-return redraws: noise in a log
    start = time.monotonic()
    with progress:
        for attempt in range(1, attempts + 1):
            try:  # with the branch name, so that the client writes refs/<branch> (offline runs resolve it)
                path = Path(snapshot_download(model.repo_id, revision=model.revision, ignore_patterns=skip))
                break
            except broken as e:  # the next call resumes from blobs/*.incomplete
                if attempt == attempts:
                    raise XtflowError(
                        f"downloading {model.repo_id} failed {attempts} times ({_short(e)}); "
                        "run the workflow again to resume from what is in the cache"
                    ) from None
                write(f"xtflow: download interrupted ({_short(e)}); resuming (attempt {attempt + 1} of {attempts})")
                time.sleep(min(30, 2**attempt))
    # trust the files, not the call's success (Xet transfers have ended with *.incomplete blobs left over)
    short = [
        s.rfilename
        for s in wanted
        if not (path / s.rfilename).is_file() or (s.size is not None and (path / s.rfilename).stat().st_size != s.size)
    ]
    if short:
        raise XtflowError(
            f"the download of {model.repo_id} is incomplete ({len(short)} files missing or short, e.g. {short[0]}); "
            "run the workflow again to resume"
        )
    write(f"xtflow: fetched {_human(progress.total - have)} in {time.monotonic() - start:.0f} s into {path}")
    return Path(os.path.abspath(path))


def fetch(
    model: HubModel,
    out: Path,
    *,
    every: float = PROGRESS_EVERY,
    attempts: int = 3,
    write: Callable[[str], None] = print,
) -> dict[str, str]:
    """Rule download_model: the model's snapshot in the client's cache (downloaded if need be), linked as `out`.

    Cached and complete: no request when the revision is a commit or HF_HUB_OFFLINE is set; otherwise one short
    request asks which commit the revision is at now (if the hub does not answer, or refuses, the cached commit
    is used and the log says so). Not cached, or the branch moved on: downloaded. Returns the source record."""
    snap = find_cached(model)
    cached = snap if snap is not None and snap.missing is None else None
    if cached and (offline() or COMMIT.match(model.rev)):
        path = cached.path
    elif offline():
        raise XtflowError(unavailable(model, "HF_HUB_OFFLINE is set"))
    else:
        try:
            commit = probe(model)
        except (HubUnreachable, XtflowError) as e:
            if cached is None and isinstance(e, XtflowError):
                raise
            if cached is None:
                raise XtflowError(unavailable(model, f"{endpoint()} cannot be reached ({e})")) from None
            write(f"xtflow: asking {endpoint()} about {model.repo_id} failed ({e}): using the cached commit")
            commit = cached.commit
        path = cached.path if cached and cached.commit == commit else _download(model, every, attempts, write)
    missing = missing_files(path)
    if missing:
        raise XtflowError(f"the snapshot of {model.repo_id} in {path} {missing}")
    record = {"hub": "huggingface", "repo_id": model.repo_id, "revision": model.rev, "commit": path.name}
    with atomic_dir(out) as tmp:
        for entry in sorted(path.iterdir()):
            (tmp / entry.name).symlink_to(entry)  # the snapshot's own link into blobs/, followed when read
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write(f"xtflow: {model.repo_id} (revision {model.rev}) at commit {path.name}, from {path}, linked as {out}")
    return record


def source_record(model_dir: Path) -> dict[str, str] | None:
    """What `fetch` recorded in a base model directory (hub, repo_id, revision, commit); None if it was not fetched."""
    f = Path(model_dir) / SOURCE_FILE
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
