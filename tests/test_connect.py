"""The jobs against a Spark Connect server (what Databricks shared and serverless compute run),
started by the test from pyspark's own distribution with the Sedona and Delta jars and
extensions: the pipeline runs end to end through the Connect client, with no SparkContext, RDD,
broadcast or JVM on the client side, and its tables answer SQL through the same server."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROJECT, SMALL_SCENE, free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.long]     # a whole pipeline through Connect

FAST = ["temporal.sample_size=40", "temporal.silhouette_size=40", "temporal.k_min=2", "temporal.k_max=3",
        "temporal.max_iter=2", "temporal.max_iter_barycenter=2", "covariogram.pairs=50000",
        "classify.models=[lstm]", "classify.max_epochs=2", "forecast.max_epochs=1", "forecast.evaluate=false"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT / "libs"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """sc://127.0.0.1:<port> of a Spark Connect server (local[2]) with Sedona and Delta; its Python
    workers run this interpreter with the project's libs on their path."""
    import pyspark

    from insarlake.config import load_config
    from insarlake.jars import session_jars

    home = Path(pyspark.__file__).parent
    port = free_port()
    log_path = tmp_path_factory.mktemp("connect") / "server.log"
    env = {**_env(), "PYSPARK_PYTHON": sys.executable, "SPARK_HOME": str(home)}
    command = [str(home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
               "--master", "local[2]", "--driver-memory", "3g", "--jars", session_jars(load_config()),
               "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension,"
                         "org.apache.sedona.sql.SedonaSqlExtensions",
               "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
               "--conf", "spark.serializer=org.apache.spark.serializer.KryoSerializer",
               "--conf", "spark.kryo.registrator=org.apache.sedona.core.serde.SedonaKryoRegistrator",
               "--conf", "spark.sql.execution.arrow.pyspark.enabled=true",
               "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while "Spark Connect server started" not in log_path.read_text():
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Spark Connect server did not start in 300 s"
            time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_pipeline_runs_through_spark_connect(connect_server, tmp_path):
    lake = tmp_path / "lake"
    overrides = [a for s in SMALL_SCENE + FAST + [f"spark.remote={connect_server}", "catalog.kind=session"]
                 for a in ("--set", s)]
    done = subprocess.run([sys.executable, str(PROJECT / "jobs" / "pipeline.py"), "--config",
                           str(PROJECT / "conf" / "local.yaml"), "--lake", str(lake), "--dataset", "connect",
                           *overrides], cwd=tmp_path, env=_env(), text=True, capture_output=True, timeout=1800)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Spark Connect session to {connect_server}" in output and "rows written:" in done.stdout
    for table in ("pixels", "clusters", "classes", "hotspots", "forecasts", "runs"):
        assert (lake / table / "_delta_log").is_dir(), table
    assert not (lake / "work").exists() or not any((lake / "work").rglob("*.parquet"))

    query = (
        "from pyspark.sql import SparkSession\n"
        f"spark = SparkSession.builder.remote({connect_server!r}).getOrCreate()\n"
        f"n = spark.read.format('delta').load({str(lake / 'pixels')!r}).count()\n"
        f"f = spark.read.format('delta').load({str(lake / 'forecasts')!r}).select('pixel_id').distinct().count()\n"
        "k = spark.sql('SELECT count(DISTINCT pixel_id) AS n FROM insar.classes').first().n\n"
        "print(n, f, k)\n")
    out = subprocess.run([sys.executable, "-c", query], env=_env(), text=True, capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    n, f, k = map(int, out.stdout.split())
    assert 0 < n <= 5000 and f == k == n
