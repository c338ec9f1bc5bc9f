"""Volumetric grids: CHGCAR headers, ρ·V → ρ conversion, and write-time validation (pure numpy)."""

from __future__ import annotations

import gzip
import math
import os
import re
from dataclasses import dataclass

import numpy as np

#: Grids larger than this are refused before anything is allocated (points; 2·10⁹ float32 = 8 GB).
MAX_GRID_POINTS = 2_000_000_000


class GridError(ValueError):
    """A volumetric file or grid is unusable; the message is one line naming the file and the problem."""


def open_text(path: str | os.PathLike):
    """Open a text file that may be gzip-, bzip2- or xz-compressed (told by its magic bytes, not its name)."""
    import bz2
    import lzma

    path = os.fspath(path)
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rt", encoding="utf-8", errors="strict")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


@dataclass(frozen=True)
class ChgcarHeader:
    """What the first lines of a CHGCAR say: lattice (Å, row vectors), atom counts and the grid shape."""

    lattice: np.ndarray
    counts: tuple[int, ...]
    symbols: tuple[str, ...]
    grid_shape: tuple[int, int, int]
    grid_line: int = 0  #: 1-based line number of the "nx ny nz" line (the grid's values follow it)

    @property
    def natoms(self) -> int:
        return int(sum(self.counts))

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.lattice)))

    @property
    def n_points(self) -> int:
        return int(np.prod(self.grid_shape))


def read_chgcar_header(path: str | os.PathLike, max_points: int = MAX_GRID_POINTS) -> ChgcarHeader:
    """Read a CHGCAR/AECCAR header without reading the grid; refuses degenerate cells and huge grids."""
    name = os.fspath(path)
    lines = 0

    def readline(fh) -> str:
        nonlocal lines
        lines += 1
        return fh.readline()

    try:
        with open_text(name) as fh:
            readline(fh)  # comment
            scale = float(readline(fh).split()[0])
            lattice = np.array([[float(x) for x in readline(fh).split()[:3]] for _ in range(3)])
            words = readline(fh).split()
            symbols: tuple[str, ...] = ()
            if words and not words[0].isdigit():  # VASP 5: a species line before the counts
                symbols = tuple(words)
                words = readline(fh).split()
            counts = tuple(int(x) for x in words)
            if readline(fh).strip()[:1] in ("s", "S"):  # selective dynamics, then Direct/Cartesian
                readline(fh)
            natoms = sum(counts)
            if natoms <= 0:
                raise GridError(f"{name}: header declares {natoms} atoms")
            if symbols and len(symbols) != len(counts):
                raise GridError(f"{name}: {len(symbols)} species names but {len(counts)} species counts")
            for _ in range(natoms):
                readline(fh)
            line = readline(fh)
            while line and not line.strip():
                line = readline(fh)
            dims = tuple(int(x) for x in line.split())
    except GridError:
        raise
    except (ValueError, IndexError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise GridError(f"{name}: unreadable CHGCAR header ({type(exc).__name__}: {exc})") from None
    if scale < 0:  # VASP: a negative scale is the cell volume
        lattice = lattice * (abs(scale) / abs(np.linalg.det(lattice))) ** (1 / 3)
    else:
        lattice = lattice * scale
    if len(dims) != 3 or min(dims) <= 0:
        raise GridError(f"{name}: bad grid line {dims!r} (expected three positive integers)")
    vol = np.linalg.det(lattice)
    if not np.isfinite(vol) or abs(vol) < 1e-6:
        raise GridError(f"{name}: degenerate lattice (volume {vol:.3g} Å^3)")
    header = ChgcarHeader(lattice, counts, symbols, dims, lines)
    if header.n_points > max_points:
        raise GridError(f"{name}: declared grid {dims} has {header.n_points:.3g} points, over the limit "
                        f"of {max_points:.3g}; refused before allocating")
    return header


#: Largest ratio of grid spacings along the three lattice vectors accepted: VASP and GPAW choose nearly uniform
#: spacings (at most 1.13 over the 299 shared CHGCAR/AECCAR files); a grid line in the wrong order breaks it.
MAX_SPACING_RATIO = 2.5


def grid_layout_problem(path: str | os.PathLike, header: ChgcarHeader) -> str | None:
    """Why a CHGCAR's grid cannot be what its header says, or None: grid dimensions that do not follow the lattice
    (a permuted "nx ny nz" line) or values after the first grid that are neither augmentation occupancies nor a
    second (magnetisation) grid. One pass over the text; pymatgen's parser accepts both silently."""
    lengths = np.linalg.norm(header.lattice, axis=1)
    spacing = lengths / np.asarray(header.grid_shape, float)
    if spacing.max() > MAX_SPACING_RATIO * spacing.min():
        order = np.argsort(np.argsort(lengths))
        likely = tuple(int(n) for n in np.sort(header.grid_shape)[order])
        hint = f"; permuted grid line? {likely} would follow the lattice" if likely != header.grid_shape else ""
        return (f"grid {header.grid_shape} on lattice vectors of {', '.join(f'{x:.2f}' for x in lengths)} Å gives "
                f"spacings {', '.join(f'{x:.3f}' for x in spacing)} Å (over {MAX_SPACING_RATIO}x apart){hint}")
    if not header.grid_line:
        return None
    need = header.n_points
    with open_text(path) as fh:
        for _ in range(header.grid_line):
            fh.readline()
        lineno = header.grid_line
        for line in fh:
            lineno += 1
            need -= len(line.split())
            if need <= 0:
                break
        if need < 0:
            return f"{-need} values after the {header.n_points}-point grid on its last line ({lineno})"
        if need > 0:
            return None  # a short grid: the parser reports it
        extra: list[str] = []
        for line in fh:
            lineno += 1
            words = line.split()
            if not words:
                continue
            if words[0].lower().startswith("augmentation"):
                return None
            if len(words) == 3 and all(w.isdigit() for w in words) and tuple(map(int, words)) == header.grid_shape:
                if len(extra) in (0, header.natoms):  # the magnetic moments per atom precede a spin grid
                    return None
                break
            extra += words
            if len(extra) > header.natoms:
                break
        if not extra:
            return None
        count = f"more than {header.natoms}" if len(extra) > header.natoms else str(len(extra))
        return (f"{count} values after the {header.n_points}-point grid (line {lineno}) that are neither "
                "augmentation occupancies nor a second grid")


#: Largest |ρ| [e/Å³] accepted on a grid: the all-electron 1s density at a heavy nucleus is ~10⁶ e/Å³ (Z³/π a₀³
#: for Z = 100); anything larger is a corrupted value, not physics.
MAX_DENSITY = 1e8


def density_from_vasp(data_rho_v: np.ndarray, volume: float, name: str, expect_shape=None) -> np.ndarray:
    """CHGCAR block (ρ·V_cell, e) → density ρ in e/Å³ as float32, validated."""
    arr = np.asarray(data_rho_v)
    if expect_shape is not None and tuple(arr.shape) != tuple(expect_shape):
        raise GridError(f"{name}: grid shape {arr.shape} does not match the declared {tuple(expect_shape)}")
    if arr.size == 0:
        raise GridError(f"{name}: empty grid")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise GridError(f"{name}: {int(bad.sum())} non-finite values (NaN/inf) in the grid")
    if not np.isfinite(volume) or volume <= 0:
        raise GridError(f"{name}: non-positive cell volume {volume!r}")
    rho = arr / volume
    peak = int(np.argmax(np.abs(rho)))
    if abs(rho.flat[peak]) > MAX_DENSITY:
        raise GridError(f"{name}: |ρ| = {abs(rho.flat[peak]):.3g} e/Å³ at grid point "
                        f"{tuple(int(i) for i in np.unravel_index(peak, rho.shape))} exceeds {MAX_DENSITY:.0e} e/Å³: "
                        "not a physical density (a corrupted value?)")
    return rho.astype(np.float32)


#: Largest ∫|ρ| / ∫ρ accepted for a valence density: pseudo densities dip below zero near some nuclei (up to 1.56
#: over the 299 shared grids); far more negative weight is a sign-flipped or otherwise corrupted block.
MAX_ABS_OVER_NET = 3.0


def sign_problem(rho: np.ndarray, name: str) -> str | None:
    """Why a total valence density (e/Å³) cannot be one, by its signs, or None."""
    net = float(rho.sum(dtype=np.float64))
    absolute = float(np.abs(rho).sum(dtype=np.float64))
    if net <= 0:
        return f"{name}: the density integrates to {net / max(rho.size, 1):.3g} e/Å³ on average (≤ 0): not a density"
    if absolute > MAX_ABS_OVER_NET * net:
        return (f"{name}: ∫|ρ| dV is {absolute / net:.2f}× ∫ρ dV (over {MAX_ABS_OVER_NET:g}; valence densities stay "
                "below 1.6): a sign-flipped or corrupted block?")
    return None


def cell_volume(lattice) -> float:
    """|a·(b×c)| of a 3×3 lattice (rows a, b, c; Å → Å³) in plain IEEE double arithmetic in a fixed order: the
    same bits on every CPU. (``Structure.volume`` goes through numpy's ``det``, i.e. the machine's BLAS/LAPACK
    kernel, whose last bit differs between CPUs: it made stored densities and published checksums
    machine-dependent.)"""
    (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = ([float(x) for x in row] for row in np.asarray(lattice).reshape(3, 3))
    return abs(a1 * (b2 * c3 - b3 * c2) - a2 * (b1 * c3 - b3 * c1) + a3 * (b1 * c2 - b2 * c1))


def electrons(rho: np.ndarray, volume: float) -> float:
    """∫ρ dV over the cell for ρ in e/Å³ on a uniform grid (electrons)."""
    return float(np.asarray(rho, dtype=np.float64).mean() * volume)


def electron_count_flag(n_electrons: float, tol: float = 0.05) -> str | None:
    """A reason to flag (not drop) a density whose electron count is not close to an integer."""
    if abs(n_electrons - round(n_electrons)) > tol:
        return f"electron count {n_electrons:.4f} is not an integer within {tol}"
    if n_electrons <= 0:
        return f"non-positive electron count {n_electrons:.4f}"
    return None


def augmentation_to_json(data_aug: dict | None) -> str | None:
    """PAW augmentation occupancies as pymatgen parses them (``{"total": {atom: values}, "diff": ...}``, atoms
    1-based) → JSON text for the store; complex values (VASP's imaginary-part blocks) as ``{"re", "im"}``."""
    import json

    if not data_aug or not any(data_aug.values()):
        return None
    out: dict[str, dict[str, object]] = {}
    for block, atoms in data_aug.items():
        if isinstance(atoms, (list, tuple)):  # older pymatgen: the block's text lines
            out[block] = {"lines": [str(x) for x in atoms]}
            continue
        out[block] = {}
        for atom, values in (atoms or {}).items():
            v = np.asarray(values)
            out[block][str(atom)] = ({"re": v.real.tolist(), "im": v.imag.tolist()} if np.iscomplexobj(v)
                                     else v.astype(np.float64).tolist())
    return json.dumps(out)


def augmentation_from_json(text: str | None) -> dict | None:
    """Inverse of :func:`augmentation_to_json`: the ``data_aug`` dict pymatgen's ``Chgcar`` writes back."""
    import json

    if not text:
        return None
    out: dict[str, object] = {}
    for block, atoms in json.loads(text).items():
        if "lines" in atoms:
            out[block] = list(atoms["lines"])
            continue
        out[block] = {int(a): (np.asarray(v["re"]) + 1j * np.asarray(v["im"]) if isinstance(v, dict)
                               else np.asarray(v, dtype=np.float64)) for a, v in atoms.items()}
    return out


# ------------------------------------------------------------------ choosing a grid for a structure

def fft_size(n: int) -> int:
    """Smallest m >= n with only the prime factors 2, 3, 5 (the sizes VASP and FFTs like)."""
    m = max(1, n)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1

def grid_for_spacing(lattice: np.ndarray, spacing: float = 0.1) -> tuple[int, int, int]:
    """Grid with point spacing at most ``spacing`` Å along each lattice vector (2·3·5-smooth sizes)."""
    if spacing <= 0:
        raise ValueError("grid spacing must be positive")
    lengths = np.linalg.norm(np.asarray(lattice, np.float64).reshape(3, 3), axis=1)
    return tuple(fft_size(math.ceil(L / spacing - 1e-9)) for L in lengths)

def grid_of_chgcar(path: str | os.PathLike) -> tuple[int, int, int]:
    """The (nx, ny, nz) of a CHGCAR/PARCHG/AECCAR file, read from its header (gzip allowed)."""
    return read_chgcar_header(path).grid_shape

def parse_grid(text: str) -> tuple[int, int, int]:
    """``"nx,ny,nz"`` (also ``x``, ``×`` or spaces between) as three positive integers."""
    parts = [t for t in re.split(r"[,x× ]+", text.strip()) if t]
    if len(parts) != 3 or not all(t.isdigit() and int(t) > 0 for t in parts):
        raise ValueError(f"--grid wants three positive integers nx,ny,nz, got {text!r}")
    return tuple(int(t) for t in parts)
