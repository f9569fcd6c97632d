"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests: enough of it that the real client
(huggingface_hub 0.36: snapshot_download, model_info) downloads from it and writes a real cache.

The three endpoints the client calls:
  GET  /api/models/{org}/{name}[/revision/{rev}][?blobs=True]  -> {"id", "sha", "siblings": [...]}
  HEAD /{org}/{name}/resolve/{rev}/{file}  -> X-Repo-Commit, ETag, and for LFS files X-Linked-Etag/-Size
  GET  /{org}/{name}/resolve/{rev}/{file}  -> the bytes; "Range: bytes=N-" gives 206 and the rest
Errors carry the hub's X-Error-Code header, so the client raises its own typed errors: RepoNotFound (401,
as the hub answers for unknown and private repos), RevisionNotFound (404), EntryNotFound (404).

Weight files (LFS_SUFFIXES) are served as LFS files: their etag is the sha256 of the content, others get
the git blob sha1, as on the real hub; the client names its blobs/ after these etags. The commit is a
hash of the file list.

It binds 127.0.0.1 on a free port, serves at most `max_requests` requests and stops by itself after
`lifetime` seconds, so a test that fails midway leaves nothing listening. `throttle` (seconds per 64 KiB
sent) slows downloads down, to interrupt one midway; `cut_after` drops the connection after that many bytes
of the first download of each LFS file (a broken transfer); `requests` lists (method, path, Range) as received.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".h5", ".model", ".gguf")
CHUNK = 64 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]  # name in the repo -> content
    branch: str = "main"
    commit: str = field(init=False)

    def __post_init__(self) -> None:
        listing = "".join(f"{name}\0{self.etag(name)[0]}\n" for name in sorted(self.files))
        self.commit = hashlib.sha1(listing.encode()).hexdigest()  # 40 hex digits, like a git commit

    def etag(self, name: str) -> tuple[str, bool]:
        """(etag, is an LFS file)"""
        data = self.files[name]
        if name.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest(), True
        return git_blob_sha1(data), False

    def resolve(self, rev: str) -> str | None:
        return self.commit if rev in (self.branch, self.commit) else None


def repo_from_dir(model_dir: Path, **extra: bytes) -> Repo:
    """A repo holding the files of `model_dir` (and `extra` files, by name)."""
    files = {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in sorted(model_dir.rglob("*")) if p.is_file()}
    return Repo({**files, **extra})


class FakeHub:
    """`with FakeHub({"org/name": repo_from_dir(path)}) as hub:` then HF_ENDPOINT=hub.endpoint in the client's env."""

    def __init__(
        self,
        repos: dict[str, Repo],
        *,
        throttle: float = 0.0,
        cut_after: int | None = None,
        max_requests: int = 500,
        lifetime: float = 900.0,
    ) -> None:
        self.repos = repos
        self.throttle = throttle
        self.cut_after = cut_after
        self._cut: set[str] = set()  # files whose first download was cut
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub._handle(self, head=False)

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = threading.Event()

    def _serve(self) -> None:
        deadline = time.monotonic() + self.lifetime
        self.server.timeout = 0.2
        while not self._stopped.is_set() and time.monotonic() < deadline and len(self.requests) < self.max_requests:
            self.server.handle_request()
        self.server.server_close()

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    # -- answers --------------------------------------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        h.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(key, value)
        h.end_headers()
        if body and not head:
            h.wfile.write(body)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, message: str, head: bool) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        self._send(h, status, headers, json.dumps({"error": message}).encode(), head)

    def _sibling(self, repo: Repo, name: str, blobs: bool) -> dict[str, Any]:
        """One `siblings` entry; with ?blobs=True (model_info(files_metadata=True)) also size, blobId and lfs."""
        if not blobs:
            return {"rfilename": name}
        data = repo.files[name]
        etag, lfs = repo.etag(name)
        entry: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
        if lfs:
            entry["lfs"] = {"size": len(data), "sha256": etag, "pointerSize": 134}
        return entry

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        if self._stopped.is_set():  # a kept-alive connection outlives the listening socket: answer nothing
            h.close_connection = True
            return
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        url = urlparse(h.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rev, name = f"{parts[2]}/{parts[3]}", parts[5] if parts[4:5] == ["revision"] else "main", None
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, name = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        else:
            return self._error(h, 404, "NotFound", "not found", head)
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 401, "RepoNotFound", "Repository not found", head)
        commit = repo.resolve(rev)
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        if name is None:
            blobs = "blobs=true" in url.query.lower()
            body = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit,
                "private": False,
                "siblings": [self._sibling(repo, n, blobs) for n in sorted(repo.files)],
            }
            return self._send(h, 200, {"Content-Type": "application/json"}, json.dumps(body).encode(), head)
        if name not in repo.files:
            return self._error(h, 404, "EntryNotFound", "Entry not found", head)
        self._file(h, repo, commit, name, head)

    def _file(self, h: BaseHTTPRequestHandler, repo: Repo, commit: str, name: str, head: bool) -> None:
        data = repo.files[name]
        etag, lfs = repo.etag(name)
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if lfs:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        start, status = 0, 200
        ranged = h.headers.get("Range", "")
        if ranged.startswith("bytes=") and not head:
            start, status = int(ranged[len("bytes=") :].split("-")[0]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if head:
            return self._send(h, status, {**headers, "Content-Length": str(len(body))}, b"", head=True)
        h.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(key, value)
        h.end_headers()
        cut = self.cut_after if lfs and self.cut_after is not None and name not in self._cut else None
        for i in range(0, len(body), CHUNK):
            piece = body[i : i + CHUNK] if cut is None else body[i : min(i + CHUNK, cut)]
            try:
                h.wfile.write(piece)
                h.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client went away (killed mid-download)
                return
            if cut is not None and i + len(piece) >= cut:  # fewer bytes than Content-Length said, then hang up
                self._cut.add(name)
                h.close_connection = True
                h.connection.shutdown(2)
                return
            if self.throttle:
                time.sleep(self.throttle)


if __name__ == "__main__":  # serve a local model directory by hand: python tests/fakehub.py org/name DIR
    import sys

    with FakeHub({sys.argv[1]: repo_from_dir(Path(sys.argv[2]))}) as hub:
        print(hub.endpoint, flush=True)
        hub._thread.join()
