"""The app's pages driven by Streamlit's AppTest: real app, real models (throwaway weights).

Checkpoints for torch_cnn and efficientnet_lite0 are written to a temporary
LESION_LENS_WEIGHTS_DIR; keras_cnn and densenet161 have none there, which exercises the
"no trained weights" path (tests/test_app_slow.py covers them with weights). The card
thresholds are set so the labels are known in advance: torch_cnn at threshold 0 calls
everything malignant, efficientnet_lite0 at threshold 1 calls everything benign.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import badfiles
import numpy as np
import pytest
from PIL import Image

from streamlit.testing.v1 import AppTest

from conftest import files_written

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TIMEOUT = 120


# ------------------------------------------------------------------ helpers (also used by test_app_slow.py)

def fake_validation(seed: int = 0) -> dict:
    from training.metrics import summarize

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.35 * y + 0.65 * rng.random(300), 0, 1)
    return summarize(y, p, 0.5)


def make_weights(folder: Path, thresholds: dict[str, float], flat: bool = False) -> Path:
    """Throwaway checkpoints + cards (1 'epoch', fake validation with an ROC) for torch models."""
    import torch

    from models.loader import save_torch_weights
    from models.registry import default_card
    from models.torch_classifier import build_for_inference

    folder.mkdir(parents=True, exist_ok=True)
    for name, thr in thresholds.items():
        torch.manual_seed(0)
        model = build_for_inference(name)
        if flat:  # the last BatchNorm outputs zeros: every CAM of this model is flat
            with torch.no_grad():
                model.body[-2].weight.zero_()
                model.body[-2].bias.zero_()
        card = default_card(name)
        if not flat:
            calibrate_batchnorm(model, card)
        card.update(epochs=1, threshold=thr, validation=fake_validation(),
                    data={"name": "throwaway test checkpoint", "counts": {"train": {"benign": 3, "malignant": 3}}})
        save_torch_weights(model, card, folder / f"{name}.pt", half=name == "densenet161")
    return folder


def calibrate_batchnorm(model, card: dict) -> None:
    """Set a fresh model's BatchNorm statistics from a few real photos (as one training pass would),
    so its activations are alive and its heatmaps not flat, while the weights stay random."""
    import torch

    from badfiles import lesion
    from models.preprocess import model_input

    size = card["image_size"]
    batch = np.stack([np.asarray(lesion(size, i, kind)) for i in range(4) for kind in ("benign", "malignant")])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the pass
    model.train()
    with torch.no_grad():
        model(model_input(torch.from_numpy(batch).permute(0, 3, 1, 2), card))
    model.eval()


def make_keras_weights(folder: Path, threshold: float) -> Path:
    """A throwaway Keras CNN checkpoint + card (imports TensorFlow: slow and browser tests only)."""
    import keras

    from models.keras_model import build_keras_cnn, save_keras_model
    from models.registry import default_card, write_card

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    card = default_card("keras_cnn")
    card.update(epochs=1, threshold=threshold, validation=fake_validation(1),
                data={"name": "throwaway test checkpoint"})
    save_keras_model(build_keras_cnn(card["image_size"]), folder / "keras_cnn.keras")
    write_card(folder / "keras_cnn.json", card)
    return folder


def photo(kind: str = "malignant", seed: int = 0, size: int = 160, fmt: str = "PNG") -> bytes:
    """A real lesion photo (tests/badfiles.lesion: a shipped HAM10000 example) as `fmt` bytes."""
    buf = io.BytesIO()
    badfiles.lesion(size, seed, kind).save(buf, format=fmt)
    return buf.getvalue()


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def all_text(at: AppTest) -> str:
    return "\n".join(texts(x) for x in (at.markdown, at.caption, at.title, at.subheader, at.header, at.info,
                                         at.warning, at.error, at.success))


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def pick_example(at: AppTest, key: str = "diag_example", index: int = 0) -> AppTest:
    at.selectbox(key=key).select_index(index).run()
    no_exception(at)
    return at


def write_photos(root: Path, per_class: int, size: int, seed: int = 0) -> Path:
    """A folder dataset root/{benign,malignant}/NNN.png of real photos (the credited HAM10000 examples,
    centre-cropped to `size`): the not-a-lesion gate refuses most synthetic drawings, as it should."""
    for kind in ("benign", "malignant"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / kind / f"{i:03d}.png").write_bytes(photo(kind, seed + i, size))
    return root


def prob_percent(at: AppTest) -> list[float]:
    return [float(m.value.rstrip("%")) for m in at.metric if m.label == "Probability of malignant"]


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("weights"), {"torch_cnn": 0.0, "efficientnet_lite0": 1.0})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESION_LENS_WEIGHTS_DIR", str(folder))
        mp.delenv("LESION_LENS_DATA", raising=False)
        yield folder


# ------------------------------------------------------------------ app

def test_app_starts_on_diagnose_with_disclaimer_and_pages(weights):
    at = app()
    assert at.title[0].value == "Diagnose"
    assert "not a medical device" in texts(at.caption)
    # the first run does no model work: nothing is chosen yet
    assert "Upload a photo or pick an example to begin." in texts(at.info)
    assert not prob_percent(at)
    pick_example(at)
    assert prob_percent(at)
    assert "HAM10000" in texts(at.caption) and "none of this app's models has seen it" in texts(at.caption)
    for page, title in [("pages/compare.py", "Compare models"), ("pages/patient.py", "Patient view: the ugly duckling"),
                        ("pages/about.py", "About Lesion Lens")]:
        at.switch_page(page).run()
        no_exception(at)
        assert at.title[0].value == title
    # (AppTest drops the entry script's elements after switch_page; tests/test_browser_app.py checks the
    # disclaimer on every page in a real browser.)


def test_run_function_drives_the_app(weights):
    def script():
        import app

        app.run()

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    no_exception(at)
    assert at.title[0].value == "Diagnose"


def test_no_warm_up_thread_under_app_test(weights):
    """AppTest runs the app in this process: the warm-up (meant for a server) must not start here. It
    did, as `st.get_option` does not see AppTest's patched options, and a test process that ended while
    it was still loading the model aborted at exit (134)."""
    import threading

    from pages import warm_up

    app()
    assert warm_up.under_app_test() is False  # outside a run
    assert not warm_up._STARTED["started"]
    assert not [t for t in threading.enumerate() if t.name == warm_up.THREAD_NAME]


def test_app_imports_no_framework_before_a_model_is_used():
    import subprocess
    import sys

    code = ("import sys, app, pages.common, pages.photos, pages.classifiers, pages.warm_up; "
            "print(sorted(m for m in ('torch', 'torchvision', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ diagnose

def test_diagnose_upload_gives_prediction_heatmap_and_download(weights):
    at = app()
    at.file_uploader(key="diag_upload").upload("mole.png", photo("malignant", 1), "image/png").run()
    no_exception(at)
    assert not at.error
    assert at.session_state["diag_example"] is None  # the upload is what is analysed
    assert "PyTorch CNN says" in texts(at.subheader)
    (p,) = prob_percent(at)
    assert 0.0 <= p <= 100.0
    assert "At threshold 0.000:" in texts(at.markdown) and ">malignant</span>" in texts(at.markdown)
    assert len(at.image) == 3  # photo, heatmap, overlay
    assert any("Heatmap (layercam)" in str(im.proto) for im in at.image)  # the PyTorch models' default
    assert [b.label for b in at.download_button] == ["Download the report (PDF)", "Download the overlay (PNG)"]
    assert "sensitivity" in texts(at.markdown)


def test_diagnose_switches_models_and_cam_methods(weights):
    from models.registry import TORCH_CAM_METHODS

    at = app()
    at.file_uploader(key="diag_upload").upload("mole.jpg", photo("benign", 2, fmt="JPEG"), "image/jpeg").run()
    at.selectbox(key="diag_model").set_value("efficientnet_lite0").run()
    no_exception(at)
    assert "EfficientNet-Lite0 says" in texts(at.subheader)
    assert ">benign</span>" in texts(at.markdown)  # its card threshold is 1.0
    cam = at.selectbox(key="diag_cam")
    assert list(cam.options) == list(TORCH_CAM_METHODS)
    for method in TORCH_CAM_METHODS[1:]:
        at.selectbox(key="diag_cam").set_value(method).run()
        no_exception(at)
        assert len(at.image) == 3
        assert any(f"Heatmap ({method})" in str(im.proto) for im in at.image), method
    at.slider(key="diag_alpha").set_value(0.9).run()
    assert "Overlay, opacity 0.90" in str([im.proto for im in at.image])
    at.selectbox(key="diag_model").set_value("torch_cnn").run()
    assert "PyTorch CNN says" in texts(at.subheader)


def test_threshold_slider_moves_label_and_operating_point(weights):
    at = app()
    at.file_uploader(key="diag_upload").upload("mole.png", photo(), "image/png").run()
    (p,) = prob_percent(at)
    thr = at.slider(key="diag_thr_torch_cnn")
    assert thr.value == pytest.approx(0.0)
    thr.set_value(1.0).run()
    md = texts(at.markdown)
    assert "At threshold 1.000:" in md and ">benign</span>" in md
    assert "sensitivity **0.00**, specificity **1.00**" in md
    # the heatmap explains the label shown (benign at 1.0), not the card's (malignant at 0.0)
    captions = " ".join(str(im.proto) for im in at.image)
    assert "evidence for “malignant”" not in captions
    assert "evidence for “benign”" in captions or "No spatial evidence" in texts(at.info)
    at.slider(key="diag_thr_torch_cnn").set_value(0.5).run()
    from training.metrics import operating_point

    sens, spec = operating_point(fake_validation(), 0.5)
    assert f"sensitivity **{sens:.2f}**, specificity **{spec:.2f}**" in texts(at.markdown)
    label = "malignant" if p / 100 >= 0.5 else "benign"
    assert f">{label}</span>" in texts(at.markdown)


def test_test_time_augmentation_shows_the_spread(weights):
    at = pick_example(app())
    at.toggle(key="diag_tta").set_value(True).run()
    no_exception(at)
    md = texts(at.markdown)
    assert "Test-time augmentation" in md and "range" in md and "spread SD" in md


def test_model_without_weights_says_how_to_train(weights):
    at = app()
    at.selectbox(key="diag_model").set_value("keras_cnn").run()
    assert "Keras CNN has no trained weights yet" in texts(at.warning)  # even before a photo is chosen
    at.selectbox(key="diag_model").set_value("torch_cnn").run()
    pick_example(at)
    assert prob_percent(at)
    for name, display in [("keras_cnn", "Keras CNN"), ("densenet161", "DenseNet161")]:
        at.selectbox(key="diag_model").set_value(name).run()
        no_exception(at)
        warning = texts(at.warning)
        assert f"{display} has no trained weights yet" in warning
        assert f"python -m training --model {name}" in warning
        assert not prob_percent(at) and not at.image
    assert "(no weights)" in at.selectbox(key="diag_model").format_func("keras_cnn")


@pytest.mark.parametrize("name,data,message", [
    ("notes.jpg", b"this is not an image", "notes.jpg: not an image this app can read"),
    ("empty.png", b"", "empty.png: the file is empty"),
    ("cut.png", None, "cut.png: the image file is truncated or damaged"),
])
def test_bad_upload_shows_a_message_and_the_next_upload_works(weights, name, data, message):
    if data is None:
        full = photo(size=200)
        data = full[: len(full) // 2]
    at = app()
    at.file_uploader(key="diag_upload").upload(name, data, "image/png").run()
    no_exception(at)
    assert message in texts(at.error)
    assert not prob_percent(at)
    at.file_uploader(key="diag_upload").set_value(("good.png", photo(seed=5), "image/png")).run()
    no_exception(at)
    assert not at.error
    assert prob_percent(at) and len(at.image) == 3


def test_flat_cam_is_reported_not_drawn(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(make_weights(tmp_path, {"torch_cnn": 0.5}, flat=True)))
    at = pick_example(app())
    assert "No spatial evidence" in texts(at.info)
    assert len(at.image) == 1  # only the photo
    assert [b.label for b in at.download_button] == ["Download the report (PDF)"]  # no overlay to download


def test_examples_are_picked_and_labelled(weights):
    at = app()
    box = at.selectbox(key="diag_example")
    labels = list(box.options)  # AppTest lists the formatted labels
    ham = [lab for lab in labels if "ISIC_" in lab]
    assert len(ham) == 16 and labels[:16] == ham  # the HAM10000 photos come first
    assert all(lab.startswith("drawing:") and "not a lesion" in lab for lab in labels[16:])
    box.select_index(next(i for i, lab in enumerate(labels) if lab.startswith("melanoma"))).run()
    no_exception(at)
    caption = texts(at.caption)
    assert "**melanoma** (malignant), confirmed by histopathology" in caption and "CC BY-NC 4.0" in caption
    assert "none of this app's models has seen it" in caption and prob_percent(at)
    box.select_index(len(labels) - 1).run()
    assert "SYNTHETIC" in texts(at.caption) and "drawing" in texts(at.caption)


def test_examples_come_from_the_data_folder_when_set(weights, tmp_path, monkeypatch):
    write_photos(tmp_path / "skin" / "train", per_class=4, size=64)
    write_photos(tmp_path / "skin" / "test", per_class=4, size=64, seed=4)
    monkeypatch.setenv("LESION_LENS_DATA", str(tmp_path))
    at = app()
    labels = list(at.selectbox(key="diag_example").options)
    mine = [i for i, lab in enumerate(labels) if "skin/test/" in lab]
    assert len(mine) == 6 and not any("skin/train/" in lab for lab in labels), labels
    pick_example(at, index=mine[4])
    assert prob_percent(at)
    assert "labelled malignant there" in texts(at.caption)
    # the throwaway cards name no data folder: the caption does not claim the models saw the photo
    assert "None of this app's model cards names this folder" in texts(at.caption)
    assert "may have seen" not in texts(at.caption)


def test_uploads_are_not_written_to_disk_or_logged(weights, caplog):
    data = photo(seed=42)
    at = app()
    with files_written() as writes, caplog.at_level(logging.DEBUG):
        at.file_uploader(key="diag_upload").upload("private-patient-name.png", data, "image/png").run()
        at.toggle(key="diag_tta").set_value(True).run()
    no_exception(at)
    assert prob_percent(at)
    assert writes == []
    assert "private-patient-name" not in caplog.text


# ------------------------------------------------------------------ compare

def test_compare_shows_every_model_and_the_disagreement(weights):
    at = app("pages/compare.py")
    at.file_uploader(key="cmp_upload").upload("mole.png", photo(seed=3), "image/png").run()
    no_exception(at)
    assert len(prob_percent(at)) == 2
    assert {"PyTorch CNN", "EfficientNet-Lite0"} <= {s.value for s in at.subheader}
    assert len(at.image) == 3  # the photo, then each model's heatmap
    warning = texts(at.warning)
    assert "The models disagree" in warning
    assert re.search(r"EfficientNet-Lite0 says \*\*benign\*\*", warning)
    assert re.search(r"PyTorch CNN says \*\*malignant\*\*", warning)
    assert "Keras CNN" in texts(at.caption) and "DenseNet161" in texts(at.caption)  # listed as without weights
    at.selectbox(key="cmp_cam_torch_cnn").set_value("eigencam").run()  # each model has its own method
    no_exception(at)
    assert any("eigencam" in str(im.proto) for im in at.image)
    assert any("layercam: evidence" in str(im.proto) for im in at.image)


def test_compare_says_when_models_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR",
                       str(make_weights(tmp_path, {"torch_cnn": 0.0, "efficientnet_lite0": 0.0})))
    at = pick_example(app("pages/compare.py"), key="cmp_example")
    assert "All 2 models say **malignant**" in texts(at.success)


def test_compare_bad_upload(weights):
    at = app("pages/compare.py")
    at.file_uploader(key="cmp_upload").upload("x.png", b"\x89PNG\r\n\x1a\n garbage", "image/png").run()
    no_exception(at)
    assert "x.png:" in texts(at.error)
    assert not prob_percent(at)


# ------------------------------------------------------------------ patient

def _duckling_set():
    files = [(f"benign_{i}.png", photo("benign", 10 + i, size=128), "image/png") for i in range(5)]
    files.append(("odd.png", photo("malignant", 99, size=128), "image/png"))
    files.append(("broken.png", b"not an image at all", "image/png"))
    return files


def test_patient_ranks_uploads_and_reports_bad_files(weights):
    at = app("pages/patient.py")
    assert "not been validated" in texts(at.warning)
    at.file_uploader(key="pat_upload").set_value(_duckling_set()).run()
    no_exception(at)
    assert "broken.png: not an image this app can read" in texts(at.error)
    table = at.dataframe[0].value
    assert len(table) == 6 and set(table["photo"]) == {f"benign_{i}.png" for i in range(5)} | {"odd.png"}
    assert list(table["rank"]) == list(range(1, 7))
    assert list(table["combined score"]) == sorted(table["combined score"], reverse=True)
    assert "Outlier score:" in texts(at.caption)
    assert len(at.image) == 6
    assert len(at.get("plotly_chart")) == 1
    # a second model: per-model columns for both, one map each
    at.multiselect(key="pat_models").set_value(["torch_cnn", "efficientnet_lite0"]).run()
    no_exception(at)
    cols = set(at.dataframe[0].value.columns)
    assert {"outlier PyTorch CNN", "outlier EfficientNet-Lite0", "P(malignant) EfficientNet-Lite0"} <= cols
    assert len(at.get("plotly_chart")) == 2


def test_patient_map_has_hover_names_and_thumbnails(weights):
    import json

    at = app("pages/patient.py")
    at.file_uploader(key="pat_upload").set_value(_duckling_set()[:6]).run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [row[0] for row in fig["data"][0]["customdata"]]
    assert sorted(names) == sorted([f"benign_{i}.png" for i in range(5)] + ["odd.png"])
    assert "%{customdata[0]}" in fig["data"][0]["hovertemplate"]
    images = fig["layout"]["images"]
    assert len(images) == 6 and all(im["source"].startswith("data:image/jpeg;base64,") for im in images)


def test_patient_examples_and_limits(weights):
    at = app("pages/patient.py")
    assert "Upload photos" in texts(at.info)
    at.toggle(key="pat_examples").set_value(True).run()
    no_exception(at)
    assert len(at.dataframe[0].value) == 10  # the 9 benign HAM10000 examples and one melanoma
    assert "A made-up patient" in texts(at.caption)
    many = [(f"p{i}.png", photo("benign", 200 + i, size=64), "image/png") for i in range(21)]
    at.file_uploader(key="pat_upload").set_value(many).run()
    no_exception(at)
    assert "only the first 20 are used" in texts(at.warning)
    assert len(at.dataframe[0].value) == 20
    at.file_uploader(key="pat_upload").set_value(many[:2]).run()
    assert "Outlier scores need at least 3 photos" in texts(at.info)


# ------------------------------------------------------------------ about

def test_about_shows_cards_provenance_and_limits(weights):
    at = app("pages/about.py")
    table = at.table[0].value
    assert {"PyTorch CNN", "EfficientNet-Lite0", "Keras CNN", "DenseNet161"} <= set(table.columns)
    rows = dict(zip(table.iloc[:, 0], table["PyTorch CNN"]))
    assert rows["training"].startswith("1 epochs") and rows["threshold"] == "0.000"
    assert rows["data"] == "throwaway test checkpoint: 6 train photos"
    assert rows["validation AUC"] == f"{fake_validation()['auc']:.3f}"
    assert "no weights yet" in list(table["Keras CNN"])
    md = texts(at.markdown)
    for phrase in ("ISIC Archive", "Skin Cancer: Malignant vs. Benign", "CC-BY-NC", "non-commercial",
                   "does not", "not a medical device"):
        assert phrase in md, phrase
    assert {h.value for h in at.header} >= {"The models", "The data and its terms", "What the models cannot do",
                                            "What the heatmap does and does not mean"}


def test_about_names_the_teacher_of_a_distilled_model(tmp_path, monkeypatch):
    from models.registry import read_card, write_card

    wdir = make_weights(tmp_path, {"torch_cnn": 0.5})
    card = read_card(wdir / "torch_cnn.json")
    card["training"] = dict(card.get("training") or {}, distillation={"teacher": "efficientnet_lite0", "weight": 0.5})
    write_card(wdir / "torch_cnn.json", card)
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(wdir))
    table = app("pages/about.py").table[0].value
    rows = dict(zip(table.iloc[:, 0], table["PyTorch CNN"]))
    assert "distilled from EfficientNet-Lite0 (its answers 50% of each target)" in rows["training"]


def test_threshold_with_more_decimals_than_the_slider(tmp_path, monkeypatch):
    # A card threshold of 0.524678 shows as 0.525 on the slider; left there, the page uses the exact
    # value and does not claim another operating point.
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(make_weights(tmp_path, {"torch_cnn": 0.524678})))
    at = pick_example(app())
    assert at.slider(key="diag_thr_torch_cnn").value == pytest.approx(0.525)
    assert "instead" not in texts(at.markdown)
    assert "Move the threshold" in texts(at.caption)
    assert "at its threshold 0.525" in texts(at.markdown)
    at.slider(key="diag_thr_torch_cnn").set_value(0.6).run()
    assert "At threshold **0.600** instead" in texts(at.markdown)


def test_examples_from_a_training_folder_carry_a_caveat(tmp_path, monkeypatch):
    from models.registry import read_card, write_card

    write_photos(tmp_path / "only" / "train", per_class=2, size=64)
    wdir = make_weights(tmp_path / "weights", {"torch_cnn": 0.5})
    card = read_card(wdir / "torch_cnn.json")
    card["data"]["root"] = str(tmp_path / "only" / "train")  # this model's card names the folder
    write_card(wdir / "torch_cnn.json", card)
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("LESION_LENS_DATA", str(tmp_path))
    at = app()
    labels = list(at.selectbox(key="diag_example").options)
    pick_example(at, index=next(i for i, lab in enumerate(labels) if lab.startswith("benign 1 (only/train/benign/")))
    assert "PyTorch CNN may have seen this photo in training or validation" in texts(at.caption)


def test_a_file_that_bypasses_the_picker_gets_a_message(weights):
    # The picker offers image MIME types only; a PDF sent anyway (a hand-made request) must meet our own
    # check, not a Streamlit exception.
    at = app()
    assert set(at.file_uploader(key="diag_upload").allowed_type) == {
        "image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
    at.file_uploader(key="diag_upload").set_value(("report.pdf", b"%PDF-1.4 not a photo", "application/pdf")).run()
    no_exception(at)
    assert "report.pdf: not an image this app can read" in texts(at.error)
    at.switch_page("pages/patient.py").run()
    at.file_uploader(key="pat_upload").set_value([("report.pdf", b"%PDF-1.4", "application/pdf"),
                                                  ("a.png", photo(seed=1, size=96), "image/png")]).run()
    no_exception(at)
    assert "report.pdf: not an image this app can read" in texts(at.error)
    assert len(at.dataframe[0].value) == 1
