"""Start, watch, stop and resume training runs from the app (no Streamlit here).

The app never trains in its own process: `start_run` spawns `python -m training ... --out
runs/<id>` in a new session (so a Streamlit rerun or a closed browser tab leaves it running),
with its stdout/stderr in `runs/<id>/stdout.txt`. Everything a page shows is read back from
the run directory (training.rundir), so every browser session sees the same runs.

Guard rails live here, not in the page: `LESION_LENS_TRAINING=off` (read-only), datasets
only from folders under `LESION_LENS_DATA` (or the generated synthetic demo set; see
training.datasets), numeric bounds from training.train.LIMITS, and one active run per machine
unless asked otherwise (checked under a file lock, so two browser sessions cannot both start
"the only" run).
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from models.device import DEVICES
from models.registry import MODEL_NAMES, spec

from .datasets import DATA_ENV, allowed_data, count_images
from .rundir import (ACTIVE_STATES, active_runs, create_run_dir, pid_alive, read_json, read_run, runs_dir,
                     safe_run_path, tail_log, write_json)
from .train import LIMITS

ROOT = Path(__file__).resolve().parent.parent
TRAINING_ENV = "LESION_LENS_TRAINING"
WEIGHT_CHOICES = ("imagenet", "none")
METRIC_ROWS_PER_EPOCH = 20  # --log-every is chosen so the live chart gets about this many points


class LaunchError(ValueError):
    """A run cannot be started, stopped, resumed or promoted; the message is for the user."""


# ------------------------------------------------------------------ settings

def training_enabled() -> bool:
    """False when LESION_LENS_TRAINING is off/0/false/no: the Training page is read-only."""
    return os.environ.get(TRAINING_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


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

    def finalize_run(self, run_id: str, root: str | os.PathLike | None = None) -> int:
        """Write the model card of a stopped or failed run from its best checkpoint in a child process
        (`python -m training.finalize`, the code a finished run's card comes from); returns its pid.
        finalize.json in the run names the process while it works (`finalizing`)."""
        run_dir = run_path(run_id, root)
        info = read_run(run_dir)
        if info.state not in ("stopped", "failed"):
            raise LaunchError(f"run {run_id} is {info.state}; only a stopped or failed run can be finalized")
        # The loop reports 'stopped' just before its process exits: give it the time resume_run gives it,
        # or the Finalize button the page shows at once answers "try again".
        if info.alive and not self._wait_exit(run_dir, info.status.get("pid"), 15.0):
            raise LaunchError(f"run {run_id} is {info.state} but its process is still shutting down; try again")
        if not (run_dir / "best.json").exists():
            raise LaunchError(f"run {run_id} has no best checkpoint yet (it stopped before its first validation); "
                              "resume it instead")
        with launch_lock(root):
            if finalizing(run_dir):
                raise LaunchError(f"run {run_id} is being finalized already")
            proc = self._spawn([sys.executable, "-m", "training.finalize", str(run_dir)], run_dir)
            write_json(run_dir / "finalize.json", {"pid": proc.pid, "started": round(time.time(), 3)})
        return proc.pid

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


def finalizing(run_dir: str | os.PathLike) -> bool:
    """Is a `python -m training.finalize` of this run still working?"""
    pid = (read_json(Path(run_dir) / "finalize.json", {}) or {}).get("pid")
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError, TypeError):
        return False
    return "training.finalize" in args


# ------------------------------------------------------------------ a finished run

def run_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run's best checkpoint when it has a final model card beside it (card.json), else None."""
    run_dir = Path(run_dir)
    card = read_json(run_dir / "card.json")
    if not isinstance(card, dict) or card.get("name") not in MODEL_NAMES:
        return None
    ckpt = run_dir / f"best{spec(card['name']).checkpoint_ext}"
    return ckpt if ckpt.is_file() else None
