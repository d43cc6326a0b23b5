"""The classify stage on Spark: train the cluster classifiers on `clusters.cluster_id` (or reuse
saved ones), label every pixel, evaluate on the held-out split.

Steps: split the labelled pixels at random per pixel (seeded hash); normalisation statistics and
class weights from the training split (Spark aggregates); both splits written as Parquet shards
under <lake>/work/classify/<dataset>/<run_id>/; training with TorchDistributor (or in the driver
for one process); inference in ``mapInPandas`` with the model loaded once per Python worker;
`classes` from the chosen model, `classifier_metrics` (accuracy, per-class precision/recall/F1,
row-normalised confusion matrix on the held-out split) for every model, a confusion-matrix PNG.
Models: <lake>/models/classifier/<dataset>/<model>/<run_id>/ with latest.json naming the newest.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.classify.model import STATIC_FEATURES, Architecture, ClassifierModel, Normalisation, build
from insarlake.config import ClassifyConfig, Config
from insarlake.errors import InputError
from insarlake.lake import Run, files_dir, latest_version, mark_latest, read_table, write_table

log = logging.getLogger(__name__)

CLASSES_SCHEMA = T.StructType([
    T.StructField("dataset", T.StringType()), T.StructField("run_id", T.StringType()),
    T.StructField("pixel_id", T.StringType()), T.StructField("predicted_cluster", T.LongType()),
    T.StructField("probability", T.FloatType()), T.StructField("model", T.StringType()),
])
METRICS_SCHEMA = T.StructType([
    T.StructField("dataset", T.StringType()), T.StructField("run_id", T.StringType()),
    T.StructField("model", T.StringType()), T.StructField("model_version", T.StringType()),
    T.StructField("split", T.StringType()), T.StructField("accuracy", T.DoubleType()),
    T.StructField("true_cluster", T.LongType()), T.StructField("support", T.LongType()),
    T.StructField("precision", T.DoubleType()), T.StructField("recall", T.DoubleType()),
    T.StructField("f1", T.DoubleType()),
    T.StructField("confusion", T.MapType(T.LongType(), T.DoubleType())),
])
_SPLIT_BUCKETS = 1_000_000


@dataclass(frozen=True)
class ClassifyResult:
    dataset: str
    chosen: str
    accuracy: dict          # model -> held-out accuracy
    trained: dict           # model -> True (trained this run) / False (reused)
    pixels: int
    outputs: str


def model_root(config: Config, dataset: str, name: str) -> Path:
    return files_dir(config, "models", "classifier", dataset, name)


def latest_model(config: Config, dataset: str, name: str) -> Path | None:
    """The folder of the newest saved ``name`` model of ``dataset``, or None."""
    return latest_version(model_root(config, dataset, name))


def architecture(cfg: ClassifyConfig, name: str, n_epochs: int, n_classes: int) -> Architecture:
    return Architecture(name, n_epochs, n_classes, tuple(cfg.lstm_units), tuple(cfg.perceptron_units),
                        tuple(cfg.dense_units), cfg.dropout)


def with_features(pixels: DataFrame) -> DataFrame:
    """pixel_id, disp and the static feature array ``statics`` (velocity, velocity_std, coherence,
    incidence_angle; a missing value becomes NaN, filled by the normalisation)."""
    return pixels.select("pixel_id", "disp", F.array(*[F.coalesce(F.col(c).cast("double"), F.lit(float("nan")))
                                                       for c in STATIC_FEATURES]).alias("statics"))


def split_labelled(clusters: DataFrame, pixels: DataFrame, cfg: ClassifyConfig) -> DataFrame:
    """Labelled pixels (noise dropped unless noise_as_class) with ``split``: train / validation at
    random per pixel (a seeded hash), and training pixels over max_train_pixels_per_cluster (a
    seeded random subset per cluster, so about that many remain) moved to 'unused'."""
    labelled = clusters.select("pixel_id", "cluster_id")
    if not cfg.noise_as_class:
        labelled = labelled.where(F.col("cluster_id") >= 0)

    def draw(seed: int):
        return F.pmod(F.xxhash64(F.lit(seed), "pixel_id"), F.lit(_SPLIT_BUCKETS))

    split = (with_features(pixels).join(labelled, "pixel_id")
             .withColumn("split", F.when(draw(cfg.split_seed) < int(cfg.train_share * _SPLIT_BUCKETS), "train")
                         .otherwise("validation")))
    cap = cfg.max_train_pixels_per_cluster
    if cap is None:
        return split
    counts = split.where(F.col("split") == "train").groupBy("cluster_id").count().collect()
    keep = [(int(c), int(cap / n * _SPLIT_BUCKETS)) for c, n in counts if n > cap]
    if not keep:
        return split
    limits = split.sparkSession.createDataFrame(keep, "cluster_id long, keep_below long")
    unused = (F.col("split") == "train") & F.col("keep_below").isNotNull() & (draw(cfg.split_seed + 1) >= F.col("keep_below"))
    return (split.join(F.broadcast(limits), "cluster_id", "left")
            .withColumn("split", F.when(unused, "unused").otherwise(F.col("split"))).drop("keep_below"))


def training_inputs(split: DataFrame, cfg: ClassifyConfig, labels: list[int]) -> tuple[Normalisation, list[float]]:
    """Normalisation statistics and class weights ((n / (k n_class)) ** class_weight_power; 0 for a
    class absent from the training split) from the training split."""
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
    counts = dict(train.groupBy("cluster_id").count().collect())
    missing = [c for c in labels if c not in counts]
    if missing:
        log.warning("clusters %s have no pixel in the training split", missing[:10])
    total = sum(counts.values())
    weights = [(total / (len(labels) * counts[c])) ** cfg.class_weight_power if counts.get(c) else 0.0
               for c in labels]
    return norm, weights


def write_shards(split: DataFrame, labels: list[int], cfg: ClassifyConfig, folder: Path) -> dict[str, int]:
    """train/ and validation/ Parquet folders partitioned by shard; rows per split."""
    spark = split.sparkSession
    mapping = spark.createDataFrame([(int(c), i) for i, c in enumerate(labels)], "cluster_id long, target int")
    rows = (split.join(F.broadcast(mapping), "cluster_id")
            .withColumn("shard", F.pmod(F.xxhash64(F.lit(cfg.seed), "pixel_id"), F.lit(cfg.shards)).cast("int"))
            .select("split", "shard", F.col("disp").alias("series"), "statics", "target"))
    if folder.exists():
        shutil.rmtree(folder)
    counts = {}
    for name in ("train", "validation"):
        part = rows.where(F.col("split") == name).drop("split")
        part.repartition(cfg.shards, "shard").write.partitionBy("shard").parquet(str(folder / name))
        counts[name] = spark.read.parquet(str(folder / name)).count()
    return counts


def train(spark: SparkSession, cfg: ClassifyConfig, arch: Architecture, norm: Normalisation, weights: list[float],
          folder: Path) -> dict:
    """Run ``train_worker`` on the shards: TorchDistributor for several processes, directly for one."""
    from insarlake.classify.train import train_worker

    args = {"train_dir": str(folder / "train"), "val_dir": str(folder / "validation"), "shards": cfg.shards,
            "architecture": asdict(arch), "normalisation": asdict(norm), "class_weights": weights,
            "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "max_epochs": cfg.max_epochs,
            "patience": cfg.patience, "seed": cfg.seed, "threads": cfg.threads_per_process,
            "backend": "nccl" if cfg.use_gpu else "gloo"}
    if cfg.num_processes == 1 and not cfg.use_gpu:
        return train_worker(args)
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=cfg.num_processes, local_mode=cfg.local_mode, use_gpu=cfg.use_gpu)
    return distributor.run(train_worker, args)


# one loaded model per Python worker process, keyed by folder and weights checksum
_LOADED: dict[tuple[str, str], ClassifierModel] = {}


def _load_cached(folder: str, sha: str, threads: int) -> ClassifierModel:
    key = (folder, sha)
    if key not in _LOADED:
        import torch

        torch.set_num_threads(threads)
        _LOADED.clear()
        _LOADED[key] = ClassifierModel.load(Path(folder))
    return _LOADED[key]


@contextmanager
def arrow_batch_rows(spark: SparkSession, rows: int):
    """Within the block, Spark's Arrow batches to mapInPandas hold at most ``rows`` rows (the
    inference batch); the session's setting is restored after."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(int(rows)))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def predict(pixels: DataFrame, folder: Path, model_name: str, threshold: float, dataset: str, run_id: str,
            threads: int = 1, batch_rows: int = 4096) -> DataFrame:
    """`classes` rows for ``pixels`` (pixel_id, disp, statics) from the model in ``folder``, the
    network run on at most ``batch_rows`` rows at a time; run its actions inside
    ``arrow_batch_rows(spark, batch_rows)`` so that Spark's Arrow batches have that size too."""
    sha = json.loads((folder / "model.json").read_text())["weights_sha256"]
    folder_s = str(folder)

    def classify(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _load_cached(folder_s, sha, threads)
        for batch in batches:
            if batch.empty:
                continue
            series = np.stack(batch["disp"].to_numpy()).astype(np.float64)
            statics = np.stack(batch["statics"].to_numpy()).astype(np.float64)
            cluster, probability = model.predict(series, statics, threshold, batch_rows)
            yield pd.DataFrame({"dataset": dataset, "run_id": run_id, "pixel_id": batch["pixel_id"].to_numpy(),
                                "predicted_cluster": cluster, "probability": probability.astype(np.float32),
                                "model": model_name})

    return pixels.select("pixel_id", "disp", "statics").mapInPandas(classify, CLASSES_SCHEMA)


def evaluation(truth_pred: pd.DataFrame, labels: list[int]) -> tuple[float, pd.DataFrame]:
    """Accuracy and per-class rows (true_cluster, support, precision, recall, f1, confusion) from
    counts: truth_pred columns cluster_id, predicted_cluster, count. A prediction of -1 (below the
    threshold) counts as wrong; the confusion row of a class is normalised to sum 1."""
    matrix = truth_pred.pivot_table(index="cluster_id", columns="predicted_cluster", values="count",
                                    aggfunc="sum", fill_value=0)
    total = int(truth_pred["count"].sum())
    right = int(truth_pred.loc[truth_pred.cluster_id == truth_pred.predicted_cluster, "count"].sum())
    rows = []
    for c in labels:
        support = int(matrix.loc[c].sum()) if c in matrix.index else 0
        tp = int(matrix.loc[c, c]) if c in matrix.index and c in matrix.columns else 0
        predicted = int(matrix[c].sum()) if c in matrix.columns else 0
        precision = tp / predicted if predicted else math.nan
        recall = tp / support if support else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
        confusion = ({int(k): float(v) / support for k, v in matrix.loc[c].items() if v} if support else {})
        rows.append({"true_cluster": int(c), "support": support, "precision": precision, "recall": recall,
                     "f1": f1, "confusion": confusion})
    return (right / total if total else math.nan), pd.DataFrame(rows)


def plot_confusion(per_class: pd.DataFrame, labels: list[int], path: Path, title: str) -> Path:
    """PNG of the row-normalised confusion matrix (seed Fig. 9), labels (and -1) on both axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = labels + ([-1] if any(-1 in row for row in per_class["confusion"]) and -1 not in labels else [])
    grid = np.array([[row.get(c, 0.0) for c in columns] for row in per_class["confusion"]])
    size = max(5.0, 0.35 * len(columns) + 2)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true cluster")
    ticks = [str(c) for c in columns]
    ax.set_xticks(range(len(columns)), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), [str(c) for c in labels], fontsize=7)
    if len(columns) <= 25:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if grid[i, j] >= 0.005:
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if grid[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted cluster", ylabel="true cluster (DBSCAN)", title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _reusable(folder: Path | None, arch: Architecture, labels: list[int], dates: list[str]) -> ClassifierModel | None:
    if folder is None:
        return None
    model = ClassifierModel.load(folder)
    if model.arch != arch or list(model.labels) != labels or list(model.epoch_dates) != dates:
        log.info("saved model %s does not match the clusters, epochs or architecture: retraining", folder)
        return None
    return model


def run_classify(spark: SparkSession, config: Config, dataset: str, run: Run) -> ClassifyResult:
    """Train (or reuse) every configured model, write `classes` from the chosen one and
    `classifier_metrics` for all; replaces the dataset's rows in both tables."""
    cfg = config.classify
    pixels = with_features(read_table(spark, config, "pixels", [dataset]))
    clusters = read_table(spark, config, "clusters", [dataset])
    dates = [r.date.isoformat() for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
    labels = cluster_labels(clusters, cfg)
    if len(labels) < 2:
        raise InputError(f"dataset {dataset}: clusters has {len(labels)} class(es) to learn; the classifier needs "
                         f"at least 2 (run the cluster stage, or lower spatial.min_samples)")
    outputs = files_dir(config, "outputs", dataset, run.run_id)
    split = split_labelled(clusters, read_table(spark, config, "pixels", [dataset]), cfg).localCheckpoint(eager=True)
    folder = files_dir(config, "work", "classify", dataset, run.run_id)
    accuracy, trained, versions, metric_rows = {}, {}, {}, []
    prepared = None
    for name in cfg.models:
        arch = architecture(cfg, name, len(dates), len(labels))
        version_dir = None if cfg.retrain else latest_model(config, dataset, name)
        model = _reusable(version_dir, arch, labels, dates)
        if model is None:
            with run.stage(f"classify.train_{name}"):
                if prepared is None:
                    norm, weights = training_inputs(split, cfg, labels)
                    rows = write_shards(split, labels, cfg, folder)
                    run.count("classify_train", rows["train"])
                    run.count("classify_validation", rows["validation"])
                    run.count("classify_unused", split.where(F.col("split") == "unused").count())
                    prepared = (norm, weights)
                norm, weights = prepared
                result = train(spark, cfg, arch, norm, weights, folder)
                network = build(arch)
                network.load_state_dict(result["state_dict"])
                model = ClassifierModel(arch, norm, tuple(labels), tuple(dates), network,
                                        training={"history": result["history"], "best_epoch": result["best_epoch"],
                                                  "seconds": result["seconds"], "world_size": result["world_size"],
                                                  "config": asdict(cfg)})
                version_dir = model.save(model_root(config, dataset, name) / run.run_id)
                run.metrics[f"classify_{name}_train_seconds"] = float(result["seconds"])
                run.metrics[f"classify_{name}_epochs"] = float(len(result["history"]))
        versions[name], trained[name] = version_dir, version_dir.name == run.run_id
        with run.stage(f"classify.evaluate_{name}"):
            held_out = split.where(F.col("split") == "validation")
            predicted = predict(held_out, version_dir, name, cfg.threshold, dataset, run.run_id,
                                batch_rows=cfg.inference_batch_size)
            with arrow_batch_rows(spark, cfg.inference_batch_size):
                counts = (predicted.join(held_out.select("pixel_id", "cluster_id"), "pixel_id")
                          .groupBy("cluster_id", "predicted_cluster").count().toPandas())
            acc, per_class = evaluation(counts, labels)
            accuracy[name] = acc
            run.metrics[f"classify_{name}_accuracy"] = acc
            log.info("%s: held-out accuracy %.4f on %d pixels", name, acc, int(counts["count"].sum()))
            model.metrics = {"accuracy": acc, "held_out_pixels": int(counts["count"].sum())}
            if trained[name]:
                model.save(version_dir)
                mark_latest(model_root(config, dataset, name), run.run_id)
            rows = per_class.assign(dataset=dataset, run_id=run.run_id, model=name, model_version=version_dir.name,
                                    split="validation", accuracy=acc)
            metric_rows.append(rows[METRICS_SCHEMA.fieldNames()])
            plot_confusion(per_class, labels, outputs / f"confusion_{name}.png",
                           f"{dataset}: {name}, held-out accuracy {acc:.3f}")
    write_table(spark, spark.createDataFrame(pd.concat(metric_rows, ignore_index=True), METRICS_SCHEMA), config,
                "classifier_metrics", datasets=[dataset])
    chosen = max(accuracy, key=lambda k: accuracy[k]) if cfg.predict_with == "best" else cfg.predict_with
    with run.stage("classify.predict"):
        classes = predict(pixels, versions[chosen], chosen, cfg.threshold, dataset, run.run_id,
                          batch_rows=cfg.inference_batch_size)
        with arrow_batch_rows(spark, cfg.inference_batch_size):
            write_table(spark, classes, config, "classes", datasets=[dataset])
        n = read_table(spark, config, "classes", [dataset]).count()
        expected = pixels.count()
        if n != expected:
            raise RuntimeError(f"dataset {dataset}: classes has {n} rows for {expected} pixels")
        run.count("classes", n)
    if folder.exists():
        shutil.rmtree(folder)
    return ClassifyResult(dataset, chosen, accuracy, trained, n, str(outputs))


def cluster_labels(clusters: DataFrame, cfg: ClassifyConfig) -> list[int]:
    """The classes to learn: the sorted cluster ids of `clusters` (without noise unless noise_as_class)."""
    ids = clusters.select("cluster_id").distinct()
    if not cfg.noise_as_class:
        ids = ids.where(F.col("cluster_id") >= 0)
    return sorted(int(r[0]) for r in ids.collect() if r[0] is not None)
