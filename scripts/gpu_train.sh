#!/usr/bin/env bash
# Train a shipped model's whole recipe on a GPU machine in one run and bring the model back.
# Run from the checkout's root, on the machine, after scripts/gpu_pack.py's parts have arrived
# (docs/training.md, "Training on a GPU"):
#
#   bash scripts/gpu_train.sh check    # unpack what arrived, report the GPU and the imports; no training
#   bash scripts/gpu_train.sh          # unpack, train, export; results into $OUT (or runs/gpu)
#
# Settings (environment):
#   CONFIG   training config (default configs/mobilenetv2.yaml, the `robust` recipe)
#   VAL      empty: hold out the config's stratified 10% of Training (mobilenetv2.yaml's protocol);
#            "val": select on val.npz, FER2013 PublicTest (flagship.yaml's protocol)
#   EPOCHS, BATCH, LR, THREADS   override the GPU defaults below (on a CPU: the config's own)
#   LIMIT    train on a stratified N faces of Training (quick trials, tests)
#   SET      more overrides, space-separated key=value (e.g. "arch=vgg-tiny augment.degrade=0")
#   MINUTES  wall-clock limit of the training step (default 6 on a GPU): the run then stops after
#            the epoch it is in when killed, and the best checkpoint so far is exported
#   NAME     the model's name (default: the config's file name), PYTHON (default python3), PACK (.gpu)
#
# The GPU defaults (more epochs, a larger batch, bf16 autocast, which the loop turns on by itself
# on CUDA) are estimates, not yet measured on a GPU: no GPU was lent when this was written.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-train}
PY=${PYTHON:-python3}
PACK=${PACK:-.gpu}
CONFIG=${CONFIG:-configs/mobilenetv2.yaml}
NAME=${NAME:-$(basename "$CONFIG" .yaml)}
DEST=${OUT:-runs/gpu}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
# EmoLens from this checkout (no install), and the weights package carried in the pack
export PYTHONPATH="$PWD/src:$WORK/data/site${PYTHONPATH:+:$PYTHONPATH}"

if [ "$MODE" = check ]; then  # the first call: it carries part 1; say what arrived and what is there
    "$PY" scripts/gpu_pack.py check "$PACK" || true
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
    "$PY" - <<'EOF'
import importlib.util

import torch

print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")
import emolens.cli, emolens.train.export  # noqa: E401,F401  # what train and export import
needed = ("onnx", "onnxruntime", "sklearn", "yaml", "cv2", "typer", "rich", "matplotlib")
print("missing:", ", ".join(m for m in needed if not importlib.util.find_spec(m)) or "nothing")
EOF
    exit 0
fi
"$PY" scripts/gpu_pack.py unpack "$PACK" "$WORK/data"
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")

# GPU defaults: a bigger batch with the learning rate scaled by its square root, more epochs, 8
# threads for the CPU side of each step (camera degradations run in OpenCV). Untested on a GPU.
if [ "$CUDA" = 1 ]; then
    EPOCHS=${EPOCHS:-40} BATCH=${BATCH:-256} THREADS=${THREADS:-8} MINUTES=${MINUTES:-6}
    if [ -z "${LR:-}" ]; then
        LR=$("$PY" - "$CONFIG" "$BATCH" <<'EOF'
import math
import sys

import yaml

cfg = yaml.safe_load(open(sys.argv[1]))
print(f"{cfg.get('lr', 3e-3) * math.sqrt(int(sys.argv[2]) / cfg.get('batch_size', 128)):.6g}")
EOF
)
    fi
    set -- --set device=cuda
else
    set -- --set device=cpu
fi
[ -n "${EPOCHS:-}" ] && set -- "$@" --set "epochs=$EPOCHS"
[ -n "${BATCH:-}" ] && set -- "$@" --set "batch_size=$BATCH"
[ -n "${LR:-}" ] && set -- "$@" --set "lr=$LR"
[ -n "${THREADS:-}" ] && set -- "$@" --set "threads=$THREADS"
for kv in ${SET:-}; do set -- "$@" --set "$kv"; done
[ -n "${LIMIT:-}" ] && set -- "$@" --limit "$LIMIT"
[ "${VAL:-}" = val ] && set -- "$@" --val "$WORK/data/val.npz"

RUN="$WORK/run"
echo "training $CONFIG on $([ "$CUDA" = 1 ] && echo GPU || echo CPU): $*"
STATUS=0
if [ -n "${MINUTES:-}" ]; then
    # SIGINT: Python stops between statements; the best.pt of the last finished epoch stays
    timeout --signal=INT --kill-after=30 "$((MINUTES * 60))" \
        "$PY" -m emolens.cli train "$WORK/data/train.npz" --config "$CONFIG" --out "$RUN" "$@" \
        2>&1 | tee "$DEST/train.log" || STATUS=$?
else
    "$PY" -m emolens.cli train "$WORK/data/train.npz" --config "$CONFIG" --out "$RUN" "$@" \
        2>&1 | tee "$DEST/train.log" || STATUS=$?
fi
if [ ! -f "$RUN/best.pt" ]; then
    echo "training ended (status $STATUS) before its first epoch finished: no model" >&2
    exit 1
fi
[ "$STATUS" = 0 ] || echo "training stopped early (status $STATUS, MINUTES=${MINUTES:-}): exporting the best epoch so far"

"$PY" -m emolens.cli export "$RUN/best.pt" "$DEST/$NAME.onnx" --weights --name "$NAME" \
    --val "$WORK/data/val.npz" --val-name "FER2013 PublicTest (val.npz)" --data "FER2013 Training split"
# What comes back is at most 8 files of 16 MiB each: halve the weights of a larger checkpoint
"$PY" - "$DEST/$NAME.pt" <<'EOF'
import os, sys
import torch
path = sys.argv[1]
if os.path.getsize(path) > 16 * 2**20:
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    state["stored_as"] = "float16"  # load_state_dict casts back to the model's float32
    torch.save(state, path)
    print(f"{path}: weights stored as float16 ({os.path.getsize(path) / 2**20:.1f} MiB)")
EOF
cp "$RUN/log.csv" "$RUN/config.yaml" "$DEST/"
ls -l "$DEST"
