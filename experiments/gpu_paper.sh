#!/usr/bin/env bash
# One prepared script for a lent GPU machine (device tool): the full profile's ERM-against-mixup table
# (PreAct ResNet-18, cosine decay, batch 128), trained for as many epochs as the time left allows.
#
# The number of epochs is measured, not guessed: a 2-epoch run of the same sweep (same workers, same
# data) times one epoch under contention, and the real sweep gets what fits in BUDGET_S after that.
# That time includes the first epoch's warm-up, so it is an upper bound that leaves time unused (H100,
# 4 PreAct ResNet-18 trials at once: 16.9 s per epoch measured, about 6.5 s once warm); with a known
# rate, EPOCHS=N skips the calibration and its cost.
#
# Carry: .devdata/cifar10-3k.zip, made by
#   python benchmarks/make_subset_zip.py ../shared/datasets/cifar10-jpeg.zip .devdata/cifar10-3k.zip --per-class 3000 --test-per-class 1000
# and .whl (optuna and its needs, which the GPU image lacks; see docs/results/README.md).
# Environment: BUDGET_S (seconds for the whole script, default 540), WORKERS (default 4), DATA,
# MAX_EPOCHS (default 200, the paper's), EPOCHS (skip the calibration), PERF (speed-only overrides), EXTRA (more overrides, for a CPU dry run),
# TRICKBOX_COMMIT (the commit the tree was sent at; the copy's .git may be older), STUDIES (the study
# directory, default sweeps_gpu), CAL (the calibration's directory, default /tmp/cal).
# Writes to $OUT: run.log, calibrate.log, paper_erm_mixup-full.{md,png,json} and study.tgz (the study, no weights).
set -u
start=$(date +%s)
OUT=${OUT:-/tmp/trickbox-gpu-out}; mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-540}; WORKERS=${WORKERS:-4}; DATA=${DATA:-.devdata/cifar10-3k.zip}; MAX_EPOCHS=${MAX_EPOCHS:-200}
PERF=${PERF-train.mixed_precision=bf16 model.channels_last=true}; EXTRA=${EXTRA:-}
STUDIES=${STUDIES:-sweeps_gpu}; CAL=${CAL:-/tmp/cal}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRICKBOX_CACHE=${TRICKBOX_CACHE:-/tmp/tbcache}
elapsed() { echo $(( $(date +%s) - start )); }

if ! python3 -c "import optuna" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > "$OUT/calibrate.log" 2>&1 \
    || { echo "installing the carried wheels failed"; tail -5 "$OUT/calibrate.log"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! command -v trickbox > /dev/null; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/calibrate.log" 2>&1 \
    || { echo "pip install -e . failed"; tail -5 "$OUT/calibrate.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi (CPU dry run)"
# shellcheck disable=SC2086  # PERF and EXTRA are lists of KEY=VALUE words
common=(erm_mixup --profile full --workers "$WORKERS" "data.root=$DATA" $PERF $EXTRA)

# 1. calibrate: the same sweep for 2 epochs (also the smoke test of the whole path); EPOCHS=N skips it
if [ -n "${EPOCHS:-}" ]; then epochs=$EPOCHS; else
python3 experiments/paper.py "${common[@]}" train.epochs=2 --out-dir "$CAL" --docs-dir "$CAL/docs" >> "$OUT/calibrate.log" 2>&1 \
  || { echo "calibration sweep failed after $(elapsed) s"; tail -30 "$OUT/calibrate.log"; exit 1; }
cal_wall=$(elapsed)
epochs=$(python3 - "$BUDGET_S" "$cal_wall" "$MAX_EPOCHS" "$CAL" "$WORKERS" <<'EOF'
import glob, json, math, sys
budget, used, cap = (float(a) for a in sys.argv[1:4])
secs = [json.load(open(f))["seconds"] for f in glob.glob(f"{sys.argv[4]}/paper_erm_mixup-full/trial-*/summary.json")]
workers = int(sys.argv[5]) if sys.argv[5].isdigit() else len(secs)
rounds = math.ceil(len(secs) / max(1, workers))  # 3 seeds x 2 rows: more trials than workers train in turns
per_epoch = max(secs) / 2                      # under contention, first-epoch warm-up included: an upper bound
overhead = 60.0                                # worker start, data load, rendering, the tarball
left = budget - used - overhead
print(max(0, min(int(cap), int(0.9 * left / (per_epoch * rounds)))))
print(f"calibration: {len(secs)} trials on {workers} workers ({rounds} rounds), {per_epoch:.2f} s per epoch per trial "
      f"(the slowest) under contention; {left:.0f} s left for training -> epochs", file=sys.stderr)
EOF
)
fi
echo "after $(elapsed) s: training ${epochs} epochs"
if [ "${epochs:-0}" -lt 3 ]; then echo "too little time left for a useful run"; tail -20 "$OUT/calibrate.log"; exit 1; fi

# 2. the table itself
left=$(( BUDGET_S - $(elapsed) - 15 ))
timeout "$left" python3 experiments/paper.py "${common[@]}" "train.epochs=$epochs" --out-dir "$STUDIES" --docs-dir "$OUT" > "$OUT/run.log" 2>&1
echo "paper.py rc=$? after $(elapsed) s"
tail -25 "$OUT/run.log"
tar czf "$OUT/study.tgz" --exclude='*.safetensors' --exclude='mixup_epoch*' --exclude='checkpoints' "$STUDIES" 2>/dev/null
echo "done after $(elapsed) s"; ls -la "$OUT"
