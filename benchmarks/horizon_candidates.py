"""What the predictability horizon is read off, on the calibration split (issue 18, sixteenth round).

    python benchmarks/horizon_candidates.py --cache DIR [--perturbed 4 --data data/evo700]

``DIR`` is a cache of ``benchmarks/calibration_grid.py`` (the eleventh round's: ``--data data/evo700
--generated-stride 4 --generated-systems 144``). Per source and noise level: the Spearman correlation with the
model's realised VPT of the horizon (the first lead whose spread, root mean square over channels, passes 0.5
context stds) read off each candidate spread, all with the shipped calibration: the lagged disagreement ``L`` as
the distribution reads it (corrected for noise and lead offset: the shipped horizon), ``L`` uncorrected, the
in-context spread ``s0``, the distribution's blended spread, ``horizon="geometric"``, and the larger of ``L`` and
``s0`` or the blend.

With ``--perturbed K`` (and ``--data``, the cache's dataset), a perturbed-context ensemble too, on the noisy
windows: each context re-noised ``K`` times with white noise of its own level
(:func:`panda_fm.uncertainty.noise_level`) and forecast 256 steps; ``P`` is the members' root mean square
difference from the point forecast. Run once into ``DIR/perturbed-{source}-seed{seed}.pkl`` (about 5 minutes
with four members for both sources on one thread; with ``--draw N``, another random draw, into
``...-drawN.pkl``). Candidates ``P``, ``max(L, P)``, ``sqrt(L^2 + P^2)`` and ``max(L, P / sqrt 2)``. Result
(2026-12-02): docs/probabilistic.md, sixteenth round, and
``benchmarks/results/probabilistic/horizon-candidates-round16.md``.

The row "L, past the forecast's end" reads the shipped ``L`` with a horizon beyond the forecast where it never
passes the threshold (:func:`beyond`). With ``--experts`` (and ``--data``), the in-context experts' disagreement
with the point forecast too (:func:`expert_spreads`; the experts' forecasts made once into
``DIR/experts-{source}-seed{seed}.pkl``, about 4 minutes on one thread). Each candidate's gain over the shipped
``L`` comes with a 95% interval, a paired bootstrap over systems (:func:`paired_gain_ci`). Results of the
seventeenth round: ``horizon-candidates-round17.md``.

With ``--lyapunov``, horizons read off the context's largest Lyapunov exponent ``lambda`` per step
(:func:`lyapunov_per_step`, Rosenstein's nearest-neighbour divergence, no model run): ``1 / lambda``,
``ln(0.5 / eps0) / lambda`` (``eps0`` the root mean square in-context error at leads 1-4, context stds) and the
geometric mean of each with the shipped horizon. Result (the thirty-seventh round, 2026-12-03):
``horizon-candidates-round37.md``.

With ``--heldout``, a diagnosis instead (no choice is made on it): the same horizons on the held-out generated
split's windows, the cache ``DIR/heldout-generated-seed0.pkl`` that ``benchmarks/coverage_by_lead.py --cache DIR
--heldout DATASET_DIR`` makes (seed 0, one window a test system); and, for every source, how many windows' shipped
horizon is the whole forecast (the spread never passes the threshold) and the realised VPTs of those.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import torch
from calibration_grid import SHIPPED, saved_runs, windows
from horizon_analogue import horizon

from panda_fm.eval import metrics
from panda_fm.eval.probabilistic import context_moments, system_bootstrap_ci
from panda_fm.systems.selection import lyapunov_rosenstein
from panda_fm.uncertainty import (
    CalibrationConfig,
    autocorrelation_time,
    corrected,
    distribution_spread,
    lagged_spread,
    lead_spread,
    noise_corrected,
    noise_level,
    spread_floors,
)

SOURCES = {"founders": "calibration", "generated": "generated"}


def perturbed_runs(
    path: Path, runs: dict, seed: int, data: str | None, k: int, draw: int = 0
) -> list[np.ndarray]:
    """The perturbed-context members ``(K, 256, C)`` of each noisy window of ``runs`` (in their order), in the
    context's units, from the random draw ``draw``; made into ``path`` on first use and read from it afterwards."""
    if path.exists():
        members = pickle.loads(path.read_bytes())
        if len(members) and members[0].shape[0] != k:
            raise SystemExit(f"{path} holds {members[0].shape[0]} members a window, not {k}: remove it first")
        return members
    from panda_fm import PandaPipeline

    pipe = PandaPipeline.from_pretrained("panda-fm-small")
    stride, n = runs["systems"] or (1, 0)
    rng = np.random.default_rng(seed + 1000 * draw)
    members = []
    for _, sigma, _, seen in windows(seed, data, stride, n, runs["context"], runs["split"]):
        if sigma == 0:
            continue
        nu = noise_level(seen)[:, None]  # (B, 1, C) in the context's units
        draws = [seen + nu * rng.standard_normal(seen.shape) for _ in range(k)]
        out = np.stack([pipe.predict(d.astype(np.float32), 256) for d in draws], axis=1)  # (B, K, H, C)
        members.extend(out)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(members))
    tmp.replace(path)
    return members


def expert_runs(path: Path, runs: dict, seed: int, data: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The in-context experts of each window of ``runs`` (in their order) at the forecast's own origin: their
    forecasts ``(E, 256, C)`` in the context's units and the network's weights on them ``(E, C)``, as the model
    reads the context in :meth:`panda_fm.PandaPipeline.predict`; made into ``path`` on first use."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    from panda_fm import PandaPipeline
    from panda_fm.scaling import standardise_series

    model = PandaPipeline.from_pretrained("panda-fm-small").model
    stride, n = runs["systems"] or (1, 0)
    out = []
    for _, _, _, seen in windows(seed, data, stride, n, runs["context"], runs["split"]):
        z, shift, stretch = standardise_series(np.asarray(seen, dtype=np.float64))  # as the pipeline does
        with torch.inference_mode():
            x, observed, stats, _ = model.prepare(torch.from_numpy(z).float())
            forecasts, weights = model.expert_weights(x, observed, 256, stats)  # (B, E, H, C), (B, E, C)
            forecasts = stats.denormalise(forecasts.flatten(1, 2)).unflatten(1, forecasts.shape[1:3])
        f = forecasts.double().numpy() * stretch[:, None] + shift[:, None]
        out.extend(zip(f, weights.double().numpy(), strict=True))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(out))
    tmp.replace(path)
    return out


def expert_spreads(r: dict, experts: tuple[np.ndarray, np.ndarray], lag: np.ndarray) -> dict:
    """``{name: (H, C)}`` the experts' disagreement with the point forecast (context stds, as ``L``): weighted by
    the network (``D_w``), unweighted (``D_u``), the runner-up's (``D_2``), and each as a floor under ``lag``."""
    forecasts, weights = experts
    f = (forecasts - r["loc"]) / r["scale"]  # (E, H, C) standardised as the point forecast
    d2 = (f - r["point"]) ** 2
    runner_up = np.argsort(weights, axis=0)[-2]  # (C,)
    out = {
        "D_w": np.sqrt((weights[:, None] * d2).sum(axis=0)),
        "D_u": np.sqrt(d2.mean(axis=0)),
        "D_2": np.sqrt(np.take_along_axis(d2, runner_up[None, None], axis=0)[0]),
    }
    return out | {f"max(L, {k})": np.maximum(lag, v) for k, v in out.items()}


def candidates(r: dict, cal: CalibrationConfig, pick: list[int], perturbed: np.ndarray | None) -> dict:
    """``{name: (H, C) spread}`` of one saved window."""
    raw = lagged_spread(r["members"][None, pick], r["point"][None])
    s0 = lead_spread(r["errors"][None], len(r["point"]), cal, r["prefix"])
    lagged = corrected(raw, r["x"][None], cal, r["errors"][None], r["prefix"])
    floors = spread_floors(cal, r["x"][None], r["errors"][None], r["prefix"])
    blend = distribution_spread(s0, lagged, cal, floors)
    out = {
        "L (shipped)": lagged,
        "L noise-corrected only": noise_corrected(raw, r["x"][None], cal),
        "L uncorrected": raw,
        "s0": s0,
        "blend": blend,
        "geometric": np.sqrt(s0 / cal.inflation * lagged),
        "max(L, s0)": np.maximum(lagged, s0),
        "max(L, blend)": np.maximum(lagged, blend),
    }
    out = {k: v[0] for k, v in out.items()}
    if perturbed is not None:
        m = (perturbed - r["loc"]) / r["scale"]  # (K, H, C) standardised as the point forecast
        p = np.sqrt(((m - r["point"]) ** 2).mean(axis=0))
        lag = out["L (shipped)"]
        out |= {
            "P": p,
            "max(L, P)": np.maximum(lag, p),
            "sqrt(L^2 + P^2)": np.sqrt(lag**2 + p**2),
            "max(L, P / sqrt 2)": np.maximum(lag, p / np.sqrt(2)),
        }
    return out


def lyapunov_per_step(x: np.ndarray, fit: int = 32, least: float = 1e-3) -> float:
    """The largest Lyapunov exponent per step of a ``(T, C)`` context: the generator's Rosenstein estimate
    (:func:`panda_fm.systems.selection.lyapunov_rosenstein`) with the context's autocorrelation time (at least 5
    steps) as its period, so that neighbours are that far apart in time, followed ``fit`` steps; at least
    ``least`` (a slope at or below zero reads as a slowly parting flow)."""
    window = max(5, int(autocorrelation_time(x[None])[0]))
    slope = lyapunov_rosenstein(x, dt=1.0, samples_per_period=window, horizon=fit / window, per_period=window)
    return max(slope, least)


def lyapunov_horizons(r: dict, shipped: float) -> dict[str, float]:
    """The ``--lyapunov`` candidates of one saved window, beside the shipped horizon ``shipped``."""
    lam = lyapunov_per_step(r["x"])
    eps0 = float(np.sqrt(np.nanmean(r["errors"][:, :4] ** 2)))
    time1, time2 = 1 / lam, np.log(0.5 / np.clip(eps0, 1e-6, 0.49)) / lam
    return {
        "1 / lambda": time1,
        "ln(0.5 / eps0) / lambda": time2,
        "sqrt(L * (1 / lambda))": np.sqrt(shipped * time1),
        "sqrt(L * ln(0.5 / eps0) / lambda)": np.sqrt(shipped * time2),
    }


def beyond(spread: np.ndarray, threshold: float = 0.5) -> float:
    """:func:`horizon`, but a spread ``(H, C)`` that never passes ``threshold`` (RMS over channels) gives
    ``H * threshold / s(H)``, ``s(H)`` its RMS at the last lead: where it would pass the threshold if it grew in
    proportion to the lead (the seventeenth round's second candidate)."""
    found = horizon(spread, threshold)
    last = float(np.sqrt((spread[-1] ** 2).mean()))
    if found < len(spread):
        return float(found)
    return len(spread) * threshold / last if last > 0 else float("inf")


def paired_gain_ci(
    horizon: list[float], vpt: list[float], shipped: list[float], systems: list[int]
) -> tuple[float, float]:
    """The 95% interval of a candidate's Spearman gain over the shipped horizon on the same windows: both on the
    same resampled systems (:func:`panda_fm.eval.probabilistic.system_bootstrap_ci`)."""
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (horizon, vpt, shipped))
    return system_bootstrap_ci(
        lambda rows: (
            metrics.horizon_correlation(a[rows], b[rows]) - metrics.horizon_correlation(c[rows], b[rows])
        ),
        systems,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="a calibration_grid.py cache folder")
    p.add_argument(
        "--perturbed", type=int, default=0, help="members of the perturbed-context ensemble (0: none)"
    )
    p.add_argument("--data", default=None, help="the cache's generated dataset (for --perturbed, --experts)")
    p.add_argument(
        "--experts",
        action="store_true",
        help="also the in-context experts' disagreement (their forecasts made once into DIR/experts-*.pkl)",
    )
    p.add_argument(
        "--lyapunov",
        action="store_true",
        help="also horizons read off the context's largest Lyapunov exponent (lyapunov_per_step)",
    )
    p.add_argument(
        "--heldout",
        action="store_true",
        help="the held-out generated split's windows (DIR/heldout-generated-seed0.pkl; a diagnosis) instead",
    )
    p.add_argument(
        "--draw",
        type=int,
        default=0,
        help="the perturbations' random draw (default: %(default)s; each draw its own member files)",
    )
    args = p.parse_args(argv)
    if (args.perturbed or args.experts) and args.heldout:
        raise SystemExit("--perturbed and --experts read the calibration split's windows: not with --heldout")
    if (args.perturbed or args.experts) and args.data is None:
        raise SystemExit(
            "--perturbed and --experts need --data, the cache's generated dataset (to draw its windows again)"
        )
    torch.set_num_threads(1)
    cal = SHIPPED
    table: dict[tuple[str, str], dict[float, tuple[list[int], list[int]]]] = {}  # horizons and VPTs
    systems: dict[tuple[str, float], list[int]] = {}  # each window's system, in the table's order
    sources = {"held-out generated": "heldout-generated"} if args.heldout else SOURCES
    for source, stem in sources.items():
        per_system = 5 if source == "founders" else 1  # windows a system (calibration_grid.windows)
        for seed in (0,) if args.heldout else (1, 2):
            runs = saved_runs(Path(args.cache, f"{stem}-seed{seed}.pkl"), source != "founders")
            pick = [list(runs["lags"]).index(g) for g in cal.lags]
            noisy = iter([])
            if args.perturbed:
                name = f"perturbed-{source}-seed{seed}" + (f"-draw{args.draw}" if args.draw else "")
                data = args.data if source == "generated" else None
                noisy = iter(
                    perturbed_runs(
                        Path(args.cache, f"{name}.pkl"), runs, seed, data, args.perturbed, args.draw
                    )
                )
            experts = iter([])
            if args.experts:
                data = args.data if source == "generated" else None
                experts = iter(
                    expert_runs(Path(args.cache, f"experts-{source}-seed{seed}.pkl"), runs, seed, data)
                )
            for r in runs["rows"]:
                mu, sd = context_moments(r["context"])
                truth, point = (r["truth"] - mu) / sd, (r["point"] * r["scale"] + r["loc"] - mu) / sd
                vpt = metrics.valid_prediction_time(truth[:256], point[:256], 0.5, scale=1.0)
                members = next(noisy) if args.perturbed and r["noise"] > 0 else None
                spreads = candidates(r, cal, pick, members)
                if args.experts:
                    spreads |= expert_spreads(r, next(experts), spreads["L (shipped)"])
                horizons = {name: horizon(spread) for name, spread in spreads.items()}
                horizons["L, past the forecast's end"] = beyond(spreads["L (shipped)"])
                if args.lyapunov:
                    horizons |= lyapunov_horizons(r, horizons["L (shipped)"])
                ids = systems.setdefault((source, r["noise"]), [])  # both seeds draw from the same systems
                ids.append(len(ids) // per_system % (len(runs["rows"]) // 2 // per_system))
                for name, h in horizons.items():
                    found = table.setdefault((source, name), {}).setdefault(r["noise"], ([], []))
                    found[0].append(h)
                    found[1].append(vpt)
    print(
        "| windows | horizon read off | Spearman(horizon, VPT) clean | 5% noise | gain over L, clean [95%] "
        "| gain over L, 5% noise [95%] |\n|---|---|---|---|---|---|"
    )
    for (source, name), by_noise in table.items():
        cells = [
            f"{metrics.horizon_correlation(*by_noise[n]):.3f}" if n in by_noise else "-" for n in (0.0, 0.05)
        ]
        shipped = table[source, "L (shipped)"]
        for n in (0.0, 0.05):
            if n not in by_noise or name == "L (shipped)":
                cells.append("-")
                continue
            lo, hi = paired_gain_ci(*by_noise[n], shipped[n][0], systems[source, n])
            gain = metrics.horizon_correlation(*by_noise[n]) - metrics.horizon_correlation(*shipped[n])
            cells.append(f"{gain:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {source} | {name} | {' | '.join(cells)} |")
    print(
        "\n| windows | noise | shipped horizon the whole forecast | their realised VPT, 10th / 50th / 90th "
        "| Spearman of the others |\n|---|---|---|---|---|"
    )
    for (source, name), by_noise in table.items():
        for n, (found, vpt) in by_noise.items() if name == "L (shipped)" else ():
            h, v = np.asarray(found, dtype=float), np.asarray(vpt, dtype=float)
            whole = h >= 256
            pct = (
                " / ".join(f"{x:.0f}" for x in np.percentile(v[whole], [10, 50, 90])) if whole.any() else "-"
            )
            rest = metrics.horizon_correlation(h[~whole], v[~whole])
            print(f"| {source} | {n:g} | {whole.sum()} of {len(h)} | {pct} | {rest:.3f} |")


if __name__ == "__main__":
    main()
