"""The Keras CNN: architecture, Grad-CAM (functional and Sequential), compiled-graph reuse,
checkpoints, and the training CLI through the driver's Keras backend (finish, STOP, resume) on
synthetic images.

TensorFlow is imported once for the whole module; the CLI tests each start one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import load_classifier, untrained_classifier  # noqa: E402
from models.keras_model import CAM_LAYER, KerasClassifier, build_keras_cnn, save_keras_model  # noqa: E402
from models.preprocess import normalize  # noqa: E402
from models.registry import default_card, write_card  # noqa: E402
from training.synthetic import make_lesion, write_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("keras_data") / "synthetic", per_class=16, size=SIZE, seed=3)


@pytest.fixture(scope="module")
def images():
    return [make_lesion(kind, SIZE, seed) for seed in range(3) for kind in ("benign", "malignant")]


@pytest.fixture(scope="module")
def functional():
    return untrained_classifier("keras_cnn", image_size=SIZE, seed=0)


def sequential_model(cam_name: str = CAM_LAYER) -> keras.Sequential:
    """A Sequential model that was never called on a keras.Input (the case Keras 3's
    standard Grad-CAM recipe cannot tap)."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    return keras.Sequential([
        L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.MaxPooling2D(2),
        L.Conv2D(16, 3, padding="same"), L.ReLU(name=cam_name),
        L.GlobalAveragePooling2D(), L.Dropout(0.2), L.Dense(2),
    ])


def reference_gradcam(clf: KerasClassifier, image: np.ndarray, cam_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM written out eagerly, layer by layer, independent of the classifier's graph."""
    x = tf.constant(normalize(image[None], clf.mean, clf.std, channels_last=True))
    chain = [layer for layer in clf.model.layers if not isinstance(layer, keras.layers.InputLayer)]
    with tf.GradientTape() as tape:
        a, acts = x, None
        for layer in chain:
            a = layer(a, training=False)
            if layer.name == cam_name:
                tape.watch(a)
                acts = a
        logits = a[0]
        p = tf.nn.softmax(logits / clf.temperature)[1]
        target = (logits[1] - logits[0]) * (1.0 if float(p) >= clf.threshold else -1.0)
    grads = tape.gradient(target, acts)
    cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * acts, axis=-1))
    cam = tf.image.resize(cam[..., None], (SIZE, SIZE))[0, ..., 0]
    return logits.numpy(), cam.numpy()


# ------------------------------------------------------------------ model and Grad-CAM

def test_architecture_is_a_small_gap_cnn_with_logits():
    model = build_keras_cnn(128)
    assert 500_000 <= model.count_params() <= 1_500_000
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "Flatten" not in kinds and "GlobalAveragePooling2D" in kinds and "Dropout" in kinds
    assert model.get_layer(CAM_LAYER).output.shape[1:] == (16, 16, 256)
    assert model.get_layer("embedding").output.shape[1:] == (256,)
    head = model.layers[-1]
    assert isinstance(head, keras.layers.Dense) and head.units == 2
    assert head.get_config()["activation"] == "linear"  # logits: the card's temperature makes probabilities


def test_gradcam_functional_matches_eager_reference(functional, images):
    flat = []
    for image in images[:4]:
        logits, raw = functional._explain(image[None], "gradcam")
        ref_logits, ref_raw = reference_gradcam(functional, image, CAM_LAYER)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        assert raw.shape == (SIZE, SIZE)
        np.testing.assert_allclose(raw, ref_raw, rtol=1e-3, atol=1e-6 * max(1.0, float(ref_raw.max())))
        expl = functional.explain(image)
        assert expl.heatmap.shape == (SIZE, SIZE) and expl.heatmap.dtype == np.float32
        assert np.isfinite(expl.heatmap).all()
        assert 0.0 <= expl.heatmap.min() and expl.heatmap.max() <= 1.0
        flat.append(expl.flat)
        # the explained prediction is the prediction (one forward pass, same numbers)
        pred = functional.predict(image)
        assert expl.prediction.prob_malignant == pytest.approx(pred.prob_malignant, abs=1e-5)
        assert expl.prediction.label == pred.label
    assert not all(flat)  # the maps carry spatial information, so the comparisons above mean something


@pytest.mark.parametrize("cam_name", [CAM_LAYER, "some_relu"])
def test_gradcam_on_a_sequential_model(images, cam_name):
    model = sequential_model(cam_name)
    clf = KerasClassifier(model, default_card("keras_cnn", SIZE, init="random"))
    # Without a layer called cam_layer the last spatial activation is used: here the same layer.
    for image in images[:3]:
        expl = clf.explain(image)
        assert expl.heatmap.shape == (SIZE, SIZE)
        assert np.isfinite(expl.heatmap).all() and 0.0 <= expl.heatmap.min() and expl.heatmap.max() <= 1.0
        logits, raw = clf._explain(image[None], "gradcam")
        ref_logits, ref_raw = reference_gradcam(clf, image, cam_name)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(raw, ref_raw, rtol=1e-3, atol=1e-6 * max(1.0, float(ref_raw.max())))
    assert clf.embed(images[0]).shape == (16,)
    with pytest.raises(ValueError, match="gradcam"):
        clf.explain(images[0], method="eigencam")


def test_compiled_functions_are_traced_once(functional, images):
    for image in images:
        functional.explain(image)
        functional.embed(image)
    batch = np.stack(images)
    functional.predict_batch(batch[:1])
    functional.predict_batch(batch)
    big = functional.predict_batch(np.concatenate([batch] * 12))  # 72 images: two chunks of different size
    np.testing.assert_allclose(big[:6], functional.predict_batch(batch), atol=1e-6)
    functional.predict_tta(images[0])
    assert functional.trace_counts() == {"forward": 1, "embed": 1, "gradcam": 1}


def test_concurrent_explains_equal_sequential_ones(functional, images):
    expected = [functional.explain(img).heatmap for img in images]
    got: dict[int, np.ndarray] = {}

    def work(i):
        got[i] = functional.explain(images[i]).heatmap

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, heat in enumerate(expected):
        np.testing.assert_array_equal(got[i], heat)


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_round_trip(tmp_path, monkeypatch, functional, images):
    card = dict(functional.card, epochs=1, init="scratch")
    path = save_keras_model(functional.model, tmp_path / "keras_cnn.keras")
    write_card(tmp_path / "keras_cnn.json", card)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keras_cnn.json", "keras_cnn.keras"]  # no temp files left
    loaded = load_classifier("keras_cnn", path)
    assert isinstance(loaded, KerasClassifier) and loaded.trained
    batch = np.stack(images)
    np.testing.assert_array_equal(loaded._logits(batch), functional._logits(batch))
    np.testing.assert_array_equal(loaded.explain(images[1]).heatmap, functional.explain(images[1]).heatmap)
    # shipped weights: the folder named by LESION_LENS_WEIGHTS_DIR
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(tmp_path))
    shipped = load_classifier("keras_cnn")
    assert shipped.predict(images[0]).prob_malignant == pytest.approx(functional.predict(images[0]).prob_malignant)
    # a card named card.json in the same folder is found too
    other = tmp_path / "run"
    save_keras_model(functional.model, other / "best.keras")
    write_card(other / "card.json", card)
    assert load_classifier("keras_cnn", other / "best.keras").predict(images[0]).label in ("benign", "malignant")


def test_a_damaged_checkpoint_gives_a_clear_error(tmp_path, functional):
    path = save_keras_model(functional.model, tmp_path / "keras_cnn.keras")
    write_card(tmp_path / "keras_cnn.json", dict(functional.card, epochs=1))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable Keras model"):
        load_classifier("keras_cnn", path)


def test_model_and_card_sizes_must_agree():
    with pytest.raises(ValueError, match="model card says 96x96"):
        KerasClassifier(build_keras_cnn(64), default_card("keras_cnn", 96))


# ------------------------------------------------------------------ training

def _train(args: list[str], timeout: float = 180, **popen) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """One 2-epoch CLI training, shared by the tests that read its run directory."""
    run = tmp_path_factory.mktemp("keras_run") / "run"
    proc = _train(["--model", "keras_cnn", "--data", str(dataset), "--epochs", "2", "--image-size", str(SIZE),
                   "--batch-size", "8", "--out", str(run)])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return run


def test_training_cli_finishes_with_a_card(finished_run):
    run = finished_run
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2 and status["epochs"] == 2
    assert status["device"].startswith(("cpu", "GPU"))
    card = json.loads((run / "card.json").read_text())
    assert card["name"] == "keras_cnn" and card["framework"] == "keras" and card["image_size"] == SIZE
    assert card["synthetic"] is True and card["epochs"] in (1, 2) and card["epochs_run"] == 2
    assert 0.0 <= card["validation"]["auc"] <= 1.0 and 0.0 < card["threshold"] <= 1.0 and card["temperature"] > 0
    assert json.loads((run / "best.json").read_text()) == card
    rows = _rows(run)
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2]
    assert {"time", "epoch", "step", "global_step", "loss", "accuracy", "lr", "images_per_s"} <= set(train[0])
    assert {"loss", "accuracy", "auc", "seconds"} <= set(val[0])
    assert train[-1]["global_step"] == 2 * status["steps_per_epoch"]
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 for r in train)
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    clf = load_classifier("keras_cnn", run / "best.keras")
    assert clf.card["threshold"] == card["threshold"]
    pred = clf.predict(make_lesion("malignant", 100, seed=7))
    assert 0.0 <= pred.prob_malignant <= 1.0 and pred.label in ("benign", "malignant")


def test_resume_restores_optimizer_state(finished_run, dataset):
    """A resumed run with more epochs continues the saved optimizer state (moments and
    iteration count) and the driver's state; the driver refits the schedule to the new length
    (tests/test_driver.py checks that schedule for both frameworks)."""
    from training.data import load_split
    from training.keras_loop import KerasBackend
    from training.rundir import read_json

    out = finished_run
    cfg = read_json(out / "config.json")
    split = load_split(cfg["data"], SIZE, cfg["val_fraction"], cfg["seed"])
    state = read_json(out / "last_state.json")
    steps = read_json(out / "status.json")["steps_per_epoch"]
    assert state["epoch"] == 2 and state["iterations"] == 2 * steps
    saved = keras.saving.load_model(out / "last.keras", safe_mode=True, compile=True)

    notes = []
    backend = KerasBackend(dict(cfg, resuming=True, epochs=4), split, notes.append)
    assert backend.load_last() == {k: state[k] for k in ("epoch", "best", "bad_epochs")}
    assert not notes  # nothing to report: the optimizer state came back
    assert int(backend.optimizer.iterations.numpy()) == 2 * steps
    assert len(backend.optimizer.variables) == len(saved.optimizer.variables) > 2
    for a, b in zip(saved.optimizer.variables, backend.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(saved.get_weights(), backend.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_fine_tune_starts_from_a_keras_file(finished_run, dataset, tmp_path):
    """--weights PATH.keras: the run's model starts with that file's weights (at the run's image size,
    whatever size the file took); a model of other layers, a non-.keras file or 'imagenet' are refused
    with a clear message."""
    from training.data import load_split
    from training.keras_loop import KerasBackend
    from training.rundir import read_json
    from training.train import UsageError, get_args_parser, resolve_args

    best = finished_run / "best.keras"
    cfg = resolve_args(get_args_parser().parse_args(
        ["--model", "keras_cnn", "--data", str(dataset), "--image-size", str(SIZE), "--weights", str(best),
         "--out", str(tmp_path / "ft")]))
    split = load_split(cfg["data"], SIZE, cfg["val_fraction"], cfg["seed"])
    backend = KerasBackend(cfg, split, print)
    saved = keras.saving.load_model(best, safe_mode=True, compile=False)
    fresh = build_keras_cnn(SIZE)
    assert len(saved.get_weights()) == len(backend.model.get_weights())
    for a, b, c in zip(saved.get_weights(), backend.model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(saved.get_weights(), fresh.get_weights()))
    assert int(backend.optimizer.iterations.numpy()) == 0  # new moments: a fine-tune, not a resume
    # at another size: the same weights in a model built at the run's size (the CNN pools globally)
    other = KerasBackend(dict(cfg, image_size=96), load_split(cfg["data"], 96, cfg["val_fraction"], cfg["seed"]),
                         print)
    assert other.model.input_shape[1:3] == (96, 96)
    for a, b in zip(saved.get_weights(), other.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    narrow = tmp_path / "narrow.keras"
    build_keras_cnn(SIZE, widths=(16, 32, 64, 128)).save(narrow)
    with pytest.raises(ValueError, match="is not a keras_cnn this version builds"):
        KerasBackend(dict(cfg, weights=str(narrow)), split, print)
    for weights, message in ((str(finished_run / "card.json"), "starts from a .keras file"),
                             ("imagenet", "has no ImageNet weights")):
        with pytest.raises(UsageError, match=message):
            resolve_args(get_args_parser().parse_args(["--model", "keras_cnn", "--data", str(dataset),
                                                       "--weights", weights]))
    assert read_json(finished_run / "config.json")["weights"] == "none"


# slow: two real Keras training processes, stopped and resumed (about 50 s here)
@pytest.mark.slow
def test_training_cli_stops_on_stop_file_and_resumes(dataset, tmp_path):
    run = tmp_path / "run"
    proc = _train(["--model", "keras_cnn", "--data", str(dataset), "--epochs", "2", "--image-size", str(SIZE),
                   "--batch-size", "8", "--out", str(run), "--log-every", "1"])
    # The CLI clears an old STOP file before it prints the run directory; TensorFlow start-up
    # and data loading take seconds after that, so a STOP written now is seen after batch 1.
    first = proc.stdout.readline()
    assert first.startswith("run directory:"), first + proc.stderr.read()
    (run / "STOP").touch()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped", status
    assert "--resume" in status["message"]
    assert (run / "last.keras").is_file() and not (run / "card.json").exists()
    state = json.loads((run / "last_state.json").read_text())
    assert state["epoch"] == 0 and state["iterations"] >= 1  # stopped during epoch 1: it is redone from its start

    proc = _train(["--resume", str(run)])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert not (run / "STOP").exists()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2
    assert json.loads((run / "card.json").read_text())["epochs_run"] == 2
    assert [r["epoch"] for r in _rows(run) if r["split"] == "val"] == [1, 2]
    assert json.loads((run / "last_state.json").read_text())["epoch"] == 2
    # the redone epoch 1 ran its steps again from step 1, at the schedule's learning rates
    train = [r for r in _rows(run) if r["split"] == "train"]
    assert [r["global_step"] for r in train if r["epoch"] == 1][-status["steps_per_epoch"]:] == \
        list(range(1, status["steps_per_epoch"] + 1))
    assert load_classifier("keras_cnn", run / "best.keras").predict(make_lesion("benign", SIZE, 1)).label


@pytest.mark.slow
def test_sigterm_stops_cleanly(dataset, tmp_path):
    run = tmp_path / "run"
    proc = _train(["--model", "keras_cnn", "--data", str(dataset), "--epochs", "50", "--image-size", str(SIZE),
                   "--batch-size", "8", "--out", str(run), "--log-every", "1", "--patience", "0"])
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and _rows(run)):
        time.sleep(0.2)
    proc.terminate()
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    assert (run / "last.keras").is_file()
