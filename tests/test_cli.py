import logging
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
def test_demo_forecasts_a_held_out_system_and_writes_a_plot(tmp_path, caplog, monkeypatch):
    """Outside the repository, with the default checkpoint: the shipped one, by its registered name."""
    import logging

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="panda_fm"):
        rc = main(["demo", "--out", "d", "--horizon", "100"])
    assert rc == 0
    assert "panda_fm" in caplog.text and "analogue" in caplog.text and "sMAPE" in caplog.text
    assert (tmp_path / "d" / "forecast_Rossler.png").stat().st_size > 10_000


# --- errors: one line on stderr, no traceback unless --debug ---------------------------------------------


def _forecast_args(tmp_path: Path, checkpoint: str) -> list[str]:
    np.save(tmp_path / "x.npy", np.sin(np.arange(600) * 0.1)[:, None])
    return [
        "forecast",
        "--checkpoint",
        checkpoint,
        "--input",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "y.npy"),
    ]


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """huggingface_hub offline, with an empty cache: a hub id fails at once, without the network."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("checkpoint", ["wrong/path", "wrong/path/x", "./wrong"])
def test_a_wrong_checkpoint_is_one_line_without_traceback(tmp_path, capsys, offline_hub, checkpoint):
    rc = main(_forecast_args(tmp_path, checkpoint))
    line = _one_line(capsys.readouterr().err)
    assert rc != 0 and line.startswith("panda-fm forecast: error: ") and repr(checkpoint) in line
    assert rc == (1 if checkpoint == "wrong/path" else 2)  # a hub id that cannot be fetched; a missing path
    assert not (tmp_path / "y.npy").exists()


def test_debug_shows_the_traceback_before_the_line(tmp_path, capsys):
    for argv in (
        ["--debug", *_forecast_args(tmp_path, "./wrong")],
        [*_forecast_args(tmp_path, "./wrong"), "--debug"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and "FileNotFoundError" in err
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith("panda-fm forecast: error: checkpoint directory './wrong'")
        )


def test_unexpected_errors_and_interrupts_are_one_line(tmp_path, capsys, monkeypatch):
    import panda_fm.data.io

    def broken(*args, **kwargs):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(panda_fm.data.io, "read_series_with_time", broken)
    assert main(_forecast_args(tmp_path, str(TINY_CHECKPOINT))) == 1
    line = _one_line(capsys.readouterr().err)
    assert "RuntimeError: something broke over two lines" in line and "--debug" in line

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(panda_fm.data.io, "read_series_with_time", interrupted)
    assert main(_forecast_args(tmp_path, str(TINY_CHECKPOINT))) == 130
    assert _one_line(capsys.readouterr().err) == "panda-fm forecast: error: interrupted"


def test_demo_checks_its_checkpoint_before_integrating(tmp_path, capsys, monkeypatch):
    import panda_fm.eval.demo

    def no_integration(*args, **kwargs):
        raise AssertionError("the demo integrated before checking its checkpoint")

    monkeypatch.setattr(panda_fm.eval.demo, "founders_testset", no_integration)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--checkpoint", "checkpoints/panda-fm-small", "--out", "d"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'checkpoints/panda-fm-small'" in line and "registered name: 'panda-fm-small'" in line
    assert not (tmp_path / "d").exists()
    from panda_fm.cli import build_parser

    assert build_parser().parse_args(["demo"]).checkpoint == "panda-fm-small"


@pytest.mark.slow
def test_console_entry_point_reports_a_wrong_checkpoint_in_one_line(tmp_path):
    from tests.conftest import cli, cli_env

    env = cli_env() | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    out = subprocess.run(
        cli(*_forecast_args(tmp_path, "wrong/path")), capture_output=True, text=True, env=env, cwd=tmp_path
    )
    line = _one_line(out.stderr)
    assert out.returncode == 1 and "'wrong/path'" in line and "offline mode is on" in line


# --- files: header-less and semicolon CSVs, output folders made before any work -----------------------------


def _forecast(src: Path, out: Path, *extra: str) -> int:
    return main(
        ["forecast", "--checkpoint", str(TINY_CHECKPOINT), "--input", str(src), "--out", str(out), *extra]
    )


def test_forecast_of_a_headerless_csv_keeps_its_first_row_and_makes_output_folders(tmp_path):
    x = np.stack([np.sin(np.arange(600) * 0.1), np.cos(np.arange(600) * 0.13)], -1)
    np.savetxt(tmp_path / "in.csv", x, delimiter=",")
    out, plot = tmp_path / "new" / "deeper" / "f.csv", tmp_path / "figures" / "f.png"
    assert _forecast(tmp_path / "in.csv", out, "--horizon", "20", "--plot", str(plot)) == 0
    forecast, columns = read_series(out)
    assert columns == ["x0", "x1"] and forecast.shape == (20, 2)
    expected = PandaPipeline.from_pretrained(TINY_CHECKPOINT).predict(x, 20)  # all 600 rows, the first too
    np.testing.assert_allclose(forecast, expected, rtol=1e-6)
    assert plot.stat().st_size > 10_000
    assert sorted(p.name for p in plot.parent.iterdir()) == ["f.png"]  # no temporary file left


def test_forecast_of_a_semicolon_csv_with_decimal_commas(tmp_path):
    x = np.stack([np.sin(np.arange(600) * 0.1), np.cos(np.arange(600) * 0.13)], -1)
    rows = ["zeit;a;b"] + [f"{i};{u:.6f};{v:.6f}".replace(".", ",") for i, (u, v) in enumerate(x)]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    assert _forecast(tmp_path / "in.csv", tmp_path / "f.csv", "--horizon", "10") == 0
    forecast, columns = read_series(tmp_path / "f.csv")
    assert columns == ["zeit", "a", "b"] and forecast.shape == (10, 3)


def test_forecast_continues_the_time_column_and_logs_an_uneven_one(tmp_path, caplog):
    x = np.stack([np.sin(np.arange(600) * 0.1), np.cos(np.arange(600) * 0.13)], -1)
    rows = ["date,a,b"] + [f"2026-03-01T{i // 60:02d}:{i % 60:02d},{u},{v}" for i, (u, v) in enumerate(x)]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    assert _forecast(tmp_path / "in.csv", tmp_path / "f.csv", "--horizon", "3") == 0
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert lines[0] == "date,a,b" and [line.split(",")[0] for line in lines[1:]] == [
        "2026-03-01T10:00",
        "2026-03-01T10:01",
        "2026-03-01T10:02",
    ]
    forecast, columns = read_series(tmp_path / "f.csv")  # the time column is not read as a channel
    assert columns == ["a", "b"] and forecast.shape == (3, 2)
    del rows[100:110]  # ten minutes missing: read as equally spaced rows, which the log says in one line
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="panda_fm"):
        assert _forecast(tmp_path / "in.csv", tmp_path / "q.csv", "--horizon", "2", "--quantiles", "0.5") == 0
    assert any("'date' is not evenly spaced" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "q.csv").read_text().splitlines()[0] == "date,a_q0.5,b_q0.5"


def test_a_bad_output_path_fails_before_any_work(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "x.npy", np.sin(np.arange(600) * 0.1))

    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the outputs were checked")

    monkeypatch.setattr(PandaPipeline, "from_pretrained", no_work)
    assert _forecast(tmp_path / "x.npy", tmp_path / "f.npy", "--plot", str(tmp_path / "f.txt")) == 2
    assert "--plot" in capsys.readouterr().err and not (tmp_path / "f.npy").exists()
    assert _forecast(tmp_path / "x.npy", tmp_path / "f.json") == 2
    assert "unsupported file type '.json'" in capsys.readouterr().err


# --- version, python -m panda_fm, defaults in --help --------------------------------------------------------


def test_version(capsys):
    from importlib.metadata import version

    import panda_fm

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() in (
        f"panda-fm {version('panda-fm')}",
        f"panda-fm {panda_fm.__version__}",
    )


def test_every_help_shows_the_defaults():
    import argparse

    from panda_fm.cli import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices
    helps = {name: " ".join(p.format_help().split()) for name, p in subcommands.items()}
    assert "(default: 256)" in helps["demo"] and "(default: cpu)" in helps["forecast"]
    assert "(default: 0/1)" in helps["generate"] and "(default: 128 256 512)" in helps["evaluate"]
    assert "(default: None)" not in str(helps) and "(default: False)" not in str(helps)
    for name, parser in subcommands.items():  # every option with a value and a default says it
        formatter = parser._get_formatter()
        for action in parser._actions:
            if (
                action.option_strings
                and action.nargs != 0
                and action.default not in (None, [], argparse.SUPPRESS)
            ):
                assert "default" in formatter._get_help_string(action), (name, action.option_strings)


@pytest.mark.slow
def test_python_dash_m_panda_fm(tmp_path):
    from tests.conftest import cli_env

    out = subprocess.run(
        [sys.executable, "-m", "panda_fm", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0 and "usage: panda-fm" in out.stdout and "forecast" in out.stdout
    version = subprocess.run(
        [sys.executable, "-m", "panda_fm", "--version"],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
    )
    assert version.returncode == 0 and version.stdout.startswith("panda-fm ")


def test_evaluate_help_names_every_baseline(capsys):
    from panda_fm.eval.baselines import BASELINES

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = text.split("or names (")[1].split(")")[0].split()
    assert listed == list(BASELINES)
