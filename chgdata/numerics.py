"""Floating point that gives the same bits on every CPU, where stored arrays depend on it.

numpy dispatches float64 ``exp`` (also ``log``, ``power``, ``arctan2``) to different kernels by CPU feature: on
AVX-512 machines (numpy's X86_V4 / AVX512_SKX targets) the results differ from other machines in the last bits,
so SAED grids, Δρ and DOS windows, and with them every published checksum, changed with the machine (gpaw@1.2.0
did not rebuild on an AVX-512 EPYC). :func:`exp` uses only IEEE-754 basic operations (+, −, ×, rint, ldexp),
which every numpy kernel rounds identically: the same bits everywhere, within 2 ulp of the exact value.
"""

from __future__ import annotations

import numpy as np

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**11 (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
#: Taylor coefficients 1/n! for n = 13 … 0: |r| ≤ ln2/2 leaves a truncation error below 1e-17 (relative)
_COEFFS = tuple(1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(13, -1, -1))


_BLOCK = 1 << 14  # elements per pass: the Horner loop stays in cache


def _exp_block(x: np.ndarray, out: np.ndarray) -> None:
    k = np.minimum(x, 1100.0)
    np.maximum(k, -1100.0, out=k)
    k *= _INV_LN2
    np.rint(k, out=k)
    r = k * -_LN2_HI
    r += x
    r -= k * _LN2_LO
    p = np.full_like(r, _COEFFS[0])
    for c in _COEFFS[1:]:
        p *= r
        p += c
    np.ldexp(p, np.nan_to_num(k).astype(np.int32), out=out)
    out[x < -745.2] = 0.0
    out[x > 709.79] = np.inf
    out[np.isnan(x)] = np.nan


def exp(x, out: np.ndarray | None = None) -> np.ndarray:
    """e**x for float64 ``x`` (array or scalar), bit-identical on every CPU; ``out`` may be ``x`` itself.
    Underflows to 0 below −745.2, overflows to inf above 709.79, NaN stays NaN. About 5× numpy's time."""
    x = np.asarray(x, dtype=np.float64)
    if out is not None and not out.flags.c_contiguous:
        out[...] = exp(x)
        return out
    res = np.empty_like(x, order="C") if out is None else out
    flat_x, flat_out = np.ascontiguousarray(x).reshape(-1), res.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, flat_x.size, _BLOCK):
            block = flat_x[i:i + _BLOCK].copy() if out is x else flat_x[i:i + _BLOCK]
            _exp_block(block, flat_out[i:i + _BLOCK])
    return res if res.ndim or out is not None else res[()]
