"""Training throughput on this machine: windows/s for small-cpu (the shipped design, with in-context experts),
for the same network without experts, and for the 21M config, and the 21M config's achieved fraction of the
fp32 matmul rate, all measured in one run.

small-cpu runs in its config's CPU layout (trainer.devices processes of trainer.torch_threads threads, as
its DDP run would, less the gradient all-reduce); the 21M config runs in one process of --threads threads.
A training step here is exactly the pretraining step (panda_fm.training.module.standardised_mse, backward,
gradient clipping, AdamW), fed by the real window stream (WindowSampler with augmentations) over a
temporary dataset of smooth synthetic trajectories. Model FLOPs of one step (forward + backward) are
counted with torch.utils.flop_counter.FlopCounterMode (attention through the math kernel so that it is
counted too); the fp32 matmul rate is the best of a few large square matmuls. Then a fine-tuning step of the
shipped checkpoint (its weights, the fine-tuning batch of 16 windows, one process of --threads threads) and
its experts' share of it.

    PYTHONPATH=. python benchmarks/train_throughput.py [--steps 4] [--threads N]

The last line is ``roofline_fraction_train_fp32: X``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, SHIPPED, matmul_rate
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from panda_fm import PandaPipeline
from panda_fm.config import PandaConfig
from panda_fm.data.augment import AugmentConfig
from panda_fm.data.windows import WindowSampler, WindowSpec
from panda_fm.model import PandaModel
from panda_fm.model.experts import expert_forecasts
from panda_fm.systems.store import DatasetWriter
from panda_fm.training.config import load_config
from panda_fm.training.datamodule import WindowStream
from panda_fm.training.finetune import FineTuneConfig
from panda_fm.training.module import standardised_mse

logger = logging.getLogger("train_throughput")


def synthetic_dataset(root: Path, systems: int = 4, steps: int = 2048, dims: int = 3) -> Path:
    """Smooth quasi-periodic trajectories: the data path costs what it costs on a real dataset."""
    rng = np.random.default_rng(0)
    t = np.arange(steps)[None, :, None]
    with DatasetWriter(root, shard_size=systems) as writer:
        for i in range(systems):
            freqs = rng.uniform(0.002, 0.05, size=(1, 1, dims))
            traj = np.sin(2 * np.pi * freqs * t + rng.uniform(0, 6, size=(2, 1, dims)))  # (K, T, D)
            writer.add({"id": f"s{i}", "split": "train", "dt": 0.01, "period": 1.0}, traj.astype(np.float32))
    return root


def step_flops(model: PandaModel, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward + backward of the training loss."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        standardised_mse(model, batch["context"], batch["target"], model.config.scaling_eps).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def window_stream(config: PandaConfig, data: Path, batch_size: int) -> WindowStream:
    """The training windows of the synthetic dataset (3 channels, augmented) for ``config``."""
    spec = WindowSpec(config.context_length, config.prediction_length, num_channels=3)
    sampler = WindowSampler(data, ["s0", "s1", "s2", "s3"], spec, AugmentConfig(rate=0.2))
    return WindowStream(sampler, batch_size, 0)


def measure(
    name: str,
    config: PandaConfig,
    data: Path,
    batch_size: int,
    steps: int,
    warmup: int = 1,
    model: PandaModel | None = None,
) -> dict[str, float]:
    """Windows/s, step time and achieved FLOP/s of ``steps`` training steps (after ``warmup``) of ``model``
    (default: a new one of ``config``)."""
    model = PandaModel(config) if model is None else model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    stream = window_stream(config, data, batch_size)
    flops = step_flops(model, stream.batch(0))

    def step(i: int) -> None:
        batch = stream.batch(i)
        loss = standardised_mse(model, batch["context"], batch["target"], config.scaling_eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for i in range(warmup):
        step(i)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    seconds = (time.perf_counter() - t) / steps
    result = {
        "params": model.num_parameters(),
        "batch": batch_size,
        "step_s": seconds,
        "windows_per_s": batch_size / seconds,
        "gflop_per_window": flops / batch_size / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
    }
    logger.info("%s: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return result


def experts_time(model: PandaModel, data: Path, batch_size: int, repeats: int = 3) -> float:
    """The best time of ``model``'s experts alone (with the evidence chooser's inputs) on a batch of training
    windows: their share of a training step."""
    cfg = model.config
    stream = window_stream(cfg, data, batch_size)
    z, observed, _, _ = model.prepare(stream.batch(0)["context"])
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        expert_forecasts(
            z, observed, cfg.experts, cfg.prediction_length, cfg.expert_backtest, cfg.experts_version, True
        )
        best = min(best, time.perf_counter() - t)
    return best


def _measure_worker(args: tuple[str, PandaConfig, Path, int, int, int]) -> dict[str, float]:
    name, config, data, batch_size, steps, threads = args
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return measure(name, config, data, batch_size, steps)


def measure_processes(
    name: str, config: PandaConfig, data: Path, batch_size: int, steps: int, processes: int, threads: int
) -> dict[str, float]:
    """Like :func:`measure` in ``processes`` concurrent processes (the layout of a CPU DDP run, without
    its gradient all-reduce); windows/s and FLOP/s are summed over the processes."""
    if processes == 1:
        torch.set_num_threads(threads)
        return measure(name, config, data, batch_size, steps)
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.map(
            _measure_worker,
            [(f"{name}[{i}]", config, data, batch_size, steps, threads) for i in range(processes)],
        )
    total = dict(results[0])
    for key in ("windows_per_s", "achieved_gflops"):
        total[key] = sum(r[key] for r in results)
    total["step_s"] = max(r["step_s"] for r in results)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per config")
    parser.add_argument("--batch-21m", type=int, default=16, help="windows per step for the 21M config")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the 21M run and the matmul (default: torch's)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    small = load_config(REPO / "train" / "configs" / "small-cpu.yaml")
    small_procs = small.trainer.devices if small.trainer.accelerator == "cpu" else 1
    small_threads = small.trainer.torch_threads or max(1, threads // small_procs)
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp) / "data")
        small_r = measure_processes(
            "small-cpu", small.model, data, small.data.batch_size, args.steps, small_procs, small_threads
        )
        plain = PandaConfig(**{**small.model.hyperparameters(), "incontext": "none"})  # the same network
        plain_r = measure_processes(
            "small-cpu without experts",
            plain,
            data,
            small.data.batch_size,
            args.steps,
            small_procs,
            small_threads,
        )
        torch.set_num_threads(threads)
        shipped = PandaPipeline.from_pretrained(SHIPPED).model
        tune = FineTuneConfig().batch_size
        tune_r = measure("fine-tuning", shipped.config, data, tune, args.steps, model=shipped)
        tune_r["experts_s"] = experts_time(shipped, data, tune)
        peak_before = matmul_rate()
        base_r = measure("21M", PandaConfig(), data, args.batch_21m, args.steps)
        peak = max(peak_before, matmul_rate())
    print(
        f"small-cpu layout: {small_procs} process(es) x {small_threads} thread(s); 21M: 1 process x {threads}"
    )
    print(f"fp32 matmul rate (2048^3, {threads} threads): {peak / 1e9:.1f} GFLOP/s")
    for name, r in (("small-cpu", small_r), ("small-cpu-no-experts", plain_r), ("21m", base_r)):
        print(
            f"{name}: {r['params'] / 1e6:.2f}M params, batch {r['batch']} per process, {r['step_s']:.3f} s/step, "
            f"{r['gflop_per_window']:.2f} GFLOP/window (fwd+bwd), {r['achieved_gflops']:.1f} GFLOP/s"
        )
        print(f"train_windows_per_s_{name.replace('-', '_')}: {r['windows_per_s']:.2f}")
    print(f"experts_training_slowdown: {plain_r['windows_per_s'] / small_r['windows_per_s']:.2f}")
    print(
        f"fine-tuning {SHIPPED.name} (1 process x {threads}, batch {tune_r['batch']}): its experts "
        f"{tune_r['experts_s']:.3f} s of the step"
    )
    print(f"finetune_step_s: {tune_r['step_s']:.3f}")
    print(f"roofline_fraction_train_fp32: {base_r['achieved_gflops'] * 1e9 / peak:.3f}")


if __name__ == "__main__":
    main()
