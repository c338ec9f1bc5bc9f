"""chgdata: Materials Project style charge densities and DOS as machine-learning datasets."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["open_dataset", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import chgdata.models` does not pull in zarr/pyarrow/pymatgen.
    if name == "open_dataset":
        from chgdata.store import open_dataset

        return open_dataset
    raise AttributeError(name)
