"""The model file of a fitted ``MLPClassifier``: a plain ``.npz`` file, never a pickle. This module
reads and writes a ``TrainedModel`` and the estimator's hyperparameters; ``MLPClassifier.save`` and
``bp_gpu.load`` are the public calls.

Format (version 2; version 1 files are read too). An uncompressed NumPy ``.npz`` (a zip of ``.npy``
arrays, each with a CRC-32), read with ``allow_pickle=False`` so loading a file cannot run code:

=================  =====================  ==========================================================
key                dtype, shape           content
=================  =====================  ==========================================================
``format``         str, ()                ``"bp_gpu.MLPClassifier"`` (what the file is)
``format_version`` int64, ()              ``2``; a reader refuses versions it does not know
``meta``           str, ()                JSON: see below
``classes``        any non-object, (K,)   ``classes_`` (strings are stored as fixed-width unicode)
``W_l``            dtype, (N_l, N_{l-1})  weights of layer l = 1..L: ``W[i, j] = w_ij^(l)``
``b_l``            dtype, (N_l,)          biases of layer l: ``b[i] = w_i0^(l)``
``optimizer_m``    dtype, (P,) or (0,)    momentum / Adam / LAMB first moment, flat in the engine's layout
``optimizer_v``    dtype, (P,) or (0,)    Adam / LAMB second moment
``feature_mean``   float64, (N_0,)        ``standardize=True`` only: the mean of each feature
``feature_std``    float64, (N_0,)        ``standardize=True`` only: its standard deviation (> 0)
=================  =====================  ==========================================================

The two ``feature_*`` arrays are optional: a file without them is a model without standardisation.
Hyperparameters that a file lacks (it was written before they existed) get their defaults.

``meta`` holds: ``layer_sizes`` [N_0, ..., N_L]; ``positive_class`` (the convention: each output is
``p(t = positive_class | x)``); ``dtype``; ``label_kind`` (binary / multiclass / multilabel);
``hyperparameters`` (``get_params()``; ``random_state`` as an int or null, a Generator/RandomState
being stored as null; files written before ``random_state`` existed have ``seed``, read as
``random_state``); ``optimizer`` (kind, step count, learning-rate schedule
``{kind, peak, warmup_steps, total_steps, final}``, momentum, weight decay); ``train_state`` (epochs
done, loss curve, validation scores, early-stopping counters and the shuffle generator's PCG64 state,
so training resumes exactly; after data-parallel training also ``rank_rngs``, every process's
generator in rank order); ``early_stopping_fit``; ``feature_names`` (``feature_names_in_`` as a
list of strings; null when fitted without names, absent in older files); ``bp_gpu_version``. The
flat layout of the optimizer state is ``[W_1 | ... | W_L | b_1 | ... | b_L]``
with each ``W_l`` row-major, P the number of parameters.

Files are written to a temporary file in the target directory and renamed over the target
(``os.replace``), so a crash never leaves a half-written model under the final name; a killed
writer's temporary is removed by the next save to the same path (``bp_gpu._files``). The bytes
depend on the model alone (every zip entry has the same fixed timestamp): the processes of a
data-parallel job that all save the same model write identical files.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

import numpy as np

from ._files import atomic_write
from ._version import __version__
from .hyperparams import OPTIMIZERS, checked, make_optimizer
from .labels import BINARY, KINDS, MULTICLASS, MULTILABEL
from .mlp import MLP
from .standardize import Standardizer
from .train import TrainState
from .trained import TrainedModel

FORMAT_NAME = "bp_gpu.MLPClassifier"
FORMAT_VERSION = 2
# Version 1 (bp_gpu 0.1) had no schedules: its optimizer record holds a float ``learning_rate``, and
# its hyperparameters lack the ones added since (filled with their defaults when read).
READABLE_VERSIONS = (1, 2)
# Zip entries carry a modification time; a fixed one (the earliest a zip can hold) keeps the bytes a
# function of the model alone.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ModelFileError(ValueError):
    """A file is not a bp_gpu model this version can read; the message says what is wrong."""


def _classes_array(classes: np.ndarray) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        if all(isinstance(c, str) for c in classes):
            return classes.astype(str)
        raise ValueError(
            f"classes_ {list(classes)!r} mix Python types; only numeric or all-string labels can be "
            "saved without pickle"
        )
    if classes.dtype.kind == "V":
        raise ValueError(f"classes_ of dtype {classes.dtype} cannot be saved")
    return classes


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.dtype):
        return x.name
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


def to_arrays(hyper: dict[str, Any], model: TrainedModel) -> dict[str, np.ndarray]:
    """The arrays of the file format for a trained model and the estimator's hyperparameters
    (``get_params()``); also the estimator's pickled state."""
    net, opt = model.net, model.optimizer
    hyper = dict(hyper)
    h = hyper["hidden_layer_sizes"]
    hyper["hidden_layer_sizes"] = (
        [int(h)] if isinstance(h, (int, np.integer)) else [int(n) for n in h]
    )
    rs = hyper["random_state"]  # a Generator/RandomState has no JSON form: stored as None
    hyper["random_state"] = int(rs) if isinstance(rs, (int, np.integer)) else None
    meta = {
        "bp_gpu_version": __version__,
        "layer_sizes": list(net.layer_sizes),
        "positive_class": net.positive_class,
        "dtype": net.dtype.name,
        "label_kind": model.label_kind,
        "hyperparameters": hyper,
        "optimizer": {
            "kind": model.optimizer_name,
            "step_count": opt.step_count,
            "schedule": {
                "kind": opt.schedule.name,
                "peak": opt.schedule.peak,
                "warmup_steps": opt.schedule.warmup_steps,
                "total_steps": opt.schedule.total_steps,
                "final": opt.schedule.final,
            },
            "momentum": getattr(opt, "momentum", 0.0),
            "weight_decay": opt.weight_decay,
        },
        "train_state": model.state.to_dict(),
        "early_stopping_fit": model.early_stopping,
        "feature_names": None if model.feature_names is None else [str(n) for n in model.feature_names],
    }
    m, v = opt.state_arrays()
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "meta": np.array(json.dumps(meta, default=_json_default)),
        "classes": _classes_array(model.classes),
        "optimizer_m": m,
        "optimizer_v": v,
    }
    for l, (W, b) in enumerate(net.get_weights(), start=1):
        arrays[f"W_{l}"], arrays[f"b_{l}"] = W, b
    if model.scaler is not None:
        arrays["feature_mean"] = np.asarray(model.scaler.mean64, dtype=np.float64)
        arrays["feature_std"] = np.asarray(model.scaler.std64, dtype=np.float64)
    return arrays


def write(path: Any, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as an uncompressed ``.npz`` at ``path``, atomically (``bp_gpu._files``). What
    ``numpy.savez`` writes, with a fixed timestamp on every entry (see the module docstring)."""
    with atomic_write(path) as f, zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED,
                                                  allowZip64=True) as z:
        for key, a in arrays.items():
            with z.open(zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME), "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(a), allow_pickle=False)


def save(path: Any, hyper: dict[str, Any], model: TrainedModel) -> None:
    """Write a trained model and its estimator's hyperparameters to ``path`` (atomically; see the
    module docstring). A local call: it never waits on other processes."""
    write(path, to_arrays(hyper, model))


def _schedule(kind: str, peak: float, warmup_steps: int, total_steps: int, final: float) -> Any:
    from . import optim

    if kind == "constant":
        return optim.constant(peak)
    if kind not in ("warmup_cosine", "warmup_linear"):
        raise ValueError(f"unknown learning-rate schedule {kind!r}")
    return getattr(optim, kind)(peak, warmup_steps, total_steps, final)


def read(path: str) -> dict[str, np.ndarray]:
    """Every array of the .npz, read (and CRC-checked) now; errors become ModelFileError."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ModelFileError(
                f"{path}: not a bp_gpu model file (a single .npy array, not an .npz)"
            )
        with f:
            return {k: f[k] for k in f.files}
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(
            f"{path}: not a bp_gpu model file, or a truncated/corrupt one ({exc})"
        ) from None
    except ValueError as exc:  # pickled or non-NumPy content
        raise ModelFileError(f"{path}: not a bp_gpu model file ({exc})") from None
    except OSError as exc:
        if isinstance(exc, (PermissionError, IsADirectoryError)):
            raise
        raise ModelFileError(
            f"{path}: not a bp_gpu model file, or a truncated/corrupt one ({exc})"
        ) from None


def from_arrays(arrays: dict[str, np.ndarray], path: str, defaults: dict[str, Any], backend: str | None = None
                ) -> tuple[dict[str, Any], TrainedModel]:
    """``(hyperparameters, trained model)`` from the format's arrays, every part validated.
    ``path`` names the source in errors; ``defaults`` are the estimator's default hyperparameters
    (for those a file lacks: it was written before they existed); ``backend`` overrides the saved
    ``backend`` hyperparameter."""

    def need(key: str) -> np.ndarray:
        if key not in arrays:
            raise ModelFileError(
                f"{path}: not a complete bp_gpu model file: the array {key!r} is missing"
            )
        return arrays[key]

    fmt = need("format")
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT_NAME:
        raise ModelFileError(
            f"{path}: not a bp_gpu model file (format {fmt!r}, expected {FORMAT_NAME!r})"
        )
    version = need("format_version")
    if version.shape != () or version.dtype.kind not in "iu":
        raise ModelFileError(f"{path}: format_version must be an integer scalar; got {version!r}")
    if int(version) not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{path}: format version {int(version)} is not supported: this bp_gpu "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
            + (" (the file is newer: upgrade bp_gpu)" if int(version) > FORMAT_VERSION else "")
        )
    try:
        meta = json.loads(str(need("meta")))
        sizes = [int(n) for n in meta["layer_sizes"]]
        positive_class = int(meta["positive_class"])
        dtype = np.dtype(meta["dtype"])
        kind = meta["label_kind"]
        hyper = dict(meta["hyperparameters"])
        o = meta["optimizer"]
        opt_kind, step_count = o["kind"], int(o["step_count"])
        mom, wd = float(o["momentum"]), float(o["weight_decay"])
        if int(version) == 1:
            lr = float(o["learning_rate"])
        else:
            sc = o["schedule"]
            lr = _schedule(sc["kind"], float(sc["peak"]), int(sc["warmup_steps"]), int(sc["total_steps"]),
                           float(sc["final"]))
        state = TrainState.from_dict(meta["train_state"])
        early = bool(meta["early_stopping_fit"])
        names = meta.get("feature_names")  # absent in files written before it existed
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"feature_names must be a list of strings; got {names!r}")
            if len(names) != sizes[0]:
                raise ModelFileError(
                    f"{path}: feature_names has {len(names)} names but the model has {sizes[0]} inputs"
                )
            names = np.array(names, dtype=object)
    except ModelFileError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"{path}: the 'meta' record is malformed ({type(exc).__name__}: {exc})"
        ) from None
    if kind not in KINDS:
        raise ModelFileError(
            f"{path}: label_kind {kind!r} is not one of binary, multiclass, multilabel"
        )

    known = set(defaults)
    if "random_state" not in hyper:  # written before random_state replaced seed: its seed is the int
        hyper["random_state"], hyper["seed"] = hyper.get("seed"), None
    hyper = {**{k: defaults[k] for k in known - set(hyper)}, **hyper}  # added since the file was written
    if set(hyper) != known:
        raise ModelFileError(f"{path}: hyperparameters {sorted(set(hyper) - known)} are unknown")
    if isinstance(hyper["hidden_layer_sizes"], list):
        hyper["hidden_layer_sizes"] = tuple(hyper["hidden_layer_sizes"])
    if backend is not None:
        hyper["backend"] = backend
    try:
        checked(hyper)
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes {sizes} needs at least 2 entries")
        net = MLP(sizes, positive_class=positive_class, dtype=dtype, backend=hyper["backend"], seed=0,
                  precision=hyper["precision"])
        weights = [(need(f"W_{l}"), need(f"b_{l}")) for l in range(1, len(sizes))]
        for (W, b), name in zip(weights, range(1, len(sizes))):
            if W.dtype != dtype or b.dtype != dtype:
                raise ValueError(
                    f"W_{name}/b_{name} have dtype {W.dtype}/{b.dtype}, the file says {dtype}"
                )
        net.set_weights(weights)
        if opt_kind not in OPTIMIZERS:
            raise ValueError(f"optimizer kind {opt_kind!r} is not one of {', '.join(OPTIMIZERS)}")
        opt = make_optimizer(opt_kind, net, lr, mom, wd)
        opt.load_state(need("optimizer_m"), need("optimizer_v"), step_count)
    except ModelFileError:
        raise
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None

    classes = need("classes")
    n_out = sizes[-1]
    expect = {BINARY: 2, MULTICLASS: n_out, MULTILABEL: n_out}[kind]
    if classes.ndim != 1 or len(classes) != expect or (kind == BINARY and n_out != 1):
        raise ModelFileError(
            f"{path}: classes has shape {classes.shape} but a {kind} model with "
            f"{n_out} output(s) needs ({expect},)"
        )
    if kind == MULTICLASS and n_out < 3:
        raise ModelFileError(f"{path}: a multiclass model needs at least 3 outputs; it has {n_out}")
    if state.n_iter != len(state.loss_curve):
        raise ModelFileError(
            f"{path}: train_state has n_iter={state.n_iter} but {len(state.loss_curve)} loss values"
        )
    scaler = _standardizer(arrays, path, sizes[0], dtype, bool(hyper["standardize"]))
    return hyper, TrainedModel(net, opt, opt_kind, state, kind, classes, scaler, names, early_stopping=early)


def _standardizer(arrays: dict[str, np.ndarray], path: str, n_features: int, dtype: np.dtype, wanted: bool) -> Any:
    """The model's standardisation from the optional ``feature_mean``/``feature_std`` arrays."""
    have = [k for k in ("feature_mean", "feature_std") if k in arrays]
    if not have:
        if wanted:
            raise ModelFileError(f"{path}: the model was trained with standardize=True but the arrays "
                                 "'feature_mean' and 'feature_std' are missing")
        return None
    if len(have) == 1:
        raise ModelFileError(f"{path}: the array {have[0]!r} is there without its pair")
    if not wanted:
        raise ModelFileError(f"{path}: the file holds feature_mean/feature_std but standardize is False")
    mean, std = arrays["feature_mean"], arrays["feature_std"]
    for name, a in (("feature_mean", mean), ("feature_std", std)):
        if a.shape != (n_features,) or a.dtype != np.float64:
            raise ModelFileError(f"{path}: {name} must be float64 of shape ({n_features},); got {a.dtype} "
                                 f"{a.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ModelFileError(f"{path}: feature_mean must be finite and feature_std finite and > 0")
    return Standardizer(mean, std, dtype)
