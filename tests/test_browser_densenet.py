"""The DenseNet lesson in a real Chromium: it renders fully and leaves docs/screenshots/densenet.png."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "screenshots" / "densenet.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    with_app = (ROOT / "app.py").is_file()
    script = "app.py" if with_app else "pages/densenet.py"
    log = tmp_path_factory.mktemp("streamlit") / "log.txt"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/", with_app, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_densenet_page_renders_and_screenshot(server):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    url, with_app, log = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            if with_app:  # through app.py's navigation, as a student gets there
                # app.py's own navigation (titled "DenseNet…"), not the pages/ folder listing
                # Streamlit shows for a moment before app.py has run.
                link = page.get_by_role("link", name=re.compile("DenseNet"))
                link.wait_for(timeout=120_000)
                link.click()
            page.get_by_role("heading", name="Learn DenseNet").wait_for(timeout=120_000)
            # Section 3 is last to compute: wait for the Grad-CAM captions and the quiz.
            page.get_by_text("Check yourself").wait_for(timeout=240_000)
            page.wait_for_function(
                "() => document.querySelectorAll('[data-testid=\"stGraphVizChart\"] svg').length >= 3",
                timeout=60_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length >= 9", timeout=60_000)
            # No spinner left, no exception box.
            page.wait_for_function(
                "() => document.querySelectorAll('[data-testid=\"stSpinner\"]').length === 0", timeout=120_000)
            assert page.locator('[data-testid="stException"]').count() == 0, log.read_text()[-3000:]
            for text in ("The idea", "as built", "Inside the network", "Try it", "Check yourself"):
                assert page.get_by_role("heading", name=text).first.is_visible(), text
            captions = page.locator('[data-testid="stImageCaption"]', has_text="denseblock4")
            assert captions.count() >= 1

            # The slider redraws the dense block: the drawing gets fewer nodes.
            def dense_nodes() -> int:
                return page.locator('[data-testid="stGraphVizChart"]').first.locator("g.node").count()

            before = dense_nodes()
            slider = page.get_by_role("slider").first
            slider.focus()
            for _ in range(2):
                slider.press("ArrowLeft")
            page.wait_for_function(
                f"() => document.querySelector('[data-testid=\"stGraphVizChart\"]').querySelectorAll('g.node')"
                f".length === {before - 2}", timeout=60_000)
            for _ in range(2):
                slider.press("ArrowRight")
            page.wait_for_function(
                f"() => document.querySelector('[data-testid=\"stGraphVizChart\"]').querySelectorAll('g.node')"
                f".length === {before}", timeout=60_000)
            page.wait_for_timeout(1500)

            # Streamlit scrolls inside its main container: grow the viewport to the content's height.
            height = page.evaluate(
                "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
                "[data-testid=\"stAppViewContainer\"], section.main')].map(e => e.scrollHeight), 1000)")
            page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 12_000)})
            page.wait_for_timeout(2500)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 50_000
