"""``python -m chgdata``: the same command line as ``chgdata``."""

from chgdata.cli.main import app

app(prog_name="chgdata")
