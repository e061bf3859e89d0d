"""PandaPipeline: the user API for zero-shot forecasting and checkpoint I/O.

Shape letters: B batch, T time, C channels, H horizon.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from panda_fm import hub
from panda_fm.config import PandaConfig
from panda_fm.data.validation import GlitchWarning, InputForm, as_series_list, glitch_note
from panda_fm.model import PandaModel
from panda_fm.scaling import standardise_observed, standardise_series
from panda_fm.uncertainty import (
    CalibrationConfig,
    ForecastDistribution,
    context_lags,
    horizon_threshold,
    lagged_members,
    lagged_spread,
)

if TYPE_CHECKING:  # fine-tuning needs Lightning: imported only when called
    from panda_fm.data.series import SeriesInput
    from panda_fm.training.finetune import FineTuneConfig

logger = logging.getLogger(__name__)


class PandaPipeline:
    """Wraps a :class:`PandaModel` with input validation, batching and autoregressive rollout.

    Args:
        model: the model; it is put in eval mode.
        info: metadata recorded in the checkpoint (training data, results); written by ``save_pretrained``.
    """

    def __init__(self, model: PandaModel, info: dict[str, Any] | None = None):
        self.model = model.eval()
        self.info = dict(info or {})

    @property
    def config(self) -> PandaConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.head.weight.dtype

    # --- checkpoints -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        poly_indices: Sequence[Any] | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> PandaPipeline:
        """Load a checkpoint directory, registered name or hub id, in panda_fm's format or the reference's.

        Args:
            path_or_hub_id: a local directory, a registered name of a checkpoint shipped in the package
                (``"panda-fm-small"``; neither touches the network) or ``org/name`` on the hub. A path that
                does not exist fails at once: see :func:`panda_fm.hub.resolve_checkpoint`.
            device: where the model runs.
            dtype: weight dtype (``torch.float32`` or ``torch.bfloat16``); scaling stays in float32.
            poly_indices: for reference checkpoints only, the polynomial index tuples (one ``(K, d)``
                array per degree d = 2, 3, ...); reconstructed from the training seed when omitted.
            revision: hub revision (branch, tag or commit).
            cache_dir: hub cache directory.
        """
        model, info = hub.load_model(
            path_or_hub_id, poly_indices=poly_indices, revision=revision, cache_dir=cache_dir
        )
        return cls(model.to(device=device, dtype=dtype), info)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors, README.md and training_info.json into ``directory``."""
        return hub.save_model(self.model, directory, self.info)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
        """Upload the checkpoint to the hub; returns the commit URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "ckpt")
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=Path(tmp) / "ckpt", commit_message="Upload panda_fm checkpoint"
            )
        return str(commit)

    # --- fine-tuning -------------------------------------------------------------------------------

    def fine_tune(
        self, series: SeriesInput, config: FineTuneConfig | None = None, **settings: Any
    ) -> PandaPipeline:
        """A new pipeline fine-tuned on ``series``; this one is left untouched.

        A thin wrapper over :func:`panda_fm.training.finetune.fine_tune` (which needs Lightning and
        returns the losses and the history too: ``fine_tune(pipe.model, pipe.info, series, config)``).

        Args:
            series: a ``(T, C)`` array, a list of them (recordings of the same channels), a ``(K, T, C)``
                array, or a ``.csv``/``.npy`` path. NaN marks a missing value (handled as in ``predict``; left
                out of the loss in targets).
            config: a :class:`panda_fm.training.finetune.FineTuneConfig`; or give its fields, and those of
                its ``trainer`` (:class:`panda_fm.training.config.TrainerConfig`), as keywords, e.g.
                ``max_minutes=5, freeze_layers=2, lr=3e-4, torch_threads=1``. The loss is this model's
                training loss (its ``info``) unless given.

        Returns:
            The fine-tuned pipeline; its ``info`` (the model card) names the base model, the data and the loss.

        Raises:
            ValueError: unusable input or settings (an unknown keyword lists the known ones), naming the fix.
        """
        from panda_fm.training.finetune import FineTuneConfig, fine_tune

        if config is not None and settings:
            raise ValueError("pass either config or keyword settings, not both")
        cfg = config if config is not None else FineTuneConfig.from_settings(**settings)
        result = fine_tune(self.model, self.info, series, cfg)
        return PandaPipeline(result.model, result.info)

    # --- forecasting -------------------------------------------------------------------------------

    def predict(
        self,
        context: Any,
        prediction_length: int | None = None,
        *,
        batch_size: int = 64,
        num_samples: int | None = None,
    ) -> Any:
        """Forecast the continuation of one or many series.

        Args:
            context: one series, time along axis 0: ``(T,)`` or ``(T, C)`` numpy or torch, a list of numbers,
                a list of rows ``[[x, y, z], ...]``, a pandas Series, or a DataFrame with a column per
                channel. Or a batch: ``(B, T, C)``, or a list of series of different lengths (``(T_i, C)``
                arrays, DataFrames, ``(T_i,)`` arrays). NaN marks a missing value. Only the last
                ``context_length`` steps are read; shorter contexts are left-padded as missing.
                :mod:`panda_fm.data.validation` gives the rules for lists.
            prediction_length: steps to forecast (default: the model's ``prediction_length``); longer
                horizons roll out autoregressively with a sliding context.
            batch_size: series per forward pass.
            num_samples: sample paths instead of the point forecast: ``sample(context, prediction_length,
                num_samples)`` (:meth:`sample`, seed 0), with its trailing sample axis.

        Returns:
            The forecast, of the input's type: ``(H,)``, ``(H, C)`` or ``(B, H, C)`` (a list gives
            ``(B, H, C)``); for pandas input a Series or DataFrame (a list of them for a list) with the same
            name or columns, its index continuing the input's (:mod:`panda_fm.data.frames`). With
            ``num_samples``, :meth:`sample`'s paths.

        Raises:
            ValueError: naming what is wrong with the input.
        """
        if num_samples is not None:
            return self.sample(context, prediction_length, num_samples, batch_size=batch_size)
        H = self._horizon(prediction_length)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch, form = self._prepare(context)
        batch, loc, scale = _standardised(batch)
        with torch.inference_mode():
            chunks = [
                self._rollout(batch[i : i + batch_size], int(H)) for i in range(0, len(batch), batch_size)
            ]
        return form.wrap(torch.cat(chunks).double().numpy() * scale + loc)

    # --- probabilistic forecasts (panda_fm.uncertainty; docs/probabilistic.md) ------------------------

    def predict_quantiles(
        self,
        context: Any,
        prediction_length: int | None = None,
        quantile_levels: Sequence[float] = (0.1, 0.5, 0.9),
        *,
        batch_size: int = 64,
        calibration: CalibrationConfig | None = None,
    ) -> tuple[Any, Any]:
        """Quantiles and mean of the forecast, calibrated on the context's own forecast errors.

        The point forecast of :meth:`predict` is also made from several origins inside the context; its errors
        there give the spread at each lead and channel, which widens into the context's own distribution of
        values where the errors reach it (:mod:`panda_fm.uncertainty`); with ``calibration.lagged_blend`` (the
        default) that spread is blended with the disagreement of the same forecast from the context cut
        ``calibration.lags`` steps short (stretched on a slowly varying context: ``calibration.lag_timescale``;
        the disagreement counted less on a noisy context: ``calibration.lagged_noise_scale``). The model
        runs on ``1 + len(calibration.offsets)`` (6) series per series, plus ``len(calibration.lags)`` (4) with a
        lagged blend or floor, the calibration's in shared forward passes: about 10 times a ``predict`` call.

        Args:
            context: as for :meth:`predict` (same forms, rules and errors); a context needs at least
                ``calibration.min_short_context`` (48) steps, and one shorter than
                ``calibration.min_context`` (192) is calibrated from ``calibration.short_offsets``.
            prediction_length: steps to forecast (default: the model's ``prediction_length``).
            quantile_levels: levels strictly between 0 and 1.
            batch_size: series per forward pass.
            calibration: the in-context calibration's settings (default :attr:`calibration`).

        Returns:
            ``(quantiles, mean)``. ``mean`` has the form of :meth:`predict`'s output. ``quantiles`` adds a
            trailing axis of the levels: ``(H, Q)``, ``(H, C, Q)`` or ``(B, H, C, Q)`` of the input's type. For
            a pandas DataFrame, a DataFrame with one column per channel and level (columns a MultiIndex
            ``(channel, level)``: ``q["x"][0.9]`` is channel ``x``'s 0.9 quantile); for a Series, a DataFrame
            with one column per level; the index continues the input's as in :meth:`predict`.

        Raises:
            ValueError: naming what is wrong with the input or the levels.
        """
        levels = _quantile_levels(quantile_levels)
        dist, loc, scale, form = self._distribution(context, prediction_length, batch_size, calibration)
        q = dist.quantiles(levels) * scale[..., None] + loc[..., None]  # (B, H, C, Q)
        mean = dist.mean * scale + loc  # (B, H, C)
        return form.wrap_levels(q, levels.tolist()), form.wrap(mean)

    def sample(
        self,
        context: Any,
        prediction_length: int | None = None,
        num_samples: int = 100,
        *,
        seed: int = 0,
        batch_size: int = 64,
        calibration: CalibrationConfig | None = None,
    ) -> Any:
        """Sample paths from the forecast distribution of :meth:`predict_quantiles`.

        Each path follows the point forecast with its own error, growing as measured on the context, until
        the lead at which it loses track; from there it follows a stretch of the context (a state of the
        attractor). Their quantiles at each step agree with :meth:`predict_quantiles` up to sampling error.

        Args:
            context, prediction_length, batch_size, calibration: as for :meth:`predict_quantiles`.
            num_samples: paths per series (``K``).
            seed: seeds the paths (same seed, same paths).

        Returns:
            Paths with a trailing sample axis: ``(H, K)``, ``(H, C, K)`` or ``(B, H, C, K)`` of the input's
            type; for pandas, a DataFrame with one column per channel and sample (``(channel, k)``).
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        dist, loc, scale, form = self._distribution(context, prediction_length, batch_size, calibration)
        paths = dist.sample(int(num_samples), np.random.default_rng(seed))  # (B, K, H, C)
        paths = np.moveaxis(paths, 1, -1) * scale[..., None] + loc[..., None]  # (B, H, C, K)
        return form.wrap_levels(paths, list(range(int(num_samples))))

    def predictability_horizon(
        self,
        context: Any,
        prediction_length: int | None = None,
        *,
        threshold: float = 0.5,
        batch_size: int = 64,
        calibration: CalibrationConfig | None = None,
    ) -> Any:
        """Lead time (steps) at which each channel's predicted spread first exceeds ``threshold`` context stds.

        The spread is :func:`panda_fm.uncertainty.horizon_spread` of the calibration
        (:attr:`CalibrationConfig.horizon`): by default the disagreement of a time-lagged ensemble, the same
        forecast made from the context cut 1, 2, 4 and 8 steps short (stretched on a slowly varying context:
        ``calibration.lag_timescale``; four more forecasts; ``"spread"``, the calibrated error of
        :meth:`predict_quantiles`, needs none). A channel whose spread stays below the threshold over the whole
        forecast gets ``prediction_length`` (the horizon is at least that). Compare with the realised valid
        prediction time (:func:`panda_fm.eval.metrics.valid_prediction_time`).

        Returns:
            Integer steps: ``()`` (a Python int) for a ``(T,)`` series, ``(C,)`` for one series, ``(B, C)`` for a
            batch (numpy or torch as the input); for a DataFrame a Series indexed by its columns (a list of
            them for a list).
        """
        horizon_threshold(threshold)  # before the forecasts
        dist, _, _, form = self._distribution(
            context, prediction_length, batch_size, calibration, with_horizon=True
        )
        return form.wrap_channels(dist.horizon(threshold))

    #: The in-context calibration used when a call gives none (chosen on a calibration split of training
    #: founders: docs/probabilistic.md).
    calibration: CalibrationConfig = CalibrationConfig()

    def forecast_distribution(
        self,
        context: np.ndarray | torch.Tensor,
        prediction_length: int,
        *,
        batch_size: int = 64,
        calibration: CalibrationConfig | None = None,
    ) -> tuple[ForecastDistribution, np.ndarray, np.ndarray]:
        """The predictive distribution itself, for a ``(B, T, C)`` batch (the evaluation's entry point).

        Returns:
            The distribution in context-standardised units (with its horizon's spread), and the context's ``loc``
            and ``scale``, ``(B, 1, C)`` each, that give values in the input's units (``x * scale + loc``).
        """
        dist, loc, scale, _ = self._distribution(
            context, prediction_length, batch_size, calibration, with_horizon=True
        )
        return dist, loc, scale

    def _distribution(
        self,
        context: Any,
        prediction_length: int | None,
        batch_size: int,
        calibration: CalibrationConfig | None,
        with_horizon: bool = False,
    ) -> tuple[ForecastDistribution, np.ndarray, np.ndarray, InputForm]:
        """The predictive distribution, standardised, with ``loc``, ``scale`` and the input's form; with
        ``with_horizon`` also the spread its horizon is read off (the lagged forecasts cost one more forecast per
        lag: made for a lagged blend or floor, and for a ``"lagged"`` or ``"geometric"`` horizon when it is asked
        for)."""
        cal = self._calibration(calibration)
        batch, form = self._prepare(context, depth=2)  # (B, L, C), NaN-padded; warnings at the user's call
        point, errors, prefix, x, loc, scale = self._incontext_errors(
            batch, prediction_length, batch_size, cal
        )
        lagged = None
        if cal.lagged_in_distribution or (with_horizon and cal.horizon != "spread"):
            lags = context_lags(cal, x)  # (B, K)
            members = self.lagged_forecasts(batch.numpy(), point.shape[1], lags, loc, scale, batch_size)
            lagged = lagged_spread(members, point)
        dist = ForecastDistribution.calibrated(point, errors, prefix, x, cal, lagged, with_horizon)
        return dist, loc, scale, form

    def lagged_forecasts(
        self,
        batch: np.ndarray,
        length: int,
        lags: tuple[int, ...] | np.ndarray,
        loc: np.ndarray,
        scale: np.ndarray,
        batch_size: int = 64,
    ) -> np.ndarray:
        """The point forecast's time-lagged ensemble (:func:`panda_fm.uncertainty.lagged_members`) for a
        ``(B, L, C)`` batch (NaN missing), standardised by the context's ``loc`` and ``scale`` ``(B, 1, C)``:
        ``(B, K, length, C)``, member ``k`` forecast as :meth:`predict` forecasts the batch cut ``lags[k]`` steps
        short (``lags[b, k]`` for ``(B, K)`` lags, each series its own: :func:`~panda_fm.uncertainty.context_lags`),
        the members in shared forward passes (:meth:`_rollouts`)."""
        raw = np.asarray(batch, dtype=np.float64)
        T = raw.shape[1]

        def forecast(jobs: Sequence[tuple[np.ndarray, int, int]]) -> list[np.ndarray]:
            return self._forecasts(
                [raw[rows, : T - cut] for rows, cut, _ in jobs], [steps for *_, steps in jobs], batch_size
            )

        members = lagged_members(forecast, raw, length, lags)
        return (members - loc[:, None]) / scale[:, None]

    def _forecasts(
        self, contexts: Sequence[np.ndarray], steps: Sequence[int], batch_size: int
    ) -> list[np.ndarray]:
        """``contexts[j]`` ``(R_j, T_j, C)`` (NaN missing, in their own units) forecast ``steps[j]`` steps each, as
        :meth:`predict` reads them (the last ``context_length`` steps, standardised), in shared forward passes
        (:meth:`_rollouts`): ``(R_j, steps[j], C)`` in the contexts' units."""
        L = self.config.context_length
        scaled = [_standardised(torch.as_tensor(c[:, -L:], dtype=torch.float64)) for c in contexts]
        with torch.inference_mode():
            out = self._rollouts([z for z, _, _ in scaled], steps, batch_size)
        return [
            f.double().numpy() * stretch + shift for f, (_, shift, stretch) in zip(out, scaled, strict=True)
        ]

    def _rollouts(
        self, contexts: Sequence[torch.Tensor], steps: Sequence[int], batch_size: int
    ) -> list[torch.Tensor]:
        """:meth:`_rollout` of several batches of contexts at once: ``contexts[j]`` ``(R_j, L_j, C)`` forecast
        ``steps[j]`` steps, ``(R_j, steps[j], C)``. The contexts are padded on the left as missing to the longest
        (which the model reads as the shorter context) and share forward passes of ``batch_size`` series; every
        series is forecast the most steps, then cut to its own."""
        longest = max(c.shape[1] for c in contexts)
        stacked = torch.cat(
            [
                torch.cat([c.new_full((c.shape[0], longest - c.shape[1], c.shape[2]), torch.nan), c], dim=1)
                for c in contexts
            ]
        )
        starts = range(0, len(stacked), batch_size)
        out = torch.cat(
            [
                self._rollout(stacked[lo : lo + batch_size], max(steps))
                for lo in tqdm(starts, desc="calibration forecasts", disable=len(starts) < 8, leave=False)
            ]
        )
        pieces = out.split([len(c) for c in contexts])
        return [piece[:, :h] for piece, h in zip(pieces, steps, strict=True)]

    def incontext_errors(
        self,
        context: Any,
        prediction_length: int | None,
        batch_size: int = 64,
        calibration: CalibrationConfig | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, InputForm]:
        """The point forecast and the errors of the same forecaster from origins inside the context.

        Returns:
            ``point (B, H, C)``, ``errors (B, O, M, C)`` at leads ``1..M`` from each usable origin (NaN where an
            origin does not reach a lead), the steps before each origin ``(O,)``, the context ``(B, L, C)``;
            point, errors and context standardised by the context's ``loc`` and ``scale`` ``(B, 1, C)``, which
            come next; and the input's form.
        """
        batch, form = self._prepare(context)
        cal = self._calibration(calibration)
        return *self._incontext_errors(batch, prediction_length, batch_size, cal), form

    def _incontext_errors(
        self, prepared: torch.Tensor, prediction_length: int | None, batch_size: int, cal: CalibrationConfig
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`incontext_errors` of a batch from :meth:`_prepare`, less the input's form."""
        H = self._horizon(prediction_length)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch, shift, stretch = _standardised(prepared)  # what the model reads (standardise_series)
        B, L, _ = batch.shape
        first = (
            torch.isnan(batch).all(dim=2).int().cumprod(dim=1).sum(dim=1)
        )  # (B,) missing steps at the start
        short = torch.nonzero(L - first < cal.min_short_context).flatten().tolist()
        if short:
            raise ValueError(
                f"quantiles are calibrated on the context's own forecast errors and need contexts of at least "
                f"{cal.min_short_context} steps; series {short[:10]} {'is' if len(short) == 1 else 'are'} "
                "shorter: give a longer context, or use predict for a point forecast"
            )
        x = batch.double().numpy()  # (B, L, C)
        # errors are measured in each channel's stds: loc and scale (B, 1, C)
        z, loc, scale = standardise_observed(x, axis=1)
        steps = (L - first).tolist()  # (B,) from the first observed step
        plans = [cal.origins(n) for n in steps]  # each series' origins and the fewest steps before one
        jobs = []  # (rows, o): the rows whose prefix before origin o can make a forecast
        for o in sorted(set(cal.offsets) | set(cal.short_offsets), reverse=True):
            rows = torch.tensor(
                [i for i, (offsets, least) in enumerate(plans) if o in offsets and steps[i] - o >= least],
                dtype=torch.long,
            )
            observed = (~torch.isnan(batch[rows, : L - o])).sum(dim=1)  # (R, C)
            rows = rows[(observed >= self.config.patch_length).all(dim=1)]
            if len(rows):
                jobs.append((rows, o))
        usable = [o for _, o in jobs] or [min(cal.short_offsets)]  # none: lead_spread says what is missing
        M = max(usable)
        errors = np.full((B, len(usable), M, x.shape[2]), np.nan)  # (B, O, M, C)
        with torch.inference_mode():
            point = (
                torch.cat([self._rollout(batch[i : i + batch_size], H) for i in range(0, B, batch_size)])
                .double()
                .numpy()
            )  # (B, H, C)
            contexts = [batch[rows, : L - o] for rows, o in jobs]
            forecasts = self._rollouts(contexts, [o for _, o in jobs], batch_size) if jobs else []
        for (rows, o), forecast in zip(jobs, forecasts, strict=True):  # (R, o, C) each
            errors[rows.numpy(), usable.index(o), :o] = forecast.double().numpy() - x[rows.numpy(), L - o :]
        prefix = np.array([L - o for o in usable])
        point, errors = (point - loc) / scale, errors / scale[:, None]
        return point, errors, prefix, z, shift + stretch * loc, stretch * scale

    def _calibration(self, calibration: CalibrationConfig | None) -> CalibrationConfig:
        """``calibration``, or :attr:`calibration` for None; anything else is refused."""
        if calibration is None:
            return self.calibration
        if not isinstance(calibration, CalibrationConfig):
            raise TypeError(
                f"calibration must be a CalibrationConfig (e.g. CalibrationConfig(inflation=1.0)) or None, got "
                f"{type(calibration).__name__}"
            )
        return calibration

    def _horizon(self, prediction_length: int | None) -> int:
        H = self.config.prediction_length if prediction_length is None else prediction_length
        if isinstance(H, bool) or not isinstance(H, (int, np.integer)) or H <= 0:
            raise ValueError(f"prediction_length must be a positive integer, got {prediction_length!r}")
        return int(H)

    def _rollout(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """``(B, L, C)`` with NaN for missing -> ``(B, horizon, C)``.

        A context whose last steps are missing in every channel is forecast from its last observed step: the
        model reads the context up to there (padded on the left as missing) and forecasts the missing steps
        and the horizon, of which the horizon is returned.
        """
        missing = torch.isnan(x).all(dim=2)  # (B, L)
        # (B,): steps missing at the end in every channel
        blank = missing.flip(1).int().cumprod(dim=1).sum(dim=1)
        if not bool(blank.any()):
            return self._forecast(x, horizon)
        out = torch.empty(x.shape[0], horizon, x.shape[2])
        for g in blank.unique().tolist():  # series missing the same number of last steps together
            rows = torch.nonzero(blank == g).flatten()
            shifted = torch.cat([torch.full_like(x[rows, :g], torch.nan), x[rows, : x.shape[1] - g]], dim=1)
            out[rows] = self._forecast(shifted, horizon + g)[:, g:]
        return out

    def _forecast(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """``(B, L, C)`` with NaN for missing -> ``(B, horizon, C)``, 128 (the model's horizon) steps a pass.

        A model with in-context experts forecasts any horizon in one pass: its experts forecast it all, with
        the choice made from the context.
        """
        L = self.config.context_length
        x = x.to(self.device)
        if self.config.incontext == "experts":
            return self.model(x, horizon=horizon).float().cpu()
        steps = []
        done = 0
        while done < horizon:
            step = self.model(x)[:, : horizon - done]  # (B, h, C)
            steps.append(step)
            done += step.shape[1]
            if done < horizon:
                x = torch.cat([x, step], dim=1)[:, -L:]
        return torch.cat(steps, dim=1).float().cpu()

    def _prepare(self, context: Any, depth: int = 1) -> tuple[torch.Tensor, InputForm]:
        """Validate and stack the input into ``(B, L, C)`` float64 (its precision kept), NaN-padded on the left.
        Its warnings point at the user's call, ``depth`` public methods above this one.

        Returns:
            The batch, and the input's form (which gives the forecast back in it).
        """
        L, P = self.config.context_length, self.config.patch_length
        series, form = as_series_list(context, "context")
        channels = {s.shape[1] for s in series}
        if len(channels) > 1:
            raise ValueError(
                f"the series in the list disagree in channel count: {sorted(channels)}; "
                "forecast groups of equal channel count separately"
            )
        C = series[0].shape[1]
        batch = torch.full((len(series), L, C), float("nan"), dtype=torch.float64)
        notes: list[str] = []
        glitches: list[str] = []
        for i, s in enumerate(series):
            name = f"series {i}" if len(series) > 1 else "context"
            transposed = s.shape[0] < s.shape[1]  # a hint for the errors below
            s = torch.from_numpy(s[-L:])
            observed = (~torch.isnan(s)).sum(dim=0)  # (C,)
            if int(observed.sum()) == 0:
                raise ValueError(f"{name} is all NaN: nothing to forecast from")
            if (observed == 0).any():
                bad = _channels(torch.nonzero(observed == 0).flatten().tolist())
                raise ValueError(
                    f"{name} has all-NaN channel(s) {bad} in its last {L} steps; drop or fill them"
                )
            if (observed < P).any():
                bad = _channels(torch.nonzero(observed < P).flatten().tolist())
                hint = (
                    f" (it has {s.shape[0]} steps of {C} channels: if time runs along axis 1, pass x.T)"
                    if transposed
                    else ""
                )
                raise ValueError(
                    f"{name} channel(s) {bad} have fewer than {P} observed steps (one patch); "
                    f"give a longer context{hint}"
                )
            batch[i, L - s.shape[0] :] = s
            note = _missing_note(name, s)
            if note:
                notes.append(note)
            glitch = glitch_note(name, s.numpy(), len(series[i]) - s.shape[0])
            if glitch:
                glitches.append(glitch)
        for found, category in ((notes, MissingDataWarning), (glitches, GlitchWarning)):
            if found:
                more = f" (and {len(found) - 3} more series)" if len(found) > 3 else ""
                warnings.warn("; ".join(found[:3]) + more, category, stacklevel=2 + depth)
        return batch, form


def _standardised(batch: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """A ``(B, L, C)`` float64 batch (NaN missing) as the model reads it, float32: each series standardised in
    float64 by its observed values (:func:`panda_fm.scaling.standardise_series`: one map for its channels, and
    one of its own for a channel in much smaller units), so that the units do not matter. Also the ``loc`` and
    ``scale`` ``(B, 1, C)`` that map it back (``z * scale + loc``)."""
    z, loc, scale = standardise_series(batch.numpy())
    return torch.from_numpy(z).float(), loc, scale


class MissingDataWarning(UserWarning):
    """A context's last steps, or most of it, are missing: the forecast rests on less than it seems."""


#: A channel with more than this fraction of its context missing is reported.
MOSTLY_MISSING = 0.5


def _missing_note(name: str, s: torch.Tensor) -> str:
    """What a user should know about the missing values of one context ``(T, C)``: the channels whose last
    steps are missing (and how many), and those mostly missing; "" when neither."""
    missing = torch.isnan(s)  # (T, C)
    notes = []
    trailing = missing.flip(0).int().cumprod(dim=0).sum(dim=0)  # (C,): missing steps at the end
    if (trailing > 0).any():
        ends = ", ".join(f"channel {c}: {int(n)}" for c, n in enumerate(trailing.tolist()) if n > 0)
        notes.append(
            f"{name} has no data in its last steps ({ends} steps missing at the end); they are forecast "
            "from the last observed state, and the horizon still starts after the last step given"
        )
    fraction = missing.float().mean(dim=0)  # (C,)
    mostly = torch.nonzero(fraction > MOSTLY_MISSING).flatten().tolist()
    if mostly:
        notes.append(
            f"{name} channel(s) {_channels(mostly)} are {fraction.max().item():.0%} missing at worst; "
            "expect a less accurate forecast"
        )
    return "; ".join(notes)


def _channels(index: list[int], shown: int = 10) -> str:
    """Channel indices for an error message; a long list is cut after ``shown``."""
    if len(index) <= shown:
        return str(index)
    return f"{str(index[:shown])[:-1]}, ...] ({len(index)} channels)"


def _quantile_levels(levels: Sequence[float]) -> np.ndarray:
    """Validated quantile levels ``(Q,)``: numbers strictly between 0 and 1, in the order given."""
    try:
        arr = np.asarray(levels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"quantile_levels must be numbers between 0 and 1, got {levels!r}") from None
    if arr.size == 0 or not ((arr > 0) & (arr < 1)).all():
        raise ValueError(
            f"quantile_levels must be numbers strictly between 0 and 1 (e.g. (0.1, 0.5, 0.9)), got {levels!r}"
        )
    return arr
