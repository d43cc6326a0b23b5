"""The forecast stage on Spark: graph, subgraphs, training (1 vs 2 processes), `forecasts` and
`forecast_metrics`, checked against numpy computed straight from `pixels`."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from insarlake.config import replace
from insarlake.errors import InputError
from insarlake.forecast.graph import knn_edges
from insarlake.forecast.stage import prepare, run_forecast, train
from insarlake.forecast.windows import Normalisation, WindowSplit
from insarlake.hotspots.geometry import to_local_m
from insarlake.files import LakeFiles
from insarlake.forecast.model import forecast_store
from insarlake.lake import Run, read_table, run_results
from insarlake.temporal.softdtw import fill_missing


@pytest.fixture(scope="module")
def forecast_config(config):
    # pixels_per_task: the 5,000-pixel scene in 4 partitions, more than the 2 cores
    return replace(config, forecast=replace(config.forecast, models=["dapf", "gru"], max_epochs=2, patience=2,
                                            nodes_per_subgraph=600, samples=16, pixels_per_task=1500, input_epochs=12, horizon_epochs=4,
                                            threads_per_process=1, monitoring_horizon_days=60))


@pytest.fixture(scope="module")
def hotspot_members(spark, forecast_config, sim_scene):
    """Pixel ids of a retained and of a rejected hotspot of dataset sim, written to the hotspots
    tables as the hotspots stage writes them (other columns null): the forecast metrics' hotspot
    subset must hold the retained one's pixels only."""
    from conftest import write_hotspots

    ids = sorted(read_table(spark, forecast_config, "pixels", ["sim"]).select("pixel_id").toPandas().pixel_id)
    retained, rejected = ids[:300], ids[300:500]
    write_hotspots(spark, "sim", Run("hotspots", forecast_config),
                   {1: {"n_pixels": len(retained), "retained": True}, 2: {"n_pixels": len(rejected), "retained": False}},
                   {1: retained, 2: rejected})
    return set(retained)


@pytest.fixture(scope="module")
def forecasted(spark, forecast_config, sim_scene, hotspot_members):
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
    rows = run_results(spark, forecast_config, "forecasts", "sim", run.run_id).toPandas()
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
    table = run_results(spark, forecast_config, "forecast_metrics", "sim").toPandas()
    metrics = table[(table.subset == "all") & table.horizon.isna() & (table.horizon_epochs == cfg.horizon_epochs)]
    metrics = metrics.set_index("model")
    assert set(metrics.index) == {"dapf", "gru", "historical_average", "persistence", "linear_trend", "harmonic_trend"}
    for name, err in (("persistence", err_p), ("historical_average", err_ha)):
        e = np.concatenate(err)
        y = np.concatenate(truth)
        assert metrics.loc[name, "rmse"] == pytest.approx(np.sqrt(np.mean(e ** 2)), rel=1e-6)
        assert metrics.loc[name, "mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-6)
        assert metrics.loc[name, "acc"] == pytest.approx(1 - np.linalg.norm(e) / np.linalg.norm(y), rel=1e-6)
        assert metrics.loc[name, "values"] == e.size
    assert 0 <= metrics.loc["dapf", "coverage_90"] <= 1
    from insarlake.forecast.model import ForecastModel
    dapf = forecast_store(forecast_config, "sim", "dapf").load_latest(ForecastModel.load)
    assert 0.1 < dapf.training["interval_scale"] < 10            # fitted on the validation windows
    gru = forecast_store(forecast_config, "sim", "gru").load_latest(ForecastModel.load)
    assert gru.training["interval_scale"] is None
    assert np.isnan(metrics.loc["persistence", "coverage_90"])
    assert metrics.loc["dapf", "train_seconds"] > 0


def _harmonic_reference(record: np.ndarray, t: np.ndarray, t_out: np.ndarray, window: int) -> np.ndarray:
    """Trend + annual sinusoid by the normal equations (not lstsq), level moved by the window's mean residual."""
    X = np.stack([np.ones_like(t), t, np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)], axis=1)
    coef = np.linalg.solve(X.T @ X, X.T @ record.T)
    Xo = np.stack([np.ones_like(t_out), t_out, np.sin(2 * np.pi * t_out), np.cos(2 * np.pi * t_out)], axis=1)
    return (Xo @ coef).T + (record[:, -window:] - (X[-window:] @ coef).T).mean(axis=1, keepdims=True)


def test_metrics_per_subset_and_horizon_equal_numpy_on_the_lake_series(spark, forecast_config, forecasted, record,
                                                                        hotspot_members):
    ids, series, dates = record
    cfg = forecast_config.forecast
    split = WindowSplit.of(len(dates), cfg.input_epochs, cfg.horizon_epochs, cfg.train_share, cfg.validation_share)
    L, H = split.input_len, split.horizon
    t = np.array([(d - dates[0]).days / 365.25 for d in dates])
    # the moving subset: |slope| of each pixel's line over the training epochs only (np.polyfit)
    slope = np.polyfit(t[:split.t1], series[:, :split.t1].T, 1)[0]
    subsets = {"all": np.ones(len(ids), bool), "moving": np.abs(slope) > cfg.moving_mm_yr,
               "hotspot": np.isin(ids, sorted(hotspot_members))}
    assert 0 < subsets["moving"].sum() < len(ids) and subsets["hotspot"].sum() == 300
    errors = {"persistence": [], "harmonic_trend": []}
    truth = []
    for s in split.starts("test"):
        y = series[:, s + L:s + L + H]
        errors["persistence"].append(series[:, s + L - 1:s + L] - y)
        errors["harmonic_trend"].append(_harmonic_reference(series[:, :s + L], t[:s + L], t[s + L:s + L + H], L) - y)
        truth.append(y)
    table = run_results(spark, forecast_config, "forecast_metrics", "sim").toPandas()
    table = table[table.horizon_epochs == H]
    assert set(table.subset) == set(subsets)
    for (model, subset), rows in table.groupby(["model", "subset"]):
        assert sorted(rows.horizon.dropna().astype(int)) == list(range(1, H + 1)) and rows.horizon.isna().sum() == 1
        overall, steps = rows[rows.horizon.isna()].iloc[0], rows.dropna(subset=["horizon"])
        assert overall["values"] == steps["values"].sum()
        # the steps' squared errors add up to the whole: rmse^2 weighted by the values (float64 sums)
        assert overall.rmse ** 2 == pytest.approx((steps.rmse ** 2 * steps["values"]).sum() / steps["values"].sum(),
                                                  rel=1e-9)
    for model, err in errors.items():
        e = np.stack(err)                                           # (windows, n, H)
        y = np.stack(truth)
        for subset, mask in subsets.items():
            got = table[(table.model == model) & (table.subset == subset)].set_index("horizon", drop=False)
            em = e[:, mask]
            overall = got[got.horizon.isna()].iloc[0]
            assert overall["values"] == em.size
            assert overall.rmse == pytest.approx(np.sqrt(np.mean(em ** 2)), rel=1e-6), (model, subset)
            assert overall.mae == pytest.approx(np.mean(np.abs(em)), rel=1e-6), (model, subset)
            for h in range(1, H + 1):
                row = got[got.horizon == h].iloc[0]
                assert row.rmse == pytest.approx(np.sqrt(np.mean(em[:, :, h - 1] ** 2)), rel=1e-6), (model, subset, h)
                assert row["values"] == em[:, :, h - 1].size
            assert np.isfinite(y[:, mask]).all()
    dapf = table[(table.model == "dapf") & table.horizon.isna()]
    assert ((dapf.coverage_90 >= 0) & (dapf.coverage_90 <= 1)).all() and len(dapf) == 3


def test_the_monitoring_horizon_is_scored_with_models_of_its_own(spark, forecast_config, forecasted, record):
    from insarlake.forecast.model import ForecastModel

    _, _, dates = record
    cfg = forecast_config.forecast
    cadence_days = np.median(np.diff(dates[-11:])).days
    steps = round(cfg.monitoring_horizon_days / cadence_days)
    assert steps == 10 != cfg.horizon_epochs
    table = run_results(spark, forecast_config, "forecast_metrics", "sim").toPandas()
    assert set(table.horizon_epochs) == {cfg.horizon_epochs, steps}
    long = table[table.horizon_epochs == steps]
    assert set(long.model) == set(table[table.horizon_epochs == cfg.horizon_epochs].model)
    assert sorted(long.horizon.dropna().astype(int).unique()) == list(range(1, steps + 1))
    # its models are saved apart; the product's DAPF keeps its horizon
    saved = forecast_store(forecast_config, "sim", f"dapf_h{steps}").load_latest(ForecastModel.load)
    assert saved.name == "dapf" and saved.split.horizon == steps
    assert forecast_store(forecast_config, "sim", "dapf").load_latest(ForecastModel.load).split.horizon == 4
    # a longer horizon is harder: persistence's error grows with the steps
    persistence = long[(long.model == "persistence") & (long.subset == "all")].dropna(subset=["horizon"])
    assert persistence.sort_values("horizon").rmse.iloc[-1] > persistence.sort_values("horizon").rmse.iloc[0]


def test_the_printed_table_shows_the_subsets_side_by_side(forecasted):
    from insarlake.forecast.stage import format_table

    _, result = forecasted
    blocks = format_table(result.metrics).split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["horizon 4 epochs:", "horizon 10 epochs:"]
    for block in blocks:
        lines = block.splitlines()[1:]
        header = lines[0].split()
        assert header[:2] == ["model", "rmse_all"]
        for subset in ("all", "moving", "hotspot"):
            assert {f"rmse_{subset}", f"mae_{subset}", f"cov90_{subset}", f"n_{subset}"} <= set(header)
        assert len(lines) == 1 + 6                                   # one row per model


@pytest.fixture(scope="module")
def prepared(spark, forecast_config, sim_scene, tmp_path_factory):
    return prepare(spark, forecast_config, "sim", LakeFiles(str(tmp_path_factory.mktemp("prep"))))


def test_subgraphs_cover_every_pixel_once_and_their_edges_equal_a_whole_scene_knn(spark, forecast_config, prepared):
    cfg = forecast_config.forecast
    rows = prepared.members.select("subgraph", "pixel_id", "slot", "core", "nbr").toPandas()
    core = rows[rows.core]
    assert not core.pixel_id.duplicated().any() and len(core) == prepared.pixels
    assert core.subgraph.nunique() == prepared.subgraphs > 1
    ids = {(g, s): p for g, s, p in zip(rows.subgraph, rows.slot, rows.pixel_id)}
    got = {(p, ids[(g, int(j))]) for g, p, nbr in zip(core.subgraph, core.pixel_id, core.nbr) for j in nbr}
    assert len(got) == prepared.edges
    pixels = read_table(spark, forecast_config, "pixels", ["sim"]).select("pixel_id", "lon", "lat").toPandas()
    x, y = to_local_m(pixels.lon.to_numpy(), pixels.lat.to_numpy(), pixels.lon.mean(), pixels.lat.mean())
    src, dst, _ = knn_edges(x, y, cfg.graph_k, cfg.graph_max_distance_m)
    pid = pixels.pixel_id.to_numpy()
    want = {(pid[a], pid[b]) for a, b in zip(src, dst)} | {(pid[b], pid[a]) for a, b in zip(src, dst)}
    # per-cell local frames differ from one scene-wide frame by < 1e-6 relative: ties at the k-th
    # neighbour or at the distance limit may flip, nothing else
    assert len(got ^ want) <= 1e-3 * len(want)
    for g, group in rows.groupby("subgraph"):             # slots 0..m-1, own pixels first
        assert sorted(group.slot) == list(range(len(group)))
        assert group.sort_values("slot").core.is_monotonic_decreasing


def test_training_sample_is_bounded_and_the_same_for_a_seed(spark, forecast_config, sim_scene, prepared, tmp_path):
    cfg = replace(forecast_config, forecast=replace(forecast_config.forecast, train_subgraphs=3))
    from insarlake.spark import session_conf

    a = prepare(spark, cfg, "sim", LakeFiles(str(tmp_path / "a")))
    with session_conf(spark, "spark.sql.files.maxPartitionBytes", "65536"):     # other partitions, sum orders
        b = prepare(spark, cfg, "sim", LakeFiles(str(tmp_path / "b")))
    try:
        assert a.norm == b.norm                # exact sums: the same normalisation to the last bit
        assert len(a.train_ids) == 3 and a.train_ids == b.train_ids and a.train_parts == b.train_parts
        assert set(a.train_ids) <= set(prepared.members.select("subgraph").distinct().toPandas().subgraph)
        # another seed, and a given normalisation (a reused model's): the coordinates are that one's
        given = Normalisation(2.0 * a.norm.scale_mm, tuple(m + 1.0 for m in a.norm.coord_mean),
                              tuple(2.0 * s for s in a.norm.coord_std))
        other = prepare(spark, replace(cfg, forecast=replace(cfg.forecast, seed=1)), "sim",
                        LakeFiles(str(tmp_path / "c")), given)
        assert other.train_ids != a.train_ids and other.norm == given
        mine, theirs = ({r.pixel_id: np.asarray(r.coords, np.float64)
                         for r in p.members.where("core").select("pixel_id", "coords").collect()} for p in (a, other))
        assert mine.keys() == theirs.keys()
        ids = sorted(mine)
        got, ours = np.stack([theirs[i] for i in ids]), np.stack([mine[i] for i in ids])
        want = (ours * a.norm.coord_std + np.subtract(a.norm.coord_mean, given.coord_mean)) / given.coord_std
        # each side rounded once to float32 (relative 2^-24), ours scaled by std_a / std_given = 0.5
        np.testing.assert_allclose(got, want, rtol=0, atol=2.0 ** -22 * (np.abs(ours).max() + np.abs(want).max()))
        other.release()
        from insarlake.forecast.train import read_parts
        for part, n in a.train_parts.items():
            coords, series, edges = read_parts(a.shards, [part])[part]
            coords_b, series_b, edges_b = read_parts(b.shards, [part])[part]
            assert coords.shape == (n, 3) and series.shape[0] == n
            assert np.array_equal(series, series_b) and np.array_equal(edges, edges_b)
            assert edges.size == 0 or edges.max() < n
        assert len(prepared.train_ids) == prepared.subgraphs     # the default samples all of a small scene
    finally:
        for p in (a, b):
            p.release()


def test_forecasts_are_the_same_for_one_or_three_partitions(spark, forecast_config, forecasted, prepared):
    from insarlake.forecast.model import ForecastModel
    from insarlake.forecast.stage import forecast_future

    model = forecast_store(forecast_config, "sim", "dapf").load_latest(ForecastModel.load)
    cfg = replace(forecast_config.forecast, predict_samples=2)
    out = []
    for n in (1, 3):
        rows = forecast_future(dataclasses.replace(prepared, members=prepared.members.repartition(n)), model, cfg, "sim", "r")
        out.append(rows.toPandas().sort_values(["pixel_id", "horizon"]).reset_index(drop=True))
    assert len(out[0]) == prepared.pixels * cfg.horizon_epochs
    pd.testing.assert_frame_equal(out[0], out[1])


def test_per_subgraph_work_reads_the_cached_rows_without_a_shuffle(spark, forecast_config, forecasted, tmp_path):
    from insarlake.forecast.model import ForecastModel
    from insarlake.forecast.stage import forecast_future, task_count

    model = forecast_store(forecast_config, "sim", "dapf").load_latest(ForecastModel.load)
    # its own prepare: equal plans share one cache entry, which another fixture's release drops
    prepared = prepare(spark, forecast_config, "sim", LakeFiles(str(tmp_path / "prep")))
    try:
        rows = forecast_future(prepared, model, forecast_config.forecast, "sim", "r")
        plan = rows._jdf.queryExecution().executedPlan().toString()
        above_cache = plan[:plan.index("InMemoryTableScan")]     # the nodes between the result and the cache
        assert "Exchange" not in above_cache and "Sort " not in above_cache, plan
        tasks = task_count(spark, prepared.pixels, forecast_config.forecast)
        assert tasks == 4 and prepared.members.rdd.getNumPartitions() == tasks
        assert rows.count() == prepared.pixels * forecast_config.forecast.horizon_epochs
    finally:
        prepared.release()
    # one partition per pixels_per_task pixels once that outnumbers the cores
    cfg = replace(forecast_config.forecast, pixels_per_task=1000)
    assert task_count(spark, 10_500, cfg) == max(11, spark.sparkContext.defaultParallelism)
    assert task_count(spark, 10, cfg) == spark.sparkContext.defaultParallelism


def test_two_processes_train_as_one(spark, forecast_config, prepared):
    cfg = replace(forecast_config.forecast, max_epochs=2, batch_parts=4)
    one = train(prepared, cfg, "gru")
    two = train(prepared, replace(cfg, num_processes=2), "gru")
    assert two["world_size"] == 2 and one["world_size"] == 1
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_mse"] == pytest.approx(a["val_mse"], rel=1e-3)


def test_saved_model_is_reused(spark, forecast_config, forecasted):
    run = Run("forecast", forecast_config)
    run_forecast(spark, forecast_config, "sim", run, evaluate=False)
    store = forecast_store(forecast_config, "sim", "dapf")
    versions = {name.split("/")[0] for name in store.files.list_files(*store.parts)} - {"latest.json"}
    assert len(versions) == 1 and store.latest() in versions         # nothing new trained
    assert run.metrics["model_reused.forecast.dapf"] == 1.0 and run.metrics["model_new_epochs.forecast.dapf"] == 0


def test_a_record_too_short_for_the_windows_is_refused(spark, forecast_config, sim_scene, tmp_path):
    cfg = replace(forecast_config, forecast=replace(forecast_config.forecast, input_epochs=200))
    with pytest.raises(InputError, match="forecast.input_epochs .* leave no train window"):
        prepare(spark, cfg, "sim", LakeFiles(str(tmp_path / "prep")))
