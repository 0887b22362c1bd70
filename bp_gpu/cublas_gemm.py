"""The CUDA backend's GEMMs: ``cublasGemmEx`` through cuBLAS's C API, prepared once, capturable.

Why not ``cupy.matmul``: CuPy 14.2 refuses every cuBLAS call while a stream is capturing (each BLAS
wrapper first calls ``setStream``, which raises ``NotImplementedError`` for a capturing stream:
cupy_backends/cuda/libs/cublas.pyx, ``setStream``, lines 642-668 at v14.2.0), so a step that uses it
cannot become a CUDA graph; and each ``cupy.matmul`` spends ~8 us of host time on checks and
dispatch. Here a GEMM is bound once — transposes, sizes, leading dimensions, types, the handle —
and a call is one ctypes call into the libcublas CuPy already loaded.

What is mirrored from CuPy (``cupy/_core/_routines_linalg.pyx`` at v14.2.0, ``dot`` and
``tensordot_core_v11``): ``C(n, m) = A(n, k) @ B(k, m)`` row-major is the column-major
``C^T = B^T A^T``, one ``cublasGemmEx`` with the operands swapped and ``ldc = m``; each operand's
transpose flag and leading dimension come from its contiguity (F-contiguous first, as
``_mat_to_cublas_contiguous``); compute type ``CUBLAS_COMPUTE_32F`` (68; 77 with CuPy's TF32 setting)
or ``CUBLAS_COMPUTE_64F`` (70); algorithm ``CUBLAS_GEMM_DEFAULT_TENSOR_OP`` (99) from cc 8.0;
alpha = 1, beta = 0 as host values (``CUBLAS_POINTER_MODE_HOST``: captured into a graph by value,
cuBLAS docs "CUDA Graphs Support").

Mixed precision (``bp_gpu.precision``): types and compute type from the cuBLAS docs' table of the
combinations ``cublasGemmEx`` supports (cuBLAS docs, 2.8.12 "cublasGemmEx()", the release that
documents ``CUBLAS_COMPUTE_32F_EMULATED_16BFX9``): ``"bf16"`` is A, B ``CUDA_R_16BF`` (14; our uint16
arrays of bfloat16 bits), C ``CUDA_R_32F`` (0), ``CUBLAS_COMPUTE_32F`` (68), float32 alpha and beta;
``"tf32"`` is A, B, C ``CUDA_R_32F`` with ``CUBLAS_COMPUTE_32F_FAST_TF32`` (77), cuBLAS rounding the
operands to TF32. Tensor cores run any alignment since cuBLAS 11.0, and fastest when (cuBLAS docs,
2.1.11 "Tensor Core Usage") the pointers A, B, C are 16-byte aligned, lda, ldb, ldc times the type's
size are multiples of 16, and so are ``(op_A == N ? m : k)``, ``(op_B == N ? k : n)`` and ``m`` times
theirs; ``tensor_core_misses`` lists the conditions a GEMM misses. The engine pads the rows of its
bfloat16 copies to 8 elements and allocates every copy 16-byte aligned, so their lda/ldb and
pointers meet them; the problem sizes are the network's widths and the batch.

A call passes ready ctypes values to a function object without ``argtypes`` (``gemm_function``):
nothing is converted per call (about half the ctypes time of the same call with ``argtypes``,
measured with a C stand-in by ``bench/host_path.py``).

Handles: one private handle per (device, stream), its stream set once and then a user workspace
(32 MiB, cuBLAS's default pool size on Hopper): ``cublasSetStream`` resets the workspace, so the
order matters, and a user workspace keeps cuBLAS from adding memory nodes to a captured graph
(cuBLAS docs, ``cublasSetWorkspace`` and "CUDA Graphs Support"). CuPy does not bind
``cublasSetWorkspace``, hence ctypes.

Lifetime: the handles of the streams eager steps run on are kept for the process (made once per
stream: ``cublasDestroy`` synchronizes the device, cuBLAS docs ``cublasCreate``/``cublasDestroy``).
A compiled step captures on a stream of its own, whose handle, workspace and stream
``release_stream_handle`` frees with the compiled step (``bp_gpu.cuda_graph``).

So an eager step and a captured one run on two handles, alike (the same library, device and
workspace size, cuBLAS's default math mode, the compute type and algorithm passed per call).
cuBLAS promises the same bits for a routine of one toolkit on one architecture and SM count when
every stream has its own workspace or handle (cuBLAS docs, "Results Reproducibility"); that two
handles set up alike choose the same kernel follows from that promise rather than being stated in
it, so it is checked on the device: the ``gpu`` test ``test_compiled_step_graph_replays_train_step_bit_for_bit``
and the device check's "compiled vs eager" part (``bench/device_check.py``).

``gemm_arguments`` is pure Python (tested on the CPU against a column-major emulation); the rest
needs a GPU and is exercised by the ``gpu`` tests and ``bench/device_check.py``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

OP_N, OP_T = 0, 1
CUDA_R_32F, CUDA_R_64F, CUDA_R_16BF = 0, 1, 14
COMPUTE_32F, COMPUTE_32F_PEDANTIC, COMPUTE_32F_FAST_TF32 = 68, 69, 77
COMPUTE_64F, COMPUTE_64F_PEDANTIC = 70, 71
GEMM_DEFAULT, GEMM_DEFAULT_TENSOR_OP = -1, 99
WORKSPACE_BYTES = 32 << 20


def _contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int, order: str) -> bool:
    """NumPy's/CuPy's contiguity flag for a 2-D layout: dimensions of size 1 do not count."""
    dims = zip(shape, strides) if order == "F" else zip(reversed(shape), reversed(strides))
    expected = itemsize
    for n, s in dims:
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _operand(shape: tuple[int, int], strides: tuple[int, int], itemsize: int, trans: int) -> tuple[int, int]:
    """(transpose flag, leading dimension) of one operand, as CuPy's ``_mat_to_cublas_contiguous``;
    besides CuPy's C- and F-contiguous layouts, rows or columns padded to a longer stride (the
    engine's rounded copies): the stride of the other axis is the leading dimension."""
    if _contiguous(shape, strides, itemsize, "F"):
        return trans, max(strides[1] // itemsize, shape[0])
    if _contiguous(shape, strides, itemsize, "C"):
        return 1 - trans, strides[0] // itemsize
    if strides[0] == itemsize and strides[1] % itemsize == 0 and strides[1] // itemsize >= shape[0]:
        return trans, strides[1] // itemsize  # columns padded
    if strides[1] == itemsize and strides[0] % itemsize == 0 and strides[0] // itemsize >= shape[1]:
        return 1 - trans, strides[0] // itemsize  # rows padded
    raise ValueError(f"a GEMM operand must be C- or F-contiguous, or padded rows or columns of unit stride; "
                     f"got shape {shape}, strides {strides}")


def gemm_arguments(a: tuple, b: tuple, itemsize: int) -> tuple[int, int, int, int, int, int, int, int]:
    """``(transa, transb, m, n, k, lda, ldb, ldc)`` of the ``cublasGemmEx`` computing the row-major
    ``C (n, m) = A (n, k) @ B (k, m)``, C C-contiguous; ``a``, ``b`` are ``(shape, strides)`` in bytes.
    cuBLAS's first operand is B, its second A (column-major: C^T = B^T A^T)."""
    (n, k), (k2, m) = a[0], b[0]
    if k != k2:
        raise ValueError(f"GEMM shapes do not match: {a[0]} @ {b[0]}")
    # dot() views A transposed (rollaxis) before choosing its flag; B as it is.
    ta, lda = _operand((k, n), (a[1][1], a[1][0]), itemsize, 0)
    tb, ldb = _operand((k, m), b[1], itemsize, 1)
    return tb, ta, m, n, k, ldb, lda, m


def gemm_types(operand: np.dtype, out: np.dtype, precision: str = "highest") -> tuple[int, int, int]:
    """(A/B type, C type, compute type) of a ``cublasGemmEx`` on operands of dtype ``operand`` into
    ``out`` (see the module docstring): uint16 operands are bfloat16 bits (``"bf16"``), ``"tf32"``
    asks for TF32 tensor cores on float32, ``"highest"`` is CuPy's choice for the dtype."""
    operand, out = np.dtype(operand), np.dtype(out)
    if operand == np.uint16:
        if out != np.float32 or precision not in ("highest", "bf16"):
            raise ValueError(f"bfloat16 operands multiply into float32 (precision 'bf16'); got {out} and {precision!r}")
        return CUDA_R_16BF, CUDA_R_32F, COMPUTE_32F
    if operand != out:
        raise ValueError(f"GEMM operands of {operand} into {out}: only bfloat16 operands differ from the output")
    if precision == "tf32":
        if out != np.float32:
            raise ValueError(f"precision 'tf32' multiplies float32; got {out}")
        return CUDA_R_32F, CUDA_R_32F, COMPUTE_32F_FAST_TF32
    if precision != "highest":
        raise ValueError(f"precision {precision!r} of float operands must be 'highest' or 'tf32'")
    t = CUDA_R_32F if out == np.float32 else CUDA_R_64F
    return t, t, _compute_type(out)


def tensor_core_misses(transa: int, transb: int, m: int, n: int, k: int, lda: int, ldb: int, ldc: int,
                       pointers: tuple[int | None, int | None, int | None], ab_size: int, c_size: int) -> list[str]:
    """The conditions of cuBLAS's "Tensor Core Usage" (docs 2.1.11) that a ``cublasGemmEx`` with
    these arguments misses (an empty list: all met). ``pointers`` (A, B, C); None: not known when
    prepared (the batch, bound per call)."""
    checks = [
        ("(op_A == N ? m : k) * size(A) % 16", ((m if transa == OP_N else k) * ab_size) % 16 == 0),
        ("(op_B == N ? k : n) * size(B) % 16", ((k if transb == OP_N else n) * ab_size) % 16 == 0),
        ("m * size(C) % 16", (m * c_size) % 16 == 0),
        ("lda * size(A) % 16", (lda * ab_size) % 16 == 0),
        ("ldb * size(B) % 16", (ldb * ab_size) % 16 == 0),
        ("ldc * size(C) % 16", (ldc * c_size) % 16 == 0),
    ]
    checks += [(f"{name} pointer % 16", ptr is None or ptr % 16 == 0) for name, ptr in zip("ABC", pointers)]
    return [name for name, ok in checks if not ok]


def _compute_type(dtype: np.dtype) -> int:
    """CuPy's compute type for this dtype (``cupy._core.get_compute_type``: 2 pedantic, 7 TF32)."""
    import cupy

    ct = cupy._core.get_compute_type(dtype)
    if dtype == np.float32:
        return {2: COMPUTE_32F_PEDANTIC, 7: COMPUTE_32F_FAST_TF32}.get(ct, COMPUTE_32F)
    return {2: COMPUTE_64F_PEDANTIC}.get(ct, COMPUTE_64F)


_lib: ctypes.CDLL | None = None


def _libcublas() -> ctypes.CDLL:
    """The libcublas CuPy loaded (a handle is only valid with the library that made it): found in
    /proc/self/maps after CuPy made its own handle; ``dlopen`` of a loaded file returns that object."""
    global _lib
    if _lib is not None:
        return _lib
    import cupy

    cupy.cuda.device.get_cublas_handle()
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) == 6 and os.path.basename(parts[5].strip()).startswith("libcublas.so"):
                paths.add(parts[5].strip())  # libcublasLt.so.* does not match
    if len(paths) != 1:
        raise RuntimeError(f"expected the one libcublas CuPy loaded in this process; found {sorted(paths)}")
    lib = ctypes.CDLL(paths.pop())
    vp, ci = ctypes.c_void_p, ctypes.c_int
    lib.cublasSetStream_v2.argtypes = [vp, vp]
    lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
    for name in ("cublasSetStream_v2", "cublasSetWorkspace_v2"):
        getattr(lib, name).restype = ci  # cublasStatus_t, 0 = success
    _lib = lib
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed: cublasStatus_t {status}")


class _Handle:
    """A private cuBLAS handle bound to one stream with its own workspace (see the module docstring)."""

    def __init__(self, stream: Any) -> None:
        import cupy
        from cupy_backends.cuda.libs import cublas

        self.lib = _libcublas()
        self.device = cupy.cuda.Device().id
        self.handle = cublas.create()  # plain cublasCreate of the same library; enqueues nothing
        self.stream = stream  # kept: its pointer is this handle's key and is not reused while it lives
        self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)  # pool blocks are 512-B aligned
        _check(self.lib.cublasSetStream_v2(self.handle, stream.ptr), "cublasSetStream")
        _check(self.lib.cublasSetWorkspace_v2(self.handle, self.workspace.data.ptr, WORKSPACE_BYTES),
               "cublasSetWorkspace")

    def close(self) -> None:
        """Destroy the handle on its device, then let its workspace and stream go: ``cublasDestroy``
        synchronizes the device first (cuBLAS docs), so no GEMM in flight still uses the workspace.
        No GEMM bound to this handle may be called afterwards."""
        import cupy
        from cupy_backends.cuda.libs import cublas

        with cupy.cuda.Device(self.device):
            cublas.destroy(self.handle)
        self.handle = self.workspace = self.stream = None


_handles: dict[tuple[int, int], _Handle] = {}


def handle_for_current_stream() -> _Handle:
    """The private handle of (current device, CuPy's current stream), created on first use and kept
    until ``release_stream_handle`` of that stream (see the module docstring)."""
    import cupy

    stream = cupy.cuda.get_current_stream()
    key = (cupy.cuda.Device().id, stream.ptr)
    h = _handles.get(key)
    if h is None:
        h = _handles[key] = _Handle(stream)
    return h


def release_stream_handle(stream: Any) -> None:
    """Destroy ``stream``'s private handle, if it has one, with its workspace, and drop the
    reference to the stream: for a stream none of whose bound GEMMs will be called again (a
    compiled step's capture stream, freed with the step)."""
    for key in [k for k in _handles if k[1] == stream.ptr]:  # a live stream's pointer is unique in the process
        _handles.pop(key).close()


class PreparedGemm:
    """``out <- a @ b`` bound once on CuPy's current stream. One of ``a``, ``b`` may be a slot
    (``bp_gpu.plan.X``): a C-contiguous input whose shape follows from the other operands, passed
    at each call. ``precision``: ``"tf32"`` for TF32 tensor cores on float32 operands; uint16
    operands are bfloat16 bits (``gemm_types``). ``tensor_core_misses``: the alignment conditions of
    cuBLAS's tensor cores this GEMM misses (the module docstring)."""

    def __init__(self, a: Any, b: Any, out: Any, precision: str = "highest") -> None:
        import cupy

        from .plan import Slot

        dtype = np.dtype(out.dtype)
        n, m = out.shape
        self._slot = "a" if isinstance(a, Slot) else "b" if isinstance(b, Slot) else None
        operand = np.dtype((b if self._slot == "a" else a).dtype)
        ab_type, c_type, compute = gemm_types(operand, dtype, precision)
        item = operand.itemsize
        a_shape = (n, b.shape[0]) if self._slot == "a" else tuple(a.shape)
        b_shape = (a.shape[1], m) if self._slot == "b" else tuple(b.shape)
        c_strides = lambda shape: (shape[1] * item, item)  # noqa: E731
        a_layout = (a_shape, c_strides(a_shape) if self._slot == "a" else tuple(a.strides))
        b_layout = (b_shape, c_strides(b_shape) if self._slot == "b" else tuple(b.strides))
        if (a_shape[0], b_shape[1]) != (n, m) or not out.flags.c_contiguous:
            raise ValueError(f"GEMM output must be C-contiguous {(a_shape[0], b_shape[1])}; got {out.shape}")
        # cuBLAS's operand A is our b and its operand B our a (column-major C^T = B^T A^T).
        transa, transb, m_, n_, k, lda, ldb, ldc = gemm_arguments(a_layout, b_layout, item)
        h = handle_for_current_stream()
        self._keep = (h, a, b, out)  # the buffers outlive every call (and any graph) that uses them
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        self._one, self._zero = scalar(1.0), scalar(0.0)
        algo = GEMM_DEFAULT_TENSOR_OP if int(cupy.cuda.Device().compute_capability) >= 80 else GEMM_DEFAULT
        vp, ci = ctypes.c_void_p, ctypes.c_int
        # Every argument as a ctypes value, made once; a call passes them as they are (a function
        # object without argtypes: nothing is converted per call, half the ctypes time of one with
        # them). Only the slot's pointer is written per call.
        self._a_arg = vp(None if self._slot == "a" else a.data.ptr)
        self._b_arg = vp(None if self._slot == "b" else b.data.ptr)
        self._args = (
            vp(h.handle), ci(transa), ci(transb), ci(m_), ci(n_), ci(k), vp(ctypes.addressof(self._one)),
            self._b_arg, ci(ab_type), ci(lda), self._a_arg, ci(ab_type), ci(ldb), vp(ctypes.addressof(self._zero)),
            vp(out.data.ptr), ci(c_type), ci(ldc), ci(compute), ci(algo),
        )
        self.tensor_core_misses = tensor_core_misses(
            transa, transb, m_, n_, k, lda, ldb, ldc, (self._b_arg.value, self._a_arg.value, out.data.ptr),
            item, dtype.itemsize)
        self._slot_arg = self._a_arg if self._slot == "a" else self._b_arg if self._slot == "b" else None
        self._fn = gemm_function(h.lib)

    def __call__(self, x: Any = None) -> None:
        """Enqueue the GEMM; ``x`` is the slot's array (ignored without a slot)."""
        if self._slot_arg is not None:
            self._slot_arg.value = x.data.ptr
        status = self._fn(*self._args)
        if status != 0:
            _check(status, "cublasGemmEx")


def gemm_function(lib: ctypes.CDLL) -> Any:
    """``cublasGemmEx`` of ``lib`` as a function object of its own without ``argtypes`` (ctypes
    returns a new one per item lookup): the prepared calls pass ready ctypes values."""
    fn = lib["cublasGemmEx"]
    fn.restype = ctypes.c_int  # cublasStatus_t, 0 = success
    return fn
