"""Issue 15, point 10: a quiet, fast start. TensorFlow's import leaves no oneDNN/CPU-feature notices
and, without a CUDA GPU, no cuInit error in the log; the first page imports no framework."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import quiet_tf

ROOT = Path(__file__).resolve().parent.parent

TF_STDERR = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results
I0000 00:00:1.0 1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1.0 1 something_else.cc:1] a real problem
"""


def test_the_filter_drops_the_notices_and_keeps_anything_else():
    assert quiet_tf.filtered(TF_STDERR, quiet_tf.noise(gpu=False)) == "E0000 00:00:1.0 1 something_else.cc:1] a real problem\n"
    with_gpu = quiet_tf.filtered(TF_STDERR, quiet_tf.noise(gpu=True))
    assert "failed call to cuInit" in with_gpu and "a real problem" in with_gpu  # on a GPU machine it is an error
    assert "oneDNN" not in with_gpu


def test_the_filter_hands_back_what_else_was_written(capfd):
    with quiet_tf.tensorflow_quietly():
        os.write(2, b"oneDNN custom operations are on\nkept line\n")
    assert capfd.readouterr().err == "kept line\n"


@pytest.mark.skipif(quiet_tf.has_cuda_gpu(), reason="the CUDA lines are real errors on a GPU machine")
def test_importing_the_keras_model_is_quiet_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as `make run` starts it
    out = subprocess.run([sys.executable, "-c", "import models.keras_model as k; k.tf.constant(1.0) + 1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for noise in ("cuInit", "cuda drivers", "oneDNN", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in out.stderr, out.stderr


def test_the_pages_name_the_gate_sentence_without_importing_torch():
    from models.gate import NOT_A_LESION
    from pages import trust_view

    assert trust_view.NOT_A_LESION_MESSAGE == NOT_A_LESION
    code = ("import sys; import pages.trust_view, pages.warm_up, pages.photos; "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
