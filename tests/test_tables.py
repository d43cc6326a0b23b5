"""The table contract (insarlake/tables.py): its schemas, the check of every write, and the writers
and readers it names against the code."""
from __future__ import annotations

import ast

import pytest
from pyspark.sql import types as T

from conftest import PROJECT
from insarlake.tables import TABLES, columns, conform, schema

PACKAGE = PROJECT / "libs" / "insarlake"
# The calls that read or write a table named by a string literal among their arguments.
WRITES = {"write_table"}
READS = {"read_table", "table_exists", "analysis_pixels", "run_results", "rows_written", "latest_run_id"}


def test_the_ddl_parses_to_spark_types():
    parsed = columns("a string NOT NULL, b array<float>, c map<string,double>, d map<long,array<int>>, e date")
    assert parsed == T.StructType([
        T.StructField("a", T.StringType(), False), T.StructField("b", T.ArrayType(T.FloatType())),
        T.StructField("c", T.MapType(T.StringType(), T.DoubleType())),
        T.StructField("d", T.MapType(T.LongType(), T.ArrayType(T.IntegerType()))), T.StructField("e", T.DateType())])
    with pytest.raises(ValueError, match="unknown column type 'text'"):
        columns("a text")
    for table in TABLES.values():
        names = table.column_names
        assert len(names) == len(set(names)), table.name
        assert set(table.partition_by) <= set(names), table.name


def test_conform_names_every_difference():
    clusters = schema("clusters")
    assert conform("clusters", clusters) == []
    # nullability does not count
    assert conform("clusters", T.StructType([T.StructField(f.name, f.dataType, False) for f in clusters])) == []
    wrong = T.StructType([f if f.name != "tskm_label" else T.StructField("tskm_label", T.LongType())
                          for f in clusters if f.name != "is_core"] + [T.StructField("extra", T.StringType())])
    assert conform("clusters", wrong) == ["column is_core missing", "column extra not in the contract",
                                         "column tskm_label is long, the contract says int"]
    with pytest.raises(KeyError, match="no table 'nosuch'"):
        conform("nosuch", clusters)


def _stage_of(path) -> str:
    """insarlake/cluster/stage.py -> cluster; insarlake/lake.py -> lake; insarlake/jobs/sites.py -> sites."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[1] if parts[0] == "jobs" else parts[0]


def _table_calls():
    """{(stage, 'read'|'write', table)} for every call of the lake's readers and writers in the package."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name not in WRITES | READS:
                continue
            kind = "write" if name in WRITES else "read"
            if name == "analysis_pixels":
                found.add((_stage_of(path), kind, "pixels"))
            for arg in node.args:
                if isinstance(arg, ast.Constant) and arg.value in TABLES:
                    found.add((_stage_of(path), kind, arg.value))
    return found


def test_the_writers_and_readers_named_are_the_code_s():
    calls = _table_calls()
    written = {(stage, table) for stage, kind, table in calls if kind == "write"}
    read = {(stage, table) for stage, kind, table in calls if kind == "read"}
    assert written, "no write_table call found: the scan is broken"
    # every table a stage writes, the contract says it writes (and no other stage does)
    assert written == {(t.writer, t.name) for t in TABLES.values() if (t.writer, t.name) in written}
    assert {t for _, t in written} == set(TABLES)
    # every table a stage reads is named among its readers, and every reader named reads it
    # (the lake's own bookkeeping aside: `runs` is also read in SQL by the run_status view)
    assert read == {(stage, t.name) for t in TABLES.values() for stage in t.readers}


@pytest.mark.spark
def test_a_write_that_breaks_the_contract_is_refused_before_anything_is_written(spark, config):
    from insarlake.lake import table_path, write_table

    frame = spark.createDataFrame([("d", "r", "p", 1)], "dataset string, run_id string, pixel_id string, tskm_label long")
    with pytest.raises(ValueError, match="table clusters: the rows written do not match the table contract "
                                         r"\(insarlake/tables.py\): column tskm_distance missing.*tskm_label is long"):
        write_table(spark, frame, config, "clusters", ["d"])
    from pathlib import Path

    assert not (Path(table_path(config, "clusters")) / "_delta_log").exists() or \
        spark.read.format("delta").load(table_path(config, "clusters")).where("dataset = 'd'").count() == 0


def test_a_table_of_an_older_contract_takes_the_columns_added_since(spark, config, tmp_path):
    # hotspot_pixels as it was before `rim`: the next write adds the column, the old rows read null
    from insarlake.config import replace
    from insarlake.lake import Run, table_path, write_table

    lake = replace(config, lake=replace(config.lake, path=str(tmp_path / "lake")))
    path = table_path(lake, "hotspot_pixels")
    (spark.createDataFrame([("old", "r0", 1, "p1")], "dataset string, run_id string, hotspot_id long, pixel_id string")
     .write.format("delta").partitionBy("dataset").save(path))
    run = Run("hotspots", lake)
    write_table(spark, spark.createDataFrame([("new", run.run_id, 2, "p2", True)], schema("hotspot_pixels")), lake,
                "hotspot_pixels", ["new"], run=run)
    table = spark.read.format("delta").load(path)
    assert table.schema == schema("hotspot_pixels")
    rows = {r.dataset: r.asDict() for r in table.collect()}
    assert rows == {"old": {"dataset": "old", "run_id": "r0", "hotspot_id": 1, "pixel_id": "p1", "rim": None},
                    "new": {"dataset": "new", "run_id": run.run_id, "hotspot_id": 2, "pixel_id": "p2", "rim": True}}
