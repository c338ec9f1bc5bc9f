"""The ``chgdata`` command line: argument parsing only; the work happens in chgdata.pipelines and friends."""

from __future__ import annotations

import logging
import sys

import typer
from chgdata.cli import catalog as _catalog
from chgdata.cli import compute as _compute
from chgdata.cli import delta as _delta
from chgdata.cli import dft as _dft
from chgdata.cli import dos as _dos
from chgdata.cli import evaluate as _evaluate
from chgdata.cli import info as _info
from chgdata.cli import ingest as _ingest
from chgdata.cli import predict as _predict
from chgdata.cli import propose as _propose
from chgdata.cli import run as _run
from chgdata.cli import split as _split
from chgdata.cli import train as _train
from chgdata.cli import verify as _verify
from chgdata.cli.plot import plot_app

app = typer.Typer(help="Materials Project style charge densities and DOS as ML datasets (Zarr + Parquet), "
                       "and equivariant models that train on them.",
                  epilog="Exit codes: 0 success; 1 an error stopped the command (one line on stderr); 2 bad command "
                         "line; 3 the command finished but some materials failed (listed on stderr, recorded in "
                         "failures.parquet; a rerun retries them).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None)  # help texts are literal: "[rho, mag]" must not be read as markup


def setup_logging(verbose: bool) -> None:
    """chgdata's module loggers to stderr: INFO (dashboard address, plans) by default, DEBUG with --verbose, when
    Dask's own INFO messages are shown too."""
    root = logging.getLogger("chgdata")
    for handler in [h for h in root.handlers if getattr(h, "_chgdata_cli", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._chgdata_cli = True  # replaced, not stacked, when the app runs again in one process (tests)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose
                                           else "%(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)  # propagates: the root logger has no handler here
    if verbose:
        logging.getLogger("distributed").setLevel(logging.INFO)


def _version(value: bool) -> None:
    if value:
        import chgdata

        typer.echo(f"chgdata {chgdata.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", help="Debug messages of chgdata and Dask's INFO messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the chgdata version and exit."),
) -> None:
    setup_logging(verbose)


app.command("run")(_run.run)
app.command("ingest")(_ingest.ingest)
app.command("compute")(_compute.compute)
app.command("dft")(_dft.dft)
app.command("propose")(_propose.propose)
app.command("info")(_info.info)
app.command("split")(_split.split)
app.command("build-delta")(_delta.build_delta)
app.command("build-dos")(_dos.build_dos)
app.command("fit-dos")(_dos.fit_dos)
app.command("verify")(_verify.verify)
app.command("predict")(_predict.predict)
app.command("evaluate")(_evaluate.evaluate)
app.add_typer(plot_app, name="plot")
app.command("train")(_train.train)
app.command("ensemble")(_train.ensemble)
app.command("publish")(_catalog.publish)
app.command("export")(_catalog.export)
app.command("rebuild")(_catalog.rebuild)
app.add_typer(_catalog.catalog_app, name="catalog")


if __name__ == "__main__":  # pragma: no cover
    app()
