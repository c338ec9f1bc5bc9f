"""The API key never leaves the MPRester boundary: the real ``chgdata ingest`` CLI in a subprocess with
MP_API_KEY set, an injected client serving shared data (tests/test_ingest_mp.py) and failing calls whose
exception text contains the key. Every produced file (Parquet decoded), stdout and stderr are searched.

The client is injected by the subprocess's own ``python -c`` code (test-only): it wraps
``chgdata.pipelines.ingest.run_ingest`` with ``client_factory`` and then runs the CLI app; the package has no
environment hook to swap the client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq

from tests.conftest import REPO, need_shared
from tests.test_ingest_mp import KEY

CODE = textwrap.dedent("""
    import functools, sys
    sys.path.insert(0, {repo!r})
    import chgdata.pipelines.ingest as ingest
    from tests.test_ingest_mp import KEY, MPRestError, shared_data_client

    def factory(key):
        flaky = {{("chgcar", "mp-1002"): [MPRestError(f"error status code 500: key={{KEY}}")] * 9,
                  ("structure", "mp-1003"): [MPRestError(f"status code 401: API key {{KEY}} is not valid")]}}
        return shared_data_client(key, flaky)

    ingest.run_ingest = functools.partial(ingest.run_ingest, client_factory=factory)
    from chgdata.cli.main import app
    app(sys.argv[1:], prog_name="chgdata")
""")


def test_key_never_reaches_files_output_or_errors(tmp_path):
    need_shared()
    store = tmp_path / "store"
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "MP_API_KEY": KEY, "PYTHONPATH": path, "COLUMNS": "300"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    res = subprocess.run(
        [sys.executable, "-c", CODE.format(repo=str(REPO)), "ingest", "--mp-ids", "mp-1001,mp-1002,mp-1003,mp-4040",
         "--store", str(store), "--workers", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr[-3000:]  # finished, some materials failed
    output = res.stdout + res.stderr
    assert "committed 1" in res.stdout and "failed 3" in res.stdout, output[-3000:]
    assert "****" in output  # the failing calls' messages were scrubbed, not dropped
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:  # the store, the card, and anything Dask wrote into the working directory
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data += str(pq.read_table(path).to_pylist()).encode()
        assert KEY[:12].encode() not in data, path
    assert KEY[:12] not in output, [ln for ln in output.splitlines() if KEY[:12] in ln]
    fails = {}
    for f in pq.read_table(store / "failures.parquet").to_pylist():
        fails[f["material_id"]] = f["reason"]
    assert "500" in fails["mp-1002"] and "****" in fails["mp-1002"]
    assert "401" in fails["mp-1003"] and "****" in fails["mp-1003"]
    assert "404" in fails["mp-4040"]
