"""Decision experiment for the refused runaway expert (non-test data only): the shipped checkpoint with and without it.

Training founders (the probabilistic calibration split, seed 1, 5 windows) at noise 0 / 0.05 / 0.1 / 0.2 and
the first 100 training systems of data/evo700 (1 window) at noise 0 / 0.05; sMAPE@128 and @256 per window.
"""
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, "/work/main/benchmarks")
from probabilistic import CALIBRATION_SYSTEMS  # noqa: E402

from panda_fm import PandaPipeline  # noqa: E402
from panda_fm.eval import metrics  # noqa: E402
from panda_fm.eval.runner import EvalConfig, _test_ids, noisy_batches, standardise_by_context, system_windows  # noqa: E402
from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset  # noqa: E402
from panda_fm.systems.store import open_dataset  # noqa: E402

off = PandaPipeline.from_pretrained("/work/main/checkpoints/panda-fm-small")
on = PandaPipeline.from_pretrained("sys.argv[1]")
assert on.model.config.refuse_runaway and not off.model.config.refuse_runaway
cache = Path.home() / ".cache" / "panda_fm"
cases = [
    ("train founders", founders_testset(cache / "calibration-founders", FounderTestsetConfig(systems=CALIBRATION_SYSTEMS)),
     EvalConfig(horizons=(128, 256), windows_per_system=5, noise=(0.0, 0.05, 0.1, 0.2), rollout=0, seed=1, batch_size=8)),
    ("evo700 train", Path(sys.argv[2]),
     EvalConfig(horizons=(128, 256), windows_per_system=1, noise=(0.0, 0.05), rollout=0, seed=1, batch_size=8,
                split="train", max_systems=100)),
]
for label, root, config in cases:
    ds = open_dataset(root)
    res = {}
    for sid in _test_ids(ds, config):
        wins = system_windows(ds, sid, config)
        for sigma, lo, batch, seen in noisy_batches(sid, wins, config):
            a = off.predict(seen.astype(np.float32), 256)
            b = on.predict(seen.astype(np.float32), 256)
            for i, w in enumerate(batch):
                for name, f in (("off", a[i]), ("on", b[i])):
                    y, z = standardise_by_context(w.context, w.truth[:256], f)
                    for h in (128, 256):
                        res.setdefault((sigma, name, h), []).append(metrics.smape(y[:h], z[:h]))
    for sigma in config.noise:
        x128, y128 = np.array(res[sigma, "off", 128]), np.array(res[sigma, "on", 128])
        x256, y256 = np.array(res[sigma, "off", 256]), np.array(res[sigma, "on", 256])
        changed = np.flatnonzero(np.abs(x256 - y256) > 1e-9)
        print(f"{label} noise {sigma}: {len(x128)} windows, {len(changed)} changed; median sMAPE@128 {np.median(x128):.2f} -> "
              f"{np.median(y128):.2f}, @256 {np.median(x256):.2f} -> {np.median(y256):.2f}; mean @128 {x128.mean():.2f} -> "
              f"{y128.mean():.2f}, @256 {x256.mean():.2f} -> {y256.mean():.2f}; changed windows @128: "
              + ", ".join(f"{x128[j]:.1f}->{y128[j]:.1f}" for j in changed), flush=True)
