"""Lake I/O: Delta tables under the lake root, registered as <database>.<table>, and the runs log.

Layout (local default ``./lake``)::

    lake/<table>/            one Delta table per folder, partitioned by dataset where it has one
    lake/raw/<dataset>/      raw simulated scenes (EGMS L2b CSV), input of ingest
    lake/models/, outputs/   model versions (``model_store``) and pictures, GeoJSON (``lake_files``)
    lake/work/               training shards while a stage runs, removed when it ends
    lake/_catalog/           embedded metastore (Derby) and warehouse, when catalog.kind=embedded
    lake/_insarlake_lake.json  marks the folder as a lake (``LakeFiles.check_lake``)
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.config import Config
from insarlake.errors import InputError, first_line
from insarlake.files import LakeFiles, is_local_path, spark_settings
from insarlake.modelstore import COMPLETE, ModelStore
from insarlake.reuse import Verdict
from insarlake.tables import TABLES, conform, schema, table as table_contract
from insarlake.tracking import MlflowTracker, mlflow_wanted

log = logging.getLogger(__name__)


# What a lake's root holds: its tables (insarlake/tables.py), and its folders of files (see the
# layout above). A non-empty folder holding none of them (and no marker) is refused as a lake
# (LakeFiles.check_lake).
LAKE_ENTRIES = tuple(TABLES) + ("raw", "models", "outputs", "work", "_catalog")


def local_path(uri: str) -> str:
    """A path Python can open (driver or executor) for a Hadoop-style URI: file: and plain paths
    as they are, dbfs:/x as the /dbfs/x mount; other URIs (s3://...) unchanged."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    if parsed.scheme == "dbfs":
        return "/dbfs" + unquote(parsed.path)
    return uri


def lake_root(config: Config) -> str:
    """The lake root: an absolute local path, or the URI as configured."""
    path = config.lake.path
    if is_local_path(path):
        return str(Path(path.removeprefix("file://")).expanduser().resolve())
    return path.rstrip("/")


def catalog_dir(config: Config) -> Path:
    return Path(lake_root(config)) / "_catalog"


def lake_files(config: Config, spark: SparkSession | None = None) -> LakeFiles:
    """The lake's plain files (models, pictures, GeoJSON, training shards) wherever the lake lives,
    with the file-system settings of the config's ``spark.conf`` and of the running ``spark``."""
    return LakeFiles(lake_root(config), spark_settings(config, spark))


def model_store(config: Config, kind: str, dataset: str, name: str, spark: SparkSession | None = None) -> ModelStore:
    """The saved versions of model ``name`` of ``kind`` (tskm, classifier, forecast) for ``dataset``,
    logged to MLflow as they are saved when models.mlflow asks for it."""
    tracker = MlflowTracker(config.models.mlflow_experiment) if mlflow_wanted(config.models.mlflow) else None
    return ModelStore(lake_files(config, spark), kind, dataset, name, tracker)


def table_path(config: Config, table: str) -> str:
    return f"{lake_root(config)}/{table}"


def raw_path(config: Config, dataset: str) -> str:
    return f"{lake_root(config)}/raw/{dataset}"


def table_name(config: Config, table: str) -> str:
    return f"{config.catalog.database}.{table}"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _delta_path_sql(config: Config, table: str) -> str:
    """The Delta table ``table`` in SQL by its path (delta.`<path>`), backticks in the path escaped."""
    return "delta.`" + table_path(config, table).replace("`", "``") + "`"


def write_table(spark: SparkSession, df: DataFrame, config: Config, table: str,
                datasets: Iterable[str] | None = None, mode: str = "replace", run: "Run | None" = None) -> None:
    """Write ``df`` to the Delta table ``table``, whose columns and partitioning are the table
    contract's (insarlake/tables.py; rows of another shape are refused before anything is written).

    mode ``replace``: the rows of ``datasets`` are replaced atomically (Delta replaceWhere), other
    datasets are kept, so re-running a stage is idempotent; in a result table (one that keeps every
    run's rows) only the rows of ``run`` (required there, and the run_id of every row written) are
    replaced, and the run notes what it wrote (``prune_runs``). ``append``: rows are added.
    A table written under an older contract gains the columns added to it since (null in the rows
    already there). The table is registered in the catalog on first write.
    """
    contract = table_contract(table)
    if problems := conform(table, df.schema):
        raise ValueError(f"table {table}: the rows written do not match the table contract (insarlake/tables.py): "
                         + "; ".join(problems))
    path = table_path(config, table)
    # a table written under an older contract takes the columns added since (null in its old rows):
    # the rows are the contract's (conform above), so nothing else can be added this way
    writer = df.select(*contract.column_names).write.format("delta").option("mergeSchema", "true")
    if contract.partition_by:
        writer = writer.partitionBy(*contract.partition_by)
    if mode == "replace":
        datasets = sorted(set(datasets or []))
        if not datasets:
            raise ValueError("replace needs the datasets whose rows are replaced")
        condition = "dataset IN (" + ", ".join(_sql_literal(d) for d in datasets) + ")"
        if contract.keeps_runs:
            if run is None:
                raise ValueError(f"table {table} keeps every run's rows: write_table needs the run")
            condition += f" AND run_id = {_sql_literal(run.run_id)}"
            run.wrote.setdefault(table, set()).update(datasets)
        writer = writer.mode("overwrite").option("replaceWhere", condition)
    elif mode == "append":
        writer = writer.mode("append")
    else:
        raise ValueError(f"unknown write mode {mode!r}")
    log.info("writing table %s (%s)", table, mode)
    committed(lambda: writer.save(path), f"table {table}")
    register_table(spark, config, table)


def committed(commit: Callable[[], object], what: str) -> None:
    """Run ``commit`` (one idempotent Delta commit); when another process's commit wins
    (``is_concurrent_update``), run it again after a random pause, at most _COMMIT_ATTEMPTS times."""
    for attempt in range(_COMMIT_ATTEMPTS):
        try:
            commit()
            return
        except Exception as exc:
            if not is_concurrent_update(exc) or attempt + 1 == _COMMIT_ATTEMPTS:
                raise
            log.info("%s: a concurrent commit (%s); again", what, first_line(exc))
            time.sleep(random.uniform(0.5, 2.0) * (attempt + 1))


# Delta's optimistic commits: a write that loses to another process's commit on the same files
# (or on the first commit of a new table) fails with one of these; it is written again, at most
# this many times in all.
_CONCURRENT = re.compile(r"Concurrent\w*Exception|MetadataChangedException|ProtocolChangedException|"
                         r"DELTA_CONCURRENT|DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED|"
                         r"FileAlreadyExistsException.*_delta_log")
_COMMIT_ATTEMPTS = 5


def is_concurrent_update(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta's (or the catalog's) answer to another process's concurrent change."""
    return bool(_CONCURRENT.search(f"{type(exc).__name__} {exc}"))


def register_table(spark: SparkSession, config: Config, table: str) -> None:
    """Register ``table`` in the catalog when it is not (another process registering it at the
    same moment is no error)."""
    catalog_change(spark, f"CREATE TABLE IF NOT EXISTS {table_name(config, table)} "
                           f"USING DELTA LOCATION {_sql_literal(table_path(config, table))}")


def table_exists(spark: SparkSession, config: Config, table: str) -> bool:
    """Whether the lake holds the Delta table ``table`` (through the DataFrame reader, so that it
    also works over Spark Connect without Delta's Connect plugin)."""
    from pyspark.errors import AnalysisException

    try:
        spark.read.format("delta").load(table_path(config, table)).schema
    except AnalysisException:
        return False
    return True


def read_table(spark: SparkSession, config: Config, table: str, datasets: list[str] | None = None) -> DataFrame:
    df = spark.read.format("delta").load(table_path(config, table))
    if datasets:
        df = df.where(df.dataset.isin(list(datasets)))
    return df


def analysis_pixels(spark: SparkSession, config: Config, dataset: str) -> DataFrame:
    """The pixels of ``dataset`` that the analysis stages use: every row of `pixels` except the
    second measurements of points where bursts overlap (``duplicate_of`` set; ingest/overlap.py)."""
    df = read_table(spark, config, "pixels", [dataset])
    if "duplicate_of" in df.columns:        # lakes ingested before the column existed have none
        df = df.where(F.col("duplicate_of").isNull())
    return df


def runs_by_write_time(spark: SparkSession, config: Config, table: str, dataset: str) -> list[str]:
    """The runs with rows of ``dataset`` in the result table ``table``, the one written last first
    (by the modification time of the files holding their rows; run_id breaks ties)."""
    if not table_exists(spark, config, table):
        return []
    written = (read_table(spark, config, table, [dataset])
               .select("run_id", F.col("_metadata.file_modification_time").alias("written"))
               .groupBy("run_id").agg(F.max("written").alias("written")).collect())
    return [r.run_id for r in sorted(written, key=lambda r: (r.written, r.run_id), reverse=True)]


def recorded_status(spark: SparkSession, config: Config, run_ids: list[str]) -> dict[str, str]:
    """run_id -> its status in ``runs`` (succeeded, failed, lost) for the runs recorded there."""
    if not run_ids or not table_exists(spark, config, "runs"):
        return {}
    rows = read_table(spark, config, "runs").where(F.col("run_id").isin(run_ids)).select("run_id", "status").collect()
    return {r.run_id: r.status for r in rows}


_ENDED_BADLY = ("failed", "lost")


def run_results(spark: SparkSession, config: Config, table: str, dataset: str, run_id: str | None = None,
                current: "Run | None" = None) -> DataFrame:
    """The rows of one run of ``dataset`` in the result table ``table`` (it keeps every run's):
    those of ``run_id`` when given (InputError when it has none, unless it is ``current``, which
    wrote the table for ``dataset``, with no rows); else those ``current`` wrote, when it wrote the
    table (``latest_run_id``); else those of the run written last among the runs not recorded
    failed or lost. Empty when there are none."""
    if not table_contract(table).keeps_runs:
        raise ValueError(f"table {table} does not keep runs")
    rows = read_table(spark, config, table, [dataset])
    named = run_id is not None
    if not named:
        run_id = latest_run_id(spark, config, table, dataset, current)
    if run_id is None:
        return rows.where(F.lit(False))
    rows = rows.where(F.col("run_id") == run_id)
    if named and not _wrote(current, table, dataset, run_id) and rows.isEmpty():
        raise InputError(f"table {table}: no rows of run {run_id} for dataset {dataset}")
    return rows


def rows_written(spark: SparkSession, config: Config, table: str, dataset: str, run: "Run") -> DataFrame | None:
    """The rows ``run`` wrote of ``dataset`` in the result table ``table`` (maybe none: a stage can
    write zero rows); None when the run did not write the table for ``dataset``."""
    if not table_contract(table).keeps_runs:
        raise ValueError(f"table {table} does not keep runs")
    if not _wrote(run, table, dataset):
        return None
    return read_table(spark, config, table, [dataset]).where(F.col("run_id") == run.run_id)


def runs_since_fit(spark: SparkSession, config: Config, dataset: str, store: ModelStore,
                   version: str | None = None) -> int:
    """How many succeeded runs of ``dataset`` reused ``version`` of ``store`` (default its newest; a
    version is named by the run that fitted it, and a later fit makes a newer one), from their
    ``runs.metrics``; 0 when none is saved."""
    version = version or store.latest()
    if version is None or not table_exists(spark, config, "runs"):
        return 0
    runs = read_table(spark, config, "runs")
    fitted = runs.where(F.col("run_id") == version).select("started").first()
    if fitted is None:
        return 0
    key = f"model_reused.{store.kind}.{store.name}"
    return runs.where((F.col("status") == "succeeded") & F.array_contains("datasets", dataset)
                      & (F.col("started") > F.lit(fitted.started))
                      & (F.try_element_at("metrics", F.lit(key)) == 1.0)).count()


def latest_run_id(spark: SparkSession, config: Config, table: str, dataset: str, current: "Run | None" = None
                  ) -> str | None:
    """The run whose rows of ``dataset`` in ``table`` a reader takes (``run_results``), or None:
    ``current`` when it wrote the table for ``dataset`` (no rows too: a quiet scene has no
    hotspots, and an earlier run's must not stand in for them)."""
    if _wrote(current, table, dataset):
        return current.run_id
    written = runs_by_write_time(spark, config, table, dataset)
    if current is not None and current.run_id in written:
        return current.run_id
    return _first_not_ended_badly(spark, config, written)


def _wrote(current: "Run | None", table: str, dataset: str, run_id: str | None = None) -> bool:
    """Whether ``current`` (the run ``run_id`` when given) wrote ``table`` for ``dataset``, rows or none."""
    return current is not None and (run_id is None or run_id == current.run_id) and \
        dataset in current.wrote.get(table, ())


def previous_run_id(spark: SparkSession, config: Config, table: str, dataset: str, current: "Run") -> str | None:
    """The run written last of ``dataset`` in ``table`` other than ``current``, among the runs not
    recorded failed or lost: what ``current`` compares itself with. None when there is none."""
    written = [r for r in runs_by_write_time(spark, config, table, dataset) if r != current.run_id]
    return _first_not_ended_badly(spark, config, written)


def _first_not_ended_badly(spark: SparkSession, config: Config, run_ids: list[str]) -> str | None:
    status = recorded_status(spark, config, run_ids)
    return next((r for r in run_ids if status.get(r) not in _ENDED_BADLY), None)


def prune_runs(spark: SparkSession, config: Config, run: "Run") -> list[tuple[str, str, str]]:
    """After ``run`` succeeded: in every result table it wrote, for each dataset, remove the rows
    of runs recorded failed or lost and of recorded runs older than the lake.keep_runs runs written
    last (the failed and lost not counted). Rows of runs not recorded yet (running) stay. Returns
    the (table, dataset, run_id) removed."""
    removed = []
    for table, datasets in sorted(run.wrote.items()):
        for dataset in sorted(datasets):
            written = runs_by_write_time(spark, config, table, dataset)
            status = recorded_status(spark, config, written)
            kept = [r for r in written if status.get(r) not in _ENDED_BADLY][:config.lake.keep_runs]
            gone = [r for r in written if r in status and r not in kept and r != run.run_id]
            if not gone:
                continue
            condition = (f"dataset = {_sql_literal(dataset)} AND run_id IN ("
                         + ", ".join(_sql_literal(r) for r in gone) + ")")
            committed(lambda: spark.sql(f"DELETE FROM {_delta_path_sql(config, table)} WHERE {condition}"),
                      f"table {table}")
            log.info("table %s: rows of %d older or failed run(s) of dataset %s removed (lake.keep_runs %d)",
                     table, len(gone), dataset, config.lake.keep_runs)
            removed += [(table, dataset, r) for r in gone]
    return removed


RUNS_SCHEMA = schema("runs")
HEARTBEATS_SCHEMA = schema("run_heartbeats")


def _now() -> dt.datetime:
    """The time now, timezone-aware (UTC), so that Spark stores the same instant whatever the
    driver's local time zone."""
    return dt.datetime.now(dt.timezone.utc)


class Run:
    """One job run: its id, the row counts it wrote, stage timings and scalar metrics."""

    def __init__(self, job: str, config: Config, datasets: list[str] | None = None):
        self.run_id = uuid.uuid4().hex
        self.job = job
        self.config = config
        self.datasets = list(datasets or [])
        self.started = _now()
        self.counts: dict[str, int] = {}
        self.metrics: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.wrote: dict[str, set[str]] = {}        # result table -> the datasets whose rows it wrote

    def count(self, key: str, n: int) -> None:
        self.counts[key] = int(n)
        log.info("%s: %d rows", key, n)

    def model_use(self, kind: str, name: str, verdict: Verdict | None, runs_since_fit: int) -> None:
        """Record in ``metrics`` whether model ``kind``/``name`` was reused (verdict) or fitted
        (None): model_reused.<kind>.<name> 1/0, model_new_epochs..., model_runs_since_fit...
        (runs that reused it before this one, this one not counted)."""
        key = f"{kind}.{name}"
        self.metrics[f"model_reused.{key}"] = 0.0 if verdict is None else 1.0
        self.metrics[f"model_new_epochs.{key}"] = 0.0 if verdict is None else float(verdict.new_epochs)
        self.metrics[f"model_runs_since_fit.{key}"] = 0.0 if verdict is None else float(runs_since_fit)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("stage %s ...", name)
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s done in %.1f s", name, self.seconds[name])

    def row(self, status: str, error: str | None) -> tuple:
        return (self.run_id, self.job, self.datasets, self.started, _now(), status, error,
                self.config.hash, json.dumps(self.config.as_dict(), sort_keys=True),
                self.counts, self.metrics, self.seconds)

    def heartbeat_row(self) -> tuple:
        return (self.run_id, self.job, self.datasets, self.started, _now(), float(self.config.lake.run_lost_after_s),
                f"{socket.gethostname()}:{os.getpid()}", self.config.hash,
                json.dumps(self.config.as_dict(), sort_keys=True))


@contextmanager
def recorded_run(spark: SparkSession, config: Config, job: str, datasets: list[str] | None = None) -> Iterator[Run]:
    """Context manager: yields a Run, with its heartbeats in ``run_heartbeats`` while it lasts,
    and appends it to ``runs`` with status succeeded/failed at its end. Runs found lost
    (``reap_lost_runs``, in the heartbeat's thread while the job works) get their row in ``runs``
    before it ends."""
    run = Run(job, config, datasets)
    log.info("run %s: job %s", run.run_id, job)
    heartbeat = Heartbeat(spark, config, run)
    try:
        if not table_exists(spark, config, "runs"):      # so that run_status can name it from the start
            write_table(spark, spark.createDataFrame([], RUNS_SCHEMA), config, "runs", mode="append")
        register_table(spark, config, "runs")            # a session catalog knows only this session's tables
        create_run_status_view(spark, config)
        yield run
    except BaseException as exc:
        heartbeat.stop()
        try:
            _append_run(spark, config, run.row("failed", f"{type(exc).__name__}: {exc}"[:2000]))
            heartbeat.remove()
        except Exception as failed:          # e.g. the lake itself is unreachable: the first error counts
            log.warning("run %s could not be recorded in the runs table: %s", run.run_id, first_line(failed))
        raise
    heartbeat.stop()
    _append_run(spark, config, run.row("succeeded", None))
    heartbeat.remove()
    try:
        prune_runs(spark, config, run)
        create_result_views(spark, config, sorted(run.wrote))
    except Exception as failed:          # the run's own work is done and recorded: the next run does it
        log.warning("run %s: older runs' rows not pruned or views not made: %s", run.run_id, first_line(failed))


def _append_run(spark: SparkSession, config: Config, row: tuple) -> None:
    """Append a run's row to ``runs``. A run that another job's reaper took for lost (its beats
    silent past lost_after_s while it was alive, e.g. its driver stalled) loses that row, so that
    every run keeps one row: what it says of itself at its end."""
    df = spark.createDataFrame([row], RUNS_SCHEMA)
    write_table(spark, df, config, "runs", mode="append")
    run_id = row[0]
    if read_table(spark, config, "runs").where((F.col("run_id") == run_id) & (F.col("status") == "lost")).isEmpty():
        return
    committed(lambda: spark.sql(f"DELETE FROM {_delta_path_sql(config, 'runs')} "
                                f"WHERE run_id = {_sql_literal(run_id)} AND status = 'lost'"), "table runs")
    log.warning("run %s: its row as lost (written by another job) replaced by its own", run_id)


class Heartbeat:
    """Appends ``run``'s heartbeat to ``run_heartbeats`` now (raising what the write raises: the
    lake is checked before any work), then every lake.run_heartbeat_s from a daemon thread (a
    failed write there is logged, and tried again at the next beat). Before its first beat the
    thread records the lost runs of the lake (``reap_lost_runs``), so that a job's start does not
    wait for that housekeeping (~10 s of Delta reads in a new JVM)."""

    def __init__(self, spark: SparkSession, config: Config, run: Run):
        self.spark, self.config, self.run = spark, config, run
        self._stopped = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run.run_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        df = self.spark.createDataFrame([self.run.heartbeat_row()], HEARTBEATS_SCHEMA)
        write_table(self.spark, df, self.config, "run_heartbeats", mode="append")

    def _loop(self) -> None:
        from insarlake.spark import is_connect

        if not is_connect(self.spark):       # with the FAIR scheduler, beats never wait behind a long stage
            self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", "insarlake_heartbeat")
        try:
            reap_lost_runs(self.spark, self.config, alive=self.run.run_id)
        except Exception as exc:             # housekeeping: never what stops a job
            log.warning("lost runs not recorded: %s", first_line(exc))
        while not self._stopped.wait(self.config.lake.run_heartbeat_s):
            try:
                self._beat()
            except Exception as exc:  # the run goes on; a reader sees the gap only past lost_after_s
                log.warning("run %s: heartbeat not written (%s)", self.run.run_id, first_line(exc))

    def stop(self) -> None:
        """No more beats (waits for one being written)."""
        self._stopped.set()
        self._thread.join()

    def remove(self) -> None:
        """Remove the run's heartbeats (its row in ``runs`` now tells its end)."""
        _delete_heartbeats(self.spark, self.config, [self.run.run_id])


def _delete_heartbeats(spark: SparkSession, config: Config, run_ids: list[str]) -> None:
    ids = ", ".join(_sql_literal(r) for r in run_ids)
    try:
        spark.sql(f"DELETE FROM {_delta_path_sql(config, 'run_heartbeats')} WHERE run_id IN ({ids})")
    except Exception as exc:                 # another job's reaper removed them first
        if not is_concurrent_update(exc):
            raise


# When a run without a row in `runs` is lost: its last heartbeat (`heartbeat`) is older than its own
# `lost_after_s`. The one place of the rule: the run_status view and the reaper both use it.
LOST_RULE_SQL = "CAST(current_timestamp() AS DOUBLE) - CAST(heartbeat AS DOUBLE) > lost_after_s"


def _lost_run_ids(spark: SparkSession, config: Config) -> list[str]:
    """The runs in ``run_heartbeats`` past their lost_after_s (some may have their row in ``runs``
    already: killed between writing it and removing their heartbeats)."""
    last = (read_table(spark, config, "run_heartbeats").groupBy("run_id")
            .agg(F.max("heartbeat").alias("heartbeat"), F.max("lost_after_s").alias("lost_after_s")))
    return sorted(r.run_id for r in last.where(F.expr(LOST_RULE_SQL)).select("run_id").collect())


def reap_lost_runs(spark: SparkSession, config: Config, alive: str | None = None) -> list[str]:
    """Give every lost run (heartbeats past their lost_after_s, no row in ``runs``) its row in
    ``runs`` (status lost, finished = its last heartbeat), remove what it left half-written in the
    lake's files (``_remove_leftovers``), then its heartbeats (so that a reaper killed half-way is
    finished by the next one). A concurrent job reaping the same
    runs makes this one's MERGE fail: then nothing is done here (that job records them). Returns
    the run ids recorded. With no lost run (the usual case) it reads ``run_heartbeats`` once.
    ``alive``: the caller's own run, never taken for lost (its reaping may outlast lost_after_s
    before its next beat: benchmarks/crashes.py saw a run record itself lost and lose its files)."""
    if not table_exists(spark, config, "run_heartbeats"):
        return []
    lost_ids = [r for r in _lost_run_ids(spark, config) if r != alive]
    if not lost_ids:
        return []
    has_runs = table_exists(spark, config, "runs")
    files = lake_files(config, spark)
    if has_runs:
        recorded = read_table(spark, config, "runs").where(F.col("run_id").isin(lost_ids)).select(
            "run_id", "status", "datasets").collect()
        # killed between its row in runs and removing its heartbeats; or a reaper killed after
        # recording it lost (its leftovers are removed before its heartbeats, so this finishes that)
        for row in recorded:
            if row.status == "lost":
                _remove_leftovers(files, row.run_id, row.datasets or [])
        if recorded:
            _delete_heartbeats(spark, config, sorted(r.run_id for r in recorded))
        lost_ids = [r for r in lost_ids if r not in {row.run_id for row in recorded}]
        if not lost_ids:
            return []
    beats = read_table(spark, config, "run_heartbeats").where(F.col("run_id").isin(lost_ids))
    lost = beats.groupBy("run_id").agg(F.max("heartbeat").alias("heartbeat"), F.first("job").alias("job"),
                                       F.first("datasets").alias("datasets"), F.min("started").alias("started"),
                                       F.first("config_hash").alias("config_hash"), F.first("config").alias("config"))
    error = F.concat(F.lit("lost: no heartbeat since "), F.col("heartbeat").cast("string"),
                     F.lit(" UTC (the run ended without recording its end: killed, out of memory or its machine lost)"))
    rows = lost.select("run_id", "job", "datasets", "started", F.col("heartbeat").alias("finished"),
                       F.lit("lost").alias("status"), error.alias("error"), "config_hash", "config",
                       *(F.lit(None).cast(RUNS_SCHEMA[c].dataType).alias(c) for c in ("counts", "metrics", "seconds"))
                       ).collect()
    run_ids = [r.run_id for r in rows]
    found = spark.createDataFrame(rows, RUNS_SCHEMA)
    try:
        if has_runs:
            view = f"_insarlake_lost_{uuid.uuid4().hex}"
            found.createOrReplaceTempView(view)
            try:
                spark.sql(f"MERGE INTO {_delta_path_sql(config, 'runs')} AS r USING {view} AS l "
                          "ON r.run_id = l.run_id WHEN NOT MATCHED THEN INSERT *")
            finally:
                spark.catalog.dropTempView(view)
        else:
            write_table(spark, found, config, "runs", mode="append")
    except Exception as exc:
        if not is_concurrent_update(exc):
            raise
        log.info("lost runs being recorded by another job (%s)", first_line(exc))
        return []
    for row in rows:
        log.warning("run %s (job %s, started %s UTC) is lost: %s", row.run_id, row.job, row.started, row.error)
        _remove_leftovers(files, row.run_id, row.datasets or [])
    _delete_heartbeats(spark, config, run_ids)      # last: a reaper killed before this is finished by the next
    return run_ids


def _remove_leftovers(files: LakeFiles, run_id: str, datasets: list[str]) -> None:
    """What a lost run left behind: its training shards (work/<stage>/<dataset>/<run_id>/), its
    pictures and GeoJSON (outputs/<dataset>/<run_id>/) and its model versions whose save did not
    finish (models/<kind>/<dataset>/<name>/<run_id>/ without _complete.json)."""
    for dataset in datasets:
        for stage in files.list_dirs("work"):
            files.discard("work", stage, dataset, run_id)
        files.discard("outputs", dataset, run_id)
        for kind in files.list_dirs("models"):
            for name in files.list_dirs("models", kind, dataset):
                version = ("models", kind, dataset, name, run_id)
                if files.exists(*version) and not files.is_file(*version, COMPLETE):
                    files.discard(*version)


def create_run_status_view(spark: SparkSession, config: Config) -> None:
    """The view <database>.run_status: one row per run, its status from ``runs`` when it ended
    (succeeded, failed, lost) else from its heartbeats: running, or lost once its last heartbeat
    is older than its lost_after_s (the view tells a run still going from a dead one at once;
    ``runs`` gets the lost run's row when the next job starts)."""
    runs, beats = table_name(config, "runs"), table_name(config, "run_heartbeats")
    catalog_change(spark, f"""CREATE OR REPLACE VIEW {table_name(config, 'run_status')} AS
SELECT run_id, job, datasets, started, finished, status, error, CAST(NULL AS TIMESTAMP) AS heartbeat
FROM {runs}
UNION ALL
SELECT h.run_id, h.job, h.datasets, h.started, CAST(NULL AS TIMESTAMP) AS finished,
  CASE WHEN {LOST_RULE_SQL} THEN 'lost' ELSE 'running' END AS status,
  CAST(NULL AS STRING) AS error, h.heartbeat
FROM (SELECT run_id, first(job) AS job, first(datasets) AS datasets, min(started) AS started,
             max(heartbeat) AS heartbeat, max(lost_after_s) AS lost_after_s
      FROM {beats} GROUP BY run_id) AS h
LEFT ANTI JOIN {runs} AS r ON h.run_id = r.run_id""")


# The views for analysts that result tables get besides latest_<table> (create_result_views): view ->
# (the tables whose writes make it again, the tables it reads besides those, which exist whenever
# one of those does, its query). hotspot_history names each hotspot's track when the lake has
# tracks (the track given to it by the last succeeded run that tracked it; _history_query).
_SUCCEEDED = "status = 'succeeded'"
_LIVE_TRACK = "k.status IN ('new', 'continuing', 'merged', 'split')"
_HISTORY = ("SELECT h.*, r.finished AS run_finished, {track_id} AS track_id FROM {hotspots} AS h "
            "JOIN {runs} AS r ON h.run_id = r.run_id {tracks} WHERE r.{succeeded} AND h.retained")
_HISTORY_TRACKS = ("LEFT JOIN (SELECT k.dataset, k.hotspots_run, k.hotspot_id, max_by(k.track_id, q.finished) AS track_id "
                   "FROM {hotspot_tracks} AS k JOIN {runs} AS q ON k.run_id = q.run_id "
                   f"WHERE q.{_SUCCEEDED} AND {_LIVE_TRACK} GROUP BY k.dataset, k.hotspots_run, k.hotspot_id) AS t "
                   "ON t.dataset = h.dataset AND t.hotspots_run = h.run_id AND t.hotspot_id = h.hotspot_id")
_MORE_VIEWS = {
    "hotspot_history": (("hotspots", "hotspot_tracks"), (), None),                       # _history_query
    "active_alerts": (("alerts",), ("hotspot_tracks",),
                      "SELECT a.*, r.finished AS run_finished, t.status AS track_status, t.first_seen_date, "
                      "t.n_pixels, t.mean_velocity, t.acceleration_mm_yr2 FROM {latest_alerts} AS a "
                      "JOIN {runs} AS r ON a.run_id = r.run_id LEFT JOIN {hotspot_tracks} AS t "
                      "ON t.dataset = a.dataset AND t.run_id = a.run_id AND t.track_id = a.track_id"),
    "pixel_forecasts": (("forecasts",), ("pixels",),
                        "SELECT f.dataset, f.run_id, f.pixel_id, p.lon, p.lat, f.date, f.horizon, f.mean, f.p05, "
                        "f.p50, f.p95 FROM {latest_forecasts} AS f JOIN {pixels} AS p "
                        "ON f.dataset = p.dataset AND f.pixel_id = p.pixel_id"),
}


def _history_query(spark: SparkSession, config: Config, names: dict[str, str]) -> str:
    tracked = table_exists(spark, config, "hotspot_tracks")
    if tracked:
        register_table(spark, config, "hotspot_tracks")
    return _HISTORY.format(**names, succeeded=_SUCCEEDED,
                           track_id="t.track_id" if tracked else "CAST(NULL AS STRING)",
                           tracks=_HISTORY_TRACKS.format(**names) if tracked else "")


def create_result_views(spark: SparkSession, config: Config, tables: Iterable[str]) -> list[str]:
    """The views of the result ``tables`` in the catalog: latest_<table> (each dataset's rows of its
    latest succeeded run that wrote the table), hotspot_history (the retained hotspots of every
    succeeded run, with the run's end and the hotspot's track), active_alerts (latest_alerts with
    the run's end and the track's state) and pixel_forecasts (latest_forecasts with each pixel's
    lon, lat). Geometries stay WKT text: a persistent view cannot call Sedona's functions (Spark
    refuses temporary functions in one), so spatial SQL wraps them in ST_GeomFromWKT. Returns the
    views made."""
    made = []
    tables = list(tables)
    names = {t: table_name(config, t) for t in TABLES}
    names.update({f"latest_{t}": table_name(config, f"latest_{t}") for t in TABLES})
    for table in tables:
        if not table_contract(table).keeps_runs:
            continue
        t, runs = names[table], names["runs"]
        catalog_change(spark, f"""CREATE OR REPLACE VIEW {names['latest_' + table]} AS
SELECT t.* FROM {t} AS t
JOIN (SELECT dataset, max_by(run_id, finished) AS run_id
      FROM (SELECT DISTINCT x.dataset, x.run_id, r.finished FROM {t} AS x JOIN {runs} AS r ON x.run_id = r.run_id
            WHERE r.{_SUCCEEDED}) AS s
      GROUP BY dataset) AS latest
ON t.dataset = latest.dataset AND t.run_id = latest.run_id""")
        made.append(f"latest_{table}")
    for view, (triggers, reads, query) in _MORE_VIEWS.items():
        if not set(triggers) & set(tables):
            continue
        for table in reads:                 # a session catalog knows this session's tables only
            register_table(spark, config, table)
        text = _history_query(spark, config, names) if query is None else query.format(**names)
        catalog_change(spark, f"CREATE OR REPLACE VIEW {table_name(config, view)} AS {text}")
        made.append(view)
    return made


def catalog_change(spark: SparkSession, statement: str) -> None:
    """Run a DDL statement; another process making the same change at the same moment is no error."""
    try:
        spark.sql(statement)
    except Exception as exc:
        if not (is_concurrent_update(exc) or "AlreadyExists" in f"{type(exc).__name__} {exc}"
                or "already exists" in str(exc)):
            raise
