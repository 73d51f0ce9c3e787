"""The "ugly duckling" view of one person's lesions: outlier scores, a 2-D map, a ranking.

Dermatologists look for the lesion that does not look like the person's other lesions.
Here "looks like" is the model's penultimate feature vector (`Classifier.embed`):

- outlier distance of a lesion: cosine distance between its embedding and the mean
  embedding of the person's *other* lesions (leave-one-out);
- outlier score: that distance z-scored over the person's lesions, per model, so scores of
  models whose feature spaces have different scales can be averaged;
- combined score: the mean of the probability of malignant and the outlier percentile
  (the z-score through the standard normal CDF), both in [0, 1].

This ranking is a teaching aid. It has not been validated on any patient data.
No Streamlit here: the Patient page calls these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

MAX_LESIONS = 20
MIN_FOR_OUTLIER = 3  # with two lesions each is exactly as far from the other: no outlier

OUTLIER_SENTENCE = (
    "Outlier score: how much further this lesion's features (the model's penultimate layer) lie from the "
    "average of this person's other lesions than is usual for this person, in standard deviations "
    "(z-score; 0 is typical, 2 or more stands out)."
)
COMBINED_SENTENCE = (
    "Combined score: the average of the probability of malignant and the outlier percentile "
    "(the outlier score turned into 0-1 by the normal curve), averaged over the chosen models."
)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def outlier_distances(embeddings: np.ndarray) -> np.ndarray:
    """Cosine distance of each row from the mean of the other rows (N,); zeros when N < 2."""
    x = l2_normalize(np.atleast_2d(embeddings))
    n = len(x)
    if n < 2:
        return np.zeros(n)
    others = (x.sum(axis=0, keepdims=True) - x) / (n - 1)
    others = l2_normalize(others)
    cos = np.sum(x * others, axis=1)
    return np.clip(1.0 - cos, 0.0, 2.0)


def zscore(values: np.ndarray) -> np.ndarray:
    """(v - mean) / std over the values; zeros when there are too few values or no spread."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < MIN_FOR_OUTLIER:
        return np.zeros(len(v))
    sd = v.std()
    if not np.isfinite(sd) or sd <= 1e-12 * max(1.0, float(np.abs(v).max())):
        return np.zeros(len(v))
    return (v - v.mean()) / sd


def outlier_scores(embeddings: np.ndarray) -> np.ndarray:
    """The z-scored outlier distance of each lesion (N,)."""
    return zscore(outlier_distances(embeddings))


def normal_cdf(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0))) if z.size else z


def combined_score(prob: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean of the probability of malignant and the outlier percentile, in [0, 1]."""
    return 0.5 * np.asarray(prob, dtype=np.float64) + 0.5 * normal_cdf(z)


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA coordinates (N, 2) of L2-normalised embeddings and the explained variance ratios (2,).

    Fewer than three lesions (or no spread) give zeros where a component does not exist. The sign
    of each component is fixed (largest loading positive) so the map does not flip between runs.
    """
    x = l2_normalize(np.atleast_2d(embeddings))
    n = len(x)
    coords = np.zeros((n, 2))
    ratio = np.zeros(2)
    if n < 2:
        return coords, ratio
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    total = float((s ** 2).sum())
    if total <= 1e-20:
        return coords, ratio
    k = min(2, len(s))
    for i in range(k):
        if s[i] ** 2 / total < 1e-12:  # numerically absent component
            break
        sign = 1.0 if vt[i][np.argmax(np.abs(vt[i]))] >= 0 else -1.0
        coords[:, i] = sign * u[:, i] * s[i]
        ratio[i] = s[i] ** 2 / total
    return coords, ratio


@dataclass
class PatientRanking:
    names: list[str]
    prob: dict[str, np.ndarray]  # model -> (N,) probability of malignant
    outlier: dict[str, np.ndarray]  # model -> (N,) z-scored outlier distance
    coords: dict[str, np.ndarray]  # model -> (N, 2) PCA map
    explained: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (2,) variance ratios
    mean_prob: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean_outlier: np.ndarray = field(default_factory=lambda: np.zeros(0))
    combined: np.ndarray = field(default_factory=lambda: np.zeros(0))
    order: list[int] = field(default_factory=list)  # indices, highest combined score first

    @property
    def outlier_defined(self) -> bool:
        return len(self.names) >= MIN_FOR_OUTLIER


def rank_lesions(names: Sequence[str], probs: Mapping[str, Sequence[float]],
                 embeddings: Mapping[str, np.ndarray]) -> PatientRanking:
    """Per-model outlier scores and maps, averaged over models into one combined ranking."""
    models = list(probs)
    if not models:
        raise ValueError("no model results to rank")
    if set(models) != set(embeddings):
        raise ValueError("probabilities and embeddings must come from the same models")
    n = len(names)
    if n == 0:
        raise ValueError("no lesions to rank")
    if n > MAX_LESIONS:
        raise ValueError(f"at most {MAX_LESIONS} lesions per person, got {n}")
    prob, outlier, coords, explained = {}, {}, {}, {}
    for m in models:
        p = np.asarray(probs[m], dtype=np.float64)
        e = np.atleast_2d(np.asarray(embeddings[m], dtype=np.float64))
        if p.shape != (n,) or len(e) != n:
            raise ValueError(f"{m}: expected {n} probabilities and {n} embeddings")
        prob[m] = p
        outlier[m] = outlier_scores(e)
        coords[m], explained[m] = pca_2d(e)
    mean_prob = np.mean([prob[m] for m in models], axis=0)
    mean_outlier = np.mean([outlier[m] for m in models], axis=0)
    combined = combined_score(mean_prob, mean_outlier)
    order = sorted(range(n), key=lambda i: (-combined[i], i))
    return PatientRanking(list(names), prob, outlier, coords, explained, mean_prob, mean_outlier, combined, order)
