"""Two processes on one lake (issue 16): with catalog.kind=server the lake's metastore is served by
a Derby network server (libs/insarlake/catalog.py), so two pipelines on two datasets run at the
same time, started together (the first to start starts the server), while a third process, as a
notebook would, queries the catalog; nobody waits for a lock, and neither pipeline loses rows."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import PROJECT
from crashes import (FAST, catalog_command, job_command, kill_listener, reader_answers, run_job, served_catalog,
                     start_catalog_reader)

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.long]


@pytest.fixture
def served(tmp_path):
    """A lake whose catalog is served at a free port; the server is stopped at the end."""
    lake, settings = tmp_path / "lake", served_catalog()
    yield lake, settings
    catalog_command("stop", lake, settings)


def test_two_pipelines_and_a_reader_at_once(served, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    lake, settings = served
    assert catalog_command("status", lake, settings).returncode == 1          # not running yet
    stop_file = tmp_path / "stop"
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(run_job, job_command("pipeline", lake, name, settings)) for name in ("north", "south")]
        time.sleep(5)
        reader = start_catalog_reader(lake, settings, stop_file)
        done = [job.result() for job in jobs]
        ended = time.time()
    queried = reader_answers(reader, stop_file)
    for run in done:
        assert run.returncode == 0, run.log[-3000:]
    assert catalog_command("status", lake, settings).returncode == 0

    assert queried["errors"] == []
    during = [n for t, n in queried["answers"] if t < ended]
    assert len(during) >= 3 and max(during) > 0, queried      # answered while the pipelines wrote

    counts = _counts(lake, settings, ["north", "south"])
    assert counts == {"north": counts["north"], "south": counts["south"], "runs_succeeded": "2"}
    for name in ("north", "south"):
        pixels, quarantined, truth, clusters, classes, forecasts = map(int, counts[name].split())
        assert pixels + quarantined == truth == 5000 and clusters == classes == forecasts == pixels


def _counts(lake, settings, datasets) -> dict[str, str]:
    """Through the catalog in a process of its own: per dataset 'pixels quarantined truth clusters
    classes forecasts' (distinct pixel ids, quarantined rows), and per status the pipeline runs."""
    check = ("from insarlake.config import load_config\nfrom insarlake.spark import get_session\nimport sys\n"
             "spark = get_session(load_config(overrides=sys.argv[2:]))\n"
             "for d in sys.argv[1].split(','):\n"
             "    q = lambda t, c='DISTINCT pixel_id': spark.sql(\n"
             "        f\"SELECT count({c}) AS n FROM insar.{t} WHERE dataset = '{d}'\").first().n\n"
             "    print(d, q('pixels'), q('quarantine', '*'), q('truth'), q('clusters'), q('classes'), q('forecasts'))\n"
             "for r in spark.sql(\"SELECT status, count(*) AS n FROM insar.runs WHERE job = 'pipeline' \"\n"
             "                   \"GROUP BY status\").collect():\n"
             "    print('runs_' + r.status, r.n)\n")
    counted = subprocess.run([sys.executable, "-c", check, ",".join(datasets), f"lake.path={lake}", *FAST, *settings],
                             cwd=PROJECT, text=True, capture_output=True, timeout=600)
    assert counted.returncode == 0, counted.stderr[-3000:]
    return dict(line.split(maxsplit=1) for line in counted.stdout.strip().splitlines())


def test_the_catalog_server_killed_while_a_pipeline_writes(served):
    """The Derby server SIGKILLed a second after the pipeline's fourth write: the job stops with
    one line naming the server (exit 2), every table stays readable, the re-run starts the server
    again (Derby recovers its log) and finishes, and the killed run ends failed or lost, not
    running."""
    lake, settings = served
    port = int(settings[1].rsplit(":", 1)[1])
    killed: list[int] = []
    done = run_job(job_command("pipeline", lake, "west", settings), kill_after_write=3, delay_s=1.0,
                   fault=lambda: killed.extend(kill_listener(port)))
    assert killed, "no catalog server to kill"
    assert done.returncode == 2, done.log[-3000:]
    errors = [line for line in done.log.splitlines() if line.startswith("error:")]
    assert errors == [f"error: catalog server at localhost:{port} does not answer (catalog.kind=server): "
                      "the job stopped, every table keeps its last whole write; re-run the job (it starts the "
                      "server) or start it with `make catalog-server`"]
    assert catalog_command("status", lake, settings).returncode == 1

    again = run_job(job_command("pipeline", lake, "west", settings))
    assert again.returncode == 0, again.log[-3000:]
    counts = _counts(lake, settings, ["west"])
    pixels, quarantined, truth, clusters, classes, forecasts = map(int, counts["west"].split())
    assert pixels + quarantined == truth == 5000 and clusters == classes == forecasts == pixels
    ended = {status: n for status, n in counts.items() if status.startswith("runs_")}
    # the killed run: failed (its row written as it stopped) or lost (reaped by the re-run); not running
    assert ended.pop("runs_succeeded") == "1" and list(ended.values()) == ["1"], counts
    assert set(ended) <= {"runs_failed", "runs_lost"}, counts
