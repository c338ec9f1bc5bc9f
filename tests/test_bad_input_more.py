"""More bad input (the rest of the catalogue is in test_ingest_bad_input.py and test_ingest_mp.py; RELIABILITY.md
lists all kinds): each is one clear line in the failures table, and the good materials still commit."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest
from chgdata.pipelines.ingest import run_ingest

from chgdata import contract as C
from chgdata import open_dataset
from tests.conftest import GPAW, need_shared

GOOD = ("gpaw-0001", "gpaw-0002")


def _chgcar_lines(folder="gpaw-0001") -> list[str]:
    with gzip.open(GPAW / folder / "CHGCAR.gz", "rt") as fh:
        return fh.read().splitlines(keepends=True)


def _dos_dict(folder="gpaw-0001") -> dict:
    with gzip.open(GPAW / folder / "dos.json.gz", "rt") as fh:
        return json.load(fh)


def _folder(root, name, files: dict[str, str | bytes]):
    d = root / name
    d.mkdir(parents=True)
    for fname, content in files.items():
        (d / fname).write_bytes(content if isinstance(content, bytes) else content.encode())
    return d


def _poscar(folder="gpaw-0001") -> str:
    from pymatgen.io.vasp import Poscar
    from pymatgen.io.vasp.outputs import Chgcar

    return Poscar(Chgcar.from_file(str(GPAW / folder / "CHGCAR.gz")).structure).get_str()


def _flip_signs(lines: list[str]) -> str:
    """The CHGCAR with part of its grid negated (a corrupted block): ∫ρ shrinks, ∫|ρ| does not."""
    k = next(i for i, ln in enumerate(lines) if ln.split() == ["24", "24", "24"])
    n = (len(lines) - k) // 2
    body = [" ".join(f"{-float(v):.11E}" for v in ln.split()) + "\n" for ln in lines[k + 1 + n // 3:k + 1 + n]]
    return "".join(lines[:k + 1 + n // 3] + body + lines[k + 1 + n:])


#: kind → (files of the folder, phrase the one-line reason must contain)
def _cases() -> dict[str, tuple[dict, str]]:
    lines = _chgcar_lines()
    chgcar = "".join(lines)
    species = "".join(lines[:5] + ["Si Ge\n"] + lines[6:])  # two species names, one count
    dos = _dos_dict()
    nonmono = dict(dos, energies=list(dos["energies"]))
    nonmono["energies"][10], nonmono["energies"][11] = nonmono["energies"][11], nonmono["energies"][10]
    nandos = json.loads(json.dumps(dos))
    nandos["densities"]["1"][5] = float("nan")
    structure_json = json.dumps(dos["structure"])  # valid pymatgen JSON, but a Structure, not a DOS
    raw = gzip.compress(chgcar.encode())
    l28 = _chgcar_lines("gpaw-0028")  # a 35x16x18 grid on a 5.87 x 2.87 x 2.88 A cell
    k = next(i for i, ln in enumerate(l28) if ln.split() == ["35", "16", "18"])

    def dims(line):
        return "".join(l28[:k] + [line] + l28[k + 1:])
    crc = raw[: len(raw) // 2] + b"\x00" * 64 + raw[len(raw) // 2 + 64:]  # header intact, deflate data damaged
    return {
        "chgcar-gzip-damaged": ({"CHGCAR.gz": crc}, "corrupt gzip stream"),
        "species-mismatch": ({"CHGCAR": species}, "2 species names but 1 species counts"),
        "structure-only": ({"POSCAR": _poscar()}, "structure file only: no CHGCAR, AECCAR0/2 or DOS file"),
        "aeccar0-only": ({"AECCAR0": chgcar, "POSCAR": _poscar()},
                         "neither a charge density nor a DOS could be read"),
        "dos-nonmonotonic": ({"CHGCAR": chgcar, "dos.json": json.dumps(nonmono)},
                             "DOS energies are not strictly increasing"),
        "dos-nan": ({"CHGCAR": chgcar, "dos.json": json.dumps(nandos)}, "DOS densities contain NaN or inf"),
        "dos-not-a-dos": ({"CHGCAR": chgcar, "dos.json": structure_json},
                          "not a pymatgen DOS dict (no energies/densities)"),
        "dos-not-json": ({"CHGCAR": chgcar, "dos.json": "<html>502 Bad Gateway</html>"},
                         "not a readable JSON file"),
        "dos-bad-gzip": ({"CHGCAR": chgcar, "dos.json.gz": gzip.compress(b"{}" * 500)[:40] + b"\x00" * 40},
                         "not a readable JSON file"),
        "dos-only-bad-gzip": ({"dos.json.gz": gzip.compress(b"{}" * 500)[:40] + b"\x00" * 40},
                              "unreadable DOS file"),
        "chgcar-sign-flipped": ({"CHGCAR": _flip_signs(lines)}, "∫|ρ| dV is"),
        "chgcar-extra-on-last-line": ({"CHGCAR": "".join(lines[:-1]) + lines[-1].rstrip() + " 0.5\n"},
                                      "1 values after the 13824-point grid on its last line"),
        "chgcar-trailing-values": ({"CHGCAR": chgcar + " 0.1 0.2 0.3 0.4 0.5\n"},
                                   "values after the 13824-point grid (line 2778) that are neither augmentation"),
        "chgcar-dims-swapped": ({"CHGCAR": dims("   16   35   18\n")},
                                "permuted grid line? (35, 16, 18) would follow the lattice"),
        "chgcar-dims-near-equal-swapped": ({"CHGCAR": dims("   35   18   16\n")},
                                           "is the header's grid line permuted?"),
        "vasprun-broken": ({"CHGCAR": chgcar, "vasprun.xml": "<?xml version='1.0'?>\n<modeling><generator>"},
                           "unreadable vasprun"),
    }


def test_more_bad_input_fails_clearly_and_good_ones_commit(tmp_path):
    need_shared()
    calcs = tmp_path / "calcs"
    cases = _cases()
    for name, (files, _) in cases.items():
        _folder(calcs, name, files)
    # an unreadable file that even root cannot read: reading /proc/self/mem at offset 0 is an I/O error
    _folder(calcs, "io-error", {"dos.json": json.dumps(_dos_dict())})
    (calcs / "io-error" / "CHGCAR").symlink_to("/proc/self/mem")
    # two folders with the same name in different places
    shutil.copytree(GPAW / "gpaw-0003", calcs / "a" / "gpaw-0003")
    shutil.copytree(GPAW / "gpaw-0004", calcs / "b" / "gpaw-0003")
    for good in GOOD:
        shutil.copytree(GPAW / good, calcs / good)
    expect = {name: phrase for name, (_, phrase) in cases.items()}
    expect["io-error"] = "unreadable CHGCAR header (OSError"
    report = run_ingest(str(tmp_path / "s"), from_dir=str(calcs), workers=1, processes=False, progress=False)
    assert sorted(report.committed) == sorted([*GOOD, "gpaw-0003"])
    assert "duplicate material id 'gpaw-0003'" in report.failed.pop("gpaw-0003")
    assert set(report.failed) == set(expect)
    failures = {}
    for f in open_dataset(tmp_path / "s").failures.to_pylist():
        failures.setdefault(f["material_id"], f["reason"])
    for name, phrase in expect.items():
        why = failures[name]
        assert phrase in why, (name, why)
        assert "\n" not in why and len(why) <= 500, (name, why)
    ds = open_dataset(tmp_path / "s")
    assert sorted(ds.material_ids) == sorted([*GOOD, "gpaw-0003"])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: permission bits do not stop reads (the I/O-error case above covers "
                           "an unreadable file for root)")
def test_unreadable_permissions(tmp_path):
    need_shared()
    calcs = tmp_path / "calcs"
    shutil.copytree(GPAW / GOOD[0], calcs / GOOD[0])
    bad = shutil.copytree(GPAW / GOOD[1], calcs / "locked")
    os.chmod(bad / "CHGCAR.gz", 0)
    try:
        report = run_ingest(str(tmp_path / "s"), from_dir=str(calcs), workers=1, processes=False, progress=False)
    finally:
        os.chmod(bad / "CHGCAR.gz", 0o644)
    assert report.committed == [GOOD[0]]
    assert "Permission denied" in report.failed["locked"] and "\n" not in report.failed["locked"]


def test_density_scaled_by_105_is_committed_flagged_and_info_shows_it(tmp_path):
    need_shared()
    from chgdata.cli.main import app
    from pymatgen.io.vasp.outputs import Chgcar
    from typer.testing import CliRunner

    calcs = tmp_path / "calcs"
    shutil.copytree(GPAW / GOOD[0], calcs / GOOD[0])
    chg = Chgcar.from_file(str(GPAW / GOOD[1] / "CHGCAR.gz"))
    chg.data["total"] = chg.data["total"] * 1.05
    if "diff" in chg.data:
        chg.data["diff"] = chg.data["diff"] * 1.05
    (calcs / "scaled").mkdir()
    chg.write_file(str(calcs / "scaled" / "CHGCAR"))
    report = run_ingest(str(tmp_path / "s"), from_dir=str(calcs), workers=1, processes=False, progress=False)
    assert sorted(report.committed) == [GOOD[0], "scaled"] and not report.failed
    assert set(report.flagged) == {"scaled"}
    ds = open_dataset(tmp_path / "s")
    status = ds.row("scaled")[C.COL_STATUS]
    assert status.startswith("flagged: electron count") and "not an integer" in status, status
    assert ds.row(GOOD[0])[C.COL_STATUS] == "ok"
    res = CliRunner().invoke(app, ["info", "--store", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    flagged_line = next(ln for ln in res.output.splitlines() if "flagged" in ln)
    assert flagged_line.split("│")[-2].strip() == "1", flagged_line
    # the reference fit leaves it out, says why, lists it in failures, and builds Δρ for both
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.split import run_split

    run_split(str(tmp_path / "s"), fractions=(1.0, 0.0, 0.0))  # both in train: both would enter the fit
    rep = run_build_delta(str(tmp_path / "s"), workers=1, processes=False, progress=False)
    assert sorted(rep.committed) == [GOOD[0], "scaled"] and not rep.failed
    assert list(rep.excluded_from_fit) == ["scaled"] and "not an integer count" in rep.excluded_from_fit["scaled"]
    fails = [r for r in open_dataset(tmp_path / "s").failures.to_pylist() if r["stage"] == "reference-fit"]
    assert [r["material_id"] for r in fails] == ["scaled"]


def test_several_from_dir_trees_ingest_together_and_a_shared_id_is_named(tmp_path):
    """`--from-dir A --from-dir B` (the README's main job over gpaw and gpaw-more): both trees are ingested; an id
    present in both is committed once and its duplicate names both folders."""
    need_shared()
    from chgdata.cli.main import app
    from pymatgen.core import Structure
    from typer.testing import CliRunner

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(GPAW / "gpaw-0001", a / "gpaw-0001")
    shutil.copytree(GPAW / "gpaw-0002", b / "gpaw-0002")
    shutil.copytree(GPAW / "gpaw-0003", b / "gpaw-0001")
    res = CliRunner().invoke(app, ["ingest", "--from-dir", str(a), "--from-dir", str(b), "--store",
                                   str(tmp_path / "s"), "-w", "1", "-q"])
    assert res.exit_code == 3, res.output
    assert "committed 2," in res.output
    assert f"duplicate material id 'gpaw-0001': {a / 'gpaw-0001'} and {b / 'gpaw-0001'}" in res.output
    ds = open_dataset(tmp_path / "s")
    assert sorted(ds.material_ids) == ["gpaw-0001", "gpaw-0002"]
    first = json.loads((a / "gpaw-0001" / "meta.json").read_text())["structure"]
    assert ds.structure("gpaw-0001").composition == Structure.from_dict(first).composition  # the first tree's
