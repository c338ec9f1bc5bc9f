"""chgdata export: CHGCAR round trip through pymatgen, ChargE3Net-style npy, hdf5 without h5py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import chgdata
from chgdata.export import ExportError, export_materials


def _pick(ds):
    spin = [m for m in ds.material_ids if ds.row(m)["spin_polarized"]][0]
    plain = [m for m in ds.material_ids if not ds.row(m)["spin_polarized"]][0]
    return spin, plain


def test_chgcar_round_trip(gpaw_store, tmp_path):
    from chgdata.cli.main import app
    from pymatgen.io.vasp import Chgcar
    from typer.testing import CliRunner

    ds = chgdata.open_dataset(gpaw_store)
    spin, plain = _pick(ds)
    res = CliRunner().invoke(app, ["export", "--store", gpaw_store, "--materials", f"{spin},{plain}",
                                   "--format", "chgcar", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for mid in (spin, plain):
        chg = Chgcar.from_file(str(tmp_path / mid / "CHGCAR"))
        grid = ds.density(mid)
        volume = ds.structure(mid).volume
        assert chg.data["total"].shape == grid.rho.shape
        np.testing.assert_allclose(chg.data["total"], grid.rho.astype(np.float64) * volume, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(chg.structure.lattice.matrix, grid.lattice, atol=1e-6)
        assert [s.symbol for s in chg.structure.species] == ds.row(mid)["species_at_sites"]
        if grid.mag is None:
            assert "diff" not in chg.data
        else:
            np.testing.assert_allclose(chg.data["diff"], grid.mag.astype(np.float64) * volume, rtol=1e-9,
                                       atol=1e-12)


def test_npy_charge3net_layout(gpaw_store, tmp_path):
    from pymatgen.io.vasp import Poscar

    ds = chgdata.open_dataset(gpaw_store)
    spin, plain = _pick(ds)
    export_materials(gpaw_store, [spin, plain], "npy", tmp_path)
    for mid in (spin, plain):
        arr = np.load(tmp_path / f"{mid}.npy")
        np.testing.assert_array_equal(arr, ds.density(mid).rho)
        s = Poscar.from_file(str(tmp_path / f"{mid}.vasp")).structure
        assert len(s) == ds.row(mid)["nsites"]
    assert (tmp_path / "filelist.txt").read_text().split() == [spin, plain]
    out = tmp_path / "spin"
    export_materials(gpaw_store, [spin, plain], "npy", out, spin=True)
    both = np.load(out / f"{spin}.npy")
    assert both.shape == (*ds.density(spin).rho.shape, 2)
    np.testing.assert_array_equal(both[..., 1], ds.density(spin).mag)
    assert not np.load(out / f"{plain}.npy")[..., 1].any()


def test_hdf5_needs_h5py(gpaw_store, tmp_path):
    mid = chgdata.open_dataset(gpaw_store).material_ids[0]
    if importlib.util.find_spec("h5py") is None:
        with pytest.raises(ExportError, match="needs h5py"):
            export_materials(gpaw_store, [mid], "hdf5", tmp_path)
        from chgdata.cli.main import app
        from typer.testing import CliRunner

        res = CliRunner().invoke(app, ["export", "--store", gpaw_store, "--materials", mid, "--format", "hdf5",
                                       "--out", str(tmp_path)])
        assert res.exit_code == 1 and "needs h5py" in res.output
    else:
        import h5py

        path = export_materials(gpaw_store, [mid], "hdf5", tmp_path)[0]
        with h5py.File(path) as fh:
            np.testing.assert_array_equal(fh[mid]["rho"][...], chgdata.open_dataset(gpaw_store).density(mid).rho)


def test_unknown_material_and_format(gpaw_store, tmp_path):
    with pytest.raises(KeyError, match="not in"):
        export_materials(gpaw_store, ["nope-1"], "npy", tmp_path)
    with pytest.raises(ExportError, match="unknown format"):
        export_materials(gpaw_store, None, "xyz", tmp_path)
