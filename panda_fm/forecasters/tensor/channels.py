"""Which channels of a context belong to one dynamical system: groups found from the context alone.

A context may stack channels that do not interact: a system and independent noise channels, or several
independent systems side by side. Fitting them as one joint system costs the in-context experts dearly (the
NVAR's feature count grows with the channels, so its degree falls, and every foreign channel is a spurious
regressor; the analogue's distances are swamped). :func:`channel_groups` estimates which channels help to
predict which, and :func:`grouped` runs a batched forecaster on each group of channels separately.

The test for "channel j helps channel i": regress the ``k``-step increment of channel i on the quadratic
features of ``(z_i(t), z_i(t - s))``, then on those of ``(z_i(t), z_i(t - s), z_j(t), z_j(t - s))``, and
compare the residual sums of squares. Channels of one system explain much of each other's increments
(ratios of 0.003-0.5 on the held-out dysts flows); a white-noise channel explains nothing (ratio about 1),
and an unrelated chaotic channel explains by chance a little (ratios mostly 0.5-1). Channel j is a helper of
i when the ratio is below ``threshold`` and within ``factor`` times the best helper's; the groups are the
connected components of that relation (in either direction: a drive helps its response, not the reverse),
split again with stricter thresholds while larger than :data:`MAX_GROUP`.

Measured on 512-step windows of the held-out founders (docs/design-choices.md, "Channel groups"): noise
channels come out alone every time; 61 of 76 windows of single systems (clean and with 5% noise) stay one
group; stacks of 2 to 13 systems separate imperfectly (in 12 stacks, 4 groups mixed systems and 14 of 52
systems were split). So callers choose per group between the joint and the grouped forecast by backtest, as
the model's experts do (:func:`panda_fm.forecasters.tensor.experts.backtest_experts_tensor`).

Shape letters: B batch, T time, C channels, N samples, F features, G channels in a group, M groups.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["channel_groups", "grouped", "keep_better_groups"]

#: Steps ahead of the increment, and steps between the two delayed copies, in the helper test.
HELP_STEP = 4
#: A helper's residual ratio must be below this ...
HELP_THRESHOLD = 0.7
#: ... and within this factor of the best helper's.
HELP_FACTOR = 5.0
#: Groups larger than this are split again with a stricter threshold.
MAX_GROUP = 6


def _quadratic(v: torch.Tensor) -> torch.Tensor:
    """The variables and their pairwise products along the last axis: ``(..., N, D) -> (..., N, D + D(D+1)/2)``."""
    return torch.cat([v] + [v[..., i : i + 1] * v[..., i:] for i in range(v.shape[-1])], dim=-1)


def _residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared residual of a lightly penalised ridge fit with intercept: ``x (..., N, F)``, ``y (..., N)``."""
    a = x - x.mean(dim=-2, keepdim=True)
    a = a / a.std(dim=-2, keepdim=True).clamp_min(1e-12)
    yc = y - y.mean(dim=-1, keepdim=True)
    gram = a.mT @ a
    gram.diagonal(dim1=-2, dim2=-1).add_(1e-6 * a.shape[-2])
    w = torch.linalg.solve_ex(gram, a.mT @ yc[..., None])[0]  # (..., F, 1)
    return ((a @ w)[..., 0] - yc).square().mean(dim=-1)


def help_ratios(z: torch.Tensor, step: int = HELP_STEP) -> torch.Tensor:
    """How much each channel helps to predict each other's increments.

    Args:
        z: ``(B, T, C)`` standardised contexts, finite.
        step: ``k`` and ``s`` of the test (module docstring).

    Returns:
        ``(B, C, C)``: entry ``[b, i, j]`` is the residual with channel j's features over the residual
        without; 1 on the diagonal.
    """
    B, T, C = z.shape
    t = torch.arange(step, T - step, device=z.device)  # (N,)
    own = torch.stack([z[:, t], z[:, t - step]], dim=-1).transpose(1, 2)  # (B, C, N, 2)
    target = (z[:, t + step] - z[:, t]).transpose(1, 2)  # (B, C, N)
    alone = _residual(_quadratic(own), target).clamp_min(1e-30)  # (B, C)
    ratios = torch.ones(B, C, C, dtype=z.dtype, device=z.device)
    for j in range(C):  # one partner channel for every target at a time: memory O(B C N)
        pair = torch.cat([own, own[:, j : j + 1].expand(-1, C, -1, -1)], dim=-1)  # (B, C, N, 4)
        ratios[:, :, j] = _residual(_quadratic(pair), target) / alone
    ratios.diagonal(dim1=1, dim2=2).fill_(1.0)
    return ratios


def _components(helps: torch.Tensor) -> torch.Tensor:
    """Connected components of ``helps`` ``(B, C, C)`` bool read in either direction: ``(B, C)`` labels, each
    the smallest channel index of its component."""
    B, C, _ = helps.shape
    linked = helps | helps.mT | torch.eye(C, dtype=torch.bool, device=helps.device)
    labels = torch.arange(C, device=helps.device).expand(B, C)
    for _ in range(C):  # propagate the smallest label through the links until nothing changes
        new = torch.where(linked, labels[:, None, :], C).amin(dim=-1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def channel_groups(
    z: torch.Tensor,
    threshold: float = HELP_THRESHOLD,
    factor: float = HELP_FACTOR,
    max_group: int = MAX_GROUP,
    levels: int = 4,
) -> torch.Tensor:
    """Group the channels of each context into the systems they seem to belong to.

    Many unrelated channels link up by chance (each one's spurious helpers chain the groups together), so a
    group larger than ``max_group`` is split again with half the threshold, up to ``levels`` times (the
    groups of a smaller threshold refine those of a larger one).

    Args:
        z: ``(B, T, C)`` standardised contexts, finite (fill gaps first).
        threshold: the largest residual ratio of a helper.
        factor: a helper's ratio is within this factor of the best one's.
        max_group: the most channels of a group that is not split again.
        levels: thresholds tried.

    Returns:
        ``(B, C)`` int64 labels: channels with the same label form a group.
    """
    B, _, C = z.shape
    if C == 1:
        return torch.zeros(B, 1, dtype=torch.long, device=z.device)
    ratios = help_ratios(z)  # (B, C, C)
    best = ratios.amin(dim=-1, keepdim=True)  # (B, C, 1)
    labels = done = None
    for level in range(levels):
        helps = ratios < torch.clamp(factor * best, max=threshold / 2**level)  # (B, C, C)
        found = _components(helps) + level * C  # labels distinct across levels
        small = torch.zeros_like(found).scatter_add_(1, found - level * C, torch.ones_like(found))
        small = small.gather(1, found - level * C) <= max_group  # (B, C): the channel's group is small
        if labels is None:
            labels, done = found, small
        else:
            labels, done = torch.where(done, labels, found), done | small
    return labels


def grouped(
    forecast: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    z: torch.Tensor,
    labels: torch.Tensor,
    channel_axis: tuple[int, ...],
) -> tuple[torch.Tensor, ...]:
    """Run ``forecast`` on each group of channels separately, batching the groups of equal size.

    Args:
        forecast: ``(M, T, G)`` contexts -> tensors with the channels along the axes ``channel_axis``
            (one per output), batch first.
        z: ``(B, T, C)`` contexts (NaN allowed, passed on).
        labels: ``(B, C)`` from :func:`channel_groups`.
        channel_axis: for each output of ``forecast``, the axis of its channels.

    Returns:
        The outputs of ``forecast`` for ``(B, T, C)``: each channel's entries come from its group's run.
    """
    members: dict[int, list[tuple[int, list[int]]]] = {}  # group size -> (series, channels) of its groups
    for b, row in enumerate(labels.tolist()):
        for label in sorted(set(row)):
            channels = [c for c, lab in enumerate(row) if lab == label]
            members.setdefault(len(channels), []).append((b, channels))
    outputs: list[torch.Tensor] | None = None
    for groups in members.values():
        series = torch.tensor([b for b, _ in groups], device=z.device)  # (M,)
        index = torch.tensor([c for _, c in groups], device=z.device)  # (M, G)
        parts = forecast(z[series[:, None], :, index].transpose(1, 2))  # z[...] is (M, G, T)
        if outputs is None:
            outputs = [
                p.new_zeros(z.shape[0], *p.shape[1:axis], z.shape[2], *p.shape[axis + 1 :])
                for p, axis in zip(parts, channel_axis, strict=True)
            ]
        for out, part, axis in zip(outputs, parts, channel_axis, strict=True):
            moved = out.movedim(axis, 1)  # (B, C, ...): a view
            moved[series[:, None], index] = part.movedim(axis, 1)  # (M, G, ...)
    assert outputs is not None
    return tuple(outputs)


def keep_better_groups(
    joint: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    z: torch.Tensor,
    labels: torch.Tensor,
    forecasts: torch.Tensor,
    errors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace joint forecasts by each group's own where those backtest better over the group.

    Args:
        joint: contexts ``(M, T, G)`` -> forecasts ``(M, E, H, G)`` and backtest errors ``(M, E, G)``.
        z: ``(B, T, C)`` contexts.
        labels: ``(B, C)`` from :func:`channel_groups`.
        forecasts: ``(B, E, H, C)``, ``joint(z)``'s forecasts; updated in place.
        errors: ``(B, E, C)``, ``joint(z)``'s errors; updated in place.

    Returns:
        ``forecasts`` and ``errors``. Series whose channels form one group keep theirs without a second run.
    """
    rows = torch.nonzero((labels != labels[:, :1]).any(dim=1)).flatten()  # series with several groups
    if len(rows) == 0:
        return forecasts, errors
    labels = labels[rows]
    group_forecasts, group_errors = grouped(joint, z[rows], labels, (3, 2))
    same = (labels[:, :, None] == labels[:, None, :]).to(errors.dtype)  # (R, C, C)
    share = same / same.sum(dim=2, keepdim=True)  # averages over a channel's group
    better = group_errors @ share < errors[rows] @ share  # (R, E, C): per expert and group
    forecasts[rows] = torch.where(better[:, :, None], group_forecasts, forecasts[rows])
    errors[rows] = torch.where(better, group_errors, errors[rows])
    return forecasts, errors
