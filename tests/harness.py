"""The browser/server harness of the browser tests (and the benchmarks in bench/): the app's
Streamlit server on a free local port, the system Chromium through Playwright, and the page
helpers that drive Streamlit's widgets (wait for a script run, upload, choose, go to a page)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent


def skip_without_browser() -> None:
    """Skip the calling test module when the system Chromium or Playwright is missing."""
    import importlib.util

    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (requirements-dev.txt)", allow_module_level=True)


def wait_until_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout: float,
                       started: float | None = None, poll: float = 0.1) -> float:
    """Block until `url`/_stcore/health answers 200; return seconds since `started`
    (a time.perf_counter() value, default now). Raises RuntimeError with the end of the
    server's log if the process exits, or when `timeout` passes."""
    t0 = time.perf_counter() if started is None else started
    while True:
        if proc.poll() is not None:
            out = Path(log_path).read_text(errors="replace")
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")
        time.sleep(poll)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (nan once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(weights: str | os.PathLike | None = None, data: str | os.PathLike | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if weights:
        env["LESION_LENS_WEIGHTS_DIR"] = str(weights)
    if data:
        env["LESION_LENS_DATA"] = str(data)
    else:
        env.pop("LESION_LENS_DATA", None)
    return env


@contextlib.contextmanager
def serve(env: dict[str, str] | None = None, port: int | None = None, timeout: float = 60.0,
          script: str | os.PathLike | None = None) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """A running `streamlit run app.py` (or `script`, e.g. a benchmark's bare baseline page, run from
    the project folder so it gets the same .streamlit/config.toml): (url, process, seconds until its
    health check answered)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(script or ROOT / "app.py"), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # The server's output goes to a temporary file (a pipe nobody reads could fill up and block it);
    # `proc.log_path` names it while the server runs.
    log = tempfile.NamedTemporaryFile(prefix="lesion-lens-server-", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or server_env(), stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = Path(log.name)
    proc.t0 = t0  # perf_counter() at the spawn (bench/startup.py times from it)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until_healthy(proc, url, proc.log_path, timeout, started=t0, poll=0.05)
        yield url, proc, ready
    finally:
        stop(proc)
        log.close()
        proc.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A Playwright page in the system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = b.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            yield ctx.new_page()
        finally:
            b.close()


# ------------------------------------------------------------------ driving a page

READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
FILE_INPUT = 'input[type="file"]'


def settle(page, timeout: float = 120.0, pause: float = 0.4) -> None:
    """Wait until the script run triggered by the last action has finished."""
    page.wait_for_timeout(pause * 1000)
    page.wait_for_selector(READY, timeout=timeout * 1000)


def upload(page, files: list[tuple[str, bytes]], index: int = 0) -> None:
    """Send files through the page's real <input type=file> (the index-th one)."""
    payload = [{"name": n, "mimeType": "image/png" if n.lower().endswith(".png") else "image/jpeg", "buffer": b}
               for n, b in files]
    page.locator(FILE_INPUT).nth(index).set_input_files(payload)


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the Streamlit selectbox labelled `label`."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).first.click()


def screenshot(page, path: Path, width: int = 1400) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    height = page.evaluate("""() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"], '
        + '[data-testid="stAppViewContainer"], [data-testid="stMainBlockContainer"]')].map(e => e.scrollHeight),
        document.body.scrollHeight)""")
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 8000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})


def goto_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


def start_training(page, settings: dict[str, str]) -> None:
    """On the Training page: type each setting (field label -> value), then press Start training."""
    page.get_by_role("button", name="Start training").wait_for(timeout=60_000)
    settle(page)
    for label, value in settings.items():
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        settle(page)
    page.get_by_role("button", name="Start training").click()


def open_app(page, url: str, title: str | None = None) -> None:
    """The app's first page (or the page named `title` in the navigation), its script run finished."""
    page.goto(url)
    page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
    settle(page)
    if title:
        goto_page(page, title)
        settle(page)
