"""The app in a real Chromium: `streamlit run app.py`, photos through the real <input type=file>.

Throwaway checkpoints of all four models go into a temporary LESION_LENS_WEIGHTS_DIR. Card
thresholds make the labels known: PyTorch CNN and DenseNet161 (threshold 0) call every photo
malignant, Keras CNN and EfficientNet-Lite0 (threshold 1) benign. Screenshots of each page are
written to the test's tmp folder (bench/screenshots.py makes the ones in docs/screenshots/).
"""

from __future__ import annotations

import re

import pytest

from test_app_pages import make_keras_weights, make_weights, photo
from harness import skip_without_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

skip_without_browser()

from harness import (choose, goto_page, screenshot, serve,  # noqa: E402
                               open_app, server_env, settle, upload)

MODELS = {"torch_cnn": ("PyTorch CNN", "malignant"), "efficientnet_lite0": ("EfficientNet-Lite0", "benign"),
          "densenet161": ("DenseNet161", "malignant"), "keras_cnn": ("Keras CNN", "benign")}
DISCLAIMER = "not a medical device"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    weights = tmp_path_factory.mktemp("browser_weights")
    make_weights(weights, {"torch_cnn": 0.0, "efficientnet_lite0": 1.0, "densenet161": 0.0})
    make_keras_weights(weights, 1.0)
    with serve(server_env(weights)) as (url, proc, _):
        yield url, proc


IMAGES_LOADED = """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
    .filter(i => i.complete && i.naturalWidth > 0).length"""


def images_loaded(page) -> int:
    return page.evaluate(IMAGES_LOADED)


def wait_for_images(page, n: int) -> None:
    """Until at least `n` images on the page have loaded and decoded."""
    page.wait_for_function(f"() => ({IMAGES_LOADED})() >= {n}", timeout=60_000)


def no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def test_diagnose_upload_and_every_model(server, page, tmp_path):
    url, _ = server
    open_app(page, url)
    assert DISCLAIMER in page.inner_text("body")
    upload(page, [("my_mole.jpg", photo("malignant", 8, size=300, fmt="JPEG"))])
    page.get_by_text("my_mole.jpg").first.wait_for(timeout=30_000)
    for name, (display, label) in MODELS.items():
        if name != "torch_cnn":  # the default model with these cards
            choose(page, "Model", display)
        page.get_by_text(f"{display} says", exact=True).wait_for(timeout=180_000)
        settle(page, timeout=180)
        body = page.inner_text("body")
        assert re.search(r"Probability of malignant\s+\d+\.\d%", body), name
        assert re.search(rf"At threshold \d\.\d+:\s*{label}", body), (name, body[:2000])
        wait_for_images(page, 3)
        assert images_loaded(page) == 3, name
        no_traceback(page)
    screenshot(page, tmp_path / "diagnose.png")


def test_bad_upload_shows_message_then_next_upload_works(server, page):
    url, _ = server
    open_app(page, url)
    upload(page, [("broken.png", b"\x89PNG\r\n\x1a\nthis is not really a png")])
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="broken.png")
    alert.wait_for(timeout=60_000)
    assert "not an image this app can read" in alert.inner_text()
    no_traceback(page)
    upload(page, [("fine.png", photo("benign", 9, size=200))])
    page.get_by_text("fine.png").first.wait_for(timeout=30_000)
    settle(page, timeout=120)
    page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=120_000)
    assert page.locator('[data-testid="stAlert"]').filter(has_text="broken.png").count() == 0
    no_traceback(page)


def test_compare_page_with_all_models(server, page, tmp_path):
    url, _ = server
    open_app(page, url)
    goto_page(page, "Compare models")
    page.get_by_role("heading", name="Compare models").wait_for(timeout=60_000)
    upload(page, [("same_photo.png", photo("malignant", 10, size=240))])
    page.get_by_text("The models disagree").wait_for(timeout=300_000)
    settle(page, timeout=300)
    assert page.locator('[data-testid="stMetricValue"]').count() == 4
    wait_for_images(page, 4)
    body = page.inner_text("body")
    assert DISCLAIMER in body
    assert re.search(r"PyTorch CNN and DenseNet161 says?\s+malignant", body)
    no_traceback(page)
    screenshot(page, tmp_path / "compare.png")


def test_patient_page_with_several_photos(server, page, tmp_path):
    url, _ = server
    open_app(page, url)
    goto_page(page, "Patient view")
    page.get_by_role("heading", name="Patient view: the ugly duckling").wait_for(timeout=60_000)
    files = [(f"lesion_{i}.png", photo("benign", 40 + i, size=160)) for i in range(5)]
    files.append(("odd_one.png", photo("malignant", 41, size=160)))
    upload(page, files)
    page.wait_for_selector(".js-plotly-plot", timeout=300_000)
    settle(page, timeout=300)
    body = page.inner_text("body")
    assert DISCLAIMER in body and "not been validated" in body
    assert "Outlier score:" in body
    wait_for_images(page, 6)
    # the map carries a thumbnail per photo and names the photo on hover
    assert page.locator(".js-plotly-plot .layer-below image, .js-plotly-plot image").count() >= 6
    point = page.locator(".js-plotly-plot .scatterlayer .point").first
    point.hover(force=True)
    page.wait_for_selector(".js-plotly-plot .hoverlayer .hovertext", timeout=10_000)
    assert re.search(r"(lesion_\d|odd_one)\.png", page.locator(".js-plotly-plot .hoverlayer").first.text_content())
    no_traceback(page)
    screenshot(page, tmp_path / "patient.png")


def test_about_page(server, page, tmp_path):
    url, _ = server
    open_app(page, url)
    goto_page(page, "About")
    page.wait_for_selector('[data-testid="stTable"]', timeout=60_000)
    settle(page)
    body = page.inner_text("body")
    for phrase in (DISCLAIMER, "ISIC Archive", "CC-BY-NC", "What the heatmap does and does not mean",
                   "DenseNet161", "Keras CNN"):
        assert phrase in body, phrase
    no_traceback(page)
    screenshot(page, tmp_path / "about.png")


def test_server_log_has_no_upload_names(server):
    # Uploaded photos are never logged: the file names used above must not be in the server's output.
    _, proc = server
    out = proc.log_path.read_text(errors="replace")
    assert "Traceback" not in out
    for name in ("my_mole", "broken.png", "same_photo", "odd_one", "lesion_0"):
        assert name not in out, name
