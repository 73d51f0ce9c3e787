"""Training: start a run in a separate process, watch it live, stop, resume, promote.

The page only reads and writes the run directory (runs/<id>/) and asks training.launcher to
start or stop processes, so a run outlives a closed tab or a rerun, and every browser
session sees the same runs. LESION_LENS_TRAINING=off makes it read-only.
"""

from __future__ import annotations

import datetime as _dt
import html
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from models.device import available_devices, device_info, resolved_device
from models.registry import MODEL_NAMES, read_card, shipped_card, spec
from pages import common, run_view
from training import cpu_estimate, datasets, launcher
from training.datasets import DatasetChoiceError
from training.launcher import LaunchError
from training.promote import PromoteError, promote
from training.rundir import ACTIVE_STATES, list_runs, read_metrics, read_run, safe_run_path, tail_log
from training.train import DEFAULT_EPOCHS, DEFAULT_LR, LIMITS

SYNTHETIC = common.SYNTHETIC_OPTION
STATE_COLOURS = {"starting": "#7d6608", "running": "#1e8449", "finished": "#2471a3", "stopped": "#6c3483",
                 "failed": "#b03a2e"}
SPLIT_COLOURS = {"train": "#2471a3", "val": "#d35400"}


@st.cache_resource(show_spinner=False)
def process_registry() -> launcher.Launcher:
    """One per server process: the Popen objects of the runs it started (polled, so reaped)."""
    return launcher.Launcher()


REG = process_registry()
REG.reap()
ENABLED = launcher.training_enabled()


# ------------------------------------------------------------------ helpers

def state_badge(state: str) -> str:
    return (f'<span class="ll-state" style="background:{STATE_COLOURS.get(state, "#555")};color:white;'
            f'padding:.1rem .5rem;border-radius:.3rem;font-weight:600">{html.escape(state)}</span>')


def run_model(info) -> str | None:
    return info.model or info.status.get("model")


def run_is_synthetic(info) -> bool:
    data = str(info.config.get("data") or "")
    return bool((info.card or {}).get("synthetic")) or datasets.SYNTHETIC_DIR_NAME in data or (
        bool(data) and (Path(data) / "SYNTHETIC.txt").exists())


def started_at(info) -> str:
    t = info.config.get("created") or (info.status.get("updated") if not info.config else None)
    if not t:
        try:
            t = info.path.stat().st_mtime
        except OSError:
            return ""
    return _dt.datetime.fromtimestamp(float(t)).strftime("%m-%d %H:%M")


def fmt(v, digits: int = 3) -> str:
    return common.fmt_metric(v, digits)


def dataset_label(opt: str, base: Path | None) -> str:
    return common.dataset_label(opt, base, "SYNTHETIC demo set (generated cartoons, not real lesions)")


# (split, metric, legend) per chart. Validation is shown by its AUC: the number that picks the best
# epoch and that the status line and the model card report. The accuracy the loop logs for validation
# is the raw network's at 0.5, before temperature scaling and before the card's threshold is chosen on
# validation: a model can rank well (AUC 0.96) while all its raw outputs sit on one side of 0.5
# (accuracy 0.50), so plotting it as "validation accuracy" contradicted the card.
LOSS_TRACES = [("train", "loss", "train"), ("val", "loss", "validation")]
SCORE_TRACES = [("train", "accuracy", "train accuracy (at 0.5)"), ("val", "auc", "validation AUC")]


def curves(points: list[dict], traces, title: str, key: str, uirev: str, epochs: int,
           card: dict | None = None) -> None:
    fig = go.Figure()
    for split, metric, name in traces:
        pts = [p for p in points if p["split"] == split and p.get(metric) is not None]
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p[metric] for p in pts], name=name,
                                 mode="lines+markers" if split == "val" else "lines",
                                 line={"color": SPLIT_COLOURS[split], "width": 2},
                                 marker={"size": 7}))
    v = (card or {}).get("validation") or {}
    if card and card.get("best_epoch") and v.get("auc") is not None:
        fig.add_trace(go.Scatter(
            x=[card["best_epoch"]], y=[v["auc"]], mode="markers", name="model card",
            marker={"size": 13, "symbol": "star", "color": "#1e8449", "line": {"color": "white", "width": 1}},
            hovertemplate=(f"model card (epoch {card['best_epoch']}): AUC {common.fmt_metric(v.get('auc'), 3)}, "
                           f"accuracy {common.fmt_metric(v.get('accuracy'), 3)} at threshold "
                           f"{common.fmt_metric(card.get('threshold'), 3)}<extra></extra>")))
    loss = traces[0][1] == "loss"
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      uirevision=uirev, showlegend=True,
                      # the whole run's width from the start: the lines grow to the right, the axis stays put
                      xaxis={"title": "epoch", "range": [0, max([epochs] + [p["x"] for p in points]) * 1.01]},
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
                      yaxis={"rangemode": "tozero"} if loss else {"range": [0, 1.02]})
    st.plotly_chart(fig, key=key, config={"displayModeBar": False})


def failure_details(info) -> None:
    st.error(f"Run {info.id} failed: {info.message or 'no message'}", icon=":material/error:")
    log = tail_log(info.path, 20).strip()
    out = launcher.tail_output(info.path, 20).strip()
    if log:
        st.caption("End of its log (log.txt):")
        st.code(log, language=None)
    if out and out not in log:
        st.caption("End of its output (stdout.txt):")
        st.code(out, language=None)


# ------------------------------------------------------------------ how long a CPU run takes

@st.cache_resource(show_spinner=False)
def _estimates() -> dict:
    """One per server process: CPU step timings run in a background thread, one at a time, so
    choosing DenseNet161 never freezes the page (timing its steps takes tens of seconds)."""
    return {"pool": ThreadPoolExecutor(1, thread_name_prefix="cpu-estimate"), "jobs": {}, "lock": threading.Lock()}


def timed_estimate(model: str, size: int, batch: int, n: int) -> Future:
    est = _estimates()
    key = (model, size, batch, n)
    with est["lock"]:
        if key not in est["jobs"]:
            # Timed at the run's own batch size: a smaller probe batch scaled up read 2-3x slow here.
            est["jobs"][key] = est["pool"].submit(cpu_estimate.estimate_cpu_epoch_time, model, size, batch, n,
                                                  probe_batch=batch)
        return est["jobs"][key]


def measured_speed(runs, model: str, size: int) -> tuple[float, str] | None:
    """Training images/s of the latest run of `model` at `size` px on this machine's CPU (status.json)."""
    for r in runs:  # newest first
        if (run_model(r) == model and int(r.config.get("image_size") or 0) == size
                and str(r.status.get("device") or "").startswith("cpu") and (r.status.get("images_per_s") or 0) > 0):
            return float(r.status["images_per_s"]), r.id
    return None


def epoch_seconds(images_per_s: float, n: int, val_fraction: float = 0.15) -> float:
    """An epoch at `images_per_s` training images per second: the training share of `n` images, and
    validation as a third of a training pass over the rest (a forward pass only)."""
    return n * ((1 - val_fraction) + val_fraction / 3) / images_per_s


def slow_cpu_warning(model: str, size: int, batch: int, epochs: int, n: int, runs, polling: bool = False) -> None:
    """A heavy model on the CPU: how long it would take, from a past run's measured speed here, else from
    timing a few training steps in the background (`polling`: this runs as a fragment every second
    until they are done, then reruns the page once, which stops the polling)."""
    seen = measured_speed(runs, model, size)
    fut = None if seen else timed_estimate(model, size, batch, n)
    if seen:
        ips, rid = seen
        per_epoch = epoch_seconds(ips, n)
        how = f"measured: run {rid} trained at {ips:.1f} images/s on this CPU"
    elif fut.done() and fut.exception() is None:
        est = fut.result()
        per_epoch = est["seconds_per_epoch"]
        how = (f"timed from a few training steps here: {batch / est['seconds_per_step']:.1f} images/s; "
               "other work on the machine changes it")
    else:
        per_epoch = None
        how = ("the time could not be measured here: " + type(fut.exception()).__name__) if fut.done() else ""
    if per_epoch is not None:
        how_long = (f"about **{run_view.format_duration(per_epoch)} per epoch** on these {n} images, "
                    f"**{run_view.format_duration(per_epoch * epochs)} for {epochs} epochs** ({how})")
    elif how:
        how_long = f"hours for a real dataset ({how})"
    else:
        how_long = "timing a few training steps in the background to say how slow…"
    st.warning(f"{common.display(model)} at {size} px on the CPU is slow: {how_long}. "
               "A GPU, a smaller image size or the PyTorch CNN is much faster.", icon=":material/timer:")
    if polling and (fut is None or fut.done()):
        st.rerun(scope="app")


def cpu_warning(model: str, size: int, batch: int, epochs: int, n: int, runs) -> None:
    pending = measured_speed(runs, model, size) is None and not timed_estimate(model, size, batch, n).done()
    st.fragment(slow_cpu_warning, run_every=1.0 if pending else None)(model, size, batch, epochs, n, runs, pending)


# ------------------------------------------------------------------ start a run

def model_changed() -> None:
    m = st.session_state["train_model"]
    st.session_state["train_size"] = spec(m).image_size
    st.session_state["train_lr"] = float(DEFAULT_LR[m])
    st.session_state["train_epochs"] = int(DEFAULT_EPOCHS[m])
    st.session_state["train_weights"] = "imagenet" if spec(m).init == "imagenet" else "none"


def start_form(runs) -> None:
    base = datasets.data_base()
    st.session_state.setdefault("train_model", "torch_cnn")
    if "train_size" not in st.session_state:
        model_changed()
    st.session_state.setdefault("train_batch", 32)
    with st.container(border=True):
        st.subheader("Start a run")
        c1, c2 = st.columns([1, 2])
        model = c1.selectbox("Model", MODEL_NAMES, key="train_model", format_func=common.display, on_change=model_changed)
        options = datasets.list_datasets(base) + [SYNTHETIC]
        data = c2.selectbox("Dataset", options, key="train_data", format_func=lambda o: dataset_label(o, base),
                            help="Folders with benign/ and malignant/ inside the dataset folder set by "
                                 "LESION_LENS_DATA" + (f" ({base})" if base else " (not set here)") +
                                 ", or a generated SYNTHETIC set for trying the pipeline.")
        if base is None:
            c2.caption("LESION_LENS_DATA is not set, so only the SYNTHETIC demo set is offered.")
        if data == SYNTHETIC:
            c2.caption(f"{common.SYNTHETIC_NOTE}: made once in runs/{datasets.SYNTHETIC_DIR_NAME}/; a model trained "
                       "on it learns cartoons and is labelled SYNTHETIC.")
        c = st.columns(5)
        epochs = c[0].number_input("Epochs", *LIMITS["epochs"], step=1, key="train_epochs")
        size = c[1].number_input("Image size (px)", *LIMITS["image_size"], step=16, key="train_size",
                                 help=f"{common.display(model)} was designed for {spec(model).image_size} px.")
        batch = c[2].number_input("Batch size", *LIMITS["batch_size"], step=1, key="train_batch")
        lr = c[3].number_input("Learning rate", float(LIMITS["lr"][0]), float(LIMITS["lr"][1]), step=1e-4,
                               format="%.1e", key="train_lr", help="Peak learning rate (warm-up, then cosine decay).")
        weight_opts = ["imagenet", "none"] if spec(model).init == "imagenet" else ["none"]
        if st.session_state.get("train_weights") not in weight_opts:
            st.session_state["train_weights"] = weight_opts[0]
        weights = c[4].radio("Initial weights", weight_opts, key="train_weights", horizontal=True,
                             help="imagenet: start from weights pretrained on ImageNet (when reachable here); "
                                  "none: random initialisation.")
        d1, d2 = st.columns([1, 2])
        devices = available_devices()
        if st.session_state.get("train_device") not in devices:
            st.session_state["train_device"] = "auto"
        device = d1.selectbox("Device", devices, key="train_device")
        info = device_info()
        gpus = "; ".join(f"cuda:{g['index']} {g['name']} ({g['memory_gib']:g} GiB)" for g in info["cuda"])
        d2.markdown(f"**Uses:** {run_view.describe_device(device)}  \n"
                    f"This machine: {gpus or 'no CUDA GPU'}{'; Apple MPS' if info['mps'] else ''}; "
                    f"{info['cpu_cores']} CPU cores.")
        active = [r for r in runs if r.state in ACTIVE_STATES]
        allow_many = st.checkbox("Allow more than one run at a time", key="train_allow_many",
                                 help="Runs share this machine's CPU/GPU; two at once each take about twice as long.")
        blocked = bool(active) and not allow_many
        if blocked:
            st.info(f"Run {active[0].id} is in progress. One run at a time on this machine: stop it, wait "
                    "for it, or tick “Allow more than one run at a time”.", icon=":material/hourglass_top:")
        slow_ok = True
        if resolved_device(device) == "cpu" and cpu_estimate.is_heavy(model, int(size)):
            n = 0 if data == SYNTHETIC else sum(datasets.count_images(base / data).values()) if base else 0
            n = n or datasets.SYNTHETIC_PER_CLASS["train"] * 2
            cpu_warning(model, int(size), int(batch), int(epochs), n, runs)
            slow_ok = st.checkbox("Start it anyway", key="train_slow_ok")
        start = st.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:",
                          disabled=blocked or not slow_ok)
    if start:
        try:
            path = datasets.synthetic_demo() / "train" if data == SYNTHETIC else datasets.resolve_dataset(data, base)
            rid = REG.start_run(model, path, int(epochs), int(size), int(batch), float(lr), weights, device,
                                allow_concurrent=allow_many)
        except (LaunchError, DatasetChoiceError, OSError) as exc:
            st.error(str(exc), icon=":material/block:")
            return
        st.session_state["train_watch"] = rid
        st.toast(f"Started run {rid}", icon=":material/play_arrow:")
        st.rerun()


# ------------------------------------------------------------------ one run, live

def watch(run_id: str) -> None:
    REG.reap()
    try:
        path = safe_run_path(run_id)
    except ValueError as exc:
        st.error(str(exc))
        return
    info = read_run(path)
    rows = read_metrics(path)
    model = run_model(info)
    prog = run_view.progress(info.status, rows)
    st.markdown(f"**{run_id}** &nbsp; {state_badge(info.state)} &nbsp; "
                f"{html.escape(common.display(model)) if model in MODEL_NAMES else ''}"
                f"{' &nbsp; **SYNTHETIC data**' if run_is_synthetic(info) else ''}", unsafe_allow_html=True)
    device = info.status.get("device") or "(not chosen yet)"
    st.caption(f"Device: {device} · {info.message or ''}")
    if info.state in ACTIVE_STATES or info.state == "stopped":
        bits = [f"epoch {prog['epoch']}/{prog['epochs']}" if prog["epochs"] else "starting"]
        if prog["steps_per_epoch"]:
            bits.append(f"step {prog['step']}/{prog['steps_per_epoch']}")
        if prog["images_per_s"]:
            bits.append(f"{prog['images_per_s']:.1f} images/s")
        if info.state in ACTIVE_STATES and prog["eta_s"] is not None:
            bits.append(f"ETA {run_view.format_duration(prog['eta_s'])}")
        st.progress(min(max(prog["fraction"], 0.0), 1.0), text=" · ".join(bits))
    points = run_view.chart_rows(rows, prog["steps_per_epoch"] or None)
    if points:
        left, right = st.columns(2)
        with left:
            curves(points, LOSS_TRACES, "Loss", "train_loss_chart", run_id, prog["epochs"])
        with right:
            curves(points, SCORE_TRACES, "Validation AUC, train accuracy", "train_acc_chart", run_id, prog["epochs"],
                   info.card if info.state == "finished" else None)
        st.caption("Validation is followed by its AUC, the number that picks the best epoch and that the model "
                   "card reports (the star, with the card's accuracy at its threshold on hover). The accuracy at "
                   "0.5 of the raw outputs is no measure of the model: its threshold is chosen on validation "
                   "after training.")
    elif info.state in ACTIVE_STATES:
        st.caption("Waiting for the first metrics (the process loads the data first)…")
    val = [p for p in points if p["split"] == "val"]
    st.caption(f"{len(rows)} metric rows · validation epochs: {len(val)}"
               + (f" · best validation AUC {fmt(info.best.get('auc'))} at epoch {info.best.get('epoch')}"
                  if info.best.get("epoch") else ""))
    if info.state == "failed":
        failure_details(info)
    busy = launcher.finalizing(path)
    if ENABLED:
        b1, b2, b3, _ = st.columns([1, 1, 2, 2])
        if info.state in ACTIVE_STATES:
            if b1.button("Stop", key="train_stop", icon=":material/stop:",
                         help="Ask the run to stop after the current step; it saves a checkpoint you can resume."):
                REG.stop_run(run_id)
                st.toast(f"Stopping {run_id}…", icon=":material/stop:")
        elif info.state in ("stopped", "failed") and info.config and not busy:
            if b2.button("Resume", key="train_resume", icon=":material/replay:",
                         help=f"python -m training --resume {path}"):
                try:
                    REG.resume_run(run_id, allow_concurrent=st.session_state.get("train_allow_many", False))
                except LaunchError as exc:
                    st.error(str(exc), icon=":material/block:")
                else:
                    st.rerun(scope="app")
            if (path / "best.json").exists() and b3.button(
                    "Finalize into a model card", key="train_finalize", icon=":material/task_alt:",
                    help="Calibrate the best checkpoint so far on the run's validation split and write its model "
                         f"card, as a finished run does (python -m training.finalize {path}); then evaluate or "
                         "promote it here."):
                try:
                    REG.finalize_run(run_id)
                except LaunchError as exc:
                    st.error(str(exc), icon=":material/block:")
                else:
                    st.rerun(scope="app")
    if busy:
        st.info(f"Writing the model card of {run_id} from its best checkpoint (python -m training.finalize)…",
                icon=":material/hourglass_top:")
    elif (path / "finalize.json").exists() and info.state != "finished" and info.state not in ACTIVE_STATES:
        out = launcher.tail_output(path, 3).strip()
        st.error(f"Finalizing {run_id} failed: {out.splitlines()[-1] if out else 'no output'}", icon=":material/error:")
    # When a run ends, refresh the whole page once (the run list, the buttons).
    seen = st.session_state.setdefault("_train_seen_state", {})
    now = "finalizing" if busy else info.state
    before, seen[run_id] = seen.get(run_id), now
    if before in ACTIVE_STATES + ("finalizing",) and now not in ACTIVE_STATES + ("finalizing",):
        st.rerun(scope="app")


def promote_panel(info) -> None:
    ckpt = launcher.run_checkpoint(info.path)
    if ckpt is None or info.state in ACTIVE_STATES:
        return
    card = read_card(info.path / "card.json")
    name = card["name"]
    v = card.get("validation") or {}
    st.markdown(f"**Model card**: {common.display(name)}, {card.get('image_size')} px, best epoch {card.get('epochs')}; "
                f"validation AUC {fmt(v.get('auc'))}, accuracy {fmt(v.get('accuracy'))}, sensitivity "
                f"{fmt(v.get('sensitivity'))}, specificity {fmt(v.get('specificity'))} at threshold "
                f"{fmt(card.get('threshold'))}.")
    if card.get("synthetic"):
        st.warning(f"Trained on {common.SYNTHETIC_NOTE} images only: promoting it makes the app's {common.display(name)} a "
                   "cartoon detector.", icon=":material/warning:")
    if card.get("finalized_from"):
        st.caption(f"Card written by python -m training.finalize from {card['finalized_from']}.")
    if st.button("Evaluate this run", key="train_evaluate", icon=":material/analytics:",
                 help="Open the Evaluate page with this run's checkpoint chosen."):
        st.session_state["eval_model"] = f"run:{info.id}"
        try:
            st.switch_page("pages/evaluate.py")
        except st.errors.StreamlitAPIException:  # this page runs on its own, outside app.py's navigation
            st.info(f"Open the Evaluate page and choose run {info.id}.")
    shipped = shipped_card(name)
    if shipped and shipped.get("promoted_from") == info.id:
        st.success(f"This run is the app's {common.display(name)} now.", icon=":material/check_circle:")
    if ENABLED and st.button(f"Promote to the app's {common.display(name)}", key="train_promote",
                             icon=":material/publish:",
                             help=f"Copies {ckpt.name} and its card to the app's weights folder; the previous "
                                  f"files are kept as {name}.prev.*"):
        try:
            out = promote(info.id)
        except PromoteError as exc:
            st.error(str(exc), icon=":material/block:")
        else:
            kept = f" (previous weights kept as {', '.join(Path(p).name for p in out['previous'])})" if out["previous"] else ""
            st.success(f"Promoted: the app's {common.display(name)} now uses run {info.id}{kept}.",
                       icon=":material/check_circle:")


# ------------------------------------------------------------------ page

st.title("Training")
st.markdown("Train one of the models on a folder of labelled photos. The training runs in its own process: "
            "you can leave this page or close the tab, and anyone who opens it sees the same runs.")
runs = list_runs()
if ENABLED:
    start_form(runs)
else:
    st.info("Training is turned off on this server (LESION_LENS_TRAINING=off): past runs are shown read-only.",
            icon=":material/lock:")

st.subheader("Runs")
if not runs:
    st.caption("No runs yet.")
    st.stop()

ids = [r.id for r in runs]
if st.session_state.get("train_watch") not in ids:
    live = [r.id for r in runs if r.state in ACTIVE_STATES]
    st.session_state["train_watch"] = live[0] if live else ids[0]
by_id = {r.id: r for r in runs}


def run_choice_label(rid: str) -> str:
    # No state here: it moves on while the page stands still (the panel and the table show it live).
    m = run_model(by_id[rid])
    return f"{rid} · {common.display(m)}" if m in MODEL_NAMES else rid


chosen = st.selectbox("Show run", ids, key="train_watch", format_func=run_choice_label)
with st.container(border=True):
    if by_id[chosen].state in ACTIVE_STATES or launcher.finalizing(by_id[chosen].path):
        st.fragment(watch, run_every=1.0)(chosen)
    else:
        st.fragment(watch)(chosen)
        promote_panel(by_id[chosen])

def runs_table() -> None:
    table = []
    for r in list_runs():
        m = run_model(r)
        card_v = (r.card or {}).get("validation") or {}
        table.append({"run": r.id, "model": common.display(m) if m in MODEL_NAMES else "?", "state": r.state,
                      "epochs": f"{r.status.get('epoch', 0)}/{r.status.get('epochs') or r.config.get('epochs') or '?'}",
                      "val AUC": card_v.get("auc", r.best.get("auc")),
                      "accuracy (card)": card_v.get("accuracy"),
                      "data": "SYNTHETIC" if run_is_synthetic(r) else Path(str(r.config.get("data") or "?")).name,
                      "device": r.status.get("device") or "", "started": started_at(r)})
    st.caption("All runs in the runs folder. Validation AUC: the best epoch's (the model card's once the run has "
               "one); accuracy: the card's, at the card's threshold, so only for runs with a card.")
    # Fits the page's width: the columns share it instead of asking for more than there is.
    small = {"width": "small"}
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"run": st.column_config.TextColumn(width="medium"),
                                "model": st.column_config.TextColumn(**small),
                                "val AUC": st.column_config.NumberColumn(format="%.3f", **small),
                                "accuracy (card)": st.column_config.NumberColumn(format="%.3f", **small),
                                "state": st.column_config.TextColumn(**small),
                                "epochs": st.column_config.TextColumn(**small),
                                "data": st.column_config.TextColumn(**small),
                                "device": st.column_config.TextColumn(**small),
                                "started": st.column_config.TextColumn(**small)})


# Refreshed every few seconds while any run is active, so states and epochs stay current.
st.fragment(runs_table, run_every=3.0 if any(r.state in ACTIVE_STATES for r in runs) else None)()
