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
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from insarlake.config import Config
from insarlake.files import LakeFiles, is_local_path, spark_settings
from insarlake.modelstore import ModelStore
from insarlake.tracking import MlflowTracker, mlflow_wanted

log = logging.getLogger(__name__)


# What a lake's root holds: its tables, and its folders of files (see the layout above). A
# non-empty folder holding none of them (and no marker) is refused as a lake (LakeFiles.check_lake).
TABLES = ("pixels", "epochs", "quarantine", "runs", "truth", "clusters", "covariogram", "classes",
          "classifier_metrics", "hotspots", "hotspot_pixels", "hotspot_scores", "forecasts", "forecast_metrics")
LAKE_ENTRIES = TABLES + ("raw", "models", "outputs", "work", "_catalog")


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


def write_table(spark: SparkSession, df: DataFrame, config: Config, table: str,
                datasets: Iterable[str] | None = None, partition_by: tuple[str, ...] = ("dataset",),
                mode: str = "replace") -> None:
    """Write ``df`` to the Delta table ``table``.

    mode ``replace``: the rows of ``datasets`` are replaced atomically (Delta replaceWhere), other
    datasets are kept, so re-running a stage is idempotent; ``append``: rows are added.
    The table is registered in the catalog on first write.
    """
    path = table_path(config, table)
    writer = df.write.format("delta")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if mode == "replace":
        datasets = sorted(set(datasets or []))
        if not datasets:
            raise ValueError("replace needs the datasets whose rows are replaced")
        condition = "dataset IN (" + ", ".join(_sql_literal(d) for d in datasets) + ")"
        writer = writer.mode("overwrite").option("replaceWhere", condition)
    elif mode == "append":
        writer = writer.mode("append")
    else:
        raise ValueError(f"unknown write mode {mode!r}")
    writer.save(path)
    register_table(spark, config, table)


def register_table(spark: SparkSession, config: Config, table: str) -> None:
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table_name(config, table)} "
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


RUNS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("datasets", T.ArrayType(T.StringType()), True),
    T.StructField("started", T.TimestampType(), False),
    T.StructField("finished", T.TimestampType(), False),
    T.StructField("status", T.StringType(), False),
    T.StructField("error", T.StringType(), True),
    T.StructField("config_hash", T.StringType(), False),
    T.StructField("config", T.StringType(), False),
    T.StructField("counts", T.MapType(T.StringType(), T.LongType()), True),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType()), True),
    T.StructField("seconds", T.MapType(T.StringType(), T.DoubleType()), True),
])


class Run:
    """One job run: its id, the row counts it wrote, stage timings and scalar metrics."""

    def __init__(self, job: str, config: Config, datasets: list[str] | None = None):
        self.run_id = uuid.uuid4().hex
        self.job = job
        self.config = config
        self.datasets = list(datasets or [])
        self.started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        self.counts: dict[str, int] = {}
        self.metrics: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def count(self, key: str, n: int) -> None:
        self.counts[key] = int(n)
        log.info("%s: %d rows", key, n)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("stage %s ...", name)
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s done in %.1f s", name, self.seconds[name])

    def row(self, status: str, error: str | None) -> tuple:
        finished = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return (self.run_id, self.job, self.datasets, self.started, finished, status, error,
                self.config.hash, json.dumps(self.config.as_dict(), sort_keys=True),
                self.counts, self.metrics, self.seconds)


@contextmanager
def recorded_run(spark: SparkSession, config: Config, job: str, datasets: list[str] | None = None) -> Iterator[Run]:
    """Context manager: yields a Run and appends it to ``runs`` with status succeeded/failed."""
    run = Run(job, config, datasets)
    log.info("run %s: job %s", run.run_id, job)
    try:
        yield run
    except BaseException as exc:
        try:
            _append_run(spark, config, run.row("failed", f"{type(exc).__name__}: {exc}"[:2000]))
        except Exception as failed:          # e.g. the lake itself is unreachable: the first error counts
            log.warning("run %s could not be recorded in the runs table: %s", run.run_id,
                        (str(failed).strip().splitlines() or [type(failed).__name__])[0][:300])
        raise
    _append_run(spark, config, run.row("succeeded", None))


def _append_run(spark: SparkSession, config: Config, row: tuple) -> None:
    df = spark.createDataFrame([row], RUNS_SCHEMA)
    write_table(spark, df, config, "runs", partition_by=(), mode="append")
