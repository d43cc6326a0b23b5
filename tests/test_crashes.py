"""Crashes mid-write and task failures (issue 16): every job of the pipeline killed with SIGKILL at random moments
among its writes, then re-run, on a small simulated scene (tests/crashes.py says how a kill is
placed). After each kill every table is readable, each table the job writes holds either its rows
from before the run or the uninterrupted run's, and every model a reader can reach is whole; after
the re-run the job's tables equal those of an uninterrupted run in another lake, the killed runs
are in `runs` as lost (one row each) and nothing they left half-written remains."""
from __future__ import annotations

import time

import numpy as np
import pytest

from crashes import (FAST, STAGE_TABLES, failures_made, faulty_job, job_command, kill_plan, problems_after_kill,
                     problems_after_rerun, run_job, same_rows, table_rows)
from insarlake.config import load_config
from insarlake.lake import LAKE_ENTRIES, lake_files, read_table, reap_lost_runs

pytestmark = [pytest.mark.slow, pytest.mark.long]      # each job a process of its own, many times

DATASET = "crash"
KILLS_PER_JOB = 1                 # benchmarks/crashes.py kills each job many times
MAX_DELAY_S = 3.0


def _config(lake):
    # its own database, so that nothing of the trial lake is registered over the session's tables
    return load_config(overrides=[*FAST, f"lake.path={lake}", "catalog.database=crashtrial"])


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):
    """Every job run once, uninterrupted, in a lake of its own: {job: (its write events,
    {table: rows})}."""
    lake = tmp_path_factory.mktemp("crash_reference") / "lake"
    config = _config(lake)
    result = {}
    for job, tables in STAGE_TABLES.items():
        done = run_job(job_command(job, lake, DATASET))
        assert done.returncode == 0, done.log[-3000:]
        assert done.writes, f"{job}: no write events in its log"
        result[job] = (done.writes, {t: table_rows(spark, config, t, DATASET) for t in tables})
    return result


@pytest.fixture(scope="module")
def trial_lake(tmp_path_factory):
    return tmp_path_factory.mktemp("crash_trials") / "lake"


@pytest.mark.parametrize("job", list(STAGE_TABLES))
def test_killed_job_leaves_tables_whole_and_rerun_finishes(spark, reference, trial_lake, job):
    config = _config(trial_lake)
    writes, expected = reference[job]
    rng = np.random.default_rng([16, list(STAGE_TABLES).index(job)])
    killed, last_kill = [], time.monotonic()
    for _ in range(KILLS_PER_JOB):
        after, delay_s = kill_plan(rng, len(writes), MAX_DELAY_S)
        done = run_job(job_command(job, trial_lake, DATASET), kill_after_write=after, delay_s=delay_s)
        assert done.killed or done.returncode == 0, done.log[-3000:]
        killed += [done.run_id] if done.killed else []
        last_kill = time.monotonic()
        assert problems_after_kill(spark, config, job, DATASET, expected) == [], \
            f"{job} killed {delay_s:.2f} s after write {after} ({writes[after]})"

    done = run_job(job_command(job, trial_lake, DATASET))
    assert done.returncode == 0, done.log[-3000:]
    # every killed run past its lost_after_s (its last heartbeat came before its kill)
    time.sleep(max(0.0, config.lake.run_lost_after_s + 0.5 - (time.monotonic() - last_kill)))
    reap_lost_runs(spark, config)
    assert problems_after_rerun(spark, config, job, DATASET, expected, killed, done.run_id) == []
    if job == "ingest":                          # input rows = pixels + quarantined (5,000 simulated)
        counts = {t: read_table(spark, config, t, [DATASET]).count() for t in ("pixels", "quarantine", "truth")}
        assert counts["pixels"] + counts["quarantine"] == counts["truth"] == 5000
    assert set(lake_files(config).list_dirs()) <= set(LAKE_ENTRIES)


def test_tasks_failing_once_give_the_fault_free_results(spark, reference, tmp_path):
    """The whole pipeline with the fault hook: a third of its Python tasks fail on their first
    attempt; Spark retries them, and every table equals the fault-free run's."""
    lake, fault_log = tmp_path / "lake", tmp_path / "faults"
    done = faulty_job("pipeline", lake, DATASET, share=0.3, seed=16, fault_log=fault_log)
    assert done.returncode == 0, done.log[-3000:]
    assert failures_made(fault_log) > 0, "the hook made no task fail"
    config = _config(lake)
    for job, tables in STAGE_TABLES.items():
        for table in tables:
            assert same_rows(table_rows(spark, config, table, DATASET), reference[job][1][table]), \
                f"{table} with retried tasks differs from the fault-free run's"
