"""Training: start a run in a separate process, watch it live, stop, resume, promote.

The page only reads and writes the run directory (runs/<id>/) and asks training.launcher to
start or stop processes, so a run outlives a closed tab or a rerun, and every browser
session sees the same runs. LESION_LENS_TRAINING=off makes it read-only.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from models.registry import MODEL_NAMES, read_card, spec
from pages import _ui as ui
from training import launcher
from training.launcher import LaunchError
from training.promote import PromoteError, promote
from training.rundir import ACTIVE_STATES, list_runs, read_metrics, read_run, safe_run_path, tail_log
from training.train import DEFAULT_EPOCHS, DEFAULT_LR, LIMITS

SYNTHETIC = ui.SYNTHETIC_OPTION
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
    return bool((info.card or {}).get("synthetic")) or launcher.SYNTHETIC_DIR_NAME in data or (
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
    return ui.fmt_metric(v, digits)


def dataset_label(opt: str, base: Path | None) -> str:
    return ui.dataset_label(opt, base, "SYNTHETIC demo set (generated cartoons, not real lesions)")


def curves(points: list[dict], metric: str, title: str, key: str, uirev: str, epochs: int) -> None:
    fig = go.Figure()
    for split, name in (("train", "train"), ("val", "validation")):
        pts = [p for p in points if p["split"] == split and p.get(metric) is not None]
        fig.add_trace(go.Scatter(x=[p["x"] for p in pts], y=[p[metric] for p in pts], name=name,
                                 mode="lines+markers" if split == "val" else "lines",
                                 line={"color": SPLIT_COLOURS[split], "width": 2},
                                 marker={"size": 7}))
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      uirevision=uirev, showlegend=True,
                      # the whole run's width from the start: the lines grow to the right, the axis stays put
                      xaxis={"title": "epoch", "range": [0, max([epochs] + [p["x"] for p in points]) * 1.01]},
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
                      yaxis={"rangemode": "tozero"} if metric == "loss" else {"range": [0, 1.02]})
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


# ------------------------------------------------------------------ start a run

def model_changed() -> None:
    m = st.session_state["train_model"]
    st.session_state["train_size"] = spec(m).image_size
    st.session_state["train_lr"] = float(DEFAULT_LR[m])
    st.session_state["train_epochs"] = int(DEFAULT_EPOCHS[m])
    st.session_state["train_weights"] = "imagenet" if spec(m).init == "imagenet" else "none"


def start_form(runs) -> None:
    base = launcher.data_base()
    st.session_state.setdefault("train_model", "torch_cnn")
    if "train_size" not in st.session_state:
        model_changed()
    st.session_state.setdefault("train_batch", 32)
    with st.container(border=True):
        st.subheader("Start a run")
        c1, c2 = st.columns([1, 2])
        model = c1.selectbox("Model", MODEL_NAMES, key="train_model", format_func=ui.display, on_change=model_changed)
        options = launcher.list_datasets(base) + [SYNTHETIC]
        data = c2.selectbox("Dataset", options, key="train_data", format_func=lambda o: dataset_label(o, base),
                            help="Folders with benign/ and malignant/ inside the dataset folder set by "
                                 "LESION_LENS_DATA" + (f" ({base})" if base else " (not set here)") +
                                 ", or a generated SYNTHETIC set for trying the pipeline.")
        if base is None:
            c2.caption("LESION_LENS_DATA is not set, so only the SYNTHETIC demo set is offered.")
        if data == SYNTHETIC:
            c2.caption(f"{ui.SYNTHETIC_NOTE}: made once in runs/{launcher.SYNTHETIC_DIR_NAME}/; a model trained "
                       "on it learns cartoons and is labelled SYNTHETIC.")
        c = st.columns(5)
        epochs = c[0].number_input("Epochs", *LIMITS["epochs"], step=1, key="train_epochs")
        size = c[1].number_input("Image size (px)", *LIMITS["image_size"], step=16, key="train_size",
                                 help=f"{ui.display(model)} was designed for {spec(model).image_size} px.")
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
        devices = launcher.available_devices()
        if st.session_state.get("train_device") not in devices:
            st.session_state["train_device"] = "auto"
        device = d1.selectbox("Device", devices, key="train_device")
        info = launcher.device_info()
        gpus = "; ".join(f"cuda:{g['index']} {g['name']} ({g['memory_gib']:g} GiB)" for g in info["cuda"])
        d2.markdown(f"**Uses:** {launcher.describe(device)}  \n"
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
        if launcher.resolved_device(device) == "cpu" and launcher.is_heavy(model, int(size)):
            n = 0 if data == SYNTHETIC else sum(launcher.count_images(base / data).values()) if base else 0
            n = n or sum(launcher.SYNTHETIC_PER_CLASS.values()) * 2
            try:
                with st.spinner(f"Timing a few training steps of {ui.display(model)} on this CPU…"):
                    est = launcher.estimate_cpu_epoch_time(model, int(size), int(batch), n)
                how_long = (f"about **{launcher.format_duration(est['seconds_per_epoch'])} per epoch** on these {n} "
                            f"images, **{launcher.format_duration(est['seconds_per_epoch'] * int(epochs))} for "
                            f"{int(epochs)} epochs** (timed from a few training steps here; other work on the "
                            "machine changes it)")
            except (ImportError, RuntimeError, ValueError, MemoryError) as exc:
                how_long = f"hours for a real dataset (the time could not be measured here: {type(exc).__name__})"
            st.warning(f"{ui.display(model)} at {int(size)} px on the CPU is slow: {how_long}. "
                       "A GPU, a smaller image size or the PyTorch CNN is much faster.", icon=":material/timer:")
            slow_ok = st.checkbox("Start it anyway", key="train_slow_ok")
        start = st.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:",
                          disabled=blocked or not slow_ok)
    if start:
        try:
            path = launcher.synthetic_demo() / "train" if data == SYNTHETIC else launcher.resolve_dataset(data, base)
            rid = REG.start_run(model, path, int(epochs), int(size), int(batch), float(lr), weights, device,
                                allow_concurrent=allow_many)
        except (LaunchError, OSError) as exc:
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
    prog = launcher.progress(info.status, rows)
    st.markdown(f"**{run_id}** &nbsp; {state_badge(info.state)} &nbsp; "
                f"{html.escape(ui.display(model)) if model in MODEL_NAMES else ''}"
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
            bits.append(f"ETA {launcher.format_duration(prog['eta_s'])}")
        st.progress(min(max(prog["fraction"], 0.0), 1.0), text=" · ".join(bits))
    points = launcher.chart_rows(rows, prog["steps_per_epoch"] or None)
    if points:
        left, right = st.columns(2)
        with left:
            curves(points, "loss", "Loss", "train_loss_chart", run_id, prog["epochs"])
        with right:
            curves(points, "accuracy", "Accuracy", "train_acc_chart", run_id, prog["epochs"])
    elif info.state in ACTIVE_STATES:
        st.caption("Waiting for the first metrics (the process loads the data first)…")
    val = [p for p in points if p["split"] == "val"]
    st.caption(f"{len(rows)} metric rows · validation epochs: {len(val)}"
               + (f" · best validation AUC {fmt(info.best.get('auc'))} at epoch {info.best.get('epoch')}"
                  if info.best.get("epoch") else ""))
    if info.state == "failed":
        failure_details(info)
    if ENABLED:
        b1, b2, _ = st.columns([1, 1, 4])
        if info.state in ACTIVE_STATES:
            if b1.button("Stop", key="train_stop", icon=":material/stop:",
                         help="Ask the run to stop after the current step; it saves a checkpoint you can resume."):
                REG.stop_run(run_id)
                st.toast(f"Stopping {run_id}…", icon=":material/stop:")
        elif info.state in ("stopped", "failed") and info.config:
            if b2.button("Resume", key="train_resume", icon=":material/replay:",
                         help=f"python -m training --resume {path}"):
                try:
                    REG.resume_run(run_id, allow_concurrent=st.session_state.get("train_allow_many", False))
                except LaunchError as exc:
                    st.error(str(exc), icon=":material/block:")
                else:
                    st.rerun(scope="app")
    # When a run ends, refresh the whole page once (the run list, the buttons).
    seen = st.session_state.setdefault("_train_seen_state", {})
    before, seen[run_id] = seen.get(run_id), info.state
    if before in ACTIVE_STATES and info.state not in ACTIVE_STATES:
        st.rerun(scope="app")


def promote_panel(info) -> None:
    ckpt = launcher.run_checkpoint(info.path)
    if ckpt is None or info.state in ACTIVE_STATES:
        return
    card = read_card(info.path / "card.json")
    name = card["name"]
    v = card.get("validation") or {}
    st.markdown(f"**Model card**: {ui.display(name)}, {card.get('image_size')} px, best epoch {card.get('epochs')}; "
                f"validation AUC {fmt(v.get('auc'))}, accuracy {fmt(v.get('accuracy'))}, sensitivity "
                f"{fmt(v.get('sensitivity'))}, specificity {fmt(v.get('specificity'))} at threshold "
                f"{fmt(card.get('threshold'))}.")
    if card.get("synthetic"):
        st.warning(f"Trained on {ui.SYNTHETIC_NOTE} images only: promoting it makes the app's {ui.display(name)} a "
                   "cartoon detector.", icon=":material/warning:")
    shipped = ui.shipped_card(name)
    if shipped and shipped.get("promoted_from") == info.id:
        st.success(f"This run is the app's {ui.display(name)} now.", icon=":material/check_circle:")
    if ENABLED and st.button(f"Promote to the app's {ui.display(name)}", key="train_promote",
                             icon=":material/publish:",
                             help=f"Copies {ckpt.name} and its card to the app's weights folder; the previous "
                                  f"files are kept as {name}.prev.*"):
        try:
            out = promote(info.id)
        except PromoteError as exc:
            st.error(str(exc), icon=":material/block:")
        else:
            kept = f" (previous weights kept as {', '.join(Path(p).name for p in out['previous'])})" if out["previous"] else ""
            st.success(f"Promoted: the app's {ui.display(name)} now uses run {info.id}{kept}.",
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
    return f"{rid} · {ui.display(m)}" if m in MODEL_NAMES else rid


chosen = st.selectbox("Show run", ids, key="train_watch", format_func=run_choice_label)
with st.container(border=True):
    if by_id[chosen].state in ACTIVE_STATES:
        st.fragment(watch, run_every=1.0)(chosen)
    else:
        st.fragment(watch)(chosen)
        promote_panel(by_id[chosen])

def runs_table() -> None:
    table = []
    for r in list_runs():
        m = run_model(r)
        card_v = (r.card or {}).get("validation") or {}
        table.append({"run": r.id, "model": ui.display(m) if m in MODEL_NAMES else "?", "state": r.state,
                      "epochs": f"{r.status.get('epoch', 0)}/{r.status.get('epochs') or r.config.get('epochs') or '?'}",
                      "val AUC": card_v.get("auc", r.best.get("auc")),
                      "val accuracy": card_v.get("accuracy", r.best.get("accuracy")),
                      "data": "SYNTHETIC" if run_is_synthetic(r) else Path(str(r.config.get("data") or "?")).name,
                      "device": r.status.get("device") or "", "started": started_at(r)})
    st.caption("All runs in the runs folder. Validation AUC and accuracy: the best epoch's, from the model card "
               "once a run has finished.")
    st.dataframe(table, hide_index=True,
                 column_config={"val AUC": st.column_config.NumberColumn(format="%.3f", width=80),
                                "val accuracy": st.column_config.NumberColumn(format="%.3f", width=100),
                                "state": st.column_config.TextColumn(width=80),
                                "epochs": st.column_config.TextColumn(width=70),
                                "data": st.column_config.TextColumn(width=100),
                                "device": st.column_config.TextColumn(width=150)})


# Refreshed every few seconds while any run is active, so states and epochs stay current.
st.fragment(runs_table, run_every=3.0 if any(r.state in ACTIVE_STATES for r in runs) else None)()
