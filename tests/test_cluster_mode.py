"""A real multi-process Spark cluster, started by the test with pyspark's own spark-class: one
standalone master and two workers (executors in their own JVMs and working folders). The pipeline
runs through ./spark-submit.sh --master spark://...; with the models of a local-mode run it writes
the same clusters, classes, hotspots and forecasts row for row, also when a worker is killed in
the middle of a stage; classifier training with TorchDistributor local_mode false runs its two
processes on the executors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from conftest import PROJECT, SMALL_SCENE
from insarlake.standalone import Standalone

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.long]     # whole pipelines on a standalone cluster

FAST = ["temporal.sample_size=40", "temporal.silhouette_size=40", "temporal.k_min=2", "temporal.k_max=3",
        "temporal.max_iter=2", "temporal.max_iter_barycenter=2", "covariogram.pairs=50000",
        "classify.models=[lstm]", "classify.max_epochs=2", "forecast.max_epochs=1", "forecast.evaluate=false",
        "spark.shuffle_partitions=4"]
# what each compared table is keyed by, and the columns compared
COMPARED = {"clusters": (["pixel_id"], ["tskm_label", "cluster_id", "is_core"]),
            "classes": (["pixel_id"], ["predicted_cluster", "probability"]),
            "hotspots": (["method", "hotspot_id"], ["n_pixels", "center_lon", "center_lat", "standard_distance_km",
                                                   "mean_velocity", "retained"]),
            "forecasts": (["pixel_id", "horizon"], ["mean", "p05", "p50", "p95"])}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone cluster of one master and two workers (1 core x 2 GB each)."""
    standalone = Standalone(tmp_path_factory.mktemp("standalone"))
    try:
        standalone.start_worker()
        standalone.start_worker()
        yield standalone
    finally:
        standalone.stop()


def _submit(lake: Path, dataset: str, *args: str, master: str | None = None, overrides=(), cwd=None,
            on_line=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    submit = [str(PROJECT / "spark-submit.sh")]
    if master:
        env["PYSPARK_PYTHON"] = sys.executable          # the executors run on this host
        submit += ["--master", master, "--driver-memory", "2g", "--conf", "spark.executor.memory=1g",
                   "--conf", "spark.task.maxFailures=4"]
    command = [*submit, *args, "--config", str(PROJECT / "conf" / "local.yaml"), "--lake", str(lake),
               "--dataset", dataset, *[a for s in [*SMALL_SCENE, *FAST, *overrides] for a in ("--set", s)]]
    process = subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(line)
    process.wait(timeout=1800)
    return subprocess.CompletedProcess(command, process.returncode, "".join(lines), "")


def _tables(spark, lake: Path, dataset: str) -> dict[str, pd.DataFrame]:
    """The compared tables of ``dataset`` in ``lake`` (the rows of the run that succeeded last: the
    tables keep every run's), sorted by their keys."""
    from pyspark.sql import functions as F

    latest = (spark.read.format("delta").load(str(lake / "runs")).where("status = 'succeeded'")
              .orderBy(F.desc("finished")).first().run_id)
    out = {}
    for table, (keys, columns) in COMPARED.items():
        frame = (spark.read.format("delta").load(str(lake / table))
                 .where((F.col("dataset") == dataset) & (F.col("run_id") == latest))
                 .select(*keys, *columns).toPandas())
        out[table] = frame.sort_values(keys).reset_index(drop=True)
    return out


def _kill_worker_at(stage: str, worker: subprocess.Popen, killed: dict):
    """A job-output callback: SIGKILL ``worker`` (its JVM and its executor's) when ``stage`` starts."""
    def on_line(line: str) -> None:
        if f"stage {stage} ..." in line and not killed:
            victims = [worker.pid, *(c.pid for c in psutil.Process(worker.pid).children(recursive=True))]
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed["at"] = stage
            killed["pids"] = victims
    return on_line


@pytest.fixture(scope="module")
def runs(spark, cluster, tmp_path_factory):
    """The same dataset through local[2] (training the models), then through the cluster reusing
    them, a worker killed when the DBSCAN stage starts (a new one joins afterwards): (lake, local
    tables, cluster tables, killed, cluster run's output)."""
    lake = tmp_path_factory.mktemp("cluster_lake") / "lake"
    cwd = lake.parent
    local = _submit(lake, "std", "jobs/pipeline.py", cwd=cwd)
    assert local.returncode == 0, local.stdout[-4000:]
    expected = _tables(spark, lake, "std")
    killed: dict = {}
    remote = _submit(lake, "std", "jobs/pipeline.py", master=cluster.url, cwd=cwd,
                     on_line=_kill_worker_at("cluster.dbscan", cluster.workers[1], killed))
    assert remote.returncode == 0, remote.stdout[-4000:]
    cluster.start_worker()
    return lake, expected, _tables(spark, lake, "std"), killed, remote.stdout


def test_the_cluster_run_used_executors_and_reused_the_models(runs):
    _, _, _, _, output = runs
    assert "Spark 4.0.1 session started (master spark://127.0.0.1:" in output
    for kind, name in (("tskm", "tskm"), ("classifier", "lstm"), ("forecast", "dapf")):
        assert f"{kind} model {name}: reusing" in output, kind


@pytest.mark.parametrize("table", sorted(COMPARED))
def test_the_cluster_writes_what_local_mode_writes_also_after_losing_a_worker(runs, table):
    _, expected, got, killed, _ = runs
    assert killed.get("at") == "cluster.dbscan"                  # a worker died mid-job, the job went on
    want, have = expected[table], got[table]
    assert len(have) == len(want) > 0
    keys, columns = COMPARED[table]
    pd.testing.assert_frame_equal(have[keys], want[keys])
    for column in columns:
        a, b = have[column].to_numpy(), want[column].to_numpy()
        if np.issubdtype(a.dtype, np.floating):
            # the same model on the same inputs in another process: equal to the last bit but for
            # the order of float32 sums in torch's kernels (threads): a few float32 ulps
            np.testing.assert_allclose(a, b, rtol=16 * np.finfo(np.float32).eps, atol=1e-6, err_msg=column)
        else:
            np.testing.assert_array_equal(a, b, err_msg=column)


def test_torch_distributor_trains_on_the_executors(runs, cluster):
    lake, *_ = runs
    done = _submit(lake, "std", "jobs/classify.py", "--retrain", master=cluster.url, cwd=lake.parent,
                   overrides=["classify.num_processes=2", "classify.local_mode=false", "classify.max_epochs=1",
                              "classify.shards=2"])
    assert done.returncode == 0, done.stdout[-4000:]
    store = lake / "models" / "classifier" / "std" / "lstm"
    version = json.loads((store / "latest.json").read_text())["version"]
    training = json.loads((store / version / "model.json").read_text())["training"]
    assert training["world_size"] == 2                      # two ranks, on the executors
    assert "Started distributed training with 2 executor processes" in done.stdout
