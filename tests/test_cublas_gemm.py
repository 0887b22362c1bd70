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


# -- mixed precision: types, compute types and the tensor-core alignment --------------------------------
def _padded(rng, rows, cols, pad, dtype=np.float64):
    """A (rows, cols) view of a (rows, cols + pad) array: rows padded, as the engine's rounded copies."""
    return rng.standard_normal((rows, cols + pad)).astype(dtype)[:, :cols]


@pytest.mark.parametrize("B,K,O", [(1, 1, 1), (7, 33, 5), (13, 9, 10), (1, 5, 1), (3, 1, 4), (6, 1, 1)])
def test_the_engine_gemms_on_padded_copies(rng, B, K, O):
    # The engine's bfloat16 copies: X, Z and delta copies with padded rows; W's copy too.
    X, W, D = _padded(rng, B, K, 3), _padded(rng, O, K, 5), _padded(rng, B, O, 2)
    np.testing.assert_allclose(_emulate(X, W.T), X @ W.T, rtol=1e-12)
    np.testing.assert_allclose(_emulate(D.T, X), D.T @ X, rtol=1e-12)
    np.testing.assert_allclose(_emulate(D, W), D @ W, rtol=1e-12)


def test_gemm_types_per_precision():
    from bp_gpu.cublas_gemm import COMPUTE_32F, COMPUTE_32F_FAST_TF32, CUDA_R_16BF, CUDA_R_32F, gemm_types

    assert (CUDA_R_16BF, CUDA_R_32F, COMPUTE_32F, COMPUTE_32F_FAST_TF32) == (14, 0, 68, 77)
    assert gemm_types(np.uint16, np.float32, "bf16") == (CUDA_R_16BF, CUDA_R_32F, COMPUTE_32F)
    assert gemm_types(np.float32, np.float32, "tf32") == (CUDA_R_32F, CUDA_R_32F, COMPUTE_32F_FAST_TF32)
    for bad in [(np.uint16, np.float64, "bf16"), (np.float64, np.float64, "tf32"), (np.float32, np.float32, "bf16"),
                (np.float32, np.float64, "highest")]:
        with pytest.raises(ValueError):
            gemm_types(*bad)


def test_tensor_core_misses_reads_the_nine_conditions():
    from bp_gpu.cublas_gemm import OP_T, tensor_core_misses

    aligned = (0x1000, 0x2000, 0x3000)
    assert tensor_core_misses(OP_N, OP_N, 64, 32, 16, 64, 16, 64, aligned, 2, 4) == []
    got = tensor_core_misses(OP_T, OP_N, 5, 32, 12, 12, 16, 5, (0x1002, None, 0x3000), 2, 4)
    assert got == ["(op_A == N ? m : k) * size(A) % 16", "(op_B == N ? k : n) * size(B) % 16", "m * size(C) % 16",
                   "lda * size(A) % 16", "ldc * size(C) % 16", "A pointer % 16"]


def _stub_or_skip():
    import shutil

    from bp_gpu.backends import cuda_status

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler to build the cuBLAS stand-in")
    if cuda_status()[0]:
        pytest.skip("a CUDA device is usable: the gpu tests compare PreparedGemm with cupy.matmul instead")
    from bp_gpu.bench.host_path import FakeDeviceArray, stub_cublas

    return FakeDeviceArray, stub_cublas


@pytest.mark.parametrize("precision", ["highest", "tf32", "bf16"])
def test_prepared_gemm_passes_each_precisions_types_and_compute_type(precision):
    import ctypes

    from bp_gpu.cublas_gemm import COMPUTE_32F, COMPUTE_32F_FAST_TF32, CUDA_R_16BF, CUDA_R_32F, PreparedGemm

    FakeDeviceArray, stub_cublas = _stub_or_skip()
    operand = np.uint16 if precision == "bf16" else np.float32
    want = {"highest": (CUDA_R_32F, CUDA_R_32F, COMPUTE_32F), "tf32": (CUDA_R_32F, CUDA_R_32F, COMPUTE_32F_FAST_TF32),
            "bf16": (CUDA_R_16BF, CUDA_R_32F, COMPUTE_32F)}[precision]
    with stub_cublas() as lib:
        rec = (ctypes.c_longlong * 19).in_dll(lib, "rec")
        # A forward GEMM as the engine binds it: Z copy (B=32, K=40 padded to 48) @ W copy^T (O=24).
        z = FakeDeviceArray(np.empty((32, 48), operand)[:, :40], 0x10000)
        W = FakeDeviceArray(np.empty((24, 48), operand)[:, :40], 0x20000)
        out = FakeDeviceArray(np.empty((32, 24), np.float32), 0x30000)
        gemm = PreparedGemm(z, W.T, out, *(("tf32",) if precision == "tf32" else ()))
        gemm()
        got = list(rec)
        assert (got[8], got[11], got[15], got[17]) == (want[0], want[0], want[1], want[2])
        assert got[9] == got[12] == 48  # lda, ldb: the padded row stride
        assert gemm.tensor_core_misses == []
        with pytest.raises(ValueError, match="into float(32|64)"):  # bf16 into float32 only; no float32 into 64
            PreparedGemm(z, W.T, FakeDeviceArray(np.empty((32, 24), np.float64), 0x40000))


def test_the_bf16_engine_binds_aligned_tensor_core_gemms():
    # Every GEMM a bf16 plan binds, on stand-ins at the pointers the engine's buffers would have
    # (16-byte-aligned allocations; the views' offsets inside them are the engine's): types 14/0/68,
    # and lda, ldb and the A, B pointers meet the tensor-core alignment for any layer widths (the
    # problem sizes are the network's; W2-like widths meet those too).
    from bp_gpu.cpu_backend import CpuSteps
    from bp_gpu.cublas_gemm import CUDA_R_16BF, PreparedGemm
    from bp_gpu.engine import Engine

    FakeDeviceArray, stub_cublas = _stub_or_skip()
    bases: dict[int, int] = {}

    def fake(a):
        if not isinstance(a, np.ndarray):
            return a  # the batch slot
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        base = bases.setdefault(id(root), 0x7E0000000000 + 0x1000000 * len(bases))
        return FakeDeviceArray(a, base + a.__array_interface__["data"][0] - root.__array_interface__["data"][0])

    gemms = []

    class Recording(CpuSteps):
        def operand_copies(self, precision):
            return (np.dtype(np.uint16), 8)  # what the CUDA backend keeps for bf16

        def bind(self, name, *args):
            if name == "matmul":
                gemms.append(PreparedGemm(*(fake(a) for a in args)))
            return lambda X, T: None

    with stub_cublas():
        for sizes in [(28, 64, 64, 1), (13, 9, 3, 2), (256, 1024, 1024, 1)]:
            gemms.clear()
            e = Engine(np, Recording(), sizes, np.float32, "cpu", "bf16")
            e.ensure_capacity(64)
            e._grad_ops(64, 1 / 64, 1)
            # 3 per layer, less the delta GEMM of the first layer and the one below a single unit
            assert len(gemms) == 3 * (len(sizes) - 1) - 1 - (sizes[-1] == 1)
            for g in gemms:
                assert (g._args[8].value, g._args[11].value, g._args[15].value, g._args[17].value) == (
                    CUDA_R_16BF, CUDA_R_16BF, 0, 68)
                operands = [m for m in g.tensor_core_misses if m.startswith(("lda", "ldb", "A pointer", "B pointer"))]
                assert not operands, (sizes, g.tensor_core_misses)
            if sizes[0] == 256:  # W2: every condition met but the last layer's (1 output unit)
                assert sum(bool(g.tensor_core_misses) for g in gemms) <= 3
