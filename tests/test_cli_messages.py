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
