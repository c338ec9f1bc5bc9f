"""The command line as a process: --version, python -m chgdata, --verbose, a clean end of `chgdata run` (no Dask
shutdown traceback), the dashboard address, and one-line errors of `predict mp-…` with a bad key or no network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import chgdata
from tests.conftest import GPAW, need_shared

KEY = "abcdefghijklmnopqrstuvwxyz012345"


def _link_folders(calcs, names) -> None:
    """Calculation folders of ../shared/data/gpaw under ``calcs``, their files symlinked (nothing copied)."""
    for name in names:
        (calcs / name).mkdir(parents=True)
        for f in (GPAW / name).iterdir():
            (calcs / name / f.name).symlink_to(f)


def _chgdata(*args, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m chgdata ARGS`` in a fresh process, without a scheduler address or MP key from outside."""
    base = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "MP_API_KEY")}
    return subprocess.run([sys.executable, "-m", "chgdata", *args], env={**base, "COLUMNS": "200", **(env or {})},
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_version_and_python_m():
    from chgdata.cli.main import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"chgdata {chgdata.__version__}"
    proc = _chgdata("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"chgdata {chgdata.__version__}", proc.stderr
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0 and "--verbose" in res.output and "--version" in res.output
    assert "Exit codes" in res.output


def test_run_ends_cleanly_with_the_dashboard_address(tmp_path):
    """The whole pipeline through the CLI on three real folders: exit 0, the dashboard address on stderr, and no
    traceback or ERROR line from Dask's shutdown (workers are closed before the scheduler)."""
    need_shared()
    calcs = tmp_path / "calcs"
    _link_folders(calcs, ["gpaw-0001", "gpaw-0002", "gpaw-0003"])
    proc = _chgdata("run", "--from-dir", str(calcs), "--store", str(tmp_path / "s"), "--workers", "2", "-q",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dataset ready" in proc.stdout
    assert "Dask dashboard: http://" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr[-3000:]
    assert "distributed." not in proc.stderr, proc.stderr[-3000:]  # no Dask chatter at all (e.g. nanny kills)


def test_verbose_shows_chgdata_debug_lines(tmp_path):
    need_shared()
    calcs = tmp_path / "calcs"
    _link_folders(calcs, ["gpaw-0001"])
    (calcs / "broken").mkdir()
    (calcs / "broken" / "CHGCAR").write_text("not a CHGCAR\n")
    proc = _chgdata("--verbose", "ingest", "--from-dir", str(calcs), "--store", str(tmp_path / "s"), "-w", "1",
                    "-q", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]  # one failed, the other committed
    assert "committed 1" in proc.stdout and "failed 1" in proc.stdout
    assert "DEBUG chgdata.pipelines.ingest [worker" in proc.stderr and "broken failed:" in proc.stderr, proc.stderr
    assert "INFO chgdata.pipelines.cluster: Dask dashboard" in proc.stderr


@pytest.mark.parametrize(("key", "why"), [("wrong-key", "bad key (not 32 characters)"),
                                          (KEY, "32 characters: refused by MP, or no network here")])
def test_predict_mp_id_with_bad_key_or_no_network_is_one_line(tmp_path, key, why):
    proc = _chgdata("predict", "mp-149", "--out", str(tmp_path / "o"), env={"MP_API_KEY": key, "COLUMNS": "1000"},
                    cwd=tmp_path, timeout=180)  # wide terminal: the one line is not wrapped
    assert proc.returncode == 1, (why, proc.stdout, proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (why, proc.stderr[-3000:])
    assert "Materials Project" in lines[0] and "Traceback" not in proc.stderr
    assert key not in proc.stdout + proc.stderr
