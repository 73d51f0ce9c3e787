"""The patient ("ugly duckling") logic: outlier scores, PCA map, combined ranking."""

from __future__ import annotations

import numpy as np
import pytest

from models import patient


def _cluster(n, dim=16, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim)
    return centre + spread * rng.normal(size=(n, dim))


def test_the_odd_lesion_gets_the_highest_outlier_score():
    emb = _cluster(6)
    rng = np.random.default_rng(1)
    emb = np.vstack([emb[:3], rng.normal(size=(1, 16)) * 3, emb[3:]])  # index 3 is the duckling
    z = patient.outlier_scores(emb)
    assert int(np.argmax(z)) == 3
    assert z[3] > 1.5
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9


def test_outlier_distance_is_cosine_from_the_others_mean():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    d = patient.outlier_distances(emb)
    # lesion 2 is orthogonal to the others' mean (1, 0): distance 1
    assert d[2] == pytest.approx(1.0)
    # lesion 0 vs mean of [1,0] and [0,1] -> direction (1,1)/sqrt2: cos = 1/sqrt2
    assert d[0] == pytest.approx(1 - 1 / np.sqrt(2))
    # scale does not matter (cosine)
    assert np.allclose(patient.outlier_distances(emb * [[5.0], [0.1], [7.0]]), d)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_lesions_give_no_outlier(n):
    z = patient.outlier_scores(_cluster(n) if n else np.zeros((0, 16)))
    assert z.shape == (n,) and not z.any()


def test_identical_lesions_have_no_outlier():
    emb = np.ones((5, 8))
    assert not patient.outlier_scores(emb).any()


def test_pca_separates_the_outlier_and_is_stable():
    emb = np.vstack([_cluster(7, seed=2), _cluster(1, seed=9) + 4])
    coords, ratio = patient.pca_2d(emb)
    assert coords.shape == (8, 2)
    assert ratio[0] >= ratio[1] >= 0 and ratio.sum() <= 1 + 1e-9
    dist = np.linalg.norm(coords - np.median(coords, axis=0), axis=1)
    assert int(np.argmax(dist)) == 7
    again, _ = patient.pca_2d(emb[::-1].copy())
    # the same points in another order land on the same place (sign fixed)
    assert np.allclose(again[::-1], coords, atol=1e-9)


@pytest.mark.parametrize("n", [1, 2])
def test_pca_small(n):
    coords, ratio = patient.pca_2d(_cluster(n))
    assert coords.shape == (n, 2)
    if n == 2:
        assert ratio[0] == pytest.approx(1.0) and abs(coords[0, 0]) > 0 and not coords[:, 1].any()


def test_combined_score_bounds_and_order():
    p = np.array([0.0, 1.0, 0.5, 0.5])
    z = np.array([0.0, 0.0, -3.0, 3.0])
    c = patient.combined_score(p, z)
    assert ((c >= 0) & (c <= 1)).all()
    assert c[0] == pytest.approx(0.25) and c[1] == pytest.approx(0.75)
    assert c[3] > c[2]


def test_rank_lesions_combines_models():
    names = [f"lesion{i}.png" for i in range(6)]
    emb_a = np.vstack([_cluster(5, seed=3), np.full((1, 16), 5.0)])
    emb_b = np.vstack([_cluster(5, dim=32, seed=4), -np.ones((1, 32)) * 3])
    probs = {"a": [0.1, 0.2, 0.1, 0.2, 0.1, 0.3], "b": [0.2, 0.1, 0.2, 0.1, 0.2, 0.4]}
    r = patient.rank_lesions(names, probs, {"a": emb_a, "b": emb_b})
    assert r.order[0] == 5
    assert sorted(r.order) == list(range(6))
    assert r.mean_prob[5] == pytest.approx(0.35)
    assert set(r.coords) == {"a", "b"} and r.coords["b"].shape == (6, 2)
    assert np.allclose(r.mean_outlier, (r.outlier["a"] + r.outlier["b"]) / 2)
    assert r.outlier_defined


def test_rank_lesions_rejects_bad_input():
    emb = {"a": _cluster(3)}
    with pytest.raises(ValueError):
        patient.rank_lesions(["x", "y", "z"], {"a": [0.1, 0.2]}, emb)
    with pytest.raises(ValueError):
        patient.rank_lesions(["x", "y", "z"], {"a": [0.1, 0.2, 0.3]}, {"b": _cluster(3)})
    with pytest.raises(ValueError):
        patient.rank_lesions([str(i) for i in range(21)], {"a": [0.1] * 21}, {"a": _cluster(21)})
    with pytest.raises(ValueError):
        patient.rank_lesions([], {}, {})


def test_no_streamlit_in_models_patient():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(patient.__file__).read_text())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "streamlit" not in imported
