"""The checks around an answer: the gate, familiarity, photo quality, the lesion outline and the CLI.

Real parts throughout: the shipped gate (EfficientNet-Lite0 ImageNet features) and segmenter, real
(untrained) classifiers, images generated here; the real datasets only where marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import badfiles
import numpy as np
import pytest
from PIL import Image, ImageFilter

from models.familiarity import UNFAMILIAR_WARNING, Familiarity, card_entry, fit_familiarity
from models.gate import NOT_A_LESION, load_gate
from models.quality import hints
from models.segmenter import load_segmenter
from models.trust import OFF_LESION_WARNING, Assessment, Checks, assess, on_lesion_share
from training.fit_gate import make_document, make_drawing, make_slide
from training.synthetic import make_lesion

ROOT = Path(__file__).resolve().parent.parent
HAM = ROOT.parent / "shared" / "data" / "ham10000"


@pytest.fixture(scope="module")
def checks():
    c = Checks.load()
    assert c.gate is not None and c.segmenter is not None, "models/weights/gate.* and segmenter.* are shipped"
    return c


@pytest.fixture(scope="module")
def torch_clf():
    from models.loader import untrained_classifier

    clf = untrained_classifier("torch_cnn", image_size=128)
    imgs = np.stack([make_lesion("benign" if i % 2 else "malignant", 128, i) for i in range(48)])
    _, emb = clf.logits_embed_batch(imgs)
    clf.card["familiarity"] = card_entry(*fit_familiarity(emb[:32], emb[32:]))
    return clf


def square(img: Image.Image, size: int = 224) -> np.ndarray:
    from models.preprocess import to_model_size

    return to_model_size(img.convert("RGB"), size)


def lesion_mask(img: np.ndarray) -> np.ndarray:
    """Ground truth for a synthetic lesion: the pixels well darker than the skin around it."""
    grey = img.astype(np.float32).mean(-1)
    return grey < 0.75 * np.median(grey[:8])


# ------------------------------------------------------------------ one forward pass

@pytest.mark.parametrize("name", ["torch_cnn", "keras_cnn"])
def test_prediction_heatmap_and_embedding_come_from_one_forward(name):
    from models.loader import untrained_classifier

    clf = untrained_classifier(name, image_size=64)
    imgs = np.stack([make_lesion("malignant", 64, i) for i in range(3)])
    logits, emb = clf.logits_embed_batch(imgs)
    assert np.allclose(logits, clf._logits(imgs), atol=1e-4) and np.allclose(emb, clf._embed(imgs), atol=1e-4)
    e = clf.explain(imgs[0])
    assert e.embedding.shape == emb[0].shape and np.allclose(e.embedding, emb[0], atol=1e-4)
    assert e.prediction.prob_malignant == pytest.approx(clf.predict(imgs[0]).prob_malignant, abs=1e-5)
    pred, vec = clf.predict_embed(imgs[1])
    assert np.allclose(vec, emb[1], atol=1e-4) and pred.prob_malignant == pytest.approx(
        clf.predict(imgs[1]).prob_malignant, abs=1e-5)


# ------------------------------------------------------------------ familiarity

def test_familiarity_flags_what_training_never_saw_and_survives_the_card(tmp_path):
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 300))
    train = rng.normal(size=(400, 8)) @ basis + 0.05 * rng.normal(size=(400, 300))
    val = rng.normal(size=(100, 8)) @ basis + 0.05 * rng.normal(size=(100, 300))
    params, summary = fit_familiarity(train, val, dims=16)
    assert summary["val_unfamiliar"] == pytest.approx(0.05, abs=0.011)  # the 95th percentile
    assert 0.0 <= summary["val_unfamiliar_cross_fitted"] <= 0.15
    # through JSON, as the card stores it
    card = json.loads(json.dumps({"familiarity": card_entry(params, summary)}))
    fam = Familiarity.from_card(card)
    typical = fam.score(rng.normal(size=8) @ basis)
    off_subspace = fam.score(rng.normal(size=8) @ basis + 1.0 * rng.normal(size=300))
    far = fam.score(10 * rng.normal(size=8) @ basis)
    assert typical.familiar and typical.familiarity > 0.05
    assert not off_subspace.familiar and off_subspace.familiarity == 0.0
    assert not far.familiar
    assert Familiarity.from_card({}) is None and Familiarity.from_card({"familiarity": {"params": "%%"}}) is None
    with pytest.raises(ValueError, match="300-d"):
        fam.score(np.zeros(10))


def test_fit_extras_hook_fits_on_the_backend_embeddings():
    from models.loader import untrained_classifier
    from training.familiarity import fit_extras

    clf = untrained_classifier("torch_cnn", image_size=64)

    class Backend:  # the driver's interface, answered by a real classifier
        def embed(self, images):
            return clf.logits_embed_batch(images)[1]

        def eval_logits(self, images, fp32=False):
            return clf.logits_embed_batch(images)[0]

    class Part:
        def __init__(self, seed, n):
            self.images = np.stack([make_lesion("benign" if i % 2 else "malignant", 64, seed + i) for i in range(n)])
            self.labels = np.arange(n) % 2 == 0

    class Split:
        train, val = Part(0, 40), Part(100, 20)

    out = fit_extras(Backend(), Split(), {"seed": 1}, {"threshold": 0.5, "temperature": 1.0})
    entry = out["familiarity"]
    assert entry["n_train"] == 40 and entry["n_val"] == 20 and entry["validation"]["n"] == 20
    assert 0 <= entry["validation"]["unfamiliar"] <= 20
    assert Familiarity.from_card(out) is not None


# ------------------------------------------------------------------ gate

def test_gate_refuses_generated_documents_drawings_and_slides(checks):
    for make in (make_document, make_drawing, make_slide):
        for seed in (9001, 9002):
            r = checks.gate.check(square(make(seed)))
            assert not r.lesion_photo, (make.__name__, seed, r)


def test_gate_refuses_flat_and_noise_images(checks):
    rng = np.random.default_rng(3)
    for arr in (np.full((224, 224, 3), 255, np.uint8), np.zeros((224, 224, 3), np.uint8),
                rng.integers(0, 256, (224, 224, 3)).astype(np.uint8)):
        assert not checks.gate.check(arr).lesion_photo


def test_gate_accepts_real_lesion_photos_it_was_not_fitted_on(checks):
    if not HAM.is_dir():
        pytest.skip("HAM10000 not present")
    from models.preprocess import prepare
    from training.fit_gate import dark_rim, lesion_variant

    files = sorted((HAM / "images" / "benign").glob("*.jpg"))[-40:] + sorted((HAM / "images" / "malignant").glob("*.jpg"))[-20:]
    rng = np.random.default_rng(0)
    ok = [checks.gate.check(prepare(f, 224)).lesion_photo for f in files]
    assert np.mean(ok) >= 0.95, np.mean(ok)
    # as another dermatoscope shows them: a dark rim, a bluer cast, a 765x574 frame
    varied = []
    for f in files[:20]:
        img = Image.open(f).convert("RGB")
        for kind in ("blue", "765x574"):
            varied.append(checks.gate.check(square(lesion_variant(img, kind, rng))).lesion_photo)
        varied.append(checks.gate.check(square(dark_rim(img, rng))).lesion_photo)
    assert np.mean(varied) >= 0.9, np.mean(varied)


def test_the_early_exit_passes_most_lesion_photos_and_never_changes_a_refusal(checks):
    """The shipped gate's early exit (a test on the first stages' features) passes plain lesion photos
    without the rest of the network; every other photo gets exactly the full test's verdict, so no
    photo the full test refuses gets through early."""
    from models.gate import FeatureExtractor, Gate

    gate = checks.gate
    assert gate.early is not None and gate.features.early_stage == gate.early.stage
    whole = Gate(gate.params, gate.card, gate.features, early=None)
    lesions = [np.asarray(badfiles.lesion(128, seed, kind)) for kind in ("benign", "malignant") for seed in range(8)]
    others = [square(make(seed)) for make in (make_document, make_drawing, make_slide) for seed in (9001, 9002)]
    rng = np.random.default_rng(5)
    others += [np.full((128, 128, 3), 255, np.uint8), rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)]
    images = np.stack([np.asarray(Image.fromarray(a).resize((128, 128))) for a in lesions + others])
    got, want = gate.check_batch(images), whole.check_batch(images)
    for g, w in zip(got, want):
        if g.stage == "early":
            assert g.lesion_photo
        else:
            assert g.lesion_photo == w.lesion_photo and g.stage == w.stage == "full"
            assert (g.score, g.distance) == pytest.approx((w.score, w.distance), rel=1e-6, abs=1e-9)
    early = [g.stage == "early" for g in got]
    assert sum(early[:len(lesions)]) >= 12, early  # the app's credited HAM10000 examples
    assert not any(early[len(lesions):]) and not any(g.lesion_photo for g in got[len(lesions):])
    assert [g.lesion_photo for g in gate.check_batch(images[:3])] == [gate.check(im).lesion_photo for im in images[:3]]
    # the network split in two gives the features of the whole
    np.testing.assert_allclose(gate.features(images), FeatureExtractor(gate.features.size)(images), atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------ segmenter, outline, on-lesion share

def test_segmenter_finds_a_synthetic_lesion(checks):
    dices = []
    for seed in range(4):
        img = make_lesion("benign", 128, seed)
        truth = lesion_mask(img)
        pred = checks.segmenter.mask(img)
        dices.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    assert np.mean(dices) > 0.7, dices


def test_segmenter_card_reports_a_lesion_grouped_dice():
    seg = load_segmenter()
    v = seg.card["validation"]
    assert seg.card["data"]["grouping"] == "lesion_id" and v["complete"] and v["dice_mean"] > 0.8
    assert (ROOT / "models" / "weights" / "segmenter.pt").stat().st_size < 5 * 2**20


def test_on_lesion_share():
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    heat = np.zeros((32, 32), np.float32)
    heat[10:20, 10:20] = 1.0
    assert on_lesion_share(heat, mask) == pytest.approx(1.0)
    assert on_lesion_share(1.0 - mask.astype(np.float32), mask) == pytest.approx(0.0)
    assert on_lesion_share(np.zeros((32, 32)), mask) is None
    assert on_lesion_share(heat, np.zeros_like(mask)) is None  # the segmenter found no lesion


def test_assessment_warns_when_the_evidence_is_off_the_lesion():
    a = Assessment("torch_cnn", True, on_lesion_share=0.2)
    assert OFF_LESION_WARNING in a.warnings()
    assert OFF_LESION_WARNING not in Assessment("torch_cnn", True, on_lesion_share=0.8).warnings()


# ------------------------------------------------------------------ quality

def test_quality_hints_are_specific():
    base = make_lesion("malignant", 224, 2)
    assert [h.code for h in hints(base, lesion_mask(base))] == []
    blurred = np.asarray(Image.fromarray(base).filter(ImageFilter.GaussianBlur(4)))
    assert "blurred" in [h.code for h in hints(blurred)]
    dark = (base * 0.12).astype(np.uint8)
    assert "under_exposed" in [h.code for h in hints(dark)]
    bright = np.full_like(base, 252)
    assert "over_exposed" in [h.code for h in hints(bright)]
    small = np.zeros((224, 224), bool)
    small[100:118, 100:118] = True
    assert [h.code for h in hints(base, small)] == ["lesion_too_small"]
    edge = np.zeros((224, 224), bool)
    edge[:, :70] = True
    assert [h.code for h in hints(base, edge)] == ["lesion_cut_off"]
    for h in hints(dark, small):
        assert h.message.endswith(".") and len(h.message) < 160


# ------------------------------------------------------------------ assess

def test_assess_refuses_a_document_without_a_verdict(torch_clf, checks):
    a = assess(torch_clf, Image.fromarray(square(make_document(5))), checks=checks)
    d = a.to_dict()
    assert not a.lesion_photo and a.prediction is None and a.explanation is None
    assert d["lesion_photo"] is False and "prob_malignant" not in d and d["message"] == NOT_A_LESION
    assert a.warnings() == [NOT_A_LESION]


def test_assess_answers_with_every_check(torch_clf, checks):
    img = make_lesion("malignant", 128, 7)
    # the gate is the shipped one, but this photo is synthetic: run the rest with its answer opened
    import dataclasses

    from models.gate import Gate

    open_gate = Gate(dataclasses.replace(checks.gate.params, score_threshold=0.0, distance_threshold=np.inf),
                     checks.gate.card, checks.gate.features)
    a = assess(torch_clf, img, "gradcam", checks=Checks(open_gate, checks.segmenter))
    d = a.to_dict()
    assert a.lesion_photo and 0.0 <= d["prob_malignant"] <= 1.0
    assert isinstance(d["familiar"], bool) and 0.0 <= d["familiarity"] <= 1.0
    assert d["on_lesion_share"] is None or 0.0 <= d["on_lesion_share"] <= 1.0
    assert a.lesion_mask.shape == (128, 128) and a.lesion_mask.any()
    assert a.outline_overlay(size=256).size == (256, 256)
    # a photo unlike the training photos is answered, with the warning
    odd = assess(torch_clf, np.full((128, 128, 3), (30, 160, 40), np.uint8), "gradcam",
                 checks=Checks(open_gate, checks.segmenter))
    assert odd.prediction is not None and not odd.familiarity.familiar
    assert UNFAMILIAR_WARNING in odd.warnings() and odd.to_dict()["familiar"] is False


def test_a_lesion_mask_made_once_per_photo_gives_the_same_answer(torch_clf, checks):
    """The pages outline a photo once, whatever the model: handing that mask to assess() must give
    what assess() finds itself, without running the segmenter again."""
    import dataclasses

    from models.gate import Gate

    open_gate = Gate(dataclasses.replace(checks.gate.params, score_threshold=0.0, distance_threshold=np.inf),
                     checks.gate.card, checks.gate.features)
    img = make_lesion("benign", 128, 11)
    first = assess(torch_clf, img, checks=Checks(open_gate, checks.segmenter))

    class NoSegmenter:
        def mask(self, image):
            raise AssertionError("the segmenter ran again")

    again = assess(torch_clf, img, checks=Checks(open_gate, NoSegmenter()), gate=first.gate,
                   lesion_mask=checks.segmenter.mask(img))
    assert first.lesion_mask.any() and np.array_equal(first.lesion_mask, again.lesion_mask)
    assert again.on_lesion_share == pytest.approx(first.on_lesion_share)
    assert again.quality == first.quality and again.warnings() == first.warnings()
    # a mask made at another size (a 224 px model's crop) is resized to the model's input
    half = assess(torch_clf, img, checks=Checks(open_gate, NoSegmenter()), gate=first.gate,
                  lesion_mask=np.kron(first.lesion_mask, np.ones((2, 2), bool)))
    assert np.array_equal(half.lesion_mask, first.lesion_mask)


# ------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def cli_weights(tmp_path_factory, torch_clf):
    from models.loader import save_torch_weights

    folder = tmp_path_factory.mktemp("trust_weights")
    return save_torch_weights(torch_clf.model, {**torch_clf.card, "epochs": 1}, folder / "torch_cnn.pt")


def run_cli(*args, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "models.predict", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_answers_a_folder_one_json_line_per_image(cli_weights, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(make_lesion("malignant", 160, 3)).save(photos / "a_lesion.png")
    make_document(11).save(photos / "b_document.png")
    make_drawing(12).save(photos / "c_drawing.jpg")
    (photos / "d_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not an image: skipped by extension")
    cams = tmp_path / "cams"
    cams.mkdir()
    r = run_cli("--model", "torch_cnn", "--checkpoint", cli_weights, photos, "--json", "--cam", cams)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    by_name = {Path(x["file"]).name: x for x in lines}
    assert sorted(by_name) == ["a_lesion.png", "b_document.png", "c_drawing.jpg", "d_broken.jpg"]
    for name in ("b_document.png", "c_drawing.jpg"):
        x = by_name[name]
        assert x["lesion_photo"] is False and "prob_malignant" not in x and x["message"] == NOT_A_LESION
    assert "truncated or damaged" in by_name["d_broken.jpg"]["error"]
    lesion = by_name["a_lesion.png"]
    assert "lesion_photo" in lesion
    if lesion["lesion_photo"]:  # the synthetic cartoon may or may not pass the gate; both are answers
        assert {"prob_malignant", "familiarity", "familiar", "quality", "on_lesion_share", "cam"} <= set(lesion)
        assert Path(lesion["cam"]).is_file()


def test_cli_single_document_is_an_answer_and_single_bad_file_an_error(cli_weights, tmp_path):
    doc = tmp_path / "page.png"
    make_document(21).save(doc)
    r = run_cli("--model", "torch_cnn", "--checkpoint", cli_weights, doc, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["lesion_photo"] is False and "prob_malignant" not in out and out["file"] == str(doc)
    r = run_cli("--model", "torch_cnn", "--checkpoint", cli_weights, doc)
    assert r.returncode == 0 and NOT_A_LESION in r.stdout
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    r = run_cli("--model", "torch_cnn", "--checkpoint", cli_weights, bad, "--json")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: ") and "empty" in r.stderr
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    r = run_cli("--model", "torch_cnn", "--checkpoint", cli_weights, empty, "--json")
    assert r.returncode == 2 and "is a folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ fitting CLIs on tiny data

def test_familiarity_cli_writes_the_card(tmp_path):
    from models.loader import load_classifier, save_torch_weights, untrained_classifier
    from training.familiarity import main

    data = tmp_path / "data"
    for label in ("benign", "malignant"):
        (data / label).mkdir(parents=True)
        for i in range(14):
            Image.fromarray(make_lesion(label, 64, i + (100 if label == "malignant" else 0))).save(
                data / label / f"{i}.png")
    clf = untrained_classifier("torch_cnn", image_size=64)
    ckpt = save_torch_weights(clf.model, {**clf.card, "epochs": 1}, tmp_path / "w" / "torch_cnn.pt")
    assert main(["--model", "torch_cnn", "--checkpoint", str(ckpt), "--data", str(data)]) == 0
    loaded = load_classifier("torch_cnn", ckpt)
    fam = Familiarity.from_card(loaded.card)
    assert fam is not None and loaded.card["familiarity"]["validation"]["n"] >= 4
    assert isinstance(fam.score(loaded.embed(make_lesion("benign", 64, 1))).familiar, bool)


def test_segment_cli_trains_and_writes_weights_and_card(tmp_path):
    from training.segment import main

    root = tmp_path / "ham"
    rows = ["image_id,lesion_id,label"]
    for i in range(24):
        label = "benign" if i % 2 else "malignant"
        (root / "images" / label).mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        img = make_lesion(label, 150, i)
        Image.fromarray(np.pad(img, ((0, 0), (25, 25), (0, 0)), mode="edge")).save(root / "images" / label / f"I{i}.jpg")
        Image.fromarray((np.pad(lesion_mask(img), ((0, 0), (25, 25))) * 255).astype(np.uint8)).save(
            root / "masks" / f"I{i}_segmentation.png")
        rows.append(f"I{i},L{i // 2},{label}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "seg" / "segmenter.pt"
    out.parent.mkdir()
    assert main(["--data", str(root), "--minutes", "0.05", "--out", str(out), "--batch-size", "4",
                 "--val-fraction", "0.25"]) == 0
    seg = load_segmenter(out)
    assert seg is not None and seg.card["validation"]["complete"] and seg.card["data"]["val_lesions"] >= 2
    assert seg.mask(make_lesion("benign", 128, 1)).shape == (128, 128)


def test_fit_gate_puts_clip_art_on_the_same_background_in_every_process(tmp_path):
    """A transparent negative (clip art, a stamp) is laid on a background drawn from its name: the same
    in every run, so a refit sees the same photos (Python's salted hash() drew new colours each run)."""
    art = tmp_path / "art.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(art)
    code = ("import numpy as np, pathlib; from training.fit_gate import Item\n"
            "for i in range(12):\n"
            f"    print(np.asarray(Item('negative', 'clipart', f'clipart:{{i}}.png', pathlib.Path({str(art)!r})).load())[0, 0])")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(outs) == 1, outs
    assert len(set(next(iter(outs)).splitlines())) > 1  # paper for most, a plain colour for some


def test_fit_gate_cli_on_tiny_data_reports_held_out_rates(tmp_path):
    from training.fit_gate import main

    lesions, negatives = tmp_path / "lesions", tmp_path / "negatives"
    for i in range(12):
        (lesions / "set").mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_lesion("benign" if i % 2 else "malignant", 96, i)).save(lesions / "set" / f"{i}.png")
    for kind, make in (("pages", make_document), ("doodles", make_drawing)):
        (negatives / kind).mkdir(parents=True)
        for i in range(6):
            make(i).resize((200, 200)).save(negatives / kind / f"{i}.png")
    out, cache = tmp_path / "gate.npz", tmp_path / "feats.npz"
    args = ["--lesions", str(lesions), "--negatives", str(negatives), "--generated", "4", "--no-chromium",
            "--dims", "8", "--out", str(out), "--cache", str(cache)]
    assert main(args + ["--size", "64", "--precision", "int8"]) == 0
    gate = load_gate(out)
    held = gate.card["held_out"]
    assert held["lesions_n_photo"] >= 1 and held["negatives_n_photo"] >= 1
    assert 0.0 <= held["negatives_photo_refused"] <= 1.0
    assert gate.card["image_size"] == 64 and gate.features.size == 64  # the loaded gate works at its card's size
    # int8 features come from a graph saved beside the gate and named (with its hash) on the card
    assert gate.card["precision"] == "int8" and gate.features.precision == "int8"
    graph = out.with_suffix(".onnx")
    entry = gate.card["feature_graph"]
    assert entry["file"] == graph.name and graph.stat().st_size == entry["bytes"]
    photo = make_lesion("benign", 224, 50)
    assert isinstance(gate.check(photo).lesion_photo, bool)
    # a damaged or replaced graph is not used: the fp32 network answers instead, with a warning in the log
    graph.write_bytes(graph.read_bytes()[:-10])
    fallback = load_gate(out)
    assert fallback.features.precision == "fp32"
    assert isinstance(fallback.check(photo).lesion_photo, bool)
    # features cached at 64 px are not taken for another size, int8 features not for fp32
    assert main(args + ["--size", "96", "--precision", "int8"]) == 2
    assert main(args + ["--size", "64"]) == 2
    fp32_out = tmp_path / "gate32.npz"
    cache32 = ["--cache", str(tmp_path / "feats32.npz")]
    assert main(args[:-4] + ["--out", str(fp32_out), "--size", "64"] + cache32) == 0  # fp32 by default, as shipped
    gate32 = load_gate(fp32_out)
    assert gate32.card["precision"] == "fp32" and "feature_graph" not in gate32.card
    assert gate32.features.precision == "fp32" and not fp32_out.with_suffix(".onnx").exists()
    # fp32 fits an early exit by default (stage 8), saved with the gate and measured on its held-out part
    entry = gate32.card["early_exit"]
    assert gate32.early is not None and gate32.early.stage == entry["stage"] == 8 == gate32.features.early_stage
    assert entry["held_out"]["negatives_n"] >= 1 and 0 <= entry["held_out"]["lesion_photos_passed_early"] <= 1
    assert gate32.early.logit_threshold == pytest.approx(entry["logit_threshold"], rel=1e-5)
    assert isinstance(gate32.check(photo).lesion_photo, bool)
    # the cache has no stage-4 features; an int8 graph runs whole
    assert main(args[:-4] + ["--out", str(fp32_out), "--size", "64", "--early-stage", "4"] + cache32) == 2
    assert main(args[:-4] + ["--out", str(fp32_out), "--size", "64", "--early-stage", "17"]) == 2
    assert main(args[:-4] + ["--out", str(tmp_path / "q.npz"), "--size", "64", "--precision", "int8",
                             "--early-stage", "8"]) == 2
    assert main(args[:-4] + ["--out", str(tmp_path / "none.npz"), "--size", "64", "--early-stage", "0",
                             "--cache", str(tmp_path / "f0.npz")]) == 0
    assert load_gate(tmp_path / "none.npz").early is None and "early_exit" not in load_gate(tmp_path / "none.npz").card
    # --full-from keeps that gate's full test exactly and fits only the early exit
    kept_out = tmp_path / "kept.npz"
    assert main(args[:-4] + ["--out", str(kept_out), "--size", "64", "--full-from", str(tmp_path / "none.npz")]
                + cache32) == 0
    kept = load_gate(kept_out)
    assert kept.early is not None and kept.card["full_test_from"]["file"] == str(tmp_path / "none.npz")
    for name, value in vars(load_gate(tmp_path / "none.npz").params).items():
        np.testing.assert_array_equal(getattr(kept.params, name), value)
    assert main(args[:-4] + ["--out", str(kept_out), "--size", "64", "--full-from", str(tmp_path / "nope.npz")]
                + cache32) == 2
