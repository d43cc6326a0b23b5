"""The report stage: one self-contained HTML page per run and dataset, written to the lake's file
store at ``outputs/<dataset>/<run_id>/report.html`` (report/page.py lays it out).

It reads the rows this run wrote (hotspots, hotspot_pixels, hotspot_tracks, alerts, forecasts,
classes, classifier_metrics) and the run's own counts and stage times; a table the run did not
write leaves its section saying so. Small results only reach the driver: the retained hotspots,
the alerts, a sample of at most hotspots.map_max_points pixels for the map, and the forecasts
averaged per hotspot and date in Spark.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.classify.stage import plot_confusion
from insarlake.config import Config
from insarlake.hotspots.maps import plot_hotspot_map, plot_hotspot_series, series_frame
from insarlake.hotspots.stage import map_sample
from insarlake.lake import Run, analysis_pixels, lake_files, lake_root, read_table, rows_written
from insarlake.modelstore import temporary_folder
from insarlake.report.page import ReportContent, render_report

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportResult:
    dataset: str
    uri: str            # where the page is in the lake's file store
    location: str       # what to open: a local path for a local lake, else the URI
    alerts: int
    hotspots: int


def _hotspots(spark, config, run, dataset, content: ReportContent) -> pd.DataFrame:
    """Every hotspot candidate of the run by id (with its track when the alerts stage ran); empty
    when the hotspots stage did not run."""
    rows = rows_written(spark, config, "hotspots", dataset, run)
    if rows is None:
        content.missing["hotspots"] = "the hotspots stage did not run in this run"
        return pd.DataFrame(columns=["hotspot_id", "retained"])
    candidates = rows.drop("dataset", "run_id").toPandas().sort_values("hotspot_id")
    if not candidates["retained"].any():
        content.missing["hotspots"] = "no hotspot retained in this run"
    tracks = rows_written(spark, config, "hotspot_tracks", dataset, run)
    if tracks is not None and len(candidates):
        tracked = (tracks.where((F.col("hotspots_run") == run.run_id) & F.col("hotspot_id").isNotNull())
                   .select("hotspot_id", "track_id", "status", "acceleration_mm_yr2", "first_seen_date").toPandas())
        candidates = candidates.merge(tracked, on="hotspot_id", how="left")
    return candidates.reset_index(drop=True)


def _alerts(spark, config, run, dataset, content: ReportContent) -> pd.DataFrame:
    rows = rows_written(spark, config, "alerts", dataset, run)
    if rows is None:
        content.missing["alerts"] = "the alerts stage did not run in this run"
        return pd.DataFrame()
    alerts = rows.drop("dataset", "run_id", "geometry").toPandas().sort_values("rank").reset_index(drop=True)
    if not len(alerts):
        content.missing["alerts"] = ("no alert: nothing changed since the previous run, or this is the "
                                     "dataset's first tracked run")
    return alerts


def _forecasts(spark, config, run, dataset, members: DataFrame, ids: list[int]) -> pd.DataFrame | None:
    """The run's forecasts of the pixels (``members``: pixel_id, hotspot_id) of hotspots ``ids``
    averaged per hotspot and date (mm); None when the forecast stage did not run."""
    forecasts = rows_written(spark, config, "forecasts", dataset, run)
    if forecasts is None or not ids:
        return None
    return (forecasts.join(members.where(F.col("hotspot_id").isin(ids)).select("pixel_id", "hotspot_id"), "pixel_id")
            .groupBy("hotspot_id", "date")
            .agg(*(F.avg(c).alias(c) for c in ("p05", "p50", "p95")))
            .toPandas())


def _classifiers(spark, config, run, dataset, content: ReportContent, folder: Path) -> pd.DataFrame:
    """One row per classifier of the run (held-out accuracy, classes, pixels); the confusion
    picture of the one that labelled `classes`."""
    metrics = rows_written(spark, config, "classifier_metrics", dataset, run)
    if metrics is None:
        content.missing["classifier"] = "the classify stage did not run in this run"
        return pd.DataFrame()
    per_class = metrics.where(F.col("true_cluster").isNotNull()).toPandas()
    classes = rows_written(spark, config, "classes", dataset, run)
    chosen = classes.select("model").first() if classes is not None else None
    chosen = chosen.model if chosen is not None else None
    table = (per_class.groupby(["model", "target"], as_index=False)
             .agg(accuracy=("accuracy", "first"), classes=("true_cluster", "nunique"), support=("support", "sum")))
    table["chosen"] = ["yes" if m == chosen else "" for m in table["model"]]
    if chosen is not None:
        rows = per_class[per_class["model"] == chosen].sort_values("true_cluster")
        labels = [int(c) for c in rows["true_cluster"]]
        accuracy = float(rows["accuracy"].iloc[0]) if len(rows) else float("nan")
        path = plot_confusion(rows, labels, folder / "confusion.png",
                              f"{dataset}: {chosen}, held-out accuracy {accuracy:.3f}")
        content.confusion_png = path.read_bytes()
    return table


def run_report(spark: SparkSession, config: Config, dataset: str, run: Run) -> ReportResult:
    """Write this run's report of ``dataset`` to ``outputs/<dataset>/<run_id>/report.html``."""
    with run.stage("report"), temporary_folder("insarlake-report-") as folder:
        content = ReportContent(dataset=dataset, run_id=run.run_id, job=run.job,
                                started=run.started.strftime("%Y-%m-%d %H:%M:%S UTC"), lake=lake_root(config),
                                headline={}, alerts=pd.DataFrame(), hotspots=pd.DataFrame(),
                                classifiers=pd.DataFrame(), seconds=dict(run.seconds), counts=dict(run.counts))
        candidates = _hotspots(spark, config, run, dataset, content)
        hotspots = candidates[candidates["retained"].astype(bool)].reset_index(drop=True)
        alerts = _alerts(spark, config, run, dataset, content)
        content.hotspots, content.alerts = hotspots, alerts
        content.classifiers = _classifiers(spark, config, run, dataset, content, folder)
        ids = [int(h) for h in hotspots.get("hotspot_id", [])]
        dates = [r.date for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]

        pixels = analysis_pixels(spark, config, dataset)
        n_pixels = pixels.count()
        members = rows_written(spark, config, "hotspot_pixels", dataset, run)
        if members is not None:
            sample = map_sample(pixels, members, ids, config.hotspots.map_max_points, n_pixels)
            content.map_png = plot_hotspot_map(sample, candidates, folder / "map.png", f"{dataset}: hotspots",
                                               alerts=alerts if len(alerts) else None).read_bytes()
            forecasts = _forecasts(spark, config, run, dataset, members, ids)
            content.series_png = plot_hotspot_series(dates, series_frame(hotspots, dates), folder / "series.png",
                                                     f"{dataset}: mean series", forecasts=forecasts).read_bytes()
            if forecasts is None:
                content.missing["series"] = "the forecast stage did not run in this run"
        else:
            content.missing["map"] = content.missing["series"] = "the hotspots stage did not run in this run"

        kinds = alerts["kind"].value_counts().to_dict() if len(alerts) else {}
        content.headline = {
            "pixels analysed": f"{n_pixels:,}",
            "hotspots retained": f"{len(hotspots)}",
            "alerts": ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none",
            "epochs": f"{len(dates)} ({dates[0]} to {dates[-1]})" if dates else "none"}
        page = render_report(content)
        files = lake_files(config, spark)
        uri = files.write_text(page, "outputs", dataset, run.run_id, REPORT_FILE)
    location = str(files.local_path("outputs", dataset, run.run_id, REPORT_FILE)) if files.is_local else uri
    log.info("run report of %s: %s (%d hotspots, %d alerts)", dataset, location, len(hotspots), len(alerts))
    return ReportResult(dataset, uri, location, len(alerts), len(hotspots))
