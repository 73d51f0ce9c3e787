"""Binary classification metrics, threshold choice and temperature calibration (and how much a bias would add).

Probabilities are of the positive class, malignant. A prediction is malignant when
p >= threshold.
"""

from __future__ import annotations

import numpy as np

from models.classifier import softmax_np as softmax  # noqa: F401  one softmax; the driver and cards import it here

TARGET_SENSITIVITY = 0.90
THRESHOLD_RULE = ("the highest threshold whose validation sensitivity is at least 0.90 "
                  "(most specificity at that sensitivity); if none reaches it, the threshold maximising "
                  "Youden's J")


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    from sklearn.metrics import confusion_matrix

    pred = (np.asarray(p) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(np.asarray(y).astype(int), pred, labels=[0, 1]).ravel()
    return {"tp": int(tp), "fn": int(fn), "tn": int(tn), "fp": int(fp)}


def _both_classes(y: np.ndarray) -> bool:
    return bool((y == 1).any() and (y == 0).any())


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (ties count half); NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    return float(roc_auc_score(y, np.asarray(p, dtype=np.float64))) if _both_classes(y) else float("nan")


def _roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tpr, fpr) at every distinct score, thresholds descending, from one sort
    (sklearn's roc_curve, no point dropped). The rate of a class that is absent is NaN."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if _both_classes(y):
        fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
        return thr[1:], tpr[1:], fpr[1:]  # its first point (+inf: nothing called malignant) is the origin
    thr = np.unique(p)[::-1]
    rate = np.searchsorted(np.sort(p), thr)  # images below each threshold
    rate = (len(p) - rate) / max(len(p), 1)  # the share called malignant
    nan = np.full(len(thr), np.nan)
    return (thr, rate, nan) if (y == 1).any() else (thr, nan, rate)


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """ROC curve as {fpr, tpr, thresholds}, thresholds descending (first is +inf -> 1.01)."""
    thr, tpr, fpr = _roc(y, p)
    tpr = np.r_[0.0, np.nan_to_num(tpr, nan=0.0)]
    fpr = np.r_[0.0, np.nan_to_num(fpr, nan=0.0)]
    thr = np.r_[1.01, thr]
    if len(thr) > max_points:  # keep the curve's shape, thin the points
        keep = np.unique(np.r_[0, np.linspace(0, len(thr) - 1, max_points).round().astype(int), len(thr) - 1])
        tpr, fpr, thr = tpr[keep], fpr[keep], thr[keep]
    return {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist(), "thresholds": thr.round(6).tolist()}


def operating_point(validation: dict | None, threshold: float) -> tuple[float, float] | None:
    """(sensitivity, specificity) on validation when malignant means p >= threshold, read off a
    model card's ROC (`roc_points`). The ROC lists (fpr, tpr) at descending thresholds; the point that
    applies to `threshold` is the one with the smallest listed threshold still >= it. None without an ROC."""
    roc = (validation or {}).get("roc")
    try:
        thr = np.asarray(roc["thresholds"], dtype=np.float64)
        tpr = np.asarray(roc["tpr"], dtype=np.float64)
        fpr = np.asarray(roc["fpr"], dtype=np.float64)
    except (TypeError, KeyError, ValueError):
        return None
    if not (len(thr) == len(tpr) == len(fpr)) or len(thr) == 0:
        return None
    above = np.flatnonzero(thr >= threshold)
    if len(above) == 0:  # stricter than any listed point: nothing is called malignant
        return 0.0, 1.0
    i = above[np.argmin(thr[above])]
    return float(tpr[i]), float(1.0 - fpr[i])


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    c = confusion(y, p, threshold)
    n = len(y)
    sens = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
    spec = c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else float("nan")
    return {"n": int(n), "accuracy": (c["tp"] + c["tn"]) / n if n else float("nan"),
            "auc": roc_auc(y, p), "sensitivity": sens, "specificity": spec,
            "threshold": float(threshold), "confusion": c}


def choose_threshold(y: np.ndarray, p: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> float:
    """See THRESHOLD_RULE. Thresholds are midpoints between distinct scores, so they generalise;
    every candidate's sensitivity and specificity come from one ROC pass (one sort)."""
    thr, sens, fpr = _roc(y, p)
    if len(thr) == 0:
        return 0.5
    # Calling p >= s_k malignant is calling p >= the midpoint down to the next distinct score.
    cands = np.r_[(thr[:-1] + thr[1:]) / 2, thr[-1] - 1e-6] if len(thr) > 1 else thr
    cands = np.clip(cands, 0.0, 1.0)
    ok = np.flatnonzero(sens >= target_sensitivity)  # NaN (no malignant image) is never ok
    if len(ok):
        return float(cands[ok[0]])
    j = np.nan_to_num(sens - fpr, nan=-np.inf)  # Youden's J = sensitivity + specificity - 1
    return float(cands[int(np.argmax(j))]) if np.isfinite(j).any() else 0.5


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the validation negative log-likelihood of softmax(logits / T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).astype(int)

    def nll(log_t):
        p = softmax(logits, np.exp(log_t))[np.arange(len(y)), y]
        return -np.log(np.clip(p, 1e-12, 1)).mean()

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Reliability diagram data (sklearn's calibration_curve, equal-width bins), with the images per
    bin and the expected calibration error (the mean gap weighted by them), which sklearn lacks."""
    from sklearn.calibration import calibration_curve

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    count = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)  # calibration_curve's binning
    frac, mean = calibration_curve(y, p, n_bins=bins, strategy="uniform") if len(y) else ([], [])
    conf: list[float | None] = [None] * bins
    acc: list[float | None] = [None] * bins
    for b, f, m in zip(np.flatnonzero(count), frac, mean):
        conf[b], acc[b] = float(m), float(f)
    ece = sum(n / len(y) * abs(conf[b] - acc[b]) for b, n in enumerate(count) if n)
    return {"edges": edges.round(3).tolist(), "mean_prob": conf, "frac_malignant": acc,
            "count": [int(n) for n in count], "ece": float(ece)}


def platt_gap(y: np.ndarray, p: np.ndarray) -> dict | None:
    """How much better calibrated these answers would be with a log-odds scale and bias on top (Platt
    scaling: P = sigmoid(scale * logit(p) + bias), fitted by scikit-learn's logistic regression on the same
    answers). A temperature alone is the scale without the bias, so it cannot undo a shift of every answer
    towards one class (as class-weighted training gives). Fitted and scored in-sample: an optimistic
    bound of what the card's calibration could give. None without both classes."""
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    if not _both_classes(y):
        return None
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    z = logit(p).reshape(-1, 1)
    fit = LogisticRegression(C=1e6).fit(z, y)
    refit = fit.predict_proba(z)[:, 1]
    return {"n": int(len(y)), "ece": calibration_bins(y, p)["ece"],
            "ece_platt_in_sample": calibration_bins(y, refit)["ece"], "scale": float(fit.coef_[0, 0]),
            "bias": float(fit.intercept_[0])}


def summarize(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Everything the card and the Evaluate page show, in one JSON-able dict."""
    m = binary_metrics(y, p, threshold)
    cal = calibration_bins(y, p)
    m["ece"] = cal["ece"]
    m["roc"] = roc_points(y, p)
    m["calibration"] = cal
    return m
