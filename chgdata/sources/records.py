"""What every source hands the pipelines: one material's structure, grids and DOS, with provenance."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Materials Project ids: mp-149, mvc-1234 (also accepts the task-style "mp-149-GGA" suffix-free form only).
MP_ID = re.compile(r"^(mp|mvc)-\d{1,9}$")
#: Local material ids come from folder names: letters, digits, '.', '_' and '-' only, no path separators.
LOCAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SourceError(RuntimeError):
    """A material could not be fetched or read; the message is one line and never holds a secret."""


def validate_mp_id(material_id: str) -> str:
    mid = str(material_id).strip()
    if not MP_ID.match(mid):
        raise SourceError(f"malformed Materials Project id {mid[:60]!r} (expected e.g. 'mp-149' or 'mvc-12')")
    return mid


def validate_local_id(material_id: str) -> str:
    if not LOCAL_ID.match(material_id) or ".." in material_id:
        raise SourceError(f"unusable material id {material_id[:60]!r} (folder names must be letters, digits, "
                          "'.', '_' or '-')")
    return material_id


@dataclass
class MaterialRecord:
    """One material as read from a source (grids still in the VASP ρ·V convention, electrons).

    ``total`` and ``diff`` are pymatgen ``Chgcar.data`` blocks (total density × V_cell and
    (ρ↑ − ρ↓) × V_cell); ``ae_total`` is AECCAR0 + AECCAR2 (all-electron, core included) when present.
    """

    material_id: str
    source: str
    structure: Any  # pymatgen Structure
    total: np.ndarray | None = None
    diff: np.ndarray | None = None
    ae_total: np.ndarray | None = None
    dos: Any = None  # chgdata.dos.RawDos
    task_id: str | None = None
    calc_type: str | None = None  # MP task's calculation type, e.g. "GGA Static" or "GGA+U Static"
    run_type: str | None = None  # MP task's functional, e.g. "GGA" or "GGA+U"
    database_version: str | None = None
    input_files: list[str] = field(default_factory=list)
    input_sha256: str | None = None
    input_stat: list[str] | None = None  # "size:mtime_ns" per input file, taken before reading (local only)
    retrieved_at: str | None = None
    expected_grid: tuple[int, int, int] | None = None
    prototype: str | None = None
    dft_code: str | None = None  # "vasp" | "gpaw"
    dft_settings: dict[str, Any] = field(default_factory=dict)  # xc, cut-off (eV), k-points, setups/POTCARs, ...
    data_aug: dict | None = None  # PAW augmentation occupancies of the CHGCAR (pymatgen Chgcar.data_aug)
    paw_matrices: list[np.ndarray] | None = None  # GPAW D_asii per atom, (nspins, ni, ni) electrons (paw.npz)
