"""Does a system's own past tell which in-context expert to trust? The evidence chooser fitted to one system.

A user with a long recording can show the model its past. For each held-out founder of the stress suite, seen as
a condition of the suite makes it (observation noise, one coordinate, a projection, 4x coarser sampling), the
first 70% of its trajectory gives ``--train-windows`` evenly spaced windows and the last 30% ``--test-windows``
(context 512, 128 steps ahead). Scored on the test windows, as the mean over channels of each channel's sMAPE@128
(truth and forecast standardised by the clean context), median over windows:

- ``zero-shot``: the shipped checkpoint's choice (its network and evidence chooser);
- ``history-best``: the one expert with the lowest mean score on the system's training windows (a classical
  rule a user could apply by hand);
- ``chooser fitted``: the checkpoint with its evidence chooser trained further on the training windows alone
  (:func:`panda_fm.training.choice.train_choice`, 100 epochs, a quarter of the windows held out for the best
  epoch; the transformer untouched);
- ``oracle``: per window and channel, the expert that scored best on the truth.

    PYTHONPATH=. python benchmarks/choice_history.py --threads 1 \\
        --out benchmarks/results/stress/choice_history.md
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import median_report, write_markdown

from panda_fm import PandaPipeline
from panda_fm.eval.stress import stress_dataset
from panda_fm.systems.store import open_dataset
from panda_fm.training.choice import ObservedWindow, choice_pool, train_choice

CONTEXT, HORIZON = 512, 128
#: condition -> (the stress suite's trajectories it reads, observation noise)
CONDITIONS = {
    "noise-10": ("clean", 0.1),
    "noise-20": ("clean", 0.2),
    "observed-x0": ("observed-x0", 0.0),
    "projected": ("projected", 0.0),
    "coarse-4x": ("coarse-4x", 0.0),
}
COLUMNS = ("zero-shot", "history-best", "chooser fitted", "oracle")


def windows(
    traj: np.ndarray, starts: np.ndarray, noise: float, rng: np.random.Generator, system: str
) -> list[ObservedWindow]:
    """Windows of ``traj`` ``(T, C)`` at ``starts``, seen with observation noise of ``noise`` context stds."""
    out = []
    for s in starts:
        clean, truth = traj[s : s + CONTEXT], traj[s + CONTEXT : s + CONTEXT + HORIZON]
        seen = clean + rng.normal(size=clean.shape) * noise * clean.std(axis=0)
        out.append(ObservedWindow(system, clean, seen, truth))
    return out


def scores(pipe: PandaPipeline, train: list[ObservedWindow], test: list[ObservedWindow]) -> list[np.ndarray]:
    """Per test window, the scores of :data:`COLUMNS`."""
    model = pipe.model
    fit, held = choice_pool(model, train, progress=False), choice_pool(model, test, progress=False)
    offset = model.floored_log_weights(fit["logits"])

    def chosen(chooser: torch.nn.Module) -> torch.Tensor:  # (N,) the choice's sMAPE on the test rows
        with torch.no_grad():
            logits = model.floored_log_weights(held["logits"]) + chooser(held["evidence"], held["window"])
        return held["smape"].gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)

    chooser = copy.deepcopy(model.chooser)
    channels = len(fit["smape"]) // len(train)
    # each training window is its own "system", so that a quarter of the windows is held out
    pool = {**fit, "system": torch.arange(len(train)).repeat_interleave(channels)}
    train_choice(chooser, pool, offset, epochs=100, seed=0, holdout=0.25)
    best = int(fit["smape"].mean(dim=0).argmin())
    rows = [chosen(model.chooser), held["smape"][:, best], chosen(chooser), held["smape"].min(dim=1).values]
    return [r.reshape(len(test), -1).mean(dim=1).numpy() for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="panda-fm-small", help="a checkpoint with an evidence chooser")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--train-windows", type=int, default=48)
    p.add_argument("--test-windows", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seeds the observation noise")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default=None, help="the stress suite's cache (default ~/.cache/panda_fm)")
    p.add_argument("--out", default=None, help="write the table to this markdown file too")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = PandaPipeline.from_pretrained(args.checkpoint)
    if not pipe.model.config.expert_chooser:
        p.error(f"{args.checkpoint} has no evidence chooser")
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "panda_fm"
    started = time.perf_counter()
    table = []
    for condition in args.conditions:
        data_name, noise = CONDITIONS[condition]
        dataset = open_dataset(stress_dataset(data_name, cache))
        per_column: list[list[np.ndarray]] = [[] for _ in COLUMNS]
        for sid in dataset.ids("test"):
            traj = dataset.load(sid)[0]  # (T, C)
            cut = int(0.7 * len(traj))
            rng = np.random.default_rng(args.seed)
            last_train, last_test = cut - CONTEXT - HORIZON, len(traj) - CONTEXT - HORIZON
            train = windows(traj, np.linspace(0, last_train, args.train_windows).astype(int), noise, rng, sid)
            test = windows(traj, np.linspace(cut, last_test, args.test_windows).astype(int), noise, rng, sid)
            for column, values in zip(per_column, scores(pipe, train, test), strict=True):
                column.append(values)
        medians = [float(np.median(np.concatenate(c))) for c in per_column]
        table.append((condition, len(dataset.ids("test")), medians))
        print(condition, " ".join(f"{c}={m:.1f}" for c, m in zip(COLUMNS, medians, strict=True)), flush=True)
    lines = median_report(
        f"The choice among the experts, fitted to each system's past: median sMAPE@{HORIZON} of later windows",
        f"`python benchmarks/choice_history.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"({time.perf_counter() - started:.0f} s; {args.train_windows} training and {args.test_windows} test "
        "windows per system)",
        ("condition", "systems"),
        COLUMNS,
        table,
    )
    write_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
