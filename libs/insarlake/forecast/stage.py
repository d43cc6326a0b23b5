"""The forecast stage (Spark side): pixels -> spatial graph and subgraphs -> trained forecasters ->
`forecasts` (DAPF: mean and quantiles of the epochs after the record) and `forecast_metrics` (every
model on the test windows, per subset of pixels and per forecast step). Numerical work is in the
pure modules: ``graph`` (kNN, METIS, halos), ``windows`` (split, normalisation, batches), ``dapf``
and ``baselines`` (the models), ``metrics``, ``train`` (distributed training).

Scale: nothing per pixel reaches the driver and nothing that grows with the scene is broadcast.
The pixels are binned into square cells of ``graph_cell_km``; one task per cell gets the cell's
pixels plus its neighbours' within (halo_hops + 1) x graph_max_distance_m, builds the exact kNN
graph there, cuts the cell's pixels into METIS subgraphs of ~``nodes_per_subgraph`` and adds each
one's ``halo_hops``-hop halo. Every subgraph row carries its neighbours (``nbr``: slots within the
subgraph), so a subgraph's edges and halo travel with it. Training reads a bounded, seeded sample of
``train_subgraphs`` subgraphs (Parquet shards written by Spark); forecasting and evaluation run per
subgraph in Spark.

Partitions: the cell tasks and the subgraph rows are hash-partitioned into ``tasks`` partitions,
one per ``forecast.pixels_per_task`` pixels (at least Spark's default parallelism), so a task's
share stays bounded as the scene grows. ``Prepared.members`` is cached partitioned and sorted by
subgraph: forecasting and evaluation group it by subgraph without another shuffle.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.config import Config, ForecastConfig, replace
from insarlake.errors import InputError
from insarlake.forecast import CLASSICAL_MODELS
from insarlake.forecast.graph import cell_subgraphs, edges_from_neighbours, neighbour_lists
from insarlake.forecast.model import ForecastModel, forecast_distribution, forecast_store
from insarlake.forecast.windows import (Normalisation, WindowSplit, cadence_years, change_moments, future_times,
                                       record_fit, window_batch)
from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import to_local_m
from insarlake.files import LakeFiles
from insarlake.lake import (Run, analysis_pixels, lake_files, latest_run_id, read_table, run_results, runs_since_fit,
                           table_exists, write_table)
from insarlake.launch import run_training
from insarlake.reuse import ReusePolicy, Verdict
from insarlake.spark import default_parallelism, delta_schema_merge
from insarlake.tables import schema
from insarlake.temporal.softdtw import fill_missing

log = logging.getLogger(__name__)
# Decimal type of the exact sums of the normalisation statistics: 12 decimals (coordinates in km
# and degrees, squared mm), 26 integer digits (10^8 pixels x 10^8 mm^2 fits).
_EXACT = "decimal(38,12)"

FORECASTS_SCHEMA = schema("forecasts")
_STATS_SCHEMA = ("model string, subset string, horizon int, n double, sum_e double, sum_e2 double, "
                 "sum_abs_e double, sum_y double, sum_y2 double, covered double, with_interval boolean")
_MEMBERS_SCHEMA = "subgraph string, pixel_id string, slot int, core boolean, nbr array<int>"
# quantiles written to `forecasts`; the 90 % interval is p05..p95
QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class Prepared:
    """Everything the models need, shared by training, evaluation and forecasting."""
    dataset: str
    split: WindowSplit
    norm: Normalisation
    dates: list                    # (T,) dt.date
    t_years: np.ndarray            # (T,) years since the first epoch
    members: DataFrame             # subgraph, pixel_id, slot, core, nbr, coords (normalised), series (gap-free mm);
                                   # partitioned and sorted by subgraph, over a cached frame (``release``)
    shards: LakeFiles              # the training sample: Parquet by part (its core nodes), in the lake
    train_parts: dict              # {part: nodes} of the training sample
    train_ids: tuple               # (P,) subgraph id of each part of the training sample
    pixels: int
    edges: int                     # directed edges of the symmetric graph (each undirected edge twice)
    subgraphs: int
    cached: DataFrame | None = None   # the persisted frame under ``members``

    def release(self) -> None:
        """Drop the cached subgraph rows."""
        if self.cached is not None:
            self.cached.unpersist()


def gap_free(pixels: DataFrame, centre: tuple[float, float], horizon: int, t1: int) -> DataFrame:
    """pixel_id, lon, lat, x_km, y_km, height, series (gap-free mm; NaN epochs interpolated as in
    TSKM), and the parts of the normalisation's scale_mm: change_count and change_sumsq (count and
    sum of squares, mm^2, of the pixel's ``horizon``-epoch changes over the epochs before ``t1``)."""
    lon0, lat0 = centre

    def fill(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            if b.empty:
                continue
            raw = np.stack(b["disp"].to_numpy()).astype(np.float64)
            bad = np.isnan(raw).all(axis=1)
            if bad.any():
                raise InputError(f"pixels: pixel {b['pixel_id'].to_numpy()[bad][0]} has no valid displacement; "
                                 "forecasting needs at least one")
            series = fill_missing(raw)
            count, sumsq = change_moments(series, horizon, t1)
            x_m, y_m = to_local_m(b["lon"].to_numpy(), b["lat"].to_numpy(), lon0, lat0)
            yield pd.DataFrame({"pixel_id": b["pixel_id"].to_numpy(), "lon": b["lon"].to_numpy(),
                                "lat": b["lat"].to_numpy(), "x_km": x_m / 1000.0, "y_km": y_m / 1000.0,
                                "height": b["height"].to_numpy(np.float64), "series": list(series),
                                "change_count": np.full(len(series), count, np.int64), "change_sumsq": sumsq})

    schema = ("pixel_id string, lon double, lat double, x_km double, y_km double, height double, "
              "series array<double>, change_count long, change_sumsq double")
    return pixels.select("pixel_id", "lon", "lat", "height", "disp").mapInPandas(fill, schema)


def task_count(spark: SparkSession, n_pixels: int, cfg: ForecastConfig) -> int:
    """Partitions of the graph's cell tasks and of the subgraph rows: one per
    ``cfg.pixels_per_task`` pixels, at least Spark's default parallelism."""
    return max(default_parallelism(spark), math.ceil(n_pixels / cfg.pixels_per_task))


def subgraph_members(points: DataFrame, cfg: ForecastConfig, tasks: int) -> DataFrame:
    """From ``points`` (pixel_id, lon, lat): subgraph (id "<cell x>_<cell y>_<part>"), pixel_id,
    slot (position in the subgraph: its own pixels first, then its halo), core (its own pixel; every
    pixel is core in exactly one subgraph), nbr (slots of the pixel's graph neighbours within the
    subgraph).

    One task per square cell of graph_cell_km (cells are at least that wide at the scene's highest
    latitude) gets the cell's pixels and every pixel of the 8 neighbouring cells within
    (halo_hops + 1) x graph_max_distance_m of it (per axis, a superset), which makes the kNN graph,
    its METIS parts and their halos exact (``graph.cell_subgraphs``). The cells are spread over
    ``tasks`` partitions (their input is small, their kNN and METIS work is not: Spark's adaptive
    coalescing would leave a few tasks)."""
    abs_lat = points.agg(F.max(F.abs("lat"))).first()[0]
    cos_lat = max(math.cos(math.radians(abs_lat)), 1e-6)
    cell_lat = math.degrees(cfg.graph_cell_km * 1000.0 / EARTH_RADIUS_M)
    cell_lon = cell_lat / cos_lat
    margin_m = (cfg.halo_hops + 1) * cfg.graph_max_distance_m
    margin_lat = math.degrees(margin_m / EARTH_RADIUS_M)
    margin_lon = margin_lat / cos_lat
    cells = points.select("pixel_id", "lon", "lat", F.floor(F.col("lon") / cell_lon).alias("cx"),
                          F.floor(F.col("lat") / cell_lat).alias("cy"))

    def near(value: str, cell: str, step: float, margin: float, shift: int):
        """Whether a pixel is within ``margin`` (degrees) of the cell ``shift`` away along an axis."""
        if shift == 0:
            return F.lit(True)
        if shift > 0:
            return (F.col(cell) + 1) * step - F.col(value) <= margin
        return F.col(value) - F.col(cell) * step <= margin

    copies = None
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            part = (cells.where(near("lon", "cx", cell_lon, margin_lon, dx) & near("lat", "cy", cell_lat, margin_lat, dy))
                    .select("pixel_id", "lon", "lat", (F.col("cx") + dx).alias("cell_x"),
                            (F.col("cy") + dy).alias("cell_y"), F.lit(dx == 0 and dy == 0).alias("own")))
            copies = part if copies is None else copies.unionByName(part)
    k, max_m, size, hops, seed = (cfg.graph_k, cfg.graph_max_distance_m, cfg.nodes_per_subgraph, cfg.halo_hops,
                                  cfg.seed)

    def one(key, group: pd.DataFrame) -> pd.DataFrame:
        own = group["own"].to_numpy(bool)
        if not own.any():   # a cell with only its neighbours' margin
            return pd.DataFrame({"subgraph": pd.Series([], dtype=object), "pixel_id": pd.Series([], dtype=object),
                                 "slot": pd.Series([], dtype=np.int32), "core": pd.Series([], dtype=bool),
                                 "nbr": pd.Series([], dtype=object)})
        group = group.sort_values("pixel_id", kind="stable")   # the same input order on every attempt
        own = group["own"].to_numpy(bool)
        lon, lat = group["lon"].to_numpy(), group["lat"].to_numpy()
        x, y = to_local_m(lon, lat, float(lon[own].mean()), float(lat[own].mean()))
        ids = group["pixel_id"].to_numpy()
        frames = []
        for p, (nodes, is_core, local) in enumerate(cell_subgraphs(x, y, own, k, max_m, size, hops, seed)):
            frames.append(pd.DataFrame({"subgraph": f"{int(key[0])}_{int(key[1])}_{p}", "pixel_id": ids[nodes],
                                        "slot": np.arange(nodes.size, dtype=np.int32), "core": is_core,
                                        "nbr": neighbour_lists(local, nodes.size)}))
        return pd.concat(frames, ignore_index=True)

    return (copies.repartition(tasks, "cell_x", "cell_y").groupBy("cell_x", "cell_y")
            .applyInPandas(one, _MEMBERS_SCHEMA))


def subgraph_arrays(group: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows by slot, coords (n, 3) float32, series (n, T) float64 mm, local edge_index (2, E), core
    (n,) bool) of one subgraph's ``Prepared.members`` rows."""
    group = group.sort_values("slot")
    nbr = group["nbr"].to_numpy()
    edges = edges_from_neighbours([len(a) for a in nbr], np.concatenate(nbr) if len(nbr) else [], len(group))
    return (group, np.stack(group["coords"].to_numpy()).astype(np.float32),
            np.stack(group["series"].to_numpy()).astype(np.float64), edges, group["core"].to_numpy(bool))


def epoch_dates(spark: SparkSession, config: Config, dataset: str) -> list:
    """The dataset's epoch dates (dt.date), in order; InputError when it has none."""
    dates = [r.date for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
    if not dates:
        raise InputError(f"dataset {dataset}: no epochs; run ingest first")
    return dates


def window_split(cfg: ForecastConfig, n_epochs: int, dataset: str) -> WindowSplit:
    """The train/validation/test windows of a record of ``n_epochs`` under ``cfg``."""
    try:
        return WindowSplit.of(n_epochs, cfg.input_epochs, cfg.horizon_epochs, cfg.train_share, cfg.validation_share)
    except ValueError as exc:
        raise InputError(f"dataset {dataset}: forecast.input_epochs / horizon_epochs: {exc}") from None


def prepare(spark: SparkSession, config: Config, dataset: str, folder: LakeFiles,
            norm: Normalisation | None = None) -> Prepared:
    """Gap-free series, graph and subgraphs, split and normalisation (``norm``: a reused model's,
    else computed from the pixels); writes the training sample (``forecast.train_subgraphs``
    subgraphs chosen by a seeded hash) as Parquet into ``folder``."""
    cfg = config.forecast
    pixels = analysis_pixels(spark, config, dataset)
    dates = epoch_dates(spark, config, dataset)
    split = window_split(cfg, len(dates), dataset)
    t_years = np.array([(d - dates[0]).days / 365.25 for d in dates])
    n_pixels = pixels.count()
    if n_pixels < 2:
        raise InputError(f"dataset {dataset}: {n_pixels} pixel(s); forecasting needs at least 2")
    # Exact (decimal) sums, so the statistics are the same to the last bit whatever the
    # partitioning and the order of the sums: a saved model's normalisation then matches a re-run's.
    centre = pixels.agg(*[F.avg(F.col(c).cast(_EXACT)).cast("double") for c in ("lon", "lat")]).first()
    points = gap_free(pixels, (float(centre[0]), float(centre[1])), split.horizon, split.t1)
    tasks = task_count(spark, n_pixels, cfg)
    members = subgraph_members(pixels.select("pixel_id", "lon", "lat"), cfg, tasks)
    graph = (members.repartition(tasks, "pixel_id").join(points.drop("lon", "lat").repartition(tasks, "pixel_id"),
                                                         "pixel_id")
             .repartition(tasks, "subgraph").sortWithinPartitions("subgraph", "slot")
             .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        return _prepared(spark, cfg, dataset, folder, graph, split, dates, t_years, n_pixels, tasks, norm)
    except BaseException:
        graph.unpersist()
        raise


def _prepared(spark: SparkSession, cfg: ForecastConfig, dataset: str, folder: LakeFiles, graph: DataFrame,
              split: WindowSplit, dates: list, t_years: np.ndarray, n_pixels: int, tasks: int,
              given: Normalisation | None) -> Prepared:
    """``prepare``'s second half on the cached subgraph rows ``graph`` (``gap_free``'s columns by
    subgraph): normalisation (``given``, else computed), counts, the training sample."""
    coord_cols = ("x_km", "y_km", "height")
    core = graph.where("core")
    finite = {c: F.when(~F.isnan(c), F.col(c)) for c in coord_cols}
    total = core.agg(          # fills the cache; every pixel is core in one subgraph
        F.count("*").alias("pixels"), F.sum(F.size("nbr")).alias("edges"),
        *[F.count(finite[c]).cast("double").alias(f"{c}_n") for c in coord_cols],
        *[F.sum(finite[c].cast(_EXACT)).cast("double").alias(f"{c}_s") for c in coord_cols],
        *[F.sum((finite[c] * finite[c]).cast(_EXACT)).cast("double").alias(f"{c}_s2") for c in coord_cols],
        F.sum("change_count").alias("count"), F.sum(F.col("change_sumsq").cast(_EXACT)).cast("double").alias("sumsq"),
    ).first().asDict()
    if total["pixels"] != n_pixels:
        raise RuntimeError(f"forecast graph: {total['pixels']} pixels in subgraphs for {n_pixels} pixels")
    mean, std = [], []
    for c in coord_cols:
        n = total[f"{c}_n"] or 0.0
        mu = total[f"{c}_s"] / n if n else 0.0
        var = total[f"{c}_s2"] / n - mu * mu if n else 0.0
        mean.append(mu)
        std.append(math.sqrt(var) if var > 1e-12 * max(1.0, mu * mu) else 1.0)
    mean, std = tuple(mean), tuple(std)
    scale = math.sqrt(total["sumsq"] / total["count"]) if total["count"] else 0.0
    if not scale > 0:
        raise InputError(f"dataset {dataset}: the displacements do not change over the training epochs; nothing to forecast")
    norm = given or Normalisation(scale_mm=scale, coord_mean=mean, coord_std=std)
    mean, std = norm.coord_mean, norm.coord_std
    coords = F.array(*[((F.coalesce(F.col(c), F.lit(mu)) - mu) / sd).cast("float")
                       for c, mu, sd in zip(coord_cols, mean, std)])
    members = graph.select("subgraph", "pixel_id", "slot", "core", "nbr", coords.alias("coords"), "series")
    sizes = core.groupBy("subgraph").count().persist()        # one row per subgraph, one pass over the rows
    try:
        n_subgraphs = sizes.count()
        chosen = (sizes.orderBy(F.xxhash64(F.lit(cfg.seed), "subgraph"), "subgraph").limit(cfg.train_subgraphs)
                  .collect())
    finally:
        sizes.unpersist()
    log.info("forecast graph: %d pixels, %d edges (k %d within %.0f m), %d subgraphs in %d partitions", n_pixels,
             total["edges"], cfg.graph_k, cfg.graph_max_distance_m, n_subgraphs, tasks)
    sample = spark.createDataFrame([(r[0], i) for i, r in enumerate(chosen)], "subgraph string, part int")
    (members.where("core").join(F.broadcast(sample), "subgraph").select("part", "slot", "coords", "series", "nbr")
     .write.mode("overwrite").partitionBy("part").parquet(folder.uri("parts")))
    log.info("forecast training sample: %d of %d subgraphs, %d pixels", len(chosen), n_subgraphs,
             sum(r[1] for r in chosen))
    return Prepared(dataset, split, norm, dates, t_years, members, folder.sub("parts"),
                    {i: int(r[1]) for i, r in enumerate(chosen)}, tuple(r[0] for r in chosen), n_pixels,
                    int(total["edges"] or 0), n_subgraphs, cached=graph)


def train(prepared: Prepared, cfg: ForecastConfig, name: str) -> dict:
    """Run ``train_worker`` for model ``name`` on the training sample with ``run_training`` (in the
    driver for one CPU process, else on TorchDistributor)."""
    from insarlake.forecast.train import train_worker

    args = {"data_dir": prepared.shards, "parts": dict(prepared.train_parts), "model": name,
            "hyper": dict(cfg.hyper.get(name, {})), "split": prepared.split.as_dict(),
            "scale_mm": prepared.norm.scale_mm, "t_years": prepared.t_years.tolist(), "batch_parts": cfg.batch_parts,
            "windows_per_part": cfg.windows_per_part, "learning_rate": cfg.learning_rate,
            "max_epochs": cfg.max_epochs, "patience": cfg.patience, "seed": cfg.seed,
            "threads": cfg.threads_per_process, "calibrate_interval": cfg.calibrate_interval}
    return run_training(train_worker, args, cfg.num_processes, cfg.local_mode, cfg.use_gpu)


def saved_forecaster(spark: SparkSession, config: Config, dataset: str, name: str, dates: list,
                     store_name: str | None = None, norm: Normalisation | None = None
                     ) -> tuple[ForecastModel, str, Verdict, int] | None:
    """(model, version, the reuse policy's verdict, runs that reused it since its fit) of the saved
    forecaster ``name`` of the dataset (in its store ``store_name``, default ``name``) when retrain
    is off, its settings match (hyperparameters, the window split the settings give on its epochs,
    interval calibration; with ``norm``, also that normalisation) and the reuse policy (models.*,
    reuse.py) says reuse over ``dates``; else None."""
    cfg = config.forecast
    hyper = dict(cfg.hyper.get(name, {}))
    store = forecast_store(config, dataset, store_name or name, spark)

    def matches(saved: ForecastModel) -> bool | str:
        calibrated = saved.training.get("interval_scale") is not None
        if calibrated != (cfg.calibrate_interval and hasattr(saved.network, "predictive")):
            return "interval calibration differs"
        if norm is not None and not saved.norm.close_to(norm):
            return "other normalisation"
        try:
            split = window_split(cfg, len(saved.epoch_dates), dataset)
        except InputError:
            return "the window settings leave no windows on its epochs"
        return saved.same_settings(name, hyper, split)

    since = runs_since_fit(spark, config, dataset, store)
    saved = store.reusable_by_policy(ForecastModel.load, matches, lambda m: m.epoch_dates,
                                     [d.isoformat() for d in dates], ReusePolicy.of(config.models), since, cfg.retrain)
    return None if saved is None else (*saved, since)


def reused_normalisation(spark: SparkSession, config: Config, dataset: str, store_name: str = "dapf"
                         ) -> Normalisation | None:
    """The normalisation of the saved DAPF (in ``store_name``) when this run reuses it: the run
    then prepares its series and coordinates as that model was trained on them."""
    dates = epoch_dates(spark, config, dataset)
    saved = saved_forecaster(spark, config, dataset, "dapf", dates, store_name)
    return None if saved is None else saved[0].norm


def trained_model(prepared: Prepared, config: Config, name: str, run: Run, store_name: str | None = None
                  ) -> ForecastModel:
    """The saved model ``name`` of the dataset (in its store ``store_name``, default ``name``) when
    ``saved_forecaster`` allows it over the prepared record and its normalisation; else a newly
    trained one, saved. Records which in ``run.metrics`` (model_reused.forecast.<store>, ...)."""
    cfg = config.forecast
    hyper = dict(cfg.hyper.get(name, {}))
    store_name = store_name or name
    spark = prepared.members.sparkSession
    saved = saved_forecaster(spark, config, prepared.dataset, name, prepared.dates, store_name, prepared.norm)
    if saved is not None:
        model, _, verdict, since = saved
        run.model_use("forecast", store_name, verdict, since)
        log.info("forecast model %s reused (%s)", store_name, verdict.why)
        return model
    run.model_use("forecast", store_name, None, 0)
    result = train(prepared, cfg, name)
    model = ForecastModel.create(name, hyper, prepared.split, prepared.norm,
                                 [d.isoformat() for d in prepared.dates], result)
    best = result["history"][result["best_epoch"]]
    forecast_store(config, prepared.dataset, store_name, spark).save(
        run.run_id, model.save, params={"model": name, "hyper": hyper, "split": prepared.split.as_dict(),
                                        "train_subgraphs": len(prepared.train_parts)},
        metrics={"val_mse": best["val_mse"], "best_epoch": result["best_epoch"], "train_seconds": result["seconds"],
                 "interval_scale": model.interval_scale})
    log.info("forecast model %s: %d epochs (best %d, validation mse %.4f) in %.1f s", name, len(result["history"]),
             result["best_epoch"], best["val_mse"], result["seconds"])
    return model


SUBSETS = ("all", "moving", "hotspot")      # the pixels forecast_metrics scores, forecast.moving_mm_yr


def moving_pixels(series_mm: np.ndarray, t_years: np.ndarray, split: WindowSplit, moving_mm_yr: float) -> np.ndarray:
    """(n,) bool: the ``moving`` subset, |least-squares velocity| > moving_mm_yr over the training
    epochs only (before ``split.t1``, so the test windows do not choose their pixels), of series_mm (n, T)."""
    from insarlake.timeseries import fit_velocity

    velocity, _ = fit_velocity(t_years[:split.t1], series_mm[:, :split.t1])
    return np.abs(velocity) > moving_mm_yr


def hotspot_pixel_ids(spark: SparkSession, config: Config, dataset: str, current: Run | None = None
                      ) -> DataFrame | None:
    """pixel_id (distinct) of the dataset's retained hotspots, from the hotspots stage's tables (the
    rows of ``current`` when it wrote them, else of the hotspots run written last); None when the
    lake has none (the hotspot subset is then left out)."""
    if not (table_exists(spark, config, "hotspots") and table_exists(spark, config, "hotspot_pixels")):
        return None
    run_id = latest_run_id(spark, config, "hotspots", dataset, current)
    if run_id is None:
        return None
    retained = run_results(spark, config, "hotspots", dataset, run_id, current).where("retained").select("hotspot_id")
    return (run_results(spark, config, "hotspot_pixels", dataset, run_id, current).join(retained, "hotspot_id")
            .select("pixel_id").distinct())


def score_models(prepared: Prepared, models: dict, cfg: ForecastConfig, hotspot_ids: DataFrame | None = None
                 ) -> pd.DataFrame:
    """Test-window metrics of every model (neural ``models`` {name: ForecastModel}, the classical
    baselines on the input window, ``harmonic_trend`` on the record before it) over every subgraph,
    from sufficient statistics summed in Spark, per subset of pixels (SUBSETS: all; moving,
    |velocity| > ``cfg.moving_mm_yr`` over the training epochs; hotspot, ``hotspot_ids``) and per
    forecast step (``horizon`` 1..H; None: all steps); the 90 % interval coverage of the models
    with a forecast distribution (``model.forecast_distribution``)."""
    from insarlake.forecast.baselines import classical_forecast
    from insarlake.forecast.metrics import SUM_KEYS, metrics_from_sums, sufficient_sums_by_column

    split, norm, t_years = prepared.split, prepared.norm, prepared.t_years
    L, H = split.input_len, split.horizon
    starts = split.starts("test")
    payload = {name: m.to_payload() for name, m in models.items()}
    std_scales = {name: m.interval_scale for name, m in models.items()}
    w_samples, samples, seed, moving_mm_yr = cfg.predict_samples, cfg.samples, cfg.seed, cfg.moving_mm_yr
    bounds = (QUANTILES[0], QUANTILES[2])

    def one(group: pd.DataFrame) -> pd.DataFrame:
        import torch

        torch.set_num_threads(1)
        nets = {name: ForecastModel.from_payload(p).network for name, p in payload.items()}
        group, coords, series, local, core = subgraph_arrays(group)
        masks = {"all": core, "moving": core & moving_pixels(series, t_years, split, moving_mm_yr),
                 "hotspot": core & group["in_hotspot"].to_numpy(bool)}
        acc, with_interval = {}, set()
        for start in starts:
            start = int(start)
            fit = record_fit(series, t_years, start, split)                            # (n, L + H) mm
            batch, last = window_batch(series, coords, t_years, start, split, norm.scale_mm, local, mask=core,
                                       record_mm=fit)
            y = series[:, start + L:start + L + H]                                    # (n, H) mm, every node
            preds = {name: last[:, None] + norm.scale_mm * classical_forecast(
                         name, batch.history.numpy(), batch.t_in.numpy(), batch.t_out.numpy())
                     for name in CLASSICAL_MODELS}
            preds["harmonic_trend"] = fit[:, L:]
            inside = {}
            for name, net in nets.items():
                pred, q = forecast_distribution(net, batch, bounds, w_samples, samples,
                                                torch.Generator().manual_seed(seed + start), std_scales[name])
                preds[name] = last[:, None] + np.asarray(pred) * norm.scale_mm
                if q is not None:
                    lo, hi = (last[:, None] + q[i] * norm.scale_mm for i in (0, 1))
                    inside[name] = (lo <= y) & (y <= hi)
                    with_interval.add(name)
            for name, pred in preds.items():
                for subset, mask in masks.items():
                    if not mask.any():
                        continue
                    sums = sufficient_sums_by_column(y[mask], pred[mask])
                    sums["covered"] = inside[name][mask].sum(axis=0) if name in inside else np.zeros(H)
                    total = acc.setdefault((name, subset), {key: np.zeros(H) for key in (*SUM_KEYS, "covered")})
                    for key, value in sums.items():
                        total[key] += value
        rows = [{"model": name, "subset": subset, "horizon": h + 1, **{k: v[h] for k, v in total.items()},
                 "with_interval": name in with_interval}
                for (name, subset), total in acc.items() for h in range(H)]
        return pd.DataFrame(rows, columns=_STATS_SCHEMA_COLUMNS)

    members = prepared.members
    if hotspot_ids is None:
        members = members.withColumn("in_hotspot", F.lit(False))
    else:
        flagged = hotspot_ids.select("pixel_id", F.lit(True).alias("in_hotspot"))
        members = (members.join(flagged, "pixel_id", "left")
                   .withColumn("in_hotspot", F.coalesce("in_hotspot", F.lit(False))))
    sums = (members.groupBy("subgraph").applyInPandas(one, _STATS_SCHEMA)
            .groupBy("model", "subset", "horizon")
            .agg(*[F.sum(c).alias(c) for c in (*SUM_KEYS, "covered")],
                 F.max(F.col("with_interval").cast("int")).alias("with_interval")).toPandas())
    keys = ["model", "subset"]
    overall = sums.groupby(keys, as_index=False).agg({**{c: "sum" for c in (*SUM_KEYS, "covered")},
                                                      "with_interval": "max"}).assign(horizon=None)
    rows = []
    for r in pd.concat([overall, sums], ignore_index=True).to_dict("records"):
        rows.append({"model": r["model"], "subset": r["subset"],
                     "horizon": None if r["horizon"] is None or pd.isna(r["horizon"]) else int(r["horizon"]),
                     **metrics_from_sums(**{k: r[k] for k in SUM_KEYS}),
                     "coverage_90": r["covered"] / r["n"] if r["with_interval"] else None,
                     "windows": len(starts), "values": int(r["n"])})
    table = pd.DataFrame(rows)
    order = {name: i for i, name in enumerate(SUBSETS)}
    return (table.assign(_s=table["subset"].map(order), _h=table["horizon"].fillna(0))
            .sort_values(["model", "_s", "_h"]).drop(columns=["_s", "_h"]).reset_index(drop=True))


_STATS_SCHEMA_COLUMNS = [c.split()[0] for c in _STATS_SCHEMA.split(", ")]


def forecast_future(prepared: Prepared, model: ForecastModel, cfg: ForecastConfig, dataset: str,
                    run_id: str) -> DataFrame:
    """`forecasts` rows: for every pixel (the core pixels of each subgraph, forecast with its halo),
    the horizon epochs after the record (dates at the record's cadence): mean and p05/p50/p95 of the
    model's predictive distribution (``cfg.predict_samples`` draws of W per subgraph; 0: one pass;
    its std scaled by the model's validation calibration), in mm. The same rows for any partitioning: each subgraph is computed alone, with its own seed."""
    split, norm, t_years = prepared.split, prepared.norm, prepared.t_years
    start = len(t_years) - split.input_len
    future = future_times(t_years, len(t_years), split.horizon)
    first = prepared.dates[0]
    future_dates = [first + dt.timedelta(days=int(round(t * 365.25))) for t in future]
    payload, w_samples, samples, seed = model.to_payload(), cfg.predict_samples, cfg.samples, cfg.seed
    std_scale = model.interval_scale

    def one(group: pd.DataFrame) -> pd.DataFrame:
        import zlib

        import torch

        torch.set_num_threads(1)
        net = ForecastModel.from_payload(payload).network
        group, coords, series, local, core = subgraph_arrays(group)
        batch, last = window_batch(series, coords, t_years, start, split, norm.scale_mm, local, mask=core,
                                   with_target=False)          # t_out: the `future` times, after the record
        gen = torch.Generator().manual_seed(seed + zlib.crc32(str(group["subgraph"].iloc[0]).encode()))
        mean, q = forecast_distribution(net, batch, QUANTILES, w_samples, samples, gen, std_scale)
        mean, q = mean[core], q[:, core]
        base = last[core, None]
        n, H = mean.shape
        return pd.DataFrame({"dataset": dataset, "run_id": run_id,
                             "pixel_id": np.repeat(group["pixel_id"].to_numpy()[core], H),
                             "date": np.tile(np.array(future_dates, dtype=object), n),
                             "horizon": np.tile(np.arange(1, H + 1, dtype=np.int32), n),
                             "mean": (base + mean * norm.scale_mm).ravel().astype(np.float32),
                             **{name: (base + q[i] * norm.scale_mm).ravel().astype(np.float32)
                                for i, name in enumerate(("p05", "p50", "p95"))}})

    return prepared.members.groupBy("subgraph").applyInPandas(one, FORECASTS_SCHEMA)


@dataclass(frozen=True)
class ForecastResult:
    dataset: str
    pixels: int
    forecasts: int
    metrics: pd.DataFrame | None
    outputs: str


def run_forecast(spark: SparkSession, config: Config, dataset: str, run: Run, evaluate: bool = False) -> ForecastResult:
    """Train (or reuse) DAPF and write `forecasts` for every pixel; with ``evaluate``, also train
    (or reuse) the neural baselines and write `forecast_metrics` for every model on the test
    windows. Replaces the dataset's rows in both tables; pictures in the run's output folder. The
    training sample's work folder is removed at the end, also on failure."""
    files = lake_files(config, spark)
    work = files.sub("work", "forecast", dataset, run.run_id)
    prepared = None
    try:
        with run.stage("forecast.prepare"):
            prepared = prepare(spark, config, dataset, work, reused_normalisation(spark, config, dataset))
            run.count("forecast_pixels", prepared.pixels)
            run.count("forecast_edges", prepared.edges)
            run.count("forecast_subgraphs", prepared.subgraphs)
            run.count("forecast_train_subgraphs", len(prepared.train_parts))
        with files.staged("outputs", dataset, run.run_id) as outputs:
            result = _train_predict_evaluate(spark, config, prepared, run, evaluate, outputs, work)
        return dataclasses.replace(result, outputs=files.uri("outputs", dataset, run.run_id))
    finally:
        if prepared is not None:
            prepared.release()
        work.discard()


def _train_predict_evaluate(spark: SparkSession, config: Config, prepared: Prepared, run: Run, evaluate: bool,
                            outputs: Path, work: LakeFiles) -> ForecastResult:
    from insarlake.forecast.pictures import plot_embeddings, plot_forecasts

    cfg, dataset, n_pixels = config.forecast, prepared.dataset, prepared.pixels
    models = {}
    for name in (cfg.models if evaluate else ["dapf"]):
        with run.stage(f"forecast.train.{name}"):
            models[name] = trained_model(prepared, config, name, run)
    with run.stage("forecast.predict"):
        rows = forecast_future(prepared, models["dapf"], cfg, dataset, run.run_id)
        write_table(spark, rows, config, "forecasts", [dataset], run=run)
        n_rows = run_results(spark, config, "forecasts", dataset, run.run_id).count()
        if n_rows != n_pixels * prepared.split.horizon:
            raise RuntimeError(f"forecasts: {n_rows} rows written for {n_pixels} pixels x {prepared.split.horizon} "
                               "epochs")   # every pixel exactly once per forecast epoch
        run.count("forecasts", n_rows)
    table = evaluate_models(spark, config, prepared, models, run, work) if evaluate else None
    with run.stage("forecast.pictures"):
        plot_embeddings(prepared, models["dapf"], outputs / "forecast_embeddings.png")
        plot_forecasts(prepared, models["dapf"], cfg, outputs / "forecasts.png")
    return ForecastResult(dataset, n_pixels, n_rows, table, str(outputs))


def monitoring_horizon_epochs(cfg: ForecastConfig, t_years: np.ndarray) -> int | None:
    """Forecast steps covering ``cfg.monitoring_horizon_days`` at the record's cadence
    (``cadence_years``, as ``future_times``); None when the key is null or equals the
    horizon_epochs evaluated already."""
    if cfg.monitoring_horizon_days is None:
        return None
    cadence_days = cadence_years(t_years) * 365.25
    steps = max(1, int(round(cfg.monitoring_horizon_days / cadence_days)))
    return None if steps == cfg.horizon_epochs else steps


def evaluate_models(spark: SparkSession, config: Config, prepared: Prepared, models: dict, run: Run,
                    work: LakeFiles) -> pd.DataFrame:
    """`forecast_metrics` of the dataset: every model scored on the test windows (``score_models``)
    with the configured horizon_epochs, then again with the monitoring horizon
    (``forecast.monitoring_horizon_days``; its neural models saved apart, as ``<model>_h<steps>``,
    so the product's models are untouched); the rows say which (``horizon_epochs``)."""
    cfg, dataset = config.forecast, prepared.dataset
    hotspot_ids = hotspot_pixel_ids(spark, config, dataset)
    if hotspot_ids is None:
        log.info("forecast metrics: no hotspots tables in the lake; the hotspot subset is left out")
    with run.stage("forecast.evaluate"):
        tables = [_with_training(score_models(prepared, models, cfg, hotspot_ids), models, cfg.horizon_epochs)]
    steps = monitoring_horizon_epochs(cfg, prepared.t_years)
    if steps is not None:
        monitoring = replace(config, forecast=replace(cfg, horizon_epochs=steps))
        try:
            WindowSplit.of(len(prepared.dates), cfg.input_epochs, steps, cfg.train_share, cfg.validation_share)
        except ValueError as exc:
            log.warning("forecast metrics: no monitoring horizon of %d epochs (%s days) on this record: %s", steps,
                        cfg.monitoring_horizon_days, exc)
        else:
            with run.stage("forecast.evaluate.monitoring"):
                long = prepare(spark, monitoring, dataset, work.sub("monitoring"),
                               reused_normalisation(spark, monitoring, dataset, f"dapf_h{steps}"))
                try:
                    long_models = {name: trained_model(long, monitoring, name, run, f"{name}_h{steps}")
                                   for name in cfg.models}
                    tables.append(_with_training(score_models(long, long_models, monitoring.forecast, hotspot_ids),
                                                 long_models, steps))
                finally:
                    long.release()
    table = pd.concat(tables, ignore_index=True)

    def value(v):
        return None if v is None or pd.isna(v) else v

    records = [(dataset, run.run_id, r.model, r.subset, None if pd.isna(r.horizon) else int(r.horizon),
                int(r.horizon_epochs), *[value(float(getattr(r, c))) if getattr(r, c) is not None else None
                                         for c in ("rmse_mm", "mae_mm", "acc", "evs", "r2", "coverage_90")],
                int(r.windows), int(r.values), value(r.train_seconds),
                None if r.best_epoch is None or pd.isna(r.best_epoch) else int(r.best_epoch))
               for r in table.itertuples()]
    with delta_schema_merge(spark):          # lakes written before the subset and horizon columns
        write_table(spark, spark.createDataFrame(records, METRICS_SCHEMA), config, "forecast_metrics", [dataset],
                    run=run)
    overall = table[(table.subset == "all") & table.horizon.isna() & (table.horizon_epochs == cfg.horizon_epochs)]
    overall = overall.set_index("model")
    for name, r in overall.iterrows():
        run.metrics[f"forecast_{name}_rmse_mm"] = float(r.rmse_mm)
    if "dapf" in overall.index:
        run.metrics["forecast_dapf_coverage_90"] = float(overall.loc["dapf", "coverage_90"])
    log.info("forecast metrics on the test windows:\n%s", format_table(table))
    return table


def _with_training(table: pd.DataFrame, models: dict, horizon_epochs: int) -> pd.DataFrame:
    """``table`` with the configuration's horizon_epochs and each neural model's training seconds and best epoch."""
    return table.assign(
        horizon_epochs=horizon_epochs,
        train_seconds=[models[m].training.get("seconds") if m in models else None for m in table.model],
        best_epoch=[models[m].training.get("best_epoch") if m in models else None for m in table.model])


METRICS_SCHEMA = schema("forecast_metrics")


def format_table(table: pd.DataFrame) -> str:
    """The metrics over all forecast steps as text tables shaped like the seed's Table 1, one per
    evaluated horizon_epochs, the subsets side by side (RMSE, MAE, 90 % coverage and values of each;
    best RMSE on all pixels first)."""
    parts = []
    for steps, one in table.groupby(table.get("horizon_epochs", pd.Series(0, index=table.index)), sort=True):
        overall = one[one["horizon"].isna()]
        wide = overall.pivot(index="model", columns="subset", values=["rmse_mm", "mae_mm", "coverage_90", "values"])
        columns = {}
        for subset in [s for s in SUBSETS if s in set(overall["subset"])]:
            for metric, label in (("rmse_mm", "rmse"), ("mae_mm", "mae"), ("coverage_90", "cov90"), ("values", "n")):
                columns[f"{label}_{subset}"] = wide[(metric, subset)]
        out = pd.DataFrame(columns)
        if "train_seconds" in overall:
            out["train_seconds"] = overall.groupby("model")["train_seconds"].first()
        out = out.sort_values("rmse_all").reset_index()
        for column in [c for c in out if c.startswith("n_")]:
            out[column] = out[column].map(lambda v: "-" if pd.isna(v) else f"{int(v):,}")
        text = out.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
        parts.append(text if not steps else f"horizon {int(steps)} epochs:\n{text}")
    return "\n\n".join(parts)
