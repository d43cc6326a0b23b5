"""Simulate on Spark: generation tiles run in parallel (``mapInPandas``), the scene is written in
the EGMS L2b CSV layout (input of ingest) and its ground truth to the `truth` table.

Each tile draws its randomness only from (seed, tile index), so the scene is identical for any
number of Spark partitions.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, replace
from typing import Iterator

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.config import Config
from insarlake.lake import Run, write_table
from insarlake.spark import default_parallelism
from insarlake.simulate.scene import EGMS_STATIC_COLUMNS, epoch_column_names, generate_tile, plan_scene

log = logging.getLogger(__name__)

TRUTH_COLUMNS = ["dataset", "pixel_id", "source_id", "source_type"]
# Decimals written to the CSV, as in EGMS products (coordinates ~1 cm, values 0.01 mm).
_DECIMALS = {"latitude": 7, "longitude": 7}
_DEFAULT_DECIMALS = 3


@dataclass(frozen=True)
class SimulateResult:
    dataset: str
    output: str
    pixels: int
    epochs: int
    tiles: int
    sources: int
    truth_pixels: int


def scene_schema(epoch_columns: list[str]) -> T.StructType:
    fields = [T.StructField("pid", T.StringType())]
    fields += [T.StructField(c, T.DoubleType()) for c in EGMS_STATIC_COLUMNS if c != "pid"]
    fields += [T.StructField(c, T.DoubleType()) for c in epoch_columns]
    fields += [T.StructField("source_id", T.LongType()), T.StructField("source_type", T.StringType())]
    return T.StructType(fields)


def run_simulate(spark: SparkSession, config: Config, dataset: str, output: str, run: Run,
                 partitions: int | None = None) -> SimulateResult:
    """Generate the scene of ``config.simulate`` as ``dataset``: raw CSV under ``output``
    (replaced) and `truth` rows (replacing the dataset's)."""
    with run.stage("simulate.plan"):
        plan = plan_scene(config.simulate)
        epochs = epoch_column_names(plan)
    log.info("scene: %d pixels, %d epochs (%s .. %s), %d tiles, %d sources", config.simulate.n_pixels,
             len(epochs), plan.dates[0], plan.dates[-1], len(plan.tiles), len(plan.sources))
    schema = scene_schema(epochs)
    n_parts = partitions or max(1, min(len(plan.tiles), default_parallelism(spark) * 2))

    # Each task gets the plan without its tiles (sources, patches, calendar: small) and its own
    # tiles as rows, so what is sent to a task does not grow with the scene (no broadcast either:
    # Spark Connect has none).
    shared = replace(plan, tiles=())

    def tiles_to_rows(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for tile_index, spec in zip(batch["tile_index"], batch["spec"]):
                frame = generate_tile(shared, int(tile_index), tile=pickle.loads(spec))
                if len(frame):
                    yield frame[schema.fieldNames()]

    with run.stage("simulate.generate"):
        # Spark writes partition 0's file even when it holds no rows (a header-only CSV, which
        # ingest refuses): tiles without pixels are left out and the tiles are range-partitioned, so
        # partition 0 holds the first tile with pixels (hash partitioning can leave it empty).
        tiles = spark.createDataFrame([(t.tile_index, pickle.dumps(t)) for t in plan.tiles if t.n_pixels > 0],
                                      "tile_index int, spec binary")
        scene = tiles.repartitionByRange(n_parts, "tile_index").mapInPandas(tiles_to_rows, schema).persist()
        n_pixels = scene.count()

    with run.stage("simulate.write"):
        raw_columns = [c for c in schema.fieldNames() if c not in ("source_id", "source_type")]
        rounded = [F.round(c, _DECIMALS.get(c, _DEFAULT_DECIMALS)).alias(c) if c != "pid" else F.col(c)
                   for c in raw_columns]
        (scene.select(*rounded).write.mode("overwrite").option("header", "true")
         .option("emptyValue", "").csv(output))
        truth = scene.select(F.lit(dataset).alias("dataset"), F.col("pid").alias("pixel_id"),
                             "source_id", "source_type")
        write_table(spark, truth, config, "truth", datasets=[dataset])
        truth_pixels = scene.where(F.col("source_id") > 0).count()
    scene.unpersist()
    run.count("simulated_pixels", n_pixels)
    run.count("truth", n_pixels)
    run.count("truth_source_pixels", truth_pixels)
    return SimulateResult(dataset, output, n_pixels, len(epochs), len(plan.tiles), len(plan.sources), truth_pixels)
