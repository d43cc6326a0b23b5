"""Sites on Spark: the retained hotspots of every viewing geometry of a dataset, linked where they
cover the same ground, with the vertical / east-west velocity where both passes see a site.

Input: the table ``geometries`` (one row per dataset an input was split into, one per track;
ingest/geometry.py), and each geometry dataset's ``hotspots`` (retained) and ``hotspot_pixels``.
Two hotspots of different geometries are linked when their ellipses intersect (Sedona
``ST_Intersects`` on the WKT); a site is a connected group of linked hotspots (a hotspot no other
geometry sees is a site of its own). Hotspots of one geometry are never linked directly.

Output, replacing the dataset's rows:
* ``site_hotspots``: one row per hotspot with its site, its geometry (track, pass) and the
  evidence of that geometry: LOS velocity (mean over its pixels outside its rim, mm/yr) and its standard error
  (the pixels' scatter / sqrt(n)), mean LOS unit vector, pixels, centre;
* ``sites``: one row per site: its geometries side by side (arrays), centre (pixel-weighted),
  outline (the union of its ellipses, WKT), and east / up velocity with 1-sigma uncertainty from
  ``decompose.decompose_los`` where ascending and descending hotspots both belong to it (else
  null, with the reason in ``decomposition``).
The decomposition uses each hotspot's own pixels: where the two geometries' footprints differ,
the velocities are means over different areas (EGMS L3 resamples both to a common grid first).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from insarlake.config import Config
from insarlake.errors import InputError
from insarlake.ingest.stage import recorded_geometries
from insarlake.lake import Run, latest_run_id, read_table, table_exists, write_table
from insarlake.sites.decompose import decompose_los
from insarlake.tables import schema

log = logging.getLogger(__name__)

SITE_HOTSPOTS_SCHEMA = schema("site_hotspots")
SITES_SCHEMA = schema("sites")
SITE_HOTSPOTS_COLUMNS = SITE_HOTSPOTS_SCHEMA.fieldNames()
SITES_COLUMNS = SITES_SCHEMA.fieldNames()


@dataclass(frozen=True)
class SitesResult:
    dataset: str
    geometries: int         # geometry datasets read
    hotspots: int           # retained hotspots among them
    sites: int
    multi_geometry_sites: int
    decomposed: int         # sites with east / up velocities


def site_geometries(spark: SparkSession, config: Config, dataset: str) -> pd.DataFrame:
    """(geometry_dataset, track, pass_direction) of ``dataset`` (``recorded_geometries``); a
    dataset ingested before the table existed is its own single geometry."""
    rows = recorded_geometries(spark, config, dataset)
    if len(rows):
        return rows
    return pd.DataFrame({"geometry_dataset": [dataset], "track": [None], "pass_direction": [None]})


def hotspot_evidence(spark: SparkSession, config: Config, geometries: pd.DataFrame, current: Run | None = None
                     ) -> DataFrame:
    """One row per retained hotspot of the geometry datasets with its LOS evidence
    (SITE_HOTSPOTS_COLUMNS without dataset, run_id, site_id), from each geometry dataset's hotspots
    run written last, or ``current``'s own (``lake.latest_run_id``)."""
    names = geometries["geometry_dataset"].tolist()
    chosen = [(name, latest_run_id(spark, config, "hotspots", name, current)) for name in names]
    runs = spark.createDataFrame([c for c in chosen if c[1] is not None], "dataset string, run_id string")
    hotspots = (read_table(spark, config, "hotspots", names).join(F.broadcast(runs), ["dataset", "run_id"])
                .where("retained")
                .select(F.col("dataset").alias("geometry_dataset"), "hotspot_id", "center_lon", "center_lat",
                        "geometry"))
    # a hotspot's rim (slow pixels joined by the rim growth) is footprint, not evidence of its velocity
    # (rows written before hotspot_pixels had `rim`: null, no rim)
    members = (read_table(spark, config, "hotspot_pixels", names).join(F.broadcast(runs), ["dataset", "run_id"])
               .where(~F.coalesce(F.col("rim"), F.lit(False)))
               .select(F.col("dataset").alias("geometry_dataset"), "hotspot_id", "pixel_id"))
    pixels = read_table(spark, config, "pixels", names).select(
        F.col("dataset").alias("geometry_dataset"), "pixel_id", "velocity", "los_east", "los_north", "los_up")
    stats = (members.join(hotspots.select("geometry_dataset", "hotspot_id"), ["geometry_dataset", "hotspot_id"])
             .join(pixels, ["geometry_dataset", "pixel_id"])
             .groupBy("geometry_dataset", "hotspot_id")
             .agg(F.count(F.lit(1)).alias("n_pixels"), F.avg("velocity").alias("velocity_los_mm_yr"),
                  (F.stddev_samp("velocity") / F.sqrt(F.count(F.lit(1)))).alias("velocity_los_std_mm_yr"),
                  *[F.avg(c).alias(c) for c in ("los_east", "los_north", "los_up")]))
    # Spark adds partial sums in the order its shuffle delivers them: rounded to 1e-6 (mm/yr, unit
    # vector), a re-run gives the same numbers to the last bit
    stats = stats.select("geometry_dataset", "hotspot_id", "n_pixels",
                         *[F.round(c, 6).alias(c) for c in ("velocity_los_mm_yr", "velocity_los_std_mm_yr",
                                                             "los_east", "los_north", "los_up")])
    kinds = spark.createDataFrame(geometries.astype(object).where(geometries.notna(), None),
                                  "geometry_dataset string, track int, pass_direction string")
    return hotspots.join(stats, ["geometry_dataset", "hotspot_id"]).join(kinds, "geometry_dataset")


def overlapping_pairs(spark: SparkSession, evidence: DataFrame) -> pd.DataFrame:
    """(geometry_dataset, hotspot_id) pairs of hotspots of different geometries whose ellipses
    intersect (Sedona ST_Intersects), as columns ds_a, id_a, ds_b, id_b."""
    shapes = evidence.select("geometry_dataset", "hotspot_id",
                             F.expr("ST_GeomFromWKT(geometry)").alias("shape"))
    a = shapes.toDF("ds_a", "id_a", "shape_a")
    b = shapes.toDF("ds_b", "id_b", "shape_b")
    pairs = (a.join(b, F.expr("ST_Intersects(shape_a, shape_b)") & (F.col("ds_a") < F.col("ds_b")))
             .select("ds_a", "id_a", "ds_b", "id_b"))
    return pairs.toPandas()


def link_sites(hotspots: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Site id (0, 1, ...) per row of ``hotspots`` (geometry_dataset, hotspot_id): connected
    components of ``pairs``, numbered in the order of each site's first row (rows sorted by
    geometry_dataset, hotspot_id gives ids that do not depend on Spark's order)."""
    n = len(hotspots)
    index = {(ds, int(h)): i for i, (ds, h) in enumerate(zip(hotspots["geometry_dataset"], hotspots["hotspot_id"]))}
    rows = [index[(a, int(x))] for a, x in zip(pairs["ds_a"], pairs["id_a"])]
    cols = [index[(b, int(y))] for b, y in zip(pairs["ds_b"], pairs["id_b"])]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first = {}
    for c in component:
        first.setdefault(int(c), len(first))
    return np.array([first[int(c)] for c in component], dtype=np.int64)


def site_rows(members: pd.DataFrame) -> pd.DataFrame:
    """One row per site from its hotspots (``members``: SITE_HOTSPOTS_COLUMNS with site_id)."""
    from shapely import wkt
    from shapely.ops import unary_union

    out = []
    for site_id, g in members.groupby("site_id", sort=True):
        weights = g["n_pixels"].to_numpy(dtype=np.float64)
        sides = set(g["pass_direction"].dropna())
        found = None
        if {"ascending", "descending"} <= sides:
            found = decompose_los(g["velocity_los_mm_yr"], g["velocity_los_std_mm_yr"], g["los_east"], g["los_up"])
            reason = "ascending+descending" if found else "LOS directions too close"
        elif len(g) > 1:
            reason = f"{next(iter(sides))} only" if len(sides) == 1 else "pass direction unknown"
        else:
            reason = "one geometry"
        outline = unary_union([wkt.loads(text) for text in g["geometry"]]).wkt
        out.append({
            "site_id": int(site_id), "n_hotspots": len(g),
            "geometry_datasets": sorted(set(g["geometry_dataset"])),
            "tracks": sorted({int(t) for t in g["track"].dropna()}),
            "pass_directions": sorted(sides), "n_pixels": int(weights.sum()),
            "center_lon": float(np.average(g["center_lon"], weights=weights)),
            "center_lat": float(np.average(g["center_lat"], weights=weights)), "geometry": outline,
            "east_mm_yr": found.east_mm_yr if found else None, "east_std_mm_yr": found.east_std_mm_yr if found else None,
            "up_mm_yr": found.up_mm_yr if found else None, "up_std_mm_yr": found.up_std_mm_yr if found else None,
            "decomposition": reason})
    return pd.DataFrame(out)


def run_sites(spark: SparkSession, config: Config, dataset: str, run: Run) -> SitesResult:
    """Link the retained hotspots of ``dataset``'s geometries into sites; write `site_hotspots`
    and `sites` (this run's rows of the dataset)."""
    with run.stage("sites.link"):
        geometries = site_geometries(spark, config, dataset)
        if not table_exists(spark, config, "hotspots"):
            raise InputError(f"dataset {dataset}: no hotspots table (run jobs/hotspots.py first)")
        evidence = hotspot_evidence(spark, config, geometries, current=run).persist()
        members = evidence.toPandas().sort_values(["geometry_dataset", "hotspot_id"], ignore_index=True)
        pairs = overlapping_pairs(spark, evidence) if len(members) else pd.DataFrame(columns=["ds_a", "id_a", "ds_b", "id_b"])
        evidence.unpersist()
        members["site_id"] = link_sites(members, pairs) if len(members) else np.zeros(0, dtype=np.int64)
        sites = site_rows(members) if len(members) else pd.DataFrame(columns=SITES_COLUMNS[2:])
    with run.stage("sites.write"):
        members = members.assign(dataset=dataset, run_id=run.run_id)[SITE_HOTSPOTS_COLUMNS]
        members["track"] = members["track"].astype("Int32")
        write_table(spark, spark.createDataFrame(members, SITE_HOTSPOTS_SCHEMA), config, "site_hotspots",
                    datasets=[dataset], run=run)
        sites = sites.assign(dataset=dataset, run_id=run.run_id)[SITES_COLUMNS]
        write_table(spark, spark.createDataFrame(sites, SITES_SCHEMA), config, "sites", datasets=[dataset], run=run)
    multi = int((sites["n_hotspots"] > 1).sum()) if len(sites) else 0
    decomposed = int(sites["up_mm_yr"].notna().sum()) if len(sites) else 0
    run.count("sites", len(sites))
    run.count("site_hotspots", len(members))
    log.info("dataset %s: %d retained hotspots of %d geometries in %d sites (%d seen by several geometries, "
             "%d with east/up velocities)", dataset, len(members), len(geometries), len(sites), multi, decomposed)
    return SitesResult(dataset, len(geometries), len(members), len(sites), multi, decomposed)
