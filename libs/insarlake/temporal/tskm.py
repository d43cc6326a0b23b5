"""Time-series k-means (TSKM): fit on a sample with tslearn, choose k by the silhouette, assign
with our exact kernels, and a portable model file (JSON, no pickle).

Pure numpy/tslearn, no Spark: ``stage.py`` draws the sample and assigns every pixel on Spark.
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
    ``distance_matrix``. Used for the silhouette and the elbow curve."""
    if metric != "softdtw":
        return distance_matrix(a, b, metric, gamma)
    full = softdtw_distances(a, b, gamma)
    self_a = np.diag(full).copy() if a is b else _self_softdtw(a, gamma)
    self_b = self_a if a is b else _self_softdtw(b, gamma)
    return full - 0.5 * (self_a[:, None] + self_b[None, :])


def _self_softdtw(x: np.ndarray, gamma: float) -> np.ndarray:
    """sdtw(x_i, x_i) for each row (n,)."""
    return np.array([softdtw_distances(row[None, :], row[None, :], gamma)[0, 0] for row in x])


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
    """Fit tslearn's TimeSeriesKMeans for each k in ``k_values`` on ``sample`` (n, T) mm and keep
    the k with the best silhouette (computed with the same metric on at most
    ``silhouette_size`` series of the sample). Records silhouette and inertia per k."""
    from tslearn.clustering import TimeSeriesKMeans

    x = preprocess(sample, preprocessing)
    n = len(x)
    if n < 2 or n <= max(k_values):
        raise InputError(f"temporal clustering: {n} sampled series, fewer than k+1 = {max(k_values) + 1}")
    rng = np.random.default_rng(seed)
    sil_idx = np.sort(rng.permutation(n)[:silhouette_size])
    sil_x = x[sil_idx]
    sil_div = divergence_matrix(sil_x, sil_x, metric, gamma)
    best = None
    silhouettes, inertias = {}, {}
    for k in k_values:
        params = {"gamma": gamma} if metric == "softdtw" else None
        km = TimeSeriesKMeans(n_clusters=k, metric=metric, metric_params=params, max_iter=max_iter,
                              max_iter_barycenter=max_iter_barycenter, random_state=seed, n_init=1)
        with warnings.catch_warnings():
            # tslearn's soft-DTW barycentre passes L-BFGS-B options that SciPy 1.16 deprecates
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="scipy.optimize")
            warnings.filterwarnings("ignore", message=".*L-BFGS-B.*", category=DeprecationWarning)
            km.fit(x[:, :, None])
        centroids = np.ascontiguousarray(km.cluster_centers_[:, :, 0])
        model = TskmModel(k, metric, gamma, preprocessing, centroids, list(epoch_dates),
                          sample_size=n, seed=seed, settings=dict(settings or {}))
        labels = model.assign(sample)
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
