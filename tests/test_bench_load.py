"""bench/load.py end to end at a small scale: real server, real Chromium, concurrent sessions that
each upload their own photo. The harness must see every result, no errors, no cross-talk, and count
the server's and the browsers' CPU (the latency targets themselves live in the benchmark, not here)."""

from __future__ import annotations

import json
import math

import pytest

from harness import skip_without_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

skip_without_browser()

from bench import load  # noqa: E402


def test_three_sessions_at_once_each_get_their_own_answer(tmp_path, capsys):
    out = tmp_path / "load.json"
    load.main(["--sessions", "3", "--min-samples", "3", "--timeout", "120", "--json", str(out)])
    printed = capsys.readouterr().out
    assert printed.count("| sessions at once |") == 2 and "browser CPU s/session" in printed
    assert "The bare Streamlit page" in printed
    report = json.loads(out.read_text())
    assert report["info"]["server_log_tracebacks"] == 0
    rows = {r["n"]: r for r in report["rows"]}
    bare = {r["n"]: r for r in report["bare_rows"]}
    assert sorted(rows) == sorted(bare) == [1, 3]  # the single-session baseline is always measured too
    for row in [*rows.values(), *bare.values()]:
        assert row["sessions"] >= 3 and row["errors"] == 0 and row["crosstalk"] == 0, row["results"]
        assert all(r["shown"] == r["expected"] for r in row["results"])  # each saw its own photo's answer
        assert 0 < row["p50"] <= row["p95"] <= row["max"] < 120
        assert row["server_cpu"] > 0 and row["browser_cpu"] > 0 and math.isfinite(row["rss_mb"])
