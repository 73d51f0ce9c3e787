"""Regression: no shipped model may have learned the dermatoscope's dark rim as a sign of malignancy.

On each shipped model's own benign validation photos (the card's sources, seed and fraction), a dark
round rim is added (`training.checks.dark_rim`); the test fails when more than 10 % of the labels flip.
A model whose card predates the camera-breaking pipeline (no `preprocessing` in its card), or whose
card's own recorded check (`checks`) already says it flips more, is expected to fail it: strict xfail,
so a retrained model that passes turns the marker into a failure that must be looked at.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.registry import MODEL_NAMES, read_card, shipped_checkpoint, card_path
from training.checks import FLIP_LIMIT, shortcut_probe
from training.sources import locate

pytestmark = pytest.mark.slow
LIMIT = 150  # benign photos per model: the rate to within about +-4 points at 10 %


def _card(name):
    path = card_path(shipped_checkpoint(name))
    if not path.is_file():
        pytest.fail(f"{name}: no shipped card at {path}")
    return read_card(path)


def _params():
    out = []
    for name in MODEL_NAMES:
        card = _card(name) if card_path(shipped_checkpoint(name)).is_file() else {}
        recorded = ((card.get("checks") or {}).get("shortcut_probe") or {}).get("dark_rim", {}).get("flipped")
        if not card.get("preprocessing"):
            why = "was trained before the camera-breaking pipeline (issue 13) and is known to have learned the rim"
        elif recorded is not None and recorded > FLIP_LIMIT:
            why = f"its card's own check measured {recorded:.1%} flipped (python -m training.checks): retrain it"
        else:
            why = None
        marks = [pytest.mark.xfail(strict=True, reason=f"{name} {why}")] if why else []
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.mark.parametrize("name", _params())
def test_a_dark_rim_flips_at_most_ten_percent_of_benign_validation_labels(name):
    from models.loader import load_classifier
    from training.data import load_split

    card = _card(name)
    info = card.get("data") or {}
    roots = [locate(s["root"]) for s in info.get("sources", [])] or [locate(info.get("root") or "-")]
    if not all(r.is_dir() for r in roots):
        pytest.skip(f"{name}'s training data is not here ({roots})")
    clf = load_classifier(name)
    split = load_split(roots, clf.image_size, float(info.get("val_fraction", 0.15)), int(info.get("split_seed", 42)))
    benign = np.flatnonzero(split.val.labels == 0)
    benign = np.sort(np.random.default_rng(0).choice(benign, min(LIMIT, len(benign)), replace=False))
    r = shortcut_probe(clf, split.val.images[benign], clf.threshold)
    assert r["dark_rim"]["flipped"] <= FLIP_LIMIT, (
        f"{name}: a dark rim flips {r['dark_rim']['flipped']:.1%} of {r['n']} benign validation labels "
        f"(mean change of P(malignant) {r['dark_rim']['mean_change']:+.3f})")
