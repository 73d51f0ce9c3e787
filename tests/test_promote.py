"""training/promote.py: a finished run becomes the app's model (atomically, previous kept)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from models import load_classifier
from models.loader import save_torch_weights
from models.registry import default_card
from models.torch_classifier import build_for_inference
from training.promote import PromoteError, main, promote, promote_run
from training.synthetic import make_lesion


def fake_run(root: Path, run_id: str, threshold: float, seed: int = 0, state: str = "finished") -> Path:
    """A run directory as a finished PyTorch run leaves it: best.pt + best.json, card.json, status."""
    import torch

    run = root / run_id
    run.mkdir(parents=True)
    torch.manual_seed(seed)
    card = default_card("torch_cnn", 64)
    card.update(epochs=2, threshold=threshold, data={"name": "synthetic test"}, synthetic=True)
    save_torch_weights(build_for_inference("torch_cnn"), card, run / "best.pt")
    (run / "card.json").write_text(json.dumps(card))
    (run / "config.json").write_text(json.dumps({"model": "torch_cnn"}))
    (run / "status.json").write_text(json.dumps({"state": state, "pid": 1 if state == "finished" else os.getpid()}))
    return run


@pytest.fixture
def env(tmp_path, monkeypatch):
    runs, weights = tmp_path / "runs", tmp_path / "weights"
    monkeypatch.setenv("LESION_LENS_RUNS", str(runs))
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(weights))
    return runs, weights


def test_promote_round_trip_through_load_classifier(env):
    runs, weights = env
    first = fake_run(runs, "20250101-000000-torch_cnn-aaaaaa", 0.3, seed=1)
    out = promote(first.name)
    assert out["name"] == "torch_cnn" and out["previous"] == []
    assert Path(out["checkpoint"]) == weights / "torch_cnn.pt" and Path(out["card"]) == weights / "torch_cnn.json"
    clf = load_classifier("torch_cnn")  # the shipped weights now (LESION_LENS_WEIGHTS_DIR)
    assert clf.card["threshold"] == 0.3 and clf.card["promoted_from"] == first.name and clf.image_size == 64
    img = make_lesion("malignant", 64, 3)
    from_run = load_classifier("torch_cnn", first / "best.pt").predict(img).prob_malignant
    assert clf.predict(img).prob_malignant == pytest.approx(from_run, abs=1e-6)
    stamp = (weights / "torch_cnn.pt").stat().st_mtime_ns

    time.sleep(0.01)
    second = fake_run(runs, "20250102-000000-torch_cnn-bbbbbb", 0.4, seed=2)
    out = promote(second.name)
    assert sorted(Path(p).name for p in out["previous"]) == ["torch_cnn.prev.json", "torch_cnn.prev.pt"]
    assert (weights / "torch_cnn.pt").stat().st_mtime_ns > stamp  # the app's cache key changes
    new, prev = load_classifier("torch_cnn"), load_classifier("torch_cnn", weights / "torch_cnn.prev.pt")
    assert new.card["threshold"] == 0.4 and new.card["promoted_from"] == second.name
    assert prev.card["threshold"] == 0.3 and prev.card["promoted_from"] == first.name
    assert prev.predict(img).prob_malignant == pytest.approx(from_run, abs=1e-6)
    assert not np.isclose(new.predict(img).prob_malignant, from_run, atol=1e-6)
    assert not [p for p in weights.iterdir() if p.name.endswith(".tmp")]  # no temporary files left


@pytest.mark.parametrize("run_id", ["../x", "..", "/etc", "a/b", ".hidden", "", "x" * 200])
def test_run_ids_that_could_escape_are_refused(env, run_id):
    with pytest.raises(PromoteError):
        promote(run_id)
    assert not env[1].exists()


def test_refuses_runs_that_are_not_finished_or_broken(env, tmp_path):
    runs, weights = env
    good = fake_run(runs, "20250101-000000-torch_cnn-aaaaaa", 0.3)
    promote(good.name)
    before = (weights / "torch_cnn.pt").read_bytes()

    with pytest.raises(PromoteError, match="no such run"):
        promote("20250101-000000-torch_cnn-missing")
    active = fake_run(runs, "20250103-000000-torch_cnn-cccccc", 0.5, state="running")
    with pytest.raises(PromoteError, match="still running"):
        promote(active.name)
    nocard = fake_run(runs, "20250104-000000-torch_cnn-dddddd", 0.5)
    (nocard / "card.json").unlink()
    with pytest.raises(PromoteError, match="no model card"):
        promote(nocard.name)
    broken = fake_run(runs, "20250105-000000-torch_cnn-eeeeee", 0.5)
    (broken / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PromoteError, match="does not load"):
        promote(broken.name)
    escaping = fake_run(runs, "20250106-000000-torch_cnn-ffffff", 0.5)
    outside = tmp_path / "elsewhere.pt"
    (escaping / "best.pt").rename(outside)
    (escaping / "best.pt").symlink_to(outside)
    with pytest.raises(PromoteError, match="outside"):
        promote(escaping.name)
    # nothing of the refused runs reached the app, and no backup was made of the good one
    assert (weights / "torch_cnn.pt").read_bytes() == before
    assert not (weights / "torch_cnn.prev.pt").exists()


def test_cli(env, capsys):
    runs, weights = env
    run = fake_run(runs, "20250101-000000-torch_cnn-aaaaaa", 0.3)
    assert main([str(run)]) == 0
    assert "torch_cnn.pt" in capsys.readouterr().out
    assert main([str(runs / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert promote_run(run, dest=weights / "other")["checkpoint"] == str(weights / "other" / "torch_cnn.pt")
