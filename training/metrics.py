"""Binary classification metrics, threshold choice and temperature calibration.

Probabilities are of the positive class, malignant. A prediction is malignant when
p >= threshold.
"""

from __future__ import annotations

import numpy as np

TARGET_SENSITIVITY = 0.90
THRESHOLD_RULE = ("the highest threshold whose validation sensitivity is at least 0.90 "
                  "(most specificity at that sensitivity); if none reaches it, the threshold maximising "
                  "Youden's J")


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p) >= threshold).astype(int)
    return {"tp": int(((pred == 1) & (y == 1)).sum()), "fn": int(((pred == 0) & (y == 1)).sum()),
            "tn": int(((pred == 0) & (y == 0)).sum()), "fp": int(((pred == 1) & (y == 0)).sum())}


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half; NaN when one class is absent."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """ROC curve as {fpr, tpr, thresholds}, thresholds descending (first is +inf -> 1.01)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]
    tps = np.cumsum(ys)[distinct]
    fps = (distinct + 1) - tps
    P, N = max(int(ys.sum()), 1), max(int(len(ys) - ys.sum()), 1)
    tpr = np.r_[0.0, tps / P]
    fpr = np.r_[0.0, fps / N]
    thr = np.r_[1.01, ps[distinct]]
    if len(thr) > max_points:  # keep the curve's shape, thin the points
        keep = np.unique(np.r_[0, np.linspace(0, len(thr) - 1, max_points).round().astype(int), len(thr) - 1])
        tpr, fpr, thr = tpr[keep], fpr[keep], thr[keep]
    return {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist(), "thresholds": thr.round(6).tolist()}


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    c = confusion(y, p, threshold)
    n = len(y)
    sens = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
    spec = c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else float("nan")
    return {"n": int(n), "accuracy": (c["tp"] + c["tn"]) / n if n else float("nan"),
            "auc": roc_auc(y, p), "sensitivity": sens, "specificity": spec,
            "threshold": float(threshold), "confusion": c}


def choose_threshold(y: np.ndarray, p: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> float:
    """See THRESHOLD_RULE. Thresholds are midpoints between distinct scores, so they generalise."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    scores = np.unique(p)
    cands = np.r_[(scores[:-1] + scores[1:]) / 2, scores[0] - 1e-6] if len(scores) > 1 else scores
    cands = np.clip(cands, 0.0, 1.0)
    best_ok, best_j, best_j_thr = None, -np.inf, 0.5
    for t in np.sort(cands)[::-1]:
        m = binary_metrics(y, p, t)
        if m["sensitivity"] >= target_sensitivity and best_ok is None:
            best_ok = float(t)
        j = m["sensitivity"] + m["specificity"] - 1
        if j > best_j:
            best_j, best_j_thr = j, float(t)
    return best_ok if best_ok is not None else best_j_thr


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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
    """Reliability diagram data (equal-width bins) and the expected calibration error."""
    y = np.asarray(y).astype(float)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    conf, acc, count = [], [], []
    ece = 0.0
    for b in range(bins):
        m = idx == b
        count.append(int(m.sum()))
        if m.any():
            conf.append(float(p[m].mean()))
            acc.append(float(y[m].mean()))
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
        else:
            conf.append(None)
            acc.append(None)
    return {"edges": edges.round(3).tolist(), "mean_prob": conf, "frac_malignant": acc, "count": count,
            "ece": float(ece)}


def summarize(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Everything the card and the Evaluate page show, in one JSON-able dict."""
    m = binary_metrics(y, p, threshold)
    cal = calibration_bins(y, p)
    m["ece"] = cal["ece"]
    m["roc"] = roc_points(y, p)
    m["calibration"] = cal
    return m
