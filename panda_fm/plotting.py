"""Figures (matplotlib, Agg backend); kept out of the core modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _pyplot()
    ctx = np.asarray(context, dtype=float).reshape(len(context), -1)[-show_context:]
    fc = np.asarray(forecast, dtype=float).reshape(len(forecast), -1)
    C = ctx.shape[1]
    fig, axes = plt.subplots(C, 1, figsize=(9, 1.8 * C + 0.8), sharex=True, squeeze=False)
    t_ctx = np.arange(-len(ctx), 0)
    t_fc = np.arange(len(fc))
    for c, ax in enumerate(axes[:, 0]):
        ax.plot(t_ctx, ctx[:, c], color="0.35", lw=1, label="context")
        if truth is not None:
            tr = np.asarray(truth, dtype=float).reshape(len(truth), -1)
            ax.plot(np.arange(len(tr)), tr[:, c], color="black", lw=1, ls="--", label="truth")
        ax.plot(t_fc, fc[:, c], color="tab:red", lw=1.3, label="forecast")
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_ylabel(columns[c] if columns else f"x{c}")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("steps from the forecast origin")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
