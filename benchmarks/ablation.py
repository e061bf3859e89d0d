"""Controlled ablation of pretraining designs at CPU scale (issue #10).

Every variant trains the same base model (about 0.4-0.8M parameters, context 512, horizon 128) on the same
dataset with the same seed and the same budget of CPU time, through the real pretraining command
(``panda-fm pretrain --config train/configs/small-cpu.yaml``: two DDP processes of one thread each). The
budget is turned into optimizer steps per variant by timing a short calibration run of that variant, so a
slower design gets fewer steps. Then one ``panda-fm evaluate`` run scores every trained variant and every
classical baseline on the same windows of the 20 held-out founders, clean and with 5% observation noise,
at 128/256/512 steps, and ``results.md`` tabulates median sMAPE with training windows/s.

    PYTHONPATH=. python benchmarks/ablation.py --data DATASET [--cpu-minutes 60] [--quick]

``--quick`` trains for 8 CPU-minutes per variant. Finished variants are kept: rerunning the command
resumes where it stopped (delete ``--out`` to start over). ``--also DIR ...`` scores further checkpoints
(e.g. the shipped one) on the same windows.

``--suite stress`` scores the variants on the stress suite instead (:mod:`panda_fm.eval.stress`, 3 windows
per system): ``stress.md`` has the table of variants x sets, with the classical baselines and, for the models
with experts, ``prior``: the same experts chosen by the untrained backtest prior (what the network adds is a
variant's distance from it).

    PYTHONPATH=. python benchmarks/ablation.py --data DATASET --quick --suite stress \
        --variants experts-select-smape experts-select-smape-observed --out benchmarks/results/stress-ablation
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from panda_fm.eval.report import read_report

REPO = Path(__file__).resolve().parents[1]
CORES = 2  # small-cpu.yaml: 2 processes x 1 thread

# The base model shared by every variant: small enough to train thousands of steps in an hour here. The
# settings that variants change are pinned to the reference's here, whatever small-cpu.yaml says.
BASE = [
    "--model.d_model", "128", "--model.num_hidden_layers", "4", "--model.num_attention_heads", "4",
    "--model.ffn_dim", "256", "--model.num_poly_feats", "24", "--model.num_rff", "64",
    "--model.prediction_length", "128", "--model.use_dynamics_embedding", "true", "--model.incontext", "none",
    "--model.expert_combine", "select", "--trainer.loss", "mse", "--trainer.loss_horizon", "null",
    "--data.augment.rate", "0.2", "--data.augment.noise", "0",
]  # fmt: skip

MIX = ["--model.incontext", "experts", "--model.expert_combine", "mix", "--trainer.loss", "mae",
       "--data.augment.noise", "0.1"]  # fmt: skip
# name -> (what it tests, overrides of small-cpu.yaml on top of BASE)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "reference-linear": (
        "reference architecture, linear patch embedding, MSE",
        ["--model.use_dynamics_embedding", "false"],
    ),
    "reference-dynamics": ("reference architecture, dynamics embedding, MSE", []),
    "reference-noise-mae": (
        "reference architecture, MAE loss, context-noise augmentation",
        ["--trainer.loss", "mae", "--data.augment.noise", "0.1"],
    ),
    "analogue-corrector": (
        "in-context analogue attention (kernel regression over delay windows), corrected per patch, MAE",
        ["--model.incontext", "analogue", "--trainer.loss", "mae"],
    ),
    "experts-mix": (
        "hybrid: weighted mean of 5 classical in-context forecasts, MAE of the mean, noise augmentation",
        MIX,
    ),
    "experts-mix-no-channel-aug": (
        "as experts-mix without the channel augmentations (delay embedding, convex, affine)",
        [*MIX, "--data.augment.rate", "0"],
    ),
    "experts-mix-loss-512": (
        "as experts-mix with the loss over 512 steps (the experts' rollout the weights combine)",
        [*MIX, "--trainer.loss_horizon", "512"],
    ),
    "experts-mix-narrow": (
        "as experts-mix at width 64, 2 layers (more steps in the budget)",
        [
            *MIX,
            "--model.d_model",
            "64",
            "--model.num_hidden_layers",
            "2",
            "--model.ffn_dim",
            "128",
            "--model.num_poly_feats",
            "8",
            "--model.num_rff",
            "32",
        ],
    ),  # fmt: skip
    "experts-mix-wide": (
        "as experts-mix at width 256, 6 layers (small-cpu.yaml's size; fewer steps in the budget)",
        [
            *MIX,
            "--model.d_model",
            "256",
            "--model.num_hidden_layers",
            "6",
            "--model.num_attention_heads",
            "8",
            "--model.ffn_dim",
            "512",
            "--model.num_poly_feats",
            "48",
            "--model.num_rff",
            "144",
        ],
    ),  # fmt: skip
    "experts-select-clean": (
        "hybrid: selects 1 of 5 classical in-context forecasts, expected MAE, no noise augmentation",
        ["--model.incontext", "experts", "--trainer.loss", "mae"],
    ),
    "experts-select": (
        "hybrid: selects 1 of 5 classical in-context forecasts, expected MAE, noise augmentation",
        ["--model.incontext", "experts", "--trainer.loss", "mae", "--data.augment.noise", "0.1"],
    ),
    "experts-select-smape": (
        "as experts-select with expected sMAPE (the benchmark's metric) as the loss",
        ["--model.incontext", "experts", "--trainer.loss", "smape", "--data.augment.noise", "0.1"],
    ),
}
# the stress suite's conditions in training (panda_fm/data/augment.py)
OBSERVED = ["--data.augment.noise", "0.25", "--data.augment.resample_rate", "0.3", "--data.augment.short_rate",
            "0.3", "--data.augment.partial_rate", "0.3"]  # fmt: skip
VARIANTS["experts-select-smape-observed"] = (
    "as experts-select-smape, trained on windows observed as the stress suite's: resampled 1/4-4x, contexts of "
    "128+ steps, fewer channels (30% each), noise up to 25%",
    ["--model.incontext", "experts", "--trainer.loss", "smape", *OBSERVED],
)
VARIANTS["experts-mix-smape-observed"] = (
    "as experts-select-smape-observed, mixing the experts (sMAPE of the weighted mean)",
    ["--model.incontext", "experts", "--model.expert_combine", "mix", "--trainer.loss", "smape", *OBSERVED],
)
CALIBRATION_STEPS = 30


def pretrain(out: Path, data: str, steps: int, seed: int, overrides: list[str]) -> dict:
    """Run ``panda-fm pretrain`` into ``out`` and return its training_info.json."""
    cmd = [
        sys.executable, "-m", "panda_fm.cli", "pretrain", "--config", "train/configs/small-cpu.yaml",
        "--data", data, "--out", str(out), "--max-steps", str(steps), "--trainer.seed", str(seed),
        "--trainer.val_every_n_steps", "1000000", "--trainer.progress_bar", "false", *BASE, *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads((out / "checkpoint" / "training_info.json").read_text())


def train_variant(name: str, args: argparse.Namespace) -> dict:
    """Calibrate the step time, train for the CPU budget, return the run's record (cached in record.json)."""
    root = args.out / name
    record_path = root / "record.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    overrides = VARIANTS[name][1]
    root.mkdir(parents=True, exist_ok=True)
    calib = pretrain(root / "calibration", args.data, CALIBRATION_STEPS, args.seed, overrides)
    seconds_per_step = calib["wall_time_s"] / CALIBRATION_STEPS
    steps = max(int(args.cpu_minutes * 60 / CORES / seconds_per_step), 10)
    shutil.rmtree(root / "run", ignore_errors=True)  # an interrupted run restarts from scratch
    print(f"{name}: {seconds_per_step:.2f} s/step -> {steps} steps", flush=True)
    info = pretrain(root / "run", args.data, steps, args.seed, overrides)
    record = {
        "variant": name,
        "description": VARIANTS[name][0],
        "steps": info["steps"],
        "windows_seen": info["windows_seen"],
        "wall_time_s": info["wall_time_s"],
        "cpu_minutes": round(info["wall_time_s"] * CORES / 60, 1),
        "windows_per_s": round(info["windows_seen"] / info["wall_time_s"], 1),
        "checkpoint": str(root / "run" / "checkpoint"),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate(records: list[dict], args: argparse.Namespace) -> dict:
    """One ``panda-fm evaluate`` run over every variant and every baseline; returns its report."""
    out = args.out / "eval"
    paths = []
    for r in records:  # link each checkpoint under its variant's name, which names it in the report
        link = args.out / "checkpoints" / r["variant"]
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(Path(r["checkpoint"]).resolve())
        paths.append(str(link))
    paths += [str(p) for p in args.also]
    cmd = [
        sys.executable, "-m", "panda_fm.cli", "evaluate", "--test", "founders", "--out", str(out),
        "--checkpoint", *paths, "--baselines", "all", "--noise", "0", "0.05", "--horizons", "128", "256", "512",
        "--windows-per-system", "5", "--rollout", "0", "--seed", str(args.seed),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return read_report(out, details=False)


def evaluate_on_stress(records: list[dict], args: argparse.Namespace) -> Path:
    """Score every variant, its experts' untrained prior and the classical baselines on the stress suite."""
    from panda_fm.eval.baselines import PipelineForecaster, make_baselines
    from panda_fm.eval.stress import evaluate_stress, write_stress_report

    checkpoints = [(r["variant"], Path(r["checkpoint"])) for r in records]
    checkpoints += [(Path(p).name, Path(p)) for p in args.also]
    methods: list = [PipelineForecaster(path, name=name) for name, path in checkpoints]
    with_experts = [
        path
        for _, path in checkpoints
        if json.loads((path / "config.json").read_text()).get("incontext") == "experts"
    ]
    if with_experts:  # the prior depends on the experts alone: one suffices when all share them
        methods.append(PipelineForecaster(with_experts[0], name="prior", prior=True))
    methods += make_baselines(["naive", "nvar", "analogue", "selector"])
    report = evaluate_stress(methods, args.stress_sets, windows_per_system=3, seed=args.seed)
    descriptions = "\n".join(f"- {r['variant']}: {r['description']}" for r in records)
    command = "PYTHONPATH=. python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    return write_stress_report(report, args.out, command, notes=f"## Variants\n\n{descriptions}\n")


def table(records: list[dict], report: dict, args: argparse.Namespace) -> str:
    """Markdown: median sMAPE per method, horizon and noise level, with the variants' training cost."""
    by_name = {r["variant"]: r for r in records}
    also = {}  # checkpoints scored alongside: their own training record, where they have one
    for path in args.also:
        info_path = Path(path) / "training_info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        wall, windows = info.get("wall_time_s"), info.get("windows_seen")
        also[Path(path).name] = {
            "steps": info.get("steps", ""),
            "cpu_minutes": round(wall * CORES / 60, 1) if wall else "",
            "windows_per_s": round(windows / wall, 1) if wall and windows else "",
            "description": f"checkpoint {path} (--also)",
        }
    horizons = (128, 256, 512)
    head = [f"clean @{h}" for h in horizons] + [f"5% noise @{h}" for h in horizons]
    lines = [
        f"Median sMAPE on the 20 held-out founders (5 windows each, context 512); a budget of {args.cpu_minutes:g} "
        "CPU-minutes per variant on this machine (2 cores), of which the training run itself used the CPU-min "
        "column (the rest went to start-up and the calibration run).",
        "",
        "| method | " + " | ".join(head) + " | steps | CPU-min | windows/s | what it tests |",
        "|---" * (len(head) + 5) + "|",
    ]
    for method in report["methods"]:
        cells = [
            f"{report['summary'][sigma][method][f'smape@{h}']['median']:.1f}"
            for sigma in ("0.0", "0.05")
            for h in horizons
        ]
        r = by_name.get(method) or also.get(method)
        cost = (
            [str(r["steps"]), f"{r['cpu_minutes']:g}", f"{r['windows_per_s']:g}", r["description"]]
            if r
            else ["", "", "", "classical baseline"]
        )
        lines.append(f"| {method} | " + " | ".join(cells + cost) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory from panda-fm generate")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ablation")
    parser.add_argument("--cpu-minutes", type=float, default=60.0, help="training budget per variant")
    parser.add_argument("--quick", action="store_true", help="8 CPU-minutes per variant")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--also", nargs="+", type=Path, default=[], help="further checkpoint dirs to score in the same run"
    )
    parser.add_argument(
        "--suite", choices=("founders", "stress"), default="founders", help="what the variants are scored on"
    )
    parser.add_argument(
        "--stress-sets", nargs="+", default=None, help="with --suite stress: these sets (default all)"
    )
    args = parser.parse_args()
    if args.quick:
        args.cpu_minutes = 8.0
    if not Path(args.data, "manifest.jsonl").exists():
        parser.error(f"--data {args.data} is not a dataset directory; make one with `panda-fm generate`")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = [train_variant(name, args) for name in args.variants]
    if args.suite == "stress":
        print(evaluate_on_stress(records, args).read_text())
        print(f"total wall time {time.perf_counter() - started:.0f} s")
        return
    report = evaluate(records, args)
    text = table(records, report, args)
    command = "PYTHONPATH=. python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    (args.out / "results.md").write_text(f"{text}\nReproduce: `{command}`\n")
    (args.out / "records.json").write_text(json.dumps(records, indent=2) + "\n")
    print(text)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
