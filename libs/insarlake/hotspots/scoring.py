"""Scoring detected hotspots against a simulated scene's truth: the pure kernels (no Spark).

Everything works from a small contingency table, never from per-pixel arrays, so the Spark stage only
has to run one group-by over the pixels. ``contingency`` is a pandas DataFrame with:

* ``source_id`` (integer >= 0): the true source of the pixels, 0 = the pixels belong to no true source;
* ``hotspot_id`` (integer >= -1): the retained hotspot of the pixels, -1 = in no retained hotspot;
* ``count`` (integer > 0): how many pixels have that (source_id, hotspot_id) pair;

one row per pair present (no duplicates).

Definitions (S a true source, H a hotspot, both sets of pixels):

* ``|S|`` counts every pixel of the source (in a hotspot or not); ``|H|`` counts every pixel of the
  hotspot, background pixels (source_id 0) included;
* ``jaccard(S, H) = |S ∩ H| / |S ∪ H| = |S ∩ H| / (|S| + |H| - |S ∩ H|)``;
* a source is *scored* when ``|S| >= min_source_pixels``; sources too small to detect are left out of
  recall, and a hotspot is not credited for matching one;
* the best hotspot of a source (best source of a hotspot) is the one with the largest jaccard; ties go
  to the smaller id. That comparison is exact (integer cross-multiplication), not in floating point;
  the ``jaccard`` columns are the correctly rounded float64 of the fraction, and thresholds compare those;
* a source is *matched* when it is scored and the jaccard with its best hotspot is >= ``min_jaccard``;
* a hotspot is *matched* when it has jaccard >= ``min_jaccard`` with at least one scored source. So the
  best hotspot of a matched source is always a matched hotspot;
* ``recall = matched sources / scored sources``, ``precision = matched hotspots / hotspots``,
  ``f1 = 2 P R / (P + R)``;
* ``ari``: the Hubert-Arabie adjusted Rand index of the two partitions of all pixels (source_id and
  hotspot_id, with 0 and -1 as ordinary labels), exactly what ``sklearn.metrics.adjusted_rand_score``
  gives on the expanded per-pixel labels, computed from the counts in exact integer arithmetic.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["match", "adjusted_rand_index", "scores", "validate_contingency"]

_INT64_MAX = np.iinfo(np.int64).max


def validate_contingency(contingency: pd.DataFrame, id_cols: Iterable[str] = ("source_id", "hotspot_id"),
                         count_col: str = "count") -> pd.DataFrame:
    """Check a contingency table and return a copy with int64 columns ``id_cols`` + ``count_col``.

    Raises ValueError naming the column and the problem: missing column, non-integer dtype, null values,
    counts <= 0, duplicate id tuples. (TypeError when ``contingency`` is not a DataFrame.)
    """
    if not isinstance(contingency, pd.DataFrame):
        raise TypeError(f"contingency: expected a pandas DataFrame, got {type(contingency).__name__}")
    id_cols = list(dict.fromkeys(id_cols))
    cols = [*id_cols, count_col]
    missing = [c for c in cols if c not in contingency.columns]
    if missing:
        raise ValueError(f"contingency: missing column(s) {missing}; has {list(contingency.columns)}")
    out = {}
    for col in cols:
        s = contingency[col]
        if isinstance(s, pd.DataFrame):
            raise ValueError(f"contingency: column {col!r} appears more than once")
        if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_integer_dtype(s.dtype):
            raise ValueError(f"contingency: column {col!r} must have an integer dtype, got {s.dtype}")
        if s.isna().any():
            raise ValueError(f"contingency: column {col!r} has {int(s.isna().sum())} null value(s)")
        if pd.api.types.is_unsigned_integer_dtype(s.dtype) and len(s) and int(s.max()) > _INT64_MAX:
            raise ValueError(f"contingency: column {col!r} has values beyond the int64 range")
        out[col] = s.to_numpy(dtype=np.int64)
    df = pd.DataFrame(out, index=pd.RangeIndex(len(contingency)))
    bad = df[count_col] <= 0
    if bad.any():
        raise ValueError(f"contingency: column {count_col!r} must be > 0; {int(bad.sum())} row(s) are <= 0 "
                         f"(first: {int(df.loc[bad, count_col].iloc[0])})")
    dup = df.duplicated(subset=id_cols)
    if dup.any():
        first = tuple(int(v) for v in df.loc[dup, id_cols].iloc[0])
        raise ValueError(f"contingency: duplicate ({', '.join(id_cols)}) rows: {int(dup.sum())} duplicate(s), "
                         f"first {first}")
    return df


def _validate_truth(contingency: pd.DataFrame, min_source_pixels: int, min_jaccard: float) -> pd.DataFrame:
    df = validate_contingency(contingency)
    if (df["source_id"] < 0).any():
        raise ValueError(f"contingency: column 'source_id' must be >= 0 (0 = no source); "
                         f"found {int(df['source_id'].min())}")
    if (df["hotspot_id"] < -1).any():
        raise ValueError(f"contingency: column 'hotspot_id' must be >= -1 (-1 = no hotspot); "
                         f"found {int(df['hotspot_id'].min())}")
    if isinstance(min_source_pixels, bool) or not isinstance(min_source_pixels, (int, np.integer)) \
            or min_source_pixels < 0:
        raise ValueError(f"min_source_pixels: must be an integer >= 0, got {min_source_pixels!r}")
    if not isinstance(min_jaccard, (int, float, np.integer, np.floating)) or isinstance(min_jaccard, bool) \
            or not 0.0 < float(min_jaccard) <= 1.0:
        raise ValueError(f"min_jaccard: must be in (0, 1], got {min_jaccard!r}")
    return df


def _best(keys: np.ndarray, others: np.ndarray, inter: np.ndarray, union: np.ndarray) -> dict:
    """For each key, the (other, inter, union) with the largest inter / union; ties: smaller other id.

    Exact: fractions compared by integer cross-multiplication (Python ints)."""
    best: dict = {}
    order = np.lexsort((others, keys))  # by key, then other id ascending: first seen wins ties
    for k, o, i, u in zip(keys[order].tolist(), others[order].tolist(), inter[order].tolist(),
                          union[order].tolist()):
        cur = best.get(k)
        if cur is None or i * cur[2] > cur[1] * u:
            best[k] = (o, i, u)
    return best


def match(contingency: pd.DataFrame, min_source_pixels: int = 30,
          min_jaccard: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match true sources and hotspots by Jaccard overlap (see the module docstring for definitions).

    Returns ``(sources, hotspots)``:

    * ``sources``, one row per true source (source_id > 0), ordered by source_id: ``source_id``;
      ``n_pixels`` = |S|; ``scored`` = n_pixels >= min_source_pixels; ``best_hotspot_id`` = the hotspot
      with the largest jaccard (-1 if the source overlaps none); ``jaccard`` = that largest jaccard (0.0 if
      none); ``matched`` = scored and jaccard >= min_jaccard.
    * ``hotspots``, one row per hotspot (hotspot_id >= 0), ordered by hotspot_id: ``hotspot_id``;
      ``n_pixels`` = |H| (background pixels included); ``best_source_id`` = the true source with the
      largest jaccard (0 if it overlaps none); ``jaccard`` = that largest jaccard (0.0 if none);
      ``matched`` = jaccard >= min_jaccard with at least one *scored* source.
    """
    df = _validate_truth(contingency, min_source_pixels, min_jaccard)
    src_n = df.groupby("source_id", sort=True)["count"].sum()
    hot_n = df.groupby("hotspot_id", sort=True)["count"].sum()
    src_n = src_n[src_n.index > 0]
    hot_n = hot_n[hot_n.index >= 0]

    ov = df[(df["source_id"] > 0) & (df["hotspot_id"] >= 0)]
    s_ids = ov["source_id"].to_numpy(np.int64)
    h_ids = ov["hotspot_id"].to_numpy(np.int64)
    inter = ov["count"].to_numpy(np.int64)
    union = src_n.reindex(s_ids).to_numpy(np.int64) + hot_n.reindex(h_ids).to_numpy(np.int64) - inter
    scored = src_n >= min_source_pixels

    def table(sizes: pd.Series, id_col: str, best_col: str, none_id: int, best: dict) -> pd.DataFrame:
        ids = sizes.index.to_numpy(np.int64)
        picks = [best.get(k, (none_id, 0, 1)) for k in ids.tolist()]
        return pd.DataFrame({
            id_col: ids,
            "n_pixels": sizes.to_numpy(np.int64),
            best_col: np.array([p[0] for p in picks], dtype=np.int64),
            "jaccard": np.array([p[1] / p[2] for p in picks], dtype=np.float64),
        })

    sources = table(src_n, "source_id", "best_hotspot_id", -1, _best(s_ids, h_ids, inter, union))
    sources.insert(2, "scored", scored.to_numpy(bool))
    sources["matched"] = sources["scored"].to_numpy(bool) & (sources["jaccard"].to_numpy() >= min_jaccard)

    hotspots = table(hot_n, "hotspot_id", "best_source_id", 0, _best(h_ids, s_ids, inter, union))
    pair_j = np.array([i / u for i, u in zip(inter.tolist(), union.tolist())], dtype=np.float64)
    ok = scored.reindex(s_ids).to_numpy(bool) & (pair_j >= min_jaccard)
    hotspots["matched"] = np.isin(hotspots["hotspot_id"].to_numpy(np.int64), h_ids[ok])
    log.debug("match: %d sources (%d scored, %d matched), %d hotspots (%d matched)", len(sources),
              int(sources["scored"].sum()), int(sources["matched"].sum()), len(hotspots),
              int(hotspots["matched"].sum()))
    return sources.reset_index(drop=True), hotspots.reset_index(drop=True)


def _sum_pairs(counts: np.ndarray) -> int:
    """sum of C(c, 2) over counts, as an exact Python int."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == 0:
        return 0
    if int(counts.sum()) <= 3_000_000_000:  # every C(c, 2) and their sum stay below 2**63
        return int((counts * (counts - 1) // 2).sum())
    return sum(c * (c - 1) // 2 for c in counts.tolist())


def adjusted_rand_index(contingency: pd.DataFrame, label_col_a: str = "source_id",
                        label_col_b: str = "hotspot_id") -> float:
    """Hubert-Arabie adjusted Rand index between the partitions ``label_col_a`` and ``label_col_b``.

    Computed from the counts: with ``index = sum_ij C(n_ij, 2)``, ``a = sum_i C(n_i., 2)`` (row marginals),
    ``b = sum_j C(n_.j, 2)`` (column marginals) and ``N = C(n, 2)``,
    ``ARI = (index - a b / N) / ((a + b) / 2 - a b / N)``, evaluated in exact integer arithmetic and rounded
    once. Every label value (0 and -1 included) is an ordinary cluster, as in
    ``sklearn.metrics.adjusted_rand_score`` on the expanded per-pixel labels, which this equals. Returns
    1.0 when the two partitions are identical, including the degenerate cases (fewer than 2 pixels, one
    cluster on both sides, all singletons on both sides) where the formula is 0 / 0.
    """
    df = validate_contingency(contingency, (label_col_a, label_col_b))
    if label_col_a == label_col_b:
        return 1.0
    index = _sum_pairs(df["count"].to_numpy())
    a = _sum_pairs(df.groupby(label_col_a)["count"].sum().to_numpy())
    b = _sum_pairs(df.groupby(label_col_b)["count"].sum().to_numpy())
    n_pairs = _sum_pairs(np.array([df["count"].sum()]))
    # ARI = 2 (index N - a b) / ((a + b) N - 2 a b); the denominator is a (N - b) + b (N - a) >= 0 and is
    # 0 only when both partitions are one cluster, both are all singletons, or N = 0: identical partitions.
    num = 2 * (index * n_pairs - a * b)
    den = (a + b) * n_pairs - 2 * a * b
    if den == 0:
        return 1.0
    return num / den


def scores(contingency: pd.DataFrame, min_source_pixels: int = 30, min_jaccard: float = 0.3) -> dict:
    """Summary scores of the hotspots against the truth (definitions in the module docstring).

    Keys: ``sources`` (number of scored sources), ``sources_matched``, ``recall`` (sources_matched /
    sources, NaN if no scored source), ``hotspots`` (number of hotspots), ``hotspots_matched``,
    ``precision`` (hotspots_matched / hotspots, NaN if no hotspot), ``f1`` (harmonic mean of precision and
    recall; NaN if either is NaN, 0.0 if both are 0), ``ari`` (adjusted Rand index of source_id vs
    hotspot_id over all pixels) and ``pixels`` (total pixel count).
    """
    sources, hotspots = match(contingency, min_source_pixels=min_source_pixels, min_jaccard=min_jaccard)
    n_src = int(sources["scored"].sum())
    n_src_ok = int(sources["matched"].sum())
    n_hot = len(hotspots)
    n_hot_ok = int(hotspots["matched"].sum())
    recall = n_src_ok / n_src if n_src else math.nan
    precision = n_hot_ok / n_hot if n_hot else math.nan
    if math.isnan(recall) or math.isnan(precision):
        f1 = math.nan
    elif recall + precision == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    out = {
        "sources": n_src, "sources_matched": n_src_ok, "recall": recall,
        "hotspots": n_hot, "hotspots_matched": n_hot_ok, "precision": precision, "f1": f1,
        "ari": adjusted_rand_index(contingency), "pixels": int(contingency["count"].sum()),
    }
    log.info("hotspot scores: recall %d/%d, precision %d/%d, f1 %.3f, ari %.3f over %d pixels",
             n_src_ok, n_src, n_hot_ok, n_hot, f1, out["ari"], out["pixels"])
    return out
