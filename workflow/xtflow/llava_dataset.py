"""The LLaVA data stage: one split (pretrain, finetune or test) as XTuner's LLaVA configs read it.

`results/llava/data/<split>/` holds `records.json` (LLaVA's format: `{"id", "image", "conversations":
[{"from": "human"|"gpt", "value"}, ...]}`), `images/` (the folder the records' image paths are relative
to: the generated images, or a link to yours) and `sample.png` (the split's first image, which
EvaluateChatHook shows the model during training; XTuner's stock configs name a URL there).

Your records are checked before any training, each failure one line naming the file and the record:
every image exists and decodes, and a record with an image holds exactly one `<image>` in its human
turns (XTuner replaces it by the image's tokens; a second one would take the next record's image).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from xtflow.errors import XtflowError
from xtflow.fsutil import atomic_dir
from xtflow.llava_shapes import generate_split

IMAGE_TOKEN = "<image>"  # xtuner.utils.DEFAULT_IMAGE_TOKEN (importing xtuner takes seconds)
RECORDS, IMAGES, SAMPLE = "records.json", "images", "sample.png"


def load_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise XtflowError(f"{path}: does not exist")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XtflowError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(records, list):
        raise XtflowError(f"{path}: must be a JSON list of LLaVA records, got a JSON {type(records).__name__}")
    if not records:
        raise XtflowError(f"{path}: holds no records")
    return records


def check_image(images: Path, name: Any) -> str | None:
    """Why the record's `image` is unusable, or None. Decoding reads the whole file (a truncated one
    fails), at reduced size where the format allows (JPEG)."""
    if not isinstance(name, str) or not name.strip():
        return f"'image' must be a file name, got {name!r}"
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        return f"image '{name}' must be a path inside {images}"
    path = images / name
    if not path.is_file():
        return f"image '{name}' does not exist in {images}"
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (1, 1))
            img.load()
    except Exception as e:  # PIL raises many kinds on a damaged file
        return f"image '{name}' does not decode ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def check_record(record: Any, images: Path) -> str | None:
    """Why a record is unusable for XTuner's LLaVA training, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "has no 'conversations' list"
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt"):
            said = turn.get("from") if isinstance(turn, dict) else turn
            return f"turn {j}: 'from' must be 'human' or 'gpt', got {said!r}"
        if not isinstance(turn.get("value"), str) or not turn["value"].strip():
            return f"turn {j}: 'value' is empty"
        if turn["from"] == "gpt" and IMAGE_TOKEN in turn["value"]:
            return f"turn {j}: a 'gpt' turn holds '{IMAGE_TOKEN}'"
    if not any(t["from"] == "gpt" for t in turns):
        return "has no 'gpt' turn to learn from"
    tokens = sum(t["value"].count(IMAGE_TOKEN) for t in turns if t["from"] == "human")
    if record.get("image") is None:
        return f"holds '{IMAGE_TOKEN}' but names no image" if tokens else None
    if tokens != 1:
        return f"its human turns hold {tokens} '{IMAGE_TOKEN}' tokens; a record with an image needs exactly one"
    return check_image(images, record["image"])


def checked_records(json_path: Path, images: Path) -> list[dict[str, Any]]:
    """The records of a LLaVA JSON file, each checked (XtflowError names the file and the first bad
    record); records without an id get their index (XTuner's dataset needs one)."""
    if not images.is_dir():
        raise XtflowError(f"{images}: image folder does not exist")
    records = load_records(json_path)
    for i, record in enumerate(records):
        problem = check_record(record, images)
        if problem:
            raise XtflowError(f"{json_path}: record {i}: {problem}")
        record.setdefault("id", str(i))
    if not any(r.get("image") is not None for r in records):
        raise XtflowError(f"{json_path}: no record has an image")
    return records


def write_split(out: Path, user: dict[str, str] | None, split: str, generated: dict[str, int]) -> int:
    """Write the split to `out` (all or nothing): the user's checked records (`{json, images}`), or the
    generated set (`generated[split]` records, `image_size`, `seed`). Returns the number of records."""
    with atomic_dir(out) as tmp:
        if user is None:
            records = generate_split(split, generated[split], generated["seed"], generated["image_size"], tmp / IMAGES)
        else:
            images = Path(user["images"])
            records = checked_records(Path(user["json"]), images)
            (tmp / IMAGES).symlink_to(images.resolve(), target_is_directory=True)
        first = next(r["image"] for r in records if r.get("image") is not None)
        from PIL import Image

        with Image.open(tmp / IMAGES / first) as img:
            img.convert("RGB").save(tmp / SAMPLE)
        (tmp / RECORDS).write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return len(records)
