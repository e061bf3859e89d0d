"""Evidence choosers compared on fresh windows of the systems their fit held out, by how the windows are observed.

The stress suite's held-out founders are the test; choosing between chooser fits on it would tune on the test.
This script is the validation: the systems ``panda-fm fit-chooser`` held out for early stopping (a fifth of the
train split, drawn by the fit's seed), new windows of them observed at random as in the fit (another seed), and
each checkpoint's choice scored on them: the mean over the windows of the chosen expert's sMAPE over the
prediction length (averaged over a window's channels), beside the network's own choice (no chooser) and the
oracle (the best expert per channel). Rows: all windows, then by condition (fully or partially observed, clean
or noisy, whole or cut short). Intervals: 95% bootstrap over systems; ``diff``: each checkpoint's mean less the
first's, paired on the same windows.

    PYTHONPATH=. python benchmarks/chooser_validation.py --checkpoint checkpoints/panda-fm-small OTHER \\
        --data data/evo700 --windows-per-system 10 --threads 2 --out benchmarks/results/stress/chooser_validation.md

Every checkpoint must share the first's network (they differ in their choosers only): the model runs once.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np
import torch
from _common import write_markdown

from panda_fm import PandaPipeline
from panda_fm.eval.probabilistic import system_bootstrap_mean_ci
from panda_fm.systems.store import open_dataset
from panda_fm.training.choice import choice_pool, held_out_systems, observed_windows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True, help="checkpoints with evidence choosers")
    p.add_argument("--data", required=True, help="the generated dataset the choosers were fitted on")
    p.add_argument("--windows-per-system", type=int, default=10, help="default: %(default)s")
    p.add_argument(
        "--seed", type=int, default=7, help="the windows' seed; not a fit's (default: %(default)s)"
    )
    p.add_argument("--fit-seed", type=int, default=0, help="the fits' seed (default: %(default)s)")
    p.add_argument(
        "--holdout", type=float, default=0.2, help="the fits' held-out share (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the report to this markdown file")
    return p.parse_args(argv)


def network_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's tensors other than its chooser's."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("chooser.")}


def conditions(windows: list, dims: dict[str, int]) -> list[tuple[str, str, str]]:
    """Per window: fully or partially observed, clean or noisy, whole or cut short."""
    out = []
    for w in windows:
        missing = np.isnan(w.seen)
        noisy = bool(np.any(np.where(missing, 0.0, w.seen - w.clean) != 0))
        out.append(
            (
                "partial" if w.seen.shape[1] < dims[w.system] else "full",
                "noisy" if noisy else "clean",
                "cut" if missing.any() else "whole",
            )
        )
    return out


def mean_cell(values: np.ndarray, systems: list[str]) -> str:
    """``mean [95% bootstrap interval over systems]``."""
    lo, hi = system_bootstrap_mean_ci(values, systems)
    return f"{values.mean():.1f} [{lo:.1f}, {hi:.1f}]"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    models = [PandaPipeline.from_pretrained(c).model.float().eval() for c in args.checkpoint]
    first = network_of(models[0])
    for name, model in zip(args.checkpoint[1:], models[1:], strict=True):
        other = network_of(model)
        if other.keys() != first.keys() or any(not torch.equal(first[k], other[k]) for k in first):
            print(
                f"error: {name} has another network than {args.checkpoint[0]}; compare choosers of one network",
                file=sys.stderr,
            )
            return 2
    if not all(m.config.expert_chooser for m in models):
        print("error: every --checkpoint needs an evidence chooser (panda-fm fit-chooser)", file=sys.stderr)
        return 2
    dataset = open_dataset(args.data)
    train = dataset.ids("train")
    held = held_out_systems(len(train), args.holdout, torch.Generator().manual_seed(args.fit_seed))
    systems = [train[i] for i in sorted(held.tolist())]
    cfg = models[0].config
    windows = observed_windows(
        dataset,
        args.windows_per_system,
        args.seed,
        cfg.context_length,
        cfg.prediction_length,
        systems=systems,
    )
    pool = choice_pool(models[0], windows)
    offset = models[0].floored_log_weights(pool["logits"])
    picks = {"network": offset.argmax(dim=1)}
    with torch.no_grad():
        for name, model in zip(args.checkpoint, models, strict=True):
            picks[name] = (offset + model.chooser(pool["evidence"], pool["window"])).argmax(dim=1)
    smape = pool["smape"]
    rows = {k: smape.gather(1, v[:, None]).squeeze(1) for k, v in picks.items()}
    rows["oracle"] = smape.min(dim=1).values
    channels = torch.tensor([w.seen.shape[1] for w in windows], dtype=smape.dtype)
    window_of = pool["window_index"]  # a batch's rows come grouped by channel count
    scores = {  # per window: the mean over its channels
        k: (torch.zeros(len(windows), dtype=v.dtype).index_add_(0, window_of, v) / channels).numpy()
        for k, v in rows.items()
    }
    dims = {r["id"]: int(r["dim"]) for r in dataset.records}
    cond = conditions(windows, dims)
    names = [w.system for w in windows]
    groups = {"all": list(range(len(windows)))}
    for axis in range(3):
        for i, c in enumerate(cond):
            groups.setdefault(c[axis], []).append(i)
    for i, c in enumerate(cond):
        groups.setdefault("-".join(c), []).append(i)
    methods = list(scores)
    base = args.checkpoint[0]
    lines = [
        "# Evidence choosers on their fit's held-out systems",
        "",
        f"`python {shlex.join(['benchmarks/chooser_validation.py', *(argv if argv is not None else sys.argv[1:])])}`"
        f" ({len(windows)} windows of {len(systems)} systems, {time.time() - t0:.0f} s)",
        "",
        "Mean sMAPE over the prediction length [95% bootstrap over systems]; diff: less the first checkpoint's, "
        "paired.",
        "",
        "| windows | n | "
        + " | ".join(methods)
        + " | "
        + " | ".join(f"diff {m}" for m in args.checkpoint[1:])
        + " |",
        "|---|---|" + "---|" * (len(methods) + len(args.checkpoint) - 1),
    ]
    for key, idx in groups.items():
        systems_of = [names[i] for i in idx]
        cells = [mean_cell(scores[m][idx], systems_of) for m in methods]
        cells += [mean_cell((scores[m] - scores[base])[idx], systems_of) for m in args.checkpoint[1:]]
        lines.append(f"| {key} | {len(idx)} | " + " | ".join(cells) + " |")
    write_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
