"""Classical in-context forecasts computed inside the model, for the network to choose between.

With ``PandaConfig.incontext = "experts"`` the model runs the context-only forecasters of
:data:`panda_fm.forecasters.EXPERTS` on every context it reads, together with a backtest of each (its error
on the context's own last steps, forecast from the steps before them). The forecasts become future patch
tokens (or one token per expert: ``PandaConfig.expert_tokens``) marked by expert and by backtest error, and
the network learns which forecast to trust for each channel, starting from the one with the smallest backtest
error (see :class:`panda_fm.PandaModel`). The
experts have no trainable parameters: they run under ``no_grad`` as batched tensor code
(:mod:`panda_fm.forecasters.tensor`) on the network's device, in :data:`EXPERT_DTYPE`.

Shape letters: B batch, T time, C channels, E experts, H horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from panda_fm.forecasters import LATEST_EXPERTS_VERSION
from panda_fm.forecasters.experts import CONTEXT_UNITS, backtest_lengths
from panda_fm.forecasters.tensor.experts import (
    backtest_experts_tensor,
    experts_channel_groups,
)
from panda_fm.scaling import InstanceScale

# float64, as the numpy reference: the NVAR's ridge fits on clean contexts are ill-conditioned enough that
# float32 round-off moves its forecasts visibly (tests/forecasters/test_tensor_nvar.py measures it).
EXPERT_DTYPE = torch.float64


@torch.no_grad()
def expert_forecasts(
    x: torch.Tensor,
    observed: torch.Tensor | None,
    names: Sequence[str],
    horizon: int,
    backtest: int,
    version: int = LATEST_EXPERTS_VERSION,
    with_backtest: bool = False,
    units: InstanceScale | None = None,
) -> tuple[torch.Tensor, ...]:
    """Forecast each context with each expert, and backtest each expert on the context.

    Args:
        x: ``(B, T, C)`` standardised context (unobserved entries arbitrary).
        observed: ``(B, T, C)`` bool or None; the experts treat the unobserved entries as missing values
            (:mod:`panda_fm.forecasters.gaps`: short holes interpolated, longer gaps never fitted, missing
            steps at the end forecast).
        names: keys of ``panda_fm.forecasters.EXPERT_VERSIONS[version]``.
        horizon: steps to forecast.
        backtest: steps at the end of the context each expert is scored on.
        version: the version of the experts' registry (``PandaConfig.experts_version``).
        units: the statistics ``x`` was standardised by. Experts of a version that reads the context in its own
            units (:data:`panda_fm.forecasters.experts.CONTEXT_UNITS`: the field NVAR's shared model needs the
            sites' common units) then run on ``x`` in those units, and their forecasts and errors come back
            standardised; otherwise (or with None) they run on ``x``.

    Returns:
        Forecasts ``(B, E, H, C)`` and backtest mean absolute errors ``(B, E, C)``, float32 on ``x``'s device,
        and the channel groups ``(B, C)`` the experts fitted separately (None: all channels jointly; see
        :func:`panda_fm.forecasters.tensor.experts.experts_channel_groups`); with ``with_backtest``, then the
        backtest's forecasts ``(B, E, V, C)`` of the context's last ``V`` steps.
    """
    z = x.detach().to(EXPERT_DTYPE)
    if observed is not None and not bool(observed.all()):
        z = z.masked_fill(~observed, torch.nan)
    labels = experts_channel_groups(z, version)
    if units is None or not CONTEXT_UNITS[version]:
        out = backtest_experts_tensor(z, names, horizon, backtest, version, labels, with_backtest)
        return _float32(out, labels, with_backtest)
    loc, scale = units.loc.to(z), units.scale.to(z)  # (B, 1, C)
    lengths = backtest_lengths(z, backtest, version)  # the same in any units
    out = backtest_experts_tensor(
        z * scale + loc, names, horizon, backtest, version, labels, with_backtest, lengths=lengths
    )
    forecasts, errors, *past = out  # (B, E, H, C), (B, E, C)[, (B, E, V, C)] in the context's units
    # a channel without observations in the backtest scores 1 (std) in any units: keep it 1 once standardised
    T, steps = z.shape[1], torch.tensor(lengths, device=z.device)
    scored = torch.arange(T, device=z.device)[None, :] >= T - steps[:, None]  # (B, T): each backtest's steps
    unseen = ~(torch.isfinite(z) & scored[..., None]).any(dim=1)[:, None]  # (B, 1, C)
    standardised = ((forecasts - loc[:, None]) / scale[:, None], torch.where(unseen, 1.0, errors / scale))
    return _float32(
        (*standardised, *[(p - loc[:, None]) / scale[:, None] for p in past]), labels, with_backtest
    )


def _float32(
    out: tuple[torch.Tensor, ...], labels: torch.Tensor | None, with_backtest: bool
) -> tuple[torch.Tensor, ...]:
    """``expert_forecasts``' return value from the experts' outputs (forecasts, errors[, backtest])."""
    forecasts, errors = out[0].float(), out[1].float()
    if with_backtest:
        return forecasts, errors, labels, out[2].float()
    return forecasts, errors, labels
