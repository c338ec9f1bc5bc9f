"""The Materials Project boundary: chgdata calls only what the installed ``mp_api.client.MPRester`` has.

Test doubles of the client are built from the real class (tests/conftest.py:fake_mprester), so a fake cannot
answer a name the real MPRester lacks; and every call chgdata makes on a client is checked against mp-api's own
classes, so a route like ``mpr.materials.chgcar.search`` (absent from mp-api 0.46) fails here, not silently in
production (it used to become a SourceError that the incremental update skipped).
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO, fake_mprester

#: Modules that talk to an MPRester; the client is always named ``mpr`` there.
CLIENT_MODULES = ["chgdata/sources/mp.py", "pipelines/ingest.py", "models/predict.py"]


def _chain(node: ast.expr) -> list[str] | None:
    """['materials', 'tasks', 'search'] for ``mpr.materials.tasks.search``; None when not rooted at ``mpr``."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return names[::-1] if isinstance(node, ast.Name) and node.id == "mpr" and names else None


def client_calls(path) -> set[str]:
    """Dotted names of every ``mpr.…(…)`` call in the module at ``path``."""
    tree = ast.parse(path.read_text())
    return {".".join(c) for n in ast.walk(tree) if isinstance(n, ast.Call) and (c := _chain(n.func))}


def test_every_client_call_exists_on_the_real_mprester():
    calls = set().union(*(client_calls(REPO / m) for m in CLIENT_MODULES))
    for name in sorted(calls):
        fake_mprester({name: lambda *a, **k: None})  # AttributeError when MPRester has no such route or method
    assert {"materials.search", "materials.tasks.search", "get_charge_density_from_task_id"} <= calls


@pytest.mark.parametrize("name", ["materials.chgcar.search", "get_chgcar", "materials.tasks.find",
                                  "materials.tasks.search.deep"])
def test_fakes_cannot_answer_names_mprester_lacks(name):
    with pytest.raises(AttributeError):
        fake_mprester({name: lambda *a, **k: None})


def test_fakes_refuse_unknown_attributes_wrong_arguments_and_unanswered_calls():
    fake = fake_mprester({"materials.tasks.search": lambda **k: []})
    with pytest.raises(AttributeError):
        fake.materials.chgcar  # noqa: B018 - the attribute read itself must fail
    with pytest.raises(TypeError):
        fake.materials.tasks.search(material_ids=["mp-149"])  # TaskRester.search takes task_ids, not material_ids
    with pytest.raises(AssertionError, match="unexpected MPRester call get_charge_density_from_material_id"):
        fake.get_charge_density_from_material_id("mp-149")
    assert fake.materials.tasks.search(task_ids=["mp-1"], fields=["task_id"]) == []
