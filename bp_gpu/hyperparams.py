"""``MLPClassifier``'s hyperparameters: each one checked and normalised, with a message naming it; the
optimizer an ``optimizer=`` name stands for, and the learning-rate schedule the parameters describe."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .mlp import DTYPES
from .optim import LAMB, SGD, Adam, AdamW, Optimizer, Schedule, warmup_cosine, warmup_linear
from .precision import check_precision

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lamb")
LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")
FLAGS = ("early_stopping", "verbose", "standardize", "distributed")


def check_real(name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (math.isfinite(value) and lo_ok and hi_ok):
        lb, hb = ("(" if low_open else "["), (")" if high_open or high == math.inf else "]")
        hi = "inf" if high == math.inf else f"{high:g}"
        raise ValueError(f"{name} must be finite and in {lb}{low:g}, {hi}{hb}; got {value!r}")
    return float(value)


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return int(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def checked(params: dict[str, Any]) -> dict[str, Any]:
    """Every constructor argument of ``MLPClassifier`` (``get_params()``) validated and normalised;
    raises naming the bad one. ``hidden`` is the tuple of hidden widths, ``dtype`` a NumPy dtype."""
    h = params["hidden_layer_sizes"]
    if isinstance(h, numbers.Integral) and not isinstance(h, bool):
        h = (h,)
    if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__"):
        raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints; got {h!r}")
    hidden = tuple(check_int(f"hidden_layer_sizes[{k}]", n, 1) for k, n in enumerate(h))
    _choice("optimizer", params["optimizer"], OPTIMIZERS)
    _choice("lr_schedule", params["lr_schedule"], LR_SCHEDULES)
    pc = params["positive_class"]
    if isinstance(pc, bool) or pc not in (0, 1):
        raise ValueError(f"positive_class must be 0 or 1; got {pc!r}")
    try:
        dtype = np.dtype(params["dtype"])
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {params['dtype']!r}")
    precision = check_precision(params["precision"], dtype)
    _choice("backend", params["backend"], ("auto", "cpu", "cuda"))
    rs, seed = params["random_state"], params["seed"]
    if seed is not None:
        if rs is not None:
            raise ValueError("seed is a deprecated alias of random_state; give random_state only")
        check_int("seed", seed, 0)
    if not (rs is None or isinstance(rs, (np.random.Generator, np.random.RandomState))
            or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0)):
        raise ValueError("random_state must be None, an int >= 0, a numpy.random.Generator or a "
                         f"numpy.random.RandomState; got {rs!r}")
    for name in FLAGS:
        if not isinstance(params[name], (bool, np.bool_, numbers.Integral)):
            raise TypeError(f"{name} must be a bool; got {params[name]!r}")
    return {
        "hidden": hidden,
        "optimizer": params["optimizer"],
        "lr_schedule": params["lr_schedule"],
        "learning_rate": check_real("learning_rate", params["learning_rate"], 0.0, low_open=True),
        "warmup_epochs": check_real("warmup_epochs", params["warmup_epochs"], 0.0),
        "final_learning_rate": check_real("final_learning_rate", params["final_learning_rate"], 0.0),
        "momentum": check_real("momentum", params["momentum"], 0.0, 1.0, high_open=True),
        "batch_size": check_int("batch_size", params["batch_size"], 1),
        "epochs": check_int("epochs", params["epochs"], 1),
        "weight_decay": check_real("weight_decay", params["weight_decay"], 0.0),
        "validation_fraction": check_real("validation_fraction", params["validation_fraction"], 0.0, 1.0,
                                          low_open=True, high_open=True),
        "n_iter_no_change": check_int("n_iter_no_change", params["n_iter_no_change"], 1),
        "tol": check_real("tol", params["tol"], 0.0),
        "dtype": dtype,
        "precision": precision,
        "positive_class": int(pc),
        "backend": params["backend"],
        **{name: bool(params[name]) for name in FLAGS},
    }


def make_optimizer(name: str, net: Any, learning_rate: float | Schedule, momentum: float,
                   weight_decay: float) -> Optimizer:
    """The ``bp_gpu.optim`` optimizer an ``optimizer=`` name stands for (``momentum`` only for
    "momentum")."""
    if name == "sgd":
        return SGD(net, learning_rate, weight_decay=weight_decay)
    if name == "momentum":
        return SGD(net, learning_rate, momentum=momentum, weight_decay=weight_decay)
    return {"adam": Adam, "adamw": AdamW, "lamb": LAMB}[name](net, learning_rate, weight_decay=weight_decay)


def learning_rate(p: dict[str, Any], steps_per_epoch: int) -> float | Schedule:
    """The rate, or the schedule over the ``epochs`` of a fit, that the checked parameters ``p``
    describe for epochs of ``steps_per_epoch`` steps (schedules count steps)."""
    if p["lr_schedule"] == "constant":
        return p["learning_rate"]
    total = max(1, p["epochs"] * steps_per_epoch)
    warmup = min(total, int(round(p["warmup_epochs"] * steps_per_epoch)))
    make = warmup_cosine if p["lr_schedule"] == "warmup_cosine" else warmup_linear
    return make(p["learning_rate"], warmup, total, p["final_learning_rate"])
