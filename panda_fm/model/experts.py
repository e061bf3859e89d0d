"""Classical in-context forecasts computed inside the model, for the network to choose between.

With ``PandaConfig.incontext = "experts"`` the model runs the context-only forecasters of
:data:`panda_fm.forecasters.EXPERTS` on every context it reads, together with a backtest of each (its error
on the context's own last steps, forecast from the steps before them). The forecasts become future patch
tokens marked by expert and by backtest error, and the network learns which forecast to trust for each
channel, starting from the one with the smallest backtest error (see :class:`panda_fm.PandaModel`). The
experts have no trainable parameters: they run under ``no_grad`` on the CPU in float64, whatever device
the network is on.

Shape letters: B batch, T time, C channels, E experts, H horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from panda_fm.forecasters import LATEST_EXPERTS_VERSION, backtest_experts


def _fill_missing(x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Carry the last observed value of each channel forward (the first one backward) over gaps.

    A channel without any observation is left at 0 (its mean in standardised units).
    """
    T = x.shape[1]
    idx = np.where(observed, np.arange(T)[None, :, None], -1)
    last = np.maximum.accumulate(idx, axis=1)  # (B, T, C): index of the last observed step so far
    first = np.where(observed.any(axis=1), observed.argmax(axis=1), 0)  # (B, C)
    last = np.where(last < 0, first[:, None, :], last)
    out = np.take_along_axis(x, last, axis=1)
    return np.where(observed.any(axis=1, keepdims=True), out, 0.0)


@torch.no_grad()
def expert_forecasts(
    x: torch.Tensor,
    observed: torch.Tensor | None,
    names: Sequence[str],
    horizon: int,
    backtest: int,
    version: int = LATEST_EXPERTS_VERSION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forecast each context with each expert, and backtest each expert on the context.

    Args:
        x: ``(B, T, C)`` standardised context (unobserved entries arbitrary).
        observed: ``(B, T, C)`` bool or None; gaps are filled with the last observed value first.
        names: keys of ``panda_fm.forecasters.EXPERT_VERSIONS[version]``.
        horizon: steps to forecast.
        backtest: steps at the end of the context each expert is scored on.
        version: the version of the experts' registry (``PandaConfig.experts_version``).

    Returns:
        Forecasts ``(B, E, H, C)`` and backtest mean absolute errors ``(B, E, C)``, float32 on ``x``'s device.
    """
    z = x.detach().to("cpu", torch.float64).numpy()
    if observed is not None and not bool(observed.all()):
        z = _fill_missing(z, observed.detach().cpu().numpy())
    forecasts, errors = backtest_experts(z, names, horizon, backtest, version=version)
    return tuple(torch.from_numpy(a.astype(np.float32)).to(x.device) for a in (forecasts, errors))
