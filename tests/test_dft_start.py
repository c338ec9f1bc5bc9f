"""GPAW from a given density (real runs on the shared Si, seconds each): the density is really used."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gpaw", reason="GPAW: pip install -e '.[dft]' (README, set-up)")
pytest.importorskip("torch")

from pymatgen.core import Structure  # noqa: E402

from chgdata.dft.runs import band_errors, density_of, nscf, scf  # noqa: E402
from tests.conftest import GPAW, need_shared  # noqa: E402


@pytest.fixture(scope="module")
def si():
    need_shared()
    from chgdata.models.checkpoint import load
    from chgdata.models.dft import starts_for

    structure = Structure.from_dict(json.loads((GPAW / "gpaw-0001" / "meta.json").read_text())["structure"])
    model, ckpt = load(None)
    starts = starts_for(structure, model, ckpt)
    return starts, scf(starts.atoms)


def test_converged_state_reaches_the_floor_and_its_nscf_reproduces_the_scf(si):
    starts, ref = si
    rho, D = density_of(ref)
    again = scf(starts.atoms, rho_sR=rho, D_asii=D, start="converged")
    assert again.iterations < ref.iterations
    assert again.energy_eV == pytest.approx(ref.energy_eV, abs=1e-4)
    exact = band_errors(nscf(starts.atoms, rho, D), ref)
    assert abs(exact["gap_error_eV"]) < 1e-3 and exact["band_mae_eV"] < 1e-3
    # the NSCF uses its density: SAED's gives other bands
    saed = band_errors(nscf(starts.atoms, starts.saed), ref)
    assert abs(saed["gap_error_eV"]) > 0.02 and saed["band_mae_eV"] > 0.02


def test_nscf_relaxes_atomic_paw_matrices_to_the_scf_bands(si):
    """From the exact density but GPAW's atomic D_asii: the relaxed NSCF reproduces the SCF bands, the unrelaxed
    one does not (the atomic D_asii put Si's gap off by ~18 meV)."""
    starts, ref = si
    rho, _ = density_of(ref)
    relaxed = band_errors(nscf(starts.atoms, rho, relax_paw=True), ref)
    assert abs(relaxed["gap_error_eV"]) < 2e-3 and relaxed["band_mae_eV"] < 2e-3
    atomic = band_errors(nscf(starts.atoms, rho), ref)
    assert abs(atomic["gap_error_eV"]) > 8e-3 and atomic["band_mae_eV"] > 5e-3


def test_model_density_saves_iterations_on_si(si):
    starts, ref = si
    assert not starts.spin and starts.predicted.shape == (1, 24, 24, 24)
    assert starts.predicted.mean() * starts.atoms.get_volume() == pytest.approx(8.0, abs=1e-3)
    predicted = scf(starts.atoms, rho_sR=starts.predicted, start="predicted")
    assert predicted.iterations < ref.iterations
    assert predicted.energy_eV == pytest.approx(ref.energy_eV, abs=1e-3)


def test_wrong_grid_is_refused(si):
    starts, _ = si
    with pytest.raises(ValueError, match="GPAW needs"):
        scf(starts.atoms, rho_sR=starts.predicted[:, :20], start="predicted")


def test_cli_nscf_writes_a_dos_that_counts_the_electrons(tmp_path):
    need_shared()
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.electronic_structure.dos import Dos

    res = subprocess.run([sys.executable, "-m", "chgdata", "dft", str(GPAW / "gpaw-0001" / "CHGCAR.gz"), "--nscf",
                          "--out", str(tmp_path), "--quiet"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "gpaw-0001"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["kind"] == "nscf" and summary["start"] == "predicted" and "not variational" in summary["energy_note"]
    assert summary["paw"] == "atomic"  # the default: GPAW's atomic D_asii
    dos = Dos.from_dict(json.loads((folder / "dos.json").read_text()))
    e = np.asarray(dos.energies)
    occ = e <= dos.efermi
    assert np.trapezoid(np.asarray(dos.densities[Spin.up])[occ], e[occ]) == pytest.approx(8.0, abs=0.2)
    assert {p.name for p in folder.iterdir()} == {"summary.json", "dos.json", "dos.csv", "dos.png", "CHGCAR",
                                                 "calc.gpw"}


def test_cli_refuses_nscf_without_a_density(tmp_path):
    need_shared()
    res = subprocess.run([sys.executable, "-m", "chgdata", "dft", str(GPAW / "gpaw-0001" / "CHGCAR.gz"), "--nscf",
                          "--start", "default", "--out", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1 and "needs a density" in res.stderr and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())


def test_cli_refuses_an_unknown_paw_choice(tmp_path):
    need_shared()
    res = subprocess.run([sys.executable, "-m", "chgdata", "dft", str(GPAW / "gpaw-0001" / "CHGCAR.gz"), "--nscf",
                          "--paw", "converged", "--out", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1 and "--paw must be one of atomic, relaxed" in res.stderr
    assert not any(tmp_path.iterdir())


def test_predict_dos_by_nscf_is_labelled_and_written_apart(tmp_path):
    need_shared()
    res = subprocess.run([sys.executable, "-m", "chgdata", "predict", str(GPAW / "gpaw-0061" / "CHGCAR.gz"),
                          "--dos-only", "--dos-method", "nscf", "--out", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "GPAW NSCF bands of the predicted density" in res.stdout
    summary = json.loads((tmp_path / "nscf" / "gpaw-0061" / "summary.json").read_text())
    assert summary["kind"] == "nscf" and summary["gap_eV"] > 4.0  # NaCl: an insulator, as DFT says (5.0 eV)
    bad = subprocess.run([sys.executable, "-m", "chgdata", "predict", "x", "--dos-only", "--dos-method", "magic",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "--dos-method" in bad.stderr
