"""Read one material's density grid and DOS window from a published chgdata store without chgdata.

Needs only numpy, pyarrow, zarr (v3) and pyyaml. It follows the catalogue entry / dataset card:

1. ``catalog.yaml`` → the entry NAME@VERSION → ``location`` (relative paths resolve against the catalogue's folder).
2. ``structures.parquet`` (a folder of Parquet fragments) → the material's row: ``partition``, ``rho_offset``,
   ``mag_offset`` (-1 if not spin-polarised), ``n_grid_points``, ``grid_shape``. Every writer compacts the
   tables at the end of its run, so a material has one row; should a writer have been killed between committing
   a re-ingested material and compacting, the row of the last fragment in file-name order is the current one
   (names start with a UTC timestamp), which is what :func:`read_row` takes.
3. ``arrays/rho/<partition>`` is a 1-D float32 Zarr array; the grid is
   ``[rho_offset, rho_offset + n_grid_points)`` reshaped to ``grid_shape`` (C order), in e/Å³.
4. ``dos.parquet`` → ``partition`` and ``row``; ``arrays/dos_norm/<partition>[row]`` (and ``dos_abs``) is the
   (2, npoints) window (spin up, down), ``arrays/dos_energy/<partition>`` the energy axis E - E_F in eV.

Usage::

    python examples/read_without_chgdata.py --catalog catalog.yaml --dataset gpaw@1.1.0 --material gpaw-0001
    python examples/read_without_chgdata.py --store data/gpaw --material gpaw-0001 --out gpaw-0001.npz
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pyarrow.dataset as pads
import yaml
import zarr


def locate(catalog: str, dataset: str) -> str:
    """The store location of ``NAME[@VERSION]`` in the catalogue (highest version when none is given)."""
    with open(catalog, encoding="utf-8") as fh:
        entries = yaml.safe_load(fh)["datasets"]
    name, _, version = dataset.partition("@")
    found = [e for e in entries if e["name"] == name and (not version or str(e["version"]) == version)]
    if not found:
        sys.exit(f"{dataset} is not in {catalog}")
    entry = found[-1]
    location = entry["location"]
    if "://" not in location and not os.path.isabs(location):
        location = os.path.join(os.path.dirname(os.path.abspath(catalog)), location)
    return location


def read_row(store: str, table: str, material_id: str) -> dict | None:
    path = os.path.join(store, table)
    if not os.path.isdir(path):
        return None
    fragments = sorted(pads.dataset(path, format="parquet").files)  # hidden .tmp files are not listed
    t = pads.dataset(fragments, format="parquet").to_table(filter=pads.field("material_id") == material_id)
    return t.to_pylist()[-1] if t.num_rows else None  # the newest fragment's row


def read_material(store: str, material_id: str) -> dict[str, np.ndarray]:
    with open(os.path.join(store, "dataset.yaml"), encoding="utf-8") as fh:
        card = yaml.safe_load(fh)
    row = read_row(store, "structures.parquet", material_id)
    if row is None:
        sys.exit(f"{material_id} is not in {store}")
    arrays = os.path.join(store, "arrays")
    shape = tuple(row["grid_shape"])
    start, n = row["rho_offset"], row["n_grid_points"]
    out = {"rho": zarr.open_array(os.path.join(arrays, "rho", row["partition"]), mode="r")[start:start + n]
           .reshape(shape),
           "lattice": np.asarray(row["lattice_vectors"], dtype=np.float64).reshape(3, 3)}
    if row["mag_offset"] is not None and row["mag_offset"] >= 0:
        m = row["mag_offset"]
        out["mag"] = zarr.open_array(os.path.join(arrays, "mag", row["partition"]), mode="r")[m:m + n].reshape(shape)
    dos = read_row(store, "dos.parquet", material_id)
    if dos is not None:
        for name in ("dos_norm", "dos_abs"):
            out[name] = zarr.open_array(os.path.join(arrays, name, dos["partition"]), mode="r")[dos["row"]]
        out["dos_energy"] = zarr.open_array(os.path.join(arrays, "dos_energy", dos["partition"]), mode="r")[:]
        expected = np.linspace(card["dos"]["emin_eV"], card["dos"]["emax_eV"], card["dos"]["npoints"])
        assert np.allclose(out["dos_energy"], expected, atol=1e-5), "energy axis does not match the card"
    units = card.get("units", {})
    print(f"{material_id}: rho {out['rho'].shape} {units.get('rho', '')}, "
          f"∫rho dV = {out['rho'].astype(np.float64).mean() * abs(np.linalg.det(out['lattice'])):.4f} e"
          + (f", DOS window {out['dos_norm'].shape}" if "dos_norm" in out else ", no DOS window"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", help="store directory (instead of --catalog/--dataset)")
    p.add_argument("--catalog", default="catalog.yaml")
    p.add_argument("--dataset", help="NAME[@VERSION] in the catalogue")
    p.add_argument("--material", required=True)
    p.add_argument("--out", help="write the arrays to this .npz file")
    args = p.parse_args(argv)
    store = args.store or locate(args.catalog, args.dataset or sys.exit("give --store or --dataset"))
    arrays = read_material(store, args.material)
    if args.out:
        np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
