"""Which code made a local calculation and with what DFT settings (kept per material in the index).

GPAW folders (the shared GPAW set) carry a ``meta.json`` whose ``settings`` say code, mode, cut-off, xc, k-points,
smearing and setups; VASP folders carry them in ``vasprun.xml`` (INCAR, KPOINTS, POTCAR titles), read here up to the
first ionic step only, or in INCAR/KPOINTS files. Settings are returned as a flat JSON-able dict (energies in eV).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from chgdata.grid import open_text

META_NAMES = ("meta.json", "meta.json.gz")
#: INCAR tags kept from a vasprun (the ones that change the density); the rest of the INCAR is not stored.
INCAR_KEYS = ("ENCUT", "PREC", "GGA", "METAGGA", "LHFCALC", "HFSCREEN", "IVDW", "ISPIN", "ISMEAR", "SIGMA",
              "LDAU", "LDAUU", "LDAUJ", "LDAUL", "LASPH", "EDIFF", "NELECT", "ICHARG", "LSORBIT", "LNONCOLLINEAR")


def gpaw_meta(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``meta.json`` of a GPAW folder, or None when the folder has none (ValueError if unreadable)."""
    for name in META_NAMES:
        path = Path(folder) / name
        if path.is_file():
            try:
                with open_text(path) as fh:
                    return json.load(fh)
            except (ValueError, OSError) as exc:
                raise ValueError(f"{path}: unreadable meta.json ({type(exc).__name__}: {exc})") from None
    return None


def gpaw_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """DFT settings of a GPAW ``meta.json``: its ``settings`` plus k-point mesh, bands, spin and versions."""
    out = {k: v for k, v in (meta.get("settings") or {}).items()}
    out.pop("code", None)
    for key in ("kpts_mp", "kpts_ibz", "nbands", "nspins", "n_valence"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    if meta.get("versions"):
        out["versions"] = meta["versions"]
    return out


def _value(el: ET.Element) -> Any:
    text = (el.text or "").strip()
    kind = el.get("type")
    if kind == "logical":
        return text.upper().strip(".").startswith("T")
    if kind == "string":
        return text
    words = text.split()
    try:
        nums = [int(w) for w in words] if kind == "int" else [float(w) for w in words]
    except ValueError:
        return text
    return nums[0] if len(nums) == 1 else nums


def vasprun_settings(path: str | os.PathLike) -> dict[str, Any]:
    """INCAR tags (:data:`INCAR_KEYS`), k-point generation and POTCAR titles of a ``vasprun.xml[.gz]``, read up to
    the first ``<calculation>`` (the grids and DOS are not parsed here); {} when the file has none of them."""
    out: dict[str, Any] = {}
    try:
        with open_text(path) as fh:
            for _event, el in ET.iterparse(fh, events=("end",)):
                if el.tag == "generator":
                    out["program_version"] = " ".join(
                        str(_value(i)) for i in el.findall("i") if i.get("name") in ("program", "version"))
                elif el.tag == "incar":
                    out["incar"] = {i.get("name"): _value(i) for i in el.findall("i") if i.get("name") in INCAR_KEYS}
                elif el.tag == "generation":
                    kp: dict[str, Any] = {"scheme": el.get("param")}
                    for v in el.findall("v"):
                        if v.get("name") in ("divisions", "shift"):
                            kp[v.get("name")] = _value(v)
                    out["kpoints"] = kp
                elif el.tag == "array" and el.get("name") == "atomtypes":
                    fields = [f.text for f in el.findall("field")]
                    if "pseudopotential" in fields:
                        pos = fields.index("pseudopotential")
                        out["potcars"] = [rc.findall("c")[pos].text.strip() for rc in el.iter("rc")]
                elif el.tag in ("calculation", "structure") and "incar" in out and "potcars" in out:
                    break
    except (ET.ParseError, OSError, EOFError, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"{path}: unreadable vasprun settings ({type(exc).__name__}: {exc})") from None
    return out


def incar_settings(folder: str | os.PathLike) -> dict[str, Any]:
    """INCAR tags (:data:`INCAR_KEYS`) and KPOINTS mesh of plain INCAR/KPOINTS files in ``folder`` ({} if none)."""
    from pymatgen.io.vasp import Incar, Kpoints

    out: dict[str, Any] = {}
    folder = Path(folder)
    if (folder / "INCAR").is_file():
        incar = Incar.from_file(str(folder / "INCAR"))
        out["incar"] = {k: incar[k] for k in INCAR_KEYS if k in incar}
    if (folder / "KPOINTS").is_file():
        kp = Kpoints.from_file(str(folder / "KPOINTS"))
        out["kpoints"] = {"scheme": kp.style.name, "divisions": [list(k) for k in kp.kpts][:1]}
    return out


def settings_json(settings: dict[str, Any]) -> str:
    """The index's ``dft_settings`` text: compact JSON with sorted keys (non-ASCII kept)."""
    return json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)


def _shared(parsed: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """(settings equal in every dict, keys that differ between them)."""
    shared: dict[str, Any] = {}
    varying = []
    for key in sorted(set().union(*parsed)) if parsed else []:
        if len({json.dumps(p.get(key), sort_keys=True) for p in parsed}) == 1:
            shared[key] = parsed[0][key]
        else:
            varying.append(key)
    return shared, varying


def card_section(codes: list[str | None], settings: list[str | None]) -> dict[str, Any]:
    """The card's ``dft`` section: per code (gpaw, vasp), the settings all its materials share and the keys that
    vary between them (those are in each material's ``dft_settings`` index column)."""
    by_code: dict[str, list[dict[str, Any]]] = {}
    for code, text in zip(codes, settings):
        by_code.setdefault(code or "unknown", []).append(json.loads(text) if text else {})
    shared, varying = {}, {}
    for code, parsed in sorted(by_code.items()):
        shared[code], varying[code] = _shared(parsed)
    return {"codes": sorted(by_code), "settings": shared, "varying_per_material": varying,
            "per_material": "index column dft_settings (JSON text)"}
