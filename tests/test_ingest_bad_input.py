"""Bad input: each kind is a clear one-line reason in the failures table; the good materials still commit."""

from __future__ import annotations

import gzip
import shutil

import pytest
from chgdata.pipelines.ingest import run_ingest

from chgdata import contract as C
from chgdata import open_dataset
from chgdata.sources.records import SourceError
from tests.conftest import GPAW, need_shared

GOOD = "gpaw-0001"


def _chgcar_text(folder=GOOD) -> str:
    with gzip.open(GPAW / folder / "CHGCAR.gz", "rt") as fh:
        return fh.read()


def _grid_line_index(lines):
    natoms = sum(int(x) for x in lines[6].split())
    return 8 + natoms + 1  # comment, scale, 3 lattice, species, counts, Direct, atoms, blank → grid line


def _make(tmp_path, name, text=None, raw=None):
    d = tmp_path / "calcs" / name
    d.mkdir(parents=True)
    if raw is not None:
        (d / "CHGCAR.gz").write_bytes(raw)
    else:
        (d / "CHGCAR").write_text(text)
    return d


def _cases(tmp_path):
    text = _chgcar_text()
    lines = text.splitlines(keepends=True)
    g = _grid_line_index(lines)
    nan = lines[:g + 1] + [lines[g + 1].replace(lines[g + 1].split()[0], "NaN", 1)] + lines[g + 2:]
    inf = lines[:g + 1] + [lines[g + 1].replace(lines[g + 1].split()[1], "inf", 1)] + lines[g + 2:]
    words = lines[:g + 1] + [lines[g + 1].replace(lines[g + 1].split()[0], "abc", 1)] + lines[g + 2:]
    dims = lines[g].split()
    wrong = lines[:g] + [f" {int(dims[0]) + 1} {dims[1]} {dims[2]}\n"] + lines[g + 1:]
    huge = lines[:g] + [" 100000 100000 100000\n"] + lines[g + 1:]
    flat = lines[:2] + ["0 0 0\n", "0 0 0\n", "0 0 0\n"] + lines[5:]
    zero = lines[:6] + ["0\n"] + lines[7:]
    raw = gzip.compress(text.encode())
    return {
        "truncated": dict(text="".join(lines[: g + 1 + (len(lines) - g) // 2])),
        "nan": dict(text="".join(nan)),
        "inf": dict(text="".join(inf)),
        "nonnumeric": dict(text="".join(words)),
        "wronggrid": dict(text="".join(wrong)),
        "hugegrid": dict(text="".join(huge)),
        "degenerate": dict(text="".join(flat)),
        "zeroatoms": dict(text="".join(zero)),
        "emptyfile": dict(text=""),
        "gzipcorrupt": dict(raw=raw[: len(raw) // 2] + b"\x00" * 64 + raw[len(raw) // 2 + 64:]),
    }


EXPECT = {
    "truncated": "truncated file or wrong grid count",
    "nan": "non-finite",
    "inf": "non-finite",
    "nonnumeric": "non-numeric token 'abc'",
    "wronggrid": "truncated file or wrong grid count",
    "hugegrid": "refused before allocating",
    "degenerate": "degenerate lattice",
    "zeroatoms": "declares 0 atoms",
    "emptyfile": "unreadable CHGCAR header",
    "gzipcorrupt": "",
}


def test_bad_chgcars_fail_clearly_and_good_ones_commit(tmp_path):
    need_shared()
    for name, kw in _cases(tmp_path).items():
        _make(tmp_path, name, **kw)
    for good in (GOOD, "gpaw-0002"):
        shutil.copytree(GPAW / good, tmp_path / "calcs" / good)
    report = run_ingest(str(tmp_path / "s"), from_dir=str(tmp_path / "calcs"), workers=1, processes=False,
                        progress=False)
    assert sorted(report.committed) == [GOOD, "gpaw-0002"]
    assert set(report.failed) == set(EXPECT)
    for name, phrase in EXPECT.items():
        why = report.failed[name]
        assert phrase in why, (name, why)
        assert "\n" not in why and len(why) < 600
    failures = {f["material_id"]: f["reason"] for f in open_dataset(tmp_path / "s").failures.to_pylist()}
    assert set(failures) == set(EXPECT)
    ds = open_dataset(tmp_path / "s")
    assert ds.material_ids and all(r[C.COL_RHO_SHA] for r in ds.index.to_pylist())


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no calculation folders"):
        run_ingest(str(tmp_path / "s"), from_dir=str(tmp_path / "empty"), workers=1, processes=False,
                   progress=False)


def test_bad_folder_names_and_missing_dos_structure(tmp_path):
    need_shared()
    bad = tmp_path / "calcs" / "bad name!"
    shutil.copytree(GPAW / GOOD, bad)
    shutil.copytree(GPAW / "gpaw-0002", tmp_path / "calcs" / "gpaw-0002")
    report = run_ingest(str(tmp_path / "s"), from_dir=str(tmp_path / "calcs"), workers=1, processes=False,
                        progress=False)
    assert report.committed == ["gpaw-0002"]
    assert "unusable material id" in report.failed["bad name!"]


def test_cli_ingest_and_info(tmp_path):
    need_shared()
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    calcs = tmp_path / "calcs"
    shutil.copytree(GPAW / GOOD, calcs / GOOD)
    _make(tmp_path, "truncated", text=_chgcar_text()[:2000])
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "--from-dir", str(calcs), "--store", str(tmp_path / "s"), "-q",
                              "--workers", "1"])
    assert res.exit_code == 3, res.output  # finished, the good folder committed, one material failed
    assert "committed 1" in res.output and "failed 1" in res.output
    assert open_dataset(tmp_path / "s").material_ids == [GOOD]
    res = runner.invoke(app, ["info", "--store", str(tmp_path / "s")])
    assert res.exit_code == 0 and "truncated" in res.output and "24x24x24" in res.output
    res = runner.invoke(app, ["info", "--store", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no dataset at" in res.output
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "ingest" in res.output and "info" in res.output


def test_one_absurd_finite_value_fails_its_material_only(tmp_path):
    """A CHGCAR holding one value 0.5E+39 (finite) was ingested as ok and broke every later build-delta; now its
    material fails naming the value and the grid point, and the healthy one is committed."""
    import gzip
    import shutil

    from tests.conftest import GPAW, need_shared

    need_shared()
    from chgdata.pipelines.ingest import run_ingest

    src = tmp_path / "calcs"
    for fid in ("gpaw-0001", "gpaw-0002"):
        shutil.copytree(GPAW / fid, src / fid)
    path = src / "gpaw-0002" / "CHGCAR.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split() == ["24", "24", "24"] or
                 (len(ln.split()) == 3 and all(t.isdigit() for t in ln.split()) and i > 7)) + 1
    vals = lines[start].split()
    vals[2] = "0.5E+39"
    lines[start] = " ".join(vals)
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    report = run_ingest(str(tmp_path / "store"), from_dir=str(src), workers=1, progress=False)
    assert sorted(report.committed) == ["gpaw-0001"]
    assert "not a physical density" in report.failed["gpaw-0002"] and "e/Å³" in report.failed["gpaw-0002"]
