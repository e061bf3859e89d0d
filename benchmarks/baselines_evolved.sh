#!/usr/bin/env bash
# Classical baselines on the test split of an evolved dataset (issue 6 acceptance: >= 100 test systems).
# Step 1 generates 700 systems (seed 0; about 3 minutes on 2 cores; 189 of them were test systems with
# the generator of branch `evolve` at bd070c9); step 2 draws 3 windows per test system and scores the
# baselines clean and with 5% observation noise (about 5 minutes).
# Writes benchmarks/results/evolved/{report.md,summary.json,*.png}
# (and windows.json, the per-window records, which .gitignore keeps out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DATA=${DATA:-$HOME/.cache/panda_fm/evolved-700-seed0}
PYTHONPATH=. "$PYTHON" -m panda_fm.cli generate --out "$DATA" --systems 700 --seed 0 --workers 2 --no-progress
PYTHONPATH=. "$PYTHON" -m panda_fm.cli evaluate --test "$DATA" --out benchmarks/results/evolved \
    --windows-per-system 3 --noise 0 0.05 --horizons 128 256 512 --rollout 2048 --baselines all --seed 0 "$@"
