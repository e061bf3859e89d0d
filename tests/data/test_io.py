"""Series files read as people write them (header or not, any common delimiter), and outputs written whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from panda_fm.data.io import (
    atomic_path,
    continue_times,
    prepare_output,
    read_series,
    read_series_with_time,
    write_series,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_csv_without_header_keeps_its_first_row(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    data, columns = read_series(tmp_path / "x.csv")
    assert columns is None and data.shape == (50, 3)
    np.testing.assert_allclose(data, x)
    data, _ = read_series(_write(tmp_path / "gap.csv", "1.0,,3\n2,3,4\n"))  # a missing first value: data
    np.testing.assert_array_equal(data, [[1.0, np.nan, 3.0], [2.0, 3.0, 4.0]])


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("x;y\n1.5;2.5\n3.5;\n", ["x", "y"]),  # semicolon
        ("x;y\n1,5;2,5\n3,5;\n", ["x", "y"]),  # semicolon with decimal commas
        ("x\ty\n1.5\t2.5\n3.5\t\n", ["x", "y"]),  # tab
        ("# x y\n1.5  2.5\n3.5 nan\n", None),  # whitespace (np.savetxt), its header a comment
        ("time,x,y\n0,1.5,2.5\n1,3.5,NA\n", ["x", "y"]),  # time column dropped, NA missing
        (",x,y\n0,1.5,2.5\n1,3.5,\n", ["x", "y"]),  # pandas' unnamed index column dropped
        ("0,1\n1.5,2.5\n3.5,null\n", ["0", "1"]),  # pandas' numbered columns are a header
        ("\ufeffx,y\n1.5,2.5\n3.5,\n", ["x", "y"]),  # a byte-order mark (Excel)
    ],
)
def test_delimiters_headers_and_missing_values_are_recognised(tmp_path: Path, text: str, columns) -> None:
    data, names = read_series(_write(tmp_path / "s.csv", text))
    assert names == columns
    np.testing.assert_array_equal(data, [[1.5, 2.5], [3.5, np.nan]])


def test_a_single_column_and_other_suffixes(tmp_path: Path) -> None:
    data, names = read_series(_write(tmp_path / "one.txt", "1\n2\n\n3\n"))
    assert names is None and data[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert read_series(_write(tmp_path / "s.tsv", "a\tb\n1\t2\n"))[1] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2\n3,4,5\n6\n", r"could not tell how .* separates its columns.*comma \(','\).*\[1, 2, 3\] cells"),
        (
            "x,y\n" + "1,2\n" * 60 + "1,2,3\n",
            r"line 62 has 3 cells, the header has 2 \(read as comma-separated\)",
        ),
        ("x,y\n1,2\n3,4;5\n", r"'4;5' is not a number \(read as comma-separated.*semicolon-separated\?\)"),
        ("x,y\n1,2\n3,abc\n", r"line 3, column 'y': 'abc' is not a number"),
        ("1,2\n3,abc\n", r"line 2, column 2: 'abc' is not a number"),
        ("x,y\n", "header row but no data rows"),
        ("\n\n", "is empty"),
    ],
)
def test_unreadable_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_series(_write(tmp_path / "bad.csv", text))


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "f.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    write_series(target, np.ones((3, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="write a batch of forecasts to .npy"):
        write_series(target, np.zeros((2, 3, 2)))
    assert read_series(target)[0].tolist() == [[1.0, 1.0]] * 3  # the earlier file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


def test_outputs_are_checked_and_their_folders_made_before_any_work(tmp_path: Path) -> None:
    out = prepare_output(tmp_path / "a" / "b" / "f.npy", (".npy", ".csv"), "--out")
    assert out.parent.is_dir() and not out.exists()
    with pytest.raises(
        ValueError, match=r"--plot .*f.txt: unsupported file type '.txt'; end the name with .png"
    ):
        prepare_output(tmp_path / "f.txt", (".png", ".pdf"), "--plot")
    (tmp_path / "a.npy").mkdir()
    with pytest.raises(ValueError, match="is a directory; give a file name"):
        prepare_output(tmp_path / "a.npy", (".npy",))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot create its folder"):
        prepare_output(tmp_path / "file" / "f.npy", (".npy",))


def test_a_time_column_is_read_apart_and_continued_as_written() -> None:
    assert continue_times(["0.00", "0.01", "0.02", "0.030000000000000002"], 3) == ["0.04", "0.05", "0.06"]
    assert continue_times(["10", "20", "30"], 2) == ["40", "50"]
    assert continue_times(["1e-3", "2e-3"], 1) == ["0.003"]
    assert continue_times(["2026-01-01 23:58:00", "2026-01-01 23:59:00"], 2) == [
        "2026-01-02 00:00:00",
        "2026-01-02 00:01:00",
    ]
    assert continue_times(["2026-02-27", "2026-02-28"], 2) == ["2026-03-01", "2026-03-02"]
    assert continue_times(["2026-01-01T00:00:00.5", "2026-01-01T00:00:01.0"], 1) == [
        "2026-01-01T00:00:01.500"
    ]
    # not times: labels, a time zone (numpy would drop it), times that do not increase, a single row
    for cells in (["a", "b"], ["2026-01-01T00:00Z", "2026-01-01T01:00Z"], ["3", "2"], ["1"]):
        assert continue_times(cells, 2) is None
    with pytest.warns(UserWarning, match="not evenly spaced .steps from 1 to 2.*median step"):
        assert continue_times(["0", "1", "3", "4"], 1) == ["5"]


def test_a_csv_keeps_its_time_column_apart_and_writes_it_back(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "time,x,y\n0.5,1,2\n1.0,3,4\n")
    data, columns, time = read_series_with_time(path)
    assert columns == ["x", "y"] and time == ("time", ["0.5", "1.0"])
    np.testing.assert_array_equal(data, [[1.0, 2.0], [3.0, 4.0]])
    write_series(tmp_path / "f.csv", np.array([[5.0, 6.0]]), columns, ("time", ["1.5"]))
    assert (tmp_path / "f.csv").read_text().splitlines() == ["time,x,y", "1.5,5.0,6.0"]
    assert read_series_with_time(_write(tmp_path / "n.csv", "x,y\n1,2\n"))[2] is None


def test_time_columns_are_known_by_name_with_a_unit_and_suspected_by_their_steps(tmp_path: Path) -> None:
    for name in ("time (s)", "t_ms", "Date_UTC", "timestamp[ms]"):
        path = _write(tmp_path / "u.csv", f"{name},x\n0,1\n1,2\n2,4\n")
        data, columns, time = read_series_with_time(path)
        assert columns == ["x"] and time is not None and time[0] == name
    for name in ("temp", "tx"):  # a channel whose name only starts like one
        assert read_series(_write(tmp_path / "c.csv", f"{name},x\n0,1\n1,2\n"))[1] == [name, "x"]
    with pytest.warns(UserWarning, match="'seconds', increases in even steps like a time axis"):
        data, columns = read_series(_write(tmp_path / "s.csv", "seconds,x\n0,1\n1,2\n2,4\n3,8\n"))
    assert columns == ["seconds", "x"]  # still a channel: the warning says how to mark it
    with pytest.raises(ValueError, match="it reads as a date: name its column time"):
        read_series(_write(tmp_path / "d.csv", "when,x\n2026-01-01,1\n2026-01-02,2\n"))
