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


def _reach_the_checkout() -> None:
    """Imported from a source checkout (``python -m pytest`` in the clone puts the clone first on sys.path): the
    subpackages installed as ``chgdata.pipelines``/``models``/``app``/``cli`` (pyproject ``package-dir``) are
    top-level folders beside this one, so the clone joins this package's search path."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "pipelines" / "__init__.py").is_file():
        __path__.append(str(root))


_reach_the_checkout()


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
