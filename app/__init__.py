"""The workflows of chgdata (installed as ``chgdata.app``): one plain function per command, with typed options
and the defaults of both the command line and the Python API.

Floors, bottom up: ``chgdata`` (physics, store, contract; imports nothing above it), ``pipelines`` (Dask) and
``models`` (torch), this layer composing them, and ``cli`` (typer: parsing and printing only). ``chgdata.ingest``
and the other top-level names re-export these functions lazily.
"""

from __future__ import annotations

from .data import RunReport, build_delta, build_dos, ingest, rebuild, run, split, verify
from .dft import compute, dft, propose
from .models import (
    dft_calculation,
    ensemble,
    evaluate,
    evaluation_report,
    fit_dos,
    parse_grid,
    predict,
    predict_files,
    train,
    train_config,
)

__all__ = ["RunReport", "TrainingInterrupted", "build_delta", "build_dos", "compute", "dft", "dft_calculation",
           "ensemble", "evaluate", "evaluation_report", "fit_dos", "ingest", "parse_grid", "predict", "predict_files",
           "propose", "rebuild", "run", "split", "train", "train_config", "verify"]


def __getattr__(name: str):
    if name == "TrainingInterrupted":  # lazy: importing chgdata.app must not import torch
        from chgdata.models.train_utils import TrainingInterrupted

        return TrainingInterrupted
    raise AttributeError(name)
