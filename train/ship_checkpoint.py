"""Copy a trained run's export into checkpoints/ with its measured results in the model card.

    python train/ship_checkpoint.py --run runs/small-cpu/checkpoint --name panda-fm-small \
        --report reports/founders/report.md --report reports/evolved/report.md \
        --stress benchmarks/results/stress/stress.md \
        --command "panda-fm generate ...; panda-fm pretrain ..." --out checkpoints/panda-fm-small

Each ``--report`` is a ``report.md`` written by ``panda-fm evaluate``; its header line, command and
summary table (sMAPE/MAE/VPT) go into the card's "Measured results" (the table's checkpoint row is renamed to
``--name``). ``--stress`` adds the summary table of a stress-suite report (``benchmarks/stress.py``: median
sMAPE@128 per set and method, with bootstrap intervals). The run's own record (data, steps, wall time,
hardware) stays in the card's "Training".

Each ``--rename OLD=NEW`` replaces a machine's own path in every text of the card and training_info.json (for
example ``--rename /work/data/evo700=data/evo700``), so that the card's commands read as a user would type them.
Shipping a checkpoint again with only ``--rename`` keeps its results and command and rewrites the card; the
weights are written unchanged.

    python train/ship_checkpoint.py --run checkpoints/panda-fm-small --name panda-fm-small \
        --rename /work/data/evo700=data/evo700 --out checkpoints/panda-fm-small
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from panda_fm import PandaPipeline


def report_section(path: Path, run_name: str, name: str) -> str:
    """The parts of an evaluate report.md that a model card needs, with the checkpoint named ``name``."""
    lines = path.read_text().splitlines()
    keep = [line for line in lines if line.startswith("Command:") or line[:1].isdigit()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    keep += ["", *lines[start:end]]  # the summary table only, not the per-system one after it
    return "\n".join(line.replace(f"| {run_name} |", f"| {name} |") for line in keep)


def stress_section(path: Path) -> str:
    """The command and summary table of a stress-suite ``stress.md``."""
    lines = path.read_text().splitlines()
    command = next(line for line in lines if line.startswith("`python"))
    start = next(i for i, line in enumerate(lines) if line.startswith("## Summary"))
    table = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(table, len(lines)) if not lines[i].startswith("|")), len(lines))
    title = lines[start].removeprefix("## Summary: ")
    return "\n".join(
        [f"Stress suite (held-out data unlike the training data), {title}:", command, "", *lines[table:end]]
    )


def renamed(value: Any, renames: list[tuple[str, str]]) -> Any:
    """``value`` (nested dicts, lists and strings) with each ``old`` replaced by ``new`` in every string."""
    if isinstance(value, str):
        for old, new in renames:
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: renamed(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, renames) for v in value]
    return value


def rename_pair(text: str) -> tuple[str, str]:
    """``OLD=NEW`` -> ``(OLD, NEW)``."""
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError(
            f"--rename wants OLD=NEW (a path and what to write instead), not {text!r}"
        )
    return old, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's exported checkpoint directory")
    parser.add_argument("--name", required=True, help="the checkpoint's name in the card and the tables")
    parser.add_argument("--report", type=Path, action="append", default=[], help="evaluate report.md")
    parser.add_argument("--stress", type=Path, default=None, help="a stress-suite stress.md")
    parser.add_argument(
        "--command", default=None, help="the commands that made the data and the run (default: the run's own)"
    )
    parser.add_argument(
        "--rename",
        type=rename_pair,
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="write NEW for the path OLD everywhere in the card (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for report in [*args.report, *([args.stress] if args.stress else [])]:
        if not report.is_file():
            parser.error(f"--report {report} does not exist; run `panda-fm evaluate ... --out DIR` first")
    pipe = PandaPipeline.from_pretrained(args.run)
    pipe.info["name"] = args.name
    training = pipe.info.setdefault("training", {})
    if args.command is not None:
        training["command"] = args.command
    elif "command" not in training:
        parser.error(f"{args.run} records no command; give --command with the commands that made it")
    sections = [report_section(r, args.run.name, args.name) for r in args.report]
    if args.stress:
        sections.append(stress_section(args.stress))
    if sections or "results" not in pipe.info:  # re-shipped without reports: the results it has
        pipe.info["results"] = "\n\n".join(sections) if sections else None
    pipe.info = renamed(pipe.info, args.rename)
    pipe.save_pretrained(args.out)
    print(f"wrote {args.out} ({sum(f.stat().st_size for f in args.out.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
