"""One driver for both frameworks: the same rows, status, card fields, schedule and time-limit
policy whether PyTorch or Keras does the arithmetic; its pure pieces by hand.

The CLI test trains each framework for two tiny epochs as a real command; the time-limit test
runs the real driver and backends in this process on a virtual clock that a step advances, so
its expectation (which epoch the run ends after) holds on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.driver import (Dist, epoch_order, epochs_that_fit, is_better, lr_lambda, make_backend,
                             steps_per_epoch, train)
from training.rundir import RunWriter, StopFlag, read_json, read_metrics
from training.synthetic import write_dataset
from training.train import get_args_parser, resolve_args

ROOT = Path(__file__).resolve().parent.parent
SIZE = 48
FRAMEWORKS = ["torch_cnn", "keras_cnn"]
CHECKPOINTS = {"torch_cnn": {"best.pt", "last.pt"}, "keras_cnn": {"best.keras", "last.keras", "last_state.json"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("driver") / "synthetic", per_class=16, size=SIZE, seed=5)


def config(model: str, data: Path, out: Path, *extra: str) -> dict:
    return resolve_args(get_args_parser().parse_args(
        ["--model", model, "--data", str(data), "--image-size", str(SIZE), "--batch-size", "8", "--out", str(out),
         "--log-every", "1", *extra]))


def key_tree(card: dict) -> dict:
    """A card's keys, with the keys of its dict-valued fields (one level down)."""
    return {k: sorted(v) if isinstance(v, dict) else None for k, v in card.items()}


# ------------------------------------------------------------------ both frameworks, one driver

@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Two epochs of each framework through `python -m training`, on the same data and split."""
    root = tmp_path_factory.mktemp("driver_runs")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = {}
    for model in FRAMEWORKS:
        out[model] = root / model
        proc = subprocess.run([sys.executable, "-m", "training", "--model", model, "--data", str(data), "--epochs", "2",
                               "--image-size", str(SIZE), "--batch-size", "8", "--log-every", "1", "--amp", "off",
                               "--out", str(out[model])], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_both_frameworks_write_the_same_rows_status_and_card(runs):
    rows = {m: read_metrics(runs[m]) for m in FRAMEWORKS}
    for split in ("train", "val"):
        t, k = ([r for r in rows[m] if r["split"] == split] for m in FRAMEWORKS)
        assert len(t) == len(k) > 0 and [set(r) for r in t] == [set(r) for r in k]
        # the same steps at the same learning rates: one schedule, one batching
        assert [(r["epoch"], r["step"], r.get("global_step")) for r in t] == \
               [(r["epoch"], r["step"], r.get("global_step")) for r in k]
        assert [r["lr"] for r in t] == pytest.approx([r["lr"] for r in k], rel=1e-9)
    assert [r["epoch"] for r in rows["torch_cnn"] if r["split"] == "val"] == [1, 2]

    status = {m: read_json(runs[m] / "status.json") for m in FRAMEWORKS}
    assert set(status["torch_cnn"]) == set(status["keras_cnn"])
    for st in status.values():
        assert st["state"] == "finished" and st["epoch"] == st["epochs"] == 2

    cards = {m: read_json(runs[m] / "card.json") for m in FRAMEWORKS}
    t, k = cards["torch_cnn"], cards["keras_cnn"]
    assert key_tree(t) == key_tree(k)
    for key in ("data", "preprocessing", "classes", "threshold_rule", "synthetic", "licence", "epochs_run", "init"):
        assert t[key] == k[key], key
    assert t["preprocessing"]["colour_constancy"] == "shades_of_gray"  # the CLI's default, in both
    same = {"epochs", "batch_size", "lr", "seed", "val_fraction", "label_smoothing", "weight_decay", "warmup_epochs",
            "clip_grad", "patience", "min_epochs", "time_limit", "image_size", "device", "world_size", "precision"}
    assert {s: t["training"][s] for s in same} == {s: k["training"][s] for s in same}
    assert t["training"]["framework_specific"].startswith("PyTorch")
    assert k["training"]["framework_specific"].startswith("Keras")
    assert t["epochs_run"] == 2 and t["framework"] == "torch" and k["framework"] == "keras"
    for m in FRAMEWORKS:  # the card beside the best checkpoint is the run's card
        assert read_json(runs[m] / "best.json") == cards[m]
        files = {p.name for p in runs[m].iterdir()}
        assert {"config.json", "metrics.jsonl", "status.json", "log.txt", "card.json", "best.json"} <= files
        assert CHECKPOINTS[m] <= files and not [f for f in files if f.endswith(".tmp")]


def test_finalize_rewrites_each_frameworks_card_through_the_same_code(runs):
    from training.finalize import finalize

    for m in FRAMEWORKS:
        before = read_json(runs[m] / "card.json")
        card = finalize(runs[m])
        assert key_tree(card) == key_tree(before) | {"finalized_from": None}
        assert card["best_epoch"] == before["best_epoch"] and card["epochs_run"] == 2
        assert card["threshold"] == pytest.approx(before["threshold"], abs=1e-4)
        assert read_json(runs[m] / "card.json") == card == read_json(runs[m] / "best.json")


# ------------------------------------------------------------------ time limit: one expectation

class VirtualClock:
    """Seconds that pass only when a training step runs: 10 s a step, 60 s more for a process's
    first step (tracing, autotuning). Validation and checkpoints take no time."""

    def __init__(self):
        self.now = 0.0
        self.steps = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += 10.0 + (60.0 if self.steps == 0 else 0.0)
        self.steps += 1


@pytest.mark.parametrize("model", FRAMEWORKS)
def test_time_limit_skips_the_slow_first_epoch_in_both_frameworks(model, data, tmp_path):
    """4 steps an epoch: epoch 1 takes 100 s, later ones 40 s. With 5 minutes, after epoch 2
    (140 s spent) the pace is 40 s, so 4 more fit: 6 epochs. Counting the first epoch in the
    pace (70 s) would give 4."""
    from training.data import load_split

    out = tmp_path / "run"
    cfg = config(model, data, out, "--epochs", "20", "--time-limit", "5", "--amp", "off")
    split = load_split(cfg["data"], SIZE, cfg["val_fraction"], cfg["seed"])
    writer = RunWriter(out)
    backend = make_backend(cfg, split, writer.log)
    assert steps_per_epoch(len(split.train.images), 8) == 4
    clock, real_step = VirtualClock(), backend.train_step

    def timed_step(*args):
        clock.step()
        return real_step(*args)

    backend.train_step = timed_step
    try:
        result = train(cfg, writer, split, StopFlag(), backend, clock=clock)
    finally:
        writer.close()
    assert result["state"] == "finished" and result["epoch"] == 6
    assert "time limit 5.0 min: 6 epochs fit, not 20" in (out / "log.txt").read_text()
    assert read_json(out / "status.json")["epochs"] == 6
    assert result["card"]["epochs_run"] == 6 and result["card"]["training"]["epochs"] == 6
    train_rows = [r for r in read_metrics(out) if r["split"] == "train"]
    assert train_rows[-1]["global_step"] == 24
    # the cosine was refitted to the shorter run: the last step ends near the floor, not mid-way
    assert train_rows[-1]["lr"] < 0.05 * cfg["lr"]


def test_epochs_that_fit_by_hand():
    # one epoch done: the plan stands unless the time is already up
    assert epochs_that_fit(5, 100.0, [100.0], 1, 20) == 20
    assert epochs_that_fit(1, 100.0, [100.0], 1, 20) == 1
    # two done: the pace is the last epoch, not the first
    assert epochs_that_fit(5, 140.0, [100.0, 40.0], 2, 20) == 6
    assert epochs_that_fit(5, 140.0, [100.0, 40.0], 2, 5) == 5  # never more than planned
    assert epochs_that_fit(2, 140.0, [100.0, 40.0], 2, 20) == 2  # never fewer than done


# ------------------------------------------------------------------ the end-of-run hook and embeddings

def test_fit_extras_sees_the_best_model_and_its_result_joins_the_card(data, tmp_path):
    from training.data import load_split

    from models import load_classifier

    out = tmp_path / "run"
    cfg = config("torch_cnn", data, out, "--epochs", "1")
    split = load_split(cfg["data"], SIZE, cfg["val_fraction"], cfg["seed"])
    writer = RunWriter(out)
    seen = {}

    def extras(backend, split_, cfg_):
        feats = backend.embed(split_.val.images)
        seen["features"] = feats
        return {"familiarity": {"n": int(len(feats)), "dim": int(feats.shape[1])}}

    try:
        result = train(cfg, writer, split, StopFlag(), make_backend(cfg, split, writer.log), extras=extras)
    finally:
        writer.close()
    card = read_json(out / "card.json")
    assert card["familiarity"] == {"n": len(split.val.images), "dim": seen["features"].shape[1]} == \
           result["card"]["familiarity"]
    # the features are the shipped classifier's embedding of the best checkpoint
    clf = load_classifier("torch_cnn", out / "best.pt")
    np.testing.assert_allclose(clf.embed(split.val.images[0]), seen["features"][0], rtol=1e-4, atol=1e-5)


def test_both_backends_train_on_the_same_augmented_pixels(data, tmp_path):
    from training.data import load_split

    cfg = {m: config(m, data, tmp_path / m, "--epochs", "1", "--device", "cpu") for m in FRAMEWORKS}
    split = load_split(cfg["torch_cnn"]["data"], SIZE, 0.15, 42)
    batch = split.train.images[:6]
    x = {m: make_backend(cfg[m], split, print).inputs(batch, torch.Generator().manual_seed(9)) for m in FRAMEWORKS}
    assert isinstance(x["keras_cnn"], np.ndarray) and x["keras_cnn"].shape == (6, SIZE, SIZE, 3)
    np.testing.assert_array_equal(x["torch_cnn"].permute(0, 2, 3, 1).cpu().numpy(), x["keras_cnn"])


# ------------------------------------------------------------------ pure pieces

def test_each_rank_gets_the_same_number_of_steps_and_together_all_images():
    n, bs = 37, 4
    assert steps_per_epoch(n, bs) == 10 and steps_per_epoch(n, bs, world=2) == 5
    one = epoch_order(n, bs, seed=3, epoch=2)
    assert sorted(one) == list(range(n))
    assert np.array_equal(one, epoch_order(n, bs, seed=3, epoch=2))  # a resumed run sees the same order
    assert not np.array_equal(one, epoch_order(n, bs, seed=3, epoch=3))
    shards = [epoch_order(n, bs, 3, 2, Dist(rank, 2)) for rank in range(2)]
    assert [len(s) for s in shards] == [5 * bs, 5 * bs]  # lockstep: the same step count on every rank
    assert set(np.concatenate(shards)) == set(range(n))


def test_schedule_warms_up_to_the_peak_then_decays_to_the_floor():
    steps, epochs = 10, 4
    total = steps * epochs
    assert lr_lambda(0, total, steps) == pytest.approx(0.1)
    assert lr_lambda(steps - 1, total, steps) == pytest.approx(1.0)  # warm-up (1 epoch) ends at the peak
    assert lr_lambda(2 * steps, total, steps) > 0.5
    assert lr_lambda(total - 1, total, steps) < 0.05
    assert lr_lambda(total + 5, total, steps) == pytest.approx(0.01)


def test_best_epoch_rule():
    first = {"auc": -1.0, "epoch": 0}
    assert is_better(float("nan"), first)  # a first epoch is always a best: every finished run has a card
    assert not is_better(float("nan"), {"auc": 0.7, "epoch": 1})
    assert is_better(0.7002, {"auc": 0.7, "epoch": 1}) and not is_better(0.70005, {"auc": 0.7, "epoch": 1})
