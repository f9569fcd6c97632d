"""Provide the base model under resources/: a checked link to a local model, or the tiny default.

The tutorial links the downloaded model into the work directory; its classic mistake
is to point at the parent directory. xtflow checks the directory first and names the
subdirectory that does hold a config.json.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
KEY = "base_model.path"


def _subdirs_with_config(root: Path, depth: int = 3) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_depth = len(Path(dirpath).relative_to(root).parts)
        if rel_depth >= depth:
            dirnames.clear()
        dirnames.sort()
        if "config.json" in filenames and Path(dirpath) != root:
            found.append(Path(dirpath))
    return found


def check_model_dir(path: Path, key: str = KEY) -> None:
    """Raise XtflowError (one line, naming the path) unless `path` is a usable HF model directory."""
    check_pretrained_dir(path, key)
    if not (path / "tokenizer_config.json").is_file() or not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise XtflowError(
            f"config key '{key}': '{path}' has no tokenizer "
            f"(needs tokenizer_config.json and one of {', '.join(TOKENIZER_FILES)})"
        )


def check_pretrained_dir(path: Path, key: str) -> None:
    """What every `from_pretrained` directory needs: to exist locally, a config.json, weights."""
    if not path.exists():
        if HUB_ID.match(str(path)):
            raise XtflowError(
                f"config key '{key}': '{path}' looks like a model hub id, but no hub is reachable here: "
                "download the model elsewhere and give its local directory"
            )
        raise XtflowError(f"config key '{key}': '{path}' does not exist")
    if not path.is_dir():
        raise XtflowError(f"config key '{key}': '{path}' is a file, not a model directory")
    if not (path / "config.json").is_file():
        inside = _subdirs_with_config(path)
        hint = f"; did you mean '{inside[0]}'?" if inside else " and no subdirectory has one"
        raise XtflowError(f"config key '{key}': '{path}' has no config.json{hint}")
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise XtflowError(f"config key '{key}': '{path}' has no weights (*.safetensors or *.bin)")


def link_model(src: Path, out: Path) -> None:
    """Make `out` a directory of symlinks to the files of the checked model at `src` (nothing copied)."""
    check_model_dir(src)
    src = src.resolve()
    with atomic_dir(out) as tmp:
        for entry in sorted(src.iterdir()):
            (tmp / entry.name).symlink_to(entry)
