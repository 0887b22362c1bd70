"""Feature names of DataFrame inputs, with scikit-learn's rules and messages (``feature_names_in_``).

The same semantics as ``sklearn.utils.validation._get_feature_names`` and ``_check_feature_names``
(scikit-learn 1.6+, earlier a ``BaseEstimator`` method), written out here because scikit-learn is
optional and those functions are private: only all-string column names count as names (integer
labels are no names, a mix of strings and other types is an error); a check against the names of
``fit`` raises when the names differ or are reordered and warns when only one side has names.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def feature_names(X: Any) -> np.ndarray | None:
    """The column names of a DataFrame ``X`` (pandas, polars: anything with ``columns``) as an object
    array, or None for an array, for no columns, or for names that are not all strings."""
    columns = getattr(X, "columns", None)
    if columns is None or isinstance(X, np.ndarray):
        return None
    names = np.asarray(list(columns), dtype=object)
    if len(names) == 0:
        return None
    types = sorted({type(v).__qualname__ for v in names})
    if len(types) > 1 and "str" in types:
        raise TypeError(
            "Feature names are only supported if all input features have string names, but your "
            f"input has {types} as feature name / column name types. If you want feature names to be "
            "stored and validated, you must convert them all to strings, by using "
            "X.columns = X.columns.astype(str) for example. Otherwise you can remove feature / column "
            "names from your input data, or convert them all to a non-string data type."
        )
    return names if types == ["str"] else None


def _listed(names: list[str]) -> str:
    shown = [f"- {n}\n" for n in names[:5]]
    return "".join(shown) + ("- ...\n" if len(names) > 5 else "")


def check_feature_names(fitted: np.ndarray | None, X: Any, owner: str = "MLPClassifier") -> None:
    """Check the names of ``X`` against ``fitted``, the names ``owner`` saw at ``fit`` (its
    ``feature_names_in_``, or None): a ValueError listing the unseen and missing names, or saying the
    order differs; a UserWarning when only one of the two has names."""
    given = feature_names(X)
    if fitted is None and given is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {owner} was fitted without feature names", UserWarning, stacklevel=3)
        return
    if given is None:
        warnings.warn(
            f"X does not have valid feature names, but {owner} was fitted with feature names", UserWarning, stacklevel=3
        )
        return
    if len(fitted) == len(given) and np.all(fitted == given):
        return
    message = "The feature names should match those that were passed during fit.\n"
    unseen = sorted(set(given) - set(fitted))
    missing = sorted(set(fitted) - set(given))
    if unseen:
        message += "Feature names unseen at fit time:\n" + _listed(unseen)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + _listed(missing)
    if not unseen and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)
