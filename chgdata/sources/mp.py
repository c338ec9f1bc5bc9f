"""Materials Project through the official ``mp_api.client.MPRester``.

Key: ``--api-key``, else ``MP_API_KEY``, else ``PMG_MAPI_KEY`` from pymatgen's config (``~/.config/.pmgrc.yaml``),
the order MPRester itself uses. It travels only inside :class:`Secret`, whose repr hides it; every error message
is scrubbed of it before it is recorded or shown. Ids are validated before any network call.

Routes (mp-api ≥ 0.41): a material's charge density is that of its most recently updated GGA or GGA+U static
task, the rule of ``MPRester.get_charge_density_from_material_id``. chgdata finds that task from metadata only
(``materials.search(fields=["material_id", "calc_types"])``, then ``materials.tasks.search(fields=["task_id",
"last_updated", "calc_type", "run_type"])``, batched) and downloads the grid by task id
(``get_charge_density_from_task_id``), so the task id, calc type and run type it records are those of the grid.

Retries: one layer, mp-api's own (urllib3 ``Retry`` on every request: connection errors and HTTP 429/502/504, up
to ``MAPI_CLIENT_SETTINGS.MAX_RETRIES`` times, honouring ``Retry-After``). An error that still reaches chgdata
fails its material with one line; a later run retries it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chgdata.sources.records import MaterialRecord, SourceError, validate_mp_id
from chgdata.store import utcnow

log = logging.getLogger(__name__)

#: How a missing document is worded (HTTP 404 or mp-api's "not found"/"No DOS" messages).
NOT_FOUND = re.compile(r"status code\D{0,3}404|\b404\b|not found|no (dos|data|document|density of states)", re.I)

#: The calculation types whose charge density MP serves for a material (emmet ``CalcType`` values).
STATIC_CALC_TYPES = ("GGA Static", "GGA+U Static")
#: Materials per metadata query (mp-api pages larger queries itself; this bounds one request's id list).
QUERY_CHUNK = 500


class Secret:
    """A string that never shows itself in repr/str, logs, tracebacks or pickled task graphs' reprs."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value or None

    def get(self) -> str | None:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret(None)"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "****") if self._value else text

    @classmethod
    def from_env(cls, flag: str | None = None) -> Secret:
        """``flag``, else ``$MP_API_KEY``, else ``PMG_MAPI_KEY`` of pymatgen's SETTINGS (as MPRester looks)."""
        key = flag or os.environ.get("MP_API_KEY")
        if not key:
            from pymatgen.core import SETTINGS

            key = SETTINGS.get("PMG_MAPI_KEY")
        return cls(key)


def default_client(api_key: Secret):
    """The real client. Imported lazily so data-only use needs no network stack at import time."""
    from mp_api.client import MPRester

    if not api_key:
        raise SourceError("no Materials Project API key: set MP_API_KEY (or PMG_MAPI_KEY in ~/.config/.pmgrc.yaml) "
                          "or pass --api-key")
    return MPRester(api_key=api_key.get(), mute_progress_bars=True)


def _get(doc: Any, name: str) -> Any:
    """A field of an mp-api document (a pydantic model or a dict)."""
    return doc.get(name) if isinstance(doc, dict) else getattr(doc, name, None)


def _id(value: Any) -> str:
    """An MP id as text: emmet's AlphaID prints as ``mp-ft``, its ``formatted`` form is ``mp-149``."""
    return str(getattr(value, "formatted", None) or value)


def _text(value: Any) -> str | None:
    """An enum (emmet's CalcType/RunType) or plain value as text; None stays None."""
    return None if value is None else str(getattr(value, "value", value))


@dataclass(frozen=True)
class TaskInfo:
    """The task behind a material's current charge density on MP."""

    task_id: str
    last_updated: str
    calc_type: str | None  # e.g. "GGA Static", "GGA+U Static"
    run_type: str | None  # e.g. "GGA", "GGA+U"


@dataclass
class MPSource:
    """Fetch structures, charge densities (with their task) and DOS for MP ids.

    ``client_factory`` is the MPRester boundary: called with the :class:`Secret`, it returns an ``MPRester`` (or a
    test double built against that class). Open one client with :meth:`client` and pass it to the other methods.
    """

    api_key: Secret = field(default_factory=Secret.from_env)
    client_factory: Callable[[Secret], Any] = default_client

    def _reason(self, exc: BaseException) -> str:
        return " ".join(self.api_key.scrub(f"{type(exc).__name__}: {exc}").split())[:300]

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """One open MPRester; a bad key or an unreachable server becomes one :class:`SourceError` line."""
        try:
            mpr = self.client_factory(self.api_key)
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - mp-api raises MPRestError, requests errors, ValueError ...
            raise SourceError(f"cannot open a Materials Project client ({self._reason(exc)})") from None
        with mpr:
            yield mpr

    def _call(self, what: str, material_id: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised as one scrubbed line, never swallowed
            raise SourceError(f"{material_id}: {what} failed ({self._reason(exc)})") from None

    @staticmethod
    def database_version(mpr) -> str | None:
        """The MP database version the client talks to (MPRester reads it once when it opens)."""
        return getattr(mpr, "db_version", None) or None

    def current_tasks(self, mpr, material_ids: Sequence[str]) -> dict[str, TaskInfo]:
        """For each id, the most recently updated GGA/GGA+U static task (metadata only, no grid download);
        ids without one are absent. Two queries per :data:`QUERY_CHUNK` materials."""
        out: dict[str, TaskInfo] = {}
        for start in range(0, len(material_ids), QUERY_CHUNK):
            chunk = [validate_mp_id(m) for m in material_ids[start:start + QUERY_CHUNK]]
            label = chunk[0] if len(chunk) == 1 else f"{chunk[0]} and {len(chunk) - 1} more"
            docs = self._call("material lookup", label, lambda c=chunk: mpr.materials.search(
                material_ids=c, fields=["material_id", "calc_types"]))
            owner: dict[str, str] = {}
            for doc in docs or []:
                for task, calc in (_get(doc, "calc_types") or {}).items():
                    if _text(calc) in STATIC_CALC_TYPES:
                        owner[_id(task)] = _id(_get(doc, "material_id"))
            if not owner:
                continue
            tasks = self._call("task lookup", label, lambda o=owner: mpr.materials.tasks.search(
                task_ids=list(o), fields=["task_id", "last_updated", "calc_type", "run_type"]))
            for t in tasks or []:
                mid = owner.get(_id(_get(t, "task_id")))
                if mid is None:
                    continue
                info = TaskInfo(_id(_get(t, "task_id")), str(_get(t, "last_updated") or ""),
                                _text(_get(t, "calc_type")), _text(_get(t, "run_type")))
                if mid not in out or info.last_updated > out[mid].last_updated:
                    out[mid] = info
        return out

    def structure(self, material_id: str, mpr=None):
        """The structure of an MP material only (no density, no DOS); opens a client when none is given."""
        mid = validate_mp_id(material_id)
        if mpr is None:
            with self.client() as mpr:
                return self.structure(mid, mpr)
        s = self._call("structure", mid, lambda: mpr.get_structure_by_material_id(mid))
        if s is None:
            raise SourceError(f"{mid}: Materials Project has no structure for this material")
        return s

    def fetch(self, material_id: str, mpr, database_version: str | None = None,
              task: TaskInfo | None = None) -> MaterialRecord:
        """Structure, charge density of the current static task, and DOS (None when MP has none) of one id.
        ``task``: the id's entry of :meth:`current_tasks` when already looked up (a partition does it at once)."""
        mid = validate_mp_id(material_id)
        structure = self.structure(mid, mpr)
        task = task or self.current_tasks(mpr, [mid]).get(mid)
        if task is None:
            raise SourceError(f"{mid}: Materials Project has no GGA/GGA+U static task (no charge density)")
        chgcar = self._call("charge density", mid, lambda: mpr.get_charge_density_from_task_id(task.task_id))
        if chgcar is None:
            raise SourceError(f"{mid}: Materials Project has no charge density for task {task.task_id}")
        try:
            dos = self._call("DOS", mid, lambda: mpr.get_dos_by_material_id(mid))
        except SourceError as exc:  # MP has no DOS for many materials: keep the density; other errors fail
            if not NOT_FOUND.search(str(exc)):
                raise
            dos = None
        from chgdata.dos_io import from_pymatgen

        got_formula = chgcar.structure.composition.reduced_formula
        if got_formula != structure.composition.reduced_formula:
            raise SourceError(f"{mid}: charge-density task {task.task_id} is for {got_formula}, "
                              f"not {structure.composition.reduced_formula}")
        total = chgcar.data["total"]
        log.debug("%s: task %s (%s), grid %s", mid, task.task_id, task.calc_type, total.shape)
        return MaterialRecord(
            material_id=mid, source="mp", structure=chgcar.structure, total=total, diff=chgcar.data.get("diff"),
            dos=None if dos is None else from_pymatgen(dos, natoms=len(chgcar.structure)),
            task_id=task.task_id, calc_type=task.calc_type, run_type=task.run_type,
            database_version=database_version or self.database_version(mpr),
            input_files=[f"mp-api:materials/{mid}", f"mp-api:charge_density/{task.task_id}", f"mp-api:dos/{mid}"],
            retrieved_at=utcnow(), expected_grid=tuple(total.shape))
