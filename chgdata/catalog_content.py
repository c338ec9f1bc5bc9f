"""What the catalogue records of a store: canonical content checksums (index, arrays, card, SAED table, Δρ;
independent of partitioning, run times and row order) and its description (arrays, tables with column units,
counts, SAED and DOS parameters, provenance)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

import chgdata
from chgdata import contract as C
from chgdata.dataset import Dataset
from chgdata.location import Location, StoreError, read_card, read_table

#: Index columns that are hashed (fixed, so columns added to the contract later do not change the checksum of
#: an unchanged dataset). Not hashed: the layout and run columns partition, *_offset, input_files, retrieved_at.
HASHED_INDEX_COLUMNS = (
    C.COL_ID, C.COL_SOURCE, C.COL_TASK_ID, C.COL_DB_VERSION, C.COL_FORMULA, C.COL_NSITES, C.COL_LATTICE,
    C.COL_SPECIES, C.COL_FRAC, C.COL_VOLUME, C.COL_GRID, C.COL_NPOINTS, C.COL_SPIN, C.COL_NELECT, C.COL_MAGMOM,
    C.COL_EFERMI, C.COL_HAS_DOS, C.COL_RHO_SHA, C.COL_MAG_SHA, C.COL_AE_SHA, C.COL_INPUT_SHA, C.COL_STATUS,
)


#: Card keys (any depth) that depend on the run; the ``saed`` and ``published`` sections are dropped whole.
VOLATILE_CARD_KEYS = ("created", "updated", "built_at")


VOLATILE_CARD_SECTIONS = ("published", "saed")


#: What the ``saed`` array is (the name is historical: it is no superposition of free-atom densities).
SAED_DESCRIPTION = ("fitted reference density: per element a signed sum of normalised 3-D Gaussians, fitted by "
                    "least squares to the crystal densities of the store, summed over the atoms; it integrates to "
                    "the valence count")


#: Units of the Parquet columns that have one (others are ids, flags, counts or checksums).
COLUMN_UNITS = {
    C.COL_LATTICE: "Å", C.COL_FRAC: "fractional", C.COL_VOLUME: "Å^3", C.COL_NELECT: "electrons",
    C.COL_MAGMOM: "μB per cell", C.COL_EFERMI: "eV", C.COL_RETRIEVED: "ISO 8601 UTC",
    "energies": "eV (absolute)", "dos_up": "states/eV/cell", "dos_down": "states/eV/cell",
    "saed_electrons": "electrons", "delta_integral": "electrons", "nmae_saed": "%", "band_gap": "eV",
    "states_raw": "states/atom", "states_smeared": "states/atom", "norm_const": "states/eV/atom", "sigma": "eV",
    "emin": "eV (E - E_F)", "emax": "eV (E - E_F)", "spacing": "eV", "raw_emin": "eV (E - E_F)",
    "raw_emax": "eV (E - E_F)", "built_at": "ISO 8601 UTC", "time": "ISO 8601 UTC",
}


def plain_data(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value


def canonical_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(plain_data(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _drop_keys(obj: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop_keys(v, keys) for v in obj]
    return obj


def index_content(loc: Location) -> list[dict[str, Any]]:
    t = read_table(loc, C.INDEX)
    if t is None:
        return []
    rows = t.select([c for c in HASHED_INDEX_COLUMNS if c in t.column_names]).to_pylist()
    return sorted(({c: r.get(c) for c in HASHED_INDEX_COLUMNS} for r in rows), key=lambda r: r[C.COL_ID])


def arrays_content(loc: Location, index_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    dos = read_table(loc, C.DOS_INDEX)
    dos_rows = {} if dos is None else {r[C.COL_ID]: r for r in dos.to_pylist()}
    out = []
    for r in index_rows:
        mid = r[C.COL_ID]
        item = {"material_id": mid, "rho": r.get(C.COL_RHO_SHA), "mag": r.get(C.COL_MAG_SHA),
                "rho_ae": r.get(C.COL_AE_SHA)}
        d = dos_rows.get(mid)
        if d is not None:
            item["dos"] = {k: d[k] for k in ("dos_sha256", "sigma", "emin", "emax", "npoints")}
        out.append(item)
    return out


def card_content(card: dict[str, Any]) -> dict[str, Any]:
    card = {k: v for k, v in card.items() if k not in VOLATILE_CARD_SECTIONS}
    return _drop_keys(card, VOLATILE_CARD_KEYS)


def delta_content(loc: Location) -> list[dict[str, Any]]:
    t = read_table(loc, C.DELTA_INDEX)
    if t is None:
        return []
    return sorted(t.select([C.COL_ID, "reference_id", "saed_sha256", "delta_sha256"]).to_pylist(),
                  key=lambda r: r[C.COL_ID])


def compute_checksums(store: str | os.PathLike) -> dict[str, Any]:
    """The catalogue checksums of a store (see the module docstring for what each one hashes)."""
    loc = Location.parse(store)
    index = index_content(loc)
    if not index:
        raise StoreError(f"no committed material in {loc.url}: nothing to publish")
    parts = {"index": canonical_sha256(index), "arrays": canonical_sha256(arrays_content(loc, index)),
             "card": canonical_sha256(card_content(read_card(loc)))}
    ref_path = loc.path(C.REFERENCE_FILE)
    delta = delta_content(loc)
    return {
        "algorithm": "sha256",
        **parts,
        "content": canonical_sha256(parts),
        "saed_reference": hashlib.sha256(loc.fs.cat_file(ref_path)).hexdigest() if loc.fs.exists(ref_path) else None,
        "delta": canonical_sha256(delta) if delta else None,
    }


def _arrow_type(t) -> str:
    return str(t).replace("list<item: ", "list<").replace("large_", "")


def _table_entry(loc: Location, name: str, description: str) -> dict[str, Any] | None:
    t = read_table(loc, name)
    if t is None:
        return None
    cols = []
    for f in t.schema:
        col = {"name": f.name, "type": _arrow_type(f.type)}
        if f.name in COLUMN_UNITS:
            col["units"] = COLUMN_UNITS[f.name]
        cols.append(col)
    return {"name": name, "path": name, "format": "parquet dataset (one fragment per partition)",
            "description": description, "rows": t.num_rows, "columns": cols}


def describe(store: str | os.PathLike) -> dict[str, Any]:
    """Arrays, tables, counts, SAED and DOS parameters and provenance of a store (no name/version/location)."""
    ds = Dataset(store)
    loc, card = ds.loc, ds.card
    index = ds.index
    rows = index.to_pylist()
    n_points = sum(int(r[C.COL_NPOINTS] or 0) for r in rows)
    ragged = ("ragged: 1-D float32 partition arrays arrays/{a}/<partition>; a material's grid is "
              "[{off}, {off} + n_grid_points) of the partition named by its structures.parquet row, "
              "reshaped to grid_shape (nx, ny, nz) in C order")
    arrays: list[dict[str, Any]] = []
    present = set(loc.fs.ls(loc.path(C.ARRAYS_DIR), detail=False)) if loc.fs.exists(loc.path(C.ARRAYS_DIR)) else set()
    present = {os.path.basename(p) for p in present}
    grid_desc = {C.RHO: ("total valence density (CHGCAR total / V_cell)", C.COL_RHO_OFFSET),
                 C.MAG: ("magnetisation density rho_up - rho_down (CHGCAR diff / V_cell), spin-polarised only",
                         C.COL_MAG_OFFSET),
                 C.RHO_AE: ("all-electron density (AECCAR0 + AECCAR2) / V_cell", C.COL_AE_OFFSET),
                 C.SAED: ("fitted reference density: signed per-element Gaussians fitted to the crystal densities "
                          "(build-delta)", C.COL_RHO_OFFSET),
                 C.DELTA: ("rho - saed (build-delta)", C.COL_RHO_OFFSET)}
    for name, (desc, off) in grid_desc.items():
        if name in present:
            index_table = C.DELTA_INDEX if name in (C.SAED, C.DELTA) else C.INDEX
            arrays.append({"name": name, "dtype": "float32", "units": C.ARRAY_UNITS[name], "description": desc,
                           "shape": "ragged (n_grid_points,) per material", "index_table": index_table,
                           "layout": ragged.format(a=name, off=off)})
    dos_t = ds.table(C.DOS_INDEX)
    dos_card = card.get("dos") or {}
    npts = dos_card.get("npoints")
    for name, units, desc in (("dos_abs", "states/eV/atom", "smeared DOS window, spin (up, down)"),
                              ("dos_norm", "dimensionless (max = 1)",
                               "dos_abs / norm_const (max over both channels = 1; DosNet's for non-spin)"),
                              ("dos_energy", "eV (E - E_F)", "energy axis of the windows")):
        if name in present:
            shape = "(npoints,)" if name == "dos_energy" else "(n_materials, 2, npoints)"
            arrays.append({"name": name, "dtype": "float32", "units": units, "description": desc,
                           "shape": shape.replace("npoints", str(npts) if npts else "npoints"),
                           "index_table": C.DOS_INDEX,
                           "layout": f"arrays/{name}/<partition>, row = the dos.parquet 'row' column of the material"
                           if name != "dos_energy" else f"arrays/{name}/<partition>, one copy per partition"})
    tables = [t for t in (
        _table_entry(loc, C.INDEX, "one row per material: structure, grid shape, array addresses, checksums"),
        _table_entry(loc, C.DELTA_INDEX, "build-delta: one row per material with saed/delta"),
        _table_entry(loc, C.DOS_INDEX, "build-dos: one row per DOS window (partition, row, parameters)"),
        _table_entry(loc, C.DOS_RAW, "raw DOS as ingested"),
        _table_entry(loc, C.PAW_MATRICES, "GPAW PAW atomic density matrices D_asii (electrons), one row per material"),
        _table_entry(loc, C.FAILURES, "failures: material_id, stage, reason, time"),
    ) if t is not None]
    saed = card.get("saed") or {}
    prov = card.get("provenance") or {}
    spin = sum(bool(r[C.COL_SPIN]) for r in rows)
    out: dict[str, Any] = {
        "schema_version": str(card.get("schema_version", C.SCHEMA_VERSION)),
        "card": C.CARD,
        "arrays": arrays,
        "tables": tables,
        "counts": {"materials": len(rows), "grid_points": n_points, "spin_polarized": spin,
                   "with_density": sum(bool(r[C.COL_NPOINTS]) for r in rows),
                   "with_dos": 0 if dos_t is None else dos_t.num_rows,
                   "with_delta": int(saed.get("materials") or 0)},
        "provenance": {"sources": list(prov.get("sources") or []),
                       "database_versions": list(prov.get("database_versions") or []),
                       "code_version": str(prov.get("code_version") or chgdata.__version__),
                       "created": prov.get("created")},
    }
    if saed:
        out["saed"] = {"reference_id": saed.get("reference_id"),
                       "reference_file": saed.get("reference_file", C.REFERENCE_FILE),
                       "reference_source": saed.get("reference_source"),
                       "description": SAED_DESCRIPTION}
    if dos_card:
        out["dos"] = {k: dos_card[k] for k in ("sigma_eV", "emin_eV", "emax_eV", "npoints", "spacing_eV")
                      if k in dos_card}
        out["dos"]["normalisations"] = dict(dos_card.get("normalisations") or {
            "absolute": "states/eV/atom", "normalised": "max = 1; absolute = normalised * norm_const"})
        out["dos"]["spin"] = "(up, down); a non-spin total is split evenly (0.5 each)"
    return out
