"""Do the shipped checkpoint's forecasts agree between the CPU and another device (a GPU)?

The in-context experts run as tensor code on the network's device (float64), and the network in float32: this
script forecasts the same windows on the CPU and on ``--device`` and reports the largest and the median
absolute differences, in units of each window's context standard deviation, of the experts' forecasts and of
the model's forecasts. TF32 is switched off on the device, so both sides compute in full float32.

The windows: Lorenz-63 trajectories from random initial conditions, clean; with 5% observation noise; with a
50-step gap of all channels 100 steps before the end; two Lorenz systems side by side (6 channels, so that
the experts split them into channel groups); and a 32-site Lorenz-96 field (experts version 5's field NVAR).
The experts get the contexts' own units, as the model gives them (``units``).

    PYTHONPATH=. python benchmarks/device_agreement.py --device cuda --out benchmarks/results/gpu

Writes device_agreement.json and device_agreement.md in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from _common import SHIPPED, output_folder
from gpu_throughput import environment, lorenz_windows

from panda_fm.data.io import atomic_path
from panda_fm.eval.stress import lorenz96
from panda_fm.model import PandaModel
from panda_fm.model.experts import expert_forecasts


def cases(batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The windows ``(B, length, C)`` of each case, float32 on the CPU."""
    clean = lorenz_windows(batch, length, torch.device("cpu"), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    noisy = clean + 0.05 * clean.std(dim=1, keepdim=True) * torch.randn(clean.shape, generator=gen)
    gappy = clean.clone()
    gappy[:, -150:-100] = torch.nan
    other = lorenz_windows(batch, length, torch.device("cpu"), seed=seed + 2)
    field = lorenz96(n_ics=1, n_steps=4 * length)[0].reshape(4, length, -1)  # 4 consecutive windows
    return {
        "clean": clean,
        "noise 5%": noisy,
        "gap 50": gappy,
        "two systems": torch.cat([clean, other], -1),
        "Lorenz-96, 32 sites": torch.as_tensor(field, dtype=torch.float32),
    }


def differences(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> dict[str, float]:
    """Largest and median over windows of the largest absolute difference per window, in ``scale`` units."""
    per_window = ((a - b).abs() / scale).flatten(1).amax(dim=1)
    return {"max": per_window.max().item(), "median": per_window.median().item()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="device compared with the CPU (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="windows per case (default: %(default)s)")
    p.add_argument("--out", default="benchmarks/results/gpu", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available; pass --device cpu for a smoke run", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = output_folder(args.out)
    if out is None:
        return 2
    models = {d: PandaModel.from_pretrained(SHIPPED).to(d).eval() for d in ("cpu", str(device))}
    cfg = models["cpu"].config
    horizon = cfg.prediction_length
    results = {}
    for name, windows in cases(args.batch, cfg.context_length).items():
        context = windows
        scale = torch.nan_to_num(context, nan=0.0).std(dim=1, keepdim=True).clamp_min(1e-8)
        outputs, experts = {}, {}
        for d, model in models.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                outputs[d] = model(context.to(d), horizon=horizon).cpu()
                x, observed, units = model.standardise(
                    context.to(d), torch.isfinite(context).to(d), cfg.scaling_eps
                )
                experts[d] = expert_forecasts(
                    x, observed, cfg.experts, horizon, cfg.expert_backtest, cfg.experts_version, units=units
                )[0].cpu()
            print(f"{name} on {d}: {time.perf_counter() - t0:.2f} s", flush=True)
        cpu, dev = "cpu", str(device)
        results[name] = {
            "model": differences(outputs[cpu], outputs[dev], scale),
            # the experts see standardised contexts: their unit is already the context's std
            "experts": differences(experts[cpu], experts[dev], torch.ones(())),
        }
        print(name, results[name], flush=True)
    report = {
        "device": str(device),
        "environment": environment(device),
        "batch": args.batch,
        "results": results,
    }
    with atomic_path(out / "device_agreement.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# CPU vs {report['environment'].get('gpu', str(device))}: the shipped checkpoint's forecasts",
        "",
        f"{args.batch} Lorenz windows per case (4 Lorenz-96 windows), context {cfg.context_length}, horizon {horizon}, TF32 off; "
        "absolute differences in context standard deviations (largest per window: max and median over windows).",
        "",
        "| case | experts max | experts median | model max | model median |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        e, m = r["experts"], r["model"]
        lines.append(f"| {name} | {e['max']:.2e} | {e['median']:.2e} | {m['max']:.2e} | {m['median']:.2e} |")
    with atomic_path(out / "device_agreement.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
