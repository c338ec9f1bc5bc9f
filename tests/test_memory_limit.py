"""A material whose grid would not fit in a Dask worker's memory is refused with a clear message before its grid is
read, and the run goes on. The large material is a real CHGCAR tiled into a supercell."""

from __future__ import annotations

import shutil

import numpy as np
from chgdata.pipelines.ingest import PARSE_BYTES_PER_POINT, run_ingest
from pymatgen.io.vasp.outputs import Chgcar

from chgdata import open_dataset
from chgdata.grid import read_chgcar_header
from tests.conftest import GPAW, need_shared

TILE = (8, 8, 7)  # 24^3 grid -> 192 x 192 x 168 = 6.2 M points (~400 MB to parse) against a 300 MB worker


def write_tiled_chgcar(src, dest, tile) -> int:
    """A valid CHGCAR of ``src`` tiled ``tile`` times: supercell structure and header written by pymatgen, the grid
    (ρ·V of the supercell, x fastest in the file) written with numpy for speed."""
    chg = Chgcar.from_file(str(src))
    s = chg.structure.copy()
    s.make_supercell(tile)
    grid = np.tile(chg.data["total"], tile) * np.prod(tile)
    poscar = Chgcar(s, {"total": np.zeros((1, 1, 1))}).poscar.get_str(significant_figures=10)
    values = grid.ravel(order="F")
    with open(dest, "w") as fh:
        fh.write(poscar + "\n" + " ".join(str(n) for n in grid.shape) + "\n")
        full = values.size - values.size % 5
        np.savetxt(fh, values[:full].reshape(-1, 5), fmt="%.5E")
        if values.size > full:
            np.savetxt(fh, values[full:].reshape(1, -1), fmt="%.5E")
    return grid.size


def test_material_over_worker_memory_is_refused_before_reading(tmp_path):
    need_shared()
    from distributed import Client, LocalCluster

    calcs = tmp_path / "calcs"
    shutil.copytree(GPAW / "gpaw-0001", calcs / "small")
    (calcs / "huge").mkdir()
    npts = write_tiled_chgcar(GPAW / "gpaw-0001" / "CHGCAR.gz", calcs / "huge" / "CHGCAR", TILE)
    assert read_chgcar_header(calcs / "huge" / "CHGCAR").n_points == npts
    assert npts * PARSE_BYTES_PER_POINT > 300e6
    import dask

    # the limit is what chgdata's guard reads; Dask's own pause/terminate policies are off so that the worker's
    # baseline (imports alone are ~250 MB) cannot get it killed before the guard is exercised
    no_policies = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause", "terminate")}
    with dask.config.set(no_policies), \
            LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="300MB", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert set(client.run(lambda: dask.config.get("distributed.worker.memory.terminate")).values()) == {False}
        report = run_ingest(str(tmp_path / "s"), from_dir=str(calcs), client=client, progress=False)
    assert report.committed == ["small"]
    why = report.failed["huge"]
    assert "memory limit" in why and f"{npts:,} points" in why and "refused before reading" in why
    ds = open_dataset(tmp_path / "s")
    assert ds.material_ids == ["small"]
    assert {r["material_id"]: r["reason"] for r in ds.failures.to_pylist()}["huge"] == why
