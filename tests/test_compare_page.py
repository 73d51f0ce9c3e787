"""Compare as its users meet it: the photo above the models, each model with its own heatmap method and
threshold, rows that stay level, test-time augmentation, and the report of every model's answer.

The `weights` fixture's cards (test_app_pages.py) make the labels known: PyTorch CNN at threshold 0
calls every photo malignant, EfficientNet-Lite0 at threshold 1 benign."""

from __future__ import annotations

import re

from models.registry import TORCH_CAM_METHODS as TORCH
from test_app_pages import app, no_exception, photo, prob_percent, texts, weights  # noqa: F401
from test_report import downloads, pdf_text, png_image  # noqa: F401


def compare(name: str = "mole.png", seed: int = 3):
    at = app("pages/compare.py")
    at.file_uploader(key="cmp_upload").upload(name, photo(seed=seed), "image/png").run()
    no_exception(at)
    return at


def image_captions(at) -> list[str]:
    return [im.proto.imgs[0].caption for im in at.image]


def test_the_photo_comes_first_then_a_row_per_kind_of_content(weights):
    at = compare("left-arm.png")
    captions = image_captions(at)
    assert captions[0] == "left-arm.png: the centre crop the models see" and len(captions) == 3
    # the settings, the answers, the heatmaps and the validation each have their own row of columns,
    # so a long label in one column cannot push the next row out of line in another
    cols = [c for c in at.columns if c.metric or c.image or c.selectbox]
    assert len(cols) >= 6
    for c in cols:
        kinds = [bool(c.selectbox), bool(c.metric), bool(c.image)]
        assert sum(kinds) == 1, kinds


def test_each_model_has_its_own_method(weights):
    at = compare()
    assert list(at.selectbox(key="cmp_cam_torch_cnn").options) == list(TORCH)
    assert list(at.selectbox(key="cmp_cam_efficientnet_lite0").options) == list(TORCH)
    at.selectbox(key="cmp_cam_torch_cnn").set_value("eigencam").run()
    at.selectbox(key="cmp_cam_efficientnet_lite0").set_value("layercam").run()
    no_exception(at)
    heatmaps = image_captions(at)[1:]
    assert heatmaps[0].startswith("eigencam: evidence") and heatmaps[1].startswith("layercam: evidence"), heatmaps


def test_each_model_has_its_own_threshold(weights):
    at = compare()
    assert at.slider(key="cmp_thr_torch_cnn").value == 0.0 and at.slider(key="cmp_thr_efficientnet_lite0").value == 1.0
    assert "The models disagree" in texts(at.warning) and "(each at its own threshold)" in texts(at.warning)
    at.slider(key="cmp_thr_torch_cnn").set_value(1.0).run()
    no_exception(at)
    md = texts(at.markdown)
    assert ">benign</span> at your threshold 1.000" in md and ">benign</span> at its threshold 1.000" in md
    assert "All 2 models say **benign**, at the thresholds below" in texts(at.success)
    # the heatmap follows the label the threshold gives
    assert all("evidence for “benign”" in c for c in image_captions(at)[1:]), image_captions(at)
    at.slider(key="cmp_thr_efficientnet_lite0").set_value(0.0).run()
    warning = texts(at.warning)
    assert re.search(r"EfficientNet-Lite0 says \*\*malignant\*\*", warning)
    assert re.search(r"PyTorch CNN says \*\*benign\*\*", warning)


def test_test_time_augmentation_per_model(weights):
    at = compare()
    at.toggle(key="cmp_tta").set_value(True).run()
    no_exception(at)
    md = texts(at.markdown)
    assert md.count("**Test-time augmentation**: mean over 8 flips/rotations") == 2
    bars = [m.value for m in at.markdown if 'class="ll-bar"' in m.value]
    assert len(bars) == 4 and sum(len(re.findall(r"top:2px;bottom:2px;width:2px", b)) == 8 for b in bars) == 2


def test_compare_report_has_every_model(weights, downloads):
    at = compare("back-mole.png")
    probs = prob_percent(at)
    assert at.get("download_button")[0].label == "Download the report (PDF)"
    text = pdf_text(downloads(at, "Download the report"))
    assert "Photo: back-mole.png" in text and "The models disagree." in text
    assert "PyTorch CNN: malignant" in text and "EfficientNet-Lite0: benign" in text
    for p in probs:
        assert f"Probability of malignant: {p:.1f}%" in text
    assert "Research and teaching demo, not a medical device" in text
    at.radio(key="cmp_report_format").set_value("PNG").run()
    img = png_image(downloads(at, "Download the report"))
    assert img.width == 1000 and img.height > 1000


def test_a_refused_file_after_a_good_one_removes_the_answers(weights):
    at = compare("good.png")
    assert len(prob_percent(at)) == 2
    at.file_uploader(key="cmp_upload").set_value(("bad.png", b"not an image", "image/png")).run()
    no_exception(at)
    assert "bad.png: not an image this app can read" in texts(at.error)
    assert not prob_percent(at) and not at.image and not at.get("download_button")
