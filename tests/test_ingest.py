"""Ingest on real Spark/Delta: the real EGMS burst, corrupted copies, wide CSV and Parquet."""
from __future__ import annotations

import io
from insarlake.config import replace

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import EGMS_ZIP
from insarlake.errors import InputError
from insarlake.ingest.stage import run_ingest
from insarlake.lake import Run, read_table, recorded_run


@pytest.fixture(scope="module")
def egms_frame(egms_csv_bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(egms_csv_bytes), dtype={"pid": str})


@pytest.fixture(scope="module")
def egms_ingested(spark, config):
    with recorded_run(spark, config, "ingest", ["egms"]) as run:
        result = run_ingest(spark, config, str(EGMS_ZIP.parent), "egms", run)
    return result, run


def test_real_egms_burst_ingests_completely(spark, config, egms_ingested):
    result, run = egms_ingested
    assert (result.input_rows, result.pixels, result.quarantined, result.epochs) == (11590, 11590, 0, 210)
    assert spark.sql("SELECT count(*) AS n FROM insar.pixels WHERE dataset = 'egms'").first().n == 11590
    assert spark.sql("SELECT count(*) AS n FROM insar.epochs WHERE dataset = 'egms'").first().n == 210
    assert spark.sql("SELECT count(*) AS n FROM insar.quarantine WHERE dataset = 'egms'").first().n == 0
    sizes = {r.n for r in spark.sql("SELECT size(disp) AS n FROM insar.pixels WHERE dataset = 'egms'").collect()}
    assert sizes == {210}
    logged = spark.sql(f"SELECT * FROM insar.runs WHERE run_id = '{run.run_id}'").collect()
    assert len(logged) == 1 and logged[0].status == "succeeded"
    assert logged[0].counts["pixels"] == 11590 and logged[0].counts["input_rows"] == 11590
    assert logged[0].config_hash == config.hash


def test_real_egms_values_survive_round_trip(spark, config, egms_ingested, egms_frame):
    epochs = read_table(spark, config, "epochs", ["egms"]).orderBy("idx").collect()
    csv_dates = [c for c in egms_frame.columns if c[:1].isdigit()]
    assert [e.date.strftime("%Y%m%d") for e in epochs] == csv_dates
    sample = egms_frame.iloc[[0, 17, 4242, 9001, 11589]]
    rows = {r.pixel_id: r for r in read_table(spark, config, "pixels", ["egms"])
            .where(F.col("pixel_id").isin(list(sample.pid))).collect()}
    assert len(rows) == 5
    for _, expected in sample.iterrows():
        got = rows[expected.pid]
        assert got.lon == expected.longitude and got.lat == expected.latitude
        assert got.height == expected.height_ortho and got.velocity == expected.mean_velocity
        assert got.velocity_std == expected.mean_velocity_std
        assert got.coherence == expected.temporal_coherence
        assert got.incidence_angle == expected.incidence_angle
        np.testing.assert_allclose(got.disp, expected[csv_dates].to_numpy(float), rtol=0, atol=1e-5)
        assert got.attributes["rmse_ts"] == expected.rmse_ts
        assert got.source.endswith(".zip!EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv")
        assert got.row_number == expected.name + 1


def test_reingesting_is_idempotent(spark, config, egms_ingested):
    run_ingest(spark, config, str(EGMS_ZIP), "egms", Run("ingest", config))
    assert read_table(spark, config, "pixels", ["egms"]).count() == 11590
    assert read_table(spark, config, "epochs", ["egms"]).count() == 210


def _corrupted_copy(egms_frame: pd.DataFrame, n: int = 200) -> tuple[pd.DataFrame, dict[int, str]]:
    """First n rows as strings, with known bad rows; returns (frame, {row_number: reason part})."""
    df = egms_frame.head(n).astype(str).replace("nan", "")
    dates = [c for c in df.columns if c[:1].isdigit()]
    bad = {}
    df.loc[2, "latitude"] = "123.5"; bad[3] = "latitude 123.5 out of range"
    df.loc[4, "pid"] = df.loc[0, "pid"]; bad[5] = "duplicate pixel_id (first at"
    df.loc[6, dates[1]] = "abc"; bad[7] = f"non-numeric displacement at epoch {dates[1]}: 'abc'"
    df.loc[8, "longitude"] = ""; bad[9] = "missing longitude"
    df.loc[10, dates[5:80]] = ""; bad[11] = "75 of 210 epochs missing"
    df.loc[12, dates] = "1.5"; bad[13] = "constant series"
    df.loc[14, "mean_velocity"] = "fast"; bad[15] = "non-numeric mean_velocity: 'fast'"
    df.loc[16, "temporal_coherence"] = "1.7"; bad[17] = "temporal_coherence 1.7 out of range"
    df.loc[18, "pid"] = ""; bad[19] = "missing pixel_id"
    return df, bad


def test_corrupted_copy_quarantines_exactly_the_bad_rows(spark, config, egms_frame, tmp_path):
    df, bad = _corrupted_copy(egms_frame)
    path = tmp_path / "corrupt.csv"
    df.to_csv(path, index=False)
    # A row cut short: fewer fields than the header.
    with open(path, "a") as fh:
        fh.write(",".join(df.iloc[30].tolist()[:40]) + "\n")
    bad[len(df) + 1] = "row has fewer fields than the header"
    result = run_ingest(spark, config, str(path), "corrupt", Run("ingest", config))
    assert result.input_rows == len(df) + 1
    assert result.quarantined == len(bad)
    assert result.pixels + result.quarantined == result.input_rows
    quarantined = {r.row_number: r for r in read_table(spark, config, "quarantine", ["corrupt"]).collect()}
    assert set(quarantined) == set(bad)
    for row_number, reason in bad.items():
        assert reason in quarantined[row_number].reason, (row_number, quarantined[row_number].reason)
    assert quarantined[5].pixel_id == df.loc[0, "pid"]
    kept = {r.pixel_id for r in read_table(spark, config, "pixels", ["corrupt"]).select("pixel_id").collect()}
    assert df.loc[0, "pid"] in kept  # the first of a duplicated id stays


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns=["latitude"]), "missing column 'latitude' (lat)"),
    (lambda df: df.rename(columns={"20200109": "2020010x"}), "column '2020010x' is not an epoch date"),
    (lambda df: df.rename(columns={"20200109": "20201309"}), "column '20201309' is not an epoch date"),
])
def test_bad_file_stops_with_one_clear_line(spark, config, egms_frame, tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(egms_frame.head(20)).to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        run_ingest(spark, config, str(path), "bad", Run("ingest", config))
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_inputs_that_are_not_tables(spark, config, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    for name, message in [("empty.csv", "empty file"), ("broken.zip", "not a readable ZIP archive")]:
        with pytest.raises(InputError, match=message):
            run_ingest(spark, config, str(tmp_path / name), "bad", Run("ingest", config))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("pid,latitude,longitude,20200101,20200107,20200113\n"
                      "a,44.1,11.2,1.0,2.0,3.0\n"
                      "b,44.1,11.2,1.0,2.0,3.0,4.0\n")
    with pytest.raises(InputError, match=r"ragged.csv: malformed CSV \(data row 2 has 7 fields, the header 6\)"):
        run_ingest(spark, config, str(ragged), "bad", Run("ingest", config), fmt="wide-csv")
    with pytest.raises(InputError, match="cannot be listed"):
        run_ingest(spark, config, str(tmp_path / "nowhere"), "bad", Run("ingest", config))


def test_wide_csv_and_parquet_with_fitted_velocity(spark, config, egms_frame, tmp_path):
    dates = [c for c in egms_frame.columns if c[:1].isdigit()]
    part = egms_frame.head(300)
    wide = pd.DataFrame({"pixel_id": part.pid, "lon": part.longitude, "lat": part.latitude,
                         "coherence": part.temporal_coherence})
    wide = pd.concat([wide, part[dates].rename(columns=lambda d: f"{d[:4]}-{d[4:6]}-{d[6:]}") / 1000.0], axis=1)
    (tmp_path / "w").mkdir()
    wide.iloc[:150].to_csv(tmp_path / "w" / "a.csv", index=False)
    wide.iloc[150:].to_parquet(tmp_path / "w" / "b.parquet", index=False)
    (tmp_path / "w" / "README.txt").write_text("not data")
    in_metres = replace(config, ingest=replace(config.ingest, displacement_unit="m"))
    result = run_ingest(spark, in_metres, str(tmp_path / "w"), "wide", Run("ingest", in_metres))
    assert (result.pixels, result.quarantined, result.files) == (300, 0, 2)
    got = read_table(spark, config, "pixels", ["wide"]).toPandas().set_index("pixel_id").loc[part.pid]
    # metres in, millimetres stored
    np.testing.assert_allclose(np.stack(got.disp.to_numpy()), part[dates].to_numpy(float), atol=1e-4)
    # velocity fitted from the series: independent least squares with numpy
    t = (pd.to_datetime(dates) - pd.Timestamp(dates[0])).days.to_numpy() / 365.25
    expected = np.polyfit(t, part[dates].to_numpy(float).T, 1)[0]
    np.testing.assert_allclose(got.velocity.to_numpy(), expected, rtol=1e-6, atol=1e-6)
    assert got.height.isna().all() and got.incidence_angle.isna().all()


def test_failed_run_is_recorded_with_its_error(spark, config, tmp_path):
    (tmp_path / "x.csv").write_text("pid,longitude\nA,1\n")
    with pytest.raises(InputError):
        with recorded_run(spark, config, "ingest", ["failing"]) as run:
            run_ingest(spark, config, str(tmp_path / "x.csv"), "failing", run)
    row = spark.sql(f"SELECT status, error FROM insar.runs WHERE run_id = '{run.run_id}'").first()
    assert row.status == "failed" and "InputError" in row.error and "epoch columns" in row.error


def _task_payload(df) -> tuple[int, int]:
    """(bytes of the pickled Python function, number of broadcast variables) that Spark ships to
    every task of the mapInPandas at the top of ``df``'s logical plan."""
    function = df._jdf.queryExecution().logical().functionExpr().func()
    return function.command().length(), function.broadcastVars().size()


def test_many_small_files_tasks_get_no_per_file_data(spark, config, egms_frame, tmp_path, monkeypatch):
    """200 tiny EGMS files ingest with reconciled counts, and what a parsing task is sent does
    not grow with the number of files.

    Measured on the real plan: the pickled function (closure included) that pyspark stores in the
    MapInPandas node of the parse step, and its broadcast variables (pyspark moves a command over
    1 MB into a broadcast, so both are checked). Both runs have the same epoch dates and dataset
    names of one length, so a closure without per-file data pickles to exactly the same number of
    bytes for 10 and for 200 files; the former design (every file's header in the closure) grew
    by every file's 210 epoch names and dates (~5.4 KB per file here: over pyspark's 1 MB
    threshold at 200 files, so the command became a broadcast)."""
    from insarlake.ingest import stage

    payloads = []
    original = stage._parse_files

    def recording(*args, **kwargs):
        df = original(*args, **kwargs)
        payloads.append(_task_payload(df))
        return df

    monkeypatch.setattr(stage, "_parse_files", recording)
    rows_per_file = 3
    for n_files, dataset in [(10, "many010"), (200, "many200")]:
        folder = tmp_path / dataset
        folder.mkdir()
        part = egms_frame.head(n_files * rows_per_file).copy()
        bad = 0
        for i in range(n_files):
            chunk = part.iloc[i * rows_per_file:(i + 1) * rows_per_file].copy()
            if i % 10 == 0:  # one row out of range in every 10th file
                chunk.iloc[1, chunk.columns.get_loc("latitude")] = 123.5
                bad += 1
            if i == n_files - 1:  # the last file repeats the first file's first pixel id
                chunk.iloc[2, chunk.columns.get_loc("pid")] = part.pid.iloc[0]
                bad += 1
            chunk.to_csv(folder / f"EGMS_burst_{i:04d}.csv", index=False)
        result = run_ingest(spark, config, str(folder), dataset, Run("ingest", config))
        assert result.files == n_files and result.epochs == 210
        assert result.input_rows == n_files * rows_per_file
        assert (result.pixels, result.quarantined) == (n_files * rows_per_file - bad, bad)
        assert read_table(spark, config, "pixels", [dataset]).count() == result.pixels
        assert read_table(spark, config, "quarantine", [dataset]).count() == bad
    (small, small_broadcasts), (large, large_broadcasts) = payloads
    assert small_broadcasts == large_broadcasts == 0
    assert large == small, (small, large)


def test_file_error_among_many_files_names_the_file(spark, config, egms_frame, tmp_path):
    """A bad header in one of many files stops the job with the line naming that file."""
    for i in range(12):
        frame = egms_frame.iloc[i * 2:(i + 1) * 2]
        if i == 7:
            frame = frame.drop(columns=["latitude"])
        frame.to_csv(tmp_path / f"f{i:02d}.csv", index=False)
    with pytest.raises(InputError) as err:
        run_ingest(spark, config, str(tmp_path), "badmany", Run("ingest", config))
    assert str(err.value) == f"file {tmp_path / 'f07.csv'}: missing column 'latitude' (lat)"
