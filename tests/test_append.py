"""New acquisitions appended to a dataset (ingest --mode append, issue 15) on the real EGMS burst cut
in two along time: a first delivery up to 2023-06 and a second from 2023-01 to the end (six months
of dates in both), with known differences: pixels only in the second (new), pixels missing from it
(not measured again), pixels whose shared dates disagree beyond the tolerance (quarantined) or
within it (accepted). The appended lake must hold, pixel by pixel, the series of the whole burst."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from conftest import EGMS_CSV_MEMBER
from deliveries import FIRST_END, SECOND_START, write_deliveries
from insarlake.errors import InputError
from insarlake.ingest import append
from insarlake.ingest.stage import run_ingest
from insarlake.jobs import ingest as ingest_job
from insarlake.cli import run_job
from insarlake.lake import Run, read_table

N_PIXELS = 600
NEW, GONE, OFF, NEAR = slice(0, 20), slice(20, 50), slice(50, 60), slice(60, 70)   # row ranges of the burst


# ---- the kernels (pure) ----

def test_epoch_positions_and_merge_by_hand():
    d = [dt.date(2020, 1, k) for k in (1, 7, 13, 19)]
    union, old_pos, new_pos = append.epoch_positions([d[0], d[1], d[2]], [d[1], d[3]])
    assert union == d
    assert old_pos.tolist() == [0, 1, 2, -1] and new_pos.tolist() == [-1, 0, -1, 1]
    merged = append.merge_series(np.array([1.0, 2.0, 3.0]), np.array([2.05, 4.0]), old_pos, new_pos)
    np.testing.assert_array_equal(merged, np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32))   # old kept at d[1]
    added = append.merge_series(None, np.array([2.0, 4.0]), old_pos, new_pos)
    np.testing.assert_array_equal(added, np.array([np.nan, 2.0, np.nan, 4.0], dtype=np.float32))
    gone = append.merge_series(np.array([1.0, 2.0, 3.0]), None, old_pos, new_pos)
    np.testing.assert_array_equal(gone, np.array([1.0, 2.0, 3.0, np.nan], dtype=np.float32))
    mm, where = append.largest_difference(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0]), old_pos, new_pos)
    assert where == 1 and mm == pytest.approx(0.5)
    assert append.largest_difference(np.array([1.0, np.nan, 3.0]), np.array([np.nan, 4.0]), old_pos, new_pos) == (0.0, -1)
    assert append.largest_difference(None, np.array([2.0, 4.0]), old_pos, new_pos) == (0.0, -1)
    assert append.last_valid_index(np.array([1.0, np.nan, 2.0, np.nan])) == 2
    assert append.last_valid_index(np.array([np.nan])) == -1 and append.last_valid_index(None) == -1


# ---- through Spark ----

@pytest.fixture(scope="module")
def deliveries(egms_csv_bytes, tmp_path_factory):
    """The burst's first N_PIXELS points written as two deliveries (folders), and the whole frame."""
    cut = write_deliveries(tmp_path_factory.mktemp("deliveries"), egms_csv_bytes, N_PIXELS, NEW, GONE, OFF, NEAR)
    return cut["folder"], cut["whole"], cut["epochs"], cut["shared"]


def _dates(epochs):
    return [dt.datetime.strptime(e, "%Y%m%d").date() for e in epochs]


def _pixels(spark, config, dataset) -> pd.DataFrame:
    return read_table(spark, config, "pixels", [dataset]).toPandas().set_index("pixel_id").sort_index()


@pytest.fixture(scope="module")
def appended(spark, config, deliveries):
    """The first delivery ingested, the second appended twice (the second time changes nothing),
    the whole burst ingested apart: (results, pixels after each append, quarantine, epochs)."""
    root, *_ = deliveries
    ingest = lambda folder, dataset, mode: run_ingest(spark, config, str(root / folder), dataset,  # noqa: E731
                                                      Run("ingest", config), mode=mode)
    first = ingest("first", "appended", "release")
    second = ingest("second", "appended", "append")
    after_one = _pixels(spark, config, "appended")
    quarantine_one = read_table(spark, config, "quarantine", ["appended"]).toPandas()
    again = ingest("second", "appended", "append")
    whole = ingest("whole", "whole", "release")
    epochs = read_table(spark, config, "epochs", ["appended"]).orderBy("idx").toPandas()
    return dict(first=first, second=second, again=again, whole=whole, after_one=after_one,
                after_two=_pixels(spark, config, "appended"), quarantine_one=quarantine_one,
                quarantine_two=read_table(spark, config, "quarantine", ["appended"]).toPandas(), epochs=epochs)


def test_the_epochs_become_the_union_of_both_deliveries(appended, deliveries):
    _, _, epochs, _ = deliveries
    assert appended["epochs"].date.tolist() == _dates(epochs)
    assert appended["second"].epochs == len(epochs) == appended["whole"].epochs


def test_counts_reconcile_for_the_appending_run(appended):
    second = appended["second"]
    quarantined = len(range(N_PIXELS)[OFF])
    assert second.mode == "append"
    assert second.input_rows == N_PIXELS - len(range(N_PIXELS)[GONE])
    assert second.added == len(range(N_PIXELS)[NEW])
    assert second.quarantined == quarantined
    assert second.updated == second.input_rows - second.added - quarantined
    assert second.input_rows == second.updated + second.added + second.quarantined
    assert second.pixels == N_PIXELS                 # every pixel of either delivery, once


def test_appended_series_equal_the_whole_burst(appended, deliveries):
    """Pixels in both deliveries (the shared dates agreeing within the tolerance) hold the whole
    burst's series, value for value, and its static columns."""
    _, whole, epochs, _ = deliveries
    have = appended["after_one"]
    ids = whole.pid.to_numpy()
    both = np.setdiff1d(ids, np.concatenate([ids[NEW], ids[GONE], ids[OFF]]))
    expected = whole.set_index("pid")[epochs].to_numpy(np.float32)
    index = {p: i for i, p in enumerate(whole.pid)}
    for pid in both:
        np.testing.assert_array_equal(np.asarray(have.loc[pid, "disp"], dtype=np.float32), expected[index[pid]],
                                      err_msg=pid)
    assert (have.loc[both, "last_date"] == _dates(epochs)[-1]).all()
    # velocities refitted over the merged series: each the slope of numpy's least-squares line
    t_years = np.array([(d - _dates(epochs)[0]).days / 365.25 for d in _dates(epochs)])
    slopes = [np.polyfit(t_years, expected[index[pid]].astype(np.float64), 1)[0] for pid in both]
    np.testing.assert_allclose(have.loc[both, "velocity"].to_numpy(), slopes, rtol=1e-9, atol=1e-9)


def test_new_pixels_are_missing_before_their_first_date(appended, deliveries):
    _, whole, epochs, _ = deliveries
    have = appended["after_one"]
    second_dates = [e >= SECOND_START for e in epochs]
    for pid in whole.pid.to_numpy()[NEW]:
        series = np.asarray(have.loc[pid, "disp"], dtype=np.float64)
        assert np.isnan(series[~np.array(second_dates)]).all()
        np.testing.assert_array_equal(series[np.array(second_dates)].astype(np.float32),
                                      whole.set_index("pid").loc[pid, [e for e in epochs if e >= SECOND_START]]
                                      .to_numpy(np.float32))


def test_pixels_not_measured_again_keep_their_series_and_say_when_last_measured(appended, deliveries):
    _, whole, epochs, _ = deliveries
    have = appended["after_one"]
    first_dates = np.array([e <= FIRST_END for e in epochs])
    last_first = _dates([e for e in epochs if e <= FIRST_END])[-1]
    for pid in whole.pid.to_numpy()[GONE]:
        series = np.asarray(have.loc[pid, "disp"], dtype=np.float64)
        assert np.isnan(series[~first_dates]).all()
        np.testing.assert_array_equal(series[first_dates].astype(np.float32),
                                      whole.set_index("pid").loc[pid, [e for e in epochs if e <= FIRST_END]]
                                      .to_numpy(np.float32))
        assert have.loc[pid, "last_date"] == last_first


def test_disagreeing_rows_are_quarantined_and_the_pixel_keeps_its_series(appended, deliveries):
    _, whole, epochs, shared = deliveries
    have, quarantine = appended["after_one"], appended["quarantine_one"]
    off = set(whole.pid.to_numpy()[OFF])
    assert set(quarantine.pixel_id) == off
    day = dt.datetime.strptime(shared[3], "%Y%m%d").date().isoformat()
    for reason in quarantine.reason:
        assert reason.startswith(f"append: the value of {day} differs from the lake's by 2.00 mm "
                                 "(more than ingest.append_max_difference_mm 0.1)"), reason
    first_dates = np.array([e <= FIRST_END for e in epochs])
    for pid in off:
        series = np.asarray(have.loc[pid, "disp"], dtype=np.float64)
        assert np.isnan(series[~first_dates]).all()
        assert have.loc[pid, "source"].endswith("first/" + EGMS_CSV_MEMBER)


def test_appending_the_same_input_again_changes_nothing(appended):
    one, two = appended["after_one"], appended["after_two"]
    assert appended["again"].updated == appended["second"].updated + appended["second"].added
    assert appended["again"].added == 0
    pd.testing.assert_index_equal(one.index, two.index)
    for column in one.columns:
        if column in ("disp", "attributes"):
            assert all(np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_nan=True)
                       if column == "disp" else a == b for a, b in zip(one[column], two[column])), column
        else:
            pd.testing.assert_series_equal(one[column], two[column], obj=column)
    key = ["source", "row_number"]
    q1, q2 = (q.sort_values(key).reset_index(drop=True) for q in (appended["quarantine_one"], appended["quarantine_two"]))
    pd.testing.assert_frame_equal(q1, q2)


def test_appending_to_an_unknown_dataset_or_track_is_one_line(spark, config, deliveries, tmp_path, capsys):
    root, whole, *_ = deliveries
    with pytest.raises(InputError, match=r"cannot be appended to dataset nosuch: the lake has no such dataset"):
        run_ingest(spark, config, str(root / "second"), "nosuch", Run("ingest", config), mode="append")
    other = tmp_path / "other"
    other.mkdir()
    (other / "EGMS_L2b_117_0301_IW1_VV_2020_2024_1.csv").write_bytes((root / "second" / EGMS_CSV_MEMBER).read_bytes())
    status = run_job(ingest_job.main, ["--input", str(other), "--dataset", "appended", "--mode", "append",
                                       "--lake", config.lake.path, "--log-level", "WARNING",
                                       "--set", "spark.shuffle_partitions=4"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 2
    assert len(err) == 1 and "it holds track 117, which the dataset does not (appended (22))" in err[0], err


def test_a_release_says_when_each_pixel_was_last_measured(spark, config, appended, deliveries):
    _, whole, epochs, _ = deliveries
    released = _pixels(spark, config, "whole")
    values = whole.set_index("pid")[epochs].to_numpy(np.float64)
    last = [_dates(epochs)[np.flatnonzero(~np.isnan(row))[-1]] for row in values]
    assert released.loc[whole.pid, "last_date"].tolist() == last
