"""Starting the app's Streamlit server and the system Chromium: shared by the benchmarks and the
browser tests."""

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
