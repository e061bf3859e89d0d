"""Inference throughput of the reference 21M configuration on this machine.

    python benchmarks/inference.py [--repeats 5] [--checkpoint DIR [DIR ...]]

Random weights, 3 channels, context 512, one forward pass (128 steps) per forecast. Prints forecasts/s at
batch 1 and 32 in fp32 and bf16, the model's GFLOP/s (FLOPs counted by torch's FlopCounterMode), and in the
same run the GFLOP/s of a large fp32 matmul; then the forecasts/s at batch 32 of each ``--checkpoint`` (default:
the shipped one) with its in-context experts, of the first one's experts alone, and of the first one's network
without experts (random weights, ``incontext="none"``), on the random contexts and on 32 windows of a chaotic
system (``docs/examples/lorenz.csv``). The random contexts' channels are independent, so the experts also fit
each channel apart (channel groups), more work than on a chaotic system's windows. Last lines: roofline_fraction_fp32,
bf16_speedup, experts_slowdown and experts_slowdown_lorenz (the first checkpoint's time over the plain
network's, on each kind of context).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import REPO, SHIPPED, best_time, matmul_rate
from torch.utils.flop_counter import FlopCounterMode

from panda_fm import PandaConfig, PandaModel, PandaPipeline
from panda_fm.model.experts import expert_forecasts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        default=[str(SHIPPED)],
        help="checkpoints timed side by side; the first also without its experts (default: the shipped one)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    config = PandaConfig()  # the reference 21M configuration
    model = PandaModel(config).eval()
    print(f"threads: {torch.get_num_threads()}  parameters: {model.num_parameters():,}")
    x32 = torch.randn(32, config.context_length, args.channels)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x32)
    flops_32 = counter.get_total_flops()
    print(f"model GFLOP per forecast: {flops_32 / 32 / 1e9:.3f}")
    matmul = matmul_rate(2048, args.repeats) / 1e9
    print(f"fp32 matmul 2048^3: {matmul:.1f} GFLOP/s")
    results = {}
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = PandaModel(config).eval().to(dtype)
        for batch in (1, 32):
            x = x32[:batch]
            with torch.inference_mode():
                seconds = best_time(lambda m=m, x=x: m(x), args.repeats)
                outputs[dtype, batch] = m(x)
            results[dtype, batch] = seconds
            name = str(dtype).removeprefix("torch.")
            print(
                f"{name:9s} batch {batch:2d}: {batch / seconds:8.1f} forecasts/s  ({seconds * 1e3:.1f} ms/call)"
            )
    model_gflops = flops_32 / results[torch.float32, 32] / 1e9
    ref, low = outputs[torch.float32, 32], outputs[torch.bfloat16, 32]
    rel_rms = ((low - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
    print(f"model fp32 at batch 32: {model_gflops:.1f} GFLOP/s")
    print(f"bf16 vs fp32 forecast relative RMS difference: {rel_rms:.4f}")
    print(f"roofline_fraction_fp32: {model_gflops / matmul:.3f}")
    print(f"bf16_speedup: {results[torch.float32, 32] / results[torch.bfloat16, 32]:.2f}")
    models = {c: PandaPipeline.from_pretrained(c).model for c in args.checkpoint}
    first = next(iter(models.values()))
    cfg = first.config
    plain = PandaModel(
        PandaConfig(**{**cfg.hyperparameters(), "incontext": "none", "expert_chooser": 0})
    ).eval()

    # the random contexts' channels are independent, so the experts also fit each channel on its own (channel
    # groups) and run twice; windows of a chaotic system (docs/examples/lorenz.csv) are the model's usual case
    lorenz = np.loadtxt(
        REPO / "docs" / "examples" / "lorenz.csv", delimiter=",", skiprows=1, dtype=np.float32
    )
    starts = np.linspace(0, len(lorenz) - config.context_length, 32).astype(int)
    contexts = {
        "random": x32,
        "Lorenz": torch.from_numpy(np.stack([lorenz[s : s + config.context_length] for s in starts])),
    }
    slowdowns = {}
    for label, x in contexts.items():

        def experts(
            x: torch.Tensor = x,
        ) -> None:  # the first checkpoint's experts alone, with the chooser's evidence
            z, observed, _, _ = first.prepare(x)
            expert_forecasts(
                z,
                observed,
                cfg.experts,
                cfg.prediction_length,
                cfg.expert_backtest,
                cfg.experts_version,
                True,
            )

        timed = {f"{name} with experts": lambda m=m, x=x: m(x) for name, m in models.items()}
        if cfg.incontext == "experts":
            timed[f"{next(iter(models))} experts alone"] = experts
        timed["network without experts"] = lambda x=x: plain(x)
        seconds = {}
        for name, fn in timed.items():
            with torch.inference_mode():
                seconds[name] = best_time(fn, args.repeats)
            print(
                f"{label:6s} {name:40s} batch 32: {32 / seconds[name]:8.1f} forecasts/s  ({seconds[name]:.2f} s/call)"
            )
        slowdowns[label] = seconds[next(iter(timed))] / seconds["network without experts"]
    print(f"experts_slowdown: {slowdowns['random']:.2f}")
    print(f"experts_slowdown_lorenz: {slowdowns['Lorenz']:.2f}")


if __name__ == "__main__":
    main()
