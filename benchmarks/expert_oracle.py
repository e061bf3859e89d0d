"""How much a better choice among a checkpoint's in-context experts could gain, set by set of the stress suite.

For every window of the chosen stress sets (the windows and noise of ``benchmarks/stress.py`` for the same
``--seed`` and ``--windows-per-system``), each expert of the checkpoint forecasts 128 steps, and the median
sMAPE@128 over the windows is reported for: each expert alone, the checkpoint's choice (its trained network),
the untrained backtest prior's choice (:meth:`panda_fm.PandaModel.prior_only`), and the oracle, the expert
that scored best on the window's truth (one expert per window for all channels; a per-channel choice could
do better still). The gap between a choice and the oracle is what a better chooser could gain without new
experts; a set where even the oracle is far from the best classical baseline needs better experts.

    PYTHONPATH=. python benchmarks/expert_oracle.py --checkpoint panda-fm-small --threads 1 \\
        --out benchmarks/results/stress/oracle.md

``--per-window`` prints each window's scores too, to see which systems a set's median hides.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import median_report, write_markdown

from panda_fm import PandaPipeline
from panda_fm.eval import metrics
from panda_fm.eval.runner import noisy_batches, standardise_by_context, system_windows
from panda_fm.eval.stress import stress_config, stress_dataset, stress_sets
from panda_fm.scaling import standardise_series
from panda_fm.systems.store import open_dataset

HORIZON = 128
DEFAULT_SETS = [name for name in stress_sets() if not name.startswith("spatiotemporal")]  # the 32-channel
# fields take minutes per method; pass them with --sets to include them


@torch.no_grad()
def choices(pipe: PandaPipeline, prior: torch.nn.Module, contexts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every expert's forecast ``(B, E, H, C)``, and the trained and prior forecasts ``(B, H, C)``, in the
    contexts' units. The contexts are standardised in float64 first, as ``PandaPipeline.predict`` does, so that
    the trained choice is the one the stress suite scores."""
    model = pipe.model
    z, loc, units = standardise_series(np.asarray(contexts, dtype=np.float64))
    x, observed, stats, _ = model.prepare(torch.from_numpy(z).float())
    forecasts, weights = model.expert_weights(x, observed, HORIZON, stats)  # (B, E, H, C), (B, E, C)
    _, prior_weights = prior.expert_weights(x, observed, HORIZON, stats)

    def pick(w: torch.Tensor) -> torch.Tensor:
        best = w.argmax(dim=1, keepdim=True).unsqueeze(2).expand(-1, -1, HORIZON, -1)  # (B, 1, H, C)
        return forecasts.gather(1, best).squeeze(1)

    scale = lambda f: stats.denormalise(f).double().numpy() * units + loc  # noqa: E731
    every = np.stack([scale(forecasts[:, e]) for e in range(forecasts.shape[1])], axis=1)
    return every, scale(pick(weights)), scale(pick(prior_weights))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="panda-fm-small", help="a checkpoint with incontext='experts'")
    p.add_argument(
        "--sets", nargs="+", default=DEFAULT_SETS, help="stress sets (default: all but the fields)"
    )
    p.add_argument("--windows-per-system", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default=None, help="the stress suite's cache (default ~/.cache/panda_fm)")
    p.add_argument("--out", default=None, help="write the table to this markdown file too")
    p.add_argument(
        "--per-window", action="store_true", help="also print every window's scores, named by its system"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = PandaPipeline.from_pretrained(args.checkpoint)
    if pipe.model.config.incontext != "experts":
        p.error(f"{args.checkpoint} has no in-context experts")
    prior = pipe.model.prior_only().eval()
    experts = list(pipe.model.config.experts)
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "panda_fm"
    sets = stress_sets()
    columns = [*experts, "oracle", "trained", "prior"]
    rows = []
    started = time.perf_counter()
    for name in args.sets:
        spec = sets[name]
        config = stress_config(spec, args.windows_per_system, args.seed)
        dataset = open_dataset(stress_dataset(name, cache))
        scores: list[list[float]] = []  # per window: each expert, oracle, trained, prior
        for sid in dataset.ids("test"):
            windows = system_windows(dataset, sid, config)
            for _, _, batch, seen in noisy_batches(sid, windows, config):
                every, trained, chosen_by_prior = choices(pipe, prior, seen)
                for i, w in enumerate(batch):

                    def score(f: np.ndarray, w=w) -> float:
                        y, g = standardise_by_context(w.context, w.truth[:HORIZON], f)
                        return metrics.smape(y, g)

                    alone = [score(every[i, e]) for e in range(len(experts))]
                    scores.append([*alone, min(alone), score(trained[i]), score(chosen_by_prior[i])])
                    if args.per_window:
                        cells = zip(columns, scores[-1], strict=True)
                        print(f"  {sid}: " + " ".join(f"{c}={v:.1f}" for c, v in cells))
        medians = np.median(np.asarray(scores), axis=0)
        rows.append((name, len(scores), medians))
        print(name, " ".join(f"{c}={m:.1f}" for c, m in zip(columns, medians, strict=True)), flush=True)
    lines = median_report(
        f"Expert choice against the oracle: median sMAPE@{HORIZON}",
        f"`python benchmarks/expert_oracle.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"({time.perf_counter() - started:.0f} s)",
        ("set", "windows"),
        columns,
        rows,
    )
    write_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
