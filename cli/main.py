"""The ``chgdata`` command line: argument parsing only; the work happens in chgdata.pipelines and friends."""

from __future__ import annotations

import typer
from chgdata.cli import catalog as _catalog
from chgdata.cli import delta as _delta
from chgdata.cli import dos as _dos
from chgdata.cli import evaluate as _evaluate
from chgdata.cli import info as _info
from chgdata.cli import ingest as _ingest
from chgdata.cli import predict as _predict
from chgdata.cli import run as _run
from chgdata.cli import split as _split
from chgdata.cli import train as _train
from chgdata.cli import verify as _verify
from chgdata.cli.plot import plot_app

app = typer.Typer(help="Materials Project style charge densities and DOS as ML datasets (Zarr + Parquet), "
                       "and equivariant models that train on them.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None)  # help texts are literal: "[rho, mag]" must not be read as markup

app.command("run")(_run.run)
app.command("ingest")(_ingest.ingest)
app.command("info")(_info.info)
app.command("split")(_split.split)
app.command("build-delta")(_delta.build_delta)
app.command("build-dos")(_dos.build_dos)
app.command("verify")(_verify.verify)
app.command("predict")(_predict.predict)
app.command("evaluate")(_evaluate.evaluate)
app.add_typer(plot_app, name="plot")
app.command("train")(_train.train)
app.command("publish")(_catalog.publish)
app.command("export")(_catalog.export)
app.command("rebuild")(_catalog.rebuild)
app.add_typer(_catalog.catalog_app, name="catalog")


if __name__ == "__main__":  # pragma: no cover
    app()
