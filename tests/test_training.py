"""The training pipeline on tiny synthetic data: CLI, run directory, stop/resume, crashes, scale-out."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models import load_classifier
from models.architectures import build_torch
from training.data import DatasetError, augment, find_dataset_root, load_split, stratified_split
from training.metrics import choose_threshold, roc_auc, roc_points
from training.rundir import create_run_dir, list_runs, read_metrics, read_run, safe_run_path
from training.synthetic import write_dataset
from training.torch_loop import amp_settings, cpu_has_native_bf16, uses_channels_last

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), per_class=16, size=40)


def train_cmd(*args):
    return [sys.executable, "-m", "training", *map(str, args)]


def run_training(*args, timeout=600, env=None):
    return subprocess.run(train_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def status(run):
    return json.loads((Path(run) / "status.json").read_text())


def wait_for(predicate, timeout=300, interval=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


# ------------------------------------------------------------------ data

def test_split_is_stratified_and_reproducible():
    labels = np.array([0] * 50 + [1] * 30)
    tr, va = stratified_split(labels, 0.2, seed=7)
    tr2, va2 = stratified_split(labels, 0.2, seed=7)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert (labels[va] == 0).sum() == 10 and (labels[va] == 1).sum() == 6
    assert not set(tr) & set(va) and len(tr) + len(va) == 80
    assert not np.array_equal(stratified_split(labels, 0.2, seed=8)[1], va)


def test_dataset_found_one_level_down_and_ambiguity_named(tmp_path):
    write_dataset(tmp_path / "a" / "train", per_class=2, size=36)
    assert find_dataset_root(tmp_path) == tmp_path / "a" / "train"
    write_dataset(tmp_path / "a" / "test", per_class=2, size=36)
    with pytest.raises(DatasetError, match="several datasets"):
        find_dataset_root(tmp_path)
    assert find_dataset_root(tmp_path / "a", split="test") == tmp_path / "a" / "test"


def test_not_a_dataset_and_empty_class_fail_early(tmp_path):
    with pytest.raises(DatasetError, match="expected subfolders benign/ and malignant/"):
        find_dataset_root(tmp_path)
    write_dataset(tmp_path / "d", per_class=2, size=36)
    for f in (tmp_path / "d" / "malignant").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="no images"):
        load_split(tmp_path / "d", 32)


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    root = write_dataset(tmp_path / "d", per_class=4, size=36)
    (root / "benign" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "malignant" / "empty.png").write_bytes(b"")
    split = load_split(root, 32, val_fraction=0.25, seed=0)
    assert split.info()["skipped"] == 2
    assert len(split.train.images) + len(split.val.images) == 8


def test_duplicates_are_kept_once(tmp_path):
    root = write_dataset(tmp_path / "d", per_class=3, size=36)
    data = (root / "malignant" / "000.png").read_bytes()
    (root / "malignant" / "copy.png").write_bytes(data)
    split = load_split(root, 32, val_fraction=0.34, seed=0)
    assert split.info()["duplicates_removed"] == 1


def test_augment_keeps_shape_range_and_changes_pixels():
    x = torch.rand(6, 3, 32, 32) * 255
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    assert not torch.allclose(x, y)
    y2 = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)  # seeded: reproducible


# ------------------------------------------------------------------ metrics

def test_auc_and_threshold_rule_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95])
    # pairs where the positive outranks the negative: 24 - 2 (0.4 and 0.5 below 0.6) = 22 of 24
    assert roc_auc(y, p) == pytest.approx(22 / 24)
    t = choose_threshold(y, p, target_sensitivity=0.9)
    assert (p[y == 1] >= t).mean() >= 0.9  # sensitivity reached
    assert t == pytest.approx(0.35)  # the highest such threshold: between 0.3 and 0.4
    roc = roc_points(y, p)
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1 and roc["fpr"][-1] == 1


# ------------------------------------------------------------------ the CLI

@pytest.mark.parametrize("amp", ["auto", "off"])
def test_cli_trains_writes_protocol_and_checkpoint_predicts(synth, tmp_path, amp):
    out = tmp_path / "run"
    proc = run_training("--model", "torch_cnn", "--data", synth, "--epochs", 2, "--image-size", 32,
                        "--batch-size", 8, "--log-every", 1, "--amp", amp, "--out", out)
    assert proc.returncode == 0, proc.stderr
    want = amp_settings(torch.device("cpu"), amp, "torch_cnn")
    assert f"amp: {want[1] if want[0] else 'off'};" in (out / "log.txt").read_text()
    st = status(out)
    assert st["state"] == "finished" and st["epoch"] == 2 and st["epochs"] == 2
    assert st["device"].startswith("cpu")
    rows = read_metrics(out)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert len(val_rows) == 2 and len(train_rows) >= 4
    for key in ("time", "epoch", "step", "loss", "accuracy", "lr", "images_per_s"):
        assert key in train_rows[0]
    card = json.loads((out / "card.json").read_text())
    assert card["synthetic"] is True and card["data"]["split_seed"] == 42
    assert 0 < card["threshold"] < 1 and card["temperature"] > 0
    for key in ("accuracy", "auc", "sensitivity", "specificity", "ece"):
        assert key in card["validation"]
    assert "sensitivity is at least 0.90" in card["threshold_rule"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "torch_cnn" and cfg["image_size"] == 32
    clf = load_classifier("torch_cnn", out / "best.pt")
    assert clf.image_size == 32
    assert 0 <= clf.predict(np.zeros((50, 50, 3), np.uint8)).prob_malignant <= 1
    assert "SYNTHETIC" in proc.stdout


def test_amp_modes_pick_the_precision():
    cpu = torch.device("cpu")
    assert amp_settings(cpu, "off") == (False, None)
    assert amp_settings(cpu, "bf16") == (True, torch.bfloat16)
    # bf16 only where the CPU computes it natively: emulated bf16 is slower than fp32
    assert amp_settings(cpu, "auto") == ((True, torch.bfloat16) if cpu_has_native_bf16() else (False, None))
    assert amp_settings(torch.device("mps"), "auto") == (False, None)
    assert amp_settings(cpu, "auto", "efficientnet_lite0") == (False, None)  # measured slower in bf16 on CPU
    assert uses_channels_last(cpu)


def test_a_bf16_cpu_step_follows_the_fp32_step():
    """The same batch, weights and dropout mask: bf16 autocast changes the loss and gradients only slightly."""
    torch.manual_seed(3)
    model, _ = build_torch("torch_cnn", None)
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.rand(4, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 0, 1])
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout mask in both passes
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (l32, g32), (l16, g16) = grads
    assert l16 == pytest.approx(l32, rel=0.01)  # measured: 0.02-0.3 % over 8 seeds
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.9  # measured: 0.95-0.97


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be between"),
    (["--lr", "nan"], "--lr must be between"),
    (["--batch-size", "100000"], "--batch-size must be between"),
    (["--weights", "/nonexistent.pth"], "no such file"),
])
def test_cli_refuses_bad_numbers_before_starting(synth, tmp_path, args, message):
    proc = run_training("--model", "torch_cnn", "--data", synth, "--out", tmp_path / "r", *args, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def parse(*args):
    from training.train import get_args_parser, resolve_args

    return resolve_args(get_args_parser().parse_args([str(a) for a in args]))


def test_data_takes_several_folders_or_a_list_file(tmp_path):
    from training.train import UsageError

    a = write_dataset(tmp_path / "a", per_class=2, size=36)
    b = write_dataset(tmp_path / "lists" / "b", per_class=2, size=36)
    assert parse("--model", "torch_cnn", "--data", a, b)["data"] == [str(a.resolve()), str(b.resolve())]
    listing = tmp_path / "lists" / "sources.txt"
    listing.write_text(f"# training sources\n{a}\n\nb\n")  # absolute, and relative to the list's folder
    cfg = parse("--model", "torch_cnn", "--data", listing, a)
    assert cfg["data"] == [str(a.resolve()), str(b.resolve())]  # each folder once
    for bad, message in ((tmp_path / "missing", "no such folder"), (listing.parent / "nothing.txt", "no such folder"),
                         (a / "benign" / "000.png", "not a folder")):
        with pytest.raises(UsageError, match=message):
            parse("--model", "torch_cnn", "--data", a, bad)
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    with pytest.raises(UsageError, match="names no folders"):
        parse("--model", "torch_cnn", "--data", tmp_path / "empty.txt")


def test_resume_keeps_what_is_not_given_again(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=2, size=36)
    out = tmp_path / "run"
    cfg = parse("--model", "torch_cnn", "--data", data, "--device", "cpu", "--log-every", "1", "--out", out)
    assert (cfg["colour_constancy"], cfg["colour_constancy_p"]) == ("shades_of_gray", 6.0)
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg))
    resumed = parse("--resume", out)
    assert (resumed["device"], resumed["log_every"], resumed["resuming"]) == ("cpu", 1, True)
    assert parse("--resume", out, "--device", "auto")["device"] == "auto"
    assert parse("--model", "torch_cnn", "--data", data)["log_every"] == 10


def test_training_on_two_sources_counts_each_in_the_card(tmp_path):
    a = write_dataset(tmp_path / "a", per_class=8, size=36, seed=1)
    b = write_dataset(tmp_path / "b", per_class=8, size=36, seed=2)
    out = tmp_path / "run"
    proc = run_training("--model", "torch_cnn", "--data", a, b, "--epochs", 1, "--image-size", 32, "--batch-size", 8,
                        "--colour-constancy", "none", "--out", out)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "card.json").read_text())
    assert len(card["data"]["sources"]) == 2
    assert sum(sum(s["counts"]["train"].values()) + sum(s["counts"]["val"].values())
               for s in card["data"]["sources"]) == 32
    assert "colour_constancy" not in card["preprocessing"]


def test_cli_not_a_dataset_fails_with_the_expectation(tmp_path):
    (tmp_path / "photos").mkdir()
    proc = run_training("--model", "torch_cnn", "--data", tmp_path / "photos", "--out", tmp_path / "r", timeout=600)
    assert proc.returncode == 2 and "expected subfolders benign/ and malignant/" in proc.stderr
    assert status(tmp_path / "r")["state"] == "failed"


@pytest.mark.parametrize("lr, message", [
    (float("inf"), "loss became nan at epoch 1, step 2"),  # first step sends the weights to inf
    (float("nan"), "Invalid learning rate: nan"),
])
def test_non_finite_learning_rate_fails_the_run_with_a_message(synth, tmp_path, lr, message):
    """Past the CLI's bounds (through run_config): the run ends as failed and says where."""
    from training.train import get_args_parser, resolve_args, run_config

    cfg = resolve_args(get_args_parser().parse_args(
        ["--model", "torch_cnn", "--data", str(synth), "--epochs", "2", "--image-size", "32",
         "--batch-size", "8", "--out", str(tmp_path / "r"), "--warmup-epochs", "0"]))
    cfg["lr"] = lr
    assert run_config(cfg) == 1
    st = status(tmp_path / "r")
    assert st["state"] == "failed"
    assert message in st["message"]


def test_sigterm_then_resume_reaches_the_same_final_epoch(synth, tmp_path):
    epochs = 4  # a fast machine is still training when SIGTERM arrives after epoch 1 (3 epochs, >= 1 s, to go)
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd("--model", "torch_cnn", "--data", synth, "--epochs", epochs, "--image-size", 32,
                                      "--batch-size", 4, "--log-every", 1, "--amp", "off", "--out", out),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r.get("split") == "val" for r in read_metrics(out)), timeout=300)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    st = status(out)
    assert st["state"] == "stopped", st
    stopped_at = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 1 <= stopped_at < epochs
    assert load_classifier("torch_cnn", out / "best.pt")  # what was saved loads
    proc = run_training("--resume", out)
    assert proc.returncode == 0, proc.stderr
    st = status(out)
    assert st["state"] == "finished" and st["epoch"] == epochs
    log = (out / "log.txt").read_text()
    assert f"resuming after epoch {stopped_at}" in log
    assert log.count("amp: off;") == 2  # the resumed process keeps the run's --amp
    val_epochs = [r["epoch"] for r in read_metrics(out) if r["split"] == "val"]
    assert val_epochs[-1] == epochs and sorted(set(val_epochs)) == list(range(1, epochs + 1))


def test_stop_file_stops_the_run(synth, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd("--model", "torch_cnn", "--data", synth, "--epochs", 50, "--image-size", 32,
                                      "--batch-size", 4, "--log-every", 1, "--out", out),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: read_metrics(out), timeout=300)
    (out / "STOP").touch()
    proc.communicate(timeout=120)
    assert status(out)["state"] == "stopped"


def test_sigkill_leaves_loadable_checkpoints_and_the_reader_says_failed(synth, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd("--model", "torch_cnn", "--data", synth, "--epochs", 50, "--image-size", 32,
                                      "--batch-size", 4, "--log-every", 1, "--out", out),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (out / "last.pt").exists(), timeout=300)
    assert read_run(out).state == "running"
    proc.kill()
    proc.wait(timeout=60)
    info = read_run(out)
    assert info.state == "failed" and "without reporting" in info.message
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] >= 1 and "optimizer" in ck
    load_classifier("torch_cnn", out / "best.pt")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"] == [str(synth.resolve())]
    cfg["data"] = cfg["data"][0]  # a run started before --data took several folders: one string
    (out / "config.json").write_text(json.dumps(cfg))
    proc = run_training("--resume", out, "--epochs", ck["epoch"] + 1)
    assert proc.returncode == 0, proc.stderr
    assert status(out)["state"] == "finished"
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"]  # a kill mid-write leaves one; resume clears it


def test_run_ids_are_unique_and_cannot_escape(tmp_path):
    ids = {create_run_dir("torch_cnn", tmp_path).name for _ in range(20)}
    assert len(ids) == 20
    assert [r.id for r in list_runs(tmp_path)]
    for bad in ("../etc", "a/b", "..", "", ".hidden", "x" * 200):
        with pytest.raises(ValueError):
            safe_run_path(bad, tmp_path)
    assert safe_run_path(sorted(ids)[0], tmp_path).parent == tmp_path.resolve()


def test_evaluate_json_matches_a_hand_computation(tmp_path):
    """Fixed images, fixed model: the CLI's numbers equal the ones computed here by hand."""
    from models.loader import save_torch_weights
    from models.registry import default_card
    from models.torch_classifier import build_for_inference

    data = write_dataset(tmp_path / "d", per_class=6, size=40, seed=3)
    torch.manual_seed(0)
    model = build_for_inference("torch_cnn")
    card = default_card("torch_cnn", image_size=32) | {"epochs": 1, "threshold": 0.5}
    ck = save_torch_weights(model, card, tmp_path / "m.pt")
    clf = load_classifier("torch_cnn", ck)
    probs, labels = [], []
    for label, cls in enumerate(("benign", "malignant")):
        for f in sorted((data / cls).iterdir()):
            probs.append(clf.predict(f.read_bytes()).prob_malignant)
            labels.append(label)
    probs, labels = np.array(probs), np.array(labels)
    thr = float(np.median(probs))  # a threshold that splits the set, so the counts are informative
    pred = probs >= thr
    tp, tn = int((pred & (labels == 1)).sum()), int((~pred & (labels == 0)).sum())
    pos = [q for q, y in zip(probs, labels) if y == 1]
    neg = [q for q, y in zip(probs, labels) if y == 0]
    auc = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
    proc = subprocess.run([sys.executable, "-m", "training.evaluate", "--model", "torch_cnn", "--checkpoint",
                           str(ck), "--data", str(data), "--threshold", str(thr), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["model"] == "torch_cnn" and r["n"] == 12
    assert r["accuracy"] == pytest.approx((tp + tn) / 12)
    assert r["sensitivity"] == pytest.approx(tp / 6) and r["specificity"] == pytest.approx(tn / 6)
    assert r["auc"] == pytest.approx(auc, abs=1e-9)
    assert r["threshold"] == pytest.approx(thr)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch_cnn", "efficientnet_lite0", "densenet161"])
def test_each_torch_model_trains_and_its_checkpoint_predicts(synth, tmp_path, name):
    out = tmp_path / name
    proc = run_training("--model", name, "--data", synth, "--epochs", 2, "--image-size", 32, "--batch-size", 8,
                        "--weights", "none" if name != "efficientnet_lite0" else "imagenet", "--out", out,
                        timeout=900)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["name"] == name and card["epochs"] >= 1
    assert card["init"] == ("imagenet" if name == "efficientnet_lite0" else "scratch")
    clf = load_classifier(name, out / "best.pt")
    expl = clf.explain(np.full((40, 40, 3), 128, np.uint8), "gradcam")
    assert expl.heatmap.shape == (32, 32)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_rank0_alone_writes(synth, tmp_path):
    runs = tmp_path / "runs"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training",
                           "--model", "torch_cnn", "--data", str(synth), "--epochs", "2", "--image-size", "32",
                           "--batch-size", "4", "--device", "cpu", "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LESION_LENS_RUNS": str(runs)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    made = [p for p in runs.iterdir() if p.is_dir()]
    assert len(made) == 1  # one run directory, named by rank 0 and shared
    run = made[0]
    st = status(run)
    assert st["state"] == "finished" and st["epoch"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2
    # every metrics row written once: one val row per epoch, no duplicates from rank 1
    val_rows = [r for r in read_metrics(run) if r["split"] == "val"]
    assert [r["epoch"] for r in val_rows] == [1, 2]
    pids = {json.loads(line).get("pid") for line in [(run / "status.json").read_text()]}
    assert len(pids) == 1
    load_classifier("torch_cnn", run / "best.pt")
    # each rank trained half the data: train rows count images of both ranks per step
    assert math.isfinite(val_rows[-1]["loss"])
