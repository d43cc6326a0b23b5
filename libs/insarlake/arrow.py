"""Arrow columns straight to numpy, without Python lists (no ``to_pylist``): the classifier and
forecaster training shards and the inference batches hold array<float|double> columns of one fixed
length per row. Pure pyarrow/numpy."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def list_column_to_numpy(column: pa.Array | pa.ChunkedArray, dtype=np.float64, width: int | None = None,
                         name: str = "column") -> np.ndarray:
    """(n, width) array of ``dtype`` from an Arrow list (or fixed-size list) column of n rows that all
    hold ``width`` values (the common length when width is None). A null value inside a list
    becomes NaN; a null list or a row of another length raises ValueError naming ``name``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise ValueError(f"{name}: expected a list column, got {column.type}")
    if column.null_count:
        raise ValueError(f"{name}: {column.null_count} null row(s)")
    if n == 0:
        return np.zeros((0, width or 0), dtype)
    lengths = pc.list_value_length(column)
    bounds = pc.min_max(lengths)
    low, high = bounds["min"], bounds["max"]
    if width is None:
        width = low.as_py()
    if low.as_py() != width or high.as_py() != width:
        raise ValueError(f"{name}: rows of {low.as_py()}..{high.as_py()} values, expected {width} in every row")
    # flatten() honours the array's slice offset (``.values`` would not)
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype).reshape(n, width)
    return values if values.flags.writeable else values.copy()     # torch.from_numpy needs it writable


def column_to_numpy(column: pa.Array | pa.ChunkedArray, dtype) -> np.ndarray:
    """(n,) array of ``dtype`` from a primitive Arrow column without nulls."""
    if column.null_count:
        raise ValueError(f"{column.null_count} null value(s) in a column that must have none")
    return np.asarray(column.to_numpy(), dtype)
