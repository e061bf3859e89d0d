"""Augmentations of training windows (docs/method.md, "Training").

Each function maps one raw window ``(T, D)`` (time-major, channels last) to a new window ``(T', D')``.
All randomness enters through an explicit :class:`numpy.random.Generator`.

Kinds:
    ``delay``: a time-delay (Takens) embedding of one random channel, ``y_i(t) = x_j(t - i * tau)``.
    ``convex``: random convex combinations of the channels, ``y = x W^T`` with Dirichlet rows of ``W``.
    ``affine``: a random affine map, ``y = x A^T + b``.
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
