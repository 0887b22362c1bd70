"""The CPU backend's optimizer steps (Numba) against their NumPy spec, over several steps of a
schedule, on ragged sizes, float32 and float64."""

import subprocess
import sys

import numpy as np
import pytest

from bp_gpu import cpu_optimizer as C
from bp_gpu import steps_numpy as S
from bp_gpu.optim import hyper as H

TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}
ROWS = {H.SGD: 0, H.MOMENTUM: 1, H.ADAM: 2, H.ADAMW: 2}


def _hyper(beta1=0.9, schedule=H.WARMUP_COSINE):
    h = np.zeros(H.N_HYPER)
    h[[H.SCHEDULE, H.LR, H.WARMUP, H.TOTAL, H.FINAL]] = schedule, 0.05, 2, 9, 0.001
    h[[H.BETA1, H.BETA2, H.EPS, H.WEIGHT_DECAY]] = beta1, 0.999, 1e-8, 0.01
    return h


def _state(rng, rows, P, dtype):
    return (rng.random((rows, P)) * 0.1).astype(dtype) if rows else np.zeros((1, 1), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", [H.SGD, H.MOMENTUM, H.ADAM, H.ADAMW])
@pytest.mark.parametrize("P,n_weights", [(1, 1), (1, 0), (37, 29), (1031, 1000)])
def test_optimizer_update_matches_spec(rng, dtype, rule, P, n_weights):
    params = rng.standard_normal(P).astype(dtype)
    grads = rng.standard_normal(P).astype(dtype)
    state = _state(rng, ROWS[rule], P, dtype)
    runs = []
    for steps in (C, S):
        p, st, h = params.copy(), state.copy(), _hyper(0.8 if rule == H.MOMENTUM else 0.9)
        for _ in range(4):  # through the warm-up into the decay
            steps.optimizer_update(rule, p, grads, st, h, n_weights)
        runs.append((p, st, h))
    (p1, st1, h1), (p0, st0, h0) = runs
    np.testing.assert_allclose(p1, p0, **TOL[dtype])
    np.testing.assert_allclose(st1, st0, **TOL[dtype])
    assert h1[H.STEP] == h0[H.STEP] == 4 and h1[H.TICKET] == 0
    assert h1[H.LR_LAST] == pytest.approx(H.scheduled_rate(H.WARMUP_COSINE, 0.05, 2, 9, 0.001, 4.0), rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("segments", [[0, 1], [0, 35, 40, 47, 49], [0, 700, 1000, 1020, 1031]])
def test_lamb_update_matches_spec(rng, dtype, segments):
    segments = np.array(segments, dtype=np.int64)
    P, n_weights = int(segments[-1]), int(segments[len(segments) // 2]) if len(segments) > 2 else 1
    params = rng.standard_normal(P).astype(dtype)
    params[segments[-2]:] = 0  # a bias segment still at 0: its trust ratio is 1
    grads = rng.standard_normal(P).astype(dtype)
    runs = []
    for steps in (C, S):
        p, st, h = params.copy(), np.zeros((2, P), dtype), _hyper()
        for _ in range(3):
            steps.lamb_update(p, grads, st, h, n_weights, segments)
        runs.append((p, st, h))
    (p1, st1, h1), (p0, st0, h0) = runs
    np.testing.assert_allclose(p1, p0, **TOL[dtype])
    np.testing.assert_allclose(st1, st0, **TOL[dtype])
    assert h1[H.STEP] == h0[H.STEP] == 3


def test_gradients_are_left_alone_and_unknown_rules_rejected(rng):
    p, g = rng.standard_normal(9), rng.standard_normal(9)
    g0 = g.copy()
    C.optimizer_update(H.ADAM, p, g, np.zeros((2, 9)), _hyper(), 6)
    np.testing.assert_array_equal(g, g0)
    with pytest.raises(ValueError, match="unknown update rule 7"):
        C.optimizer_update(7, p, g, np.zeros((2, 9)), _hyper(), 6)


def test_a_fit_compiles_only_what_it_uses():
    # A fresh process (dispatchers empty; loading a cached specialization counts as compiling it).
    code = """
import subprocess
import sys

import numpy as np
import bp_gpu
from bp_gpu import cpu_optimizer as C, cpu_steps as S
from bp_gpu.optim import hyper as H

rng = np.random.default_rng(0)
X = rng.normal(size=(50, 4))
bp_gpu.MLPClassifier((5,), optimizer="adam", epochs=1, backend="cpu", random_state=0).fit(X, X[:, 0] > 0)
compiled = {name: len(f.signatures) for name, f in [
    *((f"update rule {r}", C.UPDATES[r]) for r in C.RULES), ("lamb", C._lamb_update),
    ("forward f32", S._bias_sigmoid_forward_f32), ("forward f64", S._bias_sigmoid_forward_f64),
    ("output f32 column", S._output_loss_delta_f32_column), ("output f32", S._output_loss_delta_f32),
    ("output f64", S._output_loss_delta)]}
print(sorted(name for name, n in compiled.items() if n))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted([f"update rule {H.ADAM}", "forward f32", "output f32 column"]))


@pytest.mark.parametrize("fmt", [1, 2])  # bp_gpu.precision.BF16, TF32
@pytest.mark.parametrize("lamb", [False, True])
def test_round_variants_update_as_the_plain_steps_and_copy_the_weights(rng, fmt, lamb):
    from bp_gpu.precision import round_to

    # Layers (3, 5) and (2, 3) as the engine maps them: (start, rows, cols, dst, ld), copies with
    # padded rows (ld 8 and 4) in a buffer filled with a marker.
    wmap = np.array([[0, 3, 5, 0, 8], [15, 2, 3, 24, 4]], dtype=np.int64)
    P, nw = 15 + 6 + 5, 21
    segments = np.array([0, 15, 21, 24, 26], dtype=np.int64)
    grads = rng.standard_normal(P).astype(np.float32)
    plain = rng.standard_normal(P).astype(np.float32)
    rounded = plain.copy()
    R, Rs = np.full(32, -7.0, np.float32), np.full(32, -7.0, np.float32)
    state = _state(rng, 2, P, np.float32)
    if lamb:
        C.lamb_update(plain, grads, state.copy(), _hyper(), nw, segments)
        C.lamb_update_round(rounded, grads, state.copy(), _hyper(), nw, segments, R, wmap, fmt)
    else:
        C.optimizer_update(H.ADAM, plain, grads, state.copy(), _hyper(), nw)
        C.optimizer_update_round(H.ADAM, rounded, grads, state.copy(), _hyper(), nw, R, wmap, fmt)
    np.testing.assert_array_equal(rounded, plain)
    S.round_weights(rounded, Rs, wmap, fmt)
    np.testing.assert_array_equal(R, Rs)
    np.testing.assert_array_equal(R[:24].reshape(3, 8)[:, :5], round_to(plain[:15].reshape(3, 5), fmt))
    np.testing.assert_array_equal(R[24:].reshape(2, 4)[:, :3], round_to(plain[15:21].reshape(2, 3), fmt))
    assert (R[:24].reshape(3, 8)[:, 5:] == -7.0).all() and (R[24:].reshape(2, 4)[:, 3:] == -7.0).all()
