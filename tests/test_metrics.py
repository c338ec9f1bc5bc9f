"""Metric functions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from chgdata.metrics import (
    DensityErrorSums,
    density_error_sums,
    dos_abs_mae,
    dos_mse,
    dos_wasserstein,
    mean_nmae,
    nmae,
    r2_score,
)


def test_nmae_hand_values_and_chunk_merge():
    rho = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0])
    assert nmae(pred, rho) == pytest.approx(100 * 1.5 / 10)
    merged = density_error_sums(pred[:2], rho[:2]) + density_error_sums(pred[2:], rho[2:])
    assert merged == DensityErrorSums(1.5, 10.0, 4)
    assert mean_nmae([merged, DensityErrorSums(1.0, 4.0, 2)]) == pytest.approx((15.0 + 25.0) / 2)


def test_r2_and_mse():
    t = np.array([1.0, 2.0, 3.0])
    p = np.array([1.0, 2.0, 4.0])
    assert dos_mse(p, t) == pytest.approx(1 / 3)
    assert r2_score(p, t) == pytest.approx(1 - 1 / 2)
    assert np.allclose(r2_score(np.stack([p, t]), np.stack([t, t]), axis=-1), [0.5, 1.0])
    assert np.isnan(r2_score(p, np.ones(3)))
    assert dos_abs_mae(p, t) == pytest.approx(1 / 3)


def test_wasserstein_shifted_delta_and_uniform():
    e = np.linspace(-1.0, 1.0, 5)  # spacing 0.5
    a = np.array([[0, 1, 0, 0, 0]], float)
    b = np.array([[0, 0, 0, 2, 0]], float)  # mass scale does not matter
    assert dos_wasserstein(a, b, e) == pytest.approx([1.0])
    u = np.ones((1, 5))
    # uniform over 5 points vs a point mass at 0: mean |e| = (1 + 0.5 + 0 + 0.5 + 1) / 5
    assert dos_wasserstein(u, np.array([[0, 0, 1, 0, 0]], float), e) == pytest.approx([0.6])
    assert np.isnan(dos_wasserstein(np.zeros((1, 5)), u, e)[0])
