"""The deployment most users run (EMR, Databricks: executors in JVMs of their own, the lake in
object storage) at a size that fits `make test`: one pipeline of a small scene through
./spark-submit.sh --master spark://... on a standalone cluster of a master and two workers, started
by the test from pyspark's own spark-class, with its lake in a bucket of the S3-compatible server
(moto). Every stage runs on the executors and writes to the bucket; the tables' counts reconcile.
The bigger checks (the cluster writing what local mode writes, a lost worker, TorchDistributor on
the executors, model reuse from the bucket) are in test_cluster_mode.py and test_object_store.py,
in `make test-long`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import PROJECT, new_bucket, sql_in_new_process
from insarlake.files import LakeFiles
from insarlake.standalone import Standalone

pytestmark = [pytest.mark.spark, pytest.mark.slow]     # one pipeline on a standalone cluster, lake in S3

# ~3,000 pixels of two years and four sources: every stage has work (hotspots too), in minutes
TINY_SCENE = ["simulate.n_pixels=3000", "simulate.width_km=5.0", "simulate.height_km=5.0", "simulate.tile_km=2.5",
              "simulate.start_date=2020-01-05", "simulate.end_date=2021-12-31", "simulate.urban_patches=1",
              "simulate.sources={subsidence: 1, uplift: 1, landslide: 1, postseismic: 1}"]
FAST = ["temporal.sample_size=40", "temporal.silhouette_size=40", "temporal.k_min=2", "temporal.k_max=3",
        "temporal.max_iter=2", "temporal.max_iter_barycenter=2", "covariogram.pairs=20000",
        "classify.models=[lstm]", "classify.max_epochs=1", "forecast.max_epochs=1", "forecast.evaluate=false"]
# the tables one pipeline run writes rows to (quarantine and alerts stay empty on a first, clean run)
WRITTEN = ("pixels", "epochs", "truth", "clusters", "covariogram", "classes", "classifier_metrics", "hotspots",
           "hotspot_pixels", "hotspot_scores", "forecasts", "runs")


@pytest.fixture(scope="module")
def run(s3_server, tmp_path_factory):
    """(LakeFiles of the bucket's lake, the job's output, the profile) of one pipeline run on a
    standalone cluster of two workers (1 core x 2 GB each) into a new bucket."""
    tmp = tmp_path_factory.mktemp("cluster_s3")
    cluster = Standalone(tmp_path_factory.mktemp("standalone"))
    try:
        cluster.start_worker()
        cluster.start_worker()
        lake = f"s3a://{new_bucket(s3_server)}/lake"
        profile = tmp / "s3.yaml"
        profile.write_text(yaml.safe_dump({
            # no master: the job takes spark-submit's (a profile's master would win over it), the SQL
            # process below local[*]
            "spark": {"shuffle_partitions": 4, "driver_memory": "2g", "conf": s3_server},
            "lake": {"path": lake}, "catalog": {"kind": "session"}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "AWS_"))}
        env["PYSPARK_PYTHON"] = sys.executable            # the executors run on this host
        command = [str(PROJECT / "spark-submit.sh"), "--master", cluster.url, "--conf", "spark.executor.memory=1g",
                   "jobs/pipeline.py", "--config", str(profile), "--dataset", "tiny",
                   *[a for s in TINY_SCENE + FAST for a in ("--set", s)]]
        done = subprocess.run(command, cwd=tmp, env=env, text=True, capture_output=True, timeout=1200)
        output = done.stdout + done.stderr
        errors = [line for line in output.splitlines() if line.startswith(("error:", "Traceback", "insarlake."))]
        assert done.returncode == 0, "\n".join(errors[-20:]) + "\n...\n" + done.stdout[-3000:]
        yield LakeFiles(lake, s3_server), output, str(profile)
    finally:
        cluster.stop()


def test_the_pipeline_ran_on_the_executors(run):
    _, output, _ = run
    started = [line for line in output.splitlines() if "session started (master" in line]
    assert started and "(master spark://127.0.0.1:" in started[0], started
    assert "rows written:" in output


def test_every_table_and_model_is_in_the_bucket_and_nothing_is_left_behind(run):
    files, _, _ = run
    keys = files.list_files()
    for table in WRITTEN:
        assert any(k.startswith(f"{table}/_delta_log/") for k in keys), table
        assert any(k.startswith(f"{table}/") and k.endswith(".parquet") for k in keys), table
    for kind, name in (("tskm", "tskm"), ("classifier", "lstm"), ("forecast", "dapf")):
        version = files.read_json("models", kind, "tiny", name, "latest.json")["version"]
        assert "model.json" in files.list_files("models", kind, "tiny", name, version), kind
    assert not any(k.startswith(("work/", "_insarlake_probe")) for k in keys)


def test_the_counts_reconcile_in_sql_from_a_new_process(run, tmp_path):
    """Every simulated pixel is in pixels (none quarantined), and each has one cluster, one class and
    its forecasts; the run is recorded as succeeded."""
    _, _, profile = run
    tiny = "WHERE dataset = 'tiny'"
    pixels, quarantined, clusters, classes, forecast, succeeded = sql_in_new_process(
        profile, ("pixels", "quarantine", "clusters", "classes", "forecasts", "runs"),
        [f"SELECT count(*) FROM insar.pixels {tiny}", f"SELECT count(*) FROM insar.quarantine {tiny}",
         f"SELECT count(*) FROM insar.clusters {tiny}", f"SELECT count(*) FROM insar.classes {tiny}",
         f"SELECT count(DISTINCT pixel_id) FROM insar.forecasts {tiny}",
         "SELECT count(*) FROM insar.runs WHERE job = 'pipeline' AND status = 'succeeded'"], tmp_path)
    assert pixels == 3000 and quarantined == 0
    assert clusters == classes == forecast == pixels and succeeded == 1
