"""Candidate crystals for new DFT data: prototypes × element substitutions, with lattice constants from radii.

Each prototype is a small cell (1–5 atoms, pymatgen ``Structure``) whose lattice constant follows from a bond
length d [Å]: Shannon ionic radii of the guessed oxidation states for ionic prototypes (rock salt a = 2d), Slater
atomic radii for covalent ones (zinc blende a = 4d/√3), 12-coordinate metallic radii for intermetallics, scaled
by 0.96 (B2), 0.94 (Heusler) and 0.93 (half-Heusler) for their 8-coordinate contacts (CuZn, FeAl, Co₂TiAl, TiNiSn
within 2.5 %). Every composition gets the variants of the shared set: ``eq``, isotropic strain ±4 %, and a
rattled (σ 0.03–0.1 Å) strained copy; all deterministic from a seed. Cells with Fe, Co or Ni start ferromagnetic
(:data:`chgdata.dft.settings.MAGNETIC_MOMENTS`).

Ids are readable and stable, ``<reduced formula>-<prototype>-<variant>`` (``NaBr-rocksalt-eq``), so a
generated list can grow without renaming what exists.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Species, Structure

from chgdata.dft.settings import initial_magmoms

#: Elements with a free-atom density in the shipped SAED table (``chgdata/atoms``): new data stays within them.
ELEMENTS = ("Ag Al As Au B Ba Br C Ca Cd Cl Co Cu F Fe Ga Ge In K Li Mg Mo N Na Nb Ni O P Pd Pt S Sc Se Si Sn "
            "Sr Te Ti V Zn Zr").split()

CATIONS = {1: ["Li", "Na", "K", "Ag", "Cu"], 2: ["Mg", "Ca", "Sr", "Ba", "Zn", "Cd", "Ni", "Co", "Fe"],
           3: ["Sc", "Al", "Ga", "In"], 4: ["Ti", "Zr", "Sn", "Ge", "Nb", "V", "Mo"]}
ANIONS = {1: ["F", "Cl", "Br"], 2: ["O", "S", "Se", "Te"], 3: ["N", "P", "As"]}
METALS = ["Al", "Ag", "Au", "Cu", "Ni", "Co", "Fe", "Pd", "Pt", "Ti", "Zr", "Nb", "Mo", "V", "Sc", "Zn", "Mg",
          "Ga", "In", "Sn", "Li", "Ca"]


@dataclass(frozen=True)
class Candidate:
    """One structure to compute: ``id``, the prototype, the variant label and the cell with initial moments."""

    id: str
    prototype: str
    variant: str
    structure: Structure = field(compare=False)
    magmoms: tuple[float, ...] = field(compare=False, default=())

    @property
    def reduced_formula(self) -> str:
        return self.structure.composition.reduced_formula

    @property
    def spin(self) -> bool:
        return any(m != 0 for m in self.magmoms)

    def as_entry(self) -> dict:
        """The JSON-able entry of a compute task (:func:`chgdata.dft.calculation.compute`)."""
        return {"id": self.id, "prototype": self.prototype, "variant": self.variant,
                "structure": self.structure.as_dict(), "magmoms": list(self.magmoms)}


# ---- radii [Å] ------------------------------------------------------------------------------------------------
def ionic_radius(symbol: str, oxidation: int, cn: str = "VI") -> float:
    """Shannon radius of ``symbol`` in ``oxidation`` at coordination ``cn`` (high spin where it matters); the
    nearest tabulated coordination, then pymatgen's average ionic radius, when that one is missing."""
    sp = Species(symbol, oxidation)
    for c in (cn, "VI", "IV", "VIII", "IX", "XII"):
        for spin in ("", "High Spin"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # only one spin state tabulated: that one is right
                    return float(sp.get_shannon_radius(c, spin))
            except (KeyError, ValueError, TypeError):
                continue
    radii = Element(symbol).ionic_radii
    return float(radii[oxidation] if oxidation in radii else PAULING_ANION_RADII[symbol, oxidation])


#: Pauling radii [Å] of the anions that Shannon's table lacks.
PAULING_ANION_RADII = {("P", -3): 2.12, ("As", -3): 2.22, ("C", -4): 2.60}


def metallic_radius(symbol: str) -> float:
    """12-coordinate metallic radius (pymatgen), the Slater atomic radius where none is tabulated."""
    el = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no data": the atomic radius below
        r = el.metallic_radius
    return float(r if r and r > 0 else el.atomic_radius)


def covalent_radius(symbol: str) -> float:
    return float(Element(symbol).atomic_radius)


def mean_metallic_radius(symbols: Iterable[str]) -> float:
    return float(np.mean([metallic_radius(s) for s in symbols]))


# ---- prototype cells ------------------------------------------------------------------------------------------
def _fcc(a: float) -> Lattice:
    return Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float))


def rocksalt(a_: str, x: str, q: int) -> Structure:
    return Structure(_fcc(2 * (ionic_radius(a_, q) + ionic_radius(x, -q))), [a_, x], [[0, 0, 0], [.5, .5, .5]])


def zincblende(a_: str, x: str) -> Structure:
    d = covalent_radius(a_) + covalent_radius(x)
    return Structure(_fcc(4 * d / np.sqrt(3)), [a_, x], [[0, 0, 0], [.25, .25, .25]])


def wurtzite(a_: str, x: str) -> Structure:
    d = covalent_radius(a_) + covalent_radius(x)
    a = d / np.sqrt(3 / 8)
    u = 3 / 8
    return Structure(Lattice.hexagonal(a, a * np.sqrt(8 / 3)), [a_, a_, x, x],
                     [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, .5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, .5 + u]])


def fluorite(site: str, other: str, q_site: int, q_other: int) -> Structure:
    """CaF₂ type: ``site`` 8-coordinated at the origin, two ``other`` at ±¼ (4-coordinated). The fluorite AX₂
    has the cation on ``site``; the antifluorite A₂X (Na₂O) the anion."""
    d = ionic_radius(site, q_site, "VIII") + ionic_radius(other, q_other, "IV")
    return Structure(_fcc(4 * d / np.sqrt(3) * 0.975), [site, other, other],
                     [[0, 0, 0], [.25, .25, .25], [.75, .75, .75]])


def rutile(a_: str, x: str, q: int) -> Structure:
    u = 0.305
    d = ionic_radius(a_, q) + ionic_radius(x, -q // 2, "III")
    a = d / (np.sqrt(2) * u)
    return Structure(Lattice.tetragonal(a, 0.644 * a), [a_, a_, x, x, x, x],
                     [[0, 0, 0], [.5, .5, .5], [u, u, 0], [1 - u, 1 - u, 0], [.5 + u, .5 - u, .5],
                      [.5 - u, .5 + u, .5]])


def perovskite(a_: str, b: str, x: str, qa: int, qb: int, qx: int) -> Structure:
    ra, rb, rx = ionic_radius(a_, qa, "XII"), ionic_radius(b, qb), ionic_radius(x, qx)
    a = max(2 * (rb + rx), np.sqrt(2) * (ra + rx)) * 0.98
    return Structure(Lattice.cubic(a), [a_, b, x, x, x],
                     [[.5, .5, .5], [0, 0, 0], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])


def b2(a_: str, b: str) -> Structure:
    d = 2 * mean_metallic_radius([a_, b]) * 0.96
    return Structure(Lattice.cubic(2 * d / np.sqrt(3)), [a_, b], [[0, 0, 0], [.5, .5, .5]])


def l12(a_: str, b: str) -> Structure:
    """A₃B (Cu₃Au)."""
    a = 2 * np.sqrt(2) * mean_metallic_radius([a_, a_, a_, b])
    return Structure(Lattice.cubic(a), [b, a_, a_, a_], [[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


def heusler(x: str, y: str, z: str) -> Structure:
    """X₂YZ (L2₁), primitive fcc cell of four atoms."""
    d = 2 * mean_metallic_radius([x, x, y, z]) * 0.94
    return Structure(_fcc(4 * d / np.sqrt(3)), [z, y, x, x], [[0, 0, 0], [.5, .5, .5], [.25, .25, .25],
                                                               [.75, .75, .75]])


def half_heusler(x: str, y: str, z: str) -> Structure:
    """XYZ (C1_b, MgAgAs type): Z at the origin, Y at ½, X at ¼ (X the small, tetrahedral atom)."""
    d = 2 * mean_metallic_radius([x, y, z]) * 0.93
    return Structure(_fcc(4 * d / np.sqrt(3)), [z, y, x], [[0, 0, 0], [.5, .5, .5], [.25, .25, .25]])


# ---- compositions ----------------------------------------------------------------------------------------------
def prototype_cells() -> Iterator[tuple[str, Structure]]:
    """``(prototype, cell)`` of every substitution; charge-balanced for the ionic prototypes."""
    for q in (1, 2, 3):
        for a_, x in itertools.product(CATIONS[q], ANIONS[q]):
            yield "rocksalt", rocksalt(a_, x, q)
    for a_, x in [("Ti", "C"), ("Zr", "C"), ("Nb", "N"), ("Mo", "C"), ("Sc", "C"), ("Ti", "O"), ("Nb", "C")]:
        yield "rocksalt", Structure(_fcc(2 * (metallic_radius(a_) * 0.72 + covalent_radius(x) * 0.95)), [a_, x],
                                    [[0, 0, 0], [.5, .5, .5]])
    covalent = [("Zn", "Te"), ("Cd", "S"), ("Cd", "Se"), ("Mg", "Se"), ("Mg", "Te"), ("Zn", "Se"), ("Zn", "S"),
                ("In", "N"), ("Al", "N"), ("Ga", "N"), ("B", "N"), ("Cu", "Br"), ("Ag", "Br"), ("Cu", "F"),
                ("Ge", "C"), ("Sn", "C"), ("Ga", "As"),
                ("Al", "As"), ("In", "P"), ("Ga", "P"), ("Sn", "Si"), ("Sn", "Ge"), ("Cd", "Te"), ("Zn", "O"),
                ("Mg", "S"), ("Cu", "S")]
    for a_, x in covalent:
        yield "zincblende", zincblende(a_, x)
        yield "wurtzite", wurtzite(a_, x)
    for a_ in CATIONS[2]:
        for x in ANIONS[1]:
            yield "fluorite", fluorite(a_, x, 2, -1)
    for a_ in ["Li", "Na", "K"]:
        for x in ANIONS[2]:
            yield "antifluorite", fluorite(x, a_, -2, 1)
    for a_ in ["Mg"]:
        for x in ["Ge", "Sn"]:
            yield "antifluorite", Structure(_fcc(4 * (metallic_radius(a_) + covalent_radius(x)) / np.sqrt(3) * 0.93),
                                            [x, a_, a_], [[0, 0, 0], [.25, .25, .25], [.75, .75, .75]])
    for a_ in ["Ti", "Sn", "Ge", "Zr", "Nb", "V", "Mo"]:
        yield "rutile", rutile(a_, "O", 4)
    for a_ in ["Mg", "Zn", "Ni", "Co", "Fe", "Cd"]:
        yield "rutile", rutile(a_, "F", 2)
    for a_, b in itertools.product(["Ca", "Sr", "Ba"], ["Ti", "Zr", "Sn", "Ge"]):
        yield "perovskite", perovskite(a_, b, "O", 2, 4, -2)
    for a_, b in itertools.product(["Na", "K"], ["Nb", "V"]):
        yield "perovskite", perovskite(a_, b, "O", 1, 5, -2)
    for a_, b in itertools.product(["Na", "K"], ["Mg", "Zn", "Ni", "Co", "Fe", "Cd", "Ca"]):
        yield "perovskite", perovskite(a_, b, "F", 1, 2, -1)
    for a_, b in itertools.combinations(METALS, 2):
        yield "B2", b2(a_, b)
    for a_, b in itertools.permutations(["Ni", "Cu", "Pd", "Pt", "Au", "Ag", "Al", "Co", "Fe", "Ti", "Sc", "Zr"],
                                        2):
        if a_ in ("Ni", "Cu", "Pd", "Pt", "Au", "Ag", "Al", "Co", "Fe"):
            yield "L12", l12(a_, b)
    for x, y, z in itertools.product(["Co", "Ni", "Fe", "Cu", "Pd"], ["Ti", "Zr", "V", "Nb", "Sc"],
                                     ["Al", "Ga", "In", "Sn", "Si", "Ge"]):
        yield "heusler", heusler(x, y, z)
    for x, y, z in itertools.product(["Ni", "Co", "Pd", "Pt"], ["Ti", "Zr", "Nb", "Sc"], ["Sn", "Ge", "Ga", "In"]):
        yield "half-heusler", half_heusler(x, y, z)
    for x, y, z in itertools.product(["Li", "Na"], ["Zn", "Mg", "Cd"], ["N", "P", "As"]):
        yield "half-heusler", half_heusler(y, x, z)


def _strain(s: Structure, eps: np.ndarray) -> Structure:
    out = s.copy()
    out.lattice = Lattice(s.lattice.matrix @ (np.eye(3) + eps).T)  # fractional coordinates kept: atoms follow
    return out


def _rattle(s: Structure, rng: np.random.Generator, amp: float) -> Structure:
    d = rng.normal(0.0, amp, (len(s), 3))
    d -= d.mean(axis=0)
    return Structure(s.lattice, s.species, s.cart_coords + d, coords_are_cartesian=True, to_unit_cell=True)


def _random_strain(rng: np.random.Generator, diag: float, off: float) -> np.ndarray:
    e = np.diag(rng.uniform(-diag, diag, 3))
    o = rng.uniform(-off, off, 3)
    e[0, 1] = e[1, 0] = o[0]
    e[0, 2] = e[2, 0] = o[1]
    e[1, 2] = e[2, 1] = o[2]
    return e


#: Variant labels in the order they are computed: every composition's ``eq`` first, then the others.
VARIANTS = ("eq", "rattle", "strain+4%", "strain-4%")


def variants(prototype: str, cell: Structure, seed: int) -> list[tuple[str, Structure]]:
    """The shared set's variants of one cell (rattled: a 2×1×1 supercell of one-atom-per-species cells)."""
    rng = np.random.default_rng([seed, abs(hash_str(prototype + cell.composition.reduced_formula))])
    base = cell if len(cell) > 2 else cell * (2, 1, 1)
    amp = float(rng.uniform(0.03, 0.1))
    return [("eq", cell),
            (f"rattle{amp:.3f}+strain", _rattle(_strain(base, _random_strain(rng, 0.02, 0.01)), rng, amp)),
            ("strain+4%", _strain(cell, 0.04 * np.eye(3))),
            ("strain-4%", _strain(cell, -0.04 * np.eye(3)))]


def hash_str(text: str) -> int:
    """A stable 31-bit hash (Python's ``hash`` of a str changes between processes)."""
    import zlib

    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def generate(seed: int = 0, exclude_formulas: Iterable[str] = ()) -> list[Candidate]:
    """Every candidate, ``eq`` variants first (in a seeded permutation of compositions), then the others, so any
    prefix of the list covers as many compositions as it can. Compositions in ``exclude_formulas`` (reduced
    formulas: the shared data's, the reserved ones) and elements outside :data:`ELEMENTS` are left out; a
    composition that two prototypes produce keeps both (polymorphs)."""
    exclude = {Composition(f).reduced_formula for f in exclude_formulas}
    cells: dict[tuple[str, str], Structure] = {}
    for prototype, cell in prototype_cells():
        formula = cell.composition.reduced_formula
        if formula in exclude or any(el.symbol not in ELEMENTS for el in cell.composition):
            continue
        cells.setdefault((formula, prototype), cell)
    order = np.random.default_rng([seed, 28]).permutation(len(cells))
    keys = [list(cells)[i] for i in order]
    by_rank: list[list[Candidate]] = [[] for _ in VARIANTS]
    for formula, prototype in keys:
        for rank, (label, s) in enumerate(variants(prototype, cells[formula, prototype], seed)):
            mag = tuple(initial_magmoms([sp.symbol for sp in s.species]))
            by_rank[rank].append(Candidate(f"{formula}-{prototype}-{label}", prototype, label, s, mag))
    return [c for rank in by_rank for c in rank]


def shared_formulas(root: Path | None = None) -> set[str]:
    """Reduced formulas of the shared crystals (``../shared/data/*/manifest.csv``); empty where absent."""
    import csv

    root = root or Path(__file__).resolve().parents[2] / "shared" / "data"
    out: set[str] = set()
    for manifest in sorted(root.glob("*/manifest.csv")):
        with open(manifest, newline="") as f:
            out |= {Composition(row["formula"]).reduced_formula for row in csv.DictReader(f) if row.get("formula")}
    return out


def generate_new(seed: int = 0) -> list[Candidate]:
    """:func:`generate` without the shared data's compositions and the reserved ones."""
    from chgdata.reserved import reserved_formulas

    return generate(seed, shared_formulas() | set(reserved_formulas()))


def from_files(paths: Iterable[Path]) -> list[Candidate]:
    """One candidate per structure file (CIF, POSCAR, … as pymatgen reads them), named after the file's stem."""
    out = []
    for path in paths:
        path = Path(path)
        try:
            s = Structure.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds for unreadable files
            raise ValueError(f"{path}: not a structure pymatgen can read ({type(exc).__name__}: {exc})") from None
        stem = re.sub(r"[^A-Za-z0-9._+-]", "_", path.name.split(".")[0] or path.name)
        out.append(Candidate(stem, "file", path.name, s, tuple(initial_magmoms([sp.symbol for sp in s.species]))))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"structure files with the same name stem: {sorted({i for i in ids if ids.count(i) > 1})}")
    return out


def composition_key(c: Candidate) -> str:
    """What the variants of one generated cell share: ``<formula>-<prototype>`` (a file's candidate: its id)."""
    return c.id[: -len(c.variant) - 1] if c.variant and c.id.endswith("-" + c.variant) else c.id


def rank_order(cands: list[Candidate], proposals: Path) -> list[Candidate]:
    """``cands`` reordered by a ``chgdata propose`` CSV: variant tier first (as :func:`generate`: every eq, then
    the rattled, …), within a tier the ranked compositions by rank, then the unranked in their given order."""
    import csv

    with open(proposals, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"rank", "id"} <= set(rows[0]):
        raise ValueError(f"{proposals}: not a chgdata propose file (columns rank, id)")
    rank = {}
    for r in rows:
        rank.setdefault(r["id"].removesuffix("-eq") if r["id"].endswith("-eq") else r["id"], int(r["rank"]))

    def key(ic: tuple[int, Candidate]):
        i, c = ic
        tier = next((t for t, v in enumerate(VARIANTS) if c.variant.startswith(v)), 0)
        return tier, rank.get(composition_key(c), len(rank) + i)

    return [c for _, c in sorted(enumerate(cands), key=key)]
