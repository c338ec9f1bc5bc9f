"""Kill/resume harness: SIGKILL the ``chgdata`` CLI at random points, rerun to completion, compare.

    python bench/reliability.py --kills 20 --seed 0 --workers 2 --data gpaw,vasp --markdown RELIABILITY-run.md

1. Baseline: ingest → build-delta → build-dos, uninterrupted, into a fresh store; each stage's duration is
   measured and the fitted SAED reference is kept (resumed runs pass it with ``--reference``: the fit itself sums
   per-partition normal equations in completion order, so two *uninterrupted* fits already differ at ~1e-11
   relative, which would change float32 SAED bits; the Δρ computation is what is compared here).
2. Trials: a fresh store; for each stage, start the CLI (``start_new_session=True``) and after a seeded uniform
   delay in [0, measured duration) kill its whole process group (the Dask scheduler and worker processes too)
   with SIGKILL; repeat until a run finishes on its own, then go on to the next stage. A run that ends before
   its kill time is not counted as a kill. Trials repeat until ``--kills`` kills were delivered.
3. After every trial: ``chgdata verify`` logic (checksums, ∫ρ dV, duplicates, orphans, card counts) and a
   comparison with the baseline: same materials in every table (lost / extra), duplicates, identical rho/mag/
   rho_ae, saed/delta and DOS checksums, same failed ids. Also: each kill's lock file is taken over by the next
   run (a dead pid's lock is stale), and no process of a killed group survives.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
STAGES = ("ingest", "build-delta", "build-dos")


def make_input(dst: Path, sets: list[str], subset: int | None = None) -> Path:
    """A --from-dir tree of symlinked files: every calculation folder of the given shared data sets."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in sets:
        folders = sorted(p for p in (SHARED_DATA / name).iterdir() if p.is_dir())
        folders = [f for f in folders if f.name != "LICENSES"]
        for folder in folders[:subset] if subset else folders:
            out = dst / folder.name
            out.mkdir()
            for f in folder.iterdir():
                if f.is_file():
                    (out / f.name).symlink_to(f)
    return dst


def command(stage: str, store: Path, input_dir: Path, workers: int, reference: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "chgdata.cli.main", stage, "--store", str(store), "--workers", str(workers), "-q"]
    if stage == "ingest":
        cmd += ["--from-dir", str(input_dir)]
    if stage == "build-delta" and reference is not None:
        cmd += ["--reference", str(reference)]
    return cmd


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_to_end(cmd: list[str], timeout: float = 600) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), start_new_session=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:5])} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class KillLog:
    delivered: int = 0
    finished_before_kill: int = 0
    locks_left: int = 0
    locks_taken_over: int = 0
    survivors: int = 0
    per_stage: collections.Counter = field(default_factory=collections.Counter)
    delays: list[tuple[str, float]] = field(default_factory=list)


def run_with_kill(cmd: list[str], delay: float, log: KillLog, stage: str, store: Path) -> bool:
    """Start ``cmd``; SIGKILL its process group after ``delay`` s. True if killed, False if it finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for _ in range(100):  # the group's other members (Dask workers) are reaped by init
            if not _group_alive(proc.pid):
                break
            time.sleep(0.05)
        else:
            log.survivors += 1
            os.killpg(proc.pid, signal.SIGKILL)
        log.delivered += 1
        log.per_stage[stage] += 1
        log.delays.append((stage, round(delay, 2)))
        if (store / ".chgdata.lock").exists():
            log.locks_left += 1
        return True
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed ({proc.returncode}) without being killed: {err.strip()[-2000:]}")
    log.finished_before_kill += 1
    return False


def snapshot(store: Path) -> dict:
    """What must match between runs: per table, material → checksums; failed ids; verify's problems."""
    from chgdata.pipelines.dos import DOS_TABLE

    from chgdata import contract as C
    from chgdata.store import Location, orphans, read_table
    from chgdata.verify import fragment_ids, verify_store

    loc = Location.parse(store)
    cols = {C.INDEX: [C.COL_RHO_SHA, C.COL_MAG_SHA, C.COL_AE_SHA, C.COL_STATUS],
            C.DELTA_INDEX: ["saed_sha256", "delta_sha256"], DOS_TABLE: ["dos_sha256"]}
    tables, dups = {}, {}
    for table, keep in cols.items():
        t = read_table(loc, table)
        rows = [] if t is None else t.select([C.COL_ID, *keep]).to_pylist()
        # raw rows over all fragments: read_table shows the newest row of an id, so a material committed twice
        # (a resumed run redoing committed work) is only visible here
        ids = [m for frag in fragment_ids(loc, table).values() for m in frag]
        dups[table] = sorted(m for m, n in collections.Counter(ids).items() if n > 1)
        tables[table] = {r[C.COL_ID]: tuple(r[k] for k in keep) for r in rows}
    fails = read_table(loc, C.FAILURES)
    have = set(tables[C.INDEX])
    failed = set() if fails is None else {r["material_id"] for r in fails.to_pylist()
                                          if r["stage"] == "ingest" and r["material_id"] not in have}
    tmp = [p for p in store.rglob(".*.tmp")]
    problems = verify_store(store).problems
    raw_orphans = [p for p in problems if p.kind == "orphan" and p.table == C.DOS_RAW]
    return {"tables": tables, "dups": dups, "failed": failed, "orphans": orphans(loc), "tmp": tmp,
            "problems": [p for p in problems if p not in raw_orphans], "raw_orphans": raw_orphans,
            "lock": (store / ".chgdata.lock").exists()}


def compare(base: dict, got: dict) -> dict[str, int]:
    lost = dup = mismatch = extra = 0
    for table, want in base["tables"].items():
        have = got["tables"][table]
        lost += len(set(want) - set(have))
        extra += len(set(have) - set(want))
        dup += len(got["dups"][table])
        mismatch += sum(have[m] != want[m] for m in set(want) & set(have))
    return {"lost": lost, "extra": extra, "duplicated": dup, "checksum_mismatches": mismatch,
            "failed_set_differs": int(base["failed"] != got["failed"]), "orphans": len(got["orphans"]),
            "tmp_files": len(got["tmp"]), "verify_problems": len(got["problems"]), "lock_left": int(got["lock"]),
            "orphan_dos_raw_fragments": len(got["raw_orphans"])}


def baseline(work: Path, input_dir: Path, workers: int, stages) -> tuple[Path, dict[str, float], Path | None]:
    store = work / "baseline"
    durations = {s: run_to_end(command(s, store, input_dir, workers, None)) for s in stages}
    reference = None
    if "build-delta" in stages:
        reference = work / "saed_reference.json"
        shutil.copy(store / "saed_reference.json", reference)
    return store, durations, reference


def harness(kills: int = 20, seed: int = 0, workers: int = 2, sets: tuple[str, ...] = ("gpaw", "vasp"),
            subset: int | None = None, work: Path | None = None, max_trials: int = 20, echo=print,
            stages: tuple[str, ...] = STAGES) -> dict:
    """Run the baseline and kill trials until ``kills`` kills were delivered; returns the results."""
    rng = random.Random(seed)
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="chgdata-reliability-")) if own else Path(work)
    try:
        input_dir = make_input(work / "input", list(sets), subset)
        t0 = time.perf_counter()
        base_store, durations, reference = baseline(work, input_dir, workers, stages)
        base = snapshot(base_store)
        echo(f"baseline: {len(base['tables'])} tables, {len(base['tables']['structures.parquet'])} materials, "
             f"durations " + ", ".join(f"{s} {d:.1f}s" for s, d in durations.items()))
        log = KillLog()
        totals: collections.Counter = collections.Counter()
        trials = 0
        while log.delivered < kills and trials < max_trials:
            trials += 1
            store = work / f"trial-{trials}"
            left = kills - log.delivered  # this trial's kills, spread over the stages (ingest gets the extra)
            quota = {s: left // len(stages) + (i < left % len(stages)) for i, s in enumerate(stages)}
            for stage in stages:
                cmd = command(stage, store, input_dir, workers, reference)
                done_before = log.per_stage[stage]
                while log.per_stage[stage] - done_before < quota[stage]:
                    before_lock = (store / ".chgdata.lock").exists()
                    killed = run_with_kill(cmd, rng.uniform(0, durations[stage]), log, stage, store)
                    if before_lock:  # this run started on a dead process's lock and got past it
                        log.locks_taken_over += 1
                    if not killed:
                        break
                else:
                    if (store / ".chgdata.lock").exists():
                        log.locks_taken_over += 1
                    run_to_end(cmd)
            got = snapshot(store)
            result = compare(base, got)
            totals.update(result)
            echo(f"[{time.perf_counter() - t0:.0f}s] trial {trials}: kills so far {log.delivered} "
                 + " ".join(f"{k}={v}" for k, v in result.items())
                 + ("" if not got["problems"] else f" verify: {got['problems'][:3]}"))
        return {"kills": log.delivered, "trials": trials, "finished_before_kill": log.finished_before_kill,
                "kills_per_stage": dict(log.per_stage), "locks_left_by_kills": log.locks_left,
                "locks_taken_over": log.locks_taken_over, "surviving_processes": log.survivors,
                "materials": len(base["tables"]["structures.parquet"]),
                "baseline_failed": sorted(base["failed"]), "durations_s": durations,
                "delays": log.delays, "wall_s": time.perf_counter() - t0, **{k: totals[k] for k in (
                    "lost", "extra", "duplicated", "checksum_mismatches", "failed_set_differs", "orphans",
                    "tmp_files", "verify_problems", "lock_left", "orphan_dos_raw_fragments")}}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def markdown(res: dict, argv: list[str]) -> str:
    keys = ("kills", "lost", "extra", "duplicated", "checksum_mismatches", "failed_set_differs", "orphans",
            "tmp_files", "verify_problems", "lock_left", "locks_left_by_kills", "locks_taken_over",
            "surviving_processes", "orphan_dos_raw_fragments")
    lines = [f"`{' '.join(['python', 'bench/reliability.py', *argv])}`", "",
             f"{res['materials']} materials, {res['trials']} trial store(s), kills per stage "
             f"{res['kills_per_stage']}, {res['finished_before_kill']} runs finished before their kill time, "
             f"wall {res['wall_s']:.0f} s; uninterrupted durations "
             + ", ".join(f"{s} {d:.1f} s" for s, d in res["durations_s"].items()), "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
             "| " + " | ".join(str(res[k]) for k in keys) + " |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default="gpaw,vasp", help="comma-separated shared data sets")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run and kill")
    ap.add_argument("--subset", type=int, default=None, help="first N folders of each data set")
    ap.add_argument("--work", type=Path, default=None, help="keep the stores here (default: a temp dir, removed)")
    ap.add_argument("--markdown", type=Path, default=None, help="write the results table here")
    args = ap.parse_args(argv)
    res = harness(args.kills, args.seed, args.workers, tuple(args.data.split(",")), args.subset, args.work,
                  stages=tuple(args.stages.split(",")))
    table = markdown(res, argv)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    bad = sum(res[k] for k in ("lost", "extra", "duplicated", "checksum_mismatches", "failed_set_differs",
                               "orphans", "verify_problems", "lock_left", "surviving_processes"))
    return 0 if bad == 0 and res["kills"] >= args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
