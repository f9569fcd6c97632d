"""All-or-nothing outputs (xtflow.fsutil): what a killed write leaves behind is removed by the next one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xtflow.fsutil import atomic_dir, atomic_write_text, remove_atomically


def test_leftovers_of_a_killed_attempt_are_removed_when_the_output_is_written_again(tmp_path: Path) -> None:
    """SIGKILL during `adapter` leaves `.hf_adapter.tmp-*` (no clean-up runs); the next attempt removes it."""
    (tmp_path / ".hf_adapter.tmp-k1ll3d").mkdir()
    (tmp_path / ".hf_adapter.tmp-k1ll3d" / "adapter_model.safetensors").write_bytes(b"half")
    (tmp_path / ".summary.csv.tmp-k1ll3d").write_text("half", encoding="utf-8")
    (tmp_path / ".hf_adapter_other.tmp-keep").mkdir()  # another output's: not this one's to remove
    with atomic_dir(tmp_path / "hf_adapter") as tmp:
        (tmp / "adapter_config.json").write_text("{}", encoding="utf-8")
    atomic_write_text(tmp_path / "summary.csv", "a,b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hf_adapter_other.tmp-keep", "hf_adapter", "summary.csv"]


def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "new").write_text("new", encoding="utf-8")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["old"]


def test_remove_atomically_renames_aside_first(tmp_path: Path) -> None:
    model = tmp_path / "final_model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"w")
    (tmp_path / "handle.pth").write_bytes(b"c")
    assert remove_atomically(model) and remove_atomically(tmp_path / "handle.pth")
    assert not remove_atomically(model)  # nothing there: nothing done
    assert list(tmp_path.iterdir()) == []


def test_remove_atomically_when_another_job_removes_it_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs that run at once (base_model and dataset, with --cores 2) remove the same later outputs: the one
    that comes second finds them gone, which is not an error."""
    import shutil

    model = tmp_path / "final_model"
    model.mkdir()
    (tmp_path / "handle.pth").write_bytes(b"c")
    replace = os.replace

    def other_job_first(src: str, dst: str) -> None:
        shutil.rmtree(src)  # the other job's rename and delete happen between this one's check and rename
        replace(src, dst)

    monkeypatch.setattr(os, "replace", other_job_first)
    assert remove_atomically(model) is False
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [tmp_path / "handle.pth"]  # and no `.final_model.tmp-removed-*` left
    (tmp_path / "handle.pth").unlink()
    assert remove_atomically(tmp_path / "handle.pth") is False
