"""``chgdata publish``, ``chgdata catalog list|show`` and ``chgdata export``."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from chgdata.cli.common import STORE, cli_errors, console, exit_if_failed, out

CATALOG = typer.Option(None, "--catalog", "-c", envvar="CHGDATA_CATALOG",
                       help="Catalogue file (default: $CHGDATA_CATALOG, else catalog.yaml at the repo root).")

catalog_app = typer.Typer(help="List and show the published datasets of the catalogue (catalog.yaml).",
                          no_args_is_help=True, rich_markup_mode=None)


def publish(
    store: str = STORE,
    name: str = typer.Option(..., "--name", "-n", help="Dataset name (letters, digits, '.', '_', '-')."),
    version: str = typer.Option(..., "--version", "-v", help="Dataset version, e.g. 1.0.0."),
    description: str = typer.Option("", "--description", "-d", help="One-paragraph description for other teams."),
    location: str = typer.Option(None, "--location", "-l",
                                 help="Where readers find it (URL such as s3://… or a path; relative paths are "
                                      "relative to the catalogue's folder). Default: the store path."),
    catalog: Path = CATALOG,
    license: str = typer.Option("", "--license", help="Licence of the data (SPDX id such as CC-BY-4.0, or text)."),
) -> None:
    """Add a dataset version to the catalogue and record the publication in its card (never overwrites)."""
    from chgdata.catalog import CatalogError
    from chgdata.catalog import publish as do_publish

    with cli_errors():
        try:
            entry, action = do_publish(store, name, version, description=description, location=location,
                                       catalog=catalog, license=license)
        except CatalogError as exc:
            raise ValueError(str(exc)) from None
    c = entry["counts"]
    out.print(f"{action}: {entry['name']}@{entry['version']} ({c['materials']} materials, {c['grid_points']} grid "
              f"points) at {entry['location']}, content sha256 {entry['checksums']['content']}", highlight=False)


@catalog_app.command("list")
def list_(catalog: Path = CATALOG) -> None:
    """One line per published dataset version."""
    from chgdata.catalog import default_catalog_path, entry_summary, load_catalog

    with cli_errors():
        entries = load_catalog(catalog)["datasets"]
    if not entries:
        console.print(f"no published datasets in {catalog or default_catalog_path()}")
        return
    from rich.table import Table

    table = Table("name@version", "materials", "grid points", "location", "content", "description", box=None)
    for e in entries:
        s = entry_summary(e)
        table.add_row(f"{s['name']}@{s['version']}", str(s["materials"]), str(s["grid_points"]), s["location"],
                      s["content_sha256"], s["description"][:40] + ("…" if len(s["description"]) > 40 else ""))
    out.print(table, soft_wrap=True)


@catalog_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME[@VERSION] (latest version when omitted)."),
         catalog: Path = CATALOG) -> None:
    """The full catalogue entry of one dataset version, as YAML, with its resolved location."""
    from chgdata.catalog import CatalogError, find_entry, resolve_location

    with cli_errors():
        try:
            entry = find_entry(ref, catalog)
        except CatalogError as exc:
            raise ValueError(str(exc)) from None
    entry = {**entry, "resolved_location": resolve_location(entry["location"], catalog)}
    typer.echo(yaml.safe_dump(entry, sort_keys=False, allow_unicode=True, width=110), nl=False)


def export(
    store: str = STORE,
    materials: str = typer.Option(None, "--materials", "-m",
                                  help="Comma-separated material ids (default: every material with a density)."),
    fmt: str = typer.Option("chgcar", "--format", "-f", help="chgcar | npy (ChargE3Net style) | hdf5 (needs h5py)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    spin: bool = typer.Option(False, "--spin",
                              help="npy: stack [rho, mag] on a last axis of 2 (as ChargE3Net read_spin)."),
) -> None:
    """Export densities as CHGCAR (ρ·V, diff block for spin), ChargE3Net-style .npy, or HDF5."""
    from chgdata.export import ExportError, export_materials

    failures: dict[str, str] = {}
    with cli_errors():
        try:
            paths = export_materials(store, [materials] if materials else None, fmt, out_dir, spin=spin,
                                     failures=failures)
        except ExportError as exc:
            raise ValueError(str(exc)) from None
    out.print(f"exported {len(paths)} file(s) as {fmt} → {out_dir}", highlight=False)
    for mid, why in sorted(failures.items()):
        console.print(f"  failed {mid}: {why}", highlight=False, markup=False)
    exit_if_failed(len(failures))


def rebuild(
    ref: str = typer.Argument(..., help="NAME[@VERSION] of the catalogue (latest version when omitted)."),
    from_dir: Path = typer.Option(..., "--from-dir", exists=True, file_okay=False,
                                  help="Source folder holding the version's inputs (it may hold more)."),
    store: str = STORE,
    catalog: Path = CATALOG,
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Local Dask worker processes."),
) -> None:
    """Rebuild a published version from exactly its recorded inputs and verify its checksums (exit 1 if not)."""
    from chgdata.app import rebuild as run_rebuild

    with cli_errors():
        rep = run_rebuild(ref, from_dir, store, catalog=catalog, workers=workers)
    out.print(f"{rep.ref}: rebuilt {rep.materials} materials into {store}; checksums: "
              + ", ".join(f"{k} {'ok' if v else 'DIFFERENT'}" for k, v in rep.checks.items()), highlight=False)
    for pkg, (then, now) in rep.packages.items():
        out.print(f"  {pkg}: published with {then}, now {now}", highlight=False)
    if not rep.ok:
        console.print("error: the rebuilt content differs from the published checksum", highlight=False)
        raise typer.Exit(1)
