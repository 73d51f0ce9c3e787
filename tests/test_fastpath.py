"""The check networks on ONNX Runtime (models.fastpath): the same answers as PyTorch, and PyTorch
whenever ONNX Runtime cannot be trusted or is not there.

Real parts: the shipped gate and segmenter, real ONNX Runtime sessions, images generated here."""

from __future__ import annotations

import os
import threading

import badfiles
import numpy as np
import pytest
import torch
from torch import nn

from models import fastpath
from models.fastpath import FastRunner, example_input
from models.gate import FeatureExtractor
from models.trust import Checks
from training.fit_gate import make_document, make_drawing
from training.synthetic import make_lesion


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test its own graph cache: a graph cached by another test must not hide what this one checks."""
    monkeypatch.setenv(fastpath.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def checks():
    c = Checks.load()
    assert c.gate is not None and c.segmenter is not None, "models/weights/gate.* and segmenter.* are shipped"
    return c


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, 1, 1, groups=8),
                         nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def square(img) -> np.ndarray:
    from models.preprocess import to_model_size

    return to_model_size(img.convert("RGB"), 224)


def test_runner_matches_pytorch_on_onnxruntime_with_a_free_batch_axis():
    net = small_net()
    run = FastRunner(net, example_input(3, 32))
    assert run.build() == "onnxruntime", run.reason  # onnxruntime and onnx are in requirements.txt
    x = example_input(3, 32, seed=7).repeat(5, 1, 1, 1) * torch.linspace(0.2, 1, 5).view(5, 1, 1, 1)
    with torch.inference_mode():
        want = net(x).numpy()
    got = run(x)
    assert got.shape == want.shape == (5, 4)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(run(x.numpy()), want, atol=1e-5, rtol=1e-4)  # numpy in, too


def test_environment_variable_keeps_pytorch(monkeypatch):
    monkeypatch.setenv(fastpath.ENV, "0")
    net = small_net()
    run = FastRunner(net, example_input(3, 32))
    assert run.build() == "torch" and fastpath.ENV in run.reason
    x = example_input(3, 32, seed=3)
    with torch.inference_mode():
        np.testing.assert_array_equal(run(x), net(x).numpy())


def test_a_graph_that_disagrees_with_pytorch_is_not_used(monkeypatch):
    """The exported graph is checked against PyTorch before it is used: export another network (a real
    ONNX Runtime session, wrong weights) and the runner must stay on PyTorch, with the right answers."""
    real_export = fastpath._export
    monkeypatch.setattr(fastpath, "_export", lambda module, example: real_export(small_net(seed=1), example))
    net = small_net(seed=0)
    run = FastRunner(net, example_input(3, 32))
    assert run.build() == "torch" and "differs" in run.reason
    x = example_input(3, 32, seed=5)
    with torch.inference_mode():
        np.testing.assert_array_equal(run(x), net(x).numpy())


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_without_onnxruntime_or_onnx_the_runner_stays_on_pytorch(monkeypatch, missing):
    """Either package missing (a slim install): the import fails, the networks run on PyTorch."""
    import sys

    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    net = small_net()
    run = FastRunner(net, example_input(3, 32))
    assert run.build() == "torch" and "Error" in run.reason
    x = example_input(3, 32, seed=4)
    with torch.inference_mode():
        np.testing.assert_array_equal(run(x), net(x).numpy())


def test_the_exported_graph_is_cached_and_a_bad_cache_is_replaced(monkeypatch, own_cache):
    net = small_net()
    x = example_input(3, 32, seed=6)
    with torch.inference_mode():
        want = net(x).numpy()
    assert FastRunner(net, example_input(3, 32)).build() == "onnxruntime"
    (cached,) = own_cache.glob("*.onnx")
    good = cached.read_bytes()

    def no_export(module, example):
        raise RuntimeError("exported again")

    # a restarted server: the graph comes from the cache, without exporting (or importing onnx)
    with monkeypatch.context() as m:
        m.setattr(fastpath, "_export", no_export)
        again = FastRunner(net, example_input(3, 32))
        assert again.build() == "onnxruntime", again.reason
        np.testing.assert_allclose(again(x), want, atol=1e-5, rtol=1e-4)

    # a damaged file, another network's graph under this name, and one whose output has another shape (a
    # forward changed outside the hashed source): each exported afresh and replaced
    other = fastpath._export(small_net(seed=1), example_input(3, 32))
    wider = fastpath._export(nn.Sequential(small_net(seed=1), nn.Linear(4, 6)).eval(), example_input(3, 32))
    for bad in (b"not an onnx graph", other, wider):
        cached.write_bytes(bad)
        run = FastRunner(net, example_input(3, 32))
        assert run.build() == "onnxruntime", run.reason
        np.testing.assert_allclose(run(x), want, atol=1e-5, rtol=1e-4)
        assert cached.read_bytes() == good

    # changed weights are another graph, under another name
    with torch.no_grad():
        net[0].weight.mul_(0.5)
    assert FastRunner(net, example_input(3, 32)).build() == "onnxruntime"
    assert len(list(own_cache.glob("*.onnx"))) == 2


def test_the_cache_keeps_the_most_recently_used_graphs_of_each_network(own_cache):
    """Graphs of replaced weights do not pile up: KEEP per network class, the most recently used (a
    graph read from the cache counts as used); another class's graphs and other files are left alone."""
    x = example_input(3, 32)
    first = FastRunner(small_net(seed=0), x)
    assert first.build() == "onnxruntime"
    (kept,) = own_cache.glob("*.onnx")
    os.utime(kept, (1, 1))  # the oldest on disk ...
    assert FastRunner(small_net(seed=0), x).build() == "onnxruntime"  # ... until read again: now the newest
    bystanders = [own_cache / "LesionUNet-0123456789abcdef01234567.onnx", own_cache / "notes.txt"]
    for path in bystanders:
        path.write_bytes(b"x")
        os.utime(path, (2, 2))
    for seed in range(1, fastpath.KEEP + 2):  # newer weights of the same network, one after another
        assert FastRunner(small_net(seed=seed), x).build() == "onnxruntime"
        made = own_cache / (fastpath.graph_key(small_net(seed=seed), x) + ".onnx")
        os.utime(made, (100 + seed, 100 + seed))  # in the order they came, all before the reused one
    names = {p.name for p in own_cache.glob("Sequential-*.onnx")}
    assert len(names) == fastpath.KEEP and kept.name in names
    assert names - {kept.name} == {fastpath.graph_key(small_net(seed=s), x) + ".onnx"
                                   for s in range(fastpath.KEEP - 1, fastpath.KEEP + 2)}
    assert all(p.exists() for p in bystanders)


def test_an_unwritable_cache_is_no_error(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(fastpath.CACHE_ENV, str(blocker))
    run = FastRunner(small_net(), example_input(3, 32))
    assert run.build() == "onnxruntime", run.reason


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_an_int8_graph_runs_close_to_the_fp32_network_and_a_wrong_one_is_not_used():
    """quantize_int8 on a real export, calibrated on inputs of the network's range: ONNX Runtime runs it,
    near the fp32 answers; a graph whose output has another shape is refused for PyTorch's."""
    net = small_net()
    calib = [example_input(3, 32, seed=s).numpy() for s in range(20)]
    graph = fastpath.quantize_int8(fastpath.export(net, example_input(3, 32)), calib)
    run = FastRunner(net, example_input(3, 32), graph=graph)
    assert run.build() == "onnxruntime", run.reason
    x = torch.cat([example_input(3, 32, seed=s) for s in range(100, 108)])
    with torch.inference_mode():
        want = net(x).numpy()
    got = run(x)
    assert got.shape == want.shape and not np.array_equal(got, want)  # int8: close, not equal
    assert cosine(got, want).min() > 0.95
    other = nn.Sequential(*list(small_net())[:-3], nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    wrong = fastpath.export(other, example_input(3, 32))
    run = FastRunner(net, example_input(3, 32), graph=wrong)
    assert run.build() == "torch" and "shape" in run.reason
    with torch.inference_mode():
        np.testing.assert_array_equal(run(x), want)


def test_shipped_gate_features_and_verdicts_agree_on_both_backends(checks):
    """The shipped gate on ONNX Runtime (an int8 graph where its card names one) and its fp32 network on
    PyTorch (the fallback without ONNX Runtime): nearly the same features, the same verdicts."""
    images = np.stack([np.asarray(badfiles.lesion(224, 0)), np.asarray(badfiles.lesion(224, 1, "benign")),
                       make_lesion("malignant", 224, 2),
                       square(make_document(3)), square(make_drawing(4))])
    fast = checks.gate.features
    assert fast.run.build() == "onnxruntime", fast.run.reason
    assert fast.precision == checks.gate.card.get("precision", "fp32")
    slow = FeatureExtractor(fast.size, onnx=False)
    assert slow.precision == "fp32"
    f_fast, f_slow = fast(images), slow(images)
    if fast.precision == "int8":
        assert cosine(f_fast, f_slow).min() > 0.9
    else:
        np.testing.assert_allclose(f_fast, f_slow, atol=1e-4, rtol=1e-3)
    one_by_one = np.concatenate([fast(images[i:i + 1]) for i in range(len(images))])
    np.testing.assert_allclose(one_by_one, f_fast, atol=1e-5, rtol=1e-4)
    verdicts = [r.lesion_photo for r in checks.gate.check_features(f_fast)]
    assert verdicts == [r.lesion_photo for r in checks.gate.check_features(f_slow)]
    assert verdicts[:2] == [True, True] and verdicts[3:] == [False, False]


def test_shipped_segmenter_masks_agree_on_both_backends(checks):
    seg = checks.segmenter
    assert seg.run.build() == "onnxruntime", seg.run.reason
    slow = FastRunner(seg.model, example_input(3, seg.size), onnx=False)
    for i in range(3):
        img = make_lesion("malignant" if i % 2 else "benign", 224, 20 + i)
        from models.segmenter import resize_square, to_input

        x = to_input(resize_square(img, seg.size)[None])
        np.testing.assert_allclose(seg.run(x), slow(x), atol=1e-4)
        assert seg.mask(img).any()


def test_photo_checks_side_by_side_equal_one_after_the_other(checks):
    """Checks.photo runs the gate and the segmenter on two threads: same verdict and mask as running
    them in turn, also when several sessions ask at once."""
    photos = [make_lesion("benign", 128, 31), make_lesion("malignant", 128, 32), square(make_document(5))]
    want = [(checks.gate.check(p), checks.segmenter.mask(p)) for p in photos]
    got: dict[int, list] = {}

    def worker(k):
        got[k] = [checks.photo(p) for p in photos for _ in range(3)][::3]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        for (g, m), (wg, wm) in zip(got[k], want):
            assert g.lesion_photo == wg.lesion_photo and g.score == pytest.approx(wg.score, abs=1e-5)
            assert np.array_equal(m, wm)
    real = np.asarray(badfiles.lesion(128, seed=1, kind="benign"))  # a credited HAM10000 example: a lesion photo
    verdict, mask = checks.photo(real, outline_image=make_lesion("benign", 224, 31))
    assert verdict.lesion_photo and mask.shape == (checks.segmenter.size,) * 2
    assert Checks(checks.gate, None).photo(photos[0])[1] is None
    assert Checks(None, checks.segmenter).photo(photos[0])[0] is None
