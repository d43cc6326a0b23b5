"""The hotspots stage on Spark: tables with consistent counts, valid ellipses, GeoJSON, retention
reasons, scores against the simulated truth for the three methods."""
from __future__ import annotations

import json
from insarlake.config import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from conftest import fast_clustering
from insarlake.hotspots.stage import Reference, retain, run_hotspots
from insarlake.lake import Run, read_table, run_results
from insarlake.cluster.stage import run_cluster


@pytest.fixture(scope="module")
def hotspot_config(config):
    return replace(fast_clustering(config), hotspots=replace(config.hotspots, labels="clusters"))


@pytest.fixture(scope="module")
def hotspots_run(spark, hotspot_config, sim_scene):
    run_cluster(spark, hotspot_config, "sim", Run("cluster", hotspot_config))
    run = Run("hotspots", hotspot_config)
    return run, run_hotspots(spark, hotspot_config, "sim", run)


@pytest.fixture(scope="module")
def run_reference(spark, hotspot_config, hotspots_run):
    """(Reference of the run's v0 and sigma, with S_d 10 km and eps 500 m; its dates; their times
    in years)."""
    from insarlake.timeseries import years_since

    run, _ = hotspots_run
    ref = Reference(run.metrics["hotspots_v0_mm_yr"], run.metrics["hotspots_sigma_mm_yr"], 10.0, 500.0)
    dates = [r.date for r in read_table(spark, hotspot_config, "epochs", ["sim"]).orderBy("idx").collect()]
    return ref, dates, years_since(np.array(dates, dtype="datetime64[D]"))


def test_tables_have_consistent_counts(spark, hotspot_config, hotspots_run):
    run, result = hotspots_run
    hot = run_results(spark, hotspot_config, "hotspots", "sim").toPandas()
    members = run_results(spark, hotspot_config, "hotspot_pixels", "sim").toPandas()
    pixels = read_table(spark, hotspot_config, "pixels", ["sim"]).select("pixel_id").toPandas()
    assert len(hot) == result.candidates >= 1 and hot.retained.sum() == result.retained >= 1
    assert members.pixel_id.is_unique and set(members.pixel_id) <= set(pixels.pixel_id)
    sizes = members.groupby("hotspot_id").size()
    assert sizes.reindex(hot.hotspot_id).tolist() == hot.n_pixels.tolist()
    assert run.counts["hotspot_pixels"] == len(members) and run.counts["hotspots"] == len(hot)
    assert (hot.reason[hot.retained] == "").all() and (hot.reason[~hot.retained] != "").all()
    assert (hot.method == hotspot_config.hotspots.method).all()
    # only retained hotspots grow rims; velocities are of the pixels outside the rim (the sum of at
    # most a few thousand float64 terms in another order: 1e-9 relative is far above its rounding)
    assert not members.rim[~members.hotspot_id.isin(hot.hotspot_id[hot.retained])].any()
    velocity = read_table(spark, hotspot_config, "pixels", ["sim"]).select("pixel_id", "velocity").toPandas()
    core = members[~members.rim].merge(velocity, on="pixel_id").groupby("hotspot_id").velocity.mean()
    np.testing.assert_allclose(core.reindex(hot.hotspot_id).to_numpy(), hot.mean_velocity.to_numpy(), rtol=1e-9)


def test_ellipses_are_valid_polygons_around_the_mean_centre(spark, hotspot_config, hotspots_run):
    hot = run_results(spark, hotspot_config, "hotspots", "sim").toPandas()
    for row in hot.itertuples():
        polygon = shapely.from_wkt(row.geometry)
        assert polygon.geom_type == "Polygon" and polygon.is_valid
        assert polygon.contains(shapely.Point(row.center_lon, row.center_lat))
        assert row.semi_major_km >= row.semi_minor_km > 0 and 0 <= row.angle_deg < 180
        assert row.standard_distance_km == pytest.approx(np.hypot(row.sd_x_km, row.sd_y_km))
        assert len(row.mean_disp) == read_table(spark, hotspot_config, "epochs", ["sim"]).count()
        assert row.onset_date <= row.peak_date or row.onset_date is None


def test_geojson_holds_the_retained_hotspots(spark, hotspot_config, hotspots_run):
    _, result = hotspots_run
    collection = json.loads((Path(result.outputs) / "hotspots.geojson").read_text())
    hot = run_results(spark, hotspot_config, "hotspots", "sim").toPandas()
    assert collection["type"] == "FeatureCollection"
    assert sorted(f["properties"]["hotspot_id"] for f in collection["features"]) == \
        sorted(hot.hotspot_id[hot.retained])
    for feature in collection["features"]:
        assert shapely.geometry.shape(feature["geometry"]).is_valid
    for name in ("hotspots.png", "hotspot_series.png"):
        assert (Path(result.outputs) / name).read_bytes()[:4] == b"\x89PNG"


def test_scores_for_every_method_against_truth(spark, hotspot_config, hotspots_run):
    run, result = hotspots_run
    table = run_results(spark, hotspot_config, "hotspot_scores", "sim").toPandas()
    truth = read_table(spark, hotspot_config, "truth", ["sim"]).toPandas()
    assert set(table.method) == set(hotspot_config.hotspots.score_methods) == set(result.scores)
    sizes = truth[truth.source_id > 0].groupby("source_id").size()
    for method, rows in table.groupby("method"):
        assert sorted(rows.source_id) == sorted(sizes.index)
        assert rows.set_index("source_id").n_pixels.reindex(sizes.index).tolist() == sizes.tolist()
        scored = rows[rows.scored]
        assert rows.recall.iloc[0] == pytest.approx(scored.matched.mean())
        assert run.metrics[f"score_{method}_recall"] == pytest.approx(result.scores[method]["recall"])
    # on this scene the significance rule finds most sources, and finds nothing that is not one
    assert result.scores["significant"]["recall"] >= 0.6
    assert result.scores["significant"]["precision"] >= 0.8


def test_retention_gives_every_failed_rule_as_reason(hotspot_config):
    cfg = replace(hotspot_config.hotspots, min_pixels=30, z_hotspot=2.0, event_step_f=30.0)
    ref = Reference(v0_mm_yr=-1.0, sigma_mm_yr=2.0, max_sd_km=3.0, eps_m=500.0)
    rows = pd.DataFrame({"hotspot_id": [0, 1, 2, 3, 4], "n_pixels": [100, 10, 100, 100, 100],
                         "standard_distance_km": [1.0, 1.0, 4.0, 1.0, 4.0],
                         "mean_velocity": [-8.0, -8.0, -8.0, 2.0, -8.0], "velocity_z": [-3.5, -3.5, -3.5, 1.5, -3.5],
                         "event_step_f": [0.0, 0.0, cfg.event_step_f - 1.0, 0.0, cfg.event_step_f]})
    out = retain(rows, cfg, "significant", ref)
    # row 4 is as broad as row 2, but its mean series steps: one event (a post-seismic field)
    assert out.retained.tolist() == [True, False, False, False, True]
    assert out.reason[0] == "" and "10 pixels < min_pixels 30" in out.reason[1]
    assert "standard distance 4.00 km >= 3.00 km and no event (step F 29.0 < 30.0)" in out.reason[2]
    assert "within 2.0 sigma" in out.reason[3] and "mean speed 3.00 mm/yr" in out.reason[3]
    seed = retain(rows, cfg, "seed", ref)                 # the paper's rule: no velocity test, no event
    assert seed.retained.tolist() == [True, False, False, True, False]
    baseline = retain(rows, cfg, "velocity_threshold", ref)
    assert baseline.retained.tolist() == [True, False, True, True, True]
    capped = retain(rows, replace(cfg, event_step_f=None), "significant", ref)
    assert capped.retained.tolist() == [True, False, False, False, False]
    with pytest.raises(ValueError, match="event_step_f"):
        retain(rows.drop(columns="event_step_f"), cfg, "significant", ref)


def test_the_noise_level_on_spark_is_the_numpy_kernels(spark, hotspot_config, hotspots_run):
    # velocity_noise bins the velocities (NOISE_BIN_SHARE of the first sigma estimate): each value
    # moves by at most one bin, so the clip edges, the median and the MAD by at most one bin each:
    # v0 within two bins of stable_level on the values themselves, sigma within its factor times two
    from insarlake.hotspots.noise import MAD_TO_SIGMA, clipped_mad_to_sigma, stable_level
    from insarlake.hotspots.stage import NOISE_BIN_SHARE, velocity_noise

    pixels = read_table(spark, hotspot_config, "pixels", ["sim"]).select("velocity", "velocity_std")
    frame = pixels.toPandas()
    v = frame["velocity"].to_numpy(np.float64)
    stds = np.sort(frame["velocity_std"].to_numpy(np.float64))
    formal = float(stds[(len(stds) + 1) // 2 - 1])          # percentile_approx's median: the lower one
    v0, sigma = velocity_noise(pixels, hotspot_config.hotspots)
    exact_v0, exact_sigma = stable_level(v, clip_z=hotspot_config.hotspots.stable_clip_z, start_sigma_mm_yr=formal,
                                         runaway_ratio=hotspot_config.hotspots.stable_runaway_ratio)
    # the first estimates are percentile_approx's (exact at this size): the bin width is known
    width = NOISE_BIN_SHARE * min(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))), formal)
    assert abs(v0 - exact_v0) <= 2 * width
    assert abs(sigma - exact_sigma) <= 2 * clipped_mad_to_sigma(hotspot_config.hotspots.stable_clip_z) * width
    run, _ = hotspots_run
    assert run.metrics["hotspots_sigma_mm_yr"] == pytest.approx(sigma)


def test_the_noise_level_on_spark_keeps_the_peak_core_where_the_clip_runs_away(spark, hotspot_config):
    # a stable peak N(0, 0.6) of 10,000 velocities beside a plateau of 30,000 over +-6 mm/yr: the
    # 2.5 clip runs away to ~3 mm/yr, the guard keeps the 1.5 core (~0.78; tests/test_hotspot_noise.py);
    # binned, each value moves by at most half a bin; the median and MAD of the core's ~15,300
    # values by less (the shifts average out), which the fixed point's slope there (0.61) amplifies
    # 2.6 times: within two bins times the core clip's factor of the numpy kernel's
    from insarlake.hotspots.noise import CORE_CLIP_Z, MAD_TO_SIGMA, clipped_mad_to_sigma, stable_level
    from insarlake.hotspots.stage import NOISE_BIN_SHARE, velocity_noise

    rng = np.random.default_rng(5)
    v = np.concatenate([rng.normal(0.0, 0.6, 10_000), rng.uniform(-6.0, 6.0, 30_000)])
    pixels = spark.createDataFrame(pd.DataFrame({"velocity": v, "velocity_std": np.full(v.size, 0.4)}))
    cfg = hotspot_config.hotspots
    v0, sigma = velocity_noise(pixels, cfg)
    exact_v0, exact_sigma = stable_level(v, clip_z=cfg.stable_clip_z, start_sigma_mm_yr=0.4,
                                         runaway_ratio=cfg.stable_runaway_ratio)
    assert exact_sigma < 1.5 * 0.6 < 4 * 0.6 < stable_level(v, clip_z=cfg.stable_clip_z, start_sigma_mm_yr=0.4)[1]
    width = NOISE_BIN_SHARE * min(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))), 0.4)
    assert abs(v0 - exact_v0) <= 2 * width
    assert abs(sigma - exact_sigma) <= 2 * clipped_mad_to_sigma(CORE_CLIP_Z) * width


def test_the_local_residual_noise_on_spark_is_the_numpy_kernels(spark, hotspot_config, hotspots_run):
    # the stage's residuals come from spatial.neighbours over tiles and halos, sigma_r from two
    # percentile_approx medians (exact at this size, the lower of the two middle values): the same
    # computation in one process must give the same value to the last bits
    from insarlake.hotspots.noise import MAD_TO_SIGMA
    from insarlake.hotspots.residual import local_residual

    cfg = hotspot_config.hotspots
    run, _ = hotspots_run
    sigma_r = run.metrics["hotspots_residual_sigma_mm_yr"]
    assert type(sigma_r) is float and sigma_r > 0
    frame = read_table(spark, hotspot_config, "pixels", ["sim"]).select("lon", "lat", "velocity").toPandas()
    v = frame["velocity"].to_numpy(np.float64)
    excess = (v - run.metrics["hotspots_v0_mm_yr"]) / run.metrics["hotspots_sigma_mm_yr"]
    sign = np.where(np.abs(excess) > cfg.z_pixel, np.sign(excess), 0).astype(np.int8)
    residual = local_residual(frame["lon"].to_numpy(), frame["lat"].to_numpy(), v, sign, cfg.residual_radius_m)
    stable = residual[(np.abs(excess) < cfg.stable_clip_z) & np.isfinite(residual)]

    def lower_median(x):
        return float(np.sort(x)[(len(x) + 1) // 2 - 1])

    middle = lower_median(stable)
    assert sigma_r == pytest.approx(MAD_TO_SIGMA * lower_median(np.abs(stable - middle)), rel=1e-12)
    # on this scene the residual's noise is a fraction of the velocity's (the atmosphere cancels)
    assert sigma_r < run.metrics["hotspots_sigma_mm_yr"]


def test_the_local_step_on_spark_is_the_numpy_kernel(spark, hotspot_config, run_reference):
    # the stage's local steps come from one neighbourhood pass over tiles and halos (the pixels'
    # series carried with them), the numpy kernel's from every pixel in one process: the same
    # medians and the same least squares, so equal to rounding (the batches' matrix products differ
    # by a few ulp); only the moving pixels have one
    from insarlake.hotspots.residual import local_step
    from insarlake.hotspots.stage import _series_matrix, local_residuals
    from insarlake.lake import analysis_pixels

    cfg = hotspot_config.hotspots
    ref, _, t_years = run_reference
    pixels = analysis_pixels(spark, hotspot_config, "sim")
    frame, _ = local_residuals(pixels, cfg, ref, t_years)
    got = frame.toPandas().set_index("pixel_id")
    frame.unpersist()
    local = pixels.select("pixel_id", "lon", "lat", "velocity", "disp").toPandas().sort_values("pixel_id")
    excess = (local["velocity"].to_numpy(np.float64) - ref.v0_mm_yr) / ref.sigma_mm_yr
    sign = np.where(np.abs(excess) > cfg.z_pixel, np.sign(excess), 0).astype(np.int8)
    f_stat, step = local_step(local["lon"].to_numpy(), local["lat"].to_numpy(),
                              _series_matrix(local["disp"], len(t_years)), t_years, sign, cfg.step_split_radius_m,
                              query=sign != 0)
    moving = local["pixel_id"].to_numpy()[sign != 0]
    assert len(got) == len(local) and moving.size > 100
    assert got.drop(index=moving)["step_f"].isna().all()
    np.testing.assert_allclose(got.loc[moving, "step_f"].to_numpy(), f_stat, rtol=1e-9)
    np.testing.assert_allclose(got.loc[moving, "step_mm"].to_numpy(), step, rtol=1e-9, atol=1e-9)
    assert np.isfinite(f_stat).mean() > 0.9


def test_the_event_step_on_spark_is_the_numpy_kernels(spark, hotspot_config, run_reference):
    # describe's event_step_f: best_step of the candidate's mean series with each pixel's sign taken
    # out, the mean a Spark aggregate; here numpy's nanmean of the same pixels (sums of at most a few
    # thousand float64 terms in another order, ~1e-13 relative: 1e-9 leaves the least squares room)
    from insarlake.hotspots.rate import best_step
    from insarlake.hotspots.stage import _series_matrix, describe, labelled_pixels

    cfg = hotspot_config.hotspots
    ref, dates, t_years = run_reference
    pixels, _ = labelled_pixels(spark, hotspot_config, "sim")
    members = run_results(spark, hotspot_config, "hotspot_pixels", "sim").where("not rim").select(
        "pixel_id", "hotspot_id", "rim")
    rows = describe(pixels, members, cfg, ref, dates).set_index("hotspot_id")
    local = members.join(pixels.select("pixel_id", "velocity", "disp"), "pixel_id").toPandas()
    assert len(rows) >= 2
    for h, group in local.groupby("hotspot_id"):
        sign = np.sign(group["velocity"].to_numpy(np.float64) - ref.v0_mm_yr)
        with np.errstate(invalid="ignore"):
            signed = np.nanmean(_series_matrix(group["disp"], len(t_years)) * sign[:, None], axis=0)
        assert rows.loc[h, "event_step_f"] == pytest.approx(best_step(signed, t_years)[0], rel=1e-9)
    # the demo scene's candidates: its post-seismic field and its tunnel move by an event, its
    # subsidence bowl at a steady rate (the truth's kind of most of each candidate's pixels)
    truth = read_table(spark, hotspot_config, "truth", ["sim"]).select("pixel_id", "source_type").toPandas()
    kinds = local.merge(truth, on="pixel_id").groupby("hotspot_id")["source_type"].agg(lambda k: k.mode()[0])
    f_of = rows["event_step_f"].groupby(kinds).max()
    assert {"postseismic", "tunnel", "subsidence"} <= set(f_of.index)
    assert f_of["subsidence"] < cfg.event_step_f
    assert min(f_of["postseismic"], f_of["tunnel"]) > 3.0 * f_of["subsidence"]


def test_the_rate_split_and_step_join_on_spark_are_the_numpy_kernels(spark, config):
    # split_sources on Spark (the series as a disp array column, one pandas group per candidate)
    # against candidate_parts + rate_cores + join_by_step in one process, on three candidates: a
    # post-seismic lobe with an uplift inside it (the rate split cuts it in two), the lobe alone
    # (whole) and a field across its fault (its two sides joined by their step: the contact test is
    # switched off by a contact ratio no field reaches)
    from insarlake.hotspots.rate import join_by_step, rate_cores
    from insarlake.hotspots.split import candidate_parts
    from insarlake.hotspots.stage import split_sources
    from test_hotspot_rate import T_YEARS, _across_a_fault, _field

    cfg = replace(config.hotspots, residual_radius_m=None, step_split_f=None, min_pixels=30, min_samples=10,
                  merge_contact_ratio=100.0)
    ref = Reference(0.0, 0.15, 10.0, 300.0)
    fields = [_field(np.random.default_rng(4), uplift=True)[:4], _field(np.random.default_rng(5))[:4],
              _across_a_fault(np.random.default_rng(6))[:4]]
    frames = []
    for candidate, (lon, lat, excess_z, series) in enumerate(fields):
        moving = np.abs(excess_z) > cfg.z_pixel
        series = series[moving]
        series[0, 5] = np.nan                                    # a missing epoch travels as NaN
        frames.append(pd.DataFrame({
            "pixel_id": [f"{candidate}-{i:05d}" for i in range(moving.sum())], "lon": lon[moving],
            "lat": lat[moving], "excess_z": excess_z[moving], "hotspot_id": candidate,
            "disp": list(series.astype(np.float32))}))
    members = spark.createDataFrame(pd.concat(frames, ignore_index=True),
                                    "pixel_id string, lon double, lat double, excess_z double, hotspot_id long, "
                                    "disp array<float>")
    got = split_sources(members, cfg, ref, T_YEARS).toPandas().set_index("pixel_id")["hotspot_id"]
    n_parts, n_before_join = [], []
    for frame in frames:
        lon, lat, z = frame["lon"].to_numpy(), frame["lat"].to_numpy(), frame["excess_z"].to_numpy()
        series = np.stack(frame["disp"]).astype(np.float64)
        part = candidate_parts(lon, lat, z, cfg.z_pixel, cfg.split_level_ratio, ref.eps_m, cfg.min_samples,
                               cfg.min_pixels, cfg.merge_contact_ratio)
        part = rate_cores(lon, lat, z, series, T_YEARS, part, ref.eps_m,
                          cfg.min_samples, cfg.min_pixels, cfg.rate_split_step_f, cfg.z_pixel, cfg.z_hotspot,
                          cfg.rate_split_grow_z, cfg.rate_split_grow_radius_m, cfg.rate_split_epoch_tolerance)
        n_before_join.append(len(set(part.tolist())))
        part = join_by_step(lon, lat, z, series, T_YEARS, part, ref.eps_m, cfg.step_join_f, cfg.step_join_epoch_f)
        spark_ids = got.loc[frame["pixel_id"]].to_numpy()
        # the same partition of the candidate's pixels, whatever the numbering
        pairs = set(zip(part.tolist(), spark_ids.tolist()))
        assert len(pairs) == len(set(part.tolist())) == len(set(spark_ids.tolist()))
        n_parts.append(len(pairs))
    assert n_before_join == [2, 1, 2] and n_parts == [2, 1, 1]
    assert got.nunique() == 4


def test_the_rim_growth_on_spark_is_the_numpy_kernel(spark, config):
    # grow_hotspot_rims (the distributed DBSCAN's chains, a group-by for their owners) against
    # rims.grow_rims on one scene: two hotspots with rims of their own, two whose rims meet, a
    # sinking candidate beside them, a candidate not retained, and a pixel without velocity
    from insarlake.hotspots.rims import grow_rims
    from insarlake.hotspots.stage import grow_hotspot_rims
    from test_hotspot_rims import _hotspots, _scene

    cfg = replace(config.hotspots, rim_grow_z=2.0, rim_grow_radius_m=250.0)
    ref = Reference(1.0, 0.5, 10.0, 300.0)
    lon, lat, z, x = _scene([(400.0, 8.0, 250.0), (1800.0, 8.0, 300.0), (2700.0, 8.0, 300.0),
                             (3500.0, -8.0, 200.0), (4600.0, 8.0, 300.0)])
    hotspot, member = _hotspots(z, x, [(0, 1100), (1100, 2250), (2250, 3150), (3150, 4000), (4000, 6000)])
    retained = [0, 1, 2, 3]
    velocity = ref.v0_mm_yr + z * ref.sigma_mm_yr
    velocity[np.flatnonzero((z > 2.0) & ~member)[0]] = np.nan
    ids = np.array([f"p{i:05d}" for i in range(len(z))])
    pixels = spark.createDataFrame(pd.DataFrame({"pixel_id": ids, "lon": lon, "lat": lat, "velocity": velocity}))
    members = spark.createDataFrame(pd.DataFrame({"pixel_id": ids[member], "hotspot_id": hotspot[member],
                                                     "rim": False}))
    got = grow_hotspot_rims(pixels, members, retained, cfg, ref).toPandas()
    expected = grow_rims(lon, lat, (velocity - ref.v0_mm_yr) / ref.sigma_mm_yr,
                         np.where(np.isin(hotspot, retained), hotspot, -1), member, 2.0, 250.0)
    # every candidate pixel keeps its candidate, the rims are the kernel's
    assert got.pixel_id.is_unique
    # the rim flag is true exactly for the pixels that were in no candidate
    np.testing.assert_array_equal(got.rim.to_numpy(bool), ~got.pixel_id.isin(ids[member]).to_numpy())
    got_id = pd.Series(got.hotspot_id.to_numpy(), index=got.pixel_id).reindex(ids).fillna(-1).astype(int).to_numpy()
    np.testing.assert_array_equal(got_id[member], hotspot[member])
    np.testing.assert_array_equal(np.where(member, -1, got_id), np.where(member, -1, expected))
    grown = np.bincount(got_id[~member & (got_id >= 0)], minlength=5)
    assert grown[0] > 0 and grown[3] > 0 and grown[1] == grown[2] == grown[4] == 0
