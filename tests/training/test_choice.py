"""The evidence chooser: its inputs, that an untrained one changes nothing, its fit, saving, and the CLI."""

import json
import subprocess

import numpy as np
import pytest
import torch

from panda_fm import PandaPipeline
from panda_fm.model.choice import EVIDENCE, WINDOW_FEATURES, EvidenceChooser, expert_evidence
from panda_fm.systems.store import open_dataset
from panda_fm.training import choice as choice_module
from panda_fm.training.choice import choice_pool, fit_chooser, held_out_systems, observed_windows
from tests.conftest import TINY_CHECKPOINT, cli, cli_env, integrate, random_model

CONTEXT = 256  # the tiny dataset's trajectories hold 400 steps: windows of context + prediction fit


def _experts_model(seed: int = 0, **overrides: object):
    settings = {"incontext": "experts", "context_length": CONTEXT, "experts_version": 3} | overrides
    return random_model(seed, **settings)


@pytest.fixture(scope="module")
def contexts() -> torch.Tensor:
    traj, _, _ = integrate("Lorenz", 400, 2)  # (2, 400, 3)
    return torch.as_tensor(traj[:, :CONTEXT], dtype=torch.float32)


def test_evidence_by_hand():
    """Two experts forecasting constants 1 and 3 from a context of zeros, and backtesting its last 20 steps at
    0.5 and 2: backtest errors by lead 0.5 and 2 (none past lead 20), disagreement 0 and 2 (from the median of
    two, the lower: 1), no spread, the largest value and the jump from the context's end are the constants."""
    x = torch.zeros(1, 40, 2)
    forecasts = torch.stack([torch.ones(1, 8, 2), 3 * torch.ones(1, 8, 2)], dim=1)  # (1, 2, 8, 2)
    backtest = torch.stack([0.5 * torch.ones(1, 20, 2), 2 * torch.ones(1, 20, 2)], dim=1)  # (1, 2, 20, 2)
    log_error = torch.tensor([[[0.0, 0.0], [-1.0, -3.0]]])  # (1, E, C)
    evidence, window = expert_evidence(x, None, forecasts, log_error, None, backtest)
    assert evidence.shape == (1, 2, 2, len(EVIDENCE)) and window.shape == (1, 2, len(WINDOW_FEATURES))
    nan, tiny = float("nan"), np.log(1e-6)
    expected = torch.tensor(
        [
            [0.0, np.log(0.5), np.log(0.5), nan, tiny, tiny, np.log(2.0), np.log(2.0)],
            [-2.0, np.log(2.0), np.log(2.0), nan, np.log(2.0), tiny, np.log(4.0), np.log(4.0)],
        ],
        dtype=torch.float32,
    )  # the backtest column: the channels' mean
    for c in range(2):  # one system: every channel reads the system's evidence
        torch.testing.assert_close(evidence[0, :, c], expected, rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(window[0, 0, :1], torch.tensor([1.0]))  # all observed
    torch.testing.assert_close(window[0, 0, 2], torch.tensor(np.log(2.0), dtype=torch.float32))
    # two systems of one channel each: each channel keeps its own backtest
    separate, _ = expert_evidence(x, None, forecasts, log_error, torch.eye(2)[None], backtest)
    torch.testing.assert_close(separate[0, 1, :, 0], torch.tensor([-1.0, -3.0]))


def test_noise_index_tells_noise_from_a_smooth_signal():
    """The noise index is log(rms of second / first differences): log(sqrt 3) for white noise, far below 0 for
    a signal sampled smoothly."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4000, 1, generator=gen)
    smooth = torch.sin(torch.arange(4000.0) * 0.05)[None, :, None]
    flat = torch.zeros(1, 4, 8, 1)
    for x, lo, hi in ((noise, np.log(3) / 2 - 0.05, np.log(3) / 2 + 0.05), (smooth, -4.0, -2.0)):
        _, window = expert_evidence(x, None, flat, torch.zeros(1, 4, 1), None, flat)
        assert lo < float(window[0, 0, 1]) < hi


def test_an_untrained_chooser_changes_no_forecast(contexts: torch.Tensor):
    """A chooser's last layer starts at zero and the floored log-weights keep the network's argmax: the model
    forecasts as the same model without a chooser (its other weights are drawn first, so they are equal)."""
    plain = _experts_model()
    with_chooser = _experts_model(expert_chooser=16)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a head that has learned something, the same in both
        head = torch.randn(plain.head.weight.shape, generator=gen) * 0.5
        plain.head.weight.copy_(head)
        with_chooser.head.weight.copy_(head)
    torch.testing.assert_close(with_chooser(contexts), plain(contexts))
    x, observed, _, _ = with_chooser.prepare(contexts)
    _, logits, evidence = with_chooser.expert_logits(x, observed, evidence=True)
    assert torch.equal(with_chooser.chooser(*evidence), torch.zeros_like(logits))


def _synthetic_pool(n: int = 3000, experts: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows whose best expert is the one with the smallest disagreement; the network's logits say nothing."""
    gen = torch.Generator().manual_seed(seed)
    evidence = torch.randn(n, experts, len(EVIDENCE), generator=gen)
    rank = evidence[:, :, 1].argsort(dim=1).argsort(dim=1).float()  # 0: the least disagreement
    return {
        "logits": torch.zeros(n, experts),
        "evidence": evidence,
        "window": torch.randn(n, len(WINDOW_FEATURES), generator=gen),
        "smape": 10.0 + 20.0 * rank,
        "system": torch.arange(n) % 100,
    }


def test_fit_learns_a_rule_the_network_does_not_know():
    """On rows where the best expert is the least disagreeing one, the fitted choice is near the oracle on
    held-out systems, far ahead of the network's (uniform: always the first expert)."""
    model = _experts_model()
    record = fit_chooser(model, _synthetic_pool(), width=16, epochs=30)
    scores = record["validation_smape"]
    assert scores["oracle"] == 10.0 and scores["network"] > 40.0
    assert scores["chooser"] < 12.0
    assert model.config.expert_chooser == 16 and 0 <= record["best_epoch"] < 30


def test_a_fit_is_reproducible():
    """The same pool and seed give the same chooser, whatever ran before."""
    fitted = []
    for _ in range(2):
        model = _experts_model()
        torch.rand(7)  # other draws from the global generator must not matter
        fit_chooser(model, _synthetic_pool(n=400), width=8, epochs=2, seed=5)
        fitted.append(model.chooser.state_dict())
    for key, value in fitted[0].items():
        assert torch.equal(fitted[1][key], value), key


def test_a_fitted_chooser_is_saved_and_loaded(tmp_path, contexts: torch.Tensor):
    """The chooser's weights and width travel in the checkpoint (and its card says so); the prior-only copy
    switches it off."""
    model = _experts_model()
    fit_chooser(model, _synthetic_pool(n=500), width=8, epochs=3)
    PandaPipeline(model, {"name": "chooser test"}).save_pretrained(tmp_path / "ckpt")
    loaded = PandaPipeline.from_pretrained(tmp_path / "ckpt").model
    assert loaded.config.expert_chooser == 8
    assert "an evidence chooser (an MLP of width 8" in (tmp_path / "ckpt" / "README.md").read_text()
    for key, value in model.chooser.state_dict().items():
        torch.testing.assert_close(loaded.chooser.state_dict()[key], value)
    torch.testing.assert_close(loaded(contexts), model(contexts))
    prior = loaded.prior_only()
    x, observed, _, _ = prior.prepare(contexts)
    _, logits, evidence = prior.expert_logits(x, observed, evidence=True)
    assert torch.equal(prior.chooser(*evidence), torch.zeros_like(logits))


def test_observed_windows_and_their_pool(tiny_dataset):
    """Windows are drawn from the train split only, reproducibly, observed in every way the module names; the
    pool holds a row per window and channel with each expert's sMAPE."""
    dataset = open_dataset(tiny_dataset)
    windows = observed_windows(dataset, 12, seed=3, context_length=CONTEXT, horizon=64)
    again = observed_windows(dataset, 12, seed=3, context_length=CONTEXT, horizon=64)
    assert len(windows) == 12 * len(dataset.ids("train"))
    assert {w.system for w in windows} == set(dataset.ids("train"))
    assert all(np.array_equal(a.seen, b.seen, equal_nan=True) for a, b in zip(windows, again, strict=True))
    assert {w.seen.shape[1] for w in windows} == {1, 2, 3}  # a coordinate, projections and the full state
    assert any(np.isnan(w.seen[0]).all() for w in windows)  # cut contexts
    assert any(not np.allclose(w.seen, w.clean) for w in windows if not np.isnan(w.seen).any())  # noise
    model = _experts_model()
    pool = choice_pool(model, windows[:20], batch_size=8, progress=False)
    rows = sum(w.seen.shape[1] for w in windows[:20])
    assert pool["smape"].shape == (rows, 5) and pool["evidence"].shape == (rows, 5, len(EVIDENCE))
    assert bool(((pool["smape"] >= 0) & (pool["smape"] <= 100)).all())
    assert bool(torch.isfinite(pool["logits"]).all())
    # each row names its window: as many rows as the window has channels, of the window's system
    counts = torch.bincount(pool["window_index"], minlength=20)
    assert counts.tolist() == [w.seen.shape[1] for w in windows[:20]]
    names = list(dict.fromkeys(w.system for w in windows[:20]))
    row_system = [names[int(i)] for i in pool["system"]]
    assert row_system == [windows[int(i)].system for i in pool["window_index"]]
    assert len(set(counts.tolist())) > 1  # several channel counts in a batch: rows regrouped, not in order
    assert bool(torch.isfinite(pool["evidence"][:, :, [0, 4, 5, 6, 7]]).all())  # brackets may be unreached
    cut = torch.tensor(
        [bool(np.isnan(w.seen[: CONTEXT - 100]).all()) for w in windows[:20] for _ in w.seen.T]
    )
    assert bool(torch.isnan(pool["evidence"][cut, :, 3]).all())  # a short context's backtest is short


def test_the_held_out_systems_are_those_the_fit_validates_on(tiny_dataset):
    """held_out_systems names the systems whose rows train_choice validates on (for the same seed), and
    observed_windows draws from a given subset of systems only, as if the others were not there."""
    pool = _synthetic_pool(n=400)
    record = fit_chooser(_experts_model(), pool, width=8, epochs=1, seed=3)
    n_systems = int(pool["system"].max()) + 1
    held = held_out_systems(n_systems, 0.2, torch.Generator().manual_seed(3))
    assert len(set(held.tolist())) == max(1, round(0.2 * n_systems))
    assert record["validation_rows"] == int(torch.isin(pool["system"], held).sum())
    dataset = open_dataset(tiny_dataset)
    some = dataset.ids("train")[1:2]
    windows = observed_windows(dataset, 3, seed=3, context_length=CONTEXT, horizon=64, systems=some)
    assert [w.system for w in windows] == some * 3


def test_an_interrupted_pool_resumes_to_the_same_rows(tmp_path, tiny_dataset, monkeypatch):
    """A pool interrupted after its first batch keeps that batch in its progress file; the same call then
    carries on from there to the rows of an uninterrupted run, and another model's call refuses the file."""
    windows = observed_windows(open_dataset(tiny_dataset), 4, seed=5, context_length=CONTEXT, horizon=64)[:12]
    model = _experts_model()
    whole = choice_pool(model, windows, batch_size=4, progress=False)
    progress = tmp_path / "pool.pt"
    batch = choice_module._pool_batch
    calls, state = [], {"interrupt": True}

    def interrupted(*args):  # a Ctrl-C in the first run's second batch
        calls.append(len(args[1]))
        if len(calls) == 2 and state.pop("interrupt", False):
            raise KeyboardInterrupt
        batch(*args)

    monkeypatch.setattr(choice_module, "_pool_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        choice_pool(model, windows, batch_size=4, progress=False, resume=progress)
    assert torch.load(progress, weights_only=True)["done"] == 4
    calls.clear()
    resumed = choice_pool(model, windows, batch_size=4, progress=False, resume=progress)
    assert calls == [4, 4]  # the second and third batches only
    assert resumed.keys() == whole.keys()
    for k in whole:
        assert torch.equal(resumed[k].nan_to_num(-1.0), whole[k].nan_to_num(-1.0)), k
    with pytest.raises(
        ValueError, match="another checkpoint, other windows or another version of panda_fm; delete it"
    ):
        choice_pool(_experts_model(seed=1), windows, batch_size=4, progress=False, resume=progress)


def test_the_chooser_scores_each_expert_alike():
    """The same evidence in another expert's slot moves only by the expert's identity input: permuting the
    experts' evidence of an identity-blind chooser permutes its logits."""
    chooser = EvidenceChooser(3, 8)
    torch.nn.init.normal_(chooser.net[-1].weight)
    with torch.no_grad():
        chooser.net[0].weight[:, -3:] = 0.0  # blind to which expert it is
    evidence, window = torch.randn(4, 3, len(EVIDENCE)), torch.randn(4, len(WINDOW_FEATURES))
    order = torch.tensor([2, 0, 1])
    torch.testing.assert_close(chooser(evidence[:, order], window), chooser(evidence, window)[:, order])


def test_fit_chooser_cli(tmp_path, tiny_dataset):
    """``panda-fm fit-chooser`` writes a checkpoint with the chooser and its record; a checkpoint without
    experts is refused with the reason."""
    base = tmp_path / "base"
    PandaPipeline(_experts_model(), {"name": "base"}).save_pretrained(base)
    out = tmp_path / "fitted"
    args = ["--data", str(tiny_dataset), "--windows-per-system", "2", "--epochs", "2", "--width", "8"]
    done = subprocess.run(
        cli("fit-chooser", "--checkpoint", str(base), "--out", str(out), *args),
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["expert_chooser"] == 8
    record = json.loads((out / "training_info.json").read_text())["chooser"]
    assert record["windows"] == 2 * 5 and set(record["validation_smape"]) == {"network", "chooser", "oracle"}
    assert not (tmp_path / "fitted.pool.pt").exists()  # the pool's progress file goes with the run's success
    refused = subprocess.run(
        cli("fit-chooser", "--checkpoint", str(TINY_CHECKPOINT), "--out", str(tmp_path / "no"), *args),
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "no in-context experts" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_fit_chooser_cli_adds_an_expert(tmp_path, tiny_dataset):
    """``--add-expert smap=analogue --experts-version 7`` fits a new chooser for the wider set of experts and
    records how the expert came in; a malformed request is refused with the form it takes."""
    base = tmp_path / "base"
    earlier = "Pretrained on X. The evidence chooser: an earlier fit."
    PandaPipeline(
        _experts_model(experts_version=6), {"name": "base", "training_data": earlier}
    ).save_pretrained(base)
    out = tmp_path / "wider"
    args = ["--data", str(tiny_dataset), "--windows-per-system", "1", "--epochs", "2", "--width", "8"]
    add = ["--add-expert", "smap=analogue", "--experts-version", "7"]
    done = subprocess.run(
        cli("fit-chooser", "--checkpoint", str(base), "--out", str(out), *args, *add),
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert (
        config["experts"][-1] == "smap" and config["experts_version"] == 7 and config["expert_chooser"] == 8
    )
    record = json.loads((out / "training_info.json").read_text())["chooser"]
    assert record["added_experts"] == {"smap": "analogue"} and record["experts_version"] == 7
    data = json.loads((out / "training_info.json").read_text())["training_data"]
    assert (
        data.startswith("Pretrained on X. The evidence chooser: 5 randomly")
        and data.count("evidence chooser") == 1
    )
    refused = subprocess.run(
        cli(
            "fit-chooser",
            "--checkpoint",
            str(base),
            "--out",
            str(tmp_path / "no"),
            *args,
            "--add-expert",
            "smap",
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "NAME=LIKE" in refused.stderr
    assert not (tmp_path / "no").exists()
