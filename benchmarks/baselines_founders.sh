#!/usr/bin/env bash
# Classical baselines on the 20 held-out dysts founders (issue 6 acceptance table):
# 5 windows per founder, clean and 5% observation noise, horizons 128/256/512, 2048-step rollouts.
# Integrates the founders on first use (about 2 minutes, cached in ~/.cache/panda_fm), then about 3 minutes.
# Writes benchmarks/results/founders/{report.md,summary.json,*.png}
# (and windows.json, the per-window records, which .gitignore keeps out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
PYTHONPATH=. "$PYTHON" -m panda_fm.cli evaluate --test founders --out benchmarks/results/founders \
    --windows-per-system 5 --noise 0 0.05 --horizons 128 256 512 --rollout 2048 --baselines all --seed 0 "$@"
