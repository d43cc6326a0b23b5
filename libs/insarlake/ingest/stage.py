"""Ingest on Spark: files → validated, deduplicated, spatially partitioned `pixels` + `epochs`,
bad rows → `quarantine`. Input rows = pixels + quarantined, always (checked).

Files are listed with Spark's binaryFile source (any Hadoop file system: local, s3a, abfss, dbfs)
and read on executors one file per task by the pure parser in ``parse.py``. A first pass reads
only headers, on executors: every file-level problem stops the job before anything is written,
and the dataset's epochs are the union of all files' dates (an epoch a file lacks is NaN for its
pixels). The driver receives only that union and the first error; the parsing task of a file
reads the file's header again itself, so what a task is sent does not grow with the number of
files. A single file must fit in an executor's memory (EGMS bursts are ~10 MB).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Mapping

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.errors import AnalysisException

from insarlake.config import Config, IngestConfig
from insarlake.errors import InputError
from insarlake.ingest import parse
from insarlake.files import LakeFiles, spark_settings
from insarlake.lake import Run, local_path, write_table
from insarlake.spark import default_parallelism
from insarlake.tiling import add_tile_id, tile_order

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".zip", ".parquet")

HEADER_SCHEMA = T.StructType([
    T.StructField("source", T.StringType()),
    T.StructField("dates", T.ArrayType(T.DateType())),
    T.StructField("error", T.StringType()),
])

PARSED_SCHEMA = T.StructType(
    [T.StructField("dataset", T.StringType()), T.StructField("source", T.StringType()),
     T.StructField("row_number", T.LongType()), T.StructField("pixel_id", T.StringType())]
    + [T.StructField(c, T.DoubleType()) for c in parse.NUMERIC_STATIC]
    + [T.StructField("disp", T.ArrayType(T.FloatType())),
       T.StructField("attributes", T.MapType(T.StringType(), T.DoubleType())),
       T.StructField("reason", T.StringType()),
       T.StructField("file_error", T.StringType())])

QUARANTINE_COLUMNS = ["dataset", "source", "row_number", "pixel_id", "reason"]
PIXEL_COLUMNS = (["dataset", "pixel_id", "lon", "lat", "height", "velocity", "velocity_std", "coherence",
                  "incidence_angle", "los_east", "los_north", "los_up", "disp", "attributes",
                  "source", "row_number", "tile_id"])


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    input_rows: int
    pixels: int
    quarantined: int
    epochs: int
    files: int


def open_input(uri: str, settings: Mapping[str, str] | None = None):
    """A seekable binary file object of ``uri`` (a local path, file:, the dbfs:/ mount, s3://, s3a://,
    abfss://, gs://) opened with the file-system ``settings`` of the session (endpoints,
    credentials: ``insarlake.files``)."""
    return LakeFiles(uri, dict(settings or {})).open_input_file()


def read_bytes(uri: str, settings: Mapping[str, str] | None = None) -> bytes:
    with open_input(uri, settings) as fh:
        return fh.read()


def list_files(spark: SparkSession, input_path: str) -> list[str]:
    """Data files under ``input_path`` (a file, a folder searched recursively, or a glob), listed
    by Spark's binaryFile source with the session's file systems (local, s3a, abfss, dbfs...; also
    over Spark Connect; no file is read). Empty files are listed too, so that they
    fail loudly instead of being skipped; hidden files (names starting with . or _) are not."""
    try:    # the file index's listing (inputFiles): no job, and empty files too (a scan skips them)
        listing = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(input_path).inputFiles()
    except AnalysisException as exc:
        message = (str(exc).strip().splitlines() or ["no such file or folder"])[0]
        if "PATH_NOT_FOUND" in message or "does not exist" in message:
            message = "no such file or folder"
        raise InputError(f"input {input_path}: cannot be listed ({message})") from None
    paths = sorted(listing)
    data = [p for p in paths if p.lower().endswith(DATA_SUFFIXES)]
    skipped = [p for p in paths if not p.lower().endswith(DATA_SUFFIXES)]
    if skipped:
        log.info("ignoring %d non-data files (e.g. %s)", len(skipped), skipped[0])
    if not data:
        raise InputError(f"input {input_path}: no {'/'.join(DATA_SUFFIXES)} files found")
    return data


def run_ingest(spark: SparkSession, config: Config, input_path: str, dataset: str, run: Run,
               fmt: str | None = None) -> IngestResult:
    """Ingest ``input_path`` as ``dataset`` (replacing that dataset's rows in every table)."""
    fmt = fmt or config.ingest.format
    with run.stage("ingest.list"):
        files = list_files(spark, input_path)
        log.info("%d input files", len(files))
    files_df = spark.createDataFrame([(p,) for p in files], "path string").repartition(
        max(1, min(len(files), default_parallelism(spark) * 4)))

    settings = spark_settings(config, spark)        # endpoints and credentials for the tasks' reads
    with run.stage("ingest.headers"):
        dates = _epoch_dates(files_df, fmt, settings)

    with run.stage("ingest.parse"):
        parsed = _parse_files(files_df, fmt, dates, dataset, config.ingest, settings).persist()
        errors = parsed.where(F.col("file_error").isNotNull()).select("file_error").limit(1).collect()
        if errors:
            parsed.unpersist()
            raise InputError(errors[0].file_error)
        input_rows = parsed.count()

    with run.stage("ingest.validate"):
        valid = parsed.where(F.col("reason").isNull()).drop("file_error")
        order = Window.partitionBy("pixel_id").orderBy("source", "row_number")
        ranked = (valid.withColumn("_rank", F.row_number().over(order))
                  .withColumn("_first", F.first(F.struct("source", "row_number")).over(order)))
        duplicates = ranked.where(F.col("_rank") > 1).withColumn(
            "reason", F.concat(F.lit("duplicate pixel_id (first at "), F.col("_first.source"),
                               F.lit(" row "), F.col("_first.row_number").cast("string"), F.lit(")")))
        quarantine = (parsed.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
                      .unionByName(duplicates.select(*QUARANTINE_COLUMNS)))
        pixels = ranked.where(F.col("_rank") == 1).drop("_rank", "_first", "reason")

    with run.stage("ingest.partition"):
        pixels = add_tile_id(pixels, config.partition).persist()
        n_pixels = pixels.count()
        n_files = max(1, math.ceil(n_pixels / config.partition.pixels_per_file))
        tiles = [r.tile_id for r in pixels.select("tile_id").distinct().collect()]
        laid_out = (pixels.join(F.broadcast(tile_order(spark, tiles)), "tile_id")
                    .repartitionByRange(n_files, "tile_order")
                    .sortWithinPartitions("tile_order", "pixel_id").select(*PIXEL_COLUMNS))

    with run.stage("ingest.write"):
        spark_dates = [(dataset, i, d) for i, d in enumerate(dates)]
        epochs = spark.createDataFrame(spark_dates, "dataset string, idx int, date date")
        write_table(spark, epochs, config, "epochs", datasets=[dataset])
        write_table(spark, laid_out, config, "pixels", datasets=[dataset])
        quarantine = quarantine.persist()
        n_quarantined = quarantine.count()
        write_table(spark, quarantine, config, "quarantine", datasets=[dataset])
    for df in (parsed, pixels, quarantine):
        df.unpersist()

    if input_rows != n_pixels + n_quarantined:  # a bug, never bad input: stop loudly
        raise RuntimeError(f"ingest lost rows: input {input_rows} != pixels {n_pixels} + quarantine {n_quarantined}")
    run.count("input_rows", input_rows)
    run.count("pixels", n_pixels)
    run.count("quarantine", n_quarantined)
    run.count("epochs", len(dates))
    return IngestResult(dataset, input_rows, n_pixels, n_quarantined, len(dates), len(files))


def _epoch_dates(files_df: DataFrame, fmt: str, settings: Mapping[str, str]) -> list[dt.date]:
    """The sorted union of the epoch dates of every file in ``files_df`` (column path), read on
    executors; the first file-level problem (by source) raises InputError. Only the union (and
    the number of distinct epoch counts) reaches the driver."""
    def headers(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [row for path in batch["path"] for row in file_headers(path, fmt, settings)]
            yield pd.DataFrame(rows, columns=["source", "dates", "error"])

    summary = files_df.mapInPandas(headers, HEADER_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        error = summary.where(F.col("error").isNotNull()).orderBy("source").select("error").first()
        if error is not None:
            raise InputError(error.error)
        dates = sorted(r.date for r in summary.select(F.explode("dates").alias("date")).distinct().collect())
        n_sets = summary.select(F.size("dates").alias("n")).distinct().count()
    finally:
        summary.unpersist()
    if n_sets > 1:
        log.warning("files have different epoch sets; the dataset uses the union of %d dates", len(dates))
    return dates


def file_headers(path: str, fmt: str, settings: Mapping[str, str]) -> list[tuple]:
    """(source, epoch dates, None) per table of one file, reading only its header; one
    (file, None, error line) on a file-level problem (HEADER_SCHEMA rows)."""
    try:
        with open_input(path, settings) as fh:
            specs = parse.file_specs(local_path(path), fh, fmt)
        return [(source, list(spec.epoch_dates), None) for source, spec in specs.items()]
    except (InputError, OSError) as exc:
        return [(local_path(path), None, _file_error(path, exc))]


def _file_error(path: str, exc: Exception) -> str:
    """The one line naming the file of a file-level problem (InputError or OSError)."""
    if isinstance(exc, InputError):
        return str(exc)
    return f"file {local_path(path)}: unreadable ({str(exc) or type(exc).__name__})"


def _parse_files(files_df: DataFrame, fmt: str, dates: list[dt.date], dataset: str,
                 cfg: IngestConfig, settings: Mapping[str, str]) -> DataFrame:
    """Every row of every file in ``files_df`` (column path) in PARSED_SCHEMA, one mapInPandas
    task per partition of files; each task reads its files' headers itself, so the function sent
    to tasks holds only the dataset's epoch dates and a few settings (not per-file data)."""
    unit, max_missing_share = cfg.displacement_unit, cfg.max_missing_share

    def parse_files(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for path in batch["path"]:
                yield from parse_file(path, fmt, dates, dataset, unit, max_missing_share, settings)

    return files_df.mapInPandas(parse_files, PARSED_SCHEMA)


def parse_file(path: str, fmt: str, dates: list[dt.date], dataset: str, unit: str,
                max_missing_share: float, settings: Mapping[str, str]) -> Iterator[pd.DataFrame]:
    """Rows of one file (PARSED_SCHEMA); a file-level problem gives one row with ``file_error``."""
    try:
        data = read_bytes(path, settings)
        specs = parse.file_specs(local_path(path), data, fmt)
        first_row = {}
        for source, chunk, _ in parse.iter_tables(local_path(path), data, fmt):
            start = first_row.get(source, 1)
            first_row[source] = start + len(chunk)
            out = parse.canonical_rows(chunk, specs[source], dates, dataset=dataset, first_row=start,
                                       unit=unit, max_missing_share=max_missing_share)
            out["file_error"] = None
            yield out
    except (InputError, OSError) as exc:
        row = {f.name: None for f in PARSED_SCHEMA.fields}
        row.update(dataset=dataset, source=local_path(path), row_number=0, file_error=_file_error(path, exc))
        yield pd.DataFrame([row], columns=list(row)).astype({"row_number": "int64"})
