"""Reading and writing user series: .npy arrays and CSV files with a column per channel."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TIME_COLUMNS = ("time", "t", "date", "datetime", "timestamp")


def read_series(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """A series from ``.npy`` (any shape) or ``.csv`` (header row, a column per channel).

    A CSV column named like a time axis (time, t, date, timestamp) is ignored; empty cells become NaN
    (missing values); any other non-numeric cell is an error naming its row and column.

    Returns:
        The array (``(T, C)`` for CSV) and the channel names (None for ``.npy``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if path.suffix != ".csv":
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .npy")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValueError(f"{path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    keep = [i for i, h in enumerate(header) if h.lower() not in TIME_COLUMNS]
    if not keep:
        raise ValueError(f"{path} has no data columns besides a time column")
    data = np.empty((len(rows) - 1, len(keep)), dtype=np.float64)
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path} line {r} has {len(row)} cells, the header has {len(header)}")
        for j, i in enumerate(keep):
            cell = row[i].strip()
            try:
                data[r - 2, j] = float(cell) if cell else np.nan
            except ValueError:
                raise ValueError(
                    f"{path} line {r}, column {header[i]!r}: {cell!r} is not a number; "
                    "remove non-numeric columns or leave missing cells empty"
                ) from None
    return data, [header[i] for i in keep]


def write_series(path: str | Path, values: np.ndarray, columns: list[str] | None = None) -> None:
    """Write ``.npy`` (any shape) or ``.csv`` (``(H, C)`` or ``(H,)``, with a header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".npy":
        with open(tmp, "wb") as fh:
            np.save(fh, values)
    elif path.suffix == ".csv":
        if values.ndim > 2:
            raise ValueError("a CSV holds one series (H, C); write a batch of forecasts to .npy")
        values = values.reshape(len(values), -1)
        names = columns or [f"x{i}" for i in range(values.shape[1])]
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            writer.writerows(values.tolist())
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .npy")
    tmp.replace(path)
