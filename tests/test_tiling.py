"""The spatial partition key: consistent, adaptive, compact (checked against Sedona itself)."""
from __future__ import annotations

from pyspark.sql import functions as F

from insarlake.lake import read_table
import numpy as np

from insarlake.tiling import geohash_bounds, hilbert_index


def test_geohash_bounds_known_cell():
    # 'u4pruydqqvj' is Jutland (the classic geohash example): lon 10.40744, lat 57.64911
    lo_lon, lo_lat, hi_lon, hi_lat = geohash_bounds("u4pruydqqvj")
    assert lo_lon <= 10.40744 <= hi_lon and lo_lat <= 57.64911 <= hi_lat
    assert hi_lon - lo_lon < 2e-5 and hi_lat - lo_lat < 2e-5
    assert geohash_bounds("s") == (0.0, 0.0, 45.0, 45.0)


def test_hilbert_index_visits_every_cell_through_neighbours():
    side = 16
    xs, ys = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side)))
    d = hilbert_index((xs + 0.5) / side * 360 - 180, (ys + 0.5) / side * 180 - 90, order=4)
    assert sorted(d.tolist()) == list(range(side * side))
    path = np.argsort(d)
    steps = np.abs(np.diff(xs[path])) + np.abs(np.diff(ys[path]))
    assert (steps == 1).all()


def test_tiles_are_consistent_adaptive_and_match_sedona(spark, config, sim_scene):
    pixels = read_table(spark, config, "pixels", ["sim"])
    tiles = {r.tile_id: r.n for r in pixels.groupBy("tile_id").agg(F.count("*").alias("n")).collect()}
    cfg = config.partition
    assert len(tiles) > 4
    for tile, n in tiles.items():
        assert cfg.min_precision <= len(tile) <= cfg.max_precision
        assert n <= cfg.max_pixels_per_tile or len(tile) == cfg.max_precision
        # disjoint: no tile is inside another
        assert not any(other != tile and other.startswith(tile) for other in tiles)
    # a dense city is split finer than the countryside
    assert len({len(t) for t in tiles}) > 1
    # every pixel inside its tile, by Sedona's own geohash polygon and by our decoder
    outside = pixels.where(~F.expr("ST_Contains(ST_GeomFromGeoHash(tile_id, 12), ST_Point(lon, lat))")).count()
    assert outside == 0
    for row in pixels.select("tile_id", "lon", "lat").limit(500).collect():
        lo_lon, lo_lat, hi_lon, hi_lat = geohash_bounds(row.tile_id)
        assert lo_lon <= row.lon <= hi_lon and lo_lat <= row.lat <= hi_lat


def test_files_and_tiles_are_compact_patches(spark, config, sim_scene):
    pixels = read_table(spark, config, "pixels", ["sim"]).withColumn("file", F.input_file_name())
    scene = pixels.agg(F.min("lon"), F.max("lon"), F.min("lat"), F.max("lat")).first()
    scene_area = (scene[1] - scene[0]) * (scene[3] - scene[2])
    boxes = pixels.groupBy("file").agg(F.min("lon").alias("a"), F.max("lon").alias("b"),
                                       F.min("lat").alias("c"), F.max("lat").alias("d"),
                                       F.countDistinct("tile_id").alias("tiles")).collect()
    assert len(boxes) >= 8  # partition.pixels_per_file is small in the test config
    # files of equal pixel counts: sparse countryside files cover more ground than city files,
    # but none spans the scene, and on average a file is a small patch of it
    areas = [(box.b - box.a) * (box.d - box.c) / scene_area for box in boxes]
    assert max(areas) < 0.8 and np.mean(areas) < 0.3, areas
    tile_boxes = pixels.groupBy("tile_id").agg(
        ((F.max("lon") - F.min("lon")) * (F.max("lat") - F.min("lat"))).alias("area")).collect()
    assert max(t.area for t in tile_boxes) < 0.1 * scene_area
    # each tile lives in one file
    assert pixels.groupBy("tile_id").agg(F.countDistinct("file").alias("f")).where("f > 1").count() == 0
