"""The one place a SparkSession is built: Sedona, Delta, Arrow, Kryo and the table catalog."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from pyspark.sql import SparkSession

from insarlake import jars
from insarlake.config import Config, load_config
from insarlake.errors import ConfigError
from insarlake.lake import catalog_change, catalog_dir, is_local_path, lake_root

log = logging.getLogger(__name__)

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_SEDONA_EXTENSION = "org.apache.sedona.sql.SedonaSqlExtensions"


# spark.sql.maxPlanStringLength (see get_session)
MAX_PLAN_STRING = "16m"


def get_session(config: Config | None = None) -> SparkSession:
    """Build (or reuse) the SparkSession for ``config`` (default: conf/default.yaml).

    An active session (a Databricks notebook or job, or one built earlier in this process) is
    reused as it is; Sedona is registered on it and the database is created if missing. A new
    session gets Delta's SQL extension and catalog, Sedona's extension, Kryo with Sedona's
    registrator, Arrow, and the jars named by ``spark.jars``. When this process starts the JVM
    itself (not under spark-submit), ``spark.master`` defaults to ``local[*]``. With
    ``spark.remote`` (or SPARK_REMOTE) the session is a Spark Connect client of that server, whose
    own configuration brings Sedona and Delta.
    """
    config = config or load_config()
    remote = config.spark.remote or os.environ.get("SPARK_REMOTE")
    if remote:
        spark = SparkSession.builder.remote(remote).getOrCreate()
        spark.conf.set("spark.sql.shuffle.partitions", str(config.spark.shuffle_partitions))
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        log.info("Spark Connect session to %s (Spark %s)", remote, spark.version)
    else:
        spark = SparkSession.getActiveSession()
        if spark is None:
            spark = _builder(config).getOrCreate()
            log.info("Spark %s session started (master %s)", spark.version, spark.conf.get("spark.master", "?"))
        from sedona.spark import SedonaContext

        spark = SedonaContext.create(spark)
    # A plan that names a persisted frame several times prints it in full each time for the SQL
    # UI; on a long pipeline that string outgrew a 4 GB driver heap (hotspots' rims in a monitoring
    # run). Plan strings are cut at this length; the plans themselves are unchanged.
    spark.conf.set("spark.sql.maxPlanStringLength", MAX_PLAN_STRING)
    catalog_change(spark, f"CREATE DATABASE IF NOT EXISTS {config.catalog.database}")
    return spark


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect client session (no SparkContext, py4j or RDDs on it)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int:
    """Spark's default parallelism (cores of the executors) for a classic session; for Spark
    Connect, where the SparkContext is out of reach, spark.sql.shuffle.partitions."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    return int(spark.conf.get("spark.sql.shuffle.partitions"))


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str):
    """Within the block the session's ``key`` is ``value``; its setting is restored after."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def delta_schema_merge(spark: SparkSession):
    """A context in which Delta writes add new columns to an existing table (`classes` and
    `classifier_metrics` gained ``target``; lakes written before keep working)."""
    return session_conf(spark, "spark.databricks.delta.schema.autoMerge.enabled", "true")


def _builder(config: Config) -> SparkSession.Builder:
    sc = config.spark
    # Under spark-submit the JVM already runs and was given master, jars and driver options on
    # its command line; otherwise this process launches it with what the builder holds.
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(sc.app_name)
    if sc.master:
        builder = builder.master(sc.master)
    elif not under_submit:
        builder = builder.master("local[*]")
    settings = {
        "spark.sql.extensions": f"{_DELTA_EXTENSION},{_SEDONA_EXTENSION}",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.kryo.registrator": "org.apache.sedona.core.serde.SedonaKryoRegistrator",
        "spark.kryoserializer.buffer.max": "512m",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(sc.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.databricks.delta.snapshotPartitions": str(sc.shuffle_partitions),
        "spark.ui.showConsoleProgress": "false",
        # run heartbeats (lake.Heartbeat, their own pool) get a core between the tasks of a long stage
        "spark.scheduler.mode": "FAIR",
    }
    java_options = []
    if not under_submit:
        settings["spark.driver.memory"] = sc.driver_memory
        log4j = jars.project_root() / "conf" / "log4j2.properties"
        if log4j.is_file():
            java_options.append(f"-Dlog4j2.configurationFile=file:{log4j}")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        chosen = jars.session_jars(config)
        if chosen != "provided":
            settings["spark.jars"] = chosen
    if sc.jars == "auto" and config.lake.path.lower().startswith("s3://"):
        # Spark from pip knows s3a:// only: s3:// lakes go through the same connector
        settings["spark.hadoop.fs.s3.impl"] = "org.apache.hadoop.fs.s3a.S3AFileSystem"
    if config.catalog.kind in ("embedded", "server"):
        if not is_local_path(config.lake.path):
            raise ConfigError(
                f"config key 'catalog.kind' is {config.catalog.kind} but lake.path {config.lake.path!r} is not local; "
                "use catalog.kind=session with a remote lake")
        home = catalog_dir(config)
        home.mkdir(parents=True, exist_ok=True)
        builder = builder.enableHiveSupport()
        settings.update({
            "spark.sql.catalogImplementation": "hive",
            "spark.sql.warehouse.dir": str(home / "warehouse"),
            "spark.hadoop.javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
            "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
            "spark.hadoop.hive.metastore.schema.verification": "false",
        })
        java_options.append(f"-Dderby.system.home={home}")
        if config.catalog.kind == "server":
            from insarlake import catalog

            catalog.ensure_running(config)
            settings.update({"spark.hadoop.javax.jdo.option.ConnectionURL": catalog.jdbc_url(config),
                             "spark.hadoop.javax.jdo.option.ConnectionDriverName": catalog.CLIENT_DRIVER})
            if not under_submit:         # the metastore client loads the driver from the JVM's class path
                settings["spark.driver.extraClassPath"] = os.pathsep.join(catalog.client_jars(config))
    if java_options and not under_submit:
        settings["spark.driver.extraJavaOptions"] = " ".join(java_options)
    settings.update({k: str(v) for k, v in sc.conf.items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    log.debug("lake at %s", lake_root(config))
    return builder
