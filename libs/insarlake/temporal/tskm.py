"""Time-series k-means (TSKM): fit on a sample, choose k by the silhouette, assign with our exact
kernels, and a portable model file (JSON, no pickle).

soft-DTW (the default metric) is fitted by ``SoftDTWKMeans``: tslearn's
``TimeSeriesKMeans(metric="softdtw", n_init=1)`` step for step (k-means++ seeding with the same random
draws, assignment, L-BFGS-B soft-DTW barycentres, stopping rule, re-seeding on an empty cluster) on
our numba kernels (``softdtw.py``), threaded, ~50x faster per core (benchmarks/README.md). dtw and
euclidean still use tslearn. Pure numpy/numba/scipy, no Spark: ``stage.py`` draws the sample and
assigns every pixel on Spark.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from insarlake.errors import InputError
from insarlake.temporal import softdtw as _sd
from insarlake.temporal.softdtw import fill_missing, softdtw_assign, softdtw_distances

log = logging.getLogger(__name__)
# tslearn announces on import that its optional HDF5 model export is unavailable; we do not use it.
warnings.filterwarnings("ignore", message="h5py not installed", category=UserWarning)

METRICS = ("softdtw", "dtw", "euclidean")
PREPROCESSING = ("none", "demean", "znorm")
MODEL_FORMAT = "insarlake.tskm/1"


def preprocess(series: np.ndarray, mode: str) -> np.ndarray:
    """(n, T) mm → (n, T) float64: missing epochs filled (``fill_missing``), then ``mode``:
    none (as is), demean (minus each series' mean), znorm (mean 0, std 1; a flat series → 0)."""
    if mode not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {mode!r}")
    x = np.asarray(series, dtype=np.float64)
    x = fill_missing(x) if np.isnan(x).any() else x.copy()
    if mode == "none":
        return x
    x -= x.mean(axis=1, keepdims=True)
    if mode == "znorm":
        std = x.std(axis=1, keepdims=True)
        x = np.divide(x, std, out=np.zeros_like(x), where=std > 0)
    return x


def distance_matrix(x: np.ndarray, centroids: np.ndarray, metric: str, gamma: float) -> np.ndarray:
    """(n, k) distances of preprocessed series to centroids: soft-DTW values, DTW² or squared
    Euclidean (the quantities whose argmin is the TSKM label)."""
    if metric == "softdtw":
        return softdtw_distances(x, centroids, gamma)
    if metric == "dtw":
        from tslearn.metrics import cdist_dtw

        return cdist_dtw(x[:, :, None], centroids[:, :, None]) ** 2
    if metric == "euclidean":
        return ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def divergence_matrix(a: np.ndarray, b: np.ndarray, metric: str, gamma: float) -> np.ndarray:
    """(n, m) non-negative dissimilarities: for soft-DTW the divergence
    sdtw(a, b) − ½(sdtw(a, a) + sdtw(b, b)) (tslearn's normalised soft-DTW), else as
    ``distance_matrix``. Used for the silhouette and the elbow curve. With ``a is b`` the soft-DTW
    matrix is computed once per pair on all numba threads."""
    if metric != "softdtw":
        return distance_matrix(a, b, metric, gamma)
    if a is b:
        full = _sd.softdtw_pairwise(a, gamma)
        self_a = self_b = np.diag(full).copy()
    else:
        full = softdtw_distances(a, b, gamma)
        self_a, self_b = _self_softdtw(a, gamma), _self_softdtw(b, gamma)
    return full - 0.5 * (self_a[:, None] + self_b[None, :])


def _self_softdtw(x: np.ndarray, gamma: float) -> np.ndarray:
    """sdtw(x_i, x_i) for each row (n,) mm², threaded."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    idx = np.arange(len(x), dtype=np.int64)
    return _sd._soft_pairs_parallel(x, x, idx, idx, float(gamma))


class SoftDTWKMeans:
    """k-means under soft-DTW, as tslearn's ``TimeSeriesKMeans(metric="softdtw", n_init=1)``.

    Same seeding (k-means++ on squared soft-DTW with ``numpy.random.RandomState(random_state)``, 2 + ln k
    local trials; or ``init`` (k, T) given), same loop (assign; stop when the inertia changed by less than
    ``tol``, after updating the barycentres), same barycentre (L-BFGS-B, tol 1e-3, ``max_iter_barycenter``
    iterations from the previous centroid), same re-seeding when a cluster empties (10 attempts).
    Parameters: n_clusters k, gamma (mm²). Fitted: ``cluster_centers_`` (k, T) mm, ``labels_`` (n,)
    (assignment to the final centroids), ``inertia_`` (tslearn's: mean squared soft-DTW to the assigned
    centroid at the last assignment before the final update, mm⁴), ``n_iter_``.
    """

    MAX_ATTEMPTS = 10          # tslearn: max(n_init, 10) seedings when clusters empty
    BARYCENTER_TOL = 1e-3      # tslearn's softdtw_barycenter default

    def __init__(self, n_clusters: int, gamma: float = 1.0, max_iter: int = 50, tol: float = 1e-6,
                 max_iter_barycenter: int = 100, init="k-means++", random_state=None):
        self.n_clusters, self.gamma, self.max_iter, self.tol = n_clusters, gamma, max_iter, tol
        self.max_iter_barycenter, self.init, self.random_state = max_iter_barycenter, init, random_state

    def fit(self, series: np.ndarray) -> "SoftDTWKMeans":
        """Fit on series (n, T) mm, NaN-free, equal lengths (tslearn's (n, T, 1) accepted). Returns self."""
        from sklearn.utils import check_random_state

        x, k, init, gamma = self._check(series)
        rs = check_random_state(self.random_state)
        for attempt in range(self.MAX_ATTEMPTS):
            centers = init.copy() if init is not None else _kmeans_plusplus(x, k, gamma, rs)
            try:
                centers, inertia, n_iter = _lloyd(x, centers, gamma, self.max_iter, self.tol,
                                                  self.max_iter_barycenter, self.BARYCENTER_TOL)
            except _EmptyCluster:
                log.info("soft-DTW k-means k=%d: a cluster emptied, re-seeding (attempt %d)", k, attempt + 1)
                continue
            self.cluster_centers_, self.inertia_, self.n_iter_ = centers, inertia, n_iter
            self.labels_, _ = _sd._assign(x, centers, gamma, parallel=True)
            return self
        raise ValueError(f"soft-DTW k-means k={k}: a cluster was empty in each of {self.MAX_ATTEMPTS} "
                         "seedings; use a smaller k or more series")

    def _check(self, series):
        x = _sd._as_matrix("series", series, allow_nan=False)
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_clusters must be an integer >= 1, got {k!r}")
        if k > len(x):
            raise ValueError(f"n_clusters k={k} is larger than the number of series n={len(x)}")
        init = None
        if not (isinstance(self.init, str) and self.init == "k-means++"):
            if isinstance(self.init, str):
                raise ValueError(f"init must be 'k-means++' or an array (k, T), got {self.init!r}")
            init = _sd._as_matrix("init", self.init, allow_nan=False)
            if init.shape != (k, x.shape[1]):
                raise ValueError(f"init must have shape ({k}, {x.shape[1]}), got {init.shape}")
        for name, least in (("max_iter", 1), ("max_iter_barycenter", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        x, _, gamma = _sd._prepare(x, init if init is not None else x[:1], self.gamma, allow_nan=False)
        return x, k, init, gamma


class _EmptyCluster(Exception):
    pass


def _kmeans_plusplus(x: np.ndarray, k: int, gamma: float, rs) -> np.ndarray:
    """tslearn's ``_k_init_metric`` with cdist_soft_dtw: k seeds (k, T) drawn from clean x (n, T)."""
    n = len(x)
    n_local_trials = 2 + int(np.log(k))
    all_rows = np.arange(n, dtype=np.int64)

    def sq_dist(ids):       # squared soft-DTW (as tslearn, which squares the values) of x[ids] to every series
        cols = np.repeat(np.asarray(ids, dtype=np.int64), n)
        rows = np.tile(all_rows, len(ids))
        return _sd._soft_pairs_parallel(x, x, rows, cols, gamma).reshape(len(ids), n) ** 2

    ids = [rs.randint(n)]
    closest = sq_dist(ids)[0]
    pot = closest.sum()
    for _ in range(1, k):
        rand_vals = rs.random_sample(n_local_trials) * pot
        cand = np.searchsorted(np.cumsum(closest, dtype=np.float64), rand_vals)
        np.clip(cand, None, n - 1, out=cand)
        dist = np.minimum(closest, sq_dist(cand))
        pots = dist.sum(axis=1)
        best = int(np.argmin(pots))
        pot, closest = pots[best], dist[best]
        ids.append(int(cand[best]))
    return x[ids].copy()


def _lloyd(x, centers, gamma, max_iter, tol, max_iter_barycenter, barycenter_tol):
    """tslearn's ``_fit_one_init`` loop on clean x (n, T) from centers (k, T) (updated in place).
    Returns (centers, inertia, n_iter); raises _EmptyCluster."""
    k = len(centers)
    old_inertia = inertia = np.inf
    it = 0
    for it in range(max_iter):
        labels, dist = _sd._assign(x, centers, gamma, parallel=True)
        sizes = np.bincount(labels, minlength=k)
        if (sizes == 0).any():
            raise _EmptyCluster
        inertia = float(np.sum(dist ** 2) / len(x))
        for c in range(k):
            centers[c] = _sd._barycenter(x[labels == c], centers[c], gamma, max_iter_barycenter, barycenter_tol)
        log.debug("soft-DTW k-means k=%d iteration %d: inertia %.6g", k, it + 1, inertia)
        if abs(old_inertia - inertia) < tol:
            break
        old_inertia = inertia
    return centers, inertia, it + 1


@dataclass
class TskmModel:
    """A fitted TSKM model. centroids: (k, T) in preprocessed units (mm for 'none'/'demean')."""
    k: int
    metric: str
    gamma: float
    preprocessing: str
    centroids: np.ndarray
    epoch_dates: list[str]                    # ISO dates the centroids are aligned with
    silhouette_by_k: dict[int, float] = field(default_factory=dict)
    inertia_by_k: dict[int, float] = field(default_factory=dict)   # summed divergence to the centroid
    sample_size: int = 0
    seed: int = 0
    settings: dict = field(default_factory=dict)   # the temporal config the model was fitted with

    def assign(self, series: np.ndarray, return_distance: bool = False):
        """Labels (int64, (n,)) of raw series (n, T) mm, and with return_distance the distance
        (float64, (n,)) to the assigned centroid (soft-DTW value, DTW² or squared Euclidean)."""
        x = preprocess(series, self.preprocessing)
        if self.metric == "softdtw":
            return softdtw_assign(x, self.centroids, self.gamma, return_distance=return_distance)
        dist = distance_matrix(x, self.centroids, self.metric, self.gamma)
        labels = dist.argmin(axis=1).astype(np.int64)
        return (labels, dist[np.arange(len(x)), labels]) if return_distance else labels

    # -------------------------------------------------------------- file format
    def to_json(self) -> str:
        body = asdict(self)
        body["centroids"] = np.asarray(self.centroids, dtype=np.float64).tolist()
        body["silhouette_by_k"] = {str(k): v for k, v in self.silhouette_by_k.items()}
        body["inertia_by_k"] = {str(k): v for k, v in self.inertia_by_k.items()}
        return json.dumps({"format": MODEL_FORMAT, **body}, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "TskmModel":
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"model file {source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(body, dict) or body.pop("format", None) != MODEL_FORMAT:
            raise InputError(f"model file {source}: not a {MODEL_FORMAT} model")
        try:
            centroids = np.asarray(body.pop("centroids"), dtype=np.float64)
            model = cls(centroids=centroids, **body)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"model file {source}: bad or missing field ({exc})") from None
        model.silhouette_by_k = {int(k): float(v) for k, v in model.silhouette_by_k.items()}
        model.inertia_by_k = {int(k): float(v) for k, v in model.inertia_by_k.items()}
        if centroids.ndim != 2 or centroids.shape != (model.k, len(model.epoch_dates)) \
                or not np.isfinite(centroids).all():
            raise InputError(f"model file {source}: centroids must be a finite {model.k} x "
                             f"{len(model.epoch_dates)} array, got shape {centroids.shape}")
        if model.metric not in METRICS or model.preprocessing not in PREPROCESSING:
            raise InputError(f"model file {source}: unknown metric or preprocessing")
        return model

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "TskmModel":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"model file {path}: not found")
        return cls.from_json(path.read_text(), str(path))


def silhouette(divergence: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a precomputed (n, n) dissimilarity matrix; NaN with fewer than 2
    clusters or as many clusters as points."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(labels) - 1:
        return math.nan
    d = np.maximum(divergence, 0.0)
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return float(silhouette_score(d, labels, metric="precomputed"))


def fit_tskm(sample: np.ndarray, epoch_dates: list[str], *, metric: str, gamma: float, preprocessing: str,
             k_values: list[int], seed: int, max_iter: int, max_iter_barycenter: int,
             silhouette_size: int, settings: dict | None = None) -> TskmModel:
    """Fit TSKM for each k in ``k_values`` on ``sample`` (n, T) mm and keep the k with the best
    silhouette (computed with the same metric on at most ``silhouette_size`` series of the sample).
    soft-DTW: ``SoftDTWKMeans`` (tslearn's algorithm on our kernels); dtw/euclidean: tslearn's
    ``TimeSeriesKMeans``. Records silhouette and inertia (summed divergence) per k."""
    x = preprocess(sample, preprocessing)
    n = len(x)
    if n < 2 or n <= max(k_values):
        raise InputError(f"temporal clustering: {n} sampled series, fewer than k+1 = {max(k_values) + 1}")
    rng = np.random.default_rng(seed)
    sil_idx = np.sort(rng.permutation(n)[:silhouette_size])
    sil_x = x[sil_idx]
    sil_div = divergence_matrix(sil_x, sil_x, metric, gamma)
    log.info("TSKM silhouette matrix: %d x %d %s divergences", len(sil_x), len(sil_x), metric)
    self_x = _self_softdtw(x, gamma) if metric == "softdtw" else None
    best = None
    silhouettes, inertias = {}, {}
    for k in k_values:
        centroids, labels = _fit_k(x, k, metric=metric, gamma=gamma, seed=seed, max_iter=max_iter,
                                   max_iter_barycenter=max_iter_barycenter)
        model = TskmModel(k, metric, gamma, preprocessing, centroids, list(epoch_dates),
                          sample_size=n, seed=seed, settings=dict(settings or {}))
        if metric == "softdtw":
            # the divergence of each series to its centroid, without the (n, k) matrix
            dist = _sd._soft_pairs_parallel(x, centroids, np.arange(n, dtype=np.int64), labels, float(gamma))
            inertias[k] = float(np.sum(dist - 0.5 * (self_x + _self_softdtw(centroids, gamma)[labels])))
        else:
            div = divergence_matrix(x, centroids, metric, gamma)
            inertias[k] = float(div[np.arange(n), labels].sum())
        silhouettes[k] = silhouette(sil_div, labels[sil_idx])
        log.info("TSKM k=%d: silhouette %.3f, inertia %.4g", k, silhouettes[k], inertias[k])
        score = -math.inf if math.isnan(silhouettes[k]) else silhouettes[k]
        if best is None or score > best[0]:
            best = (score, model)
    model = best[1]
    model.silhouette_by_k, model.inertia_by_k = silhouettes, inertias
    log.info("TSKM chose k=%d (silhouette %.3f)", model.k, silhouettes[model.k])
    return model


def _fit_k(x: np.ndarray, k: int, *, metric: str, gamma: float, seed: int, max_iter: int,
           max_iter_barycenter: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (k, T) and labels (n,) (nearest final centroid) of one k-means fit on preprocessed x."""
    if metric == "softdtw":
        km = SoftDTWKMeans(k, gamma, max_iter=max_iter, max_iter_barycenter=max_iter_barycenter,
                           random_state=seed).fit(x)
        return km.cluster_centers_, km.labels_
    from tslearn.clustering import TimeSeriesKMeans

    km = TimeSeriesKMeans(n_clusters=k, metric=metric, max_iter=max_iter,
                          max_iter_barycenter=max_iter_barycenter, random_state=seed, n_init=1)
    km.fit(x[:, :, None])
    centroids = np.ascontiguousarray(km.cluster_centers_[:, :, 0])
    dist = distance_matrix(x, centroids, metric, gamma)
    return centroids, dist.argmin(axis=1).astype(np.int64)
