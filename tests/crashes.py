"""Crash trials (issue 16): a job killed with SIGKILL (its whole process group: the Python driver,
Spark's JVM and its Python workers) at a random moment among its writes, then re-run.

A job's writes show in its log as ``writing table <name>`` and ``saved model <uri>`` lines; a
trial picks one of them at random (uniformly over those the uninterrupted job writes) and kills
the job a random delay (0..``max_delay_s``) after it appears, so that the kill lands inside a
Delta commit, a model upload, or the work between two writes. Used by tests/test_crashes.py and
benchmarks/crashes.py.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]

# Each job of the scheduled pipeline, in order, with the tables whose rows of its dataset it writes.
STAGE_TABLES = {
    "simulate": ("truth",),
    "ingest": ("epochs", "pixels", "quarantine", "geometries"),
    "cluster": ("covariogram", "clusters"),
    "classify": ("classifier_metrics", "classes"),
    "hotspots": ("hotspots", "hotspot_pixels", "hotspot_scores"),
    "alerts": ("hotspot_tracks", "alerts"),
    "forecast": ("forecasts",),
    "sites": ("site_hotspots", "sites"),
}
# Columns that name a run, a model version or a track (named after the run that first saw it):
# different in every run by design, left out when a
# re-run's rows are compared with an uninterrupted run's.
RUN_COLUMNS = ("run_id", "model_version", "hotspots_run", "first_seen_run", "track_id", "linked_tracks")

# Spark names the files of a write part-<n>-<a UUID of the write>: the UUID is left out.
_SPARK_FILE_ID = re.compile(r"(part-\d+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_WRITE = re.compile(r"writing table (?!run_heartbeats\b)(\S+)|saved model (\S+)")
_RUN = re.compile(r"run ([0-9a-f]{32}): job (\w+)")

# Small and fast: the conftest scene, TSKM and the networks cut to a few iterations.
FAST = ["simulate.n_pixels=5000", "simulate.width_km=10.0", "simulate.height_km=10.0", "simulate.tile_km=2.0",
        "simulate.start_date=2020-01-05", "simulate.end_date=2021-12-31", "simulate.urban_patches=3",
        "simulate.sources={subsidence: 1, uplift: 1, landslide: 1, tunnel: 1, postseismic: 1}",
        "spark.master=local[2]", "spark.shuffle_partitions=4", "spark.driver_memory=2g",
        "spark.conf={spark.ui.enabled: 'false'}",
        "temporal.sample_size=60", "temporal.silhouette_size=60", "temporal.k=3", "temporal.max_iter=2",
        "temporal.max_iter_barycenter=2", "covariogram.pairs=50000",
        "classify.models=[lstm]", "classify.max_epochs=2",
        "forecast.models=[dapf]", "forecast.max_epochs=1", "forecast.samples=8",
        # a killed run is told lost 10 s after its last heartbeat
        "lake.run_heartbeat_s=5", "lake.run_lost_after_s=10"]


@dataclass
class JobRun:
    """One run of a job: exit status (-9 when killed), seconds, its run id, its write events."""
    job: str
    returncode: int
    seconds: float
    run_id: str | None
    writes: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def job_command(job: str, lake: Path, dataset: str, overrides: list[str] = ()) -> list[str]:
    """The command line of ``job`` (jobs/<job>.py) on ``dataset`` in ``lake`` with the FAST settings."""
    extra = ["--input", str(lake / "raw" / dataset)] if job == "ingest" else []
    sets = [a for s in [*FAST, *overrides] for a in ("--set", s)]
    return [sys.executable, str(PROJECT / "jobs" / f"{job}.py"), "--config", str(PROJECT / "conf" / "local.yaml"),
            "--lake", str(lake), "--dataset", dataset, *extra, *sets]


def run_job(command: list[str], kill_after_write: int | None = None, delay_s: float = 0.0,
            timeout_s: float = 900.0, extra_env: dict[str, str] | None = None,
            fault: Callable[[], None] | None = None) -> JobRun:
    """Run ``command`` in its own process group (with ``extra_env`` added to its environment);
    with ``kill_after_write`` = i, SIGKILL the group ``delay_s`` after its i-th write event
    (0-based), or call ``fault`` then instead (kill something else: the catalog server, an
    executor). Returns when every process of the job has ended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")} | (extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT / "libs"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True, env=env, cwd=PROJECT)
    timers = [threading.Timer(timeout_s, _kill_group, (proc.pid,))]
    timers[0].start()
    lines, writes, run_id = [], [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if run_id is None and (m := _RUN.search(line)):
                run_id = m.group(1)
            if m := _WRITE.search(line):
                writes.append(m.group(1) or m.group(2))
                if kill_after_write is not None and len(writes) == kill_after_write + 1:
                    timers.append(threading.Timer(delay_s, fault or partial(_kill_group, proc.pid)))
                    timers[-1].start()
        returncode = proc.wait()
    finally:
        for timer in timers:
            timer.cancel()
        _kill_group(proc.pid)                # whatever of the group is left (a JVM, Python workers)
    return JobRun(command[1].rsplit("/", 1)[-1].removesuffix(".py"), returncode, time.perf_counter() - t0,
                  run_id, writes, "".join(lines))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# A notebook's part in the concurrent trials: query the lake's catalog every 2 s until the file
# argv[1] exists, then print one JSON line {"answers": [[time, pixels], ...], "errors": [...]}.
CATALOG_READER = """
import json, os, sys, time
from insarlake.config import load_config
from insarlake.spark import get_session
spark = get_session(load_config(overrides=sys.argv[2:]))
answers, errors = [], []
while not os.path.exists(sys.argv[1]):
    try:
        tables = {r.tableName for r in spark.sql("SHOW TABLES IN insar").collect()}
        n = spark.sql("SELECT count(*) AS n FROM insar.pixels").first().n if "pixels" in tables else -1
        answers.append([time.time(), n])
    except Exception as exc:
        errors.append(str(exc)[:300])
    time.sleep(2)
print(json.dumps({"answers": answers, "errors": errors}))
"""


def served_catalog() -> list[str]:
    """Settings for a lake whose catalog a Derby network server serves at a free port."""
    from insarlake.standalone import free_port

    return ["catalog.kind=server", f"catalog.server=localhost:{free_port()}"]


def catalog_command(action: str, lake: Path, settings: list[str]) -> subprocess.CompletedProcess:
    """``python -m insarlake.catalog start|status|stop`` for ``lake`` with ``settings``."""
    return subprocess.run([sys.executable, "-m", "insarlake.catalog", action, "--lake", str(lake),
                           *[a for s in settings for a in ("--set", s)]], cwd=PROJECT, text=True,
                          capture_output=True, timeout=120)


def start_catalog_reader(lake: Path, settings: list[str], stop_file: Path) -> subprocess.Popen:
    """A process that queries ``lake``'s catalog every 2 s (CATALOG_READER) until ``stop_file`` exists."""
    return subprocess.Popen([sys.executable, "-c", CATALOG_READER, str(stop_file), f"lake.path={lake}", *FAST,
                             *settings], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reader_answers(reader: subprocess.Popen, stop_file: Path) -> dict:
    """Stop the catalog reader; what it printed: {"answers": [[time, pixels], ...], "errors": [...]}."""
    import json

    stop_file.touch()
    out, err = reader.communicate(timeout=300)
    lines = out.strip().splitlines()
    if not lines:
        raise AssertionError(f"the catalog reader printed nothing: {err[-3000:]}")
    return json.loads(lines[-1])


def kill_listener(port: int) -> list[int]:
    """SIGKILL whatever process of this machine listens on TCP ``port`` (the catalog server); its pids."""
    import psutil

    pids = sorted({c.pid for c in psutil.net_connections("tcp")
                   if c.pid and c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN})
    for pid in pids:
        _kill(pid)
    return pids


def kill_an_executor(workers: list[subprocess.Popen], rng: np.random.Generator) -> list[int]:
    """SIGKILL one executor JVM of the standalone ``workers`` (chosen with ``rng``) and its Python
    workers, as a lost machine or an out-of-memory kill would; the pids killed."""
    import psutil

    executors = [p for w in workers for p in psutil.Process(w.pid).children(recursive=True)
                 if "CoarseGrainedExecutorBackend" in " ".join(_cmdline(p))]
    if not executors:
        return []
    victim = executors[int(rng.integers(len(executors)))]
    pids = [victim.pid, *(c.pid for c in victim.children(recursive=True))]
    for pid in pids:
        _kill(pid)
    return pids


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def faulty_job(job: str, lake: Path, dataset: str, share: float, seed: int, fault_log: Path) -> JobRun:
    """``job`` run with the fault hook (insarlake.faults): a ``share`` of its Python tasks fail on
    their first attempt and Spark retries them (local[2,4]); each failure is logged under ``fault_log``."""
    overrides = ["spark.master=local[2,4]",
                 "spark.conf={spark.ui.enabled: 'false', spark.python.daemon.module: insarlake.faults}"]
    return run_job(job_command(job, lake, dataset, overrides),
                   extra_env={"INSARLAKE_FAIL_SHARE": str(share), "INSARLAKE_FAIL_SEED": str(seed),
                              "INSARLAKE_FAIL_LOG": str(fault_log)})


def failures_made(fault_log: Path) -> int:
    """How many task failures the fault hook made (its log lines)."""
    return sum(len(f.read_text().splitlines()) for f in fault_log.glob("*.log")) if fault_log.is_dir() else 0


def kill_plan(rng: np.random.Generator, n_writes: int, max_delay_s: float) -> tuple[int, float]:
    """(the write after which to kill, the delay in seconds), uniform."""
    return int(rng.integers(n_writes)), float(rng.uniform(0.0, max_delay_s))


def table_rows(spark, config, table: str, dataset: str):
    """The rows of ``dataset`` in ``table`` (in a result table, those of the run a reader takes:
    ``lake.run_results``) as a pandas frame without the RUN_COLUMNS, the lake's root in text (e.g.
    the raw files' paths in pixels.source) written <lake> and Spark's write UUIDs left out of file
    names, sorted on every column (None when the table does not exist yet)."""
    from insarlake.lake import lake_root, read_table, run_results, table_exists
    from insarlake.tables import TABLES

    if not table_exists(spark, config, table):
        return None
    df = (run_results(spark, config, table, dataset) if TABLES[table].keeps_runs
          else read_table(spark, config, table, [dataset]))
    frame = df.drop(*[c for c in RUN_COLUMNS if c in df.columns]).toPandas()
    root = lake_root(config)
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, str)).any():
            frame[column] = frame[column].map(lambda v: _SPARK_FILE_ID.sub(r"\1", v.replace(root, "<lake>"))
                                              if isinstance(v, str) else v)
    keys = [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, (str, int, float, bool))).all()]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True) if keys else frame


def same_rows(a, b) -> bool:
    """Whether two table_rows frames hold the same rows (NaN equal to NaN, arrays element-wise)."""
    if a is None or b is None:
        return a is None and b is None
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for column in a.columns:
        for x, y in zip(a[column], b[column]):
            if not _same(x, y):
                return False
    return True


def row_differences(a, b) -> int:
    """How many rows of two table_rows frames have no equal in the other (rows lost plus rows
    added; 0 when they hold the same rows); a missing table counts as no rows."""
    def keys(frame) -> Counter:
        if frame is None:
            return Counter()
        return Counter(repr(tuple(_plain(v) for v in row)) for row in frame.itertuples(index=False))
    ka, kb = keys(a), keys(b)
    if (a is not None and b is not None) and list(a.columns) != list(b.columns):
        return len(a) + len(b)
    return sum(((ka - kb) + (kb - ka)).values())


def _plain(value):
    """``value`` with arrays as lists and dicts sorted, so that its repr compares rows."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return sorted((k, _plain(v)) for k, v in value.items())
    return value


def _same(x, y) -> bool:
    if isinstance(x, (list, tuple, np.ndarray)) or isinstance(y, (list, tuple, np.ndarray)):
        x, y = np.asarray(x, dtype=object), np.asarray(y, dtype=object)
        return x.shape == y.shape and all(_same(p, q) for p, q in zip(x.ravel(), y.ravel()))
    if isinstance(x, dict) or isinstance(y, dict):
        return isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys() and all(
            _same(x[k], y[k]) for k in x)
    if isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
        return True
    if x is None or y is None:
        return x is None and y is None
    return bool(x == y)


def problems_after_kill(spark, config, job: str, dataset: str, expected: dict) -> list[str]:
    """What a killed ``job`` broke: a table that cannot be read, one of its tables neither as
    before the run (no rows of ``dataset``) nor as the uninterrupted run left it (``expected``:
    {table: rows}), a model a reader reaches (latest.json) that is not whole."""
    from insarlake.errors import InputError
    from insarlake.lake import lake_files, read_table, table_exists
    from insarlake.tables import TABLES

    found = []
    for table in TABLES:
        try:
            if table_exists(spark, config, table):
                read_table(spark, config, table).count()
        except Exception as exc:
            found.append(f"table {table} unreadable: {type(exc).__name__}: {str(exc)[:200]}")
    for table in STAGE_TABLES[job]:
        rows = table_rows(spark, config, table, dataset)
        if not (rows is None or len(rows) == 0 or same_rows(rows, expected[table])):
            found.append(f"table {table} half-written ({0 if rows is None else len(rows)} rows, "
                         f"{len(expected[table])} expected)")
    try:
        reachable_models(lake_files(config), dataset)
    except InputError as exc:
        found.append(str(exc))
    return found


def problems_after_rerun(spark, config, job: str, dataset: str, expected: dict, killed: list[str],
                         rerun_id: str) -> list[str]:
    """What is wrong after the re-run of ``job`` (the killed runs being past their lost_after_s and
    reaped): its tables not equal to the uninterrupted run's, a run with two rows in ``runs``, a
    killed run neither lost nor succeeded (its kill after its row), heartbeats left, model
    versions or training shards left half-written."""
    from insarlake.lake import lake_files, read_table

    files = lake_files(config)
    found = [f"table {t}: after the re-run not equal to the uninterrupted run's" for t in STAGE_TABLES[job]
             if not same_rows(table_rows(spark, config, t, dataset), expected[t])]
    runs = read_table(spark, config, "runs").toPandas()
    found += [f"run {r}: {n} rows in runs" for r, n in runs.run_id.value_counts().items() if n > 1]
    status = dict(zip(runs.run_id, runs.status))
    found += [f"killed run {r}: status {status.get(r)}" for r in killed if status.get(r) not in ("lost", "succeeded")]
    if status.get(rerun_id) != "succeeded":
        found.append(f"re-run {rerun_id}: status {status.get(rerun_id)}")
    beats = set(read_table(spark, config, "run_heartbeats").select("run_id").toPandas().run_id)
    found += [f"run {r}: heartbeats left" for r in sorted(beats & {*killed, rerun_id})]
    found += [f"model version {v}: incomplete, left behind" for v in incomplete_versions(files, dataset)]
    found += [f"work/{stage}/{dataset}/{r}: left behind" for stage in files.list_dirs("work")
              for r in sorted(set(files.list_dirs("work", stage, dataset)) & set(killed))]
    return found


def report(header: list[str], rows: list[tuple], problems: list[str]) -> int:
    """Print a benchmark's markdown table and its problems (lines ``PROBLEM ...``); exit status 1
    when there are any."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    for problem in problems:
        print("PROBLEM", problem)
    return 1 if problems else 0


def reachable_models(files, dataset: str) -> list[str]:
    """Every model version a reader reaches (named by a latest.json), checked whole (raises
    IncompleteModel); their URIs."""
    from insarlake.modelstore import ModelStore

    found = []
    for kind in files.list_dirs("models"):
        for name in files.list_dirs("models", kind, dataset):
            store = ModelStore(files, kind, dataset, name)
            if (version := store.latest()) is not None:
                store.check_complete(version)
                found.append(store.uri(version))
    return found


def incomplete_versions(files, dataset: str) -> list[str]:
    """Model versions (kind/name/version) without their _complete.json."""
    from insarlake.modelstore import COMPLETE

    return [f"{kind}/{name}/{version}"
            for kind in files.list_dirs("models") for name in files.list_dirs("models", kind, dataset)
            for version in files.list_dirs("models", kind, dataset, name)
            if not files.is_file("models", kind, dataset, name, version, COMPLETE)]
