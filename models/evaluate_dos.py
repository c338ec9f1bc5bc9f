"""DOS evaluation: metrics of a DOS checkpoint and of two baselines per split, and a PNG grid of test materials.

Windows are the store's max-normalised ones (:mod:`chgdata.dos`, "Normalisation"): (2, 400) per material,
E − E_F ∈ [−10, 10] eV. Metrics per material: MSE over both channels and all energies (DosNet's loss), R²,
1-Wasserstein distance per spin channel (eV, windows read as distributions), and the absolute MAE
(states/eV/atom, the prediction scaled by the target's own normalisation constant: an error of shape only).

Baselines, fitted on the **training split only** (:func:`fit_baselines`):

* ``mean``: the mean training window, the same prediction for every material;
* ``composition``: per-element average windows ``W_e = Σ_m x_me W_m / Σ_m x_me`` over the training materials m
  (x_me: atomic fraction of element e in m), mixed by the stoichiometry of the material,
  ``Σ_e x_e W_e``; an element absent from the training split contributes the mean window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chgdata.metrics import dos_abs_mae, dos_mse, dos_wasserstein, r2_score

from .kinds import kind_of

SPLITS = ("train", "val", "test")


def element_fractions(structure) -> dict[str, float]:
    """Atomic fractions {symbol: x} of a pymatgen Structure (sum 1)."""
    comp = structure.composition.fractional_composition
    return {el.symbol: float(x) for el, x in comp.element_composition.items()}


@dataclass
class DosBaselines:
    """Mean and per-element windows (2, n_points) of a training split; plain types in :meth:`to_dict`."""

    mean: np.ndarray
    elements: dict[str, np.ndarray]
    n_materials: int

    def composition(self, fractions: dict[str, float]) -> np.ndarray:
        """Stoichiometric mix Σ_e x_e W_e (2, n_points); unseen elements get the mean window."""
        total = sum(fractions.values())
        if not total > 0:
            raise ValueError("element fractions must sum to a positive number")
        return sum(x / total * self.elements.get(e, self.mean) for e, x in fractions.items())

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "elements": {e: w.tolist() for e, w in self.elements.items()},
                "n_materials": int(self.n_materials)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DosBaselines:
        return cls(np.asarray(d["mean"], np.float64), {e: np.asarray(w, np.float64) for e, w in d["elements"].items()},
                   int(d["n_materials"]))


def fit_baselines(windows: np.ndarray, fractions: Sequence[dict[str, float]]) -> DosBaselines:
    """Baselines from training windows (n, 2, n_points) and their element fractions (same order)."""
    windows = np.asarray(windows, np.float64)
    if len(windows) == 0 or len(windows) != len(fractions):
        raise ValueError(f"need one element-fraction dict per window, got {len(fractions)} for {len(windows)}")
    num: dict[str, np.ndarray] = {}
    den: dict[str, float] = {}
    for w, frac in zip(windows, fractions, strict=True):
        for e, x in frac.items():
            num[e] = num.get(e, 0.0) + x * w
            den[e] = den.get(e, 0.0) + x
    return DosBaselines(windows.mean(0), {e: num[e] / den[e] for e in sorted(num)}, len(windows))


def baselines_from_store(ds, train_ids: Sequence[str]) -> DosBaselines:
    """:func:`fit_baselines` on the normalised windows of ``train_ids`` in a store (nothing else is read)."""
    ids, windows, _ = ds.dos_windows(list(train_ids), "normalised")
    return fit_baselines(windows, [element_fractions(ds.structure(m)) for m in ids])


@torch.no_grad()
def predict_windows(model, structures: Sequence, device: str = "cpu") -> np.ndarray:
    """(n, 2, n_points) windows (the model's units) for pymatgen structures, one forward pass each."""
    if kind_of(model) == "dos-kernel":  # the kernel model reads descriptors, not a graph
        return model.predict_structures(structures)
    from .graph import structure_batch
    from .predict import atomic_numbers

    dtype = next(model.parameters()).dtype
    out = []
    for s in structures:
        batch = structure_batch(s.cart_coords, atomic_numbers(s), s.lattice.matrix, model.config.encoder.r_cut,
                                dtype=dtype, device=device)
        p = model(batch)[0].double().cpu().numpy()
        out.append(np.repeat(p, 2, axis=0) if p.shape[0] == 1 else p)  # 1 channel = the spin average
    return np.stack(out) if out else np.zeros((0, 2, model.config.n_points))


def _metrics(pred: np.ndarray, target: np.ndarray, energies: np.ndarray) -> dict[str, np.ndarray]:
    """Per-material arrays: mse, r2, wasserstein (n, 2)."""
    n = len(target)
    mse = np.array([dos_mse(pred[i], target[i]) for i in range(n)])
    r2 = np.array([r2_score(pred[i], target[i]) for i in range(n)])
    return {"mse": mse, "r2": r2, "w": dos_wasserstein(pred, target, energies)}


def evaluate_dos(model, ckpt: dict[str, Any], store: str, material_ids: Sequence[str], device: str = "cpu",
                 plot: str | Path | None = None) -> dict[str, Any]:
    """Model and baseline metrics on ``material_ids`` (rows) and, in ``summary["splits"]``, on every split of
    the checkpoint that is in the store; ``plot``: PNG grid of the worst and median materials of the rows."""
    from chgdata.store import open_dataset

    ds = open_dataset(store)
    variant = (ckpt.get("config") or {}).get("dos_variant", "normalised")
    have = set(ds.dos_ids())
    splits = {k: [m for m in (ckpt.get("splits") or {}).get(k, []) if m in have] for k in SPLITS}
    if not splits["train"]:
        raise ValueError("none of the checkpoint's training materials has a DOS window in this store: the "
                         "baselines need the training split")
    base = baselines_from_store(ds, splits["train"])
    groups = {"selected": list(material_ids), **{k: v for k, v in splits.items() if v}}
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    wanted = list(dict.fromkeys(m for ids in groups.values() for m in ids))
    ids, norm_t, energies = ds.dos_windows(wanted, "normalised")
    _, abs_t, _ = ds.dos_windows(wanted, "absolute")
    structures = [ds.structure(m) for m in ids]
    pred = predict_windows(model, structures, device)
    if variant == "absolute":  # a model of absolute windows: compare shapes after max-normalising its output
        pred = pred / np.maximum(pred.reshape(len(ids), -1).max(axis=1), 1e-12)[:, None, None]
    comp = np.stack([base.composition(element_fractions(s)) for s in structures])
    mean = np.broadcast_to(base.mean, norm_t.shape)
    for i, m in enumerate(ids):
        cache[m] = (pred[i], comp[i], norm_t[i], abs_t[i])
    summary: dict[str, Any] = {"kind": "dos", "variant": variant, "materials": len(material_ids),
                               "baseline_train_materials": base.n_materials, "splits": {}}
    model_m, comp_m, mean_m = (_metrics(p, norm_t, energies) for p in (pred, comp, mean))
    pos = {m: i for i, m in enumerate(ids)}
    for name, gids in groups.items():
        k = np.array([pos[m] for m in gids], dtype=np.int64)
        if not len(k):
            continue
        beats = (model_m["mse"][k] < comp_m["mse"][k]) & (model_m["mse"][k] < mean_m["mse"][k])
        s = {"materials": len(k), "mse": float(model_m["mse"][k].mean()),
             "r2": float(r2_score(pred[k], norm_t[k])), "wasserstein_eV": float(np.nanmean(model_m["w"][k])),
             "mse_mean_baseline": float(mean_m["mse"][k].mean()),
             "mse_composition_baseline": float(comp_m["mse"][k].mean()),
             "r2_composition_baseline": float(r2_score(comp[k], norm_t[k])),
             "wasserstein_composition_baseline_eV": float(np.nanmean(comp_m["w"][k])),
             "fraction_beating_both_baselines": float(beats.mean())}
        if name == "selected":
            summary.update(s)
            summary["abs_mae_states_per_eV_atom"] = dos_abs_mae(
                pred[k] * abs_t[k].reshape(len(k), -1).max(1)[:, None, None], abs_t[k])
            summary["abs_scale"] = "target max (the model predicts normalised shapes)"
        else:
            summary["splits"][name] = s
    rows = []
    for m in material_ids:
        i = pos[m]
        rows.append({"material_id": m, "formula": structures[i].composition.reduced_formula,
                     "mse": float(model_m["mse"][i]), "r2": float(model_m["r2"][i]),
                     "wasserstein_up_eV": float(model_m["w"][i, 0]), "wasserstein_down_eV": float(model_m["w"][i, 1]),
                     "mse_mean_baseline": float(mean_m["mse"][i]),
                     "mse_composition_baseline": float(comp_m["mse"][i]),
                     "beats_both": bool(model_m["mse"][i] < min(mean_m["mse"][i], comp_m["mse"][i]))})
    if plot and rows:
        summary["plot"] = str(plot_dos_grid(rows, cache, base.mean, energies, plot))
    return {"summary": summary, "per_material": rows}


def pick_worst_and_median(rows: Sequence[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` highest-MSE rows, then the ``n`` rows around the median MSE (no repeats)."""
    order = sorted(rows, key=lambda r: r["mse"], reverse=True)
    worst = order[:n]
    mid = len(order) // 2
    median = [r for r in order[max(0, mid - n // 2): mid - n // 2 + n] if r not in worst]
    return [dict(r, rank="worst") for r in worst] + [dict(r, rank="median") for r in median]


def plot_dos_grid(rows, cache, mean_window: np.ndarray, energies: np.ndarray, path: str | Path, n: int = 3) -> Path:
    """PNG: one panel per picked material (:func:`pick_worst_and_median`), reference, model, composition and
    mean baselines; spin up upwards, spin down mirrored; normalised units."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picks = pick_worst_and_median(rows, n)
    cols = 3
    nrows = (len(picks) + cols - 1) // cols
    fig = Figure(figsize=(5.0 * cols, 3.4 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for j, r in enumerate(picks):
        ax = fig.add_subplot(nrows, cols, j + 1)
        pred, comp, target, _ = cache[r["material_id"]]
        for ch, sign in ((0, 1.0), (1, -1.0)):
            ax.fill_between(energies, 0, sign * target[ch], color="0.8", label="reference" if ch == 0 else None)
            ax.plot(energies, sign * comp[ch], color="tab:green", lw=0.9, label="composition" if ch == 0 else None)
            ax.plot(energies, sign * mean_window[ch], color="tab:orange", lw=0.7, ls=":",
                    label="mean window" if ch == 0 else None)
            ax.plot(energies, sign * pred[ch], color="tab:blue", lw=1.3, label="model" if ch == 0 else None)
        ax.axhline(0, color="k", lw=0.4)
        ax.axvline(0, color="k", ls="--", lw=0.6)
        ax.set_xlim(energies[0], energies[-1])
        ax.set_title(f"{r['rank']}: {r['formula']} ({r['material_id']})\nMSE {r['mse']:.4f}, comp. "
                     f"{r['mse_composition_baseline']:.4f}, mean {r['mse_mean_baseline']:.4f}", fontsize=8)
        ax.set_xlabel(r"$E - E_F$ (eV)", fontsize=8)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=6, loc="upper left")
            ax.set_ylabel("normalised DOS (↓ < 0)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
