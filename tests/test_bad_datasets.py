"""Bad datasets through `python -m training` and `python -m training.evaluate`.

Unusable folders (missing, a file, no classes, an empty class, one image per class, every image
of a class unreadable, several datasets without --split): exit status 2 and one `error: ...`
line that says what is wrong, no traceback, and a training run directory that says `failed`.
Usable folders with damage (unreadable files, mixed sizes and formats, symlink loops): the run
trains, skipping and counting the bad files, and evaluation lists them.

Each case runs in-process (the same `main()` the commands run; fast); a few run as real
subprocesses, and the full subprocess sweep is marked slow.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.rundir import read_run

ROOT = Path(__file__).resolve().parent.parent
SIZE = 32  # --image-size: tiny, so a real training run takes seconds


def lesion_bytes(kind: str, seed: int, size=(48, 48), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    from training.synthetic import make_lesion

    img = Image.fromarray(make_lesion(kind, max(size), seed)).resize(size).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder: Path, kind: str, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"{kind}_{i:03d}.png").write_bytes(lesion_bytes(kind, i))


def good_dataset(root: Path, n: int = 6) -> Path:
    for kind in ("benign", "malignant"):
        write_images(root / kind, kind, n, start=0 if kind == "benign" else 100)
    return root


# ------------------------------------------------------------------ the cases

def case_missing(tmp: Path) -> Path:
    return tmp / "no_such_folder"


def case_file_not_folder(tmp: Path) -> Path:
    path = tmp / "dataset.zip"
    path.write_bytes(b"PK\x03\x04 a zip, not a folder")
    return path


def case_no_classes(tmp: Path) -> Path:
    write_images(tmp / "photos", "benign", 3)
    return tmp


def case_class_is_a_file(tmp: Path) -> Path:
    write_images(tmp / "malignant", "malignant", 3)
    (tmp / "benign").write_text("not a folder")
    return tmp


def case_empty_class(tmp: Path) -> Path:
    write_images(tmp / "malignant", "malignant", 3)
    (tmp / "benign").mkdir()
    return tmp


def case_class_without_images(tmp: Path) -> Path:
    write_images(tmp / "malignant", "malignant", 3)
    (tmp / "benign").mkdir()
    (tmp / "benign" / "README.txt").write_text("photos go here")
    (tmp / "benign" / ".hidden.jpg").write_bytes(lesion_bytes("benign", 1, fmt="JPEG"))
    return tmp


def case_class_all_unreadable(tmp: Path) -> Path:
    write_images(tmp / "malignant", "malignant", 3)
    (tmp / "benign").mkdir()
    (tmp / "benign" / "a.jpg").write_bytes(b"not an image")
    (tmp / "benign" / "b.png").write_bytes(b"")
    return tmp


def case_one_per_class(tmp: Path) -> Path:
    write_images(tmp / "benign", "benign", 1)
    write_images(tmp / "malignant", "malignant", 1)
    return tmp


def case_two_datasets(tmp: Path) -> Path:
    good_dataset(tmp / "train", 2)
    good_dataset(tmp / "test", 2)
    return tmp


def make_case(case, tmp: Path) -> Path:
    folder = tmp / "data"
    folder.mkdir()
    return case(folder)


# (case, message for training, message for evaluation or None when evaluation works)
ERROR_CASES = [
    (case_missing, "no such folder", "no such folder"),
    (case_file_not_folder, "not a folder", "not a folder"),
    (case_no_classes, "not a dataset", "not a dataset"),
    (case_class_is_a_file, "not a dataset", "not a dataset"),
    (case_empty_class, "no images", "no images"),
    (case_class_without_images, "no images", "no images"),
    (case_class_all_unreadable, "none of its images could be read", "none of its images could be read"),
    (case_one_per_class, "at least 2 are needed", None),
    (case_two_datasets, "holds several datasets", "holds several datasets"),
]
CASE_IDS = [c[0].__name__[5:] for c in ERROR_CASES]


def damaged_dataset(root: Path) -> tuple[Path, int]:
    """A usable dataset with unreadable files, mixed sizes/formats/modes and symlink loops.
    Returns (root, number of unreadable image files)."""
    good_dataset(root, 5)
    odd = {
        "benign/wide.jpg": lesion_bytes("benign", 20, (300, 90), "JPEG"),
        "benign/grey.png": lesion_bytes("benign", 21, (64, 64), "PNG", "L"),
        "benign/alpha.png": lesion_bytes("benign", 22, (40, 40), "PNG", "RGBA"),
        "malignant/tall.webp": lesion_bytes("malignant", 23, (50, 200), "WEBP"),
        "malignant/big.bmp": lesion_bytes("malignant", 24, (400, 400), "BMP"),
        "malignant/cmyk.jpg": lesion_bytes("malignant", 25, (64, 64), "JPEG", "CMYK"),
    }
    bad = {
        "benign/notes.jpg": b"Patient notes, not a photo",
        "benign/empty.png": b"",
        "malignant/cut.png": lesion_bytes("malignant", 26, (96, 96))[:300],
        "malignant/dot.png": lesion_bytes("malignant", 27, (1, 1)),
    }
    for rel, data in {**odd, **bad}.items():
        (root / rel).write_bytes(data)
    # symlink loops: a folder linking to its parent, a file linking to itself, the root linking to itself
    os.symlink("..", root / "benign" / "loop")
    os.symlink("self.jpg", root / "malignant" / "self.jpg")
    os.symlink(".", root / "again")
    return root, len(bad)


# ------------------------------------------------------------------ running the commands

def _restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in saved.items()]


def train_in_process(capsys, data: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    from training.train import main

    restore = _restore_signals()  # the training CLI installs SIGTERM/SIGINT handlers
    try:
        code = main(["--model", "torch_cnn", "--data", str(data), "--epochs", "1", "--image-size", str(SIZE),
                     "--batch-size", "4", "--out", str(out), *extra])
    finally:
        restore()
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def evaluate_in_process(capsys, checkpoint: Path, data: Path) -> tuple[int, str, str]:
    from training.evaluate import main

    code = main(["--model", "torch_cnn", "--checkpoint", str(checkpoint), "--data", str(data), "--json"])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def command(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train_command(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return command(["training", "--model", "torch_cnn", "--data", str(data), "--epochs", "1", "--image-size",
                    str(SIZE), "--batch-size", "4", "--out", str(out), "--threads", "1", *extra])


def evaluate_command(checkpoint: Path, data: Path) -> subprocess.CompletedProcess:
    return command(["training.evaluate", "--model", "torch_cnn", "--checkpoint", str(checkpoint), "--data",
                    str(data), "--json"])


def assert_one_error_line(code: int, err: str, message: str) -> None:
    """Exit status 2, exactly one `error: ` line that says `message`, no traceback. (Training may
    also have said which files it skipped on the way: those lines are not errors.)"""
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert err.rstrip().splitlines()[-1] == lines[0], "the error line should be the last word"


def assert_failed_run(out: Path, message: str) -> None:
    if not out.exists():  # the run may refuse before making a directory; if it made one, it must say why
        return
    run = read_run(out)
    assert run.state == "failed" and message in run.message, (run.state, run.message)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from models.loader import save_torch_weights
    from models.registry import default_card
    from models.torch_classifier import build_for_inference

    card = default_card("torch_cnn", image_size=SIZE)
    card["epochs"] = 1
    folder = tmp_path_factory.mktemp("eval_weights")
    return save_torch_weights(build_for_inference("torch_cnn"), card, folder / "torch_cnn.pt")


# ------------------------------------------------------------------ unusable datasets

@pytest.mark.parametrize("case,train_msg,eval_msg", ERROR_CASES, ids=CASE_IDS)
def test_training_refuses_an_unusable_dataset(case, train_msg, eval_msg, tmp_path, capsys):
    data = make_case(case, tmp_path)
    out = tmp_path / "run"
    code, _, err = train_in_process(capsys, data, out)
    assert_one_error_line(code, err, train_msg)
    assert_failed_run(out, train_msg)


@pytest.mark.parametrize("case,train_msg,eval_msg", ERROR_CASES, ids=CASE_IDS)
def test_evaluation_refuses_an_unusable_dataset(case, train_msg, eval_msg, tmp_path, capsys, checkpoint):
    data = make_case(case, tmp_path)
    code, out, err = evaluate_in_process(capsys, checkpoint, data)
    if eval_msg is None:  # evaluation needs no split: one image per class is a (tiny) test set
        assert code == 0, err
        assert json.loads(out)["n"] == 2
        return
    assert_one_error_line(code, err, eval_msg)
    assert out == ""


def test_split_that_does_not_exist(tmp_path, capsys, checkpoint):
    data = good_dataset(tmp_path / "data", 2)
    code, _, err = train_in_process(capsys, data, tmp_path / "run", "--split", "test")
    assert_one_error_line(code, err, "no such folder")
    from training.evaluate import main

    assert main(["--model", "torch_cnn", "--checkpoint", str(checkpoint), "--data", str(data),
                 "--split", "../../etc"]) == 2
    assert "error: " in capsys.readouterr().err


def test_an_unusable_dataset_as_a_real_command(tmp_path):
    # What a user at a terminal sees (the training CLI refuses before importing torch: fast).
    empty = make_case(case_empty_class, tmp_path)
    r = train_command(empty, tmp_path / "run_empty")
    assert_one_error_line(r.returncode, r.stderr, "no images")
    assert_failed_run(tmp_path / "run_empty", "no images")


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("case,train_msg,eval_msg", ERROR_CASES, ids=CASE_IDS)
def test_every_unusable_dataset_as_real_commands(case, train_msg, eval_msg, tmp_path, checkpoint):
    data = make_case(case, tmp_path)
    r = train_command(data, tmp_path / "run")
    assert_one_error_line(r.returncode, r.stderr, train_msg)
    assert_failed_run(tmp_path / "run", train_msg)
    r = evaluate_command(checkpoint, data)
    if eval_msg is None:
        assert r.returncode == 0 and json.loads(r.stdout)["n"] == 2, r.stderr
    else:
        assert_one_error_line(r.returncode, r.stderr, eval_msg)


# ------------------------------------------------------------------ damaged but usable

def test_damaged_dataset_is_discovered_with_bad_files_counted(tmp_path):
    from training.data import load_dataset

    root, n_bad = damaged_dataset(tmp_path / "data")
    ds = load_dataset(root, SIZE, dedupe=False)
    assert ds.images.shape == (5 + 5 + 6, SIZE, SIZE, 3)
    assert len(ds.skipped) == n_bad
    reasons = " ".join(r for _, r in ds.skipped)
    assert "not an image" in reasons and "empty" in reasons and "truncated" in reasons and "too small" in reasons


def check_damaged_run(out: Path, n_bad: int, err: str) -> None:
    assert "Traceback" not in err
    assert f"warning: skipped {n_bad} unreadable files" in err
    run = read_run(out)
    assert run.state == "finished", run.message
    assert run.card["data"]["skipped"] == n_bad
    assert f"{n_bad} unreadable files skipped" in (out / "log.txt").read_text()
    from models import load_classifier

    assert load_classifier("torch_cnn", out / "best.pt").card["epochs"] >= 1


def check_damaged_evaluation(out: str, n_bad: int) -> None:
    result = json.loads(out)
    assert result["n"] == 16 and len(result["skipped"]) == n_bad
    assert {Path(s["path"]).name for s in result["skipped"]} == {"notes.jpg", "empty.png", "cut.png", "dot.png"}
    assert np.isfinite(result["accuracy"])


@pytest.mark.timeout(300)
def test_training_skips_and_counts_bad_files_then_evaluation_lists_them(tmp_path, capsys):
    root, n_bad = damaged_dataset(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = train_in_process(capsys, root, out)
    assert code == 0, err
    check_damaged_run(out, n_bad, err)
    # evaluate the run's own checkpoint on the same folder: every readable file counted, bad ones listed
    code, stdout, err = evaluate_in_process(capsys, out / "best.pt", root)
    assert code == 0, err
    check_damaged_evaluation(stdout, n_bad)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_damaged_dataset_as_real_commands(tmp_path):
    root, n_bad = damaged_dataset(tmp_path / "data")
    out = tmp_path / "run"
    r = train_command(root, out)
    assert r.returncode == 0, r.stderr
    check_damaged_run(out, n_bad, r.stderr)
    r = evaluate_command(out / "best.pt", root)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    check_damaged_evaluation(r.stdout, n_bad)
