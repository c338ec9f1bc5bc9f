"""chgdata: Materials Project style charge densities and DOS as machine-learning datasets.

The Python API is the command line's workflows layer (:mod:`chgdata.app`), re-exported here lazily:
``chgdata.ingest``, ``split``, ``build_delta``, ``build_dos``, ``run``, ``verify``, ``train``, ``evaluate``,
``predict`` and ``dft_calculation``; ``open_dataset`` reads a store.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("ingest", "split", "build_delta", "build_dos", "run", "verify", "train", "evaluate", "predict",
        "dft_calculation")

__all__ = ["open_dataset", "__version__", *_API]


def __getattr__(name: str):
    # Lazy so that `import chgdata.models` does not pull in zarr/pyarrow/pymatgen.
    if name == "open_dataset":
        from chgdata.store import open_dataset

        return open_dataset
    if name == "verify":  # the chgdata.verify module is callable: chgdata.verify(store) -> VerifyReport
        import importlib

        return importlib.import_module("chgdata.verify")
    if name in _API:
        import importlib

        return getattr(importlib.import_module("chgdata.app"), name)
    raise AttributeError(name)
