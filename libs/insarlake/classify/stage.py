"""The classify stage on Spark: train the classifiers on the configured target of `clusters`
(``classify.target``: the TSKM label or the DBSCAN cluster id), or reuse saved ones, label every
pixel, evaluate on the held-out split.

Steps: split the labelled pixels at random per pixel (seeded hash); bounded stratified samples of
both splits (at most so many pixels per class: the smallest seeded hashes of each class); the
normalisation statistics and class weights from the training sample (Spark aggregates); the
samples written as Parquet shards under <lake>/work/classify/<dataset>/<run_id>/; training with
TorchDistributor (or in the driver for one process); inference in ``mapInArrow`` (Arrow batches
straight to numpy) with the model loaded once per Python worker; `classes` from the chosen model,
`classifier_metrics` (accuracy, per-class precision/recall/F1, row-normalised confusion as a sparse
map) over the whole held-out split for every model, from a sparse (true, predicted) count aggregate
in Spark; a confusion-matrix PNG when there are few classes.
Models: <lake>/models/classifier/<dataset>/<model>/<run_id>/ with latest.json naming the newest.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.classify.model import STATIC_FEATURES, Architecture, ClassifierModel, Normalisation, build
from insarlake.config import ClassifyConfig, Config
from insarlake.errors import InputError
from insarlake.files import LakeFiles
from insarlake.lake import (Run, analysis_pixels, lake_files, model_store, read_table, run_results, runs_since_fit,
                           write_table)
from insarlake.launch import run_training
from insarlake.spark import delta_schema_merge, session_conf
from insarlake.modelstore import ModelStore
from insarlake.reuse import ReusePolicy
from insarlake.tables import schema

log = logging.getLogger(__name__)

CLASSES_SCHEMA = schema("classes")
METRICS_SCHEMA = schema("classifier_metrics")
# classify.target -> the column of `clusters` that holds the class of a pixel
TARGET_COLUMNS = {"cluster": "cluster_id", "tskm": "tskm_label"}
_SPLIT_BUCKETS = 1_000_000
# sample draws compare a seeded xxhash64 of pixel_id taken modulo this (uniform on [0, 2^62))
_HASH_RANGE = 1 << 62
# the confusion-matrix picture is drawn for at most this many classes (it is k x k)
_PLOT_MAX_CLASSES = 60


@dataclass(frozen=True)
class ClassifyResult:
    dataset: str
    target: str
    chosen: str
    accuracy: dict          # model -> held-out accuracy
    trained: dict           # model -> True (trained this run) / False (reused)
    pixels: int
    outputs: str


def classifier_store(config: Config, dataset: str, name: str, spark: SparkSession | None = None) -> ModelStore:
    """The saved versions of classifier ``name`` (lstm, lstm_perceptron) of ``dataset``."""
    return model_store(config, "classifier", dataset, name, spark)


def architecture(cfg: ClassifyConfig, name: str, n_epochs: int, n_classes: int) -> Architecture:
    return Architecture(name, n_epochs, n_classes, tuple(cfg.lstm_units), tuple(cfg.perceptron_units),
                        tuple(cfg.dense_units), cfg.dropout)


def with_features(pixels: DataFrame) -> DataFrame:
    """pixel_id, disp and the static feature array ``statics`` (velocity, velocity_std, coherence,
    incidence_angle; a missing value becomes NaN, filled by the normalisation)."""
    return pixels.select("pixel_id", "disp", F.array(*[F.coalesce(F.col(c).cast("double"), F.lit(float("nan")))
                                                       for c in STATIC_FEATURES]).alias("statics"))


def labelled(clusters: DataFrame, cfg: ClassifyConfig) -> DataFrame:
    """pixel_id, class_id: the class of every pixel that has one under ``cfg.target`` (the TSKM
    label; or the DBSCAN cluster id, noise left out unless noise_as_class)."""
    out = clusters.select("pixel_id", F.col(TARGET_COLUMNS[cfg.target]).cast("long").alias("class_id"))
    out = out.where(F.col("class_id").isNotNull())
    if cfg.target == "cluster" and not cfg.noise_as_class:
        out = out.where(F.col("class_id") >= 0)
    return out


def target_labels(clusters: DataFrame, cfg: ClassifyConfig) -> list[int]:
    """The classes to learn: the sorted class ids of ``cfg.target`` in `clusters` (a distinct in Spark)."""
    return sorted(int(r[0]) for r in labelled(clusters, cfg).select("class_id").distinct().collect())


def split_labelled(clusters: DataFrame, pixels: DataFrame, cfg: ClassifyConfig) -> DataFrame:
    """Labelled pixels (pixel_id, disp, statics, class_id) with ``split``: train / validation at
    random per pixel (a seeded hash of pixel_id, train_share of them in train)."""
    draw = F.pmod(F.xxhash64(F.lit(cfg.split_seed), "pixel_id"), F.lit(_SPLIT_BUCKETS))
    return (with_features(pixels).join(labelled(clusters, cfg), "pixel_id")
            .withColumn("split", F.when(draw < int(cfg.train_share * _SPLIT_BUCKETS), "train").otherwise("validation")))


def counts_by_split(frame: DataFrame) -> dict[str, dict[int, int]]:
    """{split: {class_id: pixels}} of a frame with split and class_id (one groupBy; O(classes) rows
    come to the driver)."""
    out: dict[str, dict[int, int]] = {"train": {}, "validation": {}}
    for split, class_id, n in frame.groupBy("split", "class_id").count().collect():
        out.setdefault(split, {})[int(class_id)] = int(n)
    return out


def per_class_cap(n_classes: int, per_class: int | None, total: int | None) -> int | None:
    """Pixels per class of a bounded sample: min(per_class, total // n_classes) (at least 1), or
    None (no bound) when both are None."""
    caps = [c for c in (per_class, None if total is None else max(1, total // max(n_classes, 1))) if c is not None]
    return min(caps) if caps else None


def bounded_sample(frame: DataFrame, counts: dict[int, int], cap: int | None, seed: int,
                   class_col: str = "class_id") -> DataFrame:
    """The rows of ``frame`` (counts: rows per class of ``class_col``) with at most ``cap`` rows of
    each class: those with the smallest xxhash64(seed, pixel_id) (ties by pixel_id), so exactly
    min(n, cap) rows per class, deterministic for a seed. A class over the cap is first thinned by a
    hash threshold keeping cap + 6 sqrt(cap) + 10 rows on average (fewer than cap with probability
    < 1e-9: then all of them are kept), so the window that ranks rows runs over these candidates
    only, never over every row. cap None: ``frame`` itself."""
    if cap is None:
        return frame
    over = {c: n for c, n in counts.items() if n > cap}
    if not over:
        return frame
    limits = frame.sparkSession.createDataFrame(
        [(int(c), int(min(1.0, (cap + 6 * math.sqrt(cap) + 10) / n) * (_HASH_RANGE - 1))) for c, n in over.items()],
        T.StructType([T.StructField(class_col, T.LongType()), T.StructField("_keep_below", T.LongType())]))
    hashed = (frame.withColumn("_hash", F.pmod(F.xxhash64(F.lit(seed), "pixel_id"), F.lit(_HASH_RANGE)))
              .join(F.broadcast(limits), class_col, "left"))
    uncapped = F.col("_keep_below").isNull()
    candidates = hashed.where(uncapped | (F.col("_hash") < F.col("_keep_below")))
    rank = F.row_number().over(Window.partitionBy(class_col).orderBy("_hash", "pixel_id"))
    # a class under the cap has at most cap rows: all ranks <= cap
    return candidates.withColumn("_rank", rank).where(F.col("_rank") <= cap).drop("_hash", "_keep_below", "_rank")


def training_sample(split: DataFrame, cfg: ClassifyConfig, counts: dict[str, dict[int, int]]) -> DataFrame:
    """The rows the network sees: a bounded sample of each split of ``split`` (counts from
    counts_by_split): training pixels capped per class by max_train_pixels_per_class and
    max_train_pixels, per-epoch validation pixels by max_validation_pixels (seeds split_seed + 1, + 2)."""
    train_cap = per_class_cap(len(counts["train"]), cfg.max_train_pixels_per_class, cfg.max_train_pixels)
    val_cap = per_class_cap(len(counts["validation"]), None, cfg.max_validation_pixels)
    train = bounded_sample(split.where(F.col("split") == "train"), counts["train"], train_cap, cfg.split_seed + 1)
    val = bounded_sample(split.where(F.col("split") == "validation"), counts["validation"], val_cap,
                         cfg.split_seed + 2)
    return train.unionByName(val)


def evaluation_sample(held_out: DataFrame, n_rows: int, cap: int | None, seed: int) -> DataFrame:
    """The held-out rows the metrics are computed on: all ``n_rows`` of ``held_out`` when ``cap`` is
    None or not below it, else a uniform sample of each row with probability cap / n_rows (a seeded
    hash of pixel_id: about cap rows, within 6 sqrt(cap) but for a chance < 1e-8; the class
    proportions of the split are kept, so accuracy and per-class metrics need no weights)."""
    if cap is None or n_rows <= cap:
        return held_out
    keep_below = int(cap / n_rows * (_HASH_RANGE - 1))
    return held_out.where(F.pmod(F.xxhash64(F.lit(seed), "pixel_id"), F.lit(_HASH_RANGE)) < keep_below)


def validation_weights(held_out: dict[int, int], sampled: dict[int, int], labels: list[int]) -> list[float]:
    """Per class index: held-out pixels / sampled validation pixels of the class (1 when none is
    sampled), so the weighted per-epoch loss estimates the whole held-out split's."""
    return [held_out.get(c, 0) / sampled[c] if sampled.get(c) else 1.0 for c in labels]


def training_inputs(split: DataFrame, cfg: ClassifyConfig, labels: list[int]) -> tuple[Normalisation, list[float]]:
    """Normalisation statistics and class weights ((n / (k n_class)) ** class_weight_power; 0 for a
    class absent from the training split) from the rows of ``split`` (pixel_id, disp, statics,
    class_id, split) whose split is train: the training sample."""
    train = split.where(F.col("split") == "train")
    finite = "filter(disp, x -> NOT isnan(x))"
    k = len(STATIC_FEATURES)
    moments = train.agg(
        F.sum(F.expr(f"size({finite})")).alias("n"),
        F.sum(F.expr(f"aggregate({finite}, 0D, (a, x) -> a + x)")).alias("s"),
        F.sum(F.expr(f"aggregate({finite}, 0D, (a, x) -> a + x * x)")).alias("ss"),
        *[F.count(F.expr(f"nanvl(statics[{i}], NULL)")).alias(f"c{i}") for i in range(k)],
        *[F.sum(F.expr(f"nanvl(statics[{i}], NULL)")).alias(f"m{i}") for i in range(k)],
        *[F.sum(F.expr(f"nanvl(statics[{i}], NULL) * nanvl(statics[{i}], NULL)")).alias(f"q{i}")
          for i in range(k)]).first()
    norm = Normalisation.from_moments(int(moments["n"] or 0), float(moments["s"] or 0), float(moments["ss"] or 0),
                                      [int(moments[f"c{i}"]) for i in range(k)],
                                      [float(moments[f"m{i}"] or 0) for i in range(k)],
                                      [float(moments[f"q{i}"] or 0) for i in range(k)])
    counts = dict(train.groupBy("class_id").count().collect())
    missing = [c for c in labels if c not in counts]
    if missing:
        log.warning("classes %s have no pixel in the training split", missing[:10])
    total = sum(counts.values())
    weights = [(total / (len(labels) * counts[c])) ** cfg.class_weight_power if counts.get(c) else 0.0
               for c in labels]
    return norm, weights


def write_shards(split: DataFrame, labels: list[int], cfg: ClassifyConfig, folder: LakeFiles) -> dict[str, int]:
    """train/ and validation/ Parquet folders partitioned by shard under ``folder`` (replaced) from
    the rows of ``split`` (the training sample: pixel_id, disp, statics, class_id, split), each
    shard one file in a seeded order of pixel_id; rows per split."""
    spark = split.sparkSession
    mapping = spark.createDataFrame([(int(c), i) for i, c in enumerate(labels)], "class_id long, target int")
    rows = (split.join(F.broadcast(mapping), "class_id")
            .withColumn("shard", F.pmod(F.xxhash64(F.lit(cfg.seed), "pixel_id"), F.lit(cfg.shards)).cast("int"))
            .withColumn("_order", F.xxhash64(F.lit(cfg.seed + 1), "pixel_id"))
            .select("split", "shard", "_order", "pixel_id", F.col("disp").alias("series"), "statics", "target"))
    folder.remove_tree()
    counts = {}
    for name in ("train", "validation"):
        part = rows.where(F.col("split") == name).drop("split")
        # one file per shard, its rows in a seeded order of pixel_id: the same training whatever
        # the partitioning upstream (local or cluster, any number of executors)
        (part.repartition(cfg.shards, "shard").sortWithinPartitions("shard", "_order", "pixel_id")
         .drop("_order", "pixel_id").write.partitionBy("shard").parquet(folder.uri(name)))
        counts[name] = spark.read.parquet(folder.uri(name)).count()
    return counts


def train(spark: SparkSession, cfg: ClassifyConfig, arch: Architecture, norm: Normalisation, weights: list[float],
          folder: LakeFiles, val_weights: list[float] | None = None) -> dict:
    """Run ``train_worker`` on the shards under ``folder`` (write_shards) with ``run_training``: in
    the driver for one CPU process, else on TorchDistributor. val_weights: per class index, the
    weight of a validation row (validation_weights; None: 1)."""
    from insarlake.classify.train import train_worker

    args = {"train_dir": folder.sub("train"), "val_dir": folder.sub("validation"), "shards": cfg.shards,
            "architecture": asdict(arch), "normalisation": asdict(norm), "class_weights": weights,
            "validation_weights": val_weights,
            "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "max_epochs": cfg.max_epochs,
            "patience": cfg.patience, "seed": cfg.seed, "threads": cfg.threads_per_process}
    return run_training(train_worker, args, cfg.num_processes, cfg.local_mode, cfg.use_gpu)


# one loaded model per Python worker process, keyed by the version's URI and weights checksum
_LOADED: dict[tuple[str, str], ClassifierModel] = {}


def _load_cached(store: ModelStore, version: str, sha: str, threads: int) -> ClassifierModel:
    key = (store.uri(version), sha)
    if key not in _LOADED:
        import torch

        torch.set_num_threads(threads)
        _LOADED.clear()
        _LOADED[key] = store.load(version, ClassifierModel.load)
    return _LOADED[key]


def arrow_batch_rows(spark: SparkSession, rows: int):
    """A context in which Spark's Arrow batches to mapInArrow hold at most ``rows`` rows (the
    inference batch)."""
    return session_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(int(rows)))


def predict(pixels: DataFrame, store: ModelStore, version: str, threshold: float, dataset: str, run_id: str,
            threads: int = 1, network_rows: int = 256) -> DataFrame:
    """`classes` rows for ``pixels`` (pixel_id, disp, statics) from ``version`` of the model in
    ``store`` (each Python worker loads it from the lake once; it reads the latest epochs of each
    series, as many as it was trained on: reuse.py), the
    network run on at most ``network_rows`` rows at a time; run its actions inside
    ``arrow_batch_rows(spark, rows)`` to set the size of Spark's Arrow batches.
    Arrow batches go straight to numpy (list_column_to_numpy), never through Python lists."""
    meta = store.files.read_json(*store.parts, version, "model.json")
    sha, target, model_name = meta["weights_sha256"], str(meta.get("target", "cluster")), store.name

    def classify(batches):
        import pyarrow as pa

        from insarlake.arrow import list_column_to_numpy

        model = _load_cached(store, version, sha, threads)
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            series = list_column_to_numpy(batch.column("disp"), np.float64, model.arch.n_epochs, "disp")
            statics = list_column_to_numpy(batch.column("statics"), np.float64, len(STATIC_FEATURES), "statics")
            cluster, probability = model.predict(series, statics, threshold, network_rows)
            yield pa.RecordBatch.from_arrays(
                [pa.repeat(dataset, n), pa.repeat(run_id, n), batch.column("pixel_id").cast(pa.string()),
                 pa.array(cluster, pa.int64()), pa.array(probability.astype(np.float32), pa.float32()),
                 pa.repeat(model_name, n), pa.repeat(target, n)],
                names=CLASSES_SCHEMA.fieldNames())

    n_epochs = int(meta["architecture"]["n_epochs"])     # the latest epochs, as many as it was trained on
    latest = F.slice("disp", -n_epochs, n_epochs).alias("disp")
    return pixels.select("pixel_id", latest, "statics").mapInArrow(classify, CLASSES_SCHEMA)


def confusion_counts(truth_pred: DataFrame, true_col: str = "class_id",
                     predicted_col: str = "predicted_cluster") -> DataFrame:
    """The sparse confusion matrix: one row per (true_cluster, predicted_cluster) pair that occurs,
    with ``pixels`` (its count); a groupBy in Spark, nothing on the driver."""
    return (truth_pred.groupBy(F.col(true_col).cast("long").alias("true_cluster"),
                               F.col(predicted_col).cast("long").alias("predicted_cluster"))
            .agg(F.count(F.lit(1)).alias("pixels")))


def class_metrics(counts: DataFrame, labels: list[int]) -> DataFrame:
    """Per class of ``labels``: true_cluster, support, precision, recall, f1 and confusion (map
    predicted class -> share of the class's pixels, non-zero entries only), from sparse counts
    (confusion_counts), all in Spark. A prediction of -1 (below the threshold) counts as wrong;
    f1 = 2 tp / (support + predicted); a ratio with a zero denominator is NaN (scikit-learn's
    precision_recall_fscore_support with zero_division=nan)."""
    spark = counts.sparkSession
    by_true = counts.groupBy("true_cluster").agg(
        F.sum("pixels").alias("support"),
        F.sum(F.when(F.col("predicted_cluster") == F.col("true_cluster"), F.col("pixels")).otherwise(0)).alias("tp"),
        F.collect_list(F.struct("predicted_cluster", "pixels")).alias("_row"))
    by_predicted = (counts.groupBy(F.col("predicted_cluster").alias("true_cluster"))
                    .agg(F.sum("pixels").alias("predicted")))
    names = spark.createDataFrame([(int(c),) for c in labels], "true_cluster long")
    nan = F.lit(float("nan"))
    support, tp = F.coalesce("support", F.lit(0)), F.coalesce("tp", F.lit(0))
    predicted = F.coalesce("predicted", F.lit(0))
    share = F.transform("_row", lambda e: F.struct(e["predicted_cluster"], e["pixels"] / F.col("support")))
    empty = F.create_map().cast(T.MapType(T.LongType(), T.DoubleType()))
    return (names.join(by_true, "true_cluster", "left").join(by_predicted, "true_cluster", "left")
            .select("true_cluster", support.cast("long").alias("support"),
                    F.when(predicted > 0, tp / predicted).otherwise(nan).alias("precision"),
                    F.when(support > 0, tp / support).otherwise(nan).alias("recall"),
                    F.when(support + predicted > 0, 2 * tp / (support + predicted)).otherwise(nan).alias("f1"),
                    F.coalesce(F.map_from_entries(share), empty).alias("confusion")))


def accuracy_of(counts: DataFrame) -> tuple[float, int]:
    """(share of pixels whose predicted class is the true one, pixels) from sparse counts; NaN of 0."""
    row = counts.agg(F.sum(F.when(F.col("predicted_cluster") == F.col("true_cluster"), F.col("pixels"))
                           .otherwise(0)).alias("right"), F.sum("pixels").alias("total")).first()
    total = int(row["total"] or 0)
    return (int(row["right"] or 0) / total if total else math.nan), total


def plot_confusion(per_class: pd.DataFrame, labels: list[int], path: Path, title: str) -> Path:
    """PNG of the row-normalised confusion matrix (seed Fig. 9), labels (and -1) on both axes;
    per_class: class_metrics rows (k of them; the picture is k x k, drawn for few classes only)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = labels + ([-1] if any(-1 in row for row in per_class["confusion"]) and -1 not in labels else [])
    grid = np.array([[row.get(c, 0.0) for c in columns] for row in per_class["confusion"]])
    size = max(5.0, 0.35 * len(columns) + 2)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    ticks = [str(c) for c in columns]
    ax.set_xticks(range(len(columns)), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), [str(c) for c in labels], fontsize=7)
    if len(columns) <= 25:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if grid[i, j] >= 0.005:
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if grid[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _matches(model: ClassifierModel, arch: Architecture, target: str, labels: list[int]) -> bool | str:
    """True when a saved ``model`` has this architecture (its own number of epochs aside: the reuse
    policy judges its epochs, reuse.py), target and classes; else why not."""
    arch = dataclasses.replace(arch, n_epochs=model.arch.n_epochs)
    for what, saved, wanted in (("architecture", model.arch, arch), ("target", model.target, target),
                                ("classes", list(model.labels), labels)):
        if saved != wanted:
            return f"other {what}"
    return True


def run_classify(spark: SparkSession, config: Config, dataset: str, run: Run) -> ClassifyResult:
    """Train (or reuse) every configured model, write `classes` from the chosen one and
    `classifier_metrics` for all; adds this run's rows of the dataset to both tables. Models go to the
    model store, pictures to the run's outputs in the lake; the training shards' work folder is
    removed at the end, also on failure."""
    cfg = config.classify
    raw_pixels = analysis_pixels(spark, config, dataset)
    pixels = with_features(raw_pixels)
    clusters = run_results(spark, config, "clusters", dataset, current=run)
    dates = [r.date.isoformat() for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
    labels = target_labels(clusters, cfg)
    if len(labels) < 2:
        raise InputError(f"dataset {dataset}: clusters has {len(labels)} class(es) of classify.target "
                         f"{cfg.target!r} to learn; the classifier needs at least 2 (run the cluster stage, or "
                         f"lower spatial.min_samples)")
    files = lake_files(config, spark)
    work = files.sub("work", "classify", dataset, run.run_id)
    # deterministic (seeded hashes), so a lost block is recomputed to the same rows
    split = split_labelled(clusters, raw_pixels, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    persisted = [split]
    try:
        with files.staged("outputs", dataset, run.run_id) as outputs:
            counts = counts_by_split(split)            # the action that fills the cache
            held_out_pixels = sum(counts["validation"].values())
            run.count("classify_held_out", held_out_pixels)
            accuracy, trained, versions, metric_frames = {}, {}, {}, []
            prepared = None
            for name in cfg.models:
                store = classifier_store(config, dataset, name, spark)
                arch = architecture(cfg, name, len(dates), len(labels))
                since = runs_since_fit(spark, config, dataset, store)
                saved = store.reusable_by_policy(ClassifierModel.load, lambda m: _matches(m, arch, cfg.target, labels),
                                                 lambda m: m.epoch_dates, dates, ReusePolicy.of(config.models),
                                                 since, cfg.retrain)
                trained[name] = saved is None
                run.model_use("classifier", name, None if saved is None else saved[2], since)
                if saved is None:
                    with run.stage(f"classify.train_{name}"):
                        if prepared is None:
                            prepared = _prepare_training(split, counts, labels, cfg, work, run)
                            persisted.append(prepared[-1])
                        model = _trained(spark, cfg, arch, labels, dates, prepared, work, run, name)
                        store.save(run.run_id, model.save, make_latest=False)   # the newest once evaluated
                    version = run.run_id
                else:
                    model, version, _ = saved
                versions[name] = version
                with run.stage(f"classify.evaluate_{name}"):
                    held_out = evaluation_sample(split.where(F.col("split") == "validation"), held_out_pixels,
                                                 cfg.max_evaluation_pixels, cfg.split_seed + 3)
                    predicted = predict(held_out, store, version, cfg.threshold, dataset, run.run_id,
                                        network_rows=cfg.network_batch_rows)
                    with arrow_batch_rows(spark, cfg.inference_batch_size):
                        pairs = confusion_counts(predicted.join(held_out.select("pixel_id", "class_id"), "pixel_id"))
                        pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
                        persisted.append(pairs)
                        acc, total = accuracy_of(pairs)
                    accuracy[name] = acc
                    run.metrics[f"classify_{name}_accuracy"] = acc
                    log.info("%s (target %s): held-out accuracy %.4f on %d pixels", name, cfg.target, acc, total)
                    run.count(f"classify_{name}_evaluated", total)
                    model.metrics = {"accuracy": acc, "held_out_pixels": total}
                    if trained[name]:                            # with its metrics, and now the newest
                        store.save(version, model.save, params={
                            "architecture": asdict(arch), "target": cfg.target, "classes": len(labels),
                            "epochs": len(dates), "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                            "max_train_pixels_per_class": cfg.max_train_pixels_per_class,
                            "max_train_pixels": cfg.max_train_pixels},
                            metrics={"accuracy": acc, "held_out_pixels": total,
                                     "best_epoch": model.training.get("best_epoch"),
                                     "train_seconds": model.training.get("seconds")})
                    per_class = class_metrics(pairs, labels)
                    metric_frames.append(per_class.select(
                        F.lit(dataset).alias("dataset"), F.lit(run.run_id).alias("run_id"), F.lit(name).alias("model"),
                        F.lit(version).alias("model_version"), F.lit(model.target).alias("target"),
                        F.lit("validation").alias("split"), F.lit(acc).cast("double").alias("accuracy"), "*"))
                    if len(labels) <= _PLOT_MAX_CLASSES:
                        plot_confusion(per_class.toPandas(), labels, outputs / f"confusion_{name}.png",
                                       f"{dataset}: {name} ({cfg.target}), held-out accuracy {acc:.3f}")
                    else:
                        log.info("%d classes: no confusion picture (classifier_metrics has the sparse matrix)",
                                 len(labels))
            metrics = metric_frames[0]
            for frame in metric_frames[1:]:
                metrics = metrics.unionByName(frame)
            with delta_schema_merge(spark):
                write_table(spark, metrics.select(*METRICS_SCHEMA.fieldNames()), config, "classifier_metrics",
                            datasets=[dataset], run=run)
            chosen = max(accuracy, key=lambda k: accuracy[k]) if cfg.predict_with == "best" else cfg.predict_with
            with run.stage("classify.predict"):
                classes = predict(pixels, classifier_store(config, dataset, chosen, spark), versions[chosen],
                                  cfg.threshold, dataset, run.run_id, network_rows=cfg.network_batch_rows)
                with arrow_batch_rows(spark, cfg.inference_batch_size), delta_schema_merge(spark):
                    write_table(spark, classes, config, "classes", datasets=[dataset], run=run)
                n = run_results(spark, config, "classes", dataset, run.run_id).count()
                expected = pixels.count()
                if n != expected:
                    raise RuntimeError(f"dataset {dataset}: classes has {n} rows for {expected} pixels")
                run.count("classes", n)
    finally:
        for frame in persisted:
            frame.unpersist()
        work.discard()
    return ClassifyResult(dataset, cfg.target, chosen, accuracy, trained, n, files.uri("outputs", dataset, run.run_id))


def _trained(spark: SparkSession, cfg: ClassifyConfig, arch: Architecture, labels: list[int], dates: list[str],
             prepared: tuple, work: LakeFiles, run: Run, name: str) -> ClassifierModel:
    """A newly trained classifier ``arch`` on the prepared training sample (_prepare_training)."""
    norm, weights, val_weights, _ = prepared
    result = train(spark, cfg, arch, norm, weights, work, val_weights)
    network = build(arch)
    network.load_state_dict(result["state_dict"])
    run.metrics[f"classify_{name}_train_seconds"] = float(result["seconds"])
    run.metrics[f"classify_{name}_epochs"] = float(len(result["history"]))
    return ClassifierModel(arch, norm, tuple(labels), tuple(dates), network,
                           training={"history": result["history"], "best_epoch": result["best_epoch"],
                                     "seconds": result["seconds"], "world_size": result["world_size"],
                                     "config": cfg.model_dump()}, target=cfg.target)


def _prepare_training(split: DataFrame, counts: dict[str, dict[int, int]], labels: list[int], cfg: ClassifyConfig,
                      folder: LakeFiles, run: Run) -> tuple[Normalisation, list[float], list[float], DataFrame]:
    """The bounded training sample (persisted), its normalisation, class and validation weights,
    and its shards written under ``folder``; its sizes recorded in the run's counts."""
    sample = training_sample(split, cfg, counts).persist(StorageLevel.MEMORY_AND_DISK)
    sampled = counts_by_split(sample)
    norm, weights = training_inputs(sample, cfg, labels)
    val_weights = validation_weights(counts["validation"], sampled["validation"], labels)
    rows = write_shards(sample, labels, cfg, folder)
    run.count("classify_train", rows["train"])
    run.count("classify_validation", rows["validation"])
    run.count("classify_unused", sum(counts["train"].values()) - rows["train"])
    log.info("training sample: %d of %d training pixels, %d of %d held-out pixels for early stopping, %d classes",
             rows["train"], sum(counts["train"].values()), rows["validation"], sum(counts["validation"].values()),
             len(labels))
    return norm, weights, val_weights, sample
