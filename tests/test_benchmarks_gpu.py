"""benchmarks/gpu_throughput.py on the CPU with tiny configs, so that the GPU benchmark runs the day a GPU is
lent: both designs measured, failures recorded rather than raised, the time bound kept."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMOKE = ["--device", "cpu", "--dtype", "fp32", "--tiny", "--steps", "2", "--warmup", "1", "--threads", "1"]


@pytest.fixture
def gpu_throughput(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The script as a module (benchmarks/ on sys.path for its sibling imports); torch's thread count, which
    ``--threads`` sets, restored afterwards."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()
    yield importlib.import_module("gpu_throughput")
    torch.set_num_threads(threads)


def _read(out: Path) -> tuple[dict, str]:
    return json.loads((out / "gpu_throughput.json").read_text()), (out / "gpu_throughput.md").read_text()


def test_both_designs_measured_on_cpu(gpu_throughput: ModuleType, tmp_path: Path) -> None:
    assert gpu_throughput.main([*SMOKE, "--out", str(tmp_path)]) == 0
    report, table = _read(tmp_path)
    results = report["results"]
    assert set(results) == {"shipped", "21m"}
    assert set(results["shipped"]) == {"experts", "none"}  # with and without the in-context experts
    assert set(results["21m"]) == {"none"}
    for design, variants in results.items():
        for incontext, kinds in variants.items():
            inference, training = kinds["inference"], kinds["training"]
            assert "error" not in inference and "error" not in training, (design, incontext, kinds)
            assert inference["forecasts_per_s"] > 0 and training["windows_per_s"] > 0
            assert inference["batch"] == training["batch"] == gpu_throughput.TINY_BATCH
            assert inference["peak_memory_gib"] is None  # CUDA only
            if incontext == "none":  # the network's FLOPs against the matmul rate
                assert inference["matmul_fraction"] > 0 and training["matmul_fraction"] > 0
    assert report["designs"]["shipped"]["model"]["incontext"] == "experts"
    assert report["designs"]["shipped"]["trainer"]["loss"] == "smape"
    assert report["environment"]["torch"] == torch.__version__
    assert report["summary"]["shipped_experts_inference_slowdown"] > 0
    assert "| shipped | experts |" in table and "| 21m | none |" in table


def test_out_of_memory_is_recorded_and_the_rest_goes_on(
    gpu_throughput: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> dict:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(gpu_throughput, "measure_inference", out_of_memory)
    assert gpu_throughput.main([*SMOKE, "--designs", "21m", "--out", str(tmp_path)]) == 0
    report, table = _read(tmp_path)
    kinds = report["results"]["21m"]["none"]
    assert kinds["inference"]["error"].startswith("out of memory")
    assert kinds["training"]["windows_per_s"] > 0
    assert "out of memory" in table


def test_time_bound_skips_what_it_cannot_measure(gpu_throughput: ModuleType, tmp_path: Path) -> None:
    assert gpu_throughput.main([*SMOKE, "--max-seconds", "0.001", "--out", str(tmp_path)]) == 1
    report, _ = _read(tmp_path)
    kinds = [k for variants in report["results"].values() for v in variants.values() for k in v.values()]
    assert len(kinds) == 6 and all("skipped" in k for k in kinds)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_no_cuda_names_the_fix(
    gpu_throughput: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_throughput.main(["--out", str(tmp_path / "out")]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # failed before any work
