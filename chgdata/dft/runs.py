"""SCF and NSCF runs of one structure from a chosen start, and what users read off them (energies in eV).

* :func:`scf` — converged as usual from GPAW's default start (superposition of atomic densities, LCAO) or from a
  given pseudo density ρ (e/Å³) and D_asii (:mod:`chgdata.dft.start`).
* :func:`nscf` — the bands of a given density ρ, converged (``converge_bands`` of the settings) with ρ fixed, in the
  potential of ρ and the given or atomic D_asii (``chgdata dft --nscf``'s default), or with ``relax_paw`` the PAW
  D_asii made self-consistent with ρ; E_F from the new eigenvalues.
* :func:`band_errors` — band gap and band-energy errors of one run against a reference run on the same k-points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chgdata.dft.settings import SHARED, DFTSettings


class DFTRunError(RuntimeError):
    """A run that ended without a converged result (its message says why)."""


@dataclass
class Run:
    """One GPAW run: how it started, its cost, and its results (eV; eigenvalues (nspins, nk, nbands))."""

    start: str
    iterations: int
    seconds: float
    energy_eV: float
    efermi_eV: float
    gap_eV: float
    direct_gap_eV: float
    eigenvalues: np.ndarray = field(repr=False)
    k_weights: np.ndarray = field(repr=False)
    magmom_muB: float = 0.0
    calc: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no arrays)."""
        return {"start": self.start, "iterations": self.iterations, "seconds": round(self.seconds, 3),
                "energy_eV": self.energy_eV, "efermi_eV": self.efermi_eV, "gap_eV": self.gap_eV,
                "direct_gap_eV": self.direct_gap_eV, "magmom_muB": self.magmom_muB}


def _result(calc, start: str, seconds: float, energy: float) -> Run:
    from ase.dft.bandgap import bandgap

    nspins = calc.get_number_of_spins()
    nk = len(calc.get_ibz_k_points())
    eig = np.array([[calc.get_eigenvalues(k, s) for k in range(nk)] for s in range(nspins)])
    gap = float(bandgap(calc, output=None)[0])
    direct = float(bandgap(calc, direct=True, output=None)[0])
    mag = float(calc.get_magnetic_moment()) if nspins == 2 else 0.0
    return Run(start, int(calc.get_number_of_iterations()), seconds, energy, float(calc.get_fermi_level()), gap,
               direct, eig, np.asarray(calc.get_k_point_weights()), mag, calc)


def _converge(atoms, calc, start: str, t0: float, what: str) -> Run:
    try:
        energy = float(atoms.get_potential_energy())
    except Exception as exc:
        if "Converge" in type(exc).__name__:
            raise DFTRunError(f"{what} not converged within {calc.params.maxiter} iterations") from exc
        raise
    return _result(calc, start, time.time() - t0, energy)


def scf(atoms, *, rho_sR: np.ndarray | None = None, D_asii=None, start: str = "default",
        settings: DFTSettings = SHARED, txt=None) -> Run:
    """Self-consistent run of ``atoms`` (ASE, initial moments set) from GPAW's default start, or from ``rho_sR``
    (nspins, *grid) e/Å³ with ``D_asii`` (None: atomic); ``start`` labels the run."""
    from gpaw import GPAW

    from chgdata.dft.settings import gpaw_parameters
    from chgdata.dft.start import calculation_from_density

    atoms = atoms.copy()
    t0 = time.time()
    if rho_sR is None:
        calc = GPAW(**gpaw_parameters(atoms, settings), txt=txt)
        atoms.calc = calc
    else:
        calc = calculation_from_density(atoms, rho_sR, D_asii, settings, txt=txt)
    return _converge(atoms, calc, start, t0, "SCF")


def nscf(atoms, rho_sR: np.ndarray, D_asii=None, *, start: str = "density",
         settings: DFTSettings = SHARED, txt=None, relax_paw: bool = False) -> Run:
    """Bands of the fixed density ``rho_sR`` (e/Å³) from ``D_asii`` (None: atomic), with ``relax_paw`` relaxed to
    self-consistency with ρ (not for spin-polarised cells: with both spin densities fixed the
    relaxation of Fe and Co went astray, ``chgdata.models.dft.PAW_CHOICES``). ``energy_eV`` is GPAW's
    energy expression evaluated at the fixed density: not a variational (Harris–Foulkes) energy."""
    from chgdata.dft.start import calculation_from_density

    atoms = atoms.copy()
    t0 = time.time()
    calc = calculation_from_density(atoms, rho_sR, D_asii, settings, txt=txt, fixed=True, relax_paw=relax_paw)
    return _converge(atoms, calc, start, t0, "NSCF bands")


def density_of(run: Run) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pseudo density per spin (nspins, *grid) e/Å³ and the D_asii of a converged run (the floor's start)."""
    calc = run.calc
    nspins = calc.get_number_of_spins()
    rho = np.stack([calc.get_pseudo_density(spin=s) for s in range(nspins)]) if nspins == 2 else \
        calc.get_pseudo_density()[None]
    D = calc.dft.density.D_asii
    return rho, [np.asarray(D[a]).copy() for a in range(len(calc.atoms))]


def band_errors(run: Run, ref: Run, n_empty: int = 4) -> dict[str, float]:
    """Errors of ``run`` against ``ref`` (same k-points): band gap [eV], direct gap [eV] and the k-weighted mean
    absolute band-energy error [eV] of the occupied bands and the first ``n_empty`` empty ones, both aligned at the
    VBM for a gapped ``ref`` (gap > 0.05 eV), else at E_F (``alignment`` says which)."""
    if run.eigenvalues.shape[:2] != ref.eigenvalues.shape[:2]:
        raise ValueError(f"different k-point sets: {run.eigenvalues.shape} vs {ref.eigenvalues.shape}")
    gapped = ref.gap_eV > 0.05

    def aligned(r: Run) -> np.ndarray:
        e = r.eigenvalues
        zero = e[e <= r.efermi_eV + 1e-9].max() if gapped else r.efermi_eV
        return e - zero

    nocc = int(max(np.sum(ref.eigenvalues[s, k] <= ref.efermi_eV) for s in range(ref.eigenvalues.shape[0])
                   for k in range(ref.eigenvalues.shape[1])))
    nb = min(nocc + n_empty, run.eigenvalues.shape[2], ref.eigenvalues.shape[2])
    diff = np.abs(aligned(run)[..., :nb] - aligned(ref)[..., :nb])
    w = ref.k_weights / ref.k_weights.sum()
    mae = float(np.einsum("skn,k->", diff, w) / (diff.shape[0] * nb))
    return {"gap_error_eV": run.gap_eV - ref.gap_eV, "direct_gap_error_eV": run.direct_gap_eV - ref.direct_gap_eV,
            "band_mae_eV": mae, "n_bands_compared": nb, "alignment": "VBM" if gapped else "E_F"}


def raw_dos(run: Run, settings: DFTSettings = SHARED):
    """The run's raw tetrahedron DOS on E_F + the settings' window (:class:`chgdata.dos.RawDos`, states/eV/cell)."""
    from chgdata.dft.calculation import tetrahedron_dos
    from chgdata.dos import RawDos

    energies, dos, _ = tetrahedron_dos(run.calc, settings, run.efermi_eV)
    return RawDos(energies=energies, densities=np.array(dos), efermi=run.efermi_eV, natoms=len(run.calc.atoms),
                  spin_polarized=len(dos) == 2, source=f"GPAW {run.start}")
