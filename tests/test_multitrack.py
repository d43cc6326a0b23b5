"""Many bursts and tracks (issue 19): the real EGMS burst with a known ground motion added, a
simulated adjacent burst of the same track that overlaps it, and a simulated ascending track over
the same ground. Ingest splits the tracks, flags the overlap twins, the stages run per track,
and the sites join the two tracks' hotspots and recover the known vertical / east motion."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
from insarlake.config import replace

import numpy as np
import pytest
import shapely
from pyspark.sql import functions as F

from conftest import PROJECT, fast_clustering
from mosaic import ASC_LOS, DESC, EAST_MM_YR, STRIP_DEG, UP_MM_YR, write_mosaic
from insarlake.geo import haversine_m
from insarlake.hotspots.stage import run_hotspots
from insarlake.ingest.stage import run_ingest
from insarlake.lake import Run, analysis_pixels, read_table, run_results
from insarlake.sites.stage import run_sites
from insarlake.cluster.stage import run_cluster

@pytest.fixture(scope="module")
def mosaic(tmp_path_factory, egms_csv_bytes):
    return write_mosaic(tmp_path_factory.mktemp("mosaic"), egms_csv_bytes)


@pytest.fixture(scope="module")
def half_mosaic(tmp_path_factory, egms_csv_bytes):
    """The mosaic on half the real burst's points: the two pipeline runs cost half as much."""
    return write_mosaic(tmp_path_factory.mktemp("half_mosaic"), egms_csv_bytes, burst_share=0.5)


@pytest.fixture(scope="module")
def mosaic_config(config):
    # fixed DBSCAN scales: the simulated ascending track has no atmosphere to measure one from
    return replace(fast_clustering(config),
                   spatial=replace(config.spatial, eps_m=300.0),
                   hotspots=replace(config.hotspots, labels="clusters", eps_m=150.0, max_standard_distance_km=2.0))


@pytest.fixture(scope="module")
def ingested(spark, mosaic_config, mosaic):
    run = Run("ingest", mosaic_config)
    return run_ingest(spark, mosaic_config, str(mosaic["folder"]), "mosaic", run), run


def test_each_track_is_its_own_dataset_with_its_own_dates(spark, mosaic_config, mosaic, ingested):
    result, run = ingested
    assert result.datasets == ("mosaic-t022", "mosaic-t117")
    n_input = sum(len(mosaic[k]) for k in ("desc", "adjacent", "asc"))
    assert result.input_rows == n_input == result.pixels + result.quarantined and result.quarantined == 0
    geometries = read_table(spark, mosaic_config, "geometries", ["mosaic"]).orderBy("geometry_dataset").toPandas()
    assert geometries.geometry_dataset.tolist() == ["mosaic-t022", "mosaic-t117"]
    assert geometries.track.tolist() == [22, 117]
    assert geometries.pass_direction.tolist() == ["descending", "ascending"]
    assert [list(b) for b in geometries.bursts] == [["0845", "0846"], ["0301"]]
    assert geometries.n_pixels.tolist() == [len(mosaic["desc"]) + len(mosaic["adjacent"]), len(mosaic["asc"])]
    assert geometries.n_duplicates.tolist() == [len(mosaic["twins"]), 0]
    epochs = read_table(spark, mosaic_config, "epochs", list(result.datasets)).toPandas()
    by_track = epochs.groupby("dataset").date.apply(set)
    assert len(by_track["mosaic-t022"]) == len(by_track["mosaic-t117"]) == 210
    assert not by_track["mosaic-t022"] & by_track["mosaic-t117"]
    pixels = read_table(spark, mosaic_config, "pixels", list(result.datasets)).select(
        "dataset", "track", "burst", "swath", "release", "release_version", "pass_direction").toPandas()
    assert set(map(tuple, pixels.drop_duplicates().to_numpy().tolist())) == {
        ("mosaic-t022", 22, "0845", "IW2", "2020-2024", 1, "descending"),
        ("mosaic-t022", 22, "0846", "IW2", "2020-2024", 1, "descending"),
        ("mosaic-t117", 117, "0301", "IW1", "2020-2024", 1, "ascending")}


def test_overlap_twins_are_flagged_and_point_at_a_kept_point(spark, mosaic_config, mosaic, ingested):
    pixels = (read_table(spark, mosaic_config, "pixels", ["mosaic-t022"])
              .select("pixel_id", "burst", "lon", "lat", "coherence", "duplicate_of").toPandas().set_index("pixel_id"))
    flagged = pixels[pixels.duplicate_of.notna()]
    # one of each pair of twins: as many as the good re-measurements, all in the overlap strip; the
    # re-measurements with another series (controls) and the new ground are never paired
    assert len(flagged) == len(mosaic["twins"])
    strip = set(mosaic["desc"].pid[mosaic["desc"].latitude > mosaic["desc"].latitude.max() - STRIP_DEG])
    assert set(flagged.index) <= mosaic["twins"] | strip
    assert len(set(flagged.index) & mosaic["twins"]) > 0.9 * len(mosaic["twins"])
    assert not set(flagged.index) & mosaic["control"]
    targets = pixels.loc[flagged.duplicate_of.to_numpy()]
    assert targets.duplicate_of.isna().all() and (targets.burst.to_numpy() != flagged.burst.to_numpy()).all()
    assert (targets.coherence.to_numpy() >= flagged.coherence.to_numpy()).all()
    distance = haversine_m(flagged.lon, flagged.lat, targets.lon.to_numpy(), targets.lat.to_numpy())
    assert distance.max() <= mosaic_config.ingest.overlap_distance_m
    # most re-measurements point at the very point they re-measure (B<pid> -> <pid>)
    copies = flagged[flagged.index.str.startswith("B")]
    assert np.mean(copies.duplicate_of.to_numpy() == copies.index.str[1:]) > 0.95
    # the analysis stages see each point once
    assert analysis_pixels(spark, mosaic_config, "mosaic-t022").count() == len(pixels) - len(flagged)


def test_one_pool_of_two_tracks_loses_every_pixel_to_the_epoch_union(spark, mosaic_config, mosaic):
    """What a mixed-track dataset gave before: the union of both tracks' dates leaves every series
    half empty, and every pixel goes to quarantine."""
    pooled = replace(mosaic_config, ingest=replace(mosaic_config.ingest, split_tracks=False))
    result = run_ingest(spark, pooled, str(mosaic["folder"]), "mosaic_pool", Run("ingest", pooled))
    assert result.datasets == ("mosaic_pool",) and result.epochs == 420
    assert result.pixels == 0 and result.quarantined == result.input_rows
    reasons = read_table(spark, pooled, "quarantine", ["mosaic_pool"]).select("reason").distinct().collect()
    assert all("210 of 420 epochs missing" in r.reason for r in reasons)


@pytest.fixture(scope="module")
def sites(spark, mosaic_config, ingested):
    result, _ = ingested
    for dataset in result.datasets:
        run_cluster(spark, mosaic_config, dataset, Run("cluster", mosaic_config))
        run_hotspots(spark, mosaic_config, dataset, Run("hotspots", mosaic_config))
    return run_sites(spark, mosaic_config, "mosaic", Run("sites", mosaic_config))


def test_no_hotspot_mixes_tracks(spark, mosaic_config, ingested, sites):
    result, _ = ingested
    members = (read_table(spark, mosaic_config, "hotspot_pixels", list(result.datasets)).alias("h")
               .join(read_table(spark, mosaic_config, "pixels").alias("p"),
                     (F.col("h.dataset") == F.col("p.dataset")) & (F.col("h.pixel_id") == F.col("p.pixel_id")))
               .groupBy("h.dataset", "h.hotspot_id").agg(F.collect_set("p.track").alias("tracks"),
                                                         F.count("p.duplicate_of").alias("duplicates"))
               .toPandas())
    assert len(members) and all(len(t) == 1 for t in members.tracks) and (members.duplicates == 0).all()
    assert {(ds, t[0]) for ds, t in zip(members.dataset, members.tracks)} <= {("mosaic-t022", 22), ("mosaic-t117", 117)}


def test_sites_join_the_two_tracks_and_recover_the_known_motion(spark, mosaic_config, mosaic, sites):
    assert sites.geometries == 2 and sites.multi_geometry_sites >= 1 and sites.decomposed >= 1
    table = run_results(spark, mosaic_config, "sites", "mosaic").toPandas()
    members = run_results(spark, mosaic_config, "site_hotspots", "mosaic").toPandas()
    assert len(table) == sites.sites and len(members) == sites.hotspots
    assert members.groupby("site_id").size().reindex(table.site_id).tolist() == table.n_hotspots.tolist()
    disk = shapely.Point(*mosaic["center"])
    hit = table[[shapely.from_wkt(g).contains(disk) for g in table.geometry]]
    assert len(hit) == 1, hit
    site = hit.iloc[0]
    assert list(site.geometry_datasets) == ["mosaic-t022", "mosaic-t117"]
    assert list(site.pass_directions) == ["ascending", "descending"] and list(site.tracks) == [22, 117]
    assert site.decomposition == "ascending+descending"
    # Tolerance: 3 sigma of the estimate, plus what the real burst's own motion inside the disk
    # (its mean LOS velocity before the added motion) can shift it: through A^-1, <= 1.1 x that.
    background = 1.1 * abs(mosaic["desc_background_mm_yr"])
    assert abs(site.east_mm_yr - EAST_MM_YR) <= 3 * site.east_std_mm_yr + background, site
    assert abs(site.up_mm_yr - UP_MM_YR) <= 3 * site.up_std_mm_yr + background, site
    evidence = members[members.site_id == site.site_id].set_index("geometry_dataset")
    assert evidence.loc["mosaic-t117", "velocity_los_mm_yr"] == pytest.approx(
        ASC_LOS[0] * EAST_MM_YR + ASC_LOS[2] * UP_MM_YR, abs=1.0)


@pytest.mark.slow
@pytest.mark.long      # the whole pipeline on both tracks
def test_pipeline_runs_each_track_then_the_sites(spark, half_mosaic, tmp_path):
    """jobs/pipeline.py on the mosaic (half the real burst's points): one run ingests, one per
    track runs the stages, one joins the sites; every stage's table has each track's analysis
    pixels once."""
    mosaic = half_mosaic
    lake = tmp_path / "lake"
    settings = ["temporal.sample_size=40", "temporal.silhouette_size=40", "temporal.k=3", "temporal.max_iter=2",
                "temporal.max_iter_barycenter=2", "covariogram.pairs=50000", "spatial.eps_m=300",
                "classify.models=[lstm]", "classify.max_epochs=2", "hotspots.eps_m=150",
                "hotspots.max_standard_distance_km=2.0", "forecast.models=[dapf]", "forecast.max_epochs=1",
                "forecast.samples=8", "forecast.evaluate=false", "spark.master=local[2]",
                "spark.shuffle_partitions=4", "spark.conf={spark.ui.enabled: 'false'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    done = subprocess.run([str(PROJECT / "spark-submit.sh"), "jobs/pipeline.py", "--config",
                           str(PROJECT / "conf" / "local.yaml"), "--lake", str(lake), "--dataset", "mosaic",
                           "--input", str(mosaic["folder"]), *[a for s in settings for a in ("--set", s)]],
                          cwd=PROJECT, env=env, text=True, capture_output=True, timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.count("insarlake pipeline run") == 3 and "insarlake sites run" in done.stdout

    def table(name):
        return spark.read.format("delta").load(str(lake / name))

    runs = {(r.job, tuple(r.datasets)): r.status for r in table("runs").collect()}
    assert runs == {("pipeline", ("mosaic", "mosaic-t022", "mosaic-t117")): "succeeded",
                    ("pipeline", ("mosaic-t022",)): "succeeded", ("pipeline", ("mosaic-t117",)): "succeeded",
                    ("sites", ("mosaic",)): "succeeded"}
    analysed = (table("pixels").where(F.col("duplicate_of").isNull()).groupBy("dataset").count()
                .toPandas().set_index("dataset")["count"].to_dict())
    assert analysed == {"mosaic-t022": len(mosaic["desc"]) + len(mosaic["adjacent"]) - len(mosaic["twins"]),
                        "mosaic-t117": len(mosaic["asc"])}
    for name in ("clusters", "classes", "forecasts"):
        counts = (table(name).groupBy("dataset").agg(F.countDistinct("pixel_id").alias("n"))
                  .toPandas().set_index("dataset")["n"].to_dict())
        assert counts == analysed, name
    sites = table("sites").where("dataset = 'mosaic'").toPandas()
    assert len(sites) and (sites.n_hotspots > 1).any() and sites.up_mm_yr.notna().any()

    # An update of track 22's real burst (--mode append): its last two dates again and three new
    # acquisitions; the adjacent burst and track 117 are not in it.
    desc, update = mosaic["desc"], tmp_path / "update"
    epochs = [c for c in desc.columns if c[:1].isdigit()]
    last = dt.datetime.strptime(epochs[-1], "%Y%m%d").date()
    new_days = [last + dt.timedelta(days=6 * k) for k in (1, 2, 3)]
    delivery = desc[[c for c in desc.columns if c not in epochs] + epochs[-2:]].copy()
    for k, day in enumerate(new_days):
        delivery[day.strftime("%Y%m%d")] = desc[epochs[-1]] + 0.5 * (k + 1)
    update.mkdir()
    delivery.to_csv(update / DESC, index=False)
    before = {r.dataset: r.n for r in table("epochs").groupBy("dataset").agg(F.count("*").alias("n")).collect()}
    done = subprocess.run([str(PROJECT / "spark-submit.sh"), "jobs/pipeline.py", "--config",
                           str(PROJECT / "conf" / "local.yaml"), "--lake", str(lake), "--dataset", "mosaic",
                           "--input", str(update), "--mode", "append", *[a for s in settings for a in ("--set", s)]],
                          cwd=PROJECT, env=env, text=True, capture_output=True, timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    after = {r.dataset: r.n for r in table("epochs").groupBy("dataset").agg(F.count("*").alias("n")).collect()}
    assert after == {"mosaic-t022": before["mosaic-t022"] + 3, "mosaic-t117": before["mosaic-t117"]}
    t022 = table("pixels").where("dataset = 'mosaic-t022'").toPandas().set_index("pixel_id")
    measured = t022.index.isin(desc.pid)            # the adjacent burst's points are not in the update
    has_last = desc.set_index("pid")[epochs[-1]].notna()
    new_last = t022.index[measured][has_last.reindex(t022.index[measured]).to_numpy()]
    assert len(new_last) > 0.9 * measured.sum() and (t022.loc[new_last, "last_date"] == new_days[-1]).all()
    assert (~measured).sum() > 0 and (t022.loc[~measured, "last_date"] <= last).all()
    analysed_now = int((t022.duplicate_of.isna()).sum())
    assert analysed_now == analysed["mosaic-t022"]
    for name in ("clusters", "classes", "forecasts"):
        n = table(name).where("dataset = 'mosaic-t022'").select("pixel_id").distinct().count()
        assert n == analysed_now, name
    runs_now = [(r.job, tuple(r.datasets), r.status) for r in table("runs").collect()]
    assert runs_now.count(("pipeline", ("mosaic", "mosaic-t022"), "succeeded")) == 1
    assert runs_now.count(("pipeline", ("mosaic-t022",), "succeeded")) == 2
    assert runs_now.count(("sites", ("mosaic",), "succeeded")) == 2
