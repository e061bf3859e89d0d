"""Helpers shared by the benchmark scripts: paths, device synchronisation, call timing, the matmul rate.

The scripts import this module as ``_common``: run as ``python benchmarks/NAME.py``, their folder is the first
entry of ``sys.path``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "panda-fm-small"  # the shipped checkpoint


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA), so that a wall clock around it is honest."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], repeats: int, device: str | torch.device = "cpu") -> float:
    """The best wall time in seconds of ``repeats`` calls of ``fn``, after one warm-up call.

    Args:
        fn: the call to time.
        repeats: timed calls.
        device: where ``fn`` queues its work; CUDA is synchronised around every call.
    """
    fn()  # warm-up
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rate(
    n: int = 2048, repeats: int = 5, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """The best FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` on ``device``: the roofline a model's
    achieved FLOP/s is compared with."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / best_time(lambda: a @ b, repeats, device)


def output_folder(path: str | Path) -> Path | None:
    """Create the output folder ``path`` before any work, so that a bad ``--out`` fails at once; None (the
    error printed to stderr, naming the fix) when it cannot be created."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: cannot create --out {out} ({err.strerror}); choose another folder", file=sys.stderr)
        return None
    return out


def median_report(
    title: str,
    run: str,
    header: tuple[str, str],
    columns: Sequence[str],
    rows: Sequence[tuple[str, int, Sequence[float]]],
) -> list[str]:
    """A report's lines: ``# title``, the ``run`` (its command and wall time, already formatted), and a table with
    one row per ``(name, count, values)`` under the two ``header`` cells and ``columns``."""
    lines = [f"# {title}", "", run, "", f"| {header[0]} | {header[1]} | " + " | ".join(columns) + " |"]
    lines.append("|---|---|" + "---|" * len(columns))
    lines += [f"| {n} | {k} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for n, k, values in rows]
    return lines


def write_markdown(lines: list[str], out: str | Path | None) -> str:
    """Join a report's lines, print it, and write it to ``out`` too when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
    return text
