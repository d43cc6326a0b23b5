"""Soft-DTW distances and exact nearest-centroid assignment for InSAR time series.

Definitions follow tslearn (``tslearn.metrics.cdist_soft_dtw``, ``TimeSeriesKMeans(metric="softdtw")``):
univariate series, squared-Euclidean cost ``D[i, j] = (x[i] - c[j])**2`` (mm**2 for series in mm),
``R[0, 0] = 0``, ``R[i, 0] = R[0, j] = inf``, ``R[i, j] = D[i-1, j-1] + softmin(R[i-1, j-1], R[i-1, j],
R[i, j-1])`` with ``softmin(a, b, c) = -gamma * log(exp(-a/gamma) + exp(-b/gamma) + exp(-c/gamma))``;
the soft-DTW value is ``R[T, T]`` (the value, not the divergence; it can be negative).

Missing epochs: ``fill_missing`` replaces NaN by linear interpolation over the epoch index between the
nearest valid epochs, and by the nearest valid value before the first / after the last valid epoch.
``softdtw_assign`` and ``softdtw_distances`` apply it to series that contain NaN, so fitting and
assignment see the same filled series; centroids must be NaN-free.

How it is fast (all kernels single-threaded numba, vectorised across a block of ``_W`` series):

* Soft-DTW is computed in the probability domain ``P = exp(-R/gamma) = m * 2**e`` with an explicit
  integer exponent ``e`` per cell, so a cell costs one ``2**frac`` polynomial and bit operations instead
  of three ``exp`` and one ``log``; the recursion ``P[i, j] = 2**(-D/(gamma ln 2)) * (P_a + P_b + P_c)``
  is the same sum over alignment paths as tslearn's log-domain one, and the relative rounding error per
  cell is a few ulp (no underflow: every cell keeps its own exponent).
* Assignment is exact with pruning: hard DTW**2 (min-plus, cheap) bounds soft-DTW on both sides,
  ``DTW2 - gamma * log(N_paths) <= softDTW <= DTW2`` (see ``_assign_chunk``), so soft-DTW is computed only for
  the centroid with the smallest DTW**2 and for centroids whose lower bound does not exclude them.
"""
from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["softdtw_assign", "softdtw_distances", "fill_missing"]

log = logging.getLogger(__name__)

# Series per vectorised block (lanes). 32 doubles = 8 AVX2 / 4 AVX-512 registers per row step:
# enough independent work to hide the latency of the recursion along a row.
_W = 32
_UW = np.uint64(_W)

# Kernels: no fast-math except fused multiply-add contraction (never reassociation: the rounding
# tricks below depend on it); error_model="numpy" removes the division-by-zero branch that would
# stop LLVM from vectorising.
_KW = dict(cache=True, fastmath={"contract"}, error_model="numpy")

_LN2 = math.log(2.0)
_TWO52 = 4503599627370496.0           # 2**52
_POW2_MAGIC = _TWO52 + 1023.0         # k + this, for integer k in [-1022, 1023], holds k + 1023 in its low bits
_MANT_MASK = (1 << 52) - 1
_ONE_BITS = 1023 << 52                # bits of 1.0
_TWO52_BITS = 0x4330000000000000      # bits of 2**52
_KMIN = -1000.0                       # 2**-1000 * m is far below one ulp of the sum it joins
_NEG = -1.0e300                       # exponent of P = 0 (cells outside the DTW grid)
# Taylor coefficients of 2**f = exp(f ln 2) up to degree 12: relative truncation error < 4e-16 on |f| <= 1/2.
_C = tuple(_LN2 ** k / math.factorial(k) for k in range(13))
# Largest |exponent| kept exactly (integer-valued float64 below 2**53, with margin).
_MAX_LOG2P = 2.0 ** 50

# Relative slack for floating-point rounding in the pruning test (see _assign_chunk). Rounding errors of
# both soft-DTW implementations are ~1e-14 of the magnitudes involved; 1e-9 is a wide margin that
# costs no pruning power.
_PRUNE_RTOL = 1e-9
# Series per call of the pair kernels: bounds the (chunk, k) work arrays.
_CHUNK = 8192


# ----------------------------------------------------------------------------------------------
# numba kernels (assume clean input: float64, C-contiguous, finite, gamma > 0, equal lengths)
# ----------------------------------------------------------------------------------------------

@intrinsic
def _f2i(typingctx, x):
    """Bit pattern of a float64 as int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _i2f(typingctx, x):
    """float64 with the given int64 bit pattern."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(inline="always", **_KW)
def _pow2(k):
    """2**k for an integer-valued float64 k in [-1022, 1023] (exact)."""
    return _i2f(_f2i(k + _POW2_MAGIC) << 52)


@njit(inline="always", **_KW)
def _exp2_frac(f):
    """2**f for |f| <= 0.5 (Horner, Taylor degree 12)."""
    p = _C[12]
    p = p * f + _C[11]
    p = p * f + _C[10]
    p = p * f + _C[9]
    p = p * f + _C[8]
    p = p * f + _C[7]
    p = p * f + _C[6]
    p = p * f + _C[5]
    p = p * f + _C[4]
    p = p * f + _C[3]
    p = p * f + _C[2]
    p = p * f + _C[1]
    p = p * f + _C[0]
    return p


@njit(inline="always", **_KW)
def _soft_cell(ma, ea, mb, eb, mc, ec, dcost):
    """One soft-DTW cell in the probability domain.

    Inputs are the three predecessors P = m * 2**e and ``dcost = D / (gamma ln 2)`` (log2 units).
    Returns (m, e) of ``P = 2**(-dcost) * (P_a + P_b + P_c)`` with m in [1, 2) and e integer-valued.
    """
    top = max(ea, max(eb, ec))
    s = (ma * _pow2(max(ea - top, _KMIN)) + mb * _pow2(max(eb - top, _KMIN))
         + mc * _pow2(max(ec - top, _KMIN)))          # in [1, 6): the largest term is >= 1
    q = np.round(dcost)
    m = s * _exp2_frac(q - dcost)                     # q - dcost is exact, in [-1/2, 1/2]
    bits = _f2i(m)                                    # renormalise m to [1, 2), move the rest to e
    mn = _i2f((bits & _MANT_MASK) | _ONE_BITS)
    shift = _i2f((bits >> 52) | _TWO52_BITS) - _POW2_MAGIC
    return mn, top - q + shift


@njit(inline="always", **_KW)
def _soft_row_step(Xt, xo, Ct, co, scale, Mp, Ep, Mc, Ec, o):
    # Unsigned offsets: no negative-index wraparound in the address computation, so LLVM vectorises.
    ol = o - _UW
    for lane in range(_UW):
        diff = Xt[xo + lane] - Ct[co + lane]
        m, e = _soft_cell(Mp[ol + lane], Ep[ol + lane], Mp[o + lane], Ep[o + lane],
                          Mc[ol + lane], Ec[ol + lane], diff * diff * scale)
        Mc[o + lane] = m
        Ec[o + lane] = e


@njit(**_KW)
def _soft_block(Xt, Ct, T, scale, Mp, Ep, Mc, Ec, out):
    """log2 P[T, T] for _W (series, centroid) pairs; Xt, Ct lane-major (T * _W,), out (_W,)."""
    for q in range((T + 1) * _W):
        Mp[q] = 0.0
        Ep[q] = _NEG
    for lane in range(_W):
        Mp[lane] = 1.0          # P[0, 0] = 1 (R = 0)
        Ep[lane] = 0.0
    for i in range(1, T + 1):
        for lane in range(_W):
            Mc[lane] = 0.0      # P[i, 0] = 0 (R = inf)
            Ec[lane] = _NEG
        xo = np.uint64((i - 1) * _W)
        for j in range(1, T + 1):
            _soft_row_step(Xt, xo, Ct, np.uint64((j - 1) * _W), scale, Mp, Ep, Mc, Ec, np.uint64(j * _W))
        if i == 1:
            for lane in range(_W):
                Mp[lane] = 0.0  # the buffer becomes row 2, whose P[2, 0] = 0
                Ep[lane] = _NEG
        Mp, Mc = Mc, Mp
        Ep, Ec = Ec, Ep
    for lane in range(_W):
        out[lane] = Ep[T * _W + lane] + np.log2(Mp[T * _W + lane])


@njit(inline="always", **_KW)
def _hard_row_step(Xt, xo, Ct, co, Rp, Rc, o):
    ol = o - _UW
    for lane in range(_UW):
        diff = Xt[xo + lane] - Ct[co + lane]
        Rc[o + lane] = diff * diff + min(Rp[ol + lane], min(Rp[o + lane], Rc[ol + lane]))


@njit(**_KW)
def _hard_block(Xt, Ct, T, Rp, Rc, out):
    """Hard DTW**2 (squared cost, no square root) for _W pairs; layout as _soft_block."""
    for q in range((T + 1) * _W):
        Rp[q] = np.inf
    for lane in range(_W):
        Rp[lane] = 0.0
    for i in range(1, T + 1):
        for lane in range(_W):
            Rc[lane] = np.inf
        xo = np.uint64((i - 1) * _W)
        for j in range(1, T + 1):
            _hard_row_step(Xt, xo, Ct, np.uint64((j - 1) * _W), Rp, Rc, np.uint64(j * _W))
        if i == 1:
            for lane in range(_W):
                Rp[lane] = np.inf
        Rp, Rc = Rc, Rp
    for lane in range(_W):
        out[lane] = Rp[T * _W + lane]


@njit(**_KW)
def _load_block(X, C, rows, cols, start, Xt, Ct):
    """Gather pairs rows/cols[start:start + _W] lane-major; missing lanes repeat the last pair."""
    T = X.shape[1]
    count = min(_W, rows.size - start)
    for lane in range(_W):
        p = start + min(lane, count - 1)
        r = rows[p]
        c = cols[p]
        for t in range(T):
            Xt[t * _W + lane] = X[r, t]
            Ct[t * _W + lane] = C[c, t]
    return count


@njit(**_KW)
def _soft_pairs(X, C, rows, cols, gamma):
    """Soft-DTW value (float64, (P,)) for the pairs (X[rows[p]], C[cols[p]])."""
    T = X.shape[1]
    P = rows.size
    res = np.empty(P)
    Xt = np.empty(T * _W)
    Ct = np.empty(T * _W)
    Mp = np.empty((T + 1) * _W)
    Ep = np.empty((T + 1) * _W)
    Mc = np.empty((T + 1) * _W)
    Ec = np.empty((T + 1) * _W)
    lg2 = np.empty(_W)
    scale = 1.0 / (gamma * _LN2)
    for start in range(0, P, _W):
        count = _load_block(X, C, rows, cols, start, Xt, Ct)
        _soft_block(Xt, Ct, T, scale, Mp, Ep, Mc, Ec, lg2)
        for lane in range(count):
            res[start + lane] = -gamma * _LN2 * lg2[lane]   # R = -gamma ln P
    return res


@njit(**_KW)
def _hard_pairs(X, C, rows, cols):
    """Hard DTW**2 (float64, (P,)) for the pairs (X[rows[p]], C[cols[p]])."""
    T = X.shape[1]
    P = rows.size
    res = np.empty(P)
    Xt = np.empty(T * _W)
    Ct = np.empty(T * _W)
    Rp = np.empty((T + 1) * _W)
    Rc = np.empty((T + 1) * _W)
    r = np.empty(_W)
    for start in range(0, P, _W):
        count = _load_block(X, C, rows, cols, start, Xt, Ct)
        _hard_block(Xt, Ct, T, Rp, Rc, r)
        for lane in range(count):
            res[start + lane] = r[lane]
    return res


@njit(**_KW)
def _fill_rows(X):
    """In place: NaN -> linear interpolation over the epoch index, nearest valid value at the ends.

    Returns -1, or the first row without a valid value (the caller raises).
    """
    n, T = X.shape
    for r in range(n):
        prev = -1                      # last valid epoch seen
        for t in range(T):
            if np.isnan(X[r, t]):
                continue
            if prev == -1:
                for u in range(t):     # leading gap: first valid value
                    X[r, u] = X[r, t]
            elif t - prev > 1:         # internal gap: linear in the epoch index
                a = X[r, prev]
                step = (X[r, t] - a) / (t - prev)
                for u in range(prev + 1, t):
                    X[r, u] = a + step * (u - prev)
            prev = t
        if prev == -1:
            return r
        for u in range(prev + 1, T):   # trailing gap: last valid value
            X[r, u] = X[r, prev]
    return -1


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------

def _as_matrix(name, a, allow_nan):
    """(n, T) float64 C-contiguous copy-or-view of `a`; (n, T, 1) is accepted (tslearn's layout)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_series, n_epochs) (or (n, T, 1)), got shape {arr.shape}; "
                         f"for a single series pass x[None, :]")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        r, t = np.argwhere(bad)[0]
        what = "NaN or inf" if not allow_nan else "inf"
        raise ValueError(f"{name} contains {what} (first at row {r}, epoch {t})"
                         + ("" if allow_nan else f"; {name} must be NaN-free"))
    return arr


def _check_gamma(gamma):
    if isinstance(gamma, (bool, np.bool_)) or not isinstance(gamma, (int, float, np.integer, np.floating)):
        raise ValueError(f"gamma must be a real number, got {gamma!r}")
    g = float(gamma)
    if not (math.isfinite(g) and g > 0.0):
        raise ValueError(f"gamma must be finite and > 0, got {gamma!r}")
    return g


def _prepare(series, centroids, gamma):
    g = _check_gamma(gamma)
    X = _as_matrix("series", series, allow_nan=True)
    C = _as_matrix("centroids", centroids, allow_nan=False)
    if C.shape[0] < 1:
        raise ValueError("centroids must hold at least one centroid (k >= 1)")
    if C.shape[1] < 1:
        raise ValueError("series need at least one epoch (T >= 1)")
    if X.shape[1] != C.shape[1]:
        raise ValueError(f"series have {X.shape[1]} epochs but centroids have {C.shape[1]}: T must be equal")
    if X.size and np.isnan(X).any():
        X = fill_missing(X)
    # The probability-domain kernel keeps log2 P as an integer-valued float64: bound |R| / (gamma ln 2).
    if X.size:
        span = float(np.max(np.abs(X))) + float(np.max(np.abs(C)))
        if (2 * X.shape[1] - 1) * span * span / (g * _LN2) > _MAX_LOG2P:
            raise ValueError(f"gamma={g!r} is too small for data of magnitude {span:.3g}: "
                             f"need (2T-1) * max|x - c|**2 / gamma < {_MAX_LOG2P * _LN2:.3g}")
    return X, C, g


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def fill_missing(series):
    """Fill NaN epochs: linear interpolation over the epoch index inside, nearest valid value at the ends.

    series: (n, T) array (mm). Returns a float64 C-contiguous copy of shape (n, T) without NaN.
    Raises ValueError for a row without any valid value, or for +-inf values.
    """
    X = np.array(_as_matrix("series", series, allow_nan=True), dtype=np.float64, order="C", copy=True)
    if X.size == 0 or not np.isnan(X).any():
        return X
    row = _fill_rows(X)
    if row >= 0:
        raise ValueError(f"series row {row} has no valid epoch (all NaN): cannot fill it")
    return X


def softdtw_distances(series, centroids, gamma):
    """Soft-DTW values between every series and every centroid.

    series: (n, T), centroids: (k, T) (mm; NaN in series are filled with `fill_missing`).
    gamma: finite > 0 (mm**2). Returns float64 (n, k) equal to ``tslearn.metrics.cdist_soft_dtw``.
    """
    X, C, g = _prepare(series, centroids, gamma)
    n, k = X.shape[0], C.shape[0]
    out = np.empty((n, k), dtype=np.float64)
    for lo in range(0, n, _CHUNK):
        m = min(_CHUNK, n - lo)
        rows = np.repeat(np.arange(m, dtype=np.int64), k)
        cols = np.tile(np.arange(k, dtype=np.int64), m)
        out[lo:lo + m] = _soft_pairs(X[lo:lo + m], C, rows, cols, g).reshape(m, k)
    return out


def softdtw_assign(series, centroids, gamma, return_distance=False):
    """Index of the soft-DTW-nearest centroid for each series (ties: smallest index).

    series: (n, T), centroids: (k, T) (mm; NaN in series are filled with `fill_missing`, centroids must
    be NaN-free). gamma: finite > 0 (mm**2). Returns labels int64 (n,), equal to
    ``TimeSeriesKMeans(metric="softdtw", metric_params={"gamma": gamma}).predict``; with
    ``return_distance=True`` returns ``(labels, distance)`` where distance float64 (n,) is the soft-DTW
    value to the assigned centroid (mm**2, as ``cdist_soft_dtw``).
    """
    X, C, g = _prepare(series, centroids, gamma)
    labels, dist = _assign(X, C, g)
    return (labels, dist) if return_distance else labels


def _assign(X, C, gamma, stats=None):
    """Labels and distances for clean X (n, T), C (k, T), in chunks of _CHUNK series (bounded memory).

    ``stats`` (dict), if given, receives the number of exact soft-DTW evaluations under "exact".
    """
    n = X.shape[0]
    labels = np.zeros(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    exact = 0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        labels[lo:hi], dist[lo:hi], count = _assign_chunk(X[lo:hi], C, gamma)
        exact += count
    if stats is not None:
        stats["exact"] = exact
    log.debug("softdtw_assign: n=%d k=%d T=%d gamma=%g: %d exact soft-DTW evaluations (%.2f per series, "
              "the rest pruned by DTW bounds)", n, C.shape[0], X.shape[1], gamma, exact, exact / max(n, 1))
    return labels, dist


@lru_cache(maxsize=64)
def _log_n_paths(T):
    """log of the number of monotone alignment paths of a T x T grid: Delannoy D(T-1, T-1), exact."""
    n = T - 1
    count = sum(math.comb(n, i) ** 2 * (1 << i) for i in range(n + 1))
    return math.log(count)


def _assign_chunk(X, C, gamma):
    """Exact soft-DTW argmin with pruning by hard-DTW bounds. X (n, T), C (k, T) clean float64.

    Bounds. soft-DTW is -gamma * log(sum over the alignment paths A of exp(-cost(path) / gamma)), with
    cost the summed squared differences along the path (tslearn's recursion computes exactly this sum).
    The sum is at least its largest term exp(-DTW2 / gamma) and at most |A| times it, so
        DTW2 - gamma * log|A|  <=  softDTW  <=  DTW2,
    with DTW2 the hard DTW on squared cost (tslearn's dtw squared) and |A| the Delannoy number
    D(T-1, T-1). Algorithm: DTW2 for all pairs (min-plus, cheap); exact soft-DTW S0 for b0 = argmin
    DTW2; exact soft-DTW for every other centroid whose lower bound is <= S0 (+ a rounding slack). Any
    centroid left out has softDTW >= lower bound > S0, so it cannot be the argmin; the label is the
    argmin (first on ties, as numpy) of the exact values computed. Returns (labels, distances, number
    of exact soft-DTW evaluations).
    """
    n, k = X.shape[0], C.shape[0]
    if k == 1:
        zero = np.zeros(n, dtype=np.int64)
        return zero, _soft_pairs(X, C, np.arange(n, dtype=np.int64), zero, gamma), n
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = np.tile(np.arange(k, dtype=np.int64), n)
    upper = _hard_pairs(X, C, rows, cols).reshape(n, k)            # DTW2 >= softDTW
    slack = gamma * _log_n_paths(X.shape[1])
    lower = upper - slack                                          # <= softDTW
    first = np.argmin(upper, axis=1).astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    exact = np.full((n, k), np.inf)
    exact[idx, first] = _soft_pairs(X, C, idx, first, gamma)
    s0 = exact[idx, first][:, None]
    tol = _PRUNE_RTOL * (np.abs(s0) + np.abs(upper) + slack)
    need = lower <= s0 + tol
    need[idx, first] = False
    r2, c2 = np.nonzero(need)
    if r2.size:
        exact[r2, c2] = _soft_pairs(X, C, r2.astype(np.int64), c2.astype(np.int64), gamma)
    labels = np.argmin(exact, axis=1).astype(np.int64)
    return labels, exact[idx, labels], n + r2.size
