"""Raw densities of states (:class:`chgdata.dos.RawDos`, states/eV per cell, energies in eV) read from pymatgen
objects, ``dos.json(.gz)`` (pymatgen ``Dos``/``CompleteDos`` dicts, as GPAW runs and MP write them) and VASP
``vasprun.xml``."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from chgdata.dos import RawDos


def from_pymatgen(dos: Any, natoms: int | None = None, source: str = "") -> RawDos:
    """Convert a pymatgen ``Dos`` / ``CompleteDos`` (e.g. from mp-api ``get_dos_by_material_id``).

    ``natoms`` defaults to ``len(dos.structure)`` for a ``CompleteDos``; it is required for a plain ``Dos``.
    """
    from pymatgen.electronic_structure.core import Spin

    where = f" ({source})" if source else ""
    if natoms is None:
        structure = getattr(dos, "structure", None)
        if structure is None:
            raise ValueError(f"natoms not given and the DOS has no structure{where}")
        natoms = len(structure)
    dens = dos.densities or {}
    channels = [dens[s] for s in (Spin.up, Spin.down) if s in dens]
    if not channels:
        raise ValueError(f"DOS is empty: no density channels{where}")
    densities = np.array(channels, dtype=np.float64)
    efermi = dos.efermi
    return RawDos(
        energies=np.asarray(dos.energies, dtype=np.float64),
        densities=densities,
        efermi=float("nan") if efermi is None else float(efermi),
        natoms=int(natoms),
        spin_polarized=densities.shape[0] == 2,
        source=source,
    )


def read_dos(path: str | Path, natoms: int | None = None) -> RawDos:
    """Read a total DOS from ``vasprun.xml[.gz]`` or a pymatgen DOS JSON (``*.json[.gz]``).

    JSON files hold ``CompleteDos.as_dict()`` (GPAW set, MP, emmet) or ``Dos.as_dict()``; a plain ``Dos`` has
    no structure, so ``natoms`` must then be given. Energies are absolute eV, densities states/eV/cell.
    """
    return read_dos_and_structure(path, natoms)[0]


def read_dos_and_structure(path: str | Path, natoms: int | None = None) -> tuple[RawDos, Any]:
    """:func:`read_dos` plus the structure stored with the DOS (vasprun's final structure, a CompleteDos
    JSON's structure, None for a plain Dos), from one parse of the file."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"no such DOS file: {path}")
    if ".xml" in name:
        from pymatgen.io.vasp import Vasprun

        try:
            vr = Vasprun(str(path), parse_potcar_file=False, parse_eigen=False, parse_projected_eigen=False)
        except Exception as exc:  # noqa: BLE001 - XML ParseError, zlib.error, ...: one line naming the file
            raise ValueError(f"unreadable vasprun ({type(exc).__name__}: {str(exc)[:200]}): {path}") from None
        try:
            dos = vr.complete_dos
        except Exception:  # no structure / projections: fall back to the total DOS
            dos = vr.tdos
        structure = vr.final_structure
        return from_pymatgen(dos, natoms=len(structure) if natoms is None else natoms, source=str(path)), structure
    if ".json" in name:
        from pymatgen.electronic_structure.dos import CompleteDos, Dos

        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rt") as fh:
                d = json.load(fh)
        except (ValueError, OSError, EOFError, zlib.error) as exc:  # JSONDecodeError, bad gzip, bad UTF-8
            raise ValueError(f"not a readable JSON file ({type(exc).__name__}: {exc}): {path}") from None
        if not isinstance(d, dict) or "energies" not in d or "densities" not in d:
            raise ValueError(f"not a pymatgen DOS dict (no energies/densities): {path}")
        if d.get("structure") is not None:  # CompleteDos (MP/emmet files may lack "@class")
            d.setdefault("pdos", [])
            dos = CompleteDos.from_dict(d)
        else:
            dos = Dos.from_dict(d)
        return from_pymatgen(dos, natoms=natoms, source=str(path)), getattr(dos, "structure", None)
    raise ValueError(f"unknown DOS file type (want vasprun*.xml[.gz] or *.json[.gz]): {path}")
