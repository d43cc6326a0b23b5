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

Fitting (``softdtw_grad``, ``softdtw_barycenter``, ``softdtw_pairwise``; used by ``tskm.SoftDTWKMeans`` on the
driver, threaded with numba ``prange``): the gradient with respect to the centroid is tslearn's
``jacobian_product(E)`` with E the cell marginals ``E[i, j] = P[i, j] * Q[i, j] / (w[i, j] * P[T, T])``, where
P is the forward grid (kept whole), Q the same forward recursion run on the time-reversed pair (the sum over the
paths from (i, j) to the end) and ``w = 2**(-D / (gamma ln 2))`` the cell's own factor: no exp/log per cell
and no second recursion to maintain. The barycentre is tslearn's L-BFGS-B call (scipy) on that objective.
"""
from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic
from scipy.optimize import minimize

__all__ = ["softdtw_assign", "softdtw_distances", "softdtw_pairwise", "softdtw_grad", "softdtw_barycenter",
           "fill_missing"]

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
# Pairs per task of the threaded pair kernels (used by the fit on the driver, not on Spark executors).
_PAR_PAIRS = 1024


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


@njit(parallel=True, **_KW)
def _soft_pairs_parallel(X, C, rows, cols, gamma):
    """``_soft_pairs`` split over numba threads in chunks of _PAR_PAIRS pairs (same values, bit for bit)."""
    P = rows.size
    res = np.empty(P)
    for c in prange((P + _PAR_PAIRS - 1) // _PAR_PAIRS):
        lo = c * _PAR_PAIRS
        hi = min(P, lo + _PAR_PAIRS)
        res[lo:hi] = _soft_pairs(X, C, rows[lo:hi], cols[lo:hi], gamma)
    return res


@njit(parallel=True, **_KW)
def _hard_pairs_parallel(X, C, rows, cols):
    """``_hard_pairs`` split over numba threads in chunks of _PAR_PAIRS pairs."""
    P = rows.size
    res = np.empty(P)
    for c in prange((P + _PAR_PAIRS - 1) // _PAR_PAIRS):
        lo = c * _PAR_PAIRS
        hi = min(P, lo + _PAR_PAIRS)
        res[lo:hi] = _hard_pairs(X, C, rows[lo:hi], cols[lo:hi])
    return res


@njit(inline="always", **_KW)
def _marginal_row_step(Xt, xo, Ct, co, scale, Mf, Ef, Mb, Eb, o, eZ, inv_mZ, tmp, G):
    """Adds d(soft-DTW)/dC[j] of cell (i, j) to G[co:co + _W] for _W lanes.

    The marginal (tslearn's E[i, j]) is P[i, j] * Q[i, j] / (w[i, j] * P[T, T]): forward P (Mf, Ef),
    backward Q (Mb, Eb: the sum over the paths from (i, j) to (T, T)), both at o; w = 2**(-dcost) is the
    cell's own factor, counted in both. The cost's derivative with respect to C[j] is -2 (X[i] - C[j]).
    (Two loops through ``tmp``: the fused loop does not vectorise.)
    """
    for lane in range(_UW):
        diff = Xt[xo + lane] - Ct[co + lane]
        dcost = diff * diff * scale
        q = np.round(dcost)
        k = min(max(Ef[o + lane] + Eb[o + lane] - eZ[lane] + q, _KMIN), 1023.0)
        e = Mf[o + lane] * Mb[o + lane] * inv_mZ[lane] * _exp2_frac(dcost - q) * _pow2(k)
        tmp[lane] = -2.0 * e * diff
    for lane in range(_UW):
        G[co + lane] += tmp[lane]


@njit(**_KW)
def _soft_grad_block(Xt, Ct, Xr, Cr, T, scale, Mf, Ef, Mb, Eb, Mc, Ec, Bm, Be, eZ, inv_mZ, tmp, G, out):
    """log2 P[T, T] (out (_W,)) and the gradient of soft-DTW with respect to the centroid (G (T * _W,),
    lane-major, mm) for _W pairs; Xt, Ct lane-major (T * _W,), Xr, Cr the same reversed in time.

    Forward: the cells of ``_soft_block`` with every row kept (Mf, Ef: (T + 1) rows of (T + 1) * _W).
    Backward: the same recursion on the time-reversed pair, two rows at a time (Mb/Mc, as ``_soft_block``):
    its cell (T + 1 - i, T + 1 - j) is the sum over the paths from (i, j) to (T, T); each row is copied in
    forward column order (Bm, Be) and combined with the forward row. This replaces tslearn's E recursion
    (three exp per cell) by the forward cell and a product.
    """
    R = (T + 1) * _W
    for q in range(R):
        Mf[q] = 0.0
        Ef[q] = _NEG
    for lane in range(_W):
        Mf[lane] = 1.0          # P[0, 0] = 1 (R = 0)
        Ef[lane] = 0.0
    for i in range(1, T + 1):
        row = i * R
        for lane in range(_W):
            Mf[row + lane] = 0.0
            Ef[row + lane] = _NEG
        Mp, Ep = Mf[row - R:row], Ef[row - R:row]
        Mi, Ei = Mf[row:row + R], Ef[row:row + R]
        xo = np.uint64((i - 1) * _W)
        for j in range(1, T + 1):
            _soft_row_step(Xt, xo, Ct, np.uint64((j - 1) * _W), scale, Mp, Ep, Mi, Ei, np.uint64(j * _W))
    last = T * R + T * _W
    for lane in range(_W):
        eZ[lane] = Ef[last + lane]
        inv_mZ[lane] = 1.0 / Mf[last + lane]
        out[lane] = Ef[last + lane] + np.log2(Mf[last + lane])
    for q in range(T * _W):
        G[q] = 0.0
    for q in range(R):
        Mb[q] = 0.0
        Eb[q] = _NEG
    for lane in range(_W):
        Mb[lane] = 1.0
        Eb[lane] = 0.0
    for i_rev in range(1, T + 1):
        for lane in range(_W):
            Mc[lane] = 0.0
            Ec[lane] = _NEG
        xo = np.uint64((i_rev - 1) * _W)
        for jr in range(1, T + 1):
            _soft_row_step(Xr, xo, Cr, np.uint64((jr - 1) * _W), scale, Mb, Eb, Mc, Ec, np.uint64(jr * _W))
        if i_rev == 1:
            for lane in range(_W):
                Mb[lane] = 0.0
                Eb[lane] = _NEG
        for jr in range(1, T + 1):          # reversed row i_rev = backward sums of row T + 1 - i_rev
            src = jr * _W
            dst = (T + 1 - jr) * _W
            for lane in range(_W):
                Bm[dst + lane] = Mc[src + lane]
                Be[dst + lane] = Ec[src + lane]
        i = T + 1 - i_rev
        row = i * R
        Mi, Ei = Mf[row:row + R], Ef[row:row + R]
        xo = np.uint64((i - 1) * _W)
        for j in range(1, T + 1):
            _marginal_row_step(Xt, xo, Ct, np.uint64((j - 1) * _W), scale, Mi, Ei, Bm, Be, np.uint64(j * _W),
                               eZ, inv_mZ, tmp, G)
        Mb, Mc = Mc, Mb
        Eb, Ec = Ec, Eb


@njit(**_KW)
def _reverse_lanes(At, T, Ar):
    """Ar[t] = At[T - 1 - t] for lane-major (T * _W,) arrays."""
    for t in range(T):
        src = (T - 1 - t) * _W
        dst = t * _W
        for lane in range(_W):
            Ar[dst + lane] = At[src + lane]


@njit(parallel=True, **_KW)
def _soft_grad_pairs(X, C, rows, cols, gamma, n_threads):
    """Soft-DTW values (P,) and their gradients (P, T) with respect to C[cols[p]] for the pairs
    (X[rows[p]], C[cols[p]]); blocks of _W pairs dealt round-robin to ``n_threads`` workers (each with
    its own (T + 1)**2 * _W grid). Results do not depend on n_threads."""
    T = X.shape[1]
    P = rows.size
    values = np.empty(P)
    grads = np.empty((P, T))
    n_blocks = (P + _W - 1) // _W
    n_workers = max(1, min(n_threads, n_blocks))
    scale = 1.0 / (gamma * _LN2)
    R = (T + 1) * _W
    for worker in prange(n_workers):
        Xt = np.empty(T * _W)
        Ct = np.empty(T * _W)
        Xr = np.empty(T * _W)
        Cr = np.empty(T * _W)
        Mf = np.empty((T + 1) * R)
        Ef = np.empty((T + 1) * R)
        Mb = np.empty(R)
        Eb = np.empty(R)
        Mc = np.empty(R)
        Ec = np.empty(R)
        Bm = np.empty(R)
        Be = np.empty(R)
        tmp = np.empty(_W)
        eZ = np.empty(_W)
        inv_mZ = np.empty(_W)
        G = np.empty(T * _W)
        lg2 = np.empty(_W)
        for b in range(worker, n_blocks, n_workers):
            start = b * _W
            count = _load_block(X, C, rows, cols, start, Xt, Ct)
            _reverse_lanes(Xt, T, Xr)
            _reverse_lanes(Ct, T, Cr)
            _soft_grad_block(Xt, Ct, Xr, Cr, T, scale, Mf, Ef, Mb, Eb, Mc, Ec, Bm, Be, eZ, inv_mZ, tmp, G, lg2)
            for lane in range(count):
                values[start + lane] = -gamma * _LN2 * lg2[lane]
                for t in range(T):
                    grads[start + lane, t] = G[t * _W + lane]
    return values, grads


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
    try:
        arr = np.asarray(a)
    except ValueError:                  # numpy refuses nested sequences of unequal lengths
        arr = np.asarray(a, dtype=object)
    if arr.dtype == object and arr.ndim == 1 and len(arr) and all(np.ndim(r) >= 1 for r in arr):
        lengths = sorted({len(r) for r in arr})
        raise ValueError(f"{name} must be equal-length series, got lengths {lengths[:5]}"
                         + (" ..." if len(lengths) > 5 else "") + " (ragged input)")
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


def _prepare(series, centroids, gamma, allow_nan=True):
    """Checked float64 (n, T) series (NaN filled when allowed, else refused), (k, T) centroids, gamma."""
    g = _check_gamma(gamma)
    X = _as_matrix("series", series, allow_nan=allow_nan)
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


def softdtw_pairwise(series, gamma):
    """Soft-DTW values between every pair of series, on all numba threads.

    series: (n, T) NaN-free (mm); gamma: finite > 0 (mm**2). Returns float64 (n, n) (mm**2), symmetric
    (each pair computed once), equal to ``tslearn.metrics.cdist_soft_dtw(series)``.
    """
    X = _as_matrix("series", series, allow_nan=False)
    X, _, g = _prepare(X, X[:1] if len(X) else np.zeros((1, X.shape[1])), gamma, allow_nan=False)
    return _pairwise(X, g)


def _pairwise(X, gamma):
    n = X.shape[0]
    rows, cols = np.triu_indices(n)
    out = np.empty((n, n), dtype=np.float64)
    values = _soft_pairs_parallel(X, X, rows.astype(np.int64), cols.astype(np.int64), gamma)
    out[rows, cols] = values
    out[cols, rows] = values
    return out


def softdtw_grad(series, centroid, gamma):
    """Soft-DTW between each series and one centroid, and its gradient with respect to the centroid.

    series: (n, T) NaN-free (mm); centroid: (T,) (mm); gamma: finite > 0 (mm**2). Returns values float64 (n,)
    (mm**2, as ``tslearn.metrics.soft_dtw``) and gradients float64 (n, T) (mm: d value / d centroid[t], as
    tslearn's ``SquaredEuclidean(centroid, x).jacobian_product(SoftDTW(...).grad())``). Threaded over series.
    """
    c = np.asarray(centroid)
    if c.ndim != 1:
        raise ValueError(f"centroid must be 1-D (T,), got shape {c.shape}")
    X, C, g = _prepare(series, c[None, :], gamma, allow_nan=False)
    n = X.shape[0]
    return _soft_grad_pairs(X, C, np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), g, get_num_threads())


def softdtw_barycenter(series, gamma, init=None, max_iter=50, tol=1e-3):
    """Soft-DTW barycentre of series, as ``tslearn.barycenters.softdtw_barycenter`` (uniform weights).

    Minimises sum_i soft-DTW(z, series[i]) over z (T,) with scipy's L-BFGS-B (``tol``, at most ``max_iter``
    iterations) from ``init`` (T,) (default: the mean series). series: (n >= 1, T) NaN-free (mm); gamma: finite
    > 0 (mm**2). Returns float64 (T,) (mm).
    """
    X = _as_matrix("series", series, allow_nan=False)
    if X.shape[0] < 1:
        raise ValueError("series must hold at least one series")
    z0 = X.mean(axis=0) if init is None else _as_matrix("init", np.atleast_2d(init), allow_nan=False)[0]
    if np.ndim(init) > 1 or z0.shape != (X.shape[1],):
        raise ValueError(f"init must have shape ({X.shape[1]},) like one series, got {np.shape(init)}")
    X, _, g = _prepare(X, z0[None, :], gamma, allow_nan=False)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    return _barycenter(X, z0, g, int(max_iter), float(tol))


def _barycenter(X, init, gamma, max_iter, tol):
    """L-BFGS-B on sum_i soft-DTW(z, X[i]) from init (T,) for clean X (n, T); tslearn's call and stopping rule."""
    if max_iter <= 0:
        return init.copy()
    rows = np.arange(X.shape[0], dtype=np.int64)
    cols = np.zeros(X.shape[0], dtype=np.int64)
    threads = get_num_threads()

    def objective(z):
        values, grads = _soft_grad_pairs(X, np.ascontiguousarray(z)[None, :], rows, cols, gamma, threads)
        return values.sum(), grads.sum(axis=0)

    res = minimize(objective, init, method="L-BFGS-B", jac=True, tol=tol, options={"maxiter": max_iter})
    return res.x


def _assign(X, C, gamma, stats=None, parallel=False):
    """Labels and distances for clean X (n, T), C (k, T), in chunks of _CHUNK series (bounded memory).

    ``stats`` (dict), if given, receives the number of exact soft-DTW evaluations under "exact".
    ``parallel`` uses the numba-threaded pair kernels (for the fit on the driver; Spark tasks stay
    single-threaded). Results do not depend on it.
    """
    n = X.shape[0]
    labels = np.zeros(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    exact = 0
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        labels[lo:hi], dist[lo:hi], count = _assign_chunk(X[lo:hi], C, gamma, parallel)
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


def _assign_chunk(X, C, gamma, parallel=False):
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
    soft_pairs, hard_pairs = (_soft_pairs_parallel, _hard_pairs_parallel) if parallel else (_soft_pairs, _hard_pairs)
    n, k = X.shape[0], C.shape[0]
    if k == 1:
        zero = np.zeros(n, dtype=np.int64)
        return zero, soft_pairs(X, C, np.arange(n, dtype=np.int64), zero, gamma), n
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = np.tile(np.arange(k, dtype=np.int64), n)
    upper = hard_pairs(X, C, rows, cols).reshape(n, k)             # DTW2 >= softDTW
    slack = gamma * _log_n_paths(X.shape[1])
    lower = upper - slack                                          # <= softDTW
    first = np.argmin(upper, axis=1).astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    exact = np.full((n, k), np.inf)
    exact[idx, first] = soft_pairs(X, C, idx, first, gamma)
    s0 = exact[idx, first][:, None]
    tol = _PRUNE_RTOL * (np.abs(s0) + np.abs(upper) + slack)
    need = lower <= s0 + tol
    need[idx, first] = False
    r2, c2 = np.nonzero(need)
    if r2.size:
        exact[r2, c2] = soft_pairs(X, C, r2.astype(np.int64), c2.astype(np.int64), gamma)
    labels = np.argmin(exact, axis=1).astype(np.int64)
    return labels, exact[idx, labels], n + r2.size
