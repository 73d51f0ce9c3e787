"""The one training driver of every model: the loop around a framework backend.

The driver owns what a run *is*: each rank's batches, the learning-rate schedule, the epoch
loop, best-by-validation-AUC checkpoints, patience, `--time-limit`, STOP/SIGTERM, the
metric rows and status fields, resume, and the final calibration and model card. A backend
(`training.torch_loop.TorchBackend`, `training.keras_loop.KerasBackend`) only does the
framework's work behind the `Backend` interface below, so both frameworks follow one policy.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from .cards import build_card, calibrate, interim_card
from .data import Split
from .metrics import roc_auc, softmax
from .progress import Progress
from .rundir import RunWriter, StopFlag

EVAL_BATCH = 64


class TrainingFailed(RuntimeError):
    """The run cannot go on (non-finite loss, bad configuration); the message says why."""


class Stopped(Exception):
    """STOP file or SIGTERM seen; `mid_epoch` says whether an epoch was cut short."""

    def __init__(self, mid_epoch: bool):
        super().__init__("stopped")
        self.mid_epoch = mid_epoch


@dataclass
class Dist:
    """This process's place in a torchrun job (one process: rank 0 of 1)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class Backend(Protocol):
    """What a framework does for the driver. Images are uint8 NHWC arrays, labels int64.

    Training inputs come from `training.data.train_batch` in both backends, so both see the
    same augmentation for the same generator."""

    dist: Dist
    init: str        # "scratch" | "imagenet": what the weights started from
    device: str      # the device in words, for status.json and the card
    precision: str   # the training step's arithmetic: "fp32", "bf16", "fp16"
    summary: str     # a fragment of the run log's device line, e.g. "amp: off"
    notes: str       # what only this framework does, for the card (training.framework_specific)

    def load_last(self) -> dict | None:
        """The driver state saved with the last checkpoint the backend resumed from (None: a fresh start)."""

    def begin_epoch(self, epoch: int) -> None:
        """Put the model in training mode for `epoch` (0-based), e.g. a frozen body."""

    prefetch: bool   # whether `inputs` runs in a helper thread, one batch ahead of `train_step`

    def inputs(self, images: np.ndarray, generator) -> Any:
        """One step's network input: `training.data.train_batch` in the framework's layout and device."""

    def train_step(self, inputs: Any, labels: np.ndarray, lr: float, soft: np.ndarray | None = None
                   ) -> tuple[float, int]:
        """One optimisation step at head learning rate `lr`: (mean training loss, correct predictions).
        `soft`: (N, 2) targets to train towards instead of the one-hot labels (--distill); the labels
        still choose the class weights and count the correct predictions."""

    def eval_logits(self, images: np.ndarray, fp32: bool = False) -> np.ndarray:
        """(N, 2) logits through the inference preprocessing; `fp32` for calibration."""

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, D) penultimate features, through the project's classifier (at the end of a run)."""

    def save_last(self, state: dict) -> None:
        """Model, optimizer and `state` (the driver's), atomically, for --resume."""

    def save_best(self, card: dict) -> None:
        """The current weights as the run's best checkpoint, with `card` beside it."""

    def load_best(self) -> None:
        """Replace the model by the best checkpoint's weights (in fp32)."""

    def save_final(self, card: dict) -> None:
        """The best weights (no optimizer) with the final card beside them."""

    def reduce_max(self, value: float) -> float:
        """The largest `value` over all ranks (every rank must take the same decisions)."""


def make_backend(cfg: dict, split: Split, log: Callable[[str], None], dist: Dist | None = None) -> Backend:
    from models.registry import spec

    if spec(cfg["model"]).framework == "keras":
        from .keras_loop import KerasBackend

        return KerasBackend(cfg, split, log)
    from .torch_loop import TorchBackend

    return TorchBackend(cfg, split, log, dist or Dist())


Extras = Callable[[Backend, Split, dict], dict]


def fit_extras(backend: Backend, split: Split, cfg: dict) -> dict:
    """Hook at the end of a run, after calibration, with the best weights loaded: whatever it
    returns is merged into the model card (e.g. a familiarity score fitted on `backend.embed`)."""
    return {}


# ------------------------------------------------------------------ pure pieces

def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return max(1, math.ceil(math.ceil(n / world) / batch_size))


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, dist: Dist = Dist()) -> np.ndarray:
    """This rank's training indices for `epoch`, reproducible from (seed, epoch), so a resumed
    run sees what an uninterrupted one would. Under torchrun every rank gets exactly
    steps * batch_size indices (the permutation wraps around), so all ranks run the same
    number of steps and their collective calls stay in lockstep."""
    order = np.random.default_rng(seed * 1000 + epoch).permutation(n)
    if not dist.enabled:
        return order
    per_rank = steps_per_epoch(n, batch_size, dist.world) * batch_size
    return np.resize(order, per_rank * dist.world)[dist.rank::dist.world]


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float = 0.01) -> float:
    """Linear warm-up, then cosine decay to `min_ratio` of the peak at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def epochs_that_fit(limit_minutes: float, spent: float, epoch_seconds: list[float], epochs_done: int,
                    planned: int) -> int:
    """Epochs a run has in all under --time-limit: those done, and as many more as fit in the
    time left at the pace of the last epoch (training, validation and checkpoints). The first
    epoch of a process is never the pace: it carries one-off costs (tracing, cuDNN autotuning,
    allocator growth). Until a second epoch has run the plan stands, unless time is up."""
    limit = 60.0 * limit_minutes
    if len(epoch_seconds) < 2:
        return planned if spent < limit else epochs_done
    more = int(max(0.0, limit - spent) // max(epoch_seconds[-1], 1e-6))
    return max(epochs_done, min(planned, epochs_done + more))


def batch_inputs(fn: Callable[[Any], Any], items: list, ahead: bool) -> Iterator[Any]:
    """fn(item) for each item, in order. With `ahead` each is computed in a helper thread while
    the caller works on the one before (one thread keeps a random generator's draws in order)."""
    if not ahead:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="batches") as pool:
        pending = pool.submit(fn, items[0]) if items else None
        for i in range(len(items)):
            done = pending.result()
            if i + 1 < len(items):
                pending = pool.submit(fn, items[i + 1])
            yield done


def val_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Plain (unweighted) cross-entropy, argmax accuracy and AUC of validation logits."""
    if not len(labels):
        return {"loss": float("nan"), "accuracy": float("nan"), "auc": float("nan")}
    p = softmax(logits)
    loss = float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
    return {"loss": loss, "accuracy": float((logits.argmax(1) == labels).mean()), "auc": roc_auc(labels, p[:, 1])}


def is_better(auc: float, best: dict) -> bool:
    """A gain of more than 1e-4 in AUC. The first epoch is always a 'best' (even at NaN AUC,
    one class missing in validation), so every finished run has a card."""
    return best["epoch"] == 0 or bool(math.isfinite(auc) and auc > best["auc"] + 1e-4)


@dataclass
class LoopState:
    """What the driver saves with every last checkpoint and reads back on --resume."""
    epoch: int = 0  # epochs completed
    best: dict = field(default_factory=lambda: {"auc": -1.0, "epoch": 0})
    bad_epochs: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "best": dict(self.best), "bad_epochs": self.bad_epochs}

    @classmethod
    def from_dict(cls, d: dict | None) -> "LoopState":
        if not d:
            return cls()
        return cls(int(d["epoch"]), dict(d["best"]), int(d["bad_epochs"]))


# ------------------------------------------------------------------ the run

@dataclass
class Run:
    cfg: dict
    writer: RunWriter
    split: Split
    stop: StopFlag
    backend: Backend
    clock: Callable[[], float] = time.perf_counter  # epoch timing (a test may pass its own)

    def __post_init__(self):
        self.out = Path(self.cfg["out"])
        self.dist = self.backend.dist
        self.steps = steps_per_epoch(len(self.split.train.images), int(self.cfg["batch_size"]), self.dist.world)
        self.warmup = max(1, int(self.cfg["warmup_epochs"] * self.steps))
        self.soft: np.ndarray | None = None  # --distill's targets, set when the run starts

    def print(self, text: str) -> None:
        if self.dist.main:
            print(text, flush=True)

    def should_stop(self) -> bool:
        flag = self.stop.signalled or (self.out / "STOP").exists()
        return self.backend.reduce_max(float(flag)) > 0

    def lr(self, global_step: int) -> float:
        return self.cfg["lr"] * lr_lambda(global_step, self.steps * self.cfg["epochs"], self.warmup)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over this rank's share of the training set, with the stop checks."""
        import torch

        cfg, b, steps, dist = self.cfg, self.backend, self.steps, self.dist
        bs, seed = int(cfg["batch_size"]), int(cfg["seed"])
        images, labels = self.split.train.images, self.split.train.labels
        order = epoch_order(len(images), bs, seed, epoch, dist)
        gen = torch.Generator().manual_seed(seed * 7919 + epoch * 31 + dist.rank)
        b.begin_epoch(epoch)
        tot_loss = tot_correct = tot_seen = 0.0
        window_seen, window_start, lr = 0, time.perf_counter(), self.lr(epoch * steps)
        batches = [order[i:i + bs] for i in range(0, min(len(order), steps * bs), bs)]
        with Progress(epoch, cfg["epochs"], steps, bs * dist.world, enabled=dist.main) as progress, \
                closing(batch_inputs(lambda idx: b.inputs(images[idx], gen), batches, b.prefetch)) as inputs:
            for step, (idx, x) in enumerate(zip(batches, inputs)):
                global_step = epoch * steps + step
                lr = self.lr(global_step)
                loss, correct = b.train_step(x, labels[idx], lr, None if self.soft is None else self.soft[idx])
                if not math.isfinite(loss):
                    raise TrainingFailed(f"loss became {loss} at epoch {epoch + 1}, step {step + 1} "
                                         f"(learning rate {lr:g}); lower --lr")
                tot_loss += loss * len(idx)
                tot_correct += correct
                tot_seen += len(idx)
                window_seen += len(idx) * dist.world
                progress.update(step + 1, loss=tot_loss / tot_seen, acc=tot_correct / tot_seen)
                if (step + 1) % cfg["log_every"] == 0 or step + 1 == steps:
                    now = time.perf_counter()
                    ips = round(window_seen / max(now - window_start, 1e-9), 2)
                    window_seen, window_start = 0, now
                    self.writer.metric(epoch=epoch + 1, step=step + 1, global_step=global_step + 1, split="train",
                                       loss=tot_loss / tot_seen, accuracy=tot_correct / tot_seen, lr=lr,
                                       images_per_s=ips)
                    self.writer.update(state="running", epoch=epoch + 1, step=step + 1, steps_per_epoch=steps,
                                       images_per_s=ips, message=f"epoch {epoch + 1}/{cfg['epochs']}")
                if self.should_stop():
                    raise Stopped(mid_epoch=True)
        return {"loss": tot_loss / max(tot_seen, 1), "accuracy": tot_correct / max(tot_seen, 1), "lr": lr}

    def fit_to_time(self, state: LoopState, spent: float, epoch_walls: list[float]) -> None:
        """--time-limit: shrink the planned epochs to what fits, so the cosine decay still ends at
        the last epoch; every rank takes the smallest count any rank computed."""
        cfg = self.cfg
        fit = epochs_that_fit(cfg["time_limit"], spent, epoch_walls, state.epoch, cfg["epochs"])
        fit = int(-self.backend.reduce_max(-fit))
        if fit < cfg["epochs"]:
            self.writer.log(f"time limit {cfg['time_limit']} min: {fit} epochs fit, not {cfg['epochs']}")
            cfg["epochs"] = fit
            self.writer.update(epochs=fit)

    def train(self, extras: Extras | None = None) -> dict:
        cfg, b, writer, split, dist, out = self.cfg, self.backend, self.writer, self.split, self.dist, self.out
        state = LoopState.from_dict(b.load_last())
        if state.epoch:
            writer.log(f"resuming after epoch {state.epoch}")
        if cfg.get("weights") == "imagenet" and b.init != "imagenet":
            writer.log(f"{cfg['model']}: ImageNet weights not available here; training from random initialisation")
            self.print(f"note: {cfg['model']} ImageNet weights are not reachable; training from random initialisation")
        writer.update(state="running", device=b.device, epochs=cfg["epochs"], steps_per_epoch=self.steps,
                      epoch=state.epoch, step=0, message="training", init=b.init)
        if cfg.get("distill"):
            from .distill import DistillError, run_targets

            writer.update(message="distillation: the teacher's answers on the training photos")
            try:
                self.soft, cfg["distillation"] = run_targets(cfg, split.train.images, split.train.labels, writer.log,
                                                             split.train.paths)
            except DistillError as exc:
                raise TrainingFailed(str(exc)) from None
        writer.log(f"device: {b.device}; init: {b.init}; {b.summary}; "
                   f"train {split.train.counts}, val {split.val.counts}")
        self.print(f"device: {b.device} (init {b.init})")
        train_seconds: list[float] = []
        epoch_walls: list[float] = []
        run_start = self.clock()
        try:
            while state.epoch < cfg["epochs"]:
                epoch = state.epoch
                t0 = self.clock()
                tr = self.train_epoch(epoch)
                train_seconds.append(self.clock() - t0)
                val = val_metrics(b.eval_logits(split.val.images), split.val.labels)
                writer.metric(epoch=epoch + 1, step=self.steps, split="val", loss=val["loss"],
                              accuracy=val["accuracy"], auc=val["auc"], lr=tr["lr"],
                              seconds=round(train_seconds[-1], 2), train_loss=tr["loss"],
                              train_accuracy=tr["accuracy"])
                better = is_better(val["auc"], state.best)
                if better:
                    state.best = {"auc": val["auc"] if math.isfinite(val["auc"]) else -1.0,
                                  "accuracy": val["accuracy"], "loss": val["loss"], "epoch": epoch + 1}
                    state.bad_epochs = 0
                    if dist.main:
                        b.save_best(interim_card(cfg, b.init, epoch + 1))
                else:
                    state.bad_epochs += 1
                state.epoch = epoch + 1
                if dist.main:
                    b.save_last(state.to_dict())
                writer.update(epoch=state.epoch, best=state.best)
                self.print(f"epoch {state.epoch}/{cfg['epochs']}: train loss {tr['loss']:.4f} acc {tr['accuracy']:.3f}"
                           f" | val loss {val['loss']:.4f} acc {val['accuracy']:.3f} auc {val['auc']:.4f}"
                           f"{' *' if better else ''} ({train_seconds[-1]:.1f}s)")
                epoch_walls.append(self.clock() - t0)
                if cfg["patience"] and state.bad_epochs >= cfg["patience"] and state.epoch >= cfg["min_epochs"]:
                    writer.log(f"early stop: validation AUC did not improve for {state.bad_epochs} epochs")
                    break
                if self.should_stop():
                    raise Stopped(mid_epoch=False)
                if cfg.get("time_limit"):
                    self.fit_to_time(state, self.clock() - run_start, epoch_walls)
        except Stopped as stop:
            if stop.mid_epoch and dist.main:  # the interrupted epoch is redone on resume, with its learning rates
                b.save_last(state.to_dict())
            where = f"during epoch {state.epoch + 1}" if stop.mid_epoch else f"after epoch {state.epoch}"
            return {"state": "stopped", "epoch": state.epoch, "message": f"stopped {where}; resume with --resume {out}"}
        if not dist.main:
            return {"state": "finished", "epoch": state.epoch}
        seconds = float(np.mean(train_seconds)) if train_seconds else None
        card = finish(b, split, cfg, state.best["epoch"], state.epoch, seconds, extras)
        return {"state": "finished", "card": card, "epoch": state.epoch,
                "message": f"finished: best validation AUC {state.best['auc']:.4f} at epoch {state.best['epoch']}"}


def train(cfg: dict, writer: RunWriter, split: Split, stop: StopFlag, backend: Backend,
          extras: Extras | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Train `backend`'s model on `split` as `cfg` says; the result's state is the run's end state."""
    return Run(cfg, writer, split, stop, backend, clock).train(extras)


def finish(backend: Backend, split: Split, cfg: dict, best_epoch: int | None, epochs_run: int,
           seconds_per_epoch: float | None, extras: Extras | None = None, **card_fields: Any) -> dict:
    """Best weights -> fp32 validation logits -> temperature and threshold -> the model card
    (with what `extras` (default `fit_extras`) returns and `card_fields` merged in), written
    beside the best checkpoint and as card.json."""
    from models.registry import write_card

    backend.load_best()
    # The card's temperature and threshold come from fp32 outputs: the app predicts in fp32.
    calib = calibrate(backend.eval_logits(split.val.images, fp32=True), split.val.labels)
    card = build_card(cfg, split.info(), calib, init=backend.init, best_epoch=best_epoch, epochs_run=epochs_run,
                      seconds_per_epoch=seconds_per_epoch, device=backend.device, precision=backend.precision,
                      world_size=backend.dist.world, notes=backend.notes)
    card.update((extras or fit_extras)(backend, split, cfg))
    card.update(card_fields)
    backend.save_final(card)
    write_card(Path(cfg["out"]) / "card.json", card)
    return card
