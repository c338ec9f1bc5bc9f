"""Issue 19: stores and predictions that xarray/ASE/pymatgen/VASP read, honest provenance, the Python API.

One small store (2 GPAW folders, NaCl and Fe from ../shared/data/vasp, a task-suffixed Si and an xz-compressed Li
CHGCAR) is built once for the module; predictions use the shipped model on small grids.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil

import numpy as np
import pytest

from chgdata import contract as C
from tests.conftest import GPAW, VASP, need_shared

GPAW_IDS = ["gpaw-0001", "gpaw-0002"]


def _link(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    need_shared()
    import chgdata

    root = tmp_path_factory.mktemp("eco")
    src = root / "src"
    for mid in GPAW_IDS:
        _link(GPAW / mid, src / mid)
    for mid in ("NaCl", "Fe_bcc_spin"):
        _link(VASP / mid, src / mid)
    (src / "Si_relax").mkdir()
    shutil.copy(VASP / "Si_static" / "CHGCAR.gz", src / "Si_relax" / "CHGCAR.relax2.gz")
    shutil.copy(VASP / "Si_static" / "vasprun.xml.gz", src / "Si_relax" / "vasprun.xml.relax2.gz")
    (src / "Li_xz").mkdir()
    text = gzip.decompress((VASP / "Li_bcc_nospin" / "CHGCAR.gz").read_bytes())
    (src / "Li_xz" / "CHGCAR.xz").write_bytes(lzma.compress(text))
    (src / "Li_bz2").mkdir()
    (src / "Li_bz2" / "CHGCAR.bz2").write_bytes(bz2.compress(text))
    url = str(root / "store")
    report = chgdata.ingest(url, from_dir=src, workers=1, processes=False)
    assert not report.failed, report.failed
    chgdata.build_delta(url, workers=1, processes=False)
    chgdata.build_dos(url, workers=1, processes=False)
    return url


# ---------------------------------------------------------------------------------------------- 1. xarray


def test_store_arrays_open_in_xarray_with_names_and_units(store):
    import xarray as xr
    import zarr

    ds = __import__("chgdata").open_dataset(store)
    row = ds.row("NaCl")
    arr = ds.array(C.RHO, row[C.COL_PARTITION])
    assert arr.metadata.dimension_names == (f"point_{row[C.COL_PARTITION]}",)
    assert arr.attrs["units"] == "e/Å^3" and arr.attrs["long_name"] and "C order" in arr.attrs["layout"]
    with open(ds.loc.path(C.ARRAYS_DIR, "zarr.json")) as fh:
        root = json.load(fh)
    assert root.get("consolidated_metadata"), "arrays/ has no consolidated metadata"
    assert zarr.open_consolidated(ds.loc.path(C.ARRAYS_DIR)) is not None
    rho = xr.open_zarr(ds.loc.path(C.ARRAYS_DIR), group=C.RHO)
    assert row[C.COL_PARTITION] in rho and rho[row[C.COL_PARTITION]].attrs["units"] == "e/Å^3"
    dos = xr.open_zarr(ds.loc.path(C.ARRAYS_DIR), group="dos_abs")
    first = next(iter(dos.data_vars.values()))
    assert first.dims[1:] == ("spin", "energy") and first.attrs["units"] == "states/eV/atom"


def test_to_xarray_named_dims_units_lattice_and_dos(store):
    import chgdata

    ds = chgdata.open_dataset(store)
    x = ds.to_xarray("gpaw-0001")
    assert x["rho"].dims == ("x", "y", "z") and x["rho"].attrs["units"] == "e/Å^3"
    np.testing.assert_array_equal(x["rho"].values, ds.density("gpaw-0001").rho)
    np.testing.assert_allclose(x["lattice"].values, np.reshape(ds.row("gpaw-0001")[C.COL_LATTICE], (3, 3)))
    assert x["lattice"].attrs["units"] == "Å" and {"saed", "delta"} <= set(x.data_vars)
    assert x["dos"].dims == ("spin", "energy") and x["energy"].attrs["units"] == "eV"
    assert x.attrs["dft_code"] == "gpaw"
    fe = ds.to_xarray("Fe_bcc_spin")
    assert fe["mag"].dims == ("x", "y", "z")
    assert float(fe["rho"].mean()) * fe.attrs["volume_A3"] == pytest.approx(ds.row("Fe_bcc_spin")[C.COL_NELECT])
    windows = ds.dos_xarray()
    assert windows.dims == ("material", "spin", "energy") and list(windows.spin.values) == ["up", "down"]
    assert set(GPAW_IDS) <= set(windows.material.values)
    assert "materials" in repr(ds) and ds.summary()["dft_codes"] == ["gpaw", "vasp"]


# ------------------------------------------------------------------------------------------- 2. provenance


def test_gpaw_and_vasp_provenance_and_settings(store):
    import chgdata

    ds = chgdata.open_dataset(store)
    g = ds.row("gpaw-0001")
    assert g[C.COL_SOURCE] == "gpaw" and g[C.COL_DFT_CODE] == "gpaw"
    settings = json.loads(g[C.COL_DFT_SETTINGS])
    assert settings["xc"] == "PBE" and settings["ecut_eV"] == 300.0 and settings["kpts_mp"]
    si = ds.row("Si_relax")
    assert si[C.COL_SOURCE] == "vasp" and si[C.COL_FILES][0].endswith("CHGCAR.relax2.gz")
    vs = json.loads(si[C.COL_DFT_SETTINGS])
    assert vs["incar"]["ENCUT"] == 520.0 and vs["potcars"] == ["PAW_PBE Si 05Jan2001"]
    assert vs["kpoints"]["divisions"] == [8, 8, 8]
    card = ds.card
    assert card["dft"]["codes"] == ["gpaw", "vasp"] and card["dft"]["settings"]["gpaw"]["xc"] == "PBE"
    assert "superposition of atomic" not in card["saed"]["description"]
    text = open(ds.loc.path(C.CARD), encoding="utf-8").read()
    assert "e/Å^3" in text and "\\xC5" not in text


def test_compressed_chgcars_found_and_equal(store):
    import chgdata

    ds = chgdata.open_dataset(store)
    a, b = ds.density("Li_xz").rho, ds.density("Li_bz2").rho
    np.testing.assert_array_equal(a, b)
    from pymatgen.io.vasp import Chgcar

    original = Chgcar.from_file(str(VASP / "Li_bcc_nospin" / "CHGCAR.gz"))
    np.testing.assert_allclose(a * original.structure.volume, original.data["total"], rtol=1e-6, atol=1e-6)


def test_export_chgcar_keeps_augmentation(store, tmp_path):
    from pymatgen.io.vasp import Chgcar

    from chgdata.export import export_materials

    (path,) = export_materials(store, ["NaCl"], "chgcar", tmp_path)
    got, want = Chgcar.from_file(str(path)), Chgcar.from_file(str(VASP / "NaCl" / "CHGCAR.gz"))
    assert sorted(got.data_aug["total"]) == sorted(want.data_aug["total"]) == [1, 2]
    for atom, values in want.data_aug["total"].items():
        np.testing.assert_allclose(got.data_aug["total"][atom], values, rtol=1e-6)


# --------------------------------------------------------------------------------- 3-5. predict and the API


def _nacl():
    from pymatgen.io.vasp import Chgcar

    return Chgcar.from_file(str(VASP / "NaCl" / "CHGCAR.gz")).structure


def test_api_predict_returns_chgcar_that_pymatgen_round_trips(tmp_path):
    need_shared()
    from ase import Atoms  # noqa: F401 - the ASE path is exercised below
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Chgcar

    import chgdata

    chg = chgdata.predict(_nacl(), grid=(12, 12, 12))
    assert isinstance(chg, Chgcar) and chg.data["total"].shape == (12, 12, 12) and "diff" not in chg.data
    chg.write_file(str(tmp_path / "CHGCAR"))
    back = Chgcar.from_file(str(tmp_path / "CHGCAR"))
    assert back.data["total"].mean() == pytest.approx(14.0, abs=1e-3)  # GPAW valence: Na 7 + Cl 7
    assert "GPAW pseudo-valence" in open(tmp_path / "CHGCAR").readline()
    from_atoms = chgdata.predict(AseAtomsAdaptor.get_atoms(_nacl()), grid=(12, 12, 12))
    np.testing.assert_allclose(from_atoms.data["total"], chg.data["total"], rtol=1e-5, atol=1e-6)
    assert len(chgdata.predict(_nacl(), grid=(12, 12, 12), spin="on").data["diff"]) == 12
    fe = Chgcar.from_file(str(VASP / "Fe_bcc_spin" / "CHGCAR.gz")).structure
    assert "diff" in chgdata.predict(fe, grid=(10, 10, 10)).data  # --spin auto: bcc Fe is magnetic (~2.3 μB)
    assert "diff" not in chgdata.predict(fe, grid=(10, 10, 10), spin="off").data


def test_cli_predict_zarr_cube_aug_and_convention(tmp_path):
    need_shared()
    import xarray as xr
    from ase.io.cube import read_cube_data
    from ase.units import Bohr
    from chgdata.cli.main import app
    from pymatgen.io.vasp import Chgcar
    from typer.testing import CliRunner

    src = VASP / "NaCl" / "CHGCAR.gz"
    res = CliRunner().invoke(app, ["predict", str(src), "--grid", "16,16,16", "--format", "chgcar,zarr,cube,xsf",
                                   "--aug-from", str(src), "--out", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "density convention: GPAW pseudo-valence" in out
    assert "holds 8.00 e but this model's density of that structure integrates to 14 e" in out
    folder = tmp_path / "NaCl"
    chg = Chgcar.from_file(str(folder / "CHGCAR"))
    assert sorted(chg.data_aug["total"]) == [1, 2] and "diff" not in chg.data  # NaCl: not magnetic
    assert "augmentation occupancies" in (folder / "CHGCAR").read_text()
    d = xr.open_zarr(folder / "density.zarr")
    assert d["rho"].dims == ("x", "y", "z") and d["rho"].attrs["units"] == "e/Å^3"
    np.testing.assert_allclose(d["lattice"].values, chg.structure.lattice.matrix, atol=1e-5)  # CHGCAR: 6 decimals
    np.testing.assert_allclose(d["rho"].values * chg.structure.volume, chg.data["total"], rtol=1e-5, atol=1e-5)
    data, atoms = read_cube_data(str(folder / "density.cube"))
    assert data.mean() * atoms.get_volume() / Bohr**3 == pytest.approx(chg.data["total"].mean(), rel=1e-5)
    from ase.io.xsf import read_xsf

    with open(folder / "density.xsf") as fh:
        xsf = read_xsf(fh, read_data=True)
    assert xsf[0].shape[:3] in ((16, 16, 16), (17, 17, 17))


def test_aug_from_other_atoms_is_one_clear_line(tmp_path):
    need_shared()
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["predict", str(VASP / "NaCl" / "CHGCAR.gz"), "--grid", "8,8,8", "--aug-from",
                                   str(VASP / "Fe_bcc_spin" / "CHGCAR.gz"), "--out", str(tmp_path), "-q"])
    assert res.exit_code == 1
    assert "--aug-from" in res.output and "are not those of the predicted structure" in res.output
    assert "Traceback" not in res.output


def test_card_and_catalog_entry_follow_schemas(store):
    import jsonschema
    import yaml

    from chgdata import catalog as cat

    card = yaml.safe_load(open(f"{store}/{C.CARD}", encoding="utf-8"))
    jsonschema.validate(card, json.loads(cat.CARD_SCHEMA.read_text()))
    schema = json.loads(cat.CATALOG_SCHEMA.read_text())
    creators = schema["$defs"]["entry"]["properties"]["creators"]
    jsonschema.validate([{"name": "A. Person", "orcid": "0000-0002-1825-0097"}], creators)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"affiliation": "no name"}], creators)
    assert {"license", "citation"} <= set(schema["$defs"]["entry"]["properties"])


def test_raw_dos_and_density_grid_to_pymatgen(store):
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.io.vasp import Chgcar

    import chgdata

    ds = chgdata.open_dataset(store)
    raw = ds.raw_dos("gpaw-0001")
    dos = raw.to_pymatgen()
    np.testing.assert_array_equal(dos.energies, raw.energies)
    assert dos.efermi == raw.efermi and set(dos.densities) == {Spin.up}
    assert raw.to_pymatgen(ds.structure("gpaw-0001")).structure.composition.reduced_formula == "Si"
    chg = ds.density("Fe_bcc_spin").to_chgcar(ds.structure("Fe_bcc_spin"), ds.paw_augmentation("Fe_bcc_spin"))
    want = Chgcar.from_file(str(VASP / "Fe_bcc_spin" / "CHGCAR.gz"))
    np.testing.assert_allclose(chg.data["diff"], want.data["diff"], rtol=1e-5, atol=1e-4)
    assert sorted(chg.data_aug) == ["diff", "total"]


def test_api_verify_and_evaluate_mirror_the_cli(store):
    import chgdata.app

    import chgdata

    assert chgdata.verify(store).ok and chgdata.app.verify(store).ok  # the module is callable too
    res = chgdata.evaluate(None, store, materials=["gpaw-0001"])  # the shipped model, as the CLI's default
    (row,) = res["per_material"]
    assert row["material_id"] == "gpaw-0001" and 0 < row["nmae"] < 100
    with pytest.raises(AttributeError):
        chgdata.no_such_command  # noqa: B018
