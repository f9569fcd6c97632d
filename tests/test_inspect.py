"""What a user can inspect: dry-run reasons, the DAG and the rule graph (rendered by graphviz)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import REPO, default_config, snakemake, write_config


def test_dry_run_gives_reasons(tmp_path: Path) -> None:
    write_config(tmp_path, default_config())
    proc = snakemake(tmp_path, "-n", check=True)
    assert "reason: Missing output files: results/final_model" in proc.stdout
    assert "This was a dry-run" in proc.stdout


def test_dag_and_rulegraph_render_with_graphviz(tmp_path: Path) -> None:
    write_config(tmp_path, default_config())
    for flag in ("--dag", "--rulegraph"):
        dot = snakemake(tmp_path, flag, "--quiet", "all", check=True).stdout
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
        assert "<svg" in svg and "train" in svg and "merge" in svg


def graph_of(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Rule names and edges of a Snakemake DOT graph (its node numbering and edge order vary)."""
    labels = dict(re.findall(r"^\s*(\d+)\[label = \"([^\"]+)\"", dot, flags=re.M))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)}
    return set(labels.values()), edges


def test_readme_rule_graph_is_current(tmp_path: Path) -> None:
    """docs/rulegraph.{dot,svg} (shown in the README) are what `make rulegraph` makes now."""
    write_config(tmp_path, default_config())
    now = snakemake(tmp_path, "--rulegraph", "--quiet", "all", check=True).stdout
    committed = (REPO / "docs" / "rulegraph.dot").read_text(encoding="utf-8")
    assert graph_of(now) == graph_of(committed), "run `make rulegraph` and commit docs/rulegraph.*"
    assert ("dataset", "train") in graph_of(now)[1]
    svg = subprocess.run(["dot", "-Tsvg"], input=committed, capture_output=True, text=True, check=True).stdout
    assert svg == (REPO / "docs" / "rulegraph.svg").read_text(encoding="utf-8")
    assert "docs/rulegraph.svg" in (REPO / "README.md").read_text(encoding="utf-8")
