"""Optimizers over the flat parameter buffer, against the update rules written out independently."""

import numpy as np
import pytest

from bp_gpu.backends import make_engine
from bp_gpu.optim import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, Optimizer

SIZES = (5, 3, 2)  # ragged: P = 3*5 + 2*3 + 3 + 2 = 26 parameters, 21 of them weights


def _engine(rng):
    e = make_engine("cpu", SIZES, np.dtype(np.float64))
    e.params[:] = rng.normal(size=e.n_params)
    return e


def _steps(e, opt, rng, n=4):
    """n optimizer steps with random gradients; returns the gradients used."""
    gs = []
    for _ in range(n):
        g = rng.normal(size=e.n_params)
        e.grads[:] = g
        opt.step()
        np.testing.assert_array_equal(e.grads, g)  # the gradient buffer is left alone
        gs.append(g)
    return gs


@pytest.mark.parametrize(
    "kind, m_size, v_size", [("sgd", 0, 0), ("momentum", 26, 0), ("adam", 26, 26)]
)
def test_state_buffers_are_sized_by_kind(kind, m_size, v_size):
    e = make_engine("cpu", SIZES, np.dtype(np.float32))
    opt = Optimizer(e, kind, 0.1)
    assert opt.m.shape == (m_size,) and opt.v.shape == (v_size,)
    assert opt.m.dtype == np.float32 and opt.step_count == 0


def test_sgd_with_weight_decay_on_weights_only(rng):
    e = _engine(rng)
    p0 = e.params.copy()
    opt = Optimizer(e, "sgd", 0.1, weight_decay=0.01)
    g = _steps(e, opt, rng, n=1)[0]
    nw = e.n_weights
    np.testing.assert_allclose(e.params[:nw], p0[:nw] - 0.1 * (g[:nw] + 0.01 * p0[:nw]), rtol=1e-14)
    np.testing.assert_allclose(
        e.params[nw:], p0[nw:] - 0.1 * g[nw:], rtol=1e-14
    )  # biases: no decay


def test_momentum_equals_sklearn_velocity_form(rng):
    # PyTorch: m = mu m + g, p -= lr m.  scikit-learn: v = mu v - lr g, p += v.  Same with a constant lr.
    e = _engine(rng)
    p = e.params.copy()
    opt = Optimizer(e, "momentum", 0.05, momentum=0.9)
    v = np.zeros_like(p)
    for g in _steps(e, opt, rng, n=5):
        v = 0.9 * v - 0.05 * g
        p = p + v
    np.testing.assert_allclose(e.params, p, rtol=1e-12, atol=1e-15)
    assert opt.step_count == 5


def test_adam_matches_pytorch_formula(rng):
    e = _engine(rng)
    p = e.params.copy()
    nw = e.n_weights
    opt = Optimizer(e, "adam", 0.01, weight_decay=0.1)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(_steps(e, opt, rng, n=6), start=1):
        g = g.copy()
        g[:nw] += 0.1 * p[:nw]
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
        m_hat = m / (1 - ADAM_BETA1**t)
        v_hat = v / (1 - ADAM_BETA2**t)
        p = p - 0.01 * m_hat / (np.sqrt(v_hat) + ADAM_EPS)
    np.testing.assert_allclose(e.params, p, rtol=1e-12)
    np.testing.assert_allclose(opt.m, m, rtol=1e-12)
    np.testing.assert_allclose(opt.v, v, rtol=1e-12)


def test_load_state_roundtrip_and_errors(rng):
    e = _engine(rng)
    opt = Optimizer(e, "adam", 0.01)
    _steps(e, opt, rng, n=2)
    m, v = opt.state_arrays()
    other = Optimizer(_engine(rng), "adam", 0.01)
    other.load_state(m, v, 2)
    np.testing.assert_array_equal(other.m, opt.m)
    np.testing.assert_array_equal(other.v, opt.v)
    assert other.step_count == 2
    with pytest.raises(ValueError, match=r"optimizer state m has shape \(3,\)"):
        other.load_state(np.zeros(3), v, 2)
    with pytest.raises(ValueError, match="step count"):
        other.load_state(m, v, -1)


def test_unknown_kind_is_rejected(rng):
    with pytest.raises(
        ValueError, match="optimizer must be one of 'sgd', 'momentum', 'adam'; got 'rmsprop'"
    ):
        Optimizer(_engine(rng), "rmsprop", 0.1)
