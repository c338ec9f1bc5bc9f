"""``chgdata build-dos`` and ``chgdata fit-dos``."""

from __future__ import annotations

from pathlib import Path

import typer
from chgdata.app import data as D
from chgdata.cli.common import QUIET, SCHEDULER, STORE, WORKERS, cli_errors, console, exit_if_failed, out


def build_dos(
    store: str = STORE,
    sigma: float = typer.Option(D.DOS_SIGMA_EV, "--sigma", min=0.0, help="Gaussian smearing standard deviation, eV."),
    emin: float = typer.Option(D.DOS_EMIN_EV, "--emin", help="Window start, E - E_F in eV."),
    emax: float = typer.Option(D.DOS_EMAX_EV, "--emax", help="Window end, E - E_F in eV."),
    points: int = typer.Option(D.DOS_POINTS, "--points", min=2, help="Energy points in the window."),
    workers: int = WORKERS,
    scheduler: str = SCHEDULER,
    quiet: bool = QUIET,
) -> None:
    """Smear the raw DOS of every ingested material into fixed (2, points) windows around E_F, stored absolute
    (states/eV/atom) and max-normalised. Reruns resume: materials already built are skipped."""
    from chgdata.app import build_dos as run_build_dos

    with cli_errors():
        report = run_build_dos(store, sigma=sigma, emin=emin, emax=emax, points=points, workers=workers,
                               scheduler=scheduler, progress=not quiet)
    out.print(f"built {len(report.committed)} DOS windows, already in store {len(report.skipped)}, "
              f"failed {len(report.failed)} → {store}")
    for mid, why in sorted(report.failed.items()):
        console.print(f"  [red]failed[/] {mid}: {why}", highlight=False)
    exit_if_failed(len(report.failed))


def fit_dos(
    store: str = STORE,
    out_path: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="Checkpoint to write (e.g. dos_kernel.pt)."),
    folds: int = typer.Option(5, "--folds", min=2,
                              help="Grouped cross-validation folds over the train split's groups."),
    energy_exponents: str = typer.Option("0", "--energy-exponents",
                                         help="Comma-separated exponents p of the reduced energy axis "
                                              "(E − E_F)·(d/d_ref)^p offered to the cross-validation (0: none; "
                                              "2: Harrison's d⁻² band-width scaling)."),
) -> None:
    """Fit the kernel DOS model on the train split; (γ, λ, p) by grouped cross-validation (val/test not read)."""
    from chgdata.app import fit_dos as run_fit_dos

    with cli_errors():
        try:
            exponents = [float(v) for v in energy_exponents.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--energy-exponents: numbers separated by commas, got {energy_exponents!r}") from None
        if not exponents or min(exponents) < 0:
            raise ValueError(f"--energy-exponents: one or more numbers >= 0, got {energy_exponents!r}")
        res = run_fit_dos(store, out_path, folds=folds, energy_exponents=exponents)
    best = res["selected"]
    out.print(f"grouped {folds}-fold CV over {best['groups']} groups of the train split ({best['materials']} "
              f"materials): MSE {best['mse']:.4f} at gamma {best['gamma']}, lambda {best['lam']}, energy exponent "
              f"{best['energy_exponent']:g}; composition "
              f"baseline {best['mse_composition_baseline']:.4f}, mean window {best['mse_mean_baseline']:.4f}; "
              f"beats both on {best['fraction_beating_both_baselines']:.0%}")
    out.print(f"wrote {res['checkpoint']} (chgdata evaluate -c {res['checkpoint']} -s {store} --split val)")
