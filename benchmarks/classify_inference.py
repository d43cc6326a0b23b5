"""Benchmark: the classify stage's Spark inference (``insarlake.classify.stage.predict``, mapInArrow
over Arrow batches converted straight to numpy, the model loaded once per Python worker) against
plain torch on the same model,
the same pixels, the same batch size and the same cores, in one run.

* plain torch: ``ClassifierModel.predict`` over numpy arrays already in memory, in batches of
  ``--batch`` rows, with torch using ``--cores`` threads.
* Spark: local[--cores], the pixels read from Parquet (cached and counted before timing), one
  task per core with one torch thread each, Arrow batches of ``--batch`` rows
  (spark.sql.execution.arrow.maxRecordsPerBatch), every output column materialised by a ``noop``
  write. Timed from the action to its end, after an untimed warm-up on a 2 % sample (its seconds
  are reported: Python workers start, import torch and load the model once each; a scheduled job
  pays that once per worker, not per batch).

The ratio is Spark rows/s over plain-torch rows/s (the issue's goal: >= 0.8). Both outputs are also
compared row for row (the script exits 1 if they differ). The model has random weights: the work of
inference does not depend on their values.

    .venv/bin/python benchmarks/classify_inference.py                         # local-profile sizes
    .venv/bin/python benchmarks/classify_inference.py --sizes seed --n 20000  # the seed's Table 1 sizes
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

log = logging.getLogger("bench.classify_inference")

# (lstm_units, perceptron_units, dense_units): conf/local.yaml's and the seed's (conf/default.yaml)
SIZES = {"local": ((32, 16), (16,), (32,)), "seed": ((128, 64), (32, 32), (64, 32))}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="pixels")
    p.add_argument("--dates", type=int, default=210, help="epochs per series (the demo scene has 208)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--models", default="lstm,lstm_perceptron")
    p.add_argument("--sizes", choices=sorted(SIZES), default="local")
    p.add_argument("--batch", type=int, default=4096, help="rows per inference batch (classify.inference_batch_size)")
    p.add_argument("--network-rows", type=int, default=256,
                   help="rows per forward pass within a batch (classify.network_batch_rows)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best is reported")
    return p.parse_args()


def make_pixels(n: int, dates: int, seed: int = 0) -> pd.DataFrame:
    """pixel_id, disp (T mm, a few NaN), statics (4): trends, seasons and noise like the demo scene."""
    rng = np.random.default_rng(seed)
    t_yr = np.arange(dates) * 6 / 365.25
    disp = (rng.normal(0, 8, (n, 1)) * t_yr + rng.normal(0, 2, (n, 1)) * np.sin(2 * np.pi * t_yr)
            + rng.normal(0, 2, (n, dates)))
    disp[rng.random((n, dates)) < 0.01] = np.nan
    statics = np.column_stack([rng.normal(0, 8, n), rng.gamma(2, 0.5, n), rng.uniform(0.3, 1, n), rng.uniform(30, 45, n)])
    return pd.DataFrame({"pixel_id": [f"p{i:08d}" for i in range(n)], "disp": list(disp), "statics": list(statics)})


def save_model(name: str, sizes, dates: int, classes: int, lake: Path):
    """A random-weight classifier ``name`` saved as version v1 in a model store under ``lake``."""
    import torch

    from insarlake.classify.model import Architecture, ClassifierModel, Normalisation, build
    from insarlake.files import LakeFiles
    from insarlake.modelstore import ModelStore

    torch.manual_seed(0)
    arch = Architecture(name, dates, classes, *sizes, 0.2)
    norm = Normalisation(0.0, 10.0, (0.0, 1.0, 0.6, 37.0), (8.0, 0.7, 0.2, 4.0))
    model = ClassifierModel(arch, norm, tuple(range(100, 100 + classes)), tuple(str(i) for i in range(dates)), build(arch))
    store = ModelStore(LakeFiles(str(lake)), "classifier", "bench", name)
    store.save("v1", model.save)
    return store


def plain_torch(store, pixels: pd.DataFrame, batch: int, network_rows: int,
                cores: int) -> tuple[float, pd.DataFrame]:
    import torch

    from insarlake.classify.model import ClassifierModel

    torch.set_num_threads(cores)
    model = store.load("v1", ClassifierModel.load)
    series = np.stack(pixels["disp"].to_numpy())
    statics = np.stack(pixels["statics"].to_numpy())
    t0 = time.perf_counter()
    clusters, probabilities = [], []
    for i in range(0, len(series), batch):
        c, p = model.predict(series[i:i + batch], statics[i:i + batch], 0.5, network_rows)
        clusters.append(c)
        probabilities.append(p)
    seconds = time.perf_counter() - t0
    return seconds, pd.DataFrame({"pixel_id": pixels["pixel_id"], "predicted_cluster": np.concatenate(clusters),
                                  "probability": np.concatenate(probabilities).astype(np.float32)})


def spark_inference(spark, store, name: str, frame, batch: int, network_rows: int, out: Path) -> float:
    from insarlake.classify.stage import arrow_batch_rows, predict

    classes = predict(frame, store, "v1", 0.5, "bench", "bench", threads=1, network_rows=network_rows)
    with arrow_batch_rows(spark, batch):
        t0 = time.perf_counter()
        classes.write.format("noop").mode("overwrite").save()
        seconds = time.perf_counter() - t0
        if out is not None:
            classes.write.mode("overwrite").parquet(str(out))
    return seconds


def main() -> int:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from insarlake.config import load_config
    from insarlake.spark import get_session

    work = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    spark = get_session(load_config(overrides=[
        f"lake.path={work / 'lake'}", f"spark.master=local[{args.cores}]", f"spark.shuffle_partitions={args.cores}",
        "spark.conf={spark.ui.enabled: 'false'}"]))
    pixels = make_pixels(args.n, args.dates)
    spark.createDataFrame(pixels, "pixel_id string, disp array<double>, statics array<double>") \
        .repartition(args.cores).write.parquet(str(work / "pixels"))
    frame = spark.read.parquet(str(work / "pixels")).cache()
    frame.count()
    rows = []
    for name in args.models.split(","):
        store = save_model(name, SIZES[args.sizes], args.dates, args.classes, work / "lake")
        warmup_s = spark_inference(spark, store, name, frame.sample(0.02, seed=1), args.batch, args.network_rows, None)
        spark_s = min(spark_inference(spark, store, name, frame, args.batch, args.network_rows,
                                      work / f"out_{name}" if r == 0 else None) for r in range(args.repeat))
        torch_runs = [plain_torch(store, pixels, args.batch, args.network_rows, args.cores) for _ in range(args.repeat)]
        torch_s, expected = min(s for s, _ in torch_runs), torch_runs[0][1]
        got = pd.read_parquet(work / f"out_{name}").set_index("pixel_id").loc[expected["pixel_id"]]
        same = (np.array_equal(got["predicted_cluster"].to_numpy(), expected["predicted_cluster"].to_numpy())
                and np.allclose(got["probability"].to_numpy(), expected["probability"].to_numpy(), rtol=1e-5))
        rows.append({"model": name, "sizes": args.sizes, "pixels": args.n, "dates": args.dates, "batch": args.batch,
                     "cores": args.cores, "torch_rows_s": args.n / torch_s, "spark_rows_s": args.n / spark_s,
                     "spark_over_torch": torch_s / spark_s, "warmup_s": warmup_s, "same_output": same})
        log.info("%s: torch %.1f s, spark %.1f s", name, torch_s, spark_s)
    table = pd.DataFrame(rows)
    sys.stdout.write(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}") + "\n")
    spark.stop()
    return 0 if table["same_output"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
