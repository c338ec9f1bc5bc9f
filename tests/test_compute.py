"""``chgdata compute`` with real GPAW: the shared crystals' density recomputed, resume, refusals and failures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gpaw", reason="GPAW: pip install -e '.[dft]' (README, set-up)")

from chgdata.pipelines.compute import ComputeLocked, _lock, run_compute  # noqa: E402
from pymatgen.core import Structure  # noqa: E402
from pymatgen.io.vasp import Chgcar  # noqa: E402

from chgdata.candidates import Candidate, rocksalt  # noqa: E402
from tests.conftest import GPAW, need_shared  # noqa: E402


def shared_si() -> Candidate:
    meta = json.loads((GPAW / "gpaw-0001" / "meta.json").read_text())
    return Candidate("Si-shared-0001", meta["prototype"], meta["variant"], Structure.from_dict(meta["structure"]),
                     (0.0, 0.0))


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    need_shared()
    out = tmp_path_factory.mktemp("compute")
    report = run_compute([shared_si()], out, workers=1, progress=False)
    return out, report


def test_recomputes_a_shared_crystal(computed):
    """Same settings, same density: the shared Si (gpaw-0001) to 10⁻⁶ of its maximum, the same energy."""
    out, report = computed
    assert report.finished == ["Si-shared-0001"] and not report.failed
    folder = out / "Si-shared-0001"
    mine, theirs = (json.loads((d / "meta.json").read_text()) for d in (folder, GPAW / "gpaw-0001"))
    assert mine["energy_eV"] == pytest.approx(theirs["energy_eV"], abs=1e-4)
    assert mine["grid"] == theirs["grid"] and mine["kpts_mp"] == theirs["kpts_mp"]
    assert abs(mine["n_rho_error"]) < 1e-4 and mine["scf_iterations"] > 0
    a, b = (Chgcar.from_file(str(d / "CHGCAR.gz")).data["total"] for d in (folder, GPAW / "gpaw-0001"))
    assert np.abs(a - b).max() < 1e-6 * np.abs(b).max()  # deterministic: bit-identical here
    D = np.load(folder / "paw.npz")
    assert sorted(D) == ["D_0", "D_1"] and D["D_0"].shape[0] == 1
    assert np.allclose(D["D_0"], D["D_0"].transpose(0, 2, 1))  # density matrices are symmetric
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["id"] for r in rows] == ["Si-shared-0001"]


def test_rerun_computes_nothing_and_ingest_reads_the_folder(computed, tmp_path):
    out, _ = computed
    again = run_compute([shared_si()], out, workers=1, progress=False)
    assert again.existing == ["Si-shared-0001"] and not again.finished
    from chgdata.pipelines.ingest import run_ingest

    report = run_ingest(str(tmp_path / "store"), from_dir=str(out), workers=1, progress=False)
    assert report.committed and not report.failed
    from chgdata.store import open_dataset

    stored = open_dataset(str(tmp_path / "store")).paw_density_matrices("Si-shared-0001")
    D = np.load(out / "Si-shared-0001" / "paw.npz")
    assert len(stored) == 2 and all(np.array_equal(stored[a], D[f"D_{a}"]) for a in range(2))


@pytest.mark.parametrize("damage", ["nan", "truncated", "missing-atom"])
def test_a_damaged_paw_file_fails_its_material_naming_the_file(computed, tmp_path, damage):
    import shutil

    from chgdata.pipelines.ingest import run_ingest

    out, _ = computed
    folder = tmp_path / "calcs" / "Si-damaged"
    shutil.copytree(out / "Si-shared-0001", folder)
    paw = folder / "paw.npz"
    D = dict(np.load(paw))
    if damage == "nan":
        D["D_1"][0, 0, 0] = np.nan
        np.savez(paw, **D)
    elif damage == "truncated":
        paw.write_bytes(paw.read_bytes()[:200])
    else:
        np.savez(paw, D_0=D["D_0"])
    report = run_ingest(str(tmp_path / "store"), from_dir=str(tmp_path / "calcs"), workers=1, progress=False)
    assert not report.committed and "paw.npz" in report.failed["Si-damaged"]


def test_refusals_and_failures_are_recorded_without_half_folders(tmp_path):
    kf = Candidate("KF-rocksalt-eq", "rocksalt", "eq", rocksalt("K", "F", 1), (0.0, 0.0))
    s = rocksalt("Na", "Br", 1)
    overlap = Candidate("NaBr-overlap", "rocksalt", "eq", Structure(s.lattice, ["Na", "Br"], [[0, 0, 0], [0, 0, .01]]),
                        (0.0, 0.0))
    og = Candidate("NaOg", "rocksalt", "eq", Structure(s.lattice, ["Na", "Og"], [[0, 0, 0], [.5, .5, .5]]), (0, 0))
    big = Candidate("NaBr-big", "rocksalt", "eq", s * (3, 3, 2), (0.0,) * 36)
    slow = Candidate("NaBr-slow", "rocksalt", "eq", s, (0.0, 0.0))
    report = run_compute([kf, overlap, og, big, slow], tmp_path, workers=1, timeout_s=2, progress=False)
    assert "reserved" in report.refused["KF-rocksalt-eq"]
    assert "overlapping" in report.refused["NaBr-overlap"]
    assert "no GPAW" in report.refused["NaOg"] and "Og" in report.refused["NaOg"]
    assert "--max-atoms" in report.refused["NaBr-big"]
    assert "timeout" in report.failed["NaBr-slow"]
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "NaBr-slow").exists()
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "failures.csv"))}
    assert "timeout" in rows["NaBr-slow"]["reason"]
    again = run_compute([slow], tmp_path, workers=1, timeout_s=2, progress=False)  # not retried by default
    assert "earlier run" in again.failed["NaBr-slow"] and not again.finished


def test_a_second_writer_is_refused(tmp_path):
    held = _lock(tmp_path)
    try:
        with pytest.raises(ComputeLocked, match="another chgdata compute"):
            run_compute([shared_si()], tmp_path, workers=1, progress=False)
    finally:
        held.close()


def test_cli_lists_generated_candidates_and_refuses_no_input():
    res = subprocess.run([sys.executable, "-m", "chgdata", "compute", "--generate", "--list", "--limit", "3"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 3 and "-eq\t" in res.stdout
    res = subprocess.run([sys.executable, "-m", "chgdata", "compute"], capture_output=True, text=True)
    assert res.returncode == 2 and "--generate" in res.stderr
