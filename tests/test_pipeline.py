import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from panda_fm import GlitchWarning, MissingDataWarning, PandaPipeline
from tests.conftest import FIXTURES, TINY_CHECKPOINT, random_model

ROOT = Path(__file__).resolve().parents[1]


def test_regression_against_saved_outputs(tiny_pipeline):
    saved = load_file(FIXTURES / "tiny_panda_outputs.safetensors")
    torch.testing.assert_close(tiny_pipeline.predict(saved["context"]), saved["forecast"])
    torch.testing.assert_close(tiny_pipeline.predict(saved["context"], 200), saved["rollout"])


@pytest.mark.parametrize("channels", [1, 3, 7, 32])
@pytest.mark.parametrize("length", [100, 512, 2000])
def test_output_type_and_shape_follow_the_input(tiny_pipeline, channels, length):
    x = np.random.default_rng(0).normal(size=(length, channels))
    y = tiny_pipeline.predict(x, 40)
    assert isinstance(y, np.ndarray) and y.shape == (40, channels) and y.dtype == np.float64
    yb = tiny_pipeline.predict(torch.from_numpy(x[None]).float(), 40)
    assert isinstance(yb, torch.Tensor) and yb.shape == (1, 40, channels) and yb.dtype == torch.float32
    np.testing.assert_allclose(yb[0].numpy(), y, rtol=1e-5, atol=1e-5)


def test_univariate_and_integer_input(tiny_pipeline):
    x = np.arange(300) % 17
    y = tiny_pipeline.predict(x, 10)
    assert y.shape == (10,) and y.dtype == np.float32


def test_list_of_different_lengths_matches_one_by_one(tiny_pipeline):
    rng = np.random.default_rng(1)
    series = [rng.normal(size=(T, 2)).astype(np.float32) for T in (90, 512, 700)]
    batched = tiny_pipeline.predict(series, 30)
    assert batched.shape == (3, 30, 2)
    for s, y in zip(series, batched, strict=True):
        np.testing.assert_allclose(tiny_pipeline.predict(s, 30), y, rtol=1e-5, atol=1e-5)


def test_rollout_extends_the_single_pass_forecast(tiny_pipeline):
    x = torch.randn(3, 512, 2, generator=torch.Generator().manual_seed(2))
    one = tiny_pipeline.predict(x)
    long = tiny_pipeline.predict(x, 150)
    assert long.shape == (3, 150, 2)
    torch.testing.assert_close(long[:, :64], one)
    # the second pass reads the first pass's forecast as the newest context
    torch.testing.assert_close(long[:, 64:128], tiny_pipeline.predict(torch.cat([x, one], 1)))


@pytest.mark.parametrize("scale, offset", [(1e-9, 0.0), (1e-3, 0.0), (1.0, 1e6), (1e4, -3e7)])
def test_the_units_do_not_matter(tiny_pipeline, scale, offset):
    # a variance floor inside the model flattened series in small units, and float32 rounded away a small
    # variation on a large offset; the pipeline now standardises in float64 first
    t = np.arange(600) * 0.05
    x = np.stack([np.sin(t), 8 + 5 * np.cos(0.7 * t), 0.01 * np.sin(1.3 * t)], axis=1)  # (600, 3)
    sd = x.std(axis=0)  # the comparisons in context stds
    reference = tiny_pipeline.predict(x, 100)
    forecast = (tiny_pipeline.predict(x * scale + offset, 100) - offset) / scale
    np.testing.assert_allclose(forecast / sd, reference / sd, atol=1e-4)
    q, mean = tiny_pipeline.predict_quantiles(x * scale + offset, 100, quantile_levels=(0.1, 0.9))
    q0, mean0 = tiny_pipeline.predict_quantiles(x, 100, quantile_levels=(0.1, 0.9))
    np.testing.assert_allclose((q - offset) / scale / sd[:, None], q0 / sd[:, None], atol=1e-4)
    np.testing.assert_allclose((mean - offset) / scale / sd, mean0 / sd, atol=1e-4)


@pytest.mark.parametrize(
    "channel, scale, offset", [(2, 1e-3, 3e7), (0, 1e6, 0.0), (1, 1.0, -3e7), (2, 1e-7, 0.0)]
)
def test_a_channel_in_other_units_changes_nothing(tiny_pipeline, channel, scale, offset):
    # one map for all channels flattened a channel in much smaller units, and every channel beside one on a far
    # offset (15 to 450 context stds off in these cases); such a channel now gets a map of its own
    t = np.arange(600) * 0.05
    x = np.stack([np.sin(t), 8 + 5 * np.cos(0.7 * t), 0.5 * np.sin(1.3 * t) + np.sin(0.31 * t)], axis=1)
    sd = x.std(axis=0)
    y = x.copy()
    y[:, channel] = x[:, channel] * scale + offset
    forecast = tiny_pipeline.predict(y, 100)
    forecast[:, channel] = (forecast[:, channel] - offset) / scale
    np.testing.assert_allclose(forecast / sd, tiny_pipeline.predict(x, 100) / sd, atol=1e-4)


def test_batch_size_does_not_change_the_forecast(tiny_pipeline):
    x = torch.randn(5, 512, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        tiny_pipeline.predict(x, batch_size=2), tiny_pipeline.predict(x, batch_size=64)
    )


def test_a_glitch_is_reported_with_its_step_and_the_fix(tiny_pipeline):
    t = np.arange(900) * 0.05
    x = np.stack([np.sin(t), np.cos(0.7 * t)], axis=1)
    x[700, 1] += 10 * x[:, 1].std()  # one value 10 stds off, both neighbours where they were
    with pytest.warns(GlitchWarning, match=r"channel 1 at step 700\).*set it to NaN"):
        tiny_pipeline.predict(x, 20)  # the step counts from the series' start, not the context's
    x[700, 1] = np.nan  # as the warning advises: no glitch left
    spikes = np.where(np.arange(900) % 40 == 0, 12.0, 0.0)  # a spiking signal: many spikes are its own
    with warnings.catch_warnings():
        warnings.simplefilter("error", GlitchWarning)
        tiny_pipeline.predict(x, 20)
        tiny_pipeline.predict(np.stack([x[:, 0], spikes], axis=1), 20)


def test_missing_values_are_masked_not_dropped(tiny_pipeline):
    x = np.random.default_rng(4).normal(size=(512, 2))
    gappy = x.copy()
    gappy[100:130, 0] = np.nan
    y = tiny_pipeline.predict(gappy)
    assert np.isfinite(y).all()
    assert not np.allclose(y, tiny_pipeline.predict(x))


def test_save_load_round_trip_is_identical(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "training_info.json",
    ]
    again = PandaPipeline.from_pretrained(tmp_path / "ckpt")
    x = torch.randn(2, 512, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again.predict(x, 100), tiny_pipeline.predict(x, 100))
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "parameters:" in card and "library_name: panda_fm" in card


def test_save_over_an_existing_checkpoint_replaces_it(tmp_path):
    first, second = PandaPipeline(random_model(seed=1)), PandaPipeline(random_model(seed=2))
    first.save_pretrained(tmp_path / "c")
    second.save_pretrained(tmp_path / "c")
    loaded = PandaPipeline.from_pretrained(tmp_path / "c")
    assert torch.equal(loaded.model.head.weight, second.model.head.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


_SUBPROCESS = """
import sys, numpy as np
from panda_fm import PandaPipeline
x = np.load(sys.argv[1])
np.save(sys.argv[2], PandaPipeline.from_pretrained(sys.argv[3]).predict(x, 150))
"""


@pytest.mark.slow
def test_two_processes_give_bit_identical_forecasts(tmp_path):
    x = np.random.default_rng(6).normal(size=(2, 512, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for i in range(2):
        subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, tmp_path / "x.npy", tmp_path / f"y{i}.npy", TINY_CHECKPOINT],
            check=True,
            env=env,
        )
    assert np.array_equal(np.load(tmp_path / "y0.npy"), np.load(tmp_path / "y1.npy"))


def test_bfloat16_pipeline(tiny_pipeline):
    pipe = PandaPipeline.from_pretrained(TINY_CHECKPOINT, dtype=torch.bfloat16)
    x = torch.randn(4, 512, 3, generator=torch.Generator().manual_seed(7))
    y16, y32 = pipe.predict(x), tiny_pipeline.predict(x)
    assert y16.dtype == torch.float32
    assert (y16 - y32).pow(2).mean().sqrt() / y32.pow(2).mean().sqrt() < 0.02


# --- inputs as people write them -------------------------------------------------------------------


def test_a_plain_list_of_3000_floats_is_one_series(tiny_pipeline):
    values = np.sin(np.arange(3000) * 0.05).tolist()
    y = tiny_pipeline.predict(values, 30)
    assert isinstance(y, np.ndarray) and y.shape == (30,)
    np.testing.assert_array_equal(y, tiny_pipeline.predict(np.asarray(values), 30))


def test_a_list_of_rows_is_one_series(tiny_pipeline):
    x = np.random.default_rng(8).normal(size=(600, 3))
    y = tiny_pipeline.predict(x.tolist(), 20)
    assert y.shape == (20, 3)
    np.testing.assert_array_equal(y, tiny_pipeline.predict(x, 20))


def test_a_transposed_input_says_time_is_axis_0(tiny_pipeline):
    x = np.random.default_rng(9).normal(size=(3000, 3))
    with pytest.raises(ValueError, match=r"3 steps of 3000 channels.*time along axis 0.*x\.T") as err:
        tiny_pipeline.predict(x.T)
    assert len(str(err.value)) < 400  # no list of 3000 channel indices
    with pytest.raises(
        ValueError, match=r"\.\.\.\] \(40 channels\) have fewer than 16 observed steps.*pass x\.T"
    ):
        tiny_pipeline.predict(np.ones((10, 40)))  # too short to be read as a series: transposed?


def test_a_dataframe_comes_back_with_its_columns_and_datetime_index(tiny_pipeline):
    pd = pytest.importorskip("pandas")
    x = np.random.default_rng(10).normal(size=(600, 3))
    times = pd.DatetimeIndex(list(pd.date_range("2024-05-01", periods=600, freq="15min")), name="time")
    df = pd.DataFrame(x, index=times, columns=["temperature", "pressure", "flow"])  # freq not set
    y = tiny_pipeline.predict(df, 40)
    assert isinstance(y, pd.DataFrame) and list(y.columns) == ["temperature", "pressure", "flow"]
    assert y.index.name == "time" and y.index[0] == times[-1] + pd.Timedelta("15min")
    assert (np.diff(y.index) == pd.Timedelta("15min")).all()
    np.testing.assert_array_equal(y.to_numpy(), tiny_pipeline.predict(x, 40))
    s = tiny_pipeline.predict(df["flow"], 10)
    assert isinstance(s, pd.Series) and s.name == "flow" and s.index[0] == y.index[0]
    ragged = tiny_pipeline.predict([df, df.iloc[:300].reset_index(drop=True)], 5)
    assert [list(f.index) for f in ragged[1:]] == [[300, 301, 302, 303, 304]]
    np.testing.assert_allclose(
        ragged[0].to_numpy(), tiny_pipeline.predict(df, 5).to_numpy(), rtol=1e-5, atol=1e-6
    )


# --- bad input --------------------------------------------------------------------------------------


def _nan_channel() -> np.ndarray:
    x = np.ones((200, 3))
    x[:, 1] = np.nan
    return x


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.zeros((100, 0)), "empty"),
        (np.zeros((0, 100, 3)), "batch size 0"),
        ([], "empty list"),
        (np.full((100, 2), np.nan), "all NaN"),
        (_nan_channel(), "all-NaN channel"),
        (np.zeros((2, 2, 100, 3)), "rank 4"),
        (np.array([["a", "b"]] * 50), "dtype <U1"),
        (np.ones((100, 2), dtype=bool), "dtype bool"),
        (np.where(np.eye(100, 2) > 0, np.inf, 1.0), "infinite"),
        (np.ones((10, 2)), "fewer than 16 observed steps"),
        ([np.ones((100, 2)), np.ones((100, 3))], "disagree in channel count"),
        (np.full((100, 2), 1e30), "rescale"),
    ],
)
def test_bad_input_raises_a_named_value_error(tiny_pipeline, context, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline.predict(context)


@pytest.mark.parametrize("horizon", [0, -5, 2.5, True])
def test_bad_prediction_length(tiny_pipeline, horizon):
    with pytest.raises(ValueError, match="prediction_length must be a positive integer"):
        tiny_pipeline.predict(np.ones((100, 2)), horizon)


def test_corrupt_and_truncated_checkpoints(tmp_path, tiny_pipeline):
    ckpt = tiny_pipeline.save_pretrained(tmp_path / "ckpt")
    weights = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PandaPipeline.from_pretrained(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PandaPipeline.from_pretrained(ckpt)
    (ckpt / "model.safetensors").write_bytes(weights)
    (ckpt / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PandaPipeline.from_pretrained(ckpt)


def test_loading_is_strict_about_tensors(tmp_path, tiny_pipeline):
    ckpt = tiny_pipeline.save_pretrained(tmp_path / "ckpt")
    state = load_file(ckpt / "model.safetensors")
    del state["embedder.poly_indices_3"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['embedder.poly_indices_3'\].*unexpected tensors \['extra.weight'\]",
    ):
        PandaPipeline.from_pretrained(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["d_model"] = 64
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError):
        PandaPipeline.from_pretrained(ckpt)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope/deeper' does not exist"):
        PandaPipeline.from_pretrained(tmp_path / "nope" / "deeper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="needs config.json"):
        PandaPipeline.from_pretrained(tmp_path / "empty")


@pytest.mark.filterwarnings("ignore::panda_fm.pipeline.MissingDataWarning")  # gappy draws: expected, allowed
@pytest.mark.filterwarnings("ignore::panda_fm.pipeline.GlitchWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple),
    length_scale=st.sampled_from([1, 5, 20]),
    dtype=st.sampled_from(
        ["float32", "float64", "float16", "int64", "int8", "bool", "complex64", "<U3", "object"]
    ),
    fill=st.sampled_from(["normal", "nan", "inf", "huge", "constant", "sparse_nan"]),
    horizon=st.integers(-2, 200),
)
def test_any_input_gives_a_forecast_or_a_value_error(
    tiny_pipeline, shape, length_scale, dtype, fill, horizon
):
    shape = tuple(d * length_scale if i == max(0, len(shape) - 2) else d for i, d in enumerate(shape))
    rng = np.random.default_rng(0)
    values = {
        "normal": rng.normal(size=shape),
        "nan": np.full(shape, np.nan),
        "inf": np.full(shape, np.inf),
        "huge": np.full(shape, 1e300),
        "constant": np.full(shape, 3.0),
        "sparse_nan": np.where(rng.random(shape) < 0.5, np.nan, rng.normal(size=shape)),
    }[fill]
    with np.errstate(all="ignore"):
        x = values.astype(dtype)
    try:
        y = tiny_pipeline.predict(x, horizon)
    except ValueError:
        return
    assert y.shape[-2 if x.ndim > 1 else -1] == horizon
    assert np.isfinite(np.asarray(y, dtype=np.float64)).all()


def test_missing_steps_at_the_end_and_mostly_missing_channels_are_reported(tmp_path):
    """A context whose last steps are missing, or mostly missing, warns and names the channels; a complete
    one does not."""
    pipe = PandaPipeline.from_pretrained(FIXTURES / "tiny_experts")
    x = np.sin(np.arange(600) / 10)[:, None].repeat(3, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.predict(x, 16)
    x[-50:, 1] = np.nan
    x[:400, 2] = np.nan
    with pytest.warns(MissingDataWarning) as record:
        pipe.predict(x, 16)
    message = str(record[0].message)
    assert "channel 1: 50 steps missing at the end" in message and "channel(s) [2] are 61% missing" in message


@pytest.fixture(scope="module")
def shipped() -> PandaPipeline:
    return PandaPipeline.from_pretrained("panda-fm-small")


def test_the_newcomer_gap_cases_stay_on_the_attractor(shipped):
    """The issue's Lorenz cases: a 50-step gap in every channel 250-300 steps before the end (the forecast used
    to jump and settle at x = -47 on an attractor with |x| < 20), y's last 50 steps missing (x used to rise in
    a straight line), every channel's last 100 steps missing (a flat line, without a word). Each forecast now
    stays within the context's range widened by its span, beats forecasting the mean, and the missing end
    warns."""
    from tests.forecasters.test_tensor_nvar import lorenz_trajectory

    traj = lorenz_trajectory()
    context, truth = traj[:512], traj[512:640]
    scale = context.std(axis=0)
    mean_error = (np.abs(context.mean(axis=0) - truth) / scale).mean()
    lo, hi = context.min(axis=0), context.max(axis=0)
    cases = {
        "gap": (slice(212, 262), slice(None)),
        "y_end": (slice(462, 512), [1]),
        "end": (slice(412, 512), slice(None)),
    }
    for name, where in cases.items():
        gappy = context.copy()
        gappy[where] = np.nan
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            forecast = shipped.predict(gappy, 128)
        assert ((forecast >= lo - (hi - lo)) & (forecast <= hi + (hi - lo))).all(), name
        assert (np.abs(forecast - truth) / scale).mean() < 0.2 * mean_error, name
        assert any(issubclass(w.category, MissingDataWarning) for w in caught) == (name != "gap"), name
