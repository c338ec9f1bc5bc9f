"""Candidates ranked by the ensemble's disagreement, and compute taking that order."""

from __future__ import annotations

import copy
import csv
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from chgdata import candidates as C  # noqa: E402
from tests.conftest import GPAW, need_shared  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    from chgdata.models.checkpoint import load

    return load(None)


def test_spread_is_zero_for_identical_members_and_positive_for_the_shipped_ensemble(shipped):
    from chgdata.models.uncertainty import member_spread

    model, ckpt = shipped
    cell = C.rocksalt("Na", "Br", 1)
    sp = member_spread(model, ckpt, cell)
    assert 0 < sp.spread_pct < 20 and sp.formula == "NaBr" and max(sp.grid) <= 30
    twins = copy.copy(model)
    twins.members = torch.nn.ModuleList([model.members[0], copy.deepcopy(model.members[0])])
    assert member_spread(twins, ckpt, cell).spread_pct == pytest.approx(0.0, abs=1e-6)


def test_rank_order_puts_ranked_compositions_first_within_each_variant_tier(tmp_path):
    cands = [c for c in C.generate(0) if c.reduced_formula in ("NaBr", "SrTe", "LiBr")]
    proposals = tmp_path / "p.csv"
    proposals.write_text("rank,id,formula,prototype,natoms,spread_pct\n1,SrTe-rocksalt-eq,SrTe,rocksalt,2,2.0\n"
                         "2,LiBr-rocksalt-eq,LiBr,rocksalt,2,1.0\n")
    ordered = C.rank_order(cands, proposals)
    assert sorted(c.id for c in ordered) == sorted(c.id for c in cands)
    assert [c.id for c in ordered[:3]] == ["SrTe-rocksalt-eq", "LiBr-rocksalt-eq", "NaBr-rocksalt-eq"]
    assert ordered[3].id.startswith("SrTe-rocksalt-rattle")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a chgdata propose file"):
        C.rank_order(cands, bad)


def test_cli_propose_writes_the_ranking(tmp_path):
    need_shared()
    out = tmp_path / "p.csv"
    files = [GPAW / "gpaw-0001" / "CHGCAR.gz", GPAW / "gpaw-0061" / "CHGCAR.gz"]
    res = subprocess.run([sys.executable, "-m", "chgdata", "propose", *map(str, files[:1]), "--out", str(out), "-q"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(out)))
    assert [r["rank"] for r in rows] == ["1"] and rows[0]["formula"] == "Si" and float(rows[0]["spread_pct"]) > 0
