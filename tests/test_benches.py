"""The benchmarks run end to end at a tiny scale and print their side-by-side tables (the speed
targets themselves are read off the full runs, not asserted here)."""

from __future__ import annotations

import re

import pytest

from training.synthetic import write_dataset

pytestmark = pytest.mark.slow


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell}")]


def test_train_throughput_prints_ours_fp32_and_naive(tmp_path, capsys):
    from bench import train_throughput

    data = write_dataset(tmp_path / "synth", per_class=24, size=160, fmt="jpg")
    train_throughput.main(["--models", "torch_cnn", "--device", "cpu", "--steps", "2", "--batch-size", "8",
                           "--data", str(data)])
    out = capsys.readouterr().out
    (row,) = table_rows(out, "torch_cnn")
    name, px, precision, ceiling, ours, of_ceiling, fp32, naive, speedup = row
    assert px == "128" and precision in ("bfloat16", "fp32")
    assert float(ceiling) > 0 and float(ours) > 0 and float(fp32) > 0 and float(naive) > 0
    assert float(of_ceiling) == pytest.approx(float(ours) / float(ceiling), abs=0.02)
    assert re.fullmatch(r"\d+\.\d\dx", speedup)


def test_latency_prints_every_model_asked_for(capsys):
    from bench import latency

    latency.main(["--models", "torch_cnn,efficientnet_lite0", "--repeats", "2", "--size", "64"])
    out = capsys.readouterr().out
    for name in ("torch_cnn", "efficientnet_lite0"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 14 and all(re.fullmatch(r"\d+\.\d\dx", c) for c in cells[8:]), row
    assert "checks: gate onnxruntime, segmenter onnxruntime" in out  # and the baseline on PyTorch beside it
    # the checked columns run on the 16 example photos; how many of them the gate's early exit passes
    assert re.search(r"early exit after stage 8: \d+ of 16 example photos pass it", out), out
    gate = [line for line in out.splitlines() if line.startswith(("| this gate (", "| fp32, ", "| its early exit"))]
    assert len(gate) == 4 and gate[0].endswith("| 1.00x |"), out  # the gate's network beside its fp32 baselines


def test_latency_names_a_missing_gate(tmp_path):
    from bench import latency

    with pytest.raises(SystemExit, match="no gate at"):
        latency.main(["--models", "torch_cnn", "--repeats", "1", "--size", "64", "--gate", str(tmp_path / "g.npz")])
