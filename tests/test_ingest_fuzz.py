"""Fuzzed ingest (issue 16): damaged EGMS L2b files and folders end either with every input row a
pixel or quarantined, or with exit status 2 and one line naming the file; never a traceback, never
a partial write. Hostile names are refused where they enter or kept verbatim as data.

The property tests run ingest's file-level path without Spark (``ingest_fuzz.dry_ingest``: the
same functions the tasks call, and the Arrow conversion mapInPandas makes) on hundreds of cases;
every named mutation also runs through the real job on Spark, whose outcome must equal the dry run's.
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from conftest import EGMS_ZIP, EGMS_CSV_MEMBER
from ingest_fuzz import (MUTATIONS, Outcome, check_outcome, damaged, dry_ingest, sample_burst, with_text_cells,
                         write_case)
from insarlake.cli import one_line, run_job
from insarlake.config import load_config
from insarlake.errors import ConfigError, InputError
from insarlake.files import LAKE_FORMAT, LAKE_MARKER, LakeFiles
from insarlake.ingest import stage
from insarlake.jobs import ingest as ingest_job
from insarlake.lake import LAKE_ENTRIES, read_table
from insarlake.names import check_dataset, dataset_from

# derandomized: the same cases every run (a failing case is a bug to fix, never a flaky test);
# benchmarks/ingest_fuzz.py runs many more. In the slow tier: ~0.1 s per case.
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def burst() -> bytes:
    with zipfile.ZipFile(EGMS_ZIP) as zf:
        return sample_burst(zf.read(EGMS_CSV_MEMBER))


def _run_dry(files: dict[str, bytes]) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_case(Path(tmp) / "input", files)
        outcome = dry_ingest(folder)
        check_outcome(outcome, folder)
        return outcome


@pytest.mark.slow
@FUZZ
@given(name=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**32 - 1))
def test_named_mutations_end_cleanly(burst, name, seed):
    _run_dry(MUTATIONS[name](burst, np.random.default_rng(seed)))


_EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 12), st.binary(max_size=12)), min_size=1, max_size=6)


@pytest.mark.slow
@FUZZ
@given(edits=_EDITS, as_zip=st.booleans())
def test_random_byte_damage_ends_cleanly(burst, edits, as_zip):
    _run_dry(damaged(burst, edits, as_zip))


@pytest.mark.slow
@FUZZ
@given(cells=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=1, max_size=8))
def test_any_text_in_the_cells_ends_cleanly(burst, cells):
    _run_dry(with_text_cells(burst, cells, np.random.default_rng(len(cells))))


def test_the_known_failures_of_the_old_parser(burst):
    """The cases that ended with a traceback or shifted columns before issue 16."""
    header_only = _run_dry(MUTATIONS["header only"](burst, None))
    assert header_only.error.endswith("no data rows (only a header)")
    corrupt = _run_dry({"burst.zip": MUTATIONS["corrupt zip"](burst, np.random.default_rng(0))["burst.zip"]})
    assert "unreadable" in corrupt.error or "not a readable ZIP" in corrupt.error
    spaced = _run_dry(MUTATIONS["spaces around names"](burst, None))
    assert spaced.pixels == 25 and spaced.quarantined == 0
    # pandas took the first column as the index when the first data row had one field more
    shifted = _run_dry(MUTATIONS["extra field in the first row"](burst, None))
    assert "data row 1 has" in shifted.error
    quoted_name = burst.replace(b"mp_type", b'"mp, type"', 1)
    assert _run_dry({"burst.csv": quoted_name}).pixels == 25


def test_a_cell_too_long_for_a_number_is_bad_text_and_the_others_parse():
    """One cell of 100,000 characters among numbers: that cell is bad (its row is quarantined),
    the others parse, and the block is not widened to it (a fixed-width text array as wide as the
    longest cell: ~1 TB for a real burst of 2.4 million cells). The bound is 64 characters."""
    from insarlake.ingest.parse import _MAX_NUMBER_CHARS, to_float

    assert _MAX_NUMBER_CHARS == 64
    longest = "1." + "0" * (_MAX_NUMBER_CHARS - 2)                    # 64 characters: still a number
    block = np.array([["1.5", "x" * 100_000, ""], ["-2e1", longest, longest + "0"], ["nan", None, " 3 "]],
                     dtype=object)
    for cells in (block, block.astype(str)):                          # text cells, or numpy's fixed-width text
        values, bad = to_float(cells)
        assert bad.tolist() == [[False, True, False], [False, False, True], [False, False, False]]
        np.testing.assert_array_equal(values, [[1.5, np.nan, np.nan], [-20.0, 1.0, np.nan], [np.nan, np.nan, 3.0]])


def test_a_file_that_disappears_is_named(tmp_path, burst):
    gone = tmp_path / "gone.csv"
    rows = stage.file_headers(str(gone), "auto", {})
    assert len(rows) == 1 and rows[0][1] is None and rows[0][-1].startswith(f"file {gone}: unreadable")


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("name", ["../x", "a/b", "a'b", "a`b", "a;b", "a b", "ünïcode", "x" * 65, ".hidden",
                                  "-flag", "", "a\nb"])
def test_hostile_dataset_names_are_refused_in_one_line(tmp_path, capsys, name):
    status = run_job(ingest_job.main, ["--input", str(tmp_path), f"--dataset={name}", "--lake", str(tmp_path / "lake")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: --dataset: dataset name ")
    assert not (tmp_path / "lake").exists()           # refused before anything starts
    with pytest.raises(InputError):
        check_dataset(name)


def test_dataset_names_from_hostile_input_names():
    assert dataset_from("my data (2024)") == "my_data__2024_"
    assert dataset_from("../../etc") == "etc" and dataset_from("'; DROP") == "DROP"
    assert dataset_from("...") == "dataset" and len(dataset_from("y" * 300)) == 64
    assert ingest_job.default_dataset_name("/in/EGMS burst 'x'.zip") == "EGMS_burst__x_"
    assert check_dataset("EGMS_L2b_022_0845_IW2_VV_2020-2024.v1") == "EGMS_L2b_022_0845_IW2_VV_2020-2024.v1"


@pytest.mark.parametrize("override, key", [("dataset=../x", "'dataset'"), ("catalog.database=insar; DROP", "'catalog.database'"),
                                           ("catalog.database=`x`", "'catalog.database'"), ("catalog.database=1x", "'catalog.database'")])
def test_hostile_config_names_are_refused(override, key):
    with pytest.raises(ConfigError, match=f"config key {key}"):
        load_config(overrides=[override])


def test_a_lake_must_be_a_lake(tmp_path, capsys):
    """A file, or a folder of other files, is refused before anything is written there; an empty
    folder or an existing lake is marked and accepted."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        LakeFiles(str(tmp_path / "afile")).check_lake(LAKE_ENTRIES)
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    status = run_job(ingest_job.main, ["--input", str(tmp_path), "--lake", str(home)])
    err = capsys.readouterr().err
    assert status == 2 and err == (f"error: lake {home}: a folder that holds other files (Documents, notes.txt), "
                                   "not a lake; give a new or empty folder\n")
    assert sorted(p.name for p in home.iterdir()) == ["Documents", "notes.txt"]     # nothing written
    for lake, content in ((tmp_path / "new", []), (tmp_path / "empty", [None]), (tmp_path / "old", ["pixels"])):
        for name in content:
            (lake / (name or "")).mkdir(parents=True, exist_ok=True)
        files = LakeFiles(str(lake))
        files.check_lake(LAKE_ENTRIES)
        assert files.read_json(LAKE_MARKER) == {"format": LAKE_FORMAT}
        (lake / "anything").mkdir()
        files.check_lake(LAKE_ENTRIES)              # marked: whatever it holds now


def test_errors_are_one_line_whatever_the_file_name():
    assert one_line("file /in/a\nb.csv: empty file") == "file /in/a\\nb.csv: empty file"
    assert one_line("file /in/\x1b[31mred.csv\u2028: x") == "file /in/\\x1b[31mred.csv\\u2028: x"


# ---------------------------------------------------------------- the real job

def _ingest(folder: Path, dataset: str, lake: str, capsys) -> tuple[int, str]:
    """The job's exit status and what it wrote to stderr other than its log lines."""
    status = run_job(ingest_job.main, ["--input", str(folder), "--dataset", dataset, "--lake", lake,
                                       "--set", "spark.shuffle_partitions=4", "--log-level", "WARNING"])
    err = capsys.readouterr().err
    return status, "".join(line for line in err.splitlines(keepends=True) if " WARNING " not in line)


@pytest.mark.long      # the ingest job once per damage: ~10 min
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_mutation_through_the_job(spark, config, tmp_path, capsys, burst, name):
    """The job's outcome equals the dry run's: the same error line (exit 2, nothing written for the
    dataset), or the same pixels and quarantine counts (exit 0, reconciled)."""
    folder = write_case(tmp_path / "input", MUTATIONS[name](burst, np.random.default_rng(0)))
    expected = dry_ingest(folder)
    dataset = "fuzz_" + dataset_from(name)
    status, err = _ingest(folder, dataset, config.lake.path, capsys)
    pixels = read_table(spark, config, "pixels", [dataset]).count()
    if expected.error:
        assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err == f"error: {expected.error}\n" or (
            "file " in err and str(folder) in err), (err, expected.error)
        assert pixels == 0
        return
    assert status == 0, err
    quarantined = read_table(spark, config, "quarantine", [dataset])
    assert (pixels, quarantined.count()) == (expected.pixels, expected.quarantined)
    assert quarantined.where(F.col("reason").isNull() | (F.length("reason") == 0)).count() == 0


def test_hostile_file_and_column_names_are_kept_as_data(spark, config, tmp_path, capsys, burst):
    odd = "we'ird; `name` \u00fcn\u00efcode %20 (1).csv"
    column = "a'b; DROP TABLE x --`\u00e9"
    content = burst.replace(b"mp_type", f'"{column}"'.encode(), 1)
    folder = write_case(tmp_path / "in put", {odd: content})
    status, err = _ingest(folder, "hostile_names", config.lake.path, capsys)
    assert status == 0, err
    pixels = read_table(spark, config, "pixels", ["hostile_names"])
    assert pixels.count() == 25
    assert {r.source for r in pixels.select("source").distinct().collect()} == {str(folder / odd)}
    assert pixels.where(F.col("attributes").getItem(column).isNotNull()).count() == 25


def test_a_file_that_disappears_after_the_listing_stops_the_job(spark, config, tmp_path, capsys, burst, monkeypatch):
    folder = write_case(tmp_path / "input", {"a.csv": burst, "b.csv": burst.replace(b"166ax", b"266ax")})
    listed = stage.list_files

    def list_then_delete(spark, path):
        files = listed(spark, path)
        (folder / "b.csv").unlink()             # gone between the listing and the reading
        return files

    monkeypatch.setattr(stage, "list_files", list_then_delete)
    status, err = _ingest(folder, "vanishing", config.lake.path, capsys)
    assert status == 2 and err.startswith(f"error: file {folder / 'b.csv'}: unreadable") and err.count("\n") == 1
    assert read_table(spark, config, "pixels", ["vanishing"]).count() == 0
