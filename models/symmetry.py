"""Symmetry checks for layers and models (used by the tests; reusable like ``e3nn.util.test``).

``assert_equivariant`` applies a random O(3) element (proper or improper, ``-R``) and a translation to the
inputs of a function and compares with the transformed outputs. Inputs are described by a spec:

* an ``o3.Irreps`` (or string): features, transformed by ``D(R)`` on the last axis;
* ``"cartesian"``: Cartesian vectors in the last axis (edge vectors, lattice rows): ``x @ R.T``;
* ``"points"``: Cartesian positions, ``x @ R.T + t``;
* ``None``: invariant (indices, integer shifts, atomic numbers).

A dict input takes a dict spec (missing keys are invariant); :data:`BATCH_SPEC` describes a batch dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from e3nn import o3

from . import keys as K

BATCH_SPEC = {K.POSITIONS: "points", K.PROBE_POSITIONS: "points", K.CELL: "cartesian"}


def random_o3(improper: bool, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """Random 3×3 rotation (det +1) or rotation times inversion (det −1)."""
    q = torch.randn(4, generator=generator, dtype=dtype)
    q = q / q.norm()
    w, x, y, z = q
    rot = torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ])
    return -rot if improper else rot


def transform(value, spec, rot: torch.Tensor, shift: torch.Tensor):
    """Apply ``(rot, shift)`` to ``value`` according to ``spec`` (see module docstring)."""
    if isinstance(value, dict):
        spec = spec or {}
        return {k: transform(v, spec.get(k), rot, shift) for k, v in value.items()}
    if spec is None:
        return value
    rot = rot.to(value.dtype)
    if spec == "cartesian":
        return value @ rot.T
    if spec == "points":
        return value @ rot.T + shift.to(value.dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds Wigner D from default-dtype generators
    try:
        d = o3.Irreps(spec).D_from_matrix(rot.double())
    finally:
        torch.set_default_dtype(previous)
    return value @ d.to(value.dtype).T


def equivariance_error(fn: Callable, args: Sequence, specs_in: Sequence, spec_out, rot, shift) -> float:
    """Max |f(g·x) − g·f(x)| for one group element."""
    out = fn(*args)
    out_of_transformed = fn(*[transform(a, s, rot, shift) for a, s in zip(args, specs_in)])
    expected = transform(out, spec_out, rot, shift)
    return float((out_of_transformed - expected).detach().abs().max()) if out.numel() else 0.0


def assert_equivariant(fn: Callable, args: Sequence, specs_in: Sequence, spec_out, n_trials: int = 4,
                       atol: float = 1e-9, generator: torch.Generator | None = None) -> list[float]:
    """Check ``fn`` under random rotations, improper rotations (every other trial) and translations.

    Returns the errors; raises ``AssertionError`` if any exceeds ``atol`` (compare in float64).
    """
    generator = generator or torch.Generator().manual_seed(0)
    errors = []
    for trial in range(n_trials):
        rot = random_o3(improper=trial % 2 == 1, generator=generator)
        shift = 10.0 * torch.randn(3, generator=generator, dtype=torch.float64)
        errors.append(equivariance_error(fn, args, specs_in, spec_out, rot, shift))
    if max(errors) > atol:
        raise AssertionError(f"equivariance errors {errors} exceed atol={atol}")
    return errors


def permute_atoms(batch: dict[str, torch.Tensor], perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reorder the atoms of a batch: new atom ``a`` is old atom ``perm[a]``; edges are relabelled."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm), device=perm.device)
    out = dict(batch)
    for key in (K.POSITIONS, K.ATOMIC_NUMBERS, K.ATOM_BATCH):
        out[key] = batch[key][perm]
    out[K.EDGE_INDEX] = inverse[batch[K.EDGE_INDEX]]
    if K.PROBE_EDGE_INDEX in batch:
        k, i = batch[K.PROBE_EDGE_INDEX]
        out[K.PROBE_EDGE_INDEX] = torch.stack([k, inverse[i]])
    return out
