"""The dataset catalogue (``catalog.yaml`` at the repo root, DESIGN.md §3): published dataset versions for other teams.

One entry per (name, version): location, contract schema version, arrays and tables with dtypes, shapes and
units, the SAED reference and DOS window parameters, counts, provenance and checksums. Plain YAML validated by
``chgdata/schemas/catalog.schema.json``; the dataset card (``dataset.yaml``) by ``card.schema.json``.

Checksums (all sha256 hex, over canonical JSON: ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded UTF-8; floats as Python's shortest round-trip repr). They hash content that is
deterministic for the same inputs, so a rebuild from the same raw files verifies against the catalogue:

``index``      rows of ``structures.parquet`` sorted by ``material_id``, the columns ``HASHED_INDEX_COLUMNS``
               (a fixed list: every contract column except the layout and run columns ``partition``,
               ``*_offset``, ``input_files`` (paths) and ``retrieved_at`` (time); later columns are derived).
               The ``input_sha256``, ``rho_sha256``, ``mag_sha256`` and ``rho_ae_sha256`` are checksums of the
               raw inputs and of the stored float32 grids.
``arrays``     per material (sorted by id): the stored-array checksums ``rho``/``mag``/``rho_ae`` (from the index)
               and ``dos`` (``dos.parquet`` ``dos_sha256``: float32 bytes of the absolute then the normalised window)
               plus the DOS window parameters (sigma, emin, emax, npoints).
``card``       the card without the ``published`` section and without anything run- or path-dependent: keys
               ``created``, ``updated``, ``built_at`` at any depth and the whole ``saed`` section (see ``delta``).
``content``    sha256 of ``{"index": …, "arrays": …, "card": …}``: the one that a rebuild must reproduce.
``saed_reference`` sha256 of the ``saed_reference.json`` bytes, and ``delta``: ``delta.parquet`` rows sorted by id
               (``reference_id``, ``saed_sha256``, ``delta_sha256``). A fresh fit is now bit-identical for the
               same densities (summed in material-id order, ``pipelines/delta.py``), but versions published
               before that were fitted in another order: these two verify a build-delta run given the published
               table with ``--reference`` (they are reported, and not part of ``content``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import chgdata
from chgdata import contract as C
from chgdata.dataset import Dataset
from chgdata.location import Location, StoreError, read_card, read_table, update_card, utcnow

CATALOG_ENV = "CHGDATA_CATALOG"
VERIFY_ENV = "CHGDATA_CATALOG_VERIFY"  # 0: open catalogue datasets without checking their content checksum
CATALOG_FILE = "catalog.yaml"
CATALOG_FORMAT = "1.0"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
CATALOG_SCHEMA = SCHEMA_DIR / "catalog.schema.json"
CARD_SCHEMA = SCHEMA_DIR / "card.schema.json"

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

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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


class CatalogError(ValueError):
    """The catalogue cannot be read or updated as asked (unknown name, conflicting publish, bad schema)."""


# ---------------------------------------------------------------------------------------------------------
# Canonical hashing
# ---------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value


def canonical_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
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


# ---------------------------------------------------------------------------------------------------------
# Describing a store
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# The catalogue file
# ---------------------------------------------------------------------------------------------------------


def default_catalog_path() -> Path:
    """``$CHGDATA_CATALOG``, else ``catalog.yaml`` at the repo root next to the package."""
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env)
    return Path(chgdata.__file__).resolve().parents[1] / CATALOG_FILE


def _catalog_path(path: str | os.PathLike | None) -> Path:
    return Path(path) if path is not None else default_catalog_path()


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, Any]:
    p = _catalog_path(path)
    if not p.exists():
        return {"catalog_version": CATALOG_FORMAT, "datasets": []}
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    data.setdefault("catalog_version", CATALOG_FORMAT)
    data.setdefault("datasets", [])
    if not isinstance(data["datasets"], list):
        raise CatalogError(f"{p}: 'datasets' must be a list")
    return data


def _write_catalog(path: Path, data: dict[str, Any]) -> None:
    validate_catalog(data)
    text = ("# Published chgdata datasets (DESIGN.md §3). Written by `chgdata publish`; schema:\n"
            "# chgdata/schemas/catalog.schema.json. Relative locations resolve against this file's folder.\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _schema(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _validate(instance: Any, schema_path: Path, what: str) -> None:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dependency of publishing
        raise CatalogError("validating needs the jsonschema package (pip install jsonschema)") from None
    validator = jsonschema.Draft202012Validator(_schema(schema_path))
    errors = sorted(validator.iter_errors(_plain(instance)), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        raise CatalogError(f"{what} does not follow {schema_path.name}: at {where}: {e.message}"
                           + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))


def validate_catalog(data: dict[str, Any]) -> None:
    _validate(data, CATALOG_SCHEMA, "catalogue")
    seen = set()
    for e in data["datasets"]:
        key = (e["name"], e["version"])
        if key in seen:
            raise CatalogError(f"catalogue lists {e['name']}@{e['version']} twice")
        seen.add(key)


def validate_card(card: dict[str, Any]) -> None:
    _validate(card, CARD_SCHEMA, "dataset card")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[@VERSION]`` (a leading ``catalog:`` is allowed)."""
    ref = ref.removeprefix("catalog:").strip()
    name, _, version = ref.partition("@")
    if not name:
        raise CatalogError(f"expected NAME[@VERSION], got {ref!r}")
    return name, (version or None)


def _version_key(v: str) -> tuple:
    parts = re.split(r"[.\-+]", v)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def find_entry(ref: str, catalog: str | os.PathLike | None = None) -> dict[str, Any]:
    """The entry ``NAME@VERSION`` (without a version: the highest one of NAME)."""
    name, version = parse_ref(ref)
    path = _catalog_path(catalog)
    entries = [e for e in load_catalog(path)["datasets"] if e["name"] == name]
    if not entries:
        raise CatalogError(f"no dataset named {name!r} in {path}")
    if version is None:
        return max(entries, key=lambda e: _version_key(str(e["version"])))
    for e in entries:
        if str(e["version"]) == version:
            return e
    have = ", ".join(sorted(str(e["version"]) for e in entries))
    raise CatalogError(f"{name!r} has no version {version!r} in {path} (published: {have})")


def resolve_location(location: str, catalog: str | os.PathLike | None = None) -> str:
    """A URL as is; a relative local path against the catalogue file's folder."""
    if "://" in location or os.path.isabs(location):
        return location
    return str((_catalog_path(catalog).resolve().parent / location).resolve())


def resolve(ref: str, catalog: str | os.PathLike | None = None) -> str:
    """``catalog:NAME@VERSION`` → the dataset location (URL or absolute path)."""
    return resolve_location(find_entry(ref, catalog)["location"], catalog)


def open_catalog_dataset(ref: str, catalog: str | os.PathLike | None = None, verify: bool = True) -> Dataset:
    """The dataset version ``ref`` at its catalogue location, after checking that what is there now has the
    published content checksum (index rows, recorded array checksums and card: small tables, read once; the
    array bytes themselves are checked by ``chgdata verify``). CatalogError when it differs; ``verify=False``
    or ``CHGDATA_CATALOG_VERIFY=0`` opens it unchecked."""
    entry = find_entry(ref, catalog)
    location = resolve_location(entry["location"], catalog)
    if verify and os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off"):
        check_published_content(entry, location)
    return Dataset(location)


def check_published_content(entry: dict[str, Any], location: str) -> None:
    """CatalogError unless the store at ``location`` reproduces ``entry``'s content checksum (checked once per
    process and location: training opens the same dataset many times)."""
    want = entry["checksums"]["content"]
    if (location, want) in _VERIFIED:
        return
    what = f"{entry['name']}@{entry['version']}"
    try:
        got = compute_checksums(location)["content"]
    except (StoreError, OSError) as exc:
        raise CatalogError(f"{what}: cannot read {location} to check its content checksum ({exc})") from None
    if got != want:
        raise CatalogError(f"{what}: the data at {location} are not the published version (content sha256 "
                           f"{got[:12]}…, published {want[:12]}…); rebuild or re-publish it, or set "
                           f"{VERIFY_ENV}=0 to open it unchecked")
    _VERIFIED.add((location, want))


_VERIFIED: set[tuple[str, str]] = set()


def _relative_location(store: str, location: str | None, catalog: Path) -> str:
    if location:
        return location
    if "://" in store:
        return store
    try:
        return os.path.relpath(os.path.abspath(store), catalog.resolve().parent)
    except ValueError:  # another drive
        return os.path.abspath(store)


#: Packages whose versions can change the stored numbers (parsing, smearing, fitting): recorded at publication.
NUMERIC_PACKAGES = ("numpy", "scipy", "pymatgen", "pyarrow", "zarr")


def input_manifest(store: str | os.PathLike) -> dict[str, Any]:
    """The store's exact raw inputs: {"materials": {id: input_sha256}, "sha256": of that mapping}."""
    t = read_table(Location.parse(store), C.INDEX)
    rows = [] if t is None else t.select([C.COL_ID, C.COL_INPUT_SHA]).to_pylist()
    materials = {r[C.COL_ID]: r[C.COL_INPUT_SHA] for r in sorted(rows, key=lambda r: r[C.COL_ID])}
    return {"materials": materials, "sha256": canonical_sha256(materials)}


def build_record(store: str | os.PathLike) -> dict[str, Any]:
    """How a store was built: code and numeric package versions, split and DOS window parameters (card)."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "absent"

    card = read_card(Location.parse(store))
    split = card.get("split") or {}
    dos = card.get("dos") or {}
    return {"code_version": chgdata.__version__, "packages": {p: ver(p) for p in NUMERIC_PACKAGES},
            "split": {k: split[k] for k in ("group_by", "seed", "fractions") if k in split} or None,
            "dos": {k: dos[k] for k in ("sigma_eV", "emin_eV", "emax_eV", "npoints") if k in dos} or None}


def publish(store: str | os.PathLike, name: str, version: str, *, description: str = "",
            location: str | None = None, catalog: str | os.PathLike | None = None,
            license: str = "") -> tuple[dict[str, Any], str]:
    """Add ``name@version`` for ``store`` to the catalogue and record it in the card's ``published`` section.

    Returns ``(entry, action)`` with action "added", "unchanged" (same name, version and content checksum) or
    "updated" (same content; description/location changed). Another content under a published name@version
    is refused with :class:`CatalogError`: publish a new version instead.
    """
    store = os.fspath(store)
    if not NAME_RE.match(name):
        raise CatalogError(f"dataset name {name!r}: use letters, digits, '.', '_' or '-'")
    if not NAME_RE.match(str(version)):
        raise CatalogError(f"version {version!r}: use letters, digits, '.', '_' or '-'")
    version = str(version)
    path = _catalog_path(catalog)
    loc = Location.parse(store)
    if not loc.fs.exists(loc.path(C.CARD)):
        raise StoreError(f"no dataset card in {store}: ingest it first")
    checksums = compute_checksums(store)
    info = describe(store)
    data = load_catalog(path)
    location = _relative_location(store, location, path)
    existing = next((e for e in data["datasets"] if e["name"] == name and str(e["version"]) == version), None)
    if existing is not None and existing["checksums"]["content"] != checksums["content"]:
        raise CatalogError(
            f"{name}@{version} is already published in {path} with content checksum "
            f"{existing['checksums']['content'][:16]}…, and {store} has {checksums['content'][:16]}…: refusing to "
            f"overwrite a published version. Publish the new content under a new version.")
    now = utcnow()
    entry = {
        "name": name, "version": version,
        "description": description or (existing or {}).get("description", ""),
        "location": location,
        **info,
        "published": (existing or {}).get("published", now),
        "checksums": checksums,
        "inputs": input_manifest(store),
        "build": (existing or {}).get("build") or build_record(store),
    }
    if license or (existing or {}).get("license"):
        entry["license"] = license or existing["license"]
    dft = (read_card(loc) or {}).get("dft")
    if dft:
        entry["dft"] = {k: dft[k] for k in ("codes", "settings", "varying_per_material") if k in dft}
    entry["provenance"]["created"] = entry["provenance"]["created"] or now
    if existing is not None and existing == entry:
        action = "unchanged"
    else:
        if existing is not None:
            # same content: keep the first publication's record of the non-deterministic parts
            entry["checksums"] = {**checksums, "saed_reference": existing["checksums"].get("saed_reference"),
                                  "delta": existing["checksums"].get("delta")}
            entry["provenance"]["created"] = existing["provenance"].get("created", entry["provenance"]["created"])
            for k in ("saed", "counts", "arrays", "tables", "dos"):
                if k in existing:
                    entry[k] = existing[k]
            action = "unchanged" if existing == entry else "updated"
        else:
            action = "added"
        if action != "unchanged":
            data["datasets"] = [e for e in data["datasets"] if e is not existing] + [entry]
            data["datasets"].sort(key=lambda e: (e["name"], _version_key(str(e["version"]))))
            _write_catalog(path, data)
    card = read_card(loc)
    published = {"name": name, "version": version, "catalog": str(path.resolve()), "location": location,
                 "published": entry["published"], "content_sha256": checksums["content"]}
    if card.get("published") != published:
        card = update_card(loc, published=published)
    validate_card(card)
    return entry, action


def verify(store: str | os.PathLike, ref: str, catalog: str | os.PathLike | None = None) -> dict[str, bool]:
    """Which catalogue checksums of ``ref`` the store at ``store`` reproduces (``content`` is the one that counts)."""
    entry = find_entry(ref, catalog)
    got = compute_checksums(store)
    return {k: got[k] == entry["checksums"].get(k) for k in ("index", "arrays", "card", "content",
                                                              "saed_reference", "delta")}


def entry_summary(entry: dict[str, Any]) -> dict[str, Any]:
    c = entry.get("counts", {})
    return {"name": entry["name"], "version": str(entry["version"]), "materials": c.get("materials"),
            "grid_points": c.get("grid_points"), "location": entry["location"],
            "content_sha256": entry["checksums"]["content"][:12], "description": entry.get("description", "")}
