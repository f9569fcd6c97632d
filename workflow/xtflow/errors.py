"""What users see of a problem: an error is a single line that names the key or file and what is
wrong; a warning is a single line too, in the job's log and on the terminal."""

from __future__ import annotations

import sys


class XtflowError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


def warn(message: str) -> None:
    """`xtflow: warning: <message>` on stderr, and also on the terminal where stderr goes to a job's log
    (inside `xtflow.snakemake_io.run_job`)."""
    line = f"xtflow: warning: {message}"
    print(line, file=sys.stderr, flush=True)
    if sys.__stderr__ is not None and sys.stderr is not sys.__stderr__:
        print(line, file=sys.__stderr__, flush=True)
