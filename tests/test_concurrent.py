"""Two processes on one lake (issue 16): with catalog.kind=server the lake's metastore is served by
a Derby network server (libs/insarlake/catalog.py), so two pipelines on two datasets run at the
same time, started together (the first to start starts the server), while a third process, as a
notebook would, queries the catalog; nobody waits for a lock, and neither pipeline loses rows."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import PROJECT, free_port
from crashes import FAST, job_command, run_job

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.long]

QUERY = """
import json, os, sys, time
from insarlake.config import load_config
from insarlake.spark import get_session
spark = get_session(load_config(overrides=sys.argv[2:]))
answers, errors = [], []
while not os.path.exists(sys.argv[1]):
    try:
        tables = {r.tableName for r in spark.sql("SHOW TABLES IN insar").collect()}
        n = spark.sql("SELECT count(*) AS n FROM insar.pixels").first().n if "pixels" in tables else -1
        answers.append([time.time(), n])
    except Exception as exc:
        errors.append(str(exc)[:300])
    time.sleep(2)
print(json.dumps({"answers": answers, "errors": errors}))
"""


@pytest.fixture
def served(tmp_path):
    """A lake whose catalog is served at a free port; the server is stopped at the end."""
    lake = tmp_path / "lake"
    settings = ["catalog.kind=server", f"catalog.server=localhost:{free_port()}"]
    yield lake, settings
    subprocess.run([sys.executable, "-m", "insarlake.catalog", "stop", "--lake", str(lake),
                    *[a for s in settings for a in ("--set", s)]], cwd=PROJECT, capture_output=True, timeout=120)


def _catalog_command(action: str, lake, settings) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "insarlake.catalog", action, "--lake", str(lake),
                           *[a for s in settings for a in ("--set", s)]], cwd=PROJECT, text=True,
                          capture_output=True, timeout=120)


def test_two_pipelines_and_a_reader_at_once(served, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    lake, settings = served
    assert _catalog_command("status", lake, settings).returncode == 1          # not running yet
    stop_file = tmp_path / "stop"
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(run_job, job_command("pipeline", lake, name, settings)) for name in ("north", "south")]
        time.sleep(5)
        reader = subprocess.Popen([sys.executable, "-c", QUERY, str(stop_file), f"lake.path={lake}", *FAST, *settings],
                                  cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = [job.result() for job in jobs]
        ended = time.time()
    stop_file.touch()
    out, err = reader.communicate(timeout=300)
    for run in done:
        assert run.returncode == 0, run.log[-3000:]
    assert _catalog_command("status", lake, settings).returncode == 0

    queried = json.loads(out.strip().splitlines()[-1])
    assert queried["errors"] == []
    during = [n for t, n in queried["answers"] if t < ended]
    assert len(during) >= 3 and max(during) > 0, queried      # answered while the pipelines wrote

    check = ("from insarlake.config import load_config\nfrom insarlake.spark import get_session\nimport sys\n"
             "spark = get_session(load_config(overrides=sys.argv[1:]))\n"
             "for d in ('north', 'south'):\n"
             "    q = lambda t, c='DISTINCT pixel_id': spark.sql(\n"
             "        f\"SELECT count({c}) AS n FROM insar.{t} WHERE dataset = '{d}'\").first().n\n"
             "    print(d, q('pixels'), q('quarantine', '*'), q('truth'), q('clusters'), q('classes'), q('forecasts'))\n"
             "print('runs', spark.sql(\"SELECT count(*) AS n FROM insar.runs WHERE job = 'pipeline' "
             "AND status = 'succeeded'\").first().n)\n")
    counted = subprocess.run([sys.executable, "-c", check, f"lake.path={lake}", *FAST, *settings], cwd=PROJECT,
                             text=True, capture_output=True, timeout=600)
    assert counted.returncode == 0, counted.stderr[-3000:]
    lines = dict(line.split(maxsplit=1) for line in counted.stdout.strip().splitlines())
    assert lines["runs"] == "2"
    for name in ("north", "south"):
        pixels, quarantined, truth, clusters, classes, forecasts = map(int, lines[name].split())
        assert pixels + quarantined == truth == 5000 and clusters == classes == forecasts == pixels
