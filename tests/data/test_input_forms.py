"""Inputs read as people write them: lists of numbers or rows, pandas objects, batches, and the transposed mistake."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from panda_fm.data.frames import FrameTemplate, is_pandas
from panda_fm.data.series import load_series
from panda_fm.data.validation import as_series, as_series_list

pd = pytest.importorskip("pandas")


def test_a_plain_list_of_numbers_is_one_series_of_one_channel() -> None:
    values = np.sin(np.arange(3000) * 0.1).tolist()
    series, form = as_series_list(values)
    assert len(series) == 1 and series[0].shape == (3000, 1)
    assert not form.batched and form.univariate and form.dtype == np.float64
    np.testing.assert_allclose(series[0][:, 0], values, rtol=1e-6)


def test_rows_of_numbers_are_one_series() -> None:
    rows = [[float(t), 2.0 * t, -t] for t in range(200)]
    series, form = as_series_list(rows)
    assert len(series) == 1 and series[0].shape == (200, 3) and not form.batched and not form.univariate
    arrays = [np.array(r) for r in rows]  # states collected in a simulation loop read the same way
    np.testing.assert_array_equal(as_series_list(arrays)[0][0], series[0])


def test_lists_of_series_are_batches_of_any_lengths() -> None:
    series, form = as_series_list([np.ones((90, 2)), np.ones((512, 2))])
    assert [s.shape for s in series] == [(90, 2), (512, 2)] and form.batched
    series, form = as_series_list([np.arange(100.0), np.arange(120.0)])  # one-channel series
    assert [s.shape for s in series] == [(100, 1), (120, 1)] and form.batched
    series, form = as_series_list([np.arange(100.0)])
    assert [s.shape for s in series] == [(100, 1)] and form.batched
    series, form = as_series_list(np.ones((4, 50, 3)))
    assert len(series) == 4 and form.batched


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([np.arange(100.0), np.arange(100.0)], r"np.asarray\(context\)\[:, :, None\] for a batch of 2"),
        ([np.arange(100.0), np.arange(100.0)], r"np.asarray\(context\).T for one series of 100 steps"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], r"rows of different lengths \[2, 3\].*NaN where a value is missing"),
        ([1.0, [1.0, 2.0]], r"mixes items of rank \[0, 1\].*np.stack"),
        ([np.ones((2, 50, 3))], r"list of rank-3 items"),
        ([], "empty list"),
    ],
)
def test_ambiguous_lists_say_how_to_pass_them(value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_series_list(value)


def test_a_ragged_nested_list_is_named() -> None:
    with pytest.raises(ValueError, match="rows differ in length"):
        as_series([[1.0, 2.0]] * 30 + [[1.0]], "x")


@pytest.mark.parametrize("shape", [(3, 3000), (50, 3000), (100, 401)])
def test_far_more_channels_than_steps_says_time_is_axis_0(shape: tuple[int, int]) -> None:
    with pytest.raises(
        ValueError, match=rf"has {shape[0]} steps of {shape[1]} channels.*time along axis 0.*x\.T"
    ):
        as_series(np.ones(shape), "context")
    with pytest.raises(ValueError, match=r"series 0 has .*x.transpose\(0, 2, 1\)"):
        as_series_list(np.ones((2, *shape)))
    assert as_series(np.ones((100, 400)), "context").shape == (100, 400)  # 4 channels a step: allowed


def test_dataframe_columns_are_channels_and_missing_values_stay_missing() -> None:
    df = pd.DataFrame(
        {"x": [1.0, np.nan, 3.0], "y": pd.array([1, None, 3], dtype="Int64"), "z": [4, 5, 6]},
        index=pd.RangeIndex(3),
    )
    assert is_pandas(df) and is_pandas(df["x"]) and not is_pandas(df.to_numpy())
    out = as_series(df, "df")
    assert out.shape == (3, 3) and np.isnan(out[1, :2]).all() and out[1, 2] == 5
    assert as_series(df["z"], "s").shape == (3, 1)
    series, form = as_series_list(df["x"])
    assert form.univariate and not form.batched and form.frames is not None


def test_non_numeric_columns_are_named() -> None:
    df = pd.DataFrame(
        {"time": pd.date_range("2024", periods=30, freq="D"), "x": np.ones(30), "s": ["a"] * 30}
    )
    with pytest.raises(
        ValueError,
        match=r"non-numeric column\(s\) 'time' \(datetime64.*'s' \(object, e\.g\. 'a'\).*set_index",
    ):
        as_series(df, "context")
    with pytest.raises(ValueError, match=r"has dtype 'flag' \(bool\)"):
        as_series(pd.Series([True] * 30, name="flag"), "context")


def test_object_columns_of_numbers_are_read_and_others_named() -> None:
    mixed = pd.Series([1, None, 2.5, np.float32(4), pd.NA, np.int64(6)], dtype=object)
    df = pd.DataFrame({"x": mixed, "y": np.arange(6.0)})
    out = as_series(df, "context")
    np.testing.assert_array_equal(out[:, 0], [1, np.nan, 2.5, 4, np.nan, 6])
    np.testing.assert_array_equal(out[:, 1], np.arange(6.0))
    text = pd.DataFrame({"x": pd.Series(["1.5", None, "2"] * 2, dtype=object), "y": np.arange(6.0)})
    with pytest.raises(ValueError, match=r"'x' \(object, e\.g\. '1\.5'\).*pd\.to_numeric"):
        as_series(text, "context")
    words = pd.Series([1.0, "n/a", 3.0] * 2, dtype=object, name="w")
    with pytest.raises(ValueError, match=r"has dtype 'w' \(object, e\.g\. 'n/a'\)") as info:
        as_series(words, "context")
    assert "to_numeric" not in str(info.value)
    flags = pd.Series([1.0, True, 3.0] * 2, dtype=object, name="f")  # a bool is not a number here
    with pytest.raises(ValueError, match=r"'f' \(object, e\.g\. True\)"):
        as_series(flags, "context")


def _forecast_index(index, h: int = 3):
    frame = FrameTemplate(pd.DataFrame({"x": np.zeros(len(index))}, index=index), "context")
    return frame.wrap(np.zeros((h, 1))).index


def test_a_forecast_index_continues_the_input_index() -> None:
    assert list(_forecast_index(pd.RangeIndex(10, 40, 2))) == [40, 42, 44]
    assert list(_forecast_index(pd.Index([3, 5, 7, 9]))) == [11, 13, 15]
    np.testing.assert_allclose(_forecast_index(pd.Index(np.arange(20) * 0.1)), [2.0, 2.1, 2.2])
    hourly = pd.date_range("2024-03-30 22:00", periods=20, freq="h", tz="Europe/Berlin")
    assert list(_forecast_index(hourly)) == list(pd.date_range(hourly[-1], periods=4, freq="h")[1:])
    no_freq = pd.DatetimeIndex(list(pd.date_range("2024-01-31", periods=20, freq="ME")))  # freq inferred
    assert no_freq.freq is None and _forecast_index(no_freq)[0] == pd.Timestamp("2025-09-30")
    periods = pd.period_range("2024-01", periods=20, freq="M")
    assert _forecast_index(periods)[0] == pd.Period("2025-09", freq="M")
    assert list(_forecast_index(pd.Index([f"r{i}" for i in range(20)]))) == [20, 21, 22]  # positions


def test_an_irregular_datetime_index_warns_and_continues_with_the_median_step() -> None:
    index = pd.date_range("2024-01-01", periods=100, freq="min").delete(
        list(range(40, 50))
    )  # 10 rows skipped
    with pytest.warns(
        UserWarning, match=r"not evenly spaced.*median step 0 days 00:01:00.*resample\('min'\)"
    ):
        forecast_index = _forecast_index(index, 2)
    assert list(forecast_index) == [pd.Timestamp("2024-01-01 01:40"), pd.Timestamp("2024-01-01 01:41")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a regular index without freq does not warn
        _forecast_index(pd.DatetimeIndex(list(pd.date_range("2024", periods=50, freq="s"))))


@pytest.mark.parametrize(
    "index",
    [
        pd.date_range("2024", periods=30, freq="D")[::-1],
        pd.Index([1, 2, 2, 3] * 5),
        pd.Index([3.0, 1.0] * 10),
    ],
)
def test_an_index_that_does_not_increase_is_an_error(index) -> None:
    with pytest.raises(ValueError, match=r"not strictly increasing.*sort_index"):
        _forecast_index(index)


def test_torch_rows_and_pandas_lists_keep_their_form() -> None:
    _, form = as_series_list([torch.ones(3)] * 100)
    assert form.torch and not form.batched and form.dtype == torch.float32
    df = pd.DataFrame(np.ones((50, 2), np.float32), columns=["a", "b"])
    _, form = as_series_list([df, df.iloc[:30]])
    assert form.batched and form.frames is not None and form.dtype == np.float32
    out = form.wrap(np.zeros((2, 4, 2), np.float32))
    assert [list(o.index) for o in out] == [[50, 51, 52, 53], [30, 31, 32, 33]]
    assert all(list(o.columns) == ["a", "b"] for o in out)


def test_fine_tuning_reads_lists_and_dataframes_the_same_way() -> None:
    assert [r.shape for r in load_series(np.arange(300.0).tolist())] == [(300, 1)]
    df = pd.DataFrame({"x": np.arange(300.0), "y": np.ones(300)})
    assert [r.shape for r in load_series(df)] == [(300, 2)]
    assert [r.shape for r in load_series([df, df.iloc[:200]])] == [(300, 2), (200, 2)]
    with pytest.raises(ValueError, match="recording 1 has all-NaN"):
        load_series([df, df.assign(y=np.nan)])
