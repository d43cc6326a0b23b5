"""Ingest on Spark: files → validated, deduplicated, spatially partitioned `pixels` + `epochs`,
bad rows → `quarantine`. Input rows = pixels + quarantined, always (checked).

Files are listed with Spark's binaryFile source (any Hadoop file system: local, s3a, abfss, dbfs)
and read on executors one file per task by the pure parser in ``parse.py``. A first pass reads
only headers, on executors: every file-level problem stops the job before anything is written,
and each track's epochs are the union of its files' dates (an epoch a file lacks is NaN for its
pixels; an input of several tracks becomes one dataset per track, ``geometry.py``). The driver
receives only those unions and the first error; the parsing task of a file reads the file's
header again itself, so what a task is sent does not grow with the number of files. A single
file must fit in an executor's memory (EGMS bursts are ~10 MB). Points measured twice where
bursts overlap are flagged after validation (``overlap.py``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.errors import AnalysisException

from insarlake.config import Config, IngestConfig
from insarlake.errors import ConfigError, InputError
from insarlake.ingest import append, geometry, overlap, parse
from insarlake.files import LakeFiles, spark_settings
from insarlake.lake import Run, lake_files, local_path, read_table, table_exists, write_table
from insarlake.spark import default_parallelism
from insarlake.tiling import add_tile_id, tile_order
from insarlake.tables import schema
from insarlake.timeseries import fit_velocity, years_since

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".zip", ".parquet")

HEADER_SCHEMA = T.StructType([
    T.StructField("source", T.StringType()),
    T.StructField("dates", T.ArrayType(T.DateType())),
    T.StructField("track", T.IntegerType()),
    T.StructField("burst", T.StringType()),
    T.StructField("error", T.StringType()),
])

# The viewing geometry of each pixel (ingest/geometry.py): from the file name, and the pass
# direction from the row's LOS vector.
PIXELS_SCHEMA = schema("pixels")
GEOMETRY_COLUMNS = ["track", "pass_direction", "burst", "swath", "release", "release_version"]
GEOMETRY_FIELDS = [PIXELS_SCHEMA[c] for c in GEOMETRY_COLUMNS]

PARSED_SCHEMA = T.StructType(
    [T.StructField("dataset", T.StringType()), T.StructField("source", T.StringType()),
     T.StructField("row_number", T.LongType()), T.StructField("pixel_id", T.StringType())]
    + [T.StructField(c, T.DoubleType()) for c in parse.NUMERIC_STATIC]
    + [T.StructField("disp", T.ArrayType(T.FloatType())),
       T.StructField("attributes", T.MapType(T.StringType(), T.DoubleType()))]
    + GEOMETRY_FIELDS
    + [T.StructField("reason", T.StringType()),
       T.StructField("file_error", T.StringType())])

QUARANTINE_COLUMNS = schema("quarantine").fieldNames()
PIXEL_COLUMNS = PIXELS_SCHEMA.fieldNames()
# The columns of a pixel that come from its input row (the others are derived in the lake).
ROW_COLUMNS = [c for c in PIXEL_COLUMNS if c not in ("last_date", "duplicate_of", "tile_id")]
# release: the input is the dataset's whole series (its rows replace the dataset's); append: it
# brings new acquisitions of the dataset's pixels (ingest/append.py).
MODES = ("release", "append")


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    input_rows: int
    pixels: int             # duplicates included
    quarantined: int
    epochs: int             # of the dataset with the most
    files: int
    datasets: tuple = ()    # the datasets analysed: (dataset,), or one per track of the input
    duplicates: int = 0     # pixels with duplicate_of set (overlapping bursts)
    mode: str = "release"
    updated: int = 0        # append: known pixels given the input's dates
    added: int = 0          # append: new pixels


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
               fmt: str | None = None, mode: str = "release") -> IngestResult:
    """Ingest ``input_path`` as ``dataset``.

    mode ``release`` (a whole new series of the area): the input replaces the dataset's rows in
    every table. An input of several tracks (EGMS file names) is split into one dataset per track
    (``ingest.split_tracks``): ``<dataset>-t022``, ... (``geometry.geometry_datasets``), each with
    its own epochs; the table ``geometries`` lists them under ``dataset``.
    mode ``append`` (new acquisitions): the input's rows are merged into the pixels of the
    dataset's tracks (``append.py``); the dataset must have been ingested before."""
    if mode not in MODES:
        raise ConfigError(f"ingest mode must be one of {', '.join(MODES)}; got {mode!r}")
    fmt = fmt or config.ingest.format
    with run.stage("ingest.list"):
        files = list_files(spark, input_path)
        log.info("%d input files", len(files))
    files_df = spark.createDataFrame([(p,) for p in files], "path string").repartition(
        max(1, min(len(files), default_parallelism(spark) * 4)))

    settings = spark_settings(config, spark)        # endpoints and credentials for the tasks' reads
    with run.stage("ingest.headers"):
        headers = _input_geometries(files_df, fmt, settings)
        if mode == "append":
            names = _append_targets(spark, config, dataset, list(headers.dates), input_path)
            replaced = sorted(set(names.values()))
        else:
            names = geometry.geometry_datasets(dataset, list(headers.dates), config.ingest.split_tracks)
            earlier = recorded_geometries(spark, config, dataset)["geometry_dataset"]     # replaced now too
            replaced = sorted({dataset, *names.values(), *earlier})
        dates = _dates_by_dataset(headers, names)
        run.datasets = sorted({*run.datasets, *names.values()})
        if len(names) > 1:
            log.info("the input holds %d tracks: datasets %s", len(names), ", ".join(sorted(names.values())))

    with run.stage("ingest.parse"):
        parsed = _parse_files(files_df, fmt, {t: dates[names[t]] for t in names}, names, config.ingest,
                              settings).persist()
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
        pixels = ranked.where(F.col("_rank") == 1).select(*ROW_COLUMNS)

    work = lake_files(config, spark).sub("work", "ingest", dataset, run.run_id)
    updated = added = 0
    merged = None                  # append: the cached merge of the input into the lake's pixels
    try:
        if mode == "append":
            with run.stage("ingest.append"):
                lake_dates = _lake_epochs(spark, config, replaced)
                merged, rejected, dates, updated, added = _append_pixels(
                    spark, config, pixels, lake_dates, dates, config.ingest.append_max_difference_mm)
                pixels = merged.select(*ROW_COLUMNS)
                quarantine = quarantine.unionByName(rejected)

        with run.stage("ingest.overlap"):
            searched = _multi_burst_pixels(pixels) if mode == "append" else _multi_burst(headers, names)
            pixels, n_duplicates = _flag_overlap(pixels, searched, config.ingest, work)

        with run.stage("ingest.partition"):
            pixels = add_tile_id(_with_last_date(pixels, dates), config.partition).persist()
            n_pixels = pixels.count()
            n_files = max(1, math.ceil(n_pixels / config.partition.pixels_per_file))
            tiles = [r.tile_id for r in pixels.select("tile_id").distinct().collect()]
            laid_out = (pixels.join(F.broadcast(tile_order(spark, tiles)), "tile_id")
                        .repartitionByRange(n_files, "tile_order")
                        .sortWithinPartitions("tile_order", "pixel_id").select(*PIXEL_COLUMNS))

        with run.stage("ingest.write"):
            epochs = spark.createDataFrame([(name, i, d) for name, ds in dates.items() for i, d in enumerate(ds)],
                                           "dataset string, idx int, date date")
            quarantine = quarantine.persist()
            n_quarantined = quarantine.count()
            kept_quarantine = quarantine
            if mode == "append":      # earlier runs' rows stay; the same input again adds nothing
                kept_quarantine = _merged_quarantine(spark, config, quarantine, replaced)
            geometries = _geometries(pixels, dataset, dates)
            if mode == "append":      # the dataset's other tracks keep their rows
                geometries = _other_geometries(spark, config, dataset, replaced).unionByName(geometries)
            geometries = geometries.persist()
            geometries.count()        # read before `pixels` is replaced
            write_table(spark, epochs, config, "epochs", datasets=replaced)
            write_table(spark, laid_out, config, "pixels", datasets=replaced)
            write_table(spark, kept_quarantine, config, "quarantine", datasets=replaced)
            write_table(spark, geometries, config, "geometries", datasets=[dataset])
        for df in (parsed, pixels, quarantine, geometries, merged):
            if df is not None:
                df.unpersist()
    finally:
        work.discard()

    accepted = n_pixels if mode == "release" else updated + added
    if input_rows != accepted + n_quarantined:  # a bug, never bad input: stop loudly
        raise RuntimeError(f"ingest lost rows: input {input_rows} != pixels {accepted} + quarantine {n_quarantined}")
    run.count("input_rows", input_rows)
    run.count("pixels", n_pixels)
    run.count("quarantine", n_quarantined)
    run.count("overlap_duplicates", n_duplicates)
    if mode == "append":
        run.count("pixels_updated", updated)
        run.count("pixels_added", added)
    n_epochs = max(len(d) for d in dates.values())
    run.count("epochs", n_epochs)
    return IngestResult(dataset, input_rows, n_pixels, n_quarantined, n_epochs, len(files), tuple(sorted(dates)),
                        n_duplicates, mode, updated, added)


def _append_targets(spark: SparkSession, config: Config, dataset: str, tracks: list, input_path: str) -> dict:
    """{track of the input: the dataset it appends to}: the geometry datasets an earlier ingest of
    ``dataset`` made (table `geometries`; a lake from before it: ``dataset`` itself when `epochs`
    holds it). InputError when ``dataset`` was never ingested or a track is not one of its."""
    where = f"input {input_path}: cannot be appended to dataset {dataset}"
    recorded = _recorded_tracks(spark, config, dataset)
    if not recorded:
        if _lake_epochs(spark, config, [dataset]).get(dataset):
            return {track: dataset for track in tracks}
        raise InputError(f"{where}: the lake has no such dataset (ingest it first, with --mode release)")
    names = {}
    for track in tracks:
        hits = [name for name, held in recorded.items() if track in held]
        if not hits:
            known = ", ".join(f"{name} ({', '.join(map(str, sorted(held, key=str)))})" for name, held in recorded.items())
            raise InputError(f"{where}: it holds track {track if track is not None else '(none named)'}, "
                             f"which the dataset does not ({known}); ingest it with --mode release")
        names[track] = hits[0]
    return names


def _recorded_tracks(spark: SparkSession, config: Config, dataset: str) -> dict:
    """{geometry dataset of ``dataset``: the set of tracks it holds (None: files without a track
    in their name)}, from ``recorded_geometries``; {} when there is none."""
    rows = recorded_geometries(spark, config, dataset)
    return {name: set(tracks if tracks is not None else []) or {None}
            for name, tracks in zip(rows.geometry_dataset, rows.tracks)}


def _lake_epochs(spark: SparkSession, config: Config, datasets: list[str]) -> dict:
    """{dataset: its epoch dates in the lake, in order} for ``datasets`` (absent ones: no key)."""
    if not table_exists(spark, config, "epochs"):
        return {}
    out: dict = {}
    for r in read_table(spark, config, "epochs", datasets).orderBy("dataset", "idx").collect():
        out.setdefault(r.dataset, []).append(r.date)
    return out


def _append_pixels(spark: SparkSession, config: Config, rows: DataFrame, lake_dates: dict, input_dates: dict,
                   max_difference_mm: float) -> tuple[DataFrame, DataFrame, dict, int, int]:
    """The input ``rows`` (ROW_COLUMNS, each on its dataset's ``input_dates``) merged into the
    lake's pixels of their datasets, on pixel_id (``append.py``): (pixels in ROW_COLUMNS on the
    union dates, plus the 0/1 columns _updated and _added; cached: the caller unpersists it), the
    rows rejected (QUARANTINE_COLUMNS), {dataset: union dates}, pixels updated, pixels added)."""
    merged, rejected, union_dates = [], [], {}
    for name in sorted(input_dates):
        union, old_pos, new_pos = append.epoch_positions(lake_dates[name], input_dates[name])
        union_dates[name] = union
        old = read_table(spark, config, "pixels", [name]).select(*ROW_COLUMNS)
        new = rows.where(F.col("dataset") == name)
        joined = (old.alias("o").join(new.alias("n"), ["dataset", "pixel_id"], "full_outer")
                  .withColumn("_known", F.col("o.source").isNotNull())
                  .withColumn("_new", F.col("n.source").isNotNull())
                  .withColumn("_difference", _largest_difference_udf(old_pos, new_pos)(F.col("o.disp"), F.col("n.disp"))))
        tolerance = float(max_difference_mm)
        joined = joined.withColumn("_rejected", F.col("_known") & F.col("_new") & (F.col("_difference.mm") > tolerance))
        day = F.element_at(F.array(*[F.lit(d.isoformat()) for d in union]), F.col("_difference.index") + 1)
        rejected.append(joined.where("_rejected").select(
            "dataset", F.col("n.source").alias("source"), F.col("n.row_number").alias("row_number"), "pixel_id",
            F.concat(F.lit("append: the value of "), day, F.lit(" differs from the lake's by "),
                     F.format_number(F.col("_difference.mm"), 2),
                     F.lit(f" mm (more than ingest.append_max_difference_mm {tolerance:g})")).alias("reason")))
        take_new = F.col("_new") & ~F.col("_rejected")
        columns = [F.when(take_new, F.col(f"n.{c}")).otherwise(F.col(f"o.{c}")).alias(c)
                   for c in ROW_COLUMNS if c not in ("dataset", "pixel_id", "disp")]
        disp = _merge_series_udf(old_pos, new_pos)(F.col("o.disp"), F.when(take_new, F.col("n.disp")))
        merged_rows = joined.select("dataset", "pixel_id", disp.alias("disp"), *columns, take_new.alias("_take_new"),
                                    F.when(take_new & F.col("_known"), 1).otherwise(0).alias("_updated"),
                                    F.when(take_new & ~F.col("_known"), 1).otherwise(0).alias("_added"))
        # a merged series gets its velocity refitted: the input's describes only the input's dates
        fitted = _fit_velocity_udf(years_since(np.array(union, dtype="datetime64[D]")))(F.col("disp"))
        merged.append(merged_rows
                      .withColumn("velocity", F.when(F.col("_take_new"), fitted.velocity).otherwise(F.col("velocity")))
                      .withColumn("velocity_std", F.when(F.col("_take_new"), fitted.velocity_std)
                                  .otherwise(F.col("velocity_std")))
                      .drop("_take_new"))
    pixels = merged[0]
    for more in merged[1:]:
        pixels = pixels.unionByName(more)
    pixels = pixels.persist()       # counted here, read again by the stages after; unpersisted by run_ingest
    totals = pixels.agg(F.sum("_updated").alias("u"), F.sum("_added").alias("a")).first()
    quarantine = rejected[0]
    for more in rejected[1:]:
        quarantine = quarantine.unionByName(more)
    log.info("append: %d pixels updated, %d added, epochs %s", totals.u or 0, totals.a or 0,
             ", ".join(f"{n} {len(lake_dates[n])} -> {len(d)}" for n, d in union_dates.items()))
    return pixels, quarantine, union_dates, int(totals.u or 0), int(totals.a or 0)


def _largest_difference_udf(old_pos, new_pos):
    """A pandas UDF (old disp, new disp) -> struct(mm, index): append.largest_difference per row."""
    @F.pandas_udf("mm double, index int")
    def largest_difference(old: pd.Series, new: pd.Series) -> pd.DataFrame:
        found = [append.largest_difference(o, n, old_pos, new_pos) for o, n in zip(old, new)]
        return pd.DataFrame(found, columns=["mm", "index"]).astype({"mm": "float64", "index": "int32"})
    return largest_difference


def _fit_velocity_udf(t_years: np.ndarray):
    """A pandas UDF disp -> struct(velocity, velocity_std) (mm/yr): the least-squares line of each
    series on ``t_years`` (timeseries.fit_velocity)."""
    @F.pandas_udf("velocity double, velocity_std double")
    def fit(disp: pd.Series) -> pd.DataFrame:
        if disp.empty:
            return pd.DataFrame({"velocity": [], "velocity_std": []}, dtype="float64")
        velocity, velocity_std = fit_velocity(t_years, np.stack([np.asarray(d, dtype=np.float64) for d in disp]))
        return pd.DataFrame({"velocity": velocity, "velocity_std": velocity_std})
    return fit


def _merge_series_udf(old_pos, new_pos):
    """A pandas UDF (old disp, new disp) -> disp on the union epochs: append.merge_series per row."""
    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def merge_series(old: pd.Series, new: pd.Series) -> pd.Series:
        return pd.Series([append.merge_series(o, n, old_pos, new_pos) for o, n in zip(old, new)])
    return merge_series


def _last_valid_index_udf():
    """A pandas UDF disp -> the index of its last epoch with a value (append.last_valid_index).
    Made when called, with the session running: a UDF made at import is a classic one, which a
    Spark Connect session refuses."""
    @F.pandas_udf(T.IntegerType())
    def last_valid_index(disp: pd.Series) -> pd.Series:
        return pd.Series([append.last_valid_index(d) for d in disp], dtype="int32")
    return last_valid_index


def _with_last_date(pixels: DataFrame, dates: dict) -> DataFrame:
    """``pixels`` with ``last_date``: the date of the last epoch its series has a value for."""
    epochs = pixels.sparkSession.createDataFrame(
        [(name, i, d) for name, ds in dates.items() for i, d in enumerate(ds)], "dataset string, _idx int, last_date date")
    return (pixels.withColumn("_idx", _last_valid_index_udf()("disp"))
            .join(F.broadcast(epochs), ["dataset", "_idx"], "left").drop("_idx"))


def _merged_quarantine(spark: SparkSession, config: Config, quarantine: DataFrame, datasets: list[str]) -> DataFrame:
    """The quarantined rows of ``datasets`` in the lake and this run's, each (dataset, source,
    row_number) once."""
    if not table_exists(spark, config, "quarantine"):
        return quarantine
    earlier = read_table(spark, config, "quarantine", datasets).select(*QUARANTINE_COLUMNS)
    fresh = quarantine.select(*QUARANTINE_COLUMNS)
    return earlier.join(fresh, ["dataset", "source", "row_number"], "left_anti").unionByName(fresh)


def _other_geometries(spark: SparkSession, config: Config, dataset: str, appended: list[str]) -> DataFrame:
    """The `geometries` rows of ``dataset`` other than those of the ``appended`` datasets."""
    rows = read_table(spark, config, "geometries", [dataset])
    return rows.where(~F.col("geometry_dataset").isin(appended))


@dataclass(frozen=True)
class InputGeometries:
    """What the headers of an input say: per track (None: no track in the file name) the sorted
    union of its files' epoch dates and the bursts present."""
    dates: dict
    bursts: dict


def _input_geometries(files_df: DataFrame, fmt: str, settings: Mapping[str, str]) -> InputGeometries:
    """Per track, the sorted union of the epoch dates of its files in ``files_df`` (column path),
    and its bursts, read on executors; the first file-level problem (by source) raises
    InputError. Only these unions reach the driver."""
    def read(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [row for path in batch["path"] for row in file_headers(path, fmt, settings)]
            yield pd.DataFrame(rows, columns=[f.name for f in HEADER_SCHEMA.fields])

    summary = files_df.mapInPandas(read, HEADER_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        error = summary.where(F.col("error").isNotNull()).orderBy("source").select("error").first()
        if error is not None:
            raise InputError(error.error)
        dates: dict = {}
        for r in summary.select("track", F.explode("dates").alias("date")).distinct().collect():
            dates.setdefault(r.track, []).append(r.date)
        bursts: dict = {}
        for r in summary.select("track", "burst").distinct().collect():
            bursts.setdefault(r.track, set()).add(r.burst)
        n_sets = summary.select("track", F.size("dates").alias("n")).distinct().count()
    finally:
        summary.unpersist()
    if n_sets > len(dates):
        log.warning("files of one track have different epoch sets; each track uses the union of its files' dates")
    return InputGeometries({t: sorted(d) for t, d in dates.items()}, bursts)


def _dates_by_dataset(headers: InputGeometries, names: dict) -> dict:
    """The sorted union of the epoch dates of the tracks each dataset holds."""
    out: dict = {}
    for track, dates in headers.dates.items():
        out.setdefault(names[track], set()).update(dates)
    return {name: sorted(ds) for name, ds in sorted(out.items())}


def recorded_geometries(spark: SparkSession, config: Config, dataset: str) -> pd.DataFrame:
    """(geometry_dataset, track, pass_direction, tracks) of the last ingest of ``dataset`` from the
    table `geometries`, sorted by geometry_dataset; no rows when there is none."""
    columns = ["geometry_dataset", "track", "pass_direction", "tracks"]
    if not table_exists(spark, config, "geometries"):
        return pd.DataFrame(columns=columns)
    rows = read_table(spark, config, "geometries", [dataset]).select(*columns).toPandas()
    return rows.sort_values("geometry_dataset", ignore_index=True)


def _multi_burst(headers: InputGeometries, names: dict) -> list[str]:
    """The datasets whose input holds two or more bursts (of one track: overlap.find_twins)."""
    return sorted({names[t] for t, bursts in headers.bursts.items() if len({b for b in bursts if b}) > 1})


def _multi_burst_pixels(pixels: DataFrame) -> list[str]:
    """The datasets whose ``pixels`` come from two or more bursts."""
    counted = pixels.where(F.col("burst").isNotNull()).groupBy("dataset").agg(F.countDistinct("burst").alias("n"))
    return sorted(r.dataset for r in counted.where(F.col("n") > 1).collect())


def _flag_overlap(pixels: DataFrame, searched: list[str], cfg: IngestConfig, work: LakeFiles) -> tuple[DataFrame, int]:
    """``pixels`` with ``duplicate_of`` (overlap.py) and how many are set; only the ``searched``
    datasets (two or more bursts) are searched (intermediate files in ``work``)."""
    if not searched:
        return pixels.withColumn("duplicate_of", F.lit(None).cast("string")), 0
    candidates = pixels.where(F.col("dataset").isin(searched))
    twins = overlap.find_twins(candidates, cfg.overlap_distance_m, cfg.overlap_max_rms_mm, work)
    links = overlap.duplicate_of(candidates, twins, work)
    n = links.count()
    log.info("overlapping bursts: %d pixels measured twice (duplicate_of set) in %s", n, ", ".join(searched))
    return pixels.join(links, ["dataset", "pixel_id"], "left"), n


def _geometries(pixels: DataFrame, dataset: str, dates: dict) -> DataFrame:
    """One row per dataset analysed from ``dataset``'s input: its track (null when it pools several,
    ``ingest.split_tracks`` false: ``tracks`` lists them), pass direction (the most common among its
    pixels), bursts, swaths, releases, pixel and duplicate counts, mean LOS
    vector and epochs (the ``geometries`` table)."""
    spark = pixels.sparkSession
    epochs = spark.createDataFrame(
        [(name, len(d), d[0], d[-1]) for name, d in dates.items()],
        "geometry_dataset string, n_epochs int, first_date date, last_date date")
    direction = (pixels.where(F.col("pass_direction").isNotNull())
                 .groupBy(F.col("dataset").alias("geometry_dataset"), "pass_direction").count()
                 .groupBy("geometry_dataset").agg(F.max(F.struct("count", "pass_direction")).alias("m"))
                 .select("geometry_dataset", F.col("m.pass_direction").alias("pass_direction")))
    summary = (pixels.groupBy(F.col("dataset").alias("geometry_dataset"))
               .agg(F.sort_array(F.collect_set("track")).alias("tracks"),
                    F.sort_array(F.collect_set("burst")).alias("bursts"),
                    F.sort_array(F.collect_set("swath")).alias("swaths"),
                    F.sort_array(F.collect_set("release")).alias("releases"),
                    F.count(F.lit(1)).alias("n_pixels"),
                    F.count("duplicate_of").alias("n_duplicates"),
                    *[F.round(F.avg(c), 6).alias(c) for c in ("los_east", "los_north", "los_up")]))
    return (epochs.join(summary, "geometry_dataset", "left").join(direction, "geometry_dataset", "left")
            .select(F.lit(dataset).alias("dataset"), "geometry_dataset",
                    F.when(F.size("tracks") == 1, F.col("tracks")[0]).alias("track"), "tracks", "pass_direction", "bursts",
                    "swaths", "releases", F.coalesce("n_pixels", F.lit(0)).alias("n_pixels"),
                    F.coalesce("n_duplicates", F.lit(0)).alias("n_duplicates"), "los_east", "los_north", "los_up",
                    "n_epochs", "first_date", "last_date"))


def file_headers(path: str, fmt: str, settings: Mapping[str, str]) -> list[tuple]:
    """(source, epoch dates, track, burst, None) per table of one file, reading only its header;
    one (file, None, None, None, error line) on a file-level problem (HEADER_SCHEMA rows)."""
    try:
        with open_input(path, settings) as fh:
            specs = parse.file_specs(local_path(path), fh, fmt)
        out = []
        for source, spec in specs.items():
            where = geometry.file_geometry(source)
            out.append((source, list(spec.epoch_dates), where.track, where.burst, None))
        return out
    except (InputError, OSError) as exc:
        return [(local_path(path), None, None, None, _file_error(path, exc))]


def _file_error(path: str, exc: Exception) -> str:
    """The one line naming the file of a file-level problem (InputError or OSError)."""
    if isinstance(exc, InputError):
        return str(exc)
    return f"file {local_path(path)}: unreadable ({str(exc) or type(exc).__name__})"


def _parse_files(files_df: DataFrame, fmt: str, dates: dict, names: dict, cfg: IngestConfig,
                 settings: Mapping[str, str]) -> DataFrame:
    """Every row of every file in ``files_df`` (column path) in PARSED_SCHEMA, one mapInPandas
    task per partition of files; each task reads its files' headers itself, so the function sent
    to tasks holds only each track's epoch dates and dataset and a few settings (not per-file data)."""
    unit, max_missing_share = cfg.displacement_unit, cfg.max_missing_share

    def parse_files(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for path in batch["path"]:
                yield from parse_file(path, fmt, dates, names, unit, max_missing_share, settings)

    return files_df.mapInPandas(parse_files, PARSED_SCHEMA)


def parse_file(path: str, fmt: str, dates: dict, names: dict, unit: str, max_missing_share: float,
               settings: Mapping[str, str]) -> Iterator[pd.DataFrame]:
    """Rows of one file (PARSED_SCHEMA), each table aligned with its track's epoch ``dates`` and
    named with its track's dataset (``names``); a file-level problem gives one row with
    ``file_error`` (in the dataset of tracks unknown, or any)."""
    try:
        data = read_bytes(path, settings)
        specs = parse.file_specs(local_path(path), data, fmt)
        first_row = {}
        for source, chunk, _ in parse.iter_tables(local_path(path), data, fmt):
            where = geometry.file_geometry(source)
            start = first_row.get(source, 1)
            first_row[source] = start + len(chunk)
            out = parse.canonical_rows(chunk, specs[source], dates[where.track], dataset=names[where.track],
                                       first_row=start, unit=unit, max_missing_share=max_missing_share)
            out["track"] = pd.array([where.track] * len(out), dtype="Int32")
            out["pass_direction"] = geometry.pass_direction(out["los_east"].to_numpy())
            out["burst"], out["swath"], out["release"] = where.burst, where.swath, where.release
            out["release_version"] = pd.array([where.release_version] * len(out), dtype="Int32")
            out["file_error"] = None
            yield out[[f.name for f in PARSED_SCHEMA.fields]]
    except (InputError, OSError) as exc:
        row = {f.name: None for f in PARSED_SCHEMA.fields}
        row.update(dataset=names.get(None, next(iter(names.values()))), source=local_path(path), row_number=0,
                   file_error=_file_error(path, exc))
        yield pd.DataFrame([row], columns=list(row)).astype({"row_number": "int64"})
