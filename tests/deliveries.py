"""The real EGMS burst cut in two deliveries along time, with known differences (issue 15), shared
by tests/test_append.py and benchmarks/append.py: a first delivery up to FIRST_END and a second from
SECOND_START to the end (six months of dates in both). Rows ``new`` are only in the second, rows
``gone`` only in the first; rows ``off`` carry another value (+2 mm) on a shared date, rows
``near`` one within the tolerance (+0.05 mm)."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

FIRST_END, SECOND_START = "20230630", "20230101"
MEMBER = "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv"


def write_deliveries(folder: Path, egms_csv_bytes: bytes, n_pixels: int | None, new: slice, gone: slice,
                     off: slice, near: slice) -> dict:
    """Folders first/, second/ and whole/ (the burst uncut) under ``folder``, each holding one CSV of
    the burst's first ``n_pixels`` points (None: all); what was written: the whole frame, its epoch
    columns and the shared ones."""
    whole = pd.read_csv(io.BytesIO(egms_csv_bytes), dtype={"pid": str}, nrows=n_pixels)
    epochs = [c for c in whole.columns if c[:1].isdigit()]
    static = [c for c in whole.columns if c not in epochs]
    first = whole[static + [e for e in epochs if e <= FIRST_END]].drop(whole.index[new])
    second = whole[static + [e for e in epochs if e >= SECOND_START]].drop(whole.index[gone]).copy()
    shared = [e for e in epochs if SECOND_START <= e <= FIRST_END]
    second.loc[second.index.isin(whole.index[off]), shared[3]] += 2.0      # another processing's value
    second.loc[second.index.isin(whole.index[near]), shared[5]] += 0.05    # the same value, rounded otherwise
    for name, frame in (("first", first), ("second", second), ("whole", whole)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / name / MEMBER, index=False)
    return {"folder": folder, "whole": whole, "epochs": epochs, "shared": shared}
