"""build-dos on the real shared data: conservation, variants, spin, resume, bad raw DOS rows, CLI and plot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chgdata.cli.main import app
from chgdata.pipelines.dos import DOS_ABS, DOS_NORM, DOS_TABLE, dos_checksum, raw_from_row, run_build_dos
from typer.testing import CliRunner

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.dos import count_states
from chgdata.store import DOS_RAW_SCHEMA, Location, StoreError, read_table

VASP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vasp"  # the conftest fixtures skip if missing


def _copy(store: str, tmp_path, name: str) -> str:
    dst = tmp_path / name
    shutil.copytree(store, dst)
    return str(dst)


def _text(res) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


def _raw_rows(store: str) -> dict[str, dict]:
    t = read_table(Location.parse(store), C.DOS_RAW)
    return {r[C.COL_ID]: r for r in t.to_pylist()}


@pytest.fixture(scope="module")
def built(gpaw_store, vasp_store, tmp_path_factory):
    """Both shared stores (copied) with build-dos run once through the local process cluster (2 workers)."""
    tmp = tmp_path_factory.mktemp("dos")
    out = {}
    for name, store in (("gpaw", gpaw_store), ("vasp", vasp_store)):
        s = _copy(store, tmp, name)
        out[name] = (s, run_build_dos(s, workers=2, progress=False))
    return out


@pytest.mark.parametrize("name", ["gpaw", "vasp"])
def test_windows_conserve_states_and_variants(built, name):
    store, report = built[name]
    raw_rows = _raw_rows(store)
    assert not report.failed, report.failed
    assert sorted(report.committed) == sorted(raw_rows)
    ds = open_dataset(store)
    ids, absolute, energies = ds.dos_windows(variant="absolute")
    ids_n, normalised, _ = ds.dos_windows(variant="normalised")
    assert ids == ids_n == [m for m in ds.material_ids if m in raw_rows]  # index order
    assert absolute.shape == normalised.shape == (len(ids), 2, 400) and absolute.dtype == np.float32
    np.testing.assert_allclose(energies, np.linspace(-10, 10, 400))
    rows = {r[C.COL_ID]: r for r in ds.table(DOS_TABLE).to_pylist()}
    assert len(rows) == ds.table(DOS_TABLE).num_rows  # no duplicates
    h = 20.0 / 399
    for i, mid in enumerate(ids):
        r = rows[mid]
        raw = raw_from_row(raw_rows[mid])
        # states conserved: stored absolute window x natoms x spacing vs the raw count in the window cells
        stored = float(absolute[i].astype(np.float64).sum()) * raw.natoms * h
        want = float(count_states(raw, -10 - h / 2, 10 + h / 2).sum())
        assert abs(stored - want) <= 0.01 * want, (mid, stored, want)
        assert r["states_raw"] == pytest.approx(want / raw.natoms, rel=1e-9)
        assert r["states_smeared"] == pytest.approx(stored / raw.natoms, rel=1e-5)
        # variants consistent: absolute = normalised * norm_const, max normalised = 1
        np.testing.assert_allclose(absolute[i], normalised[i] * r["norm_const"], rtol=1e-6,
                                   atol=1e-6 * r["norm_const"])
        assert float(normalised[i].max()) == pytest.approx(1.0, abs=1e-6)
        assert r["dos_sha256"] == dos_checksum(absolute[i], normalised[i])
        assert (r["sigma"], r["emin"], r["emax"], r["npoints"]) == (0.1, -10.0, 10.0, 400)
        assert r["spin_polarized"] == raw.spin_polarized and r["natoms"] == raw.natoms
        assert r["efermi"] == pytest.approx(raw.efermi)
        # spin: a non-spin total is split evenly; a spin-polarised DOS keeps two channels
        if not raw.spin_polarized:
            np.testing.assert_array_equal(absolute[i, 0], absolute[i, 1])
    spin = [i for i, m in enumerate(ids) if rows[m]["spin_polarized"]]
    nonspin = [i for i, m in enumerate(ids) if not rows[m]["spin_polarized"]]
    assert spin and nonspin
    assert any(not np.allclose(absolute[i, 0], absolute[i, 1], rtol=1e-3) for i in spin)
    card = ds.card["dos"]
    assert card["sigma_eV"] == 0.1 and card["npoints"] == 400 and card["materials"] == len(ids)
    assert card["spin_polarized"] == len(spin) and card["non_spin"] == len(nonspin) and card["failed"] == 0
    assert len(card["energies_eV"]) == 400
    one = ds.dos_windows([ids[-1], ids[0]], "absolute")[1]
    np.testing.assert_array_equal(one, absolute[[-1, 0]])


def test_resume_and_refuse_other_parameters(built):
    store, first = built["vasp"]
    loc = Location.parse(store)
    frags = loc.list_fragments(DOS_TABLE)
    again = run_build_dos(store, workers=1, processes=False, progress=False)
    assert again.committed == [] and again.partitions == 0 and sorted(again.skipped) == sorted(first.committed)
    assert loc.list_fragments(DOS_TABLE) == frags
    t = read_table(loc, DOS_TABLE)
    assert t.num_rows == len(set(t.column(C.COL_ID).to_pylist())) == len(first.committed)
    with pytest.raises(StoreError, match="already holds DOS windows built with sigma=0.1"):
        run_build_dos(store, sigma=0.2, workers=1, processes=False, progress=False)
    with pytest.raises(StoreError, match="400 points"):
        run_build_dos(store, npoints=200, workers=1, processes=False, progress=False)


def test_partial_run_resumes(gpaw_store, tmp_path):
    """A committed subset (one dos.parquet fragment removed, as if its task died) is finished without duplicates."""
    store = _copy(gpaw_store, tmp_path, "g")
    first = run_build_dos(store, workers=2, processes=False, progress=False)
    loc = Location.parse(store)
    frag = loc.list_fragments(DOS_TABLE)[0]
    lost = set(pq.read_table(frag).column(C.COL_ID).to_pylist())
    os.remove(frag)  # its arrays stay behind as orphans
    second = run_build_dos(store, workers=2, processes=False, progress=False)
    assert set(second.committed) == lost and len(second.orphans_removed) == 3
    t = read_table(loc, DOS_TABLE)
    assert sorted(t.column(C.COL_ID).to_pylist()) == sorted(first.committed)
    ds = open_dataset(store)
    assert len(ds.dos_windows()[0]) == len(first.committed)


def test_bad_raw_dos_rows_fail_cleanly(gpaw_store, tmp_path):
    store = _copy(gpaw_store, tmp_path, "bad")
    loc = Location.parse(store)
    frag = loc.list_fragments(C.DOS_RAW)[0]
    rows = pq.read_table(frag).to_pylist()
    assert len(rows) >= 6
    bad = {}
    r = rows[0]
    r["efermi"] = None
    bad[r[C.COL_ID]] = "no Fermi energy"
    r = rows[1]
    r["dos_up"] = [float("nan")] + r["dos_up"][1:]
    bad[r[C.COL_ID]] = "NaN"
    r = rows[2]
    r["energies"] = r["energies"][:10] + [r["energies"][5]] + r["energies"][11:]
    bad[r[C.COL_ID]] = "not strictly increasing"
    r = rows[3]
    r["energies"], r["dos_up"], r["dos_down"] = [], [], None
    r["spin_polarized"] = False
    bad[r[C.COL_ID]] = "empty"
    r = rows[4]
    r["dos_up"] = [0.0] * len(r["dos_up"])
    r["dos_down"] = None if r["dos_down"] is None else [0.0] * len(r["dos_down"])
    bad[r[C.COL_ID]] = "empty"
    r = rows[5]
    r["energies"] = [e + 1000.0 for e in r["energies"]]  # window far from the states
    r["efermi"] = r["efermi"] - 1000.0
    bad[r[C.COL_ID]] = "contains no states"
    pq.write_table(pa.Table.from_pylist(rows, schema=DOS_RAW_SCHEMA), frag)

    report = run_build_dos(store, workers=2, progress=False)
    assert set(report.failed) == set(bad)
    good = set(_raw_rows(store)) - set(bad)
    assert set(report.committed) == good
    fails = {r["material_id"]: r for r in read_table(loc, C.FAILURES).to_pylist() if r["stage"] == "build-dos"}
    for mid, words in bad.items():
        reason = fails[mid]["reason"]
        assert words in reason and "\n" not in reason, (mid, reason)
    ds = open_dataset(store)
    assert set(ds.dos_windows()[0]) == good
    assert ds.card["dos"]["failed"] == len(bad)
    with pytest.raises(KeyError):
        ds.dos_windows([next(iter(bad))])
    # the rerun retries the bad ones (they fail again) and builds nothing twice
    again = run_build_dos(store, workers=1, processes=False, progress=False)
    assert again.committed == [] and set(again.failed) == set(bad)


def test_cli_build_dos_and_plot(vasp_store, tmp_path):
    store = _copy(vasp_store, tmp_path, "cli")
    runner = CliRunner()
    res = runner.invoke(app, ["build-dos", "--store", store, "-q", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "built 9 DOS windows" in _text(res)
    res = runner.invoke(app, ["build-dos", "--store", store, "-q", "--workers", "1"])
    assert res.exit_code == 0 and "built 0 DOS windows, already in store 9" in _text(res)
    res = runner.invoke(app, ["build-dos", "--store", store, "-q", "--sigma", "0.05"])
    assert res.exit_code == 1 and "already holds DOS windows" in _text(res)
    res = runner.invoke(app, ["build-dos", "--store", str(tmp_path / "nothing"), "-q"])
    assert res.exit_code == 1 and "run chgdata ingest first" in _text(res)

    png = tmp_path / "fe.png"
    res = runner.invoke(app, ["plot", "dos", "--store", store, "--material", "Fe_mp", "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert "stored window" in _text(res)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    res = runner.invoke(app, ["plot", "dos", "--store", store, "--material", "nope", "--out", str(png)])
    assert res.exit_code == 1 and "nope" in _text(res)


def test_plot_before_build(vasp_store, tmp_path):
    png = tmp_path / "si.png"
    res = CliRunner().invoke(app, ["plot", "dos", "--store", vasp_store, "-m", "Si_static", "-o", str(png),
                                   "--sigma", "0.2"])
    assert res.exit_code == 0, res.output
    assert "computed now" in _text(res) and png.stat().st_size > 20_000


def test_ingest_rerun_keeps_dos_arrays(built, tmp_path):
    """`chgdata ingest` (a fresh process) sweeps orphans: the build-dos partitions must count as referenced."""
    store = _copy(built["vasp"][0], tmp_path, "rerun")
    before = sorted(os.listdir(os.path.join(store, C.ARRAYS_DIR, DOS_ABS)))
    exe = os.path.join(os.path.dirname(sys.executable), "chgdata")
    res = subprocess.run([exe, "ingest", "--from-dir", str(VASP), "--store", store, "-q", "-w", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(os.path.join(store, C.ARRAYS_DIR, DOS_ABS))) == before
    assert os.path.isdir(os.path.join(store, C.ARRAYS_DIR, DOS_NORM))
    ids, values, _ = open_dataset(store).dos_windows()
    assert len(ids) == 9 and np.isfinite(values).all()
