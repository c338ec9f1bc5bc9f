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

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

import chgdata
from chgdata import contract as C
from chgdata.catalog_content import canonical_sha256, compute_checksums, describe, plain_data
from chgdata.dataset import Dataset
from chgdata.location import Location, StoreError, read_card, read_table, update_card, utcnow

CATALOG_ENV = "CHGDATA_CATALOG"
VERIFY_ENV = "CHGDATA_CATALOG_VERIFY"  # 0: open catalogue datasets without checking their content checksum
CATALOG_FILE = "catalog.yaml"
CATALOG_FORMAT = "1.0"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
CATALOG_SCHEMA = SCHEMA_DIR / "catalog.schema.json"
CARD_SCHEMA = SCHEMA_DIR / "card.schema.json"


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CatalogError(ValueError):
    """The catalogue cannot be read or updated as asked (unknown name, conflicting publish, bad schema)."""


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
    errors = sorted(validator.iter_errors(plain_data(instance)), key=lambda e: list(e.absolute_path))
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
