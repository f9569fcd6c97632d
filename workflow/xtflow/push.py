"""Upload the published folders to a model hub: only `snakemake push` does, never another target.

Two routes (config `publish.hub`):
- `huggingface`: `HfApi.create_repo` (private as `publish.private`) and `HfApi.upload_folder`;
- `git`: any git remote with LFS (OpenXLab, ModelScope and Hugging Face all accept one): clone it
  (weights not downloaded), replace its files with the folder's, track the weights with git LFS,
  commit and push.

The Hugging Face token comes from the environment (`HF_TOKEN`) or the client's login
(`huggingface_hub.get_token()`), never from config, and is never printed or logged; a push without
one is refused before anything is uploaded. The git route uses git's own credentials (credential
helper, SSH key); a remote URL with a password in it is refused. `publish.dry_run` lists what
would be uploaded and uploads nothing. The record (results/publish/push.json) names each folder,
where it went, its files and their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_write_text, link_or_copy
from xtflow.hub import HUB_ID

# files git LFS stores (the patterns of Hugging Face's default .gitattributes that a model folder
# holds), and any file from LFS_MIN_BYTES up
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.model", "*.gguf", "*.h5", "*.msgpack", "*.onnx")
LFS_MIN_BYTES = 10 * 1024 * 1024
SKIPPED = (".*",)  # Snakemake's .snakemake_timestamp and the like
COMMITTER = ("xtflow", "xtflow@localhost")  # when git has no user.name / user.email


@dataclass(frozen=True)
class Destination:
    """One published folder and the repository it goes to."""

    folder: Path
    repo: str


def destinations(settings: dict[str, Any], model: Path, adapter: Path) -> list[Destination]:
    """The folders `push` uploads: the model to `publish.repo_id`, the adapter to
    `publish.adapter_repo_id` when set."""
    found = [(model, settings["repo_id"]), (adapter, settings["adapter_repo_id"])]
    return [Destination(folder, repo) for folder, repo in found if repo]


def check_repo(hub: str, key: str, repo: str | None) -> None:
    """A repository name fit for its hub (`owner/name`, or a git URL without a password in it)."""
    if repo is None:
        return
    if hub == "huggingface" and not HUB_ID.match(repo):
        raise XtflowError(f"config key '{key}': '{repo}' is not a Hugging Face repository id (owner/name)")
    if hub == "git":
        url = urlsplit(repo)
        if not (url.scheme in ("https", "http", "ssh", "git", "file") or re.match(r"^[\w.-]+@[\w.-]+:", repo)):
            raise XtflowError(
                f"config key '{key}': '{repo}' is not a git URL (https://..., ssh://..., user@host:path, file://...)"
            )
        if url.password:
            raise XtflowError(
                f"config key '{key}': the URL holds a password or token; leave it out and let git's "
                "credential helper or an SSH key supply it"
            )


def hf_token() -> str | None:
    """The Hugging Face token: HF_TOKEN, or the one `huggingface-cli login` stored (never config)."""
    from huggingface_hub import get_token

    return get_token()


def check_ready(settings: dict[str, Any]) -> None:
    """Refuse, in one line, a push that cannot succeed, before anything is uploaded (and before a
    workflow that ends in a push runs a job)."""
    for key in ("repo_id", "adapter_repo_id"):
        check_repo(settings["hub"], f"publish.{key}", settings[key])
    if not settings["repo_id"]:
        raise XtflowError("config key 'publish.repo_id': not set: name the repository to push results/publish/model to")
    if settings["hub"] == "huggingface" and not settings["dry_run"] and not hf_token():
        raise XtflowError(
            "no Hugging Face token: set HF_TOKEN in the environment or run `huggingface-cli login` "
            "(xtflow never reads a token from its config); nothing was uploaded"
        )


def push(settings: dict[str, Any], model: Path, adapter: Path, record: Path) -> dict[str, Any]:
    """Upload (or, dry run, list) the published folders; write and return the record."""
    check_ready(settings)
    entries = []
    for dest in destinations(settings, model, adapter):
        files = listing(dest.folder)
        entry: dict[str, Any] = {"folder": str(dest.folder), "repository": dest.repo, "files": files}
        if settings["dry_run"]:
            print(
                f"xtflow: dry run: would upload {dest.folder} ({len(files)} files) to {dest.repo} ({settings['hub']})"
            )
            for f in files:
                print(f"xtflow:   {f['path']}  {f['bytes']} bytes" + ("  (LFS)" if f["lfs"] else ""))
        elif settings["hub"] == "huggingface":
            entry.update(upload_to_huggingface(dest, settings["private"]))
        else:
            entry.update(push_with_git(dest))
        entries.append(entry)
    result = {"hub": settings["hub"], "dry_run": settings["dry_run"], "pushed": entries}
    if settings["dry_run"] and settings["hub"] == "huggingface":
        result["token"] = "found" if hf_token() else "none: a real push would be refused"
    atomic_write_text(record, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def listing(folder: Path) -> list[dict[str, Any]]:
    """The files that are uploaded: relative path, size, SHA-256 and whether git LFS stores them."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(fnmatch(part, pat) for part in rel.split("/") for pat in SKIPPED):
            continue
        size = path.stat().st_size
        out.append({"path": rel, "bytes": size, "sha256": sha256(path), "lfs": is_lfs(rel, size)})
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_lfs(rel: str, size: int) -> bool:
    return size >= LFS_MIN_BYTES or any(fnmatch(Path(rel).name, p) for p in LFS_PATTERNS)


# -- Hugging Face --------------------------------------------------------------------------------------


def upload_to_huggingface(dest: Destination, private: bool) -> dict[str, Any]:
    """create_repo (private as configured, kept if it exists) + upload_folder; the commit's URL."""
    from huggingface_hub import HfApi

    token = hf_token()
    api = HfApi(token=token)
    try:
        api.create_repo(dest.repo, private=private, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=dest.repo,
            folder_path=dest.folder,
            repo_type="model",
            commit_message=f"xtflow: publish {dest.folder.name}",
            ignore_patterns=list(SKIPPED) + [f"*/{p}" for p in SKIPPED],
        )
    except Exception as e:  # the client's HTTP and connection errors: one line, without the token
        line = (str(e).splitlines() or [type(e).__name__])[0]
        if token:
            line = line.replace(token, "***")
        raise XtflowError(f"upload of {dest.folder} to Hugging Face repository '{dest.repo}' failed: {line}") from None
    return {"commit": info.oid, "url": info.commit_url}


# -- git + LFS -----------------------------------------------------------------------------------------


def git(args: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    """Run git; a failure is one line with git's last message."""
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
        check=False,
    )
    if proc.stdout.strip() or proc.stderr.strip():
        print((proc.stdout + proc.stderr).rstrip())
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no message"])[-1]
        raise XtflowError(f"{what} failed: git {args[0]}: {last}")
    return proc.stdout


def push_with_git(dest: Destination) -> dict[str, Any]:
    """Clone the remote (LFS files not downloaded), make its tree the folder's, commit, push with LFS."""
    if shutil.which("git-lfs") is None:
        raise XtflowError("git LFS is not installed (the git-lfs package): the git route stores weights with it")
    what = f"push of {dest.folder} to {dest.repo}"
    with tempfile.TemporaryDirectory(prefix=".push-", dir=dest.folder.parent) as tmp:
        work = Path(tmp).resolve() / "repo"
        git(["clone", "--depth", "1", dest.repo, str(work)], work.parent, what, {"GIT_LFS_SKIP_SMUDGE": "1"})
        git(["lfs", "install", "--local"], work, what)
        attributes = work / ".gitattributes"
        kept = attributes.read_text(encoding="utf-8") if attributes.is_file() else ""
        if git(["ls-files"], work, what).strip():
            git(["rm", "-r", "-q", "--", "."], work, what)
        if kept:
            attributes.write_text(kept, encoding="utf-8")
        files = listing(dest.folder)
        for f in files:
            (work / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(dest.folder / f["path"], work / f["path"])
        lfs = sorted({p for p in LFS_PATTERNS if any(fnmatch(Path(f["path"]).name, p) for f in files)})
        lfs += sorted(f["path"] for f in files if f["lfs"] and not any(fnmatch(Path(f["path"]).name, p) for p in lfs))
        if lfs:
            git(["lfs", "track", *lfs], work, what)
        git(["add", "-A"], work, what)
        branch = remote_branch(work, what)
        changed = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=work, check=False).returncode != 0
        if changed:
            who = ["-c", f"user.name={identity(work, 'name')}", "-c", f"user.email={identity(work, 'email')}"]
            git([*who, "commit", "-q", "-m", f"xtflow: publish {dest.folder.name}"], work, what)
            git(["push", "origin", f"HEAD:refs/heads/{branch}"], work, what)
        commit = git(["rev-parse", "HEAD"], work, what).strip()
    return {"commit": commit, "branch": branch, "changed": changed}


def remote_branch(work: Path, what: str) -> str:
    """The branch to push to: the remote's default branch as cloned, or main for an empty repository."""
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=work, capture_output=True, check=False)
    return git(["symbolic-ref", "--short", "HEAD"], work, what).strip() if head.returncode == 0 else "main"


def identity(work: Path, field: str) -> str:
    """git's configured user.name / user.email, or xtflow's."""
    proc = subprocess.run(["git", "config", f"user.{field}"], cwd=work, capture_output=True, text=True, check=False)
    return proc.stdout.strip() or COMMITTER[0 if field == "name" else 1]
