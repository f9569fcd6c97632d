"""One live line per long job on the terminal (xtflow.progress)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from xtflow.progress import ProgressLine, following, mmengine_iteration

LINE = (
    "11/28 15:02:31 - mmengine - INFO - Iter(train) [220/320]  lr: 1.3699e-03  eta: 0:02:22  time: 0.2537  "
    "data_time: 0.0057  grad_norm: 0.1228  loss: 3.7935"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reads_mmengine_iteration_lines() -> None:
    assert mmengine_iteration(LINE) == "iteration 220/320, loss 3.7935, eta 0:02:22"
    assert mmengine_iteration("11/28 15:02:31 - mmengine - INFO - Sample output:") is None


def test_on_a_terminal_the_line_is_rewritten_in_place() -> None:
    out = Terminal()
    line = ProgressLine("train", out)
    line.update("iteration 1/2")
    line.update("iteration 2/2")
    line.close()
    assert out.getvalue() == "\r\033[Kxtflow train: iteration 1/2\r\033[Kxtflow train: iteration 2/2\n"


def test_elsewhere_a_line_every_interval_and_the_last_state_once() -> None:
    out = io.StringIO()
    line = ProgressLine("train", out, every=3600)
    for i in range(1, 6):
        line.update(f"iteration {i}/5")
    line.close()
    assert out.getvalue() == "xtflow train: iteration 1/5\nxtflow train: iteration 5/5\n"


def test_follows_lines_appended_to_a_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("old line, before the tool started\n" + LINE.replace("[220/", "[100/") + "\n")
    out = io.StringIO()

    def tool() -> None:  # appends as XTuner does, a line at a time
        with open(log, "a") as fh:
            for i in (10, 20):
                fh.write(LINE.replace("[220/", f"[{i}/") + "\n")
                fh.flush()
                time.sleep(0.05)

    with following(log, mmengine_iteration, ProgressLine("train", out, every=3600), poll=0.01):
        worker = threading.Thread(target=tool)
        worker.start()
        worker.join()
    assert out.getvalue() == (
        "xtflow train: iteration 10/320, loss 3.7935, eta 0:02:22\n"
        "xtflow train: iteration 20/320, loss 3.7935, eta 0:02:22\n"
    )
