"""Latency of one explained prediction, per model, at 224 px and batch 1 on this machine.

Columns, measured interleaved in the same run (in a new random order each repeat) so load on the
machine and the previous call's leftovers hit all alike:
  forward  - a plain inference forward pass (the floor)
  ours     - Classifier.explain: prediction + the model's default heatmap (Layer-CAM for the PyTorch
             models, Grad-CAM for Keras) from one shared forward
  naive    - a separate forward for the prediction, then a fresh stock pytorch-grad-cam object of the
             same method on the same layer, with gradients through the whole network (what a tutorial does)
  checked  - models.trust.assess: the gate, predict + explain, familiarity, quality, lesion outline and
             on-lesion share, i.e. everything a page shows (budget: <= 1.3x ours). The shipped gate
             runs with its thresholds opened, so every check runs whatever it thinks of the photo.
             These run on the app's 16 credited HAM10000 example photos in turn (real lesion photos: the
             gate's early exit passes most lesion photos after half its network; the classifier's own
             cost does not depend on the photo).
  no early exit - the same without the gate's early exit: what a photo pays that does not pass it
  checked on PyTorch - the same with the gate's and the segmenter's networks on eager PyTorch, one
             after the other, the whole gate network (how they ran before ONNX Runtime; the baseline for
             `models.fastpath`)
  next     - the same for a further answer on a photo the gate has already passed and the segmenter
             outlined (the pages make both once per photo, whatever the model or heatmap method):
             quality, familiarity and on-lesion share.

A second table times the gate's feature network alone: the gate's own (an int8 graph where its card
names one; two graphs split at its early exit) against the same network in fp32 on ONNX Runtime and
on eager PyTorch, and the part before the early exit alone (what a photo that passes it pays). `--gate PATH` measures
another gate (`training.fit_gate --out PATH`, e.g. with `--precision int8`) in place of the shipped one.

    python bench/latency.py [--models a,b] [--gate gate.npz] [--repeats 20] [--size 224] [--gap-ms 0]

The shipped models run at 128 px (their cards' size): `--size 128` is what the app pays with them; the
gate (96 px) and the segmenter (128 px) cost the same at either size.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from pathlib import Path

import numpy as np

from models.registry import MODEL_NAMES, default_card
from training.synthetic import make_lesion

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHECKS = {}
GATE_PATH = None  # --gate: another gate than the shipped one


def all_checks(onnx: bool = True, early: bool = True):
    """The shipped gate (thresholds opened: it never short-cuts the rest) and segmenter, loaded once;
    `onnx=False`: both networks on eager PyTorch, one after the other, the whole gate network (the
    baseline for ONNX Runtime); `early=False`: without the gate's early exit (what a photo that does not
    pass it pays)."""
    key = (onnx, early)
    if key not in CHECKS:
        import copy
        import dataclasses

        from models.fastpath import FastRunner, example_input
        from models.gate import FeatureExtractor, Gate, load_gate
        from models.trust import Checks

        shipped = Checks.load()
        gate, seg = shipped.gate, shipped.segmenter
        if GATE_PATH:
            gate = load_gate(GATE_PATH)
            if gate is None:
                raise SystemExit(f"error: no gate at {GATE_PATH} (its .npz and .json)")
        if gate is not None:
            features = gate.features if onnx else FeatureExtractor(gate.features.size, onnx=False)
            gate = Gate(dataclasses.replace(gate.params, score_threshold=0.0, distance_threshold=float("inf")),
                        gate.card, features, gate.early if onnx and early else None)
        if seg is not None and not onnx:
            seg = copy.copy(seg)
            seg.run = FastRunner(seg.model, example_input(3, seg.size), onnx=False)
        CHECKS[key] = Checks(gate, seg)
    return CHECKS[key]


def example_lesions(size: int) -> list[np.ndarray]:
    """The app's 16 credited HAM10000 example photos (assets/examples/ham10000), centre crops at `size`:
    real lesion photos, so that the gate's early exit passes as many as it would a user's."""
    from PIL import Image

    from models.preprocess import to_model_size

    files = sorted((ROOT / "assets" / "examples" / "ham10000").glob("*.jpg"))
    return [to_model_size(Image.open(f).convert("RGB"), size) for f in files]


def checked_runners(clf, img):
    """assess() with every check, and with the gate's verdict already made, with a familiarity model
    fitted on this classifier's embeddings of synthetic photos."""
    from models.familiarity import card_entry, fit_familiarity
    from models.trust import assess

    imgs = np.stack([make_lesion("benign" if i % 2 else "malignant", clf.image_size, 100 + i) for i in range(48)])
    _, emb = clf.logits_embed_batch(imgs)
    clf.card["familiarity"] = card_entry(*fit_familiarity(emb[:32], emb[32:]))
    checks = all_checks()
    on_torch = all_checks(onnx=False)
    no_early = all_checks(early=False)
    photos = example_lesions(clf.image_size) or [img]

    def on_each_photo(with_checks):
        turn = itertools.cycle(photos)  # the next example photo at each call

        def run():
            a = assess(clf, next(turn), checks=with_checks)
            assert a.prediction is not None and a.familiarity is not None and a.lesion_mask is not None
        return run

    verdict = checks.gate.check(clf.prepare(img)) if checks.gate is not None else None
    outline = checks.segmenter.mask(clf.prepare(img)) if checks.segmenter is not None else None

    def next_answer():
        a = assess(clf, img, checks=checks, gate=verdict, lesion_mask=outline)
        assert a.prediction is not None and a.familiarity is not None and a.lesion_mask is not None

    return on_each_photo(checks), on_each_photo(on_torch), next_answer, on_each_photo(no_early)


def torch_runners(name: str, size: int):
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from models.torch_classifier import TorchClassifier, build_for_inference, cam_class

    torch.manual_seed(0)
    clf = TorchClassifier(build_for_inference(name), default_card(name, image_size=size))
    img = make_lesion("malignant", size, 1)
    x = clf._tensor(img[None])
    naive_model = build_for_inference(name).eval()  # its own copy: parameters require grad, as by default

    def forward():
        with torch.inference_mode():
            clf.model(x)

    method = clf.default_cam

    def ours():
        clf.explain(img, method)

    def naive():
        with torch.no_grad():
            naive_model(x)
        with cam_class(method)(model=naive_model, target_layers=[naive_model.cam_layer(method)]) as cam:
            cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])

    return (forward, ours, naive, *checked_runners(clf, img))


def keras_runners(size: int):
    from models.keras_model import KerasClassifier, build_keras_cnn  # first: it orders the TF import

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_keras_cnn(size)
    clf = KerasClassifier(model, default_card("keras_cnn", image_size=size))
    img = make_lesion("malignant", size, 1)
    from models.preprocess import normalize

    card = clf.card
    x = tf.constant(normalize(img[None], card["mean"], card["std"], channels_last=True))
    predict_fn = tf.function(lambda t: model(t, training=False))

    def forward():
        predict_fn(x).numpy()

    def ours():
        clf.explain(img, "gradcam")

    def naive():  # the eager recipe from tutorials: separate forward, then a tape over a new model
        model(x, training=False).numpy()
        grad_model = keras.Model(model.inputs, [model.get_layer("cam_layer").output, model.output])
        with tf.GradientTape() as tape:
            conv, logits = grad_model(x)
            score = logits[:, 1]
        grads = tape.gradient(score, conv)
        w = tf.reduce_mean(grads, axis=(1, 2))
        cam = tf.nn.relu(tf.reduce_sum(conv * w[:, None, None, :], axis=-1))
        tf.image.resize(cam[..., None], (size, size)).numpy()

    return (forward, ours, naive, *checked_runners(clf, img))


def measure(fns, repeats: int, warmup: int = 3, gap_ms: float = 0.0, seed: int = 0):
    """Median-ready times in ms, interleaved in a new (seeded) random order each repeat: a call pays
    for what ran just before it (a fixed order had the checked call always follow the naive one, whose
    fresh TensorFlow model and tape leave cold caches behind), so no column may always follow the same
    other one. `gap_ms` of idle before each timed call, so that none starts while the previous one's
    OpenMP threads are still spinning (a click comes after idle)."""
    import random

    order = random.Random(seed)
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i in order.sample(range(len(fns)), len(fns)):  # interleaved, shuffled
            fn = fns[i]
            if gap_ms:
                time.sleep(gap_ms / 1000)
            t = time.perf_counter()
            fn()
            times[i].append((time.perf_counter() - t) * 1000)
    return times


def gate_rows(repeats: int):
    """The gate's feature network alone at batch 1 (its int8 graph when its card names one) against the
    same network's fp32 graph on ONNX Runtime and on eager PyTorch, interleaved."""
    from models.gate import FeatureExtractor, gate_input

    gate = all_checks().gate
    if gate is None:
        return []
    size = gate.features.size
    runners = {f"this gate ({gate.features.precision})": gate.features.run,
               "fp32, ONNX Runtime": FeatureExtractor(size).run,
               "fp32, PyTorch": FeatureExtractor(size, onnx=False).run}
    if getattr(gate, "early", None) is not None:
        runners[f"its early exit: stages 0-{gate.early.stage} only"] = gate.features.run.front
    x = gate_input(make_lesion("benign", 128, 7)[None], size)
    times = measure([lambda r=r: r(x) for r in runners.values()], repeats * 5)
    return [(name, statistics.median(t), p95(t)) for name, t in zip(runners, times)]


def p95(values):
    return float(np.percentile(values, 95))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODEL_NAMES))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--gap-ms", type=float, default=0.0,
                   help="idle before each timed call (default 0: back to back, as before)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--gate", default=None, help="another gate's .npz to measure (default: the shipped one)")
    args = p.parse_args(argv)
    global GATE_PATH
    GATE_PATH = args.gate
    CHECKS.clear()
    import torch

    print(f"CPU threads: {torch.get_num_threads()}, {args.size} px, batch 1, {args.repeats} interleaved repeats, "
          f"{args.gap_ms:g} ms idle before each call")
    rows = []
    for name in args.models.split(","):
        fns = keras_runners(args.size) if name == "keras_cnn" else torch_runners(name, args.size)
        rows.append((name, *measure(fns, args.repeats, gap_ms=args.gap_ms)))
        print(f"  {name} done", flush=True)
    print()
    checks = all_checks()
    backends = dict(zip(("gate", "segmenter"), checks.backends()))
    print((f"gate: {GATE_PATH}; " if GATE_PATH else "") + "checks: "
          + ", ".join(f"{k} {v or 'MISSING'}" for k, v in backends.items())
          + "; baseline: both on PyTorch, one after the other")
    early = getattr(checks.gate, "early", None)
    if early is not None:
        photos = example_lesions(args.size)  # as the checked columns give them to the gate
        passed = sum(r.stage == "early" for r in checks.gate.check_batch(np.stack(photos)))
        share = checks.gate.card.get("early_exit", {}).get("held_out", {}).get("lesion_photos_passed_early")
        print(f"the gate's early exit after stage {early.stage}: {passed} of {len(photos)} example photos pass it"
              + (f" ({share:.1%} of the held-out lesion photos in its card)" if share is not None else "")
              + "; the others pay the full network ('no early exit')")
    print("| model | forward ms (p50 / p95) | ours: predict+explain ms | + all checks ms | + all checks, no early exit ms "
          "| + all checks, PyTorch ms | next answer, gate + outline done ms | naive ms | ours / forward "
          "| checked / ours (<= 1.3x) | no early exit / ours | checked on PyTorch / ours | next / ours | naive / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f, o, n, c, ct, x, cf in rows:
        mf, mo, mn, mc, mct, mx, mcf = (statistics.median(v) for v in (f, o, n, c, ct, x, cf))
        print(f"| {name} | {mf:.1f} / {p95(f):.1f} | {mo:.1f} / {p95(o):.1f} | {mc:.1f} / {p95(c):.1f} | "
              f"{mcf:.1f} / {p95(cf):.1f} | {mct:.1f} / {p95(ct):.1f} | {mx:.1f} / {p95(x):.1f} | {mn:.1f} / {p95(n):.1f} "
              f"| {mo / mf:.2f}x | {mc / mo:.2f}x | {mcf / mo:.2f}x | {mct / mo:.2f}x | {mx / mo:.2f}x | {mn / mo:.2f}x |")
    gate = gate_rows(args.repeats)
    if gate:
        print()
        print(f"The gate's feature network alone ({checks.gate.features.size} px, one thread, {args.repeats * 5} "
              "interleaved repeats):")
        print("| gate network | ms (p50 / p95) | / this gate |")
        print("|---|---:|---:|")
        for name, med, hi in gate:
            print(f"| {name} | {med:.2f} / {hi:.2f} | {med / gate[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
