"""insarlake.temporal.softdtw: exact agreement with tslearn (labels, distances), NaN rule, input checks."""
from __future__ import annotations

import io
import math
import warnings
from functools import lru_cache
from itertools import product

import numpy as np
import pytest

from insarlake.temporal import fill_missing, softdtw_assign, softdtw_distances
from insarlake.temporal import softdtw as sd

GAMMAS = (0.1, 1.0, 10.0)


def _tslearn(X, C, gamma):
    """tslearn's own TimeSeriesKMeans.predict with the centroids installed as cluster_centers_.

    Returns (labels, matrix): the predicted labels and the cdist_soft_dtw matrix that predict computed and
    took the argmin of (recorded by wrapping the function predict calls, so tslearn runs once).
    """
    import tslearn.clustering.kmeans as tk
    from tslearn.clustering import TimeSeriesKMeans

    model = TimeSeriesKMeans(n_clusters=len(C), metric="softdtw", metric_params={"gamma": gamma})
    model.cluster_centers_ = np.asarray(C, dtype=np.float64)[:, :, None].copy()
    seen = []
    original = tk.cdist_soft_dtw

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    tk.cdist_soft_dtw = recording
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # sklearn's force_all_finite deprecation inside tslearn
            labels = model.predict(X)
    finally:
        tk.cdist_soft_dtw = original
    assert len(seen) == 1 and seen[0].shape == (len(X), len(C))
    return labels, seen[0]


def _tslearn_predict(X, C, gamma):
    return _tslearn(X, C, gamma)[0]


def _cdist(X, C, gamma):
    from tslearn.metrics import cdist_soft_dtw

    return cdist_soft_dtw(X, C, gamma=gamma)


def _close(ours, ref, gamma, T, rtol=1e-9):
    """|ours - ref| <= rtol * (|ref| + gamma * log N_paths): relative to the magnitudes that cancel in soft-DTW.

    soft-DTW = (sum of squared costs) - (up to gamma * log N_paths), so a value near 0 is a difference of two
    large terms; the error of either implementation scales with those terms, not with the result.
    """
    scale = np.abs(ref) + gamma * sd._log_n_paths(T)
    bad = np.abs(ours - ref) > rtol * scale
    assert not bad.any(), f"{bad.sum()} values differ; worst rel {np.max(np.abs(ours - ref) / scale):.2e}"


def insar_like(n, T, k, seed):
    """Simulated LOS displacement (mm): trends, seasonal, step, exponential settling, uplift + 1.5-4 mm noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.6, T)
    cls = rng.integers(0, k, n)
    X = np.empty((n, T))
    for s in range(n):
        c, j = cls[s] % 7, 1.0 + 0.25 * rng.standard_normal()
        y = {0: 0.5 * j * t, 1: -5.0 * j * t, 2: -16.0 * j * t,
             3: 6.0 * j * np.sin(2 * np.pi * (t - 0.2)) - t,
             4: np.where(t > rng.uniform(1.0, 3.6), -20.0 * j, 0.0) - t,
             5: -60.0 * j * (1.0 - np.exp(-t / 1.2)), 6: 8.0 * j * t}[c]
        X[s] = y + rng.uniform(1.5, 4.0) * rng.standard_normal(T)
    C = np.stack([X[cls == c].mean(axis=0) if (cls == c).any() else X[c] for c in range(k)])
    return X, C


@lru_cache(maxsize=None)
def _realistic(n, T, k, seed):
    return insar_like(n, T, k, seed)


@pytest.fixture(scope="module")
def egms_real(egms_csv_bytes):
    """300 real EGMS series (mm, 210 epochs) and 4 centroids: means of velocity-quartile groups."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(egms_csv_bytes))
    X = frame[[c for c in frame.columns if c.isdigit()]].to_numpy(np.float64)
    X = X[np.random.default_rng(7).choice(len(X), 300, replace=False)]
    vel = np.polyfit(np.arange(X.shape[1]), X.T, 1)[0]
    group = np.searchsorted(np.quantile(vel, [0.25, 0.5, 0.75]), vel)
    C = np.stack([X[group == g].mean(axis=0) for g in range(4)])
    return X, C


# ------------------------------------------------------------------------------------------------
# distances
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", GAMMAS)
def test_softdtw_distances_equal_cdist_soft_dtw(gamma):
    rng = np.random.default_rng(3)
    walks = np.cumsum(rng.normal(0.0, 3.0, (37, 50)), axis=1)       # n not a multiple of the block size
    cw = np.cumsum(rng.normal(0.0, 3.0, (5, 50)), axis=1)
    X, C = _realistic(40, 120, 7, 1)
    for series, cents in ((walks, cw), (X, C)):
        got = softdtw_distances(series, cents, gamma)
        assert got.dtype == np.float64 and got.shape == (len(series), len(cents))
        _close(got, _cdist(series, cents, gamma), gamma, series.shape[1])


def test_distances_extreme_scales():
    """Large costs with small gamma (R / gamma ~ 1e7) and tiny costs with large gamma."""
    rng = np.random.default_rng(4)
    X = rng.uniform(-100.0, 50.0, (20, 80))
    C = rng.uniform(-100.0, 50.0, (3, 80))
    _close(softdtw_distances(X, C, 0.01), _cdist(X, C, 0.01), 0.01, 80)
    Y, D = 1e-3 * X, 1e-3 * C
    _close(softdtw_distances(Y, D, 50.0), _cdist(Y, D, 50.0), 50.0, 80)


@pytest.mark.parametrize("T", [1, 2, 3, 7])
def test_short_series(T):
    rng = np.random.default_rng(T)
    X, C = rng.normal(0, 5, (9, T)), rng.normal(0, 5, (4, T))
    for gamma in GAMMAS:
        _close(softdtw_distances(X, C, gamma), _cdist(X, C, gamma), gamma, T)
        assert np.array_equal(softdtw_assign(X, C, gamma), _tslearn_predict(X, C, gamma))


# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma,k", list(product(GAMMAS, [1, 2, 3, 5, 8])))
def test_labels_equal_tslearn_predict_realistic(gamma, k):
    X, C = _realistic(50, 100, k, 10 + k)
    labels, dist = softdtw_assign(X, C, gamma, return_distance=True)
    assert labels.dtype == np.int64 and labels.shape == (50,)
    assert dist.dtype == np.float64 and dist.shape == (50,)
    ref_labels, ref = _tslearn(X, C, gamma)
    assert np.array_equal(labels, ref_labels)
    _close(dist, ref[np.arange(len(X)), labels], gamma, X.shape[1])
    assert np.array_equal(softdtw_assign(X, C, gamma), labels)        # labels-only mode agrees


@pytest.mark.parametrize("gamma", GAMMAS)
def test_labels_equal_tslearn_predict_random(gamma):
    """Random walks against centroids that are other random walks: close competitors, little pruning."""
    rng = np.random.default_rng(5)
    X = np.cumsum(rng.normal(0.0, 2.0, (45, 60)), axis=1)
    C = X[:6] + rng.normal(0.0, 1.0, (6, 60))
    labels, dist = softdtw_assign(X, C, gamma, return_distance=True)
    ref_labels, ref = _tslearn(X, C, gamma)
    assert np.array_equal(labels, ref_labels)
    _close(dist, ref[np.arange(len(X)), labels], gamma, 60)


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [1.0, 10.0])
def test_labels_equal_tslearn_predict_real_egms(egms_real, gamma):
    X, C = egms_real
    stats = {}
    labels, dist = sd._assign(*sd._prepare(X, C, gamma), stats)
    assert len(X) < stats["exact"] < len(X) * len(C)           # bounds prune some pairs, not all
    ref_labels, ref = _tslearn(X, C, gamma)
    assert np.array_equal(labels, ref_labels)
    _close(dist, ref[np.arange(len(X)), labels], gamma, X.shape[1])
    assert np.array_equal(softdtw_assign(X, C, gamma), labels)


def test_ties_go_to_the_smallest_index():
    X, C = _realistic(50, 80, 3, 2)
    dup = np.concatenate([C[[1]], C, C[[0]], C])        # 0 == 2, 1 == 4 == 6, 3 == 5
    for gamma in GAMMAS:
        labels = softdtw_assign(X, dup, gamma)
        assert np.array_equal(labels, _tslearn_predict(X, dup, gamma))
        assert set(labels) <= {0, 1, 3}
        assert np.array_equal(labels, np.array([0, 1, 3])[softdtw_assign(X, dup[[0, 1, 3]], gamma)])
    # a series identical to two equal centroids
    same = np.stack([C[2], C[2]])
    assert np.array_equal(softdtw_assign(C[[2]], same, 1.0), [0])


def test_bounds_and_path_count():
    """The pruning bounds DTW2 - gamma log N <= softDTW <= DTW2, and N = Delannoy(T-1, T-1)."""
    assert [round(math.exp(sd._log_n_paths(T))) for T in range(1, 7)] == [1, 3, 13, 63, 321, 1683]
    from tslearn.metrics import dtw

    rng = np.random.default_rng(6)
    X, C = rng.normal(0, 3, (8, 30)), rng.normal(0, 3, (3, 30))
    rows, cols = np.repeat(np.arange(8), 3), np.tile(np.arange(3), 8)
    hard = sd._hard_pairs(X, C, rows, cols)
    assert np.allclose(hard, [dtw(X[r], C[c]) ** 2 for r, c in zip(rows, cols)], rtol=1e-12)
    for gamma in GAMMAS:
        soft = sd._soft_pairs(X, C, rows, cols, gamma)
        assert np.all(soft <= hard * (1 + 1e-12))
        assert np.all(soft >= hard - gamma * sd._log_n_paths(30) - 1e-9 * hard)


# ------------------------------------------------------------------------------------------------
# missing epochs
# ------------------------------------------------------------------------------------------------

def test_fill_missing_by_hand():
    nan = np.nan
    X = np.array([[nan, 1.0, nan, nan, 4.0, nan],
                  [2.0, nan, 0.0, 1.0, nan, nan],
                  [5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
                  [nan, nan, nan, -3.0, nan, nan]])
    want = np.array([[1.0, 1.0, 2.0, 3.0, 4.0, 4.0],
                     [2.0, 1.0, 0.0, 1.0, 1.0, 1.0],
                     [5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
                     [-3.0, -3.0, -3.0, -3.0, -3.0, -3.0]])
    before = X.copy()
    got = fill_missing(X)
    assert got.dtype == np.float64 and got.flags.c_contiguous
    assert np.array_equal(got, want)
    assert np.array_equal(X, before, equal_nan=True)              # input untouched
    clean = np.arange(12).reshape(3, 4)                           # int input: float64 copy
    out = fill_missing(clean)
    assert out.dtype == np.float64 and np.array_equal(out, clean) and not np.shares_memory(out, clean)


def test_fill_missing_matches_np_interp():
    rng = np.random.default_rng(8)
    X = rng.normal(0, 5, (30, 40))
    X[rng.random(X.shape) < 0.3] = np.nan
    X[:, 0] = np.where(rng.random(30) < 0.5, np.nan, X[:, 0])
    got = fill_missing(X)
    t = np.arange(40)
    for r in range(30):
        ok = ~np.isnan(X[r])
        assert np.allclose(got[r], np.interp(t, t[ok], X[r, ok]), rtol=0, atol=1e-12)


def test_fill_missing_rejects_all_nan_row():
    X = np.ones((4, 5))
    X[2] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        fill_missing(X)
    with pytest.raises(ValueError, match="row 2"):
        softdtw_assign(X, np.ones((2, 5)), 1.0)


def test_assigning_nan_series_equals_assigning_filled():
    X, C = _realistic(60, 90, 4, 3)
    rng = np.random.default_rng(9)
    gappy = X.copy()
    gappy[rng.random(X.shape) < 0.15] = np.nan
    gappy[0, :5] = np.nan                                          # leading gap
    gappy[1, -7:] = np.nan                                         # trailing gap
    filled = fill_missing(gappy)
    for gamma in GAMMAS:
        lab_nan, d_nan = softdtw_assign(gappy, C, gamma, return_distance=True)
        lab_fill, d_fill = softdtw_assign(filled, C, gamma, return_distance=True)
        assert np.array_equal(lab_nan, lab_fill) and np.array_equal(d_nan, d_fill)
        assert np.array_equal(lab_fill, _tslearn_predict(filled, C, gamma))
    assert np.array_equal(softdtw_distances(gappy, C, 1.0), softdtw_distances(filled, C, 1.0))


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------

def test_bad_input_raises_value_error():
    X, C = np.zeros((3, 10)), np.ones((2, 10))
    with pytest.raises(ValueError, match="T must be equal"):
        softdtw_assign(X, np.ones((2, 11)), 1.0)
    bad = C.copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN-free"):
        softdtw_assign(X, bad, 1.0)
    bad[1, 4] = np.inf
    with pytest.raises(ValueError, match="centroids"):
        softdtw_assign(X, bad, 1.0)
    inf_series = X.copy()
    inf_series[0, 0] = -np.inf
    with pytest.raises(ValueError, match="inf"):
        softdtw_assign(inf_series, C, 1.0)
    for gamma in (0.0, -1.0, np.nan, np.inf, "1.0", None, True):
        with pytest.raises(ValueError, match="gamma"):
            softdtw_assign(X, C, gamma)
    with pytest.raises(ValueError, match="2-D"):
        softdtw_assign(np.zeros(10), C, 1.0)                      # 1-D: rejected, with the fix in the message
    with pytest.raises(ValueError, match="2-D"):
        softdtw_assign(X, np.ones(10), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        softdtw_distances(np.zeros((3, 10, 2)), C, 1.0)            # multivariate
    with pytest.raises(ValueError, match="k >= 1"):
        softdtw_assign(X, np.ones((0, 10)), 1.0)
    with pytest.raises(ValueError, match="numeric"):
        softdtw_assign(X.astype(complex), C, 1.0)
    with pytest.raises(ValueError, match="too small"):
        softdtw_assign(X + 1e6, C, 1e-6)


def test_accepted_layouts():
    X, C = _realistic(20, 40, 3, 4)
    ref = softdtw_assign(X, C, 1.0)
    assert np.array_equal(softdtw_assign(X[:, :, None], C[:, :, None], 1.0), ref)   # tslearn (n, T, 1)
    assert np.array_equal(softdtw_assign(np.asfortranarray(X).astype(np.float32).astype(np.float64), C, 1), ref)
    assert np.array_equal(softdtw_assign(X[::-1][::-1], C, np.float32(1.0)), ref)
    assert np.array_equal(softdtw_assign(X[:1], C, 1.0), ref[:1])
    labels, dist = softdtw_assign(X[:0], C, 1.0, return_distance=True)
    assert labels.shape == (0,) and labels.dtype == np.int64 and dist.shape == (0,)
    assert softdtw_distances(X[:0], C, 1.0).shape == (0, 3)


def test_chunks_do_not_change_results(monkeypatch):
    X, C = _realistic(50, 60, 4, 5)
    labels, dist = softdtw_assign(X, C, 1.0, return_distance=True)
    full = softdtw_distances(X, C, 1.0)
    monkeypatch.setattr(sd, "_CHUNK", 7)
    labels7, dist7 = softdtw_assign(X, C, 1.0, return_distance=True)
    assert np.array_equal(labels7, labels) and np.array_equal(dist7, dist)
    assert np.array_equal(softdtw_distances(X, C, 1.0), full)


# ------------------------------------------------------------------------------------------------
# gradient, barycentre, pairwise matrix
# ------------------------------------------------------------------------------------------------

def _tslearn_value_grad(X, z, gamma):
    """tslearn's soft-DTW value and gradient with respect to z, as its barycentre objective computes them."""
    from tslearn.metrics import SoftDTW, SquaredEuclidean

    values, grads = [], []
    for x in X:
        D = SquaredEuclidean(z[:, None], x[:, None])
        sdtw = SoftDTW(D, gamma=gamma)
        values.append(sdtw.compute())
        grads.append(D.jacobian_product(sdtw.grad())[:, 0])
    return np.array(values), np.array(grads)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("T", [1, 2, 33, 90])
def test_value_and_gradient_equal_tslearn(gamma, T):
    from tslearn.metrics import soft_dtw

    rng = np.random.default_rng(T)
    X = np.cumsum(rng.normal(0.0, 3.0, (35, T)), axis=1)           # 35: not a multiple of the block size
    z = X.mean(axis=0)
    values, grads = sd.softdtw_grad(X, z, gamma)
    assert values.shape == (35,) and grads.shape == (35, T) and grads.dtype == np.float64
    ref_values, ref_grads = _tslearn_value_grad(X, z, gamma)
    _close(values, ref_values, gamma, T)
    _close(values, np.array([soft_dtw(z, x, gamma=gamma) for x in X]), gamma, T)
    assert np.array_equal(values, sd._soft_pairs(X, z[None], np.arange(35), np.zeros(35, np.int64), gamma))
    # tslearn's E recursion subtracts nearly equal log-values (fastmath): compare on the gradient's own scale
    assert np.allclose(grads, ref_grads, rtol=0, atol=1e-8 * (1 + np.abs(ref_grads).max() / gamma))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_gradient_equals_finite_differences(gamma):
    """Central differences with step h (mm): error <= truncation + rounding, both estimated.

    Rounding: each value carries ~T * 4 ulp of (|f| + gamma log N_paths) (a few ulp per cell along the path),
    divided by 2h. Truncation (h**2 f'''/6) is estimated from the same difference at 2h: D(2h) - D(h) = 3 * it.
    """
    rng = np.random.default_rng(11)
    T, h = 30, 1e-4
    X = np.cumsum(rng.normal(0.0, 3.0, (4, T)), axis=1)
    z = X.mean(axis=0) + rng.normal(0.0, 1.0, T)
    values, grads = sd.softdtw_grad(X, z, gamma)

    def central(step):
        out = np.empty((len(X), T))
        for t in range(T):
            e = np.zeros(T)
            e[t] = step
            out[:, t] = (sd.softdtw_grad(X, z + e, gamma)[0] - sd.softdtw_grad(X, z - e, gamma)[0]) / (2 * step)
        return out

    fd, fd2 = central(h), central(2 * h)
    eps = np.finfo(np.float64).eps
    rounding = 4 * T * eps * (np.abs(values) + gamma * sd._log_n_paths(T))[:, None] / h
    truncation = np.abs(fd2 - fd) / 3
    assert np.all(np.abs(fd - grads) <= 4 * (rounding + truncation) + 1e-12)
    assert np.abs(grads).max() > 1e3 * (rounding.max() + truncation.max())     # the check is not vacuous


@pytest.mark.slow
def test_barycenter_equals_tslearn():
    from tslearn.barycenters import softdtw_barycenter

    X, _ = _realistic(25, 60, 1, 12)
    init = X[0] + 1.0
    for gamma in (0.1, 1.0):
        ours = sd.softdtw_barycenter(X, gamma, init=init, max_iter=10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = softdtw_barycenter(X[:, :, None], gamma=gamma, init=init[:, None].copy(), max_iter=10)[:, 0]
        obj = [sd.softdtw_grad(X, z, gamma)[0].sum() for z in (ours, ref, init)]
        assert obj[0] < obj[2]                                        # it optimised
        assert obj[0] <= obj[1] + 1e-9 * abs(obj[1])                  # the same iterates up to rounding
        assert np.allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert np.array_equal(sd.softdtw_barycenter(X, 1.0, max_iter=0), X.mean(axis=0))   # tslearn: the mean


def test_barycenter_of_identical_series_is_that_series():
    t = np.linspace(0.0, 3.0, 40)
    for x in (-15.0 * t, 10.0 * np.sin(2 * np.pi * t / 3), -60.0 * (1.0 - np.exp(-t / 1.2))):
        X = np.repeat(x[None, :], 5, axis=0)
        z = sd.softdtw_barycenter(X, 0.01, max_iter=100)
        assert np.allclose(z, x, rtol=0, atol=0.03 * np.abs(x).max())
        assert sd.softdtw_grad(X, z, 0.01)[0].sum() <= sd.softdtw_grad(X, x, 0.01)[0].sum()


@pytest.mark.slow
def test_pairwise_equals_cdist_and_threads_change_nothing():
    import numba

    X, C = _realistic(35, 70, 4, 13)
    for gamma in GAMMAS:
        full = sd.softdtw_pairwise(X, gamma)
        assert full.shape == (35, 35) and np.array_equal(full, full.T)
        _close(full, softdtw_distances(X, X, gamma), gamma, 70)            # itself tested against tslearn
    _close(sd.softdtw_pairwise(X[:20], 1.0), _cdist(X[:20], None, 1.0), 1.0, 70)
    rows, cols = np.repeat(np.arange(35), 4), np.tile(np.arange(4), 35)
    single = sd._soft_pairs(X, C, rows, cols, 1.0), sd._hard_pairs(X, C, rows, cols)
    before = numba.get_num_threads()
    try:
        for threads in {1, before}:
            numba.set_num_threads(threads)
            assert np.array_equal(sd._soft_pairs_parallel(X, C, rows, cols, 1.0), single[0])
            assert np.array_equal(sd._hard_pairs_parallel(X, C, rows, cols), single[1])
            g = sd.softdtw_grad(X, C[0], 1.0)
            if threads == 1:
                g1 = g
            assert np.array_equal(g[0], g1[0]) and np.array_equal(g[1], g1[1])
    finally:
        numba.set_num_threads(before)
    labels = softdtw_assign(X, C, 1.0)
    assert np.array_equal(sd._assign(X, C, 1.0, parallel=True)[0], labels)


def test_gradient_barycenter_pairwise_bad_input():
    X = np.cumsum(np.ones((4, 10)), axis=1)
    gappy = X.copy()
    gappy[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN-free"):
        sd.softdtw_grad(gappy, X[0], 1.0)
    with pytest.raises(ValueError, match="NaN-free"):
        sd.softdtw_barycenter(gappy, 1.0)
    with pytest.raises(ValueError, match="NaN-free"):
        sd.softdtw_pairwise(gappy, 1.0)
    with pytest.raises(ValueError, match="ragged"):
        sd.softdtw_barycenter([[1.0, 2.0, 3.0], [1.0, 2.0]], 1.0)
    with pytest.raises(ValueError, match="ragged"):
        sd.softdtw_pairwise([np.zeros(5), np.zeros(6)], 1.0)
    with pytest.raises(ValueError, match="T must be equal"):
        sd.softdtw_grad(X, np.zeros(9), 1.0)
    with pytest.raises(ValueError, match="1-D"):
        sd.softdtw_grad(X, X[:2], 1.0)
    with pytest.raises(ValueError, match="init must have shape"):
        sd.softdtw_barycenter(X, 1.0, init=np.zeros(9))
    with pytest.raises(ValueError, match="at least one series"):
        sd.softdtw_barycenter(X[:0], 1.0)
    with pytest.raises(ValueError, match="max_iter"):
        sd.softdtw_barycenter(X, 1.0, max_iter=-1)
    with pytest.raises(ValueError, match="gamma"):
        sd.softdtw_barycenter(X, 0.0)
