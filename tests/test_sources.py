"""Several sources as one training set, the camera-breaking augmentations, and the checks of
issue 13, on small generated data (no ../shared needed)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocess import model_input, shades_of_gray
from training import checks, sources
from training.augment import AUGMENT_DEFAULTS, STEPS, augment, parse_augment
from training.data import grouped_split, load_dataset, load_split, train_batch


def _photo(rng, size=(60, 48), dark=False):
    arr = (rng.random((size[1], size[0], 3)) * 120 + (20 if dark else 120)).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.fixture()
def two_sources(tmp_path, monkeypatch):
    """A: a Kaggle-like folder (no metadata). B: a HAM-like folder with metadata.csv naming lesions,
    diagnoses and which of A's files are the same photo, and masks."""
    rng = np.random.default_rng(0)
    a, b = tmp_path / "kaggle" / "train", tmp_path / "ham"
    rows = []
    for label in ("benign", "malignant"):
        (a / label).mkdir(parents=True)
        (b / "images" / label).mkdir(parents=True)
        for i in range(6):
            _photo(rng).save(a / label / f"{i}.jpg")
        for i in range(8):  # 4 lesions of 2 photos each per class
            image_id = f"ISIC_{label[0]}{i}"
            _photo(rng).save(b / "images" / label / f"{image_id}.jpg")
            same = f"{label}/{i}.jpg" if i < 3 else ""  # B's first 3 photos are A's 0-2
            rows.append({"image_id": image_id, "lesion_id": f"HAM_{label[0]}{i // 2}", "label": label,
                         "dx": "nv" if label == "benign" else "mel", "dx_type": "histo",
                         "kaggle_train_file": same})
    (b / "masks").mkdir()
    for r in rows:
        m = np.zeros((48, 60), np.uint8)
        m[12:36, 15:45] = 255
        Image.fromarray(m).save(b / "masks" / f"{r['image_id']}_segmentation.png")
    with open(b / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ex = tmp_path / "examples.csv"
    ex.write_text("file,image_id,lesion_id\nISIC_b7.jpg,ISIC_b7,HAM_b3\n")
    monkeypatch.setattr(sources, "EXAMPLES_CSV", ex)
    return a, b


def test_a_photo_two_sources_share_is_used_once_with_its_lesion_and_dx(two_sources):
    a, b = two_sources
    ds = load_dataset([a, b], 32, exclude_examples=True)
    # A: 12 photos, 6 of them B's copies -> 6 left; B: 16, minus the example lesion (2 photos).
    assert ds.dropped["kaggle"]["cross_source_duplicates"] == 6
    assert ds.dropped["ham"]["example_photos"] == 2
    assert len(ds.labels) == 6 + 14
    assert ds.source_counts() == {"kaggle": {"benign": 3, "malignant": 3}, "ham": {"benign": 6, "malignant": 8}}
    assert ds.dx_counts() == {"mel": 8, "nv": 6, "unknown": 6}
    assert all(p.endswith(".jpg") for p in ds.paths)
    # Evaluation of one folder keeps every file.
    assert len(load_dataset(a, 32, dedupe=False).labels) == 12


def test_each_folder_as_it_is_on_disk_counts_the_copies_it_shares(two_sources):
    """The Kaggle-like folder's view holds its own photos and the HAM copies of its files (a stand-in
    for a test split made the way that folder was); checks.per_folder measures each view."""
    a, b = two_sources
    ds = load_dataset([a, b], 32, exclude_examples=True)
    copies = [i for i, x in enumerate(ds.also_in) if x]
    assert len(copies) == 6 and all(ds.sources[i] == "ham" and ds.also_in[i] == "kaggle" for i in copies)
    assert {ds.image_ids[i] for i in copies} == {f"ISIC_{c}{i}" for c in "bm" for i in range(3)}
    assert ds.held_by("kaggle").sum() == 6 + 6 and ds.held_by("ham").sum() == 14
    sub = ds.subset(np.arange(len(ds.labels))[::-1])
    assert sub.also_in == ds.also_in[::-1] and (sub.held_by("kaggle") == ds.held_by("kaggle")[::-1]).all()
    y = ds.labels
    p = np.where(ds.held_by("kaggle"), y * 0.8 + 0.1, 0.5)  # right on the Kaggle folder, no idea elsewhere
    folders = checks.per_folder(y, p, 0.5, ds)
    assert folders["kaggle"]["n"] == 12 and folders["kaggle"]["auc"] == 1.0
    assert folders["ham"]["n"] == 14 and 0.5 < folders["ham"]["auc"] < 1.0  # its Kaggle copies are right


def test_validation_never_holds_a_lesion_that_training_saw(two_sources):
    a, b = two_sources
    for seed in range(5):
        split = load_split([a, b], 32, val_fraction=0.3, seed=seed)
        assert not set(split.train.groups) & set(split.val.groups)
        assert set(split.val.labels) == {0, 1}
    info = split.info()
    assert [s["name"] for s in info["sources"]] == ["kaggle", "ham"]
    assert sum(sum(s["counts"]["train"].values()) + sum(s["counts"]["val"].values()) for s in info["sources"]) == 20
    assert info["dx"]["train"] and "lesion" in info["grouping"]
    json.dumps(info)  # goes into the card


def test_grouped_split_is_stratified_split_when_every_group_is_one_image():
    labels = np.array([0] * 30 + [1] * 20)
    from training.data import stratified_split

    g = [str(i) for i in range(50)]
    assert all((x == y).all() for x, y in zip(grouped_split(labels, g, 0.2, 3), stratified_split(labels, 0.2, 3)))


def test_masks_are_found_beside_the_images_folder(two_sources):
    _, b = two_sources
    assert sources.mask_path(b / "images", "ISIC_b0") == b / "masks" / "ISIC_b0_segmentation.png"
    assert sources.mask_path(b / "images", "nope") is None and sources.mask_path(b / "images", "") is None


# ------------------------------------------------------------------ augmentation

def _batch(n=8, size=48):
    rng = np.random.default_rng(1)
    return torch.from_numpy((rng.random((n, 3, size, size)) * 255).astype(np.float32))


@pytest.mark.parametrize("name", [n for n, _ in STEPS])
def test_each_augmentation_changes_pixels_alone_keeps_range_and_is_seeded(name):
    x = _batch()
    only = {k: (1.0 if k == name else 0.0) for k in AUGMENT_DEFAULTS}
    y1 = augment(x, torch.Generator().manual_seed(5), only)
    y2 = augment(x, torch.Generator().manual_seed(5), only)
    assert y1.shape == x.shape and y1.min() >= 0 and y1.max() <= 255
    assert torch.equal(y1, y2)
    assert (y1 - x).abs().mean() > 1.0


def test_the_dark_rim_darkens_corners_not_the_centre():
    x = torch.full((4, 3, 64, 64), 180.0)
    only = {k: (1.0 if k == "rim" else 0.0) for k in AUGMENT_DEFAULTS}
    y = augment(x, torch.Generator().manual_seed(0), only)
    assert (y[:, :, :4, :4].mean() < 120) and abs(float(y[:, :, 28:36, 28:36].mean()) - 180) < 5


def test_all_off_changes_nothing_and_bad_settings_are_refused():
    x = _batch()
    assert torch.equal(augment(x, torch.Generator(), parse_augment("none")), x)
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_augment("rimm=0")
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_augment("rim=2")


def test_shades_of_gray_removes_a_colour_cast_on_numpy_and_torch():
    rng = np.random.default_rng(0)
    img = (rng.random((1, 32, 32, 3)) * 100 + 80).astype(np.float32)
    cast = img * np.array([0.8, 1.0, 1.3], np.float32)
    a, b = shades_of_gray(img, channels_last=True), shades_of_gray(cast, channels_last=True)
    # The same photo up to overall brightness (the cast's mean gain), which the method keeps.
    assert np.abs(a / a.mean() - b / b.mean()).max() < 1e-4
    assert np.abs(img / img.mean() - cast / cast.mean()).mean() > 0.1
    t = shades_of_gray(torch.from_numpy(cast).permute(0, 3, 1, 2))
    assert np.allclose(t.permute(0, 2, 3, 1).numpy(), b, atol=1e-3)


def test_training_and_inference_prepare_pixels_with_one_function():
    cfg = {"model": "torch_cnn", "colour_constancy": "shades_of_gray", "augment": parse_augment("none")}
    imgs = (np.random.default_rng(2).random((3, 40, 40, 3)) * 255).astype(np.uint8)
    card = {"mean": [0.5] * 3, "std": [0.5] * 3,
            "preprocessing": {"colour_constancy": "shades_of_gray", "colour_constancy_p": 6.0}}
    x = train_batch(imgs, torch.Generator().manual_seed(0), cfg)
    ref = model_input(torch.from_numpy(imgs).permute(0, 3, 1, 2), card)
    assert torch.allclose(x, ref, atol=1e-5)


# ------------------------------------------------------------------ checks

def test_perturbations_do_what_they_say():
    imgs = np.full((2, 64, 64, 3), 170, np.uint8)
    rim = checks.dark_rim(imgs)
    assert rim[:, 0, 0].max() < 30 and (rim[:, 32, 32] == 170).all()
    blue = checks.blue_cast(imgs)
    assert blue[0, 0, 0, 2] > blue[0, 0, 0, 0]
    chart = checks.colour_chart(imgs)
    assert (chart[:, 32, 32] == 170).all() and len(np.unique(chart[0, 48:, 48:].reshape(-1, 3), axis=0)) > 6


class _RimDetector:
    """A stand-in whose answer is the darkness of the corners: the camera shortcut itself."""

    name, image_size, threshold = "rim", 64, 0.5

    def predict_batch(self, images):
        corners = images[:, :6, :6].mean(axis=(1, 2, 3))
        return (corners < 60).astype(float) * 0.9 + 0.05


def test_the_probe_catches_a_model_that_learned_the_rim():
    imgs = np.full((10, 64, 64, 3), 170, np.uint8)
    r = checks.shortcut_probe(_RimDetector(), imgs, 0.5)
    assert r["dark_rim"]["flipped"] == 1.0 and r["dark_rim"]["mean_change"] > 0.8
    assert r["blue_cast"]["flipped"] == 0.0 and r["colour_chart"]["flipped"] == 0.0


class _RimDetectorWithEmbeddings(_RimDetector):
    """The same stand-in with embeddings (corner and centre brightness per channel) and logits."""

    temperature = 1.0

    def logits_embed_batch(self, images):
        p = self.predict_batch(images)
        emb = np.concatenate([images[:, :6, :6].mean(axis=(1, 2)), images[:, 24:40, 24:40].mean(axis=(1, 2))], 1)
        return np.stack([np.zeros_like(p), np.log(p / (1 - p))], 1), emb.astype(np.float32)


def test_the_probe_says_whether_the_familiarity_warning_lands_on_the_flipped_photos():
    from models.familiarity import Familiarity, fit_familiarity

    rng = np.random.default_rng(0)
    imgs = np.clip(rng.normal(170, 12, (60, 1, 1, 3)) + np.zeros((1, 64, 64, 3)), 0, 255).astype(np.uint8)
    clf = _RimDetectorWithEmbeddings()
    _, emb = clf.logits_embed_batch(imgs)
    fam = Familiarity(*fit_familiarity(emb[:40], emb[40:], dims=3))
    r = checks.shortcut_probe(clf, imgs, 0.5, fam)
    clean, rim = r["clean_familiarity"], r["dark_rim"]["familiarity"]
    assert clean["n"] == 60 and clean["unfamiliar"] <= 6 and clean["accuracy_familiar"] == 1.0
    # every rim photo is called malignant (wrong) and lies far from the photos it was fitted on
    assert rim["unfamiliar"] == 60 and rim["accuracy_unfamiliar"] == 0.0 and rim["accuracy_familiar"] is None
    assert "dark_rim" in checks.familiarity_line({"shortcut_probe": r, "familiarity": {}})


def test_heatmap_on_lesion_scores_a_real_model_against_the_lesion_share():
    from models.loader import untrained_classifier

    clf = untrained_classifier("torch_cnn", image_size=64)
    rng = np.random.default_rng(0)
    imgs = (rng.random((4, 64, 64, 3)) * 255).astype(np.uint8)
    masks = [np.zeros((64, 64), bool) for _ in imgs]
    for m in masks:
        m[16:48, 16:48] = True
    r = checks.heatmap_on_lesion(clf, imgs, masks)
    assert r["n"] + r["flat_maps"] == 4 and r["lesion_share_of_frame"] == pytest.approx(0.25)
    assert 0.0 <= r["peak_on_lesion"] <= 1.0 and 0.0 <= r["mass_on_lesion"] <= 1.0


class _TopLeftTexture:
    """A stand-in whose log-odds for 'malignant' are the fine texture of the photo's top-left quadrant."""

    temperature = 1.0

    def logits_embed_batch(self, images):
        q = images[:, :32, :32].astype(float).mean(-1)
        energy = np.abs(np.diff(q, axis=2)).mean(axis=(1, 2)) / 10
        return np.stack([np.zeros_like(energy), energy], 1), np.zeros((len(images), 2), np.float32)


def test_the_deletion_check_tells_a_map_on_the_evidence_from_one_beside_it():
    rng = np.random.default_rng(0)
    imgs = (rng.random((6, 64, 64, 3)) * 255).astype(np.uint8)
    on, off = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    on[:32, :32], off[32:, 32:] = 1.0, 1.0
    signs = np.ones(len(imgs))
    right = checks.deletion_drop(_TopLeftTexture(), imgs, [on] * 6, signs)
    wrong = checks.deletion_drop(_TopLeftTexture(), imgs, [off] * 6, signs)
    base = _TopLeftTexture().logits_embed_batch(imgs)[0][:, 1].mean()
    assert right["heatmap"] > 0.8 * base  # blurring the evidence away removes nearly all of it
    assert wrong["heatmap"] == pytest.approx(0.0, abs=1e-9)
    assert 0.3 < right["random"] == wrong["random"] < right["heatmap"]  # same seed, same blobs
    # the label's sign: for a 'benign' answer the same blur raises the log-odds of malignant, i.e. a drop
    assert checks.deletion_drop(_TopLeftTexture(), imgs, [on] * 6, -signs)["heatmap"] < -0.8 * base


def test_patches_paint_solid_cells_off_the_centre_and_are_off_by_default():
    assert AUGMENT_DEFAULTS["patches"] == 0.0  # a run turns them on; older runs' settings stay as they were
    x = torch.full((16, 3, 64, 64), 128.0)
    only = {k: (1.0 if k == "patches" else 0.0) for k in AUGMENT_DEFAULTS}
    y = augment(x, torch.Generator().manual_seed(3), only)
    changed = (y != x).any(dim=1)  # (n, h, w)
    assert changed.flatten(1).any(dim=1).all()  # every image got a block
    assert not changed[:, 24:40, 24:40].any()  # never over the centre
    share = changed.flatten(1).float().mean(dim=1)
    assert float(share.min()) > 0.005 and float(share.max()) < 0.15
    # solid cells: few distinct colours per image, each a flat patch of pixels
    for img, m in zip(y, changed):
        colours = {tuple(c) for c in img.permute(1, 2, 0)[m].round().int().tolist()}
        assert 1 <= len(colours) <= 18
