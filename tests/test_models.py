"""The models package: every architecture and CAM method, checkpoints, preprocessing, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from models import load_classifier, untrained_classifier
from models.architectures import build_torch, densenet161, efficientnet_lite0
from models.classifier import normalize_cam
from models.loader import MissingWeights, save_torch_weights
from models.preprocess import load_image, normalize, prepare
from models.registry import TORCH_CAM_METHODS, default_card, spec
from models.torch_classifier import TorchClassifier, build_for_inference
from training.synthetic import make_lesion

TORCH_MODELS = ["torch_cnn", "densenet161", "efficientnet_lite0"]


@pytest.fixture(scope="module")
def tiny_classifiers():
    """Untrained classifiers at 64 px: fast, and the CAM code paths are the same."""
    torch.manual_seed(0)
    return {n: TorchClassifier(build_for_inference(n), default_card(n, image_size=64)) for n in TORCH_MODELS}


@pytest.mark.parametrize("method", TORCH_CAM_METHODS)
@pytest.mark.parametrize("name", TORCH_MODELS)
def test_every_model_and_cam_method(tiny_classifiers, name, method):
    clf = tiny_classifiers[name]
    img = make_lesion("malignant", 80, seed=1)
    expl = clf.explain(img, method)
    assert expl.heatmap.shape == (64, 64)
    assert expl.heatmap.dtype == np.float32
    assert np.isfinite(expl.heatmap).all()
    assert expl.heatmap.min() >= 0.0 and expl.heatmap.max() <= 1.0
    if not expl.flat:
        assert expl.heatmap.max() == pytest.approx(1.0, abs=1e-5)
    # predict and explain report the same probability (one shared forward)
    assert expl.prediction.prob_malignant == pytest.approx(clf.predict(img).prob_malignant, abs=1e-5)
    overlay = expl.overlay()
    assert overlay.size == (64, 64) and overlay.mode == "RGB"


def test_explain_leaves_no_hooks_and_no_grad(tiny_classifiers):
    clf = tiny_classifiers["torch_cnn"]
    clf.explain(make_lesion("benign", 64, 2), "gradcam")
    assert not clf.model.body._forward_hooks
    assert all(not p.requires_grad and p.grad is None for p in clf.model.parameters())


def test_flat_map_is_reported_not_drawn():
    heat, flat = normalize_cam(np.zeros((7, 7)))
    assert flat and heat.max() == 0.0
    heat, flat = normalize_cam(np.full((7, 7), 3.0))
    assert flat
    heat, flat = normalize_cam(np.arange(49.0).reshape(7, 7))
    assert not flat and heat.max() == 1.0 and heat.min() == 0.0


def test_a_dead_network_gives_a_flat_map():
    """Zero weights in the head: the CAM has no gradient signal and must say so."""
    model = build_for_inference("torch_cnn")
    torch.nn.init.zeros_(model.head.weight)
    clf = TorchClassifier(model, default_card("torch_cnn", image_size=64))
    expl = clf.explain(make_lesion("malignant", 64, 3), "gradcam")
    assert expl.flat and expl.heatmap.max() == 0.0
    before = np.asarray(expl.image, dtype=np.int32)
    after = np.asarray(expl.overlay(), dtype=np.int32)
    assert (before == after).all()  # a flat map paints nothing


def test_embed_is_the_penultimate_vector(tiny_classifiers):
    clf = tiny_classifiers["efficientnet_lite0"]
    img = make_lesion("benign", 64, 4)
    vec = clf.embed(img)
    assert vec.shape == (1280,)
    logits = clf.model.head(torch.from_numpy(vec)[None]).detach().numpy()[0]
    assert np.allclose(logits, clf.predict(img).logits, atol=1e-4)


@pytest.mark.parametrize("half", [False, True])
def test_torch_checkpoint_round_trip(tmp_path, half):
    torch.manual_seed(1)
    model = build_for_inference("torch_cnn")
    card = default_card("torch_cnn", image_size=64)
    card.update(epochs=3, threshold=0.3, temperature=1.7)
    save_torch_weights(model, card, tmp_path / "torch_cnn.pt", half=half)
    clf = load_classifier("torch_cnn", tmp_path / "torch_cnn.pt")
    assert clf.threshold == 0.3 and clf.temperature == 1.7
    img = make_lesion("malignant", 64, 5)
    ref = TorchClassifier(model, card).predict(img)
    got = clf.predict(img)
    assert got.prob_malignant == pytest.approx(ref.prob_malignant, abs=2e-3 if half else 1e-6)
    assert next(clf.model.parameters()).dtype == torch.float32  # half on disk, float32 in memory


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "torch_cnn.pt"
    torch.save({"model": Evil()}, path)
    (tmp_path / "torch_cnn.json").write_text('{"name": "torch_cnn", "epochs": 1}')
    with pytest.raises(Exception) as info:
        load_classifier("torch_cnn", path)
    assert "weights_only" in str(info.value) or "Unsupported" in str(info.value) or "global" in str(info.value)


def test_missing_weights_say_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeights, match="python -m training --model densenet161"):
        load_classifier("densenet161")


def test_card_for_another_model_is_refused(tmp_path):
    save_torch_weights(build_for_inference("torch_cnn"), default_card("torch_cnn") | {"epochs": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="for 'torch_cnn'"):
        load_classifier("efficientnet_lite0", tmp_path / "x.pt")


def test_preprocessing_is_identical_in_training_and_inference(tmp_path):
    """The dataset loader and the classifier produce the same pixels and the same tensor."""
    from PIL import Image

    from training.data import load_dataset

    for cls in ("benign", "malignant"):
        (tmp_path / cls).mkdir()
    big = make_lesion("malignant", 300, 6)[:, 20:]  # non-square: exercises the centre crop
    Image.fromarray(big).save(tmp_path / "malignant" / "a.jpg", quality=92)
    Image.fromarray(make_lesion("benign", 64, 7)).save(tmp_path / "benign" / "b.png")
    ds = load_dataset(tmp_path, 96)
    idx = ds.paths.index(str(tmp_path / "malignant" / "a.jpg"))
    clf = TorchClassifier(build_for_inference("torch_cnn"), default_card("torch_cnn", image_size=96))
    served = clf.prepare((tmp_path / "malignant" / "a.jpg").read_bytes())
    assert np.array_equal(ds.images[idx], served)
    s = spec("torch_cnn")
    t_train = normalize(torch.from_numpy(ds.images[idx:idx + 1]).permute(0, 3, 1, 2), s.mean, s.std)
    assert torch.equal(t_train, clf._tensor(served[None]))


def test_efficientnet_uses_its_tensorflow_normalisation():
    card = default_card("efficientnet_lite0")
    assert card["mean"] == [0.5, 0.5, 0.5] and card["std"] == [0.5, 0.5, 0.5]
    x = normalize(np.array([[[[0, 255]]]], dtype=np.uint8).repeat(3, axis=1), card["mean"], card["std"])
    assert x.min() == -1.0 and x.max() == 1.0


def test_efficientnet_gets_real_imagenet_weights_offline():
    model, init = efficientnet_lite0("imagenet")
    assert init == "imagenet"
    scratch, init2 = efficientnet_lite0(None)
    assert init2 == "scratch"
    a = model.body.net._conv_stem.weight
    assert not torch.equal(a, scratch.body.net._conv_stem.weight)
    assert a.abs().mean() > 0.01


def _tv_densenet_state(seed=0):
    from torchvision.models import densenet161 as tv

    torch.manual_seed(seed)
    return tv(weights=None).state_dict()


def test_densenet_imagenet_weights_from_a_file(tmp_path):
    state = _tv_densenet_state()
    path = tmp_path / "densenet161.pth"
    torch.save(state, path)
    model, init = densenet161(path)
    assert init == "imagenet"
    assert torch.equal(model.body.features.conv0.weight, state["features.conv0.weight"])


def test_densenet_legacy_key_names_load(tmp_path):
    state = _tv_densenet_state(1)
    legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in state.items()}
    torch.save(legacy, tmp_path / "old.pth")
    model, init = densenet161(tmp_path / "old.pth")
    assert init == "imagenet"
    assert torch.equal(model.body.features.denseblock1.denselayer1.norm1.weight,
                       state["features.denseblock1.denselayer1.norm1.weight"])


def test_densenet_refuses_a_wrong_state_dict(tmp_path):
    torch.save(build_for_inference("torch_cnn").state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not a DenseNet161 state dict"):
        densenet161(tmp_path / "wrong.pth")


def test_densenet_imagenet_from_the_torchvision_cache(tmp_path, monkeypatch):
    """The online path: torchvision finds the file in its download cache and loads it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = _tv_densenet_state(2)
    torch.save(state, cache / "densenet161-8d451a50.pth")
    model, init = densenet161("imagenet")
    assert init == "imagenet"
    assert torch.equal(model.body.features.conv0.weight, state["features.conv0.weight"])


def test_densenet_offline_falls_back_to_scratch_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: the download fails at once
    import urllib.request

    try:
        with caplog.at_level("WARNING"):
            model, init = densenet161("imagenet")
    finally:
        # urllib builds its global opener (with the proxy settings of that moment) on first use;
        # drop it so the dead proxy does not outlive this test.
        urllib.request.install_opener(None)
    assert init == "scratch"
    assert "falling back to random initialisation" in caplog.text


def test_cpu_and_gpu_share_one_cam_definition():
    """DenseNet's CAM layer is a non-inplace ReLU at the end of the body, on every device."""
    model, _ = build_torch("densenet161", None)
    last = list(model.body.children())[-1]
    assert isinstance(last, torch.nn.ReLU) and not last.inplace


def test_eight_threads_give_the_same_results_as_one(tiny_classifiers):
    clf = tiny_classifiers["torch_cnn"]
    images = [make_lesion("malignant" if i % 2 else "benign", 64, 100 + i) for i in range(8)]
    methods = ["gradcam", "gradcam++", "eigencam", "layercam"]
    expected = [(clf.predict(im).prob_malignant, clf.explain(im, methods[i % 4]).heatmap)
                for i, im in enumerate(images)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        for _ in range(3):
            p = clf.predict(images[i]).prob_malignant
            h = clf.explain(images[i], methods[i % 4]).heatmap
        results[i] = (p, h)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (p0, h0), (p1, h1) in zip(expected, results):
        assert p1 == pytest.approx(p0, abs=1e-6)
        assert np.allclose(h0, h1, atol=1e-5)


def test_tta_spread_and_mean(tiny_classifiers):
    clf = tiny_classifiers["torch_cnn"]
    pred, probs = clf.predict_tta(make_lesion("malignant", 64, 9))
    assert probs.shape == (8,)
    assert pred.prob_malignant == pytest.approx(float(probs.mean()))


def test_untrained_classifier_is_marked_untrained():
    clf = untrained_classifier("torch_cnn", image_size=32)
    assert not clf.trained and clf.card["init"] == "random"


def test_prepare_handles_real_world_modes():
    rgba = np.zeros((40, 50, 4), np.uint8)
    from PIL import Image

    img = load_image(Image.fromarray(rgba, "RGBA"))
    assert img.mode == "RGB"
    assert prepare(Image.fromarray(rgba[..., 0], "L"), 32).shape == (32, 32, 3)


def test_keras_first_then_torch_ops_in_one_process_does_not_crash():
    """A user who picks the Keras model first, then a torch model, must not crash the server."""
    import subprocess
    import sys

    code = ("from models import untrained_classifier\n"
            "untrained_classifier('keras_cnn', image_size=32)\n"
            "import torchvision.ops, torch._dynamo\n"
            "from training.data import augment\n"
            "import torch; augment(torch.zeros(1, 3, 32, 32))\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parent.parent))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def _flipping_threshold(p: float, card_threshold: float) -> float:
    """A threshold at which the label of probability `p` is the other one than at `card_threshold`."""
    return (p + 1.0) / 2 if p >= card_threshold else p / 2


def test_explain_at_another_threshold_explains_the_label_at_that_threshold(tiny_classifiers):
    """The heatmap explains the label that is shown: at a threshold where the label flips, the map is
    the other answer's evidence, the same map a model whose card carries that threshold draws."""
    clf = tiny_classifiers["torch_cnn"]
    img = make_lesion("benign", 64, seed=1)
    at_card = clf.explain(img, "gradcam")
    t = _flipping_threshold(at_card.prediction.prob_malignant, clf.threshold)
    moved = clf.explain(img, "gradcam", threshold=t)
    assert moved.prediction.label != at_card.prediction.label and moved.prediction.threshold == t
    reference = TorchClassifier(clf.model, {**clf.card, "threshold": t}).explain(img, "gradcam")
    assert reference.prediction.label == moved.prediction.label
    assert not at_card.flat and not moved.flat
    np.testing.assert_allclose(moved.heatmap, reference.heatmap, atol=1e-5)
    assert np.abs(moved.heatmap - at_card.heatmap).max() > 0.1  # the other answer's evidence


def test_predict_threshold_cam_draws_the_heatmap_of_the_printed_label(tmp_path, capsys):
    import json

    from PIL import Image

    from models.predict import main

    torch.manual_seed(3)
    model = build_for_inference("torch_cnn")
    card = default_card("torch_cnn", image_size=64)
    card.update(epochs=1, threshold=0.5)
    save_torch_weights(model, card, tmp_path / "torch_cnn.pt")
    photo = tmp_path / "mole.png"
    Image.fromarray(make_lesion("malignant", 64, seed=7)).save(photo)
    clf = load_classifier("torch_cnn", tmp_path / "torch_cnn.pt")
    t = _flipping_threshold(clf.predict(photo).prob_malignant, clf.threshold)
    out = tmp_path / "cam.png"
    extra = ["--no-checks"] if "--no-checks" in main.__globals__["get_args_parser"]().format_help() else []
    assert main(["--model", "torch_cnn", "--checkpoint", str(tmp_path / "torch_cnn.pt"), str(photo),
                 "--threshold", str(t), "--cam", str(out), "--json", *extra]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    reference = TorchClassifier(clf.model, {**clf.card, "threshold": t}).explain(photo)  # the default method
    assert answer["label"] == reference.prediction.label != clf.predict(photo).label
    assert not reference.flat and not clf.explain(photo).flat
    drawn = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    assert np.abs(drawn - np.asarray(reference.overlay(), dtype=np.int16)).max() <= 1


@pytest.mark.parametrize("name", ["efficientnet_lite0", "densenet161"])
def test_layercam_reads_the_stride_16_layer_and_matches_stock_layercam(name):
    """The two ImageNet networks end at stride 32 (a 4x4 grid at 128 px); Layer-CAM reads their last
    stride-16 layer instead, through the same one-forward hooks, and draws what pytorch-grad-cam's own
    LayerCAM (gradients through the whole network) draws on that layer."""
    import copy

    import pytorch_grad_cam as pgc

    torch.manual_seed(0)
    model, _ = build_torch(name, None)
    clf = TorchClassifier(model, default_card(name, image_size=64))
    assert clf.default_cam == "layercam" and model.cam_layer("layercam") is model.fine_layer
    assert model.cam_layer("gradcam") is model.body
    img = make_lesion("malignant", 64, 5)
    seen = []
    hook = model.fine_layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    try:
        expl = clf.explain(img)
    finally:
        hook.remove()
    assert expl.method == "layercam" and seen == [(4, 4)]  # 64 px / 16
    assert not model.fine_layer._forward_hooks and not model.body._forward_hooks
    stock_model = copy.deepcopy(model).eval().requires_grad_(True)
    sign = 1.0 if expl.prediction.label == "malignant" else -1.0
    stock = pgc.LayerCAM(model=stock_model, target_layers=[stock_model.fine_layer])
    heat = stock(input_tensor=clf._tensor(img[None]), targets=[lambda out: sign * (out[1] - out[0])])[0]
    assert not expl.flat
    np.testing.assert_allclose(expl.heatmap, heat / heat.max(), atol=1e-4)


@pytest.mark.parametrize("name", ["torch_cnn", "efficientnet_lite0", "densenet161"])
def test_the_cam_layer_choice_leaves_the_state_dict_alone(name, tmp_path):
    """Naming the Layer-CAM layer adds no key to the checkpoint: shipped weights still load strictly."""
    model, _ = build_torch(name, None)
    assert not [k for k in model.state_dict() if k.startswith("fine_layer")]
    assert model.fine_layer is model.get_submodule(model.fine_layer_name)
