"""The DFT settings of the shared GPAW crystals, in one place, so that a prediction and its DFT check use one physics.

GPAW plane waves (300 eV), PBE, Monkhorst-Pack k-points of density 2.5 per Å⁻¹ (ASE's convention, 2π included),
Fermi-Dirac smearing 0.1 eV, real-space grid spacing 0.18 Å (which fixes the density grid), the default PAW setups of
the ``gpaw-data`` package, and enough converged bands for the DOS to be complete up to E_F + 12.5 eV. The same dict
is written as ``settings`` in every ``meta.json`` (``../shared/data/gpaw``), and :meth:`DFTSettings.from_meta` reads it
back, so a folder's own settings win over the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

#: Initial magnetic moments (μB per atom) of the elements whose compounds are computed spin-polarised.
MAGNETIC_MOMENTS = {"Cr": 3.0, "Mn": 4.0, "Fe": 3.0, "Co": 2.0, "Ni": 1.0}

INSTALL_HINT = ("GPAW is not installed: apt-get install libxc-dev libopenblas-dev g++, then "
                "pip install -e \".[dft]\" (README, set-up)")


class DFTUnavailable(RuntimeError):
    """GPAW (or its PAW setups) cannot be imported."""


@dataclass(frozen=True)
class DFTSettings:
    """GPAW settings; energies in eV, lengths in Å, k-point density in points per Å⁻¹."""

    ecut_eV: float = 300.0
    xc: str = "PBE"
    kpt_density_per_inv_A: float = 2.5
    smearing_eV: float = 0.1
    grid_spacing_A: float = 0.18
    converge_bands: str = "CBM+13"
    converge_eigenstates: float = 1e-6
    dos_window_eV: tuple[float, float] = (-12.5, 12.5)
    dos_step_eV: float = 0.01
    maxiter: int = 300

    def as_meta(self) -> dict[str, Any]:
        """The ``settings`` block of a ``meta.json``, key for key as the shared crystals write it."""
        return {
            "code": "GPAW", "mode": "pw", "ecut_eV": self.ecut_eV, "xc": self.xc,
            "kpt_density_per_inv_A": self.kpt_density_per_inv_A,
            "kpt_scheme": f"Monkhorst-Pack (ASE kpts={{'density': {self.kpt_density_per_inv_A}}})",
            "occupations": "Fermi-Dirac", "smearing_eV": self.smearing_eV, "grid_spacing_A": self.grid_spacing_A,
            "setups": "GPAW default PAW (gpaw-data package)", "converge_bands": self.converge_bands,
            "converge_eigenstates": self.converge_eigenstates,
            "density": "GPAW pseudo valence density (calc.get_pseudo_density), coarse grid",
            "dos_method": "linear tetrahedron (gpaw.dos.DOSCalculator, width=0)",
            "dos_window_eV": list(self.dos_window_eV), "dos_step_eV": self.dos_step_eV, "maxiter": self.maxiter,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> DFTSettings:
        """Settings of a ``meta.json`` (its ``settings`` block); the defaults for what it does not say. A folder
        made by another code or mode is refused: its density is not GPAW's pseudo density."""
        block = dict((meta or {}).get("settings") or {})
        if block and (str(block.get("code", "GPAW")).upper() != "GPAW" or block.get("mode", "pw") != "pw"):
            raise ValueError(f"settings of code {block.get('code')!r}, mode {block.get('mode')!r}: only GPAW plane "
                             "waves are supported")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if k == "dos_window_eV" else v) for k, v in block.items() if k in names}
        return cls(**kw)

    def gpaw_parameters(self, *, spin: bool, nbands: int | None = None, maxiter: int | None = None) -> dict[str, Any]:
        """Keyword arguments of ``gpaw.GPAW`` for these settings (``txt`` and ``parallel`` are the caller's)."""
        from gpaw import PW, FermiDirac

        kw: dict[str, Any] = dict(mode=PW(self.ecut_eV), xc=self.xc, kpts={"density": self.kpt_density_per_inv_A},
                                  occupations=FermiDirac(self.smearing_eV), h=self.grid_spacing_A, spinpol=spin,
                                  convergence={"bands": self.converge_bands,
                                               "eigenstates": self.converge_eigenstates},
                                  maxiter=maxiter or self.maxiter)
        if nbands is not None:
            kw["nbands"] = int(nbands)
        return kw


#: The settings of ../shared/data/gpaw and gpaw-more.
SHARED = DFTSettings()


def require_gpaw() -> None:
    """Raise :class:`DFTUnavailable` with the one-line install hint when GPAW or its setups are missing."""
    try:
        import gpaw  # noqa: F401
        from gpaw.setup_data import SetupData  # noqa: F401
    except ImportError as exc:
        raise DFTUnavailable(INSTALL_HINT) from exc
    if not _has_setups():
        raise DFTUnavailable("GPAW's PAW setups are missing: pip install gpaw-data")


def _has_setups() -> bool:
    try:
        setup_valence("H")
    except Exception:  # noqa: BLE001 - any failure to read a setup means no setups
        return False
    return True


@cache
def setup_valence(symbol: str, xc: str = "PBE") -> float:
    """Valence electrons of GPAW's default PAW setup of ``symbol`` (KeyError: no setup for that element)."""
    from gpaw.setup_data import SetupData

    try:
        data = SetupData(symbol, xc, "paw")
    except (RuntimeError, OSError, KeyError) as exc:
        raise KeyError(f"no GPAW {xc} PAW setup for {symbol} ({type(exc).__name__})") from None
    return float(data.Z - data.Nc)


def n_valence(symbols: list[str], xc: str = "PBE") -> float:
    """Total valence electrons of the setups of these atoms."""
    cache: dict[str, float] = {}
    for s in symbols:
        if s not in cache:
            cache[s] = setup_valence(s, xc)
    return float(sum(cache[s] for s in symbols))


def guess_nbands(n_electrons: float, total_moment: float, volume_A3: float, natoms: int) -> int:
    """Bands enough for the DOS to be complete up to E_F + 12.5 eV: the occupied ones, about 0.3 empty bands per Å³,
    one per atom and six (the shared set's rule; GPAW's TooFewBandsError triggers a retry with 1.4× as many)."""
    nocc = (n_electrons + abs(total_moment)) / 2
    return int(np.ceil(nocc + 0.3 * volume_A3 + natoms + 6))


def initial_magmoms(symbols: list[str]) -> list[float]:
    """Ferromagnetic initial moments (μB) from :data:`MAGNETIC_MOMENTS`; all zero for a non-magnetic cell."""
    return [MAGNETIC_MOMENTS.get(s, 0.0) for s in symbols]


def gpaw_parameters(atoms, settings: DFTSettings = SHARED, spin: bool | None = None, nbands: int | None = None) -> dict:
    """GPAW keyword arguments for ASE ``atoms``: bands from :func:`guess_nbands` (unless given), spin from the
    initial moments (unless given)."""
    m = atoms.get_initial_magnetic_moments()
    spin = bool(np.any(m != 0)) if spin is None else spin
    if nbands is None:
        nbands = guess_nbands(n_valence(atoms.get_chemical_symbols(), settings.xc), float(np.abs(m).sum()),
                              float(atoms.get_volume()), len(atoms))
    return settings.gpaw_parameters(spin=spin, nbands=nbands)

