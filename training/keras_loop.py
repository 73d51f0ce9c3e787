"""The Keras backend of the training driver, for keras_cnn.

`KerasBackend` does the framework's part of a run (see `training.driver.Backend`): the model,
AdamW (norms and biases without decay, global gradient clipping), one `train_on_batch` per
step on the batches of `training.data.train_batch` (the PyTorch models' augmentation,
colour constancy and normalisation, computed on the CPU), evaluation through the
`KerasClassifier` inference path, and the checkpoints (`last.keras` with its optimizer +
`last_state.json`; `best.keras` + `best.json`). The driver sets each step's learning rate.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision.ops  # noqa: F401  before TensorFlow (see models/keras_model.py)

from models.registry import write_card

from .cards import run_card
from .data import Split, class_weights, train_batch
from .driver import Dist, TrainingFailed
from .rundir import read_json, write_json

# TensorFlow is imported here (this module is loaded only for keras runs); `setup_device`
# still runs before any TensorFlow op, which is what device placement needs.
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from models.keras_model import KerasClassifier, build_keras_cnn, save_keras_model  # noqa: E402

STATE_FORMAT = 2  # 1: the schedule lived in the optimizer (such a last.keras resumes with fresh moments)
# AdamW decays kernels only: BatchNorm scales/offsets and biases keep their values.
NO_DECAY = ["bias", "gamma", "beta"]


# ------------------------------------------------------------------ device

def setup_device(name: str = "auto", threads: int | None = None) -> str:
    """Choose what TensorFlow may use; returns the device in words for status.json."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    gpus = tf.config.list_physical_devices("GPU")
    if name == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    elif name in ("cuda", "mps") and not gpus:
        raise TrainingFailed(f"--device {name} was asked for, but TensorFlow sees no GPU")
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except (RuntimeError, ValueError):
            pass
    if gpus:
        try:
            label = tf.config.experimental.get_device_details(gpus[0]).get("device_name") or "GPU"
        except (RuntimeError, ValueError):
            label = "GPU"
        return f"GPU:0 ({label})" + (f" +{len(gpus) - 1} more" if len(gpus) > 1 else "")
    n = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1
    return f"cpu ({n} threads)"


# ------------------------------------------------------------------ optimisation

def compile_model(model: keras.Model, cfg: dict) -> keras.optimizers.Optimizer:
    """AdamW at the peak learning rate (the driver assigns each step's) and the training loss:
    cross-entropy with label smoothing, weighted per sample by `KerasBackend.train_step`."""
    opt = keras.optimizers.AdamW(learning_rate=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.05),
                                 global_clipnorm=cfg.get("clip_grad") or None)
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=cfg.get("label_smoothing", 0.0)),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],  # unweighted, like torch
                  jit_compile=False)
    return opt


def restore_optimizer(new: keras.optimizers.Optimizer, old: keras.optimizers.Optimizer | None,
                      model: keras.Model) -> bool:
    """Copy the saved optimizer's slots (iterations, moments) into a freshly built one.

    False if nothing matched (a checkpoint of another layout: the run goes on with fresh moments).
    """
    new.build(model.trainable_variables)
    if old is None or not getattr(old, "built", False):
        return False
    src, dst = list(old.variables), list(new.variables)
    if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
        return False
    for a, b in zip(src, dst):
        b.assign(a)
    return True


def start_model(cfg: dict) -> keras.Model:
    """A new run's model: built afresh (--weights none), or the weights of a saved .keras model (a
    fine-tune). The saved model may take another image size: the CNN pools globally, so its weights
    fit a model built at the run's size (a model of other layers is refused)."""
    size = int(cfg["image_size"])
    if cfg.get("weights") in (None, "none"):
        return build_keras_cnn(size)
    saved = keras.saving.load_model(cfg["weights"], safe_mode=True, compile=False)
    model = build_keras_cnn(size)
    theirs, ours = saved.get_weights(), model.get_weights()
    if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in zip(theirs, ours)):
        raise ValueError(f"{cfg['weights']} is not a keras_cnn this version builds: its layers' weights "
                         f"do not fit ({len(theirs)} arrays against {len(ours)})")
    model.set_weights(theirs)  # the same layers, in the same order (a model it built)
    return model


def load_for_resume(path: Path) -> tuple[keras.Model, keras.optimizers.Optimizer | None]:
    """A last checkpoint with its optimizer; without it when this version cannot rebuild that."""
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=True)
        return model, getattr(model, "optimizer", None)
    except (TypeError, ValueError):  # e.g. STATE_FORMAT 1's schedule class, gone
        return keras.saving.load_model(path, safe_mode=True, compile=False), None


# ------------------------------------------------------------------ the backend

class KerasBackend:
    """One run's model, optimizer and checkpoints in Keras (see `training.driver.Backend`)."""

    dist = Dist()
    prefetch = True  # the torch batches are made on their own core while TensorFlow steps
    precision = "fp32"
    notes = "Keras: fp32 in one process (no --amp, no torchrun); from scratch or from a .keras file"

    def __init__(self, cfg: dict, split: Split, log):
        self.cfg, self.log = cfg, log
        self.device = setup_device(cfg.get("device", "auto"), cfg.get("threads"))
        # The batches (torch, in the driver's helper thread) get a quarter of the cores: with as many
        # threads as TensorFlow, their OpenMP workers spin against its step. Measured on 2 busy cores
        # (64 px, batch 32): 0.45-0.83 steps/s with 2 torch threads, 1.2-1.35 with 1 (fit: 1.24).
        torch.set_num_threads(max(1, int(cfg.get("threads") or os.cpu_count() or 1) // 4))
        keras.utils.set_random_seed(int(cfg["seed"]))
        self.out = Path(cfg["out"])
        self.init = "scratch"
        last = self.out / "last.keras"
        state = read_json(self.out / "last_state.json") if cfg.get("resuming") else None
        resume = bool(cfg.get("resuming")) and last.is_file() and isinstance(state, dict)
        old_opt = None
        if resume:
            self.model, old_opt = load_for_resume(last)
        else:
            self.model = start_model(cfg)
        self.optimizer = compile_model(self.model, cfg)
        self._state = None
        if resume:
            if not restore_optimizer(self.optimizer, old_opt, self.model):
                log("optimizer state not restored (fresh moments)")
            self._state = {k: state[k] for k in ("epoch", "best", "bad_epochs")}
        else:
            self.optimizer.build(self.model.trainable_variables)
        self.class_weights = class_weights(split.train.labels)
        self.summary = (f"amp: off; keras {keras.__version__}, tensorflow {tf.__version__}; "
                        f"{self.model.count_params():,} parameters")
        self.classifier = KerasClassifier(self.model, run_card(cfg, self.init))

    def load_last(self) -> dict | None:
        return self._state

    def begin_epoch(self, epoch: int) -> None:
        pass  # train_on_batch runs the model in training mode

    def inputs(self, images: np.ndarray, generator) -> np.ndarray:
        """The training transform of every framework, as a NHWC float32 array."""
        return train_batch(images, generator, self.cfg, "cpu", channels_last=True).permute(0, 2, 3, 1).numpy()

    def train_step(self, x: np.ndarray, labels: np.ndarray, lr: float, soft: np.ndarray | None = None
                   ) -> tuple[float, int]:
        w = self.class_weights[labels]
        self.optimizer.learning_rate = lr
        # Weights of mean 1 in each batch: Keras divides the weighted sum by the batch size, so the loss
        # is the weighted mean PyTorch's CrossEntropyLoss(weight=...) computes.
        target = np.eye(2, dtype=np.float32)[labels] if soft is None else soft.astype(np.float32)
        logs = self.model.train_on_batch(x, target, sample_weight=w / w.mean(),
                                         return_dict=True)
        return float(logs["loss"]), int(round(float(logs["accuracy"]) * len(labels)))

    def eval_logits(self, images: np.ndarray, fp32: bool = False) -> np.ndarray:
        return self.classifier._logits(images)  # always fp32

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.classifier._embed(images)

    def save_last(self, state: dict) -> None:
        save_keras_model(self.model, self.out / "last.keras")
        write_json(self.out / "last_state.json", {**state, "iterations": int(self.optimizer.iterations.numpy()),
                                                  "format": STATE_FORMAT})

    def save_best(self, card: dict) -> None:
        save_keras_model(self.model, self.out / "best.keras")
        write_card(self.out / "best.json", card)

    def load_best(self) -> None:
        best = self.out / "best.keras"
        if not best.is_file():
            raise TrainingFailed(f"{best}: no best checkpoint to finish from")
        self.model = keras.saving.load_model(best, safe_mode=True, compile=False)
        self.classifier = KerasClassifier(self.model, run_card(self.cfg, self.init))

    def save_final(self, card: dict) -> None:
        save_keras_model(self.model, self.out / "best.keras")  # loaded uncompiled: no optimizer state shipped
        write_card(self.out / "best.json", card)

    def reduce_max(self, value: float) -> float:
        return value  # one process
