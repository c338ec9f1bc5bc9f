"""``chgdata verify``: a clean store passes; corrupted chunks, rows, duplicates, orphans and card counts are found."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from chgdata import contract as C
from chgdata.verify import verify_store
from tests.conftest import GPAW, need_shared

MATERIALS = ("gpaw-0001", "gpaw-0002", "gpaw-0003", "gpaw-0004", "gpaw-0006", "gpaw-0008")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A small store with ingest, build-delta and build-dos done (in-process threads: fast)."""
    need_shared()
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest

    root = tmp_path_factory.mktemp("verify")
    for m in MATERIALS:
        shutil.copytree(GPAW / m, root / "calcs" / m)
    store = str(root / "store")
    assert not run_ingest(store, from_dir=str(root / "calcs"), workers=2, processes=False, progress=False).failed
    assert not run_build_delta(store, workers=2, processes=False, progress=False).failed
    assert not run_build_dos(store, workers=2, processes=False, progress=False).failed
    return Path(store)


@pytest.fixture
def store(built, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(built, dst)
    return dst


def _kinds(store) -> set[tuple[str, str, str]]:
    return {(p.kind, p.table, p.material_id) for p in verify_store(store).problems}


def _rewrite(store: Path, table: str, column: str, fn) -> str:
    """Change ``column`` of the first row of the first fragment of ``table``; returns that row's material id."""
    path = sorted((store / table).glob("*.parquet"))[0]
    t = pq.read_table(path)
    rows = t.to_pylist()
    rows[0][column] = fn(rows[0][column])
    pq.write_table(type(t).from_pylist(rows, schema=t.schema), path)
    return rows[0][C.COL_ID]


def test_clean_store_verifies(built):
    report = verify_store(built)
    assert report.ok, report.problems
    assert report.checked["rho checksums"] == len(MATERIALS)
    assert report.checked["saed checksums"] == report.checked["delta checksums"] == len(MATERIALS)
    assert report.checked["dos checksums"] == len(MATERIALS)
    assert report.checked["electron counts"] == len(MATERIALS) and report.checked["card counts"] >= 2


def test_corrupted_rho_chunk_is_reported(store):
    from chgdata import open_dataset

    ds = open_dataset(store)
    row = ds.index.to_pylist()[0]
    victims = {r[C.COL_ID] for r in ds.index.to_pylist() if r[C.COL_PARTITION] == row[C.COL_PARTITION]}
    chunk = store / C.ARRAYS_DIR / C.RHO / row[C.COL_PARTITION] / "c" / "0"
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(255 - b for b in data[mid:mid + 64])  # flip bytes inside the shard
    chunk.write_bytes(bytes(data))
    problems = verify_store(store).problems
    hit = {p.material_id for p in problems if p.table == C.INDEX and p.kind in ("unreadable", "checksum mismatch")}
    assert hit and hit <= victims, problems


def test_corrupted_parquet_rows_are_reported(store):
    from chgdata.pipelines.dos import DOS_TABLE

    m_sha = _rewrite(store, C.INDEX, C.COL_RHO_SHA, lambda s: "0" * 64)
    m_saed = _rewrite(store, C.DELTA_INDEX, "saed_sha256", lambda s: "f" * 64)
    m_dos = _rewrite(store, DOS_TABLE, "dos_sha256", lambda s: "e" * 64)
    kinds = _kinds(store)
    assert ("checksum mismatch", C.INDEX, m_sha) in kinds
    assert ("checksum mismatch", C.DELTA_INDEX, m_saed) in kinds
    assert ("checksum mismatch", DOS_TABLE, m_dos) in kinds


def test_wrong_electron_count_is_reported(store):
    mid = _rewrite(store, C.INDEX, C.COL_NELECT, lambda n: n + 0.5)
    assert ("electron count", C.INDEX, mid) in _kinds(store)


def test_duplicates_orphans_and_card_counts_are_reported(store):
    import numpy as np
    import pyarrow as pa
    import zarr

    frag = sorted((store / C.INDEX).glob("*.parquet"))[0]
    t = pq.read_table(frag)
    pq.write_table(pa.concat_tables([t, t.slice(0, 1)]), frag)  # one row written twice into a fragment
    dup_ids = {t.column(C.COL_ID)[0].as_py()}
    shutil.copy(frag, frag.with_name("p-zz-newer.parquet"))  # rows superseded by a newer fragment: counted only
    raw = sorted((store / C.DOS_RAW).glob("*.parquet"))[0]
    shutil.copy(raw, raw.with_name("p-killed.parquet"))  # raw DOS of an ingest task killed before its index
    arr = zarr.create_array(zarr.storage.LocalStore(str(store / C.ARRAYS_DIR)), name="rho/p-orphan", shape=(4,),
                            dtype="float32")
    arr[:] = np.ones(4, np.float32)
    card = yaml.safe_load((store / C.CARD).read_text())
    card["dos"]["materials"] += 1
    (store / C.CARD).write_text(yaml.safe_dump(card, sort_keys=False))
    report = verify_store(store)
    kinds = {(p.kind, p.table, p.material_id) for p in report.problems}
    assert {m for k, t, m in kinds if k == "duplicate" and t == C.INDEX} == dup_ids
    assert report.checked[f"superseded rows in {C.INDEX}"] == t.num_rows + 2  # 2 x (n + 1) rows, n ids
    assert ("orphan", C.ARRAYS_DIR, "rho/p-orphan") in kinds
    assert ("orphan", C.DOS_RAW, "p-killed.parquet") in kinds
    assert ("card count", C.CARD, "-") in kinds


def test_cli_verify_exit_codes(store):
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    runner = CliRunner()
    res = runner.invoke(app, ["verify", "--store", str(store)])
    assert res.exit_code == 0 and "no mismatches" in res.output, res.output
    mid = _rewrite(store, C.INDEX, C.COL_RHO_SHA, lambda s: "0" * 64)
    res = runner.invoke(app, ["verify", "--store", str(store)], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    assert "checksum mismatch" in res.output and mid in res.output and "1 mismatches" in res.output
    res = runner.invoke(app, ["verify", "--store", str(store / "nope")])
    assert res.exit_code == 1 and "no dataset at" in res.output
    assert os.path.isdir(store)


def test_reading_a_corrupted_chunk_raises_naming_the_material(store):
    """Dataset.density() of a material in a damaged chunk raises (it returned values like 2.5e38 with exit 0);
    materials elsewhere still read."""
    from chgdata import open_dataset
    from chgdata.store import StoreError

    ds = open_dataset(store)
    rows = ds.index.to_pylist()
    row = rows[0]
    chunk = store / C.ARRAYS_DIR / C.RHO / row[C.COL_PARTITION] / "c" / "0"
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(255 - b for b in data[mid:mid + 16])
    chunk.write_bytes(bytes(data))
    victims = [r[C.COL_ID] for r in rows if r[C.COL_PARTITION] == row[C.COL_PARTITION]]
    fresh = open_dataset(store)
    failures = []
    for mid_ in victims:
        try:
            fresh.density(mid_)
        except StoreError as exc:
            assert mid_ in str(exc) and row[C.COL_PARTITION] in str(exc)
            failures.append(mid_)
    assert failures  # the damaged ones are refused, never returned
    others = [r[C.COL_ID] for r in rows if r[C.COL_PARTITION] != row[C.COL_PARTITION]]
    for mid_ in others:
        assert np.isfinite(fresh.density(mid_).rho).all()


def _flip_middle(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(255 - b for b in data[mid:mid + 16])
    chunk.write_bytes(bytes(data))


def test_every_read_path_refuses_a_corrupted_chunk_unless_told_not_to(store, monkeypatch):
    """Δρ, SAED, DOS windows, to_xarray and the training loader compare what they read with the checksums written
    with it (only density() did): a flipped chunk raises naming the material and array; CHGDATA_CHECK_READS=0
    (or check_reads=False) reads without the check."""
    from chgdata import open_dataset
    from chgdata.store import StoreError

    first = open_dataset(store)
    rows = first.index.to_pylist()
    part = rows[0][C.COL_PARTITION]
    victims = [r[C.COL_ID] for r in rows if r[C.COL_PARTITION] == part]
    dos_part = {r[C.COL_ID]: r[C.COL_PARTITION] for r in first.table(C.DOS_INDEX).to_pylist()}[victims[0]]
    dos_victims = [m for m, p in {r[C.COL_ID]: r[C.COL_PARTITION] for r in first.table(C.DOS_INDEX).to_pylist()}
                   .items() if p == dos_part]
    _flip_middle(store / C.ARRAYS_DIR / C.DELTA / part / "c" / "0")
    _flip_middle(store / C.ARRAYS_DIR / C.DOS_NORM / dos_part / "c" / "0" / "0" / "0")

    def refused(read, ids=victims, where=part) -> list[str]:
        hit = []
        for m in ids:
            try:
                read(m)
            except StoreError as exc:
                assert m in str(exc) and where in str(exc) and "checksum" in str(exc), str(exc)
                hit.append(m)
        return hit

    ds = open_dataset(store)
    assert refused(lambda m: ds.grid(C.DELTA, m))
    assert refused(lambda m: ds.to_xarray(m))
    assert refused(lambda m: ds.dos_windows([m]), dos_victims, dos_part)
    pytest.importorskip("torch")
    from chgdata.models.data import DensityProbes

    probes = DensityProbes(str(store), victims, target="delta", probes=50)
    assert refused(lambda m: probes[victims.index(m)])
    monkeypatch.setenv("CHGDATA_CHECK_READS", "0")
    unchecked = open_dataset(store)
    assert not unchecked.check_reads
    for m in victims:  # the opt-out reads (possibly wrong) values without raising
        unchecked.grid(C.DELTA, m)
        unchecked.dos_windows([m])
    assert open_dataset(store, check_reads=True).check_reads


def test_export_skips_damaged_materials_names_them_and_exits_3(store, tmp_path):
    """`chgdata export` of a store with one damaged rho chunk writes every other material and lists the damaged
    ones (it stopped at the first, after writing 15 of 20)."""
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    from chgdata import open_dataset

    rows = open_dataset(store).index.to_pylist()
    part = rows[0][C.COL_PARTITION]
    _flip_middle(store / C.ARRAYS_DIR / C.RHO / part / "c" / "0")
    res = CliRunner().invoke(app, ["export", "--store", str(store), "--format", "npy", "--out", str(tmp_path / "x")])
    assert res.exit_code == 3, res.output
    failed = {ln.split()[1].rstrip(":") for ln in res.output.splitlines() if ln.strip().startswith("failed ")}
    assert failed and failed <= {r[C.COL_ID] for r in rows if r[C.COL_PARTITION] == part}
    written = {p.stem for p in (tmp_path / "x").glob("*.npy")}
    assert written == {r[C.COL_ID] for r in rows} - failed
    assert set((tmp_path / "x" / "filelist.txt").read_text().split()) == written
