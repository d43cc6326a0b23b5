"""The simulator on Spark: deterministic for any partition count; its truth matches its signals
once ingested."""
from __future__ import annotations

import glob
from insarlake.config import replace

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from insarlake.lake import Run, read_table
from insarlake.simulate.stage import run_simulate


def _read_raw(folder: str) -> pd.DataFrame:
    files = sorted(glob.glob(f"{folder}/*.csv"))
    assert files
    return pd.concat([pd.read_csv(f, dtype={"pid": str}) for f in files]).sort_values("pid").reset_index(drop=True)


def test_same_scene_for_any_partition_count(spark, config, tmp_path):
    small = replace(config, simulate=replace(config.simulate, n_pixels=1500, width_km=6.0, height_km=6.0))
    run_simulate(spark, small, "det1", str(tmp_path / "p1"), Run("simulate", small), partitions=1)
    truth1 = read_table(spark, small, "truth", ["det1"]).drop("dataset").toPandas()
    run_simulate(spark, small, "det3", str(tmp_path / "p3"), Run("simulate", small), partitions=3)
    truth3 = read_table(spark, small, "truth", ["det3"]).drop("dataset").toPandas()
    one, three = _read_raw(str(tmp_path / "p1")), _read_raw(str(tmp_path / "p3"))
    assert len(one) == 1500 and len(glob.glob(str(tmp_path / "p3" / "*.csv"))) >= 2
    pd.testing.assert_frame_equal(one, three)
    key = ["pixel_id"]
    pd.testing.assert_frame_equal(truth1.sort_values(key).reset_index(drop=True),
                                  truth3.sort_values(key).reset_index(drop=True))


def test_simulated_scene_ingests_and_truth_matches_signals(spark, config, sim_scene):
    simulated, ingested = sim_scene
    assert simulated.pixels == config.simulate.n_pixels == ingested.input_rows
    assert ingested.pixels + ingested.quarantined == ingested.input_rows
    assert ingested.quarantined <= 0.01 * ingested.input_rows
    pixels = read_table(spark, config, "pixels", ["sim"])
    truth = read_table(spark, config, "truth", ["sim"])
    joined = pixels.join(truth, ["dataset", "pixel_id"]).groupBy("source_type").agg(
        F.count("*").alias("n"), F.avg("velocity").alias("v"), F.expr("percentile(velocity, 0.5)").alias("median_v"),
        F.avg(F.abs("velocity")).alias("abs_v")).toPandas().set_index("source_type")
    assert set(joined.index) >= {"none", "subsidence", "uplift", "landslide", "tunnel", "postseismic"}
    assert joined.loc["subsidence", "median_v"] < -3.0
    assert joined.loc["uplift", "median_v"] > 1.0
    assert joined.loc["none", "abs_v"] < 2.0
    # every source pixel is more deformed than the stable background
    for kind in ("subsidence", "landslide", "tunnel", "postseismic"):
        assert joined.loc[kind, "abs_v"] > 2 * joined.loc["none", "abs_v"], kind
    epochs = read_table(spark, config, "epochs", ["sim"]).orderBy("idx").toPandas()
    spacing = np.diff(pd.to_datetime(epochs.date).to_numpy()).astype("timedelta64[D]").astype(int)
    assert set(np.unique(spacing)) <= {6, 12, 18, 24, 30, 36} and np.median(spacing) == 6
