"""DOS prediction with a DOS checkpoint (default: the shipped ``models/default/dos.pt``), written as a pymatgen
``Dos`` JSON, a CSV and a PNG.

The model predicts the max-normalised window (:mod:`chgdata.dos`, "Normalisation") of the smeared DOS on
E − E_F ∈ [−10, 10] eV (400 points), spin up and down. Units are therefore *dimensionless* (the larger channel
of a reference window peaks at 1); no absolute states/eV is predicted. Energies in the JSON are absolute
(eV) when the Fermi level is known (a ``store:PATH#id`` input whose store has the DOS), else E − E_F with
``efermi = 0``; the JSON's ``chgdata`` entry says which.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import PredictError
from .kinds import is_density, kind_of
from .predict import warn_unseen_elements
from .predict_io import StructureInput, read_structure

DEFAULT_DOS_CHECKPOINT = Path(__file__).resolve().parent / "default" / "dos.pt"
UNITS = "dimensionless: max-normalised window (larger spin channel of a reference peaks at 1)"


@dataclass
class DosPrediction:
    """One structure's predicted window (2, n_points) on ``energies`` (E − E_F, eV); ``reference`` and
    ``efermi`` (eV) when the input came from a store holding its DOS."""

    name: str
    structure: Any
    energies: np.ndarray
    window: np.ndarray
    efermi: float | None = None
    reference: np.ndarray | None = None
    files: list[Path] = field(default_factory=list)
    domain: dict[str, Any] | None = None  # closeness to the training set (:func:`training_domain`)


def load_dos_model(checkpoint: str | os.PathLike | None = None, device: str = "cpu"):
    """(model, checkpoint dict) of a DOS checkpoint, or of the shipped one; PredictError for a density model."""
    from .checkpoint import load_checkpoint

    path = Path(checkpoint) if checkpoint else DEFAULT_DOS_CHECKPOINT
    if not path.is_file():
        raise PredictError(f"no DOS model at {path}" + ("" if checkpoint else " (none shipped with this chgdata): "
                                                        "pass --dos-checkpoint path/to/model.pt"))
    model, ckpt = load_checkpoint(path, device=device)
    if is_density(model):
        raise PredictError(f"{path} is a charge-density checkpoint, not a DOS model")
    return model, ckpt


def _reference(inp: StructureInput) -> tuple[np.ndarray | None, float | None]:
    """(normalised reference window, E_F in eV) of a ``store:PATH#id`` input, (None, None) otherwise."""
    if not inp.source.startswith("store:"):
        return None, None
    from chgdata.store import open_dataset

    path, _, mid = inp.source[len("store:"):].partition("#")
    ds = open_dataset(path)
    try:
        _, win, _ = ds.dos_windows([mid], "normalised")
    except KeyError:
        return None, None
    row = {r["material_id"]: r for r in ds.table(ds.DOS_TABLE).select(["material_id", "efermi"]).to_pylist()}[mid]
    return win[0].astype(np.float64), row["efermi"]


def predict_dos(model, inputs: Sequence[StructureInput], device: str = "cpu",
                ckpt: dict | None = None) -> list[DosPrediction]:
    """Predicted windows (and references where the store has them) for structure inputs; for a kernel model
    with the calibration of ``chgdata fit-dos`` in ``ckpt``, also each structure's :func:`training_domain`."""
    from .evaluate_dos import predict_windows

    lo, hi = model.config.energy_window
    energies = np.linspace(lo, hi, model.config.n_points)
    structures = [inp.structure for inp in inputs]
    domains: list[dict[str, Any] | None] = [None] * len(structures)
    if kind_of(model) == "dos-kernel" and structures:  # the descriptors once, for windows and domain
        import torch

        from .dos_kernel import descriptor_matrix

        x = descriptor_matrix(structures).to(model.train_z.device)
        with torch.no_grad():
            windows = model(x).cpu().numpy()
        domains = training_domain(model, ckpt or {}, x)
    else:
        windows = predict_windows(model, structures, device)
    out = []
    for inp, w, dom in zip(inputs, windows, domains, strict=True):
        ref, ef = _reference(inp)
        out.append(DosPrediction(inp.name, inp.structure, energies, w, ef, ref, domain=dom))
    return out


def training_domain(model, ckpt: dict, descriptors) -> list[dict[str, Any] | None]:
    """For a kernel DOS model fitted by ``chgdata fit-dos``, per row of ``descriptors`` (n, d): the closest
    training crystal (formula, material id), its kernel similarity k (1 = same descriptors) and the grouped-CV MSE
    of held-out crystals at that similarity (``config.similarity_calibration``); None for other checkpoints."""
    cfg = ckpt.get("config") or {}
    cal, formulas = cfg.get("similarity_calibration"), cfg.get("train_formulas")
    if not (cal and formulas):
        return [None] * len(descriptors)
    sim, idx = model.nearest(descriptors)
    out = []
    for k, i in zip(sim, idx, strict=True):
        b = int(np.searchsorted(cal["similarity_edges"], k, side="right"))
        lo = cal["similarity_edges"][b - 1] if b else 0.0
        hi = cal["similarity_edges"][b] if b < len(cal["similarity_edges"]) else 1.0
        out.append({"nearest_training_formula": formulas[i], "nearest_training_id": cfg["train_ids"][i],
                    "kernel_similarity": float(k), "cv_mse_at_this_similarity": cal["mse"][b],
                    "similarity_bin": [float(lo), float(hi)]})
    return out


def dos_dict(pred: DosPrediction, model_name: str = "") -> dict[str, Any]:
    """``pymatgen.electronic_structure.dos.Dos.as_dict()`` of the prediction plus a ``chgdata`` entry (units,
    energy reference); ``Dos.from_dict`` reads it."""
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.electronic_structure.dos import Dos

    known = pred.efermi is not None
    ef = float(pred.efermi) if known else 0.0
    dos = Dos(ef, pred.energies + ef, {Spin.up: pred.window[0], Spin.down: pred.window[1]})
    d = dos.as_dict()
    d["chgdata"] = {
        "units": {"energies": "eV", "densities": UNITS},
        "energy_reference": ("absolute eV (E_F known from the store)" if known else
                             "E - E_F in eV: the Fermi level of this structure is unknown, efermi is set to 0"),
        "fermi_level_known": known, "window_eV": [float(pred.energies[0]), float(pred.energies[-1])],
        "model": model_name, "structure": pred.structure.as_dict(),
        "formula": pred.structure.composition.reduced_formula}
    if pred.domain is not None:
        d["chgdata"]["training_domain"] = pred.domain
    return d


def write_csv(pred: DosPrediction, path: Path) -> Path:
    cols = ["E_minus_EF_eV", "dos_up_normalised", "dos_down_normalised"]
    data = [pred.energies, pred.window[0], pred.window[1]]
    if pred.efermi is not None:
        cols.insert(1, "E_eV")
        data.insert(1, pred.energies + pred.efermi)
    if pred.reference is not None:
        cols += ["reference_up_normalised", "reference_down_normalised"]
        data += [pred.reference[0], pred.reference[1]]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(np.column_stack(data).round(7).tolist())
    return path


def plot_prediction(pred: DosPrediction, path: Path) -> Path:
    """PNG in the style of ``chgdata plot dos`` (spin down mirrored); the reference in a panel beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("predicted", pred.window, "tab:blue")]
    if pred.reference is not None:
        panels.append(("reference (store)", pred.reference, "0.3"))
    fig = Figure(figsize=(6.0 * len(panels), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ymax = 1.05 * max(float(np.max(w)) for _, w, _ in panels)
    for k, (title, w, colour) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.plot(pred.energies, w[0], color=colour, lw=1.3, label="spin up")
        ax.plot(pred.energies, -w[1], color=colour, lw=1.3, ls="--", label="spin down (mirrored)")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", ls="--", lw=0.8)
        ax.set_xlim(pred.energies[0], pred.energies[-1])
        ax.set_ylim(-ymax, ymax)
        ax.set_xlabel(r"$E - E_F$ (eV)")
        ax.set_ylabel("DOS, max-normalised (spin down < 0)")
        ax.set_title(f"{pred.structure.composition.reduced_formula}: {title}", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def write_dos_prediction(pred: DosPrediction, out: str | os.PathLike, model_name: str = "") -> list[Path]:
    """``out/<name>/dos.json`` (pymatgen Dos), ``dos.csv`` and ``dos.png``."""
    folder = Path(out) / pred.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dos.json").write_text(json.dumps(dos_dict(pred, model_name)))
    pred.files = [folder / "dos.json", write_csv(pred, folder / "dos.csv"), plot_prediction(pred, folder / "dos.png")]
    return pred.files


def run_predict_dos(specs: Sequence[str], out: str | os.PathLike, checkpoint: str | None = None,
                    device: str = "cpu", mp_source=None) -> list[DosPrediction]:
    """``chgdata predict --dos``: read structures (files, MP ids, store:PATH#id), predict, write."""
    inputs = [read_structure(s, mp_source) for s in specs]
    seen: dict[str, int] = {}
    for inp in inputs:  # same de-duplication of names as the density predictions
        n = seen.get(inp.name, 0)
        seen[inp.name] = n + 1
        if n:
            inp.name = f"{inp.name}-{n + 1}"
    model, ckpt = load_dos_model(checkpoint, device)
    for inp in inputs:
        warn_unseen_elements(ckpt, inp.structure, inp.name)
    name = str(checkpoint) if checkpoint else "chgdata default DOS model (models/default/dos.pt)"
    preds = predict_dos(model, inputs, device, ckpt)
    for p in preds:
        write_dos_prediction(p, out, name)
    return preds


def report_dos(specs: Sequence[str], out: str | os.PathLike, checkpoint: str | os.PathLike | None, device: str,
               echo) -> list[DosPrediction]:
    """:func:`run_predict_dos` for the CLI, one line per structure through ``echo``."""
    preds = run_predict_dos(specs, out, str(checkpoint) if checkpoint else None, device)
    for p in preds:
        ref = "" if p.reference is None else (
            f", MSE vs store reference {float(np.mean((p.window - p.reference) ** 2)):.4f}")
        where = f"E_F {p.efermi:.3f} eV" if p.efermi is not None else "E_F unknown: energies are E - E_F"
        if p.domain is not None:
            where += (f"; closest training crystal {p.domain['nearest_training_formula']} (similarity "
                      f"{p.domain['kernel_similarity']:.2f}; held-out MSE at that similarity in cross-validation "
                      f"{p.domain['cv_mse_at_this_similarity']:.3f})")
        echo(f"{p.name}: DOS window {p.energies[0]:g}..{p.energies[-1]:g} eV, {where}{ref} → "
             + ", ".join(str(f) for f in p.files), highlight=False)
    return preds


SHIP_KEYS = ("format", "model_config", "model", "config", "splits", "data_version", "code_version", "n_parameters",
             "metrics", "step", "torch")


def export_dos_model(src: str | os.PathLike, dest: str | os.PathLike, store: str | None = None) -> Path:
    """A shippable DOS checkpoint: the weights and plain-typed metadata of ``src`` (a ``model.pt`` of a DOS run)
    plus the training split's baselines (mean and per-element windows, as tensors) when ``store`` is given.
    The result loads with ``torch.load(dest, weights_only=True)`` (checked here)."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if "n_points" not in (ckpt.get("model_config") or {}):
        raise PredictError(f"{src} is not a DOS checkpoint")
    out = {k: ckpt[k] for k in SHIP_KEYS if k in ckpt}
    out["ema"] = None
    out = json.loads(json.dumps({k: v for k, v in out.items() if k != "model"}, default=list)) | {
        "model": {k: v.detach().clone() for k, v in ckpt["model"].items()}}
    if store is not None:
        from chgdata.store import open_dataset

        from .evaluate_dos import baselines_from_store

        base = baselines_from_store(open_dataset(store), ckpt["splits"]["train"])
        out["baselines"] = {"mean": torch.tensor(base.mean, dtype=torch.float32), "n_materials": base.n_materials,
                            "elements": {e: torch.tensor(w, dtype=torch.float32) for e, w in base.elements.items()}}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dest)
    torch.load(dest, map_location="cpu", weights_only=True)  # raises if anything is not a plain type
    return dest
