#!/usr/bin/env bash
# One prepared session on a lent GPU machine (see README "GPU runs"): CUDA tests, the GPU
# trainings of DenseNet161 and EfficientNet-Lite0 at 224 px, and the throughput table.
# Expects wheels in .whl/ and the dataset (re-encoded JPEG q90) in .gpudata/train; writes
# results to $OUT (split into <16 MiB parts).
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
DATA=${DATA:-.gpudata/train}
DN_EPOCHS=${DN_EPOCHS:-60}; DN_MIN=${DN_MIN:-3.3}; EF_EPOCHS=${EF_EPOCHS:-20}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
log() { echo "== $(date +%T) $*" | tee -a "$OUT/session.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/session.log"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/session.log"
mkdir -p gpu-runs
log "efficientnet_lite0"
timeout 120 python3 -m training --model efficientnet_lite0 --data "$DATA" --epochs "$EF_EPOCHS" --batch-size 64 \
  --lr 1e-3 --patience 8 --time-limit 1.0 --device cuda --out gpu-runs/efficientnet_lite0 2>&1 | tee -a "$OUT/session.log"
log "torch_cnn"
timeout 100 python3 -m training --model torch_cnn --data "$DATA" --epochs 60 --image-size 160 --batch-size 32 \
  --lr 2e-3 --patience 15 --time-limit 1.0 --device cuda --out gpu-runs/torch_cnn 2>&1 | tee -a "$OUT/session.log"
log "densenet161 (scratch)"
timeout 270 python3 -m training --model densenet161 --data "$DATA" --epochs "$DN_EPOCHS" --batch-size 64 \
  --lr 1e-3 --weights none --patience 20 --time-limit "$DN_MIN" --device cuda --out gpu-runs/densenet161 \
  2>&1 | tee -a "$OUT/session.log"
log "packing"
python3 - <<'PY'
import torch, pathlib
for run in pathlib.Path("gpu-runs").iterdir():
    best = run / "best.pt"
    if best.exists():  # ship in half precision; loaded back to float32
        obj = torch.load(best, map_location="cpu", weights_only=True)
        obj["model"] = {k: v.half() if v.is_floating_point() else v for k, v in obj["model"].items()}
        torch.save(obj, best)
    (run / "last.pt").unlink(missing_ok=True)
PY
tar -cf - gpu-runs | xz -T0 -3 > /tmp/gpu-runs.tar.xz
split -b 15M /tmp/gpu-runs.tar.xz "$OUT/gpu-runs.tar.xz.part-"
log "cuda tests"
timeout 100 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tail -15 | tee -a "$OUT/session.log"
log "throughput"
timeout 100 python3 -m bench.train_throughput --device cuda --data "$DATA" --steps 20 2>&1 | tee -a "$OUT/session.log"
ls -la "$OUT"
log "done"
