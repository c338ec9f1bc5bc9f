"""``chgdata split``."""

from __future__ import annotations

import typer
from chgdata.cli.common import STORE, cli_errors, out

GROUP_BY = typer.Option(None, "--group-by", help="Hold out whole groups: formula (reduced composition; the "
                        "default), chemsys, prototype (as the source records it) or random (by material: strained "
                        "siblings of test crystals end up in training). Default: the store's recorded grouping.")
SPLIT_SEED = typer.Option(None, "--split-seed", help="Seed of the group hash (default: recorded, else 0).")
FRACTIONS = typer.Option(None, "--fractions", help="train,val,test fractions of the groups (default 0.8,0.1,0.1).")


def parse_fractions(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--fractions {text!r}: expected three numbers such as 0.8,0.1,0.1") from None


def split(store: str = STORE, group_by: str = GROUP_BY, seed: int = SPLIT_SEED, fractions: str = FRACTIONS) -> None:
    """Record the dataset's train/val/test split by group (build-delta fits its SAED reference on train only)."""
    from chgdata.app import split as run_split

    with cli_errors():
        a = run_split(store, group_by=group_by, fractions=parse_fractions(fractions), split_seed=seed)
    sec = a.card_section()
    out.print(f"split by {a.group_by} (seed {a.seed}): " + ", ".join(
        f"{s} {sec['materials'][s]} materials / {sec['groups'][s]} groups" for s in ("train", "val", "test")))
    if a.moved:
        out.print(f"moved to train so that every held-out element is trained on: {', '.join(a.moved)}")
