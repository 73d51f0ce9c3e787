"""The PyTorch training loop for torch_cnn, densenet161 and efficientnet_lite0.

Small pure pieces (`make_optimizer`, `lr_lambda`, `train_one_epoch`, `evaluate`) and one
driver, `run_torch`, that owns checkpoints, early stopping and the run directory.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import LesionNet, build_torch
from models.loader import save_torch_weights
from models.preprocess import normalize
from models.registry import atomic_write_bytes, spec

from .cards import build_card, calibrate
from .data import Split, augment, class_weights
from .metrics import roc_auc
from .progress import Progress
from .rundir import RunWriter, StopFlag


class TrainingFailed(RuntimeError):
    """The run cannot go on (non-finite loss, bad configuration); the message says why."""


class Stopped(Exception):
    pass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingFailed("--device cuda was asked for, but no CUDA GPU is available")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingFailed("--device mps was asked for, but MPS is not available")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"cuda:{idx} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where oneDNN runs bf16 convolutions natively (elsewhere bf16 is emulated, slower)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


# Models whose CPU training step is not faster in bf16 (depthwise convolutions): `--amp auto` keeps
# them in fp32 on CPU. Measured here with bench/train_throughput.py (224 px, batch 32, AMX CPU):
# efficientnet_lite0 16.0 img/s bf16 vs 17.1 fp32; torch_cnn (128 px) 93.9 vs 32.3.
CPU_FP32_MODELS = frozenset({"efficientnet_lite0"})


def amp_settings(device: torch.device, mode: str = "auto", model: str | None = None
                 ) -> tuple[bool, torch.dtype | None]:
    """(use autocast, dtype) for --amp. auto: bf16 on a GPU that has it, else fp16 (with a scaler);
    bf16 on a CPU that computes it natively (except for CPU_FP32_MODELS), else fp32; fp32 elsewhere."""
    if mode == "off":
        return False, None
    if mode in ("bf16", "fp16"):
        return True, torch.bfloat16 if mode == "bf16" else torch.float16
    if device.type == "cuda":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16() and model not in CPU_FP32_MODELS:
        return True, torch.bfloat16
    return False, None


def uses_channels_last(device: torch.device) -> bool:
    """NHWC suits cuDNN and oneDNN alike (measured on CPU: every model's step as fast or faster)."""
    return device.type in ("cuda", "cpu")


def param_groups(model: LesionNet, lr: float, weight_decay: float, body_lr_mult: float) -> list[dict]:
    """Body and head get separate learning rates; norms and biases get no weight decay."""
    groups = []
    for part, mult in ((model.body, body_lr_mult), (model.head, 1.0)):
        decay, no_decay = [], []
        for p in part.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups.append({"params": decay, "weight_decay": weight_decay, "lr": lr * mult, "base_mult": mult,
                       "part": "body" if part is model.body else "head"})
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr": lr * mult, "base_mult": mult,
                       "part": "body" if part is model.body else "head"})
    return [g for g in groups if g["params"]]


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float = 0.01) -> float:
    """Linear warm-up, then cosine decay to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lrs(optimizer, lr: float, factor: float, body_frozen: bool) -> float:
    for g in optimizer.param_groups:
        mult = 0.0 if (body_frozen and g["part"] == "body") else g["base_mult"]
        g["lr"] = lr * factor * mult
    return lr * factor


def set_body_frozen(model: LesionNet, frozen: bool, dist: Dist) -> None:
    """Frozen warm-up: body BN in eval mode; in a single process also skip body gradients."""
    if frozen:
        model.body.eval()
    if not dist.enabled:
        for p in model.body.parameters():
            p.requires_grad_(not frozen)


def to_batch(images: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(images).to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


@torch.inference_mode()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, mean, std, device: torch.device,
             batch_size: int = 64, amp: tuple[bool, Any] = (False, None), channels_last: bool = False) -> dict:
    """Logits, loss, accuracy (argmax) and AUC on a uint8 NHWC set."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(to_batch(images[i:i + batch_size], device, channels_last), mean, std)
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            out.append(model(x).float().cpu())
    logits = torch.cat(out) if out else torch.zeros(0, 2)
    y = torch.from_numpy(labels)
    loss = F.cross_entropy(logits, y).item() if len(y) else float("nan")
    p = torch.softmax(logits, 1)[:, 1].numpy()
    return {"logits": logits.numpy(), "loss": loss, "accuracy": float((logits.argmax(1) == y).float().mean()),
            "auc": roc_auc(labels, p)}


def train_one_epoch(ctx: "Context", epoch: int, start_step: int = 0) -> dict:
    """One pass over this rank's shard of the training set, with the run's stop checks."""
    a, model, opt = ctx.args, ctx.model, ctx.optimizer
    frozen = epoch < a["freeze_epochs"] and ctx.init == "imagenet"
    model.train()
    set_body_frozen(model, frozen, ctx.dist)
    n = len(ctx.split.train.images)
    bs = a["batch_size"]
    steps = ctx.steps_per_epoch
    # Every rank gets exactly steps * bs indices (the permutation wraps around), so all ranks
    # run the same number of steps and their collective calls stay in lockstep.
    rng = np.random.default_rng(a["seed"] * 1000 + epoch)
    per_rank = min(steps * bs, math.ceil(n / ctx.dist.world)) if not ctx.dist.enabled else steps * bs
    order = np.resize(rng.permutation(n), per_rank * ctx.dist.world)[ctx.dist.rank::ctx.dist.world]
    gen = torch.Generator().manual_seed(a["seed"] * 7919 + epoch * 31 + ctx.dist.rank)
    tot_loss = tot_correct = tot_seen = 0.0
    window_seen, window_start = 0, time.perf_counter()
    progress = Progress(epoch, a["epochs"], steps, bs * ctx.dist.world, enabled=ctx.dist.main)
    for step in range(steps):
        idx = order[step * bs:(step + 1) * bs]
        if len(idx) == 0:
            break
        x = to_batch(ctx.split.train.images[idx], ctx.device, ctx.channels_last)
        y = torch.from_numpy(ctx.split.train.labels[idx]).to(ctx.device)
        x = normalize(augment(x, gen), ctx.mean, ctx.std)
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        global_step = epoch * steps + step
        lr = set_lrs(opt, a["lr"], lr_lambda(global_step, ctx.total_steps, ctx.warmup_steps), frozen)
        with torch.autocast(ctx.device.type, dtype=ctx.amp[1], enabled=ctx.amp[0]):
            logits = ctx.ddp_model(x)
            loss = ctx.criterion(logits.float(), y)
        if not torch.isfinite(loss):
            raise TrainingFailed(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                                 f"(learning rate {lr:g}); lower --lr")
        opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        ctx.scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), a["clip_grad"])
        ctx.scaler.step(opt)
        ctx.scaler.update()
        with torch.no_grad():
            tot_loss += loss.item() * len(idx)
            tot_correct += (logits.argmax(1) == y).sum().item()
            tot_seen += len(idx)
        window_seen += len(idx) * ctx.dist.world
        progress.update(step + 1, loss=tot_loss / tot_seen, acc=tot_correct / tot_seen)
        if (step + 1) % a["log_every"] == 0 or step + 1 == steps:
            now = time.perf_counter()
            ips = window_seen / max(now - window_start, 1e-9)
            window_seen, window_start = 0, now
            ctx.writer.metric(epoch=epoch + 1, step=step + 1, global_step=global_step + 1, split="train",
                              loss=tot_loss / tot_seen, accuracy=tot_correct / tot_seen, lr=lr,
                              images_per_s=round(ips, 2))
            ctx.writer.update(state="running", epoch=epoch + 1, step=step + 1, steps_per_epoch=steps,
                              images_per_s=round(ips, 2), message=f"epoch {epoch + 1}/{a['epochs']}")
        if ctx.should_stop():
            progress.close()
            raise Stopped()
    progress.close()
    return {"loss": tot_loss / max(tot_seen, 1), "accuracy": tot_correct / max(tot_seen, 1)}


@dataclass
class Context:
    args: dict
    model: LesionNet
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    criterion: nn.Module
    split: Split
    writer: RunWriter
    stop: StopFlag
    device: torch.device
    dist: Dist
    init: str
    mean: list
    std: list
    amp: tuple
    channels_last: bool
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    def should_stop(self) -> bool:
        flag = self.stop.signalled or self.writer.stop_requested() or (
            self.dist.enabled and Path(self.args["out"], "STOP").exists())
        if self.dist.enabled:  # every rank must stop at the same step
            t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag


def fit_schedule_to_time(ctx: Context, epochs_done: int, spent: float, last_epoch: float) -> None:
    """With --time-limit, shrink the planned epochs to what fits, so the cosine decay still
    ends at the last epoch. The first epoch is skipped as an estimate: it carries warm-up
    costs (cuDNN autotuning, allocator growth) that later epochs do not."""
    args = ctx.args
    if epochs_done < 2 and spent < 60 * args["time_limit"]:
        return
    fit = epochs_done + int(max(0.0, 60 * args["time_limit"] - spent) // max(last_epoch, 1e-6))
    if fit < args["epochs"]:
        ctx.writer.log(f"time limit {args['time_limit']} min: {fit} epochs fit, not {args['epochs']}")
        args["epochs"] = max(fit, epochs_done)
        ctx.total_steps = ctx.steps_per_epoch * args["epochs"]
        ctx.writer.update(epochs=args["epochs"])


def _save_last(ctx: Context, epoch_done: int, best: dict, bad_epochs: int) -> None:
    if not ctx.dist.main:
        return
    buf = io.BytesIO()
    torch.save({"model": ctx.model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
                "scaler": ctx.scaler.state_dict(), "epoch": epoch_done, "best": best,
                "bad_epochs": bad_epochs, "init": ctx.init, "args": ctx.args, "format": 1}, buf)
    atomic_write_bytes(Path(ctx.args["out"]) / "last.pt", buf.getvalue())


def start_model(name: str, weights: str | None) -> tuple[LesionNet, str]:
    """The model a run starts from: a checkpoint of this project (fine-tune further), or the
    architecture with 'imagenet', backbone weights from a file, or nothing."""
    if weights and weights != "imagenet":
        obj = torch.load(weights, map_location="cpu", weights_only=True)
        state = obj.get("model") if isinstance(obj, dict) else None
        if isinstance(state, dict) and "head.weight" in state:
            from models.loader import find_card
            from models.torch_classifier import load_state

            model, _ = build_torch(name, None)
            model.load_state_dict(load_state(weights))
            try:
                init = find_card(Path(weights)).get("init", "scratch")
            except FileNotFoundError:
                init = "scratch"
            return model, init
    return build_torch(name, weights)


def run_torch(args: dict, writer: RunWriter, split: Split, stop: StopFlag, dist: Dist) -> dict:
    name = args["model"]
    device = pick_device(args["device"]) if not dist.enabled or args["device"] != "auto" else (
        torch.device("cuda", dist.local_rank) if torch.cuda.is_available() else torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args["seed"])
    out = Path(args["out"])
    last = out / "last.pt"
    resume = last.exists() and args.get("resuming")
    ckpt = torch.load(last, map_location="cpu", weights_only=True) if resume else None
    weights = None if resume else (None if args["weights"] == "none" else args["weights"])
    model, init = start_model(name, weights)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        init = ckpt.get("init", init)
    if weights == "imagenet" and init != "imagenet":
        writer.log(f"{name}: ImageNet weights not available here; training from random initialisation")
        print(f"note: {name} ImageNet weights are not reachable; training from random initialisation", flush=True)
    s = spec(name)
    mean, std = list(s.mean), list(s.std)
    amp = amp_settings(device, args.get("amp", "auto"), name)
    channels_last = uses_channels_last(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp_model: nn.Module = model
    if dist.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    body_mult = args["body_lr_mult"] if init == "imagenet" else 1.0
    optimizer = torch.optim.AdamW(param_groups(model, args["lr"], args["weight_decay"], body_mult), lr=args["lr"])
    scaler = torch.amp.GradScaler(device.type, enabled=amp[0] and amp[1] == torch.float16)
    weights_t = torch.from_numpy(class_weights(split.train.labels)).to(device)
    criterion = nn.CrossEntropyLoss(weight=weights_t, label_smoothing=args["label_smoothing"])
    shard = math.ceil(len(split.train.images) / dist.world)
    steps = max(1, math.ceil(shard / args["batch_size"]))
    ctx = Context(args, model, ddp_model, optimizer, scaler, criterion, split, writer, stop, device, dist, init,
                  mean, std, amp, channels_last, steps, steps * args["epochs"],
                  max(1, int(args["warmup_epochs"] * steps)))
    start_epoch, best, bad_epochs = 0, {"auc": -1.0, "epoch": 0}, 0
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best, bad_epochs = ckpt["epoch"], ckpt["best"], ckpt["bad_epochs"]
        writer.log(f"resuming after epoch {start_epoch}")
    dev_text = describe_device(device)
    writer.update(state="running", device=dev_text, epochs=args["epochs"], steps_per_epoch=steps,
                  epoch=start_epoch, step=0, message="training", init=init)
    writer.log(f"device: {dev_text}; init: {init}; amp: {amp[1] if amp[0] else 'off'}; "
               f"train {split.train.counts}, val {split.val.counts}")
    if dist.main:
        print(f"device: {dev_text} (init {init})", flush=True)
    epoch_times: list[float] = []
    epoch = start_epoch
    run_start = time.perf_counter()
    try:
        while epoch < args["epochs"]:
            t0 = time.perf_counter()
            tr = train_one_epoch(ctx, epoch)
            epoch_times.append(time.perf_counter() - t0)
            val = evaluate(model, split.val.images, split.val.labels, mean, std, device, amp=amp,
                           channels_last=channels_last)
            writer.metric(epoch=epoch + 1, step=steps, split="val", loss=val["loss"], accuracy=val["accuracy"],
                          auc=val["auc"], lr=optimizer.param_groups[-1]["lr"], seconds=round(epoch_times[-1], 2),
                          train_loss=tr["loss"], train_accuracy=tr["accuracy"])
            # NaN AUC (one class in validation) still yields a first "best", so a card can be written.
            improved = bool(np.isfinite(val["auc"]) and val["auc"] > best["auc"] + 1e-4) or best["epoch"] == 0
            if improved:
                best = {"auc": val["auc"], "accuracy": val["accuracy"], "loss": val["loss"], "epoch": epoch + 1}
                bad_epochs = 0
                if dist.main:
                    save_torch_weights(model, {"name": name, "image_size": args["image_size"], "epochs": epoch + 1,
                                               "init": init, "note": "best so far; final card at the end"},
                                       out / "best.pt")
            else:
                bad_epochs += 1
            _save_last(ctx, epoch + 1, best, bad_epochs)
            writer.update(epoch=epoch + 1, best=best)
            if dist.main:
                print(f"epoch {epoch + 1}/{args['epochs']}: train loss {tr['loss']:.4f} acc {tr['accuracy']:.3f} | "
                      f"val loss {val['loss']:.4f} acc {val['accuracy']:.3f} auc {val['auc']:.4f}"
                      f"{' *' if improved else ''} ({epoch_times[-1]:.1f}s)", flush=True)
            epoch += 1
            if args["patience"] and bad_epochs >= args["patience"] and epoch >= args["min_epochs"]:
                writer.log(f"early stop: validation AUC did not improve for {bad_epochs} epochs")
                break
            if ctx.should_stop():
                raise Stopped()
            if args.get("time_limit"):
                fit_schedule_to_time(ctx, epoch, time.perf_counter() - run_start, time.perf_counter() - t0)
    except Stopped:
        done = min(epoch, len(epoch_times) + start_epoch)  # an interrupted epoch is redone on resume
        _save_last(ctx, done, best, bad_epochs)
        return {"state": "stopped", "message": f"stopped after epoch {done}; resume with --resume {out}",
                "epoch": done}
    if not dist.main:
        return {"state": "finished", "epoch": epoch}
    # Final: best weights -> temperature, threshold, card.
    best_state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(best_state)
    # The card's temperature and threshold come from fp32 outputs: the app predicts in fp32.
    val = evaluate(model, split.val.images, split.val.labels, mean, std, device, channels_last=channels_last)
    calib = calibrate(val["logits"], split.val.labels)
    spe = float(np.mean(epoch_times)) if epoch_times else None
    card = build_card(name, args, split.info(), init, best["epoch"], calib, spe, describe_device(device),
                      best["epoch"])
    card["epochs_run"] = epoch
    save_torch_weights(model.float(), card, out / "best.pt")
    from models.registry import write_card

    write_card(out / "card.json", card)
    return {"state": "finished", "card": card, "epoch": epoch,
            "message": f"finished: best validation AUC {best['auc']:.4f} at epoch {best['epoch']}"}


def cpu_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", 0)) or torch.get_num_threads()
