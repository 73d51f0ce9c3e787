"""--distill: a teacher's calibrated answers as part of each training target, in both frameworks.

The teacher is a torch_cnn this test trains for one epoch on generated photos; the runs are real
`python -m training` commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.loader import load_classifier
from models.preprocess import prepare, to_model_size
from training.data import load_split
from training.distill import TEACHER_FILE, at_size, resize_batch, soft_targets
from training.rundir import read_json
from training.synthetic import write_dataset
from training.torch_loop import soft_loss
from training.train import main

ROOT = Path(__file__).resolve().parent.parent
SIZE = 48


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def train_args(model: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", model, "--data", str(data), "--image-size", str(SIZE), "--batch-size", "8", "--amp", "off",
            "--epochs", "1", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("distill") / "synthetic", per_class=12, size=SIZE, seed=7)


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    proc = cli(*train_args("torch_cnn", data, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "best.pt"


def test_soft_targets_mix_the_label_with_the_teacher():
    labels = np.array([0, 1, 1])
    probs = np.array([0.2, 0.9, 0.1], np.float32)
    t = soft_targets(labels, probs, 0.25)
    assert t.shape == (3, 2) and np.allclose(t.sum(1), 1.0)
    assert np.allclose(t[:, 1], [0.25 * 0.2, 0.75 + 0.25 * 0.9, 0.75 + 0.25 * 0.1])
    assert (t.argmax(1) == labels).all()  # at a weight of at most 0.5 the label keeps the larger share


def test_soft_loss_of_one_hot_targets_is_the_criterions_loss():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(9, 2, generator=g), torch.tensor([0, 1, 1, 0, 0, 0, 1, 0, 0])
    crit = nn.CrossEntropyLoss(weight=torch.tensor([0.7, 1.9]), label_smoothing=0.05)
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    assert soft_loss(logits, onehot, labels, crit).item() == pytest.approx(crit(logits, labels).item(), rel=1e-6)
    # towards the model's own answer the loss is lower than towards the labels it disagrees with
    own = torch.softmax(logits, 1)
    assert soft_loss(logits, own, labels, nn.CrossEntropyLoss()) < soft_loss(logits, 1 - own, labels, nn.CrossEntropyLoss())


@pytest.mark.parametrize("model", ["torch_cnn", pytest.param("keras_cnn", marks=pytest.mark.slow)])
def test_each_framework_trains_towards_the_teachers_answers_on_its_training_photos(model, data, teacher, tmp_path):
    out = tmp_path / "run"
    proc = cli(*train_args(model, data, out, "--distill", str(teacher), "--distill-weight", "0.3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = read_json(out / "card.json")
    info = card["training"]["distillation"]
    assert info["teacher"] == "torch_cnn" and info["checkpoint"] == str(teacher) and info["weight"] == 0.3
    # the teacher's calibrated answers on exactly the run's training photos (not its validation photos)
    split = load_split([str(data)], SIZE)
    expected = load_classifier("torch_cnn", teacher).predict_batch(split.train.images)
    with np.load(out / TEACHER_FILE) as z:
        assert np.allclose(z["probs"], expected, atol=1e-5)
    agree = ((expected >= info["teacher_threshold"]) == (split.train.labels == 1)).mean()
    assert info["teacher_train_agreement"] == pytest.approx(agree, abs=1e-4)


def test_a_teacher_of_another_size_reads_each_file_at_its_own_size(tmp_path):
    # the shipped EfficientNet-Lite0 (its card's size, 160 px) teaches a torch_cnn trained at 48 px
    clf = load_classifier("efficientnet_lite0")
    data = write_dataset(tmp_path / "photos", per_class=10, size=clf.image_size, seed=3)
    out = tmp_path / "run"
    proc = cli(*train_args("torch_cnn", data, out, "--distill", "efficientnet_lite0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_json(out / "card.json")["training"]["distillation"]
    assert info["teacher_image_size"] == clf.image_size != SIZE
    with np.load(out / TEACHER_FILE) as z:
        probs = z["probs"]
    # the answers the app gives each training file, sized for the teacher (as an upload is) ...
    own = clf.predict_batch(load_split([str(data)], clf.image_size).train.images)
    assert own.std() > 0.1  # (a teacher that tells the photos apart, or this test could not fail)
    assert np.allclose(probs, own, atol=1e-5)
    assert info["teacher_input"] == f"{len(own)} of {len(own)} training files decoded at {clf.image_size} px"
    # ... not those for the student's 48 px photos scaled up, nor for them fed as they are
    small = load_split([str(data)], SIZE).train.images
    upscaled = clf.predict_batch(np.stack([to_model_size(Image.fromarray(im), clf.image_size) for im in small]))
    assert np.abs(upscaled - own).max() > 1e-3
    assert np.abs(clf.predict_batch(small) - own).mean() > 0.03


def test_a_training_file_gone_since_loading_is_answered_from_the_photo_in_memory(tmp_path):
    photos = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    big = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths = [str(tmp_path / "a.png"), str(tmp_path / "missing.png"), str(tmp_path / "broken.png")]
    out, decoded = at_size(photos, 32, paths)
    assert decoded == 1 and out.shape == (3, 32, 32, 3)
    assert np.array_equal(out[0], prepare((tmp_path / "a.png").read_bytes(), 32))
    assert np.array_equal(out[1:], resize_batch(photos[1:], 32))
    # photos already at the size are used as they are, files or not
    assert at_size(photos, 48, paths)[1] == 0 and at_size(photos, 48, paths)[0] is photos


@pytest.mark.slow
def test_a_resumed_run_reads_the_teachers_answers_back(data, teacher, tmp_path):
    out = tmp_path / "run"
    assert cli(*train_args("torch_cnn", data, out, "--distill", str(teacher))).returncode == 0
    with np.load(out / TEACHER_FILE) as z:
        saved = dict(z)
    saved["probs"] = np.ones_like(saved["probs"])  # a teacher that calls every photo malignant
    np.savez(out / TEACHER_FILE, **saved)
    proc = cli("--resume", str(out), "--epochs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = load_split([str(data)], SIZE).train.labels
    card = read_json(out / "card.json")
    assert card["epochs_run"] == 2
    assert card["training"]["distillation"]["teacher_train_agreement"] == pytest.approx((labels == 1).mean(), abs=1e-4)


def test_a_teacher_that_cannot_be_used_is_one_error_line(data, teacher, tmp_path, capsys):
    lone = tmp_path / "lone.pt"
    lone.write_bytes(teacher.read_bytes())  # a checkpoint without its card
    for extra, words in ((["--distill", "no_such_model"], "neither a model"),
                         (["--distill", str(lone)], "no model card"),
                         (["--distill", str(teacher), "--distill-weight", "0.8"], "--distill-weight must be")):
        assert main(train_args("torch_cnn", data, tmp_path / "never", *extra)) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "never").exists()
