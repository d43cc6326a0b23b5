"""The classify stage on Spark: training on the TSKM labels (default target) and on the DBSCAN
clusters, held-out accuracy, Spark inference equal to the local model, TorchDistributor with 2
processes equal to 1, model reuse, bounded stratified samples, the sparse confusion aggregate
against scikit-learn."""
from __future__ import annotations

from insarlake.config import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from conftest import fast_clustering
from insarlake.classify.model import STATIC_FEATURES, ClassifierModel, Normalisation
from insarlake.classify.stage import (accuracy_of, architecture, bounded_sample, class_metrics, confusion_counts,
                                      classifier_store, counts_by_split, evaluation_sample, per_class_cap, run_classify,
                                      split_labelled, target_labels, train, training_inputs, training_sample,
                                      validation_weights, write_shards)
from insarlake.files import LakeFiles
from insarlake.hotspots.stage import labelled_pixels
from insarlake.lake import Run, read_table, run_results
from insarlake.cluster.stage import run_cluster

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def classify_config(config):
    return replace(fast_clustering(config),
                   classify=replace(config.classify, lstm_units=[32, 16], perceptron_units=[16], dense_units=[32],
                                    max_epochs=45, patience=8, batch_size=64, learning_rate=0.003, shards=4,
                                    threads_per_process=1, max_train_pixels_per_class=600, max_train_pixels=1500,
                                    max_validation_pixels=600))


@pytest.fixture(scope="module")
def classified(spark, classify_config, sim_scene):
    run_cluster(spark, classify_config, "sim", Run("cluster", classify_config))
    run = Run("classify", classify_config)
    return run, run_classify(spark, classify_config, "sim", run)


def test_both_models_reach_95_percent_on_held_out_tskm_labels(spark, classify_config, classified):
    run, result = classified
    assert classify_config.classify.target == "tskm" and result.target == "tskm"     # the default
    clusters = run_results(spark, classify_config, "clusters", "sim").toPandas()
    labels = sorted(clusters.tskm_label.unique())
    assert len(labels) == 3                                # temporal.k in the tests: a real multi-class problem
    assert set(result.accuracy) == {"lstm", "lstm_perceptron"} and all(result.trained.values())
    for name, accuracy in result.accuracy.items():
        assert accuracy >= 0.95, (name, accuracy)
        assert run.metrics[f"classify_{name}_accuracy"] == accuracy
    metrics = run_results(spark, classify_config, "classifier_metrics", "sim", run.run_id).toPandas()
    for name, rows in metrics.groupby("model"):
        assert sorted(rows.true_cluster) == labels and (rows.split == "validation").all()
        assert (rows.target == "tskm").all()
        assert rows.accuracy.iloc[0] == pytest.approx(result.accuracy[name])
        # the metrics cover the whole held-out split, not the bounded per-epoch sample
        assert rows.support.sum() == run.counts["classify_held_out"]
        for confusion in rows.confusion[rows.support > 0]:
            assert sum(confusion.values()) == pytest.approx(1.0)
        assert (Path(result.outputs) / f"confusion_{name}.png").read_bytes()[:4] == b"\x89PNG"
    classes = run_results(spark, classify_config, "classes", "sim", run.run_id).toPandas()
    assert (classes.target == "tskm").all() and set(classes.predicted_cluster) <= set(labels) | {-1}


def test_training_uses_the_bounded_samples(spark, classify_config, classified):
    run, _ = classified
    cfg = classify_config.classify
    held_out, train_rows = run.counts["classify_held_out"], run.counts["classify_train"]
    labelled = run_results(spark, classify_config, "clusters", "sim").count()     # every pixel has a TSKM label
    assert train_rows + run.counts["classify_unused"] + held_out == labelled
    assert run.counts["classify_unused"] > 0            # the caps bind on this scene
    assert train_rows <= 3 * per_class_cap(3, cfg.max_train_pixels_per_class, cfg.max_train_pixels) <= cfg.max_train_pixels
    assert run.counts["classify_validation"] <= cfg.max_validation_pixels < held_out


def test_spark_inference_equals_the_local_model_row_for_row(spark, classify_config, classified):
    run, result = classified
    classes = run_results(spark, classify_config, "classes", "sim", run.run_id).toPandas().set_index("pixel_id")
    pixels = read_table(spark, classify_config, "pixels", ["sim"]).toPandas()
    assert len(classes) == len(pixels) == result.pixels and (classes.model == result.chosen).all()
    model = classifier_store(classify_config, "sim", result.chosen).load_latest(ClassifierModel.load)
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


def _training_run(spark, config, cfg, folder):
    """(labels, normalisation, class weights, validation weights) with the bounded shards written to folder."""
    pixels = read_table(spark, config, "pixels", ["sim"])
    clusters = run_results(spark, config, "clusters", "sim")
    labels = target_labels(clusters, cfg)
    split = split_labelled(clusters, pixels, cfg)
    counts = counts_by_split(split)
    sample = training_sample(split, cfg, counts)
    norm, weights = training_inputs(sample, cfg, labels)
    val_weights = validation_weights(counts["validation"], counts_by_split(sample)["validation"], labels)
    write_shards(sample, labels, cfg, folder)
    return labels, norm, weights, val_weights


def test_two_processes_reach_the_same_loss_curve_as_one(spark, classify_config, classified, tmp_path):
    # The same global batch gives the same updates up to the order of floating-point sums: the two
    # processes' gradients are summed by all_reduce, one process sums them in another order, each a
    # float32 rounding (relative EPS32) of the gradient. The first epoch's losses then agree to a few
    # hundred float32 roundings; Adam (update ~ m / sqrt(v)) carries a relative gradient difference
    # into the weights undamped and the network amplifies it step after step, so later epochs are
    # compared to sqrt(EPS32) (half of float32's digits) per epoch after the first.
    cfg = replace(classify_config.classify, max_epochs=3, patience=3, learning_rate=3e-4)
    work = LakeFiles(str(tmp_path))
    labels, norm, weights, val_weights = _training_run(spark, classify_config, cfg, work)
    dates = read_table(spark, classify_config, "epochs", ["sim"]).count()
    arch = architecture(cfg, "lstm_perceptron", dates, len(labels))
    one = train(spark, cfg, arch, norm, weights, work, val_weights)
    two = train(spark, replace(cfg, num_processes=2), arch, norm, weights, work, val_weights)
    assert one["world_size"] == 1 and two["world_size"] == 2
    for a, b in zip(one["history"], two["history"], strict=True):
        rel = 256 * EPS32 if a["epoch"] == 0 else a["epoch"] * np.sqrt(EPS32)
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
                                        "class_id long, split string")
    cfg = replace(classify_config.classify, class_weight_power=1.0)
    norm, weights = training_inputs(split, cfg, [0, 1_000, 2_000, 3_000])
    expected = Normalisation.fit(series[:40], statics[:40])
    assert norm.series_mean == pytest.approx(expected.series_mean) and norm.series_std == pytest.approx(expected.series_std)
    np.testing.assert_allclose(norm.static_mean, expected.static_mean, rtol=1e-12)
    np.testing.assert_allclose(norm.static_std, expected.static_std, rtol=1e-9)
    counts = np.bincount(labels[:40] // 1_000, minlength=3)
    np.testing.assert_allclose(weights[:3], 40 / (4 * counts))     # (n / (k n_c)) ** 1; absent class: 0
    assert weights[3] == 0.0


def _class_frame(spark, sizes: dict[int, int]):
    rows = [(f"px{c}_{i:05d}", c, "train") for c, n in sizes.items() for i in range(n)]
    return spark.createDataFrame(rows, "pixel_id string, class_id long, split string")


def test_bounded_sample_takes_the_smallest_hashes_per_class_deterministically(spark):
    sizes = {0: 40, 7: 350, 1_000_000_007: 2_000, -1: 301}
    frame = _class_frame(spark, sizes)
    cap = 300

    def pick(seed):
        got = bounded_sample(frame, sizes, cap, seed).toPandas()
        return got, {c: set(g.pixel_id) for c, g in got.groupby("class_id")}

    got, chosen = pick(5)
    assert got.pixel_id.is_unique
    assert {c: len(p) for c, p in chosen.items()} == {c: min(n, cap) for c, n in sizes.items()}
    # exactly the cap smallest seeded hashes of each class (reference: a window over every row)
    from pyspark.sql import Window
    ranked = (frame.withColumn("h", F.pmod(F.xxhash64(F.lit(5), "pixel_id"), F.lit(1 << 62)))
              .withColumn("r", F.row_number().over(Window.partitionBy("class_id").orderBy("h", "pixel_id")))
              .where(F.col("r") <= cap).toPandas())
    assert chosen == {c: set(g.pixel_id) for c, g in ranked.groupby("class_id")}
    assert pick(5)[1] == chosen                                     # deterministic for a seed
    other = pick(6)[1]
    assert other[0] == chosen[0] and other[1_000_000_007] != chosen[1_000_000_007]
    assert bounded_sample(frame, sizes, None, 5) is frame and bounded_sample(frame, sizes, 5_000, 5) is frame


def test_training_sample_respects_the_bounds_of_both_splits(spark, classify_config, classified):
    pixels = read_table(spark, classify_config, "pixels", ["sim"])
    clusters = run_results(spark, classify_config, "clusters", "sim")
    cfg = replace(classify_config.classify, max_train_pixels_per_class=400, max_train_pixels=900,
                  max_validation_pixels=300)
    split = split_labelled(clusters, pixels, cfg)
    counts = counts_by_split(split)
    k = len(counts["train"])
    assert per_class_cap(k, 400, 900) == min(400, 900 // k)
    sample = training_sample(split, cfg, counts)
    got = counts_by_split(sample)
    for name, cap in (("train", min(400, 900 // k)), ("validation", 300 // len(counts["validation"]))):
        assert got[name] == {c: min(n, cap) for c, n in counts[name].items()}, name
    assert sum(got["train"].values()) <= 900 and sum(got["validation"].values()) <= 300
    # the same pixels again; the split of a pixel is kept (a sampled validation pixel is held out)
    first, again = sample.toPandas(), training_sample(split, cfg, counts).toPandas()
    assert set(first.pixel_id) == set(again.pixel_id)
    whole = split.select("pixel_id", "split").toPandas().set_index("pixel_id").split
    assert (whole.loc[first.pixel_id].to_numpy() == first.split.to_numpy()).all()
    weights = validation_weights(counts["validation"], got["validation"], sorted(counts["validation"]))
    np.testing.assert_allclose(sorted(weights), sorted(counts["validation"][c] / got["validation"][c]
                                                       for c in counts["validation"]))
    unbounded = replace(cfg, max_train_pixels_per_class=None, max_train_pixels=None, max_validation_pixels=None)
    assert counts_by_split(training_sample(split, unbounded, counts)) == counts


def test_evaluation_sample_is_uniform_seeded_and_bounded(spark):
    frame = spark.range(200_000).select(F.concat(F.lit("p"), F.col("id").cast("string")).alias("pixel_id"),
                                        (F.col("id") % 4).alias("class_id"))
    assert evaluation_sample(frame, 200_000, None, 3) is frame and evaluation_sample(frame, 200_000, 200_000, 3) is frame
    cap = 20_000
    got = evaluation_sample(frame, 200_000, cap, 3).toPandas()
    # Bernoulli(p = 0.1) per row: the count is within 6 standard deviations but for a chance < 1e-8
    assert abs(len(got) - cap) <= 6 * np.sqrt(cap * 0.9)
    assert not got.pixel_id.duplicated().any()
    per_class = got.class_id.value_counts()                # each class 50,000 rows: ~5,000 kept
    assert (abs(per_class - cap / 4) <= 6 * np.sqrt(cap / 4 * 0.9)).all() and len(per_class) == 4
    assert set(evaluation_sample(frame, 200_000, cap, 3).toPandas().pixel_id) == set(got.pixel_id)
    assert set(evaluation_sample(frame, 200_000, cap, 4).toPandas().pixel_id) != set(got.pixel_id)


def test_confusion_aggregate_equals_scikit_learn(spark):
    rng = np.random.default_rng(11)
    labels = [3, 10, 42, 1_000_000_000_000, 77]       # 77: no pixel of it, never predicted
    truth = rng.choice(labels[:4], 400, p=[0.5, 0.3, 0.15, 0.05])
    predicted = np.where(rng.random(400) < 0.7, truth, rng.choice(labels[:4] + [-1], 400))
    predicted[truth == 42] = np.where(rng.random((truth == 42).sum()) < 0.5, 10, -1)   # 42: never right
    frame = spark.createDataFrame(pd.DataFrame({"class_id": truth, "predicted_cluster": predicted}))
    pairs = confusion_counts(frame).toPandas()
    assert (pairs.pixels > 0).all() and not pairs.duplicated(["true_cluster", "predicted_cluster"]).any()
    columns = labels + [-1]
    dense = (pairs.pivot_table(index="true_cluster", columns="predicted_cluster", values="pixels", fill_value=0)
             .reindex(index=columns, columns=columns, fill_value=0).to_numpy())
    np.testing.assert_array_equal(dense, confusion_matrix(truth, predicted, labels=columns))

    counts = confusion_counts(frame)
    accuracy, total = accuracy_of(counts)
    assert total == 400 and accuracy == pytest.approx(accuracy_score(truth, predicted))
    rows = class_metrics(counts, labels).toPandas().set_index("true_cluster").loc[labels]
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=np.nan)
    np.testing.assert_array_equal(rows.support.to_numpy(), support)
    np.testing.assert_allclose(rows.precision.to_numpy(), precision, equal_nan=True)
    np.testing.assert_allclose(rows.recall.to_numpy(), recall, equal_nan=True)
    np.testing.assert_allclose(rows.f1.to_numpy(), f1, equal_nan=True)
    assert rows.f1[42] == 0.0 and np.isnan(rows.precision[77]) and rows.confusion[77] == {}
    cm = confusion_matrix(truth, predicted, labels=columns)
    for i, c in enumerate(labels[:4]):
        expected = {p: cm[i, j] / cm[i].sum() for j, p in enumerate(columns) if cm[i, j]}
        assert rows.confusion[c].keys() == expected.keys()
        for p, share in expected.items():
            assert rows.confusion[c][p] == pytest.approx(share)


def test_cluster_target_trains_on_dbscan_clusters_and_hotspots_read_both(spark, classify_config, classified):
    # runs last: its classes (the cluster target's) are the ones written last
    tskm_labels, _ = labelled_pixels(spark, replace(classify_config, hotspots=replace(classify_config.hotspots,
                                                                                      labels="classes")), "sim")
    assert tskm_labels.where(F.col("label") > 2).count() == 0          # TSKM labels 0..k-1 (or -1)
    cfg = replace(classify_config, classify=replace(classify_config.classify, target="cluster",
                                                    models=["lstm_perceptron"]))
    run = Run("classify", cfg)
    result = run_classify(spark, cfg, "sim", run)
    # a saved model of the other target is not reused
    assert result.target == "cluster" and result.trained == {"lstm_perceptron": True}
    assert classifier_store(cfg, "sim", "lstm_perceptron").load_latest(ClassifierModel.load).target == "cluster"
    clusters = run_results(spark, cfg, "clusters", "sim").toPandas()
    labels = sorted(clusters.cluster_id[clusters.cluster_id >= 0].unique())
    assert len(labels) >= 3 and labels == target_labels(run_results(spark, cfg, "clusters", "sim"), cfg.classify)
    assert result.accuracy["lstm_perceptron"] >= 0.95, result.accuracy
    metrics = run_results(spark, cfg, "classifier_metrics", "sim").toPandas()
    assert (metrics.target == "cluster").all() and sorted(metrics.true_cluster) == labels
    assert metrics.support.sum() == run.counts["classify_held_out"]
    classes = run_results(spark, cfg, "classes", "sim").toPandas()
    assert (classes.target == "cluster").all() and set(classes.predicted_cluster) <= set(labels) | {-1}
    pixels, source = labelled_pixels(spark, replace(cfg, hotspots=replace(cfg.hotspots, labels="classes")), "sim")
    assert source == "classes" and pixels.where(F.col("label").isNull()).count() == 0
