"""``bp-gpu export MODEL.npz MODEL.onnx``: a saved model as an ONNX model (``MLPClassifier.to_onnx``).

The ONNX model takes the raw features as input ``X`` (float32, ``[N, n_features]``; a model
trained with --standardize standardises them in the graph) and has two outputs: ``label`` (what
``bp-gpu predict`` writes as ``prediction``) and ``probabilities`` (its ``proba_<class>``
columns). It uses standard operators only (opset 17) and passes ``onnx.checker``; any ONNX runtime
can serve it. Needs the onnx package: pip install 'bp_gpu[onnx]'. Written atomically.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a saved model as an ONNX model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="a model file written by 'bp-gpu train' or MLPClassifier.save")
    p.add_argument("out", metavar="OUT.onnx", help="where to write the ONNX model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..classifier import load
    from . import CLIError
    from ._paths import check_input, check_outputs

    check_input(args.model)
    check_outputs([("the output", args.out)], [("MODEL", args.model, "the model")])
    clf = load(args.model, backend="cpu")  # exporting reads the weights only: no GPU needed
    try:
        clf.to_onnx(args.out)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    sizes = list(clf.net_.layer_sizes)
    scaled = "standardised in the graph" if clf.feature_mean_ is not None else "used as they are"
    print(f"wrote {args.out}: network {sizes}, {clf._label_kind}, classes {clf.classes_.tolist()!r}; "
          f"input X float32 [N, {sizes[0]}] ({scaled}); outputs label, probabilities")
    return 0
