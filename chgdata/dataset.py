"""Reading a store: :class:`Dataset` (index, tables, grids, DOS windows, xarray views) and :class:`DensityGrid`.

Re-exported by :mod:`chgdata.store`; open a store with :func:`chgdata.store.open_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from chgdata import contract as C
from chgdata.location import Location, StoreError, read_card, read_table, table_names


@dataclass
class DensityGrid:
    """One material's grids in e/Å³, shaped (nx, ny, nz); ``mag`` is None for non-spin materials."""

    material_id: str
    rho: np.ndarray
    mag: np.ndarray | None
    lattice: np.ndarray  # (3, 3) Å, row vectors

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.lattice)))

    def electrons(self) -> float:
        """∫ρ dV over the cell (electrons)."""
        return float(self.rho.astype(np.float64).mean() * self.volume)

    def to_chgcar(self, structure, data_aug: dict | None = None):
        """A pymatgen ``Chgcar``: ``total`` = ρ·V and, when spin-polarised, ``diff`` = (ρ↑−ρ↓)·V (VASP units);
        ``data_aug`` (PAW augmentation occupancies, pymatgen's dict of text lines) is carried as given."""
        from pymatgen.io.vasp import Chgcar, Poscar

        vol = float(structure.volume)
        data = {"total": self.rho.astype(np.float64) * vol}
        if self.mag is not None:
            data["diff"] = self.mag.astype(np.float64) * vol
        return Chgcar(Poscar(structure), data, data_aug=data_aug)


#: array -> (offset column of the index row, checksum column, table holding the checksum: None = the index)
GRID_CHECKSUMS = {C.RHO: (C.COL_RHO_OFFSET, C.COL_RHO_SHA, None), C.MAG: (C.COL_MAG_OFFSET, C.COL_MAG_SHA, None),
                  C.RHO_AE: (C.COL_AE_OFFSET, C.COL_AE_SHA, None),
                  C.SAED: (C.COL_RHO_OFFSET, "saed_sha256", C.DELTA_INDEX),
                  C.DELTA: (C.COL_RHO_OFFSET, "delta_sha256", C.DELTA_INDEX)}


def check_reads_default() -> bool:
    """Whether reads are checked against their checksums unless told: yes, but ``CHGDATA_CHECK_READS=0``."""
    return os.environ.get("CHGDATA_CHECK_READS", "1").strip().lower() not in ("0", "false", "no", "off")


class Dataset:
    """Read access to a store: the index as an Arrow table and grids of single materials.

    ``check_reads`` (default on; ``CHGDATA_CHECK_READS=0`` turns it off): every whole grid and DOS window read is
    compared with the sha256 recorded when it was written, so a corrupted or truncated chunk raises
    :class:`StoreError` naming the material and the array instead of returning wrong numbers. Point subsets
    (training probes) are covered by checking the material's whole grid once per Dataset."""

    def __init__(self, url: str | os.PathLike, check_reads: bool | None = None):
        self.check_reads = check_reads_default() if check_reads is None else bool(check_reads)
        self._checked: set[tuple[str, str]] = set()
        self._derived_rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.loc = Location.parse(url)
        self.loc.refresh()
        if not self.loc.fs.exists(self.loc.root):
            raise StoreError(f"no dataset at {self.loc.url}")
        self._zstore = self.loc.zarr_store(read_only=True)
        self._rows: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, int] | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._index: pa.Table | None = None
        self._splits: list[dict[str, str]] | None = None

    @property
    def url(self) -> str:
        return self.loc.url

    @property
    def card(self) -> dict[str, Any]:
        return read_card(self.loc)

    @property
    def index(self) -> pa.Table:
        if self._index is None:
            t = read_table(self.loc, C.INDEX)  # one chunk: a row is then sliced in O(1), not per fragment
            self._index = t.combine_chunks() if t is not None else pa.table({C.COL_ID: pa.array([], pa.string())})
        return self._index

    def table(self, name: str) -> pa.Table | None:
        return read_table(self.loc, name)

    @property
    def failures(self) -> pa.Table | None:
        return read_table(self.loc, C.FAILURES)

    @property
    def material_ids(self) -> list[str]:
        return self.index.column(C.COL_ID).to_pylist()

    def __len__(self) -> int:
        return self.index.num_rows

    def splits(self) -> dict[str, list[str]]:
        """The recorded grouped split (``chgdata split``): {"train"|"val"|"test": sorted material ids}; empty when
        none is recorded. The grouping is in ``card["split"]``."""
        out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        have = set(self.material_ids)
        for r in self._split_rows():
            if r[C.COL_ID] in have:
                out[r["split"]].append(r[C.COL_ID])
        return {k: sorted(v) for k, v in out.items()}

    def groups(self) -> dict[str, str]:
        """material id -> group label of the recorded split (empty when none is recorded)."""
        return {r[C.COL_ID]: r["group"] for r in self._split_rows()}

    def _split_rows(self) -> list[dict[str, str]]:
        """``splits.parquet`` rows (material_id, group, split), read once per Dataset."""
        if self._splits is None:
            t = read_table(self.loc, C.SPLITS_TABLE)
            self._splits = [] if t is None else t.select([C.COL_ID, "group", "split"]).to_pylist()
        return self._splits

    def row(self, material_id: str) -> dict[str, Any]:
        """The index row of one material as a dict. The first call maps ids to row positions (the id column
        only); each row is converted when first asked for, then cached (not the whole index: that took 2.6 s
        at 100k rows, BENCHMARKS.md)."""
        if self._positions is None:
            self._positions = {mid: pos for pos, mid in enumerate(self.index.column(C.COL_ID).to_pylist())}
        row = self._rows.get(material_id)
        if row is None:
            try:
                pos = self._positions[material_id]
            except KeyError:
                raise KeyError(f"material {material_id!r} is not in {self.url}") from None
            row = self._rows[material_id] = self.index.slice(pos, 1).to_pylist()[0]
        return row

    def array(self, array: str, partition: str) -> zarr.Array:
        """A partition array, opened once per Dataset (its metadata is not re-read on every material)."""
        key = f"{array}/{partition}"
        if key not in self._arrays:
            self._arrays[key] = zarr.open_array(self._zstore, path=key, mode="r")
        return self._arrays[key]

    def read_flat(self, array: str, material_id: str, offset_column: str | None = None,
                  points: np.ndarray | None = None, row: dict[str, Any] | None = None) -> np.ndarray:
        """The flattened grid of ``array`` for one material, or only the flat indices ``points``.

        ``row``: the material's index row when the caller has it (Dask tasks get theirs from the driver), so the
        index is not read at all."""
        row = self.row(material_id) if row is None else row
        offset = row[offset_column or C.COL_RHO_OFFSET]
        if offset is None or offset < 0:
            raise KeyError(f"material {material_id!r} has no {array!r} grid")
        arr = self.array(array, row[C.COL_PARTITION])
        if points is None:
            return arr[offset:offset + row[C.COL_NPOINTS]]
        return arr.get_coordinate_selection(np.asarray(points, dtype=np.int64) + offset)

    def _derived_row(self, table: str, material_id: str, row: dict[str, Any]) -> dict[str, Any]:
        """The current row of a derived table (delta.parquet) for a material: same partition as its index row (a
        re-ingested material's old row is stale)."""
        if table not in self._derived_rows:
            t = self.table(table)
            self._derived_rows[table] = {} if t is None else {
                (r[C.COL_ID], r[C.COL_PARTITION]): r for r in t.to_pylist()}
        hit = self._derived_rows[table].get((material_id, row[C.COL_PARTITION]))
        if hit is None:
            raise KeyError(f"material {material_id!r} has no {table.split('.')[0]} row in {self.url}")
        return hit

    def grid(self, array: str, material_id: str, row: dict[str, Any] | None = None) -> np.ndarray:
        """One material's whole flat grid of ``array`` (rho, mag, rho_ae, saed, delta; e/Å³), checked against
        the checksum written with it unless ``check_reads`` is off: a corrupted or truncated chunk raises
        StoreError naming the material and the array, never returns wrong numbers."""
        from chgdata.location import sha256_array

        row = self.row(material_id) if row is None else row
        offset_column, sha_column, table = GRID_CHECKSUMS[array]
        where = f"{self.url}: material {material_id!r}, {array}/{row[C.COL_PARTITION]}"
        try:
            values = self.read_flat(array, material_id, offset_column, row=row)
        except (KeyError, StoreError):
            raise
        except Exception as exc:  # noqa: BLE001 - zarr/codec errors of a damaged chunk: one line naming it
            raise StoreError(f"{where}: unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
                             "`chgdata verify` lists every damaged material") from None
        if self.check_reads:
            want = (row if table is None else self._derived_row(table, material_id, row)).get(sha_column)
            if want and sha256_array(values) != want:
                raise StoreError(f"{where}: the stored values differ from their checksum (a corrupted chunk); "
                                 "`chgdata verify` lists every damaged material, re-ingest it to repair")
            self._checked.add((array, material_id))
        return values

    def read_points(self, array: str, material_id: str, points: np.ndarray,
                    row: dict[str, Any] | None = None) -> np.ndarray:
        """``array`` of one material at flat grid indices ``points``; with ``check_reads`` the whole grid is
        checked once (first read of that material and array by this Dataset), then subsets are read directly."""
        row = self.row(material_id) if row is None else row
        if self.check_reads and (array, material_id) not in self._checked:
            self.grid(array, material_id, row)
        return self.read_flat(array, material_id, GRID_CHECKSUMS[array][0], points=points, row=row)

    def density(self, material_id: str) -> DensityGrid:
        """Total density and magnetisation of one material (e/Å³), reading nothing of other materials."""
        row = self.row(material_id)
        if not row.get(C.COL_NPOINTS):
            raise KeyError(f"material {material_id!r} has no charge density (DOS only)")
        shape = tuple(row[C.COL_GRID])
        rho = self.grid(C.RHO, material_id, row).reshape(shape)
        mag = None
        if row.get(C.COL_MAG_OFFSET, -1) >= 0:
            mag = self.grid(C.MAG, material_id, row).reshape(shape)
        lattice = np.asarray(row[C.COL_LATTICE], dtype=np.float64).reshape(3, 3)
        return DensityGrid(material_id, rho, mag, lattice)

    #: build-dos index table and partition arrays (written by chgdata.pipelines.dos).
    DOS_TABLE = C.DOS_INDEX
    DOS_VARIANTS = {"absolute": C.DOS_ABS, "normalised": C.DOS_NORM}

    def dos_ids(self) -> list[str]:
        """Materials that have a DOS window (``chgdata build-dos``), in index order; no window is read."""
        t = self.table(self.DOS_TABLE)
        have = set() if t is None else set(t.column(C.COL_ID).to_pylist())
        return [m for m in self.material_ids if m in have]

    def dos_windows(self, material_ids: Sequence[str] | None = None,
                    variant: str = "normalised") -> tuple[list[str], np.ndarray, np.ndarray]:
        """DOS windows built by ``chgdata build-dos``: ``(ids, values (N, 2, npoints) float32, energies)``.

        ``variant`` is "absolute" (states/eV/atom) or "normalised" (max = 1; absolute = normalised * norm_const
        of the dos.parquet row). ``energies`` are E - E_F in eV. Without ``material_ids``: every material with a
        window, in index order; with them: in the order given (KeyError for one without a window).
        """
        if variant not in self.DOS_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(self.DOS_VARIANTS)}, got {variant!r}")
        t = self.table(self.DOS_TABLE)
        if t is None or t.num_rows == 0:
            raise KeyError(f"no DOS windows in {self.url}: run chgdata build-dos first")
        meta = {r[C.COL_ID]: r for r in t.select([C.COL_ID, C.COL_PARTITION, "row", "emin", "emax",
                                                   "npoints"]).to_pylist()}
        if material_ids is None:
            ids = [m for m in self.material_ids if m in meta]
        else:
            ids = list(material_ids)
            missing = [m for m in ids if m not in meta]
            if missing:
                raise KeyError(f"no DOS window for {missing[:5]} in {self.url}")
        first = meta[ids[0]] if ids else next(iter(meta.values()))
        npoints = int(first["npoints"])
        out = np.empty((len(ids), 2, npoints), dtype=np.float32)
        groups: dict[str, list[tuple[int, int]]] = {}
        for pos, mid in enumerate(ids):
            groups.setdefault(meta[mid][C.COL_PARTITION], []).append((pos, int(meta[mid]["row"])))
        for partition, pairs in groups.items():
            pos, rows = (np.array(x, dtype=np.int64) for x in zip(*pairs))
            arr = self.array(self.DOS_VARIANTS[variant], partition)
            out[pos] = arr.get_orthogonal_selection((rows, slice(None), slice(None)))
            if self.check_reads:
                self._check_windows(t, partition, [ids[k] for k in pos], rows, out[pos], variant)
        return ids, out, np.linspace(float(first["emin"]), float(first["emax"]), npoints)

    def _check_windows(self, table: pa.Table, partition: str, ids: list[str], rows: np.ndarray,
                       values: np.ndarray, variant: str) -> None:
        """Compare DOS windows read from one partition with their ``dos_sha256`` (both variants are hashed)."""
        from chgdata.dos import dos_checksum

        other = "absolute" if variant == "normalised" else "normalised"
        twin = self.array(self.DOS_VARIANTS[other], partition).get_orthogonal_selection(
            (rows, slice(None), slice(None)))
        want = {r[C.COL_ID]: r["dos_sha256"] for r in table.select([C.COL_ID, C.COL_PARTITION, "dos_sha256"])
                .to_pylist() if r[C.COL_PARTITION] == partition}
        for mid, v, w in zip(ids, values, twin):
            absolute, normalised = (v, w) if variant == "absolute" else (w, v)
            if want.get(mid) and dos_checksum(absolute, normalised) != want[mid]:
                raise StoreError(f"{self.url}: material {mid!r}, DOS window in {C.DOS_ABS}|{C.DOS_NORM}/{partition}: "
                                 "the stored values differ from their checksum (a corrupted chunk); `chgdata "
                                 "verify` lists every damaged material, rerun build-dos to repair")

    def raw_dos(self, material_id: str):
        """The raw DOS kept at ingest (:class:`chgdata.dos.RawDos`, validated; ValueError if unusable)."""
        from chgdata.dos import raw_from_row

        partition = self.row(material_id)[C.COL_PARTITION]
        path = self.loc.path(C.DOS_RAW, f"{partition}.parquet")
        if not self.loc.fs.exists(path):
            raise KeyError(f"material {material_id!r} has no raw DOS in {self.url}")
        with self.loc.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, filters=[(C.COL_ID, "==", material_id)])
        if t.num_rows == 0:
            raise KeyError(f"material {material_id!r} has no raw DOS in {self.url}")
        return raw_from_row(t.to_pylist()[0])

    def to_xarray(self, material_id: str):
        """One material as an ``xarray.Dataset``: grids on dims (x, y, z) in e/Å³ (rho, mag, rho_ae, saed, delta,
        those present), the lattice (Å), sites and, after build-dos, its DOS window (spin, energy)."""
        from chgdata.xarray_io import material_dataset

        return material_dataset(self, material_id)

    def dos_xarray(self, material_ids: Sequence[str] | None = None, variant: str = "normalised"):
        """The DOS windows as an ``xarray.DataArray`` on dims (material, spin, energy); energy is E − E_F in eV."""
        from chgdata.xarray_io import dos_dataarray

        ids, values, energies = self.dos_windows(material_ids, variant)
        return dos_dataarray(ids, values, energies, variant)

    def summary(self) -> dict[str, Any]:
        """Counts and provenance at a glance: materials, with density/DOS/spin, sources, codes, store tables."""
        t = self.index

        def col(name: str) -> list:
            return t.column(name).to_pylist() if name in t.column_names else []
        card = self.card
        status = col(C.COL_STATUS)
        return {
            "url": self.url, "schema_version": card.get("schema_version"), "materials": len(self),
            "with_density": sum(bool(n) for n in col(C.COL_NPOINTS)), "with_dos": sum(map(bool, col(C.COL_HAS_DOS))),
            "spin_polarized": sum(map(bool, col(C.COL_SPIN))),
            "flagged": sum(str(s).startswith("flagged") for s in status),
            "sources": sorted({s for s in col(C.COL_SOURCE) if s}),
            "dft_codes": sorted({s for s in col(C.COL_DFT_CODE) if s}),
            "tables": table_names(self.loc), "built": [k for k in ("saed", "dos") if k in card],
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (f"<chgdata.Dataset {s['url']}: {s['materials']} materials ({s['with_density']} with density, "
                f"{s['with_dos']} with DOS, {s['spin_polarized']} spin-polarised); sources "
                f"{', '.join(s['sources']) or '-'}; built {', '.join(s['built']) or 'ingest only'}>")

    def paw_augmentation(self, material_id: str) -> dict | None:
        """The PAW augmentation occupancies kept at ingest from a VASP CHGCAR (pymatgen ``data_aug``), or None."""
        from chgdata.grid import augmentation_from_json

        partition = self.row(material_id)[C.COL_PARTITION]
        path = self.loc.path(C.AUGMENTATION, f"{partition}.parquet")
        if not self.loc.fs.exists(path):
            return None
        with self.loc.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, filters=[(C.COL_ID, "==", material_id)])
        return augmentation_from_json(t.column("data_aug")[0].as_py()) if t.num_rows else None

    def paw_density_matrices(self, material_id: str) -> list[np.ndarray] | None:
        """GPAW's PAW atomic density matrices D_asii kept at ingest (``paw.npz``), per atom (nspins, ni, ni), or
        None (a material computed elsewhere)."""
        partition = self.row(material_id)[C.COL_PARTITION]
        path = self.loc.path(C.PAW_MATRICES, f"{partition}.parquet")
        if not self.loc.fs.exists(path):
            return None
        with self.loc.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, filters=[(C.COL_ID, "==", material_id)]).to_pylist()
        if not t:
            return None
        r = t[0]
        return [np.asarray(d, dtype=np.float64).reshape(r["nspins"], ni, ni) for d, ni in zip(r["D"], r["ni"])]

    def structure(self, material_id: str):
        """The pymatgen Structure of one material."""
        from pymatgen.core import Lattice, Structure

        row = self.row(material_id)
        lattice = Lattice(np.asarray(row[C.COL_LATTICE], dtype=np.float64).reshape(3, 3))
        frac = np.asarray(row[C.COL_FRAC], dtype=np.float64).reshape(-1, 3)
        return Structure(lattice, row[C.COL_SPECIES], frac)
