"""The Training page through Streamlit's AppTest: a real training subprocess on synthetic data.

LESION_LENS_RUNS, LESION_LENS_DATA and LESION_LENS_WEIGHTS_DIR point into a temporary folder.
The run is tiny (PyTorch CNN, 32 px, batch 8) on synthetic images, with enough epochs that it is
still running when Stop is pressed even on a fast machine.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_promote import fake_run
from training.rundir import read_run
from training.synthetic import write_dataset

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "train.py")
TIMEOUT = 120
EPOCHS = 10  # long enough to still be running at Stop on a fast machine, below the early-stopping patience


@pytest.fixture
def env(tmp_path, monkeypatch):
    data, runs, weights = tmp_path / "data", tmp_path / "runs", tmp_path / "weights"
    monkeypatch.setenv("LESION_LENS_DATA", str(data))
    monkeypatch.setenv("LESION_LENS_RUNS", str(runs))
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("LESION_LENS_TRAINING", raising=False)
    return data, runs, weights


def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    no_exception(at)
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def metric_rows(at: AppTest) -> int:
    m = re.search(r"(\d+) metric rows", captions(at))
    return int(m.group(1)) if m else -1


def button_keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def listed_runs(at: AppTest) -> dict[str, str]:
    (df,) = [d.value for d in at.dataframe]
    return dict(zip(df["run"], df["state"]))


def poll(at: AppTest, cond, timeout: float = 120.0, every: float = 0.5):
    end = time.time() + timeout
    while True:
        at.run()
        no_exception(at)
        if cond(at) or time.time() > end:
            return cond(at)
        time.sleep(every)


def start_watch_stop(env) -> tuple[AppTest, str, Path]:
    """Start a run from the page, see its metric rows grow over reruns, stop it: (app, run id, run dir)."""
    data, runs, weights = env
    write_dataset(data / "synth", per_class=100, size=32)
    at = page()
    assert at.selectbox(key="train_data").value == "synth"  # a real folder first, SYNTHETIC demo offered too
    assert any("SYNTHETIC" in o for o in at.selectbox(key="train_data").options)
    at.selectbox(key="train_model").set_value("torch_cnn").run()
    at.number_input(key="train_epochs").set_value(EPOCHS)
    at.number_input(key="train_size").set_value(32)
    at.number_input(key="train_batch").set_value(8)
    at.button(key="train_start").click().run()
    no_exception(at)
    rid = at.session_state["train_watch"]
    run = runs / rid
    cmd = json.loads((run / "launch.json").read_text())["command"]
    assert cmd[cmd.index("--data") + 1] == str((data / "synth").resolve()) and cmd[cmd.index("--out") + 1] == str(run)

    # live: the metric rows grow from one rerun to the next
    seen: list[int] = []

    def growing(at):
        n = metric_rows(at)
        if n > 0 and (not seen or n > seen[-1]):
            seen.append(n)
        return len(seen) >= 3

    assert poll(at, growing), (seen, captions(at), (run / "stdout.txt").read_text())
    assert len(at.get("plotly_chart")) == 2  # loss and accuracy
    bar = at.get("progress")[0].proto.text
    assert re.search(rf"epoch \d+/{EPOCHS} · step \d+/\d+ · [\d.]+ images/s", bar), bar
    assert "Device: cpu" in captions(at) or "Device: cuda" in captions(at)
    assert "train_start" in button_keys(at) and at.button(key="train_start").disabled  # one run at a time
    assert read_run(run).state == "running"

    at.button(key="train_stop").click().run()
    no_exception(at)
    assert poll(at, lambda at: read_run(run).state == "stopped", 120), (run / "stdout.txt").read_text()
    at.run()
    assert listed_runs(at)[rid] == "stopped"
    assert "train_stop" not in button_keys(at) and not at.button(key="train_start").disabled
    return at, rid, run


def test_start_watch_stop_and_resume(env):
    at, rid, run = start_watch_stop(env)
    first_pid = read_run(run).status["pid"]
    at.button(key="train_resume").click().run()
    no_exception(at)
    info = read_run(run)
    assert info.state in ("starting", "running") and info.alive and info.status["pid"] != first_pid
    assert not (run / "STOP").exists()
    cmd = json.loads((run / "launch.json").read_text())["command"]  # the original launch is kept
    assert "--out" in cmd
    # stop the resumed process again (and so end the test with no process left behind)
    assert poll(at, lambda at: "train_stop" in button_keys(at), 30)
    at.button(key="train_stop").click().run()
    assert poll(at, lambda at: read_run(run).state == "stopped" and not read_run(run).alive, 120), \
        (run / "stdout.txt").read_text()


@pytest.mark.slow
def test_resume_to_the_end_and_promote(env):
    data = env[0]
    at, rid, run = start_watch_stop(env)
    stopped_rows = metric_rows(at)
    at.button(key="train_resume").click().run()
    no_exception(at)
    assert poll(at, lambda at: read_run(run).state == "finished", 180), (run / "stdout.txt").read_text()
    at.run()
    assert listed_runs(at)[rid] == "finished" and metric_rows(at) > stopped_rows
    assert "SYNTHETIC" in "\n".join(str(w.value) for w in at.warning)  # the card says synthetic

    at.button(key="train_promote").click().run()
    no_exception(at)
    assert any("Promoted" in str(s.value) for s in at.success)
    from models import load_classifier

    clf = load_classifier("torch_cnn")
    assert clf.card["promoted_from"] == rid and clf.card["synthetic"] and clf.image_size == 32
    assert 0.0 <= clf.predict((data / "synth" / "malignant" / "000.png").read_bytes()).prob_malignant <= 1.0


def test_promote_a_finished_run_from_the_page(env):
    _, runs, weights = env
    run = fake_run(runs, "20250101-000000-torch_cnn-aaaaaa", 0.3)
    at = page()
    assert "Model card" in "\n".join(str(m.value) for m in at.markdown)
    at.button(key="train_promote").click().run()
    no_exception(at)
    assert any("Promoted" in str(s.value) for s in at.success)
    from models import load_classifier

    assert load_classifier("torch_cnn").card["promoted_from"] == run.name
    at.run()  # the page now says so
    assert any("is the app's PyTorch CNN now" in str(s.value) for s in at.success)


def test_read_only_page_has_no_buttons_but_lists_runs(env, monkeypatch):
    data, runs, _ = env
    monkeypatch.setenv("LESION_LENS_TRAINING", "off")
    fake_run(runs, "20250101-000000-torch_cnn-aaaaaa", 0.3)
    active = fake_run(runs, "20250102-000000-torch_cnn-bbbbbb", 0.3, state="running")
    (active / "card.json").unlink()
    dead = fake_run(runs, "20250103-000000-torch_cnn-cccccc", 0.3)
    (dead / "card.json").unlink()
    (dead / "status.json").write_text(json.dumps({"state": "running", "pid": 999_999_999, "epoch": 1, "epochs": 3}))
    (dead / "log.txt").write_text("03:00:00 epoch 1 began\n03:00:05 something went boom\n")
    at = page()
    assert "LESION_LENS_TRAINING=off" in "\n".join(str(i.value) for i in at.info)
    assert listed_runs(at) == {"20250101-000000-torch_cnn-aaaaaa": "finished",
                               "20250102-000000-torch_cnn-bbbbbb": "running",
                               "20250103-000000-torch_cnn-cccccc": "failed"}
    for rid in listed_runs(at):
        at.selectbox(key="train_watch").set_value(rid).run()
        no_exception(at)
        # no start, stop, resume, finalize or promote; only Evaluate (a read) for a run with a card
        assert {b.key for b in at.button} <= {"train_evaluate"}, (rid, [b.label for b in at.button])
        assert not at.number_input and not at.checkbox
    # the dead run shows as failed with the end of its log
    at.selectbox(key="train_watch").set_value(dead.name).run()
    assert "ended without reporting" in "\n".join(str(e.value) for e in at.error)
    assert "something went boom" in "\n".join(str(c.value) for c in at.code)


# slow: waits for the page's background timing of real EfficientNet-Lite0 training steps (95 s here)
@pytest.mark.slow
def test_guard_rails_one_run_at_a_time_and_slow_cpu_runs(env):
    data, runs, _ = env
    write_dataset(data / "small", per_class=4, size=32)
    active = fake_run(runs, "20250102-000000-torch_cnn-bbbbbb", 0.3, state="running")
    (active / "card.json").unlink()
    at = page()
    assert at.button(key="train_start").disabled
    assert "One run at a time" in "\n".join(str(i.value) for i in at.info)
    at.checkbox(key="train_allow_many").check().run()
    assert not at.button(key="train_start").disabled
    # inputs are bounded as the training CLI's
    from training.train import LIMITS

    for key, limit in (("train_epochs", "epochs"), ("train_size", "image_size"), ("train_batch", "batch_size"),
                       ("train_lr", "lr")):
        w = at.number_input(key=key)
        assert (w.min, w.max) == pytest.approx(LIMITS[limit])
    # a large model on the CPU: a measured time warning, and Start needs a tick
    at.selectbox(key="train_model").set_value("efficientnet_lite0").run()
    assert at.number_input(key="train_size").value == 224 and at.radio(key="train_weights").value == "imagenet"
    at.number_input(key="train_size").set_value(160).run()
    at.number_input(key="train_batch").set_value(2).run()  # steps are timed at the run's batch size
    at.selectbox(key="train_device").set_value("cpu").run()
    no_exception(at)
    # the steps are timed in the background: the page answers at once, the estimate follows
    warning = lambda at: "\n".join(str(w.value) for w in at.warning)  # noqa: E731
    assert "on the CPU is slow" in warning(at)
    assert poll(at, lambda at: "per epoch" in warning(at), 300), warning(at)
    assert re.search(r"EfficientNet-Lite0 at 160 px on the CPU is slow: about \*\*[\d a-z]+ per epoch\*\*.*"
                     r"timed from a few training steps here", warning(at))
    assert at.button(key="train_start").disabled
    at.checkbox(key="train_slow_ok").check().run()
    assert not at.button(key="train_start").disabled
    at.selectbox(key="train_model").set_value("torch_cnn").run()
    assert not at.warning and at.radio(key="train_weights").options == ["none"]
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == [active.name]  # nothing started


def test_both_pages_run_inside_the_app(env):
    _, runs, _ = env
    fake_run(runs, "20250101-000000-torch_cnn-aaaaaa", 0.3)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    no_exception(at)
    at.switch_page("pages/train.py").run()
    no_exception(at)
    assert at.title[0].value == "Training" and "20250101-000000-torch_cnn-aaaaaa" in listed_runs(at)
    at.switch_page("pages/evaluate.py").run()
    no_exception(at)
    assert at.title[0].value == "Evaluate" and any("20250101-000000-torch_cnn-aaaaaa" in o
                                                   for o in at.selectbox(key="eval_model").options)
