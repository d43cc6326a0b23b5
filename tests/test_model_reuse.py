"""The model-reuse policy on Spark (models.*, reuse.py): three deliveries of a simulated scene
whose cadence changes as Sentinel-1's did (6 days, then 12 from 2021-12-23). The first fits TSKM,
the classifier and DAPF; the second appends 6-day epochs (under models.reuse_max_new_share), which
reuse all three (TSKM and the classifier reading each series' latest epochs, DAPF forecasting after
the longer record with its own normalisation); the third appends 12-day epochs: another cadence,
all are fitted again. Each run records what it reused in runs.metrics."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import fast_clustering
from monitoring import cut_deliveries, simulate_scene
from insarlake.config import replace
from insarlake.lake import read_table, recorded_run, run_results, runs_since_fit
from insarlake.reuse import ReusePolicy, reuse_verdict

DATASET = "reuse"
KINDS = ("tskm.tskm", "classifier.lstm", "forecast.dapf")


@pytest.fixture(scope="module")
def reuse_config(config):
    scene = replace(config.simulate, n_pixels=3000, width_km=8.0, height_km=8.0, end_date="2022-03-31")
    return replace(fast_clustering(config), simulate=scene,
                   classify=replace(config.classify, models=["lstm"], max_epochs=1),
                   forecast=replace(config.forecast, max_epochs=1, nodes_per_subgraph=600, input_epochs=12,
                                    horizon_epochs=4, threads_per_process=1, train_subgraphs=2))


@pytest.fixture(scope="module")
def deliveries(spark, reuse_config, tmp_path_factory):
    from insarlake.classify.stage import run_classify
    from insarlake.cluster.stage import run_cluster
    from insarlake.forecast.stage import run_forecast
    from insarlake.ingest.stage import run_ingest

    folder = tmp_path_factory.mktemp("reuse")
    whole = simulate_scene(spark, reuse_config, DATASET, folder)
    runs = {}
    for name, source, mode in zip(("first", "second", "third"), cut_deliveries(whole, folder, "20210930", "20211222"),
                                  ("release", "append", "append")):
        with recorded_run(spark, reuse_config, "pipeline", [DATASET]) as run:
            run_ingest(spark, reuse_config, str(source), DATASET, run, mode=mode)
            dates = [r.date.isoformat() for r in read_table(spark, reuse_config, "epochs", [DATASET])
                     .orderBy("idx").collect()]
            cluster = run_cluster(spark, reuse_config, DATASET, run)
            run_classify(spark, reuse_config, DATASET, run)
            run_forecast(spark, reuse_config, DATASET, run)
        runs[name] = (run, cluster, dates)
    return runs


def _used(run) -> dict:
    return {k: v for k, v in run.metrics.items() if k.startswith("model_")}


def test_the_first_delivery_fits_both_models(deliveries):
    run, cluster, dates = deliveries["first"]
    assert not cluster.reused_model and cluster.model.epoch_dates == dates
    assert _used(run) == {f"model_{what}.{kind}": 0.0 for what in ("reused", "new_epochs", "runs_since_fit")
                          for kind in KINDS}


def test_an_append_at_the_cadence_reuses_both_on_the_latest_epochs(spark, reuse_config, deliveries):
    (first, fitted, first_dates), (run, cluster, dates) = deliveries["first"], deliveries["second"]
    new = len(dates) - len(first_dates)
    assert dates[:len(first_dates)] == first_dates and 0 < new <= 0.25 * len(first_dates)
    assert cluster.reused_model and cluster.model.epoch_dates == first_dates
    for kind in KINDS:
        assert run.metrics[f"model_reused.{kind}"] == 1.0 and run.metrics[f"model_new_epochs.{kind}"] == new
        assert run.metrics[f"model_runs_since_fit.{kind}"] == 0.0
    # every pixel labelled by the saved model on its series' latest len(first_dates) epochs of this
    # run (the lake's series have the third delivery's epochs after them by now)
    pixels = read_table(spark, reuse_config, "pixels", [DATASET]).select("pixel_id", "disp").toPandas()
    series = np.stack(pixels.disp.to_numpy()).astype(np.float64)[:, :len(dates)]
    expected = fitted.model.assign(series[:, -len(first_dates):])
    labels = (run_results(spark, reuse_config, "clusters", DATASET, run.run_id).toPandas()
              .set_index("pixel_id").loc[pixels.pixel_id, "tskm_label"].to_numpy())
    np.testing.assert_array_equal(labels, expected)
    metrics = run_results(spark, reuse_config, "classifier_metrics", DATASET, run.run_id)
    assert {r.model_version for r in metrics.select("model_version").distinct().collect()} == {first.run_id}
    assert run_results(spark, reuse_config, "classes", DATASET, run.run_id).count() == len(pixels)
    # DAPF: the first run's version and normalisation, forecasting after this run's record
    from insarlake.forecast.model import ForecastModel, forecast_store

    store = forecast_store(reuse_config, DATASET, "dapf", spark)
    model = store.load(first.run_id, ForecastModel.load)
    assert model.epoch_dates == first_dates and store.latest() == deliveries["third"][0].run_id
    forecasts = run_results(spark, reuse_config, "forecasts", DATASET, run.run_id)
    assert forecasts.count() == len(pixels) * reuse_config.forecast.horizon_epochs
    first_date = forecasts.agg({"date": "min"}).first()[0].isoformat()
    assert dates[-1] < first_date


def test_an_append_at_another_cadence_fits_both_again(spark, reuse_config, deliveries):
    from insarlake.classify.stage import classifier_store
    from insarlake.cluster.stage import tskm_store

    (first, _, first_dates), (run, cluster, dates) = deliveries["first"], deliveries["third"]
    verdict = reuse_verdict(first_dates, dates, 1, ReusePolicy.of(reuse_config.models))
    assert not verdict.reuse and verdict.why.startswith("other cadence: the new epochs 12 days apart, the model's "
                                                        "latest 6"), verdict.why
    assert not cluster.reused_model and cluster.model.epoch_dates == dates
    from insarlake.forecast.model import forecast_store

    assert all(run.metrics[f"model_reused.{kind}"] == 0.0 for kind in KINDS)
    # the runs that reused a version, counted from `runs`: the second reused the first's models
    for store in (tskm_store(reuse_config, DATASET, spark), classifier_store(reuse_config, DATASET, "lstm", spark),
                  forecast_store(reuse_config, DATASET, "dapf", spark)):
        assert store.latest() == run.run_id and runs_since_fit(spark, reuse_config, DATASET, store) == 0
        assert runs_since_fit(spark, reuse_config, DATASET, store, first.run_id) == 1
