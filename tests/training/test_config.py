from __future__ import annotations

from pathlib import Path

import pytest

from panda_fm.cli import build_parser, main
from panda_fm.config import PandaConfig
from panda_fm.model import PandaModel
from panda_fm.training.config import PretrainConfig, load_config, override_keys
from tests.conftest import CONFIGS

SHIPPED = ("tiny-cpu", "small-cpu", "small-gpu", "base-21m-gpu", "base-21m-ddp")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, PretrainConfig)
    assert cfg.trainer.lr == 1e-3 and cfg.trainer.warmup_fraction == 0.1 and cfg.trainer.grad_clip == 1.0
    assert cfg.data.num_channels == 3 and cfg.data.augment.rate == 0.2


def test_config_sizes():
    assert load_config(CONFIGS / "base-21m-gpu.yaml").model == PandaConfig()
    ddp = load_config(CONFIGS / "base-21m-ddp.yaml")
    assert ddp.trainer.devices == 8 and ddp.data.batch_size * ddp.trainer.world_size == 1024
    assert load_config(CONFIGS / "base-21m-gpu.yaml").trainer.precision == "bf16-mixed"
    small = PandaModel(load_config(CONFIGS / "small-cpu.yaml").model).num_parameters()
    gpu = load_config(CONFIGS / "small-gpu.yaml")  # the shipped design on a GPU: the same model config
    assert gpu.model == load_config(CONFIGS / "small-cpu.yaml").model
    shipped = PandaConfig.from_pretrained(CONFIGS.parents[1] / "checkpoints" / "panda-fm-small")
    assert gpu.model.hyperparameters() == {**shipped.hyperparameters(), "expert_chooser": 0}
    assert 2e6 < small < 1e7
    assert PandaModel(load_config(CONFIGS / "tiny-cpu.yaml").model).num_parameters() < 1e5


def test_overrides_are_coerced():
    cfg = load_config(
        CONFIGS / "tiny-cpu.yaml",
        {
            "trainer.lr": "3e-4",
            "model.d_model": "48",
            "model.num_rff": "32",
            "trainer.progress_bar": "false",
            "data.augment.kinds": "[delay, affine]",
            "trainer.debug_nonfinite_rank": "null",
        },
    )
    assert cfg.trainer.lr == pytest.approx(3e-4) and isinstance(cfg.trainer.lr, float)
    assert cfg.model.d_model == 48 and cfg.trainer.progress_bar is False
    assert cfg.data.augment.kinds == ["delay", "affine"] and cfg.trainer.debug_nonfinite_rank is None


def test_unknown_and_bad_keys_are_clear_errors(tmp_path: Path):
    with pytest.raises(ValueError, match=r"unknown config key.*model.dmodel"):
        load_config(CONFIGS / "tiny-cpu.yaml", {"model.dmodel": "3"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"trainer.learning_rate.*known keys there: \[.*'lr'"):
        load_config(bad)
    with pytest.raises(ValueError, match="trainer.max_steps must be an integer"):
        load_config(CONFIGS / "tiny-cpu.yaml", {"trainer.max_steps": "many"})
    with pytest.raises(ValueError, match="d_model"):
        load_config(CONFIGS / "tiny-cpu.yaml", {"model.d_model": "40"})  # widths no longer add up
    with pytest.raises(FileNotFoundError, match="train/configs"):
        load_config(tmp_path / "missing.yaml")


def test_cli_parses_dotted_overrides_and_common_options():
    args = build_parser().parse_args(
        [
            "pretrain",
            "--config",
            "c.yaml",
            "--model.d_model",
            "128",
            "--trainer.lr",
            "3e-4",
            "--max-steps",
            "7",
        ]
    )
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    assert overrides == {"model.d_model": "128", "trainer.lr": "3e-4"}
    assert args.max_steps == 7 and args.resume is False
    assert "data.augment.rate" in override_keys()


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    tiny = str(CONFIGS / "tiny-cpu.yaml")
    assert main(["pretrain", "--config", tiny, "--data", str(tmp_path / "nowhere")]) == 2
    assert "not a panda_fm dataset" in capsys.readouterr().err
    assert main(["pretrain", "--config", tiny]) == 2
    assert "pass --data DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", tiny, "--model.dmodel", "3"])


def test_loss_kind_is_validated_and_mae_is_the_mean_absolute_error():
    import pytest
    import torch

    from panda_fm.training.config import TrainerConfig
    from panda_fm.training.module import standardised_mse
    from tests.conftest import random_model

    with pytest.raises(ValueError, match="trainer.loss must be 'mse', 'mae' or 'smape'"):
        TrainerConfig(loss="huber")
    model = random_model()
    gen = torch.Generator().manual_seed(0)
    context, target = torch.randn(2, 512, 3, generator=gen), torch.randn(2, 64, 3, generator=gen)
    mse = standardised_mse(model, context, target, 1e-5)
    mae = standardised_mse(model, context, target, 1e-5, kind="mae")
    assert mae > 0 and mse > 0 and not torch.isclose(mae, mse)
    assert mae <= mse.sqrt() + 1e-6  # Jensen: mean |e| <= sqrt(mean e^2)


def test_smape_loss_is_the_benchmark_smape_of_the_forecast():
    import torch

    from panda_fm.eval import metrics
    from panda_fm.scaling import fit_scale
    from panda_fm.training.module import standardised_mse
    from tests.conftest import random_model

    model = random_model()
    gen = torch.Generator().manual_seed(1)
    context, target = torch.randn(1, 512, 3, generator=gen), torch.randn(1, 64, 3, generator=gen)
    stats = fit_scale(context, torch.ones_like(context, dtype=torch.bool), 1e-5)
    with torch.no_grad():
        pred = model.forward_normalised(stats.normalise(context))[0].numpy()
        loss = standardised_mse(model, context, target, 1e-5, kind="smape")
    expected = metrics.smape(stats.normalise(target)[0].numpy(), pred)
    assert abs(float(loss) - expected) < 1e-3 * expected


def test_selection_loss_trains_the_weights_towards_the_better_expert():
    import torch

    from panda_fm.training.module import standardised_mse
    from tests.conftest import random_model

    model = random_model(incontext="experts", experts=["analogue", "nvar"]).train()
    # switch the backtest prior off so that the weights start equal and only the network can move them
    model.log_backtest_sharpness.requires_grad_(False).fill_(-30.0)
    t = torch.arange(512 + 64, dtype=torch.float32) * 0.05
    series = torch.stack([torch.sin(t), torch.cos(1.3 * t), torch.sin(0.7 * t) * torch.cos(t)], dim=1)
    context, target = series[None, :512], series[None, 512:]
    mu, sd = context.mean(1, keepdim=True), context.std(1, unbiased=False, keepdim=True)
    x, y = (context - mu) / sd, (target - mu) / sd
    with torch.no_grad():
        forecasts, _ = model.expert_weights(x)
    errors = (forecasts - y.unsqueeze(1)).abs().mean(dim=(0, 2, 3))  # (E,) each expert's MAE
    best = int(errors.argmin())
    assert errors.max() > 1.5 * errors.min()  # one expert is clearly better here
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = standardised_mse(model, context, target, 1e-5, kind="mae")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        _, weights = model.expert_weights(x)
    assert losses[0] > errors.min() + 0.2 * (errors.max() - errors.min())  # starts at the average
    assert losses[-1] < errors.min() + 0.05 * (errors.max() - errors.min())  # ends at the best
    assert (weights[0, best] > 0.9).all()  # every channel


def test_loss_horizon_needs_experts_and_sets_the_target_length():
    import pytest
    import torch

    from panda_fm.training.config import load_config
    from panda_fm.training.module import standardised_mse
    from tests.conftest import random_model

    with pytest.raises(ValueError, match="only a model with model.incontext 'experts'"):
        load_config(CONFIGS / "small-cpu.yaml", {"model.incontext": "none", "trainer.loss_horizon": 256})
    config = load_config(CONFIGS / "small-cpu.yaml", {"trainer.loss_horizon": 256})
    assert config.target_length == 256 and load_config(CONFIGS / "small-cpu.yaml").target_length == 128
    model = random_model(incontext="experts", experts=["analogue", "nvar"], expert_combine="mix")
    gen = torch.Generator().manual_seed(0)
    context = torch.randn(2, 512, 3, generator=gen).cumsum(1)
    target = torch.randn(2, 200, 3, generator=gen)
    with torch.no_grad():
        long = standardised_mse(model, context, target, 1e-5, kind="mae")
        short = standardised_mse(model, context, target[:, :64], 1e-5, kind="mae")
    assert torch.isfinite(long) and not torch.isclose(long, short)  # the loss reads all 200 steps
