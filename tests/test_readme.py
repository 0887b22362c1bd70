"""The README's scripts run as they are written (so the docs cannot go stale)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(section: str) -> str:
    text = README.read_text()
    body = text[text.index(f"<!-- section:{section} -->") : text.index(f"<!-- /section:{section} -->")]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


@pytest.mark.parametrize(
    "section, min_accuracy, writes",
    [("own-loop", 0.97, []), ("files", 0.9, ["model.onnx", "model.npz"]), ("inside-pytorch", 0.97, [])],
)
def test_readme_script_runs(tmp_path, section, min_accuracy, writes):
    """The section's script runs in a directory of its own and prints its accuracy last."""
    script = tmp_path / f"{section}.py"
    script.write_text(_section_code(section))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.strip().splitlines()[-1].split()[-1])
    assert accuracy > min_accuracy
    assert all((tmp_path / name).exists() for name in writes)
