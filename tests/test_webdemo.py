"""Web demo in a real browser: Debian's chromium driven by Playwright, against the real streamlit app."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, default_config, write_config

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(workdir: Path, log: Path, *args: str) -> Iterator[str]:
    """`python -m xtflow.web` on `workdir` until the block ends; yields its URL once it answers."""
    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xtflow.web", "--workdir", str(workdir), "--port", str(port), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "streamlit did not come up in 90 s"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def server(completed_run: Path, tmp_path: Path):
    log = tmp_path / "server.log"
    with serving(completed_run, log) as url:
        yield url, log


@contextmanager
def browser_page(playwright: Any) -> Iterator[Any]:
    """A page of Debian's chromium (no sandbox, no network chatter), closed after the block."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    try:
        yield browser.new_page(viewport={"width": 1200, "height": 800})
    finally:
        browser.close()


def test_two_messages_in_a_real_browser(server) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, log = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p, browser_page(p) as page:
        page.goto(url)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_visible(timeout=60_000)
        for n, question in enumerate(["Who are you?", "你是谁？"], start=1):
            box.fill(question)
            box.press("Enter")
            replies = page.locator('[data-testid="stChatMessage"]')
            expect(replies).to_have_count(2 * n, timeout=60_000)
            # the app says when a reply is complete (streaming done)
            expect(page.get_by_text(f"{n} replies in this chat")).to_be_visible(timeout=60_000)
        first = replies.nth(1).inner_text()
        assert "XtBot" in first, first
        assert replies.nth(3).inner_text().strip()
        page.screenshot(path=str(ARTIFACTS / "webdemo.png"), full_page=True)
        page.get_by_role("button", name="Clear chat history").click()
        expect(page.get_by_text("0 replies in this chat")).to_be_visible(timeout=30_000)
        expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(0)
    loads = log.read_text().count("xtflow: loaded model")
    assert loads == 1, f"the model was loaded {loads} times for two messages"


def test_llava_answers_about_an_uploaded_image(llava_run: Path, tmp_path: Path) -> None:
    """The LLaVA target's model in the page: upload a held-out image, ask about it, get its colour."""
    from playwright.sync_api import expect, sync_playwright

    split = llava_run / "results" / "llava" / "data" / "test"
    records = json.loads((split / "records.json").read_text(encoding="utf-8"))[:2]
    log = tmp_path / "server.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with serving(llava_run, log, "--model", "llava") as url, sync_playwright() as p, browser_page(p) as page:
        page.goto(url)
        box = page.get_by_test_id("stChatInputTextArea")
        expect(box).to_be_visible(timeout=60_000)
        for record in records:  # a new image starts a new chat
            page.locator('input[type="file"]').set_input_files(str(split / "images" / record["image"]))
            expect(page.get_by_role("main").get_by_text(record["image"], exact=True)).to_be_visible(timeout=30_000)
            expect(page.get_by_text("0 replies in this chat")).to_be_visible(timeout=30_000)
            box.fill(record["conversations"][0]["value"].replace("<image>", "").strip())
            box.press("Enter")
            expect(page.get_by_text("1 replies in this chat")).to_be_visible(timeout=60_000)
            reply = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
            assert record["conversations"][1]["value"].rstrip(".").lower() in reply.lower(), reply
        page.screenshot(path=str(ARTIFACTS / "webdemo_llava.png"), full_page=True)
    loads = log.read_text().count("xtflow: loaded model")
    assert loads == 1, f"the model was loaded {loads} times for two images"


def test_binds_localhost_by_default(completed_run: Path) -> None:
    """The server listens on 127.0.0.1 only, unless another address is asked for."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xtflow.web", "--workdir", str(completed_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            listening = [
                ln
                for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                if f":{port:04X} " in ln.split()[1] + " " and ln.split()[3] == "0A"
            ]
            if listening:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        local = listening[0].split()[1].split(":")[0]
        assert local == "0100007F", f"bound to {local}, not 127.0.0.1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_refuses_before_the_model_exists(tmp_path: Path) -> None:
    write_config(tmp_path, default_config())
    proc = subprocess.run(
        [sys.executable, "-m", "xtflow.web", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "results/final_model does not exist yet: run `snakemake --cores 1 results/final_model` first" in proc.stderr
