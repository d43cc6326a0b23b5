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
                   covariogram=replace(config.covariogram, pairs=50_000))


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
    assert (got.run_id == run.run_id).all() and got.cluster_id.isna().all()


def test_outputs_model_and_covariogram(spark, cluster_config, clustered):
    run, result = clustered
    cov = read_table(spark, cluster_config, "covariogram", ["sim"]).toPandas()
    assert len(cov) > 5 and (cov.pairs > 0).all() and (cov.run_id == run.run_id).all()
    assert result.correlation_length_km > 0 and run.metrics["correlation_length_km"] == result.correlation_length_km
    assert set(result.model.silhouette_by_k) == {2, 3} and set(result.model.inertia_by_k) == {2, 3}
    saved = TskmModel.load(model_dir(cluster_config, "sim") / "latest.json")
    assert np.array_equal(saved.centroids, result.model.centroids) and saved.k == result.model.k
    assert (model_dir(cluster_config, "sim") / f"{run.run_id}.json").is_file()
    for picture in ("centroids.png", "covariogram.png"):
        assert (Path(result.outputs) / picture).read_bytes()[:4] == b"\x89PNG"


def test_saved_model_is_reused_and_refitted_when_settings_change(spark, cluster_config, clustered):
    _, first = clustered
    again = run_cluster(spark, cluster_config, "sim", Run("cluster", cluster_config))
    assert again.reused_model and np.array_equal(again.model.centroids, first.model.centroids)
    changed = replace(cluster_config, temporal=replace(cluster_config.temporal, k=2, k_min=2, k_max=2))
    refit = run_cluster(spark, changed, "sim", Run("cluster", changed))
    assert not refit.reused_model and refit.model.k == 2
