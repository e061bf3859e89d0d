"""The SLURM script's resources agree with the config and overrides its srun command passes."""

from __future__ import annotations

import re
import shlex

from panda_fm.training.config import load_config
from tests.conftest import REPO

SCRIPT = REPO / "train" / "slurm" / "pretrain_multinode.sbatch"


def _sbatch_options(text: str) -> dict[str, str]:
    options = {}
    for line in text.splitlines():
        m = re.match(r"#SBATCH\s+--([\w-]+)(?:[= ](\S+))?", line)
        if m:
            options[m.group(1)] = m.group(2) or ""
    return options


def _srun_command(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip().startswith("srun ")]
    assert len(lines) == 1, "expected exactly one srun line"
    return shlex.split(lines[0])


def test_sbatch_agrees_with_the_training_config():
    text = SCRIPT.read_text()
    opts = _sbatch_options(text)
    argv = _srun_command(text)
    assert argv[:3] == ["srun", "panda-fm", "pretrain"]
    args = argv[3:]
    config = REPO / args[args.index("--config") + 1]
    overrides = {}
    for i, a in enumerate(args):
        if a.startswith("--") and "." in a and i + 1 < len(args):
            overrides[a[2:]] = args[i + 1]
    if "--devices" in args:
        overrides["trainer.devices"] = args[args.index("--devices") + 1]
    cfg = load_config(config, overrides)
    nodes, tasks, gpus = int(opts["nodes"]), int(opts["ntasks-per-node"]), int(opts["gpus-per-node"])
    assert nodes > 1, "the script is for several nodes"
    assert cfg.trainer.num_nodes == nodes
    assert cfg.trainer.devices == tasks == gpus, "one task per GPU, and Lightning's devices must match"
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.strategy in ("ddp", "auto")
    assert "--data" in args and "--out" in args
    assert "signal" in opts  # lets Lightning save a checkpoint before the time limit
