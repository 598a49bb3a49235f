"""The README's Python snippets run as written: each ```python block alone, in a fresh interpreter, in
an empty folder, with only the repository on the path (``bash`` blocks are commands, not checked)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every ```python block of ``text``, its first line numbered from 1."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text())


def test_the_readme_has_python_blocks_and_the_extraction_finds_them():
    assert len(BLOCKS) >= 2
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\nz = 3\n")]


def run_alone(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TQDM_DISABLE": "1",
    }
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_block_that_needs_another_blocks_names_fails(tmp_path):
    """The check can fail: a block using a name it does not import exits non-zero."""
    failed = run_alone("from rvsp_jax.io.store import open_run\nTrainConfig(seeds=2)\n", tmp_path)
    assert failed.returncode != 0 and "NameError: name 'TrainConfig' is not defined" in failed.stderr


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_every_python_block_of_the_readme_runs_alone(line, code, tmp_path):
    done = run_alone(code, tmp_path)
    assert done.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr ---\n{done.stderr[-4000:]}"
