"""The forecast stage on Spark: graph, subgraphs, training (1 vs 2 processes), `forecasts` and
`forecast_metrics`, checked against numpy computed straight from `pixels`."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pytest

from insarlake.errors import InputError
from insarlake.forecast.graph import knn_edges
from insarlake.forecast.stage import prepare, run_forecast, train
from insarlake.forecast.windows import WindowSplit
from insarlake.hotspots.geometry import to_local_m
from insarlake.lake import Run, files_dir, read_table
from insarlake.temporal.softdtw import fill_missing


@pytest.fixture(scope="module")
def forecast_config(config):
    return replace(config, forecast=replace(config.forecast, models=["dapf", "gru"], max_epochs=2, patience=2,
                                            nodes_per_subgraph=600, samples=16, input_epochs=12, horizon_epochs=4,
                                            threads_per_process=1))


@pytest.fixture(scope="module")
def forecasted(spark, forecast_config, sim_scene):
    run = Run("forecast", forecast_config)
    return run, run_forecast(spark, forecast_config, "sim", run, evaluate=True)


@pytest.fixture(scope="module")
def record(spark, forecast_config, sim_scene):
    """(pixel_id (n,), gap-free series (n, T) mm, dates) straight from the lake, by pixel_id."""
    pixels = read_table(spark, forecast_config, "pixels", ["sim"]).select("pixel_id", "disp").toPandas()
    pixels = pixels.sort_values("pixel_id")
    dates = [r.date for r in read_table(spark, forecast_config, "epochs", ["sim"]).orderBy("idx").collect()]
    return pixels.pixel_id.to_numpy(), fill_missing(np.stack(pixels.disp.to_numpy())), dates


def test_forecasts_cover_every_pixel_once_per_future_epoch_with_ordered_quantiles(spark, forecast_config, forecasted, record):
    run, result = forecasted
    ids, _, dates = record
    rows = read_table(spark, forecast_config, "forecasts", ["sim"]).toPandas()
    H = forecast_config.forecast.horizon_epochs
    assert len(rows) == len(ids) * H == result.forecasts
    assert set(rows.pixel_id) == set(ids)
    assert not rows.duplicated(["pixel_id", "date"]).any()
    assert (rows.p05 <= rows.p50 + 1e-4).all() and (rows.p50 <= rows.p95 + 1e-4).all()
    assert (rows.p95 - rows.p05 > 0).all()
    future = sorted(rows.date.unique())
    cadence = np.median(np.diff(dates[-11:])).days
    assert future[0] > dates[-1] and len(future) == H
    assert all(abs((b - a).days - cadence) <= 1 for a, b in zip([dates[-1], *future[:-1]], future))
    assert np.isfinite(rows[["mean", "p05", "p50", "p95"]].to_numpy()).all()


def test_classical_metrics_from_spark_equal_numpy_on_the_lake_series(spark, forecast_config, forecasted, record):
    _, series, dates = record
    cfg = forecast_config.forecast
    split = WindowSplit.of(len(dates), cfg.input_epochs, cfg.horizon_epochs, cfg.train_share, cfg.validation_share)
    L, H = split.input_len, split.horizon
    err_p, err_ha, truth = [], [], []
    for s in split.starts("test"):
        y = series[:, s + L:s + L + H]
        window = series[:, s:s + L]
        err_p.append(window[:, -1:] - y)
        err_ha.append(window.mean(axis=1, keepdims=True) - y)
        truth.append(y)
    metrics = read_table(spark, forecast_config, "forecast_metrics", ["sim"]).toPandas().set_index("model")
    assert set(metrics.index) == {"dapf", "gru", "historical_average", "persistence", "linear_trend"}
    for name, err in (("persistence", err_p), ("historical_average", err_ha)):
        e = np.concatenate(err)
        y = np.concatenate(truth)
        assert metrics.loc[name, "rmse"] == pytest.approx(np.sqrt(np.mean(e ** 2)), rel=1e-6)
        assert metrics.loc[name, "mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-6)
        assert metrics.loc[name, "acc"] == pytest.approx(1 - np.linalg.norm(e) / np.linalg.norm(y), rel=1e-6)
        assert metrics.loc[name, "values"] == e.size
    assert 0 <= metrics.loc["dapf", "coverage_90"] <= 1
    assert np.isnan(metrics.loc["persistence", "coverage_90"])
    assert metrics.loc["dapf", "train_seconds"] > 0


def test_graph_edges_equal_a_whole_scene_knn(spark, forecast_config, sim_scene, tmp_path):
    cfg = forecast_config.forecast
    prepared = prepare(spark, forecast_config, "sim", tmp_path / "prep")
    pixels = read_table(spark, forecast_config, "pixels", ["sim"]).select("pixel_id", "lon", "lat").toPandas()
    pixels = pixels.set_index("pixel_id").loc[prepared.pixel_ids]
    x, y = to_local_m(pixels.lon.to_numpy(), pixels.lat.to_numpy(), pixels.lon.mean(), pixels.lat.mean())
    src, dst, _ = knn_edges(x, y, cfg.graph_k, cfg.graph_max_distance_m)
    want = set(zip(src, dst)) | set(zip(dst, src))
    got = set(zip(*prepared.edge_index))
    # per-cell local frames differ from one scene-wide frame by < 1e-6 relative: ties at the k-th
    # neighbour or at the distance limit may flip, nothing else
    assert len(got ^ want) <= 1e-3 * len(want)
    assert np.bincount(prepared.parts).min() > 0 and len(prepared.parts) == len(prepared.pixel_ids)


def test_two_processes_train_as_one(spark, forecast_config, sim_scene, tmp_path):
    cfg = replace(forecast_config.forecast, max_epochs=2, batch_parts=4)
    prepared = prepare(spark, forecast_config, "sim", tmp_path / "prep")
    one = train(prepared, cfg, "gru")
    two = train(prepared, replace(cfg, num_processes=2), "gru")
    assert two["world_size"] == 2 and one["world_size"] == 1
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_mse"] == pytest.approx(a["val_mse"], rel=1e-3)


def test_saved_model_is_reused(spark, forecast_config, forecasted):
    run = Run("forecast", forecast_config)
    run_forecast(spark, forecast_config, "sim", run, evaluate=False)
    versions = [p for p in files_dir(forecast_config, "models", "forecast", "sim", "dapf").iterdir() if p.is_dir()]
    assert len(versions) == 1                    # nothing new trained
    assert run.seconds["forecast.train.dapf"] < 5


def test_a_record_too_short_for_the_windows_is_refused(spark, forecast_config, sim_scene, tmp_path):
    cfg = replace(forecast_config, forecast=replace(forecast_config.forecast, input_epochs=200))
    with pytest.raises(InputError, match="forecast.input_epochs .* leave no train window"):
        prepare(spark, cfg, "sim", tmp_path / "prep")
