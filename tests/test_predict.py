"""chgdata predict with a random-weight spin Δ checkpoint carrying an embedded SAED reference (no store)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def spin_ckpt(tmp_path_factory):
    from chgdata.models.checkpoint import attach_reference
    from chgdata.models.config import ChargeDensityConfig, EncoderConfig
    from chgdata.models.density import ChargeDensityModel

    from chgdata.references import ReferenceTable

    torch.manual_seed(0)
    cfg = ChargeDensityConfig(encoder=EncoderConfig(n_scalars=4, n_vectors=2, l_max=1, n_layers=1),
                              n_edge_scalars=4, mlp_hidden=8, n_spin_channels=2, chunk_size=2000)
    model = ChargeDensityModel(cfg)
    table = ReferenceTable.from_coefficients({"Fe": [6.0, 2.0], "Si": [3.0, 1.0]}, [0.4, 1.0], {"Fe": 8, "Si": 4})
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"format": 1, "model_config": cfg.to_dict(), "model": model.state_dict(), "ema": None,
                "data_version": {"store": "/nonexistent", "saed_reference_id": table.id}}, path)
    attach_reference(path, table)
    return path


def _poscar(tmp_path):
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    p = tmp_path / "Fe_bcc.cif"
    s.to(filename=str(p))
    return p


def test_spin_chgcar_has_diff_and_electrons(spin_ckpt, tmp_path):
    from chgdata.cli.main import app
    from pymatgen.io.vasp import Chgcar

    res = CliRunner().invoke(app, ["predict", str(_poscar(tmp_path)), "-c", str(spin_ckpt), "--out",
                                   str(tmp_path / "out"), "--grid", "10,10,12", "--format", "chgcar,npy", "-q"])
    assert res.exit_code == 0, res.output
    chg = Chgcar.from_file(str(tmp_path / "out" / "Fe_bcc" / "CHGCAR"))
    assert chg.data["total"].shape == (10, 10, 12) and "diff" in chg.data
    assert chg.data["total"].mean() == pytest.approx(16.0, rel=1e-4)
    rho = np.load(tmp_path / "out" / "Fe_bcc" / "rho.npy")
    assert np.allclose(rho * chg.structure.volume, chg.data["total"], rtol=1e-4, atol=1e-4)


def test_like_grid_and_single_file(spin_ckpt, tmp_path):
    from chgdata.cli.main import app
    from chgdata.models.predict_io import write_chgcar
    from pymatgen.io.vasp import Chgcar

    from chgdata.grid import grid_of_chgcar

    s = __import__("pymatgen.core", fromlist=["Structure"]).Structure.from_file(str(_poscar(tmp_path)))
    like = write_chgcar(s, np.ones((8, 9, 6)), tmp_path / "like" / "CHGCAR", mag=np.zeros((8, 9, 6)))
    assert grid_of_chgcar(like) == (8, 9, 6)
    res = CliRunner().invoke(app, ["predict", str(like), "-c", str(spin_ckpt), "--like", str(like),
                                   "--out", str(tmp_path / "pred_CHGCAR"), "-q"])
    assert res.exit_code == 0, res.output
    assert Chgcar.from_file(str(tmp_path / "pred_CHGCAR")).data["total"].shape == (8, 9, 6)


def test_predict_grid_matches_density_in_chunks(spin_ckpt):
    from chgdata.models.checkpoint import load
    from chgdata.models.density import density_in_chunks, predict_grid
    from chgdata.models.predict import atomic_numbers
    from pymatgen.core import Lattice, Structure

    from chgdata.grid import grid_for_spacing

    model, _ = load(spin_ckpt)
    s = Structure(Lattice.hexagonal(3.0, 4.5), ["Si", "Fe"], [[0, 0, 0], [1 / 3, 2 / 3, 0.5]])
    a = predict_grid(model, s.cart_coords, atomic_numbers(s), s.lattice.matrix, (6, 7, 9), chunk_size=100)
    b = density_in_chunks(model, s.cart_coords, atomic_numbers(s), s.lattice.matrix, grid_shape=(6, 7, 9))
    assert torch.allclose(a, b, atol=1e-6)
    assert grid_for_spacing(s.lattice.matrix, 0.1) == (30, 30, 45)


def test_errors(tmp_path, monkeypatch):
    from chgdata.cli.main import app
    from chgdata.models import checkpoint
    from chgdata.models import predict_io as P

    monkeypatch.setattr(checkpoint, "DEFAULT_CHECKPOINT", tmp_path / "missing.pt")
    res = CliRunner().invoke(app, ["predict", str(_poscar(tmp_path)), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no default model" in res.output
    with pytest.raises(P.PredictError):
        P.read_structure("not-a-structure")

    class FakeMP:
        def structure(self, mid):
            from pymatgen.core import Lattice, Structure

            return Structure(Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]])

    assert P.read_structure("mp-13", mp_source=FakeMP()).name == "mp-13"


def test_plot_training(tmp_path):
    from chgdata.cli.main import app

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,train_loss,lr,probes_per_s,epoch_s,val_nmae,val_nmae_saed\n"
                                     "0,10,0.5,0.001,100,1,40,6\n1,20,0.2,0.0005,110,1,10,6\n")
    res = CliRunner().invoke(app, ["plot", "training", str(run), "--out", str(tmp_path / "t.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_training_before_the_first_validation_says_so(tmp_path):
    """Early in a run metrics.csv has no validation column (and later rows have gaps): the panel says there is no
    validation yet instead of drawing an empty unlabelled frame; validation points with gaps are drawn."""
    from chgdata.plots import training_figure

    (tmp_path / "m.csv").write_text("epoch,step,train_loss,lr,probes_per_s,epoch_s\n0,10,0.5,0.001,100,1\n")
    before = training_figure(tmp_path / "m.csv").axes[1]
    (tmp_path / "m.csv").write_text("epoch,step,train_loss,lr,val_nmae\n0,10,0.5,0.001,\n1,20,0.4,0.001,9\n"
                                    "2,30,0.3,0.001,\n3,40,0.2,0.001,7\n")
    after = training_figure(tmp_path / "m.csv").axes[1]
    assert not before.lines and "no validation yet" in before.texts[0].get_text()
    assert before.get_ylabel() == "validation metric"
    (line,) = after.lines
    assert list(line.get_xdata()) == [20, 40] and list(line.get_ydata()) == [9, 7]
    assert after.get_ylabel() == "validation NMAE (%)"


def test_mp_id_fetches_only_the_structure(spin_ckpt, tmp_path):
    """`predict mp-…` asks MP for the structure alone (tested at the MPRester boundary, with a double of the real
    class): no charge density or DOS is downloaded, so it works for materials MP has no density for."""
    from chgdata.models.predict import run_predict
    from pymatgen.core import Lattice, Structure

    from chgdata.sources.mp import MPSource, Secret
    from tests.conftest import fake_mprester

    fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    fake = fake_mprester({"get_structure_by_material_id": lambda material_id, final=True, **kw: fe})
    mp = MPSource(api_key=Secret("k" * 32), client_factory=lambda key: fake)
    (pred,) = run_predict(["mp-13"], tmp_path / "o", checkpoint=str(spin_ckpt), grid=(8, 8, 8), mp_source=mp,
                          progress=False)
    fake.get_structure_by_material_id.assert_called_once_with("mp-13")
    assert len(pred.structure) == 2 and pred.files and all(p.exists() for p in pred.files)
    # every other MPRester method raises when called; none was
    for name in ("get_charge_density_from_material_id", "get_charge_density_from_task_id", "get_dos_by_material_id"):
        getattr(fake, name).assert_not_called()


def test_shipped_checkpoint_is_plain_smooth_and_leak_free():
    """The shipped model loads with weights_only=True (no unsafe unpickling), uses the probe features that are
    continuous at nuclei, never trained on its recorded val/test materials, and predicts Si8 with its 32 valence
    electrons (Δρ̂ is shifted to carry no net charge; the SAED reference integrates to the valence count)."""
    from chgdata.models.checkpoint import DEFAULT_CHECKPOINT, load
    from chgdata.models.predict import predict_structure
    from pymatgen.core import Lattice, Structure

    raw = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert type(raw["torch"]) is str and raw["format"] == 1
    members = raw["model_config"].get("members", [raw["model_config"]])  # an ensemble or a single model
    assert members and all(m["probe_sh"] == "scaled" for m in members)
    train = set(raw["splits"]["train"])
    assert train and not train & (set(raw["splits"]["val"]) | set(raw["splits"]["test"]))
    assert {"Si", "Na", "Cl", "Fe"} <= set(raw["train_elements"])
    # its SAED reference is the shipped free-atom table: no crystal at all, so none of val or test, in its fit
    from chgdata.models.checkpoint import REFERENCE_KEY

    from chgdata.free_atoms import SHIPPED_REFERENCES
    from chgdata.references import ReferenceTable

    table = ReferenceTable.from_json(raw[REFERENCE_KEY])
    assert table.id == ReferenceTable.load(SHIPPED_REFERENCES["gpaw-free-atoms"]).id
    assert all(m.startswith("atom:") for m in table.provenance["materials"])
    s = Structure(Lattice.cubic(5.43), ["Si"] * 8, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                  [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]])
    model, ckpt = load(None)
    pred = predict_structure(model, ckpt, s, (12, 12, 12), name="Si8")
    assert np.isfinite(pred.rho).all()
    assert float(pred.rho.mean(dtype=np.float64) * s.volume) == pytest.approx(32.0, abs=1e-3)


def test_unsafe_checkpoint_is_refused_in_one_line(tmp_path):
    """A checkpoint that needs unsafe unpickling (here a numpy array inside) is not loaded: a clear error."""
    from chgdata.cli.main import app

    bad = tmp_path / "bad.pt"
    torch.save({"format": 1, "extra": np.arange(3)}, bad)
    res = CliRunner().invoke(app, ["predict", str(_poscar(tmp_path)), "-c", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "not a plain checkpoint" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_density_panels_show_negative_pseudo_densities(tmp_path):
    """Negative pseudo-densities get a diverging scale white at 0 spanning [min, max] (not clipped at 0)."""
    from chgdata.plots import density_style, plot_density_slices

    style = density_style(-0.5, 2.0)
    assert style["cmap"] == "RdBu_r"
    assert [float(style["norm"](v)) for v in (-0.5, 0.0, 2.0)] == [0.0, 0.5, 1.0]
    assert density_style(0.1, 2.0) == {"cmap": "viridis", "vmin": 0.0, "vmax": 2.0}
    grid = np.linspace(-0.5, 2.0, 6 * 5 * 4).reshape(6, 5, 4)
    path = plot_density_slices([("ρ", grid, "density"), ("Δρ", grid - 1, "signed")], np.eye(3) * 3.0,
                               tmp_path / "d.png", parity=(grid, grid, "a", "b"), z_index=1)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_warns_for_elements_outside_the_training_set():
    from chgdata.models.predict import UnseenElementWarning, warn_unseen_elements
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.warns(UnseenElementWarning, match="Cl never occurred"):
        assert warn_unseen_elements({"train_elements": ["Na", "Si"]}, s, "NaCl") == ["Cl"]
    assert warn_unseen_elements({"train_elements": ["Cl", "Na"]}, s) == []
    assert warn_unseen_elements({}, s) == []  # checkpoints that do not record it


def test_structure_names_follow_their_files(tmp_path):
    """POSCAR_NaCl is named POSCAR_NaCl (was its folder's name, so three files of one folder collided)."""
    from pymatgen.core import Lattice, Structure

    folder = tmp_path / "structs"
    folder.mkdir()
    s = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for name in ("POSCAR_NaCl", "POSCAR_NaCl2"):
        s.to(filename=str(folder / name), fmt="poscar")
    s.to(filename=str(folder / "POSCAR"), fmt="poscar")
    from chgdata.models.predict_io import read_structure

    names = [read_structure(str(folder / n)).name for n in ("POSCAR_NaCl", "POSCAR_NaCl2", "POSCAR")]
    assert names == ["POSCAR_NaCl", "POSCAR_NaCl2", "structs"]


def test_elements_outside_the_models_are_named_with_what_they_cover(tmp_path):
    """UO2: the density is refused naming the covered elements; the DOS-only prediction warns (was silent)."""
    from chgdata.cli.main import app
    from pymatgen.core import Lattice, Structure

    cif = tmp_path / "UO2.cif"
    Structure(Lattice.cubic(5.47), ["U", "O", "O"], [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]]).to(
        filename=str(cif))
    res = CliRunner().invoke(app, ["predict", str(cif), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no entry for U" in res.output and "covers Ag, Al" in res.output
    res = CliRunner().invoke(app, ["predict", str(cif), "--dos-only", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0 and "warning:" in res.output and "U never occurred" in res.output


def test_predict_preflight_refuses_huge_grids_and_overlapping_atoms(tmp_path):
    """Before the model is even loaded: a grid whose prediction cannot fit in memory (2000³ was a 93-line torch
    traceback, 1000³ grew past 5 GB before it was killed) is one line naming the estimate and a spacing that fits;
    two atoms on one site (predicted silently before) are named."""
    from chgdata.cli.main import app
    from chgdata.models.checkpoint import PredictError
    from chgdata.models.predict import PREDICT_BYTES_PER_POINT, check_grid_memory
    from pymatgen.core import Lattice, Structure

    si = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    si.to(filename=str(tmp_path / "POSCAR_Si"), fmt="poscar")
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "POSCAR_Si"), "--grid", "2000,2000,2000",
                                   "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    line = " ".join(res.output.split())
    assert "POSCAR_Si: grid 2000×2000×2000 (8e+09 points) needs about 476.8 GiB" in line, line
    assert "use a coarser grid (--spacing" in line and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
    # the estimate against a given budget: 1000³ refused on 16 GiB, the default 0.1 Å grid (55³) accepted
    with pytest.raises(PredictError, match=r"1e\+09 points\) needs about 59.6 GiB for the prediction, 16.0 GiB"):
        check_grid_memory("Si", (1000, 1000, 1000), si.lattice.matrix, available=16 * 2**30)
    check_grid_memory("Si", (60, 60, 60), si.lattice.matrix, available=60**3 * PREDICT_BYTES_PER_POINT * 2)
    # the suggested spacing fits the same budget
    msg = ""
    try:
        check_grid_memory("Si", (1000, 1000, 1000), si.lattice.matrix, available=2**30)
    except PredictError as exc:
        msg = str(exc)
    spacing = float(msg.split("--spacing ")[1].split()[0])
    from chgdata.grid import grid_for_spacing

    check_grid_memory("Si", grid_for_spacing(si.lattice.matrix, spacing), si.lattice.matrix, available=2**30)
    twin = Structure(Lattice.cubic(5.43), ["Si", "Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25], [1e-4, 0, 0]])
    twin.to(filename=str(tmp_path / "POSCAR_twin"), fmt="poscar")
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "POSCAR_twin"), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    assert "overlapping atoms: sites 0 (Si) and 2 (Si) are 0.00 Å apart (< 0.5 Å)" in " ".join(res.output.split())
