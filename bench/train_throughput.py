"""Training throughput: our loop vs its ceiling and a naive loop, side by side in the same run.

Ours: images decoded once into a uint8 array; each step takes a batch through `training.data.train_batch`
(the loop's own transform: every camera-breaking augmentation at its default probability, colour
constancy, normalisation, on tensors), channels_last, autocast as `--amp auto` picks it (bf16/fp16 on
CUDA, bf16 on a CPU with native bf16) and cudnn.benchmark; also measured with `--amp off` (fp32) so the
table shows what the precision alone buys. Ceiling: the same forward+backward+optimizer step on batches
made once before timing (no input pipeline at all): what the loop could reach with free data.
Naive: torchvision ImageFolder decoding JPEGs with PIL every epoch, torchvision transforms per image,
DataLoader defaults, fp32.

    python bench/train_throughput.py [--models torch_cnn,...] [--device auto] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import build_torch
from models.device import pick_device
from models.registry import spec
from training.data import load_dataset, train_batch
from training.synthetic import write_dataset
from training.torch_loop import amp_settings, uses_channels_last

ROOT = Path(__file__).resolve().parent.parent

REAL = ROOT.parent / "shared" / "data" / "skin-cancer-malignant-vs-benign" / "train"
SIZES = {"torch_cnn": 128, "densenet161": 224, "efficientnet_lite0": 224}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_ours(name, images, labels, size, device, batch, steps, warmup, amp_mode="auto", ceiling=False):
    """img/s of the loop's step; with `ceiling`, on a few batches made before timing (no input work)."""
    model, _ = build_torch(name, None)
    amp = amp_settings(device, amp_mode, name)
    cl = uses_channels_last(device)
    model = model.to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp[0] and amp[1] == torch.float16)
    crit = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = {"model": name, "colour_constancy": "shades_of_gray"}  # the training defaults

    def make(idx):
        return (train_batch(images[idx], gen, cfg, device, cl), torch.from_numpy(labels[idx]).to(device))

    premade = [make(rng.integers(0, len(images), batch)) for _ in range(4)] if ceiling else None
    model.train()
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x, y = premade[i % len(premade)] if ceiling else make(rng.integers(0, len(images), batch))
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            loss = crit(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def bench_naive(name, folder, size, device, batch, steps, warmup):
    from torchvision import datasets, transforms

    s = spec(name)
    tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.6, 1.0)), transforms.RandomHorizontalFlip(),
                             transforms.RandomVerticalFlip(), transforms.ColorJitter(0.1, 0.1, 0.1),
                             transforms.ToTensor(), transforms.Normalize(s.mean, s.std)])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True)
    model, _ = build_torch(name, None)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    crit = nn.CrossEntropyLoss()
    done, t0 = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device), y.to(device)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= warmup + steps:
                break
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="torch_cnn,efficientnet_lite0,densenet161")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default: 15 CPU, 50 GPU)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=str(REAL) if REAL.is_dir() else None)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    steps = args.steps or (50 if device.type == "cuda" else 15)
    warmup = 5 if device.type == "cuda" else 2
    tmp = None
    folder = Path(args.data) if args.data else None
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = write_dataset(tmp.name, per_class=64, size=224, fmt="jpg")
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {args.batch_size}, {steps} timed steps, data: {folder}")
    rows = []
    for name in args.models.split(","):
        size = SIZES[name]
        ds = load_dataset(folder, size)
        bench = (name, ds.images, ds.labels, size, device, args.batch_size, steps, warmup)
        # Ceiling and loop interleaved, twice each, best of two: a busy neighbour hits both alike.
        ceil = max(bench_ours(*bench, ceiling=True), bench_ours(*bench, ceiling=True))
        ours = max(bench_ours(*bench), bench_ours(*bench))
        fp32 = bench_ours(*bench, amp_mode="off")
        naive = bench_naive(name, folder, size, device, args.batch_size, steps, warmup)
        amp = amp_settings(device, "auto", name)
        rows.append((name, size, f"{str(amp[1]).replace('torch.', '') if amp[0] else 'fp32'}", ceil, ours, fp32, naive))
        print(f"  {name}: ceiling {ceil:.1f} img/s, ours {ours:.1f} img/s, ours fp32 {fp32:.1f} img/s, "
              f"naive {naive:.1f} img/s", flush=True)
    print()
    print(f"ours: channels_last {uses_channels_last(device)}, precision as --amp auto picks it, every augmentation on")
    print("| model | px | ours precision | ceiling img/s (pre-made tensors) | ours img/s | ours / ceiling | "
          "ours --amp off img/s | naive img/s | speed-up (ours / naive) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, size, prec, ceil, ours, fp32, naive in rows:
        print(f"| {name} | {size} | {prec} | {ceil:.1f} | {ours:.1f} | {ours / ceil:.2f} | {fp32:.1f} | {naive:.1f} | "
              f"{ours / naive:.2f}x |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
