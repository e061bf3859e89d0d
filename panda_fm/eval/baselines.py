"""The benchmark's methods: classical baselines by name, and checkpoints as forecasters.

Baselines are the forecasters of :mod:`panda_fm.forecasters` with their default settings; a checkpoint
directory becomes a method through :class:`PipelineForecaster`. Every method has the signature of
:meth:`panda_fm.PandaPipeline.predict` (:class:`panda_fm.forecasters.Forecaster`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panda_fm.forecasters import (
    AnalogueForecaster,
    FieldNVARForecaster,
    Forecaster,
    LinearARForecaster,
    MeanForecaster,
    NaiveForecaster,
    NVARForecaster,
    QuadraticNVARForecaster,
    SelectorForecaster,
    SMapForecaster,
)
from panda_fm.forecasters.experts import EXPERT_VERSIONS

__all__ = ["BASELINES", "make_baselines", "PipelineForecaster", "checkpoint_forecasters"]

#: name -> factory of the forecaster with its default settings
BASELINES: dict[str, Callable[[], Forecaster]] = {
    "mean": MeanForecaster,
    "naive": NaiveForecaster,
    "linear_ar": LinearARForecaster,
    "nvar": NVARForecaster,
    "nvar2": QuadraticNVARForecaster,
    "field_nvar": FieldNVARForecaster,  # one local model shared by the sites of a ring (fields, lattices)
    "analogue": AnalogueForecaster,
    "analogue_auto": EXPERT_VERSIONS[4]["analogue_auto"],  # the embedding chosen on the context
    "smap": SMapForecaster,  # locally weighted linear maps, on analogue_auto's embedding
    "selector": SelectorForecaster,
}


def make_baselines(names: list[str] | tuple[str, ...] | str = "all") -> list[Forecaster]:
    """Baselines by name with their default settings; ``"all"`` gives every one.

    Args:
        names: ``"all"``, or names from :data:`BASELINES`.
    """
    if isinstance(names, str):
        names = list(BASELINES) if names == "all" else [names]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)} or 'all'")
    return [BASELINES[n]() for n in names]


class PipelineForecaster:
    """A checkpoint as a :class:`~panda_fm.forecasters.Forecaster`, loaded on first use (or by :meth:`load`).

    Its wall time in a report therefore includes loading the checkpoint once, unless :meth:`load` ran first.

    Args:
        path: checkpoint directory, registered name (``"panda-fm-small"``) or hub id: anything
            :meth:`PandaPipeline.from_pretrained` reads. A name or hub id is resolved to its directory here.
        name: the method's name in reports; defaults to the last part of ``path``.
        device: where the model runs ("cpu", "cuda", ...).
        prior: forecast with the checkpoint's experts chosen by the untrained backtest prior
            (:meth:`panda_fm.PandaModel.prior_only`): the checkpoint with its network's learned part off.

    Raises:
        FileNotFoundError: ``path`` is neither a directory nor a registered name nor a hub id (see
            :func:`panda_fm.hub.resolve_checkpoint`), at once, before any forecast.
        OSError: a hub id that cannot be fetched.
    """

    def __init__(self, path: str | Path, name: str | None = None, device: str = "cpu", prior: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            from panda_fm.hub import resolve_checkpoint  # imported here: torch loads only for a checkpoint

            self.path = resolve_checkpoint(path)
        self.name = name or Path(path).name
        self.device = device
        self.prior = prior
        self._pipe: Any = None

    def load(self) -> PipelineForecaster:
        """Load the checkpoint now (a broken one fails here, not at the first forecast); returns ``self``.

        Raises:
            ValueError: the checkpoint's files are corrupt or do not match its config.
        """
        if self._pipe is None:
            from panda_fm import PandaPipeline  # imported here: torch loads only when a checkpoint is used

            self._pipe = PandaPipeline.from_pretrained(self.path, device=self.device)
            if self.prior:
                self._pipe.model = self._pipe.model.prior_only().eval()
        return self

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        """Forecast with the checkpoint: ``(B, T, C) -> (B, H, C)``."""
        self.load()
        return np.asarray(self._pipe.predict(np.asarray(context, dtype=np.float64), prediction_length))


def checkpoint_forecasters(paths: Sequence[str | Path], device: str = "cpu") -> list[PipelineForecaster]:
    """One forecaster per checkpoint (directory, registered name or hub id), named by the path's last part, or
    by its last two path parts where two share a name (``run1/final``, ``run2/final``)."""
    short = [Path(p).name for p in paths]
    return [
        PipelineForecaster(
            p, name=n if short.count(n) == 1 else "/".join(Path(p).resolve().parts[-2:]), device=device
        )
        for p, n in zip(paths, short, strict=True)
    ]
