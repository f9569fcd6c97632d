"""One live line per long job on the terminal, as the peers' command lines show it.

The rule's log holds every detail; the terminal (the job's original stderr, which Snakemake shows)
gets one short line: rewritten in place where it is a terminal, else (a pipe, a SLURM log file)
printed at most every `every` seconds, and always once at the end.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

MMENGINE_ITER = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\].*?eta:\s*(\S+).*?loss:\s*([-\d.e+naif]+)")


class ProgressLine:
    """The live line of one job, e.g. `xtflow train: iteration 120/320, loss 0.412, eta 0:01:10`."""

    def __init__(self, job: str, stream: TextIO | None = None, every: float = 30.0) -> None:
        self.prefix = f"xtflow {job}: "
        self.stream = stream if stream is not None else sys.__stderr__
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.last_shown = float("-inf")
        self.text = ""
        self.shown = ""

    def update(self, text: str) -> None:
        self.text = text
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self.prefix + text)
            self.stream.flush()
            self.shown = text
        elif now - self.last_shown >= self.every:
            self._print()
            self.last_shown = now

    def close(self) -> None:
        """The last state, once, on its own line."""
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
        elif not self.tty and self.text and self.text != self.shown:
            self._print()

    def _print(self) -> None:
        self.stream.write(self.prefix + self.text + "\n")
        self.stream.flush()
        self.shown = self.text


def mmengine_iteration(line: str) -> str | None:
    """`iteration 120/320, loss 0.4120, eta 0:01:10` from one of mmengine's training log lines."""
    match = MMENGINE_ITER.search(line)
    if not match:
        return None
    done, total, eta, loss = match.groups()
    return f"iteration {done}/{total}, loss {loss}, eta {eta}"


@contextmanager
def following(log: Path, parse: Callable[[str], str | None], line: ProgressLine, poll: float = 0.5) -> Iterator[None]:
    """While the block runs, show on `line` what `parse` makes of each new line appended to `log`."""
    stop = threading.Event()
    start = log.stat().st_size if log.exists() else 0

    def follow() -> None:
        offset, rest = start, ""
        while True:
            finished = stop.is_set()
            if log.exists():
                with open(log, encoding="utf-8", errors="replace") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                    offset = fh.tell()
                *complete, rest = (rest + chunk).split("\n")
                for text in filter(None, map(parse, complete)):
                    line.update(text)
            if finished:
                return
            stop.wait(poll)

    worker = threading.Thread(target=follow, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
        line.close()
