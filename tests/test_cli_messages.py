"""CLI messages and help texts are literal text: no quote stripping, no Rich markup ("[rho, mag]" stays)."""

from __future__ import annotations

import pytest
from chgdata.cli.main import app
from typer.testing import CliRunner


def _cif(tmp_path):
    from pymatgen.core import Lattice, Structure

    p = tmp_path / "Fe.cif"
    Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(p))
    return p


def test_error_keeps_its_closing_quote(tmp_path):
    pytest.importorskip("torch")
    res = CliRunner().invoke(app, ["predict", str(_cif(tmp_path)), "--grid", "16,16", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert res.output.strip() == "error: --grid wants three positive integers nx,ny,nz, got '16,16'"


@pytest.mark.parametrize("exc, line", [
    (ValueError("columns [rho, mag] of 'x'"), "error: columns [rho, mag] of 'x'"),
    (KeyError("no material 'mp-1' in [store]"), "error: no material 'mp-1' in [store]"),  # not KeyError's repr
    (ValueError("'quoted at both ends'"), "error: 'quoted at both ends'"),
    (ValueError("[bold red]not markup[/]\nsecond line"), "error: [bold red]not markup[/] second line"),
])
def test_error_line_is_literal_and_one_line(exc, line, capsys):
    from chgdata.cli.common import cli_errors

    with pytest.raises(SystemExit) as stop, cli_errors():
        raise exc
    assert stop.value.code == 1
    assert capsys.readouterr().err == line + "\n"


def test_help_texts_keep_brackets():
    res = CliRunner().invoke(app, ["export", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "stack [rho, mag] on a last axis" in res.output


def test_piped_output_is_not_wrapped_or_truncated(tmp_path):
    """A table row wider than 80 columns reaches a pipe whole (was cut to '…' and wrapped at 80)."""
    import subprocess
    import sys

    code = ("from rich.table import Table\nfrom chgdata.cli.common import out\nt = Table('material', 'value')\n"
            "t.add_row('a-very-long-material-identifier-' * 4, 'already there 0')\nout.print(t)\n"
            "out.print('x' * 150)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "a-very-long-material-identifier-" * 4 in res.stdout and "already there 0" in res.stdout
    assert "x" * 150 in res.stdout and "…" not in res.stdout


def test_truncated_like_chgcar_is_named(tmp_path):
    pytest.importorskip("torch")
    from tests.conftest import GPAW, need_shared

    need_shared()
    import gzip

    text = gzip.open(GPAW / "gpaw-0001" / "CHGCAR.gz", "rt").read()
    bad = tmp_path / "CHGCAR_truncated"
    bad.write_text(text[: len(text) // 2])
    res = CliRunner().invoke(app, ["predict", str(_cif(tmp_path)), "--like", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "CHGCAR_truncated" in res.output and "unreadable CHGCAR" in res.output


def test_readme_lists_every_predict_format():
    pytest.importorskip("torch")
    from chgdata.models.predict_io import FORMATS

    from tests.conftest import REPO

    assert f"--format {','.join(FORMATS)}" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("exc, phrase", [
    (OSError(28, "No space left on device"), "no space left on the device: free space"),
    (MemoryError("Unable to allocate 7.5 GiB"), "out of memory (Unable to allocate 7.5 GiB)"),
    (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError: [Errno 104] Connection reset"),
])
def test_faults_of_the_machine_are_one_line_with_exit_1(exc, phrase, capsys):
    """Faults that used to end in 85-355 line tracebacks (disk full, lost scheduler, S3 retries exhausted): one
    line naming the cause and the rerun; the traceback goes to the debug log (--verbose) only."""
    import concurrent.futures

    from chgdata.cli.common import cli_errors

    lost = concurrent.futures.CancelledError("ingest_partition-1 cancelled for reason: scheduler-connection-lost.")
    for e, want in [(exc, phrase), (lost, "lost the Dask cluster (CancelledError: ingest_partition-1")]:
        with pytest.raises(SystemExit) as stop, cli_errors():
            raise e
        assert stop.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "rerun" in err, err
        assert want in " ".join(err.split()), err
