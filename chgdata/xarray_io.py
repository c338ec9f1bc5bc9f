"""Labelled views for xarray: one material's grids as an ``xarray.Dataset``, DOS windows as a ``DataArray``.

Grids are on dims ``(x, y, z)`` = ``contract.GRID_DIMS``, grid point (i, j, k) at fractional coordinates
(i/nx, j/ny, k/nz) (coordinates ``frac_x``…), in e/Å³; the lattice is a (vector, cartesian) variable in Å with
row vectors. The same builder writes ``chgdata predict --format zarr`` (``density.zarr``), so a stored material
and a prediction open alike with ``xr.open_zarr``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from chgdata import contract as C

GRID_LAYOUT = ("grid point (i, j, k) at fractional coordinates (i/nx, j/ny, k/nz) of the lattice rows; "
               "C order, x slowest (as pymatgen Chgcar.data)")


def grid_dataset(structure, grids: Mapping[str, np.ndarray | None], attrs: Mapping[str, Any] | None = None,
                 long_names: Mapping[str, str] | None = None) -> xr.Dataset:
    """An ``xarray.Dataset`` of ``grids`` (name → (nx, ny, nz) e/Å³; None entries skipped) on ``structure``."""
    grids = {k: np.asarray(v, dtype=np.float32) for k, v in grids.items() if v is not None}
    shape = next(iter(grids.values())).shape
    names = {**C.LONG_NAMES, **(long_names or {})}
    data_vars: dict[str, Any] = {
        k: (C.GRID_DIMS, v, {"long_name": names.get(k, k), "units": C.ARRAY_UNITS.get(k, "e/Å^3"),
                             "layout": GRID_LAYOUT}) for k, v in grids.items()}
    data_vars["lattice"] = (("vector", "cartesian"), np.asarray(structure.lattice.matrix, dtype=np.float64),
                            {"long_name": "lattice vectors (rows)", "units": "Å"})
    data_vars["species"] = (("site",), np.array([s.specie.symbol for s in structure], dtype="U3"),
                            {"long_name": "element symbol per site"})
    data_vars["frac_coords"] = (("site", "cartesian"), np.asarray(structure.frac_coords, dtype=np.float64),
                                {"long_name": "fractional site coordinates", "units": "1"})
    coords = {f"frac_{d}": ((d,), np.arange(n) / n, {"long_name": f"fractional coordinate along lattice vector {d}",
                                                     "units": "1"}) for d, n in zip(C.GRID_DIMS, shape)}
    coords["cartesian"] = ("cartesian", ["x", "y", "z"])
    volume = float(structure.volume)
    return xr.Dataset(data_vars, coords=coords, attrs={
        "formula": structure.composition.reduced_formula, "volume_A3": volume,
        "n_electrons": float(grids["rho"].astype(np.float64).mean() * volume) if "rho" in grids else None,
        "chgdata_schema_version": C.SCHEMA_VERSION, **(attrs or {})})


def material_dataset(ds, material_id: str) -> xr.Dataset:
    """One material of a :class:`chgdata.store.Dataset` as an ``xarray.Dataset`` (see :func:`grid_dataset`)."""
    row = ds.row(material_id)
    grids: dict[str, np.ndarray | None] = {}
    shape = tuple(row[C.COL_GRID] or ())
    if row.get(C.COL_NPOINTS) and (row.get(C.COL_RHO_OFFSET) or 0) >= 0:
        g = ds.density(material_id)
        grids = {C.RHO: g.rho, C.MAG: g.mag}
    if (row.get(C.COL_AE_OFFSET) or -1) >= 0:
        grids[C.RHO_AE] = ds.grid(C.RHO_AE, material_id, row).reshape(shape)
    delta = ds.table(C.DELTA_INDEX)
    if delta is not None and C.RHO in grids:
        import pyarrow.compute as pc

        hit = [r for r in delta.filter(pc.equal(delta[C.COL_ID], material_id)).to_pylist()
               if r[C.COL_PARTITION] == row[C.COL_PARTITION]]  # a re-ingested material's old Δ is stale
        if hit:
            for name in (C.SAED, C.DELTA):
                grids[name] = ds.grid(name, material_id, row).reshape(shape)
    if not any(v is not None for v in grids.values()):
        raise KeyError(f"material {material_id!r} has no grids in {ds.url} (DOS only)")
    attrs = {"material_id": material_id, "source": row.get(C.COL_SOURCE) or "",
             "dft_code": row.get(C.COL_DFT_CODE) or "", "dft_settings": row.get(C.COL_DFT_SETTINGS) or "",
             "store": str(ds.url)}
    out = grid_dataset(ds.structure(material_id), grids, attrs)
    with_dos = ds.table(ds.DOS_TABLE)
    if with_dos is not None and material_id in set(with_dos.column(C.COL_ID).to_pylist()):
        out["dos"] = dos_dataarray(*ds.dos_windows([material_id], "absolute"), "absolute").isel(material=0,
                                                                                                 drop=True)
    return out


def dos_dataarray(ids: Sequence[str], values: np.ndarray, energies: np.ndarray,
                  variant: str = "normalised") -> xr.DataArray:
    """DOS windows ``values`` (N, 2, npoints) as a DataArray on (material, spin, energy); energy E − E_F in eV."""
    absolute = variant == "absolute"
    name = "dos_abs" if absolute else "dos_norm"
    return xr.DataArray(
        np.asarray(values, dtype=np.float32), dims=("material", "spin", "energy"), name=name,
        coords={"material": list(ids), "spin": ["up", "down"],
                "energy": ("energy", np.asarray(energies, dtype=np.float64),
                           {"long_name": C.LONG_NAMES["dos_energy"], "units": "eV"})},
        attrs={"long_name": C.LONG_NAMES[name], "units": C.ARRAY_ATTR_UNITS[name],
               "layout": "a non-spin total is split evenly between up and down"})


def write_zarr(dataset: xr.Dataset, path: str | os.PathLike) -> str:
    """Write ``dataset`` as a Zarr v3 store with consolidated metadata (what ``xr.open_zarr`` reads first)."""
    path = os.fspath(path)
    with warnings.catch_warnings():  # zarr: consolidated metadata "not part of the v3 spec yet"
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        dataset.to_zarr(path, mode="w", zarr_format=3, consolidated=True)
    return path
