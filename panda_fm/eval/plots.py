"""Figures (matplotlib, Agg backend; kept out of the core modules).

:func:`plot_forecast` draws one forecast against its context and truth; :func:`plot_fan` a quantile forecast
as a fan; :func:`plot_reliability` the reliability diagram of a probabilistic report. :func:`plot_report` writes three PNGs: the median per-step sMAPE against horizon per method, sample
forecasts against the truth, and 2-D projections of long rollouts against the true attractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_forecast",
    "plot_report",
    "plot_error_vs_horizon",
    "plot_sample_forecasts",
    "plot_rollouts",
    "plot_fan",
    "plot_reliability",
]

_TRUTH = dict(color="black", lw=1.4, label="truth")


def _colours(methods: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def plot_error_vs_horizon(report: dict[str, Any], path: str | Path) -> Path:
    """Median per-step sMAPE over windows against the forecast step, one panel per noise level."""
    curves, steps = report["smape_curve"], report["smape_curve_steps"]
    colours = _colours(report["methods"])
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), sharey=True, squeeze=False)
    for ax, (sigma, methods) in zip(axes[0], curves.items(), strict=True):
        for name, curve in methods.items():
            ax.plot(steps, curve, color=colours[name], label=name, lw=1.5)
        ax.set_title(f"noise {float(sigma):g} (median over {report['dataset']['windows']} windows)")
        ax.set_xlabel("forecast step")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("sMAPE at step (0-100)")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_sample_forecasts(
    samples: list[dict[str, Any]], methods: list[str], horizon: int, path: str | Path, tail: int = 256
) -> Path:
    """First channel of sample windows: the context's last ``tail`` steps, truth and each forecast.

    One row per system and one column per noise level.
    """
    systems = list(dict.fromkeys(s["system"] for s in samples))
    levels = list(dict.fromkeys(s["noise"] for s in samples))
    colours = _colours(methods)
    fig, axes = plt.subplots(
        len(systems), len(levels), figsize=(6.5 * len(levels), 2.2 * len(systems)), squeeze=False
    )
    for s in samples:
        ax = axes[systems.index(s["system"]), levels.index(s["noise"])]
        ctx = s["context"][-tail:, 0]
        if not ax.lines:  # context and truth once per panel
            ax.plot(np.arange(-len(ctx), 0), ctx, color="0.6", lw=1.0, label="context")
            ax.plot(np.arange(horizon), s["truth"][:horizon, 0], **_TRUTH)
            ax.axvline(0, color="0.4", lw=0.6, ls=":")
            ax.set_title(f"{s['system']}, noise {s['noise']:g}", fontsize=9)
            seen = np.concatenate([ctx, s["truth"][:horizon, 0]])
            pad = 0.25 * (seen.max() - seen.min() + 1e-9)
            ax.set_ylim(seen.min() - pad, seen.max() + pad)  # a diverging forecast does not squash the truth
        ax.plot(
            np.arange(horizon),
            s["forecast"][:horizon, 0],
            color=colours[s["method"]],
            lw=1.0,
            label=s["method"],
        )
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("step (0 = forecast origin)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_rollouts(samples: list[dict[str, Any]], methods: list[str], rollout: int, path: str | Path) -> Path:
    """Channels 0 and 1 of long rollouts (clean contexts) against the true continuation.

    One row per system, one column per method; a 1-channel system is drawn as a delay plot.
    """
    clean = [s for s in samples if s["noise"] == min(x["noise"] for x in samples)]
    systems = list(dict.fromkeys(s["system"] for s in clean))
    colours = _colours(methods)
    fig, axes = plt.subplots(
        len(systems), len(methods), figsize=(2.3 * len(methods), 2.3 * len(systems)), squeeze=False
    )

    def xy(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (a[:, 0], a[:, 1]) if a.shape[1] > 1 else (a[:-8, 0], a[8:, 0])

    for s in clean:
        ax = axes[systems.index(s["system"]), methods.index(s["method"])]
        ax.plot(*xy(s["truth"][:rollout]), color="0.75", lw=0.5)
        fx, fy = xy(s["forecast"][:rollout])
        ax.plot(fx, fy, color=colours[s["method"]], lw=0.5)
        ax.plot(
            fx[-1:], fy[-1:], "o", color=colours[s["method"]], ms=3
        )  # visible even if the rollout is still
        ax.set_xticks([])
        ax.set_yticks([])
        if ax.get_subplotspec().is_first_row():
            ax.set_title(s["method"], fontsize=9)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(s["system"], fontsize=8)
    fig.suptitle(
        f"{rollout}-step rollouts (colour) over the true continuation (grey), channels 0 vs 1", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_report(report: dict[str, Any], samples: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write all figures of a run into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg, methods = report["config"], report["methods"]
    paths = [plot_error_vs_horizon(report, out / "error_vs_horizon.png")]
    if samples:
        paths.append(
            plot_sample_forecasts(samples, methods, max(cfg["horizons"]), out / "sample_forecasts.png")
        )
        if cfg["rollout"]:
            paths.append(plot_rollouts(samples, methods, cfg["rollout"], out / "rollouts.png"))
    return paths


def plot_forecast(
    context: np.ndarray,
    forecast: np.ndarray,
    path: str | Path,
    truth: np.ndarray | None = None,
    columns: list[str] | None = None,
    title: str | None = None,
    show_context: int = 256,
) -> Path:
    """One panel per channel: the end of the context, the forecast and (optionally) the truth.

    Args:
        context: ``(T,)`` or ``(T, C)``.
        forecast: ``(H,)`` or ``(H, C)``.
        path: PNG to write.
        truth: ``(H', C)`` continuation to compare against, or None.
        columns: channel names.
        title: figure title.
        show_context: context steps drawn before the forecast.
    """
    ctx = np.asarray(context, dtype=float).reshape(len(context), -1)[-show_context:]
    fc = np.asarray(forecast, dtype=float).reshape(len(forecast), -1)
    C = ctx.shape[1]
    fig, axes = plt.subplots(C, 1, figsize=(9, 1.8 * C + 0.8), sharex=True, squeeze=False)
    t_ctx = np.arange(-len(ctx), 0)
    t_fc = np.arange(len(fc))
    for c, ax in enumerate(axes[:, 0]):
        ax.plot(t_ctx, ctx[:, c], color="0.35", lw=1, label="context")
        ax.plot(t_fc, fc[:, c], color="tab:red", lw=1.3, label="forecast")
    return _finish_panels(fig, axes, path, truth, columns, title, ncol=3)


def plot_fan(
    context: np.ndarray,
    quantiles: np.ndarray,
    levels: list[float] | np.ndarray,
    path: str | Path,
    truth: np.ndarray | None = None,
    columns: list[str] | None = None,
    title: str | None = None,
    show_context: int = 256,
) -> Path:
    """Forecast fan: one panel per channel with the end of the context, the median, the central intervals the
    levels allow (e.g. 0.1-0.9 and 0.25-0.75, shaded, wider lighter) and (optionally) the truth.

    Args:
        context: ``(T,)`` or ``(T, C)``.
        quantiles: ``(H, C, Q)`` (or ``(H, Q)``) at ``levels``.
        levels: ``(Q,)`` quantile levels.
        path: figure to write.
        truth: ``(H', C)`` continuation, or None.
    """
    lv = np.asarray(levels, dtype=float)
    q = np.asarray(quantiles, dtype=float)
    q = q[:, None] if q.ndim == 2 else q  # (H, C, Q)
    ctx = np.asarray(context, dtype=float).reshape(len(context), -1)[-show_context:]
    C, H = q.shape[1], q.shape[0]
    pairs = [(i, int(np.argmin(np.abs(lv - (1 - lv[i]))))) for i in range(len(lv)) if lv[i] < 0.5]
    pairs = [(lo, hi) for lo, hi in pairs if abs(lv[hi] - (1 - lv[lo])) < 1e-6]  # symmetric intervals only
    fig, axes = plt.subplots(C, 1, figsize=(9, 1.8 * C + 0.8), sharex=True, squeeze=False)
    t = np.arange(H)
    for c, ax in enumerate(axes[:, 0]):
        ax.plot(np.arange(-len(ctx), 0), ctx[:, c], color="0.35", lw=1, label="context")
        for lo, hi in sorted(pairs):  # widest first
            width = lv[hi] - lv[lo]
            ax.fill_between(
                t,
                q[:, c, lo],
                q[:, c, hi],
                color="tab:red",
                alpha=0.15 + 0.25 * (1 - width),
                lw=0,
                label=f"{width:.0%} interval",
            )
        mid = int(np.argmin(np.abs(lv - 0.5)))
        ax.plot(t, q[:, c, mid], color="tab:red", lw=1.3, label=f"q{lv[mid]:g}")
    return _finish_panels(fig, axes, path, None if truth is None else truth[:H], columns, title, ncol=5)


def _finish_panels(
    fig: Any,
    axes: np.ndarray,
    path: str | Path,
    truth: np.ndarray | None,
    columns: list[str] | None,
    title: str | None,
    ncol: int,
) -> Path:
    """The common end of the per-channel forecast figures: the truth (dashed) and the forecast origin in
    each panel, channel labels, the legend, the title; the figure written to ``path`` and closed."""
    tr = None if truth is None else np.asarray(truth, dtype=float).reshape(len(truth), -1)
    for c, ax in enumerate(axes[:, 0]):
        if tr is not None:
            ax.plot(np.arange(len(tr)), tr[:, c], color="black", lw=1, ls="--", label="truth")
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_ylabel(columns[c] if columns else f"x{c}")
    axes[0, 0].legend(loc="upper left", fontsize=8 if ncol <= 3 else 7, ncol=ncol)
    axes[-1, 0].set_xlabel("steps from the forecast origin")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_reliability(report: dict[str, Any], path: str | Path) -> Path:
    """Reliability diagram of a probabilistic report (:func:`panda_fm.eval.probabilistic.evaluate_quantiles`):
    observed against nominal coverage of the central intervals over the longest horizon, one panel per noise
    level, one line per method; the diagonal is perfect calibration."""
    summary = report["summary"]
    fig, axes = plt.subplots(1, len(summary), figsize=(4.2 * len(summary), 4), squeeze=False)
    colours = _colours(report["methods"])
    for ax, (sigma, by_method) in zip(axes[0], summary.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        for name, stats in by_method.items():
            keys = sorted(k for k in stats if k.startswith("reliability_"))
            nominal = [float(k.split("_")[1]) for k in keys]
            ax.plot(nominal, [stats[k] for k in keys], marker="o", ms=3, color=colours[name], label=name)
        ax.set(
            title=f"noise {sigma}",
            xlabel="nominal coverage",
            ylabel="observed coverage",
            xlim=(0, 1),
            ylim=(0, 1),
        )
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
