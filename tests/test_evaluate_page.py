"""The Evaluate page through Streamlit's AppTest, on small synthetic folders and throwaway weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from test_promote import fake_run
from training.synthetic import write_dataset

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "evaluate.py")
RUN_ID = "20250101-000000-torch_cnn-aaaaaa"


@pytest.fixture
def env(tmp_path, monkeypatch):
    import torch

    from models.loader import save_torch_weights
    from models.registry import default_card
    from models.torch_classifier import build_for_inference

    data, runs, weights = tmp_path / "data", tmp_path / "runs", tmp_path / "weights"
    write_dataset(data / "train", per_class=4, size=48, seed=1)
    write_dataset(data / "test", per_class=6, size=48, seed=2)
    torch.manual_seed(0)
    card = default_card("torch_cnn", 64)
    card["epochs"] = 1
    save_torch_weights(build_for_inference("torch_cnn"), card, weights / "torch_cnn.pt")
    fake_run(runs, RUN_ID, 0.5, seed=3)
    monkeypatch.setenv("LESION_LENS_DATA", str(data))
    monkeypatch.setenv("LESION_LENS_RUNS", str(runs))
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(weights))
    return data, runs, weights


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def trace(fig: dict, name_start: str) -> dict:
    return next(t for t in fig["data"] if str(t.get("name", "")).startswith(name_start))


def expected(checkpoint: Path, folder: Path, threshold: float) -> dict:
    from models import load_classifier
    from training.evaluate import evaluate_folder
    from training.metrics import binary_metrics

    r = evaluate_folder(load_classifier("torch_cnn", checkpoint), folder)
    y = np.array([i["label"] for i in r["per_image"]])
    p = np.array([i["prob_malignant"] for i in r["per_image"]])
    return {"auc": r["auc"], **binary_metrics(y, p, threshold)}


def test_evaluate_shows_numbers_curves_and_mistakes(env):
    data, runs, weights = env
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    no_exception(at)
    assert at.selectbox(key="eval_folder").value == "test"  # the held-out split is preselected
    assert at.selectbox(key="eval_model").value == "shipped:torch_cnn"
    assert any(RUN_ID in o for o in at.selectbox(key="eval_model").options)
    assert not at.metric  # nothing runs before Evaluate is pressed
    at.button(key="eval_run").click().run()
    no_exception(at)
    want = expected(weights / "torch_cnn.pt", data / "test", 0.5)
    m = metrics(at)
    assert m["Images"] == "12"
    for label, key in (("Accuracy", "accuracy"), ("ROC AUC", "auc"), ("Sensitivity", "sensitivity"),
                       ("Specificity", "specificity")):
        assert m[label] == f"{want[key]:.3f}", label
    roc, confusion, calibration = charts(at)
    assert roc["layout"]["title"]["text"] == "ROC curve"
    point = trace(roc, "threshold 0.500")
    assert point["x"] == [pytest.approx(1 - want["specificity"])] and point["y"] == [pytest.approx(want["sensitivity"])]
    c = want["confusion"]
    assert confusion["data"][0]["z"] == [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    assert calibration["layout"]["title"]["text"].startswith("Reliability (ECE")
    n_wrong = c["fp"] + c["fn"]
    assert len(at.image) == min(12, n_wrong)
    assert at.get("download_button")[0].label == "Download per-image results (CSV)"

    # the threshold slider moves the operating point and the confusion matrix together
    at.slider(key="eval_thr_shipped:torch_cnn").set_value(0.0).run()
    no_exception(at)
    m = metrics(at)
    assert (m["Sensitivity"], m["Specificity"], m["Accuracy"]) == ("1.000", "0.000", "0.500")
    roc, confusion, _ = charts(at)
    assert trace(roc, "threshold 0.000")["x"] == [1.0] and trace(roc, "threshold 0.000")["y"] == [1.0]
    assert trace(roc, "card threshold 0.500")  # the card's own point stays for comparison
    assert confusion["data"][0]["z"] == [[0, 6], [0, 6]]
    assert len(at.image) == 6  # every benign photo is now a mistake, each with its heatmap
    assert all("truly benign" in str(im.proto) for im in at.image)

    # test-time augmentation is another evaluation (pressed again), over 8 views
    at.toggle(key="eval_tta").set_value(True).run()
    assert not at.metric and "press Evaluate" in at.info[0].value
    at.button(key="eval_run").click().run()
    no_exception(at)
    assert metrics(at)["Images"] == "12" and "test-time augmentation" in "\n".join(c.value for c in at.caption)


def test_evaluate_a_runs_checkpoint_on_the_synthetic_set(env):
    data, runs, _ = env
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.selectbox(key="eval_model").set_value(f"run:{RUN_ID}")
    at.selectbox(key="eval_folder").set_value("__synthetic__").run()
    no_exception(at)
    assert "SYNTHETIC" in "\n".join(str(w.value) for w in at.warning)  # the run's card says synthetic data
    at.button(key="eval_run").click().run()
    no_exception(at)
    from training.datasets import SYNTHETIC_DIR_NAME, SYNTHETIC_PER_CLASS

    assert metrics(at)["Images"] == str(2 * SYNTHETIC_PER_CLASS["test"])
    assert (runs / SYNTHETIC_DIR_NAME / "test" / "SYNTHETIC.txt").exists()
    assert "SYNTHETIC" in "\n".join(c.value for c in at.caption)
    want = expected(runs / RUN_ID / "best.pt", runs / SYNTHETIC_DIR_NAME / "test", 0.5)
    assert metrics(at)["ROC AUC"] == f"{want['auc']:.3f}"


def test_evaluate_without_models_or_data_folder(env, monkeypatch, tmp_path):
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LESION_LENS_RUNS", str(tmp_path / "noruns"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    no_exception(at)
    assert "No trained model" in at.warning[0].value and not at.button
    monkeypatch.setenv("LESION_LENS_RUNS", str(env[1]))
    monkeypatch.delenv("LESION_LENS_DATA")
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    no_exception(at)
    assert at.selectbox(key="eval_folder").options == ["SYNTHETIC demo test set (generated cartoons, not real lesions)"]
