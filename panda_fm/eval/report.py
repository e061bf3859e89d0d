"""Writing and reading a benchmark report.

:func:`write_report` splits a report into three files:

- ``report.md``: the tables, for people;
- ``summary.json``: everything but the per-window records and the per-system medians (settings, dataset,
  medians and quartiles of every metric per method and noise level, per-step sMAPE curves, wall times); a
  few tens of KB whatever the test set's size, small enough to keep under version control;
- ``windows.json``: ``per_system`` and ``per_window``, which grow with the number of windows (megabytes
  for a few hundred systems); the results committed under ``benchmarks/results/`` leave it out.

:func:`read_report` puts them back together.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "write_report",
    "read_report",
    "markdown_tables",
    "per_system_table",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "WINDOWS_NAME",
]

SUMMARY_NAME = "summary.json"
WINDOWS_NAME = "windows.json"
REPORT_NAME = "report.md"
#: Report keys that grow with the number of windows: written to :data:`WINDOWS_NAME`, not the summary.
DETAIL_KEYS = ("per_system", "per_window")


def _fmt(stats: dict[str, float], digits: int = 1) -> str:
    """``median [q25, q75]`` of one metric."""
    if not math.isfinite(stats["median"]):
        return "n/a"
    return f"{stats['median']:.{digits}f} [{stats['q25']:.{digits}f}, {stats['q75']:.{digits}f}]"


def markdown_tables(report: dict[str, Any]) -> str:
    """The report's tables as Markdown: one row per noise level and method.

    Columns: median sMAPE [IQR] and median MAE [IQR] at each horizon, median valid
    prediction time, and (when rollouts were scored) median attractor KL and spectral Hellinger
    distance, then the wall time per window.
    """
    cfg = report["config"]
    horizons = cfg["horizons"]
    has_rollout = "kl" in report["metrics"]
    head = [
        "noise",
        "method",
        *(f"sMAPE@{h}" for h in horizons),
        *(f"MAE@{h}" for h in horizons),
        "VPT (steps)",
    ]
    if has_rollout:
        head += [f"KL ({cfg['rollout']} steps)", "Hellinger"]
    head.append("s/window")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n_windows = report["dataset"]["windows"]
    for sigma, methods in report["summary"].items():
        for name, stats in methods.items():
            row = [f"{float(sigma):g}", name, *(_fmt(stats[f"smape@{h}"]) for h in horizons)]
            row += [*(_fmt(stats[f"mae@{h}"], 2) for h in horizons), _fmt(stats["vpt"], 0)]
            if has_rollout:
                row += [_fmt(stats["kl"], 2), _fmt(stats["hellinger"], 2)]
            row.append(f"{report['wall_time_s'][sigma][name] / n_windows:.3f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_system_table(report: dict[str, Any], metric: str | None = None) -> str:
    """Markdown table of one metric's median per system (rows) and method (columns), per noise level.

    Args:
        report: the report of :func:`panda_fm.eval.runner.evaluate`.
        metric: a key of the per-window metrics; default sMAPE at the first horizon.
    """
    metric = metric or f"smape@{report['config']['horizons'][0]}"
    methods = report["methods"]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for row in report["per_system"]:
        cells.setdefault((str(row["noise"]), row["system"]), {})[row["method"]] = row["metrics"][metric]
    head = ["noise", "system", *methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (sigma, system), values in cells.items():
        lines.append(
            "| " + " | ".join([f"{float(sigma):g}", system, *(f"{values[m]:.1f}" for m in methods)]) + " |"
        )
    return "\n".join(lines)


def json_default(obj: Any) -> Any:
    """``json.dumps``'s ``default`` for reports: numpy scalars, tuples and paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, Path)):
        return list(obj) if isinstance(obj, tuple) else str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def write_report(
    report: dict[str, Any], out_dir: str | Path, command: str | None = None, max_systems_listed: int = 40
) -> Path:
    """Write ``report.md``, ``summary.json`` and ``windows.json`` into ``out_dir`` (created if missing).

    Args:
        report: the report of :func:`panda_fm.eval.runner.evaluate`.
        out_dir: output directory.
        command: the command line that produced the report, quoted in the Markdown.
        max_systems_listed: add a per-system table when there are at most this many systems.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in report.items() if k not in DETAIL_KEYS}
    details = {k: report[k] for k in DETAIL_KEYS if k in report}
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=1, default=json_default, allow_nan=True))
    (out / WINDOWS_NAME).write_text(json.dumps(details, default=json_default, allow_nan=True))
    cfg, ds = report["config"], report["dataset"]
    text = [
        "# Zero-shot benchmark",
        "",
        f"{ds['systems']} systems, {ds['windows']} windows (split `{cfg['split']}` of `{ds['root']}`), "
        f"context {cfg['context_length']}, seed {cfg['seed']}. Cells: median [25th, 75th percentile] over "
        "windows; truth and forecast standardised by the clean context's per-channel mean and std; "
        "noise is a fraction of each context channel's std, truth clean. sMAPE on a 0-100 scale; "
        f"VPT: steps until the RMSE exceeds {cfg['vpt_threshold']} context stds."
        + (
            f" KL: KL(truth || forecast) between Gaussian-kernel (width {cfg['kl_bandwidth']}) occupation "
            f"densities of the {cfg['rollout']}-step rollouts; Hellinger: between their normalised Welch "
            "power spectra, averaged over channels."
            if cfg["rollout"]
            else ""
        ),
        "",
    ]
    if command:
        text += [f"Command: `{command}`", ""]
    text += [markdown_tables(report), ""]
    if report["dataset"]["systems"] <= max_systems_listed:
        metric = f"smape@{cfg['horizons'][0]}"
        text += [f"## Median {metric} per system", "", per_system_table(report, metric), ""]
    if any(v for levels in report["nonfinite"].values() for v in levels.values()):
        text += [f"Non-finite forecast values (scored as the context mean): {report['nonfinite']}", ""]
    if any(v for levels in report.get("refused", {}).values() for v in levels.values()):
        text += [f"Windows refused as too short (scored as the context mean): {report['refused']}", ""]
    text += [
        f"Aggregates: `{SUMMARY_NAME}`; every window's metrics and the per-system medians: `{WINDOWS_NAME}`.",
        "",
    ]
    path = out / REPORT_NAME
    path.write_text("\n".join(text))
    return path


def read_report(out_dir: str | Path, details: bool = True) -> dict[str, Any]:
    """The report that :func:`write_report` wrote into ``out_dir``.

    Args:
        out_dir: a directory written by :func:`write_report`.
        details: also read ``per_system`` and ``per_window`` from ``windows.json``.

    Returns:
        The report dict; without ``windows.json`` (e.g. in a checkout, where it is not committed), or with
        ``details=False``, it lacks ``per_system`` and ``per_window``.

    Raises:
        FileNotFoundError: ``out_dir`` holds no report.
    """
    out = Path(out_dir)
    if not (out / SUMMARY_NAME).exists():
        raise FileNotFoundError(f"{out} holds no {SUMMARY_NAME}; run `panda-fm evaluate --out {out}` first")
    report = json.loads((out / SUMMARY_NAME).read_text())
    if details and (out / WINDOWS_NAME).exists():
        report.update(json.loads((out / WINDOWS_NAME).read_text()))
    return report
