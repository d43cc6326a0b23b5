"""The temporal clustering stage on Spark: exact assignment of every pixel, tables, model reuse."""
from __future__ import annotations

from insarlake.config import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from insarlake.lake import Run, read_table, run_results
from insarlake.cluster.stage import run_cluster, tskm_store
from insarlake.temporal.tskm import TskmModel


@pytest.fixture(scope="module")
def cluster_config(config):
    return replace(config,
                   temporal=replace(config.temporal, sample_size=60, silhouette_size=60, k=None, k_min=2, k_max=3,
                                    max_iter=2, max_iter_barycenter=2, write_distance=True),
                   covariogram=replace(config.covariogram, pairs=50_000),
                   spatial=replace(config.spatial, eps_m=None, eps_correlation_factor=0.5, min_samples=10,
                                   per_label={0: {"eps_m": 300.0, "min_samples": 15}}))


@pytest.fixture(scope="module")
def clustered(spark, cluster_config, sim_scene):
    run = Run("cluster", cluster_config)
    return run, run_cluster(spark, cluster_config, "sim", run)


def test_spark_assignment_equals_the_kernel_row_for_row(spark, cluster_config, clustered):
    run, result = clustered
    clusters = run_results(spark, cluster_config, "clusters", "sim", run.run_id).toPandas().set_index("pixel_id")
    pixels = read_table(spark, cluster_config, "pixels", ["sim"]).select("pixel_id", "disp").toPandas()
    labels, distance = result.model.assign(np.stack(pixels.disp.to_numpy()).astype(np.float64), return_distance=True)
    got = clusters.loc[pixels.pixel_id]
    assert len(clusters) == len(pixels) == result.pixels
    np.testing.assert_array_equal(got.tskm_label.to_numpy(), labels)
    np.testing.assert_allclose(got.tskm_distance.to_numpy(), distance, rtol=1e-12)
    assert set(np.unique(labels)) <= set(range(result.model.k)) and result.model.k in (2, 3)
    assert (got.run_id == run.run_id).all()
    assert got.cluster_id.notna().all() and got.is_core.notna().all()


def test_dbscan_per_tskm_label_equals_sklearn_with_the_labels_parameters(spark, cluster_config, clustered):
    from sklearn.cluster import DBSCAN

    from insarlake.geo import EARTH_RADIUS_M

    run, result = clustered
    clusters = run_results(spark, cluster_config, "clusters", "sim", run.run_id).join(
        read_table(spark, cluster_config, "pixels", ["sim"]).select("pixel_id", "lon", "lat"), "pixel_id").toPandas()
    assert run.metrics["dbscan_eps_m_label_0"] == 300.0 and run.metrics["dbscan_min_samples_label_0"] == 15
    assert run.metrics["dbscan_eps_m_label_1"] == pytest.approx(500.0 * result.correlation_length_km)
    assert run.metrics["dbscan_min_samples_label_1"] == 10
    seen_ids = set()
    for label, part in clusters.groupby("tskm_label"):
        eps_m = run.metrics[f"dbscan_eps_m_label_{label}"]
        ref = DBSCAN(eps=eps_m / EARTH_RADIUS_M, min_samples=int(run.metrics[f"dbscan_min_samples_label_{label}"]),
                     metric="haversine").fit(np.radians(part[["lat", "lon"]].to_numpy()))
        core = np.zeros(len(part), bool)
        core[ref.core_sample_indices_] = True
        np.testing.assert_array_equal(part.is_core.to_numpy(), core)
        np.testing.assert_array_equal(part.cluster_id.to_numpy() == -1, ref.labels_ == -1)
        ours = {frozenset(g.pixel_id) for _, g in part[core].groupby("cluster_id")}
        theirs = {frozenset(part.pixel_id.to_numpy()[core][ref.labels_[core] == k]) for k in set(ref.labels_[core])}
        assert ours == theirs
        ids = set(part.cluster_id[part.cluster_id >= 0])
        assert not ids & seen_ids     # cluster ids are global, never shared by two TSKM labels
        seen_ids |= ids
    assert seen_ids == set(range(len(seen_ids))) and len(seen_ids) == run.metrics["dbscan_clusters"]


def test_outputs_model_and_covariogram(spark, cluster_config, clustered):
    run, result = clustered
    cov = run_results(spark, cluster_config, "covariogram", "sim", run.run_id).toPandas()
    assert len(cov) > 5 and (cov.pairs > 0).all() and (cov.run_id == run.run_id).all()
    assert result.correlation_length_km > 0 and run.metrics["correlation_length_km"] == result.correlation_length_km
    assert set(result.model.silhouette_by_k) == {2, 3} and set(result.model.inertia_by_k) == {2, 3}
    store = tskm_store(cluster_config, "sim")
    assert store.latest() == run.run_id
    saved = TskmModel.load(Path(store.uri(run.run_id)) / "model.json")
    assert np.array_equal(saved.centroids, result.model.centroids) and saved.k == result.model.k
    for picture in ("centroids.png", "covariogram.png", "clusters.png"):
        assert (Path(result.outputs) / picture).read_bytes()[:4] == b"\x89PNG"


def test_saved_model_is_reused_and_refitted_when_settings_change(spark, cluster_config, clustered):
    _, first = clustered
    again = run_cluster(spark, cluster_config, "sim", Run("cluster", cluster_config))
    assert again.reused_model and np.array_equal(again.model.centroids, first.model.centroids)
    changed = replace(cluster_config, temporal=replace(cluster_config.temporal, k=2, k_min=2, k_max=2))
    refit_run = Run("cluster", changed)
    refit = run_cluster(spark, changed, "sim", refit_run)
    assert not refit.reused_model and refit.model.k == 2
    # every run's rows are kept, one row per pixel each; a reader takes the run written last
    runs = read_table(spark, cluster_config, "clusters", ["sim"]).groupBy("run_id").count().collect()
    assert len(runs) >= 3 and {r["count"] for r in runs} == {first.pixels}
    latest = run_results(spark, cluster_config, "clusters", "sim").toPandas()
    assert set(latest.run_id) == {refit_run.run_id} and set(latest.tskm_label) <= {0, 1}


def _reference_sample(frame: pd.DataFrame, size: int) -> list[str]:
    """The stratified sample by its definition, over every row in pandas: rank by (hash, pixel_id)
    within each tile, keep ranks <= ceil(n_tile * size / total), every tile's first, then the rest
    by hash, ``size`` in all."""
    quota = np.ceil(frame.groupby("tile_id")["pixel_id"].transform("size") * size / len(frame))
    ranked = frame.sort_values(["h", "pixel_id"]).assign(
        rank=lambda f: f.groupby("tile_id").cumcount() + 1)
    kept = ranked[ranked["rank"] <= quota.loc[ranked.index]].assign(extra=lambda f: f["rank"] > 1)
    return kept.sort_values(["extra", "h", "pixel_id"]).head(size)["pixel_id"].tolist()


@pytest.mark.parametrize("size", [40, 300])
@pytest.mark.parametrize("starve", [False, True])
def test_stratified_sample_equals_the_full_ranking(spark, monkeypatch, size, starve):
    """Tiles of 1..90 pixels (40 tiles, 1,820 pixels): the hash pre-filter gives exactly the sample
    that ranking every row gives (the hashes come from Spark over all rows, the ranking from
    pandas). ``starve`` makes the filter keep about half of each quota, so every tile goes
    through the second pass that takes a short tile whole."""
    from pyspark.sql import functions as F

    from insarlake.cluster import stage

    if starve:
        monkeypatch.setattr(stage, "_keep_share", lambda quota, n: quota / n * 0.5)
    rows = [(f"t{t:02d}", f"p{t:02d}_{i:03d}", [float(t), float(i)]) for t in range(40) for i in range(1 + t * 2 + t % 3)]
    pixels = spark.createDataFrame(rows, "tile_id string, pixel_id string, disp array<float>")
    frame = pixels.select("tile_id", "pixel_id", F.xxhash64(F.lit(7), "pixel_id").alias("h")).toPandas()
    sample = stage.stratified_sample(pixels, size, seed=7)
    expected = _reference_sample(frame, size)
    assert len(sample) == size == len(expected)
    assert sorted(sample["pixel_id"]) == sorted(expected)
    # in hash order, each series with its pixel
    by_id = frame.set_index("pixel_id")
    assert by_id.loc[sample["pixel_id"], "h"].is_monotonic_increasing
    assert all(list(d) == [float(p[1:3]), float(p[4:])] for p, d in zip(sample["pixel_id"], sample["disp"]))
    per_tile = by_id.loc[sample["pixel_id"], "tile_id"].value_counts()
    n_tile = frame["tile_id"].value_counts()
    assert len(per_tile) == 40                     # every tile contributes (40 tiles <= size)
    assert (per_tile <= np.ceil(n_tile[per_tile.index] * size / len(frame))).all()
    assert stage.stratified_sample(pixels, size, seed=8)["pixel_id"].tolist() != sample["pixel_id"].tolist()
