"""Can more evidence per expert choose better? A small learned chooser on backtest features, against the
checkpoint's trained choice, the backtest prior and the oracle, on the stress suite.

The shipped model chooses among its in-context experts from one number per expert (its backtest error over the
context's last 128 steps) plus what its transformer reads in the tokens. ``expert_oracle.py`` showed that a
per-window hindsight choice among the same experts is 10% or more ahead of the best classical baseline on most
stress sets, and that the trained choice is far from it. This script measures how much of that gap richer
evidence closes, cheaply, without training the transformer:

1. **Evidence per expert** (all in context stds, logs averaged over channels): the built-in backtest; the
   errors of forecasts made 32 and 128 steps before the end of the context, over leads 1-32, 1-16, 17-64 and
   65-128; the backtests of those earlier forecasts; the expert's disagreement with the median expert; the
   spread and largest value of its forecast; its jump from the last observed value. Per window: the observed
   span, a noise index (std of second over first differences), the channel count.
2. **A pool of training windows observed like the stress suite, from training systems only**
   (:func:`panda_fm.training.choice.observed_windows` on a generated dataset's train split): random sampling
   rates (1/4-4x), one coordinate or a random projection to 1-2 channels, contexts of 128-511 steps and
   observation noise of 2-25%.
3. **A chooser per subset of the evidence** (:class:`panda_fm.model.choice.EvidenceChooser` fitted by
   :func:`panda_fm.training.choice.train_choice`): an MLP scores each expert; trained to minimise the expected
   sMAPE@128 of the softmax choice; a fifth of the systems held out for early stopping. The model's own chooser
   (``panda-fm fit-chooser``) reads the evidence this study found worth its cost: the backtest by lead and what
   the forecasts show, which take no extra run of the experts.
4. **The stress suite's windows** (those of ``stress.py``/``expert_oracle.py`` for the same seed): median
   sMAPE@128 of each expert, the checkpoint's choice, the prior's, each learned chooser's, single-feature
   rules (the smallest of one error), combinations (the mean and median of the experts, the "all" chooser's
   softmax mixture) and the oracle. The checkpoint's choice is per channel; every other is per window.

    PYTHONPATH=. python benchmarks/learned_choice.py --data /work/data/evo700 --threads 1 \\
        --out benchmarks/results/stress/learned_choice.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_markdown
from expert_oracle import choices

from panda_fm import PandaPipeline
from panda_fm.eval import metrics
from panda_fm.eval.runner import noisy_batches, standardise_by_context, system_windows
from panda_fm.eval.stress import stress_config, stress_dataset, stress_sets
from panda_fm.model.choice import EvidenceChooser, nanstd_over_time
from panda_fm.model.experts import expert_forecasts
from panda_fm.systems.store import open_dataset
from panda_fm.training.choice import observed_windows, train_choice

HORIZON = 128
ORIGINS = (32, 128)  # earlier forecast origins, steps before the context's end
FEATURES = (
    "backtest",
    "err32",
    "backtest@32",
    "err1-16",
    "err17-64",
    "err65-128",
    "backtest@128",
    "disagreement",
    "spread",
    "largest",
    "jump",
)
CONTEXT_FEATURES = ("span", "noise index", "log channels")
#: evidence subsets a chooser is trained on (indices into FEATURES): what each extra pass of the experts buys
SUBSETS = {
    "backtest": (0,),
    "free": (0, 7, 8, 9, 10),  # from the forecasts the model makes anyway
    "curve": (0, 3, 4, 5, 7, 8, 9, 10),  # + the error by lead of a forecast 128 steps back (the model's)
    "all": tuple(range(len(FEATURES))),
}


def _log_mae(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log`` of the mean absolute error over leads and channels: ``(B, E, L, C)`` -> ``(B, E)``; NaN where
    nothing is observed."""
    m = mask.unsqueeze(1).float()  # (B, 1, L, C)
    mae = (err.abs() * m).sum(dim=2) / m.sum(dim=2)  # (B, E, C)
    return mae.clamp_min(1e-6).log().nanmean(dim=2)  # (B, E)


@torch.no_grad()
def evidence(model, contexts: np.ndarray, names: list[str], version: int) -> tuple[np.ndarray, ...]:
    """Forecasts ``(B, E, H, C)`` in the contexts' units, evidence ``(B, E, F)`` (NaN: not measurable) and
    context features ``(B, G)``."""
    x, observed, stats, _ = model.prepare(torch.as_tensor(contexts, dtype=torch.float32))
    B, T, C = x.shape
    obs = torch.ones_like(x, dtype=torch.bool) if observed is None else observed
    backtest = model.config.expert_backtest
    forecasts, bt, _ = expert_forecasts(x, observed, names, HORIZON, backtest, version)  # (B,E,H,C), (B,E,C)
    cols = {"backtest": bt.clamp_min(1e-6).log().mean(dim=2)}
    first = obs.any(dim=2).float().argmax(dim=1)  # (B,): first observed step
    span = T - first
    for o in ORIGINS:
        xs = torch.cat([x.new_zeros(B, o, C), x[:, : T - o]], dim=1)
        os_ = torch.cat([obs.new_zeros(B, o, C), obs[:, : T - o]], dim=1)
        f, b, _ = expert_forecasts(xs, os_, names, o, backtest, version)  # (B, E, o, C)
        err, mask = f - x[:, T - o :].unsqueeze(1), obs[:, T - o :]
        ok = (span - o >= 48).float().log().unsqueeze(1)  # 0 where measurable, -inf where not
        ok = torch.where(torch.isinf(ok), torch.nan, 0.0)
        if o == 32:
            cols["err32"] = _log_mae(err, mask) + ok
        else:
            for lo, hi in ((0, 16), (16, 64), (64, 128)):
                cols[f"err{lo + 1}-{hi}"] = _log_mae(err[:, :, lo:hi], mask[:, lo:hi]) + ok
        cols[f"backtest@{o}"] = b.clamp_min(1e-6).log().mean(dim=2) + ok
    median = forecasts.median(dim=1, keepdim=True).values
    cols["disagreement"] = (forecasts - median).abs().mean(dim=(2, 3)).clamp_min(1e-6).log()
    cols["spread"] = forecasts.std(dim=2).mean(dim=2).clamp_min(1e-6).log()
    cols["largest"] = forecasts.abs().amax(dim=(2, 3)).clamp(max=1e3).log1p()
    last = torch.where(obs, x, torch.nan)[:, -16:].nanmean(dim=1)  # (B, C): the end of the context
    cols["jump"] = (forecasts[:, :, 0] - last.unsqueeze(1)).abs().nan_to_num(0.0).mean(dim=2).log1p()
    feats = torch.stack([cols[k] for k in FEATURES], dim=2)  # (B, E, F)
    z = torch.where(obs, x, torch.nan)
    d1 = z.diff(dim=1)
    d2 = d1.diff(dim=1)
    noise = (nanstd_over_time(d2) / nanstd_over_time(d1).clamp_min(1e-6)).nanmean(dim=1)  # (B,)
    ctx = torch.stack([span.float() / T, noise.clamp_min(1e-3).log(), torch.full((B,), float(np.log(C)))], 1)
    scale = lambda z: stats.denormalise(z).numpy()  # noqa: E731
    every = np.stack([scale(forecasts[:, e]) for e in range(forecasts.shape[1])], axis=1)
    return every, feats.numpy(), ctx.numpy()


def smape_each(every: np.ndarray, clean: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """sMAPE@128 of each expert ``(B, E)``, standardised by the clean context."""
    out = np.empty(every.shape[:2])
    for b in range(every.shape[0]):
        for e in range(every.shape[1]):
            y, g = standardise_by_context(clean[b], truth[b, :HORIZON], every[b, e])
            out[b, e] = metrics.smape(y, g)
    return out


# --- the pool of training windows ------------------------------------------------------------------------


def _groups(windows: list, batch: int = 32):
    """The pool's windows in batches of equal channel count, in a fixed order."""
    for lo in range(0, len(windows), batch):
        group: dict[int, list] = {}
        for w in windows[lo : lo + batch]:
            group.setdefault(w.seen.shape[1], []).append(w)
        yield lo, list(group.values())


def pool_evidence(pipe, windows, names, version) -> dict[str, np.ndarray]:
    feats, ctxs, scores, systems = [], [], [], []
    started = time.perf_counter()
    for lo, groups in _groups(windows):
        for ws in groups:
            every, f, c = evidence(pipe.model, np.stack([w.seen for w in ws]), names, version)
            feats.append(f)
            ctxs.append(c)
            scores.append(smape_each(every, np.stack([w.clean for w in ws]), np.stack([w.truth for w in ws])))
            systems += [w.system for w in ws]
        print(f"pool {lo + 32}/{len(windows)} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {
        "feats": np.concatenate(feats),
        "ctx": np.concatenate(ctxs),
        "smape": np.concatenate(scores),
        "systems": np.asarray(systems),
    }


@torch.no_grad()
def network_weights(model, contexts: np.ndarray, names: list[str]) -> np.ndarray:
    """The checkpoint's log weight on each of ``names`` (channel mean), NaN for experts it does not have:
    ``(B, E)``."""
    x, observed, stats, _ = model.prepare(torch.as_tensor(contexts, dtype=torch.float32))
    _, w = model.expert_weights(x, observed, HORIZON, stats)  # (B, E0, C)
    lw = w.clamp_min(1e-12).log().mean(dim=2).numpy()
    out = np.full((len(contexts), len(names)), np.nan)
    for i, n in enumerate(model.config.experts):
        out[:, names.index(n)] = lw[:, i]
    return out


# --- the chooser ---------------------------------------------------------------------------------------


def train_chooser(pool: dict[str, np.ndarray], seed: int, epochs: int = 300) -> EvidenceChooser:
    """A chooser reading ``pool["feats"]`` (per window), fitted by the package's :func:`train_choice` with no
    offset (the choice is the chooser's alone)."""
    torch.manual_seed(seed)
    _, system = np.unique(pool["systems"], return_inverse=True)
    t = {k: torch.as_tensor(pool[k], dtype=torch.float32) for k in ("feats", "ctx", "smape")}
    chooser = EvidenceChooser(t["feats"].shape[1], 64, t["feats"].shape[2], t["ctx"].shape[1])
    rows = {
        "evidence": t["feats"],
        "window": t["ctx"],
        "smape": t["smape"],
        "system": torch.as_tensor(system),
    }
    record = train_choice(chooser, rows, torch.zeros_like(t["smape"]), epochs, seed)
    scores = record["validation_smape"]
    print(
        f"{pool['feats'].shape[2]} evidence columns: validation mean sMAPE {scores['chooser']} (oracle {scores['oracle']})"
    )
    return chooser


def _subset(
    pool: dict[str, np.ndarray], cols: tuple[int, ...], network: bool = False
) -> dict[str, np.ndarray]:
    """The pool with the evidence ``cols`` (and the checkpoint's log weights)."""
    feats = pool["feats"][:, :, list(cols)]
    if network:
        feats = np.concatenate([feats, pool["network"][:, :, None]], axis=2)
    return {**pool, "feats": feats}


def _pick(model: EvidenceChooser, pool: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        f = torch.as_tensor(pool["feats"][rows], dtype=torch.float32)
        c = torch.as_tensor(pool["ctx"][rows], dtype=torch.float32)
        return model(f, c).argmax(dim=1).numpy()


# --- the stress suite -----------------------------------------------------------------------------------


@torch.no_grad()
def stress_rows(
    pipe, prior, names, version, sets, windows_per_system, seed, mixer=None
) -> dict[str, dict[str, np.ndarray]]:
    cache = Path.home() / ".cache" / "panda_fm"
    specs = stress_sets()
    out = {}
    for name in sets:
        config = stress_config(specs[name], windows_per_system, seed)
        dataset = open_dataset(stress_dataset(name, cache))
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feats", "ctx", "smape", "trained", "prior", "network", "mean", "median", "mix")
        }
        for sid in dataset.ids("test"):
            windows = system_windows(dataset, sid, config)
            for _, _, batch, seen in noisy_batches(sid, windows, config):
                every, f, c = evidence(pipe.model, seen, names, version)
                clean = np.stack([w.context for w in batch])
                truth = np.stack([w.truth for w in batch])
                parts["feats"].append(f)
                parts["ctx"].append(c)
                s = smape_each(every, clean, truth)
                parts["smape"].append(s)
                parts["network"].append(network_weights(pipe.model, seen, names))
                if mixer is not None:  # combinations instead of a choice
                    chooser, cols = mixer
                    logits = chooser(*(torch.as_tensor(a, dtype=torch.float32) for a in (f[:, :, cols], c)))
                    weights = torch.softmax(logits, dim=1).numpy()[:, :, None, None]  # (B, E, 1, 1)
                    for key, g in (
                        ("mean", every.mean(axis=1)),
                        ("median", np.median(every, axis=1)),
                        ("mix", (weights * every).sum(axis=1)),
                    ):
                        parts[key].append(smape_each(g[:, None], clean, truth)[:, 0])
                _, trained, chosen_by_prior = choices(pipe, prior, seen)  # the checkpoint's own choices
                for key, g in (("trained", trained), ("prior", chosen_by_prior)):
                    parts[key].append(smape_each(g[:, None], clean, truth)[:, 0])
        out[name] = {k: np.concatenate(v) for k, v in parts.items()}
        print(f"{name}: {len(out[name]['smape'])} windows", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a generated dataset; its train split makes the pool")
    p.add_argument("--checkpoint", default="panda-fm-small")
    p.add_argument("--experts", nargs="+", default=None, help="default: the checkpoint's and analogue_auto")
    p.add_argument("--pool-windows", type=int, default=5, help="windows per training system")
    p.add_argument("--max-systems", type=int, default=None, help="only the first N training systems")
    p.add_argument("--windows-per-system", type=int, default=3, help="stress windows per system")
    p.add_argument("--sets", nargs="+", default=None, help="stress sets (default: all but the fields)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work", default="/tmp/learned_choice", help="caches the pool's evidence here")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = PandaPipeline.from_pretrained(args.checkpoint)
    prior = pipe.model.prior_only().eval()
    names = args.experts or [*pipe.model.config.experts, "analogue_auto"]
    version = 4 if "analogue_auto" in names else pipe.model.config.experts_version
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pool_file = work / f"pool-{'-'.join(names)}-{args.pool_windows}-{args.max_systems}-{args.seed}.npz"
    if pool_file.exists():
        pool = dict(np.load(pool_file))
    else:
        windows = observed_windows(
            open_dataset(args.data), args.pool_windows, args.seed, max_systems=args.max_systems
        )
        pool = pool_evidence(pipe, windows, names, version)
        pool["network"] = np.concatenate(  # the checkpoint's own weights, as more evidence
            [
                network_weights(pipe.model, np.stack([w.seen for w in ws]), names)
                for _, g in _groups(windows)
                for ws in g
            ]
        )
        np.savez(pool_file, **pool)
    pool_s = time.perf_counter() - started
    variants = {k: (cols, False) for k, cols in SUBSETS.items()} | {"all + network": (SUBSETS["all"], True)}
    choosers = {k: train_chooser(_subset(pool, *v), args.seed) for k, v in variants.items()}
    sets = args.sets or [n for n in stress_sets() if not n.startswith("spatiotemporal")]
    stress_file = (
        work / f"stress-{'-'.join(names)}-{'-'.join(sets)}-{args.windows_per_system}-{args.seed}.npz"
    )
    if stress_file.exists():
        flat = dict(np.load(stress_file))
        rows = {n: {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(n + "/")} for n in sets}
    else:
        rows = stress_rows(
            pipe,
            prior,
            names,
            version,
            sets,
            args.windows_per_system,
            args.seed,
            (choosers["all"], list(SUBSETS["all"])),
        )
        np.savez(stress_file, **{f"{n}/{k}": v for n, r in rows.items() for k, v in r.items()})
    rules = {f"min {FEATURES[i]}": i for i in (0, 1, 4, 5, 6)}
    columns = [*names, "prior", "trained", *rules, *(f"learned: {k}" for k in variants)]
    columns += ["mean of experts", "median of experts", "learned mix (all)", "oracle"]
    lines = [
        f"# A learned choice on richer evidence: median sMAPE@{HORIZON} on the stress suite",
        "",
        f"`python benchmarks/learned_choice.py {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"(pool {len(pool['smape'])} windows, {pool_s:.0f} s; total {time.perf_counter() - started:.0f} s)",
        "",
        "| set | windows | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, r in rows.items():
        s = r["smape"]
        n = np.arange(len(s))
        med = [np.median(s[:, e]) for e in range(len(names))]
        med += [np.median(r["prior"]), np.median(r["trained"])]
        for i in rules.values():
            f = np.where(np.isnan(r["feats"][:, :, i]), np.inf, r["feats"][:, :, i])
            med.append(np.median(s[n, f.argmin(1)]))
        for k, chooser in choosers.items():
            med.append(np.median(s[n, _pick(chooser, _subset(r, *variants[k]), n)]))
        med += [np.median(r[k]) for k in ("mean", "median", "mix")]
        med.append(np.median(s.min(1)))
        lines.append(f"| {name} | {len(s)} | " + " | ".join(f"{m:.1f}" for m in med) + " |")
    write_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
