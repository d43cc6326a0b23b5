"""Monitoring runs on a simulated scene (issue 15), shared by tests/test_alerts_spark.py and
benchmarks/alerts.py: the scene simulated once over its whole period (its sources changing as
simulate.changes says), cut in time into two deliveries (the first up to a date, the second
after it: new acquisitions), and a monitoring run (ingest, cluster, hotspots, alerts) on each:
the first a release, the second an append."""
from __future__ import annotations

import glob
from pathlib import Path

import pandas as pd

# the simulated CSV's velocity columns: left empty in a delivery, so that ingest fits them from
# the delivery's own dates (the scene's describe its whole period)
_VELOCITY = ("mean_velocity", "mean_velocity_std")


def simulate_scene(spark, config, dataset: str, folder: Path) -> Path:
    """The scene of ``config.simulate`` simulated into ``folder``/whole (CSV) and its `truth`."""
    from insarlake.lake import Run
    from insarlake.simulate.stage import run_simulate

    whole = folder / "whole"
    run_simulate(spark, config, dataset, str(whole), Run("simulate", config))
    return whole


def cut_deliveries(whole: Path, folder: Path, *cuts: str) -> tuple[Path, ...]:
    """The simulated CSV cut in time at ``cuts`` (YYYYMMDD, increasing): first/ (the epochs up to the
    first cut), second/ (those after it, up to the next cut), ... one folder more than cuts."""
    frame = pd.concat([pd.read_csv(p, dtype={"pid": str}) for p in sorted(glob.glob(str(whole / "part-*.csv")))],
                      ignore_index=True)
    epochs = [c for c in frame.columns if c[:1].isdigit()]
    static = [c for c in frame.columns if c not in epochs]
    bounds = ["", *cuts, "99999999"]
    out = []
    for i, name in enumerate(("first", "second", "third", "fourth", "fifth")[:len(cuts) + 1]):
        kept = [e for e in epochs if bounds[i] < e <= bounds[i + 1]]
        part = frame[static + kept].copy()
        part.loc[:, list(_VELOCITY)] = float("nan")
        (folder / name).mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / name / f"{name}.csv", index=False)
        out.append(folder / name)
    return tuple(out)


def monitoring_run(spark, config, dataset: str, source: Path, mode: str, full: bool = False):
    """One recorded monitoring run on ``source``: ingest (``mode``), cluster, hotspots, alerts; with
    ``full``, every analysis stage of the pipeline instead (also classify, forecast and the run's
    report); returns (run, the alerts result)."""
    from insarlake.alerts.stage import run_alerts
    from insarlake.cluster.stage import run_cluster
    from insarlake.hotspots.stage import run_hotspots
    from insarlake.ingest.stage import run_ingest
    from insarlake.jobs.pipeline import analyse
    from insarlake.lake import recorded_run

    with recorded_run(spark, config, "pipeline", [dataset]) as run:
        run_ingest(spark, config, str(source), dataset, run, mode=mode)
        if full:
            result = analyse(spark, config, dataset, run).alerts
        else:
            run_cluster(spark, config, dataset, run)
            run_hotspots(spark, config, dataset, run)
            result = run_alerts(spark, config, dataset, run)
    return run, result


def tracks_with_source(spark, config, dataset: str, run, truth: pd.DataFrame) -> pd.DataFrame:
    """The `hotspot_tracks` rows of ``run`` with ``source``: the truth source most of each
    hotspot's pixels belong to (NaN for a track without a hotspot now)."""
    from insarlake.lake import run_results

    rows = run_results(spark, config, "hotspot_tracks", dataset, run_id=run.run_id).toPandas()
    members = (run_results(spark, config, "hotspot_pixels", dataset, run_id=rows.hotspots_run.iloc[0]).toPandas()
               .merge(truth, on="pixel_id"))
    source = members.groupby("hotspot_id").source_id.agg(lambda s: s.value_counts().idxmax())
    return rows.assign(source=rows.hotspot_id.map(source))
