"""Co-variogram: kernels against hand-computed values, and the Spark estimate against a simulated
Gaussian random field with a known (exponential) covariance."""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from insarlake.config import replace
from insarlake.errors import ConfigError, InputError
from insarlake.geo import haversine_m
from insarlake.temporal.covariogram import (
    _participants, _plan_draws, bin_covariance, correlation_length_km, covariogram, pair_covariance,
    plot_covariogram)

# The simulated field: C(h) = SIGMA**2 * exp(-h / L_KM) at N_POINTS random points in a SIDE_KM square.
N_POINTS, N_EPOCHS, SIDE_KM, L_KM, SIGMA = 2500, 40, 15.0, 2.0, 3.0
TRUE_LENGTH_KM = L_KM * math.log(2.0)   # where C falls to half of C(0)
LON0, LAT0 = 11.35, 44.5


# ---------------------------------------------------------------------------------------- kernels

def test_pair_covariance_skips_nan_epochs():
    nan = np.nan
    a = np.array([[1.0, 2.0, nan], [1.0, nan, 3.0], [nan, nan, 1.0], [-1.0, 2.0, 4.0]])
    b = np.array([[2.0, 2.0, 5.0], [3.0, 4.0, nan], [1.0, 1.0, nan], [1.0, 1.0, 1.0]])
    got = pair_covariance(a, b)
    assert got.dtype == np.float64 and got.shape == (4,)
    np.testing.assert_allclose(got[[0, 1, 3]], [(2 + 4) / 2, 3.0, (-1 + 2 + 4) / 3])
    assert np.isnan(got[2])  # no common valid epoch
    with pytest.raises(ValueError):
        pair_covariance(a, b[:, :2])


def test_bin_covariance_edges_and_exclusions():
    d = np.array([0.0, 0.49, 0.25, 0.5, 0.99, 1.2, 2.0, 2.5, 3.0, 0.1])
    c = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 5.0, 7.0, 100.0, 100.0, np.nan])
    bins = bin_covariance(d, c, bin_km=0.5, max_distance_km=2.5)
    assert list(bins.columns) == ["distance_km", "covariance", "pairs"]
    # [0, 0.5): 0, 0.49, 0.25 (0.1 has NaN covariance); [0.5, 1): 0.5, 0.99; [1, 1.5): 1.2;
    # [1.5, 2): empty, left out; [2, 2.5): 2.0; 2.5 and 3.0 are at or beyond max_distance_km.
    np.testing.assert_allclose(bins["distance_km"], [0.25, 0.75, 1.25, 2.25])
    np.testing.assert_allclose(bins["covariance"], [2.0, 15.0, 5.0, 7.0])
    assert bins["pairs"].tolist() == [3, 2, 1, 1]
    assert bin_covariance(np.array([]), np.array([]), 0.5, 2.5).empty


def test_correlation_length_interpolates_between_bin_centres(caplog):
    d = np.array([0.25, 0.75, 1.25, 1.75])
    # level 5: crossed between 0.75 (8) and 1.25 (4) -> 0.75 + (5 - 8) / (4 - 8) * 0.5
    assert correlation_length_km(d, [10.0, 8.0, 4.0, 2.0], 0.5) == pytest.approx(1.125)
    assert correlation_length_km(d, [10.0, 5.0, 4.0, 2.0], 0.5) == pytest.approx(0.75)  # exactly at the level
    # a later rebound above the level does not matter: the first crossing counts
    assert correlation_length_km(d, [10.0, 6.0, 2.0, 9.0], 0.25) == pytest.approx(0.75 + 3.5 / 4 * 0.5)
    with caplog.at_level(logging.WARNING, logger="insarlake.temporal.covariogram"):
        assert math.isnan(correlation_length_km(d, [10.0, 9.0, 8.0, 7.0], 0.5))
        assert math.isnan(correlation_length_km(d, [-1.0, 0.5, 0.2, 0.1], 0.5))
        assert math.isnan(correlation_length_km([], [], 0.5))
    assert sum("no correlation length" in r.message for r in caplog.records) == 3
    with pytest.raises(ValueError):
        correlation_length_km(d, [10.0, 8.0, 4.0, 2.0], 1.5)


# ---------------------------------------------------------------------------------------- Spark

def _points(rng) -> tuple[np.ndarray, np.ndarray]:
    dlat = SIDE_KM / 111.195
    dlon = dlat / math.cos(math.radians(LAT0))
    return LON0 + (rng.random(N_POINTS) - 0.5) * dlon, LAT0 + (rng.random(N_POINTS) - 0.5) * dlat


@pytest.fixture(scope="module")
def field():
    """(lon, lat, disp (n, T) mm with ~3 % NaN, distance matrix km): a zero-mean exponential field."""
    rng = np.random.default_rng(20240503)
    lon, lat = _points(rng)
    h_km = haversine_m(lon[:, None], lat[:, None], lon[None, :], lat[None, :]) / 1000.0
    chol = np.linalg.cholesky(SIGMA ** 2 * np.exp(-h_km / L_KM) + 1e-9 * np.eye(N_POINTS))
    disp = chol @ rng.standard_normal((N_POINTS, N_EPOCHS))
    disp[rng.random(disp.shape) < 0.03] = np.nan
    return lon, lat, disp, h_km


def _frame(spark, lon, lat, disp):
    pdf = pd.DataFrame({"pixel_id": [f"P{i:05d}" for i in range(len(lon))], "lon": lon, "lat": lat,
                        "disp": list(np.asarray(disp, dtype=np.float32))})
    df = spark.createDataFrame(pdf, "pixel_id string, lon double, lat double, disp array<float>")
    return df.selectExpr("*", "ST_GeoHash(ST_Point(lon, lat), 5) AS tile_id")


@pytest.fixture(scope="module")
def cov_cfg(config):
    return replace(config.covariogram, pairs=200_000, local_share=0.7, local_precision=5,
                               bin_km=0.25, max_distance_km=10.0, fraction=0.5, seed=11)


@pytest.fixture(scope="module")
def field_result(spark, field, cov_cfg):
    lon, lat, disp, _ = field
    return covariogram(spark, _frame(spark, lon, lat, disp), cov_cfg)


def test_recovers_the_correlation_length_of_a_simulated_field(field, field_result, cov_cfg):
    _check_recovery(field, field_result, cov_cfg)


def _check_recovery(field, res, cov_cfg):
    lon, lat, disp, h_km = field
    length = res.correlation_length_km
    assert abs(length - TRUE_LENGTH_KM) / TRUE_LENGTH_KM < 0.2, (length, TRUE_LENGTH_KM)
    bins = res.bins
    assert bins["distance_km"].is_monotonic_increasing and bins["distance_km"].max() < cov_cfg.max_distance_km
    assert bins["distance_km"].iloc[0] == pytest.approx(cov_cfg.bin_km / 2)
    # first bin ~ sigma**2: the model averaged over the pairs closer than bin_km (~0.94 sigma**2 here)
    # less the bias of removing the per-epoch mean of a 15 km scene (~0.07 sigma**2, see the far bins)
    first = h_km[np.triu_indices(N_POINTS, 1)]
    model_first = SIGMA ** 2 * np.exp(-first[first < cov_cfg.bin_km] / L_KM).mean()
    assert abs(bins["covariance"].iloc[0] - model_first) < 0.2 * SIGMA ** 2, (bins["covariance"].iloc[0], model_first)
    # far beyond the correlation length the covariance is near zero (slightly negative: mean removed)
    assert abs(bins.loc[bins["distance_km"] > 8, "covariance"].mean()) < 0.1 * SIGMA ** 2
    assert abs(res.pairs - cov_cfg.pairs) / cov_cfg.pairs < 0.3
    assert bins["pairs"].sum() <= res.pairs
    # the per-epoch mean is the exact NaN-skipping mean over all pixels
    np.testing.assert_allclose(res.epoch_mean_mm, np.nanmean(disp.astype(np.float32), axis=0), atol=1e-5)
    # local pairs crowd the short distances: far more first-bin pairs than a uniform draw would give
    uniform_first_bin = cov_cfg.pairs * np.mean(first < cov_cfg.bin_km)
    assert bins["pairs"].iloc[0] > 3 * uniform_first_bin


def test_bins_agree_with_all_pairs_computed_in_numpy(field, field_result):
    """The sampled estimate against the exact one over all N(N-1)/2 pairs (same kernels)."""
    _check_against_all_pairs(field, field_result)


def _check_against_all_pairs(field, result):
    lon, lat, disp, h_km = field
    anomalies = disp.astype(np.float32).astype(np.float64) - result.epoch_mean_mm
    i, j = np.triu_indices(N_POINTS, 1)
    near = h_km[i, j] < 3.0
    i, j = i[near], j[near]
    exact = bin_covariance(h_km[i, j], pair_covariance(anomalies[i], anomalies[j]), 0.25, 3.0)
    got = result.bins.set_index("distance_km").loc[exact["distance_km"]]
    np.testing.assert_allclose(got["covariance"], exact["covariance"].to_numpy(), atol=0.05 * SIGMA ** 2)


def _cells(spark, df, cfg):
    """The covariogram's view of a frame: pixel_id, lon, lat, cell, disp."""
    return df.selectExpr("pixel_id", "lon", "lat", f"substring(tile_id, 1, {cfg.local_precision}) AS cell", "disp")


def test_default_share_keeps_every_pixel_of_a_small_scene(spark, field, cov_cfg):
    """At 4 pixels per pair a 2,500-pixel scene with a 200,000-pair target has every pixel in both
    draws: the estimate above is the unsampled one (2 x 2,500 rows in the pairing)."""
    lon, lat, disp, _ = field
    n, draws = _plan_draws(_cells(spark, _frame(spark, lon, lat, disp), cov_cfg), cov_cfg)
    assert n == N_POINTS and [d.share for d in draws] == [1.0, 1.0]
    assert [d.population for d in draws] == [N_POINTS, N_POINTS]


def test_only_a_hash_sample_of_pixels_takes_part(spark, field, cov_cfg):
    """With a target of 500 pairs only ~4 x 500 rows enter the pairing instead of 2 x 2,500:
    each draw's participants are a Binomial(population, share) count (checked within 5 standard
    deviations), the same set for the same seed, and the pairs drawn still meet the target."""
    lon, lat, disp, _ = field
    cfg = replace(cov_cfg, pairs=500)
    df = _frame(spark, lon, lat, disp)
    pixels = _cells(spark, df, cfg)
    n, draws = _plan_draws(pixels, cfg)
    local, glob = draws
    # global: 150 pairs among 2,500 pixels -> 4 x 150 / 2,500; local: 350 pairs -> 4 x 350 / 2,500
    # unless the cells' pairs need more (square-root floor)
    assert glob.share == pytest.approx(4 * 150 / N_POINTS)
    assert local.share == pytest.approx(max(4 * 350 / N_POINTS, math.sqrt(350 / local.candidates)))
    assert local.share < 1
    rows = _participants(pixels, draws, cfg.seed).groupBy("kind").count().toPandas().set_index("kind")["count"]
    for kind_id, d in enumerate(draws):
        sd = math.sqrt(d.population * d.share * (1 - d.share))
        assert abs(rows[kind_id] - d.participants) < 5 * sd, (d.kind, rows[kind_id], d.participants)
    assert rows.sum() < 0.7 * 2 * N_POINTS
    ids = sorted(r.pixel_id for r in _participants(pixels, draws, cfg.seed).collect())
    assert ids == sorted(r.pixel_id for r in _participants(pixels, draws, cfg.seed).collect())
    assert ids != sorted(r.pixel_id for r in _participants(pixels, draws, cfg.seed + 1).collect())
    res = covariogram(spark, df, cfg)
    assert abs(res.pairs - cfg.pairs) / cfg.pairs < 0.3


def test_sampled_pixels_still_recover_the_field(spark, field, cov_cfg):
    """Far fewer pixels per pair than the default (0.01), so both draws sample the pixels (the
    shares come from the square-root floor: the participants' pairs just hold the target): the
    same checks as the unsampled estimate, with the same tolerances."""
    lon, lat, disp, _ = field
    cfg = replace(cov_cfg, pixels_per_pair=0.01)
    df = _frame(spark, lon, lat, disp)
    _, draws = _plan_draws(_cells(spark, df, cfg), cfg)
    assert all(d.share < 1 for d in draws)
    res = covariogram(spark, df, cfg)
    _check_recovery(field, res, cfg)
    _check_against_all_pairs(field, res)


def test_pure_noise_has_no_correlation_length(spark, field, cov_cfg):
    """Without spatial correlation every bin is ~0. The length is then where noise first dips below
    half of a ~0 first bin: NaN (first bin <= 0) or within the first bins (other noise seeds gave
    NaN, NaN, 0.48 and 1.05 km); the flat covariogram is the robust check."""
    lon, lat, _, _ = field
    noise = np.random.default_rng(5).normal(0.0, SIGMA, (N_POINTS, N_EPOCHS))
    res = covariogram(spark, _frame(spark, lon, lat, noise), cov_cfg)
    assert abs(res.bins["covariance"].iloc[0]) < 0.05 * SIGMA ** 2
    assert np.all(np.abs(res.bins["covariance"]) < 0.1 * SIGMA ** 2)
    length = res.correlation_length_km
    assert math.isnan(length) or length < 1.5 * cov_cfg.bin_km, length


def test_per_epoch_mean_is_removed(spark, field, field_result, cov_cfg):
    lon, lat, disp, _ = field
    common = np.random.default_rng(9).normal(0.0, 50.0, N_EPOCHS)  # 50 mm, i.e. 2,500 mm2 if kept
    res = covariogram(spark, _frame(spark, lon, lat, disp + common), cov_cfg)
    np.testing.assert_allclose(res.epoch_mean_mm, field_result.epoch_mean_mm + common, atol=1e-4)
    assert res.pairs == field_result.pairs
    assert res.bins["pairs"].tolist() == field_result.bins["pairs"].tolist()
    np.testing.assert_allclose(res.bins["covariance"], field_result.bins["covariance"], atol=1e-3)
    assert res.correlation_length_km == pytest.approx(field_result.correlation_length_km, rel=1e-3)


def test_same_seed_same_bins_other_seed_other_pairs(spark, field, field_result, cov_cfg):
    lon, lat, disp, _ = field
    df = _frame(spark, lon, lat, disp)
    again = covariogram(spark, df, cov_cfg)
    assert again.pairs == field_result.pairs
    pd.testing.assert_frame_equal(again.bins, field_result.bins, check_exact=False, rtol=1e-9)
    other = covariogram(spark, df, replace(cov_cfg, seed=cov_cfg.seed + 1))
    assert other.bins["pairs"].tolist() != field_result.bins["pairs"].tolist()
    # another draw of the same field: same answer within the sampling noise
    assert other.correlation_length_km == pytest.approx(field_result.correlation_length_km, rel=0.15)


def test_ragged_series_are_rejected(spark, cov_cfg):
    df = spark.createDataFrame(
        [("a", 11.35, 44.5, [1.0, 2.0, 3.0]), ("b", 11.36, 44.5, [1.0, 2.0])],
        "pixel_id string, lon double, lat double, disp array<float>").selectExpr(
        "*", "ST_GeoHash(ST_Point(lon, lat), 5) AS tile_id")
    with pytest.raises(InputError, match="one length"):
        covariogram(spark, df, cov_cfg)


def test_plot_writes_a_png(tmp_path, field_result):
    path = plot_covariogram(field_result.bins, field_result.correlation_length_km, tmp_path / "fig" / "cov.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    empty = plot_covariogram(field_result.bins.iloc[:0], float("nan"), tmp_path / "empty.png")
    assert empty.read_bytes()[:4] == b"\x89PNG"


def test_invalid_config_is_rejected_before_any_job(cov_cfg):
    with pytest.raises(ConfigError, match=r"config key 'covariogram.fraction' must be within \(0, 1\); got 1.5"):
        replace(cov_cfg, fraction=1.5)
