"""training/metrics.py: the parts scikit-learn lacks (the threshold rule, ECE) against direct
computation, and the edge cases the card and the Evaluate page meet."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (TARGET_SENSITIVITY, binary_metrics, calibration_bins, choose_threshold, platt_gap,
                              roc_auc, roc_points)


def brute_force_threshold(y, p, target=TARGET_SENSITIVITY) -> float:
    """The rule, candidate by candidate: the highest midpoint threshold reaching the sensitivity,
    else the one with the best Youden's J."""
    s = np.unique(p)
    cands = np.clip(np.r_[(s[:-1] + s[1:]) / 2, s[0] - 1e-6] if len(s) > 1 else s, 0, 1)
    cands = np.sort(cands)[::-1]
    ms = [binary_metrics(y, p, t) for t in cands]
    ok = [t for t, m in zip(cands, ms) if m["sensitivity"] >= target]
    if ok:
        return float(ok[0])
    j = [m["sensitivity"] + m["specificity"] - 1 for m in ms]
    return float(cands[int(np.nanargmax(j))])


@pytest.mark.parametrize("seed", range(6))
def test_choose_threshold_is_the_rule(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.25 * y + rng.random(120) * 0.8, 0, 1).round(2 if seed % 2 else 6)  # ties on odd seeds
    t = choose_threshold(y, p)
    assert t == pytest.approx(brute_force_threshold(y, p), abs=1e-12)
    m = binary_metrics(y, p, t)
    assert m["sensitivity"] >= TARGET_SENSITIVITY
    assert choose_threshold(y, p, target_sensitivity=1.01) == pytest.approx(brute_force_threshold(y, p, 1.01))


def test_one_class_sets():
    p = np.array([0.2, 0.4, 0.9])
    assert np.isnan(roc_auc(np.zeros(3), p))
    assert choose_threshold(np.zeros(3, int), p) == 0.5  # no malignant image: no sensitivity to reach
    roc = roc_points(np.ones(3, int), p)
    assert roc["tpr"] == [0.0, 0.33333, 0.66667, 1.0] and roc["fpr"] == [0.0] * 4


def test_calibration_bins_and_ece_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.15, 0.85, 0.95, 0.95])
    cal = calibration_bins(y, p, bins=10)
    assert cal["count"] == [1, 2, 0, 0, 0, 0, 0, 0, 1, 2]
    assert cal["mean_prob"][1] == pytest.approx(0.15) and cal["frac_malignant"][1] == pytest.approx(0.5)
    assert cal["mean_prob"][2] is None and cal["frac_malignant"][2] is None
    gaps = [(1, 0.05), (2, abs(0.15 - 0.5)), (1, 0.15), (2, abs(0.95 - 0.5))]
    assert cal["ece"] == pytest.approx(sum(n * g for n, g in gaps) / 6)


def test_platt_gap_sees_a_shift_a_temperature_cannot_undo():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.25).astype(int)
    x = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, len(y))  # a score; each class Gaussian around +-1
    true_logit = np.log(0.25 / 0.75) + 2 * x / 1.2 ** 2  # the posterior log-odds of such a score
    calibrated = 1 / (1 + np.exp(-true_logit))
    shifted = 1 / (1 + np.exp(-(true_logit / 3 + 1.5)))  # squashed and pushed towards class 1
    good, bad = platt_gap(y, calibrated), platt_gap(y, shifted)
    assert good["ece"] < 0.05 and abs(good["ece_platt_in_sample"] - good["ece"]) < 0.03
    assert bad["ece"] > 0.2 and bad["ece_platt_in_sample"] < 0.05  # a scale and a bias bring it back
    assert bad["scale"] == pytest.approx(3, rel=0.25) and bad["bias"] < -3  # the inverse of the distortion
    assert platt_gap(np.zeros(10, int), np.full(10, 0.3)) is None  # one class: nothing to fit
