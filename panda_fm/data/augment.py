"""Augmentations of training windows (docs/method.md, "Training").

Each function maps one raw window ``(T, D)`` (time-major, channels last) to a new window ``(T', D')``.
All randomness enters through an explicit :class:`numpy.random.Generator`.

Kinds:
    ``delay``: a time-delay (Takens) embedding of one random channel, ``y_i(t) = x_j(t - i * tau)``.
    ``convex``: random convex combinations of the channels, ``y = x W^T`` with Dirichlet rows of ``W``.
    ``affine``: a random affine map, ``y = x A^T + b``.

Independently of the kind, a window can be observed in ways unlike the stored trajectories (the stress suite's
conditions, :mod:`panda_fm.eval.stress`): resampled at another rate (:func:`resample`), given a shorter context
(left-padded as missing, :func:`shorten_contexts`) and observation noise (:func:`add_context_noise`), and a
batch can keep fewer channels (partial observation; :class:`panda_fm.data.windows.WindowSampler`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AUGMENTATIONS = ("delay", "convex", "affine")


@dataclass
class AugmentConfig:
    """Which augmentations apply and how often.

    A window is augmented with probability ``rate`` by one kind chosen uniformly from ``kinds``.
    """

    rate: float = 0.2  # probability that a training window is augmented
    kinds: list[str] = field(default_factory=lambda: list(AUGMENTATIONS))  # kinds to choose from
    max_delay: int = 10  # largest delay tau of the time-delay embedding, in time steps
    dirichlet_alpha: float = 1.0  # concentration of the Dirichlet weights of convex combinations
    affine_bias_scale: float = 1.0  # std of the affine offset b, in units of the window's channel std
    # Observation noise on the context only (the target stays clean), independent of the kinds above: with
    # probability noise_rate a window's context gets Gaussian noise of std U(0, noise) x each channel's std.
    noise: float = 0.0
    noise_rate: float = 0.5
    # Sampling rate: with probability resample_rate a window is resampled to a rate log-uniform in
    # [1 / max_resample, max_resample] times the stored one (cubic interpolation between stored steps).
    resample_rate: float = 0.0
    max_resample: float = 4.0
    # Short contexts: with probability short_rate a context keeps only its last U{min_context, ...,
    # context_length - 1} steps, the rest missing (NaN), as the model left-pads a short context.
    short_rate: float = 0.0
    min_context: int = 128
    # Partial observation: with probability partial_rate a batch keeps U{1, ..., C - 1} channels of the C it
    # would keep.
    partial_rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"augment.rate must lie in [0, 1], got {self.rate}")
        unknown = sorted(set(self.kinds) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation kinds {unknown}; choose from {list(AUGMENTATIONS)}")
        if self.rate > 0 and not self.kinds:
            raise ValueError("augment.kinds is empty but augment.rate > 0; list kinds or set rate to 0")
        if self.max_delay < 1:
            raise ValueError(f"augment.max_delay must be >= 1, got {self.max_delay}")
        if self.dirichlet_alpha <= 0:
            raise ValueError(f"augment.dirichlet_alpha must be positive, got {self.dirichlet_alpha}")
        if self.affine_bias_scale < 0:
            raise ValueError(f"augment.affine_bias_scale must be >= 0, got {self.affine_bias_scale}")
        if self.noise < 0 or not 0.0 <= self.noise_rate <= 1.0:
            raise ValueError(
                f"augment.noise must be >= 0 and augment.noise_rate in [0, 1], got {self.noise}, {self.noise_rate}"
            )
        for name in ("resample_rate", "short_rate", "partial_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_resample < 1:
            raise ValueError(f"augment.max_resample must be >= 1, got {self.max_resample}")
        if self.min_context < 1:
            raise ValueError(f"augment.min_context must be >= 1, got {self.min_context}")

    def resample_factor(self, rng: np.random.Generator) -> float:
        """Stored steps per window step: 1, or with probability ``resample_rate`` log-uniform in
        ``[1 / max_resample, max_resample]`` (draws nothing when ``resample_rate`` is 0)."""
        if self.resample_rate <= 0 or rng.random() >= self.resample_rate:
            return 1.0
        return float(np.exp(rng.uniform(-1.0, 1.0) * np.log(self.max_resample)))

    def history_needed(self, num_channels: int) -> int:
        """Steps of history before a window that a delay embedding into ``num_channels`` may read."""
        return (num_channels - 1) * self.max_delay if "delay" in self.kinds and self.rate > 0 else 0


def delay_embedding(x: np.ndarray, channel: int, dim: int, tau: int, length: int) -> np.ndarray:
    """Time-delay embedding of one channel.

    Args:
        x: ``(T, D)`` raw slice whose last ``length`` steps are the window; the ``(dim - 1) * tau`` steps
            before them supply the delayed copies.
        channel: the channel j that is embedded.
        dim: number of delayed copies (output channels).
        tau: delay in steps.
        length: steps of the output window.

    Returns:
        ``(length, dim)`` with column i holding ``x_j(t - i * tau)``.
    """
    T = x.shape[0]
    assert T >= length + (dim - 1) * tau, f"need {length + (dim - 1) * tau} steps, got {T}"
    cols = [x[T - length - i * tau : T - i * tau, channel] for i in range(dim)]
    return np.stack(cols, axis=1)


def convex_combination(x: np.ndarray, rng: np.random.Generator, alpha: float = 1.0) -> np.ndarray:
    """``(T, D) -> (T, D)``: each output channel is a random convex combination of the inputs."""
    D = x.shape[1]
    weights = rng.dirichlet(np.full(D, alpha), size=D)  # (D_out, D_in), rows sum to 1
    return x @ weights.T.astype(x.dtype)


def affine_map(x: np.ndarray, rng: np.random.Generator, bias_scale: float = 1.0) -> np.ndarray:
    """``(T, D) -> (T, D)``: ``x A^T + b`` with ``A_ij ~ N(0, 1 / D)`` and ``b ~ N(0, (bias_scale * std)^2)``."""
    D = x.shape[1]
    A = rng.normal(0.0, 1.0 / np.sqrt(D), size=(D, D))
    b = rng.normal(0.0, 1.0, size=D) * bias_scale * (x.std(axis=0) + 1e-6)
    return (x @ A.T + b).astype(x.dtype)


def augment_window(
    raw: np.ndarray, length: int, num_channels: int, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, str | None]:
    """Augment (or not) one window.

    Args:
        raw: ``(T, D)`` slice whose last ``length`` steps are the window and whose first
            ``config.history_needed(num_channels)`` steps are history for a delay embedding.
        length: steps of the window.
        num_channels: channels a delay embedding produces.
        config: the augmentation settings.
        rng: the generator every draw comes from.

    Returns:
        The window ``(length, D')`` (``D' = D`` except for a delay embedding, ``num_channels``) and the kind
        applied, or None.
    """
    window = raw[raw.shape[0] - length :]
    if config.rate <= 0 or rng.random() >= config.rate:
        return window, None
    kind = config.kinds[int(rng.integers(len(config.kinds)))]
    if kind == "delay":
        tau = int(rng.integers(1, config.max_delay + 1))
        channel = int(rng.integers(raw.shape[1]))
        return delay_embedding(raw, channel, num_channels, tau, length), kind
    if kind == "convex":
        return convex_combination(window, rng, config.dirichlet_alpha), kind
    return affine_map(window, rng, config.affine_bias_scale), kind


def resample_extent(length: int, factor: float) -> int:
    """Stored steps :func:`resample` reads to make ``length`` steps ``factor`` stored steps apart."""
    return length if factor == 1.0 else int(np.floor(factor * (length - 1))) + 4


def resample(x: np.ndarray, factor: float, length: int) -> np.ndarray:
    """Resample ``x`` ``(T, D)`` to ``length`` steps ``factor`` stored steps apart.

    Output step ``i`` is the value at stored time ``1 + i * factor``, interpolated by the cubic through the 4
    nearest stored steps (exact at whole times: a whole ``factor`` subsamples). ``x`` must hold
    :func:`resample_extent` steps; ``factor == 1`` returns ``x[:length]``.
    """
    if factor == 1.0:
        return x[:length]
    need = resample_extent(length, factor)
    assert x.shape[0] >= need, f"need {need} steps, got {x.shape[0]}"
    pos = 1.0 + factor * np.arange(length)
    i = np.floor(pos).astype(np.int64)  # the stencil is i - 1 .. i + 2
    u = (pos - i)[:, None]
    weights = (  # Lagrange weights of the nodes -1, 0, 1, 2 at u in [0, 1)
        -u * (u - 1) * (u - 2) / 6,
        (u + 1) * (u - 1) * (u - 2) / 2,
        -(u + 1) * u * (u - 2) / 2,
        (u + 1) * u * (u - 1) / 6,
    )
    out = sum(w * x[i + offset] for w, offset in zip(weights, (-1, 0, 1, 2), strict=True))
    return out.astype(x.dtype)


def shorten_contexts(
    batch: np.ndarray, context_length: int, config: AugmentConfig, rng: np.random.Generator
) -> None:
    """Cut contexts of a batch ``(B, L, C)`` in place (see ``AugmentConfig.short_rate``): NaN before the kept steps."""
    if config.short_rate <= 0 or config.min_context >= context_length:
        return
    B = batch.shape[0]
    short = rng.random(B) < config.short_rate
    kept = rng.integers(config.min_context, context_length, size=B)
    for b in np.flatnonzero(short):
        batch[b, : context_length - kept[b]] = np.nan


def add_context_noise(
    batch: np.ndarray, context_length: int, config: AugmentConfig, rng: np.random.Generator
) -> None:
    """Add observation noise to the contexts of a batch ``(B, L, C)`` in place (see ``AugmentConfig.noise``)."""
    if config.noise <= 0 or config.noise_rate <= 0:
        return
    B, _, C = batch.shape
    context = batch[:, :context_length]  # a view: the noise lands in batch
    sigma = rng.uniform(0.0, config.noise, size=B) * (rng.random(B) < config.noise_rate)  # (B,)
    scale = sigma[:, None, None] * context.std(axis=1, keepdims=True)  # (B, 1, C)
    context += (rng.standard_normal(context.shape) * scale).astype(batch.dtype)
