"""Fine-tuning on held-out founders: zero-shot vs fine-tuned MAE at horizon 128, and forgetting.

Each held-out dysts founder's trajectory (the founders cache, 4096 steps) is split in time: the first
``--split`` fraction is the user's data (fine-tuning, with its own validation tail), the rest is the test
part. Test windows (context 512 + horizon 128, evenly spaced) lie wholly in the test part. MAE is computed
as in panda_fm.eval.runner: truth and forecast standardised by the window's context mean and std.

Modes:
    joint       one fine-tuned model on the target founders together (several recordings; they must share
                a channel count), one time budget;
    per-system  one fine-tuned model per target founder, each with the time budget.
Forgetting: the fine-tuned model(s) on the test parts of the other held-out founders, against zero-shot.

    PYTHONPATH=. python benchmarks/finetune.py --checkpoint /tmp/ft-base/checkpoint --max-minutes 5
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from panda_fm import PandaPipeline
from panda_fm.eval.metrics import mae
from panda_fm.eval.runner import standardise_by_context
from panda_fm.systems.store import open_dataset
from panda_fm.training.finetune import FINETUNE_TRAINER, FineTuneConfig, fine_tune

DEFAULT_TARGETS = ("Rossler", "SprottB", "ChenLee", "QiChen")


def test_windows(
    traj: np.ndarray, split: int, context: int, horizon: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` evenly spaced windows of ``traj[split:]``: contexts ``(B, context, C)``, truths ``(B, horizon, C)``."""
    last = len(traj) - context - horizon
    if last < split:
        raise ValueError(
            f"test part of {len(traj) - split} steps is shorter than a window ({context + horizon})"
        )
    starts = np.unique(np.linspace(split, last, count).round().astype(int))
    ctx = np.stack([traj[s : s + context] for s in starts])
    truth = np.stack([traj[s + context : s + context + horizon] for s in starts])
    return ctx, truth


def mae_at(pipe: PandaPipeline, ctx: np.ndarray, truth: np.ndarray) -> float:
    """Median over windows of MAE over the horizon, in context-standardised units."""
    forecast = pipe.predict(ctx, truth.shape[1])  # (B, H, C)
    scored = [standardise_by_context(c, t, f) for c, t, f in zip(ctx, truth, forecast, strict=True)]
    return float(np.median([mae(y, f) for y, f in scored]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="/tmp/ft-base/checkpoint", help="base checkpoint")
    p.add_argument(
        "--founders", default=str(Path.home() / ".cache/panda_fm/founders-4096x1"), help="founders dataset"
    )
    p.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help="founders to fine-tune on (comma-separated)"
    )
    p.add_argument("--mode", choices=("joint", "per-system"), default="joint")
    p.add_argument(
        "--split", type=float, default=0.75, help="fraction of each trajectory used for fine-tuning"
    )
    p.add_argument("--windows", type=int, default=8, help="test windows per system")
    p.add_argument("--max-minutes", type=float, default=5.0, help="fine-tuning budget (per model)")
    p.add_argument("--max-steps", type=int, default=None, help="step budget (per model); default: time only")
    p.add_argument("--lr", type=float, default=FINETUNE_TRAINER["lr"])
    p.add_argument("--freeze-layers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    base = PandaPipeline.from_pretrained(args.checkpoint)
    L, H = base.config.context_length, 128
    data = open_dataset(args.founders)
    systems = data.ids("test")
    targets = [t for t in args.targets.split(",") if t]
    missing = sorted(set(targets) - set(systems))
    if missing:
        raise SystemExit(f"not in {args.founders}: {missing}")
    others = [s for s in systems if s not in targets]
    trajs = {s: np.asarray(data.load(s)[0], dtype=np.float32) for s in systems}  # (T, D) each
    cut = {s: int(args.split * len(trajs[s])) for s in systems}
    windows = {s: test_windows(trajs[s], cut[s], L, H, args.windows) for s in systems}
    zero = {s: mae_at(base, *windows[s]) for s in systems}

    cfg = FineTuneConfig.from_settings(
        max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        lr=args.lr,
        freeze_layers=args.freeze_layers,
        torch_threads=args.threads,
        progress_bar=False,
    )
    groups = [targets] if args.mode == "joint" else [[t] for t in targets]
    tuned: dict[str, float] = {}
    forget: dict[str, list[float]] = {s: [] for s in others}
    runs = []
    for group in groups:
        started = time.perf_counter()
        result = fine_tune(base.model, base.info, [trajs[s][: cut[s]] for s in group], cfg)
        pipe = PandaPipeline(result.model, result.info)
        for s in group:
            tuned[s] = mae_at(pipe, *windows[s])
        for s in others:
            forget[s].append(mae_at(pipe, *windows[s]))
        runs.append(
            {
                "systems": group,
                "steps": result.steps,
                "best_step": result.best_step,
                "stopped": result.stopped,
                "train_s": round(result.wall_time_s, 1),
                "total_s": round(time.perf_counter() - started, 1),
                "loss": result.loss,
                "val_before": result.val_loss_before,
                "val_after": result.val_loss_after,
            }
        )

    print(
        f"\nbase: {args.checkpoint} ({base.info.get('name', '?')}, {base.model.num_parameters():,} parameters)"
    )
    print(
        f"mode {args.mode}, budget {args.max_minutes:g} min / {args.max_steps or 'any'} steps per model, lr {cfg.trainer.lr:g}, "
        f"{args.threads} thread(s); split at {args.split:.0%} of 4096 steps; {args.windows} test windows per system"
    )
    for r in runs:
        print(
            f"  run {'+'.join(r['systems'])}: {r['steps']} steps ({r['stopped']}), kept step {r['best_step']}, "
            f"train {r['train_s']} s, val {r['loss']} {r['val_before']:.4f} -> {r['val_after']:.4f}"
        )
    print("\nMAE@128 (median over test windows, context-standardised units)")
    print(f"| {'system':<20} | {'role':<10} | {'zero-shot':>9} | {'fine-tuned':>10} | {'change':>7} |")
    print(f"|{'-' * 22}|{'-' * 12}|{'-' * 11}|{'-' * 12}|{'-' * 9}|")
    rows = [(s, "target", zero[s], tuned[s]) for s in targets]
    rows += [(s, "other", zero[s], float(np.mean(forget[s]))) for s in others]
    for s, role, z, f in rows:
        print(f"| {s:<20} | {role:<10} | {z:9.4f} | {f:10.4f} | {100 * (f / z - 1):+6.1f}% |")
    zt, ft = np.median([zero[s] for s in targets]), np.median([tuned[s] for s in targets])
    zo, fo = np.median([zero[s] for s in others]), np.median([np.mean(forget[s]) for s in others])
    print(
        f"\nmedian over targets ({len(targets)}): zero-shot {zt:.4f} -> fine-tuned {ft:.4f} ({100 * (ft / zt - 1):+.1f}%)"
    )
    print(
        f"median over other held-out founders ({len(others)}): zero-shot {zo:.4f} -> fine-tuned {fo:.4f} "
        f"({100 * (fo / zo - 1):+.1f}%)  [forgetting]"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "runs": runs,
                    "zero_shot": zero,
                    "fine_tuned": tuned,
                    "others_fine_tuned": {s: float(np.mean(v)) for s, v in forget.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
