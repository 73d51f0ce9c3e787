"""The DenseNet lesson in a real Chromium: it renders fully; its full-page screenshot goes to the
test's tmp folder, or to $LESION_LENS_SCREENSHOTS when set (`LESION_LENS_SCREENSHOTS=docs/screenshots`
retakes the README's)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness import skip_without_browser

pytestmark = [pytest.mark.browser]

skip_without_browser()

from harness import browser, serve, server_env  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with serve(server_env(), timeout=90) as (url, proc, _):
        yield url, proc.log_path


def test_densenet_page_renders_and_screenshot(server, tmp_path):
    url, log = server
    shot = Path(os.environ.get("LESION_LENS_SCREENSHOTS") or tmp_path) / "densenet.png"
    with browser() as page:
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        # Through app.py's navigation, as a student gets there: its own link (titled "DenseNet…"),
        # not the pages/ folder listing Streamlit shows for a moment before app.py has run.
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
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
