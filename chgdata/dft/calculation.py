"""One GPAW calculation written as a calculation folder in the layout of ``../shared/data/gpaw``.

A folder holds ``CHGCAR.gz`` (pseudo valence density ρ [e/Å³] × V [Å³], ``total`` and for spin ``diff``),
``dos.json.gz`` (pymatgen ``CompleteDos``, raw linear-tetrahedron DOS, absolute energies in eV, states/eV/cell),
``paw.npz`` (the PAW atomic density matrices D_asii of every atom, GPAW's units: electrons) and ``meta.json``
(key for key as the shared crystals, plus ``scf_iterations``). Everything is written to ``.tmp-ID`` and renamed
when complete, so a killed calculation never leaves a half folder.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from chgdata.dft.settings import SHARED, DFTSettings, gpaw_parameters

#: Files of a finished calculation folder (``meta.json`` last: its presence marks a folder as finished).
FOLDER_FILES = ("CHGCAR.gz", "dos.json.gz", "paw.npz", "meta.json")


class SCFNotConverged(RuntimeError):
    """GPAW's SCF did not converge within ``maxiter``."""


def is_finished(folder: Path) -> bool:
    """True when ``folder`` holds a complete calculation (``meta.json`` is written last, after the rename)."""
    return (folder / "meta.json").is_file()


def run_scf(atoms, settings: DFTSettings = SHARED, txt: str | None = None, retries: int = 3):
    """Self-consistent GPAW run of ``atoms`` (an ASE ``Atoms`` with initial moments); returns ``(calc, energy
    [eV])``. Too few bands for the ``converge_bands`` criterion: retried with 1.4× as many."""
    from gpaw import GPAW

    nbands = None
    for attempt in range(retries):
        params = gpaw_parameters(atoms, settings, nbands=nbands)
        nbands = params["nbands"]
        calc = GPAW(**params, txt=txt)
        atoms.calc = calc
        try:
            return calc, float(atoms.get_potential_energy())
        except Exception as exc:
            name = type(exc).__name__
            if name == "TooFewBandsError" and attempt + 1 < retries:
                nbands = int(np.ceil(nbands * 1.4))
                continue
            if name in ("KohnShamConvergenceError", "SCFConvergenceError", "ConvergenceError"):
                raise SCFNotConverged(f"SCF not converged in {settings.maxiter} iterations") from exc
            raise
    raise AssertionError("unreachable")


def atomic_density_matrices(calc) -> dict[str, np.ndarray]:
    """D_asii of every atom, ``{"D_<a>": (nspins, ni, ni)}`` (GPAW's unpacked matrices, electrons)."""
    D_asii = calc.dft.density.D_asii
    return {f"D_{a}": np.asarray(D_asii[a], dtype=np.float64).copy() for a in range(len(calc.atoms))}


def tetrahedron_dos(calc, settings: DFTSettings, efermi: float) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Raw linear-tetrahedron DOS on ``E_F + window``: energies [eV], per-spin DOS [states/eV/cell] (non-spin:
    the total in one array), and the electron count of the stored DOS (bands below the window included)."""
    from gpaw.dos import DOSCalculator

    lo, hi = settings.dos_window_eV
    step = settings.dos_step_eV
    energies = efermi + np.round(np.arange(lo, hi + step / 2, step), 6)
    nspins = calc.get_number_of_spins()
    dcalc = DOSCalculator.from_calculator(calc, shift_fermi_level=False)
    dos = [np.clip(dcalc.raw_dos(energies, spin=s, width=0.0), 0, None) for s in range(nspins)]
    if nspins == 1:
        dos = [2.0 * dos[0]]
    occ = energies <= efermi
    n_win = float(sum(np.trapezoid(d[occ], energies[occ]) for d in dos))
    w_k = calc.get_k_point_weights()
    n_below = sum(w * np.sum(calc.get_eigenvalues(k, s) < energies[0])
                  for k, w in enumerate(w_k) for s in range(nspins)) * 2.0 / nspins
    return energies, dos, n_win + float(n_below)


def write_calculation(calc, atoms, energy: float, entry: dict[str, Any], out: Path, t0: float,
                      t_scf: float, settings: DFTSettings = SHARED) -> dict[str, Any]:
    """Write the folder ``out / entry["id"]`` of a converged ``calc``; returns its meta dict."""
    import ase
    import gpaw
    import pymatgen.core
    from ase.calculators.calculator import kpts2sizeandoffsets
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.electronic_structure.dos import CompleteDos, Dos
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Chgcar, Poscar

    nspins = calc.get_number_of_spins()
    volume = float(atoms.get_volume())
    rho = [calc.get_pseudo_density(spin=s) for s in range(nspins)] if nspins == 2 else [calc.get_pseudo_density()]
    rho_total = sum(rho)
    nval = float(calc.get_number_of_electrons())
    n_int = float(rho_total.mean() * volume)
    efermi = float(calc.get_fermi_level())
    energies, dos, n_dos = tetrahedron_dos(calc, settings, efermi)
    nk = len(calc.get_ibz_k_points())
    top = min(calc.get_eigenvalues(k, s)[-1] for k in range(nk) for s in range(nspins))
    structure = AseAtomsAdaptor.get_structure(atoms)

    tmp = out / f".tmp-{entry['id']}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    blocks = {"total": rho_total * volume}
    if nspins == 2:
        blocks["diff"] = (rho[0] - rho[1]) * volume
    Chgcar(Poscar(structure), blocks).write_file(str(tmp / "CHGCAR.gz"))
    dens = {Spin.up: np.round(dos[0], 6)}
    if nspins == 2:
        dens[Spin.down] = np.round(dos[1], 6)
    with gzip.open(tmp / "dos.json.gz", "wt") as f:
        json.dump(CompleteDos(structure, Dos(efermi, energies, dens), {}).as_dict(), f)
    np.savez_compressed(tmp / "paw.npz", **atomic_density_matrices(calc))
    size, _ = kpts2sizeandoffsets(atoms=atoms, density=settings.kpt_density_per_inv_A)
    magmom = float(calc.get_magnetic_moment()) if nspins == 2 else 0.0
    magmoms = [float(x) for x in calc.get_magnetic_moments()] if nspins == 2 else [0.0] * len(atoms)
    meta = {
        "id": entry["id"], "prototype": entry.get("prototype", ""), "variant": entry.get("variant", ""),
        "formula": structure.composition.formula.replace(" ", ""),
        "reduced_formula": structure.composition.reduced_formula,
        "natoms": len(atoms), "volume_A3": volume, "grid": list(rho_total.shape),
        "spin": nspins == 2, "nspins": nspins, "total_magmom_muB": magmom, "magmoms_muB": magmoms,
        "energy_eV": energy, "efermi_eV": efermi, "n_valence": nval,
        "n_rho_integral": n_int, "n_rho_error": n_int - nval,
        "n_dos_integral_to_efermi": n_dos, "n_dos_error": n_dos - nval,
        "dos_complete_up_to_eV": float(top), "nbands": calc.get_number_of_bands(), "kpts_ibz": nk,
        "kpts_mp": [int(x) for x in size], "scf_iterations": int(calc.get_number_of_iterations()),
        "settings": settings.as_meta(),
        "versions": {"gpaw": gpaw.__version__, "ase": ase.__version__, "pymatgen": pymatgen.core.__version__},
        "seconds_scf": t_scf, "seconds": time.time() - t0, "structure": structure.as_dict(),
    }
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    final = out / entry["id"]
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return meta


def compute(entry: dict[str, Any], out: Path, settings: DFTSettings = SHARED) -> dict[str, Any]:
    """SCF + DOS + folder for one ``entry`` (``id``, ``structure`` as a pymatgen dict, ``magmoms`` [μB] or None,
    ``prototype``, ``variant``); returns the meta dict."""
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    t0 = time.time()
    atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(entry["structure"]))
    atoms.set_initial_magnetic_moments(entry.get("magmoms") or [0.0] * len(atoms))
    calc, energy = run_scf(atoms, settings)
    return write_calculation(calc, atoms, energy, entry, Path(out), t0, time.time() - t0, settings)
