"""Options shared by the commands, and turning library errors into one-line CLI errors."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.text import Text

STORE = typer.Option("data/store", "--store", "-s", help="Dataset directory or fsspec URL (s3://bucket/prefix).")
WORKERS = typer.Option(2, "--workers", "-w", min=1, help="Local Dask worker processes (one thread each).")
SCHEDULER = typer.Option(None, "--scheduler", envvar="DASK_SCHEDULER_ADDRESS",
                         help="Address of an existing Dask scheduler (tcp://host:port); default: a local cluster.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")

#: Width of the consoles when the output is not a terminal (a pipe, a file, CI): tables and lines stay whole.
PIPED_WIDTH = 10_000


def _console(stderr: bool = False) -> Console:
    """Rich on a terminal; plain, unwrapped lines (no colour codes, no 80-column wrapping) when piped."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH, soft_wrap=True)


console = _console(stderr=True)
out = _console()


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Library errors end the command with one clear line on stderr and exit code 1 (no traceback)."""
    from chgdata.grid import GridError
    from chgdata.sources.records import SourceError
    from chgdata.store import StoreError

    try:
        yield
    except (StoreError, SourceError, GridError, FileNotFoundError, KeyError, ValueError) as exc:
        console.print(error_line(exc), highlight=False, soft_wrap=True)
        sys.exit(1)


def error_line(exc: BaseException) -> Text:
    """``error: <message>`` as literal text: no Rich markup is parsed (``[rho, mag]`` stays), quotes are kept
    (only a KeyError's repr quotes go: its message is its first argument)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    return Text.assemble(("error:", "bold red"), " ", " ".join(str(msg).split("\n")))


#: Exit code of a pipeline command that finished but could not process some materials: the others are committed,
#: the failed ones are listed on stderr and recorded in failures.parquet, and a rerun retries them. (1: an error
#: stopped the command; 2: a bad command line.)
EXIT_MATERIALS_FAILED = 3


def exit_if_failed(n_failed: int) -> None:
    """End the command with :data:`EXIT_MATERIALS_FAILED` when materials failed (after everything else ran)."""
    if n_failed:
        sys.exit(EXIT_MATERIALS_FAILED)
