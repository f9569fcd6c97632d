"""Glue between Snakemake's `script:` jobs and xtflow: logging and one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError


def run_job(snakemake: Any, job: Callable[[Path], None]) -> None:
    """Run `job(log_path)` with stdout/stderr going to the rule's log; report XtflowError as one line."""
    log = Path(snakemake.log[0])
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("", encoding="utf-8")
    real_stderr = sys.stderr
    with open(log, "a", encoding="utf-8", buffering=1) as fh:
        sys.stdout = sys.stderr = fh
        try:
            job(log)
        except XtflowError as e:
            fh.write(f"xtflow: error: {e}\n")
            real_stderr.write(f"xtflow: error in rule {snakemake.rule}: {e}\n")
            sys.exit(1)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, real_stderr
