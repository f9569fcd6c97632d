"""Chat: one-shot mode for scripts, and the interactive mode driven through a real pseudo-terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect

from conftest import chat, default_config, write_config


def test_one_shot_final_model_knows_its_name(completed_run: Path) -> None:
    proc = chat(completed_run, "-q", "Who are you?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "XtBot" in proc.stdout  # the tiny model learned its identity (greedy decoding)
    assert "<|im_end|>" not in proc.stdout


def test_one_shot_base_and_adapter(completed_run: Path) -> None:
    base = chat(completed_run, "--model", "base", "-q", "Who are you?", "--max-new-tokens", "16")
    adapter = chat(completed_run, "--model", "adapter", "-q", "Who are you?")
    assert base.returncode == 0 and adapter.returncode == 0, base.stderr + adapter.stderr
    assert "XtBot" not in base.stdout
    assert "XtBot" in adapter.stdout  # base + adapter answers like the merged model


def test_refuses_before_the_model_exists(tmp_path: Path) -> None:
    write_config(tmp_path, default_config())
    proc = chat(tmp_path, "-q", "hi")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "xtflow: error: results/final_model does not exist yet: run `snakemake --cores 1 results/final_model` first"
    )


def test_interactive_two_turns_then_exit(completed_run: Path) -> None:
    child = pexpect.spawn(
        sys.executable, ["-m", "xtflow.chat", "--workdir", str(completed_run)], encoding="utf-8", timeout=120
    )
    try:
        child.expect(">>> ")
        child.sendline("Who are you?")
        child.sendline("")  # an empty line sends, as in `xtuner chat`
        child.expect("XtBot")
        child.expect(">>> ")
        child.sendline("你是谁？")
        child.sendline("")
        child.expect(">>> ")
        assert child.before.strip()  # a second reply was printed
        child.sendline("RESET")
        child.sendline("")
        child.expect("History responses have been removed")
        child.expect(">>> ")
        child.sendline("EXIT")
        child.sendline("")
        child.expect("Exit!")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
