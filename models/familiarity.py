"""Does this photo look like the photos the model learned from? A familiarity score per model.

Fitted at training time on the model's own embeddings (`Classifier.embed`, the penultimate
features): a probabilistic-PCA Mahalanobis distance to the training photos. The top `dims`
principal directions are scaled by their variances and everything outside them by the mean
variance left over, so a photo that is unusual in any direction is far, and the stored
parameters stay small (DenseNet's 2,208-d features: 32 directions, ~140 kB in fp16).

The threshold is a high percentile (95th by default) of the validation photos' distances. The
score reported with every answer, `familiarity`, is the share of validation photos that lie
farther from the training photos than this one (1.0: as typical as any; 0.0: farther than every
validation photo); `familiar` is distance <= threshold.

Stored inside the model card (`card["familiarity"]`, parameters as base64 .npz), so it travels
with the card through promotion and copies; computed from the embedding of the very forward
pass that made the prediction.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

UNFAMILIAR_WARNING = ("This photo differs from the photos this model learned from; its answer is less reliable")
DEFAULT_DIMS = 32
DEFAULT_PERCENTILE = 95.0
N_QUANTILES = 101


def _ppca(train: np.ndarray, dims: int) -> dict[str, np.ndarray]:
    x = np.asarray(train, np.float64)
    mean = x.mean(0)
    xc = x - mean
    k = int(max(1, min(dims, x.shape[1] - 1, x.shape[0] - 1)))
    # Thin SVD: components are the top-k right singular vectors, eigenvalues s^2 / (n - 1).
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = s ** 2 / max(len(x) - 1, 1)
    total = float(eig.sum())
    top = eig[:k]
    rest = max(x.shape[1] - k, 1)
    resid = max((total - float(top.sum())) / rest, 1e-3 * float(top.mean()), 1e-12)
    floor = max(1e-6 * float(top.max()) if len(top) else 1e-6, 1e-12)
    return {"mean": mean, "components": vt[:k], "eigenvalues": np.maximum(top, floor), "residual_var": np.array(resid)}


def distances(params: dict[str, np.ndarray], emb: np.ndarray) -> np.ndarray:
    """PPCA Mahalanobis distance of each embedding row (sqrt of the mean squared whitened coordinate)."""
    x = np.atleast_2d(np.asarray(emb, np.float64)) - params["mean"]
    comp = np.asarray(params["components"], np.float64)
    z = x @ comp.T
    inside = (z ** 2 / params["eigenvalues"]).sum(1)
    resid = np.maximum((x ** 2).sum(1) - (z ** 2).sum(1), 0.0) / float(params["residual_var"])
    return np.sqrt((inside + resid) / x.shape[1])


def fit_familiarity(train_emb: np.ndarray, val_emb: np.ndarray, dims: int = DEFAULT_DIMS,
                    percentile: float = DEFAULT_PERCENTILE) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(parameter arrays, card summary) from the training and validation embeddings."""
    train_emb, val_emb = np.asarray(train_emb), np.asarray(val_emb)
    if len(train_emb) < 3 or len(val_emb) < 2:
        raise ValueError("familiarity needs at least 3 training and 2 validation photos")
    params = _ppca(train_emb, dims)
    d_val = distances(params, val_emb)
    threshold = float(np.percentile(d_val, percentile))
    params["threshold"] = np.array(threshold)
    params["val_quantiles"] = np.quantile(d_val, np.linspace(0, 1, N_QUANTILES))
    d_train = distances(params, train_emb)
    # Out-of-sample check of the flag rate: a threshold from one half of validation on the other half.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d_val))
    a, b = order[: len(order) // 2], order[len(order) // 2:]
    cross = [float((d_val[b] > np.percentile(d_val[a], percentile)).mean()),
             float((d_val[a] > np.percentile(d_val[b], percentile)).mean())]
    summary = {"method": "probabilistic-PCA Mahalanobis distance on the model's embeddings",
               "dims": int(len(params["eigenvalues"])), "embedding_dims": int(train_emb.shape[1]),
               "percentile": percentile, "threshold": threshold,
               "n_train": int(len(train_emb)), "n_val": int(len(val_emb)),
               "val_unfamiliar": float((d_val > threshold).mean()),
               "val_unfamiliar_cross_fitted": float(np.mean(cross)),
               "train_unfamiliar": float((d_train > threshold).mean())}
    return params, summary


def accuracy_split(familiar: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Accuracy on familiar vs unfamiliar photos (None where a side is empty)."""
    familiar, correct = np.asarray(familiar, bool), np.asarray(correct, bool)
    n_unf = int((~familiar).sum())
    return {"n": int(len(familiar)), "unfamiliar": n_unf,
            "accuracy_familiar": float(correct[familiar].mean()) if familiar.any() else None,
            "accuracy_unfamiliar": float(correct[~familiar].mean()) if n_unf else None}


# ------------------------------------------------------------------ storing in the card

def encode_params(params: dict[str, np.ndarray]) -> str:
    buf = io.BytesIO()
    arrays = {k: (np.asarray(v, np.float16) if k == "components" else np.asarray(v, np.float32))
              for k, v in params.items()}
    np.savez_compressed(buf, **arrays)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_params(text: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False) as z:
        return {k: np.asarray(z[k], np.float64) for k in z.files}


def card_entry(params: dict[str, np.ndarray], summary: dict[str, Any]) -> dict[str, Any]:
    """What goes into `card["familiarity"]`: the summary plus the encoded parameters."""
    return {**summary, "params": encode_params(params)}


@dataclass
class FamiliarityResult:
    distance: float
    familiarity: float  # share of validation photos farther away than this one
    familiar: bool

    def to_dict(self) -> dict[str, Any]:
        return {"familiarity": round(self.familiarity, 4), "familiar": self.familiar,
                "familiarity_distance": round(self.distance, 4)}


class Familiarity:
    """A fitted familiarity model (from a card's `familiarity` entry)."""

    def __init__(self, params: dict[str, np.ndarray], summary: dict[str, Any] | None = None):
        self.params = params
        self.summary = summary or {}
        self.threshold = float(params["threshold"])
        self.quantiles = np.asarray(params["val_quantiles"], np.float64)
        self.dims = int(np.asarray(params["mean"]).shape[0])

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "Familiarity | None":
        entry = card.get("familiarity") if isinstance(card, dict) else None
        if not isinstance(entry, dict) or not entry.get("params"):
            return None
        try:
            params = decode_params(entry["params"])
        except (ValueError, KeyError, OSError, EOFError):  # a damaged entry: no familiarity, never a crash
            return None
        summary = {k: v for k, v in entry.items() if k != "params"}
        return cls(params, summary)

    def score_batch(self, emb: np.ndarray) -> list[FamiliarityResult]:
        emb = np.atleast_2d(emb)
        if emb.shape[1] != self.dims:
            raise ValueError(f"familiarity was fitted on {self.dims}-d embeddings, got {emb.shape[1]}-d")
        d = distances(self.params, emb)
        # Share of validation photos farther than d, read off the stored quantiles.
        cdf = np.interp(d, self.quantiles, np.linspace(0, 1, len(self.quantiles)), left=0.0, right=1.0)
        return [FamiliarityResult(float(di), float(1.0 - c), bool(di <= self.threshold)) for di, c in zip(d, cdf)]

    def score(self, emb: np.ndarray) -> FamiliarityResult:
        return self.score_batch(emb)[0]
