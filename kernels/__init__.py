"""Device code: the fused Numba CUDA kernels of bp_gpu, one module per kernel.

Installed as ``bp_gpu.kernels`` (never as a top-level ``kernels``). Each module holds the math in
one line, the shape legend, the launch geometry, the kernels and their launchers; the NumPy
reference of the same math is ``bp_gpu.steps_numpy``.
"""
