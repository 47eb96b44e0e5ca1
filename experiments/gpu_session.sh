#!/usr/bin/env bash
# One prepared script for a lent GPU machine (device tool): the tricks table and the GPU benchmark.
# Expects the CIFAR-10 zip at .devdata/cifar10-3k.zip (carried), writes results under $OUT.
set -u
OUT=${OUT:-/tmp/trickbox-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || { echo "pip install failed"; tail -5 "$OUT/pip.log"; }
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRICKBOX_CACHE=/tmp/tbcache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
timeout 280 python3 experiments/paper.py tricks --workers 6 data.root=.devdata/cifar10-3k.zip > "$OUT/tricks.log" 2>&1
echo "tricks table rc=$? after $(( $(date +%s) - start )) s"; tail -15 "$OUT/tricks.log"
timeout 170 python3 benchmarks/gpu.py --data .devdata/cifar10-3k.zip --out "$OUT/gpu.md" > "$OUT/gpu.log" 2>&1
echo "gpu benchmark rc=$? after $(( $(date +%s) - start )) s"; tail -25 "$OUT/gpu.log"
