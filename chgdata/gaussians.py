"""Periodic sums of normalised 3-D Gaussians on a grid, by reciprocal space (numpy/scipy only).

The numerical core of the SAED reference density (:mod:`chgdata.saed`) and of the reference fit's design matrix
(:mod:`chgdata.references`), kept apart so that neither of those imports the other.

Method (chosen by measuring, see ``bench/saed.py`` and ``bench/results/saed.md``): reciprocal space.
ρ_SAED(G) = (1/V) Σ_k exp(−σ_k² G²/2) S_k(G) with the width-weighted structure factors
S_k(G) = Σ_i c_{Z_i,k} exp(−2πi m·x_i) (m = Miller indices, x_i fractional). The phase factor is separable,
exp(−2πi(h x + k y + l z)) = e_x[h] e_y[k] e_z[l], so a slab of S_k is one complex matrix product
(rows × ny × n_atoms) @ (n_atoms × nz/2+1) — BLAS speed instead of an atom loop. Each width only needs the
box of |G| < 6.4/σ_k (broad Gaussians touch a handful of G vectors), then one inverse real FFT (scipy.fft,
complex64/float32). The grid values are the band-limited (truncated Fourier series) SAED on the grid: the
G = 0 term makes ∫ρ_SAED dV equal the electron count to float rounding, the result is exactly periodic and
invariant to the choice of cell, and it matches the real-space sum wherever the references are resolved by
the grid (for widths σ ≳ 1.3 × grid spacing; narrower Gaussians are represented by their grid projection,
like the plane-wave DFT density itself). Memory: the half spectrum (≈ 1× the float32 grid) plus the output
(1×) plus slab temporaries (≈ 0.2×); the FFT is done axis by axis in slabs so that no full-size copy is made.
A real-space method with a cutoff would cost ~(4π/3)(6.4 σ_max)³/ΔV evaluations per atom (10⁶–10⁸ for
σ_max ≈ 2.4 Å on fine grids) and is kept only for points (:func:`chgdata.saed.saed_at_points`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft

__all__ = ["basis_fields", "spectral_density"]

# A Gaussian width σ is dropped beyond |G| = _G_CUT/σ, where exp(−σ²G²/2) < 1e-9.
_G_CUT = math.sqrt(2 * math.log(1e9))


def _runs(n: int, m_max: float, half: bool) -> list[tuple[int, int]]:
    """Contiguous index runs of an FFT axis of length ``n`` holding frequencies |m| ≤ m_max."""
    if half:
        return [(0, min(int(np.floor(m_max)), n // 2) + 1)]
    m = int(np.floor(m_max))
    if 2 * m + 1 >= n:
        return [(0, n)]
    return [(0, m + 1), (n - m, n)]


def _phases(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """exp(−2πi m x) as complex64, shape (n_atoms, len(m)); the angle is reduced in float64 first."""
    t = np.outer(x, m) % 1.0
    t *= -2.0 * np.pi
    out = np.empty(t.shape, dtype=np.complex64)
    out.real = np.cos(t)
    out.imag = np.sin(t)
    return out


def spectral_density(
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    weights: np.ndarray,
    sigmas: Sequence[float],
    grid_shape: Sequence[int],
    *,
    slab_fraction: float = 1 / 16,
) -> np.ndarray:
    """Σ_i Σ_k weights[i, k] · periodic g_{σ_k}(r − R_i) on the grid, float32 (nx, ny, nz), 1/Å^3 × weight."""
    lat = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
    frac = np.asarray(frac_coords, dtype=np.float64).reshape(-1, 3)
    w = np.asarray(weights, dtype=np.float64).reshape(frac.shape[0], len(sigmas))
    nx, ny, nz = (int(n) for n in grid_shape)
    nzh = nz // 2 + 1
    volume = abs(float(np.linalg.det(lat)))
    recip = 2 * np.pi * np.linalg.inv(lat).T  # rows b_a, a_a·b_b = 2π δ_ab
    gm = (recip @ recip.T).astype(np.float64)  # |G|² = mᵀ gm m
    alen = np.linalg.norm(lat, axis=1)

    mx = np.fft.fftfreq(nx, 1.0 / nx)
    my = np.fft.fftfreq(ny, 1.0 / ny)
    mz = np.arange(nzh, dtype=np.float64)
    spec = np.zeros((nx, ny, nzh), dtype=np.complex64)
    if frac.shape[0] == 0:
        return np.zeros((nx, ny, nz), dtype=np.float32)
    px = _phases(frac[:, 0], mx)
    py = _phases(frac[:, 1], my)
    pz = _phases(frac[:, 2], mz)
    # |G|² = q_yz[k, l] + mx² gm00 + 2 mx (gm01 my + gm02 mz)
    q_yz = (gm[1, 1] * my[:, None] ** 2 + gm[2, 2] * mz[None, :] ** 2 + 2 * gm[1, 2] * my[:, None] * mz[None, :])
    q_yz = q_yz.astype(np.float32)
    lin_yz = (gm[0, 1] * my[:, None] + gm[0, 2] * mz[None, :]).astype(np.float32) * 2

    boxes = []
    for k, s in enumerate(sigmas):
        active = np.nonzero(w[:, k])[0]
        if active.size == 0:
            continue
        m_max = _G_CUT / s * alen / (2 * np.pi)
        boxes.append((k, float(s), active, _runs(nx, m_max[0], False), _runs(ny, m_max[1], False),
                      _runs(nz, m_max[2], True)[0]))
    inv_v = np.float32(1.0 / volume)
    rows_per_slab = max(1, int(slab_fraction * nx))
    for r0 in range(0, nx, rows_per_slab):
        r1 = min(nx, r0 + rows_per_slab)
        mxs = mx[r0:r1].astype(np.float32)[:, None, None]
        q = q_yz[None, :, :] + mxs * lin_yz[None, :, :]
        q += np.float32(gm[0, 0]) * mxs * mxs
        for k, s, active, xr, yr, (z0, z1) in boxes:
            wk = w[active, k].astype(np.complex64)
            for xa, xb in xr:
                a0, a1 = max(xa, r0), min(xb, r1)
                if a0 >= a1:
                    continue
                ax = (px[active, a0:a1] * wk[:, None]).T  # (hr, n)
                for ya, yb in yr:
                    p = ax[:, None, :] * py[active, ya:yb].T[None, :, :]  # (hr, yr, n)
                    sf = (p.reshape(-1, active.size) @ pz[active, z0:z1]).reshape(a1 - a0, yb - ya, z1 - z0)
                    g = q[a0 - r0:a1 - r0, ya:yb, z0:z1] * np.float32(-0.5 * s * s)
                    np.exp(g, out=g)
                    g *= inv_v
                    sf *= g
                    spec[a0:a1, ya:yb, z0:z1] += sf
    del q
    # Inverse transform axis by axis in slabs: no full-size temporary besides the output.
    cols = max(1, int(slab_fraction * ny))
    for c0 in range(0, ny, cols):
        c1 = min(ny, c0 + cols)
        spec[:, c0:c1, :] = sfft.ifft(spec[:, c0:c1, :], axis=0, norm="forward", workers=1)
    out = np.empty((nx, ny, nz), dtype=np.float32)
    for r0 in range(0, nx, rows_per_slab):
        r1 = min(nx, r0 + rows_per_slab)
        out[r0:r1] = sfft.irfft2(spec[r0:r1], s=(ny, nz), axes=(1, 2), norm="forward", workers=1)
    return out


def basis_fields(
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    species: Sequence[str],
    grid_shape: Sequence[int],
    sigmas: Sequence[float],
    elements: Sequence[str],
) -> np.ndarray:
    """Design-matrix columns for the reference fit, float32 (E, K, nx, ny, nz), 1/Å^3.

    Field [e, k] is the periodic superposition of the unit Gaussian of width ``sigmas[k]`` over the atoms of
    ``elements[e]``, on the grid exactly as :func:`chgdata.saed.saed_density` builds it, so
    ρ_SAED = Σ_{e,k} c_{e,k} field[e, k].
    """
    species = list(species)
    nx, ny, nz = (int(n) for n in grid_shape)
    out = np.zeros((len(elements), len(sigmas), nx, ny, nz), dtype=np.float32)
    for ei, el in enumerate(elements):
        mask = np.array([s == el for s in species])
        for k in range(len(sigmas)):
            w = np.zeros((len(species), len(sigmas)))
            w[mask, k] = 1.0
            out[ei, k] = spectral_density(lattice, frac_coords, w, sigmas, (nx, ny, nz))
    return out
