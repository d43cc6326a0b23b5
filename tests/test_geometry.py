"""Viewing geometry, burst-overlap twins and LOS decomposition: the pure parts (no Spark)."""
from __future__ import annotations

import numpy as np
import pytest

from insarlake.errors import InputError
from insarlake.ingest.geometry import FileGeometry, file_geometry, geometry_datasets, pass_direction
from insarlake.ingest.overlap import MIN_COMMON_EPOCHS, series_rms_difference_mm
from insarlake.sites.decompose import decompose_los


@pytest.mark.parametrize("source, expected", [
    ("/data/EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip", FileGeometry(22, "0845", "IW2", "2020-2024", 1)),
    ("s3://b/x/EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip!EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv",
     FileGeometry(22, "0845", "IW2", "2020-2024", 1)),
    ("/d/EGMS_L2b_117_0301_IW1_VV_2019_2023_2.csv", FileGeometry(117, "0301", "IW1", "2019-2023", 2)),
    ("/d/archive.zip!EGMS_L2a_005_0012_IW3_VH_2018_2022_1.csv", FileGeometry(5, "0012", "IW3", "2018-2022", 1)),
    # the member's name says nothing: the archive's name does
    ("/d/EGMS_L2b_044_0100_IW1_VV_2020_2024_1.zip!data.csv", FileGeometry(44, "0100", "IW1", "2020-2024", 1)),
    ("/d/burst.csv", FileGeometry()),
    ("/d/EGMS_L2b_176_0845_IW2_VV_2020_2024_1.zip", FileGeometry()),       # no relative orbit 176
    ("/d/EGMS_L2b_022_0845_IW4_VV_2020_2024_1.zip", FileGeometry()),       # no swath IW4
    ("/d/EGMS_L3_E32N10_100km_U_2018_2022_1.zip", FileGeometry()),         # L3 has no track
])
def test_file_names_give_the_geometry(source, expected):
    assert file_geometry(source) == expected


def test_pass_direction_follows_the_sign_of_the_east_component():
    # the real burst (track 22, heading 191 deg: descending) has los_east 0.594
    got = pass_direction(np.array([0.594, -0.62, 0.0, np.nan]))
    assert got.tolist() == ["descending", "ascending", None, None]


def test_geometry_datasets_split_only_several_tracks():
    assert geometry_datasets("italy", [22], split=True) == {22: "italy"}
    assert geometry_datasets("italy", [22, None, 117], split=False) == {22: "italy", None: "italy", 117: "italy"}
    assert geometry_datasets("italy", [117, None, 22], split=True) == {
        22: "italy-t022", 117: "italy-t117", None: "italy-other"}
    with pytest.raises(InputError, match=r"dataset 'x+': the input holds 2 tracks and the dataset of track t022, 'x+-t022', is longer than 64"):
        geometry_datasets("x" * 60, [22, 117], split=True)


def test_series_rms_difference_ignores_an_offset_and_missing_epochs():
    t = np.arange(10, dtype=np.float64)
    a = np.stack([t, t, t, t])
    b = np.stack([t + 5.0,                                       # an offset only: 0
                  t + np.where(t % 2 == 0, 1.0, -1.0),           # +-1 around the same mean: RMS 1
                  np.where(t < 7, np.nan, t + 2.0),              # 3 common epochs, offset: 0
                  np.where(t < 8, np.nan, t)])                   # 2 common epochs: not compared
    got = series_rms_difference_mm(a, b)
    assert got[:3] == pytest.approx([0.0, 1.0, 0.0], abs=1e-12)
    assert np.isnan(got[3]) and MIN_COMMON_EPOCHS == 3
    # a trend difference counts: 0.5 mm per epoch over 10 epochs, RMS = 0.5 * std of 0..9
    assert series_rms_difference_mm(a[:1], a[:1] * 1.5)[0] == pytest.approx(0.5 * np.std(t), rel=1e-12)


def test_decomposition_recovers_east_and_up_exactly_without_noise():
    east, up = 8.0, -15.0
    los = np.array([[-0.62, 0.776], [0.594, 0.795], [-0.55, 0.83]])     # two ascending tracks, one descending
    v = los @ np.array([east, up])
    got = decompose_los(v, [1.0, 2.0, 1.5], los[:, 0], los[:, 1])
    assert got.east_mm_yr == pytest.approx(east, abs=1e-9) and got.up_mm_yr == pytest.approx(up, abs=1e-9)


def test_decomposition_uncertainty_is_the_propagated_los_error():
    los = np.array([[-0.62, 0.776], [0.594, 0.795]])
    sigma = np.array([0.5, 1.0])
    got = decompose_los([0.0, 0.0], sigma, los[:, 0], los[:, 1])
    inverse = np.linalg.inv(los)                      # two geometries: x = A^-1 v exactly
    cov = inverse @ np.diag(sigma ** 2) @ inverse.T
    assert got.east_std_mm_yr == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-12)
    assert got.up_std_mm_yr == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-12)
    # Monte Carlo agrees (20,000 draws: the std of a std estimate is ~0.5 %, allow 4 %)
    rng = np.random.default_rng(0)
    draws = np.array([[d.east_mm_yr, d.up_mm_yr] for d in
                      (decompose_los(rng.normal(0, sigma), sigma, los[:, 0], los[:, 1]) for _ in range(20_000))])
    assert draws.std(axis=0) == pytest.approx([got.east_std_mm_yr, got.up_std_mm_yr], rel=0.04)


def test_decomposition_needs_both_sides():
    assert decompose_los([-5.0, -6.0], [1.0, 1.0], [0.59, 0.60], [0.79, 0.80]) is None      # descending only
    assert decompose_los([-5.0], [1.0], [-0.6], [0.78]) is None
    # a geometry with no valid numbers does not count
    assert decompose_los([-5.0, np.nan], [1.0, 1.0], [0.59, -0.6], [0.79, 0.78]) is None
    with pytest.raises(ValueError, match="do not agree"):
        decompose_los([1.0, 2.0], [1.0], [0.5, -0.5], [0.8, 0.8])
