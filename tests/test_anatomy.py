"""The DenseNet lesson's numbers and images (models.anatomy, models.inside) and its drawings and quiz
(pages/densenet_graphs.py, pages/densenet_quiz.py), checked against the model itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import anatomy, inside, untrained_classifier
from pages import densenet_graphs, densenet_quiz
from training.synthetic import make_lesion

ROOT = Path(__file__).resolve().parent.parent


def count_edges(dot: str) -> int:
    """Arrows in DOT text."""
    return sum(1 for line in dot.splitlines() if "->" in line)
SIZE = 64  # small inputs keep DenseNet161 passes fast on CPU


@pytest.fixture(scope="module")
def clf():
    return untrained_classifier("densenet161", image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def features(clf):
    return clf.model.body.features


@pytest.fixture(scope="module")
def table(clf):
    return anatomy.dense_block_table(clf, SIZE)


@pytest.fixture(scope="module")
def view(clf):
    return inside.look_inside(clf, make_lesion("malignant", SIZE, seed=3))


# ----------------------------------------------------------------------------- configuration


def test_channels_grow_by_k_per_layer(features, clf):
    blocks = anatomy.dense_blocks(clf)
    assert [b.name for b in blocks] == ["denseblock1", "denseblock2", "denseblock3", "denseblock4"]
    for b in blocks:
        module = getattr(features, b.name)
        layers = list(module.children())
        assert b.layers == len(layers)
        k0 = layers[0].norm1.num_features
        k = layers[0].conv2.out_channels
        assert (b.channels_in, b.growth) == (k0, k)
        for l, layer in enumerate(layers):  # layer l (0-based) receives k0 + l*k channels
            assert layer.norm1.num_features == k0 + l * k == b.layer_inputs[l]
            assert layer.conv1.in_channels == k0 + l * k
        assert b.channels_out == k0 + len(layers) * k
        assert b.bottleneck == layers[0].conv1.out_channels


def test_block_output_feeds_the_next_stage(features, clf):
    blocks = anatomy.dense_blocks(clf)
    trans = anatomy.transitions(clf)
    assert [t.name for t in trans] == ["transition1", "transition2", "transition3"]
    for b, t in zip(blocks, trans):
        assert t.channels_in == b.channels_out == getattr(features, t.name).norm.num_features
    for t, nxt in zip(trans, blocks[1:]):
        assert nxt.channels_in == t.channels_out
    assert blocks[-1].channels_out == features.norm5.num_features


def test_table_parameters_sum_per_block_and_in_total(table, features, clf):
    for row in table:
        if row["kind"] in ("dense block", "transition"):
            module = getattr(features, row["stage"])
            assert row["parameters"] == sum(p.numel() for p in module.parameters())
    total = sum(p.numel() for p in clf.model.parameters())
    assert sum(r["parameters"] for r in table) == total == anatomy.count_parameters(clf)
    stages = [r["stage"] for r in table]
    assert stages[0] == "stem" and stages[-1] == "head"
    assert stages[1:-2] == ["denseblock1", "transition1", "denseblock2", "transition2", "denseblock3",
                            "transition3", "denseblock4"]


def test_table_channels_and_output_sizes_match_a_real_forward(table, features):
    for prev, row in zip(table, table[1:]):
        assert row["channels_in"] == prev["channels_out"]
    x = torch.zeros(1, 3, SIZE, SIZE)
    shapes = {}
    with torch.no_grad():
        for name, module in features.named_children():
            x = module(x)
            shapes[name] = tuple(x.shape[1:])
    for row in table:
        if row["stage"] in shapes:
            c, h, w = shapes[row["stage"]]
            assert (row["channels_out"], row["output_hw"]) == (c, (h, w)), row["stage"]
            assert row["output_size"] == f"{h}×{w}"
    assert table[-1]["channels_out"] == 2


def test_output_size_follows_input_size(clf):
    rows = {r["stage"]: r for r in anatomy.dense_block_table(clf, 2 * SIZE)}
    small = {r["stage"]: r for r in anatomy.dense_block_table(clf, SIZE)}
    for stage in ("denseblock1", "denseblock4"):
        assert rows[stage]["output_hw"][0] == 2 * small[stage]["output_hw"][0]
        assert rows[stage]["parameters"] == small[stage]["parameters"]


def test_count_macs_on_a_hand_checked_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    expected = 16 * 16 * 8 * 3 * 9 + 8 * 8 * 8 * 4 * 9 + 5 * 8
    assert anatomy.count_macs(model, 16) == expected


def test_table_macs_add_up_to_count_macs(table, clf):
    assert sum(r["macs"] for r in table) == anatomy.count_macs(clf, SIZE)


def test_probe_leaves_no_hooks(clf):
    anatomy.count_macs(clf, SIZE)
    assert all(not m._forward_hooks for m in clf.model.modules())


# ----------------------------------------------------------------------------- drawings


@pytest.mark.parametrize("layers", [1, 4, 6, 12])
def test_dense_block_dot_connects_every_layer_to_every_later_one(layers):
    dot = densenet_graphs.dense_block_dot(layers, 32, 64)
    # input + layers: L(L+1)/2 edges; every one of the L+1 nodes also feeds the concatenation
    assert count_edges(dot) == anatomy.dense_connections(layers) + layers + 1
    for l in range(1, layers + 1):
        assert f"H{l}\\n{64 + (l - 1) * 32} → 32" in dot
        for src in ["x0"] + [f"h{i}" for i in range(1, l)]:  # every earlier node feeds H_l
            assert any(line.strip().startswith(src) and f"-> h{l}" in line for line in dot.splitlines())
    assert f"{64 + layers * 32} ch" in dot
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")


def test_dot_changes_with_the_sliders():
    base = densenet_graphs.dense_block_dot(6, 48, 96)
    assert densenet_graphs.dense_block_dot(5, 48, 96) != base
    assert densenet_graphs.dense_block_dot(6, 12, 96) != base
    with pytest.raises(ValueError):
        densenet_graphs.dense_block_dot(0, 48, 96)


def test_chains_have_linear_connections():
    plain = densenet_graphs.chain_dot(6, 96, residual=False, growth=48)
    residual = densenet_graphs.chain_dot(6, 96, residual=True)
    assert count_edges(plain) == 6 + 1
    assert count_edges(residual) == 2 * 6 + 1 + 6  # chain through the (+) nodes, 6 identities
    assert residual.count("style=dashed") == 6
    assert "H2\\n48 → 48" in plain and "H2\\n96 → 96" in residual


def test_layer_inputs_formula():
    assert anatomy.dense_layer_inputs(4, 48, 96) == [96, 144, 192, 240]
    assert anatomy.dense_connections(6) == 21


# ----------------------------------------------------------------------------- inside one photo


def test_look_inside_shapes_match_the_table(view, table):
    rows = {r["stage"]: r for r in table}
    assert [b.name for b in view.blocks] == ["denseblock1", "denseblock2", "denseblock3", "denseblock4"]
    for b in view.blocks:
        r = rows[b.name]
        assert (b.channels, (b.height, b.width)) == (r["channels_out"], r["output_hw"])
        assert b.cam.shape == (b.height, b.width)
        assert b.heatmap.shape == (SIZE, SIZE) and b.overlay.shape == (SIZE, SIZE, 3)
        assert 0.0 <= b.heatmap.min() and b.heatmap.max() <= 1.0
        assert len(b.top) == 16 and b.top_means == sorted(b.top_means, reverse=True)
        assert b.grid.dtype == np.uint8 and b.grid.ndim == 3
    assert 0.0 <= view.prediction.prob_malignant <= 1.0
    assert view.trained is False


def test_feature_maps_are_the_block_outputs(clf, features):
    img = make_lesion("benign", SIZE, seed=1)
    maps = inside.look_inside(clf, img, top=4, cams=False).blocks
    x = clf._tensor(clf.prepare(img)[None])
    with torch.no_grad():
        for name, module in features.named_children():
            x = module(x)
            if name == "denseblock2":
                a = x[0].numpy()
                break
    b2 = next(b for b in maps if b.name == "denseblock2")
    expected = np.argsort(-np.maximum(a, 0).mean(axis=(1, 2)), kind="stable")[:4]
    assert b2.top == [int(i) for i in expected]
    assert b2.cam is None


def test_gradcam_per_block_matches_a_hand_computation(clf, view):
    """Grad-CAM at denseblock3: weights = mean gradient of the label's log-odds, ReLU of the weighted sum."""
    model = clf.model
    block = model.body.features.denseblock3
    x = clf._tensor(view.image[None])
    saved = {}

    def keep(module, inputs, output):
        out = output.detach().requires_grad_(True)
        saved["a"] = out
        return out

    h = block.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)[0]
            p = view.prediction.prob_malignant
            score = (logits[1] - logits[0]) * (1 if p >= clf.threshold else -1)
            (grad,) = torch.autograd.grad(score, saved["a"])
    finally:
        h.remove()
    a = saved["a"].detach()[0].numpy()
    w = grad[0].numpy().mean(axis=(1, 2))
    cam = np.maximum((w[:, None, None] * a).sum(0), 0)
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    got = next(b for b in view.blocks if b.name == "denseblock3")
    assert not got.cam_flat
    np.testing.assert_allclose(got.cam, cam, atol=1e-4)


def test_look_inside_leaves_the_classifier_as_it_was(clf):
    img = make_lesion("malignant", SIZE, seed=7)
    before = clf.explain(img)
    inside.look_inside(clf, img)
    assert all(not m._forward_hooks for m in clf.model.modules())
    assert not any(p.requires_grad for p in clf.model.parameters())
    after = clf.explain(img)
    assert after.prediction.prob_malignant == pytest.approx(before.prediction.prob_malignant, abs=1e-6)
    np.testing.assert_allclose(after.heatmap, before.heatmap, atol=1e-6)


def test_bad_input_is_an_image_error(clf):
    from models import ImageError

    with pytest.raises(ImageError):
        inside.look_inside(clf, b"this is not a photo")


def test_depth_sentence_quotes_this_photo(view):
    text = densenet_quiz.depth_sentence(view)
    a, b = view.blocks[0], view.blocks[-1]
    assert f"{a.height}×{a.width}" in text and f"{b.height}×{b.width}" in text
    assert f"{b.channels}" in text and f"{a.cam_area:.0%}" in text


def test_heat_area():
    heat = np.zeros((10, 10))
    heat[0, :5] = 1.0
    assert inside.heat_area(heat, 0.5) == pytest.approx(0.03)  # 3 of 100 pixels hold >= half
    assert inside.heat_area(np.ones((4, 4)), 0.5) == pytest.approx(0.5)
    assert inside.heat_area(np.zeros((4, 4))) == 1.0


# ----------------------------------------------------------------------------- quiz


def test_quiz_answers_come_from_the_model(clf, features, table):
    qs = {q["key"]: q for q in densenet_quiz.quiz_questions(clf, SIZE, table)}
    assert len(qs) == 4
    last = list(features.denseblock3.children())[-1]
    assert qs["last_layer_inputs"]["answer"] == last.norm1.num_features
    assert qs["transition_out"]["answer"] == features.transition2.conv.out_channels
    n1 = len(list(features.denseblock1.children()))
    assert qs["connections"]["answer"] == n1 * (n1 + 1) // 2
    with torch.no_grad():
        side = features(torch.zeros(1, 3, SIZE, SIZE)).shape[-1]
    assert qs["last_block_side"]["answer"] == side
    q = qs["last_layer_inputs"]
    assert densenet_quiz.check_answer(q, q["answer"]) and densenet_quiz.check_answer(q, float(q["answer"]))
    assert not densenet_quiz.check_answer(q, q["answer"] + 48) and not densenet_quiz.check_answer(q, None)
    assert str(q["answer"]) in q["explanation"]


# ----------------------------------------------------------------------------- comparisons


def test_compare_models_counts_the_real_architectures():
    from models.torch_classifier import build_for_inference

    rows = {r["model"]: r for r in anatomy.compare_models(["torch_cnn", "efficientnet_lite0"])}
    real = build_for_inference("torch_cnn")
    assert rows["torch_cnn"]["parameters"] == sum(p.numel() for p in real.parameters())
    assert rows["torch_cnn"]["macs"] == anatomy.count_macs(real, 128)
    from models.registry import shipped_checkpoint

    shipped = shipped_checkpoint("torch_cnn")
    if shipped.exists():  # the size on disk is the shipped file's (half precision there)
        assert rows["torch_cnn"]["size_bytes"] == shipped.stat().st_size
    else:  # else the float32 state dict's
        assert rows["torch_cnn"]["size_bytes"] > 4 * rows["torch_cnn"]["parameters"] * 0.99
    assert rows["efficientnet_lite0"]["parameters"] < rows["torch_cnn"]["parameters"] * 4


def test_reference_counts_agree_with_torchvision_metadata():
    import torchvision.models as tvm

    for r in anatomy.imagenet_reference():
        meta = tvm.get_model_weights(r["network"]).IMAGENET1K_V1.meta
        assert r["parameters"] == meta["num_params"], r["network"]
        # torchvision reports GFLOPS as multiply-adds (x1e9), rounded
        assert r["macs"] / 1e9 == pytest.approx(meta["_ops"], rel=0.02), r["network"]


@pytest.mark.slow
def test_keras_row_counts_the_keras_model():
    from models.keras_model import build_keras_cnn

    row = anatomy.model_summary("keras_cnn")
    assert row["parameters"] == build_keras_cnn(128).count_params()
    assert row["macs"] > 0


def test_importing_anatomy_loads_neither_streamlit_nor_tensorflow():
    code = ("import sys, models.anatomy, models.inside; "
            "bad = [m for m in ('tensorflow', 'keras', 'streamlit') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
