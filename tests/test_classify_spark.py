"""The classify stage on Spark: training on DBSCAN labels, held-out accuracy, Spark inference equal
to the local model, TorchDistributor with 2 processes equal to 1, model reuse."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import fast_clustering
from insarlake.classify.model import STATIC_FEATURES, ClassifierModel, Normalisation
from insarlake.classify.stage import (architecture, latest_model, run_classify, split_labelled, train,
                                      training_inputs, write_shards, cluster_labels)
from insarlake.lake import Run, read_table
from insarlake.temporal.stage import run_cluster


@pytest.fixture(scope="module")
def classify_config(config):
    return replace(fast_clustering(config),
                   classify=replace(config.classify, lstm_units=[32, 16], perceptron_units=[16], dense_units=[32],
                                    max_epochs=45, patience=8, batch_size=64, learning_rate=0.003, shards=4,
                                    threads_per_process=1))


@pytest.fixture(scope="module")
def classified(spark, classify_config, sim_scene):
    run_cluster(spark, classify_config, "sim", Run("cluster", classify_config))
    run = Run("classify", classify_config)
    return run, run_classify(spark, classify_config, "sim", run)


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
    # the same global batch gives the same updates up to the order of floating-point sums; Adam then
    # amplifies those 1e-8 differences over epochs, so the first epochs agree to rounding, later ones
    # within a looser tolerance
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
        rel = 1e-6 if a["epoch"] < 2 else 1e-2
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=rel)


def test_spark_training_statistics_equal_numpy_with_missing_values(spark, classify_config):
    rng = np.random.default_rng(3)
    series = rng.normal(2, 6, (60, 9))
    series[5, 2:4] = np.nan
    statics = rng.normal([1, 2, 0.5, 35], [2, 1, 0.1, 5], (60, 4))
    statics[[0, 7, 8], 1] = np.nan                 # missing velocity std: left out of its statistics
    labels = rng.integers(0, 3, 60) * 1_000
    rows = [(f"p{i}", [float(v) for v in series[i]], [float(v) for v in statics[i]], int(labels[i]),
             "train" if i < 40 else "validation") for i in range(60)]
    split = spark.createDataFrame(rows, "pixel_id string, disp array<double>, statics array<double>, "
                                        "cluster_id long, split string")
    cfg = replace(classify_config.classify, class_weight_power=1.0)
    norm, weights = training_inputs(split, cfg, [0, 1_000, 2_000, 3_000])
    expected = Normalisation.fit(series[:40], statics[:40])
    assert norm.series_mean == pytest.approx(expected.series_mean) and norm.series_std == pytest.approx(expected.series_std)
    np.testing.assert_allclose(norm.static_mean, expected.static_mean, rtol=1e-12)
    np.testing.assert_allclose(norm.static_std, expected.static_std, rtol=1e-9)
    counts = np.bincount(labels[:40] // 1_000, minlength=3)
    np.testing.assert_allclose(weights[:3], 40 / (4 * counts))     # (n / (k n_c)) ** 1; absent class: 0
    assert weights[3] == 0.0


def test_training_cap_per_cluster_moves_the_rest_to_unused(spark, classify_config, classified):
    pixels = read_table(spark, classify_config, "pixels", ["sim"])
    clusters = read_table(spark, classify_config, "clusters", ["sim"])
    full = split_labelled(clusters, pixels, classify_config.classify).toPandas().set_index("pixel_id")
    capped = split_labelled(clusters, pixels, replace(classify_config.classify, max_train_pixels_per_cluster=300))
    capped = capped.toPandas().set_index("pixel_id").loc[full.index]
    assert (full.cluster_id >= 0).all() and set(capped.split) == {"train", "validation", "unused"}
    # validation is untouched; a training pixel is kept or moved to unused, never lost
    assert (capped.split[full.split == "validation"] == "validation").all()
    assert capped.split[full.split == "train"].isin(["train", "unused"]).all()
    train = full[full.split == "train"].groupby("cluster_id").size()
    kept = capped[capped.split == "train"].groupby("cluster_id").size().reindex(train.index, fill_value=0)
    for cluster, n in train.items():
        if n <= 300:
            assert kept[cluster] == n
        else:                                      # a binomial draw with mean 300
            assert abs(kept[cluster] - 300) < 4 * np.sqrt(300), (cluster, n, kept[cluster])
