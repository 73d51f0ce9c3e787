"""The pure helpers of the pages and the model registry: operating points from the ROC, bars, model choice,
examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import registry
from models.classifier import label_at
from pages import common, photos
from training.metrics import binary_metrics, operating_point, roc_points


@pytest.fixture
def scores():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    p = np.clip(0.3 * y + 0.7 * rng.random(150), 0, 1).round(3)  # rounding makes ties
    return y, p


def test_operating_point_matches_direct_metrics(scores):
    y, p = scores
    validation = {"roc": roc_points(y, p, max_points=10_000)}
    for t in [0.0, 0.05, 0.2, 0.333, 0.5, float(p[7]), 0.77, 0.999, 1.0]:
        sens, spec = operating_point(validation, t)
        m = binary_metrics(y, p, t)
        assert sens == pytest.approx(m["sensitivity"], abs=1e-4), t
        assert spec == pytest.approx(m["specificity"], abs=1e-4), t


def test_operating_point_is_monotonic_on_a_thinned_roc(scores):
    y, p = scores
    validation = {"roc": roc_points(y, p, max_points=12)}
    points = [operating_point(validation, t) for t in np.linspace(0, 1, 41)]
    sens = [s for s, _ in points]
    spec = [s for _, s in points]
    assert sens == sorted(sens, reverse=True) and spec == sorted(spec)
    assert points[0] == (1.0, 0.0) and points[-1][1] == 1.0


@pytest.mark.parametrize("validation", [None, {}, {"roc": None}, {"roc": {"fpr": [0, 1], "tpr": [0, 1]}},
                                        {"roc": {"fpr": [0], "tpr": [0, 1], "thresholds": [1, 0]}}])
def test_operating_point_without_a_usable_roc(validation):
    assert operating_point(validation, 0.5) is None


def test_operating_point_above_every_threshold():
    assert operating_point({"roc": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "thresholds": [0.9, 0.1]}}, 0.95) == (0.0, 1.0)


def test_prob_bar_marks_probability_and_threshold():
    html = common.prob_bar_html(0.734, 0.3, ticks=[0.6, 0.8])
    assert "width:73.40%" in html and "left:30.00%" in html and "threshold 0.300" in html
    assert html.count("opacity:.55") == 2
    assert common.LABEL_COLOURS["malignant"] in html
    assert common.LABEL_COLOURS["benign"] in common.prob_bar_html(0.2, 0.3)
    assert label_at(0.3, 0.3) == "malignant" and label_at(0.29, 0.3) == "benign"


def test_image_error_names_the_file():
    photo = photos.Photo("holiday.heic", b"x", "upload")
    assert photos.image_error(photo, ValueError("upload: HEIC/AVIF photos are not supported")) == \
        "holiday.heic: HEIC/AVIF photos are not supported"


def test_validation_sentence():
    assert "no validation metrics" in common.validation_sentence({})
    s = common.validation_sentence({"threshold": 0.31, "validation": {"n": 400, "sensitivity": 0.9, "specificity": 0.7,
                                                                  "auc": 0.88}})
    assert s == ("On its validation set (400 images), at its threshold 0.310: sensitivity 0.90, specificity 0.70, "
                 "AUC 0.88.")


def _card(folder, name, auc, epochs=1):
    from models.registry import default_card

    card = default_card(name)
    card.update(epochs=epochs, validation={"auc": auc})
    (folder / f"{name}.json").write_text(json.dumps(card))
    ext = ".keras" if name == "keras_cnn" else ".pt"
    (folder / f"{name}{ext}").write_bytes(b"placeholder")


def test_default_model_prefers_trained_torch_models_by_auc(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(tmp_path))
    assert registry.models_with_weights() == []
    _card(tmp_path, "keras_cnn", 0.99)
    _card(tmp_path, "torch_cnn", 0.80)
    _card(tmp_path, "efficientnet_lite0", 0.85)
    _card(tmp_path, "densenet161", 0.95, epochs=0)
    assert registry.models_with_weights() == ["keras_cnn", "torch_cnn", "densenet161", "efficientnet_lite0"]
    assert registry.default_model() == "efficientnet_lite0"
    assert registry.default_model(["keras_cnn"]) == "keras_cnn"
    (tmp_path / "torch_cnn.json").unlink()  # a checkpoint without its card is not usable
    assert "torch_cnn" not in registry.models_with_weights()
    assert common.model_label("torch_cnn") == "PyTorch CNN (no weights)"


def test_examples_are_shipped_credited_and_labelled():
    examples, about = photos._examples.__wrapped__(None) if hasattr(photos._examples, "__wrapped__") else photos._examples(None)
    ham = [e for e in examples if e.kind == "ham10000"]
    drawings = [e for e in examples if e.kind == "drawing"]
    assert len(ham) == 16 and examples[:16] == ham and len(drawings) == 4
    assert {e.truth for e in ham} == {"benign", "malignant"} and not any(e.synthetic for e in ham)
    assert all("confirmed by histopathology" in e.note and "CC BY-NC 4.0" in e.note for e in ham)
    assert all(e.synthetic and "SYNTHETIC" in e.note and "drawing" in e.label for e in drawings)
    assert "HAM10000" in about and "SYNTHETIC" in about
    for e in drawings:
        photo = photos.example_photo(e)
        assert photo.synthetic and photo.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert photos.example_photo(ham[0]).data[:3] == b"\xff\xd8\xff"


def test_example_caption_says_which_model_may_have_seen_it(tmp_path):
    examples, _ = photos._examples.__wrapped__(None)
    mel = next(e for e in examples if e.kind == "ham10000" and e.truth == "malignant")
    ham = tmp_path / "ham10000" / "images"
    (ham / "malignant").mkdir(parents=True)
    (ham / "malignant" / Path(mel.path).name).write_bytes(b"x")
    kaggle_only = {"data": {"root": str(tmp_path / "kaggle" / "train")}}
    before = {"data": {"root": str(ham)}}  # a HAM10000 source from before the examples were left out
    after = {"data": {"root": str(ham), "sources": [{"root": str(ham), "left_out": {"example_photos": 16}}]}}
    assert not photos.trained_on(mel, kaggle_only)
    assert photos.trained_on(mel, before)
    assert not photos.trained_on(mel, after)
    folder = photos.Example("x", str(tmp_path / "kaggle" / "train" / "benign" / "a.jpg"), "benign", False, "", "dataset")
    assert photos.trained_on(folder, kaggle_only) and not photos.trained_on(folder, after)
