"""TSKM fit, k choice, model file: against tslearn and simulated behaviours with a known k."""
from __future__ import annotations

import json

import numpy as np
import pytest

from insarlake.errors import InputError
from insarlake.temporal.tskm import TskmModel, divergence_matrix, fit_tskm, preprocess, silhouette


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
