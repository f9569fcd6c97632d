"""The workflow's shape: the Snakemake catalog's layout, one source of defaults, modules that each
import alone and in no cycle, a wheel that carries its data, a workflow that parses without xtflow
installed. (The lint gate itself, ruff, snakefmt and `snakemake --lint`, is `make lint`.)"""

from __future__ import annotations

import ast
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, default_config, planned_jobs, write_config
from xtflow.settings import SCHEMA, validate

PACKAGE = REPO / "workflow" / "xtflow"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "webdemo"})


def test_catalog_layout() -> None:
    for path in (
        "workflow/Snakefile",
        "config/config.yaml",
        "config/README.md",
        ".snakemake-workflow-catalog.yml",
        ".test/config/config.yaml",
        "workflow/envs/xtflow.yaml",
        "workflow/envs/xtflow.post-deploy.sh",
    ):
        assert (REPO / path).is_file(), path
    assert (REPO / "Snakefile").read_text(encoding="utf-8").count("\n") == 1  # the root one only includes
    assert sorted(p.name for p in (REPO / "workflow" / "rules").glob("*.smk"))
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text(encoding="utf-8"))
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True


def test_schema_defaults_are_the_embedded_default() -> None:
    """One source of defaults: deleting every key of config/config.yaml changes nothing."""
    assert validate({}) == validate(default_config())


def _leaf_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys += _leaf_keys(value, path + ".") if isinstance(value, dict) and value else [path]
    return keys


def test_config_readme_documents_every_key() -> None:
    """Each key has a row in config/README.md: by its full name, or as `.leaf` beside a sibling's full name."""
    rows = [
        line
        for line in (REPO / "config" / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    ]
    missing = []
    for key in _leaf_keys(validate({})):
        parent, _, leaf = key.rpartition(".")
        if not any(f"`{key}`" in row or (f"`{parent}." in row and f"`.{leaf}`" in row) for row in rows):
            missing.append(key)
    assert not missing, f"config/README.md does not explain {missing}"


def test_root_snakefile_keeps_the_default_target(tmp_path: Path) -> None:
    """`snakemake` from the root (or -s <repo>/Snakefile) plans the whole workflow, not nothing; the LLaVA
    target is not part of it (its own target: `snakemake llava`)."""
    from conftest import snakemake

    write_config(tmp_path, default_config())
    proc = snakemake(tmp_path, "-n", check=True)
    assert {"train", "merge", "evaluate"} <= planned_jobs(proc.stdout)
    assert not [job for job in planned_jobs(proc.stdout) if job.startswith("llava")]


def test_workflow_parses_without_xtflow_installed(tmp_path: Path) -> None:
    """Snakemake's own interpreter, without the site-packages' .pth files (where an installed xtflow
    would be found): the workflow finds its package beside itself."""
    write_config(tmp_path, default_config())
    site = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path.append({site!r}); "
        "import importlib.util; assert importlib.util.find_spec('xtflow') is None, 'xtflow is importable'; "
        "from snakemake.cli import main; sys.argv = ['snakemake'] + sys.argv[1:]; main()"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            code,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            "results/final_model",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train" in planned_jobs(proc.stdout)


def _xtflow_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "xtflow":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("xtflow."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("xtflow.")}
    return found - {path.stem}


def test_no_import_cycle() -> None:
    """Module-level and function-level imports alike: the modules form a graph without cycles."""
    graph = {m: _xtflow_imports(PACKAGE / f"{m}.py") for m in MODULES + ["webdemo"]}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join(stack + [module])}"
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, stack + [module])
        done.add(module)

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", f"import xtflow.{module}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_wheel_carries_schema_recipes_and_probes(tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(PACKAGE, src / "workflow" / "xtflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("xtflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"xtflow/{path.relative_to(PACKAGE)}" in names, path.relative_to(REPO)
    assert f"xtflow/{SCHEMA.relative_to(PACKAGE)}" in names
