#!/usr/bin/env bash
# A checkpoint against every classical baseline (issue 8), clean and with 5% observation noise, context 512:
#   - the 20 held-out dysts founders, 5 windows each, horizons 128/256/512 and 2048-step rollouts;
#   - the test split of an evolved dataset (descendants of the held-out founders), 3 windows per system,
#     horizons 128/256/512 (no rollout: it would triple the time).
# Usage: benchmarks/checkpoint_eval.sh DATASET [CHECKPOINT]   (about 15 minutes on 2 cores)
# Writes benchmarks/results/checkpoint-{founders,evolved}/{report.md,summary.json,*.png}
# (and windows.json, the per-window records, which .gitignore keeps out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: benchmarks/checkpoint_eval.sh DATASET [CHECKPOINT]}
CKPT=${2:-checkpoints/panda-fm-small}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--checkpoint "$CKPT" --noise 0 0.05 --horizons 128 256 512 --baselines all --seed 0)
PYTHONPATH=. "$PYTHON" -m panda_fm.cli evaluate --test founders --out benchmarks/results/checkpoint-founders \
    --windows-per-system 5 --rollout 2048 "${COMMON[@]}"
PYTHONPATH=. "$PYTHON" -m panda_fm.cli evaluate --test "$DATA" --out benchmarks/results/checkpoint-evolved \
    --windows-per-system 3 --rollout 0 "${COMMON[@]}"
