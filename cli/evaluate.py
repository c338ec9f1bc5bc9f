"""``chgdata evaluate``: full-grid NMAE (and the SAED baseline) or DOS metrics of a checkpoint on a store."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.cli.common import QUIET, STORE, cli_errors, console, out


def evaluate(
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", dir_okay=False,
                                    help="model.pt of a `chgdata train` run (default: the shipped model)."),
    store: str = STORE,
    split: str = typer.Option("test", "--split", help="test, val, train (the store's recorded split, else the "
                              "checkpoint's), several joined by commas (test,val,train), or all."),
    materials: str = typer.Option(None, "--materials", "-m", help="Comma-separated material ids (overrides "
                                                                  "--split)."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu or cuda."),
    chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Grid points per head chunk."),
    out_path: Path = typer.Option(None, "--out", "-o", dir_okay=False,
                                  help="results.json (a per-material .csv is written next to it)."),
    plot: Path = typer.Option(None, "--plot", dir_okay=False,
                              help="DOS models: PNG grid of the worst and median materials (default: next to "
                                   "--out as <stem>_grid.png, else dos_<split>_grid.png)."),
    quiet: bool = QUIET,
) -> None:
    """Evaluate a checkpoint: NMAE % per material (ChargE3Net's definition), mean, SAED baseline; or DOS metrics."""
    from chgdata.app import evaluate as run_evaluate
    from chgdata.app import evaluation_report
    from rich.progress import Progress
    from rich.table import Table

    if not all(p.strip() in ("val", "test", "train", "all") for p in split.split(",")):
        raise typer.BadParameter("--split must be val, test, train or all (or several joined by commas)")
    ids = [m.strip() for m in materials.split(",") if m.strip()] if materials else None
    with cli_errors(), Progress(console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("evaluate", total=None)
        if plot is None:
            plot = out_path.with_name(out_path.stem + "_grid.png") if out_path else Path(f"dos_{split}_grid.png")
        res = run_evaluate(checkpoint, store, split=split, materials=ids, device=device, chunk_size=chunk_size,
                           out=out_path, plot=plot, progress=lambda mid, i, n: bar.update(
                               task, completed=i, total=n, description=f"evaluate {mid}"))
    summ, rows = res["summary"], res["per_material"]
    counts = summ["split_counts"]
    parts = " + ".join(f"{k} {n}" for k, n in counts.items()) if len(counts) > 1 or "materials" not in counts else ""
    table = Table(title=f"{summ['kind']} metrics, {sum(counts.values())} materials "
                        f"({parts + '; ' if parts else ''}{summ['split_source']})")
    if summ["kind"] == "density":
        cols = [("material_id", "material", "{}"), ("formula", "formula", "{}"), ("natoms", "atoms", "{}"),
                ("grid_points", "points", "{}"), ("nmae", "NMAE %", "{:.3f}"),
                ("nmae_conserved", "NMAE % (∫ρ=N)", "{:.3f}"), ("nmae_saed", "SAED NMAE %", "{:.3f}"),
                ("beats_saed", "beats SAED", "{}"), ("mag_nmae", "mag NMAE %", "{:.2f}"), ("split", "split", "{}")]
    else:
        cols = [("material_id", "material", "{}"), ("formula", "formula", "{}"), ("mse", "MSE", "{:.4g}"),
                ("r2", "R²", "{:.3f}"), ("wasserstein_up_eV", "W₁ ↑ eV", "{:.3f}"),
                ("wasserstein_down_eV", "W₁ ↓ eV", "{:.3f}"), ("mse_mean_baseline", "mean-window MSE", "{:.4g}"),
                ("mse_composition_baseline", "composition MSE", "{:.4g}"), ("beats_both", "beats both", "{}")]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    for key, title, _ in cols:  # ids are never cut: the other headers fold instead
        ident = key == "material_id"
        table.add_column(title, justify="left" if ident else "right", no_wrap=ident,
                         min_width=max((len(str(r.get(key, ""))) for r in rows), default=0) if ident else None)
    for r in rows:
        table.add_row(*[fmt.format(r[k]) if k in r else "" for k, _, fmt in cols])
    out.print(table)
    if summ["kind"] == "density" and "by_split" in summ:
        out.print(evaluation_report(res), highlight=False, markup=False)
    if summ.get("splits"):  # DOS: model and both baselines on every split of the checkpoint
        st = Table(title="DOS per split of the checkpoint (its own split; baselines fitted on its train; "
                         "MSE on max-normalised windows)")
        keys = [("materials", "n", "{}"), ("mse", "MSE", "{:.4f}"), ("mse_mean_baseline", "mean-window MSE", "{:.4f}"),
                ("mse_composition_baseline", "composition MSE", "{:.4f}"), ("r2", "R²", "{:.3f}"),
                ("r2_composition_baseline", "comp. R²", "{:.3f}"), ("wasserstein_eV", "W₁ eV", "{:.3f}"),
                ("wasserstein_composition_baseline_eV", "comp. W₁ eV", "{:.3f}"),
                ("fraction_beating_both_baselines", "beats both", "{:.0%}")]
        st.add_column("split")
        for _, title, _ in keys:
            st.add_column(title, justify="right")
        for name, s in summ["splits"].items():
            st.add_row(name, *[fmt.format(s[k]) for k, _, fmt in keys])
        out.print(st)
    if summ.get("split_warning"):
        console.print(f"warning: {summ['split_warning']}", highlight=False, markup=False)
    for k, v in summ.items():
        if k not in ("kind", "splits", "by_split", "by_group", "split_counts", "split_warning"):
            out.print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}", highlight=False)
    if out_path:
        out.print("wrote " + ", ".join(res["files"]))
