"""The closing summary of a generation run: acceptance per operator and per failed test, timings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from panda_fm.systems.integrate import DROP_REASONS
from panda_fm.systems.selection import TESTS

OPERATORS = ("mutate", "skew")


@dataclass
class Summary:
    """Counters of a run (candidates, failures, timings), reported at its end."""

    candidates: Counter = field(default_factory=Counter)  # per operator
    accepted: Counter = field(default_factory=Counter)  # per operator
    # operator -> first failed test, integration drop reason, "duplicate", or "surplus" (passed but
    # not needed: the target was reached)
    failures: dict[str, Counter] = field(default_factory=dict)
    per_generation: dict[int, int] = field(default_factory=dict)
    dims: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    integrate_s: float = 0.0  # summed over workers
    tests_s: float = 0.0  # summed over workers
    io_s: float = 0.0
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": dict(self.candidates),
            "accepted": dict(self.accepted),
            "failures": {op: dict(c) for op, c in self.failures.items()},
            "per_generation": {str(k): v for k, v in self.per_generation.items()},
            "dims": {str(k): v for k, v in sorted(self.dims.items())},
            "splits": dict(self.splits),
            "integrate_s": self.integrate_s,
            "tests_s": self.tests_s,
            "io_s": self.io_s,
            "wall_s": self.wall_s,
        }

    def format(self) -> str:
        """Human-readable closing summary."""
        lines = ["generation summary (this session)"]
        ops = [op for op in OPERATORS if self.candidates[op]]
        tried = {op: self.candidates[op] - self.failures.get(op, Counter())["surplus"] for op in ops}
        lines.append("  " + " " * 22 + "".join(f"{op:>16s}" for op in ops))
        lines.append("  " + f"{'candidates':22s}" + "".join(f"{tried[op]:16d}" for op in ops))
        lines.append(
            "  "
            + f"{'accepted':22s}"
            + "".join(
                f"{self.accepted[op]:8d} ({100 * self.accepted[op] / max(tried[op], 1):4.1f}%)" for op in ops
            )
        )
        lines.append("  rejected by (first failure):")
        for name in (*DROP_REASONS, "integration", *TESTS, "duplicate"):
            counts = [self.failures.get(op, Counter())[name] for op in ops]
            if any(counts):
                cells = [
                    f"{c:8d} ({100 * c / max(tried[op], 1):4.1f}%)" for c, op in zip(counts, ops, strict=True)
                ]
                lines.append(f"    {name:20s}" + "".join(cells))
        lines.append(
            "  systems per generation: "
            + ", ".join(f"{g}:{n}" for g, n in sorted(self.per_generation.items()))
        )
        lines.append(
            "  dimension histogram: " + ", ".join(f"D={d}:{n}" for d, n in sorted(self.dims.items()))
        )
        lines.append("  splits: " + ", ".join(f"{s}:{n}" for s, n in sorted(self.splits.items())))
        lines.append(
            f"  time: wall {self.wall_s:.1f}s; in workers (wall, summed over workers): integration "
            f"{self.integrate_s:.1f}s, tests {self.tests_s:.1f}s; I/O {self.io_s:.1f}s"
        )
        return "\n".join(lines)
