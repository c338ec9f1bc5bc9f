"""``chgdata train``: data loading from the store, training features, resume, DDP (gloo) and the CLI.

Runs on a store of 10 small gpaw materials (C, Cu, spin-polarised Fe, Ni and Co) ingested once per module,
with build-delta and build-dos, and tiny models; the whole file stays well under 3 minutes on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("e3nn")
pytest.importorskip("vesin")

from chgdata.models import keys as K  # noqa: E402
from chgdata.models.batch_edges import attach_probe_edges  # noqa: E402
from chgdata.models.checkpoint import load_checkpoint  # noqa: E402
from chgdata.models.data import (  # noqa: E402
    DensityProbes,
    DosWindows,
    ProbeBudgetBatchSampler,
    make_loader,
    make_splits,
)
from chgdata.models.graph import collate  # noqa: E402
from chgdata.models.neighbors import probe_edges  # noqa: E402
from chgdata.models.train import TrainConfig, train  # noqa: E402
from chgdata.models.train_utils import validate_density  # noqa: E402

from chgdata import contract as C  # noqa: E402
from tests.conftest import GPAW  # noqa: E402

# single-element materials only: valence counts must be determinable from the subset (BN alone is ambiguous)
SUBSET = ["gpaw-0008", "gpaw-0009", "gpaw-0010", "gpaw-0011", "gpaw-0031", "gpaw-0032", "gpaw-0033",
          "gpaw-0124", "gpaw-0133", "gpaw-0152"]
TINY = {"encoder": {"n_scalars": 8, "n_vectors": 2, "l_max": 1, "n_layers": 1, "radial_hidden": 8},
        "n_edge_layers": 1, "n_edge_scalars": 8, "mlp_hidden": 16}
TINY_DOS = {"encoder": TINY["encoder"], "mlp_hidden": 16}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    missing = [m for m in SUBSET if not (GPAW / m).is_dir()]
    if missing:
        pytest.skip(f"shared gpaw data not found: {missing}")
    from chgdata.pipelines.cluster import dask_client
    from chgdata.pipelines.delta import run_build_delta
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest

    src = tmp_path_factory.mktemp("gpaw-subset")
    for m in SUBSET:
        (src / m).mkdir()
        for f in (GPAW / m).iterdir():
            (src / m / f.name).symlink_to(f)
    path = str(tmp_path_factory.mktemp("stores") / "subset")
    with dask_client(1, None, processes=False) as client:
        assert not run_ingest(path, from_dir=str(src), progress=False, client=client).failed
        assert not run_build_delta(path, progress=False, client=client).failed
        assert not run_build_dos(path, progress=False, client=client).failed
    return path


def _cfg(store, out, **kw) -> TrainConfig:
    base = dict(store=store, out=str(out), target="delta", probes=100, batch_size=4, max_probes_per_batch=None,
                lr=5e-3, warmup_steps=2, epochs=1, model=TINY, val_max_materials=1, seed=0, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def _metrics(out) -> list[dict[str, str]]:
    with open(Path(out) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_splits_reproducible_and_disjoint():
    ids = [f"m{i:03d}" for i in range(57)]
    a, b = make_splits(ids, (0.8, 0.1, 0.1), seed=3), make_splits(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert a == b
    assert not set(a["train"]) & set(a["val"]) and not set(a["train"]) & set(a["test"])
    assert not set(a["val"]) & set(a["test"])
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert len(a["val"]) == 6 and make_splits(ids, (0.8, 0.1, 0.1), seed=4) != a
    with pytest.raises(ValueError):
        make_splits(ids, (0.8, 0.3, 0.1))


def test_probe_budget_and_probe_reads(store):
    ds = DensityProbes(store, target="delta", probes=150, n_spin_channels=2, seed=1)
    sizes = [ds.n_probes(i) for i in range(len(ds))]
    assert sizes == [150] * len(ds)
    sampler = ProbeBudgetBatchSampler(sizes, batch_size=4, max_probes=320, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for _, i in b) == list(range(len(ds)))
    assert all(sum(sizes[i] for _, i in b) <= 320 for b in batches) and max(len(b) for b in batches) == 2
    # DDP sharding: disjoint per rank, same number of batches on every rank
    shards = [list(ProbeBudgetBatchSampler(sizes, 2, None, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert not {i for b in shards[0] for _, i in b} & {i for b in shards[1] for _, i in b}
    loader = make_loader(ds, batch_size=4, max_probes=320)
    for batch in loader:
        assert batch[K.PROBE_POSITIONS].shape[0] <= 320
        assert batch[K.TARGET_DENSITY].shape == (batch[K.PROBE_POSITIONS].shape[0], 2)
    # the cached whole-grid read and the Zarr coordinate selection give the same targets
    coords = DensityProbes(store, target="delta", probes=150, n_spin_channels=2, seed=1, slice_max_points=0)
    for i in (0, len(ds) - 1):
        pts = ds.sample_points(i)
        assert len(np.unique(pts)) == 150
        np.testing.assert_array_equal(ds.targets(i, pts), coords.targets(i, pts))
        a, b = ds[(2, i)], coords[(2, i)]
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def _edge_set(batch) -> set[tuple[int, ...]]:
    ei, shift = batch[K.PROBE_EDGE_INDEX].numpy(), batch[K.PROBE_EDGE_CELL_SHIFT].numpy()
    return set(map(tuple, np.concatenate([ei.T, shift], axis=1).tolist()))


@pytest.mark.parametrize("block", [1 << 24, 997])
def test_attach_probe_edges_match_the_kdtree_path(store, block):
    """Batched device-side probe edges == per-structure cKDTree edges, for probes anywhere in space, with
    the loader's atom images or without them, and with distance blocks smaller than one structure."""
    ds = DensityProbes(store, target="total", probes=300, seed=2, probe_r_cut=3.5)
    batch = collate([ds[i] for i in range(len(ds))])
    rng = np.random.default_rng(5)
    moved = batch[K.PROBE_POSITIONS].double() + torch.from_numpy(rng.normal(0, 9.0, (len(batch[K.PROBE_BATCH]), 3)))
    batch[K.PROBE_POSITIONS] = moved.float()
    expected = set()
    probes, pos = (batch[k].double().numpy() for k in (K.PROBE_POSITIONS, K.POSITIONS))
    pb, ab = batch[K.PROBE_BATCH].numpy(), batch[K.ATOM_BATCH].numpy()
    for s in range(len(ds)):
        p, a = np.flatnonzero(pb == s), np.flatnonzero(ab == s)
        ei, shift = probe_edges(probes[p], pos[a], batch[K.CELL][s].double().numpy(), 3.5)
        expected |= set(map(tuple, np.concatenate([np.stack([p[ei[0]], a[ei[1]]]).T, shift], 1).tolist()))
    with_images = attach_probe_edges(dict(batch), 3.5, block=block)
    without = attach_probe_edges({k: v for k, v in batch.items() if not k.startswith("image")}, 3.5, block=block)
    assert len(expected) > 10 * len(pb)
    assert _edge_set(with_images) == expected == _edge_set(without)


def test_nmae_weighting(store):
    ds = DensityProbes(store, target="delta", probes=50, weighting="nmae")
    mean = np.array([r[C.COL_NELECT] / abs(np.linalg.det(np.reshape(r[C.COL_LATTICE], (3, 3)))) for r in ds.rows])
    np.testing.assert_allclose(ds.weights, (1 / mean) / np.mean(1 / mean))
    assert ds.weights.mean() == pytest.approx(1.0) and ds.weights.std() > 0.1  # C and the metals differ
    item = ds[3]
    np.testing.assert_allclose(item[K.PROBE_WEIGHT].numpy(), ds.weights[3], rtol=1e-6)
    assert item[K.PROBE_WEIGHT].shape == (50,)
    assert K.PROBE_WEIGHT not in DensityProbes(store, target="delta", probes=50)[3]
    with pytest.raises(ValueError, match="weighting"):
        DensityProbes(store, target="delta", weighting="uniform")


def test_workers_spawn_give_the_same_batches(store):
    ds = DensityProbes(store, target="total", probes=64, n_spin_channels=2, seed=5)

    def run(workers):
        loader = make_loader(ds, batch_size=3, max_probes=None, workers=workers, seed=7, start_method="spawn")
        out = []
        for epoch in range(2):
            loader.batch_sampler.set_epoch(epoch)
            out += [b for b in loader]
        return out

    serial, parallel = run(0), run(2)
    assert len(serial) == len(parallel) > 0
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # epochs draw different probes
    assert not torch.equal(serial[0][K.PROBE_POSITIONS][:10], serial[len(serial) // 2][K.PROBE_POSITIONS][:10])


def test_delta_training_loss_goes_down_and_checkpoint_metadata(store, tmp_path):
    out = tmp_path / "delta"
    # without the data-dependent output scale the untrained head is far off: the loss must fall a lot
    cfg = _cfg(store, out, epochs=10, probes=120, ema_decay=0.5, val_every=100, init_output_scale=False,
               split_source="random")  # the store records a grouped split; this test pins the random one
    final = train(cfg, progress=False)
    rows = _metrics(out)
    assert len(rows) == 10
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    # with it (the default) the first epoch already starts near the SAED baseline
    scaled = train(_cfg(store, tmp_path / "scaled", epochs=1, probes=120, val_every=100), progress=False)
    assert scaled["train_loss"] < 0.5 * float(rows[0]["train_loss"])
    scale = torch.load(tmp_path / "scaled" / "last.pt", weights_only=True)["model_config"]["output_scale"]
    assert 1e-4 < scale < 0.5  # mean |Δρ| (e/Å³) of the training probes
    assert 0 < final["val_nmae"] < 1e4 and 0 < final["val_nmae_saed"] < 100
    splits = json.loads((out / "splits.json").read_text())
    assert not set(splits["train"]) & set(splits["val"]) and len(splits["train"]) == 8
    assert splits == make_splits(sorted(SUBSET), cfg.split, cfg.split_seed)
    model, ckpt = load_checkpoint(out / "model.pt")
    assert model.config.n_spin_channels == 2  # Co and Fe are spin-polarised: ↑, ↓ head
    assert ckpt["config"]["target"] == "delta" and ckpt["code_version"].startswith("0.")
    assert ckpt["saed_reference_id"] and ckpt["data_version"]["index_sha256"]
    assert "optimizer" not in ckpt
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["ema"] is not None and "optimizer" in last
    for k, v in last["ema"].items():  # model.pt ships the EMA weights
        torch.testing.assert_close(ckpt["model"][k], v)


def test_dos_training_loss_goes_down(store, tmp_path):
    out = tmp_path / "dos"
    cfg = _cfg(store, out, target="dos", epochs=10, model=TINY_DOS, lr=1e-2, val_every=5)
    assert cfg.loss == "mse"
    final = train(cfg, progress=False)
    rows = _metrics(out)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert 0 < final["val_mse"] < 1
    ids, windows, _ = __import__("chgdata").open_dataset(store).dos_windows()
    assert DosWindows(store, ids[:2])[1][K.TARGET_DOS].shape == (1, *windows.shape[1:])


def test_resume_equals_uninterrupted_run(store, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded CPU reductions are not bitwise reproducible run to run
    try:
        _resume_equals_uninterrupted(store, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_equals_uninterrupted(store, tmp_path):
    kw = dict(target="total", max_steps=6, epochs=1, batch_size=3, loss="mse", ema_decay=0.9, val_max_materials=1,
              val_every=100)
    full = train(_cfg(store, tmp_path / "a", **kw), progress=False)
    train(_cfg(store, tmp_path / "b", **kw), progress=False, stop_after=4)  # interrupted mid-epoch 1
    part = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert part["step"] == 4 and not (tmp_path / "b" / "model.pt").exists()
    resumed = train(_cfg(store, tmp_path / "b", **kw), resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, rtol=0, atol=0)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert resumed["val_nmae"] == pytest.approx(full["val_nmae"], rel=1e-9)


def test_ddp_gloo_two_processes_and_cli_config(store, tmp_path):
    out = tmp_path / "ddp"
    conf = tmp_path / "train.yaml"
    conf.write_text(f"store: {store}\ntarget: delta\nprobes: 50\nbatch_size: 4\nepochs: 3\nlr: 1.0e-3\n"
                    f"val_max_materials: 3\nsplit_source: random\nsplit: [0.6, 0.4, 0.0]\ntensorboard: false\n"
                    f"model: {json.dumps(TINY)}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "chgdata.cli.main", "train", "--config", str(conf), "--max-steps", "2", "--out", str(out), "-q"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = sorted(json.loads(p.read_text())["rank"] for p in (out / "ranks").glob("rank*.json"))
    assert ranks == [0, 1]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2 and ckpt["config"]["probes"] == 50  # file + flag
    assert ckpt["config"]["max_steps"] == 2 and (out / "model.pt").exists()
    # validation was shared out over the two ranks (2 + 1 materials) and gathered: same as one process
    model, _ = load_checkpoint(out / "model.pt")
    alone = validate_density(model, store, json.loads((out / "splits.json").read_text())["val"][:3], "delta", "cpu")
    logged = _metrics(out)[-1]
    assert float(logged["val_nmae"]) == pytest.approx(alone["val_nmae"], rel=1e-9)
    assert float(logged["val_nmae_saed"]) == pytest.approx(alone["val_nmae_saed"], rel=1e-9)
    assert len(alone["per_material"]) == 3


@pytest.mark.parametrize("flags", [["--target", "rho"], ["--weighting", "uniform"]])
def test_cli_errors_are_one_line(store, tmp_path, flags):
    res = subprocess.run([sys.executable, "-m", "chgdata.cli.main", "train", "--store", store, *flags,
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.strip().startswith("error:") and len(res.stderr.splitlines()) == 1
    assert flags[1] in res.stderr


def _yaml(path: Path, **kw) -> Path:
    lines = [f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in kw.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_yaml_lr_string_trains_and_every_checkpoint_is_plain(store, tmp_path):
    """`lr: 3e-3` (a string to YAML 1.1) trains; last.pt, the periodic and the exported model.pt checkpoints
    load with weights_only=True; the summary's probes_per_s is the run's steady rate, not the last epoch's."""
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    conf = _yaml(tmp_path / "t.yaml", store=store, probes=60, batch_size=4, lr="3e-3", epochs=3, ckpt_every=1,
                 val_max_materials=1, val_every=100, tensorboard="false", model=TINY)
    import yaml

    assert yaml.safe_load(conf.read_text())["lr"] == "3e-3"  # the YAML 1.1 trap is real
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--config", str(conf), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    for name in ("last.pt", "model.pt"):
        ckpt = torch.load(out / name, weights_only=True)
        assert type(ckpt["torch"]) is str and ckpt["config"]["lr"] == 0.003 and ckpt["config"]["epochs"] == 3
    assert "saed_reference" in torch.load(out / "model.pt", weights_only=True)  # attached after the export
    rows = _metrics(out)
    assert len(rows) == 3
    rate = (sum(float(r["probes_per_s"]) * float(r["epoch_s"]) for r in rows[1:])
            / sum(float(r["epoch_s"]) for r in rows[1:]))
    summary = res.output.split("probes_per_s ")[1].split(",")[0]
    assert float(summary) == pytest.approx(rate, rel=1e-3)


@pytest.mark.parametrize("text, key", [("lr: fast\n", "'lr'"), ("epochs: 2.5\n", "'epochs'"),
                                       ("lrr: 1e-3\n", "did you mean 'lr'"), ("model: {encoder: {l_maxx: 1}}\n",
                                                                             "'encoder.l_maxx'"),
                                       ("split: [0.8, 0.2]\n", "'split.2'"), ("- 1\n", "mapping")])
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, key):
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    res = CliRunner().invoke(app, ["train", "--config", str(conf), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    assert res.output.startswith(f"error: {conf}:") and key in res.output


def test_presets(tmp_path):
    """chgdata.app.train_config: the one resolution of preset, file and flags (the CLI and chgdata.train use it)."""
    from chgdata.app import train_config
    from chgdata.models.presets import PRESETS

    out = str(tmp_path / "r")
    cpu = train_config(out=out)
    assert cpu.probes == 200 and cpu.max_steps == 3000 and cpu.model == PRESETS["cpu"]["model"]
    gpu = train_config(out=out, device="cuda")
    assert gpu.batch_size == 32 and gpu.model["encoder"]["n_scalars"] == 48
    dos = train_config(out=out, target="dos", preset="cpu")
    assert dos.model == PRESETS["cpu"]["dos_model"]
    # precedence: preset < file < flags; asking for epochs drops the preset's step count; None is "not given"
    conf = _yaml(tmp_path / "c.yaml", probes=77, lr="1e-3", model=TINY)
    cfg = train_config(config=conf, preset="gpu", out=out, lr=2e-3, epochs=2, seed=None)
    assert (cfg.probes, cfg.lr, cfg.batch_size, cfg.model, cfg.max_steps) == (77, 2e-3, 32, TINY, None)
    with pytest.raises(ValueError, match="--preset must be one of cpu, gpu"):
        train_config(out=out, preset="tpu")


def test_resume_without_config_reads_the_runs_config(store, tmp_path):
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    conf = _yaml(tmp_path / "t.yaml", store=store, probes=40, batch_size=4, max_steps=2, val_max_materials=1,
                 tensorboard="false", model=TINY, target="total")
    out = str(tmp_path / "run")
    res = CliRunner().invoke(app, ["train", "--config", str(conf), "--out", out, "-q"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["train", "--out", out, "--resume", "--max-steps", "4", "-q"])
    assert res.exit_code == 0, res.output
    last = torch.load(Path(out) / "last.pt", weights_only=True)
    assert last["step"] == 4 and last["config"]["probes"] == 40 and last["config"]["target"] == "total"
    res = CliRunner().invoke(app, ["train", "--out", out, "--resume", "--preset", "gpu"])
    assert res.exit_code == 1 and "keeps the config it was started with" in res.output


def test_epochs_of_varying_batch_counts_end_and_the_step_budget_is_met(store, tmp_path):
    """Under a probe budget the number of batches changes with each epoch's shuffle (grids differ in size); a run
    bounded by max_steps must move on at the end of every epoch, however short, and end validated at max_steps."""
    probes = 10**6  # whole grids: the items' sizes are their grid sizes
    train(_cfg(store, tmp_path / "split", target="total", probes=probes, max_steps=1), progress=False)
    train_ids = json.loads((tmp_path / "split" / "splits.json").read_text())["train"]
    ds = DensityProbes(store, target="total", probes=probes, n_spin_channels=2, material_ids=train_ids)
    sizes = [ds.n_probes(i) for i in range(len(ds))]
    budget, counts = None, []
    for cap in sorted({a + b for a in sizes for b in sizes}):  # a budget whose packing differs between epochs
        samplers = [ProbeBudgetBatchSampler(sizes, 4, cap, seed=0) for _ in range(6)]
        for e, s in enumerate(samplers):
            s.set_epoch(e)
        counts = [len(s) for s in samplers]
        if len(set(counts)) > 1:
            budget = cap
            break
    assert budget is not None, f"no probe budget varies the batch count per epoch for grid sizes {sizes}"
    steps = sum(counts[:4]) + 1
    final = train(_cfg(store, tmp_path / "run", target="total", probes=probes, max_probes_per_batch=budget,
                       max_steps=steps, val_every=100), progress=False)
    rows = _metrics(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [*np.cumsum(counts[:4]).tolist(), steps]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    assert np.isfinite(final["val_nmae"])


def test_steps_for_budget_times_steady_steps(store, tmp_path):
    from chgdata.models.train import WARM_STEPS, steps_for_budget

    def config_for(n, out):
        return _cfg(store, out, target="dos", model=TINY_DOS, max_steps=n, batch_size=2, val_every=10**9)

    steps, s_per_step = steps_for_budget(config_for, 1e6, tmp_path, max_steps=77, calibration_steps=3)
    assert steps == 77 and s_per_step > 0 and not (tmp_path / "calibration").exists()
    steps, _ = steps_for_budget(config_for, 1e-9, tmp_path, max_steps=77, calibration_steps=3)
    assert steps == 10  # the floor
    final = train(config_for(WARM_STEPS + 4, tmp_path / "run"), progress=False)
    assert final["s_per_step"] > 0
    with pytest.raises(ValueError, match="positive"):
        steps_for_budget(config_for, 0, tmp_path, max_steps=77)


def test_redirected_training_logs_and_sigterm_checkpoints_with_a_resume_hint(store, tmp_path):
    """With stderr not a terminal, training logs step lines; SIGTERM (as a scheduler sends) writes last.pt at the
    current step, says where it is and how to resume, and exits 130; the resume continues from that step."""
    import signal
    import time

    conf = _yaml(tmp_path / "t.yaml", store=store, probes=60, batch_size=2, epochs=1000, max_steps=100000,
                 val_max_materials=1, val_every=100000, tensorboard="false", log_seconds=0.2, ckpt_seconds=3600,
                 model=TINY)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "chgdata.cli.main", "train", "--config", str(conf), "--out",
                             str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    deadline = time.time() + 240
    while time.time() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "step " in line and "steps/s" in line:
            break
    assert any("steps/s" in ln for ln in lines), lines[-5:]
    proc.send_signal(signal.SIGTERM)
    rest_out, rest_err = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest_err[-2000:]
    assert "SIGTERM" in rest_err and "--resume" in rest_err and "last.pt" in rest_err and "Traceback" not in rest_err
    step = torch.load(out / "last.pt", weights_only=True)["step"]
    assert step >= 1 and f"step {step}/" in rest_err
    length = json.loads((out / "config.json").read_text())["run_length"]  # epochs: 1000 in the file, unused
    assert length == {"steps": 100000, "bounded_by": "max_steps", "epochs": None}
