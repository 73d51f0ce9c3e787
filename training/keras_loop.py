"""The Keras training loop for keras_cnn: `model.fit` on a tf.data pipeline.

Same contract as `training.torch_loop.run_torch`: the same metric rows and status fields,
STOP/SIGTERM checked between batches, `last.keras` (+ `last_state.json`) every epoch,
`best.keras` by validation AUC, early stopping, `--resume`, and at the end a calibrated
model card beside `best.keras`.

Pieces: `setup_device` (before TensorFlow runs anything), `make_optimizer` (AdamW on
`WarmupCosine`, the torch loop's schedule), `train_dataset` (in-memory uint8 -> augmented, normalised batches),
`evaluate`, `RunCallback` (metrics, checkpoints, stop) and the driver `run_keras`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torchvision.ops  # noqa: F401  before TensorFlow (see models/keras_model.py)

from models.preprocess import normalize
from models.registry import default_card, spec, write_card

from .cards import build_card, calibrate
from .data import Split, class_weights
from .metrics import roc_auc, softmax
from .progress import Progress
from .rundir import RunWriter, StopFlag, read_json, write_json

# TensorFlow is imported here (this module is loaded only for keras runs); `setup_device`
# still runs before any TensorFlow op, which is what device placement needs.
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from models.keras_model import KerasClassifier, build_keras_cnn, save_keras_model  # noqa: E402

STATE_FORMAT = 1
# AdamW decays kernels only: BatchNorm scales/offsets and biases keep their values.
NO_DECAY = ["bias", "gamma", "beta"]


def _failed(message: str) -> Exception:
    from .torch_loop import TrainingFailed  # train.py reports this class's message as is

    return TrainingFailed(message)


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
        raise _failed(f"--device {name} was asked for, but TensorFlow sees no GPU")
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

@keras.saving.register_keras_serializable(package="lesion_lens")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine decay to `min_ratio * peak`: the PyTorch loop's
    `lr_lambda`, step for step. The total is a variable, read when each step runs, so
    `--time-limit` can shrink the schedule while `fit` is going (a compiled train step
    would otherwise keep the total it was traced with)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.01):
        self.peak = float(peak)
        self.warmup_steps = max(1, int(warmup_steps))
        self.min_ratio = float(min_ratio)
        self.total = tf.Variable(float(max(1, int(total_steps))), trainable=False, dtype=tf.float32,
                                 name="lr_total_steps")

    def set_total_steps(self, total_steps: int) -> None:
        self.total.assign(float(max(1, int(total_steps))))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.constant(float(self.warmup_steps))
        warm = self.peak * (step + 1.0) / warmup
        progress = tf.clip_by_value((step - warmup) / tf.maximum(1.0, self.total - warmup), 0.0, 1.0)
        cosine = self.peak * (self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
        return tf.where(step < warmup, warm, cosine)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": int(self.total.numpy()), "min_ratio": self.min_ratio}


def make_schedule(lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float) -> WarmupCosine:
    total = max(1, steps_per_epoch * epochs)
    return WarmupCosine(lr, max(1, int(warmup_epochs * steps_per_epoch)), total)


def make_optimizer(cfg: dict[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """AdamW on the run's schedule; the schedule stays reachable as `opt.schedule`."""
    schedule = make_schedule(cfg["lr"], steps_per_epoch, cfg["epochs"], cfg.get("warmup_epochs", 1.0))
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.get("weight_decay", 0.05),
                                 global_clipnorm=cfg.get("clip_grad") or None)
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    opt.schedule = schedule
    return opt


def compile_model(model: keras.Model, cfg: dict[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    opt = make_optimizer(cfg, steps_per_epoch)
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=cfg.get("label_smoothing", 0.0)),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],  # unweighted, like torch
                  jit_compile=False, steps_per_execution=1)  # one step per call: stop checks each batch
    return opt


def restore_optimizer(new: keras.optimizers.Optimizer, old: keras.optimizers.Optimizer | None,
                      model: keras.Model) -> bool:
    """Copy the saved optimizer's slots (iterations, moments) into a freshly built one.

    The new optimizer carries the schedule for the run's (possibly changed) epoch count;
    the iteration count it continues from is set by the caller. False if nothing matched.
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


# ------------------------------------------------------------------ data

def augmenter(seed: int) -> keras.Sequential:
    """Keras preprocessing layers on float [0, 255] NHWC batches: flips, zoom-in crops,
    mild contrast and brightness. With the random transpose in `train_dataset` the flips
    cover all 8 symmetries of the square (a dermoscopy photo has no 'up')."""
    L = keras.layers
    return keras.Sequential([
        L.RandomFlip("horizontal_and_vertical", seed=seed),
        L.RandomZoom(height_factor=(-0.3, 0.0), fill_mode="reflect", seed=seed + 1),  # crops 49-100% of area
        L.RandomContrast(0.1, value_range=(0, 255), seed=seed + 2),
        L.RandomBrightness(0.06, value_range=(0, 255), seed=seed + 3),
    ], name="augment")


def train_dataset(images: np.ndarray, labels: np.ndarray, cfg: dict[str, Any], mean, std,
                  start_epoch: int, epochs: int) -> tf.data.Dataset:
    """Batches (normalised images, one-hot labels, class weights) for epochs start..epochs-1.

    Each epoch's order is a stateless shuffle seeded by (seed, epoch), so a resumed run
    sees the same order as an uninterrupted one. Normalisation calls
    `models.preprocess.normalize`, the very function inference uses.
    """
    n, size = len(images), images.shape[1]
    bs = int(cfg["batch_size"])
    seed = int(cfg["seed"])
    images_t = tf.constant(images)
    labels_t = tf.constant(labels.astype(np.int32))
    weights_t = tf.constant(class_weights(labels))
    aug = augmenter(seed)
    transpose_rng = tf.random.Generator.from_seed(seed * 7919 + start_epoch)
    mean, std = list(mean), list(std)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int32), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(bs)

    def _normalize(x):
        return normalize(x, mean, std, channels_last=True).astype(np.float32)

    def load(idx):
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        y = tf.gather(labels_t, idx)
        x = aug(x, training=True)
        flip = transpose_rng.uniform([tf.shape(x)[0], 1, 1, 1]) < 0.5
        x = tf.where(flip, tf.transpose(x, [0, 2, 1, 3]), x)
        x = tf.clip_by_value(x, 0.0, 255.0)
        x = tf.numpy_function(_normalize, [x], tf.float32, stateful=False)
        x.set_shape([None, size, size, 3])
        return x, tf.one_hot(y, 2), tf.gather(weights_t, y)

    ds = tf.data.Dataset.range(start_epoch, max(start_epoch, epochs)).flat_map(epoch_batches)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def evaluate(clf: KerasClassifier, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Logits, loss (plain cross-entropy), accuracy (argmax) and AUC through the inference path."""
    logits = clf._logits(images) if len(images) else np.zeros((0, 2), np.float32)
    if not len(labels):
        return {"logits": logits, "loss": float("nan"), "accuracy": float("nan"), "auc": float("nan")}
    p = softmax(logits)
    loss = float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
    return {"logits": logits, "loss": loss, "accuracy": float((logits.argmax(1) == labels).mean()),
            "auc": roc_auc(labels, p[:, 1])}


# ------------------------------------------------------------------ the run

class RunCallback(keras.callbacks.Callback):
    """Reports to the run directory, checkpoints each epoch, stops on request or patience."""

    def __init__(self, run: "KerasRun"):
        super().__init__()
        self.run = run
        self.epoch = run.start_epoch
        self.stopped_mid_epoch = False
        self.stopped_at_end = False

    def on_train_begin(self, logs=None):
        self.run.run_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        r = self.run
        self.epoch = epoch
        self.t0 = self.window_start = time.perf_counter()
        self.window_seen = 0
        self.seen = 0
        self.progress = Progress(epoch, r.cfg["epochs"], r.steps, r.cfg["batch_size"])

    def on_train_batch_end(self, batch, logs=None):
        r, logs = self.run, logs or {}
        step = int(batch) + 1
        n_batch = min(r.batch_size, r.n_train - (step - 1) * r.batch_size)
        self.seen += n_batch
        self.window_seen += n_batch
        loss, acc = float(logs.get("loss", np.nan)), float(logs.get("accuracy", np.nan))
        global_step = self.epoch * r.steps + step
        if not math.isfinite(loss):
            lr = r.lr_at(global_step - 1)
            raise _failed(f"loss became {loss} at epoch {self.epoch + 1}, step {step} "
                          f"(learning rate {lr:g}); lower --lr")
        self.progress.update(step, loss=loss, acc=acc)
        if step % r.cfg["log_every"] == 0 or step == r.steps:
            now = time.perf_counter()
            ips = round(self.window_seen / max(now - self.window_start, 1e-9), 2)
            self.window_seen, self.window_start = 0, now
            r.writer.metric(epoch=self.epoch + 1, step=step, global_step=global_step, split="train",
                            loss=loss, accuracy=acc, lr=r.lr_at(global_step - 1), images_per_s=ips)
            r.writer.update(state="running", epoch=self.epoch + 1, step=step, steps_per_epoch=r.steps,
                            images_per_s=ips, device=r.device, message=f"epoch {self.epoch + 1}/{r.cfg['epochs']}")
        if r.should_stop():
            self.stopped_mid_epoch = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.progress.close()
        if self.stopped_mid_epoch:
            return  # run_keras saves the interrupted state after fit returns
        r, logs = self.run, logs or {}
        seconds = time.perf_counter() - self.t0
        r.epoch_times.append(seconds)
        val = evaluate(r.classifier, r.split.val.images, r.split.val.labels)
        r.writer.metric(epoch=epoch + 1, step=r.steps, split="val", loss=val["loss"], accuracy=val["accuracy"],
                        auc=val["auc"], lr=r.lr_at((epoch + 1) * r.steps - 1), seconds=round(seconds, 2),
                        train_loss=float(logs.get("loss", np.nan)), train_accuracy=float(logs.get("accuracy", np.nan)))
        auc = val["auc"] if math.isfinite(val["auc"]) else -1.0
        improved = r.best["epoch"] == 0 or auc > r.best["auc"] + 1e-4
        if improved:
            r.best = {"auc": auc, "accuracy": val["accuracy"], "loss": val["loss"], "epoch": epoch + 1}
            r.bad_epochs = 0
            r.save_best_interim(epoch + 1)
        else:
            r.bad_epochs += 1
        r.save_last(epoch + 1)
        r.epochs_done = epoch + 1
        r.writer.update(epoch=epoch + 1, best=r.best)
        print(f"epoch {epoch + 1}/{r.cfg['epochs']}: train loss {logs.get('loss', float('nan')):.4f} "
              f"acc {logs.get('accuracy', float('nan')):.3f} | val loss {val['loss']:.4f} acc {val['accuracy']:.3f} "
              f"auc {val['auc']:.4f}{' *' if improved else ''} ({seconds:.1f}s)", flush=True)
        cfg = r.cfg
        if cfg.get("patience") and r.bad_epochs >= cfg["patience"] and epoch + 1 >= cfg.get("min_epochs", 0):
            r.writer.log(f"early stop: validation AUC did not improve for {r.bad_epochs} epochs")
            self.model.stop_training = True
        elif r.should_stop():
            self.stopped_at_end = True
            self.model.stop_training = True
        elif cfg.get("time_limit") and epoch + 1 < cfg["epochs"]:
            spent = time.perf_counter() - r.run_start
            per_epoch = spent / len(r.epoch_times)  # includes validation and checkpoints
            fit = epoch + 1 + int((60 * cfg["time_limit"] - spent) // per_epoch)
            if fit < cfg["epochs"]:
                # Shrink the schedule so the cosine decay still ends at the last epoch.
                r.writer.log(f"time limit {cfg['time_limit']} min: {fit} epochs fit, not {cfg['epochs']}")
                cfg["epochs"] = max(fit, epoch + 1)
                r.schedule.set_total_steps(r.steps * cfg["epochs"])
                r.writer.update(epochs=cfg["epochs"])
            if epoch + 1 >= cfg["epochs"]:
                self.model.stop_training = True


class KerasRun:
    """State of one run: model, optimizer, data, best/bad epochs, checkpoint writers."""

    def __init__(self, cfg: dict[str, Any], writer: RunWriter, split: Split, stop: StopFlag):
        self.cfg, self.writer, self.split, self.stop = cfg, writer, split, stop
        self.name = cfg["model"]
        self.out = Path(cfg["out"])
        s = spec(self.name)
        self.mean, self.std = list(s.mean), list(s.std)
        self.n_train = len(split.train.images)
        self.batch_size = int(cfg["batch_size"])
        self.steps = max(1, math.ceil(self.n_train / self.batch_size))
        self.start_epoch, self.epochs_done = 0, 0
        self.best: dict[str, Any] = {"auc": -1.0, "epoch": 0}
        self.bad_epochs = 0
        self.epoch_times: list[float] = []
        self.run_start = time.perf_counter()
        self.device = ""

    # --- state ---
    def should_stop(self) -> bool:
        return self.stop.signalled or self.writer.stop_requested()

    def lr_at(self, iteration: int) -> float:
        return float(self.schedule(max(0, int(iteration))))

    def build(self) -> None:
        cfg, last = self.cfg, self.out / "last.keras"
        state = read_json(self.out / "last_state.json") if cfg.get("resuming") else None
        resume = bool(cfg.get("resuming")) and last.is_file() and isinstance(state, dict)
        old_opt = None
        if resume:
            self.model = keras.saving.load_model(last, safe_mode=True, compile=True)
            old_opt = getattr(self.model, "optimizer", None)
        else:
            self.model = build_keras_cnn(int(cfg["image_size"]))
        self.optimizer = compile_model(self.model, cfg, self.steps)
        self.schedule = self.optimizer.schedule
        if resume:
            restored = restore_optimizer(self.optimizer, old_opt, self.model)
            self.start_epoch = self.epochs_done = int(state["epoch"])
            self.best, self.bad_epochs = dict(state["best"]), int(state["bad_epochs"])
            # The schedule continues from the start of the first epoch still to do.
            self.optimizer.iterations.assign(int(state.get("iterations", self.start_epoch * self.steps)))
            self.writer.log(f"resuming after epoch {self.start_epoch}"
                            + ("" if restored else "; optimizer state not restored (fresh moments)"))
        else:
            self.optimizer.build(self.model.trainable_variables)
        card = default_card(self.name, int(cfg["image_size"]), "scratch")
        self.classifier = KerasClassifier(self.model, card)

    # --- checkpoints ---
    def save_last(self, epoch_done: int) -> None:
        save_keras_model(self.model, self.out / "last.keras")
        write_json(self.out / "last_state.json", {
            "epoch": epoch_done, "best": self.best, "bad_epochs": self.bad_epochs,
            "iterations": int(self.optimizer.iterations.numpy()), "steps_per_epoch": self.steps,
            "format": STATE_FORMAT})

    def save_best_interim(self, epoch: int) -> None:
        save_keras_model(self.model, self.out / "best.keras")
        write_card(self.out / "best.json", {"name": self.name, "image_size": int(self.cfg["image_size"]),
                                             "epochs": epoch, "init": "scratch",
                                             "note": "best so far; final card at the end"})


def run_keras(cfg: dict, writer: RunWriter, split: Split, stop: StopFlag) -> dict:
    device = setup_device(cfg.get("device", "auto"), cfg.get("threads"))
    keras.utils.set_random_seed(int(cfg["seed"]))
    run = KerasRun(cfg, writer, split, stop)
    run.device = device
    run.build()
    out, steps = run.out, run.steps
    writer.update(state="running", device=device, epochs=cfg["epochs"], steps_per_epoch=steps,
                  epoch=run.start_epoch, step=0, message="training", init="scratch")
    writer.log(f"device: {device}; init: scratch; keras {keras.__version__}, tensorflow {tf.__version__}; "
               f"train {split.train.counts}, val {split.val.counts}; {run.model.count_params():,} parameters")
    print(f"device: {device} (init scratch)", flush=True)
    callback = RunCallback(run)
    t_fit = time.perf_counter()
    if run.start_epoch < cfg["epochs"]:
        data = train_dataset(split.train.images, split.train.labels, cfg, run.mean, run.std,
                             run.start_epoch, cfg["epochs"])
        run.model.fit(data, epochs=cfg["epochs"], initial_epoch=run.start_epoch, steps_per_epoch=steps,
                      callbacks=[callback], verbose=0, shuffle=False)
    writer.log(f"fit returned after {time.perf_counter() - t_fit:.1f}s")
    if callback.stopped_mid_epoch:
        done = callback.epoch  # the interrupted epoch is redone on resume, with its learning rates
        run.optimizer.iterations.assign(done * steps)
        run.save_last(done)
        return {"state": "stopped", "epoch": done,
                "message": f"stopped during epoch {done + 1}; resume with --resume {out}"}
    if callback.stopped_at_end:
        return {"state": "stopped", "epoch": run.epochs_done,
                "message": f"stopped after epoch {run.epochs_done}; resume with --resume {out}"}
    # Final: best weights -> temperature, threshold, card.
    t_final = time.perf_counter()
    best_path = out / "best.keras"
    if not best_path.is_file():
        raise _failed(f"{best_path}: no best checkpoint to finish from")
    model = keras.saving.load_model(best_path, safe_mode=True, compile=False)
    clf = KerasClassifier(model, default_card(run.name, int(cfg["image_size"]), "scratch"))
    val = evaluate(clf, split.val.images, split.val.labels)
    calib = calibrate(val["logits"], split.val.labels)
    spe = float(np.mean(run.epoch_times)) if run.epoch_times else None
    card = build_card(run.name, cfg, split.info(), "scratch", run.best["epoch"], calib, spe, device,
                      run.best["epoch"])
    card["epochs_run"] = run.epochs_done
    save_keras_model(model, best_path)  # compile=False: the shipped file carries no optimizer state
    write_card(out / "best.json", card)
    write_card(out / "card.json", card)
    writer.log(f"final calibration and card: {time.perf_counter() - t_final:.1f}s")
    return {"state": "finished", "card": card, "epoch": run.epochs_done,
            "message": f"finished: best validation AUC {run.best['auc']:.4f} at epoch {run.best['epoch']}"}
