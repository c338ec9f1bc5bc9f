#!/usr/bin/env python3
"""Pseudo valence densities of isolated neutral atoms with GPAW, for a SAED reference that no crystal fitted.

Runs with GPAW (not a chgdata dependency; build it as in ``../shared/data/gpaw/README.md``) and writes, per
element, ``<out>/<El>.npz``: the atom's pseudo valence density on the periodic grid of a cubic box (e/Å^3,
spin-summed), the box (Å), the atom at the box centre, and the valence count, with the settings in
``<out>/<El>.json``. ``python tools/fit_free_atom_reference.py`` turns them into a SAED reference table.

Settings are those of the ``gpaw`` and ``gpaw-more`` crystals (PW 300 eV, PBE, grid spacing 0.18 Å,
Fermi-Dirac 0.1 eV, default PAW setups, ``calc.get_pseudo_density()``), so the atoms share the crystals'
density convention; the atom is spin-paired (its spherical, spin-averaged density, as SAED assumes), Γ only,
in a box of ``--box`` Å. Every atom runs in its own subprocess, is written to a temporary name and renamed when
complete; a rerun skips finished elements.

    .venv-gpaw/bin/python tools/gpaw_free_atoms.py --out data/free-atoms --elements Si Na Cl --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BOX_A = 12.0
SETTINGS = {
    "code": "GPAW", "mode": "pw", "ecut_eV": 300.0, "xc": "PBE", "kpts": "Gamma",
    "occupations": "Fermi-Dirac", "smearing_eV": 0.1, "grid_spacing_A": 0.18, "spinpol": False,
    "setups": "GPAW default PAW (gpaw-data package)",
    "density": "GPAW pseudo valence density (calc.get_pseudo_density), coarse grid",
}


def run_atom(element: str, out: str, box: float) -> None:
    import gpaw
    import numpy as np
    from ase import Atoms
    from gpaw import GPAW, PW, FermiDirac

    t0 = time.time()
    atoms = Atoms(element, positions=[[box / 2] * 3], cell=[box] * 3, pbc=True)
    calc = GPAW(mode=PW(SETTINGS["ecut_eV"]), xc=SETTINGS["xc"], kpts=(1, 1, 1),
                occupations=FermiDirac(SETTINGS["smearing_eV"]), h=SETTINGS["grid_spacing_A"],
                spinpol=False, txt=None, convergence={"density": 1e-5}, maxiter=400)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    rho = np.asarray(calc.get_pseudo_density(), dtype=np.float64)
    volume = atoms.get_volume()
    n_val = float(calc.get_number_of_electrons())
    meta = {
        "element": element, "box_A": box, "grid": list(rho.shape), "n_valence": n_val,
        "n_rho_integral": float(rho.mean() * volume), "energy_eV": float(energy),
        "settings": SETTINGS, "versions": {"gpaw": gpaw.__version__}, "seconds": time.time() - t0,
    }
    tmp = os.path.join(out, f".tmp-{element}.npz")
    np.savez_compressed(tmp, rho=rho.astype(np.float32), lattice=np.asarray(atoms.cell), frac=np.full((1, 3), 0.5),
                        n_valence=n_val)
    with open(os.path.join(out, f"{element}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(out, f"{element}.npz"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--elements", nargs="+", required=True)
    ap.add_argument("--box", type=float, default=BOX_A, help="cubic box edge, Å")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.one:
        run_atom(args.one, args.out, args.box)
        return
    todo = [e for e in args.elements if not os.path.exists(os.path.join(args.out, f"{e}.npz"))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    running: list[tuple[str, subprocess.Popen]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.workers:
            el = todo.pop(0)
            cmd = [sys.executable, __file__, "--out", args.out, "--elements", el, "--box", str(args.box), "--one", el]
            running.append((el, subprocess.Popen(cmd, env=env)))
        time.sleep(1)
        for el, p in list(running):
            if p.poll() is not None:
                running.remove((el, p))
                print(f"{el}: {'done' if p.returncode == 0 else f'FAILED (rc {p.returncode})'}", flush=True)
                if p.returncode:
                    failed.append(el)
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
