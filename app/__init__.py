"""The workflows of chgdata (installed as ``chgdata.app``): one plain function per command, with typed options
and the defaults of both the command line and the Python API.

Floors, bottom up: ``chgdata`` (physics, store, contract; imports nothing above it), ``pipelines`` (Dask) and
``models`` (torch), this layer composing them, and ``cli`` (typer: parsing and printing only). ``chgdata.ingest``
and the other top-level names re-export these functions lazily.
"""

from __future__ import annotations

from .data import RunReport, build_delta, build_dos, ingest, run, split, verify
from .models import dft_calculation, evaluate, evaluation_report, fit_dos, predict, train

__all__ = ["RunReport", "build_delta", "build_dos", "dft_calculation", "evaluate", "evaluation_report", "fit_dos",
           "ingest", "predict", "run", "split", "train", "verify"]
