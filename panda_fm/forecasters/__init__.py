"""Classical forecasters fitted to a context alone: the model's in-context experts and the benchmark's baselines.

Neutral ground: :mod:`panda_fm.model` and :mod:`panda_fm.eval` both import from here, and nothing here
imports either of them.
"""

from panda_fm.forecasters.analogue import AnalogueForecaster, SMapForecaster
from panda_fm.forecasters.base import ContextForecaster, Forecaster, MeanForecaster, NaiveForecaster
from panda_fm.forecasters.denoise import DenoisedForecaster
from panda_fm.forecasters.experts import (
    EXPERT_VERSIONS,
    EXPERTS,
    LATEST_EXPERTS_VERSION,
    SelectorForecaster,
    backtest_experts,
)
from panda_fm.forecasters.field import FieldNVARForecaster, WideNVARForecaster
from panda_fm.forecasters.nvar import LinearARForecaster, NVARForecaster, QuadraticNVARForecaster

__all__ = [
    "Forecaster",
    "ContextForecaster",
    "MeanForecaster",
    "NaiveForecaster",
    "LinearARForecaster",
    "NVARForecaster",
    "QuadraticNVARForecaster",
    "FieldNVARForecaster",
    "WideNVARForecaster",
    "AnalogueForecaster",
    "SMapForecaster",
    "DenoisedForecaster",
    "SelectorForecaster",
    "EXPERTS",
    "EXPERT_VERSIONS",
    "LATEST_EXPERTS_VERSION",
    "backtest_experts",
]
