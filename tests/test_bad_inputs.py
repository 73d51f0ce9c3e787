"""Bad and odd image files (tests/badfiles.py) through every entry point that decodes a photo.

- `models.load_image` / `models.preprocess.prepare` from bytes and from a path: the expected
  image or an ImageError with the expected message;
- a real classifier (`clf.predict`) on every readable file;
- `python -m models.predict` in-process for the whole corpus, and as a real subprocess for a
  few representative files (the full subprocess sweep is marked slow): exit status 2, exactly
  one `error: ...` line on stderr and no traceback for bad files; one JSON object for good ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import badfiles
from badfiles import corpus
from models import ImageError, load_image
from models.preprocess import MIN_SIDE, prepare

ROOT = Path(__file__).resolve().parent.parent
FILES = corpus()
IDS = [f.name for f in FILES]


def test_corpus_covers_the_cases_the_app_must_survive():
    names = set(IDS)
    assert len(FILES) >= 30
    assert len(badfiles.errors()) >= 15 and len(badfiles.oks()) >= 15
    for must in ("notes.jpg", "empty.jpg", "cut.jpg", "cut.png", "bomb_header.png", "bomb_1bit_81mpx.png",
                 "one_pixel.png", "strip_20000x20.png", "cmyk.jpg", "sixteen_bit.png", "palette_transparent.png",
                 "animated.gif", "rotated_exif6.jpg", "rotated_exif8.jpg", "big_exif.jpg", "photo.heic",
                 "drawing.svg", "report.pdf", "photo.webp", "photo.bmp", "photo.tiff", "grey_alpha.png",
                 "rgba_half_transparent.png", "float.tiff", "trailing_garbage.jpg", "png_named.jpg"):
        assert must in names, must
    # the bombs are cheap to hold but really are what they claim
    bomb = Image.open(__import__("io").BytesIO(badfiles.by_name("bomb_1bit_81mpx.png").data))
    assert bomb.size == (9000, 9000) and len(badfiles.by_name("bomb_1bit_81mpx.png").data) < 200_000
    assert all(f.check is not None for f in badfiles.oks()), "every ok file needs a check of its behaviour"


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_load_image_from_bytes(f):
    if f.expect == "error":
        with pytest.raises(ImageError) as info:
            load_image(f.data)
        assert f.message in str(info.value), str(info.value)
        with pytest.raises(ImageError):
            prepare(f.data, 64)
        return
    img = load_image(f.data)
    assert img.mode == "RGB" and min(img.size) >= MIN_SIDE
    f.check(img)  # the behaviour the corpus promises (upright, white background, first frame, ...)
    arr = prepare(f.data, 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_load_image_from_a_path_names_the_file(f, tmp_path):
    path = tmp_path / f.name
    path.write_bytes(f.data)
    if f.expect == "error":
        with pytest.raises(ImageError) as info:
            load_image(path)
        msg = str(info.value)
        assert f.message in msg and f.name in msg, msg
        assert "upload" not in msg.split(":")[0]
    else:
        assert load_image(path).mode == "RGB"


def test_exif_orientation_puts_red_on_top():
    # Spelled out (the corpus checks this too): stored sideways, shown upright.
    for orientation in (6, 8, 3):
        raw = badfiles.exif_rotated_jpeg(orientation)
        stored = Image.open(__import__("io").BytesIO(raw))
        assert stored.getexif().get(0x0112) == orientation
        img = load_image(raw)
        arr = np.asarray(img).astype(int)
        assert img.size == (96, 64), orientation
        assert arr[: 32 - 4, :, 0].mean() > 180 and arr[: 32 - 4, :, 2].mean() < 60, orientation
        assert arr[32 + 4:, :, 2].mean() > 180 and arr[32 + 4:, :, 0].mean() < 60, orientation


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):  # reading it would block forever
        load_image(fifo)
    link = tmp_path / "loop.jpg"
    link.symlink_to(link)
    with pytest.raises(ImageError):
        load_image(link)


def test_decoding_in_threads_gives_the_same_answers_and_leaves_warning_filters_alone():
    # App sessions and training data loading decode in threads; the bomb check must hold in all of them.
    def outcome(f):
        try:
            return ("ok", np.asarray(load_image(f.data)).sum())
        except ImageError as exc:
            return ("error", str(exc))

    small = [f for f in FILES if len(f.data) < 5_000_000]
    before = list(warnings.filters)
    sequential = [outcome(f) for f in small]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(outcome, small)) == sequential
    assert list(warnings.filters) == before


def test_a_classifier_predicts_every_readable_file():
    from models import untrained_classifier

    clf = untrained_classifier("torch_cnn", image_size=64)
    for f in badfiles.oks():
        pred = clf.predict(f.data)
        assert 0.0 <= pred.prob_malignant <= 1.0 and np.isfinite(pred.prob_malignant), f.name
    with pytest.raises(ImageError):
        clf.predict(badfiles.by_name("cut.jpg").data)


# ------------------------------------------------------------------ the command line

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from models.loader import save_torch_weights
    from models.registry import default_card
    from models.torch_classifier import build_for_inference

    folder = tmp_path_factory.mktemp("cli_weights")
    card = default_card("torch_cnn")
    card["epochs"] = 1
    return save_torch_weights(build_for_inference("torch_cnn"), card, folder / "torch_cnn.pt")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("badfiles")
    for f in FILES:
        (folder / f.name).write_bytes(f.data)
    return folder


def check_cli_result(f, code: int, out: str, err: str) -> None:
    assert "Traceback" not in err and "Traceback" not in out, err
    if f.expect == "error":
        assert code == 2, (code, out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert f.message in lines[0] and f.name in lines[0], lines[0]
        assert out == "", out
    else:
        assert code == 0, (code, err)
        result = json.loads(out)
        assert result["model"] == "torch_cnn" and isinstance(result["lesion_photo"], bool)
        if result["lesion_photo"]:
            assert 0.0 <= result["prob_malignant"] <= 1.0 and result["label"] in ("benign", "malignant")
        else:  # the gate may refuse an odd test picture: an answer without a verdict
            assert "prob_malignant" not in result and result["message"]


def run_cli(checkpoint: Path, image: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "models.predict", "--model", "torch_cnn", "--checkpoint",
                           str(checkpoint), str(image), "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_predict_main_on_the_whole_corpus(checkpoint, corpus_dir, capsys):
    # In-process (fast): the same main() the command runs, for every file.
    from models.predict import main

    for f in FILES:
        code = main(["--model", "torch_cnn", "--checkpoint", str(checkpoint), str(corpus_dir / f.name), "--json"])
        cap = capsys.readouterr()
        check_cli_result(f, code, cap.out, cap.err)


@pytest.mark.timeout(300)
def test_predict_command_on_representative_files(checkpoint, corpus_dir, tmp_path):
    files = [f for f in FILES if f.cli]
    assert {f.expect for f in files} == {"ok", "error"} and len(files) >= 6
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda f: run_cli(checkpoint, corpus_dir / f.name), files))
    for f, r in zip(files, results):
        check_cli_result(f, r.returncode, r.stdout, r.stderr)
    # paths that are not images at all
    for path, message in ((tmp_path / "missing.jpg", "no such file"), (tmp_path, "is a folder")):
        r = run_cli(checkpoint, path)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_predict_command_on_every_file(checkpoint, corpus_dir):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda f: run_cli(checkpoint, corpus_dir / f.name), FILES))
    for f, r in zip(FILES, results):
        check_cli_result(f, r.returncode, r.stdout, r.stderr)


def test_predict_command_with_a_damaged_checkpoint(tmp_path, corpus_dir, capsys):
    good = corpus_dir / "photo.bmp"
    bad = tmp_path / "torch_cnn.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    from models.registry import default_card, write_card

    write_card(tmp_path / "torch_cnn.json", {**default_card("torch_cnn"), "epochs": 1})
    from models.predict import main

    for ckpt, message in ((bad, "torch_cnn.pt"), (tmp_path / "nope.pt", "no such checkpoint")):
        code = main(["--model", "torch_cnn", "--checkpoint", str(ckpt), str(good), "--json"])
        cap = capsys.readouterr()
        assert code == 2 and cap.out == ""
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in cap.err, cap.err
        assert message in lines[0], lines[0]

