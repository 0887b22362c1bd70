"""The README's scripts run as they are written (so the docs cannot go stale)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(section: str) -> str:
    text = README.read_text()
    body = text[text.index(f"<!-- section:{section} -->") : text.index(f"<!-- /section:{section} -->")]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_own_training_loop_script_runs(tmp_path):
    script = tmp_path / "own_loop.py"
    script.write_text(_section_code("own-loop"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.strip().splitlines()[-1].split()[-1])
    assert accuracy > 0.97


def test_training_from_files_script_runs(tmp_path):
    script = tmp_path / "from_files.py"
    script.write_text(_section_code("files"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.strip().splitlines()[-1].split()[-1])
    assert accuracy > 0.9
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "model.npz").exists()
