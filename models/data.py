"""torch datasets that read straight from a chgdata store (Zarr + Parquet), and the probe-edge builder.

Design
------
* :class:`DensityProbes` is a map-style dataset over materials. Item ``i`` of epoch ``e`` draws a random subset
  of the material's grid points with ``np.random.default_rng([seed, e, i])`` (no global random state, same
  draw whatever the worker) and reads only the Zarr chunks holding them (coordinate selection), never the
  whole store. It returns a one-structure batch (see :mod:`chgdata.models.keys`) with atom edges (vesin), probe
  positions and targets; probe–atom edges are built on the training device by :func:`attach_probe_edges`
  (brute force over the atom images near the cell, vectorised in torch), which is what makes probe-heavy
  batches cheap on a GPU.
* :class:`ProbeBudgetBatchSampler` groups materials into batches of at most ``batch_size`` structures and at
  most ``max_probes`` probes, shuffled per epoch and sharded across ranks (it is the distributed sampler).
* :func:`make_loader` builds the ``DataLoader`` with ``spawn``/``forkserver`` workers: zarr v3 and ``fork``
  can deadlock, and each worker opens the store itself (the dataset pickles without an open store).
* Speed: per-material static data (positions, Z, cell, atom edges as tensors) is computed once per process
  and cached; grids of at most ``slice_max_points`` points are read as the material's contiguous slice once
  and kept in a per-process LRU cache of at most ``cache_bytes`` (a coordinate selection on a small grid costs
  as much as reading its chunk); larger grids use Zarr coordinate selection of the probes only.
* The sampler yields ``(epoch, index)`` pairs, so persistent workers draw the right epoch's probes without
  being told (``set_epoch`` on a dataset copy in a worker would not reach them).
"""

from __future__ import annotations

import math
import multiprocessing
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from chgdata import contract as C

from . import keys as K
from .batch_edges import atom_images
from .graph import collate, structure_batch

#: What each density target reads from the store.
TARGET_ARRAYS = {"delta": C.DELTA, "total": C.RHO}


def make_splits(material_ids: Sequence[str], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Train/val/test split by material id: a seeded permutation of the sorted ids (reproducible)."""
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9) or min(fractions) < 0:
        raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1")
    ids = sorted(set(material_ids))
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    pick = [ids[i] for i in perm]
    return {"train": sorted(pick[:n_train]), "val": sorted(pick[n_train:n_train + n_val]),
            "test": sorted(pick[n_train + n_val:])}


class _StoreBacked(torch.utils.data.Dataset):
    """Holds the index rows; opens the store lazily in whichever process reads (never pickled open)."""

    def __init__(self, store: str, material_ids: Sequence[str] | None, r_cut: float, seed: int,
                 dtype: torch.dtype):
        from chgdata.store import open_dataset

        self.store = str(store)
        ds = open_dataset(self.store)
        rows = {r[C.COL_ID]: r for r in ds.index.to_pylist()}
        ids = list(material_ids) if material_ids is not None else sorted(rows)
        missing = [m for m in ids if m not in rows]
        if missing:
            raise KeyError(f"materials not in {self.store}: {missing[:5]}")
        self.rows = [rows[m] for m in ids]
        self.material_ids = ids
        self.r_cut = float(r_cut)
        self.seed = int(seed)
        self.epoch = 0
        self.dtype = dtype
        self._ds = None
        self._static: dict[int, dict[str, torch.Tensor]] = {}
        self.probe_r_cut: float | None = None  # set by DensityProbes: batches then carry the atom images

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None
        state["_static"] = {}
        for k in ("_grid_cache", "_grid_cache_bytes"):
            state.pop(k, None)
        return state

    def _key(self, item) -> tuple[int, int]:
        """``(epoch, index)`` from an int (current epoch) or an ``(epoch, index)`` pair from the sampler."""
        if isinstance(item, tuple | list):
            return int(item[0]), int(item[1])
        return self.epoch, int(item)

    def static_batch(self, index: int) -> dict[str, torch.Tensor]:
        """Positions, Z, cell and atom edges of material ``index`` as a one-structure batch, cached per process."""
        hit = self._static.get(index)
        if hit is None:
            pos, numbers, cell = self._structure(self.rows[index])
            hit = structure_batch(pos, numbers, cell, self.r_cut, dtype=self.dtype)
            hit["_cell64"] = torch.as_tensor(cell)  # float64 cell for probe positions (dropped from batches)
            if self.probe_r_cut is not None:  # the images attach_probe_edges needs, made here in the worker
                atom, shift = atom_images(pos, cell, self.probe_r_cut)
                hit[K.IMAGE_ATOM] = torch.as_tensor(atom, dtype=torch.int64)
                hit[K.IMAGE_SHIFT] = torch.as_tensor(shift, dtype=torch.int64).reshape(-1, 3)
                hit[K.IMAGE_BATCH] = torch.zeros(len(atom), dtype=torch.int64)
            self._static[index] = hit
        return {k: v for k, v in hit.items() if not k.startswith("_")}  # a new dict: callers add probes

    @property
    def ds(self):
        if self._ds is None:
            from chgdata.store import open_dataset

            self._ds = open_dataset(self.store)
        return self._ds

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _structure(self, row) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cell = np.asarray(row[C.COL_LATTICE], np.float64).reshape(3, 3)
        frac = np.asarray(row[C.COL_FRAC], np.float64).reshape(-1, 3)
        numbers = np.asarray(row[C.COL_Z], np.int64)
        return frac @ cell, numbers, cell


class DensityProbes(_StoreBacked):
    """Random grid-point probes and their density targets (e/Å³) per material.

    ``target``: ``"delta"`` (ρ − ρ_SAED, needs build-delta) or ``"total"`` (ρ). ``n_spin_channels`` 2 gives
    (↑, ↓) = ((t + m)/2, (t − m)/2) with m the magnetisation (0 for non-spin materials); 1 gives t.
    ``probes``: probes per material per epoch (all points when the grid is smaller).
    ``slice_max_points``: grids up to this many points are read whole (contiguous slice, cached in an LRU of
    ``cache_bytes`` per process); larger grids read only the probes by coordinate selection (0: always that).
    ``probe_r_cut`` (Å): also return the atom images :func:`attach_probe_edges` needs (built here, in the
    loader's workers, instead of on the training device's host thread).
    ``weighting``: ``"nmae"`` adds ``PROBE_WEIGHT`` ∝ 1 / ρ̄_material with ρ̄ = N_electrons / V (e/Å³), mean 1
    over the materials, so a weighted L1 over a material's probes estimates its NMAE term (the validation
    metric weighs every material equally, whatever its density); ``"none"`` leaves the probes unweighted.
    """

    def __init__(self, store: str, material_ids: Sequence[str] | None = None, target: str = "delta",
                 probes: int = 1000, r_cut: float = 4.0, n_spin_channels: int = 1, seed: int = 0,
                 dtype: torch.dtype = torch.float32, slice_max_points: int = 1 << 21,
                 cache_bytes: int = 512 << 20, weighting: str = "none",
                 probe_r_cut: float | None = None):
        super().__init__(store, material_ids, r_cut, seed, dtype)
        self.probe_r_cut = None if probe_r_cut is None else float(probe_r_cut)
        if target not in TARGET_ARRAYS:
            raise ValueError(f"density target must be one of {sorted(TARGET_ARRAYS)}, not {target!r}")
        if probes < 1:
            raise ValueError("probes per structure must be >= 1")
        no_grid = [r[C.COL_ID] for r in self.rows if r.get(C.COL_RHO_OFFSET, -1) < 0]
        if no_grid:
            raise ValueError(f"materials without a valence density cannot train a density model: {no_grid[:5]}")
        if target == "delta":
            have = self._delta_ids()
            lacking = [m for m in self.material_ids if m not in have]
            if lacking:
                raise ValueError(f"no Δρ for {lacking[:5]} ({len(lacking)} materials): run chgdata build-delta")
        if weighting not in ("none", "nmae"):
            raise ValueError(f"probe weighting must be 'none' or 'nmae', not {weighting!r}")
        self.weighting = weighting
        self.weights = self._material_weights() if weighting == "nmae" else None
        self.target = target
        self.array = TARGET_ARRAYS[target]
        self.probes = int(probes)
        self.n_spin_channels = int(n_spin_channels)
        self.slice_max_points = int(slice_max_points)
        self.cache_bytes = int(cache_bytes)

    def _material_weights(self) -> np.ndarray:
        """Weights ∝ 1 / ρ̄_material, ρ̄ = N_electrons / V (e/Å³), with mean 1 over the materials."""
        mean = []
        for r in self.rows:
            volume = abs(np.linalg.det(np.asarray(r[C.COL_LATTICE], np.float64).reshape(3, 3)))
            mean.append(float(r[C.COL_NELECT]) / volume)
        mean = np.asarray(mean)
        if not np.all(np.isfinite(mean) & (mean > 0)):
            bad = [m for m, v in zip(self.material_ids, mean) if not (np.isfinite(v) and v > 0)]
            raise ValueError(f"weighting 'nmae' needs a positive electron count per material: {bad[:5]}")
        return (1.0 / mean) / np.mean(1.0 / mean)

    def _delta_ids(self) -> set[str]:
        t = self.ds.table(C.DELTA_INDEX)
        return set() if t is None else set(t.column(C.COL_ID).to_pylist())

    def n_probes(self, index: int) -> int:
        return min(self.probes, int(self.rows[index][C.COL_NPOINTS]))

    def sample_points(self, index: int, epoch: int | None = None) -> np.ndarray:
        """Sorted flat grid indices drawn for item ``index`` in ``epoch`` (default: the current epoch)."""
        n = int(self.rows[index][C.COL_NPOINTS])
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        k = self.n_probes(index)
        if k >= n:
            return np.arange(n)
        return np.sort(rng.choice(n, size=k, replace=False, shuffle=False))  # exactly k distinct points

    def targets(self, index: int, points: np.ndarray) -> np.ndarray:
        """(n_points, n_spin_channels) float32 targets at flat grid indices ``points``."""
        row = self.rows[index]
        if int(row[C.COL_NPOINTS]) <= self.slice_max_points:
            return self._cached_targets(index)[points]
        return self._channels(index, points)

    def _read(self, array: str, mid: str, points: np.ndarray | None, row: dict) -> np.ndarray:
        """A whole grid or the values at ``points``, checked against the store's checksums (Dataset.check_reads)."""
        return self.ds.grid(array, mid, row) if points is None else self.ds.read_points(array, mid, points, row)

    def _channels(self, index: int, points: np.ndarray | None) -> np.ndarray:
        """Targets read from the store: at ``points`` (coordinate selection) or the whole grid (None)."""
        row = self.rows[index]
        mid = row[C.COL_ID]
        t = np.asarray(self._read(self.array, mid, points, row), np.float32)
        if self.n_spin_channels == 1:
            return t[:, None]
        if row.get(C.COL_MAG_OFFSET, -1) is not None and row.get(C.COL_MAG_OFFSET, -1) >= 0:
            m = np.asarray(self._read(C.MAG, mid, points, row), np.float32)
        else:
            m = np.zeros_like(t)
        return np.stack([(t + m) * np.float32(0.5), (t - m) * np.float32(0.5)], axis=1)

    def _cached_targets(self, index: int) -> np.ndarray:
        """The whole (n, channels) target grid of a small material: one contiguous read, LRU-cached."""
        if not hasattr(self, "_grid_cache"):
            self._grid_cache: OrderedDict = OrderedDict()
            self._grid_cache_bytes = 0
        grid = self._grid_cache.get(index)
        if grid is None:
            grid = self._channels(index, None)
            self._grid_cache[index] = grid
            self._grid_cache_bytes += grid.nbytes
            while self._grid_cache_bytes > self.cache_bytes and len(self._grid_cache) > 1:
                _, old = self._grid_cache.popitem(last=False)
                self._grid_cache_bytes -= old.nbytes
        else:
            self._grid_cache.move_to_end(index)
        return grid

    def _axes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-axis position tables ``(n_a, 3)`` = ``arange(n_a)/n_a * cell[a]`` (cached): a grid point's
        Cartesian position is the sum of three gathered rows."""
        key = "_axes"
        hit = self._static[index].get(key)
        if hit is None:
            cell = self._static[index]["_cell64"].numpy()
            shape = self.rows[index][C.COL_GRID]
            np_dtype = torch.empty(0, dtype=self.dtype).numpy().dtype
            hit = tuple((np.arange(n)[:, None] / n * cell[a][None]).astype(np_dtype) for a, n in enumerate(shape))
            self._static[index][key] = hit
        return hit

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        epoch, index = self._key(item)
        row = self.rows[index]
        batch = self.static_batch(index)
        ax, ay, az = self._axes(index)
        points = self.sample_points(index, epoch)
        _, ny, nz = row[C.COL_GRID]
        ij, k = np.divmod(points, nz)
        i, j = np.divmod(ij, ny)
        batch[K.PROBE_POSITIONS] = torch.from_numpy(ax[i] + ay[j] + az[k])
        batch[K.PROBE_BATCH] = torch.zeros(len(points), dtype=torch.int64)
        batch[K.TARGET_DENSITY] = torch.from_numpy(self.targets(index, points)).to(self.dtype)
        if self.weights is not None:
            batch[K.PROBE_WEIGHT] = torch.full((len(points),), float(self.weights[index]), dtype=self.dtype)
        return batch


class DosWindows(_StoreBacked):
    """Structures with their DOS windows (``variant`` "normalised" or "absolute"), read once at start."""

    def __init__(self, store: str, material_ids: Sequence[str] | None = None, variant: str = "normalised",
                 r_cut: float = 4.0, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(store, material_ids, r_cut, seed, dtype)
        ids, windows, energies = self.ds.dos_windows(self.material_ids, variant=variant)
        if list(ids) != self.material_ids:
            raise ValueError("DOS windows are missing for some materials: run chgdata build-dos")
        self.windows = np.asarray(windows, np.float32)
        self.energies = np.asarray(energies, np.float64)

    def n_probes(self, index: int) -> int:
        return 0

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        _, index = self._key(item)
        batch = self.static_batch(index)
        batch[K.TARGET_DOS] = torch.tensor(self.windows[index][None], dtype=self.dtype)
        return batch


class ProbeBudgetBatchSampler(Sampler[list[int]]):
    """Batches of ≤ ``batch_size`` structures and ≤ ``max_probes`` probes (a structure alone may exceed it).

    Shuffled per epoch from ``seed``; with ``world_size`` > 1 each rank takes every ``world_size``-th material
    and all ranks yield the same number of batches (DistributedDataParallel needs that). Batches are lists of
    ``(epoch, index)`` pairs (the datasets accept both those and plain indices). ``skip`` batches at the start
    of the next epoch are left out (resuming in the middle of an epoch) and the count is then reset.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, max_probes: int | None = None, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.sizes = list(sizes)
        self.batch_size = int(batch_size)
        self.max_probes = max_probes
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0
        if max_probes is not None and max_probes < 1:
            raise ValueError("max_probes must be >= 1")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self, rank: int) -> list[list[int]]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(len(self.sizes)) if self.shuffle
                 else np.arange(len(self.sizes)))
        batches, current, probes = [], [], 0
        for i in order[rank::self.world_size].tolist():
            over = self.max_probes is not None and current and probes + self.sizes[i] > self.max_probes
            if len(current) == self.batch_size or over:
                batches.append(current)
                current, probes = [], 0
            current.append(i)
            probes += self.sizes[i]
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._batches(self.rank)
        n = min(len(self._batches(r)) for r in range(self.world_size)) if self.world_size > 1 else len(mine)
        skip, self.skip = self.skip, 0
        return iter([[(self.epoch, i) for i in b] for b in mine[skip:n]])

    def __len__(self) -> int:
        return min(len(self._batches(r)) for r in range(self.world_size))


def make_loader(dataset: _StoreBacked, batch_size: int, max_probes: int | None = None, workers: int = 0,
                shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                start_method: str = "forkserver", pin_memory: bool = False,
                prefetch_factor: int | None = None) -> DataLoader:
    """DataLoader over ``dataset`` with a :class:`ProbeBudgetBatchSampler`; ``spawn``/``forkserver`` workers.

    Collation happens in the workers; probe–atom edges are not built here (see :func:`attach_probe_edges`).
    """
    if start_method not in ("spawn", "forkserver"):
        raise ValueError("zarr v3 and fork can deadlock: use start_method 'spawn' or 'forkserver'")
    sampler = ProbeBudgetBatchSampler([dataset.n_probes(i) for i in range(len(dataset))], batch_size,
                                      max_probes, shuffle, seed, rank, world_size)
    ctx = multiprocessing.get_context(start_method) if workers > 0 else None
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      multiprocessing_context=ctx, persistent_workers=workers > 0, pin_memory=pin_memory,
                      prefetch_factor=prefetch_factor if workers > 0 else None)


