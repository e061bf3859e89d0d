"""The notebooks run top to bottom (nbclient, a python3 kernel on this interpreter), from notebooks/.

The quickstart and fine-tuning notebooks use the shipped checkpoint; in a checkout without it they fall
back to the tiny test checkpoint, so the notebooks' code is exercised either way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHIPPED = ROOT / "checkpoints" / "panda-fm-small"
TINY = ROOT / "tests" / "fixtures" / "tiny_panda"
NAMES = ("quickstart", "fine_tuning", "generating_systems")
BUDGET_S = 180  # each notebook must run in under 3 minutes on the development CPU


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: strip outputs"
    # The kernel inherits this environment: the checkout on its path, one thread, no display.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PANDA_FM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PANDA_FM_FIGURES", raising=False)
    if not SHIPPED.is_dir():
        monkeypatch.setenv("PANDA_FM_CHECKPOINT", str(TINY))
    else:
        monkeypatch.delenv("PANDA_FM_CHECKPOINT", raising=False)
    # The "python3" kernel is this interpreter, whatever kernelspecs are installed elsewhere: a spec of our
    # own comes first on JUPYTER_PATH; an inserted first cell (not saved) checks it.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    check = f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable"
    nb.cells.insert(0, nbformat.v4.new_code_cell(check))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s (budget {BUDGET_S} s)"
