"""Radial basis, polynomial cutoff and geometric smoothstep."""

from __future__ import annotations

import pytest
import torch
from chgdata.models import BesselBasis, geometric_weight, polynomial_cutoff

pytestmark = pytest.mark.usefixtures("float64_models")


def derivatives(fn, x, order):
    x = x.clone().requires_grad_(True)
    out = [fn(x)]
    for _ in range(order):
        (g,) = torch.autograd.grad(out[-1].sum(), x, create_graph=True)
        out.append(g)
    return [o.detach() for o in out]


def test_geometric_weight_values_and_derivatives():
    u = torch.tensor([0.0, 0.25, 0.5, 1.0, 1.3], dtype=torch.float64)
    w = geometric_weight(u)
    expected = 1 + u.clamp(max=1) ** 3 * (-6 * u.clamp(max=1) ** 2 + 15 * u.clamp(max=1) - 10)
    torch.testing.assert_close(w, expected)
    assert w[0] == 1 and w[3] == 0 and w[4] == 0 and abs(float(w[2]) - 0.5) < 1e-12
    _, d1, d2 = derivatives(geometric_weight, torch.tensor([1.0 - 1e-9, 0.5], dtype=torch.float64), 2)
    assert abs(float(d1[0])) < 1e-12 and abs(float(d2[0])) < 1e-6
    assert float(d1[1]) < 0  # monotonically decreasing inside


def test_polynomial_cutoff_smooth_at_rcut():
    r = torch.tensor([4.0 - 1e-7], dtype=torch.float64)
    values = derivatives(lambda x: polynomial_cutoff(x, 4.0, 6), r, 3)
    assert all(abs(float(v)) < 1e-5 for v in values[:3])  # f, f', f'' vanish at r_cut
    assert abs(float(values[3])) > 1e-3  # f''' does not (p = 6 envelope)
    assert float(polynomial_cutoff(torch.tensor(0.0, dtype=torch.float64), 4.0)) == 1.0


def test_bessel_basis_finite_at_zero_and_vanishing_at_cutoff():
    basis = BesselBasis(3.0, n_basis=5).double()
    r = torch.tensor([0.0, 1e-8, 1.0, 2.999999, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    b = basis(r)
    assert b.shape == (6, 5) and torch.isfinite(b).all()
    torch.testing.assert_close(b[0], b[1], atol=1e-6, rtol=0)
    assert b[4:].abs().max() == 0 and b[3].abs().max() < 1e-10
    (g,) = torch.autograd.grad(b.sum(), r)
    assert torch.isfinite(g).all()
    expected = (2 / 3.0) ** 0.5 * torch.sin(torch.arange(1, 6) * torch.pi * 1.0 / 3.0) / 1.0
    torch.testing.assert_close(b[2], expected.double() * polynomial_cutoff(r[2].detach(), 3.0))
