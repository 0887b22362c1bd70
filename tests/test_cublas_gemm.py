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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepared_gemm_calls_cublas_with_these_arguments(dtype):
    # PreparedGemm on stand-ins (bench/host_path.stub_cublas: a C cublasGemmEx recording what it
    # receives, and the few CuPy calls the GEMM code makes): the ctypes values it prepares once and
    # the slot pointer it writes per call reach the C function as gemm_arguments says.
    import ctypes
    import shutil

    from bp_gpu.backends import cuda_status

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler to build the cuBLAS stand-in")
    if cuda_status()[0]:  # the stand-in stays loaded, beside the real libcublas the gpu tests use
        pytest.skip("a CUDA device is usable: the gpu tests compare PreparedGemm with cupy.matmul instead")
    from bp_gpu.bench.host_path import FakeDeviceArray, stub_cublas

    from bp_gpu.cublas_gemm import COMPUTE_32F, COMPUTE_64F, GEMM_DEFAULT_TENSOR_OP, PreparedGemm
    from bp_gpu.plan import X as X_SLOT

    item, t = np.dtype(dtype).itemsize, 0 if dtype == np.float32 else 1
    compute = COMPUTE_32F if dtype == np.float32 else COMPUTE_64F
    with stub_cublas() as lib:
        rec = (ctypes.c_longlong * 19).in_dll(lib, "rec")
        scalars = (ctypes.c_double * 2).in_dll(lib, "scalars")
        W = FakeDeviceArray(np.empty((5, 7), dtype), 0x1000)
        D = FakeDeviceArray(np.empty((3, 5), dtype), 0x5000)
        out = FakeDeviceArray(np.empty((3, 5), dtype), 0x2000)
        dW = FakeDeviceArray(np.empty((5, 7), dtype), 0x6000)
        forward, gradient = PreparedGemm(X_SLOT, W.T, out), PreparedGemm(D.T, X_SLOT, dW)
        for ptr in (0x3000, 0x4000):  # two batches through the same prepared calls
            x = FakeDeviceArray(np.empty((3, 7), dtype), ptr)
            for gemm, a, b, c in ((forward, x, W.T, out), (gradient, D.T, x, dW)):
                gemm(x)
                ta, tb, m, n, k, lda, ldb, ldc = gemm_arguments((a.shape, a.strides), (b.shape, b.strides), item)
                got = list(rec)
                assert got[:6] == [0x5EED, ta, tb, m, n, k]
                assert got[7:13] == [b.data.ptr, t, lda, a.data.ptr, t, ldb]
                assert got[14:] == [c.data.ptr, t, ldc, compute, GEMM_DEFAULT_TENSOR_OP]
                assert list(scalars) == [1.0, 0.0]  # alpha, beta read through their pointers
