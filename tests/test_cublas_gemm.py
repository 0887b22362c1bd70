"""The cuBLAS GEMM arguments the CUDA backend prepares, checked without a GPU: a column-major GEMM
emulated in NumPy on the operands' raw memory must give ``a @ b`` for every layout the engine uses,
including the size-1 dimensions where contiguity flags change the transposes."""

import numpy as np
import pytest

from bp_gpu.cublas_gemm import OP_N, gemm_arguments


def _op(flat, rows, cols, ld, trans):
    """op(M) for a (rows x cols) = op(M) operand stored column-major in ``flat``: M itself is stored
    rows x cols (OP_N) or cols x rows (OP_T), element (i, j) at flat[i + j * ld]."""
    r, c = (rows, cols) if trans == OP_N else (cols, rows)
    M = np.array([[flat[i + j * ld] for j in range(c)] for i in range(r)])
    return M if trans == OP_N else M.T


def _emulate(a, b):
    """C = a @ b through the cublasGemmEx arguments, reading each operand's memory as cuBLAS would."""
    transa, transb, m, n, k, lda, ldb, ldc = gemm_arguments((a.shape, a.strides), (b.shape, b.strides), a.itemsize)
    mem_a = (a.base if a.base is not None else a).ravel()  # the engine's views start at their base
    mem_b = (b.base if b.base is not None else b).ravel()
    C = _op(mem_b, m, k, lda, transa) @ _op(mem_a, k, n, ldb, transb)  # (m, n) column-major = (n, m) row-major
    assert ldc == m
    return C.T


@pytest.mark.parametrize("B,K,O", [(1, 1, 1), (7, 33, 5), (13, 9, 10), (1, 5, 1), (3, 1, 4), (1, 4, 3), (6, 1, 1)])
def test_the_engine_gemms(rng, B, K, O):
    X = rng.standard_normal((B, K))
    W = rng.standard_normal((O, K))
    D = rng.standard_normal((B, O))
    np.testing.assert_allclose(_emulate(X, W.T), X @ W.T, rtol=1e-12)  # forward: Z W^T
    np.testing.assert_allclose(_emulate(D.T, X), D.T @ X, rtol=1e-12)  # weight gradient: delta^T Z
    np.testing.assert_allclose(_emulate(D, W), D @ W, rtol=1e-12)  # backward: delta W


def test_mismatched_or_strided_operands_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        gemm_arguments(((2, 3), (24, 8)), ((4, 2), (16, 8)), 8)
    with pytest.raises(ValueError, match="C- or F-contiguous"):
        gemm_arguments(((2, 3), (48, 16)), ((3, 2), (16, 8)), 8)
