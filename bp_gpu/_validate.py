"""Input checks at the public API edge: every error says what is wrong and where, in the API's words.

Checks run before any state changes, so a rejected call leaves the model as it was. They accept
NumPy-compatible input, CuPy arrays and any DLPack producer (PyTorch tensors, JAX arrays): an array
already on the backend's device with the right dtype and layout is used as it is (no copy), anything
else is converted once.

Values (NaN/inf features, labels other than 0/1) are checked wherever that costs no wait on a
device: always for host arrays, and for device arrays where the caller reads the device anyway
(``loss``, ``loss_and_grad``). ``train_step`` does not read device inputs' values unless asked
(``check_values=True``), since that would synchronize every step.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def array_module(x: Any) -> Any:
    """cupy for a CuPy array, numpy for anything else."""
    mod = type(x).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    return np


def _device_type(x: Any) -> int | None:
    """The DLPack device type of a producer (1 = CPU, 2 = CUDA, ...), or None if it does not say."""
    try:
        return int(x.__dlpack_device__()[0])
    except Exception:
        return None


def as_array(x: Any, xp: Any, name: str) -> Any:
    """x as a NumPy or CuPy array, without a copy where possible: NumPy and CuPy arrays as they are,
    DLPack producers (``__dlpack__``: PyTorch, JAX) viewed through ``from_dlpack`` in place when they
    live where ``xp`` computes; a producer on another device is copied once; anything else goes
    through ``numpy.asarray``."""
    if isinstance(x, np.ndarray) or array_module(x) is not np:
        return x
    if hasattr(x, "__dlpack__") and not isinstance(x, np.generic):
        on_cpu = _device_type(x) in (None, 1, 3)  # kDLCPU, kDLCUDAHost (pinned host memory)
        try:
            if xp is not np and not on_cpu:
                return xp.from_dlpack(x)  # same device: zero copy
            if on_cpu:
                return np.from_dlpack(x)  # zero copy; a CUDA backend copies it to the device once
            # On a device, wanted on the host: ask the producer for a host copy (DLPack 1.0).
            return np.from_dlpack(x, device="cpu", copy=True)
        except Exception as exc:
            raise TypeError(
                f"{name} ({type(x).__module__}.{type(x).__name__}) could not be read through DLPack: {exc}. "
                "Pass a NumPy array (e.g. tensor.cpu().numpy()) or move it to the backend's device"
            ) from None
    return x


def to_numpy(x: Any) -> np.ndarray:
    """A backend array (NumPy or CuPy) as a NumPy array; NumPy input is returned as it is."""
    if array_module(x) is not np:
        return x.get()
    return np.asarray(x)


def _first_bad(mask: Any) -> tuple[int, ...]:
    """Index of the first True entry of a boolean array (row-major order)."""
    flat = int(to_numpy(mask.ravel().argmax()))
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def numeric(x: Any, name: str) -> Any:
    """x as an array of numbers, by one rule for every input (features, targets, weights; the
    ``.npy`` reader and scikit-learn's ``check_array`` refuse text too): a numeric dtype as it is; an
    object array whose entries are all numbers as float64, else an error at the first entry that is
    not one; text (a string dtype) is refused, even when it spells numbers."""
    xp = array_module(x)
    if xp is np:
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if x.dtype.kind in "biuf":
        return x
    if x.dtype.kind == "O" and xp is np:
        is_number = np.frompyfunc(lambda v: isinstance(v, (numbers.Real, np.bool_)), 1, 1)(x).astype(bool)
        if not is_number.all():
            where = _first_bad(~is_number)
            at, v = f"{name}[{', '.join(map(str, where))}]", x[where]
            if isinstance(v, (str, bytes)):
                raise TypeError(f"{at} = {v!r} is text, not a number; {name} must be numeric (convert it first, e.g. "
                                f"{name}.astype(float))")
            try:
                float(v)
            except (TypeError, ValueError) as exc:  # Python's own words for what the entry is
                raise TypeError(f"{at} = {v!r}: {exc}; {name} must be numeric") from None
            raise TypeError(f"{at} = {v!r} is a {type(v).__name__}, not a number; {name} must be numeric")
        return x.astype(np.float64)
    if x.dtype.kind in "US":
        raise TypeError(f"{name} must be numeric; got an array of dtype {x.dtype} (text): convert it to numbers "
                        f"first (e.g. {name}.astype(float))")
    raise TypeError(f"{name} must be numeric; got an array of dtype {x.dtype}")


def _check_finite(x: Any, name: str) -> None:
    xp = array_module(x)
    if x.dtype.kind != "f":
        return
    finite = xp.isfinite(x)
    if not bool(finite.all()):
        where = _first_bad(~finite)
        value = float(to_numpy(x[where]))
        what = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
        raise ValueError(f"{name}[{', '.join(map(str, where))}] is {what}; {name} must be finite")


def _check_values(x: Any, values: bool | None) -> bool:
    """Whether to read x's values: ``values`` if given, else only when x is on the host."""
    return values if values is not None else array_module(x) is np


def check_features(X: Any, n_features: int, dtype: np.dtype, xp: Any, name: str = "X",
                   values: bool | None = True) -> Any:
    """X as a C-contiguous (n, n_features) array of ``dtype`` in ``xp``, or a clear error.
    ``values``: check that X is finite (None: only a host array, see the module docstring)."""
    X = numeric(as_array(X, xp, name), name)
    if X.ndim != 2:
        hint = ""
        if X.ndim == 1:
            hint = (
                f" Use {name}.reshape(-1, 1) if it holds one feature, or {name}.reshape(1, -1) if it "
                "holds one sample."
            )
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got {X.ndim}-D with shape {tuple(X.shape)}.{hint}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {tuple(X.shape)})")
    if X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features (columns) but the network expects {n_features} "
            "(layer_sizes[0])"
        )
    checked = _check_values(X, values)
    if checked:
        _check_finite(X, name)
    if not (checked and X.dtype.kind == "f" and X.dtype.itemsize > np.dtype(dtype).itemsize):
        return _in_backend(X, xp, dtype)
    with np.errstate(over="ignore"):  # an overflow is reported below, by entry
        out = _in_backend(X, xp, dtype)
    _check_fits(X, out, name)
    return out


def narrowed(X: Any, dtype: np.dtype, xp: Any, name: str = "X") -> Any:
    """X, already checked (``check_features``: 2-D, finite), as a C-contiguous array of ``dtype`` in
    ``xp``, converted once; an entry too large for ``dtype`` is an error, as in ``check_features``."""
    if not (X.dtype.kind == "f" and X.dtype.itemsize > np.dtype(dtype).itemsize):
        return _in_backend(X, xp, dtype)
    with np.errstate(over="ignore"):  # an overflow is reported below, by entry
        out = _in_backend(X, xp, dtype)
    _check_fits(X, out, name)
    return out


def _check_fits(X: Any, out: Any, name: str) -> None:
    """After narrowing finite X to ``out.dtype``: an entry that became inf did not fit. Said so before
    training, instead of a loss that diverges at the first step."""
    xp = array_module(out)
    with np.errstate(over="ignore", invalid="ignore"):
        if bool(xp.isfinite(out.sum())):  # one reduction decides the common case
            return
    finite = xp.isfinite(out)
    if bool(finite.all()):
        return
    where = _first_bad(~finite)
    value = to_numpy(X[where]).item()
    raise ValueError(
        f"{name}[{', '.join(map(str, where))}] = {value!r} does not fit in {out.dtype.name}; "
        "use dtype='float64' or scale your features"
    )


def check_targets(t: Any, n_samples: int, n_outputs: int, dtype: np.dtype, xp: Any, name: str = "t",
                  values: bool | None = True) -> Any:
    """t as a C-contiguous (n, n_outputs) array of ``dtype`` in ``xp`` holding only 0 and 1.
    ``values``: as for ``check_features``."""
    t = numeric(as_array(t, xp, name), name)
    if not (t.ndim == 2 and t.shape[1] == n_outputs) and not (t.ndim == 1 and n_outputs == 1):
        expect = f"(n,) or (n, {n_outputs})" if n_outputs == 1 else f"(n, {n_outputs})"
        raise ValueError(
            f"{name} must have shape {expect} for a network with {n_outputs} output(s); "
            f"got shape {tuple(t.shape)}"
        )
    if t.shape[0] != n_samples:
        raise ValueError(f"{name} has {t.shape[0]} rows but X has {n_samples}; they must match")
    if _check_values(t, values):
        _check_finite(t, name)
        binary = (t == 0) | (t == 1)
        if not bool(binary.all()):
            where = _first_bad(~binary)
            raise ValueError(
                f"{name}[{', '.join(map(str, where))}] = {to_numpy(t[where]).item()!r}; labels must be 0 or 1"
            )
    if t.ndim == 1:
        t = t.reshape(-1, n_outputs)
    return _in_backend(t, xp, dtype)


def _in_backend(x: Any, xp: Any, dtype: np.dtype) -> Any:
    """x as a C-contiguous array of ``dtype`` in ``xp``: x itself when it already is one (a training
    step's inputs usually are: no array-module call, each of which costs a CuPy dispatch), else
    converted once."""
    if type(x) is xp.ndarray and x.dtype == dtype and x.flags.c_contiguous:
        return x
    if xp is np and array_module(x) is not np:
        x = to_numpy(x)
    return xp.ascontiguousarray(xp.asarray(x), dtype=dtype)


def check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
