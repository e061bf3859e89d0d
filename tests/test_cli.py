import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from panda_fm import PandaPipeline
from panda_fm.cli import main
from panda_fm.data.io import read_series
from tests.conftest import TINY_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]


def _csv(path: Path, values: np.ndarray, header: str = "time,x,y") -> Path:
    rows = [header] + [f"{i * 0.1},{a},{b}" for i, (a, b) in enumerate(values)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_forecast_csv_to_csv_with_plot(tmp_path):
    x = np.stack([np.sin(np.arange(600) * 0.1), np.cos(np.arange(600) * 0.13)], -1)
    src = _csv(tmp_path / "in.csv", x)
    rc = main(
        [
            "forecast",
            "--checkpoint",
            str(TINY_CHECKPOINT),
            "--input",
            str(src),
            "--horizon",
            "90",
            "--out",
            str(tmp_path / "out.csv"),
            "--plot",
            str(tmp_path / "f.png"),
        ]
    )
    assert rc == 0
    forecast, columns = read_series(tmp_path / "out.csv")
    assert columns == ["x", "y"] and forecast.shape == (90, 2)
    expected = PandaPipeline.from_pretrained(TINY_CHECKPOINT).predict(x, 90)
    np.testing.assert_allclose(forecast, expected, rtol=1e-6)
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_csv_with_text_is_refused_with_its_position(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("time,x\n0,1.0\n1,abc\n")
    with pytest.raises(ValueError, match="line 3, column 'x': 'abc' is not a number"):
        read_series(src)


@pytest.mark.slow
def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    np.save(tmp_path / "x.npy", np.full((50, 2), np.nan))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "panda_fm.cli",
            "forecast",
            "--checkpoint",
            str(TINY_CHECKPOINT),
            "--input",
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2
    assert "all NaN" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.slow
def test_demo_forecasts_a_held_out_system_and_writes_a_plot(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="panda_fm"):
        rc = main(["demo", "--checkpoint", str(TINY_CHECKPOINT), "--out", str(tmp_path), "--horizon", "100"])
    assert rc == 0
    assert "panda_fm" in caplog.text and "analogue" in caplog.text and "sMAPE" in caplog.text
    assert (tmp_path / "forecast_Rossler.png").stat().st_size > 10_000
