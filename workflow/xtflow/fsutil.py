"""Write outputs all-or-nothing, so a failed step never leaves a half-written result."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def remove_leftovers(final: Path) -> list[Path]:
    """Remove the temporary siblings of `final` that an earlier, killed attempt left behind
    (`.<name>.tmp-*`, from atomic_dir, atomic_write_text and remove_atomically); return them.
    Snakemake runs one job per output at a time, so no live writer owns them."""
    final = Path(final)
    found = sorted(final.parent.glob(glob.escape(_tmp_prefix(final)) + "*")) if final.parent.is_dir() else []
    for old in found:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return found


def remove_atomically(path: Path) -> bool:
    """Remove a file or directory so that it is either all there or gone: renamed aside first (one
    step), then deleted. A kill mid-way leaves a `.<name>.tmp-*` leftover, never a half-deleted
    `path`. Returns whether this call removed it (False: nothing there, or another process removed it
    first: jobs that run at once remove the same later outputs)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path) + "removed-", dir=path.parent))
        try:
            os.replace(path, aside)  # onto the empty directory just made: one rename
        except FileNotFoundError:
            aside.rmdir()
            return False
        shutil.rmtree(aside, ignore_errors=True)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `final`, on error it is removed.
    Leftovers of earlier attempts that were killed are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), dir=final.parent))
    try:
        yield tmp
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link to the file `src` resolves to (no second copy of a model's weights), or a copy
    where no link can be made (another file system)."""
    real = Path(src).resolve()
    try:
        os.link(real, dst)
    except OSError:
        shutil.copyfile(real, dst)


def check_writable(roots: list[Path], depth: int = 2) -> None:
    """Fail early, in one line, if an output directory cannot be written (read-only, full, no permission).

    Checks each root and its real (not symlinked) subdirectories down to `depth`.
    """
    from xtflow.errors import XtflowError

    def dirs(root: Path, level: int) -> Iterator[Path]:
        yield root
        if level < depth and root.is_dir():
            for sub in sorted(root.iterdir()):
                if sub.is_dir() and not sub.is_symlink():
                    yield from dirs(sub, level + 1)

    for root in map(Path, roots):
        for d in dirs(root, 0):
            try:
                d.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=d):
                    pass
            except OSError as e:
                raise XtflowError(f"cannot write to {d}/: {e.strerror or e}") from None
