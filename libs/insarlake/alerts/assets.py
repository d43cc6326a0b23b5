"""The asset layer of alerts.assets (buildings, roads, pipelines) and what each alert's hotspot
touches: a Sedona spatial join of the assets with the hotspots' ellipses."""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.errors import ConfigError

log = logging.getLogger(__name__)

GEOPARQUET, GEOJSON = (".parquet", ".geoparquet"), (".geojson", ".json")


def read_assets(spark: SparkSession, path: str) -> tuple[DataFrame, int]:
    """(assets: one column ``asset`` of geometries, lon/lat; the number of features refused for
    having no geometry) from a GeoParquet file or folder, or a GeoJSON FeatureCollection or
    newline-delimited Features; ConfigError naming the file and the problem when it cannot be read."""
    name = path.rstrip("/").lower()
    if not name.endswith(GEOPARQUET + GEOJSON):
        raise ConfigError(f"config key 'alerts.assets': {path}: not a GeoParquet (.parquet) or GeoJSON "
                          f"(.geojson, .json) file")
    try:
        assets = _geoparquet(spark, path) if name.endswith(GEOPARQUET) else _geojson(spark, path)
        counted = assets.agg(F.count(F.lit(1)).alias("rows"), F.count("asset").alias("with_geometry")).first()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config key 'alerts.assets': {path}: cannot be read ({_first_line(exc)})") from None
    refused = int(counted.rows - counted.with_geometry)
    if refused:
        log.warning("alerts.assets %s: %d of %d features have no geometry and are left out", path, refused,
                    counted.rows)
    return assets.where(F.col("asset").isNotNull()), refused


def _geoparquet(spark: SparkSession, path: str) -> DataFrame:
    rows = spark.read.format("geoparquet").load(path)
    if "geometry" not in rows.columns:
        raise ConfigError(f"config key 'alerts.assets': {path}: no geometry column (columns: {', '.join(rows.columns)})")
    return rows.select(F.col("geometry").alias("asset"))


# The GeoJSON members read: geometries kept as their JSON text, parsed by Sedona (Sedona's own
# GeoJSON reader fails on a feature whose geometry is null).
_GEOJSON_SCHEMA = "type string, features array<struct<geometry: string>>, geometry string"


def _geojson(spark: SparkSession, path: str) -> DataFrame:
    docs = spark.read.schema(_GEOJSON_SCHEMA).json(path)              # newline-delimited Features
    if not docs.where(F.col("type").isNull()).isEmpty():                # no: one document per file
        docs = spark.read.schema(_GEOJSON_SCHEMA).option("multiLine", "true").json(path)
    kinds = {r.type for r in docs.select("type").distinct().collect()}
    if not kinds or kinds - {"FeatureCollection", "Feature"}:
        raise ConfigError(f"config key 'alerts.assets': {path}: not GeoJSON Features or FeatureCollections "
                          f"(type {', '.join(sorted(map(str, kinds))) or 'missing'})")
    geometry = (docs.where(F.col("type") == "FeatureCollection").select(F.explode("features").alias("f"))
                .select("f.geometry").unionByName(docs.where(F.col("type") == "Feature").select("geometry")))
    return geometry.select(F.when(F.col("geometry").isNotNull(), F.expr("ST_GeomFromGeoJSON(geometry)"))
                           .alias("asset"))


def touched(alerts: DataFrame, assets: DataFrame) -> DataFrame:
    """alert_key, assets (how many intersect the alert's ellipse), asset_length_m (the length on
    the WGS84 spheroid of the linear assets' parts inside it) of every ``alerts`` row (alert_key,
    geometry WKT) that touches at least one asset."""
    shapes = alerts.select("alert_key", F.expr("ST_GeomFromWKT(geometry)").alias("shape"))
    pairs = shapes.join(assets, F.expr("ST_Intersects(shape, asset)"))
    length = F.when(F.expr("ST_Dimension(asset) = 1"),
                    F.expr("ST_LengthSpheroid(ST_Intersection(asset, shape))")).otherwise(F.lit(0.0))
    return pairs.groupBy("alert_key").agg(F.count(F.lit(1)).alias("assets"), F.sum(length).alias("asset_length_m"))


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
