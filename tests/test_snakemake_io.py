"""A job that starts removes what was made from its outputs (xtflow.snakemake_io): after a stopped job,
no later stage's output survives to be taken as up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import default_config, write_config
from xtflow.snakemake_io import DOWNSTREAM_ENV, downstream_outputs, invalidate_downstream


def test_downstream_outputs_follow_the_rule_graph() -> None:
    rules = {
        "dataset": ([], ["data.json"]),
        "base": ([], ["base"]),
        "train": (["data.json", "base", "config.py"], ["ckpt"]),
        "adapter": (["ckpt"], ["adapter"]),
        "merge": (["base", "adapter"], ["final"]),
        "stats": (["data.json"], ["stats.html"]),
        "all": (["final", "stats.html"], []),
    }
    down = downstream_outputs(rules)
    assert down["dataset"] == ["adapter", "ckpt", "final", "stats.html"]
    assert down["base"] == ["adapter", "ckpt", "final"]
    assert down["adapter"] == ["final"] and down["merge"] == [] and down["all"] == []


def test_the_workflow_tells_each_job_what_was_made_from_its_outputs(tmp_path: Path) -> None:
    """The map the Snakefile hands its jobs, read back from a real Snakemake run of the workflow."""
    write_config(tmp_path, default_config())
    (tmp_path / "show.smk").write_text(
        f"include: {str(Path(__file__).resolve().parents[1] / 'Snakefile')!r}\n"
        f"print('MAP', os.environ[{DOWNSTREAM_ENV!r}])\n",
        encoding="utf-8",
    )
    import subprocess

    from conftest import snakemake_call

    cmd, env = snakemake_call(tmp_path, ("-n",))
    cmd[cmd.index("-s") + 1] = str(tmp_path / "show.smk")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=True)
    down = json.loads(proc.stdout.split("MAP ", 1)[1].splitlines()[0])
    assert {"results/train/final_checkpoint.pth", "results/hf_adapter", "results/final_model"} <= set(down["dataset"])
    assert "results/xtuner/internlm2_1_8b_qlora_alpaca_e3.py" not in down["dataset"]
    assert set(down["train"]) >= {"results/hf_adapter", "results/final_model", "results/eval/summary.csv"}
    assert "results/train/final_checkpoint.pth" not in down["train"]
    assert "results/final_model" in down["adapter"] and down["report_files"] == []


def test_invalidation_removes_only_what_exists_downstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "final_model").mkdir(parents=True)
    (tmp_path / "results" / "final_model" / "model.safetensors").write_bytes(b"old")
    (tmp_path / "results" / "data.json").write_text("[]", encoding="utf-8")
    monkeypatch.setenv(DOWNSTREAM_ENV, json.dumps({"adapter": ["results/final_model", "results/eval/summary.csv"]}))
    assert invalidate_downstream("adapter") == ["results/final_model"]
    assert invalidate_downstream("merge") == []
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["data.json"]
