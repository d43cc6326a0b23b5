"""The command-line contract: spark-submit.sh, job usage, exit codes, and a pipeline run whose
tables a new process finds in the catalog."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT, SMALL_SCENE, delta_table_schema

pytestmark = pytest.mark.spark    # every test submits a Spark job


def _submit(*args: str, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    return subprocess.run([str(PROJECT / "spark-submit.sh"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_job_help_from_another_directory(tmp_path):
    done = _submit("jobs/ingest.py", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: ingest" in done.stdout and "--input PATH" in done.stdout and "--dataset NAME" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "simulate.n_pixels=many"], "error: config key 'simulate.n_pixels' must be an integer, got 'many'"),
    (["--config", "nowhere.yaml"], "error: config file nowhere.yaml: not found"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, args, message):
    done = _submit("jobs/simulate.py", "--lake", str(tmp_path / "lake"), *args, cwd=tmp_path)
    assert done.returncode == 2
    # spark-submit merges the Python driver's stderr into its stdout
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [message]
    assert "Traceback" not in output


@pytest.mark.long      # the whole pipeline as a spark-submit process
def test_pipeline_then_sql_from_a_new_process(tmp_path):
    lake = tmp_path / "lake"
    fast_tskm = ["temporal.sample_size=40", "temporal.silhouette_size=40", "temporal.k_min=2", "temporal.k_max=3",
                 "temporal.max_iter=2", "temporal.max_iter_barycenter=2", "covariogram.pairs=50000",
                 "classify.models=[lstm]", "classify.max_epochs=2",
                 "forecast.models=[dapf]", "forecast.max_epochs=1", "forecast.samples=8", "forecast.evaluate=true"]
    overrides = [a for s in SMALL_SCENE + fast_tskm for a in ("--set", s)]
    done = _submit("jobs/pipeline.py", "--config", str(PROJECT / "conf" / "local.yaml"), "--lake", str(lake),
                   "--dataset", "jobdemo", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows written:" in done.stdout and "pixels" in done.stdout
    query = (
        "from insarlake.config import load_config\n"
        "from insarlake.spark import get_session\n"
        f"spark = get_session(load_config(overrides=['lake.path={lake}']))\n"
        "n = spark.sql(\"SELECT count(*) AS n FROM insar.pixels WHERE dataset = 'jobdemo'\").first().n\n"
        "t = spark.sql(\"SELECT count(*) AS n FROM insar.truth WHERE dataset = 'jobdemo'\").first().n\n"
        "q = spark.sql(\"SELECT count(*) AS n FROM insar.quarantine WHERE dataset = 'jobdemo'\").first().n\n"
        "r = spark.sql(\"SELECT status FROM insar.runs WHERE job = 'pipeline'\").first().status\n"
        "c = spark.sql(\"SELECT count(DISTINCT pixel_id) AS n FROM insar.clusters WHERE dataset = 'jobdemo'\").first().n\n"
        "k = spark.sql(\"SELECT count(DISTINCT pixel_id) AS n FROM insar.classes WHERE dataset = 'jobdemo'\").first().n\n"
        "h = spark.sql(\"SELECT count(*) AS n, count(DISTINCT pixel_id) AS d FROM insar.hotspot_pixels "
        "WHERE dataset = 'jobdemo'\").first()\n"
        "s = spark.sql(\"SELECT count(DISTINCT method) AS n FROM insar.hotspot_scores WHERE dataset = 'jobdemo'\").first().n\n"
        "f = spark.sql(\"SELECT count(DISTINCT pixel_id) AS n FROM insar.forecasts WHERE dataset = 'jobdemo'\").first().n\n"
        "m = spark.sql(\"SELECT count(*) AS n FROM insar.forecast_metrics WHERE dataset = 'jobdemo' \"\n"
        "              \"AND subset = 'all' AND horizon IS NULL\").first().n\n"
        "v = spark.sql(\"SELECT count(*) AS n, count(lon) AS l FROM insar.pixel_forecasts WHERE dataset = 'jobdemo'\"\n"
        "              ).first()\n"
        "w = spark.sql(\"SELECT count(*) AS n FROM insar.forecasts WHERE dataset = 'jobdemo'\").first().n\n"
        "print(n, q, t, r, c, k, h.n, h.d, s, f, m, v.n, v.l, w)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    out = subprocess.run([sys.executable, "-c", query], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    n, q, t, status, c, k, h_rows, h_pixels, methods, f, m, v_rows, v_located, w = out.stdout.split()
    assert int(v_rows) == int(v_located) == int(w) > 0       # the view: the latest run's forecasts, located
    assert int(n) + int(q) == int(t) == 5000 and status == "succeeded" and int(c) == int(k) == int(n)
    assert int(h_rows) == int(h_pixels) <= int(n) and int(methods) == 3
    assert int(f) == int(n) and int(m) == 5           # dapf, the three classical baselines, harmonic_trend
    assert "forecast metrics" in done.stdout and "persistence" in done.stdout
    # the run's report, its path printed last
    *_, last = done.stdout.strip().splitlines()
    assert last.startswith("report of jobdemo (") and last.endswith("report.html"), last
    report = Path(last.rsplit(": ", 1)[1])
    assert report.is_file() and report.parent.parent.parent == lake / "outputs"
    assert "<section id=\"alerts\">" in report.read_text()
    # every table the pipeline wrote has the contract's columns, in order, and its partitioning
    from insarlake.tables import TABLES, conform

    written = sorted(p.name for p in lake.iterdir() if (p / "_delta_log").is_dir())
    assert set(written) >= {"pixels", "clusters", "classes", "hotspots", "forecasts", "forecast_metrics", "sites"}
    for name in written:
        actual, partitions = delta_table_schema(lake / name)
        assert actual.fieldNames() == TABLES[name].column_names and conform(name, actual) == [], name
        assert partitions == TABLES[name].partition_by, name
