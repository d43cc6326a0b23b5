"""The cluster stage on Spark. Temporal: a spatially stratified sample reaches the driver, TSKM is
fitted there (or the dataset's saved model is reused), every pixel is assigned in ``mapInPandas``
with the exact soft-DTW kernel, and the co-variogram gives the spatial correlation length. Spatial:
exact DBSCAN inside each TSKM cluster (``insarlake.spatial``).

Writes `clusters` (tskm_label, cluster_id, is_core) and `covariogram`; the model goes to the model
store (<lake>/models/tskm/<dataset>/tskm/<run_id>/model.json) and the pictures (centroids,
co-variogram, cluster map) to <lake>/outputs/<dataset>/<run_id>/.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.cluster.space import cluster_in_space, map_sample, plot_clusters
from insarlake.config import Config
from insarlake.errors import InputError
from insarlake.lake import (Run, analysis_pixels, lake_files, model_store, read_table, run_results, runs_since_fit,
                           write_table)
from insarlake.modelstore import ModelStore
from insarlake.reuse import ReusePolicy
from insarlake.tables import schema
from insarlake.temporal.covariogram import covariogram, plot_covariogram
from insarlake.temporal.tskm import TskmModel, fit_tskm

log = logging.getLogger(__name__)

CLUSTERS_SCHEMA = schema("clusters")
TSKM_SCHEMA = T.StructType(CLUSTERS_SCHEMA.fields[:5])
# The settings a saved model must share with the config to be reused.
_MODEL_KEYS = ("metric", "gamma", "preprocessing", "k", "k_min", "k_max")


@dataclass(frozen=True)
class ClusterResult:
    dataset: str
    model: TskmModel
    reused_model: bool
    pixels: int
    correlation_length_km: float
    outputs: str


def tskm_store(config: Config, dataset: str, spark: SparkSession | None = None) -> ModelStore:
    """The saved TSKM models of ``dataset`` (one JSON file per version, ``model.json``)."""
    return model_store(config, "tskm", dataset, "tskm", spark)


def _read_tskm(folder: Path) -> TskmModel:
    return TskmModel.load(folder / "model.json")


def stratified_sample(pixels: DataFrame, size: int, seed: int) -> pd.DataFrame:
    """``size`` pixels (pixel_id, disp), or all when fewer, in the order of their seeded hash
    ``xxhash64(seed, pixel_id)``. Each tile contributes in proportion to its pixel count: its
    smallest hashes up to the quota ceil(n_tile * size / total); the quotas add up to at least
    ``size``, and the sample is every tile's first pixel (so each tile has one when there are at
    most ``size`` tiles), then the other quota pixels of smallest hash. Only the sample reaches
    the driver.

    No window over every row: per-tile counts (one row per tile) give each tile a hash threshold
    that keeps its quota plus a binomial margin (``_keep_share``); since a tile's kept rows are
    exactly its smallest hashes, ranking the small kept set gives the same sample as ranking all
    rows. A tile that keeps fewer than its quota (rare) is taken whole in a second pass."""
    tile = F.coalesce(F.col("tile_id").cast("string"), F.lit(""))
    hashed = pixels.select(tile.alias("_tile"), "pixel_id", "disp",
                           F.xxhash64(F.lit(seed), "pixel_id").alias("_h"))
    counts = hashed.groupBy("_tile").agg(F.count(F.lit(1)).alias("_n")).persist(StorageLevel.MEMORY_AND_DISK)
    total = counts.agg(F.sum("_n")).first()[0] or 0
    quotas = counts.select("_tile", "_n", F.ceil(F.col("_n") * F.lit(size / max(total, 1))).alias("_quota"))
    # The hash as a uniform share in [0, 1], monotone in _h (so "share < threshold" keeps a prefix).
    share = (F.col("_h").cast("double") + F.lit(2.0 ** 63)) / F.lit(2.0 ** 64)
    keep = _keep_share(F.col("_quota"), F.col("_n"))
    kept = (hashed.join(F.broadcast(quotas), "_tile").where((keep >= 1.0) | (share < keep))
            .persist(StorageLevel.MEMORY_AND_DISK))
    kept_per_tile = kept.groupBy("_tile").agg(F.count(F.lit(1)).alias("_kept"))
    short = [r._tile for r in quotas.join(kept_per_tile, "_tile", "left")
             .where(F.coalesce("_kept", F.lit(0)) < F.col("_quota")).select("_tile").collect()]
    candidates = kept
    if short:
        log.info("TSKM sample: %d tiles kept fewer than their quota after the hash filter; taking them whole",
                 len(short))
        candidates = (kept.where(~F.col("_tile").isin(short))
                      .unionByName(hashed.where(F.col("_tile").isin(short)).join(F.broadcast(quotas), "_tile")))
    rank = F.row_number().over(Window.partitionBy("_tile").orderBy("_h", "pixel_id"))
    sample = (candidates.withColumn("_rank", rank).where(F.col("_rank") <= F.col("_quota"))
              .orderBy(F.col("_rank") > 1, "_h", "pixel_id").limit(size)
              .select("pixel_id", "disp", "_h").toPandas()
              .sort_values(["_h", "pixel_id"], kind="stable").drop(columns="_h").reset_index(drop=True))
    kept.unpersist()
    counts.unpersist()
    log.info("TSKM sample: %d of %d pixels", len(sample), total)
    return sample


def _keep_share(quota, n):
    """Hash share kept in a tile of ``n`` pixels with a ``quota`` (Spark columns): the quota plus
    3 binomial standard deviations and 3, so a tile keeps fewer than its quota with probability
    below ~1e-3 (then it is taken whole)."""
    return F.least(F.lit(1.0), (quota + F.lit(3.0) * F.sqrt(quota) + F.lit(3.0)) / n)


def _same_settings(model: TskmModel, config: Config) -> bool | str:
    """True when ``model`` was fitted with these temporal settings; else why not (its epochs are
    the reuse policy's: reuse.py)."""
    wanted = {k: getattr(config.temporal, k) for k in _MODEL_KEYS}
    saved = {k: model.settings.get(k) for k in _MODEL_KEYS}
    return True if saved == wanted else f"other temporal settings ({saved} vs {wanted})"


def fit_or_reuse(spark: SparkSession, config: Config, dataset: str, pixels: DataFrame,
                 dates: list[str], run: Run) -> tuple[TskmModel, bool]:
    """The dataset's saved TSKM model when the settings and the reuse policy (models.*) allow it,
    else one fitted on a stratified sample; records which in ``run.metrics``."""
    cfg = config.temporal
    store = tskm_store(config, dataset, spark)
    since = runs_since_fit(spark, config, dataset, store)
    saved = store.reusable_by_policy(_read_tskm, lambda m: _same_settings(m, config), lambda m: m.epoch_dates,
                                     dates, ReusePolicy.of(config.models), since, retrain=not cfg.reuse_model)
    if saved is not None:
        model, _, verdict = saved
        run.model_use("tskm", "tskm", verdict, since)
        log.info("TSKM model reused (k=%d; %s)", model.k, verdict.why)
        return model, True
    run.model_use("tskm", "tskm", None, 0)
    sample = stratified_sample(pixels, cfg.sample_size, cfg.seed)
    series = np.stack(sample["disp"].to_numpy()).astype(np.float64)
    k_values = [cfg.k] if cfg.k is not None else list(range(cfg.k_min, cfg.k_max + 1))
    model = fit_tskm(series, dates, metric=cfg.metric, gamma=cfg.gamma, preprocessing=cfg.preprocessing,
                     k_values=k_values, seed=cfg.seed, max_iter=cfg.max_iter,
                     max_iter_barycenter=cfg.max_iter_barycenter, silhouette_size=cfg.silhouette_size,
                     settings={k: getattr(cfg, k) for k in _MODEL_KEYS})
    store.save(run.run_id, lambda folder: model.save(folder / "model.json"),
               params={**model.settings, "k": model.k, "epochs": len(dates), "sample_size": len(series)},
               metrics={"silhouette": model.silhouette_by_k.get(model.k, math.nan),
                        "inertia": model.inertia_by_k.get(model.k, math.nan)})
    return model, False


def assign_pixels(pixels: DataFrame, model: TskmModel, dataset: str, run_id: str,
                  with_distance: bool) -> DataFrame:
    """Every pixel's TSKM label (and distance, NaN unless ``with_distance``) with the model's exact
    kernel, in mapInPandas: dataset, run_id, pixel_id, tskm_label, tskm_distance. The model reads
    the latest epochs of each series, as many as it was fitted on (all of them unless it is reused
    across an append: reuse.py)."""
    def assign(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            series = np.stack(batch["disp"].to_numpy()).astype(np.float64)
            if with_distance:
                labels, distance = model.assign(series, return_distance=True)
            else:
                labels, distance = model.assign(series), np.full(len(batch), np.nan)
            yield pd.DataFrame({"dataset": dataset, "run_id": run_id, "pixel_id": batch["pixel_id"].to_numpy(),
                                "tskm_label": labels.astype(np.int32),
                                "tskm_distance": np.where(with_distance, distance, np.nan)})

    n_epochs = len(model.epoch_dates)
    latest = F.slice("disp", -n_epochs, n_epochs).alias("disp")
    return pixels.select("pixel_id", latest).mapInPandas(assign, TSKM_SCHEMA)


def plot_centroids(model: TskmModel, path: Path) -> Path:
    """PNG of the centroids (mm against date), one line per TSKM label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    dates = pd.to_datetime(model.epoch_dates)
    for label, centroid in enumerate(model.centroids):
        ax.plot(dates, centroid, label=f"TSKM {label}")
    unit = "z-score" if model.preprocessing == "znorm" else "mm"
    ax.set(xlabel="date", ylabel=f"LOS displacement ({unit})",
           title=f"TSKM centroids: {model.metric}, k={model.k}, silhouette {model.silhouette_by_k.get(model.k, math.nan):.2f}")
    ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def run_cluster(spark: SparkSession, config: Config, dataset: str, run: Run) -> ClusterResult:
    """TSKM label and DBSCAN cluster for every pixel of ``dataset``, plus its co-variogram;
    adds this run's rows of the dataset to `clusters` and `covariogram`."""
    pixels = analysis_pixels(spark, config, dataset).select("pixel_id", "lon", "lat", "tile_id", "disp")
    dates = [r.date.isoformat() for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
    if not dates:
        raise InputError(f"dataset {dataset}: no epochs in the lake (ingest it first)")
    files = lake_files(config, spark)
    with files.staged("outputs", dataset, run.run_id) as outputs:
        with run.stage("cluster.covariogram"):
            cov = covariogram(spark, pixels, config.covariogram)
            bins = spark.createDataFrame(cov.bins.assign(dataset=dataset, run_id=run.run_id)
                                         [["dataset", "run_id", "distance_km", "covariance", "pairs"]])
            write_table(spark, bins, config, "covariogram", datasets=[dataset], run=run)
            plot_covariogram(cov.bins, cov.correlation_length_km, outputs / "covariogram.png",
                             config.covariogram.fraction)
            run.metrics["correlation_length_km"] = float(cov.correlation_length_km)
            run.count("covariogram", len(cov.bins))
        with run.stage("cluster.tskm_fit"):
            model, reused = fit_or_reuse(spark, config, dataset, pixels, dates, run)
            plot_centroids(model, outputs / "centroids.png")
            run.metrics["tskm_k"] = float(model.k)
            run.metrics["tskm_silhouette"] = float(model.silhouette_by_k.get(model.k, math.nan))
        with run.stage("cluster.tskm_assign"):
            # persisted (not checkpointed): a lost executor recomputes its part; the assignment is
            # deterministic (the model's exact kernel on each pixel's series).
            labelled = (assign_pixels(pixels, model, dataset, run.run_id, config.temporal.write_distance)
                        .persist(StorageLevel.MEMORY_AND_DISK))
            labelled.count()
        with run.stage("cluster.dbscan"):
            located = labelled.join(pixels.select("pixel_id", "lon", "lat"), "pixel_id")
            clustered = cluster_in_space(located, config.spatial, cov.correlation_length_km, run)
            write_table(spark, clustered.select(*CLUSTERS_SCHEMA.fieldNames()), config, "clusters", datasets=[dataset],
                        run=run)
            n = run_results(spark, config, "clusters", dataset, run.run_id).count()
            expected = pixels.count()
            if n != expected:
                raise RuntimeError(f"dataset {dataset}: clusters has {n} rows for {expected} pixels")
            run.count("clusters", n)
        labelled.unpersist()
        with run.stage("cluster.map"):
            written = run_results(spark, config, "clusters", dataset, run.run_id).join(
                pixels.select("pixel_id", "lon", "lat"), "pixel_id")
            plot_clusters(map_sample(written, n, config.spatial.map_max_points), outputs / "clusters.png",
                          f"{dataset}: DBSCAN per TSKM cluster, {int(run.metrics['dbscan_clusters'])} clusters")
    return ClusterResult(dataset, model, reused, n, float(cov.correlation_length_km),
                         files.uri("outputs", dataset, run.run_id))
