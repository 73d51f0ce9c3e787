"""The PyTorch backend of the training driver, for torch_cnn, densenet161 and efficientnet_lite0.

`TorchBackend` does the framework's part of a run (see `training.driver.Backend`): the model,
AdamW with separate body/head learning rates, autocast (`--amp`), channels_last, DDP under
torchrun, and the checkpoints (`last.pt`: model, optimizer, scaler and the driver's state;
`best.pt` + `best.json`). Device and precision choice are small pure functions here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import LesionNet, build_torch
from models.loader import save_torch_weights
from models.registry import atomic_write_bytes

from .cards import run_card
from .data import Split, _to_tensor as to_batch, class_weights, eval_batch, train_batch  # noqa: F401  to_batch: bench
from .driver import EVAL_BATCH, Dist, TrainingFailed


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


def set_lrs(optimizer, lr: float, body_frozen: bool) -> None:
    """Each group at `lr` times its part's multiplier (a frozen body: 0)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * (0.0 if (body_frozen and g["part"] == "body") else g["base_mult"])


def set_body_frozen(model: LesionNet, frozen: bool, dist: Dist) -> None:
    """Frozen warm-up: body BN in eval mode; in a single process also skip body gradients."""
    if frozen:
        model.body.eval()
    if not dist.enabled:
        for p in model.body.parameters():
            p.requires_grad_(not frozen)


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


def soft_loss(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, criterion: nn.CrossEntropyLoss
              ) -> torch.Tensor:
    """Cross-entropy towards (N, 2) probability targets, with `criterion`'s label smoothing and class
    weights (each class's share of a target weighted by that class's weight) and normalised by the
    labels' weights as `criterion` does for class labels: one-hot targets give exactly its loss."""
    eps = criterion.label_smoothing
    targets = targets * (1.0 - eps) + eps / targets.shape[1]
    w = criterion.weight if criterion.weight is not None else torch.ones(targets.shape[1], device=logits.device)
    per_photo = -(targets * w * torch.log_softmax(logits, dim=1)).sum(1)
    return per_photo.sum() / w[labels].sum()


class TorchBackend:
    """One run's model, optimizer and checkpoints in PyTorch (see `training.driver.Backend`)."""

    # In line: a helper thread preparing batches on the same CPU thread pool slows a step (measured,
    # torch_cnn 128 px batch 8 on 2 cores: 96-100 ms a step one ahead, 79 in line); on a GPU the
    # batch's kernels are queued asynchronously anyway.
    prefetch = False
    notes = ("PyTorch: --amp mixed precision and several processes (torchrun, DDP) are PyTorch-only; an "
             "ImageNet-initialised body trains frozen for --freeze-epochs epochs, then at --body-lr-mult of the "
             "head's learning rate")

    def __init__(self, cfg: dict, split: Split, log, dist: Dist = Dist()):
        self.cfg, self.dist, self.log = cfg, dist, log
        name = cfg["model"]
        device = pick_device(cfg["device"]) if not dist.enabled or cfg["device"] != "auto" else (
            torch.device("cuda", dist.local_rank) if torch.cuda.is_available() else torch.device("cpu"))
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg["seed"])
        self.out = Path(cfg["out"])
        last = self.out / "last.pt"
        ckpt = torch.load(last, map_location="cpu", weights_only=True) if cfg.get("resuming") and last.exists() else None
        weights = None if ckpt or cfg["weights"] == "none" else cfg["weights"]
        model, self.init = start_model(name, weights)
        if ckpt:
            model.load_state_dict(ckpt["model"])
            self.init = ckpt.get("init", self.init)
        self.device = describe_device(device)
        self.torch_device = device
        self.amp = amp_settings(device, cfg.get("amp", "auto"), name)
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp[1], "fp32") if self.amp[0] else "fp32"
        self.summary = f"amp: {self.amp[1] if self.amp[0] else 'off'}"
        self.channels_last = uses_channels_last(device)
        self.model = model.to(device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self.ddp_model: nn.Module = self.model
        if dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        body_mult = cfg["body_lr_mult"] if self.init == "imagenet" else 1.0
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg["lr"], cfg["weight_decay"], body_mult),
                                           lr=cfg["lr"])
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp[0] and self.amp[1] == torch.float16)
        self.criterion = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(split.train.labels)).to(device),
                                             label_smoothing=cfg["label_smoothing"])
        self.frozen = False
        self.half = False  # whether the best checkpoint holds fp16 weights (kept so by save_final)
        self._state = None
        if ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self._state = {k: ckpt[k] for k in ("epoch", "best", "bad_epochs")}

    def load_last(self) -> dict | None:
        return self._state

    def begin_epoch(self, epoch: int) -> None:
        self.frozen = epoch < self.cfg["freeze_epochs"] and self.init == "imagenet"
        self.model.train()
        set_body_frozen(self.model, self.frozen, self.dist)

    def inputs(self, images: np.ndarray, generator) -> torch.Tensor:
        return train_batch(images, generator, self.cfg, self.torch_device, self.channels_last)

    def train_step(self, x: torch.Tensor, labels: np.ndarray, lr: float, soft: np.ndarray | None = None
                   ) -> tuple[float, int]:
        dev, opt = self.torch_device, self.optimizer
        y = torch.from_numpy(labels).to(dev)
        set_lrs(opt, lr, self.frozen)
        with torch.autocast(dev.type, dtype=self.amp[1], enabled=self.amp[0]):
            logits = self.ddp_model(x)
            loss = (self.criterion(logits.float(), y) if soft is None
                    else soft_loss(logits.float(), torch.from_numpy(soft).to(dev), y, self.criterion))
        if not torch.isfinite(loss):  # the driver names the epoch and step
            return float(loss.item()), 0
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["clip_grad"])
        self.scaler.step(opt)
        self.scaler.update()
        return loss.item(), int((logits.argmax(1) == y).sum().item())

    @torch.inference_mode()
    def eval_logits(self, images: np.ndarray, fp32: bool = False) -> np.ndarray:
        self.model.eval()
        amp = self.amp[0] and not fp32
        out = []
        for i in range(0, len(images), EVAL_BATCH):
            x = eval_batch(images[i:i + EVAL_BATCH], self.cfg, self.torch_device, self.channels_last)
            with torch.autocast(self.torch_device.type, dtype=self.amp[1], enabled=amp):
                out.append(self.model(x).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)

    def embed(self, images: np.ndarray) -> np.ndarray:
        from models.torch_classifier import TorchClassifier

        clf = TorchClassifier(self.model, run_card(self.cfg, self.init), self.torch_device)
        return np.concatenate([clf._embed(images[i:i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)])

    def save_last(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(), **state, "init": self.init, "args": self.cfg,
                    "format": 1}, buf)
        atomic_write_bytes(self.out / "last.pt", buf.getvalue())

    def save_best(self, card: dict) -> None:
        save_torch_weights(self.model, card, self.out / "best.pt")

    def load_best(self) -> None:
        from models.registry import read_card
        from models.torch_classifier import load_state

        best = self.out / "best.pt"
        if not best.exists():
            raise TrainingFailed(f"{best}: no best checkpoint to finish from")
        raw = torch.load(best, map_location="cpu", weights_only=True)["model"]
        self.half = any(v.dtype == torch.float16 for v in raw.values())
        self.model.load_state_dict(load_state(best))
        try:
            self.init = read_card(best.with_suffix(".json")).get("init", self.init)
        except (OSError, ValueError):
            pass

    def save_final(self, card: dict) -> None:
        save_torch_weights(self.model.float(), card, self.out / "best.pt", half=self.half)

    def reduce_max(self, value: float) -> float:
        if not self.dist.enabled:
            return value
        t = torch.tensor([value], device=self.torch_device if self.torch_device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())
