"""Diagnose as its users meet it: the report to keep (PDF and PNG, made in memory by pages/report.py
when the download button is clicked), and the page's state (the CAM method across models, a refused
file after a good one). Real app, real (throwaway) models: the fixtures of test_app_pages.py."""

from __future__ import annotations

import io
import re
import zlib
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from conftest import files_written
from test_app_pages import app, make_weights, no_exception, photo, prob_percent, texts, weights  # noqa: F401

# ------------------------------------------------------------------ reading what a download button gives


@pytest.fixture
def downloads(monkeypatch):
    """fetch(at, label): the bytes the download button whose label starts with `label` gives when
    clicked, made by the page's own callable (AppTest keeps its media file manager only during a run,
    so each one it makes is remembered here)."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.media_file_manager import MediaFileManager

    managers = []

    class Kept(MediaFileManager):
        def __init__(self, storage):
            super().__init__(storage)
            self.storage = storage
            managers.append(self)

    monkeypatch.setattr(app_test, "MediaFileManager", Kept)

    def fetch(at, label: str) -> bytes:
        (button,) = [b for b in at.get("download_button") if b.label.startswith(label)]
        url = managers[-1].execute_deferred(button.proto.deferred_file_id)  # what a click does
        return managers[-1].storage.get_file(url.rsplit("/", 1)[-1].split(".")[0]).content

    return fetch


def pdf_text(data: bytes) -> str:
    """The text a PDF shows (fpdf2's core-font `(...) Tj` strings, streams inflated), one space between
    lines, so a wrapped sentence reads whole."""
    out = []
    for m in re.finditer(rb"<<(.*?)>>\s*stream\r?\n(.*?)\r?\nendstream", data, re.S):
        body = zlib.decompress(m.group(2)) if b"/FlateDecode" in m.group(1) else m.group(2)
        out += [re.sub(rb"\\(.)", rb"\1", s).decode("latin-1")
                for s in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", body)]
    return re.sub(r"\s+", " ", " ".join(out))


def png_image(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# ------------------------------------------------------------------ the report, from the page

def test_diagnose_report_pdf_and_png(weights, downloads):
    from pages.report import PLAIN_DISCLAIMER, PNG_IMAGE, PNG_WIDTH

    at = app()
    at.file_uploader(key="diag_upload").upload("mole-of-mrs-x.png", photo("malignant", 3), "image/png").run()
    no_exception(at)
    assert "About **mole-of-mrs-x.png**" in texts(at.caption)  # the result names its file
    (p,) = prob_percent(at)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download the report (PDF)", "Download the overlay (PNG)"]

    pdf = downloads(at, "Download the report")
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for expected in ["Photo: mole-of-mrs-x.png", f"Probability of malignant: {p:.1f}%", "PyTorch CNN: malignant",
                     "Label at threshold 0.000 (the model's own): malignant", PLAIN_DISCLAIMER,
                     "Validation (300 photos), at its threshold 0.000: AUC", "Trained on: throwaway test checkpoint",
                     "Heatmap: layercam, white line: the lesion's outline", "Not-a-lesion gate: passed",
                     "Familiarity:", "Photo quality:", "Heatmap on the lesion: "]:
        assert expected in text, (expected, text)
    assert datetime.now().astimezone().strftime("Made: %Y-%m-%d") in text
    shown = re.search(r"\*\*(\d+%) of the heatmap lies on the lesion\*\*", texts(at.markdown)).group(1)
    assert f"Heatmap on the lesion: {shown} of it" in text  # the share the page shows
    assert pdf.count(b"/Subtype /Image") == 2  # the photo and the overlay

    # the user's threshold is the report's, with the model's own beside it
    at.slider(key="diag_thr_torch_cnn").set_value(1.0).run()
    text = pdf_text(downloads(at, "Download the report"))
    assert "Label at threshold 1.000 (chosen by the user): benign" in text
    assert "At the model's own threshold 0.000: malignant" in text
    assert "sensitivity 0.00, specificity 1.00 on validation" in text

    at.radio(key="diag_report_format").set_value("PNG").run()
    no_exception(at)
    assert at.get("download_button")[0].label == "Download the report (PNG)"
    img = png_image(downloads(at, "Download the report"))
    assert img.mode == "RGB" and img.width == PNG_WIDTH and PNG_IMAGE + 400 < img.height < 2000, img.size
    # the two pictures (photo, overlay) sit side by side under the header: a band that is mostly not white
    band = np.asarray(img)[150:150 + PNG_IMAGE // 2, 40:40 + 2 * PNG_IMAGE]
    assert (band.min(axis=2) < 235).mean() > 0.8


def test_report_of_a_flat_map_has_no_overlay(tmp_path, monkeypatch, downloads):
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(make_weights(tmp_path, {"torch_cnn": 0.5}, flat=True)))
    at = app()
    at.selectbox(key="diag_example").select_index(0).run()
    assert "No spatial evidence" in texts(at.info)
    assert [b.label for b in at.get("download_button")] == ["Download the report (PDF)"]  # no overlay to download
    pdf = downloads(at, "Download the report")
    assert "Heatmap: layercam: flat for this photo, no spatial evidence" in pdf_text(pdf)
    assert pdf.count(b"/Subtype /Image") == 1  # the photo only


# ------------------------------------------------------------------ the report module on its own

def _card(threshold=0.4):
    from test_app_pages import fake_validation

    return {"threshold": threshold, "epochs": 3, "validation": fake_validation(),
            "data": {"name": "HAM10000", "counts": {"train": {"benign": 70, "malignant": 30}}}}


def _report(results: int, name: str = "mole.png"):
    from pages.report import ModelResult, Report

    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((336, 336, 3)) * 255).astype(np.uint8))
    res = [ModelResult(f"Model {i}", 0.25 + 0.1 * i, 0.4, _card(), "gradcam++", img if i % 2 == 0 else None,
                       checks=["Familiarity: unfamiliar – “odd” → retake ≥ 1 photo"]) for i in range(results)]
    return Report(name, img, res, datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc), summary="The models disagree.")


def test_report_text_outside_latin1_is_spelled_out():
    from pages.report import latin1, report_pdf, report_png

    assert latin1("“a” – b → c ≥ d …") == '"a" - b -> c >= d ...'
    assert latin1("**bold** :material/info: grain de beauté 病变.png") == "bold  grain de beauté ??.png"
    rep = _report(2, name="grain de beauté – 病变.png")
    text = pdf_text(report_pdf(rep))
    assert "Photo: grain de beauté - ??.png" in text
    assert "Familiarity: unfamiliar - \"odd\" -> retake >= 1 photo" in text
    assert "Made: 2026-01-02 03:04 UTC" in text and "Model 1: benign" in text and "Model 0: benign" in text
    assert "Probability of malignant: 35.0%" in text and "Trained on: HAM10000, 100 training photos; 3 epochs." in text
    # an overlay without the lesion's outline does not claim one; a flat map says so
    assert "Heatmap: gradcam++ Label" not in text and "Heatmap: gradcam++ The model" in text
    assert "Heatmap: gradcam++: flat for this photo, no spatial evidence" in text and "white line" not in text
    png_image(report_png(rep))


def test_report_png_grows_with_the_models_and_pdf_breaks_pages():
    from pages.report import PNG_WIDTH, report_pdf, report_png

    one, four = (png_image(report_png(_report(n))) for n in (1, 4))
    assert one.width == four.width == PNG_WIDTH
    assert four.height > one.height + 3 * 150  # each model's text block is at least 150 px
    assert report_pdf(_report(1)).count(b"/Type /Page\n") == 1
    assert report_pdf(_report(4)).count(b"/Type /Page\n") >= 2


def test_reports_are_made_in_memory():
    from pages.report import report_pdf, report_png

    with files_written() as writes:
        report_pdf(_report(2))
        report_png(_report(2))
    assert writes == []


# ------------------------------------------------------------------ Diagnose's state

def test_cam_method_survives_a_model_change(weights):
    at = app()
    at.file_uploader(key="diag_upload").upload("mole.png", photo("benign", 2), "image/png").run()
    at.selectbox(key="diag_cam").set_value("gradcam++").run()
    no_exception(at)
    assert any("Heatmap (gradcam++)" in str(im.proto) for im in at.image)
    at.selectbox(key="diag_model").set_value("efficientnet_lite0").run()
    no_exception(at)
    assert "EfficientNet-Lite0 says" in texts(at.subheader)
    assert at.selectbox(key="diag_cam").value == "gradcam++"
    assert any("Heatmap (gradcam++)" in str(im.proto) for im in at.image)
    # a model without gradcam++ (the Keras CNN: Grad-CAM only) falls back to Grad-CAM ...
    at.selectbox(key="diag_model").set_value("keras_cnn").run()
    no_exception(at)
    assert list(at.selectbox(key="diag_cam").options) == ["gradcam"] and at.selectbox(key="diag_cam").value == "gradcam"
    # ... and the next model that has it gets the user's choice back
    at.selectbox(key="diag_model").set_value("torch_cnn").run()
    assert at.selectbox(key="diag_cam").value == "gradcam++"
    assert any("Heatmap (gradcam++)" in str(im.proto) for im in at.image)
    # choosing Grad-CAM on purpose is a choice too
    at.selectbox(key="diag_cam").set_value("gradcam").run()
    at.selectbox(key="diag_model").set_value("efficientnet_lite0").run()
    assert at.selectbox(key="diag_cam").value == "gradcam"


def test_a_refused_file_after_a_good_one_removes_the_answer(weights):
    at = app()
    at.file_uploader(key="diag_upload").upload("good.png", photo("malignant", 6), "image/png").run()
    assert prob_percent(at) and len(at.image) == 3 and at.get("download_button")
    at.file_uploader(key="diag_upload").set_value(("bad.png", b"\x89PNG\r\n\x1a\n not really", "image/png")).run()
    no_exception(at)
    assert "bad.png: not an image this app can read" in texts(at.error)
    assert not prob_percent(at) and not at.image and not at.get("download_button")
    assert "good.png" not in texts(at.caption) + texts(at.markdown)


def test_tta_bar_is_drawn_like_the_answer_bar(weights):
    at = app()
    at.file_uploader(key="diag_upload").upload("mole.png", photo("benign", 7), "image/png").run()
    at.slider(key="diag_thr_torch_cnn").set_value(0.5).run()
    at.toggle(key="diag_tta").set_value(True).run()
    no_exception(at)
    bars = [m.value for m in at.markdown if 'class="ll-bar"' in m.value]
    assert len(bars) == 2
    main, tta = bars
    assert "threshold 0.500</div>" in main and "threshold 0.500</div>" in tta  # the same threshold
    ticks = re.findall(r"left:([\d.]+)%;top:2px", tta)
    assert len(ticks) == 8 and not re.findall(r"left:([\d.]+)%;top:2px", main)  # the 8 views, on the TTA bar only
    mean = float(re.search(r"mean over 8 flips/rotations ([\d.]+)%", texts(at.markdown)).group(1))
    assert f"probability of malignant {mean:.1f} percent, threshold 50.0 percent" in tta
    # both are common.prob_bar's drawing: the same box, threshold marker and colour rule
    colour = {"benign": "#2471a3", "malignant": "#b03a2e"}
    for bar, prob in [(main, prob_percent(at)[0]), (tta, mean)]:
        assert 'left:50.00%;top:-4px' in bar
        assert f"background:{colour['malignant' if prob >= 50 else 'benign']};border-radius:4px" in bar
    # and they sit in the same column, so they have the same width: the TTA bar right under the answer's
    (left,) = [c for c in at.columns if any('class="ll-bar"' in m.value for m in c.markdown)]
    assert sum('class="ll-bar"' in m.value for m in left.markdown) == 2
