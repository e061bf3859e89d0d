"""Fitting a checkpoint's evidence chooser (:class:`panda_fm.model.choice.EvidenceChooser`) on windows observed
at random, apart from the transformer (``panda-fm fit-chooser``).

1. :func:`observed_windows` cuts windows from a generated dataset's train split and observes each one as a user's
   data may be: half resampled at a log-uniform 1/4-4x of the stored rate (the cubic of
   :func:`panda_fm.data.augment.resample`), a third seen through one coordinate and a third through a random
   projection of the standardised state to 1-2 channels, 40% with a context cut to 128-511 steps, half with
   observation noise of 2-25% of each channel's std.
2. :func:`choice_pool` runs the checkpoint on them once: per window and channel, the network's logits on its
   experts (head and backtest prior), the chooser's inputs, and each expert's sMAPE over the prediction length
   against the truth, standardised by the clean context.
3. :func:`fit_chooser` trains the chooser alone (AdamW) to minimise the expected sMAPE of the softmax over the
   network's log-weights, floored at ``-LOG_WEIGHT_FLOOR``, plus the chooser's logits (as
   :meth:`panda_fm.PandaModel.expert_weights` combines them), and keeps the weights of the best validation
   (a fifth of the systems held out; the network's own choice is the baseline to beat).

Shape letters: N rows (window and channel), E experts, F evidence, G window features, T time, C channels.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from panda_fm.data.augment import resample, resample_extent
from panda_fm.data.io import atomic_path
from panda_fm.eval.metrics import smape_curve
from panda_fm.model.choice import EvidenceChooser
from panda_fm.model.model import PandaModel
from panda_fm.systems.store import Dataset

log = logging.getLogger(__name__)

#: default hidden width of a fitted chooser
CHOOSER_WIDTH = 64
#: seconds between saves of a resumable pool's progress
SAVE_EVERY_S = 30.0


@dataclass(frozen=True)
class ObservedWindow:
    """A window of a training system as a user might record it."""

    system: str
    clean: np.ndarray  # (T, C) the context before noise and cutting: the truth's standardisation
    seen: np.ndarray  # (T, C) the context the model reads (NaN: not observed)
    truth: np.ndarray  # (H, C)


def observed_windows(
    dataset: Dataset,
    windows_per_system: int,
    seed: int,
    context_length: int = 512,
    horizon: int = 128,
    max_systems: int | None = None,
    systems: list[str] | None = None,
) -> list[ObservedWindow]:
    """Windows of the train split (or of its ``systems``), each observed at random (see the module's
    docstring); deterministic."""
    rng = np.random.default_rng(seed)
    T, L = context_length, context_length + horizon
    out = []
    for sid in (dataset.ids("train") if systems is None else systems)[:max_systems]:
        traj = dataset.load(sid)  # (K, steps, D)
        for _ in range(windows_per_system):
            factor = float(np.exp(rng.uniform(np.log(0.25), np.log(4.0)))) if rng.random() < 0.5 else 1.0
            if traj.shape[1] < resample_extent(L, factor):
                factor = 1.0
            need = resample_extent(L, factor)
            if traj.shape[1] < need:
                raise ValueError(f"{sid} has {traj.shape[1]} steps; windows of {L} steps need more")
            k = rng.integers(traj.shape[0])
            start = rng.integers(0, traj.shape[1] - need + 1)
            seg = resample(traj[k, start : start + need].astype(np.float64), factor, L)
            u = rng.random()
            if u < 1 / 3:
                seg = seg[:, [rng.integers(seg.shape[1])]]
            elif u < 2 / 3:
                z = (seg - seg[:T].mean(0)) / seg[:T].std(0).clip(1e-9)
                w = rng.standard_normal((seg.shape[1], 1 + int(rng.random() < 0.5)))
                seg = z @ (w / np.linalg.norm(w, axis=0))
            clean, truth = seg[:T], seg[T:]
            seen = clean.copy()
            if rng.random() < 0.5:
                seen += rng.uniform(0.02, 0.25) * clean.std(0) * rng.standard_normal(clean.shape)
            if rng.random() < 0.4:
                seen[: T - rng.integers(128, T)] = np.nan
            out.append(ObservedWindow(sid, clean, seen, truth))
    return out


def pool_key(model: PandaModel, windows: list[ObservedWindow]) -> str:
    """A digest of what a pool depends on: the model's weights and configuration and the windows' contents. A
    saved partial pool is resumed only under the same key."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for w in windows:
        digest.update(w.system.encode())
        for a in (w.clean, w.seen, w.truth):
            digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


@torch.no_grad()
def choice_pool(
    model: PandaModel,
    windows: list[ObservedWindow],
    batch_size: int = 32,
    progress: bool = True,
    resume: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """What :func:`fit_chooser` trains on, one row per window and channel.

    With ``resume``, the rows computed so far are saved to that file (atomically, every
    :data:`SAVE_EVERY_S` seconds and when interrupted), and a run that finds the file carries on after its last
    saved batch: the result is the same as an uninterrupted run's. The file is kept; the caller removes it once
    the pool has served.

    Returns:
        ``logits`` ``(N, E)`` the network's, ``evidence`` ``(N, E, F)``, ``window`` ``(N, G)``, ``smape``
        ``(N, E)`` each expert's sMAPE over the prediction length in that channel, ``system`` ``(N,)`` the
        window's system index (in order of first appearance), ``window_index`` ``(N,)`` the window's index in
        ``windows`` (a batch's rows come grouped by channel count, not in the windows' order).

    Raises:
        ValueError: when the ``resume`` file was saved for another model or other windows.
    """
    H = model.config.prediction_length
    keys = ("logits", "evidence", "window", "smape", "system", "window_index")
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    systems: dict[str, int] = {}
    start, key = 0, None
    if resume is not None:
        resume, key = Path(resume), pool_key(model, windows)
        if resume.exists():
            saved = torch.load(resume, weights_only=True)
            if saved["key"] != key or set(saved["rows"]) != set(keys):
                raise ValueError(
                    f"{resume} holds the progress of a pool for another checkpoint, other windows or another version of panda_fm; delete it "
                    "to start afresh, or choose another output"
                )
            start, systems = saved["done"], saved["systems"]
            rows = {k: [v] for k, v in saved["rows"].items()}
            log.info("resuming the choice pool after %d of %d windows (%s)", start, len(windows), resume)

    def save(done: int) -> None:
        state = {
            "key": key,
            "done": done,
            "systems": systems,
            "rows": {k: torch.cat(v) for k, v in rows.items()},
        }
        with atomic_path(resume) as tmp:
            torch.save(state, tmp)

    bar = tqdm(total=len(windows), initial=start, desc="choice pool", unit="window", disable=not progress)
    saved_at, done = time.monotonic(), start
    try:
        for lo in range(start, len(windows), batch_size):
            _pool_batch(model, windows[lo : lo + batch_size], H, rows, systems, lo)
            done = min(lo + batch_size, len(windows))
            bar.update(done - lo)
            if resume is not None and time.monotonic() - saved_at > SAVE_EVERY_S:
                save(done)
                saved_at = time.monotonic()
    except KeyboardInterrupt:
        if resume is not None and done > start:
            save(done)
            log.warning("interrupted after %d of %d windows; saved to %s", done, len(windows), resume)
        raise
    finally:
        bar.close()
    if resume is not None:
        save(done)
    return {k: torch.cat(v) for k, v in rows.items()}


def _pool_batch(
    model: PandaModel,
    windows: list[ObservedWindow],
    H: int,
    rows: dict[str, list[torch.Tensor]],
    systems: dict[str, int],
    first: int = 0,
) -> None:
    """Append to ``rows`` the rows of ``windows`` (one model call per channel count); ``systems`` maps system
    names to their indices and grows with new ones; ``first`` is the index of ``windows[0]`` in the pool's."""
    groups: dict[int, list[int]] = {}
    for k, w in enumerate(windows):
        groups.setdefault(w.seen.shape[1], []).append(k)
    for members in groups.values():
        ws = [windows[k] for k in members]
        seen = torch.as_tensor(np.stack([w.seen for w in ws]), dtype=torch.float32)
        x, observed, stats, _ = model.prepare(seen)
        forecasts, logits, (evidence, window) = model.expert_logits(
            x, observed, H, evidence=True, units=stats
        )
        B, E, _, C = forecasts.shape
        every = torch.stack([stats.denormalise(forecasts[:, e]) for e in range(E)])  # (E, B, H, C)
        scores = torch.empty(B, E, C)
        for b, w in enumerate(ws):
            mu, sd = w.clean.mean(0), w.clean.std(0).clip(1e-9)
            y = (w.truth[:H] - mu) / sd
            for e in range(E):
                g = (every[e, b].double().numpy() - mu) / sd
                for c in range(C):
                    scores[b, e, c] = float(smape_curve(y[:, c : c + 1], g[:, c : c + 1]).mean())
        rows["logits"].append(logits.reshape(B * C, E))
        rows["evidence"].append(evidence.reshape(B * C, E, -1))
        rows["window"].append(window.reshape(B * C, -1))
        rows["smape"].append(scores.transpose(1, 2).reshape(B * C, E))
        ids = [systems.setdefault(w.system, len(systems)) for w in ws]
        rows["system"].append(torch.tensor(ids).repeat_interleave(C))
        rows["window_index"].append((first + torch.tensor(members)).repeat_interleave(C))


def fit_chooser(
    model: PandaModel,
    pool: dict[str, torch.Tensor],
    width: int = CHOOSER_WIDTH,
    epochs: int = 200,
    seed: int = 0,
    holdout: float = 0.2,
) -> dict[str, Any]:
    """Train ``model``'s evidence chooser on ``pool`` (from :func:`choice_pool`), installing one of ``width``
    if it has none; see :func:`train_choice`."""
    cfg = model.config
    if cfg.incontext != "experts":
        raise ValueError(f"fit_chooser needs a model with incontext='experts', not {cfg.incontext!r}")
    if not cfg.expert_chooser:
        cfg.expert_chooser = width
        torch.manual_seed(seed)  # the chooser's first weights
        model.chooser = EvidenceChooser(len(cfg.experts), width)
    return train_choice(model.chooser, pool, model.floored_log_weights(pool["logits"]), epochs, seed, holdout)


def held_out_systems(n_systems: int, holdout: float, generator: torch.Generator) -> torch.Tensor:
    """The indices of the systems :func:`train_choice` holds out for validation (a pool's systems are numbered in
    order of first appearance, for :func:`observed_windows` the train split's order); ``generator`` seeded
    with the fit's seed."""
    return torch.randperm(n_systems, generator=generator)[: max(1, round(holdout * n_systems))]


def train_choice(
    chooser: torch.nn.Module,
    pool: dict[str, torch.Tensor],
    offset: torch.Tensor,
    epochs: int = 200,
    seed: int = 0,
    holdout: float = 0.2,
) -> dict[str, Any]:
    """Train ``chooser`` ``(evidence (N, E, F), window (N, G)) -> (N, E)`` so that the softmax of ``offset`` ``(N, E)``
    plus its logits puts its weight on the experts of low sMAPE in ``pool``; the weights of the best validation
    (the mean sMAPE of the argmax on ``holdout`` of the systems) are kept.

    Returns:
        The run's record: rows, validation rows, epochs, the best epoch and the validation mean sMAPE of the
        offset's own choice (``network``), the fitted choice and the per-row oracle.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    held = held_out_systems(int(pool["system"].max()) + 1, holdout, gen)
    val = torch.isin(pool["system"], held)
    train_rows, val_rows = torch.nonzero(~val).squeeze(1), torch.nonzero(val).squeeze(1)
    evidence, window, smape = pool["evidence"], pool["window"], pool["smape"]

    def chosen(rows: torch.Tensor) -> float:
        with torch.no_grad():
            pick = (offset[rows] + chooser(evidence[rows], window[rows])).argmax(dim=1)
        return float(smape[rows].gather(1, pick[:, None]).mean())

    network = float(smape[val_rows].gather(1, offset[val_rows].argmax(dim=1, keepdim=True)).mean())
    chooser.eval()
    best, best_epoch, best_state = chosen(val_rows), -1, copy.deepcopy(chooser.state_dict())
    opt = torch.optim.AdamW(chooser.parameters(), lr=3e-3, weight_decay=1e-3)
    for epoch in range(epochs):
        chooser.train()
        order = train_rows[torch.randperm(len(train_rows), generator=gen)]
        for lo in range(0, len(order), 256):
            i = order[lo : lo + 256]
            p = torch.softmax(offset[i] + chooser(evidence[i], window[i]), dim=1)
            loss = (p * smape[i]).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        chooser.eval()
        score = chosen(val_rows)
        if score < best:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(chooser.state_dict())
    chooser.load_state_dict(best_state)
    record = {
        "rows": len(smape),
        "validation_rows": len(val_rows),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "validation_smape": {
            "network": round(network, 3),
            "chooser": round(best, 3),
            "oracle": round(float(smape[val_rows].min(dim=1).values.mean()), 3),
        },
    }
    log.info("chooser fitted: %s", record)
    return record
