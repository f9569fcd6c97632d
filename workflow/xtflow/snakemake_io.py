"""Glue between Snakemake's `script:` jobs and xtflow: logging, one-line errors, and a job that starts
removes what was made from the outputs it rebuilds.

Why the last: Snakemake deletes a job's outputs when the job starts. If the job is then stopped
(Ctrl-C, a kill, a wall-time limit), the outputs of later stages that were made from them are still
there, and Snakemake takes a missing intermediate file with existing downstream outputs as up to date
when nothing recorded says otherwise (a forced rerun, `-R`): the next run would report "Nothing to be
done" and keep serving the old model. So each job, first of all, removes every output of the rules
downstream of it (in the rule graph, whatever the targets); a later run rebuilds them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError
from xtflow.fsutil import remove_atomically

DOWNSTREAM_ENV = "XTFLOW_DOWNSTREAM"  # JSON {rule: [outputs of the rules downstream of it]}, set by the Snakefile


def downstream_outputs(rules: Mapping[str, tuple[Iterable[str], Iterable[str]]]) -> dict[str, list[str]]:
    """For each rule (name -> (inputs, outputs)), the outputs of every rule that reads one of its
    outputs, directly or through other rules."""
    producer = {out: name for name, (_, outputs) in rules.items() for out in outputs}
    readers: dict[str, set[str]] = {name: set() for name in rules}
    for name, (inputs, _) in rules.items():
        for path in inputs:
            if path in producer:
                readers[producer[path]].add(name)
    result = {}
    for name in rules:
        seen: set[str] = set()
        todo = list(readers[name])
        while todo:
            rule = todo.pop()
            if rule not in seen and rule != name:
                seen.add(rule)
                todo.extend(readers[rule])
        result[name] = sorted({out for rule in seen for out in rules[rule][1]})
    return result


def invalidate_downstream(rule: str) -> list[str]:
    """Remove the outputs downstream of `rule` (from DOWNSTREAM_ENV); return those that existed."""
    downstream = json.loads(os.environ.get(DOWNSTREAM_ENV) or "{}").get(rule, [])
    return [path for path in downstream if remove_atomically(Path(path))]


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
            for path in invalidate_downstream(snakemake.rule):  # first: see the module's docstring
                print(f"xtflow: removed {path}: it was made from what this job rebuilds")
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
