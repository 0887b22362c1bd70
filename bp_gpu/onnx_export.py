"""A trained network as an ONNX model, from its NumPy weights: ``export_onnx``.

The graph uses standard operators only (opset 17, ONNX's default domain): ``Sub`` and ``Div`` for
the standardisation, one ``Gemm`` and one ``Sigmoid`` per hidden layer, a ``Gemm`` and the stable
sigmoid (below) for the output layer, then the classifier's own post-processing (``Sub``/``Concat``,
``ReduceSum``/``Greater``/``Where``/``Div``, ``ArgMax``/``Gather``, ``Cast``). Its input is ``X``
(float32, ``[N, n_features]``), its outputs are

- ``probabilities`` ``[N, n_classes]``: what ``MLPClassifier.predict_proba`` returns: binary
  ``[1 - p, p]`` with ``p = p(classes[1] | x)``; multi-class the K sigmoids divided by their sum,
  or ``1/K`` in a row where every sigmoid underflowed to 0; multi-label the K sigmoids.
- ``label`` ``[N]``: the class values (``classes`` as int64, double or string), the first class
  of largest probability, as ``predict``; for multi-label the ``[N, K]`` 0/1 int64 matrix
  ``probabilities > 0.5``.

Choices:

- Standardisation is two element-wise nodes, ``(X - mean) / std``, not folded into the first
  ``Gemm``. Folding (``W' = W / std``, ``b' = b - W' mean``) would compute ``W' x - W' mean``, a
  difference of two large numbers when the means are large against the spreads, and lose digits
  that the separate subtraction keeps; the two nodes cost one pass over ``X``.
- ``positive_class=0``: the network's output is ``y = sigma(a) = p(t = 0 | x)``, so
  ``p(t = 1 | x) = 1 - sigma(a) = sigma(-a)``: the export negates the last layer's weights and bias,
  which is exact (negation is exact in floating point) and never rounds ``1 - y``.
- The output layer's sigmoid is written out as bp_gpu computes it,
  ``sigma(a) = [a >= 0 ? 1 : e] / (1 + e)`` with ``e = exp(-|a|)`` (``Abs``, ``Neg``, ``Exp``,
  ``GreaterOrEqual``, ``Where``, ``Add``, ``Div``), not as ``Sigmoid``: ONNX Runtime's float32
  ``Sigmoid`` returns 0 below about ``a = -17`` (measured with onnxruntime 1.32; in float64 the
  cut is between -20 and -50), which would turn a multi-class row whose sigmoids are all small into a uniform row,
  where ``predict_proba`` still normalises them. In the hidden layers that flush costs less than
  1e-7 absolute, so they keep the single ``Sigmoid`` node.
- The graph computes in the weights' dtype: float32 weights give a float32 graph and float32
  probabilities; float64 weights cast ``X`` to double once and give float64 probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._files import atomic_write

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17 (onnx/helper.py, VERSION_TABLE): readable by older runtimes
LABEL_KINDS = ("binary", "multiclass", "multilabel")


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'bp_gpu[onnx]'") from None
    return onnx


def _check_layers(layers: Sequence[tuple[Any, Any]]) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.dtype]:
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError("layers must be a non-empty list of (W, b) pairs")
    out = []
    for l, pair in enumerate(layers, start=1):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"layers[{l - 1}] must be a (W, b) pair")
        W, b = (np.asarray(a) for a in pair)
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"layer {l}: W must be (N_l, N_(l-1)) and b (N_l,); got {W.shape} and {b.shape}")
        if W.dtype.kind != "f" or b.dtype.kind != "f":
            raise ValueError(f"layer {l}: weights must be floating point; got {W.dtype} and {b.dtype}")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ValueError(f"layer {l}: weights must be finite")
        if out and W.shape[1] != out[-1][0].shape[0]:
            raise ValueError(f"layer {l}: W has {W.shape[1]} inputs but layer {l - 1} has "
                             f"{out[-1][0].shape[0]} outputs")
        out.append((W, b))
    dtype = np.dtype(np.float32) if all(a.dtype == np.float32 for p in out for a in p) else np.dtype(np.float64)
    return [(W.astype(dtype), b.astype(dtype)) for W, b in out], dtype


def _classes_tensor(classes: Any) -> np.ndarray:
    """``classes`` as an array ONNX can hold: int64, float64 or strings (object array of str)."""
    c = np.asarray(classes)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError(f"classes must be a non-empty 1-D array; got shape {c.shape}")
    if c.dtype.kind in "biu":
        return c.astype(np.int64)
    if c.dtype.kind == "f":
        return c.astype(np.float64)
    if c.dtype.kind in "US" or (c.dtype.kind == "O" and all(isinstance(v, str) for v in c)):
        return np.array([str(v) for v in c], dtype=object)
    raise ValueError(f"classes must be integers, floats or strings; got dtype {c.dtype}")


def export_onnx(
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    positive_class: int,
    label_kind: str,
    classes: Any,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    path: str | os.PathLike,
) -> None:
    """Write the network ``layers`` (``[(W_1, b_1), ..., (W_L, b_L)]``, ``W_l`` of shape
    ``(N_l, N_{l-1})``, as ``MLP.get_weights()`` returns) as an ONNX model to ``path``, atomically.

    ``positive_class`` is the network's convention (each output is ``p(t = positive_class | x)``),
    ``label_kind`` one of ``"binary"`` (one output, two ``classes``), ``"multiclass"`` (K outputs,
    K ``classes``) or ``"multilabel"`` (K outputs; ``classes`` are the K label indices). ``mean`` and
    ``std`` (both or neither, shape ``(N_0,)``) standardise ``X`` first. See the module docstring for
    the graph, its inputs and outputs. The model passes ``onnx.checker.check_model``.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    net, dtype = _check_layers(layers)
    if isinstance(positive_class, bool) or positive_class not in (0, 1):
        raise ValueError(f"positive_class must be 0 or 1; got {positive_class!r}")
    if label_kind not in LABEL_KINDS:
        raise ValueError(f"label_kind must be one of {LABEL_KINDS}; got {label_kind!r}")
    n_in, n_out = net[0][0].shape[1], net[-1][0].shape[0]
    cls = _classes_tensor(classes)
    expected = 1 if label_kind == "binary" else len(cls)
    if label_kind == "binary" and len(cls) != 2:
        raise ValueError(f"a binary model has 2 classes; got {len(cls)}")
    if n_out != expected:
        raise ValueError(f"the last layer has {n_out} outputs but a {label_kind} model with {len(cls)} classes "
                         f"needs {expected}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None:
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if mean.shape != (n_in,) or std.shape != (n_in,):
            raise ValueError(f"mean and std must have shape ({n_in},); got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("mean must be finite and std finite and > 0")

    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: Any) -> str:
        if name not in {t.name for t in inits}:
            inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    z = "X" if dtype == np.float32 else node("Cast", ["X"], "X_double", to=TensorProto.DOUBLE)
    if mean is not None:
        z = node("Sub", [z, const("mean", mean.astype(dtype))], "X_centred")
        z = node("Div", [z, const("std", std.astype(dtype))], "X_standardised")
    one = np.array(1.0, dtype)
    for l, (W, b) in enumerate(net, start=1):
        if l == len(net) and positive_class == 0:
            W, b = -W, -b  # sigma(-a) = 1 - sigma(a): outputs become p(t = 1 | x)
        a = node("Gemm", [z, const(f"W_{l}", W), const(f"b_{l}", b)], f"a_{l}", transB=1)
        if l < len(net):
            z = node("Sigmoid", [a], f"z_{l}")
            continue
        # The output sigmoid in its stable form (module docstring): [a >= 0 ? 1 : e] / (1 + e).
        e = node("Exp", [node("Neg", [node("Abs", [a], "abs_a")], "minus_abs_a")], "exp_minus_abs_a")
        top = node("Where", [node("GreaterOrEqual", [a, const("zero", np.array(0.0, dtype))], "a_nonnegative"),
                             const("one", one), e], "sigmoid_numerator")
        z = node("Div", [top, node("Add", [const("one", one), e], "one_plus_e")], f"z_{l}")
    if label_kind == "binary":
        q = node("Sub", [const("one", one), z], "p_class0")
        proba = node("Concat", [q, z], "probabilities", axis=1)
    elif label_kind == "multiclass":
        s = node("ReduceSum", [z, const("axis_1", np.array([1], np.int64))], "sigmoid_sum", keepdims=1)
        pos = node("Greater", [s, const("zero", np.array(0.0, dtype))], "sum_positive")
        safe = node("Where", [pos, s, const("one", one)], "sum_or_one")
        ratio = node("Div", [z, safe], "normalised")
        # A row whose every sigmoid underflowed to 0 carries no preference: uniform (as predict_proba).
        proba = node("Where", [pos, ratio, const("uniform", np.array(1.0 / n_out, dtype))], "probabilities")
    else:
        proba = node("Identity", [z], "probabilities")
    if label_kind == "multilabel":
        above = node("Greater", [proba, const("half", np.array(0.5, dtype))], "above_half")
        node("Cast", [above], "label", to=TensorProto.INT64)
        label_info = helper.make_tensor_value_info("label", TensorProto.INT64, ["N", n_out])
    else:
        idx = node("ArgMax", [proba], "class_index", axis=1, keepdims=0)
        node("Gather", [const("classes", cls), idx], "label", axis=0)
        label_type = {"i": TensorProto.INT64, "f": TensorProto.DOUBLE, "O": TensorProto.STRING}[cls.dtype.kind]
        label_info = helper.make_tensor_value_info("label", label_type, ["N"])
    n_classes = n_out if label_kind != "binary" else 2
    graph = helper.make_graph(
        nodes, "bp_gpu_mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_in])],
        [label_info, helper.make_tensor_value_info("probabilities", elem, ["N", n_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bp_gpu",
                              ir_version=IR_VERSION)
    model.doc_string = (f"bp_gpu sigmoid MLP {[n_in] + [W.shape[0] for W, _ in net]}, {label_kind}; "
                        f"inputs {'standardised in the graph' if mean is not None else 'used as they are'}")
    onnx.checker.check_model(model, full_check=True)
    with atomic_write(path) as f:  # errors name the path, never the temporary (bp_gpu._files)
        f.write(model.SerializeToString())
