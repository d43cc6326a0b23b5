"""The alerts stage on Spark: the run's retained hotspots on tracks across runs (`hotspot_tracks`)
and what changed since the previous run (`alerts`), ranked by severity and by the assets of
alerts.assets each touches.

The previous run is the one that wrote the dataset's `hotspot_tracks` last (not failed or lost).
Overlaps are counted by Spark (joins of the two runs' hotspot pixels); the tracks, the change
tests and the ranking run on the driver over one row per hotspot (``tracks.py``, ``change.py``).
A dataset's first tracked run starts every track and raises no alert: change needs a past.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.alerts import change, tracks
from insarlake.alerts.assets import read_assets, touched
from insarlake.config import AlertsConfig, Config
from insarlake.errors import InputError
from insarlake.exports import write_geoparquet
from insarlake.hotspots.stage import velocity_noise
from insarlake.lake import (Run, analysis_pixels, lake_files, latest_run_id, previous_run_id, read_table,
                            run_results, runs_by_write_time, table_exists, write_table)
from insarlake.tables import schema
from insarlake.timeseries import years_since

log = logging.getLogger(__name__)

TRACKS_SCHEMA = schema("hotspot_tracks")
ALERTS_SCHEMA = schema("alerts")
KINDS = ("new", "growing", "accelerating", "merged", "split", "vanished")
SEVERITIES = ("high", "medium", "low")


@dataclass(frozen=True)
class AlertsResult:
    dataset: str
    previous_run: str | None       # the run compared with (None: the dataset's first tracked run)
    tracks: int                    # hotspot_tracks rows written (current hotspots and ended tracks)
    alerts: pd.DataFrame           # the alerts written, ranked


def run_alerts(spark: SparkSession, config: Config, dataset: str, run: Run) -> AlertsResult:
    """Track the retained hotspots of the dataset's latest hotspots run (``run``'s own when it
    wrote some) against the previous tracked run, write `hotspot_tracks` and `alerts`."""
    cfg = config.alerts
    with run.stage("alerts.track"):
        hotspots_run = latest_run_id(spark, config, "hotspots", dataset, current=run)
        if hotspots_run is None:
            raise InputError(f"dataset {dataset}: no hotspots; run the hotspots stage first")
        current = (run_results(spark, config, "hotspots", dataset, run_id=hotspots_run, current=run).where("retained")
                   .select("hotspot_id", "n_pixels", "ellipse_area_km2", "mean_velocity", "center_lon",
                           "center_lat", "geometry", "mean_disp").toPandas())
        members = _members(spark, config, dataset, hotspots_run, current["hotspot_id"], run)
        pixels = analysis_pixels(spark, config, dataset).select("pixel_id", "lon", "lat", "velocity", "velocity_std")
        v0, sigma = velocity_noise(pixels, config.hotspots)
        level = config.hotspots.z_pixel * sigma
        dates = [r.date for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
        t_yr = years_since(np.array(dates, dtype="datetime64[D]"))

        previous_run = previous_run_id(spark, config, "hotspot_tracks", dataset, run) \
            if table_exists(spark, config, "hotspot_tracks") else None
        before = (run_results(spark, config, "hotspot_tracks", dataset, run_id=previous_run).toPandas()
                  if previous_run else None)
        alive = None if before is None else before[before["status"].isin(tracks.LIVE)].reset_index(drop=True)
        linked = _links(spark, config, dataset, alive, current, members, pixels, cfg)
        tracked = tracks.assign_tracks(None if alive is None else alive[["track_id", "first_seen_run"]],
                                       [int(h) for h in current["hotspot_id"]], linked,
                                       lambda hotspot_id: f"{run.run_id[:8]}-{hotspot_id}")
        level_before = float(alive["moving_level_mm_yr"].max()) if alive is not None and len(alive) else level
        at_level = _pixels_at_level(members, pixels, v0, max(level, level_before)) if alive is not None else {}
        gone = tracked.ended[tracked.ended["status"] == tracks.VANISHED]
        ground = _ground_now(pixels, alive.set_index("track_id").loc[gone["track_id"], ["geometry"]]
                             .reset_index()) if len(gone) else {}
        sigma_before = level_before / config.hotspots.z_pixel
        moving = {t: change.still_moving(n, mean, v0, sigma_before, config.hotspots.z_hotspot,
                                         config.hotspots.min_pixels) for t, (n, mean) in ground.items()}
        rows = _track_rows(dataset, run, hotspots_run, tracked, current, alive, dates, t_yr, level, at_level,
                           ground, moving)
        found = _alerts(rows, alive, linked, t_yr, dates, v0, cfg) if alive is not None else _no_alerts()

    with run.stage("alerts.rank"):
        found = _ranked(spark, found, cfg, run)
    with run.stage("alerts.write"):
        table = spark.createDataFrame(rows[TRACKS_SCHEMA.fieldNames()] if len(rows) else [], TRACKS_SCHEMA)
        write_table(spark, table, config, "hotspot_tracks", datasets=[dataset], run=run)
        frame = found.assign(dataset=dataset, run_id=run.run_id)
        written = spark.createDataFrame(frame[ALERTS_SCHEMA.fieldNames()] if len(frame) else [], ALERTS_SCHEMA)
        write_table(spark, written, config, "alerts", datasets=[dataset], run=run)
        # for GIS tools: plain columns (the evidence as JSON text, the linked tracks comma-separated)
        write_geoparquet(written.withColumn("evidence", F.to_json("evidence"))
                         .withColumn("linked_tracks", F.array_join("linked_tracks", ",")),
                         lake_files(config, spark).uri("outputs", dataset, run.run_id, "alerts.parquet"))
    run.count("hotspot_tracks", len(rows))
    run.count("alerts", len(found))
    for kind in KINDS:
        run.metrics[f"alerts_{kind}"] = float((found["kind"] == kind).sum()) if len(found) else 0.0
    log.info("dataset %s: %d tracks (%s), %d alerts against %s: %s", dataset, len(rows),
             ", ".join(f"{k} {v}" for k, v in rows["status"].value_counts().items()), len(found),
             previous_run or "no previous run (first tracked run)",
             ", ".join(f"{k} {v}" for k, v in found["kind"].value_counts().items()) if len(found) else "none")
    return AlertsResult(dataset, previous_run, len(rows), found)


def _members(spark: SparkSession, config: Config, dataset: str, hotspots_run: str, ids, run: Run | None = None
             ) -> DataFrame:
    """hotspot_id, pixel_id of the retained hotspots ``ids`` of ``hotspots_run`` (``run``'s own, maybe none)."""
    return (run_results(spark, config, "hotspot_pixels", dataset, run_id=hotspots_run, current=run)
            .where(F.col("hotspot_id").isin([int(i) for i in ids])).select("hotspot_id", "pixel_id"))


def _links(spark: SparkSession, config: Config, dataset: str, alive: pd.DataFrame | None, current: pd.DataFrame,
           members: DataFrame, pixels: DataFrame, cfg: AlertsConfig) -> pd.DataFrame:
    """tracks.links of the previous run's live tracks (``alive``; None on the first tracked run)
    with the current hotspots: the shared pixels and the previous pixels still in the dataset
    counted by Spark (missed tracks, without a hotspot, by their ellipse)."""
    if alive is None or alive.empty or current.empty:
        return pd.DataFrame({"prev_track_id": [], "hotspot_id": [], "overlap": [], "by": []})
    detected = alive[alive["hotspot_id"].notna()]
    track_of = dict(zip(detected["hotspot_id"].astype("int64"), detected["track_id"]))
    runs = detected["hotspots_run"].unique()
    if len(runs) > 1:
        raise InputError(f"dataset {dataset}: the previous tracks describe several hotspots runs {sorted(runs)}")
    shared = pd.DataFrame({"prev_track_id": [], "hotspot_id": [], "shared_pixels": []})
    present = pd.DataFrame({"track_id": [], "present_pixels": []})
    if len(runs) and runs[0] in runs_by_write_time(spark, config, "hotspot_pixels", dataset):
        before = _members(spark, config, dataset, runs[0], track_of).withColumnRenamed("hotspot_id", "prev_hotspot_id")
        shared = (before.join(members, "pixel_id").groupBy("prev_hotspot_id", "hotspot_id")
                  .agg(F.count(F.lit(1)).alias("shared_pixels")).toPandas())
        shared["prev_track_id"] = shared["prev_hotspot_id"].map(track_of)
        present = (before.join(pixels.select("pixel_id"), "pixel_id").groupBy("prev_hotspot_id")
                   .agg(F.count(F.lit(1)).alias("present_pixels")).toPandas())
        present["track_id"] = present["prev_hotspot_id"].map(track_of)
    elif len(runs):     # the previous hotspots' pixels were pruned (lake.keep_runs): ellipses only
        log.info("dataset %s: the pixels of hotspots run %s are gone; tracks linked by their ellipses", dataset, runs[0])
    previous = (alive[["track_id", "n_pixels", "geometry"]]
                .assign(n_pixels=np.where(alive["hotspot_id"].notna(), alive["n_pixels"].fillna(0), 0))
                .merge(present[["track_id", "present_pixels"]], on="track_id", how="left")
                .fillna({"present_pixels": 0}))
    return tracks.links(previous, current[["hotspot_id", "n_pixels", "geometry"]],
                        shared[["prev_track_id", "hotspot_id", "shared_pixels"]], cfg.min_overlap,
                        cfg.min_present_share)


def _ground_now(pixels: DataFrame, ended: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """track_id -> (pixels now inside its last ellipse, their mean velocity mm/yr) of the ``ended``
    tracks (track_id, geometry): a Sedona join of the pixels with the ellipses."""
    shapes = pixels.sparkSession.createDataFrame(ended[["track_id", "geometry"]].astype(str)).select(
        "track_id", F.expr("ST_GeomFromWKT(geometry)").alias("shape"))
    inside = (pixels.select("velocity", F.expr("ST_Point(lon, lat)").alias("point"))
              .join(shapes, F.expr("ST_Contains(shape, point)"))
              .groupBy("track_id").agg(F.count(F.lit(1)).alias("n"), F.avg("velocity").alias("mean")).collect())
    found = {r.track_id: (int(r.n), float(r.mean)) for r in inside}
    return {t: found.get(t, (0, float("nan"))) for t in ended["track_id"]}


def _pixels_at_level(members: DataFrame, pixels: DataFrame, v0: float, level: float) -> dict[int, int]:
    """hotspot_id -> how many of its pixels have |velocity - v0| >= level (mm/yr)."""
    counted = (members.join(pixels, "pixel_id")
               .groupBy("hotspot_id")
               .agg(F.sum(F.when(F.abs(F.col("velocity") - F.lit(v0)) >= F.lit(level), 1).otherwise(0)).alias("n"))
               .collect())
    return {int(r.hotspot_id): int(r.n) for r in counted}


def _track_rows(dataset: str, run: Run, hotspots_run: str, tracked: tracks.Tracked, current: pd.DataFrame,
                alive: pd.DataFrame | None, dates: list, t_yr: np.ndarray, level: float, at_level: dict[int, int],
                ground: dict[str, tuple[int, float]], moving: dict[str, bool]) -> pd.DataFrame:
    """The `hotspot_tracks` rows of this run: one per current hotspot, one per ended track (a
    vanished one whose ground still moves is missed: its pixels in the last ellipse now, their
    mean velocity), or one row of status none when there are neither; with the working columns
    n_at_level and mean_disp (not written)."""
    series_end = dates[-1] if dates else None
    by_id = current.set_index("hotspot_id")
    was = alive.set_index("track_id") if alive is not None else pd.DataFrame()
    rows = []
    for r in tracked.current.itertuples():
        h = by_id.loc[r.hotspot_id]
        inherited = r.track_id in was.index
        rows.append({"track_id": r.track_id, "hotspot_id": int(r.hotspot_id), "status": r.status,
                     "linked_tracks": list(r.linked_tracks), "n_pixels": int(h.n_pixels),
                     "area_km2": float(h.ellipse_area_km2), "mean_velocity": float(h.mean_velocity),
                     "acceleration_mm_yr2": change.acceleration_mm_yr2(t_yr, _series(h.mean_disp)),
                     "center_lon": float(h.center_lon), "center_lat": float(h.center_lat), "geometry": h.geometry,
                     "first_seen_run": r.first_seen_run if inherited else run.run_id,
                     "first_seen_date": was.loc[r.track_id, "first_seen_date"] if inherited else series_end,
                     "n_at_level": at_level.get(int(r.hotspot_id), 0), "mean_disp": _series(h.mean_disp)})
    for r in tracked.ended.itertuples():
        last = was.loc[r.track_id]
        missed = moving.get(r.track_id, False)
        n_now, mean_now = ground.get(r.track_id, (None, None))
        rows.append({"track_id": r.track_id, "hotspot_id": None if pd.isna(r.hotspot_id) else int(r.hotspot_id),
                     "status": tracks.MISSED if missed else r.status, "linked_tracks": list(r.linked_tracks),
                     "n_pixels": n_now if missed else None, "area_km2": None,
                     "mean_velocity": mean_now if missed else None, "acceleration_mm_yr2": None,
                     "center_lon": float(last.center_lon), "center_lat": float(last.center_lat),
                     "geometry": last.geometry, "first_seen_run": r.first_seen_run,
                     "first_seen_date": last.first_seen_date, "n_at_level": None, "mean_disp": None})
    if not rows:        # a run that found nothing says so: the next run compares with it
        rows.append({"track_id": None, "hotspot_id": None, "status": tracks.NONE, "linked_tracks": [],
                     "n_pixels": None, "area_km2": None, "mean_velocity": None, "acceleration_mm_yr2": None,
                     "center_lon": None, "center_lat": None, "geometry": None, "first_seen_run": None,
                     "first_seen_date": None, "n_at_level": None, "mean_disp": None})
    out = pd.DataFrame(rows, columns=["track_id", "hotspot_id", "status", "linked_tracks", "n_pixels", "area_km2",
                                      "mean_velocity", "acceleration_mm_yr2", "center_lon", "center_lat", "geometry",
                                      "first_seen_run", "first_seen_date", "n_at_level", "mean_disp"])
    out = out.assign(dataset=dataset, run_id=run.run_id, hotspots_run=hotspots_run, series_end=series_end,
                     moving_level_mm_yr=level)
    out["hotspot_id"] = out["hotspot_id"].astype("Int64")
    out["n_pixels"] = out["n_pixels"].astype("Int64")
    return out


def _series(values) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.float64)


def _alerts(rows: pd.DataFrame, alive: pd.DataFrame, linked: pd.DataFrame, t_yr: np.ndarray, dates: list,
            v0: float, cfg: AlertsConfig) -> pd.DataFrame:
    """The alerts of this run against the previous one's live tracks (``alive``), unranked."""
    was = alive.set_index("track_id")
    found = []

    def alert(r, kind: str, severity: str, evidence: dict, linked_tracks=None):
        found.append({"track_id": r.track_id, "hotspot_id": None if pd.isna(r.hotspot_id) else int(r.hotspot_id),
                      "kind": kind, "severity": severity, "center_lon": r.center_lon, "center_lat": r.center_lat,
                      "geometry": r.geometry, "linked_tracks": list(linked_tracks if linked_tracks is not None
                                                                    else r.linked_tracks),
                      "evidence": {k: float(v) for k, v in evidence.items()}})

    for r in rows[rows["status"].isin([tracks.NEW, tracks.CONTINUING, tracks.MERGED, tracks.SPLIT])].itertuples():
        if r.status == tracks.NEW:
            speed = abs(r.mean_velocity - v0)
            alert(r, "new", "high" if speed >= cfg.high_velocity_mm_yr else "medium",
                  {"mean_velocity_mm_yr": r.mean_velocity, "speed_mm_yr": speed, "n_pixels": r.n_pixels,
                   "area_km2": r.area_km2})
            continue
        if r.status == tracks.MERGED:
            alert(r, "merged", "low", {"n_pixels": r.n_pixels, "tracks": len(r.linked_tracks)})
        if r.track_id not in was.index:       # a split's part on a track of its own: see the split alert
            continue
        prev = was.loc[r.track_id]
        if (r.status != tracks.MERGED and prev.status != tracks.MISSED
                and change.growing(int(prev.n_pixels), int(r.n_at_level), float(prev.area_km2), float(r.area_km2),
                                   cfg.growth_ratio, cfg.growth_min_pixels)):
            alert(r, "growing", "medium", {"n_pixels_before": prev.n_pixels, "n_pixels_at_level": r.n_at_level,
                                           "n_pixels": r.n_pixels, "area_km2_before": prev.area_km2,
                                           "area_km2": r.area_km2, "moving_level_mm_yr": max(
                                               r.moving_level_mm_yr, prev.moving_level_mm_yr)})
        baseline_end = years_since(np.array([prev.series_end], dtype="datetime64[D]"), origin=dates[0])[0]
        dep = change.departure(t_yr, r.mean_disp, baseline_end, cfg.baseline_years,
                               cfg.seasonal_min_years, cfg.min_baseline_epochs) if len(r.mean_disp) else None
        if change.accelerating(dep, cfg.z_alert, cfg.persist_epochs):
            persisted = change.persisting(dep, cfg.z_alert)
            tail = np.abs(dep.z[-persisted:])
            alert(r, "accelerating", "high" if tail.min() >= cfg.high_z else "medium",
                  {"z_min": tail.min(), "z_last": dep.z[-1], "epochs_persisting": persisted, "new_epochs": dep.n_new,
                   "departure_mm": dep.departure_mm[-1], "baseline_rate_mm_yr": dep.baseline_rate_mm_yr,
                   "new_rate_mm_yr": dep.new_rate_mm_yr, "sigma_mm": dep.sigma_mm,
                   "baseline_epochs": dep.n_baseline})
    for parent, group in linked.groupby("prev_track_id"):
        if len(group) < 2:
            continue
        parts = rows[rows["hotspot_id"].isin(group["hotspot_id"]) & rows["status"].isin([tracks.SPLIT, tracks.MERGED])]
        heir = parts[parts["track_id"] == parent]
        alert(heir.iloc[0] if len(heir) else parts.iloc[0], "split", "low",
              {"parts": len(group), "n_pixels_before": was.loc[parent].n_pixels},
              linked_tracks=[t for t in parts["track_id"] if t != parent])
    for r in rows[rows["status"] == tracks.VANISHED].itertuples():
        prev = was.loc[r.track_id]
        alert(r, "vanished", "low", {"n_pixels_before": prev.n_pixels, "mean_velocity_mm_yr_before": prev.mean_velocity})
    return pd.DataFrame(found, columns=_ALERT_COLUMNS)


_ALERT_COLUMNS = ["track_id", "hotspot_id", "kind", "severity", "center_lon", "center_lat", "geometry",
                  "linked_tracks", "evidence"]


def _no_alerts() -> pd.DataFrame:
    return pd.DataFrame(columns=_ALERT_COLUMNS)


def _ranked(spark: SparkSession, found: pd.DataFrame, cfg: AlertsConfig, run: Run) -> pd.DataFrame:
    """``found`` with assets, asset_length_m (alerts.assets; 0 without a layer) and rank: severity
    first, then assets touched, asset length and |departure| or speed."""
    found = found.reset_index(drop=True).copy()
    found["assets"], found["asset_length_m"] = 0, 0.0
    if len(found) and cfg.assets:
        assets, refused = read_assets(spark, cfg.assets)
        run.count("assets_without_geometry", refused)
        keyed = spark.createDataFrame(pd.DataFrame({"alert_key": np.arange(len(found)),
                                                    "geometry": found["geometry"].astype(str)}))
        hit = touched(keyed, assets).toPandas().set_index("alert_key")
        found.loc[hit.index, "assets"] = hit["assets"].to_numpy()
        found.loc[hit.index, "asset_length_m"] = hit["asset_length_m"].fillna(0.0).to_numpy()
    order = found.assign(_severity=found["severity"].map({s: i for i, s in enumerate(SEVERITIES)}),
                         _size=[max(abs(e.get("z_min", 0.0)), e.get("speed_mm_yr", 0.0), e.get("n_pixels", 0.0))
                                for e in found["evidence"]])
    order = order.sort_values(["_severity", "assets", "asset_length_m", "_size", "track_id"],
                              ascending=[True, False, False, False, True], kind="stable")
    found = order.drop(columns=["_severity", "_size"]).reset_index(drop=True)
    found["rank"] = np.arange(1, len(found) + 1, dtype=np.int32)
    found["assets"] = found["assets"].astype("int64")
    found["hotspot_id"] = found["hotspot_id"].astype("Int64")
    return found
