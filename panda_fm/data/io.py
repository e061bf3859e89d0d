"""Reading and writing user series: .npy arrays and delimited text files (.csv, .tsv, .txt) with a column per
channel; output paths checked before any work, and files written whole or not at all.

Text files are read as people write them:

- the delimiter is sniffed: comma, semicolon, tab or runs of whitespace, whichever splits the first rows into
  the same number of cells, the most of them numbers (with a semicolon, tab or whitespace, a decimal comma
  ``1,5`` reads as 1.5); when none fits, the error names the likeliest;
- a first row of numbers is data (a file without a header, whose channels have no names), unless it numbers
  the columns ``0, 1, ..., C-1`` as pandas does; any other first row is the header;
- a column named like a time axis (time, t, date, datetime or timestamp, alone or followed by a unit or a
  qualifier: ``time (s)``, ``t_ms``, ``date_utc``), or an unnamed first column (the row index pandas writes), is
  not a channel; a first column of numbers that increase in even steps under another name is read as a channel,
  with a warning that says how to mark it as the time; a time column of numbers or ISO dates is continued into the
  forecast's file (:func:`continue_times`);
- empty cells, and NaN, NA, N/A, null and None, are missing values (NaN); any other non-numeric cell is an
  error naming its line and column;
- blank lines and lines starting with ``#`` (comments, such as ``np.savetxt``'s header) are skipped.

Shape letters: B batch, T time, C channels, H horizon.
"""

from __future__ import annotations

import csv
import math
import os
import re
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from panda_fm.data.frames import IRREGULAR_TOLERANCE

__all__ = [
    "TEXT_SUFFIXES",
    "TIME_COLUMNS",
    "TimeColumn",
    "atomic_path",
    "continue_times",
    "prepare_output",
    "read_series",
    "read_series_with_time",
    "write_series",
]


TIME_COLUMNS = ("time", "t", "date", "datetime", "timestamp")
_TIME_NAME = re.compile(rf"({'|'.join(TIME_COLUMNS)})([ _\-\[(].*)?", re.IGNORECASE)
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
MISSING = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "null", "none"})
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", " ": "whitespace"}
SNIFF_ROWS = 50  # rows the delimiter is chosen from
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")

#: a time column: its name and its cells as written
TimeColumn = tuple[str, list[str]]


def read_series(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """A series from ``.npy`` (any shape) or a delimited text file (a column per channel; see the module
    docstring for how delimiters, headers and missing values are read).

    Returns:
        The array (``(T, C)`` float64 for text) and the channel names (None for ``.npy`` and for text without
        a header).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unsupported suffix, an empty file, an unknown delimiter, rows of different lengths or
            non-numeric cells, each named with the fix.
    """
    data, names, _ = read_series_with_time(path)
    return data, names


def read_series_with_time(path: str | Path) -> tuple[np.ndarray, list[str] | None, TimeColumn | None]:
    """:func:`read_series`, and the file's time column (the first column named like one), if it has one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False), None, None
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv (or .tsv, .txt) or .npy")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:  # a legacy encoding: the numbers read the same
        text = path.read_text(encoding="latin-1")
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not _is_comment(line)
    ]
    if not lines:
        raise ValueError(f"{path} is empty; it needs a row per time step and a column per channel")
    delimiter = _sniff_delimiter(path, [line for _, line in lines])
    decimal_comma = delimiter != ","
    rows = [(number, _split(line, delimiter)) for number, line in lines]
    first = rows[0][1]
    has_header = not all(_number(c, decimal_comma) is not None for c in first) or _numbers_columns(first)
    header = [h.strip() for h in first] if has_header else [f"x{i}" for i in range(len(first))]
    data_rows = rows[1:] if has_header else rows
    if not data_rows:
        raise ValueError(f"{path} has a header row but no data rows")
    keep = list(range(len(header)))
    if has_header:
        keep = [i for i, h in enumerate(header) if not _is_time_name(h) and (i > 0 or h != "")]
    if not keep:
        raise ValueError(f"{path} has no data columns besides a time column")
    read_as = f"read as {DELIMITERS[delimiter]}-separated"
    data = np.empty((len(data_rows), len(keep)), dtype=np.float64)
    for r, (number, row) in enumerate(data_rows):
        if len(row) != len(header):
            first_row = "the header" if has_header else "the first row"
            raise ValueError(
                f"{path} line {number} has {len(row)} cells, {first_row} has {len(header)} ({read_as}); "
                "give every row a cell per column, empty where a value is missing"
            )
        for j, i in enumerate(keep):
            cell = row[i].strip()
            value = _number(cell, decimal_comma)
            if value is None:
                where = f"column {header[i]!r}" if has_header else f"column {i + 1}"
                raise ValueError(
                    f"{path} line {number}, {where}: {cell!r} is not a number{_delimiter_hint(cell, delimiter)}; "
                    "remove non-numeric columns or leave missing cells empty"
                    + (_date_hint(cell) if has_header else "")
                )
            data[r, j] = value
    names = [header[i] for i in keep] if has_header else None
    if has_header and keep[0] == 0 and _even_steps(data[:, 0]):
        warnings.warn(
            f"{path}: the first column, {header[0]!r}, increases in even steps like a time axis and is read as "
            "a channel; if it is the time, name it time (or t, date, datetime, timestamp, e.g. 'time (s)')",
            UserWarning,
            stacklevel=3,
        )
    times = [i for i, h in enumerate(header) if has_header and _is_time_name(h)]
    time = (header[times[0]], [row[times[0]].strip() for _, row in data_rows]) if times else None
    return data, names, time


def _is_time_name(name: str) -> bool:
    """A column name that marks the time axis: one of :data:`TIME_COLUMNS`, alone or with a unit or qualifier."""
    return _TIME_NAME.fullmatch(name.strip()) is not None


def _even_steps(values: np.ndarray) -> bool:
    """Whether a column increases in steps within 1% of their median (a time axis), over at least 3 rows."""
    steps = np.diff(values)
    if len(steps) < 2 or not np.isfinite(steps).all() or not (steps > 0).all():
        return False
    return not _uneven(steps, float(np.median(steps)))


def _uneven(steps: np.ndarray, step: float) -> bool:
    """Whether any of ``steps`` lies further than :data:`IRREGULAR_TOLERANCE` of ``step`` from it."""
    return bool((np.abs(steps - step) > IRREGULAR_TOLERANCE * step).any())


def _date_hint(cell: str) -> str:
    """A hint for a cell that reads as an ISO date or time: its column should be named as the time axis."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.datetime64(cell.strip())
    except ValueError:
        return ""
    return (
        "; it reads as a date: name its column time, date, datetime or timestamp to use it as the time axis"
    )


def continue_times(cells: Sequence[str], horizon: int, name: str = "time") -> list[str] | None:
    """The ``horizon`` times after a time column's ``cells``, at their median step, written as they are.

    Numbers (``0.25``, ``1700000000``) continue with as many decimals as most of the column's cells have; ISO
    dates and times (``2026-01-01``, ``2026-01-01 00:15:00``) with the same precision and separator. Times whose
    steps differ by more than 1% from the median (rows skipped, irregular sampling) give a warning, since the
    model reads rows as equally spaced.

    Returns:
        The times, or None when the cells are neither numbers nor ISO times without a time zone, are fewer
        than two or do not increase: the forecast is then written without a time column.
    """
    numbers = [_number(c, False) for c in cells]
    if all(v is not None and math.isfinite(v) for v in numbers):
        ticks: np.ndarray = np.asarray(numbers, dtype=np.float64)
        unit = ""
        if any("e" in c.lower() for c in cells):
            write = lambda v: repr(float(v))  # noqa: E731
        else:
            # the most common count: a float column written in full shows a few long rounding tails
            counts = [len(c.split(".")[1]) if "." in c else 0 for c in cells]
            decimals = max(set(counts), key=counts.count)
            write = lambda v: f"{v:.{decimals}f}"  # noqa: E731
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a time zone, which numpy would drop with a warning
                stamps = np.array(cells, dtype="datetime64")
        except (ValueError, Warning):
            return None
        unit = np.datetime_data(stamps.dtype)[0]
        separator = " " if " " in cells[-1] else "T"
        ticks = stamps.astype(np.int64)  # exact: whole units since the epoch
        write = lambda v: np.datetime_as_string(np.datetime64(int(v), unit)).replace("T", separator)  # noqa: E731
    steps = np.diff(ticks)
    if len(steps) == 0 or not (steps > 0).all():
        return None
    step = np.median(steps)
    step = int(round(step)) if unit else float(step)
    if _uneven(steps, step):
        warnings.warn(
            f"{name} is not evenly spaced (steps from {steps.min():.6g} to {steps.max():.6g}"
            f"{' ' + unit if unit else ''}); "
            f"the model reads rows as equally spaced, so the forecast's {name} continues with the median step. "
            "Put the series on a regular grid first, with empty cells where there is no value",
            UserWarning,
            stacklevel=2,
        )
    return [write(ticks[-1] + step * k) for k in range(1, horizon + 1)]


def _is_comment(line: str) -> bool:
    """A line starting with ``#`` (but not a first cell ``#N/A``, a missing value)."""
    text = line.lstrip()
    return text.startswith("#") and not text.lower().startswith("#n/a")


def _split(line: str, delimiter: str) -> list[str]:
    """The cells of one line (quotes respected for comma, semicolon and tab)."""
    if delimiter == " ":
        return line.split()
    return next(csv.reader([line], delimiter=delimiter))


def _number(cell: str, decimal_comma: bool) -> float | None:
    """The value of one cell: a float, NaN for a missing value, None when it is not a number."""
    cell = cell.strip()
    if cell.lower() in MISSING:
        return float("nan")
    try:
        return float(cell)
    except ValueError:
        pass
    if decimal_comma and _DECIMAL_COMMA.fullmatch(cell):
        return float(cell.replace(",", "."))
    return None


def _numbers_columns(cells: list[str]) -> bool:
    """Whether a first row numbers the columns 0, 1, ..., C-1 (pandas' names for unnamed columns)."""
    return len(cells) > 1 and [c.strip() for c in cells] == [str(i) for i in range(len(cells))]


def _sniff_delimiter(path: Path, lines: list[str]) -> str:
    """The delimiter that splits the first rows into equally many cells, the most of them numbers."""
    sample = lines[:SNIFF_ROWS]
    best: tuple[float, float, int] | None = None
    choice = None
    for rank, delimiter in enumerate(DELIMITERS):
        try:
            counts = [len(_split(line, delimiter)) for line in sample]
        except csv.Error:
            continue
        mode = max(set(counts), key=counts.count)
        agreement = counts.count(mode) / len(counts)
        if mode < 2 or agreement < 0.9:
            continue
        cells = [c for line in sample[1:] for c in _split(line, delimiter)]
        numeric = sum(_number(c, delimiter != ",") is not None for c in cells) / max(len(cells), 1)
        score = (numeric, agreement, -rank)
        if best is None or score > best:
            best, choice = score, delimiter
    if choice is not None:
        return choice
    if all(len(_split(line, d)) == 1 for line in sample for d in DELIMITERS):
        return ","  # one column
    counts = {d: lines[0].count(d) if d != " " else len(lines[0].split()) - 1 for d in DELIMITERS}
    likely = max(counts, key=counts.get)
    per_row = sorted({len(_split(line, likely)) for line in sample})
    raise ValueError(
        f"could not tell how {path} separates its columns (comma, semicolon, tab or whitespace): split at "
        f"the likeliest, {DELIMITERS[likely]} ({likely!r}), its first rows have {per_row} cells. Give every row "
        "the same number of cells, separated by one of those (empty cells for missing values)"
    )


def _delimiter_hint(cell: str, delimiter: str) -> str:
    """Why a cell may not be a number: it holds another delimiter (the file may be split at the wrong one)."""
    for other, name in DELIMITERS.items():
        if other != delimiter and other in cell.strip():
            return (
                f" (read as {DELIMITERS[delimiter]}-separated, but the cell holds a {name} {other!r}: is the "
                f"file {name}-separated?)"
            )
    return ""


def prepare_output(path: str | Path, suffixes: Sequence[str], what: str = "output") -> Path:
    """Check, before any work, that a file can be written at ``path``: its suffix, and its folder (created).

    Args:
        path: the file to be written.
        suffixes: the allowed suffixes, e.g. ``(".csv", ".npy")``.
        what: how errors call the file, e.g. ``"--out"``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: an unsupported suffix, a path that is a directory, or a folder that cannot be created or
            written, named with the fix.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{what} {path}: unsupported file type {path.suffix or '(none)'!r}; end the name with "
            f"{' or '.join(suffixes)}"
        )
    if path.is_dir():
        raise ValueError(
            f"{what} {path} is a directory; give a file name, e.g. {path / ('out' + suffixes[0])}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"{what} {path}: cannot create its folder {path.parent} ({err.strerror}); choose another path"
        ) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: its folder {path.parent} is not writable; choose another path")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to: renamed onto ``path`` when the block ends normally,
    removed when it raises, so that ``path`` is never left half written.

    The temporary name keeps ``path``'s suffix, for writers that choose a format by it (numpy, matplotlib).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_series(
    path: str | Path, values: np.ndarray, columns: list[str] | None = None, time: TimeColumn | None = None
) -> None:
    """Write ``.npy`` (any shape) or ``.csv`` (``(H, C)`` or ``(H,)``, with a header), atomically.

    Args:
        time: a CSV's first column, its name and a cell per row (``.npy`` files have none).

    Raises:
        ValueError: an unsupported suffix, or a batch ``(B, H, C)`` for a CSV.
    """
    path = Path(path)
    values = np.asarray(values)
    if path.suffix not in (".npy", ".csv"):
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .npy")
    if path.suffix == ".csv" and values.ndim > 2:
        raise ValueError("a CSV holds one series (H, C); write a batch of forecasts to .npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".npy":
            np.save(tmp, values)
        else:
            values = values.reshape(len(values), -1)
            names = columns or [f"x{i}" for i in range(values.shape[1])]
            rows = values.tolist()
            if time is not None:
                names, rows = [time[0], *names], [[t, *row] for t, row in zip(time[1], rows, strict=True)]
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(names)
                writer.writerows(rows)
