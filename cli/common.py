"""Options shared by the commands, and turning library errors into one-line CLI errors."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import sys
from collections.abc import Iterator

import typer
from chgdata.app import data as data_defaults
from rich.console import Console
from rich.text import Text

STORE = typer.Option("data/store", "--store", "-s", help="Dataset directory or fsspec URL (s3://bucket/prefix).")
WORKERS = typer.Option(data_defaults.WORKERS, "--workers", "-w", min=1,
                       help="Local Dask worker processes (one thread each).")
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
    """Library errors and faults of the machine (:func:`fault_message`) end the command with one clear line on
    stderr and exit code 1 (no traceback; ``--verbose`` logs it)."""
    from chgdata.grid import GridError
    from chgdata.sources.records import SourceError
    from chgdata.store import StoreError

    try:
        yield
    except (StoreError, SourceError, GridError, FileNotFoundError, KeyError, ValueError) as exc:
        console.print(error_line(exc), highlight=False, soft_wrap=True)
        sys.exit(1)
    except (OSError, MemoryError, concurrent.futures.CancelledError, *_object_store_errors()) as exc:  # the machine
        logging.getLogger("chgdata").debug("fault", exc_info=True)  # the traceback with --verbose
        console.print(Text.assemble(("error:", "bold red"), " ", fault_message(exc)), highlight=False,
                      soft_wrap=True)
        sys.exit(1)


def _object_store_errors() -> tuple[type[BaseException], ...]:
    """botocore's own exception base (an S3 endpoint unreachable after retries), where botocore is installed."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return ()
    return (BotoCoreError,)


def fault_message(exc: BaseException) -> str:
    """One line for a fault of the environment (full disk, lost Dask scheduler, out of memory, I/O or network
    errors after retries): the cause and what to do. Committed materials are never lost by these: a store is
    written index-last, so a rerun resumes."""
    detail = " ".join(str(exc).split())[:240] or type(exc).__name__
    resume = "committed materials are kept and a rerun resumes"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"no space left on the device{where}: free space (or use another --store/--out), then rerun; {resume}"
    lost = type(exc).__name__ in ("CommClosedError", "FutureCancelledError", "CancelledError")
    if lost or "scheduler-connection-lost" in detail:
        return (f"lost the Dask cluster ({type(exc).__name__}: {detail}): check that the scheduler and workers are "
                f"running (or drop --scheduler for a local cluster), then rerun; {resume}")
    if isinstance(exc, MemoryError):
        return f"out of memory ({detail}): use fewer --workers, a smaller grid or a bigger machine; {resume}"
    return f"{type(exc).__name__}: {detail} (I/O or network); fix the cause and rerun; {resume}"


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
