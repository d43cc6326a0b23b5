"""Read a lake without Spark (notebooks, laptops, small services): delta-rs (``deltalake``) opens the
Delta tables and runs SQL over them with its DataFusion engine (``QueryBuilder``).

    from insarlake.offline import open_lake, quote
    lake = open_lake("lake")                                  # or "s3://bucket/lake", storage_options=...
    run = lake.latest_run("hotspots", "demo")
    lake.sql(f"SELECT * FROM hotspots WHERE dataset = {quote('demo')} AND run_id = {quote(run)}")

Why DataFusion and not a pyarrow dataset under DuckDB or pandas: a process that has scanned a
pyarrow dataset of a Delta table (``DeltaTable.to_pyarrow_dataset``, ``to_pandas``) aborts at exit
now and then ("terminate called without an active exception": pyarrow's scanner threads outlive
the interpreter; delta-io/delta-rs#2184, apache/arrow#34314), which breaks scripts and scheduled
notebooks; ``QueryBuilder`` scans in Rust and exits cleanly.

Only reads: writers go through Spark (``insarlake.lake``), which keeps the tables' contract.
"""
from __future__ import annotations

import logging
import numbers
from typing import Mapping

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

from insarlake.errors import InputError
from insarlake.tables import TABLES, table as table_contract

log = logging.getLogger(__name__)


def quote(value) -> str:
    """``value`` as an SQL literal: a string in single quotes (quotes doubled), a number as it is,
    a list as the comma-separated literals of its items (for ``IN (...)``)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return ", ".join(quote(v) for v in value) if value else "NULL"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"quote: {value!r} is not a string, a number or a list of them")
    return repr(int(value) if isinstance(value, numbers.Integral) else float(value))


def _plain(kind: pa.DataType) -> pa.DataType:
    """``kind`` with DataFusion's view types (string_view, binary_view, list views) made the plain
    Arrow types pandas converts."""
    if kind == pa.string_view():
        return pa.string()
    if kind == pa.binary_view():
        return pa.binary()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind) \
            or pa.types.is_large_list_view(kind):
        return pa.list_(_plain(kind.value_type))
    if pa.types.is_map(kind):
        return pa.map_(_plain(kind.key_type), _plain(kind.item_type))
    if pa.types.is_struct(kind):
        return pa.struct([kind.field(i).with_type(_plain(kind.field(i).type)) for i in range(kind.num_fields)])
    return kind


class OfflineLake:
    """The Delta tables of one lake as SQL relations of their own names (`pixels`, `hotspots`,
    `runs`, ...); tables the lake does not hold yet are absent (``tables`` lists those there)."""

    def __init__(self, lake: str, storage_options: Mapping[str, str] | None = None):
        self.lake = lake
        self._engine = QueryBuilder()
        options = dict(storage_options or {})
        base = lake.rstrip("/")
        self.tables: list[str] = []
        for name in TABLES:
            uri = f"{base}/{name}"
            if DeltaTable.is_deltatable(uri, storage_options=options):
                self._engine.register(name, DeltaTable(uri, storage_options=options))
                self.tables.append(name)
        if not self.tables:
            raise InputError(f"lake {lake}: no insarlake table there (run a job first, or check the path)")
        log.info("lake %s: %d tables (%s)", lake, len(self.tables), ", ".join(self.tables))

    def arrow(self, query: str) -> pa.Table:
        """The result of ``query`` (DataFusion SQL) as an Arrow table of plain types."""
        table = pa.table(self._engine.execute(query))
        return table.cast(pa.schema([f.with_type(_plain(f.type)) for f in table.schema]))

    def sql(self, query: str) -> pd.DataFrame:
        """The result of ``query`` (DataFusion SQL) as a pandas frame (dates as datetime.date, arrays
        as numpy arrays, maps as lists of (key, value))."""
        return self.arrow(query).to_pandas()

    def latest_run(self, table: str, dataset: str) -> str | None:
        """The run_id of the latest succeeded run (by its end) that wrote rows of ``dataset`` in the
        result table ``table``; None when there is none."""
        if not table_contract(table).keeps_runs:
            raise ValueError(f"table {table} does not keep runs")
        if table not in self.tables or "runs" not in self.tables:
            return None
        found = self.sql(f"""
            SELECT r.run_id FROM runs r
            WHERE r.status = 'succeeded'
              AND r.run_id IN (SELECT DISTINCT run_id FROM {table} WHERE dataset = {quote(dataset)})
            ORDER BY r.finished DESC LIMIT 1""")
        return str(found.run_id.iloc[0]) if len(found) else None


def open_lake(lake: str, storage_options: Mapping[str, str] | None = None) -> OfflineLake:
    """The lake at ``lake`` (a folder or an object store URI; ``storage_options`` as delta-rs takes
    them, e.g. {"AWS_REGION": ..., "AWS_ENDPOINT_URL": ...}) for reading with SQL."""
    return OfflineLake(lake, storage_options)

