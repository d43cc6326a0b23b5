"""Hotspot scoring kernels: a hand-made truth checked against hand-computed numbers, the adjusted Rand
index against scikit-learn on the expanded per-pixel labels, tie and unscored-source rules, bad input."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from insarlake.hotspots.scoring import adjusted_rand_index, match, scores


def contingency_of(source_id, hotspot_id) -> pd.DataFrame:
    """The group-by the Spark stage runs, on per-pixel label arrays."""
    px = pd.DataFrame({"source_id": np.asarray(source_id, np.int64), "hotspot_id": np.asarray(hotspot_id, np.int64)})
    return px.groupby(["source_id", "hotspot_id"]).size().rename("count").reset_index()


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source_id", "hotspot_id", "count"]).astype("int64")


@pytest.fixture
def hand_scene():
    """Sources 1, 2, 3 of 100, 50, 20 pixels, background 500 pixels; hotspot 0 (A) = 80 pixels of source 1
    + 40 background, hotspot 1 (B) = 10 pixels of source 2, hotspot 2 (C) = 30 background pixels."""
    src = np.r_[np.full(100, 1), np.full(50, 2), np.full(20, 3), np.zeros(500)]
    hot = np.full(src.size, -1)
    hot[0:80] = 0                  # A: 80 of source 1 ...
    hot[170:210] = 0               # ... + 40 background
    hot[100:110] = 1               # B: 10 of source 2
    hot[300:330] = 2               # C: 30 background
    rng = np.random.default_rng(3)
    perm = rng.permutation(src.size)  # pixel order must not matter
    return src[perm], hot[perm]


def test_hand_made_truth(hand_scene):
    src, hot = hand_scene
    c = contingency_of(src, hot)
    assert int(c["count"].sum()) == 670
    sources, hotspots = match(c)

    assert sources["source_id"].tolist() == [1, 2, 3]
    assert sources["n_pixels"].tolist() == [100, 50, 20]
    assert sources["scored"].tolist() == [True, True, False]
    assert sources["best_hotspot_id"].tolist() == [0, 1, -1]
    # source 1 vs A: 80 / (100 + 120 - 80) = 80/140; source 2 vs B: 10 / (50 + 10 - 10) = 10/50
    assert sources["jaccard"].tolist() == pytest.approx([80 / 140, 0.2, 0.0], abs=1e-15)
    assert sources["matched"].tolist() == [True, False, False]

    assert hotspots["hotspot_id"].tolist() == [0, 1, 2]
    assert hotspots["n_pixels"].tolist() == [120, 10, 30]
    assert hotspots["best_source_id"].tolist() == [1, 2, 0]
    assert hotspots["jaccard"].tolist() == pytest.approx([80 / 140, 0.2, 0.0], abs=1e-15)
    assert hotspots["matched"].tolist() == [True, False, False]

    assert list(sources.columns) == ["source_id", "n_pixels", "scored", "best_hotspot_id", "jaccard", "matched"]
    assert list(hotspots.columns) == ["hotspot_id", "n_pixels", "best_source_id", "jaccard", "matched"]
    assert sources["source_id"].dtype == np.int64 and hotspots["best_source_id"].dtype == np.int64
    assert sources["scored"].dtype == bool and hotspots["matched"].dtype == bool

    s = scores(c)
    assert s["sources"] == 2 and s["sources_matched"] == 1 and s["recall"] == 0.5
    assert s["hotspots"] == 3 and s["hotspots_matched"] == 1 and s["precision"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert s["pixels"] == 670
    assert s["ari"] == pytest.approx(adjusted_rand_score(src, hot), abs=1e-12)

    # a looser threshold matches source 2 through B; a stricter one loses source 1
    s = scores(c, min_jaccard=0.2)
    assert (s["sources_matched"], s["hotspots_matched"]) == (2, 2)
    s = scores(c, min_jaccard=0.6)
    assert (s["sources_matched"], s["hotspots_matched"], s["recall"], s["precision"], s["f1"]) == (0, 0, 0, 0, 0)
    # with min_source_pixels=20 source 3 is scored (and unmatched): recall 1/3
    s = scores(c, min_source_pixels=20)
    assert s["sources"] == 3 and s["recall"] == pytest.approx(1 / 3)


def test_row_order_does_not_matter(hand_scene):
    c = contingency_of(*hand_scene)
    shuffled = c.sample(frac=1.0, random_state=7).reset_index(drop=True)
    a, b = match(c), match(shuffled)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert adjusted_rand_index(c) == adjusted_rand_index(shuffled)


def test_ties_go_to_smaller_id():
    # source 5 (40 px): hotspots 7 and 3 each hold 20 of it and nothing else -> both jaccard 20/40; 3 wins.
    # hotspot 9 (60 px): 30 px of source 8 (30 px) and 30 of source 4 (30 px) -> both 30/60; source 4 wins.
    c = table([(5, 7, 20), (5, 3, 20), (8, 9, 30), (4, 9, 30)])
    sources, hotspots = match(c)
    by_src = sources.set_index("source_id")
    assert by_src.loc[5, "best_hotspot_id"] == 3 and by_src.loc[5, "jaccard"] == 0.5
    assert by_src.loc[4, "best_hotspot_id"] == 9 and by_src.loc[8, "best_hotspot_id"] == 9
    by_hot = hotspots.set_index("hotspot_id")
    assert by_hot.loc[9, "best_source_id"] == 4 and by_hot.loc[9, "jaccard"] == 0.5
    assert by_hot.loc[3, "best_source_id"] == 5 and by_hot.loc[7, "best_source_id"] == 5
    assert sources["source_id"].tolist() == [4, 5, 8] and hotspots["hotspot_id"].tolist() == [3, 7, 9]
    assert sources["matched"].all() and hotspots["matched"].all()


def test_best_by_jaccard_is_exact_not_by_overlap():
    # source 1 (1000 px): hotspot 0 holds 600 of it + 2000 background (600/3000 = 0.2),
    # hotspot 1 holds 300 of it only (300/1000 = 0.3): the best is hotspot 1 despite the smaller overlap.
    c = table([(1, 0, 600), (0, 0, 2000), (1, 1, 300), (1, -1, 100)])
    sources, hotspots = match(c, min_jaccard=0.25)
    assert sources.loc[0, "best_hotspot_id"] == 1 and sources.loc[0, "jaccard"] == pytest.approx(0.3)
    assert hotspots["matched"].tolist() == [False, True]
    # fractions closer than a float64 ulp still rank exactly: source 1 of 2x + 1 pixels split between
    # hotspot 0 (x pixels: jaccard x / (2x + 1)) and hotspot 1 (x + 1 pixels + 2 background:
    # (x + 1) / (2x + 3)); hotspot 1 is larger by 1 / ((2x + 1)(2x + 3)), yet both round to the same float.
    x = 10**8
    c = table([(1, 0, x), (1, 1, x + 1), (0, 1, 2)])
    assert x / (2 * x + 1) == (x + 1) / (2 * x + 3)
    sources, hotspots = match(c)
    assert sources.loc[0, "best_hotspot_id"] == 1
    assert sources.loc[0, "jaccard"] == (x + 1) / (2 * x + 3)
    assert sources.loc[0, "n_pixels"] == 2 * x + 1 and hotspots["n_pixels"].tolist() == [x, x + 3]


def test_unscored_source_does_not_make_a_hotspot_matched():
    # source 2 has 10 px (< 30): hotspot 0 covers it exactly (jaccard 1.0) but is not matched;
    # hotspot 1 covers 40 of source 1 (50 px) -> 40/50 = 0.8, matched.
    c = table([(2, 0, 10), (1, 1, 40), (1, -1, 10), (0, -1, 100)])
    sources, hotspots = match(c)
    assert hotspots.set_index("hotspot_id")["best_source_id"].to_dict() == {0: 2, 1: 1}
    assert hotspots["jaccard"].tolist() == [1.0, 0.8]
    assert hotspots["matched"].tolist() == [False, True]
    assert sources.set_index("source_id")["scored"].to_dict() == {1: True, 2: False}
    assert sources.set_index("source_id")["matched"].to_dict() == {1: True, 2: False}
    s = scores(c)
    assert (s["sources"], s["sources_matched"], s["hotspots"], s["hotspots_matched"]) == (1, 1, 2, 1)
    assert s["precision"] == 0.5 and s["recall"] == 1.0
    # lowering min_source_pixels to 10 makes the small source count, and its hotspot with it
    s = scores(c, min_source_pixels=10)
    assert (s["sources"], s["sources_matched"], s["hotspots_matched"]) == (2, 2, 2)


def test_hotspot_matched_through_a_scored_source_that_is_not_its_best():
    # hotspot 0 (65 px) = all 25 px of unscored source 2 + 40 of the 100 px of scored source 1:
    # jaccard 25/65 = 0.385 with source 2 (its best) and 40/125 = 0.32 with source 1.
    c = table([(2, 0, 25), (1, 0, 40), (1, -1, 60)])
    sources, hotspots = match(c, min_jaccard=0.3)
    assert hotspots.loc[0, "best_source_id"] == 2
    assert hotspots.loc[0, "jaccard"] == pytest.approx(25 / 65)
    assert bool(hotspots.loc[0, "matched"])           # 40/125 = 0.32 >= 0.3 with the scored source 1
    assert sources.set_index("source_id").loc[1, "best_hotspot_id"] == 0
    assert bool(sources.set_index("source_id").loc[1, "matched"])
    _, hotspots = match(c, min_jaccard=0.33)          # 0.32 < 0.33: only the unscored source qualifies
    assert not bool(hotspots.loc[0, "matched"])


def test_no_hotspots_and_no_sources():
    c = table([(1, -1, 50), (0, -1, 100)])
    sources, hotspots = match(c)
    assert sources["best_hotspot_id"].tolist() == [-1] and sources["jaccard"].tolist() == [0.0]
    assert not sources["matched"].any() and len(hotspots) == 0
    s = scores(c)
    assert s["recall"] == 0.0 and math.isnan(s["precision"]) and math.isnan(s["f1"])
    s = scores(table([(0, 0, 10), (0, -1, 90)]))
    assert s["sources"] == 0 and math.isnan(s["recall"]) and s["precision"] == 0.0 and math.isnan(s["f1"])
    s = scores(table([]))
    assert s["pixels"] == 0 and s["ari"] == 1.0 and math.isnan(s["recall"]) and math.isnan(s["precision"])


def _check_ari(a, b):
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    c = pd.DataFrame({"source_id": a, "hotspot_id": b}).groupby(["source_id", "hotspot_id"]).size()
    c = c.rename("count").reset_index()
    ours, ref = adjusted_rand_index(c), adjusted_rand_score(a, b)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-14), (ours, ref)
    # swapping the two partitions gives the same index
    assert adjusted_rand_index(c, "hotspot_id", "source_id") == pytest.approx(ours, rel=1e-12, abs=1e-14)
    return ours


@pytest.mark.parametrize("seed", range(6))
def test_ari_equals_sklearn_on_random_labelings(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    k_a, k_b = int(rng.integers(1, 12)), int(rng.integers(1, 30))
    a = rng.integers(0, k_a, n)
    b = np.where(rng.random(n) < 0.6, a * 3 + rng.integers(-1, 2, n), rng.integers(-1, k_b, n))  # correlated
    ari = _check_ari(a, b)
    assert -1.0 <= ari <= 1.0
    _check_ari(a, rng.integers(-1, k_b, n))  # independent: near 0


def test_ari_special_partitions():
    rng = np.random.default_rng(11)
    n = 400
    a = rng.integers(0, 5, n)
    sparse = rng.choice(np.array([0, -1, 7, 10**12, 2**62, -(2**40)], np.int64), n)  # large sparse ids
    _check_ari(a, sparse)
    _check_ari(sparse, sparse * 0 + 3)
    assert _check_ari(np.zeros(n), np.zeros(n)) == 1.0                 # one cluster on both sides
    assert _check_ari(np.arange(n), np.arange(n) * 5 + 2) == 1.0       # all distinct on both sides
    assert _check_ari(np.zeros(n), np.arange(n)) == 0.0                # one cluster vs all distinct
    assert _check_ari(np.arange(n), rng.integers(0, 3, n)) == 0.0      # all distinct vs anything
    assert _check_ari(a, a[::-1].copy()) < 0.2
    assert _check_ari(a, 100 - a) == 1.0                              # relabelling
    _check_ari([0, 0, 1, 1], [0, 1, 0, 1])                               # -0.5
    assert _check_ari([5], [9]) == 1.0                                  # a single pixel
    _check_ari(np.zeros(n), rng.integers(0, 2, n))


def test_ari_is_exact_for_large_counts():
    # two labelings of 10**8 pixels given only by counts (sklearn would need the expanded arrays): the
    # result must equal the same formula in exact rational arithmetic, rounded once.
    from fractions import Fraction

    c = table([(0, -1, 60_000_000), (0, 0, 1), (1, 0, 19_999_999), (1, -1, 3), (2, 1, 19_999_997)])
    n = int(c["count"].sum())
    assert n == 10**8

    def pairs(v):
        return sum(x * (x - 1) // 2 for x in v)

    idx = pairs(c["count"].tolist())
    a = pairs(c.groupby("source_id")["count"].sum().tolist())
    b = pairs(c.groupby("hotspot_id")["count"].sum().tolist())
    N = n * (n - 1) // 2
    expected = (Fraction(idx) - Fraction(a * b, N)) / (Fraction(a + b, 2) - Fraction(a * b, N))
    assert adjusted_rand_index(c) == float(expected)
    assert 0.99 < float(expected) < 1.0


def test_ari_on_other_columns():
    c = pd.DataFrame({"x": [1, 1, 2], "y": [0, 1, 1], "count": [2, 2, 2]})
    assert adjusted_rand_index(c, "x", "y") == pytest.approx(adjusted_rand_score([1] * 4 + [2] * 2,
                                                                                 [0, 0, 1, 1, 1, 1]))


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"source_id": [1], "count": [3]}), "missing column"),
    (pd.DataFrame({"source_id": [1], "hotspot_id": [0], "count": [0]}), "'count' must be > 0"),
    (pd.DataFrame({"source_id": [1], "hotspot_id": [0], "count": [-4]}), "'count' must be > 0"),
    (pd.DataFrame({"source_id": [1, 1], "hotspot_id": [0, 0], "count": [2, 3]}), "duplicate"),
    (pd.DataFrame({"source_id": [1.0], "hotspot_id": [0], "count": [3]}), "'source_id' must have an integer"),
    (pd.DataFrame({"source_id": [1], "hotspot_id": ["a"], "count": [3]}), "'hotspot_id' must have an integer"),
    (pd.DataFrame({"source_id": [1], "hotspot_id": [0], "count": [2.5]}), "'count' must have an integer"),
    (pd.DataFrame({"source_id": [True], "hotspot_id": [0], "count": [3]}), "'source_id' must have an integer"),
    (pd.DataFrame({"source_id": pd.array([1, None], "Int64"), "hotspot_id": [0, 1], "count": [3, 3]}), "null"),
    (pd.DataFrame({"source_id": [-1], "hotspot_id": [0], "count": [3]}), "'source_id' must be >= 0"),
    (pd.DataFrame({"source_id": [1], "hotspot_id": [-2], "count": [3]}), "'hotspot_id' must be >= -1"),
])
def test_bad_input_raises(bad, message):
    with pytest.raises(ValueError, match=message):
        match(bad)
    with pytest.raises(ValueError, match=message):
        scores(bad)
    if "must be >=" not in message:  # the ARI accepts any integer labels
        with pytest.raises(ValueError, match=message):
            adjusted_rand_index(bad)


def test_bad_parameters_raise():
    c = table([(1, 0, 40)])
    for kw in ({"min_jaccard": 0.0}, {"min_jaccard": 1.5}, {"min_source_pixels": -1}, {"min_source_pixels": 2.5}):
        with pytest.raises(ValueError):
            match(c, **kw)
    with pytest.raises(ValueError, match="missing column"):
        adjusted_rand_index(c, "source_id", "cluster")
    with pytest.raises(TypeError):
        match([(1, 0, 40)])
