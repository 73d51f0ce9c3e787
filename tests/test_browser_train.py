"""Training in a real Chromium: start a run from the Training page, watch the loss chart grow,
see it finish, promote it, predict with it on Diagnose and measure it on Evaluate.

`streamlit run app.py` with LESION_LENS_DATA (tiny synthetic images), LESION_LENS_RUNS and
LESION_LENS_WEIGHTS_DIR in a temporary folder. Screenshots go to the test's tmp folder, or to
$LESION_LENS_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from harness import skip_without_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

skip_without_browser()

from harness import (FILE_INPUT, browser, goto_page, screenshot, serve, server_env,  # noqa: E402
                               settle, start_training, upload)
from training.synthetic import write_dataset  # noqa: E402

STATE = "span.ll-state"
EPOCHS = 10  # below the default early-stopping patience, so the run always goes the distance


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_train")
    data, runs, weights = root / "data", root / "runs", root / "weights"
    write_dataset(data / "synth", per_class=100, size=32)
    env = server_env(weights, data)
    env["LESION_LENS_RUNS"] = str(runs)
    env.pop("LESION_LENS_TRAINING", None)
    with serve(env) as (url, proc, _):
        yield url, proc, data, runs, weights


def chart_points(page) -> list[int]:
    """Points drawn in each Plotly chart on the page (Plotly keeps its traces on the div)."""
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .map(d => (d.data || []).reduce((n, t) => n + (t.x ? t.x.length : 0), 0))""")


def state(page) -> str:
    loc = page.locator(STATE)
    return loc.first.inner_text().strip() if loc.count() else ""


def no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def test_train_watch_promote_and_use(server, tmp_path, monkeypatch):
    url, proc, data, runs, weights = server
    shots = Path(os.environ.get("LESION_LENS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with browser() as page:
        page.goto(url)
        settle(page)
        goto_page(page, "Training")
        # Enough epochs that the run outlasts several 1-second chart refreshes even on a fast machine
        # (2 epochs took under 2 s on CI, too quick to see the chart grow).
        start_training(page, {"Epochs": str(EPOCHS), "Image size (px)": "32", "Batch size": "8"})
        page.wait_for_selector(f"{STATE}:text-is('running')", timeout=120_000)
        (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith((".", "_"))]

        # the loss chart grows while the run goes on, without reloading the page
        page.evaluate("() => { window.__same_document = true; }")
        counts: list[int] = []
        deadline = time.time() + 180
        while time.time() < deadline and state(page) in ("starting", "running"):
            pts = chart_points(page)
            if pts and pts[0] and (not counts or pts[0] > counts[-1]):
                counts.append(pts[0])
            if len(counts) >= 3:
                break
            page.wait_for_timeout(300)
        assert len(counts) >= 3 and counts == sorted(counts), (counts, (run_dir / "stdout.txt").read_text())
        body = page.inner_text("body")
        assert re.search(rf"epoch \d+/{EPOCHS} · step \d+/\d+", body) and "Device: cpu" in body
        screenshot(page, shots / "train.png")

        page.wait_for_selector(f"{STATE}:text-is('finished')", timeout=240_000)
        settle(page)
        assert page.evaluate("() => window.__same_document === true")  # live updates, no page reload
        assert chart_points(page)[0] > counts[-1]
        no_traceback(page)

        page.get_by_role("button", name="Promote to the app's PyTorch CNN").click()
        page.get_by_text("Promoted: the app's PyTorch CNN now uses run").wait_for(timeout=60_000)
        assert (weights / "torch_cnn.pt").is_file() and (weights / "torch_cnn.json").is_file()
        monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(weights))
        from models import load_classifier

        clf = load_classifier("torch_cnn")
        assert clf.card["promoted_from"] == run_dir.name and clf.card["synthetic"]

        # Diagnose predicts with the promoted model
        goto_page(page, "Diagnose")
        page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
        settle(page)
        upload(page, [("mole.png", (data / "synth" / "malignant" / "003.png").read_bytes())])
        page.get_by_text("PyTorch CNN says", exact=True).wait_for(timeout=120_000)
        settle(page)
        body = page.inner_text("body")
        assert re.search(r"Probability of malignant\s+\d+\.\d%", body)
        assert "trained on SYNTHETIC" in body
        no_traceback(page)

        # Evaluate measures it on the folder (it warns that the model was trained on it)
        goto_page(page, "Evaluate")
        page.get_by_role("button", name="Evaluate").wait_for(timeout=60_000)
        settle(page)
        page.get_by_role("button", name="Evaluate").click()
        page.get_by_text("ROC AUC", exact=True).wait_for(timeout=120_000)
        settle(page)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=30_000)
        body = page.inner_text("body")
        assert re.search(r"Images\s+200", body) and "Mistakes at this threshold" in body
        assert "trained on this very folder" in body
        no_traceback(page)
        screenshot(page, shots / "evaluate.png")
