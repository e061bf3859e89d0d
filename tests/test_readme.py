"""The README's Python snippets run as written, in order, on the shipped checkpoint.

The snippets use paths relative to the repository root (``checkpoints/panda-fm-small``,
``docs/examples/lorenz.csv``). They run in a temporary directory that links those folders from the
repository, so whatever they write (a fine-tuned checkpoint) lands there and not in the checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINKED = ("checkpoints", "docs")  # folders the snippets read, relative to the repository root


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_python_blocks_are_found() -> None:
    blocks = python_blocks("text\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a\n```\n")
    assert blocks == ["a = 1\n", "b = a\n"]


def test_readme_has_python_snippets() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2, "the README should show zero-shot forecasting and fine-tuning in Python"
    assert any("from_pretrained" in b for b in blocks) and any("fine_tune" in b for b in blocks)


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs in one shared namespace (later blocks use earlier names); any exception fails."""
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks(README.read_text())):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - the point of the test
    forecast = namespace["forecast"]
    assert getattr(forecast, "shape", None) == (256, 3)
    assert (tmp_path / "lorenz-tuned" / "model.safetensors").is_file()
