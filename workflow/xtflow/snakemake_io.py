"""Glue between Snakemake's `script:` jobs and xtflow: logging and one-line errors."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError


def os_error_line(e: OSError) -> str:
    """`cannot write results/x: Read-only file system`-style line for a failed file operation."""
    where = e.filename if e.filename is not None else "a file"
    return f"cannot write or read {where}: {e.strerror or e}"


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
        except (XtflowError, OSError) as e:
            message = str(e) if isinstance(e, XtflowError) else os_error_line(e)
            fh.write(f"xtflow: error: {message}\n")
            real_stderr.write(f"xtflow: error in rule {snakemake.rule}: {message}\n")
            sys.exit(1)
        except Exception as e:  # a bug or an unforeseen failure: full traceback in the log, one line on screen
            traceback.print_exc(file=fh)
            line = str(e).splitlines()[0] if str(e) else ""
            real_stderr.write(
                f"xtflow: error in rule {snakemake.rule}: {type(e).__name__}: {line} (traceback in {log})\n"
            )
            sys.exit(1)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, real_stderr
