"""CUDA paths: run through the device tool when a GPU is lent; skipped everywhere else."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_device_picks_cuda():
    from training.torch_loop import describe_device, pick_device

    dev = pick_device("auto")
    assert dev.type == "cuda"
    assert "cuda" in describe_device(dev)


@pytest.mark.parametrize("name", ["densenet161", "efficientnet_lite0", "torch_cnn"])
def test_cam_is_the_same_on_cpu_and_gpu(name):
    from models.torch_classifier import TorchClassifier, build_for_inference
    from models.registry import default_card
    from training.synthetic import make_lesion

    torch.manual_seed(0)
    model = build_for_inference(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    card = default_card(name, image_size=128)
    cpu = TorchClassifier(model, card, device="cpu")
    img = make_lesion("malignant", 128, seed=3)
    a = cpu.explain(img, "gradcam")
    gpu_model = build_for_inference(name)
    gpu_model.load_state_dict(state)
    gpu = TorchClassifier(gpu_model, card, device="cuda")
    b = gpu.explain(img, "gradcam")
    assert a.flat == b.flat
    assert abs(a.prediction.prob_malignant - b.prediction.prob_malignant) < 1e-3
    assert np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1] > 0.999
    assert np.abs(a.heatmap - b.heatmap).max() < 0.02


def test_training_on_cuda_uses_amp_and_finishes(tmp_path):
    from training.synthetic import write_dataset

    data = write_dataset(tmp_path / "data", per_class=24, size=64)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "training", "--model", "torch_cnn", "--data", str(data),
                           "--epochs", "2", "--image-size", "64", "--batch-size", "8", "--device", "cuda",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and "cuda" in status["device"]
    assert "amp: torch.bfloat16" in (out / "log.txt").read_text() or "amp: torch.float16" in (out / "log.txt").read_text()
    from models import load_classifier

    clf = load_classifier("torch_cnn", out / "best.pt")
    assert 0.0 <= clf.predict(np.zeros((64, 64, 3), np.uint8)).prob_malignant <= 1.0
