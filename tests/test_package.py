"""`import bp_gpu` reaches its subpackages as attributes, imported on first use (as SciPy's are)."""

import subprocess
import sys

import pytest

import bp_gpu


def test_subpackages_are_attributes_imported_on_first_use():
    code = """
import sys
import bp_gpu
assert "bp_gpu.data" not in sys.modules and "bp_gpu.classifier" not in sys.modules
assert {"data", "optim", "MLP", "MLPClassifier", "load"} <= set(dir(bp_gpu))
print(bp_gpu.data.open.__module__, bp_gpu.optim.SGD.__name__, bp_gpu.data is sys.modules["bp_gpu.data"])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bp_gpu.data", "SGD", "True"]


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'bp_gpu' has no attribute 'nosuch'"):
        bp_gpu.nosuch  # noqa: B018
    assert not hasattr(bp_gpu, "nosuch")


@pytest.fixture
def package_dir(tmp_path, monkeypatch):
    """bp_gpu's search path with a folder of our own in it, and no bp_gpu.torch imported yet."""
    monkeypatch.setattr(bp_gpu, "__path__", [*bp_gpu.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "bp_gpu.torch", raising=False)
    monkeypatch.delattr(bp_gpu, "torch", raising=False)
    return tmp_path


def test_torch_is_picked_up_once_it_exists(package_dir, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("bp_gpu.torch") is None:  # before the torch module is merged: absent
        assert "torch" not in dir(bp_gpu) and not hasattr(bp_gpu, "torch")
        (package_dir / "torch.py").write_text("WHAT = 'bp_gpu.torch'\n")  # stands in for it (no slow torch import)
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed (the test extra has it)")
    monkeypatch.delattr(bp_gpu, "torch", raising=False)
    assert "torch" in dir(bp_gpu)
    assert bp_gpu.torch is sys.modules["bp_gpu.torch"]


def test_torch_without_pytorch_names_the_extra(package_dir, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("bp_gpu.torch") is None:
        (package_dir / "torch.py").write_text("import torch\n")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as when it is not installed
    assert "torch" not in dir(bp_gpu)
    # bp_gpu's own message (the module's, or the package's for a plain `import torch` in it) names the extra.
    with pytest.raises(ImportError, match=r"pip install 'bp_gpu\[torch\]'"):
        bp_gpu.torch  # noqa: B018
