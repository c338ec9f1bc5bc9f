"""Radial functions: Bessel basis with a smooth polynomial cutoff (NequIP) and the geometric smoothstep."""

from __future__ import annotations

import math

import torch
from torch import nn


def polynomial_cutoff(r: torch.Tensor, r_cut: float, p: int = 6) -> torch.Tensor:
    """Smooth envelope f(u), u = r / r_cut: 1 at u=0, 0 for u >= 1, with p continuous derivatives at u=1.

    ``f(u) = 1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) - p(p+1)/2 u^(p+2)`` (Klicpera et al., NequIP).

    >>> float(polynomial_cutoff(torch.tensor(4.0), 4.0))
    0.0
    """
    u = r / r_cut
    f = (
        1.0
        - 0.5 * (p + 1.0) * (p + 2.0) * u.pow(p)
        + p * (p + 2.0) * u.pow(p + 1)
        - 0.5 * p * (p + 1.0) * u.pow(p + 2)
    )
    return f * (u < 1.0)


def geometric_weight(u: torch.Tensor) -> torch.Tensor:
    """Geometric smoothstep ``w_geo(u) = 1 + u^3 (-6 u^2 + 15 u - 10)``, clamped to 0 for u >= 1.

    1 at u = 0, 0 at u = 1, first and second derivatives zero at u = 1 (and at u = 0).

    >>> [round(float(geometric_weight(torch.tensor(x))), 6) for x in (0.0, 0.5, 1.0, 1.5)]
    [1.0, 0.5, 0.0, 0.0]
    """
    u = u.clamp(min=0.0, max=1.0)
    # factored form of the same polynomial: no cancellation near u = 1
    return (1.0 - u).pow(3) * (6.0 * u * u + 3.0 * u + 1.0)


class BesselBasis(nn.Module):
    """Bessel radial basis ``sqrt(2/r_cut) sin(n π r / r_cut) / r`` times the polynomial cutoff.

    Finite at r = 0 (written with ``sinc``), so probes sitting on an atom are safe.

    Parameters
    ----------
    r_cut : float, Å
    n_basis : int, number of functions n = 1..n_basis
    p : int, cutoff polynomial order
    trainable : bool, learn the frequencies (initialised to n π / r_cut)

    Shapes: ``forward(r)`` maps (...,) distances in Å to (..., n_basis), in 1/Å.
    """

    def __init__(self, r_cut: float, n_basis: int = 8, p: int = 6, trainable: bool = False):
        super().__init__()
        self.r_cut = float(r_cut)
        self.n_basis = int(n_basis)
        self.p = int(p)
        freq = torch.arange(1, n_basis + 1, dtype=torch.get_default_dtype()) * math.pi / r_cut
        if trainable:
            self.freq = nn.Parameter(freq)
        else:
            self.register_buffer("freq", freq)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r[..., None]
        # sin(w r)/r = w sinc(w r / π) with torch's normalised sinc
        basis = math.sqrt(2.0 / self.r_cut) * self.freq * torch.sinc(self.freq * r / math.pi)
        return basis * polynomial_cutoff(r, self.r_cut, self.p)
