"""The benchmark workloads and their synthetic data.

Every peer of a workload trains the same architecture on the same data in the same batch order
(consecutive slices; the rows are i.i.d., so this is a shuffled order) from the same initial
weights, so their epoch losses must agree: the harness shows them next to the timings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEARNING_RATE = 0.1  # plain SGD, no momentum, no weight decay, mean loss over the batch
DATA_SEED = 20240601
WEIGHT_SEED = 0


@dataclass(frozen=True)
class Workload:
    """``sizes`` = [N_0, ..., N_L]; one epoch = ``samples`` rows in batches of ``batch``."""

    name: str
    sizes: tuple[int, ...]
    batch: int
    samples: int
    note: str

    @property
    def flops(self) -> int:
        """6 * samples * sum(fan_in * fan_out): forward GEMM (2), the two backward GEMMs (4)."""
        return 6 * self.samples * sum(i * o for i, o in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def n_batches(self) -> int:
        return -(-self.samples // self.batch)


# The issue's workloads. W3's batch of 65,536 is a GPU size; on the CPU W3 runs as W3cpu.
WORKLOADS = {
    "W1": Workload("W1", (28, 64, 64, 1), 1024, 262_144, "narrow, HIGGS-like"),
    "W2": Workload("W2", (256, 1024, 1024, 1), 4096, 65_536, "wide"),
    "W3": Workload("W3", (128, 512, 512, 1), 65_536, 1_048_576, "large batch (GPU)"),
    "W3cpu": Workload("W3cpu", (128, 512, 512, 1), 16_384, 131_072, "W3 reduced for the CPU"),
    # A few milliseconds per epoch with a ragged last batch: for the smoke test, not for numbers.
    "quick": Workload("quick", (12, 16, 8, 1), 64, 1000, "tiny smoke-test size"),
}
CPU_DEFAULT = ("W1", "W2", "W3cpu")
GPU_DEFAULT = ("W1", "W2", "W3")


def make_data(w: Workload) -> tuple[np.ndarray, np.ndarray]:
    """X (samples, N_0) float32 standard normal; T (samples, 1) float32 labels of a random
    linear rule with 10% of them flipped (learnable, not separable)."""
    rng = np.random.default_rng(DATA_SEED)
    X = rng.standard_normal((w.samples, w.sizes[0]), dtype=np.float32)
    direction = rng.standard_normal(w.sizes[0]).astype(np.float32)
    t = (X @ direction > 0) ^ (rng.random(w.samples) < 0.1)
    T = np.repeat(t[:, None], w.sizes[-1], axis=1).astype(np.float32)
    return X, T


def initial_weights(w: Workload) -> list[tuple[np.ndarray, np.ndarray]]:
    """The starting (W (N_l, N_{l-1}), b (N_l,)) of every layer, shared by all peers."""
    from bp_gpu.mlp import glorot_weights

    return glorot_weights(w.sizes, WEIGHT_SEED, np.float32)
