"""GPU throughput of the shipped design and the 21M design: inference forecasts/s and training windows/s.

On a machine with CUDA, from the repository root (4 to 5 minutes in all: --max-seconds, 240 by default,
bounds everything after the imports, give or take a call of the measurement under way when it runs out):

    PYTHONPATH=. python benchmarks/gpu_throughput.py --out benchmarks/results/gpu

On a lent H200 through the device tool (its python3 holds torch; $OUT comes back: copy the two files into
benchmarks/results/gpu/ afterwards), with timeout_s 420:

    PYTHONPATH=. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_throughput.py --out "$OUT" --max-seconds 240

Per design (--designs), at batch 256 (--batch), in bf16 autocast (--dtype), with random weights:

- ``shipped``: the config of checkpoints/panda-fm-small, whose in-context experts run inside the model, in
  float64 on the device; measured with its experts and without them (the same config with
  ``incontext="none"``, as benchmarks/inference.py and benchmarks/train_throughput.py do);
- ``21m``: the model section of train/configs/base-21m-gpu.yaml (the PandaConfig defaults, 21M parameters).

Inference: forecasts/s of the model's forward (one pass of prediction_length steps, 3 channels) under
``torch.inference_mode``. Training: windows/s of the pretraining step: the design's loss
(panda_fm.training.module, as its train/configs YAML names it), backward, gradient clipping, and the AdamW step
and schedule that PandaLightningModule configures, the forward under autocast as in Lightning's bf16-mixed
(Lightning's per-step bookkeeping, finiteness checks and logging, is not timed). The windows (context +
horizon) are Lorenz trajectories from random initial conditions, integrated on the device: their channels are
coupled, so the experts group them as they would a real system's, and cost what they cost on real data.

A measurement times --steps calls after --warmup calls, with the device synchronised (torch.cuda.synchronize)
at both ends; its peak memory is torch.cuda.max_memory_allocated over the measurement, weights included. For
the networks without experts the FLOPs of a call are counted (torch.utils.flop_counter, attention through the
math kernel, on 8 windows and scaled to the batch) and divided by the device's matmul rate in the same dtype
(:func:`_common.matmul_rate`, 8192^3 on CUDA): ``matmul_fraction``. The experts' float64 work is not
counted, so the design with experts has no fraction.

A measurement that fails (out of memory, say) is recorded with its error and the others go on. Each gets an
equal share of what is left of --max-seconds and cuts its warm-up and its timed calls short at the end of
its share (after one of each); once --max-seconds have passed, the remaining ones are recorded as skipped.
gpu_throughput.json and gpu_throughput.md are rewritten in --out, atomically, after every measurement, so a
run cut short keeps what it measured. The exit status is 0 when at least one measurement succeeded.

CPU smoke run with tiny configs (tests/test_benchmarks_gpu.py runs it; one thread, since torch's threads
slow down many times over on a CPU shared with other work):

    PYTHONPATH=. python benchmarks/gpu_throughput.py --device cpu --dtype fp32 --tiny --steps 2 --warmup 1 \\
        --threads 1 --out /tmp/gpu

Shape letters: B batch, T time (context + horizon), C channels.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from _common import REPO, SHIPPED, matmul_rate, output_folder, synchronize
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from train_throughput import step_flops

import panda_fm
from panda_fm.config import PandaConfig
from panda_fm.data.io import atomic_path
from panda_fm.model import PandaModel
from panda_fm.training.config import TrainerConfig, load_config
from panda_fm.training.module import PandaLightningModule

CONFIGS = REPO / "train" / "configs"
DESIGNS = ("shipped", "21m")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
KINDS = ("inference", "training")
# --tiny: each design's network shrunk (patch 16 + 2 degrees x poly feats + rff = d_model); context, horizon,
# experts and loss unchanged
TINY = {
    "shipped": dict(
        d_model=48, num_hidden_layers=1, num_attention_heads=4, ffn_dim=64, num_poly_feats=8, num_rff=16
    ),
    "21m": dict(
        d_model=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, num_poly_feats=8, num_rff=32
    ),
}
TINY_BATCH = 4
FLOP_WINDOWS = 8  # windows the FLOPs are counted on; they scale linearly with the batch
JSON_NAME = "gpu_throughput.json"
MD_NAME = "gpu_throughput.md"


@dataclass
class Design:
    """A design to measure: its model config, the trainer settings its step uses, and where they come from."""

    name: str
    model: PandaConfig
    trainer: TrainerConfig
    source: str

    def variants(self) -> dict[str, PandaConfig]:
        """The configs measured, by ``incontext``: the design's own, and without in-context forecasts."""
        out = {self.model.incontext: self.model}
        if self.model.incontext != "none":
            out["none"] = PandaConfig(**{**self.model.hyperparameters(), "incontext": "none"})
        return out


def load_design(name: str, tiny: bool = False) -> Design:
    """The shipped design (checkpoints/panda-fm-small's config, trained as train/configs/small-cpu.yaml) or the
    21M design (train/configs/base-21m-gpu.yaml); with ``tiny``, its network shrunk as :data:`TINY` says."""
    if name == "shipped":
        model = PandaConfig.from_pretrained(SHIPPED)
        trainer = load_config(CONFIGS / "small-cpu.yaml").trainer
        source = "checkpoints/panda-fm-small/config.json, trainer of train/configs/small-cpu.yaml"
    elif name == "21m":
        run = load_config(CONFIGS / "base-21m-gpu.yaml")
        model, trainer = run.model, run.trainer
        source = "train/configs/base-21m-gpu.yaml"
    else:
        raise ValueError(f"unknown design {name!r}; choose from {DESIGNS}")
    if tiny:
        model = PandaConfig(**{**model.hyperparameters(), **TINY[name]})
        source += f" (--tiny: {TINY[name]})"
    return Design(name, model, trainer, source)


def lorenz_windows(
    batch: int, steps: int, device: torch.device, seed: int = 0, dt: float = 0.01, burn_in: int = 500
) -> torch.Tensor:
    """``(B, T, 3)`` float32 Lorenz-63 trajectories (classic parameters, RK4 in float64 on ``device``) from
    random initial conditions, after ``burn_in`` steps onto the attractor."""
    gen = torch.Generator().manual_seed(seed)
    state = torch.randn(batch, 3, generator=gen, dtype=torch.float64) * 5.0
    state = (state + torch.tensor([0.0, 0.0, 25.0], dtype=torch.float64)).to(device)

    def field(s: torch.Tensor) -> torch.Tensor:
        x, y, z = s.unbind(-1)
        return torch.stack([10.0 * (y - x), x * (28.0 - z) - y, x * y - (8.0 / 3.0) * z], dim=-1)

    out = torch.empty(batch, steps, 3, dtype=torch.float64, device=device)
    for i in range(burn_in + steps):
        k1 = field(state)
        k2 = field(state + 0.5 * dt * k1)
        k3 = field(state + 0.5 * dt * k2)
        k4 = field(state + dt * k3)
        state = state + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if i >= burn_in:
            out[:, i - burn_in] = state
    return out.float()


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (none for float32)."""
    return nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


def timed(
    fn: Callable[[], object], steps: int, warmup: int, device: torch.device, deadline: float
) -> tuple[float, int]:
    """Mean seconds per call of ``fn`` over ``steps`` calls after ``warmup`` calls, the device synchronised at
    both ends of the timed region.

    The warm-up and then the timing stop early, after one call each, once ``time.perf_counter()`` passes
    ``deadline``.

    Returns:
        Seconds per call and the number of calls timed.
    """
    for _ in range(warmup):
        fn()
        if time.perf_counter() > deadline:
            break
    synchronize(device)
    calls = 0
    t0 = time.perf_counter()
    while calls < steps:
        fn()
        calls += 1
        if time.perf_counter() > deadline:
            break
    synchronize(device)
    return (time.perf_counter() - t0) / calls, calls


def forward_flops(model: PandaModel, x: torch.Tensor) -> int:
    """FLOPs of one forward on ``x`` (attention through the math kernel so that it is counted)."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH), torch.inference_mode():
        model(x)
    return counter.get_total_flops()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _rates(flops: float | None, seconds: float, matmul: float | None) -> dict[str, float | None]:
    achieved = None if flops is None else flops / seconds
    return {
        "achieved_tflops": None if achieved is None else achieved / 1e12,
        "matmul_fraction": None if achieved is None or not matmul else achieved / matmul,
    }


def measure_inference(
    config: PandaConfig,
    windows: torch.Tensor,
    dtype: torch.dtype,
    steps: int,
    warmup: int,
    deadline: float,
    matmul: float | None,
) -> dict[str, Any]:
    """Forecasts/s of the model's forward on the contexts of ``windows`` ``(B, T, C)``.

    Args:
        config: the model, built with random weights.
        windows: on the device to measure; the first ``context_length`` steps are read.
        dtype: autocast dtype (float32: none).
        steps, warmup: timed and untimed calls.
        deadline: ``time.perf_counter()`` after which timing stops (after one call).
        matmul: the device's matmul FLOP/s in ``dtype``, for ``matmul_fraction`` (None: not measured).
    """
    device = windows.device
    model = PandaModel(config).to(device).eval()
    x = windows[:, : config.context_length]
    B = x.shape[0]
    flops = None
    if config.incontext == "none":
        k = min(B, FLOP_WINDOWS)
        flops = forward_flops(model, x[:k]) * B / k
    _reset_peak(device)

    def call() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(x)

    seconds, calls = timed(call, steps, warmup, device, deadline)
    return {
        "params": model.num_parameters(),
        "batch": B,
        "calls_timed": calls,
        "seconds_per_call": seconds,
        "forecasts_per_s": B / seconds,
        "peak_memory_gib": _peak_gib(device),
        "gflop_per_forecast": None if flops is None else flops / B / 1e9,
        **_rates(flops, seconds, matmul),
    }


def measure_training(
    config: PandaConfig,
    trainer: TrainerConfig,
    windows: torch.Tensor,
    dtype: torch.dtype,
    steps: int,
    warmup: int,
    deadline: float,
    matmul: float | None,
) -> dict[str, Any]:
    """Windows/s of the pretraining step on ``windows`` ``(B, T, C)``: context, then the loss's horizon.

    Args:
        config: the model, built with random weights.
        trainer: the loss, optimiser, schedule and clipping settings.
        windows: on the device to measure, at least context_length + the loss's horizon steps.
        dtype, steps, warmup, deadline, matmul: as for :func:`measure_inference`.
    """
    device = windows.device
    module = PandaLightningModule(config, trainer)
    model = module.model.to(device).train()
    horizon = trainer.loss_horizon or config.prediction_length
    context = windows[:, : config.context_length]
    target = windows[:, config.context_length : config.context_length + horizon]
    B = context.shape[0]
    flops = None
    if config.incontext == "none":
        k = min(B, FLOP_WINDOWS)
        flops = step_flops(model, {"context": context[:k], "target": target[:k]}) * B / k
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    clip = trainer.grad_clip if trainer.grad_clip > 0 else math.inf
    _reset_peak(device)

    def step() -> None:
        with autocast(device, dtype):
            loss = module.loss_fn(model, context, target, config.scaling_eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()

    seconds, calls = timed(step, steps, warmup, device, deadline)
    return {
        "params": model.num_parameters(),
        "batch": B,
        "loss": trainer.loss,
        "steps_timed": calls,
        "seconds_per_step": seconds,
        "windows_per_s": B / seconds,
        "peak_memory_gib": _peak_gib(device),
        "gflop_per_window": None if flops is None else flops / B / 1e9,  # forward + backward
        **_rates(flops, seconds, matmul),
    }


def _driver_version() -> str | None:
    """The NVIDIA driver's version, from NVML or nvidia-smi (None when neither answers)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        pass
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except Exception:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return (done.stdout.strip() or None) if done.returncode == 0 else None
    except Exception:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and the device: torch, CUDA, cuDNN, the GPU's name, memory and driver."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "panda_fm": panda_fm.__version__,
        "git_commit": _git_commit(),
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=props.total_memory / 2**30,
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            driver=_driver_version(),
            cudnn=torch.backends.cudnn.version(),
        )
    return env


def _cell(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    """A table cell: the value, or what happened instead (error, skipped)."""
    if result is None:
        return ""
    if "error" in result:
        return "out of memory" if result["error"].startswith("out of memory") else "error"
    if "skipped" in result:
        return "skipped"
    value = result.get(key)
    return "" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> str:
    """The short table of ``report`` (:func:`main`'s JSON)."""
    s, env = report["settings"], report["environment"]
    threads = env["cpu_threads"]
    where = env.get("gpu") or f"CPU ({env['processor']}, {threads} thread{'s' if threads != 1 else ''})"
    if env.get("driver"):
        where += f", driver {env['driver']}"
    matmul = report.get("matmul") or {}
    lines = [
        "# Inference and training throughput (benchmarks/gpu_throughput.py)",
        "",
        f"{where}; torch {env['torch']}" + (f", CUDA {env['cuda']}" if env.get("cuda") else "") + ".",
        f"{s['dtype']}{' autocast' if s['dtype'] != 'fp32' else ''}, batch {s['batch']}, random weights"
        + (", tiny configs (--tiny)" if s["tiny"] else "")
        + (
            f"; matmul {matmul['n']}^3 in {matmul['dtype']}: {matmul['tflops']:.3g} TFLOP/s."
            if matmul.get("tflops")
            else "."
        ),
        "",
        "| design | in-context | parameters | inference forecasts/s | training windows/s "
        "| peak GiB (inference / training) | matmul fraction (inference / training) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for design, variants in report["results"].items():
        for incontext, kinds in variants.items():
            inf, train = kinds.get("inference"), kinds.get("training")
            params = next((r["params"] for r in (inf, train) if r and "params" in r), None)
            lines.append(
                f"| {design} | {incontext} | {'' if params is None else f'{params / 1e6:.2f}M'} "
                f"| {_cell(inf, 'forecasts_per_s', ',.1f')} | {_cell(train, 'windows_per_s', ',.1f')} "
                f"| {_cell(inf, 'peak_memory_gib', '.2f')} / {_cell(train, 'peak_memory_gib', '.2f')} "
                f"| {_cell(inf, 'matmul_fraction', '.3f')} / {_cell(train, 'matmul_fraction', '.3f')} |"
            )
            for kind, r in kinds.items():
                if r and ("error" in r or "skipped" in r):
                    notes.append(f"- {design}, {incontext}, {kind}: {r.get('error') or r.get('skipped')}")
    summary = report.get("summary") or {}
    if summary:
        lines += ["", ", ".join(f"{k}: {v:.2f}" for k, v in summary.items())]
    if notes:
        lines += ["", *notes]
    lines += ["", f"`{report['command']}`, {report['wall_s']:.0f} s, {report['started']}."]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """``report`` as JSON and as the markdown table in ``out``, each written whole."""
    with atomic_path(out / JSON_NAME) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_path(out / MD_NAME) as tmp:
        tmp.write_text(markdown(report))


def _summary(results: dict[str, Any]) -> dict[str, float]:
    """The experts' slowdowns: the same network's throughput without experts over with them."""
    out = {}
    for design, variants in results.items():
        for incontext in [v for v in variants if v != "none"]:
            for kind, key in (("inference", "forecasts_per_s"), ("training", "windows_per_s")):
                with_, without = variants[incontext].get(kind, {}), variants.get("none", {}).get(kind, {})
                if with_.get(key) and without.get(key):
                    out[f"{design}_{incontext}_{kind}_slowdown"] = without[key] / with_[key]
    return out


def _run_guarded(fn: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """``fn()``, or its failure as ``{"error": ...}`` (the traceback to stderr); memory freed after."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as err:
        return {"error": f"out of memory: {str(err).splitlines()[0]}"}
    except Exception as err:
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every default is shown in ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--device", default="cuda", help="torch device, e.g. cuda, cuda:1, cpu (default: %(default)s)"
    )
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default="bf16", help="autocast dtype (default: %(default)s)"
    )
    p.add_argument(
        "--batch", type=int, default=None, help=f"windows per call (default: 256; {TINY_BATCH} with --tiny)"
    )
    p.add_argument(
        "--designs",
        nargs="+",
        choices=DESIGNS,
        default=list(DESIGNS),
        help="designs to measure (default: %(default)s)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="each design's network shrunk to d_model 48-64, 1-2 layers (smoke runs on a CPU)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed calls per measurement (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: %(default)s)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=240.0,
        help="time for all measurements; each stops timing at its share (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch CPU threads; 1 on a CPU shared with other work (default: torch's, {torch.get_num_threads()} here)",
    )
    p.add_argument(
        "--out",
        default="benchmarks/results/gpu",
        help=f"folder for {JSON_NAME}, {MD_NAME} (default: %(default)s)",
    )
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = TINY_BATCH if args.tiny else 256
    for name in ("batch", "steps", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.max_seconds <= 0:
        p.error("--warmup must be >= 0 and --max-seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every design and write the outputs; returns the exit status (1 when nothing was measured)."""
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        print(f"error: --device {args.device}: {err}; use cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device {args.device} but CUDA is not available (torch {torch.__version__}); run on a "
            "machine with an NVIDIA GPU, or pass --device cpu for a smoke run",
            file=sys.stderr,
        )
        return 2
    out = output_folder(args.out)
    if out is None:
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    designs = [load_design(name, args.tiny) for name in args.designs]
    if device.type == "cuda":
        # as the 21M design trains (TF32 for the float32 matmuls autocast leaves); the experts' float64 is unaffected
        torch.set_float32_matmul_precision(
            load_config(CONFIGS / "base-21m-gpu.yaml").trainer.float32_matmul_precision
        )
    command = "python benchmarks/gpu_throughput.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "command": command.strip(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "device": str(device),
            "dtype": args.dtype,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "tiny": args.tiny,
            "max_seconds": args.max_seconds,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "environment": environment(device),
        "designs": {
            d.name: {
                "source": d.source,
                "model": d.model.hyperparameters(),
                "trainer": {
                    k: getattr(d.trainer, k)
                    for k in ("loss", "loss_horizon", "lr", "weight_decay", "grad_clip")
                },
            }
            for d in designs
        },
        "matmul": None,
        "results": {d.name: {v: {} for v in d.variants()} for d in designs},
        "summary": {},
        "wall_s": 0.0,
    }
    n = 8192 if device.type == "cuda" else (1024 if args.tiny else 2048)
    rate = _run_guarded(
        lambda: {"n": n, "dtype": args.dtype, "tflops": matmul_rate(n, 5, device, dtype) / 1e12}, device
    )
    report["matmul"] = rate
    matmul = rate["tflops"] * 1e12 if "tflops" in rate else None
    print(f"{report['environment'].get('gpu', 'CPU')}: matmul {n}^3 {args.dtype}: {rate}", flush=True)

    plan = [
        (d, incontext, config, kind)
        for d in designs
        for incontext, config in d.variants().items()
        for kind in KINDS
    ]
    deadline = started + args.max_seconds
    windows: dict[tuple[str, int], torch.Tensor] = {}
    for i, (design, incontext, config, kind) in enumerate(plan):
        now = time.perf_counter()
        if now >= deadline:
            result: dict[str, Any] = {"skipped": f"--max-seconds {args.max_seconds:g} reached"}
        else:
            own_deadline = now + (deadline - now) / (len(plan) - i)
            length = config.context_length + max(design.trainer.loss_horizon or 0, config.prediction_length)

            def run(
                design=design, config=config, kind=kind, length=length, own_deadline=own_deadline
            ) -> dict[str, Any]:
                key = (design.name, length)
                if key not in windows:
                    windows[key] = lorenz_windows(args.batch, length, device)
                common = dict(
                    windows=windows[key],
                    dtype=dtype,
                    steps=args.steps,
                    warmup=args.warmup,
                    deadline=own_deadline,
                    matmul=matmul,
                )
                if kind == "inference":
                    return measure_inference(config, **common)
                return measure_training(config, design.trainer, **common)

            t0 = time.perf_counter()
            result = _run_guarded(run, device)
            result["wall_s"] = time.perf_counter() - t0
        report["results"][design.name][incontext][kind] = result
        report["summary"] = _summary(report["results"])
        report["wall_s"] = time.perf_counter() - started
        write_outputs(report, out)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
        print(f"{design.name} incontext={incontext} {kind}: {shown}", flush=True)
    print(markdown(report))
    print(f"wrote {out / JSON_NAME} and {out / MD_NAME}")
    measured = any(
        "forecasts_per_s" in r or "windows_per_s" in r
        for variants in report["results"].values()
        for kinds in variants.values()
        for r in kinds.values()
    )
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
