"""The installed package as the README's set-up leaves it (issue 30 item 8): ``import chgdata`` finds the project
from any working directory, even beside a folder named ``chgdata`` (a clone under that name, which Python would
otherwise import as an empty namespace package), and every source module of the repository is installed under its
``chgdata.*`` name."""

from __future__ import annotations

import subprocess
import sys

from tests.test_structure import PACKAGES, REPO, _modules

SETUP = "install with the README's set-up (pip install -e ... --config-settings editable_mode=strict)"


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_folder_named_chgdata_in_the_working_directory_does_not_shadow_the_package(tmp_path):
    (tmp_path / "chgdata").symlink_to(REPO, target_is_directory=True)  # the clone, as `git clone ... chgdata`
    run = _python("import chgdata, chgdata.models.predict; chgdata.open_dataset; print(chgdata.__file__)", tmp_path)
    assert run.returncode == 0 and run.stdout.strip() != "None", (
        f"`import chgdata` beside a folder named chgdata picked that folder: {SETUP}\n{run.stderr[-2000:]}")


def test_every_source_module_is_installed(tmp_path):
    """Outside the clone (no source folder on sys.path), as users import it."""
    names = sorted(_modules())
    code = ("import importlib.util, sys\n"
            f"missing = [n for n in {names!r} if importlib.util.find_spec(n) is None]\n"
            "print(' '.join(missing)); sys.exit(1 if missing else 0)")
    run = _python(code, tmp_path)
    assert run.returncode == 0, (f"not installed: {run.stdout.strip() or run.stderr[-2000:]}; the strict editable "
                                 "install links the files there were: rerun the README's pip install after adding "
                                 "a module")


def test_no_module_of_chgdata_shares_a_name_with_a_folder_installed_under_it():
    """The checkout joins chgdata's search path (chgdata/__init__.py): chgdata/models.py would hide models/."""
    clashes = [f for f in PACKAGES if f != "chgdata" and ((REPO / "chgdata" / f).exists()
                                                         or (REPO / "chgdata" / f"{f}.py").exists())]
    assert not clashes
