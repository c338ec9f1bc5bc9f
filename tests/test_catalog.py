"""The catalogue: schemas, publish/list/show/open round trip, refusal of conflicting publishes, reproducible
checksums of the published gpaw dataset, and the chgdata-free reader example."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import GPAW, REPO, need_shared

jsonschema = pytest.importorskip("jsonschema")

from chgdata import catalog as cat  # noqa: E402
from chgdata.store import StoreError  # noqa: E402

REPO_CATALOG = REPO / "catalog.yaml"


def _validate(instance, schema_file: Path) -> None:
    jsonschema.Draft202012Validator(json.loads(schema_file.read_text())).validate(instance)


REBUILT: dict = {}


@pytest.fixture(scope="module")
def full_gpaw(tmp_path_factory) -> str:
    """The latest published gpaw version rebuilt from its recorded inputs in ../shared/data/gpaw (a folder that
    grows: the rebuild selects exactly the published ids)."""
    need_shared()
    from chgdata.pipelines.rebuild import run_rebuild

    store = str(tmp_path_factory.mktemp("cat") / "gpaw")
    REBUILT["report"] = run_rebuild("gpaw", GPAW, store, catalog=REPO_CATALOG, workers=2, processes=False,
                                    progress=False)
    return store


@pytest.fixture()
def small_store(vasp_store, tmp_path) -> str:
    """A private copy of the (ingest-only) vasp store, so publishing does not touch the shared fixture's card."""
    dst = tmp_path / "vasp"
    shutil.copytree(vasp_store, dst)
    return str(dst)


def test_repo_catalog_follows_schema():
    data = yaml.safe_load(REPO_CATALOG.read_text())
    _validate(data, cat.CATALOG_SCHEMA)
    cat.validate_catalog(data)
    names = {(e["name"], e["version"]) for e in data["datasets"]}
    assert ("gpaw", "1.0.0") in names


def test_cards_follow_schema(full_gpaw, vasp_store, gpaw_store):
    for store in (full_gpaw, vasp_store, gpaw_store):
        card = yaml.safe_load((Path(store) / "dataset.yaml").read_text())
        _validate(card, cat.CARD_SCHEMA)


def test_rebuild_reproduces_published_checksums(full_gpaw):
    entry = cat.find_entry("gpaw", REPO_CATALOG)  # the latest version
    rep = REBUILT["report"]
    assert rep.materials == len(entry["inputs"]["materials"]) == entry["counts"]["materials"]
    assert {k: rep.checks[k] for k in ("index", "arrays", "card", "content")} == {
        "index": True, "arrays": True, "card": True, "content": True}, rep.packages
    info = cat.describe(full_gpaw)
    assert info["counts"] == entry["counts"]
    assert info["dos"] == entry["dos"]
    assert cat.input_manifest(full_gpaw) == entry["inputs"]


def test_superseded_version_without_inputs_is_refused_clearly(tmp_path):
    from chgdata.pipelines.rebuild import run_rebuild

    with pytest.raises(cat.CatalogError, match="records no inputs"):
        run_rebuild("gpaw@1.0.0", GPAW, str(tmp_path / "s"), catalog=REPO_CATALOG, progress=False)


def test_rebuild_selects_recorded_inputs_from_a_grown_folder(tmp_path):
    """Publish three crystals, add a fourth to the folder: the rebuild takes the three and verifies; a changed
    or missing input is named."""
    need_shared()
    from chgdata.pipelines.dos import run_build_dos
    from chgdata.pipelines.ingest import run_ingest
    from chgdata.pipelines.rebuild import run_rebuild

    src = tmp_path / "src"
    for mid in ("gpaw-0002", "gpaw-0008", "gpaw-0010"):
        shutil.copytree(GPAW / mid, src / mid)
    store = str(tmp_path / "published")
    run_ingest(store, from_dir=str(src), workers=1, processes=False, progress=False)
    run_build_dos(store, workers=1, processes=False, progress=False)
    catalog = tmp_path / "catalog.yaml"
    entry, _ = cat.publish(store, "small", "1", catalog=catalog)
    assert sorted(entry["inputs"]["materials"]) == ["gpaw-0002", "gpaw-0008", "gpaw-0010"]
    shutil.copytree(GPAW / "gpaw-0013", src / "gpaw-0013")  # the folder grows
    rep = run_rebuild("small@1", src, str(tmp_path / "r1"), catalog=catalog, workers=1, processes=False,
                      progress=False)
    assert rep.ok and rep.materials == 3, rep.checks
    meta = src / "gpaw-0008" / "meta.json"
    meta.write_text(meta.read_text().replace('"variant"', '"variant_"'))  # a changed input file
    with pytest.raises(StoreError, match="raw files of 1 recorded inputs differ.*gpaw-0008"):
        run_rebuild("small@1", src, str(tmp_path / "r2"), catalog=catalog, workers=1, processes=False,
                    progress=False)
    shutil.rmtree(src / "gpaw-0002")
    with pytest.raises(StoreError, match="gpaw-0002: not found under"):
        run_rebuild("small@1", src, str(tmp_path / "r3"), catalog=catalog, workers=1, processes=False,
                    progress=False)


def test_publish_list_show_open_round_trip(full_gpaw, tmp_path, monkeypatch):
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    import chgdata

    catalog = tmp_path / "sub" / "catalog.yaml"
    entry, action = cat.publish(full_gpaw, "gpaw-test", "0.1", description="test copy", catalog=catalog)
    assert action == "added"
    data = yaml.safe_load(catalog.read_text())
    _validate(data, cat.CATALOG_SCHEMA)
    assert not Path(entry["location"]).is_absolute()  # stored relative to the catalogue's folder
    card = yaml.safe_load((Path(full_gpaw) / "dataset.yaml").read_text())
    _validate(card, cat.CARD_SCHEMA)
    assert card["published"]["name"] == "gpaw-test"
    assert card["published"]["content_sha256"] == entry["checksums"]["content"]
    # publishing the card section did not change the content checksum: a second publish is a no-op
    before = catalog.read_text()
    assert cat.publish(full_gpaw, "gpaw-test", "0.1", catalog=catalog)[1] == "unchanged"
    assert catalog.read_text() == before

    ds = chgdata.open_dataset("catalog:gpaw-test@0.1", catalog=catalog)
    ref = chgdata.open_dataset(full_gpaw)
    assert ds.material_ids == ref.material_ids
    mid = ref.material_ids[0]
    np.testing.assert_array_equal(ds.density(mid).rho, ref.density(mid).rho)
    monkeypatch.setenv(cat.CATALOG_ENV, str(catalog))
    assert len(chgdata.open_dataset("catalog:gpaw-test")) == len(ref)  # latest version, catalogue from the env

    runner = CliRunner()
    res = runner.invoke(app, ["catalog", "list", "--catalog", str(catalog)])
    assert res.exit_code == 0, res.output
    assert "gpaw-test@0.1" in res.output and str(entry["counts"]["materials"]) in res.output
    res = runner.invoke(app, ["catalog", "show", "gpaw-test@0.1", "--catalog", str(catalog)])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.output)
    assert shown["checksums"]["content"] == entry["checksums"]["content"]
    assert Path(shown["resolved_location"]) == Path(full_gpaw).resolve()
    res = runner.invoke(app, ["catalog", "show", "gpaw-test@9", "--catalog", str(catalog)])
    assert res.exit_code == 1 and "no version '9'" in res.output


def test_conflicting_publish_is_refused(small_store, full_gpaw, tmp_path):
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    catalog = tmp_path / "catalog.yaml"
    runner = CliRunner()
    res = runner.invoke(app, ["publish", "--store", small_store, "--name", "demo", "--version", "1",
                              "--catalog", str(catalog), "--location", "s3://bucket/demo/1"])
    assert res.exit_code == 0, res.output
    assert "added: demo@1" in res.output
    before = catalog.read_text()
    res = runner.invoke(app, ["publish", "--store", full_gpaw, "--name", "demo", "--version", "1",
                              "--catalog", str(catalog)])
    assert res.exit_code == 1
    assert "refusing to overwrite a published version" in " ".join(res.output.split())
    assert catalog.read_text() == before  # nothing written
    res = runner.invoke(app, ["publish", "--store", small_store, "--name", "demo", "--version", "1",
                              "--catalog", str(catalog), "--location", "s3://bucket/demo/1"])
    assert res.exit_code == 0 and "unchanged" in res.output
    assert cat.resolve("catalog:demo@1", catalog) == "s3://bucket/demo/1"
    with pytest.raises(cat.CatalogError, match="no dataset named"):
        cat.find_entry("nope", catalog)


BLOCKER = r"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "chgdata" or name.startswith("chgdata."):
            raise ImportError("chgdata must not be imported by this example")
        return None
sys.meta_path.insert(0, Block())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
assert not any(m == "chgdata" or m.startswith("chgdata.") for m in sys.modules), "chgdata was imported"
"""


def test_reader_without_chgdata(full_gpaw, tmp_path):
    import chgdata

    catalog = tmp_path / "catalog.yaml"
    cat.publish(full_gpaw, "gpaw", "1.0.0", catalog=catalog)
    ds = chgdata.open_dataset(full_gpaw)
    spin = [m for m in ds.material_ids if ds.row(m)["spin_polarized"]][0]
    plain = [m for m in ds.material_ids if not ds.row(m)["spin_polarized"]][0]
    for mid in (spin, plain):
        out = tmp_path / f"{mid}.npz"
        res = subprocess.run([sys.executable, "-c", BLOCKER, str(REPO / "examples" / "read_without_chgdata.py"),
                              "--catalog", str(catalog), "--dataset", "gpaw@1.0.0", "--material", mid,
                              "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert res.returncode == 0, res.stderr
        got = np.load(out)
        grid = ds.density(mid)
        np.testing.assert_array_equal(got["rho"], grid.rho)
        assert got["rho"].dtype == np.float32
        if grid.mag is None:
            assert "mag" not in got
        else:
            np.testing.assert_array_equal(got["mag"], grid.mag)
        for variant, key in (("normalised", "dos_norm"), ("absolute", "dos_abs")):
            _, windows, energies = ds.dos_windows([mid], variant=variant)
            np.testing.assert_array_equal(got[key], windows[0])
        np.testing.assert_allclose(got["dos_energy"], energies, atol=1e-5)


@pytest.fixture()
def two_material_store(tmp_path) -> str:
    """Two small gpaw crystals, ingested (seconds)."""
    need_shared()
    from chgdata.pipelines.ingest import run_ingest

    src = tmp_path / "src"
    for m in ("gpaw-0008", "gpaw-0009"):
        (src / m).mkdir(parents=True)
        for f in (GPAW / m).iterdir():
            (src / m / f.name).symlink_to(f)
    store = str(tmp_path / "store")
    assert not run_ingest(store, from_dir=str(src), workers=1, processes=False, progress=False).failed
    return store


def test_catalog_open_checks_the_published_checksum(two_material_store, tmp_path, monkeypatch):
    """catalog:NAME@VERSION opens only what was published: data changed at the location are refused with one
    line (library and CLI), unless the check is switched off."""
    from chgdata.cli.main import app
    from typer.testing import CliRunner

    import chgdata

    catalog = tmp_path / "catalog.yaml"
    cat.publish(two_material_store, "demo", "1", catalog=catalog)
    assert len(chgdata.open_dataset("catalog:demo@1", catalog=catalog)) == 2
    card = Path(two_material_store) / "dataset.yaml"  # the location's content changes after publication
    card.write_text(card.read_text() + "notes: edited after publication\n")
    cat._VERIFIED.clear()
    with pytest.raises(cat.CatalogError, match=r"demo@1: the data at .* are not the published version"):
        chgdata.open_dataset("catalog:demo@1", catalog=catalog)
    res = CliRunner().invoke(app, ["info", "--store", "catalog:demo@1"], env={cat.CATALOG_ENV: str(catalog)})
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "not the published version" in res.output and cat.VERIFY_ENV in res.output
    assert len(chgdata.open_dataset("catalog:demo@1", catalog=catalog, verify=False)) == 2
    monkeypatch.setenv(cat.VERIFY_ENV, "0")
    assert len(chgdata.open_dataset("catalog:demo@1", catalog=catalog)) == 2
