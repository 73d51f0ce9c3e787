"""Start, watch, stop and resume training runs from the app (no Streamlit here).

The app never trains in its own process: `start_run` spawns `python -m training ... --out
runs/<id>` in a new session (so a Streamlit rerun or a closed browser tab leaves it running),
with its stdout/stderr in `runs/<id>/stdout.txt`. Everything a page shows is read back from
the run directory (training.rundir), so every browser session sees the same runs.

Guard rails live here, not in the page: `LESION_LENS_TRAINING=off` (read-only), datasets
only from folders under `LESION_LENS_DATA` (or the generated synthetic demo set), numeric
bounds from training.train.LIMITS, and one active run per machine unless asked otherwise
(checked under a file lock, so two browser sessions cannot both start "the only" run).
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from models.registry import CLASSES, MODEL_NAMES, spec

from .rundir import (ACTIVE_STATES, active_runs, create_run_dir, pid_alive, read_json, read_run, runs_dir,
                     safe_run_path, tail_log, write_json)
from .train import LIMITS

ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "LESION_LENS_DATA"
TRAINING_ENV = "LESION_LENS_TRAINING"
SYNTHETIC_DIR_NAME = "_synthetic_demo"  # under runs/; not a run id (ids start with a letter or digit)
SYNTHETIC_PER_CLASS = {"train": 60, "test": 30}
SYNTHETIC_SIZE = 64
HEAVY_MODELS = ("densenet161", "efficientnet_lite0")
HEAVY_MIN_SIZE = 160
DEVICES = ("auto", "cpu", "cuda", "mps")
WEIGHT_CHOICES = ("imagenet", "none")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
METRIC_ROWS_PER_EPOCH = 20  # --log-every is chosen so the live chart gets about this many points


class LaunchError(ValueError):
    """A run cannot be started, stopped, resumed or promoted; the message is for the user."""


# ------------------------------------------------------------------ settings

def training_enabled() -> bool:
    """False when LESION_LENS_TRAINING is off/0/false/no: the Training page is read-only."""
    return os.environ.get(TRAINING_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def data_base() -> Path | None:
    """The folder the UI may read datasets from (LESION_LENS_DATA), resolved; None if unset or missing."""
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        return None
    base = Path(value).expanduser().resolve()
    return base if base.is_dir() else None


# ------------------------------------------------------------------ datasets

def _has_classes(path: Path) -> bool:
    return all((path / c).is_dir() for c in CLASSES)


def _escapes(path: Path, base: Path) -> bool:
    try:
        return not path.resolve().is_relative_to(base)
    except OSError:
        return True


def _contained(root: Path, base: Path) -> bool:
    """root, its class folders and every entry in them resolve inside `base` (no symlink out)."""
    if _escapes(root, base):
        return False
    for c in CLASSES:
        folder = root / c
        if _escapes(folder, base):
            return False
        try:
            for entry in os.scandir(folder):
                if entry.is_symlink() and _escapes(Path(entry.path), base):
                    return False
        except OSError:
            return False
    return True


def list_datasets(base: str | os.PathLike | None = None, depth: int = 3) -> list[str]:
    """Dataset folders (with benign/ and malignant/) under `base`, as paths relative to it
    ("." for base itself). Symlinked folders are not followed; a dataset whose class folders
    or files point outside `base` is left out."""
    base = Path(base).resolve() if base is not None else data_base()
    if base is None or not base.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, _ in os.walk(base, followlinks=False):
        p = Path(dirpath)
        rel = p.relative_to(base)
        if _has_classes(p):
            if _contained(p, base):
                found.append(rel.as_posix())
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if len(rel.parts) >= depth:
            dirnames[:] = []
    return sorted(found)


def resolve_dataset(rel: str, base: str | os.PathLike | None = None) -> Path:
    """A dataset chosen in the UI (a path relative to LESION_LENS_DATA) -> its absolute folder.
    Refuses absolute paths, `..`, symlinks out of the folder and folders that are not datasets."""
    from .data import DatasetError, find_dataset_root

    base_path = Path(base).resolve() if base is not None else data_base()
    if base_path is None:
        raise LaunchError(f"no dataset folder is configured: set {DATA_ENV} to a folder of datasets")
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise LaunchError(f"{rel!r}: choose a dataset folder inside {DATA_ENV}")
    path = (base_path / rel).resolve()
    if not path.is_relative_to(base_path):
        raise LaunchError(f"{rel}: outside the dataset folder ({DATA_ENV}); refused")
    try:
        root = find_dataset_root(path)
    except DatasetError as exc:
        raise LaunchError(str(exc)) from None
    if root.resolve() != path or not _contained(path, base_path):
        raise LaunchError(f"{rel}: not a dataset folder inside {DATA_ENV} (or it links outside it); refused")
    return path


def synthetic_demo(root: str | os.PathLike | None = None) -> Path:
    """The generated demo set (train/ and test/, each labelled SYNTHETIC), made once under runs/.
    Written to a temporary folder and renamed, so two sessions never see half of it."""
    from .synthetic import write_dataset

    parent = Path(root) if root else runs_dir()
    demo = parent / SYNTHETIC_DIR_NAME
    if all((demo / split / "SYNTHETIC.txt").is_file() for split in SYNTHETIC_PER_CLASS):
        return demo
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=parent))
    try:
        for i, (split, n) in enumerate(SYNTHETIC_PER_CLASS.items()):
            write_dataset(tmp / split, per_class=n, size=SYNTHETIC_SIZE, seed=11 + i)
        try:
            os.rename(tmp, demo)
        except OSError:  # another session made it first (or a broken one is there)
            if not all((demo / s / "SYNTHETIC.txt").is_file() for s in SYNTHETIC_PER_CLASS):
                shutil.rmtree(demo, ignore_errors=True)
                os.rename(tmp, demo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return demo


def allowed_data(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """May the app train or evaluate on this folder? Only inside LESION_LENS_DATA or the demo set."""
    p = Path(path).resolve()
    bases = [b for b in (data_base(), (Path(root) if root else runs_dir()).resolve() / SYNTHETIC_DIR_NAME) if b]
    return any(p.is_relative_to(b) and _contained(p, b) for b in bases if _has_classes(p))


def count_images(root: str | os.PathLike) -> dict[str, int]:
    out = {}
    for c in CLASSES:
        try:
            out[c] = sum(1 for e in os.scandir(Path(root) / c)
                         if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith("."))
        except OSError:
            out[c] = 0
    return out


# ------------------------------------------------------------------ commands

def check_value(key: str, value: float) -> float:
    lo, hi = LIMITS[key]
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and lo <= value <= hi):
        raise LaunchError(f"{key.replace('_', ' ')} must be between {lo:g} and {hi:g}, not {value}")
    return value


def log_every_for(n_images: int, batch_size: int, val_fraction: float = 0.15) -> int:
    steps = max(1, math.ceil(n_images * (1 - val_fraction) / batch_size))
    return max(1, steps // METRIC_ROWS_PER_EPOCH)


def build_command(model: str, data: str | os.PathLike, out: str | os.PathLike, epochs: int,
                  image_size: int, batch_size: int, lr: float, weights: str = "none",
                  device: str = "auto", seed: int | None = None, log_every: int | None = None) -> list[str]:
    """The argument list for `python -m training` (no shell ever sees it)."""
    if model not in MODEL_NAMES:
        raise LaunchError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if weights not in WEIGHT_CHOICES:
        raise LaunchError(f"initial weights must be one of {', '.join(WEIGHT_CHOICES)}, not {weights!r}")
    if weights == "imagenet" and spec(model).init != "imagenet":
        raise LaunchError(f"{spec(model).display} has no ImageNet weights; it trains from scratch (weights: none)")
    if device not in DEVICES:
        raise LaunchError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    for key, value in (("epochs", epochs), ("image_size", image_size), ("batch_size", batch_size), ("lr", lr)):
        check_value(key, value)
    if int(epochs) != epochs or int(image_size) != image_size or int(batch_size) != batch_size:
        raise LaunchError("epochs, image size and batch size must be whole numbers")
    cmd = [sys.executable, "-m", "training", "--model", model, "--data", str(data), "--out", str(out),
           "--epochs", str(int(epochs)), "--image-size", str(int(image_size)), "--batch-size", str(int(batch_size)),
           "--lr", repr(float(lr)), "--weights", weights, "--device", device]
    if seed is not None:
        cmd += ["--seed", str(int(seed))]
    if log_every:
        cmd += ["--log-every", str(int(log_every))]
    return cmd


def resume_command(run_dir: str | os.PathLike, device: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "training", "--resume", str(run_dir)]
    if device:
        if device not in DEVICES:
            raise LaunchError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        cmd += ["--device", device]
    return cmd


# ------------------------------------------------------------------ processes

@contextmanager
def launch_lock(root: str | os.PathLike | None = None) -> Iterator[None]:
    """Serialises 'check for an active run, then start one' across sessions and processes."""
    folder = Path(root) if root else runs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".launch.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The child finds the project's packages whatever the server's working directory was.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def tail_output(run_dir: str | os.PathLike, lines: int = 20) -> str:
    """The end of the process's own stdout/stderr (catches crashes before log.txt exists)."""
    return tail_log(run_dir, lines, name="stdout.txt")


def _is_training_process(pid: int, run_dir: Path) -> bool:
    """Is `pid` the training process of this run (so a reused pid is never signalled)?"""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return False
    return "training" in args and any(a in (str(run_dir), str(run_dir.resolve())) for a in args)


def run_path(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """runs/<run_id>, refusing ids that could leave runs/ (LaunchError, for the user)."""
    try:
        return safe_run_path(run_id, root)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def refuse_if_busy(root: str | os.PathLike | None = None) -> None:
    """One run at a time per machine, unless the user asked for more."""
    busy = list(active_runs(root))
    if busy:
        raise LaunchError(f"run {busy[0].id} is still {busy[0].state}; stop it first, or allow "
                          "more than one run at a time")


class Launcher:
    """Owns the Popen objects of the runs this process started, so finished ones are reaped
    (poll) and never linger as zombies. One per server process (the page keeps it in
    st.cache_resource); it is safe to use from several Streamlit threads."""

    def __init__(self) -> None:
        self.procs: dict[Path, subprocess.Popen] = {}
        self.lock = threading.Lock()

    # --- start ---
    def _spawn(self, cmd: list[str], run_dir: Path) -> subprocess.Popen:
        with open(run_dir / "stdout.txt", "ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        with self.lock:
            self.procs[run_dir.resolve()] = proc
        return proc

    @staticmethod
    def _claim(run_dir: Path, pid: int, **fields: Any) -> None:
        """Record the child's pid in status.json unless the child has already written its own."""
        status = read_json(run_dir / "status.json", {}) or {}
        if not status.get("pid") or status.get("launcher"):
            status.update(fields, pid=pid, updated=round(time.time(), 3))
            write_json(run_dir / "status.json", status)

    def start_run(self, model: str, data: str | os.PathLike, epochs: int, image_size: int, batch_size: int,
                  lr: float, weights: str = "none", device: str = "auto", allow_concurrent: bool = False,
                  seed: int | None = None, root: str | os.PathLike | None = None) -> str:
        """Start a training run in a new run directory; returns its id."""
        data = Path(data).resolve()
        if not allowed_data(data, root):
            raise LaunchError(f"{data}: not a dataset inside {DATA_ENV} (or the synthetic demo set); refused")
        n = sum(count_images(data).values())
        # Validate everything before a run directory exists: a refused start leaves nothing behind.
        build_command(model, data, "OUT", epochs, image_size, batch_size, lr, weights, device, seed)
        with launch_lock(root):
            if not allow_concurrent:
                refuse_if_busy(root)
            run_dir = create_run_dir(model, root).resolve()
            cmd = build_command(model, data, run_dir, epochs, image_size, batch_size, lr, weights, device,
                                seed, log_every_for(n, batch_size))
            write_json(run_dir / "launch.json", {"command": cmd, "started": time.time(), "pid_of_app": os.getpid()})
            write_json(run_dir / "status.json", {"state": "starting", "pid": None, "epoch": 0, "epochs": int(epochs),
                                                 "step": 0, "steps_per_epoch": 0, "model": model, "device": None,
                                                 "message": "starting the training process", "launcher": True,
                                                 "updated": round(time.time(), 3)})
            proc = self._spawn(cmd, run_dir)
            self._claim(run_dir, proc.pid)
        return run_dir.name

    def resume_run(self, run_id: str, allow_concurrent: bool = False, device: str | None = None,
                   root: str | os.PathLike | None = None) -> str:
        """Continue a stopped or failed run from its last checkpoint (`python -m training --resume`)."""
        run_dir = run_path(run_id, root)
        if not run_dir.is_dir():
            raise LaunchError(f"no run {run_id}")
        info = read_run(run_dir)
        if not info.config:
            raise LaunchError(f"run {run_id} has no config.json; it cannot be resumed (start a new run)")
        if info.state not in ("stopped", "failed"):
            raise LaunchError(f"run {run_id} is {info.state}; only a stopped or failed run can be resumed")
        if info.alive and not self._wait_exit(run_dir, info.status.get("pid"), 15.0):
            raise LaunchError(f"run {run_id} is {info.state} but its process is still shutting down; "
                              "try again in a moment")
        with launch_lock(root):
            if not allow_concurrent:
                refuse_if_busy(root)
            (run_dir / "STOP").unlink(missing_ok=True)
            status = dict(info.status)
            status.update(state="starting", pid=None, message="resuming", launcher=True, updated=round(time.time(), 3))
            write_json(run_dir / "status.json", status)
            proc = self._spawn(resume_command(run_dir, device), run_dir)
            self._claim(run_dir, proc.pid)
        return run_dir.name

    def _wait_exit(self, run_dir: Path, pid: Any, timeout: float) -> bool:
        """Give a process that has just reported 'stopped' time to exit; True once it has."""
        with self.lock:
            proc = self.procs.get(run_dir.resolve())
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self.reap()
            return True
        end = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > end:
                return False
            time.sleep(0.1)
        return True

    # --- stop ---
    def stop_run(self, run_id: str, root: str | os.PathLike | None = None) -> bool:
        """Ask a run to stop: the STOP file (checked between steps) and SIGTERM to its process.
        The loop saves a checkpoint and ends as 'stopped'. False when nothing was running."""
        run_dir = run_path(run_id, root)
        if not run_dir.is_dir():
            raise LaunchError(f"no run {run_id}")
        info = read_run(run_dir)
        with self.lock:
            proc = self.procs.get(run_dir)
        own = proc is not None and proc.poll() is None
        if info.state not in ACTIVE_STATES and not own:
            return False
        (run_dir / "STOP").write_text(f"stop requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        pid = proc.pid if own else info.status.get("pid")
        if pid and (own or _is_training_process(pid, run_dir)):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        return True

    # --- reap ---
    def reap(self) -> list[tuple[str, int]]:
        """Poll the processes this Launcher started; forget (and reap) the ones that ended. A run
        whose process ended without reporting is marked stopped (it was asked to stop) or failed,
        with the exit code and the end of its output. Returns [(run_id, exit code)]."""
        ended = []
        with self.lock:
            for path, proc in list(self.procs.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del self.procs[path]
                ended.append((path, rc))
        for path, rc in ended:
            status = read_json(path / "status.json", {}) or {}
            if status.get("state") in ACTIVE_STATES:
                asked = (path / "STOP").exists()
                tail = tail_output(path, 8).strip()
                message = ("stopped before training began" if asked else
                           f"the training process exited with code {rc} without reporting"
                           + (f": {tail.splitlines()[-1]}" if tail else ""))
                status.update(state="stopped" if asked else "failed", message=message, exit_code=rc,
                              updated=round(time.time(), 3))
                write_json(path / "status.json", status)
        return [(p.name, rc) for p, rc in ended]

    def running(self) -> list[str]:
        with self.lock:
            return [p.name for p, proc in self.procs.items() if proc.poll() is None]

    def wait(self, run_id: str, timeout: float | None = None, root: str | os.PathLike | None = None) -> int | None:
        """Wait for a run this Launcher started to end (tests, scripts); its exit code or None."""
        with self.lock:
            proc = self.procs.get(run_path(run_id, root))
        if proc is None:
            return None
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.reap()
        return rc


# Module-level helpers over one default Launcher (scripts and tests; the page keeps its own).
LAUNCHER = Launcher()


def start_run(*args, **kwargs) -> str:
    return LAUNCHER.start_run(*args, **kwargs)


def stop_run(run_id: str, root: str | os.PathLike | None = None) -> bool:
    return LAUNCHER.stop_run(run_id, root)


def resume_run(run_id: str, **kwargs) -> str:
    return LAUNCHER.resume_run(run_id, **kwargs)


def reap() -> list[tuple[str, int]]:
    return LAUNCHER.reap()


# ------------------------------------------------------------------ devices and time estimates

@functools.lru_cache(maxsize=1)
def device_info() -> dict[str, Any]:
    """What this machine can train on: CUDA GPUs (name, memory), MPS, CPU cores."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {"cuda": gpus, "mps": mps, "cpu_cores": os.cpu_count() or 1, "torch_threads": torch.get_num_threads()}


def available_devices() -> list[str]:
    info = device_info()
    return ["auto", "cpu"] + (["cuda"] if info["cuda"] else []) + (["mps"] if info["mps"] else [])


def resolved_device(device: str) -> str:
    """What 'auto' picks here (as the training loop does): cuda, mps or cpu."""
    if device != "auto":
        return device
    info = device_info()
    return "cuda" if info["cuda"] else ("mps" if info["mps"] else "cpu")


def describe(device: str) -> str:
    info = device_info()
    d = resolved_device(device)
    if d == "cuda" and info["cuda"]:
        g = info["cuda"][0]
        return f"GPU {g['name']} ({g['memory_gib']:g} GiB)"
    if d == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({info['cpu_cores']} cores)"


def is_heavy(model: str, image_size: int) -> bool:
    return model in HEAVY_MODELS and image_size >= HEAVY_MIN_SIZE


@functools.lru_cache(maxsize=32)
def _seconds_per_step(model: str, image_size: int, batch: int) -> float:
    """Median time of 2 timed forward+backward+AdamW steps (after one warm-up) on the CPU, with the
    precision and memory format the training loop picks there (`--amp auto`)."""
    import torch

    from models.architectures import build_torch

    from .torch_loop import amp_settings, uses_channels_last

    cpu = torch.device("cpu")
    amp = amp_settings(cpu, "auto", model)
    fmt = torch.channels_last if uses_channels_last(cpu) else torch.contiguous_format
    net, _ = build_torch(model, None)
    net = net.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=fmt)
    y = torch.arange(batch) % 2
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp[1], enabled=amp[0]):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2])


def estimate_cpu_epoch_time(model: str, image_size: int, batch_size: int, n_images: int,
                            val_fraction: float = 0.15, probe_batch: int = 4) -> dict[str, float]:
    """Rough CPU time per epoch from timing a few real training steps of `model` here.
    Steps are timed at a batch of at most `probe_batch` and scaled linearly (cached per shape);
    validation is counted as a third of a training pass over its images."""
    if spec(model).framework != "torch":
        raise LaunchError(f"{spec(model).display}: the CPU estimate covers the PyTorch models")
    b = max(1, min(int(batch_size), probe_batch))
    per_image = _seconds_per_step(model, int(image_size), b) / b
    n_train = n_images * (1 - val_fraction)
    steps = max(1, math.ceil(n_train / batch_size))
    epoch = per_image * (steps * batch_size + n_images * val_fraction / 3)
    return {"seconds_per_step": per_image * batch_size, "steps_per_epoch": steps, "seconds_per_epoch": epoch}


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


# ------------------------------------------------------------------ reading a run for display

def chart_rows(rows: list[dict[str, Any]], steps_per_epoch: int | None = None) -> list[dict[str, Any]]:
    """metrics.jsonl rows -> points for the charts: x in (fractional) epochs; a resumed run's
    redone steps replace the earlier ones, so each point appears once."""
    latest: dict[tuple, dict] = {}
    for r in rows:
        split = r.get("split")
        if split not in ("train", "val") or "epoch" not in r:
            continue
        step = int(r.get("step") or 0)
        latest[(split, int(r["epoch"]), step if split == "train" else 0)] = r
    points = []
    for (split, epoch, step), r in latest.items():
        spe = steps_per_epoch or r.get("steps_per_epoch")
        x = float(epoch) if split == "val" or not spe else (epoch - 1) + min(step, spe) / spe
        points.append({"split": split, "x": x, "epoch": epoch, "step": step, "loss": r.get("loss"),
                       "accuracy": r.get("accuracy"), "auc": r.get("auc"), "time": r.get("time")})
    return sorted(points, key=lambda p: (p["x"], p["split"] == "val"))


def progress(status: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fraction done, images/s and an ETA from status.json and the metric rows' timestamps."""
    epochs = int(status.get("epochs") or 0)
    spe = int(status.get("steps_per_epoch") or 0)
    epoch = int(status.get("epoch") or 0)
    step = int(status.get("step") or 0)
    done_steps = 0
    if epochs and spe:
        # status 'epoch' is the epoch in progress (1-based) while training, the last finished one after it
        done_steps = (epoch - 1) * spe + step if 0 < step < spe else epoch * spe
        done_steps = max(0, min(done_steps, epochs * spe))
    fraction = done_steps / (epochs * spe) if epochs and spe else 0.0
    # Seconds per step from the latest stretch of train rows (a resume starts a new stretch).
    train = [r for r in rows if r.get("split") == "train" and "global_step" in r and "time" in r]
    stretch: list[dict] = []
    for r in train:
        if stretch and r["global_step"] <= stretch[-1]["global_step"]:
            stretch = []
        stretch.append(r)
    eta = None
    if len(stretch) >= 2 and epochs and spe:
        dt = stretch[-1]["time"] - stretch[0]["time"]
        dg = stretch[-1]["global_step"] - stretch[0]["global_step"]
        if dg > 0 and dt > 0:
            eta = (epochs * spe - done_steps) * dt / dg
    return {"fraction": fraction, "epoch": epoch, "epochs": epochs, "step": step, "steps_per_epoch": spe,
            "images_per_s": status.get("images_per_s"), "eta_s": eta}


def run_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run's best checkpoint when it has a final model card beside it (card.json), else None."""
    run_dir = Path(run_dir)
    card = read_json(run_dir / "card.json")
    if not isinstance(card, dict) or card.get("name") not in MODEL_NAMES:
        return None
    ckpt = run_dir / f"best{spec(card['name']).checkpoint_ext}"
    return ckpt if ckpt.is_file() else None
