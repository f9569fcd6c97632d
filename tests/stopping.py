"""Stopping a real workflow run as users and machines do: Ctrl-C (SIGINT to the whole process group, as a
terminal sends it) or SIGKILL (a node lost, the OOM killer), at a chosen point of a chosen stage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import snakemake_call

STARTED = re.compile(r"^\s*(?:local)?rule (\w+):\s*$", re.M)  # Snakemake's line when it starts a job


@dataclass(frozen=True)
class Stop:
    stage: str  # the stage that was running when the signal was sent
    signal: str
    delay: float  # seconds after the stage's job started (or after `during`, where given)
    finished_before: bool  # the stage's job had ended before the signal (it did not land in the stage)
    output: str  # Snakemake's output


def stop_in_first_stage_of(
    workdir: Path,
    args: list[str],
    plan: dict[str, list[signal.Signals]],
    delay: Callable[[str, signal.Signals], float],
    log: Path,
    during: Callable[[str, signal.Signals], None] | None = None,
) -> Stop:
    """Run Snakemake with `args` and stop it in the first job whose stage still has a signal in `plan`
    (that signal is taken from it), `delay(stage, signal)` seconds after the job's own process started and
    `during(stage, signal)` returned (it runs while the job runs). Jobs of stages without signals left run to
    their end."""
    cmd, env = snakemake_call(workdir, tuple(args))
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:
        deadline = time.monotonic() + 900
        stage = None
        while stage is None:
            started = [s for s in STARTED.findall(log.read_text(encoding="utf-8")) if plan.get(s)]
            if started:
                stage = started[0]
                break
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before any of {sorted(plan)} started:\n{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "no stage started within 900 s"
            time.sleep(0.01)
        job = _job_process(workdir, stage, proc)
        sig = plan[stage].pop(0)
        if during is not None:
            during(stage, sig)
        wait = delay(stage, sig)
        time.sleep(wait)
        finished = job is None or not _running(job)  # checked right before the signal: the job had ended
        os.killpg(proc.pid, sig)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Stop(stage, sig.name, wait, finished, log.read_text(encoding="utf-8"))


def _job_process(workdir: Path, stage: str, snakemake: subprocess.Popen) -> int | None:
    """The process of the `stage` job Snakemake just announced (it runs `.snakemake/scripts/tmp*.<stage>.py`),
    once it exists; None if the job ended before it was seen."""
    scripts = str(workdir / ".snakemake" / "scripts") + "/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and snakemake.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.decode(errors="replace").startswith(scripts) and a.endswith(f".{stage}.py".encode()) for a in cmd):
                return int(pid)
        time.sleep(0.005)
    return None


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def locked_by_a_process(lock: Path) -> bool:
    """Whether some process holds an flock on `lock`, read from /proc/locks (taking it to see would race)."""
    try:
        inode = lock.stat().st_ino
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


def leftovers(workdir: Path) -> list[str]:
    """Temporary files and directories of xtflow's atomic writes (`.<name>.tmp-*`) under results/ and resources/."""
    return sorted(
        str(p.relative_to(workdir))
        for top in ("results", "resources")
        for p in (workdir / top).rglob(".*.tmp-*")
        if (workdir / top).is_dir()
    )
