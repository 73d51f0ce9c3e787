"""Waiting for a Streamlit server we started: shared by the benchmarks and the browser tests."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path


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
