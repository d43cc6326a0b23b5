"""The runs log: a run's heartbeats while it lasts, its row in `runs` at its end, runs whose driver
died told apart from runs still going (the view run_status) and recorded as lost by the next job,
with what they left half-written removed; and the fault hook's choice of tasks."""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from conftest import readme_block
from insarlake.config import replace
from insarlake.errors import InputError
from insarlake.faults import should_fail
from insarlake.lake import (HEARTBEATS_SCHEMA, RUNS_SCHEMA, Run, lake_files, latest_run_id, read_table,
                            reap_lost_runs, recorded_run, run_results, write_table)
from insarlake.modelstore import ModelStore


def _status(spark, run_id: str):
    return spark.sql(f"SELECT status, finished, heartbeat FROM insar.run_status WHERE run_id = '{run_id}'").collect()


def test_a_run_beats_while_it_lasts_and_ends_with_one_row(spark, config):
    quick = replace(config, lake=replace(config.lake, run_heartbeat_s=0.5, run_lost_after_s=30.0))
    with recorded_run(spark, quick, "test", ["beats"]) as run:
        [(status, finished, heartbeat)] = _status(spark, run.run_id)
        assert status == "running" and finished is None and heartbeat is not None
        time.sleep(3.0)                     # a few beats from the thread
        beats = read_table(spark, quick, "run_heartbeats").where(f"run_id = '{run.run_id}'").count()
        assert beats >= 2
    rows = spark.sql(f"SELECT status FROM insar.runs WHERE run_id = '{run.run_id}'").collect()
    assert [r.status for r in rows] == ["succeeded"]
    assert read_table(spark, quick, "run_heartbeats").where(f"run_id = '{run.run_id}'").count() == 0
    assert [r.status for r in _status(spark, run.run_id)] == ["succeeded"]


def test_a_run_taken_for_lost_while_alive_keeps_one_row_its_own(spark, config):
    """Another job's reaper recorded this run lost (its beats were silent too long, its driver
    stalled); when the run ends, its own row replaces that one."""
    with recorded_run(spark, config, "test", ["stalled"]) as run:
        lost = run.row("lost", "lost: no heartbeat since ... (written by another job's reaper)")
        write_table(spark, spark.createDataFrame([lost], RUNS_SCHEMA), config, "runs", mode="append")
        assert [r.status for r in _status(spark, run.run_id)] == ["lost"]
    rows = spark.sql(f"SELECT status FROM insar.runs WHERE run_id = '{run.run_id}'").collect()
    assert [r.status for r in rows] == ["succeeded"]


def _beat(spark, config, run_id: str, dataset: str, age_s: float, lost_after_s: float = 600.0):
    now = dt.datetime.now(dt.timezone.utc)
    row = (run_id, "cluster", [dataset], now - dt.timedelta(seconds=age_s + 60), now - dt.timedelta(seconds=age_s),
           lost_after_s, "elsewhere:1", config.hash, "{}")
    write_table(spark, spark.createDataFrame([row], HEARTBEATS_SCHEMA), config, "run_heartbeats", mode="append")


def test_a_dead_run_is_told_from_a_live_one_and_recorded_lost_once(spark, config):
    dead, live, dataset = "d" * 32, "e" * 32, "reaped"
    with recorded_run(spark, config, "test", [dataset]):     # the tables and the view exist
        pass
    _beat(spark, config, dead, dataset, age_s=3600.0)
    _beat(spark, config, live, dataset, age_s=5.0)
    assert [r.status for r in _status(spark, dead)] == ["lost"]
    assert [r.status for r in _status(spark, live)] == ["running"]

    files = lake_files(config)
    files.write_text("x", "work", "classify", dataset, dead, "shard.parquet")
    files.write_text("x", "outputs", dataset, dead, "map.png")
    files.write_text("{}", "models", "tskm", dataset, "tskm", dead, "model.json")       # cut short
    store = ModelStore(files, "forecast", dataset, "dapf")
    store.save(dead, lambda folder: (folder / "model.json").write_text("{}"))        # whole: kept
    assert reap_lost_runs(spark, config) == [dead]
    assert reap_lost_runs(spark, config) == []
    rows = spark.sql(f"SELECT * FROM insar.runs WHERE run_id = '{dead}'").collect()
    assert len(rows) == 1 and rows[0].status == "lost" and rows[0].error.startswith("lost: no heartbeat since ")
    assert rows[0].job == "cluster" and rows[0].datasets == [dataset]
    assert [r.status for r in _status(spark, dead)] == ["lost"]
    beats = {r.run_id for r in read_table(spark, config, "run_heartbeats").select("run_id").collect()}
    assert dead not in beats and live in beats
    assert not files.exists("work", "classify", dataset, dead) and not files.exists("outputs", dataset, dead)
    assert not files.exists("models", "tskm", dataset, "tskm", dead)
    store.check_complete(dead)
    assert spark.sql(f"SELECT count(*) AS n FROM insar.runs WHERE run_id = '{live}'").first().n == 0

    later = "f" * 32                      # a job reaps while it works, and is done with it when it ends
    _beat(spark, config, later, dataset, age_s=3600.0)
    with recorded_run(spark, config, "test", [dataset]):
        pass
    assert [r.status for r in spark.sql(f"SELECT status FROM insar.runs WHERE run_id = '{later}'").collect()] \
        == ["lost"]


def test_a_reaper_killed_half_way_is_finished_by_the_next(spark, config):
    """A reaper killed after recording a run lost, before removing its leftovers and heartbeats
    (found by benchmarks/crashes.py: a classify run's training shards were left for good): the
    next reaper removes them, then the heartbeats; a run that succeeded keeps its outputs."""
    half, done, dataset = "a" * 32, "b" * 32, "half_reaped"
    with recorded_run(spark, config, "test", [dataset]):
        pass
    files = lake_files(config)
    for run_id, status in ((half, "lost"), (done, "succeeded")):
        _beat(spark, config, run_id, dataset, age_s=3600.0)
        files.write_text("x", "work", "classify", dataset, run_id, "shard.parquet")
        files.write_text("x", "outputs", dataset, run_id, "map.png")
        row = (run_id, "classify", [dataset], dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1), status, None,
               config.hash, "{}", None, None, None)
        write_table(spark, spark.createDataFrame([row], RUNS_SCHEMA), config, "runs", mode="append")
    assert reap_lost_runs(spark, config) == []                     # no new row: both are recorded
    assert not files.exists("work", "classify", dataset, half) and not files.exists("outputs", dataset, half)
    assert files.exists("outputs", dataset, done, "map.png")       # (its work folder: its own stage's)
    beats = {r.run_id for r in read_table(spark, config, "run_heartbeats").select("run_id").collect()}
    assert not beats & {half, done}
    assert {r.status for r in spark.sql(f"SELECT status FROM insar.runs WHERE run_id IN ('{half}', '{done}')")
            .collect()} == {"lost", "succeeded"}


def test_a_run_never_reaps_itself(spark, config):
    """A job's reaper runs in its heartbeat thread before its second beat; when the reaping outlasts
    lost_after_s its own run looks lost, and must not be taken for lost (nor its files removed)."""
    own, dataset = "c" * 32, "self_reaped"
    _beat(spark, config, own, dataset, age_s=3600.0)
    lake_files(config).write_text("x", "work", "classify", dataset, own, "shard.parquet")
    assert reap_lost_runs(spark, config, alive=own) == []
    assert lake_files(config).exists("work", "classify", dataset, own, "shard.parquet")
    assert reap_lost_runs(spark, config) == [own]                  # once it is dead, it is lost


def test_the_fault_hook_fails_a_share_of_first_attempts_only():
    chosen = np.array([should_fail(stage, part, 0, 0.3, "1") for stage in range(100) for part in range(100)])
    # a binomial share of 10,000 tasks: sd sqrt(0.3 * 0.7 / 10,000) = 0.0046; 0.03 is 6.5 sd
    assert abs(chosen.mean() - 0.3) < 0.03
    assert not any(should_fail(stage, part, 1, 1.0, "1") for stage in range(20) for part in range(20))
    assert all(should_fail(stage, part, 0, 1.0, "1") for stage in range(20) for part in range(20))
    assert not any(should_fail(stage, part, 0, 0.0, "1") for stage in range(20) for part in range(20))
    other = np.array([should_fail(stage, part, 0, 0.3, "2") for stage in range(100) for part in range(100)])
    assert (chosen != other).any()                        # the seed chooses other tasks


@pytest.mark.parametrize("keys, message", [
    (["lake.run_heartbeat_s=0"], "config key 'lake.run_heartbeat_s' must be > 0; got 0"),
    (["lake.run_heartbeat_s=60", "lake.run_lost_after_s=100"], "got 60.0 and 100.0"),
])
def test_heartbeat_settings_are_checked(keys, message):
    from insarlake.config import load_config
    from insarlake.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=keys)


def _bins(spark, dataset: str, run, n: int):
    """``n`` rows of covariogram (a small result table) of ``dataset`` written by ``run``."""
    rows = [(dataset, run.run_id, float(i), float(n), n) for i in range(n)]
    write_table(spark, spark.createDataFrame(rows, "dataset string, run_id string, distance_km double, "
                                                   "covariance double, pairs long"),
                run.config, "covariogram", [dataset], run=run)


def test_result_tables_keep_every_run_and_readers_take_the_last_good_one(spark, config):
    """Each run adds its rows; a reader takes the rows of the run written last, unless it failed;
    a named run's rows are read by its id; a run's own rows first; re-writing a run replaces only
    its rows; a write without the run is refused."""
    dataset = "kept_runs"
    with recorded_run(spark, config, "test", [dataset]) as first:
        _bins(spark, dataset, first, 3)
    with recorded_run(spark, config, "test", [dataset]) as second:
        _bins(spark, dataset, second, 5)
        _bins(spark, dataset, second, 4)                       # idempotent: its rows replaced, not added
    assert run_results(spark, config, "covariogram", dataset).count() == 4
    assert run_results(spark, config, "covariogram", dataset, first.run_id).count() == 3
    assert read_table(spark, config, "covariogram", [dataset]).count() == 3 + 4
    with pytest.raises(InputError, match=f"table covariogram: no rows of run nosuch for dataset {dataset}"):
        run_results(spark, config, "covariogram", dataset, "nosuch")
    with pytest.raises(RuntimeError):
        with recorded_run(spark, config, "test", [dataset]) as failed:
            _bins(spark, dataset, failed, 7)
            assert run_results(spark, config, "covariogram", dataset, current=failed).count() == 7
            raise RuntimeError("a later stage fails")
    assert latest_run_id(spark, config, "covariogram", dataset) == second.run_id      # not the failed run's
    with pytest.raises(ValueError, match="table covariogram keeps every run's rows: write_table needs the run"):
        write_table(spark, read_table(spark, config, "covariogram", [dataset]), config, "covariogram", [dataset])
    assert run_results(spark, config, "covariogram", "no_such_dataset").count() == 0


def test_a_run_that_wrote_no_rows_is_its_own_readers_latest_not_an_earlier_run(spark, config):
    """A quiet scene: the run's stage writes the table with zero rows. Its later stages read its
    empty result (by name too), never the rows of the run before it; others still take the last run
    with rows, and a named run that wrote nothing is still an error for them."""
    dataset = "quiet_run"
    with recorded_run(spark, config, "test", [dataset]) as busy:
        _bins(spark, dataset, busy, 3)
    with recorded_run(spark, config, "test", [dataset]) as quiet:
        _bins(spark, dataset, quiet, 0)
        assert latest_run_id(spark, config, "covariogram", dataset, current=quiet) == quiet.run_id
        assert run_results(spark, config, "covariogram", dataset, current=quiet).count() == 0
        assert run_results(spark, config, "covariogram", dataset, quiet.run_id, current=quiet).count() == 0
        with pytest.raises(InputError, match=f"no rows of run {quiet.run_id}"):
            run_results(spark, config, "covariogram", dataset, quiet.run_id, current=busy)
    assert latest_run_id(spark, config, "covariogram", dataset) == busy.run_id


def test_a_succeeded_run_prunes_old_and_failed_runs_but_never_running_ones(spark, config):
    keep2 = replace(config, lake=replace(config.lake, keep_runs=2))
    dataset = "pruned_runs"
    running = Run("test", keep2, [dataset])                    # not recorded: a run still going
    _bins(spark, dataset, running, 1)
    with pytest.raises(RuntimeError):
        with recorded_run(spark, keep2, "test", [dataset]) as failed:
            _bins(spark, dataset, failed, 2)
            raise RuntimeError("failed")
    done = []
    for n in (3, 4, 5):
        with recorded_run(spark, keep2, "test", [dataset]) as run:
            _bins(spark, dataset, run, n)
        done.append(run.run_id)
    left = {r.run_id: r.n for r in read_table(spark, config, "covariogram", [dataset])
            .groupBy("run_id").count().withColumnRenamed("count", "n").collect()}
    # the two good runs written last, and the run not recorded yet; the failed and the oldest gone
    assert left == {done[2]: 5, done[1]: 4, running.run_id: 1}


def test_the_readme_s_latest_run_query_answers_the_latest_succeeded_run(spark, config):
    """The SQL the README gives for a dataset's latest succeeded run, run as written (on the
    covariogram table and a dataset of this test)."""
    query = readme_block("latest-run")
    dataset = "readme_latest"
    with recorded_run(spark, config, "test", [dataset]) as older:
        _bins(spark, dataset, older, 2)
    with recorded_run(spark, config, "test", [dataset]) as newer:
        _bins(spark, dataset, newer, 3)
    with pytest.raises(RuntimeError):
        with recorded_run(spark, config, "test", [dataset]) as failed:
            _bins(spark, dataset, failed, 4)
            raise RuntimeError("failed")
    rows = spark.sql(query.replace("hotspots", "covariogram").replace("'demo'", f"'{dataset}'")).collect()
    assert len(rows) == 3 and {r.run_id for r in rows} == {newer.run_id}


def _hotspots(spark, dataset: str, run, shapes: dict[int, tuple[str, bool, float]]):
    """{hotspot_id: (ellipse WKT, retained, mean_velocity)} of ``dataset`` by ``run``, one pixel each."""
    from conftest import write_hotspots

    write_hotspots(spark, dataset, run, {h: {"n_pixels": 1, "geometry": wkt, "retained": kept, "mean_velocity": v}
                                         for h, (wkt, kept, v) in shapes.items()},
                   {h: [f"p{h}"] for h in shapes})


def test_the_analysts_views_and_the_readme_s_area_query(spark, config):
    """latest_hotspots holds the latest succeeded run's rows only; hotspot_history every succeeded
    run's retained hotspots; the README's area query (Sedona) selects the hotspots inside it."""
    dataset = "views"
    inside = "POLYGON ((11.34 44.49, 11.36 44.49, 11.36 44.51, 11.34 44.51, 11.34 44.49))"
    outside = "POLYGON ((12.0 45.0, 12.1 45.0, 12.1 45.1, 12.0 45.1, 12.0 45.0))"
    with recorded_run(spark, config, "test", [dataset]) as first:
        _hotspots(spark, dataset, first, {0: (inside, True, -9.0)})
    with recorded_run(spark, config, "test", [dataset]) as second:
        _hotspots(spark, dataset, second, {0: (outside, True, -3.0), 1: (inside, True, -12.0),
                                           2: (inside, False, -1.0)})
    with pytest.raises(RuntimeError):
        with recorded_run(spark, config, "test", [dataset]) as failed:
            _hotspots(spark, dataset, failed, {0: (inside, True, -50.0)})
            raise RuntimeError("failed")
    latest = spark.sql(f"SELECT run_id, hotspot_id FROM insar.latest_hotspots WHERE dataset = '{dataset}'").collect()
    assert {(r.run_id, r.hotspot_id) for r in latest} == {(second.run_id, h) for h in (0, 1, 2)}
    assert spark.sql(f"SELECT count(*) AS n FROM insar.latest_hotspot_pixels WHERE dataset = '{dataset}'"
                     ).first().n == 3
    history = spark.sql(f"SELECT run_id, hotspot_id, run_finished FROM insar.hotspot_history "
                        f"WHERE dataset = '{dataset}'").collect()
    assert sorted((r.run_id == first.run_id, r.hotspot_id) for r in history) == [(False, 0), (False, 1), (True, 0)]
    assert all(r.run_finished is not None for r in history)
    found = spark.sql(readme_block("hotspots-in-area").replace("'demo'", f"'{dataset}'")).collect()
    assert [(r.hotspot_id, r.mean_velocity) for r in found] == [(1, -12.0)]      # retained and inside only
