#!/usr/bin/env bash
# The GPU path in one go, on a Linux machine with an NVIDIA GPU (driver for CUDA 12), Python 3.11 and
# network access to PyPI. Run from the repository root:
#
#     scripts/gpu_check.sh [OUT]        # OUT defaults to gpu_check/
#
# It installs the gpu extra (TensorRT of the default serving image, Polygraphy) beside the export and
# serve extras in its own virtualenv (.venv-gpu), with ONNX Runtime's GPU build in place of the CPU one;
# trains the demo tiers; exports the ONNX and trt-* variants, each checked against PyTorch on held-out
# requests and timed (ONNX variants on ONNX Runtime's TensorRT provider, plans on TensorRT); and deploys
# the repository for a GPU server (`--target gpu`), which checks every plan against the serving
# image's TensorRT. What it saw goes to OUT/: the export manifest, the deploy output and summary.txt.
set -euo pipefail

OUT=${1:-gpu_check}
SPEC=ensembles/ads_ranking.yaml
VENV=.venv-gpu
PYTHON=${PYTHON:-python3.11}

command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found: this needs an NVIDIA GPU" >&2; exit 1; }
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv | tee "$OUT/gpu.csv"

echo "== install: export, serve and gpu extras at the versions of constraints.txt"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch: PyPI's default Linux wheel is a CUDA build, which export needs to run the TensorRT engines.
# tensorrt-cu12 10.5.0 is a source package that installs TensorRT's libraries from NVIDIA's package
# index while it builds: that index must be reachable too.
"${PIP[@]}" -c constraints.txt -e '.[export,serve,gpu]'
# ONNX Runtime's GPU build (CUDA and TensorRT providers) replaces the CPU one; both are `onnxruntime`.
"$VENV/bin/python" -m pip uninstall --quiet --yes onnxruntime
"${PIP[@]}" -c constraints.txt onnxruntime-gpu
"$VENV/bin/python" - <<'PY' | tee "$OUT/versions.txt"
import onnxruntime, tensorrt, torch, polygraphy
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0))
print("tensorrt", tensorrt.__version__, "polygraphy", polygraphy.__version__)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
from toolkit.export.tensorrt import unavailable_reason
print("engines can be built:", unavailable_reason() or "yes")
PY

echo "== train, export (ONNX and TensorRT variants), deploy --target gpu"
TOOLKIT="$VENV/bin/toolkit"
"$TOOLKIT" train --spec "$SPEC"
"$TOOLKIT" export --spec "$SPEC" --force \
    --precision onnx-fp16,onnx-int8-static,trt-fp16,trt-int8,trt-fp8 | tee "$OUT/export.txt"
cp artifacts/manifest.json "$OUT/manifest.json"
"$TOOLKIT" deploy --spec "$SPEC" --target gpu --out "$OUT/model_repository" | tee "$OUT/deploy.txt"

"$VENV/bin/python" - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
manifest = json.loads((out / "manifest.json").read_text())
print(f"{'tier':<10} {'variant':<18} {'status':<8} {'gpu ms by N':<28} {'provider':<26} engine")
for tier, entry in manifest["tiers"].items():
    for variant, v in entry["variants"].items():
        if not (variant.startswith("trt-") or "gpu" in v.get("latency_ms", {})):
            continue
        ms = ", ".join(f"{n}: {t:.3f}" for n, t in v.get("latency_ms", {}).get("gpu", {}).items())
        provider = v.get("timing", {}).get("gpu", {}).get("provider", "")
        engine = v.get("engine", {})
        built = f"TensorRT {engine['tensorrt_version']} on {engine['device']}" if engine else ""
        print(f"{tier:<10} {variant:<18} {v['status']:<8} {ms:<28} {provider:<26} {built}")
        if v["status"] != "OK":
            print(f"{'':<10} reason: {v.get('reason', '')}")
PY
echo "gpu_check: wrote $OUT/"
