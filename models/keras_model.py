"""The Keras CNN (Keras 3 on TensorFlow) and its classifier with Grad-CAM.

This is the only module of `models` that imports TensorFlow; `models.loader` imports it
lazily, so the app starts without TensorFlow until a Keras model is used.

Inputs: the model takes the normalised float NHWC image. Normalisation with the card's
mean/std happens outside the model with `models.preprocess.normalize(..., channels_last=True)`,
the same function the training pipeline calls.

Grad-CAM: one multi-output "views" model shares the layers (and weights) of the classifier
and returns (CAM-layer activations, pooled embedding, logits) from a single forward pass,
so the explained prediction *is* the prediction. The gradient is taken inside a
`tf.function` with a fixed input signature, traced once per classifier.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
# Triton, which torchvision.ops pulls in through torch._dynamo, crashes the process (segfault) when
# it is first imported after TensorFlow, so it goes first wherever TensorFlow may load.
import torchvision.ops  # noqa: F401  isort: skip

from .quiet_tf import tensorflow_quietly

with tensorflow_quietly():  # no oneDNN/CPU-feature notices, no cuInit error on a machine without a GPU
    import tensorflow as tf
    import keras
    from keras import layers

    tf.config.list_physical_devices("GPU")  # TensorFlow probes CUDA here, inside the filter

from .classifier import Classifier
from .preprocess import model_input

CAM_LAYER = "cam_layer"
EMBEDDING_LAYER = "embedding"
# Forward passes run in chunks so a large predict_batch never allocates one huge tensor.
CHUNK = 64


# ------------------------------------------------------------------ architecture

def _conv_bn_relu(x, filters: int, name: str, act_name: str | None = None):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    # momentum 0.9 is PyTorch's 0.1: short runs still get usable running statistics.
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=act_name or f"{name}_relu")(x)


def build_keras_cnn(image_size: int = 128, widths: tuple[int, ...] = (32, 64, 128, 256),
                    dropout: float = 0.3) -> keras.Model:
    """A VGG-style functional CNN of ~1.2M parameters producing 2 logits.

    A single conv stem at full resolution, then stages of two Conv-BN-ReLU after a 2x2
    max-pool. The last activation ("cam_layer", 1/8 of the input size) is the Grad-CAM
    target; global average pooling ("embedding") feeds dropout and a Dense(2) of logits
    (no softmax: the classifier applies the card's temperature).
    """
    inp = keras.Input((image_size, image_size, 3), name="image")
    x = _conv_bn_relu(inp, widths[0], "stem")
    for i, w in enumerate(widths[1:], start=1):
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = _conv_bn_relu(x, w, f"stage{i}a")
        x = _conv_bn_relu(x, w, f"stage{i}b", act_name=CAM_LAYER if i == len(widths) - 1 else None)
    emb = layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(x)
    x = layers.Dropout(dropout, name="dropout")(emb)
    logits = layers.Dense(2, name="logits")(x)
    return keras.Model(inp, logits, name="keras_cnn")


# ------------------------------------------------------------------ views: CAM layer, embedding, logits

def _rank(t) -> int:
    return len(t.shape)


def _views_model(model: keras.Model, image_size: int) -> keras.Model:
    """A model sharing `model`'s layers with outputs (cam activations, embedding, logits).

    Functional models are tapped directly. A Sequential model has no symbolic layer outputs
    until it is called on a `keras.Input` (Keras 3 raises "has never been called"), so its
    layers are replayed on a fresh Input; the replayed graph uses the same layer objects
    and therefore the same weights.
    """
    if not isinstance(model, keras.Sequential):
        try:
            names = {layer.name for layer in model.layers}
            out = model.outputs[0]
            if CAM_LAYER in names:
                cam = model.get_layer(CAM_LAYER).output
            else:  # the last layer with a spatial (rank-4) output
                cam = next(layer.output for layer in reversed(model.layers) if _rank(layer.output) == 4)
            if EMBEDDING_LAYER in names:
                emb = model.get_layer(EMBEDDING_LAYER).output
            else:  # what the final layer consumes: the penultimate features
                emb = model.layers[-1].input
            return keras.Model(model.inputs, [cam, emb, out], name=f"{model.name}_views")
        except (AttributeError, ValueError, StopIteration):
            pass  # not a tappable graph: fall back to replaying the layers
    inp = keras.Input((image_size, image_size, 3), name="image")
    x = inp
    cam = emb = None
    last_spatial = None
    chain = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    for i, layer in enumerate(chain):
        if i == len(chain) - 1 and emb is None:
            emb = x
        x = layer(x)
        if _rank(x) == 4:
            last_spatial = x
        if layer.name == CAM_LAYER:
            cam = x
        if layer.name == EMBEDDING_LAYER:
            emb = x
    if cam is None:
        cam = last_spatial
    if cam is None:
        raise ValueError(f"{model.name}: no convolutional (4-D) layer output to explain")
    return keras.Model(inp, [cam, emb, x], name=f"{model.name}_views")


# ------------------------------------------------------------------ classifier

class KerasClassifier(Classifier):
    """`Classifier` over a Keras model whose input is the normalised NHWC image."""

    cam_methods = ("gradcam",)

    def __init__(self, model: keras.Model, card: dict[str, Any]):
        super().__init__(card)
        s = self.image_size
        if not model.built:
            model.build((None, s, s, 3))
        shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
        if shape is not None and (len(shape) != 4 or shape[-1] != 3
                                  or any(d is not None and d != s for d in shape[1:3])):
            raise ValueError(f"{card['name']}: the model expects inputs of shape {shape[1:]}, "
                             f"but its model card says {s}x{s}x3")
        self.model = model
        self.mean, self.std = list(card["mean"]), list(card["std"])
        self._views = _views_model(model, s)
        image = tf.TensorSpec([None, s, s, 3], tf.float32)
        scalar = tf.TensorSpec([], tf.float32)
        self._forward = tf.function(self._forward_fn, input_signature=[image], reduce_retracing=True)
        self._embed_fn = tf.function(self._embedding_fn, input_signature=[image], reduce_retracing=True)
        self._forward_embed = tf.function(self._forward_embed_fn, input_signature=[image], reduce_retracing=True)
        self._gradcam = tf.function(self._gradcam_fn, input_signature=[image, scalar, scalar],
                                    reduce_retracing=True)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, card: dict[str, Any]) -> "KerasClassifier":
        path = Path(path)
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # a zip that is not a Keras model, a truncated file, ...
            raise ValueError(f"{path}: not a readable Keras model ({type(exc).__name__}: {exc})") from None
        return cls(model, card)

    # --- compiled graphs (traced once: the input signature is fixed) ---
    def _forward_fn(self, x):
        return tf.cast(self.model(x, training=False), tf.float32)

    def _embedding_fn(self, x):
        return tf.cast(self._views(x, training=False)[1], tf.float32)

    def _forward_embed_fn(self, x):
        _, emb, logits = self._views(x, training=False)
        return tf.cast(logits, tf.float32), tf.cast(emb, tf.float32)

    def _gradcam_fn(self, x, threshold, temperature):
        with tf.GradientTape() as tape:
            # Watching the input records the graph even for a frozen (non-trainable) model;
            # the gradient below only walks back from the target to the CAM layer.
            tape.watch(x)
            acts, emb, logits = self._views(x, training=False)
            logits = tf.cast(logits, tf.float32)
            # Evidence for the label the model gives at its threshold: the log-odds
            # logit1 - logit0 if malignant, its negative if benign.
            p = tf.nn.softmax(logits / temperature, axis=-1)[:, 1]
            sign = tf.where(p >= threshold, 1.0, -1.0)
            target = tf.reduce_sum(sign * (logits[:, 1] - logits[:, 0]))
        grads = tf.cast(tape.gradient(target, acts), tf.float32)
        acts = tf.cast(acts, tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1, keepdims=True))
        size = tf.shape(x)[1:3]
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0]
        return logits, cam, tf.cast(emb, tf.float32)

    def trace_counts(self) -> dict[str, int]:
        """How often each compiled function was traced (1 each after use: no retracing)."""
        return {"forward": self._forward.experimental_get_tracing_count(),
                "embed": self._embed_fn.experimental_get_tracing_count(),
                "gradcam": self._gradcam.experimental_get_tracing_count()}

    # --- Classifier hooks ---
    def _input(self, batch: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(model_input(batch, self.card, channels_last=True), tf.float32)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        out = [self._forward(self._input(batch[i:i + CHUNK])).numpy() for i in range(0, len(batch), CHUNK)]
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        out = [self._embed_fn(self._input(batch[i:i + CHUNK])).numpy() for i in range(0, len(batch), CHUNK)]
        return np.concatenate(out)

    def _explain(self, batch: np.ndarray, method: str, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._explain_embed(batch, method, threshold)[:2]

    def _explain_embed(self, batch: np.ndarray, method: str, threshold: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if method != "gradcam":
            raise ValueError(f"{self.name} supports only gradcam, not {method!r}")
        thr = self.threshold if threshold is None else threshold
        logits, cam, emb = self._gradcam(self._input(batch), tf.constant(thr, tf.float32),
                                         tf.constant(self.temperature, tf.float32))
        return logits.numpy()[0], cam.numpy()[0], emb.numpy()[0]

    def _logits_embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._forward_embed(self._input(batch[i:i + CHUNK])) for i in range(0, len(batch), CHUNK)]
        return (np.concatenate([p[0].numpy() for p in pairs]), np.concatenate([p[1].numpy() for p in pairs]))


# ------------------------------------------------------------------ saving

def save_keras_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save to a temporary `.keras` file beside `path`, then rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp.keras"
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
