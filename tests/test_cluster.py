"""The temporal clustering stage on Spark: exact assignment of every pixel, tables, model reuse."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from insarlake.lake import Run, read_table
from insarlake.temporal.stage import model_dir, run_cluster
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
    clusters = read_table(spark, cluster_config, "clusters", ["sim"]).toPandas().set_index("pixel_id")
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
    clusters = read_table(spark, cluster_config, "clusters", ["sim"]).join(
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
    cov = read_table(spark, cluster_config, "covariogram", ["sim"]).toPandas()
    assert len(cov) > 5 and (cov.pairs > 0).all() and (cov.run_id == run.run_id).all()
    assert result.correlation_length_km > 0 and run.metrics["correlation_length_km"] == result.correlation_length_km
    assert set(result.model.silhouette_by_k) == {2, 3} and set(result.model.inertia_by_k) == {2, 3}
    saved = TskmModel.load(model_dir(cluster_config, "sim") / "latest.json")
    assert np.array_equal(saved.centroids, result.model.centroids) and saved.k == result.model.k
    assert (model_dir(cluster_config, "sim") / f"{run.run_id}.json").is_file()
    for picture in ("centroids.png", "covariogram.png", "clusters.png"):
        assert (Path(result.outputs) / picture).read_bytes()[:4] == b"\x89PNG"


def test_saved_model_is_reused_and_refitted_when_settings_change(spark, cluster_config, clustered):
    _, first = clustered
    again = run_cluster(spark, cluster_config, "sim", Run("cluster", cluster_config))
    assert again.reused_model and np.array_equal(again.model.centroids, first.model.centroids)
    changed = replace(cluster_config, temporal=replace(cluster_config.temporal, k=2, k_min=2, k_max=2))
    refit = run_cluster(spark, changed, "sim", Run("cluster", changed))
    assert not refit.reused_model and refit.model.k == 2
