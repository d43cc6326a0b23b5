"""The whole pipeline with its lake in object storage: an S3-compatible server on localhost
(moto's server mode, started by the tests) reached through Hadoop's S3A connector (the s3a jar
group of conf/jars.yaml) by Spark and through pyarrow by the model and file stores. Every table,
model and picture lands in the bucket; a second run reuses the models from there; SQL over
insar.* answers from a new process; bad buckets and credentials end in one line."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from conftest import PROJECT, SMALL_SCENE, new_bucket, sql_in_new_process
from insarlake.files import LakeFiles

pytestmark = [pytest.mark.spark, pytest.mark.slow]     # Spark jobs in their own JVMs

TABLES = ("pixels", "epochs", "quarantine", "truth", "clusters", "covariogram", "classes", "classifier_metrics",
          "hotspots", "hotspot_pixels", "hotspot_scores", "hotspot_tracks", "alerts", "forecasts", "runs", "geometries", "site_hotspots", "sites")
FAST = ["temporal.sample_size=40", "temporal.silhouette_size=40", "temporal.k_min=2", "temporal.k_max=3",
        "temporal.max_iter=2", "temporal.max_iter_barycenter=2", "covariogram.pairs=50000",
        "classify.models=[lstm]", "classify.max_epochs=2", "forecast.max_epochs=1", "forecast.evaluate=false"]


def _profile(tmp_path, settings: dict, lake: str) -> str:
    """A profile for a lake in the bucket: the S3A settings in spark.conf, the session catalog."""
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump({
        "spark": {"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "3g", "conf": settings},
        "lake": {"path": lake}, "catalog": {"kind": "session"}}))
    return str(path)


def _submit(*args: str, cwd, timeout=900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK") and not k.startswith("AWS_")}
    return subprocess.run([str(PROJECT / "spark-submit.sh"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def _failure(done: subprocess.CompletedProcess) -> str:
    """The error lines and the tail of a failed job's output."""
    text = done.stdout + done.stderr
    errors = [line for line in text.splitlines() if line.startswith(("error:", "Traceback", "insarlake."))]
    return "\n".join(errors[-20:]) + "\n...\n" + text[-3000:]


def _pipeline(profile: str, cwd) -> subprocess.CompletedProcess:
    overrides = [a for s in SMALL_SCENE + FAST for a in ("--set", s)]
    return _submit("jobs/pipeline.py", "--config", profile, "--dataset", "s3demo", *overrides, cwd=cwd)


@pytest.fixture(scope="module")
def s3_lake(s3_server, tmp_path_factory):
    """(profile, LakeFiles of the lake, first run, second run) of two pipeline runs into one bucket."""
    tmp = tmp_path_factory.mktemp("s3lake")
    lake = f"s3a://{new_bucket(s3_server)}/lake"
    profile = _profile(tmp, s3_server, lake)
    first = _pipeline(profile, tmp)
    assert first.returncode == 0, _failure(first)
    second = _pipeline(profile, tmp)
    assert second.returncode == 0, _failure(second)
    return profile, LakeFiles(lake, s3_server), first, second


@pytest.mark.long      # two whole pipelines into the bucket
def test_every_table_model_and_picture_is_in_the_bucket(s3_lake):
    _, files, first, _ = s3_lake
    keys = files.list_files()
    for table in TABLES:
        assert any(k.startswith(f"{table}/_delta_log/") and k.endswith(".json") for k in keys), table
        # no quarantined row in the simulated input; no alert in a dataset's first tracked run
        assert any(k.startswith(f"{table}/") and k.endswith(".parquet") for k in keys) or \
            table in ("quarantine", "alerts"), table
    for kind, name in (("tskm", "tskm"), ("classifier", "lstm"), ("forecast", "dapf")):
        version = files.read_json("models", kind, "s3demo", name, "latest.json")["version"]
        saved = files.list_files("models", kind, "s3demo", name, version)
        assert "model.json" in saved, (kind, saved)
    pictures = {k.rsplit("/", 1)[-1] for k in keys if k.startswith("outputs/s3demo/")}
    assert {"covariogram.png", "centroids.png", "clusters.png", "confusion_lstm.png", "hotspots.geojson",
            "hotspots.png", "forecasts.png"} <= pictures
    exported = {k.split("/")[3] for k in keys if k.startswith("outputs/s3demo/") and k.endswith(".parquet")}
    assert exported == {"hotspots.parquet", "alerts.parquet"}                   # GeoParquet, written by Spark
    assert not any(k.startswith(("work/", "_insarlake_probe")) for k in keys)     # nothing left behind
    assert any(k.startswith("raw/s3demo/") for k in keys)                        # the simulated input
    assert "rows written:" in first.stdout


@pytest.mark.long      # two whole pipelines into the bucket
def test_the_second_run_reuses_the_models_from_the_bucket(s3_lake):
    _, files, first, second = s3_lake
    log = second.stdout + second.stderr
    for kind, name in (("tskm", "tskm"), ("classifier", "lstm"), ("forecast", "dapf")):
        assert f"{kind} model {name}: reusing s3a://" in log, kind
        assert f"{kind} model {name}: reusing" not in first.stdout + first.stderr
    assert len({k.split("/")[0] for k in files.list_files("outputs", "s3demo")}) == 2     # one folder per run


@pytest.mark.long      # two whole pipelines into the bucket
def test_sql_over_the_lake_from_a_new_process(s3_lake, tmp_path):
    profile, _, _, _ = s3_lake
    n, k, f, r = sql_in_new_process(
        profile, ("pixels", "classes", "forecasts", "runs"),
        ["SELECT count(*) AS n FROM insar.pixels WHERE dataset = 's3demo'",
         "SELECT count(DISTINCT pixel_id) AS n FROM insar.classes WHERE dataset = 's3demo'",
         "SELECT count(DISTINCT pixel_id) AS n FROM insar.forecasts WHERE dataset = 's3demo'",
         "SELECT count(*) AS n FROM insar.runs WHERE job = 'pipeline' AND status = 'succeeded'"], tmp_path)
    assert 0 < n <= 5000 and k == f == n and r == 2


@pytest.mark.parametrize("problem", ["missing bucket", "wrong endpoint"])
def test_a_bad_bucket_or_endpoint_ends_in_one_line(s3_server, tmp_path, problem):
    settings = dict(s3_server)
    lake = "s3a://no-such-bucket-anywhere/lake"
    if problem == "wrong endpoint":
        from conftest import free_port

        settings.update({"spark.hadoop.fs.s3a.endpoint": f"http://127.0.0.1:{free_port()}",
                         "spark.hadoop.fs.s3a.connection.establish.timeout": "2s"})
        lake = f"s3a://{new_bucket(s3_server)}/lake"
    done = _submit("jobs/simulate.py", "--config", _profile(tmp_path, settings, lake), "--dataset", "bad",
                   *[a for s in SMALL_SCENE for a in ("--set", s)], cwd=tmp_path, timeout=300)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"error: lake {lake}: not writable (") and "Traceback" not in output
