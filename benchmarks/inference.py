"""Inference throughput of the reference 21M configuration on this machine.

    python benchmarks/inference.py [--repeats 5] [--checkpoint DIR]

Random weights, 3 channels, context 512, one forward pass (128 steps) per forecast. Prints forecasts/s at
batch 1 and 32 in fp32 and bf16, the model's GFLOP/s (FLOPs counted by torch's FlopCounterMode), and in the
same run the GFLOP/s of a large fp32 matmul; then the shipped checkpoint's (or ``--checkpoint``'s) forecasts/s at batch 32 with its
in-context experts, and of the same network without them (random weights, ``incontext="none"``). Last lines:
roofline_fraction_fp32, bf16_speedup and experts_slowdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import SHIPPED, best_time, matmul_rate
from torch.utils.flop_counter import FlopCounterMode

from panda_fm import PandaConfig, PandaModel, PandaPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument(
        "--checkpoint",
        default=str(SHIPPED),
        help="checkpoint timed with and without its experts (default: shipped)",
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
    shipped = PandaPipeline.from_pretrained(args.checkpoint).model
    plain = PandaModel(PandaConfig(**{**shipped.config.hyperparameters(), "incontext": "none"})).eval()
    seconds = {}
    for name, m in (("with experts", shipped), ("without experts", plain)):
        with torch.inference_mode():
            seconds[name] = best_time(lambda m=m: m(x32), args.repeats)
        print(f"{Path(args.checkpoint).name} {name:15s} batch 32: {32 / seconds[name]:8.1f} forecasts/s")
    print(f"experts_slowdown: {seconds['with experts'] / seconds['without experts']:.2f}")


if __name__ == "__main__":
    main()
