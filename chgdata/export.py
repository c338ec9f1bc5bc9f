"""Export materials of a store to formats other tools read (``chgdata export``).

``chgcar``  ``<out>/<id>/CHGCAR`` written by pymatgen: block ``total`` = ρ·V_cell and, for spin-polarised
            materials, ``diff`` = (ρ↑−ρ↓)·V_cell (the VASP convention), plus the PAW augmentation occupancies
            kept at ingest from a VASP CHGCAR, so VASP can restart from it (ICHARG=1). The folder layout is the one
            ``chgdata ingest --from-dir`` reads, so an export can be re-ingested.
``npy``     ChargE3Net-style (github.com/AIforGreatGood/charge3net, ``src/utils/data.py``): ``<out>/<id>.npy`` holds
            the density in e/Å³ as shaped (nx, ny, nz) float32 (ChargE3Net reads CHGCARs with ASE, which divides by
            the volume); with ``spin=True`` it is (nx, ny, nz, 2) = [ρ, ρ↑−ρ↓] (zeros for non-spin materials), as
            ChargE3Net's ``read_spin``. ChargE3Net pairs it with ``<id>_atoms.pkl`` (a pickled ``ase.Atoms``); that is
            written when ASE is installed. Always written: ``<id>.vasp`` (POSCAR, which ``ase.io.read`` and pymatgen
            read) and ``filelist.txt`` (one id per line, ChargE3Net's split input).
``hdf5``    ``<out>/chgdata_export.h5``: one group per material with ``rho`` (and ``mag``) in e/Å³, ``lattice``
            (Å, rows), ``frac_coords``, ``species`` and units as attributes. Needs h5py (not a chgdata dependency).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chgdata.store import Dataset, StoreError, open_dataset

FORMATS = ("chgcar", "npy", "hdf5")


class ExportError(ValueError):
    """An export cannot be done as asked (unknown format, missing optional dependency, no density)."""


def _ids(ds: Dataset, materials: Sequence[str] | None) -> list[str]:
    if not materials:
        return [m for m in ds.material_ids if ds.row(m).get("n_grid_points")]
    out = []
    for m in materials:
        for part in str(m).split(","):
            if part.strip():
                out.append(part.strip())
    for m in out:
        ds.row(m)  # KeyError with a clear message for an unknown id
    return out


def export_chgcar(ds: Dataset, material_id: str, out: Path) -> Path:
    from pymatgen.io.vasp import Chgcar, Poscar

    grid = ds.density(material_id)
    structure = ds.structure(material_id)
    volume = structure.volume
    data = {"total": grid.rho.astype(np.float64) * volume}
    if grid.mag is not None:
        data["diff"] = grid.mag.astype(np.float64) * volume
    path = out / material_id / "CHGCAR"
    path.parent.mkdir(parents=True, exist_ok=True)
    # the PAW augmentation occupancies kept at ingest go back too, so VASP can restart from it (ICHARG=1)
    Chgcar(Poscar(structure), data, data_aug=ds.paw_augmentation(material_id)).write_file(str(path))
    return path


def export_npy(ds: Dataset, material_id: str, out: Path, spin: bool = False) -> Path:
    grid = ds.density(material_id)
    values = grid.rho.astype(np.float32)
    if spin:
        mag = grid.mag if grid.mag is not None else np.zeros_like(values)
        values = np.stack([values, mag.astype(np.float32)], axis=-1)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{material_id}.npy"
    np.save(path, values)
    structure = ds.structure(material_id)
    from pymatgen.io.vasp import Poscar

    Poscar(structure, comment=material_id).write_file(str(out / f"{material_id}.vasp"))
    try:
        from pymatgen.io.ase import AseAtomsAdaptor
    except ImportError:  # pragma: no cover
        AseAtomsAdaptor = None
    if AseAtomsAdaptor is not None:
        try:
            atoms = AseAtomsAdaptor.get_atoms(structure)
        except ImportError:  # ASE not installed: the POSCAR is the structure file
            atoms = None
        if atoms is not None:
            with open(out / f"{material_id}_atoms.pkl", "wb") as fh:
                pickle.dump(atoms, fh)
    return path


def export_hdf5(ds: Dataset, ids: Sequence[str], out: Path, failures: dict[str, str] | None = None) -> Path:
    try:
        import h5py
    except ImportError:
        raise ExportError("--format hdf5 needs h5py, which chgdata does not depend on: pip install h5py "
                          "(or use --format npy / chgcar)") from None
    out.mkdir(parents=True, exist_ok=True)
    path = out / "chgdata_export.h5"
    with h5py.File(path, "a") as fh:
        fh.attrs["source_store"] = str(ds.url)
        for mid in ids:
            try:
                grid = ds.density(mid)
            except StoreError as exc:
                if failures is None:
                    raise
                failures[mid] = str(exc)
                continue
            row = ds.row(mid)
            if mid in fh:
                del fh[mid]
            g = fh.create_group(mid)
            g.create_dataset("rho", data=grid.rho.astype(np.float32), compression="gzip")
            g["rho"].attrs["units"] = "e/Å^3"
            if grid.mag is not None:
                g.create_dataset("mag", data=grid.mag.astype(np.float32), compression="gzip")
                g["mag"].attrs["units"] = "e/Å^3"
            g.create_dataset("lattice", data=grid.lattice)
            g["lattice"].attrs["units"] = "Å (row vectors)"
            g.create_dataset("frac_coords", data=np.asarray(row["fractional_site_positions"]).reshape(-1, 3))
            g.create_dataset("species", data=np.array(row["species_at_sites"], dtype="S3"))
            g.attrs["rho_sha256"] = row.get("rho_sha256") or ""
    return path


def export_materials(store: str | os.PathLike, materials: Sequence[str] | None, fmt: str, out: str | os.PathLike,
                     spin: bool = False, failures: dict[str, str] | None = None) -> list[Path]:
    """Export ``materials`` (all materials with a density when empty) of ``store`` as ``fmt`` into ``out``.

    ``failures``: a dict that collects {material id: reason} of materials whose stored grids are damaged (their
    checksum differs, a chunk is unreadable) while the others are exported; without it the first one raises."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ds = open_dataset(os.fspath(store))
    ids = _ids(ds, materials)
    out = Path(out)
    if fmt == "hdf5":
        return [export_hdf5(ds, ids, out, failures)]
    paths = []
    for mid in ids:
        try:
            paths.append(export_chgcar(ds, mid, out) if fmt == "chgcar" else export_npy(ds, mid, out, spin=spin))
        except StoreError as exc:
            if failures is None:
                raise
            failures[mid] = str(exc)
    ids = [m for m in ids if m not in (failures or {})]
    if fmt == "npy":
        listing = out / "filelist.txt"
        have = listing.read_text().split() if listing.exists() else []
        listing.write_text("".join(f"{m}\n" for m in dict.fromkeys([*have, *ids])))
    return paths
