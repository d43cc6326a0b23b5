"""TSKM fit, k choice, model file: against tslearn and simulated behaviours with a known k."""
from __future__ import annotations

import json

import numpy as np
import pytest

from insarlake.errors import InputError
from insarlake.temporal.softdtw import softdtw_distances
from insarlake.temporal.tskm import SoftDTWKMeans, TskmModel, divergence_matrix, fit_tskm, preprocess, silhouette


def _behaviours(n_per: int, T: int = 60, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n_per series of each of k distinct deformation behaviours (mm) plus 1 mm noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 3, T)
    # behaviours that stay apart under time warping (a trend and a delayed settlement of similar
    # depth do not: DTW aligns one onto the other)
    shapes = [np.zeros(T), -15 * t, 12 * t, 10 * np.sin(2 * np.pi * t), -60 + 0 * t][:k]
    x = np.concatenate([s + rng.normal(0, 1.0, (n_per, T)) for s in shapes])
    return x, np.repeat(np.arange(k), n_per)


def test_preprocess_modes_and_missing_epochs():
    x = np.array([[1.0, np.nan, 3.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    assert np.allclose(preprocess(x, "none"), [[1, 2, 3, 5], [2, 2, 2, 2]])
    assert np.allclose(preprocess(x, "demean"), [[-1.75, -0.75, 0.25, 2.25], [0, 0, 0, 0]])
    z = preprocess(x, "znorm")
    assert np.allclose(z[0].mean(), 0) and np.isclose(z[0].std(), 1) and np.allclose(z[1], 0)
    with pytest.raises(ValueError, match="preprocessing"):
        preprocess(x, "log")


def test_silhouette_equals_tslearn_softdtw():
    from tslearn.clustering import silhouette_score

    x, labels = _behaviours(8, T=30)
    ours = silhouette(divergence_matrix(x, x, "softdtw", 1.0), labels)
    assert ours == pytest.approx(silhouette(divergence_matrix(x, x.copy(), "softdtw", 1.0), labels), rel=1e-9)
    ref = silhouette_score(x[:, :, None], labels, metric="softdtw", metric_params={"gamma": 1.0})
    assert ours == pytest.approx(ref, rel=1e-6)


@pytest.mark.slow
def test_silhouette_recovers_the_number_of_behaviours():
    x, truth = _behaviours(25, k=4)
    dates = [f"2020-01-{i % 28 + 1:02d}" for i in range(x.shape[1])]
    model = fit_tskm(x, dates, metric="softdtw", gamma=1.0, preprocessing="none", k_values=[2, 3, 4, 5],
                     seed=0, max_iter=5, max_iter_barycenter=5, silhouette_size=100)
    assert model.k == 4, model.silhouette_by_k
    assert model.silhouette_by_k[4] == max(model.silhouette_by_k.values()) > 0.5
    assert all(v >= 0 for v in model.inertia_by_k.values())
    assert model.inertia_by_k[2] > model.inertia_by_k[4]   # the elbow falls to the true k
    labels = model.assign(x)
    # each behaviour is one cluster (as sets, numbering aside)
    assert {frozenset(np.flatnonzero(labels == c)) for c in range(4)} == \
        {frozenset(np.flatnonzero(truth == c)) for c in range(4)}


def test_model_file_round_trip_and_corruption(tmp_path):
    x, _ = _behaviours(5, T=20)
    model = TskmModel(3, "softdtw", 0.5, "demean", x[:3].copy(), [f"2021-01-{d:02d}" for d in range(1, 21)],
                      {3: 0.61}, {3: 12.5}, sample_size=15, seed=4, settings={"k_min": 3})
    path = tmp_path / "model.json"
    model.save(path)
    back = TskmModel.load(path)
    assert np.array_equal(back.centroids, model.centroids) and back.silhouette_by_k == {3: 0.61}
    assert (back.k, back.metric, back.gamma, back.preprocessing, back.epoch_dates) == \
        (3, "softdtw", 0.5, "demean", model.epoch_dates)
    assert np.array_equal(back.assign(x), model.assign(x))
    body = json.loads(path.read_text())
    body["centroids"] = body["centroids"][:2]
    path.write_text(json.dumps(body))
    with pytest.raises(InputError, match="centroids must be a finite 3 x 20 array"):
        TskmModel.load(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        TskmModel.load(path)
    with pytest.raises(InputError, match="not found"):
        TskmModel.load(tmp_path / "missing.json")


def _objective(x, centroids, gamma):
    """Sum over series of the soft-DTW value to the nearest centroid (mm²): the k-means objective."""
    return float(softdtw_distances(x, centroids, gamma).min(axis=1).sum())


@pytest.mark.slow
def test_kmeans_plusplus_seeds_equal_tslearn():
    from sklearn.utils import check_random_state
    from tslearn.clustering.kmeans import _k_init_metric
    from tslearn.metrics import cdist_soft_dtw

    from insarlake.temporal.tskm import _kmeans_plusplus

    x, _ = _behaviours(15, T=40, k=4, seed=3)
    for seed, k in ((0, 3), (5, 4), (9, 6)):
        ref = _k_init_metric(x[:, :, None], k, cdist_metric=lambda a, b: cdist_soft_dtw(a, b, gamma=1.0),
                             random_state=check_random_state(seed))[:, :, 0]
        assert np.array_equal(_kmeans_plusplus(x, k, 1.0, check_random_state(seed)), ref)


@pytest.mark.slow
def test_softdtw_kmeans_reaches_tslearns_objective():
    """60 series x 50 epochs, k=3, from the same initial centroids (the seeds are tested above): our fit is
    tslearn's algorithm, so its objective is within 1 % (in practice equal to ~1e-9)."""
    import warnings

    from tslearn.clustering import TimeSeriesKMeans

    rng = np.random.default_rng(21)
    x, _ = _behaviours(15, T=50, k=4, seed=21)
    x = x + np.cumsum(rng.normal(0, 0.7, x.shape), axis=1)
    gamma, params = 1.0, dict(max_iter=3, max_iter_barycenter=5)
    init = x[[0, 20, 40]].copy()
    ours = SoftDTWKMeans(3, gamma, init=init, **params).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TimeSeriesKMeans(3, metric="softdtw", metric_params={"gamma": gamma}, init=init[:, :, None], **params)
        ref.fit(x[:, :, None])
    ref_c = ref.cluster_centers_[:, :, 0]
    assert _objective(x, ours.cluster_centers_, gamma) <= 1.01 * _objective(x, ref_c, gamma)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6) and ours.n_iter_ == ref.n_iter_
    assert np.array_equal(ours.labels_, ref.labels_)
    assert ours.cluster_centers_.shape == (3, 50) and ours.labels_.dtype == np.int64
    assert not np.allclose(ours.cluster_centers_, init)             # the barycentres moved


def test_softdtw_kmeans_bad_input():
    x, _ = _behaviours(3, T=20, k=2)
    gappy = x.copy()
    gappy[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN-free"):
        SoftDTWKMeans(2).fit(gappy)
    with pytest.raises(ValueError, match="ragged"):
        SoftDTWKMeans(2).fit([list(x[0]), list(x[1][:-1]), list(x[2])])
    with pytest.raises(ValueError, match="larger than the number of series"):
        SoftDTWKMeans(7).fit(x)
    with pytest.raises(ValueError, match="n_clusters"):
        SoftDTWKMeans(0).fit(x)
    with pytest.raises(ValueError, match="init must have shape"):
        SoftDTWKMeans(2, init=x[:3]).fit(x)
    with pytest.raises(ValueError, match="gamma"):
        SoftDTWKMeans(2, gamma=-1.0).fit(x)
    with pytest.raises(ValueError, match="max_iter"):
        SoftDTWKMeans(2, max_iter=0).fit(x)
    with pytest.raises(ValueError, match="empty"):               # identical series: k-means++ seeds them all
        SoftDTWKMeans(2, init=np.stack([x[0], x[0]])).fit(np.repeat(x[:1], 4, axis=0))
