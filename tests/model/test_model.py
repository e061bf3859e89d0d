import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from panda_fm import PandaConfig, PandaModel, PandaPipeline
from panda_fm.forecasters import NaiveForecaster
from tests.conftest import TINY_CHECKPOINT, integrate, random_model, tiny_config


@pytest.mark.parametrize("channels", [1, 3, 7, 32, 64])
@pytest.mark.parametrize("length", [100, 512, 2000])
def test_forward_shapes(channels, length, rng):
    model = random_model()
    x = torch.randn(2, length, channels, generator=rng)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 64, channels)
    assert torch.isfinite(y).all()


def test_channel_permutation_equivariance(rng):
    model = random_model()
    x = torch.randn(2, 512, 5, generator=rng) * torch.tensor([1.0, 10, 0.1, 3, 7]) + 4
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(model(x)[..., perm], model(x[..., perm]), rtol=1e-5, atol=1e-5)


def test_forecast_is_equivariant_to_affine_maps_of_a_channel(rng):
    model = random_model()
    x = torch.randn(1, 512, 3, generator=rng)
    a, b = torch.tensor([2.0, 0.5, 30.0]), torch.tensor([-1.0, 100.0, 3.0])
    with torch.no_grad():
        torch.testing.assert_close(model(x * a + b), model(x) * a + b, rtol=1e-4, atol=1e-3)


def test_constant_channel_forecasts_its_constant(rng):
    model = random_model()
    x = torch.randn(1, 512, 3, generator=rng)
    x[..., 1] = 7.25
    with torch.no_grad():
        y = model(x)
    assert torch.equal(y[..., 1], torch.full_like(y[..., 1], 7.25))


def test_nan_and_observed_mask_mean_the_same(rng):
    model = random_model()
    x = torch.randn(1, 512, 2, generator=rng)
    mask = torch.rand(1, 512, 2, generator=rng) > 0.3
    with torch.no_grad():
        by_mask = model(x, observed=mask)
        by_nan = model(torch.where(mask, x, float("nan")))
    torch.testing.assert_close(by_mask, by_nan)


def test_short_context_is_left_padded_and_ignores_padding_values(rng):
    model = random_model()
    x = torch.randn(1, 200, 2, generator=rng)
    padded = torch.cat([torch.randn(1, 312, 2, generator=rng) * 1e3, x], dim=1)
    observed = torch.cat(
        [torch.zeros(1, 312, 2, dtype=torch.bool), torch.ones(1, 200, 2, dtype=torch.bool)], 1
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded, observed=observed))


def test_longer_context_uses_its_last_steps(rng):
    model = random_model()
    x = torch.randn(1, 900, 2, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x[:, -512:]))


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_dynamics_embedding": False},
        {"pooling_type": "max"},
        {"channel_attention": False},
        {"patch_stride": 8, "context_length": 100},
        {"rope_percent": 0.0},
        {"incontext": "analogue"},
        {"incontext": "analogue", "use_dynamics_embedding": False, "pooling_type": "max"},
        {"incontext": "experts"},
        {"incontext": "experts", "experts": ["nvar_sg11", "analogue_g2"], "expert_combine": "mix"},
        {"incontext": "experts", "expert_tokens": "pooled"},
    ],
)
def test_variants_run_and_store_everything_in_the_state_dict(overrides, rng):
    model = PandaModel(tiny_config(**overrides), seed=3).eval()
    again = PandaModel(tiny_config(**overrides), seed=99).eval()
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 300, 3, generator=rng)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_seed_fixes_initialisation():
    a, b = random_model(seed=5), random_model(seed=5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(random_model(seed=6).head.weight, a.head.weight)


def test_bfloat16_close_to_float32(rng):
    model = random_model()
    x = torch.randn(4, 512, 3, generator=rng)
    with torch.no_grad():
        y32 = model(x)
        y16 = model.to(torch.bfloat16)(x)
    rel = (y16 - y32).pow(2).mean().sqrt() / y32.pow(2).mean().sqrt()
    assert rel < 0.02


def test_analogue_model_starts_as_its_in_context_forecast(rng):
    model = random_model(incontext="analogue")
    x = torch.randn(2, 512, 3, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_normalised(x), model.analogue(x))


def test_analogue_forecast_continues_a_periodic_signal():
    from panda_fm.model.incontext import AnalogueForecast

    t = torch.arange(512 + 64, dtype=torch.float32)
    signal = torch.stack([torch.sin(2 * torch.pi * t / 50), torch.cos(2 * torch.pi * t / 25)], -1)[None]
    forecast = AnalogueForecast(delays=8, lag=3, horizon=64, sharpness=1000.0)(signal[:, :512])
    torch.testing.assert_close(forecast, signal[:, 512:], atol=1e-3, rtol=0)


def test_analogue_ignores_windows_with_missing_values():
    from panda_fm.model.incontext import AnalogueForecast

    af = AnalogueForecast(delays=4, lag=2, horizon=16)
    x = torch.randn(1, 100, 2, generator=torch.Generator().manual_seed(0))
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[:, :60] = False  # leaves 100 - 60 - 7 - 16 + 1 = 17 complete candidates
    poisoned = torch.where(observed, x, 1e6)
    torch.testing.assert_close(af(x, observed), af(poisoned, observed))
    observed[:, :90] = False  # no complete candidate: the forecast is the mean, 0
    assert torch.equal(af(x, observed), torch.zeros(1, 16, 2))


def test_analogue_gradients_are_finite_with_missing_context():
    model = random_model(incontext="analogue")
    x = torch.randn(2, 512, 3, generator=torch.Generator().manual_seed(1))
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[0, :384] = False  # part missing: some candidates remain
    observed[1, :480] = False  # too little left for any complete candidate
    model.head.weight.data.normal_(0, 0.02, generator=torch.Generator().manual_seed(2))
    loss = model.forward_normalised(x * observed, observed).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    assert model.analogue.log_sharpness.grad is not None


def test_experts_model_starts_as_the_backtest_selector(rng):
    from panda_fm.model.experts import expert_forecasts

    model = random_model(incontext="experts", experts=["analogue", "nvar", "analogue_g2"])
    x = torch.randn(2, 512, 3, generator=rng).cumsum(1) / 10
    with torch.no_grad():
        forecasts, weights = model.expert_weights(x)
        out = model.forward_normalised(x)
    assert forecasts.shape == (2, 3, 64, 3) and weights.shape == (2, 3, 3)
    cfg = model.config
    again, errors, _ = expert_forecasts(x, None, cfg.experts, 64, cfg.expert_backtest, cfg.experts_version)
    torch.testing.assert_close(forecasts, again)
    # the head starts at zero: weights are a softmax of -8 x log(backtest error), the same for every channel
    expected = torch.softmax(-8.0 * errors.log().mean(dim=2), dim=1)  # (B, E)
    torch.testing.assert_close(weights, expected[:, :, None].expand_as(weights), rtol=1e-4, atol=1e-5)
    best = errors.log().mean(dim=2).argmin(dim=1)  # (B,): the smallest geometric-mean backtest error
    torch.testing.assert_close(out, forecasts[torch.arange(2), best])


def test_experts_select_the_highest_weight_per_channel_or_mix(rng):
    model = random_model(incontext="experts", experts=["analogue", "nvar"])
    x = torch.randn(1, 512, 2, generator=rng).cumsum(1) / 10
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=rng))
        forecasts, weights = model.expert_weights(x)
        best = weights.argmax(dim=1)[0]  # (C,)
        out = model.forward_normalised(x)
        for c in range(2):
            assert torch.equal(out[0, :, c], forecasts[0, best[c], :, c])
        model.config.expert_combine = "mix"
        mixed = model.forward_normalised(x)
    torch.testing.assert_close(mixed, (forecasts * weights.unsqueeze(2)).sum(1))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_training_gradients_of_the_network_hold_no_subnormal_floats(rng):
    # a choice among experts made with near certainty (a Lorenz-like context, where the NVAR backtests almost
    # exactly) gives the other experts' logits gradients far below float32's smallest normal number; carried
    # back through the network they would make every CPU matrix product of the backward many times slower
    from panda_fm.training.module import standardised_mse

    model = random_model(incontext="experts", experts=["analogue", "nvar", "analogue_g2"]).train()
    clean = torch.from_numpy(integrate("Lorenz", 512 + 64, 2, periods=5.0)[0])
    noisy = clean + 0.3 * clean.std(dim=1, keepdim=True) * torch.randn(clean.shape, generator=rng)
    batch = torch.cat([clean, noisy])  # near-certain choices, and uncertain ones that train the head
    with torch.no_grad():
        _, weights = model.expert_weights(batch[:, :512])
    assert float(weights.min()) < 1e-30  # the case in question: an expert all but ruled out
    tiny = torch.finfo(torch.float32).tiny
    subnormal = []

    def check(module, grad_input, grad_output):
        subnormal.extend(int(((g.abs() < tiny) & (g != 0)).sum()) for g in grad_output if g is not None)

    hooks = [m.register_full_backward_hook(check) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    standardised_mse(model, batch[:, :512], batch[:, 512:], 1e-5).backward()
    for h in hooks:
        h.remove()
    assert subnormal and sum(subnormal) == 0
    assert model.head.weight.grad.abs().sum() > 0  # the choice is still trained


def test_prior_only_switches_the_trained_choice_back_to_the_backtest_prior(rng):
    model = random_model(incontext="experts", experts=["analogue", "nvar"])
    untrained = model.prior_only()
    x = torch.randn(2, 512, 2, generator=rng).cumsum(1) / 10
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=rng))  # "trained"
        model.log_backtest_sharpness.fill_(0.3)
        _, trained_weights = model.expert_weights(x)
        prior = model.prior_only()
        _, prior_weights = prior.expert_weights(x)
        _, init_weights = untrained.expert_weights(x)
    assert not torch.allclose(trained_weights, prior_weights)
    torch.testing.assert_close(prior_weights, init_weights)  # the prior of a model before training
    assert model.head.weight.abs().sum() > 0 and model.log_backtest_sharpness.item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="incontext='experts'"):
        random_model().prior_only()


def test_with_experts_appends_experts_whose_markers_start_as_another_s(rng):
    model = random_model(
        incontext="experts", experts=["analogue", "nvar"], experts_version=6, expert_chooser=8
    )
    wider = model.with_experts({"smap": "analogue"}, 7)
    cfg = wider.config
    assert cfg.experts == ["analogue", "nvar", "smap"] and cfg.experts_version == 7
    assert cfg.expert_chooser == 0 and not hasattr(wider, "chooser")  # the chooser's inputs name the experts
    torch.testing.assert_close(wider.expert_embedding[:2], model.expert_embedding)
    torch.testing.assert_close(wider.expert_embedding[2], model.expert_embedding[0])
    for name, value in model.state_dict().items():  # everything else carries over
        if name != "expert_embedding" and not name.startswith("chooser."):
            torch.testing.assert_close(wider.state_dict()[name], value)
    x = torch.randn(1, 512, 3, generator=rng).cumsum(1) / 10
    with torch.no_grad():
        before, _ = model.expert_weights(x)
        after, weights = wider.expert_weights(x)
    torch.testing.assert_close(after[:, :2], before)  # the same experts forecast the same
    assert weights.shape == (1, 3, 3) and after[:, 2].isfinite().all()
    with pytest.raises(ValueError, match="new expert"):
        model.with_experts({"nvar": "analogue"}, 7)  # already read
    with pytest.raises(ValueError, match="new expert"):
        model.with_experts({"smap": "analogue_g2"}, 7)  # no such marker
    with pytest.raises(ValueError, match="experts must be distinct names"):
        model.with_experts({"smap": "analogue"}, 6)  # version 6 has no S-map


def test_pooled_expert_tokens_are_one_per_expert_holding_the_mean_of_its_patches(rng):
    experts = ["analogue", "nvar", "analogue_g2"]
    patches = random_model(incontext="experts", experts=experts)
    pooled = random_model(incontext="experts", experts=experts, expert_tokens="pooled")
    pooled.load_state_dict(patches.state_dict())  # same parameters: only the token layout differs
    x = torch.randn(2, 512, 3, generator=rng).cumsum(1) / 10
    cfg = patches.config
    N, F, E = cfg.num_patches, cfg.prediction_length // cfg.patch_length, len(experts)
    seen = {}

    def first_layer_input(name):
        def hook(module, args):
            seen[name] = args[0].detach().clone()

        return hook

    for name, model in (("patches", patches), ("pooled", pooled)):
        model.layers[0].register_forward_pre_hook(first_layer_input(name))
        with torch.no_grad():
            model.expert_logits(x)
    assert seen["patches"].shape[2] == N + E * F and seen["pooled"].shape[2] == N + E
    assert pooled.rope_cos.shape[0] == N + E
    torch.testing.assert_close(seen["pooled"][:, :, :N], seen["patches"][:, :, :N])
    # each pooled token is the mean of that expert's F patch tokens (the marks are the same on every patch)
    torch.testing.assert_close(
        seen["pooled"][:, :, N:], seen["patches"][:, :, N:].unflatten(2, (E, F)).mean(dim=3)
    )
    # a trained head reads different tokens, but the untrained one (zero) leaves the backtest prior: same choice
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), patches(x))
    with pytest.raises(ValueError, match="expert_tokens must be"):
        tiny_config(incontext="experts", expert_tokens="summary")


def test_experts_model_forecasts_any_horizon_in_one_pass(rng):
    model = random_model(incontext="experts", experts=["analogue", "nvar"])
    x = torch.randn(2, 512, 3, generator=rng).cumsum(1) / 10
    with torch.no_grad():
        short, long = model(x), model(x, horizon=200)
    assert long.shape == (2, 200, 3)
    torch.testing.assert_close(long[:, :64], short)  # the same choice, the experts' longer forecasts
    with pytest.raises(ValueError, match="roll out"):
        random_model()(x, horizon=200)


# --- transformers integration: AutoConfig / AutoModel / save_pretrained ----------------------------------

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "panda-fm-small"


def _gappy_context(seed: int) -> torch.Tensor:
    """(3, 512, 3) random walks of different scales, one with a gap in one channel and one half missing."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 512, 3, generator=gen).cumsum(1) * torch.tensor([1.0, 10.0, 0.1]) + 5
    x[0, 100:160, 1] = float("nan")
    x[1, :200] = float("nan")
    return x


@pytest.mark.parametrize(
    "path", [TINY_CHECKPOINT, pytest.param(SHIPPED, marks=pytest.mark.slow)], ids=["tiny", "panda-fm-small"]
)
def test_auto_classes_load_checkpoints_bit_identical_to_the_pipelines_model(path):
    import transformers

    pipe = PandaPipeline.from_pretrained(path)
    config = transformers.AutoConfig.from_pretrained(path)
    assert type(config) is PandaConfig and config == pipe.config
    model = transformers.AutoModel.from_pretrained(path)
    assert type(model) is PandaModel and not model.training
    # transformers builds the model on the meta device and then loads the weights: every tensor, the
    # non-persistent rotary tables and the int64 index tuples included, must come out as the pipeline's
    ours = dict(pipe.model.named_buffers()) | dict(pipe.model.named_parameters())
    theirs = dict(model.named_buffers()) | dict(model.named_parameters())
    assert theirs.keys() == ours.keys() and "rope_cos" in theirs
    for key, value in ours.items():
        assert theirs[key].dtype == value.dtype and torch.equal(theirs[key], value), key
    x = _gappy_context(0)
    horizons = [config.prediction_length] + ([300] if config.incontext == "experts" else [])
    with torch.inference_mode():
        for horizon in horizons:
            assert torch.equal(model(x, horizon=horizon), pipe.model(x, horizon=horizon)), horizon


def test_transformers_save_pretrained_loads_in_the_pipeline_and_back(tmp_path):
    import transformers

    model = transformers.AutoModel.from_pretrained(TINY_CHECKPOINT)
    model.save_pretrained(tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["model_type"] == "panda_fm" and saved["architectures"] == ["PandaModel"]
    pipe = PandaPipeline.from_pretrained(tmp_path / "hf")
    x = _gappy_context(1)
    with torch.inference_mode():
        assert torch.equal(pipe.model(x), model(x))
    # and what the pipeline writes, transformers reads
    pipe.save_pretrained(tmp_path / "pipe")
    again = transformers.AutoModel.from_pretrained(tmp_path / "pipe")
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))


def test_transformers_loading_is_strict_about_tensors(tmp_path):
    import transformers

    PandaPipeline.from_pretrained(TINY_CHECKPOINT).save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(weights)
    del state["embedder.poly_indices_3"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['embedder.poly_indices_3'\].*unexpected tensors \['extra.weight'\]",
    ):
        transformers.AutoModel.from_pretrained(tmp_path / "ckpt")
    PandaPipeline.from_pretrained(TINY_CHECKPOINT).save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["ffn_dim"] = 32
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"tensors of another shape \[.layers.0.ff.0.bias \(64,\) \(the config implies \(32,\)\)",
    ):
        transformers.AutoModel.from_pretrained(tmp_path / "ckpt")


def test_building_a_model_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = random_model(seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    # transformers' initialisation hook keeps the seeded weights
    b = random_model(seed=5)
    b.init_weights()
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key


def test_experts_version_reaches_the_experts(monkeypatch, rng):
    import panda_fm.config
    import panda_fm.forecasters.tensor.experts as tensor_experts
    import panda_fm.model.experts

    versions = dict(tensor_experts.EXPERT_VERSIONS) | {3: {"nvar": lambda: NaiveForecaster()}}
    monkeypatch.setattr(tensor_experts, "EXPERT_VERSIONS", versions)
    monkeypatch.setattr(
        tensor_experts, "CHANNEL_GROUPING", dict(tensor_experts.CHANNEL_GROUPING) | {3: False}
    )
    monkeypatch.setattr(panda_fm.config, "EXPERT_VERSIONS", versions)
    tensor_experts._registry.cache_clear()
    seen = []
    real = panda_fm.model.experts.backtest_experts_tensor

    def spy(*args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("version"))
        return real(*args, **kwargs)

    monkeypatch.setattr(panda_fm.model.experts, "backtest_experts_tensor", spy)
    model = random_model(incontext="experts", experts=["nvar"], experts_version=3)
    x = torch.randn(1, 512, 2, generator=rng).cumsum(1)
    with torch.no_grad():
        y = model(x)
    assert seen == [3]
    torch.testing.assert_close(y, x[:, -1:].expand(-1, 64, -1))  # version 3's "nvar" is the naive forecast
    tensor_experts._registry.cache_clear()
