"""Issue 15 in a real Chromium: the app as its users meet it.

The example picker with its credit, the camera on Diagnose, Diagnose on a phone-wide screen, one
photo source at a time (an upload clears the example; a refused file clears the answer), Patient's
'Clear all', finalizing a stopped training run from the page, and Evaluate on an uploaded zip.

`streamlit run app.py` with a throwaway PyTorch CNN (threshold 0.5) in a temporary
LESION_LENS_WEIGHTS_DIR, and LESION_LENS_DATA (a tiny synthetic dataset) and LESION_LENS_RUNS in
temporary folders. Photos are real lesion photos (the shipped HAM10000 examples, tests/badfiles.lesion).
"""

from __future__ import annotations

import io
import re
import zipfile

import pytest

import badfiles
from test_app_pages import make_weights, photo
from harness import skip_without_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

skip_without_browser()

from harness import (FILE_INPUT, goto_page, screenshot, serve, server_env, settle,  # noqa: E402
                     open_app, start_training, upload)
from training.synthetic import write_dataset  # noqa: E402

EXAMPLE_BOX = "…or pick an example"
PLACEHOLDER = "Choose an example photo"
CREDIT = "CC BY-NC 4.0"
STATE = "span.ll-state"
PHONE = 390


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue15_browser")
    data, runs = root / "data", root / "runs"
    weights = make_weights(root / "weights", {"torch_cnn": 0.5})
    write_dataset(data / "synth", per_class=100, size=32)
    env = server_env(weights, data)
    env["LESION_LENS_RUNS"] = str(runs)
    env.pop("LESION_LENS_TRAINING", None)
    with serve(env) as (url, proc, _):
        yield url, proc, weights, runs


def no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def answer(page) -> str:
    """The Diagnose answer's percentage, once the page has finished."""
    page.get_by_text("PyTorch CNN says", exact=True).wait_for(timeout=180_000)
    settle(page, timeout=180)
    value = page.locator('[data-testid="stMetricValue"]').first.inner_text().strip()
    assert re.fullmatch(r"\d+\.\d%", value), value
    return value


def pick_example(page, text: str) -> None:
    box = example_box(page)
    box.click()
    box.press_sequentially(text)  # the list is long: typing filters it
    page.get_by_role("option").filter(has_text=text).first.click()


def example_box(page):
    return page.get_by_role("combobox", name=EXAMPLE_BOX, exact=True)


# ------------------------------------------------------------------ Diagnose: photo sources

def test_an_example_shows_its_diagnosis_and_credit_then_an_upload_replaces_it(server, page):
    url, _, weights, _ = server
    open_app(page, url)
    pick_example(page, "melanoma 1 (malignant)")
    example_value = answer(page)
    assert example_box(page).input_value().startswith("melanoma 1 (malignant) · ISIC_")
    body = page.inner_text("body")
    assert re.search(r"ISIC_\d+: melanoma \(malignant\), confirmed by histopathology", body), body[-3000:]
    assert "HAM10000" in body and CREDIT in body

    mine = photo("benign", 3, size=300)
    upload(page, [("my_arm.png", mine)])
    page.wait_for_function("(label) => document.querySelector(`input[aria-label=\"${label}\"]`).value === ''",
                           arg=EXAMPLE_BOX, timeout=60_000)  # the example choice is cleared
    value = answer(page)
    assert example_box(page).input_value() == "" and example_box(page).get_attribute("placeholder") == PLACEHOLDER
    from models.loader import load_classifier

    expected = f"{load_classifier('torch_cnn', weights / 'torch_cnn.pt').predict(mine).prob_malignant:.1%}"
    assert value == expected != example_value, (value, expected, example_value)
    assert CREDIT not in page.inner_text("body")
    no_traceback(page)


def test_a_refused_file_removes_the_previous_answer(server, page):
    url, *_ = server
    open_app(page, url)
    upload(page, [("good.png", photo("malignant", 2, size=240))])
    answer(page)
    bad = badfiles.by_name("notes.jpg")
    upload(page, [(bad.name, bad.data)])
    page.locator('[data-testid="stAlert"]').filter(has_text="notes.jpg: ").wait_for(timeout=60_000)
    settle(page)
    assert badfiles.NOT_AN_IMAGE in page.inner_text("body")
    assert page.locator('[data-testid="stMetric"]').count() == 0
    assert "Probability of malignant" not in page.inner_text("body")
    no_traceback(page)


def test_diagnose_offers_the_camera(server, page):
    url, *_ = server
    open_app(page, url)
    assert page.locator('[data-testid="stCameraInput"]').count() == 0
    page.get_by_text("Take a photo with this device's camera", exact=True).click()
    page.locator('[data-testid="stCameraInput"]').wait_for(timeout=60_000)
    settle(page)
    no_traceback(page)


def scroll_widths(page) -> list[int]:
    """The page's and Streamlit's main block's scroll widths (the main block scrolls on its own)."""
    return page.evaluate("""() => [document.scrollingElement.scrollWidth,
        ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stMainBlockContainer"]')]
          .map(e => e.scrollWidth)]""")


def test_diagnose_on_a_phone(server, page, tmp_path):
    url, *_ = server
    context = page.context.browser.new_context(viewport={"width": PHONE, "height": 844}, device_scale_factor=1)
    try:
        phone = context.new_page()
        open_app(phone, url)
        upload(phone, [("mole.png", photo("malignant", 4, size=400, fmt="JPEG"))])
        answer(phone)
        phone.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stImage"] img')]
            .filter(i => i.complete && i.naturalWidth > 0).length >= 3""", timeout=60_000)
        assert max(scroll_widths(phone)) <= PHONE + 2, scroll_widths(phone)
        # the threshold at its end (the bar's label sits at the threshold: it must not stick out)
        slider = phone.locator('[data-testid="stSlider"]').filter(has_text="Decision threshold").get_by_role("slider")
        slider.focus()
        slider.press("End")
        phone.get_by_text("At threshold 1.000:").wait_for(timeout=60_000)
        settle(phone)
        assert max(scroll_widths(phone)) <= PHONE + 2, scroll_widths(phone)
        # what a person needs is on the screen's width: the uploader, the answer and the three images
        for sel in ('[data-testid="stFileUploader"]', '[data-testid="stMetricValue"]', '[data-testid="stImage"] img'):
            boxes = [phone.locator(sel).nth(i).bounding_box() for i in range(phone.locator(sel).count())]
            assert boxes and all(b and b["width"] > 40 and b["x"] >= -1 and b["x"] + b["width"] <= PHONE + 1
                                 for b in boxes), (sel, boxes)
        no_traceback(phone)
        screenshot(phone, tmp_path / "diagnose_phone.png", width=PHONE)
        assert (tmp_path / "diagnose_phone.png").stat().st_size > 10_000
    finally:
        context.close()


# ------------------------------------------------------------------ Patient

def test_patient_clear_all_empties_the_uploads_and_the_examples(server, page):
    url, *_ = server
    open_app(page, url, "Patient view")
    start = "Upload photos, or switch on the example photos, to begin."
    page.get_by_text(start).wait_for(timeout=60_000)
    clear = page.get_by_test_id("stButton").get_by_role("button", name="Clear all")
    assert clear.is_disabled()
    upload(page, [(f"spot_{i}.png", photo("benign", 5 + i, size=128)) for i in range(2)])
    page.get_by_text("Gallery, most striking first").wait_for(timeout=300_000)
    settle(page, timeout=300)
    clear.click()
    page.get_by_text(start).wait_for(timeout=60_000)
    settle(page)
    uploader = page.locator('[data-testid="stFileUploader"]').inner_text()
    assert "spot_0.png" not in uploader and "spot_1.png" not in uploader, uploader

    examples = page.get_by_role("switch", name="Use the example photos instead")
    page.get_by_text("Use the example photos instead").click()
    page.get_by_text("A made-up patient").wait_for(timeout=60_000)
    page.get_by_text("Gallery, most striking first").wait_for(timeout=300_000)
    settle(page, timeout=300)
    assert examples.is_checked()
    clear.click()
    page.get_by_text(start).wait_for(timeout=60_000)
    settle(page)
    assert not examples.is_checked() and clear.is_disabled()
    assert page.get_by_text("A made-up patient").count() == 0
    no_traceback(page)


# ------------------------------------------------------------------ Training: finalize a stopped run

def test_a_stopped_run_is_finalized_from_the_page(server, page):
    url, _, _, runs = server
    open_app(page, url, "Training")
    start_training(page, {"Epochs": "100", "Image size (px)": "64", "Batch size": "8"})
    page.wait_for_selector(f"{STATE}:text-is('running')", timeout=120_000)
    (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith((".", "_"))]
    # the first validation has made a best checkpoint: stop the run there
    page.get_by_text(re.compile(r"best validation AUC [\d.]+ at epoch \d+")).wait_for(timeout=300_000)
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector(f"{STATE}:text-is('stopped')", timeout=120_000)
    settle(page)
    assert not (run_dir / "card.json").exists()

    page.get_by_role("button", name="Finalize into a model card").click()
    page.get_by_role("button", name="Evaluate this run").wait_for(timeout=300_000)
    settle(page)
    assert (run_dir / "card.json").is_file()
    body = page.inner_text("body")
    assert re.search(r"Model card: PyTorch CNN, 64 px, best epoch \d+; validation AUC [\d.]+", body), body[-3000:]
    assert "Card written by python -m training.finalize" in body
    no_traceback(page)

    page.get_by_role("button", name="Evaluate this run").click()
    page.get_by_role("heading", name="Evaluate", exact=True).wait_for(timeout=60_000)
    settle(page)
    chosen = page.get_by_role("combobox", name="Model", exact=True).input_value()
    assert f"run {run_dir.name}" in chosen, chosen
    no_traceback(page)


# ------------------------------------------------------------------ Evaluate: an uploaded zip

def labelled_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for kind in ("benign", "malignant"):
            for i in range(3):
                z.writestr(f"my_clinic/{kind}/{kind}_{i}.png", photo(kind, 20 + i, size=128))
    return buf.getvalue()


def send_zip(page, name: str, data: bytes) -> None:
    page.locator(FILE_INPUT).first.set_input_files([{"name": name, "mimeType": "application/zip", "buffer": data}])


def test_evaluate_an_uploaded_zip_and_refuse_one_that_is_not(server, page):
    url, *_ = server
    open_app(page, url, "Evaluate")
    page.get_by_text("a zip file I upload", exact=True).click()
    page.locator(FILE_INPUT).wait_for(state="attached", timeout=60_000)
    settle(page)
    send_zip(page, "clinic.zip", labelled_zip())
    page.get_by_text("clinic.zip (3 benign, 3 malignant)").wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("ROC AUC", exact=True).wait_for(timeout=300_000)
    settle(page, timeout=300)
    body = page.inner_text("body")
    assert re.search(r"Images\s+6\b", body) and re.search(r"ROC AUC\s+\d\.\d{3}", body), body[:3000]
    assert "PyTorch CNN on 6 images of clinic.zip" in body
    no_traceback(page)

    send_zip(page, "holiday.zip", b"these are not the photos you are looking for\n" * 10)
    page.locator('[data-testid="stAlert"]').filter(has_text="holiday.zip: not a zip file").wait_for(timeout=60_000)
    settle(page)
    assert page.get_by_text("ROC AUC", exact=True).count() == 0
    no_traceback(page)


def test_server_log_has_no_traceback_and_no_upload_names(server):
    _, proc, _, _ = server
    log = proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    for name in ("my_arm", "notes.jpg", "spot_0", "clinic.zip", "holiday.zip"):
        assert name not in log, name
