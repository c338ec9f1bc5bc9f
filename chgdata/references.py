"""Per-element radial reference densities ρ_Z(r) for the superposition of atomic electron densities (SAED).

Model
-----
Each element's reference is a linear combination of a fixed set of normalised, isotropic 3-D Gaussians

    ρ_Z(r) = Σ_k c_{Z,k} g_k(r),   g_k(r) = (2π σ_k²)^(-3/2) exp(-r² / (2 σ_k²))   [e/Å^3, r and σ_k in Å]

with Σ_k c_{Z,k} = v_Z, the element's valence electron count in the data (each g_k integrates to exactly 1).
The coefficients are signed by default or constrained to c ≥ 0 (then ρ_Z ≥ 0); see :func:`solve_reference`
for why the default is signed: pseudo valence densities are negative near some nuclei.
Why Gaussians: they are smooth, have no cutoff radius (so no jump anywhere), and are analytic in reciprocal
space, ĝ_k(G) = exp(-σ_k² G² / 2), so ρ_SAED can be built exactly on any periodic grid by one inverse FFT
(``chgdata.saed``) with its G = 0 term, i.e. its integral, equal to the electron count by construction. The
widths are a fixed geometric ladder (default 0.12–2.4 Å, 10 widths), spanning the compact pseudo d shells of
transition metals up to the diffuse s tails of alkali metals (gpaw 80/20 held-out NMAE of the signed fit:
2.4 % with this ladder, 2.3 % with 12 widths 0.08–2.4 Å at 3× the fit time).

The coefficients are fitted either to the ingested crystal densities themselves or, in
:mod:`chgdata.free_atoms`, to isolated neutral atoms computed in the data's own convention (GPAW's shipped
table). Both are a linear least-squares problem whose normal equations are a sum over materials.
:func:`material_normal_equations` is the pure per-material piece (map it over materials, e.g. with Dask),
:meth:`NormalEquations.__add__`/:func:`sum_normal_equations` the reduction, and :func:`solve_reference` the
final sum-constrained solve giving a :class:`ReferenceTable`.

Valence counts are not taken from any pseudopotential library: :func:`chgdata.valences.valence_counts` recovers
them from the electron counts ∫ρ dV of the stored materials.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chgdata.gaussians import basis_fields
from chgdata.numerics import exp

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SIGMAS",
    "NormalEquations",
    "ReferenceTable",
    "gaussian_sigmas",
    "material_normal_equations",
    "solve_reference",
    "sum_normal_equations",
]

TABLE_FORMAT = "chgdata.saed-reference/1"


def gaussian_sigmas(sigma_min: float = 0.12, sigma_max: float = 2.4, n: int = 10) -> tuple[float, ...]:
    """Geometric ladder of Gaussian widths σ (Å), ``n`` values from ``sigma_min`` to ``sigma_max``."""
    if not (0 < sigma_min < sigma_max) or n < 2:
        raise ValueError("need 0 < sigma_min < sigma_max and n >= 2")
    ratio = sigma_max / sigma_min  # Python floats (libm), not np.geomspace: the same bits on every CPU
    return tuple([sigma_min * ratio ** (k / (n - 1)) for k in range(n - 1)] + [float(sigma_max)])


DEFAULT_SIGMAS = (0.12, 0.1673940952754905, 0.23350652610916664, 0.32573011399138874, 0.4543774811297576,  # Å,
                  0.6338342280606005, 0.8841675596736926, 1.233370239362634, 1.720490794648527, 2.4)  # no pow()


def gaussian_radial(r: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Normalised 3-D Gaussians g_k(r) (1/Å^3), shape ``r.shape + (K,)``; each integrates to 1 over space."""
    s = np.asarray(sigmas, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)[..., None]
    v = 2.0 * np.pi * s**2
    return exp(-0.5 * (r / s) ** 2) / (v * np.sqrt(v))  # no np.power/np.exp: CPU-independent bits


def gaussian_fourier(g: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Fourier transforms ĝ_k(G) = exp(-σ_k² G²/2) (dimensionless, ĝ(0) = 1), shape ``G.shape + (K,)``; G in 1/Å."""
    s = np.asarray(sigmas, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)[..., None]
    return exp(-0.5 * (g * s) ** 2)


# Closed sub-shell cores in the order core levels are filled (1s, 2s, 2p, 3s, 3p, 3d, 4s, 4p, 4d, 5s, 5p, 4f,
# 5d, 6s, 6p): every pseudopotential/PAW setup in common use freezes one of these, so Z - core is a candidate.


# ------------------------------------------------------------------------------------------- fitting


@dataclass
class NormalEquations:
    """Weighted least-squares normal equations for the coefficients c_{Z,k}, summable over materials.

    Unknowns are ordered element-major: index ``i * K + k`` for ``elements[i]`` and width ``sigmas[k]``.
    ``ata`` = AᵀWA, ``atb`` = AᵀWb, ``btb`` = bᵀWb (W the per-row weights), ``n_points`` rows used.
    """

    elements: tuple[str, ...]
    sigmas: tuple[float, ...]
    ata: np.ndarray
    atb: np.ndarray
    btb: float
    n_points: int
    materials: tuple[str, ...] = ()

    def _embed(self, elements: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.sigmas)
        pos = {e: i for i, e in enumerate(elements)}
        cols = np.concatenate([np.arange(k) + pos[e] * k for e in self.elements]) if self.elements else []
        cols = np.asarray(cols, dtype=int)
        n = len(elements) * k
        ata = np.zeros((n, n))
        atb = np.zeros(n)
        ata[np.ix_(cols, cols)] = self.ata
        atb[cols] = self.atb
        return ata, atb

    def __add__(self, other: NormalEquations) -> NormalEquations:
        if not np.allclose(self.sigmas, other.sigmas, rtol=0, atol=1e-12):
            raise ValueError("cannot add normal equations of different Gaussian bases")
        elements = tuple(sorted(set(self.elements) | set(other.elements)))
        a1, b1 = self._embed(elements)
        a2, b2 = other._embed(elements)
        return NormalEquations(
            elements, self.sigmas, a1 + a2, b1 + b2, self.btb + other.btb,
            self.n_points + other.n_points, self.materials + other.materials,
        )


def sum_normal_equations(parts: Iterable[NormalEquations]) -> NormalEquations:
    """Sum per-material :class:`NormalEquations` (the reduce step)."""
    total = None
    for p in parts:
        total = p if total is None else total + p
    if total is None:
        raise ValueError("no normal equations to sum")
    return total


def material_normal_equations(
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    species: Sequence[str],
    rho: np.ndarray,
    rng: np.random.Generator,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    n_points: int = 4096,
    material_id: str = "",
) -> NormalEquations:
    """Normal-equation contribution of one material (pure; map over materials and sum).

    ``rho`` is the material's density on its grid, shape (nx, ny, nz), e/Å^3. The design matrix has one column
    per (element, width): the periodic superposition of g_k over the atoms of that element, evaluated on the
    grid exactly as :func:`chgdata.saed.saed_density` does (band-limited to the grid). ``n_points`` grid points
    are drawn without replacement with ``rng``. Rows are weighted by 1/(n · mean ρ²) so that every material
    contributes its *relative* squared error with equal weight, whatever its size or density.
    """
    rho = np.asarray(rho)
    shape = rho.shape
    elements = tuple(sorted(set(species)))
    fields = basis_fields(lattice, frac_coords, species, shape, sigmas, elements)  # (E, K, nx, ny, nz)
    flat = rho.reshape(-1)
    n_total = flat.size
    take = min(int(n_points), n_total)
    rows = rng.choice(n_total, size=take, replace=False) if take < n_total else np.arange(n_total)
    a = fields.reshape(len(elements) * len(sigmas), -1)[:, rows].T.astype(np.float64)
    b = flat[rows].astype(np.float64)
    w = 1.0 / (take * max(float(np.mean(flat.astype(np.float64) ** 2)), 1e-30))
    return NormalEquations(
        elements, tuple(float(s) for s in sigmas), w * (a.T @ a), w * (a.T @ b), w * float(b @ b), take,
        (material_id,) if material_id else (),
    )


def solve_reference(
    normal: NormalEquations,
    valence: Mapping[str, int],
    *,
    dataset_version: str,
    ridge: float = 1e-7,
    r_step: float = 0.01,
    nonnegative: bool = False,
    prior: ReferenceTable | None = None,
    prior_weight: float = 0.0,
) -> ReferenceTable:
    """Solve min ‖Ac − b‖²_W subject to Σ_k c_{Z,k} = v_Z for every element (exact); return the table.

    ``nonnegative=False`` (default): equality-constrained least squares (KKT system), coefficients of either
    sign. The data's convention decides: GPAW/PAW pseudo valence densities dip *negative* at the nuclei of
    p-block elements (down to −11 e/Å^3 for Ge in the gpaw set), which no non-negative reference can follow;
    measured on the gpaw 80/20 split the signed fit gives 2.4 % NMAE and the non-negative one 11 %.
    ``nonnegative=True``: c ≥ 0 as well (ρ_Z(r) ≥ 0 everywhere), via scipy.optimize.nnls on the Cholesky factor
    of AᵀWA with the constraints as heavily weighted rows, then an exact per-element rescale (1e-8 change).
    ``ridge`` (relative to mean diag AᵀWA) keeps the nearly collinear Gaussian ladder well conditioned.
    ``prior``/``prior_weight``: add ``prior_weight`` · mean diag AᵀWA · ‖c_Z − c_Z^prior‖² for every element, i.e.
    shrink the fit towards another table (e.g. :func:`isolated_atom_reference`'s free atoms) instead of zero.
    """
    from scipy.linalg import cho_factor, solve_triangular
    from scipy.optimize import nnls

    missing = [e for e in normal.elements if e not in valence]
    if missing:
        raise ValueError(f"no valence count for {missing}")
    k = len(normal.sigmas)
    n = len(normal.elements) * k
    diag_mean = max(float(np.mean(np.diag(normal.ata))), 1e-300)
    h = normal.ata + ridge * diag_mean * np.eye(n)
    atb = normal.atb
    if prior is not None and prior_weight > 0:
        missing_prior = [e for e in normal.elements if e not in prior.coefficients]
        if missing_prior or not np.allclose(prior.sigmas, normal.sigmas, rtol=0, atol=1e-12):
            raise ValueError(f"prior table {prior.id} lacks {missing_prior} or uses another Gaussian basis")
        h = h + prior_weight * diag_mean * np.eye(n)
        atb = atb + prior_weight * diag_mean * np.concatenate([prior.coefficients[e] for e in normal.elements])
    c_fac, lower = cho_factor(h, lower=True)
    lmat = np.tril(c_fac)
    d = solve_triangular(lmat, atb, lower=True)
    con = np.zeros((len(normal.elements), n))
    for i in range(len(normal.elements)):
        con[i, i * k:(i + 1) * k] = 1.0
    vz = np.array([float(valence[e]) for e in normal.elements])
    if nonnegative:
        mu = 1e4 * np.sqrt(max(float(np.max(np.diag(h))), 1e-300))
        coef, _ = nnls(np.vstack([lmat.T, mu * con]), np.concatenate([d, mu * vz]), maxiter=50 * n)
        coef = coef.reshape(len(normal.elements), k)
        sums = coef.sum(axis=1)
        if np.any(sums <= 0):
            raise RuntimeError("constrained fit failed: an element got all-zero coefficients")
        coef *= (vz / sums)[:, None]
    else:  # equality-constrained least squares via the KKT system
        kkt = np.block([[h, con.T], [con, np.zeros((con.shape[0], con.shape[0]))]])
        sol = np.linalg.solve(kkt, np.concatenate([atb, vz]))
        coef = sol[:n].reshape(len(normal.elements), k)
    cf = coef.reshape(-1)
    sq = float(cf @ normal.ata @ cf - 2 * cf @ normal.atb + normal.btb)
    rel_rms = float(np.sqrt(max(sq, 0.0) / max(normal.btb, 1e-300)))
    return ReferenceTable.from_coefficients(
        {e: coef[i] for i, e in enumerate(normal.elements)},
        normal.sigmas,
        {e: int(valence[e]) for e in normal.elements},
        provenance={
            "materials": list(normal.materials),
            "n_points": int(normal.n_points),
            "relative_rms_residual": rel_rms,
            "dataset_version": str(dataset_version),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": ("non-negative" if nonnegative else "signed")
            + " weighted least squares on subsampled grid points, sum-constrained per element",
        },
        r_step=r_step,
    )


# ------------------------------------------------------------------------------------------------ table


@dataclass
class ReferenceTable:
    """Fitted per-element radial references (see the module docstring for the model).

    ``coefficients[Z]`` are the c_{Z,k} (electrons) for the Gaussian widths ``sigmas`` (Å); ``r`` (Å) and
    ``rho[Z]`` (e/Å^3) tabulate ρ_Z(r) out to where every reference is < 1e-12 of its peak; ``valence[Z]`` is
    the integer electron count each reference integrates to; ``provenance`` records the fit (materials, number
    of points, residual, dataset version, created time). ``id`` is "saed-ref-" plus 12 hex of the sha256 of the
    canonical content (basis, elements, valence counts, coefficients, dataset version; not the created time).
    """

    elements: tuple[str, ...]
    sigmas: tuple[float, ...]
    coefficients: dict[str, np.ndarray]
    valence: dict[str, int]
    r: np.ndarray
    rho: dict[str, np.ndarray]
    provenance: dict = field(default_factory=dict)
    id: str = ""

    basis: str = "gaussian-3d-normalised"

    @classmethod
    def from_coefficients(
        cls,
        coefficients: Mapping[str, Sequence[float]],
        sigmas: Sequence[float],
        valence: Mapping[str, int],
        *,
        provenance: Mapping | None = None,
        r_step: float = 0.01,
    ) -> ReferenceTable:
        """Build a table (tabulation and id included) from Gaussian coefficients."""
        sig = tuple(float(s) for s in sigmas)
        elements = tuple(sorted(coefficients))
        coefs = {e: np.asarray(coefficients[e], dtype=np.float64).copy() for e in elements}
        for e in elements:
            if coefs[e].shape != (len(sig),) or not np.all(np.isfinite(coefs[e])):
                raise ValueError(f"coefficients of {e} must be {len(sig)} finite numbers")
            if abs(coefs[e].sum() - valence[e]) > 1e-9 * max(1, valence[e]):
                raise ValueError(f"coefficients of {e} sum to {coefs[e].sum()}, not its valence {valence[e]}")
        r_max = max(sig) * math.sqrt(2 * math.log(1e12)) + 0.5
        r = np.arange(0.0, r_max + r_step, r_step)
        basis_r = gaussian_radial(r, sig)
        table = cls(
            elements=elements,
            sigmas=sig,
            coefficients=coefs,
            valence={e: int(valence[e]) for e in elements},
            r=r,
            rho={e: basis_r @ coefs[e] for e in elements},
            provenance=dict(provenance or {}),
        )
        table.id = table.content_id()
        return table

    # --- evaluation ---
    def density(self, element: str, r: np.ndarray) -> np.ndarray:
        """ρ_Z(r) in e/Å^3 at radii ``r`` (Å), analytic (no interpolation)."""
        return gaussian_radial(r, self.sigmas) @ self.coefficients[element]

    def fourier(self, element: str, g: np.ndarray) -> np.ndarray:
        """f_Z(G) = ∫ρ_Z(r) e^{-iG·r} d³r (electrons) at |G| = ``g`` (1/Å); f_Z(0) = valence count."""
        return gaussian_fourier(g, self.sigmas) @ self.coefficients[element]

    def cutoff_radius(self, rel: float = 1e-10) -> float:
        """Radius (Å) beyond which every reference is below ``rel`` times the peak of the widest Gaussian."""
        return float(max(self.sigmas) * math.sqrt(2 * math.log(1 / rel)))

    def weights(self, species: Sequence[str]) -> np.ndarray:
        """Per-atom coefficient matrix (n_atoms, K) for the given species list."""
        missing = sorted(set(species) - set(self.elements))
        if missing:
            raise KeyError(f"reference table {self.id} has no entry for {', '.join(missing)}: it covers "
                           f"{', '.join(sorted(self.elements))}")
        return np.stack([self.coefficients[s] for s in species]) if len(species) else np.zeros((0, len(self.sigmas)))

    # --- identity and serialisation ---
    def _canonical(self) -> dict:
        return {
            "format": TABLE_FORMAT,
            "basis": self.basis,
            "sigmas": [float(s) for s in self.sigmas],
            "elements": list(self.elements),
            "valence": {e: int(self.valence[e]) for e in self.elements},
            "coefficients": {e: [float(x) for x in self.coefficients[e]] for e in self.elements},
            "dataset_version": str(self.provenance.get("dataset_version", "")),
        }

    def content_id(self) -> str:
        """"saed-ref-<12 hex>": sha256 of the canonical JSON content."""
        blob = json.dumps(self._canonical(), sort_keys=True, separators=(",", ":")).encode()
        return "saed-ref-" + hashlib.sha256(blob).hexdigest()[:12]

    def to_json(self) -> str:
        """JSON text holding everything (coefficients, tabulated r/ρ, provenance, id)."""
        d = self._canonical()
        d.update(
            id=self.id,
            provenance=self.provenance,
            r_step=float(self.r[1] - self.r[0]),
            r=[round(float(x), 10) for x in self.r],
            rho={e: [float(x) for x in self.rho[e]] for e in self.elements},
            units={"r": "Å", "rho": "e/Å^3", "sigmas": "Å", "coefficients": "electrons"},
        )
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReferenceTable:
        """Inverse of :meth:`to_json`; checks the format, the id and that the tabulation matches the coefficients."""
        d = json.loads(text)
        if d.get("format") != TABLE_FORMAT or d.get("basis") != "gaussian-3d-normalised":
            raise ValueError(f"not a SAED reference table of format {TABLE_FORMAT}")
        table = cls.from_coefficients(
            d["coefficients"], d["sigmas"], d["valence"], provenance=d.get("provenance", {}), r_step=d["r_step"]
        )
        if d.get("id") and d["id"] != table.id:
            raise ValueError(f"reference table id {d['id']} does not match its content ({table.id})")
        for e in table.elements:
            stored = np.asarray(d["rho"][e])
            if stored.shape != table.rho[e].shape or not np.allclose(stored, table.rho[e], rtol=1e-9, atol=1e-14):
                raise ValueError(f"tabulated rho of {e} does not match its coefficients")
        return table

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``."""
        p = Path(path)
        p.write_text(self.to_json())
        return p

    @classmethod
    def load(cls, path: str | Path) -> ReferenceTable:
        """Read a table written by :meth:`save` (e.g. the ``--reference FILE`` of a pipeline)."""
        return cls.from_json(Path(path).read_text())
