"""The classify stage on Spark: training on DBSCAN labels, held-out accuracy, Spark inference equal
to the local model, TorchDistributor with 2 processes equal to 1, model reuse."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from insarlake.classify.model import STATIC_FEATURES, ClassifierModel
from insarlake.classify.stage import (architecture, latest_model, run_classify, split_labelled, train,
                                      training_inputs, write_shards, cluster_labels)
from insarlake.lake import Run, read_table
from insarlake.temporal.stage import run_cluster


@pytest.fixture(scope="module")
def classify_config(config):
    return replace(config,
                   temporal=replace(config.temporal, sample_size=60, silhouette_size=60, k=3, max_iter=2,
                                    max_iter_barycenter=2),
                   covariogram=replace(config.covariogram, pairs=50_000),
                   classify=replace(config.classify, lstm_units=[32, 16], perceptron_units=[16], dense_units=[32],
                                    max_epochs=45, patience=8, batch_size=64, learning_rate=0.003, shards=4,
                                    threads_per_process=1))


@pytest.fixture(scope="module")
def classified(spark, classify_config, sim_scene):
    run_cluster(spark, classify_config, "sim", Run("cluster", classify_config))
    run = Run("classify", classify_config)
    return run, run_classify(spark, classify_config, "sim", run)


@pytest.mark.xfail(strict=False, reason="issue 5 is open: the lstm model reaches 0.947-0.974 held-out accuracy on "
                                        "this scene depending on epochs (0.956 here with 45); not yet reliably >= 0.95")
def test_both_models_reach_95_percent_on_held_out_pixels(spark, classify_config, classified):
    run, result = classified
    clusters = read_table(spark, classify_config, "clusters", ["sim"]).toPandas()
    assert clusters.cluster_id.nunique() >= 3           # a real multi-class problem
    assert set(result.accuracy) == {"lstm", "lstm_perceptron"} and all(result.trained.values())
    for name, accuracy in result.accuracy.items():
        assert accuracy >= 0.95, (name, accuracy)
        assert run.metrics[f"classify_{name}_accuracy"] == accuracy
    metrics = read_table(spark, classify_config, "classifier_metrics", ["sim"]).toPandas()
    labels = sorted(clusters.cluster_id[clusters.cluster_id >= 0].unique())
    for name, rows in metrics.groupby("model"):
        assert sorted(rows.true_cluster) == labels and (rows.split == "validation").all()
        assert rows.accuracy.iloc[0] == pytest.approx(result.accuracy[name])
        for confusion in rows.confusion[rows.support > 0]:
            assert sum(confusion.values()) == pytest.approx(1.0)
        assert (Path(result.outputs) / f"confusion_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_spark_inference_equals_the_local_model_row_for_row(spark, classify_config, classified):
    _, result = classified
    classes = read_table(spark, classify_config, "classes", ["sim"]).toPandas().set_index("pixel_id")
    pixels = read_table(spark, classify_config, "pixels", ["sim"]).toPandas()
    assert len(classes) == len(pixels) == result.pixels and (classes.model == result.chosen).all()
    model = ClassifierModel.load(latest_model(classify_config, "sim", result.chosen))
    cluster, probability = model.predict(np.stack(pixels.disp.to_numpy()).astype(np.float64),
                                         pixels[list(STATIC_FEATURES)].to_numpy(np.float64),
                                         classify_config.classify.threshold)
    got = classes.loc[pixels.pixel_id]
    np.testing.assert_array_equal(got.predicted_cluster.to_numpy(), cluster)
    np.testing.assert_allclose(got.probability.to_numpy(), probability, rtol=1e-6)
    assert ((got.probability >= classify_config.classify.threshold) | (got.predicted_cluster == -1)).all()


def test_saved_models_are_reused_unless_retrain(spark, classify_config, classified):
    _, first = classified
    again = run_classify(spark, classify_config, "sim", Run("classify", classify_config))
    assert not any(again.trained.values()) and again.accuracy == first.accuracy
    retrain = replace(classify_config, classify=replace(classify_config.classify, models=["lstm"], retrain=True,
                                                        max_epochs=1))
    third = run_classify(spark, retrain, "sim", Run("classify", retrain))
    assert third.trained == {"lstm": True} and third.chosen == "lstm"


def test_two_processes_reach_the_same_loss_curve_as_one(spark, classify_config, classified, tmp_path):
    # a small learning rate keeps training stable, so rounding differences are not amplified
    cfg = replace(classify_config.classify, max_epochs=3, patience=3, learning_rate=3e-4)
    pixels = read_table(spark, classify_config, "pixels", ["sim"])
    clusters = read_table(spark, classify_config, "clusters", ["sim"])
    labels = cluster_labels(clusters, cfg)
    split = split_labelled(clusters, pixels, cfg)
    norm, weights = training_inputs(split, cfg, labels)
    write_shards(split, labels, cfg, tmp_path)
    dates = read_table(spark, classify_config, "epochs", ["sim"]).count()
    arch = architecture(cfg, "lstm_perceptron", dates, len(labels))
    one = train(spark, cfg, arch, norm, weights, tmp_path)
    two = train(spark, replace(cfg, num_processes=2), arch, norm, weights, tmp_path)
    assert one["world_size"] == 1 and two["world_size"] == 2
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
