"""The ``chgdata`` command line: argument parsing only; the work happens in chgdata.pipelines and friends."""

from __future__ import annotations

import typer
from chgdata.cli import delta as _delta
from chgdata.cli import dos as _dos
from chgdata.cli import info as _info
from chgdata.cli import ingest as _ingest
from chgdata.cli.plot import plot_app

app = typer.Typer(help="Materials Project style charge densities and DOS as ML datasets (Zarr + Parquet), "
                       "and equivariant models that train on them.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)

app.command("ingest")(_ingest.ingest)
app.command("info")(_info.info)
app.command("build-delta")(_delta.build_delta)
app.command("build-dos")(_dos.build_dos)
app.add_typer(plot_app, name="plot")


if __name__ == "__main__":  # pragma: no cover
    app()
