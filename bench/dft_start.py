"""Predicted densities at work in GPAW, on the shipped density model's grouped val and test crystals.

Per crystal (GPAW, the shared settings, one core): SCF iterations and wall time from GPAW's default start, from the
converged density and D_asii (the floor), from SAED alone and from the model's density (both with atomic D_asii);
NSCF on the model's density (atomic D_asii, the default of ``chgdata dft --nscf``, and D_asii relaxed with the
density fixed) and on SAED's (atomic) against the converged SCF: gap error, band-energy MAE (occupied + 4
empty bands, aligned at the VBM of gapped crystals, else E_F), DOS window MSE (the build-dos window, σ 0.1 eV,
max-normalised) beside the shipped kernel DOS model's MSE for the same crystal, and for gapped crystals also with
the NSCF's E_F put at the SCF's height above the VBM (inside a gap GPAW's E_F is fixed only loosely by the
smearing, and the window is cut around it), NSCF wall time / SCF's, and GPAW's energy at the fixed density against
the SCF's (meV/atom).
Nothing here fits anything. Results are appended per crystal to ``--jsonl`` (a rerun skips what is there)::

    OMP_NUM_THREADS=1 python bench/dft_start.py --splits val,test --max-atoms 2 --budget-min 60
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from chgdata.models.checkpoint import load
from chgdata.models.dft import starts_for
from chgdata.models.predict_dos import load_dos_model, predict_dos
from chgdata.models.predict_io import StructureInput
from pymatgen.core import Structure

from chgdata.dft.runs import band_errors, density_of, nscf, raw_dos, scf
from chgdata.dos import smear_window
from chgdata.dos_io import read_dos

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def folder_of(fid: str) -> Path:
    return SHARED / ("gpaw-more" if fid.startswith("gpaw-m") else "gpaw") / fid


def window(raw) -> np.ndarray:
    return smear_window(raw, 0.1, -10.0, 10.0, 400).normalised


def vbm(run) -> float:
    e = run.eigenvalues
    return float(e[e <= run.efermi_eV + 1e-9].max())


def one(fid: str, model, ckpt, dos_model, dos_ckpt) -> dict:
    meta = json.loads((folder_of(fid) / "meta.json").read_text())
    structure = Structure.from_dict(meta["structure"])
    st = starts_for(structure, model, ckpt)
    ref = scf(st.atoms)
    rho, D = density_of(ref)
    runs = {"default": ref, "converged": scf(st.atoms, rho_sR=rho, D_asii=D, start="converged"),
            "saed": scf(st.atoms, rho_sR=st.saed, start="saed"),
            "predicted": scf(st.atoms, rho_sR=st.predicted, start="predicted")}
    ref_window = window(raw_dos(ref))
    out = {"id": fid, "formula": meta["reduced_formula"], "natoms": meta["natoms"], "spin": st.spin,
           "scf": {k: r.summary() for k, r in runs.items()}, "nscf": {}}
    for label, start, relax in (("predicted-relaxed", st.predicted, True), ("predicted", st.predicted, False),
                                ("saed", st.saed, False)):
        run = nscf(st.atoms, start, start=label, relax_paw=relax)
        err = band_errors(run, ref)
        raw = raw_dos(run)
        err["dos_mse"] = float(np.mean((window(raw) - ref_window) ** 2))
        if ref.gap_eV > 0.05:
            same_height = vbm(run) + ref.efermi_eV - vbm(ref)
            err["dos_mse_vbm"] = float(np.mean((window(replace(raw, efermi=same_height)) - ref_window) ** 2))
            err["efermi_shift_eV"] = (run.efermi_eV - vbm(run)) - (ref.efermi_eV - vbm(ref))
        err["energy_error_meV_per_atom"] = 1000 * (run.energy_eV - ref.energy_eV) / len(st.atoms)
        err["seconds"] = run.seconds
        err["seconds_ratio_to_scf"] = run.seconds / ref.seconds
        out["nscf"][label] = err
    (pred,) = predict_dos(dos_model, [StructureInput(fid, structure, "bench")], ckpt=dos_ckpt)
    stored = window(read_dos(folder_of(fid) / "dos.json.gz"))
    out["kernel_dos_mse"] = float(np.mean((pred.window - ref_window) ** 2))
    out["stored_vs_recomputed_dos_mse"] = float(np.mean((stored - ref_window) ** 2))
    return out


def summarise(rows: list[dict]) -> str:
    """Markdown: per split, median/mean SCF iterations per start, the saving against the floor's, NSCF errors."""
    lines = ["| split | crystals | SCF iterations, median (mean): default | floor (converged ρ, D) | SAED | "
             "predicted | predicted < default | predicted < SAED | share of the floor's saving |",
             "|---|---|---|---|---|---|---|---|---|"]
    nscf_lines = ["| split | NSCF from | gap error, mean abs (meV) | band MAE median (mean) meV | ≤ 43 meV (band MAE) "
                  "| DOS window MSE, mean (median) | the same, gapped crystals' E_F at the SCF's height above the VBM "
                  "| kernel DOS model MSE, mean (median) | NSCF wall / SCF wall | energy error, median abs (max) "
                  "meV/atom |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split in sorted({r["split"] for r in rows}, reverse=True):
        rs = [r for r in rows if r["split"] == split]
        it = {k: np.array([r["scf"][k]["iterations"] for r in rs]) for k in ("default", "converged", "saed",
                                                                             "predicted")}
        room = np.median(it["default"]) - np.median(it["converged"])
        share = (np.median(it["default"]) - np.median(it["predicted"])) / room if room > 0 else float("nan")
        cell = {k: f"{np.median(v):.0f} ({v.mean():.2f})" for k, v in it.items()}
        lines.append(f"| {split} | {len(rs)} | {cell['default']} | {cell['converged']} | {cell['saed']} | "
                     f"{cell['predicted']} | {np.sum(it['predicted'] < it['default'])}/{len(rs)} | "
                     f"{np.sum(it['predicted'] < it['saed'])}/{len(rs)} | {share:.0%} |")
        for start in ("predicted", "predicted-relaxed", "saed"):
            if any(start not in r["nscf"] for r in rs):
                continue
            n = [r["nscf"][start] for r in rs]
            gap = np.array([abs(x["gap_error_eV"]) for x in n]) * 1000
            band = np.array([x["band_mae_eV"] for x in n]) * 1000
            mse = np.array([x["dos_mse"] for x in n])
            kern = np.array([r["kernel_dos_mse"] for r in rs])
            ratio = np.array([x["seconds_ratio_to_scf"] for x in n])
            aligned = np.array([x.get("dos_mse_vbm", x["dos_mse"]) for x in n])
            energy = np.array([abs(x.get("energy_error_meV_per_atom", np.nan)) for x in n])
            nscf_lines.append(f"| {split} | {start} | {gap.mean():.0f} | {np.median(band):.0f} ({band.mean():.0f}) | "
                              f"{np.sum(band <= 43)}/{len(rs)} | {mse.mean():.4f} ({np.median(mse):.4f}) | "
                              f"{aligned.mean():.4f} ({np.median(aligned):.4f}) | "
                              f"{kern.mean():.4f} ({np.median(kern):.4f}) | {np.median(ratio):.2f} | "
                              f"{np.median(energy):.1f} ({energy.max():.1f}) |")
    per = ["| split | id | formula | spin | iterations default/floor/SAED/predicted | NSCF gap err meV, relaxed / "
           "atomic D_asii | band MAE meV, relaxed / atomic | DOS MSE NSCF relaxed (E_F at the SCF's height above the "
           "VBM) / kernel | energy error meV/atom, relaxed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, a = r["scf"], r["nscf"]["predicted"]
        n = r["nscf"].get("predicted-relaxed", a)
        per.append(f"| {r['split']} | {r['id']} | {r['formula']} | {int(r['spin'])} | {s['default']['iterations']}/"
                   f"{s['converged']['iterations']}/{s['saed']['iterations']}/{s['predicted']['iterations']} | "
                   f"{1000 * n['gap_error_eV']:+.0f} / {1000 * a['gap_error_eV']:+.0f} | {1000 * n['band_mae_eV']:.0f}"
                   f" / {1000 * a['band_mae_eV']:.0f} | {n['dos_mse']:.4f} "
                   f"({n.get('dos_mse_vbm', n['dos_mse']):.4f}) / {r['kernel_dos_mse']:.4f} | "
                   f"{n.get('energy_error_meV_per_atom', float('nan')):+.1f} |")
    return "\n".join(lines + [""] + nscf_lines + [""] + per) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--max-atoms", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="skip crystals whose shared SCF took longer")
    ap.add_argument("--budget-min", type=float, default=None)
    ap.add_argument("--jsonl", default="bench/results/dft_start.jsonl")
    ap.add_argument("--report", action="store_true", help="only write the summary of --jsonl (…/dft_start.md)")
    args = ap.parse_args()
    if args.report:
        rows = [json.loads(ln) for ln in Path(args.jsonl).read_text().splitlines() if ln.strip()]
        text = summarise(rows)
        Path(args.jsonl).with_suffix(".md").write_text(text)
        print(text)
        return
    model, ckpt = load(None)
    dos_model, dos_ckpt = load_dos_model(None)
    done = set()
    path = Path(args.jsonl)
    if path.is_file():
        done = {json.loads(ln)["id"] for ln in path.read_text().splitlines() if ln.strip()}
    todo = []
    for split in args.splits.split(","):
        for fid in ckpt["splits"][split]:
            if not folder_of(fid).is_dir():  # held-out crystals of datasets/gpaw-new: not part of this table
                continue
            meta = json.loads((folder_of(fid) / "meta.json").read_text())
            if meta["natoms"] <= args.max_atoms and meta["seconds"] <= args.max_seconds and fid not in done:
                todo.append((meta["seconds"], split, fid))
    t0 = time.time()
    for _, split, fid in sorted(todo):
        if args.budget_min is not None and time.time() - t0 > 60 * args.budget_min:
            break
        res = {"split": split, **one(fid, model, ckpt, dos_model, dos_ckpt)}
        with open(path, "a") as f:
            f.write(json.dumps(res) + "\n")
        s, n = res["scf"], res["nscf"]["predicted-relaxed"]
        print(f"{split} {fid} {res['formula']}: iterations default {s['default']['iterations']} floor "
              f"{s['converged']['iterations']} saed {s['saed']['iterations']} predicted {s['predicted']['iterations']}"
              f"; NSCF (relaxed D_asii) gap err {1000 * n['gap_error_eV']:+.0f} meV, band MAE "
              f"{1000 * n['band_mae_eV']:.0f} meV, "
              f"DOS MSE {n['dos_mse']:.4f} (kernel {res['kernel_dos_mse']:.4f})", flush=True)


if __name__ == "__main__":
    main()
