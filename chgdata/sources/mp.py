"""Materials Project through the official ``mp_api.client.MPRester``.

The API key comes from ``MP_API_KEY`` or ``--api-key`` and travels only inside :class:`Secret`, whose repr hides
it; every error message is scrubbed of it before it is recorded. Ids are validated before any network call.
Network and HTTP 429/5xx errors are retried with exponential backoff, then the id fails with the reason.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chgdata.sources.records import MaterialRecord, SourceError, validate_mp_id
from chgdata.store import utcnow

#: How MPRestError words an HTTP status; 429 (rate limit) and 5xx are transient.
HTTP_RETRYABLE = re.compile(r"(status code|HTTP|status)\D{0,3}(429|5\d\d)\b|Too Many Requests", re.I)


#: How a missing document is worded (HTTP 404 or mp-api's "not found"/"No DOS" messages).
NOT_FOUND = re.compile(r"status code\D{0,3}404|\b404\b|not found|no (dos|data|document)", re.I)


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
        return cls(flag or os.environ.get("MP_API_KEY"))


def default_client(api_key: Secret):
    """The real client. Imported lazily so data-only use needs no network stack at import time."""
    from mp_api.client import MPRester

    if not api_key:
        raise SourceError("no Materials Project API key: set MP_API_KEY or pass --api-key")
    return MPRester(api_key=api_key.get(), mute_progress_bars=True)


def is_retryable(exc: BaseException) -> bool:
    """Network failures and HTTP 429/5xx are worth retrying; a missing material or a bad key is not."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
    except ImportError:  # pragma: no cover - requests comes with mp-api
        pass
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return int(status) == 429 or 500 <= int(status) < 600
    return bool(HTTP_RETRYABLE.search(str(exc)))


@dataclass
class MPSource:
    """Fetch structures, charge densities (with task ids) and DOS for MP ids.

    ``client_factory`` is the MPRester boundary: called with the :class:`Secret`, it returns an object with
    MPRester's methods used here. The default builds the real ``MPRester``.
    """

    api_key: Secret = field(default_factory=Secret.from_env)
    client_factory: Callable[[Secret], Any] = default_client
    retries: int = 4
    backoff_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def _call(self, what: str, material_id: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
                reason = self.api_key.scrub(f"{type(exc).__name__}: {exc}")
                reason = " ".join(reason.split())[:300]
                if not is_retryable(exc):
                    raise SourceError(f"{material_id}: {what} failed ({reason})") from None
                if attempt == self.retries:
                    raise SourceError(f"{material_id}: {what} failed after {self.retries + 1} attempts "
                                      f"({reason})") from None
                self.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def fetch(self, material_id: str) -> MaterialRecord:
        mid = validate_mp_id(material_id)
        with self.client_factory(self.api_key) as mpr:
            db_version = self._call("database version", mid, mpr.get_database_version)
            structure = self._call("structure", mid, lambda: mpr.get_structure_by_material_id(mid))
            got = self._call("charge density", mid,
                             lambda: mpr.get_charge_density_from_material_id(mid, inc_task_doc=True))
            if got is None:
                raise SourceError(f"{mid}: Materials Project has no charge density for this material")
            chgcar, task_doc = got
            task_id = task_doc.get("task_id") if isinstance(task_doc, dict) else getattr(task_doc, "task_id", None)
            try:
                dos = self._call("DOS", mid, lambda: mpr.get_dos_by_material_id(mid))
            except SourceError as exc:  # MP has no DOS for many materials: keep the density; other errors fail
                if not NOT_FOUND.search(str(exc)):
                    raise
                dos = None
        from chgdata.dos import from_pymatgen

        got_formula = chgcar.structure.composition.reduced_formula
        if got_formula != structure.composition.reduced_formula:
            raise SourceError(f"{mid}: charge-density task {task_id} is for {got_formula}, "
                              f"not {structure.composition.reduced_formula}")
        total = chgcar.data["total"]
        return MaterialRecord(
            material_id=mid, source="mp", structure=chgcar.structure, total=total, diff=chgcar.data.get("diff"),
            dos=None if dos is None else from_pymatgen(dos, natoms=len(chgcar.structure)),
            task_id=None if task_id is None else str(task_id), database_version=db_version,
            input_files=[f"mp-api:materials/{mid}", f"mp-api:charge_density/{task_id}", f"mp-api:dos/{mid}"],
            retrieved_at=utcnow(), expected_grid=tuple(total.shape))
