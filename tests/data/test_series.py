"""Windows cut from users' recordings, and the checks every recording passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panda_fm.data.series import load_series, longest_nan_run, split_series, usable_targets
from panda_fm.data.validation import GlitchWarning, as_series
from panda_fm.data.windows import WindowSpec
from panda_fm.scaling import OWN_MAP_BELOW, standardise_series


def test_windows_without_enough_observed_context_are_not_drawn() -> None:
    spec = WindowSpec(64, 16, 2)
    x = np.ones((200, 2), np.float32)
    x[:100, 0] = np.nan  # channel 0 unobserved for the first 100 steps
    t = usable_targets(x, 0, 184, spec, min_context=16, min_observed=16)
    assert t.min() == 116 and t.max() == 184  # 16 observed steps of channel 0 before the target


def test_longest_nan_run_counts_steps_with_any_missing_channel() -> None:
    x = np.ones((50, 2))
    x[10:14, 0] = np.nan
    x[13:20, 1] = np.nan
    assert longest_nan_run(x) == 10 and longest_nan_run(np.ones((5, 1))) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([-(2**63), 1], dtype=np.int64), r"beyond \+-1e\+15"),  # |x| computed without wrapping
        (np.array([1e300, np.nan]), r"beyond \+-1e\+15"),
        (np.array([1.0, np.inf]), "infinite values; replace them with NaN"),
        (torch.ones(5, dtype=torch.bool), "dtype torch.bool"),
        (np.ones((2, 3, 4)), r"time along axis 0, got shape \(2, 3, 4\)"),
        (np.zeros((4, 0)), "empty"),
        ([["a"]], "dtype <U1"),
    ],
)
def test_bad_series_are_named_errors(value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_series(value, "x")


def test_series_become_float64_time_by_channel_whatever_their_type() -> None:
    for value in (np.arange(6), torch.arange(6.0, dtype=torch.bfloat16), [0, 1, 2, 3, 4, 5]):
        out = as_series(value, "x")
        assert out.shape == (6, 1) and out.dtype == np.float64
        np.testing.assert_array_equal(out[:, 0], np.arange(6))
    assert np.isnan(as_series(np.array([np.nan, 1.0], dtype=np.float16), "x")[0, 0])  # NaN stays missing


def test_load_series_splits_a_batch_into_recordings_and_checks_each() -> None:
    recordings = load_series(np.ones((2, 100, 3)))
    assert [r.shape for r in recordings] == [(100, 3), (100, 3)]
    x = np.ones((100, 3))
    x[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"all-NaN channel\(s\) \[2\]"):
        load_series([np.ones((100, 3)), x])


def test_fine_tuning_windows_do_not_depend_on_the_units() -> None:
    # recordings are kept standardised in float64 before float32: a small variation on a large offset keeps its
    # digits, and small units are not flattened by the model's variance floor
    t = np.arange(2000) * 0.05
    x = np.stack([np.sin(t), np.cos(0.7 * t)], axis=1)
    windows = [
        split_series([x * scale + offset], 512, 64, 16).train.evenly_spaced(4)
        for scale, offset in ((1.0, 0.0), (1e-9, 0.0), (1.0, 1e6))
    ]
    for other in windows[1:]:
        for key in ("context", "target"):
            np.testing.assert_allclose(other[key], windows[0][key], atol=1e-5)
    assert float(windows[0]["target"].std()) > 0.5  # standardised, not flattened


def test_one_map_per_series_except_for_a_channel_it_would_flatten() -> None:
    # channels 0 and 1: means 0 and 2, stds 1 and 1 -> common mean 1, std sqrt(1 + 1) = sqrt(2)
    a = np.array([-1.0, 1.0, -1.0, 1.0])
    x = np.stack([a, 2 + a, 5 + 1e-3 * a], axis=1)[None]  # (1, 4, 3); channel 2 on an offset, std 1e-3
    z, loc, scale = standardise_series(x[..., :2])
    np.testing.assert_allclose(loc, [[[1.0, 1.0]]])
    np.testing.assert_allclose(scale, [[[np.sqrt(2), np.sqrt(2)]]])
    np.testing.assert_allclose(z[0, :, 1], (1 + a) / np.sqrt(2))
    # with channel 2 the common std is sqrt(1/3 + 1/3 + var(0, 2, 5)) = sqrt(2/3 + 38/9) = 2.21: channel 2's
    # std is 4.5e-4 of it, below OWN_MAP_BELOW, so it gets its own map; the others keep the common one
    z, loc, scale = standardise_series(x)
    common = np.sqrt(2 / 3 + np.var([0.0, 2.0, 5.0]) + 1e-6 / 3)
    assert 1e-3 / common < OWN_MAP_BELOW
    np.testing.assert_allclose(loc, [[[7 / 3, 7 / 3, 5.0]]])
    np.testing.assert_allclose(scale, [[[common, common, 1e-3]]])
    np.testing.assert_allclose(z[0, :, 2], a)
    np.testing.assert_allclose(z * scale + loc, x)  # the map goes back


def test_a_recording_channel_in_other_units_is_not_flattened() -> None:
    t = np.arange(2000) * 0.05
    x = np.stack([np.sin(t), np.cos(0.7 * t)], axis=1)
    windows = [
        split_series([x * scale + offset], 512, 64, 16).train.evenly_spaced(4)
        for scale, offset in ((np.ones(2), np.zeros(2)), (np.array([1.0, 1e-9]), np.array([3e7, 0.0])))
    ]
    assert np.nanstd(windows[1]["context"][..., 1].numpy()) > 0.5  # standardised on its own, not flattened
    # the windows are standardised again per channel by the loss: the same data as without the odd units
    for key in ("context", "target"):
        w0, w1 = (np.asarray(w[key], dtype=np.float64) for w in windows)
        same = [
            (w - np.nanmean(w, axis=1, keepdims=True)) / np.nanstd(w, axis=1, keepdims=True) for w in (w0, w1)
        ]
        np.testing.assert_allclose(same[1], same[0], atol=1e-4)


def test_a_recording_with_a_glitch_is_reported_before_fine_tuning() -> None:
    t = np.arange(3000) * 0.05
    x = np.stack([np.sin(t), np.cos(0.7 * t)], axis=1)
    x[2000, 0] = 50.0  # a recording glitch
    with pytest.warns(GlitchWarning, match=r"channel 0 at step 2000\).*set it to NaN"):
        load_series(x)
