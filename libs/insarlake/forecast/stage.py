"""The forecast stage (Spark side): pixels -> spatial graph -> METIS subgraphs -> trained
forecasters -> `forecasts` (DAPF: mean and quantiles of the epochs after the record) and
`forecast_metrics` (every model on the test windows). Numerical work is in the pure modules:
``graph`` (kNN, METIS, halos), ``windows`` (split, normalisation, batches), ``dapf`` and
``baselines`` (the models), ``metrics``, ``train`` (distributed training).

Scale: the graph is built per square cell with its 8 neighbouring cells as halo (exact kNN within
graph_max_distance_m), then made symmetric in Spark. The edge list (2 x 8 x N integers) and the
node order come to the driver for METIS (pymetis is single-machine; ~10^7 nodes fit a driver), the
displacement series never do: Spark writes them per subgraph for training, and forecasting runs in
Spark per subgraph plus its halo.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.config import Config, ForecastConfig
from insarlake.errors import InputError
from insarlake.forecast import CLASSICAL_MODELS
from insarlake.forecast.graph import (knn_edges, induced_subgraph, metis_partition, parts_for_size, subgraph_batches,
                                      symmetrise)
from insarlake.forecast.model import ForecastModel, latest_model, model_root
from insarlake.forecast.windows import Normalisation, WindowSplit, change_moments, future_times, window_batch
from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import to_local_m
from insarlake.lake import Run, files_dir, read_table, write_table
from insarlake.temporal.softdtw import fill_missing

log = logging.getLogger(__name__)

FORECASTS_SCHEMA = ("dataset string, run_id string, pixel_id string, date date, horizon int, "
                    "mean float, p05 float, p50 float, p95 float")
_STATS_SCHEMA = ("model string, n double, sum_e double, sum_e2 double, sum_abs_e double, sum_y double, "
                 "sum_y2 double, covered double, with_interval boolean")
# quantiles written to `forecasts`; the 90 % interval is p05..p95
QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class Prepared:
    """Everything the models need, shared by training, evaluation and forecasting."""
    dataset: str
    pixel_ids: np.ndarray          # (n,) node order
    edge_index: np.ndarray         # (2, E) over nodes
    parts: np.ndarray              # (n,) METIS subgraph of each node
    split: WindowSplit
    norm: Normalisation
    dates: list                    # (T,) dt.date
    t_years: np.ndarray            # (T,) years since the first epoch
    data: DataFrame                # pixel_id, node, part, coords (normalised), series (gap-free mm)
    folder: Path                   # work folder: parts/ (Parquet by part), graph.npz


def gap_free(pixels: DataFrame, centre: tuple[float, float]) -> DataFrame:
    """pixel_id, x_km, y_km, height, series (gap-free mm; NaN epochs interpolated as in TSKM)."""
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
            x_m, y_m = to_local_m(b["lon"].to_numpy(), b["lat"].to_numpy(), lon0, lat0)
            yield pd.DataFrame({"pixel_id": b["pixel_id"].to_numpy(), "lon": b["lon"].to_numpy(),
                                "lat": b["lat"].to_numpy(), "x_km": x_m / 1000.0, "y_km": y_m / 1000.0,
                                "height": b["height"].to_numpy(np.float64), "series": list(fill_missing(raw))})

    schema = ("pixel_id string, lon double, lat double, x_km double, y_km double, height double, "
              "series array<double>")
    return pixels.select("pixel_id", "lon", "lat", "height", "disp").mapInPandas(fill, schema)


def graph_edges(points: DataFrame, cfg: ForecastConfig) -> DataFrame:
    """Directed kNN edges (src, dst pixel_id, distance_m): each pixel's graph_k nearest within
    graph_max_distance_m, computed per cell of graph_cell_km with the 8 neighbouring cells as halo."""
    abs_lat = points.agg(F.max(F.abs("lat"))).first()[0]
    cell_lat = math.degrees(cfg.graph_cell_km * 1000.0 / EARTH_RADIUS_M)
    cell_lon = cell_lat / max(math.cos(math.radians(abs_lat)), 1e-6)
    k, max_m = cfg.graph_k, cfg.graph_max_distance_m
    cells = points.select("pixel_id", "lon", "lat", F.floor(F.col("lon") / cell_lon).alias("cx"),
                          F.floor(F.col("lat") / cell_lat).alias("cy"))
    shifts = F.array(*[F.struct(F.lit(dx).alias("dx"), F.lit(dy).alias("dy")) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
    copies = (cells.select("*", F.explode(shifts).alias("s"))
              .select("pixel_id", "lon", "lat", (F.col("cx") + F.col("s.dx")).alias("cell_x"),
                      (F.col("cy") + F.col("s.dy")).alias("cell_y"),
                      ((F.col("s.dx") == 0) & (F.col("s.dy") == 0)).alias("core")))

    def one(group: pd.DataFrame) -> pd.DataFrame:
        core = group["core"].to_numpy(bool)
        if not core.any():
            return pd.DataFrame({"src": pd.Series([], dtype=object), "dst": pd.Series([], dtype=object),
                                 "distance_m": pd.Series([], dtype=np.float64)})
        lon, lat = group["lon"].to_numpy(), group["lat"].to_numpy()
        x, y = to_local_m(lon, lat, float(lon[core].mean()), float(lat[core].mean()))
        src, dst, d = knn_edges(x, y, k, max_m, query=core)
        ids = group["pixel_id"].to_numpy()
        return pd.DataFrame({"src": ids[src], "dst": ids[dst], "distance_m": d})

    return copies.groupBy("cell_x", "cell_y").applyInPandas(one, "src string, dst string, distance_m double")


def prepare(spark: SparkSession, config: Config, dataset: str, folder: Path) -> Prepared:
    """Gap-free series, graph, METIS parts, split and normalisation; writes the per-part Parquet and
    graph.npz into ``folder`` for the training processes."""
    cfg = config.forecast
    pixels = read_table(spark, config, "pixels", [dataset])
    dates = [r.date for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
    if not dates:
        raise InputError(f"dataset {dataset}: no epochs; run ingest first")
    try:
        split = WindowSplit.of(len(dates), cfg.input_epochs, cfg.horizon_epochs, cfg.train_share, cfg.validation_share)
    except ValueError as exc:
        raise InputError(f"dataset {dataset}: forecast.input_epochs / horizon_epochs: {exc}") from None
    t_years = np.array([(d - dates[0]).days / 365.25 for d in dates])
    centre = pixels.agg(F.avg("lon"), F.avg("lat")).first()
    points = gap_free(pixels, (float(centre[0]), float(centre[1]))).localCheckpoint(eager=True)

    node_ids = np.array(sorted(r.pixel_id for r in points.select("pixel_id").collect()), dtype=object)
    n = len(node_ids)
    if n < 2:
        raise InputError(f"dataset {dataset}: {n} pixel(s); forecasting needs at least 2")
    edges = graph_edges(points, cfg).toPandas()
    index = pd.Index(node_ids)
    edge_index, _ = symmetrise(index.get_indexer(edges["src"]), index.get_indexer(edges["dst"]), n)
    parts = metis_partition(edge_index, n, parts_for_size(n, cfg.nodes_per_subgraph), seed=cfg.seed)
    log.info("forecast graph: %d pixels, %d edges (k %d within %.0f m), %d subgraphs", n, edge_index.shape[1],
             cfg.graph_k, cfg.graph_max_distance_m, int(parts.max()) + 1)

    stats = points.agg(*[f(c) for c in ("x_km", "y_km", "height") for f in (F.avg, F.stddev_pop)]).first()
    mean = tuple(float(stats[i] or 0.0) for i in (0, 2, 4))
    std = tuple(float(stats[i]) if stats[i] and stats[i] > 0 else 1.0 for i in (1, 3, 5))
    H, t1 = split.horizon, split.t1

    def moments(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            if not b.empty:
                count, sumsq = change_moments(np.stack(b["series"].to_numpy()), H, t1)
                yield pd.DataFrame({"count": [count], "sumsq": [sumsq]})

    m = points.select("series").mapInPandas(moments, "count long, sumsq double").agg(F.sum("count"), F.sum("sumsq")).first()
    scale = math.sqrt(m[1] / m[0]) if m[0] else 0.0
    if not scale > 0:
        raise InputError(f"dataset {dataset}: the displacements do not change over the training epochs; nothing to forecast")
    norm = Normalisation(scale_mm=scale, coord_mean=mean, coord_std=std)

    mapping = spark.createDataFrame(pd.DataFrame({"pixel_id": node_ids.astype(str), "node": np.arange(n),
                                                  "part": parts.astype(np.int64)}))
    coords = F.array(*[((F.coalesce(F.col(c), F.lit(mu)) - mu) / sd).cast("float")
                       for c, mu, sd in zip(("x_km", "y_km", "height"), mean, std)])
    data = (points.join(mapping, "pixel_id").select("pixel_id", "node", "part", coords.alias("coords"), "series")
            .localCheckpoint(eager=True))
    folder.mkdir(parents=True, exist_ok=True)
    data.select("node", "coords", "series", "part").write.mode("overwrite").partitionBy("part").parquet(str(folder / "parts"))
    np.savez(folder / "graph.npz", edge_index=edge_index)
    return Prepared(dataset, node_ids, edge_index, parts, split, norm, dates, t_years, data, folder)


def train(prepared: Prepared, cfg: ForecastConfig, name: str) -> dict:
    """Run ``train_worker`` for model ``name``: TorchDistributor for several processes, else directly."""
    from insarlake.forecast.train import train_worker

    sizes = np.bincount(prepared.parts)
    args = {"data_dir": str(prepared.folder / "parts"), "graph_file": str(prepared.folder / "graph.npz"),
            "parts": {int(p): int(c) for p, c in enumerate(sizes) if c > 0}, "model": name,
            "hyper": dict(cfg.hyper.get(name, {})), "split": prepared.split.as_dict(),
            "scale_mm": prepared.norm.scale_mm, "t_years": prepared.t_years.tolist(), "batch_parts": cfg.batch_parts,
            "windows_per_part": cfg.windows_per_part, "learning_rate": cfg.learning_rate,
            "max_epochs": cfg.max_epochs, "patience": cfg.patience, "seed": cfg.seed,
            "threads": cfg.threads_per_process, "backend": "nccl" if cfg.use_gpu else "gloo"}
    if cfg.num_processes == 1 and not cfg.use_gpu:
        return train_worker(args)
    from pyspark.ml.torch.distributor import TorchDistributor

    return TorchDistributor(num_processes=cfg.num_processes, local_mode=cfg.local_mode,
                            use_gpu=cfg.use_gpu).run(train_worker, args)


def trained_model(prepared: Prepared, config: Config, name: str, run_id: str) -> ForecastModel:
    """The saved model ``name`` of the dataset when it matches (dates, split, normalisation,
    hyperparameters) and retrain is off; else a newly trained one, saved."""
    cfg = config.forecast
    hyper = dict(cfg.hyper.get(name, {}))
    dates = [d.isoformat() for d in prepared.dates]
    folder = latest_model(config, prepared.dataset, name)
    if folder is not None and not cfg.retrain:
        saved = ForecastModel.load(folder)
        if saved.matches(name, hyper, prepared.split, prepared.norm, dates):
            log.info("forecast model %s: reusing %s", name, folder)
            return saved
        log.info("forecast model %s: saved model %s does not match the data or settings; retraining", name, folder)
    result = train(prepared, cfg, name)
    model = ForecastModel.create(name, hyper, prepared.split, prepared.norm, dates, result)
    model.save(model_root(config, prepared.dataset, name) / run_id)
    log.info("forecast model %s: %d epochs (best %d, validation mse %.4f) in %.1f s", name, len(result["history"]),
             result["best_epoch"], result["history"][result["best_epoch"]]["val_mse"], result["seconds"])
    return model


def halo_membership(prepared: Prepared, hops: int) -> DataFrame:
    """pixel_id, node, part, coords, series, core: every subgraph's nodes plus its ``hops``-hop halo."""
    rows = []
    for nodes, is_core, _ in subgraph_batches(prepared.edge_index, len(prepared.pixel_ids), prepared.parts, hops):
        rows.append(pd.DataFrame({"node": nodes, "group": int(prepared.parts[nodes[is_core][0]]), "core": is_core}))
    members = prepared.data.sparkSession.createDataFrame(pd.concat(rows, ignore_index=True))
    return prepared.data.drop("part").join(members, "node")


def _subgraph(group: pd.DataFrame, edge_index: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(the group's rows sorted cores first, coords (n, 3), series (n, T), local edge_index (2, E)) of
    one subgraph group of ``halo_membership``."""
    group = group.sort_values(["core", "node"], ascending=[False, True])
    nodes = group["node"].to_numpy(np.int64)
    coords = np.stack(group["coords"].to_numpy()).astype(np.float32)
    series = np.stack(group["series"].to_numpy()).astype(np.float64)
    return group, coords, series, induced_subgraph(edge_index, nodes)


def score_models(prepared: Prepared, members: DataFrame, models: dict, cfg: ForecastConfig) -> pd.DataFrame:
    """Test-window metrics of every model (neural ``models`` {name: ForecastModel} and the classical
    baselines) over ``members`` (``halo_membership``), from sufficient statistics summed over
    subgraphs in Spark; the 90 % interval coverage of the models that sample, from ``cfg.samples``
    draws."""
    from insarlake.forecast.baselines import classical_forecast
    from insarlake.forecast.metrics import SUM_KEYS, metrics_from_sums, sufficient_sums

    spark = prepared.data.sparkSession
    edges_b = spark.sparkContext.broadcast(prepared.edge_index)
    split, norm, t_years = prepared.split, prepared.norm, prepared.t_years
    starts = split.starts("test")
    payload = {name: m.to_payload() for name, m in models.items()}
    samples, seed = cfg.samples, cfg.seed

    def one(group: pd.DataFrame) -> pd.DataFrame:
        import torch

        torch.set_num_threads(1)
        nets = {name: ForecastModel.from_payload(p).network for name, p in payload.items()}
        group, coords, series, local = _subgraph(group, edges_b.value)
        core = group["core"].to_numpy(bool)
        acc, sampled = {}, set()
        for start in starts:
            batch, last = window_batch(series, coords, t_years, int(start), split, norm.scale_mm, local, mask=core)
            y = series[core, start + split.input_len:start + split.input_len + split.horizon]
            preds = {name: classical_forecast(name, batch.history.numpy(), batch.t_in.numpy(), batch.t_out.numpy())
                     for name in CLASSICAL_MODELS}
            covered = {}
            with torch.no_grad():
                for name, net in nets.items():
                    preds[name] = net(batch).numpy()
                    if hasattr(net, "sample"):
                        gen = torch.Generator().manual_seed(seed + int(start))
                        draw = net.sample(batch, samples, gen).numpy()
                        lo, hi = np.quantile(draw, [QUANTILES[0], QUANTILES[2]], axis=0)
                        lo, hi = last[core, None] + lo[core] * norm.scale_mm, last[core, None] + hi[core] * norm.scale_mm
                        covered[name] = float(((lo <= y) & (y <= hi)).sum())
                        sampled.add(name)
            for name, pred in preds.items():
                sums = sufficient_sums(y, last[core, None] + np.asarray(pred)[core] * norm.scale_mm)
                total = acc.setdefault(name, dict.fromkeys([*SUM_KEYS, "covered"], 0.0))
                for key, value in [*sums.items(), ("covered", covered.get(name, 0.0))]:
                    total[key] += value
        return pd.DataFrame([{"model": name, **total, "with_interval": name in sampled} for name, total in acc.items()],
                            columns=_STATS_SCHEMA_COLUMNS)

    sums = (members.groupBy("group").applyInPandas(one, _STATS_SCHEMA)
            .groupBy("model").agg(*[F.sum(c).alias(c) for c in (*SUM_KEYS, "covered")],
                                  F.max(F.col("with_interval").cast("int")).alias("with_interval")).toPandas())
    rows = []
    for r in sums.to_dict("records"):
        rows.append({"model": r["model"], **metrics_from_sums(**{k: r[k] for k in SUM_KEYS}),
                     "coverage_90": r["covered"] / r["n"] if r["with_interval"] else None,
                     "windows": len(starts), "values": int(r["n"])})
    return pd.DataFrame(rows)


_STATS_SCHEMA_COLUMNS = [c.split()[0] for c in _STATS_SCHEMA.split(", ")]


def forecast_future(prepared: Prepared, members: DataFrame, model: ForecastModel, cfg: ForecastConfig, dataset: str,
                    run_id: str) -> DataFrame:
    """`forecasts` rows: for every pixel of ``members`` (``halo_membership``) that is a core, the
    horizon epochs after the record (dates at the record's cadence): mean and p05/p50/p95 of
    ``cfg.samples`` posterior samples, in mm."""
    spark = prepared.data.sparkSession
    edges_b = spark.sparkContext.broadcast(prepared.edge_index)
    split, norm, t_years = prepared.split, prepared.norm, prepared.t_years
    start = len(t_years) - split.input_len
    future = future_times(t_years, len(t_years), split.horizon)
    first = prepared.dates[0]
    future_dates = [first + dt.timedelta(days=int(round(t * 365.25))) for t in future]
    payload, samples, seed = model.to_payload(), cfg.samples, cfg.seed

    def one(group: pd.DataFrame) -> pd.DataFrame:
        import torch

        torch.set_num_threads(1)
        net = ForecastModel.from_payload(payload).network
        group, coords, series, local = _subgraph(group, edges_b.value)
        core = group["core"].to_numpy(bool)
        batch, last = window_batch(series, coords, t_years, start, split, norm.scale_mm, local, mask=core,
                                   with_target=False)          # t_out: the `future` times, after the record
        with torch.no_grad():
            mean = net(batch).numpy()[core]
            draw = net.sample(batch, samples, torch.Generator().manual_seed(seed)).numpy()[:, core]
        q = np.quantile(draw, QUANTILES, axis=0)
        base = last[core, None]
        n, H = mean.shape
        return pd.DataFrame({"dataset": dataset, "run_id": run_id,
                             "pixel_id": np.repeat(group["pixel_id"].to_numpy()[core], H),
                             "date": np.tile(np.array(future_dates, dtype=object), n),
                             "horizon": np.tile(np.arange(1, H + 1, dtype=np.int32), n),
                             "mean": (base + mean * norm.scale_mm).ravel().astype(np.float32),
                             **{name: (base + q[i] * norm.scale_mm).ravel().astype(np.float32)
                                for i, name in enumerate(("p05", "p50", "p95"))}})

    return members.groupBy("group").applyInPandas(one, FORECASTS_SCHEMA)


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
    windows. Replaces the dataset's rows in both tables; pictures in the run's output folder."""
    from insarlake.forecast.pictures import plot_embeddings, plot_forecasts

    cfg = config.forecast
    outputs = files_dir(config, "outputs", dataset, run.run_id)
    with run.stage("forecast.prepare"):
        prepared = prepare(spark, config, dataset, files_dir(config, "work", "forecast", dataset, run.run_id))
        n_pixels = len(prepared.pixel_ids)
        run.count("forecast_pixels", n_pixels)
        run.count("forecast_edges", int(prepared.edge_index.shape[1]))
        run.count("forecast_subgraphs", int(prepared.parts.max()) + 1)
    models = {}
    for name in (cfg.models if evaluate else ["dapf"]):
        with run.stage(f"forecast.train.{name}"):
            models[name] = trained_model(prepared, config, name, run.run_id)
    members = halo_membership(prepared, cfg.halo_hops)
    with run.stage("forecast.predict"):
        rows = forecast_future(prepared, members, models["dapf"], cfg, dataset, run.run_id)
        write_table(spark, rows, config, "forecasts", [dataset])
        n_rows = read_table(spark, config, "forecasts", [dataset]).where(F.col("run_id") == run.run_id).count()
        if n_rows != n_pixels * prepared.split.horizon:
            raise RuntimeError(f"forecasts: {n_rows} rows written for {n_pixels} pixels x {prepared.split.horizon} "
                               "epochs")   # every pixel exactly once per forecast epoch
        run.count("forecasts", n_rows)
    table = None
    if evaluate:
        with run.stage("forecast.evaluate"):
            table = score_models(prepared, members, models, cfg)
            table["train_seconds"] = [models[m].training.get("seconds") if m in models else None for m in table.model]
            table["best_epoch"] = [models[m].training.get("best_epoch") if m in models else None for m in table.model]

            def value(v):
                return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

            records = [(dataset, run.run_id, r.model, *[value(float(getattr(r, c))) if getattr(r, c) is not None else None
                                                        for c in ("rmse_mm", "mae_mm", "acc", "evs", "r2", "coverage_90")],
                        int(r.windows), int(r.values), value(r.train_seconds),
                        None if r.best_epoch is None or pd.isna(r.best_epoch) else int(r.best_epoch))
                       for r in table.itertuples()]
            write_table(spark, spark.createDataFrame(records, METRICS_SCHEMA), config, "forecast_metrics", [dataset])
            for r in table.itertuples():
                run.metrics[f"forecast_{r.model}_rmse_mm"] = float(r.rmse_mm)
            if "dapf" in set(table.model):
                run.metrics["forecast_dapf_coverage_90"] = float(table.set_index("model").loc["dapf", "coverage_90"])
            log.info("forecast metrics on %d test windows:\n%s", len(prepared.split.starts("test")), format_table(table))
    with run.stage("forecast.pictures"):
        plot_embeddings(prepared, models["dapf"], outputs / "forecast_embeddings.png")
        plot_forecasts(prepared, models["dapf"], cfg, outputs / "forecasts.png")
    return ForecastResult(dataset, n_pixels, n_rows, table, str(outputs))


METRICS_SCHEMA = ("dataset string, run_id string, model string, rmse double, mae double, acc double, evs double, "
                  "r2 double, coverage_90 double, windows int, values long, train_seconds double, best_epoch int")


def format_table(table: pd.DataFrame) -> str:
    """The metrics as a text table shaped like the seed's Table 1 (best RMSE first)."""
    cols = ["model", "rmse_mm", "mae_mm", "acc", "evs", "r2", "coverage_90", "train_seconds"]
    t = table.reindex(columns=cols).sort_values("rmse_mm")
    return t.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
