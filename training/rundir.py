"""The run directory: the only channel between a training process and whoever watches it.

runs/<id>/ holds config.json, metrics.jsonl (appended, flushed), status.json (replaced
atomically), log.txt, checkpoints and, at the end, card.json. Writers live in the training
process (`RunWriter`); readers (`read_run`, `list_runs`) are what the app uses.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from models.registry import atomic_write_bytes

RUNS_DIR = Path(os.environ.get("LESION_LENS_RUNS", Path(__file__).resolve().parent.parent / "runs"))
STATES = ("starting", "running", "finished", "failed", "stopped")
ACTIVE_STATES = ("starting", "running")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def runs_dir() -> Path:
    return Path(os.environ.get("LESION_LENS_RUNS", RUNS_DIR))


def new_run_id(model: str) -> str:
    """Time-sortable and unique even for two runs started in the same second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{model}-{secrets.token_hex(3)}"


def create_run_dir(model: str, root: str | os.PathLike | None = None) -> Path:
    """Make a fresh run directory; `mkdir` without exist_ok means two runs never share one."""
    root = Path(root) if root else runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / new_run_id(model)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def safe_run_path(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """A run id from the UI -> its folder under runs/, refusing anything that could escape it."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or run_id in (".", ".."):
        raise ValueError(f"not a valid run id: {run_id!r}")
    root = (Path(root) if root else runs_dir()).resolve()
    path = (root / run_id).resolve()
    if path.parent != root:
        raise ValueError(f"not a valid run id: {run_id!r}")
    return path


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


class RunWriter:
    """Used by the training process (rank 0 only) to report through the run directory."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.status: dict[str, Any] = {"state": "starting", "pid": os.getpid(), "epoch": 0, "epochs": 0,
                                       "step": 0, "steps_per_epoch": 0, "message": "", "device": None}
        self.write_error: OSError | None = None  # the last failed write (a full disk), kept, not raised
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in self.path.glob(".*.tmp"):  # half-written files of a killed process
                stale.unlink(missing_ok=True)
            old = read_json(self.path / "status.json")
            if isinstance(old, dict):  # a resumed run keeps what it had, with the new pid
                self.status.update({k: v for k, v in old.items() if k in ("epoch", "epochs", "device", "best")})
            self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")
            self._log = open(self.path / "log.txt", "a", encoding="utf-8")

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        self._log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        self._log.flush()

    def metric(self, **row: Any) -> None:
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **row}
        self._metrics.write(json.dumps(row, default=_json_default) + "\n")
        self._metrics.flush()

    def update(self, **fields: Any) -> None:
        self.status.update(fields)
        self.status["pid"] = os.getpid()
        self.status["updated"] = round(time.time(), 3)
        if self.enabled:
            try:
                write_json(self.path / "status.json", self.status)
            except OSError as exc:  # a full disk must not turn a clean failure into a traceback
                self.write_error = exc

    def write_config(self, config: dict[str, Any]) -> None:
        if self.enabled:
            write_json(self.path / "config.json", config)

    def stop_requested(self) -> bool:
        return self.enabled and (self.path / "STOP").exists()

    def close(self) -> None:
        if self.enabled:
            for f in (self._metrics, self._log):
                try:
                    f.close()
                except OSError as exc:
                    self.write_error = exc


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps and stops cleanly."""

    def __init__(self):
        self.signalled = False

    def install(self) -> "StopFlag":
        def handler(signum, frame):
            self.signalled = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (tests calling the loop directly)
                pass
        return self


# ---------------------------------------------------------------- readers (for the app)

def pid_alive(pid: Any) -> bool:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete rows of metrics.jsonl (a half-written last line is skipped)."""
    rows = []
    try:
        with open(Path(path) / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return rows


def tail_log(path: str | os.PathLike, lines: int = 20, name: str = "log.txt") -> str:
    """The last lines of a run's log.txt (or of another text file in the run, by `name`)."""
    try:
        with open(Path(path) / name, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


@dataclass
class RunInfo:
    id: str
    path: Path
    state: str
    status: dict[str, Any]
    config: dict[str, Any]
    card: dict[str, Any] | None
    alive: bool
    message: str = ""
    best: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str | None:
        return self.config.get("model") or (self.card or {}).get("name")


def read_run(path: str | os.PathLike) -> RunInfo:
    """A run directory -> its true state; 'running' with a dead pid is reported as failed."""
    path = Path(path)
    status = read_json(path / "status.json", {}) or {}
    config = read_json(path / "config.json", {}) or {}
    card = read_json(path / "card.json")
    state = status.get("state", "starting")
    alive = pid_alive(status.get("pid"))
    message = status.get("message", "")
    if state in ACTIVE_STATES and not alive:
        started = status.get("updated") or config.get("created") or 0
        if status.get("pid") or time.time() - float(started or 0) > 60:
            state = "failed"
            message = "the training process ended without reporting (killed or crashed)"
    best = status.get("best") or {}
    return RunInfo(path.name, path, state, status, config, card if isinstance(card, dict) else None,
                   alive, message, best)


def list_runs(root: str | os.PathLike | None = None) -> list[RunInfo]:
    root = Path(root) if root else runs_dir()
    if not root.is_dir():
        return []
    runs = [read_run(p) for p in root.iterdir() if p.is_dir() and RUN_ID_RE.match(p.name)]
    return sorted(runs, key=lambda r: r.id, reverse=True)


def active_runs(root: str | os.PathLike | None = None) -> Iterable[RunInfo]:
    return [r for r in list_runs(root) if r.state in ACTIVE_STATES]
