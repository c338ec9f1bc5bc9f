"""Local VASP-format calculation folders: CHGCAR[.gz], AECCAR0/2, vasprun.xml[.gz], pymatgen DOS JSON.

A folder is a calculation when it holds any of these files; its name is the material id. Structures come from
the CHGCAR, else from the DOS file (vasprun final structure or the CompleteDos structure), else POSCAR.
The code is GPAW when a ``meta.json`` says so (the shared GPAW set writes VASP-format files), else VASP; the DFT
settings come from that meta.json, the vasprun.xml, or INCAR/KPOINTS (:mod:`chgdata.sources.settings`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chgdata.grid import GridError, grid_layout_problem, read_chgcar_header
from chgdata.sources.records import MaterialRecord, SourceError, validate_local_id
from chgdata.sources.settings import META_NAMES, gpaw_meta, gpaw_settings, incar_settings, vasprun_settings
from chgdata.store import file_sha256, file_stats, utcnow

COMPRESSIONS = ("", ".gz", ".bz2", ".xz")
CHGCAR_NAMES = tuple(f"CHGCAR{c}" for c in COMPRESSIONS)
AECCAR_NAMES = {k: tuple(f"AECCAR{k}{c}" for c in COMPRESSIONS) for k in (0, 2)}
DOS_NAMES = tuple(f"{b}{c}" for b in ("vasprun.xml", "dos.json", "complete_dos.json") for c in COMPRESSIONS)
POSCAR_NAMES = tuple(f"{b}{c}" for b in ("POSCAR", "CONTCAR") for c in COMPRESSIONS)
#: Files with a task suffix (atomate/custodian: CHGCAR.relax2.gz, vasprun.xml.static.xz) are found too, for these
#: bases; CHGCAR.saed[.gz] is the user reference of build-delta, never a density.
SUFFIXED_BASES = ("CHGCAR", "AECCAR0", "AECCAR2", "vasprun.xml")
#: GPAW's PAW atomic density matrices of a ``chgdata compute`` folder (``D_<atom>``: (nspins, ni, ni)).
PAW_NAME = "paw.npz"
NOT_TASKS = ("saed",)


CALC_NAMES = set(CHGCAR_NAMES) | set(DOS_NAMES) | {n for v in AECCAR_NAMES.values() for n in v}


def _task_files(names: set[str], base: str) -> list[str]:
    """``base.<task>[.gz|.bz2|.xz]`` among ``names``, best first: a ``static`` task, then the highest relaxN."""
    found = []
    for n in names:
        if not n.startswith(base + "."):
            continue
        rest = n[len(base) + 1:]
        for c in COMPRESSIONS[1:]:
            rest = rest.removesuffix(c)
        if rest and "." not in rest and rest not in NOT_TASKS and rest not in ("gz", "bz2", "xz"):
            found.append((rest, n))
    def rank(t: tuple[str, str]):  # static first, then natural order (relax10 after relax2), highest first
        return t[0] == "static", [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", t[0])]

    return [n for _, n in sorted(found, key=rank, reverse=True)]


def _first(folder: Path, names, names_in_folder: set[str] | None = None) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    base = next((b for b in SUFFIXED_BASES if names and names[0] == b), None)
    if base and names_in_folder:
        for n in _task_files(names_in_folder, base):
            if (folder / n).is_file():
                return folder / n
    return None


def _is_calc_file(name: str) -> bool:
    return name in CALC_NAMES or any(_task_files({name}, b) for b in SUFFIXED_BASES)


@dataclass(frozen=True)
class LocalCalc:
    """The files of one calculation folder (absolute paths as strings; None when absent)."""

    material_id: str
    folder: str
    chgcar: str | None
    aeccar0: str | None
    aeccar2: str | None
    dos: str | None
    poscar: str | None
    meta: str | None = None  # meta.json of a GPAW folder
    paw: str | None = None  # paw.npz of a chgdata compute folder (GPAW D_asii)

    @property
    def files(self) -> list[str]:
        return [p for p in (self.chgcar, self.aeccar0, self.aeccar2, self.dos, self.poscar, self.meta, self.paw)
                if p]


    def grid_points(self) -> int:
        """Declared grid points (0 when there is no readable CHGCAR header): used to size partitions."""
        path = self.chgcar or self.aeccar2
        if not path:
            return 0
        try:
            return read_chgcar_header(path).n_points
        except GridError:
            return 0


def discover(root: str | os.PathLike) -> tuple[list[LocalCalc], list[tuple[str, str]]]:
    """Walk ``root`` for calculation folders. Returns (calculations, [(folder id, reason)] of bad folders)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"--from-dir {root}: not a directory")
    calcs: dict[str, LocalCalc] = {}
    bad: list[tuple[str, str]] = []
    for folder, _dirs, names in sorted(os.walk(root)):
        if not any(_is_calc_file(n) for n in names):
            if set(POSCAR_NAMES).intersection(names):  # a structure alone is no calculation: say so
                bad.append((Path(folder).name, f"{folder}: structure file only: no CHGCAR, AECCAR0/2 or DOS file "
                                               "(vasprun.xml, dos.json, complete_dos.json)"))
            continue
        folder = Path(folder)
        mid = folder.name
        try:
            validate_local_id(mid)
        except SourceError as exc:
            bad.append((mid, str(exc)))
            continue
        if mid in calcs:
            bad.append((mid, f"duplicate material id {mid!r}: {calcs[mid].folder} and {folder}"))
            continue
        present = set(names)
        calc = LocalCalc(mid, str(folder), *(str(p) if p else None for p in (
            _first(folder, CHGCAR_NAMES, present), _first(folder, AECCAR_NAMES[0], present),
            _first(folder, AECCAR_NAMES[2], present), _first(folder, DOS_NAMES, present),
            _first(folder, POSCAR_NAMES))),
                         meta=str(p) if (p := _first(folder, META_NAMES)) else None,
                         paw=str(folder / PAW_NAME) if PAW_NAME in present else None)
        calcs[mid] = calc
    return list(calcs.values()), bad


def _first_non_numeric(path: str, header) -> tuple[int, str] | None:
    """(line number, token) of the first token in the first grid block that is not a number, if any."""
    from chgdata.grid import open_text

    skip = 9 + header.natoms + (1 if header.symbols else 0)
    remaining = header.n_points
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno <= skip or not line.strip() and remaining == header.n_points:
                continue
            for token in line.split():
                try:
                    float(token)
                except ValueError:
                    return lineno, token[:20]
                remaining -= 1
            if remaining <= 0:
                return None
    return None


def _gzip_error(path: str) -> str | None:
    """Why a gzip file does not decompress cleanly (CRC, truncation, bad deflate data), or None."""
    import gzip
    import zlib

    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return None
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _read_volumetric(path: str, expect_natoms: int | None = None):
    """Parse a CHGCAR-format file with pymatgen after checking its header (clear one-line errors)."""
    from pymatgen.io.vasp.outputs import Chgcar

    header = read_chgcar_header(path)
    try:
        chg = Chgcar.from_file(path)
    except Exception as exc:  # pymatgen raises many kinds on bad text; name file and cause in one line
        if (broken := _gzip_error(path)) is not None:
            raise GridError(f"{path}: corrupt gzip stream ({broken})") from None
        count = re.search(r"Expected (\d+) values, got (\d+)", str(exc))
        bad = _first_non_numeric(path, header)
        if bad:
            raise GridError(f"{path}: non-numeric token {bad[1]!r} in the grid at line {bad[0]}") from None
        if count:
            raise GridError(f"{path}: grid {header.grid_shape} declares {count[1]} values but the file holds "
                            f"{count[2]} (truncated file or wrong grid count)") from None
        raise GridError(f"{path}: cannot parse ({type(exc).__name__}: {str(exc)[:200]})") from None
    total = chg.data.get("total")
    if total is None or tuple(total.shape) != header.grid_shape:
        got = None if total is None else total.shape
        raise GridError(f"{path}: grid {got} does not match the declared {header.grid_shape} "
                        "(truncated or wrong grid count)")
    if len(chg.structure) != header.natoms:
        raise GridError(f"{path}: {len(chg.structure)} sites parsed but {header.natoms} declared")
    if (why := grid_layout_problem(path, header)) is not None:
        raise GridError(f"{path}: {why}")
    return chg, header


def load(calc: LocalCalc) -> MaterialRecord:
    """Read one calculation folder into a :class:`MaterialRecord` (raises SourceError/GridError/ValueError)."""
    from chgdata.dos_io import read_dos, read_dos_and_structure

    stats = file_stats(calc.files)  # before reading: a file rewritten meanwhile differs next run
    structure = None
    total = diff = ae = data_aug = None
    grid = None
    if calc.chgcar:
        chg, header = _read_volumetric(calc.chgcar)
        structure, total, diff, grid = chg.structure, chg.data["total"], chg.data.get("diff"), header.grid_shape
        data_aug = chg.data_aug
        if diff is not None and tuple(diff.shape) != grid:
            raise GridError(f"{calc.chgcar}: magnetisation grid {diff.shape} differs from total {grid}")
    if calc.aeccar0 and calc.aeccar2:
        a0, h0 = _read_volumetric(calc.aeccar0)
        a2, h2 = _read_volumetric(calc.aeccar2)
        if h0.grid_shape != h2.grid_shape:
            raise GridError(f"{calc.folder}: AECCAR0 grid {h0.grid_shape} differs from AECCAR2 {h2.grid_shape}")
        ae = a0.data["total"] + a2.data["total"]
        structure = structure if structure is not None else a2.structure
    dos = None
    if calc.dos and structure is None:  # the structure comes with the DOS: one parse of the file for both
        try:
            dos, structure = read_dos_and_structure(calc.dos)
        except Exception as exc:  # noqa: BLE001 - bad JSON/XML/gzip: one line naming the file
            raise SourceError(f"{calc.dos}: unreadable DOS file ({type(exc).__name__}: {str(exc)[:200]})") from None
    elif calc.dos:
        dos = read_dos(calc.dos, natoms=len(structure))
    if structure is None and calc.poscar:
        from pymatgen.core import Structure

        structure = Structure.from_file(calc.poscar)
    if structure is None:
        raise SourceError(f"{calc.folder}: no structure in any file (need a CHGCAR, a DOS with a structure or "
                          "a POSCAR)")
    if len(structure) == 0:
        raise SourceError(f"{calc.folder}: structure has zero atoms")
    if total is None and dos is None and ae is None:
        raise SourceError(f"{calc.folder}: neither a charge density nor a DOS could be read")
    code, settings = dft_settings(calc)
    return MaterialRecord(
        material_id=calc.material_id, source=code, structure=structure, total=total, diff=diff,
        ae_total=ae, dos=dos, input_files=calc.files, input_sha256=file_sha256(calc.files),
        input_stat=stats, retrieved_at=utcnow(), expected_grid=grid, dft_code=code, dft_settings=settings,
        data_aug=data_aug, paw_matrices=read_paw_matrices(calc.paw, len(structure)) if calc.paw else None,
        prototype=read_prototype(calc))


def read_paw_matrices(path: str, natoms: int) -> list[np.ndarray]:
    """The D_asii of ``paw.npz``: one finite, symmetric (nspins, ni, ni) array per atom (SourceError naming the
    file otherwise)."""
    try:
        with np.load(path) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...: one line naming the file
        raise SourceError(f"{path}: unreadable PAW density matrices ({type(exc).__name__}: {str(exc)[:120]})") from None
    if sorted(arrays) != sorted(f"D_{a}" for a in range(natoms)):
        raise SourceError(f"{path}: expected D_0 … D_{natoms - 1} for {natoms} atoms, found {sorted(arrays)[:6]}")
    out = []
    for a in range(natoms):
        D = arrays[f"D_{a}"]
        if D.ndim != 3 or D.shape[1] != D.shape[2] or D.shape[0] not in (1, 2):
            raise SourceError(f"{path}: D_{a} has shape {D.shape}, expected (nspins, ni, ni)")
        if not np.all(np.isfinite(D)):
            raise SourceError(f"{path}: D_{a} holds non-finite values")
        if not np.allclose(D, D.transpose(0, 2, 1), atol=1e-8):
            raise SourceError(f"{path}: D_{a} is not symmetric")
        out.append(D)
    return out


def dft_settings(calc: LocalCalc) -> tuple[str, dict]:
    """(code, settings) of a folder: GPAW from its meta.json, else VASP from vasprun.xml or INCAR/KPOINTS."""
    meta = gpaw_meta(calc.folder) if calc.meta else None
    if meta is not None and str((meta.get("settings") or {}).get("code", "")).lower() == "gpaw":
        return "gpaw", gpaw_settings(meta)
    if calc.dos and os.path.basename(calc.dos).startswith("vasprun"):
        return "vasp", vasprun_settings(calc.dos)
    return "vasp", incar_settings(calc.folder)


def read_prototype(calc: LocalCalc) -> str | None:
    """The structure prototype named in the folder's ``meta.json`` (as the GPAW set writes it), else None."""
    meta = gpaw_meta(calc.folder) if calc.meta else None
    proto = (meta or {}).get("prototype")
    return str(proto) if proto else None

