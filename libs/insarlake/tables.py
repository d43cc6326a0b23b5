"""The lake's table contract: every table, its columns (Spark SQL DDL), its partitioning, the stage
that writes it and the stages that read it. ``lake.write_table`` checks every write against it, and
``tests/test_tables.py`` checks the writers and readers named here against the code.

Units: velocities mm/yr, displacements mm (LOS, positive towards the satellite), distances and
sizes km unless the name says _m, dates are acquisition dates, lon/lat WGS84 degrees. A run_id is
the `runs` row of the job that wrote the row. The result tables (``Table.keeps_runs``: those with a
run_id, the run log aside) keep every run's rows; ``lake.run_results`` reads one run's.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

_HOTSPOT_GEOMETRY = ("n_pixels long, center_lon double, center_lat double, standard_distance_km double, "
                     "sd_x_km double, sd_y_km double, semi_major_km double, semi_minor_km double, angle_deg double, "
                     "ellipse_area_km2 double, hull_area_km2 double, mean_velocity double, median_velocity double, "
                     "cluster_id long, cluster_share double, geometry string")
_RUN_LOG = ("runs", "run_heartbeats")          # the runs themselves, not results of one
_RUN_IDENTITY = "run_id string NOT NULL, job string NOT NULL, datasets array<string>, started timestamp NOT NULL"
_RUN_CONFIG = "config_hash string NOT NULL, config string NOT NULL"


@dataclass(frozen=True)
class Table:
    name: str
    ddl: str                         # the columns, in order: "dataset string, pixel_id string, ..."
    writer: str                      # the stage (package of insarlake) that writes it
    readers: tuple[str, ...]         # the stages that read it
    about: str
    partition_by: tuple[str, ...] = ("dataset",)

    @property
    def schema(self) -> T.StructType:
        return columns(self.ddl)

    @property
    def column_names(self) -> list[str]:
        return self.schema.fieldNames()

    @property
    def keeps_runs(self) -> bool:
        """A result table: every run's rows are kept, keyed by run_id (lake.keep_runs of them)."""
        return "run_id" in self.column_names and self.name not in _RUN_LOG


TABLES: dict[str, Table] = {t.name: t for t in [
    Table("pixels",
          "dataset string, pixel_id string, lon double, lat double, height double, velocity double, "
          "velocity_std double, coherence double, incidence_angle double, los_east double, los_north double, "
          "los_up double, disp array<float>, last_date date, attributes map<string,double>, track int, "
          "pass_direction string, burst string, swath string, release string, release_version int, "
          "duplicate_of string, source string, row_number long, tile_id string",
          "ingest", ("ingest", "cluster", "classify", "hotspots", "alerts", "forecast", "report", "sites", "cli", "lake"),
          "one row per measurement point: position, LOS unit vector, velocity (mm/yr), the displacement "
          "series disp (mm, one value per `epochs` row, NaN where missing), the last date it was measured, "
          "its viewing geometry and input row; duplicate_of names the point it repeats where bursts overlap"),
    Table("epochs", "dataset string, idx int, date date",
          "ingest", ("ingest", "cluster", "classify", "hotspots", "alerts", "forecast", "report"),
          "the acquisition dates of a dataset: position idx of pixels.disp"),
    Table("quarantine", "dataset string, source string, row_number long, pixel_id string, reason string",
          "ingest", ("ingest",), "input rows (or whole files, row_number null) refused by ingest, with the reason"),
    Table("geometries",
          "dataset string, geometry_dataset string, track int, tracks array<int>, pass_direction string, "
          "bursts array<string>, swaths array<string>, releases array<string>, n_pixels long, n_duplicates long, "
          "los_east double, los_north double, los_up double, n_epochs int, first_date date, last_date date",
          "ingest", ("ingest", "sites"),
          "the viewing geometries (track, pass direction) of an ingested input: one analysed dataset each"),
    Table("truth", "dataset string, pixel_id string, source_id long, source_type string",
          "simulate", ("hotspots",), "a simulated scene's deforming pixels and the source that moves each"),
    Table("clusters",
          "dataset string, run_id string, pixel_id string, tskm_label int, tskm_distance double, "
          "cluster_id long, is_core boolean",
          "cluster", ("cluster", "classify", "hotspots"),
          "TSKM behaviour label (and soft-DTW distance to its centroid) and DBSCAN cluster of every pixel "
          "(cluster_id -1: noise)"),
    Table("covariogram", "dataset string, run_id string, distance_km double, covariance double, pairs long",
          "cluster", ("hotspots",), "the empirical spatial covariance (mm^2) of the displacements per distance bin"),
    Table("classes",
          "dataset string, run_id string, pixel_id string, predicted_cluster long, probability float, "
          "model string, target string",
          "classify", ("classify", "hotspots", "report"), "every pixel's class predicted by the cluster classifier"),
    Table("classifier_metrics",
          "dataset string, run_id string, model string, model_version string, target string, split string, "
          "accuracy double, true_cluster long, support long, precision double, recall double, f1 double, "
          "confusion map<long,double>",
          "classify", ("report",), "held-out accuracy and per-class scores of each classifier"),
    Table("hotspots",
          f"dataset string, run_id string, method string, hotspot_id long, {_HOTSPOT_GEOMETRY}, velocity_z double, "
          "mean_disp array<float>, onset_date date, peak_date date, retained boolean, reason string",
          "hotspots", ("alerts", "forecast", "report", "sites"),
          "candidate hotspots: ellipse (km, deg), velocities (mm/yr), mean series (mm), retained or the reason not"),
    Table("hotspot_pixels", "dataset string, run_id string, hotspot_id long, pixel_id string, rim boolean",
          "hotspots", ("hotspots", "alerts", "forecast", "report", "sites"),
          "the pixels of each candidate hotspot; rim: joined by the rim growth (hotspots.rim_grow_z), part of "
          "the footprint but not of the hotspot's velocities and mean series"),
    Table("hotspot_scores",
          "dataset string, run_id string, method string, source_id long, source_type string, n_pixels long, "
          "scored boolean, best_hotspot_id long, jaccard double, matched boolean, recall double, precision double, "
          "f1 double, ari double, hotspots long, hotspots_matched long",
          "hotspots", (), "a simulated scene's hotspots scored against its truth, per source and method"),
    Table("hotspot_tracks",
          "dataset string, run_id string, hotspots_run string, track_id string, hotspot_id long, status string, "
          "linked_tracks array<string>, n_pixels long, area_km2 double, mean_velocity double, "
          "acceleration_mm_yr2 double, moving_level_mm_yr double, center_lon double, center_lat double, "
          "geometry string, first_seen_run string, first_seen_date date, series_end date",
          "alerts", ("alerts", "report", "lake"),
          "each run's retained hotspots (those of run hotspots_run) on tracks across runs (status new, continuing, merged, split; a "
          "previous track without a hotspot now: vanished, absorbed, missed; one row none: no hotspot, no track), size (pixels, ellipse km2), mean "
          "velocity (mm/yr), acceleration (mm/yr2), the moving-pixel level |v - v0| of the run (mm/yr)"),
    Table("alerts",
          "dataset string, run_id string, track_id string, hotspot_id long, kind string, severity string, "
          "rank int, center_lon double, center_lat double, geometry string, linked_tracks array<string>, "
          "assets long, asset_length_m double, evidence map<string,double>",
          "alerts", ("report",),
          "what changed since the previous run: kind new, growing, accelerating, merged, split or vanished, "
          "severity (high, medium, low), rank in the run (1 first: severity, then assets touched), the assets "
          "of alerts.assets within the hotspot (count, length in m) and the numbers that raised it"),
    Table("forecasts",
          "dataset string, run_id string, pixel_id string, date date, horizon int, mean float, p05 float, "
          "p50 float, p95 float",
          "forecast", ("forecast", "report"), "the forecast displacement (mm) of every pixel at the next dates, with its "
                                     "90 % interval p05..p95"),
    Table("forecast_metrics",
          "dataset string, run_id string, model string, subset string, horizon int, horizon_epochs int, "
          "rmse double, mae double, acc double, evs double, r2 double, coverage_90 double, windows int, "
          "values long, train_seconds double, best_epoch int",
          "forecast", (), "forecast errors (mm) of DAPF and the baselines on the test windows"),
    Table("site_hotspots",
          "dataset string, run_id string, site_id long, geometry_dataset string, track int, pass_direction string, "
          "hotspot_id long, n_pixels long, velocity_los_mm_yr double, velocity_los_std_mm_yr double, "
          "los_east double, los_north double, los_up double, center_lon double, center_lat double, geometry string",
          "sites", (), "the hotspots of each viewing geometry that make up a site"),
    Table("sites",
          "dataset string, run_id string, site_id long, n_hotspots long, geometry_datasets array<string>, "
          "tracks array<int>, pass_directions array<string>, n_pixels long, center_lon double, center_lat double, "
          "geometry string, east_mm_yr double, east_std_mm_yr double, up_mm_yr double, up_std_mm_yr double, "
          "decomposition string",
          "sites", (), "hotspots of several tracks linked into one site, with east and up velocities where "
                       "both passes see it"),
    Table("runs",
          f"{_RUN_IDENTITY}, finished timestamp NOT NULL, status string NOT NULL, error string, {_RUN_CONFIG}, "
          "counts map<string,long>, metrics map<string,double>, seconds map<string,double>",
          "lake", ("lake",), "one row per job run: status (succeeded, failed, lost), its config, rows written, "
                             "results and seconds per stage", partition_by=()),
    Table("run_heartbeats",
          f"{_RUN_IDENTITY}, heartbeat timestamp NOT NULL, lost_after_s double NOT NULL, driver string NOT NULL, "
          f"{_RUN_CONFIG}",
          "lake", ("lake",), "the heartbeats of running jobs (removed when they end)", partition_by=("run_id",)),
]}


def table(name: str) -> Table:
    """The contract of table ``name``; a name not in the contract is a programming error."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table {name!r} in the lake's contract (insarlake/tables.py)") from None


def schema(name: str) -> T.StructType:
    return table(name).schema


def conform(name: str, actual: T.StructType) -> list[str]:
    """The problems of writing rows of schema ``actual`` to table ``name`` (nullability aside):
    missing and unexpected columns, and columns of another type. Empty when they conform."""
    expected = {f.name: f.dataType for f in schema(name).fields}
    given = {f.name: f.dataType for f in actual.fields}
    problems = [f"column {c} missing" for c in expected if c not in given]
    problems += [f"column {c} not in the contract" for c in given if c not in expected]
    problems += [f"column {c} is {_ddl(given[c])}, the contract says {_ddl(expected[c])}"
                 for c in expected if c in given and not _same_type(given[c], expected[c])]
    return problems


# -- a small parser of the DDL above into Spark types (no JVM needed)

_SIMPLE = {"string": T.StringType(), "int": T.IntegerType(), "long": T.LongType(), "double": T.DoubleType(),
           "float": T.FloatType(), "boolean": T.BooleanType(), "date": T.DateType(), "timestamp": T.TimestampType()}


def _split_top(text: str) -> list[str]:
    """Split at the commas outside <...>."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [p.strip() for p in [*parts, text[start:]]]


def data_type(text: str) -> T.DataType:
    text = text.strip()
    if text.startswith("array<") and text.endswith(">"):
        return T.ArrayType(data_type(text[6:-1]))
    if text.startswith("map<") and text.endswith(">"):
        key, value = _split_top(text[4:-1])
        return T.MapType(data_type(key), data_type(value))
    if text not in _SIMPLE:
        raise ValueError(f"unknown column type {text!r}")
    return _SIMPLE[text]


def columns(ddl: str) -> T.StructType:
    """``"a string NOT NULL, b array<float>"`` -> StructType (nullable unless NOT NULL)."""
    fields = []
    for column in _split_top(ddl):
        name, kind = column.split(None, 1)
        required = kind.endswith(" NOT NULL")
        fields.append(T.StructField(name, data_type(kind.removesuffix(" NOT NULL")), nullable=not required))
    return T.StructType(fields)


def _same_type(a: T.DataType, b: T.DataType) -> bool:
    """Equal types, nullability of elements and values aside."""
    if isinstance(a, T.ArrayType) and isinstance(b, T.ArrayType):
        return _same_type(a.elementType, b.elementType)
    if isinstance(a, T.MapType) and isinstance(b, T.MapType):
        return _same_type(a.keyType, b.keyType) and _same_type(a.valueType, b.valueType)
    return a == b


def _ddl(kind: T.DataType) -> str:
    return kind.simpleString().replace("bigint", "long")
